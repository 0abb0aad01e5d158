"""Two disconnected pipelines in one job (two pipelined regions), for the region failover test.

Pipeline A counts per key and fails once (``--fail-once FILE``); pipeline B counts per key and
appends a line to ``--opens FILE`` whenever one of its subtasks opens, so a test sees how many
times B was (re)started. Both write ``key,count`` lines with the exactly-once file sink.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from checkpointed_count import Count  # noqa: E402

from emrflow.api.environment import StreamExecutionEnvironment  # noqa: E402
from emrflow.api.functions import MapFunction  # noqa: E402
from emrflow.connectors.files import CsvFileSink  # noqa: E402
from emrflow.testing import GeneratedSource  # noqa: E402


class RecordOpens(MapFunction):
    def __init__(self, path):
        self.path = path

    def open(self, ctx):
        with open(self.path, "a") as f:
            f.write(f"{ctx.get_index_of_this_subtask()}\n")

    def map(self, value):
        return value


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=200_000)
    p.add_argument("--keys", type=int, default=100)
    p.add_argument("--rate", type=float, default=40_000)
    p.add_argument("--out-a", required=True)
    p.add_argument("--out-b", required=True)
    p.add_argument("--fail-once", required=True)
    p.add_argument("--opens", required=True)
    args = p.parse_args()
    keys = args.keys
    env = StreamExecutionEnvironment.get_execution_environment()
    a = env.from_source(GeneratedSource(args.count, lambda i: i % keys, batch_size=256, rate=args.rate),
                        source_name="a").uid("a")
    (a.key_by(lambda k: k).process(Count(args.fail_once, args.count // keys // 2)).uid("count-a")
        .sink_to(CsvFileSink(args.out_a)).uid("sink-a"))
    b = env.from_source(GeneratedSource(args.count, lambda i: i % keys, batch_size=256, rate=args.rate),
                        source_name="b").uid("b")
    (b.map(RecordOpens(args.opens)).uid("opens-b").key_by(lambda k: k).process(Count()).uid("count-b")
        .sink_to(CsvFileSink(args.out_b)).uid("sink-b"))
    env.execute("two pipelines")


if __name__ == "__main__":
    main()
