"""A job for the PostgreSQL (JDBC) sink tests: generated records upserted into tables.

Records ``i`` for ``i`` in ``range(--count)`` come from one ordered source subtask (at most
``--rate`` records per second). Two sinks, with ``--guarantee`` (the second with ``--log-guarantee`` if given):

* ``--latest TABLE`` (columns ``k, n, v``, key ``k``): the stream keyed by ``k = i * 7919 % --keys``,
  each record ``(k, i, "v<i>")`` (every third one as a dict). Per key the records arrive in order,
  so a correct run leaves, for every key, the row of its last ``i``.
* ``--log TABLE`` (columns ``id, i``, key ``id``): each record gets a random ``id`` (uuid4) when it
  is processed. A record processed twice (a replay after a failover) gets two ids: unless the sink
  rolls back what the failed attempt wrote after the last completed checkpoint, the table then
  holds that ``i`` twice. A correct exactly-once run holds every ``i`` exactly once.
"""

import argparse
import uuid

from emrflow.api.environment import StreamExecutionEnvironment
from emrflow.connectors.jdbc import JdbcSink
from emrflow.testing import GeneratedSource


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--dsn", required=True)
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--keys", type=int, default=300)
    p.add_argument("--rate", type=float, default=None, help="records/s of the source")
    p.add_argument("--guarantee", default="at-least-once")
    p.add_argument("--log-guarantee", default=None, help="the --log sink's (default: --guarantee)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--latest", default=None, metavar="TABLE")
    p.add_argument("--log", default=None, metavar="TABLE")
    args = p.parse_args()
    keys = args.keys
    env = StreamExecutionEnvironment.get_execution_environment()
    numbers = env.from_source(GeneratedSource(args.count, batch_size=100, max_parallelism=1, rate=args.rate),
                              source_name="numbers").uid("numbers")
    if args.latest:
        (numbers
            .map(lambda i: (i * 7919 % keys, i, f"v{i}") if i % 3 else {"k": i * 7919 % keys, "n": i, "v": f"v{i}"})
            .uid("latest-rows")
            .key_by(lambda r: r[0] if isinstance(r, tuple) else r["k"])
            .sink_to(JdbcSink(args.dsn, args.latest, ["k", "n", "v"], ["k"], delivery_guarantee=args.guarantee,
                              batch_size=args.batch_size)).uid("latest"))
    if args.log:
        (numbers
            .rebalance()
            .map(lambda i: (uuid.uuid4().hex, i)).uid("log-rows")
            .sink_to(JdbcSink(args.dsn, args.log, ["id", "i"], ["id"],
                              delivery_guarantee=args.log_guarantee or args.guarantee,
                              batch_size=args.batch_size)).uid("log"))
    env.execute("jdbc upsert")


if __name__ == "__main__":
    main()
