"""A streaming job over a Kinesis stream, for the Kinesis source tests: a running count per key.

Reads ``--stream`` (records are JSON ``[key, i]``) from ``TRIM_HORIZON`` with
:class:`~emrflow.connectors.kinesis_source.KinesisSource`, keeps a count per key in keyed state
and writes one line ``key,count`` (``key,count,i`` with ``--emit-index``) per record with the
exactly-once file sink. Whatever the
failures, a correct run writes exactly the lines ``k,1 .. k,n_k`` for every key: a record
read twice writes a count twice, a lost one leaves a count out.
"""

import argparse

from emrflow.api.environment import StreamExecutionEnvironment
from emrflow.api.functions import KeyedProcessFunction
from emrflow.api.state import ValueStateDescriptor
from emrflow.connectors.files import CsvFileSink
from emrflow.connectors.kinesis_source import KinesisSource


class Count(KeyedProcessFunction):
    def __init__(self, emit_index: bool = False):
        self.emit_index = emit_index

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count"))

    def process_element(self, value, ctx):
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield (ctx.get_current_key(), n, value[1]) if self.emit_index else (ctx.get_current_key(), n)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--stream", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--endpoint-url", default=None)
    p.add_argument("--discovery-interval-ms", type=int, default=500)
    p.add_argument("--emit-index", action="store_true", help="write key,count,i (the record's i as well)")
    args = p.parse_args()
    env = StreamExecutionEnvironment.get_execution_environment()
    source = KinesisSource(args.stream, start_position="TRIM_HORIZON", endpoint_url=args.endpoint_url,
                           region="us-east-1", get_records_interval_ms=50,
                           shard_discovery_interval_ms=args.discovery_interval_ms)
    (env.from_source(source, source_name="kinesis").uid("kinesis")
        .key_by(lambda r: r[0])
        .process(Count(args.emit_index)).uid("count").name("count")
        .sink_to(CsvFileSink(args.output)).uid("sink"))
    env.execute("kinesis keyed count")


if __name__ == "__main__":
    main()
