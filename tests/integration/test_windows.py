"""Windows against plain-Python references: assigners, functions, lateness, triggers, evictors."""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict

import pytest

from emrflow import RuntimeExecutionMode, StreamExecutionEnvironment
from emrflow.api.eventtime import Duration, Time, WatermarkStrategy
from emrflow.api.functions import (
    AggregateFunction,
    OutputTag,
    ProcessAllWindowFunction,
    ProcessWindowFunction,
    WindowFunction,
)
from emrflow.api.windowing import (
    CountEvictor,
    CountTrigger,
    EventTimeSessionWindows,
    GlobalWindows,
    SlidingEventTimeWindows,
    TimeEvictor,
    Trigger,
    TriggerResult,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)
from emrflow.errors import JobGraphError
from emrflow.testing import GeneratedSource

pytestmark = pytest.mark.integration

RNG = random.Random(11)
KEYS = "abcde"
# (key, timestamp ms, value); timestamps spread over 0..200 s
IN_ORDER = sorted(((RNG.choice(KEYS), RNG.randint(0, 200_000), RNG.randint(1, 9)) for _ in range(4000)),
                  key=lambda e: e[1])
SHUFFLED = RNG.sample(IN_ORDER, len(IN_ORDER))
BOUND = 250_000  # out-of-orderness that covers any shuffle of the input


def env_for(parallelism: int, mode: str = "STREAMING") -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(parallelism)
    env.set_runtime_mode(RuntimeExecutionMode[mode])
    return env


def stamped(env, events, bound=BOUND):
    """The events as a stream with event time, assigned at the (single) source."""
    from emrflow.connectors.collection import CollectionSource
    ws = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(bound)) \
        .with_timestamp_assigner(lambda e: e[1])
    return env.from_source(CollectionSource(events), ws)


@pytest.fixture(params=["in_order", "shuffled"])
def events(request):
    return IN_ORDER if request.param == "in_order" else SHUFFLED


class WithWindow(ProcessWindowFunction):
    """Emit (key, window start, window end, sorted values) for a window's elements."""

    def process(self, key, context, elements):
        w = context.window()
        yield (key, w.start, w.end, sorted(e[2] for e in elements))


def tumbling_ref(events, size, offset=0):
    out = defaultdict(list)
    for k, t, v in events:
        start = t - (t - offset) % size
        out[(k, start, start + size)].append(v)
    return sorted((k, s, e, sorted(vs)) for (k, s, e), vs in out.items())


def test_tumbling_event_time_process(parallelism, events):
    env = env_for(parallelism)
    got = stamped(env, events).key_by(lambda e: e[0]) \
        .window(TumblingEventTimeWindows.of(Time.seconds(10))).process(WithWindow()).execute_and_collect()
    assert sorted(got) == tumbling_ref(events, 10_000)


def test_tumbling_on_rocksdb_matches_hashmap(parallelism):
    """The generic window path over the RocksDB backend (the fast path is in-memory only)."""
    from emrflow.config import Configuration
    env = StreamExecutionEnvironment.get_execution_environment(
        Configuration.from_dict({"state.backend.type": "rocksdb"}))
    env.set_parallelism(parallelism)
    got = stamped(env, SHUFFLED).key_by(lambda e: e[0]) \
        .window(TumblingEventTimeWindows.of(Time.seconds(10))) \
        .reduce(lambda a, b: (a[0], a[1], a[2] + b[2])).execute_and_collect()
    assert sorted((g[0], g[1] - g[1] % 10_000, g[2]) for g in got) == \
        sorted((k, s, sum(vs)) for k, s, _, vs in tumbling_ref(SHUFFLED, 10_000))


def test_tumbling_with_offset_reduce_and_window_function(parallelism, events):
    class Tag(WindowFunction):
        def apply(self, key, window, inputs):
            (total,) = inputs
            yield (key, window.start, total[2])

    env = env_for(parallelism)
    got = stamped(env, events).key_by(lambda e: e[0]) \
        .window(TumblingEventTimeWindows.of(Time.seconds(30), Time.seconds(7))) \
        .reduce(lambda a, b: (a[0], a[1], a[2] + b[2]), window_function=Tag()).execute_and_collect()
    expected = sorted((k, s, sum(vs)) for k, s, _, vs in tumbling_ref(events, 30_000, 7_000))
    assert sorted(got) == expected


class CountMean(AggregateFunction):
    def create_accumulator(self):
        return (0, 0)

    def add(self, value, acc):
        return (acc[0] + 1, acc[1] + value[2])

    def get_result(self, acc):
        return (acc[0], acc[1] / acc[0])

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


def test_sliding_aggregate_with_process_window_function(parallelism, events):
    class WithStart(ProcessWindowFunction):
        def process(self, key, context, elements):
            (count, mean) = list(elements)[0]
            yield (key, context.window().start, count, round(mean, 9))

    env = env_for(parallelism)
    got = stamped(env, events).key_by(lambda e: e[0]) \
        .window(SlidingEventTimeWindows.of(Time.seconds(20), Time.seconds(5))) \
        .aggregate(CountMean(), window_function=WithStart()).execute_and_collect()
    ref = defaultdict(list)
    for k, t, v in events:
        last = t - t % 5_000
        for start in range(last, t - 20_000, -5_000):
            ref[(k, start)].append(v)
    expected = sorted((k, s, len(vs), round(sum(vs) / len(vs), 9)) for (k, s), vs in ref.items())
    assert sorted(got) == expected


def sessions_ref(events, gap_of):
    by_key = defaultdict(list)
    for k, t, v in events:
        by_key[k].append((t, v))
    out = []
    for k, items in by_key.items():
        items.sort()
        cur = None
        for t, v in items:
            end = t + gap_of(v)
            if cur is not None and t <= cur[1]:
                cur = (cur[0], max(cur[1], end), cur[2] + [v])
            else:
                if cur is not None:
                    out.append((k, cur[0], cur[1], sorted(cur[2])))
                cur = (t, end, [v])
        out.append((k, cur[0], cur[1], sorted(cur[2])))
    return sorted(out)


@pytest.mark.parametrize("backend", ["hashmap", "rocksdb"])
def test_session_windows_merge(parallelism, events, backend):
    from emrflow.config import Configuration
    env = StreamExecutionEnvironment.get_execution_environment(
        Configuration.from_dict({"state.backend.type": backend}))
    env.set_parallelism(parallelism)
    got = stamped(env, events).key_by(lambda e: e[0]) \
        .window(EventTimeSessionWindows.with_gap(Time.milliseconds(300))).process(WithWindow()) \
        .execute_and_collect()
    assert sorted(got) == sessions_ref(events, lambda v: 300)


def test_session_windows_dynamic_gap_incremental(parallelism, events):
    env = env_for(parallelism)
    got = stamped(env, events).key_by(lambda e: e[0]) \
        .window(EventTimeSessionWindows.with_dynamic_gap(lambda e: e[2] * 60)) \
        .aggregate(CountMean()).execute_and_collect()
    ref = sessions_ref(events, lambda v: v * 60)
    assert Counter(c for c, _ in got) == Counter(len(vs) for _, _, _, vs in ref)


def test_count_windows_tumbling_and_sliding(parallelism):
    data = [(RNG.choice(KEYS), i, RNG.randint(1, 9)) for i in range(3000)]
    env = env_for(parallelism)
    got = env.from_collection(data).key_by(lambda e: e[0]).count_window(7) \
        .reduce(lambda a, b: (a[0], a[1], a[2] + b[2])).execute_and_collect()
    expected = []
    for k in KEYS:
        vs = [v for kk, _, v in data if kk == k]
        expected += [(k, sum(vs[i:i + 7])) for i in range(0, len(vs) - len(vs) % 7, 7)]
    assert sorted((g[0], g[2]) for g in got) == sorted(expected)

    env = env_for(parallelism)
    got = env.from_collection(data).key_by(lambda e: e[0]).count_window(5, 2) \
        .apply(lambda key, window, inputs: [(key, tuple(e[2] for e in inputs))]).execute_and_collect()
    expected = []
    for k in KEYS:
        vs = [v for kk, _, v in data if kk == k]
        expected += [(k, tuple(vs[max(0, n - 5):n])) for n in range(2, len(vs) + 1, 2)]
    assert sorted(got) == sorted(expected)


def test_window_all_runs_at_parallelism_one(parallelism, events):
    class Total(ProcessAllWindowFunction):
        def process(self, context, elements):
            yield (context.window().start, len(list(elements)))

    env = env_for(parallelism)
    stream = stamped(env, events).window_all(TumblingEventTimeWindows.of(Time.seconds(50))).process(Total())
    assert stream.get_parallelism() == 1
    got = stream.execute_and_collect()
    assert sorted(got) == sorted(Counter(t - t % 50_000 for _, t, _ in events).items())


def test_late_data_dropped_kept_with_lateness_or_side_output(parallelism):
    # in order, then records 3 s behind the watermark
    base = [("k", t, 1) for t in range(0, 30_000, 100)]
    late = [("k", 2_000, 100), ("k", 12_000, 100)]
    data = base[:250] + late + base[250:]   # late records arrive when the watermark is 24.9 s
    tag = OutputTag("late")
    for lateness, expect_side in [(0, 2), (10_000, 1)]:
        # a watermark after every batch of 10 records, so lateness does not depend on timing
        from emrflow.config import Configuration
        env = StreamExecutionEnvironment.get_execution_environment(
            Configuration.from_dict({"pipeline.auto-watermark-interval": 0}))
        env.set_parallelism(parallelism)
        mono = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e[1])
        windowed = env.from_source(GeneratedSource(len(data), data.__getitem__, batch_size=10,
                                                   max_parallelism=1), mono).key_by(lambda e: e[0]) \
            .window(TumblingEventTimeWindows.of(Time.seconds(10))).allowed_lateness(lateness) \
            .side_output_late_data(tag).reduce(lambda a, b: (a[0], a[1], a[2] + b[2]))
        side_records = []
        env2_result = windowed.get_side_output(tag)
        import tempfile

        from emrflow.testing import CollectSink
        d = tempfile.mkdtemp()
        side_sink = CollectSink(d)
        env2_result.sink_to(side_sink)
        got = windowed.execute_and_collect()
        side_records = side_sink.records()
        assert len(side_records) == expect_side
        if lateness == 0:
            # the late records never reach their (already cleaned) windows
            assert sorted(g[2] for g in got) == [100, 100, 100]
        else:
            # within lateness: window [10 s, 20 s) fires again with the late record
            assert sorted(g[2] for g in got) == [100, 100, 100, 200]
            assert side_records[0][1] == 2_000


def test_without_late_tag_in_order_input_loses_nothing(parallelism):
    env = env_for(parallelism)
    mono = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e[1])
    got = env.from_collection(IN_ORDER).assign_timestamps_and_watermarks(mono).key_by(lambda e: e[0]) \
        .window(TumblingEventTimeWindows.of(Time.seconds(1))).process(WithWindow()).execute_and_collect()
    assert sum(len(g[3]) for g in got) == len(IN_ORDER)


def test_custom_trigger_and_evictors(parallelism):
    class EveryThird(Trigger):
        """Fire every third element, and at the window end."""

        def on_element(self, element, timestamp, window, ctx):
            state = ctx.get_partitioned_state("n")
            n = (state.value() or 0) + 1
            state.update(n)
            ctx.register_event_time_timer(window.max_timestamp())
            return TriggerResult.FIRE if n % 3 == 0 else TriggerResult.CONTINUE

        def on_event_time(self, time_ms, window, ctx):
            return TriggerResult.FIRE_AND_PURGE

        def clear(self, window, ctx):
            ctx.get_partitioned_state("n").clear()

    data = [("k", t, t // 1000) for t in range(0, 10_000, 1000)]  # one key, 10 records, one window
    env = env_for(parallelism)
    got = stamped(env, data, bound=0).key_by(lambda e: e[0]) \
        .window(TumblingEventTimeWindows.of(Time.seconds(100))).trigger(EveryThird()) \
        .evictor(CountEvictor.of(2)).apply(lambda k, w, xs: [tuple(x[2] for x in xs)]).execute_and_collect()
    # fires after 3, 6, 9 elements and at the end (10); the evictor keeps the last 2 seen
    assert got == [(1, 2), (4, 5), (7, 8), (8, 9)]

    env = env_for(parallelism)
    got = stamped(env, data, bound=0).key_by(lambda e: e[0]) \
        .window(TumblingEventTimeWindows.of(Time.seconds(100))).evictor(TimeEvictor.of(Time.seconds(3))) \
        .apply(lambda k, w, xs: [sorted(x[1] for x in xs)]).execute_and_collect()
    assert got == [[7000, 8000, 9000]]


def test_global_windows_never_fire_without_trigger(parallelism):
    env = env_for(parallelism)
    got = env.from_collection([("k", 1, 1)] * 10).key_by(lambda e: e[0]).window(GlobalWindows.create()) \
        .trigger(CountTrigger.of(4)).apply(lambda k, w, xs: [len(list(xs))]).execute_and_collect()
    assert got == [4, 8]  # CountTrigger does not purge: the window keeps growing


def test_processing_time_windows(parallelism):
    class SlowTail(GeneratedSource):
        def create_reader(self, ctx):
            inner = super().create_reader(ctx)

            class R:
                def read_batches(self_inner):
                    for b in inner.read_batches():
                        time.sleep(0.02)
                        yield b
                    time.sleep(0.6)  # let the last processing-time windows fire before the end

                def close(self_inner):
                    pass
            return R()

    env = env_for(parallelism)
    got = env.from_source(SlowTail(3000, lambda i: ("k" + str(i % 3), i), batch_size=50)) \
        .key_by(lambda e: e[0]).window(TumblingProcessingTimeWindows.of(Time.milliseconds(200))) \
        .apply(lambda k, w, xs: [(k, w.start, w.end, len(list(xs)))]).execute_and_collect()
    assert sum(g[3] for g in got) == 3000
    assert all(g[2] - g[1] == 200 and g[1] % 200 == 0 for g in got)
    assert len({g[1] for g in got}) >= 2


def test_event_time_window_needs_timestamps():
    env = env_for(1)
    with pytest.raises(JobGraphError, match="no timestamps"):
        env.from_collection([1]).key_by(lambda v: v).window(TumblingEventTimeWindows.of(Time.seconds(1))) \
            .reduce(max).print()
        env.get_job_graph()
