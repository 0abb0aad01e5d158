"""A checkpointed job for the bucketing test: events into Parquet files bucketed by event hour.

Generates ``--count`` events ``{"id": i, "ts": T0 + i * --step-ms}`` at most ``--rate`` per
second per subtask and writes them with an exactly-once Parquet sink bucketed by
``dt=%Y-%m-%d/hour=%H`` of ``ts`` (UTC). A correct run leaves every id exactly once, in the
bucket of its hour; a lost record is missing, a replayed one appears twice.
"""

import argparse

from emrflow.api.environment import StreamExecutionEnvironment
from emrflow.connectors.formats import DateTimeBucketAssigner, ParquetFileSink
from emrflow.testing import GeneratedSource

T0 = 1_706_659_200_000  # 2024-01-31T00:00:00Z


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--step-ms", type=int, default=1000)
    p.add_argument("--rate", type=float, default=None, help="records/s per source subtask")
    p.add_argument("--output", required=True)
    args = p.parse_args()
    step = args.step_ms
    env = StreamExecutionEnvironment.get_execution_environment()
    source = GeneratedSource(args.count, lambda i: {"id": i, "ts": T0 + i * step}, batch_size=256,
                             rate=args.rate)
    (env.from_source(source, source_name="events").uid("events")
        .sink_to(ParquetFileSink(args.output, bucket_assigner=DateTimeBucketAssigner(timestamp=lambda e: e["ts"])))
        .uid("sink"))
    env.execute("bucketed events")


if __name__ == "__main__":
    main()
