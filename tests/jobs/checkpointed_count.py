"""A checkpointed streaming job for the fault-tolerance tests: a running count per key.

Reads ``--count`` generated records ``i`` (key ``i % --keys``) at most ``--rate`` records
per second per subtask, keeps a count per key in keyed state, and writes one line
``key,count`` per record with the exactly-once file sink. Whatever the interleaving, a
correct run writes exactly the lines ``k,1 .. k,n_k`` for every key: a lost record
leaves a count out, a replayed one writes a count twice.
"""

import argparse
import os

from emrflow.api.environment import CheckpointingMode, StreamExecutionEnvironment
from emrflow.api.functions import KeyedProcessFunction
from emrflow.api.state import ValueStateDescriptor
from emrflow.connectors.files import CsvFileSink
from emrflow.testing import GeneratedSource


class Count(KeyedProcessFunction):
    def __init__(self, fail_once=None, fail_at=None):
        self.fail_once, self.fail_at = fail_once, fail_at

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count"))

    def process_element(self, value, ctx):
        n = (self.count.value() or 0) + 1
        if self.fail_once and n == self.fail_at and not os.path.exists(self.fail_once):
            open(self.fail_once, "w").close()
            raise RuntimeError("failing once, as asked")
        self.count.update(n)
        yield (ctx.get_current_key(), n)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=2_000_000)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--rate", type=float, default=None, help="records/s per source subtask")
    p.add_argument("--output", required=True)
    p.add_argument("--source-parallelism", type=int, default=None)
    p.add_argument("--checkpoint-ms", type=int, default=None,
                   help="enable checkpointing in the program (env.enable_checkpointing)")
    p.add_argument("--fail-once", default=None, metavar="FILE",
                   help="raise in the counting operator once, when FILE does not exist (then create it)")
    args = p.parse_args()
    keys = args.keys
    env = StreamExecutionEnvironment.get_execution_environment()
    if args.checkpoint_ms:
        env.enable_checkpointing(args.checkpoint_ms, CheckpointingMode.EXACTLY_ONCE)
    source = GeneratedSource(args.count, lambda i: i % keys, batch_size=512, rate=args.rate)
    numbers = env.from_source(source, source_name="numbers").uid("numbers")
    if args.source_parallelism:
        numbers = numbers.set_parallelism(args.source_parallelism)
    fail_at = args.count // args.keys // 2
    (numbers
        .key_by(lambda k: k)
        .process(Count(args.fail_once, fail_at)).uid("count").name("count")
        .sink_to(CsvFileSink(args.output)).uid("sink"))
    env.execute("checkpointed count")


if __name__ == "__main__":
    main()
