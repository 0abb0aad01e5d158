"""A job for the Kafka source tests: a running count per key of the records of a Kafka topic.

Every record's value is ``key,seq`` text; the job keeps a count per key in keyed state and
writes one line ``key,count`` per record with the exactly-once file sink (committed at each
completed checkpoint). Whatever the interleaving, a correct run writes exactly the lines
``k,1 .. k,n_k`` for every key: a lost record leaves a count out, a replayed one writes a
count twice. Values that are not UTF-8 are bad records (skipped and reported).

Unbounded by default (partition discovery every ``--discovery-ms``): the test stops the job
(SIGINT: cancel) once the committed output is complete. ``--bounded`` stops at the
partitions' ends at the start; ``--start`` is the source's ``starting_offsets``. ``--slow-ms``
sleeps per record, to keep the job running long enough for a TaskManager to be killed in the
middle. ``--window-ms`` counts per key per tumbling event-time window of the records' Kafka
timestamps instead (``key,window start ms,count`` lines; per-partition watermarks).
"""

import argparse
import time

from emrflow.api.environment import StreamExecutionEnvironment
from emrflow.api.eventtime import Time, WatermarkStrategy
from emrflow.api.functions import KeyedProcessFunction
from emrflow.api.state import ValueStateDescriptor
from emrflow.api.windowing import TumblingEventTimeWindows
from emrflow.connectors.files import CsvFileSink
from emrflow.connectors.kafka_source import KafkaSource


class Count(KeyedProcessFunction):
    def __init__(self, slow_ms: float):
        self.slow_s = slow_ms / 1000

    def open(self, ctx):
        self.count = ctx.get_state(ValueStateDescriptor("count"))

    def process_element(self, value, ctx):
        if self.slow_s:
            time.sleep(self.slow_s)
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield (ctx.get_current_key(), n)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--group", default=None)
    p.add_argument("--discovery-ms", type=int, default=500)
    p.add_argument("--bounded", action="store_true")
    p.add_argument("--slow-ms", type=float, default=0.0)
    p.add_argument("--start", default="earliest", help="earliest, latest, committed or a timestamp in ms")
    p.add_argument("--window-ms", type=int, default=None,
                   help="count per key per tumbling event-time window of the Kafka timestamps instead")
    args = p.parse_args()
    env = StreamExecutionEnvironment.get_execution_environment()
    start = int(args.start) if args.start.isdigit() else args.start
    source = KafkaSource(args.topic, args.bootstrap, group_id=args.group, starting_offsets=start,
                         stopping_offsets="latest" if args.bounded else None,
                         partition_discovery_interval_ms=args.discovery_ms, max_poll_records=100,
                         with_metadata=bool(args.window_ms))
    if args.window_ms:   # event time = the records' Kafka timestamps, per-partition watermarks
        strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r.timestamp)
        (env.from_source(source, strategy, "kafka").uid("kafka")
            .key_by(lambda r: r.value.split(",")[0])
            .window(TumblingEventTimeWindows.of(Time.milliseconds(args.window_ms)))
            .apply(lambda key, window, records: [(key, window.start, len(list(records)))]).uid("windows")
            .sink_to(CsvFileSink(args.output)).uid("sink"))
        env.execute("kafka windowed count")
        return
    (env.from_source(source, source_name="kafka").uid("kafka")
        .key_by(lambda v: v.split(",")[0])
        .process(Count(args.slow_ms)).uid("count").name("count")
        .sink_to(CsvFileSink(args.output)).uid("sink"))
    env.execute("kafka keyed count")


if __name__ == "__main__":
    main()
