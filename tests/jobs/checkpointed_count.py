"""A checkpointed streaming job for the fault-tolerance tests: a running count per key.

Reads ``--count`` generated records ``i`` (key ``i % --keys``) at most ``--rate`` records
per second per subtask, keeps a count per key in keyed state, and writes one line
``key,count`` per record with the exactly-once file sink. Whatever the interleaving, a
correct run writes exactly the lines ``k,1 .. k,n_k`` for every key: a lost record
leaves a count out, a replayed one writes a count twice.
"""

import argparse

from emrflow.api.environment import StreamExecutionEnvironment
from emrflow.api.functions import KeyedProcessFunction
from emrflow.api.state import ValueStateDescriptor
from emrflow.connectors.files import CsvFileSink
from emrflow.testing import GeneratedSource


class Count(KeyedProcessFunction):
    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count"))

    def process_element(self, value, ctx):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield (ctx.get_current_key(), n)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, default=2_000_000)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--rate", type=float, default=None, help="records/s per source subtask")
    p.add_argument("--output", required=True)
    args = p.parse_args()
    keys = args.keys
    env = StreamExecutionEnvironment.get_execution_environment()
    source = GeneratedSource(args.count, lambda i: i % keys, batch_size=512, rate=args.rate)
    (env.from_source(source, source_name="numbers").uid("numbers")
        .key_by(lambda k: k)
        .process(Count()).uid("count").name("count")
        .sink_to(CsvFileSink(args.output)).uid("sink"))
    env.execute("checkpointed count")


if __name__ == "__main__":
    main()
