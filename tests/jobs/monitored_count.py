"""A streaming job over a monitored directory, for the split-source tests: a running count per key.

Watches ``--input`` for new files (``FileSource.monitor_continuously``); every line is an
integer ``i`` with key ``i % --keys`` (and, with ``--json-input`` / ``--parquet-input``, two more
monitored directories of JSON lines / Parquet files whose records' ``"i"`` is that integer);
keeps a count per key in keyed state and writes one line
``key,count`` per record with the exactly-once file sink. Whatever the failures, a correct
run writes exactly the lines ``k,1 .. k,n_k`` for every key: a record read twice writes a
count twice, a lost one leaves a count out.
"""

import argparse
import time

from checkpointed_count import Count  # a neighbour: the running count per key, emitting (key, n)

from emrflow.api.environment import StreamExecutionEnvironment
from emrflow.api.functions import MapFunction
from emrflow.connectors.files import CsvFileSink
from emrflow.connectors.monitoring import FileSource


class Parse(MapFunction):
    """``int(line) % keys``, at most ``rate`` records/s per subtask (0: no limit)."""

    def __init__(self, keys, rate):
        self.keys, self.rate = keys, rate

    def open(self, ctx):
        self.n, self.t0 = 0, time.monotonic()

    def map(self, value):
        self.n += 1
        if self.rate and self.n % 100 == 0:
            ahead = self.n / self.rate - (time.monotonic() - self.t0)
            if ahead > 0:
                time.sleep(ahead)
        return int(value) % self.keys


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--keys", type=int, default=100)
    p.add_argument("--interval-ms", type=int, default=200, help="directory listing interval")
    p.add_argument("--source-parallelism", type=int, default=None)
    p.add_argument("--rate", type=float, default=0, help="records/s per subtask at most (0: no limit)")
    p.add_argument("--json-input", help="a directory of JSON lines files {\"i\": ...} to watch too")
    p.add_argument("--parquet-input", help="a directory of Parquet files with a column i to watch too")
    args = p.parse_args()
    keys = args.keys
    env = StreamExecutionEnvironment.get_execution_environment()
    lines = env.from_source(FileSource.for_text_lines(args.input).monitor_continuously(args.interval_ms),
                            source_name="landing").uid("landing")
    if args.source_parallelism:
        lines = lines.set_parallelism(args.source_parallelism)
    if args.json_input:
        lines = lines.union(env.from_source(FileSource.for_json_lines(args.json_input)
                                            .monitor_continuously(args.interval_ms), source_name="json")
                            .uid("json").map(lambda r: r["i"]))
    if args.parquet_input:
        lines = lines.union(env.from_source(FileSource.for_parquet(args.parquet_input, columns=["i"],
                                                                   record_type="tuple")
                                            .monitor_continuously(args.interval_ms), source_name="parquet")
                            .uid("parquet").map(lambda t: t[0]))
    (lines
        .map(Parse(keys, args.rate))
        .key_by(lambda k: k)
        .process(Count()).uid("count").name("count")
        .sink_to(CsvFileSink(args.output)).uid("sink"))
    env.execute("monitored count")


if __name__ == "__main__":
    main()
