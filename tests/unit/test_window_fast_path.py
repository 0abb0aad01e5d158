"""Aligned event-time windows (tumbling, sliding; default trigger; reduce/aggregate) on both backends,
against a plain-Python reference: the aligned-window operator with and without the fast path of the
built-in aggregates (``Count()``, ``Sum(field)``, ...), the generic window operator on the same input,
spilling to RocksDB under a tiny memory budget and back, snapshots taken while entries are spilled,
and which path a window takes (chosen by the built-in's class, never by a function's code)."""

from __future__ import annotations

import random
from collections import defaultdict, namedtuple

import pytest

from emrflow import StreamExecutionEnvironment
from emrflow.api.aggregates import Avg, Count, Max, Min, Sum
from emrflow.api.eventtime import MAX_WATERMARK, WatermarkStrategy
from emrflow.api.functions import AggregateFunction, ProcessWindowFunction, RuntimeContext
from emrflow.api.windowed import WindowSpec
from emrflow.api.windowing import (
    CountTrigger,
    EventTimeSessionWindows,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
)
from emrflow.graph.keygroups import assign_key_to_subtask, key_group_range
from emrflow.runtime.operators import AlignedWindowOperator, Output, WindowOperator, window_operator_class
from emrflow.testing import CollectingTarget


class HandCount(AggregateFunction):
    """A count written by hand: the very code the removed bytecode templates matched."""

    def create_accumulator(self):
        return 0

    def add(self, value, accumulator):
        return accumulator + 1

    def get_result(self, accumulator):
        return accumulator

    def merge(self, a, b):
        return a + b


class SumAndValues(AggregateFunction):
    """Mutates its accumulator in place (as Flink's examples do) and keeps the order of values."""

    def create_accumulator(self):
        return [0, []]

    def add(self, value, acc):
        acc[0] += value[1]
        acc[1].append(value[1])
        return acc

    def get_result(self, acc):
        return (acc[0], tuple(acc[1]))

    def merge(self, a, b):
        return [a[0] + b[0], a[1] + b[1]]


class WithKey(ProcessWindowFunction):
    def process(self, key, ctx, values):
        w = ctx.window()
        return [(key, w.start, w.end, v) for v in values]


def _open(op, subtask=0, parallelism=1):
    sink, late = CollectingTarget(), CollectingTarget()
    op.output = Output([sink], [])
    op.side_outputs = {"late": Output([late], [])}
    op.open(RuntimeContext("w", subtask, parallelism, 128, 0, {}))
    return op, sink, late


def _aligned(spec, backend, budget=None, subtask=0, parallelism=1):
    assert window_operator_class(spec, True) is AlignedWindowOperator
    op = AlignedWindowOperator("w", spec, lambda r: r[0], 128, True, backend)
    if budget is not None:
        op.memory_budget = budget
    return _open(op, subtask, parallelism)


def _generic(spec, backend):
    return _open(WindowOperator("w", spec, lambda r: r[0], 128, True, backend))


def _records(n=6000, keys=50, seed=7, disorder=40):
    rng = random.Random(seed)
    return [(i + rng.randrange(-disorder, disorder + 1), (f"k{rng.randrange(keys)}", rng.randrange(10)))
            for i in range(n)]


def _feed(op, recs, bound=20, batch=97):
    """Batches, each followed by the watermark max ts - bound - 1."""
    top = -2**62
    for i in range(0, len(recs), batch):
        b = recs[i:i + batch]
        op.process_batch(b)
        top = max(top, max(t for t, _ in b))
        op.process_watermark(top - bound - 1)


def _reference(recs, size, slide, kind, bound=20, batch=97, offset=0):
    """Plain Python: windows of each record that are not late when its batch arrives."""
    wm, top = -2**63, -2**62
    contents, late = defaultdict(list), []
    for i in range(0, len(recs), batch):
        b = recs[i:i + batch]
        for ts, v in b:
            last = ts - (ts - offset) % slide
            starts = [s for s in range(last - size + slide, ts + 1, slide) if s <= ts < s + size]
            live = [s for s in starts if s + size - 1 > wm]
            if not live:
                late.append((ts, v))
            for s in live:
                contents[(v[0], s)].append(v)
        top = max(top, max(t for t, _ in b))
        wm = max(wm, top - bound - 1)
    out = [(s + size - 1, _result(kind, k, s, size, vals)) for (k, s), vals in contents.items()]
    return sorted(out, key=repr), sorted(late, key=repr)


def _result(kind, key, start, size, vals):
    """What window ``[start, start + size)`` of ``key`` holding records ``vals`` gives, in plain Python."""
    fields = [v[1] for v in vals]
    if kind in ("count", "hand_count"):
        return len(vals)
    if kind == "sum":
        return sum(fields)
    if kind == "min":
        return min(fields)
    if kind == "max":
        return max(fields)
    if kind == "avg":
        return sum(fields) / len(fields)
    if kind == "sum_values":
        return (sum(fields), tuple(fields))
    if kind == "reduce":
        return (key, sum(fields))
    assert kind == "with_key"
    return (key, start, start + size, len(vals))


CASES = {  # name -> (WindowSpec arguments, takes the fast path)
    "count": (lambda: dict(kind="aggregate", function=Count()), True),
    "sum": (lambda: dict(kind="aggregate", function=Sum(1)), True),
    "min": (lambda: dict(kind="aggregate", function=Min(1)), True),
    "max": (lambda: dict(kind="aggregate", function=Max(1)), True),
    "avg": (lambda: dict(kind="aggregate", function=Avg(1)), True),
    "with_key": (lambda: dict(kind="aggregate", function=Count(), window_function=WithKey()), True),
    "hand_count": (lambda: dict(kind="aggregate", function=HandCount()), False),
    "sum_values": (lambda: dict(kind="aggregate", function=SumAndValues()), False),
    "reduce": (lambda: dict(kind="reduce", function=lambda a, b: (a[0], a[1] + b[1])), False),
}
SIZES = {"tumbling": (100, 100), "sliding": (300, 100)}


def _spec(case, size, slide, offset=0):
    assigner = (TumblingEventTimeWindows.of(size, offset) if size == slide
                else SlidingEventTimeWindows.of(size, slide, offset))
    return WindowSpec(assigner=assigner, late_tag="late", **CASES[case][0]())


@pytest.mark.parametrize("budget", [None, 1], ids=["in-memory", "spill-every-batch"])
@pytest.mark.parametrize("backend", ["hashmap", "rocksdb"])
@pytest.mark.parametrize("sizes", list(SIZES.values()), ids=list(SIZES))
@pytest.mark.parametrize("case", list(CASES))
def test_aligned_windows_match_reference(case, sizes, backend, budget):
    size, slide = sizes
    spec = _spec(case, size, slide)
    assert spec.is_fast_path() == CASES[case][1]
    recs = _records(disorder=40 if size == slide else 330)  # some records late for all their windows
    op, sink, late = _aligned(spec, backend, budget)
    assert op.fast_path == CASES[case][1]
    _feed(op, recs)
    op.process_watermark(MAX_WATERMARK)
    expected, expected_late = _reference(recs, size, slide, case)
    assert expected_late, "the input should have late records"
    assert sorted(sink.out, key=repr) == expected
    assert sorted(late.out, key=repr) == expected_late
    if budget == 1 and backend == "rocksdb":
        assert op.spilled_entries > 0 and not op._on_disk
        assert list(op.backend.items("window-contents")) == []  # fired windows leave nothing behind
    op.close()


@pytest.mark.parametrize("backend", ["hashmap", "rocksdb"])
@pytest.mark.parametrize("case", ["count", "hand_count", "sum_values", "reduce"])
def test_tumbling_windows_with_an_offset_match_reference(case, backend):
    """Batches spanning several windows of an offset tumbling assigner: grouped by window start in C
    (``_fold_tumbling``), a user's function folded in one pass, a window's records in arrival order."""
    recs = _records(n=3000, disorder=150)  # a batch of 97 spans up to four windows of 100
    op, sink, late = _aligned(_spec(case, 100, 100, offset=30), backend)
    _feed(op, recs, bound=200)
    op.process_watermark(MAX_WATERMARK)
    expected, expected_late = _reference(recs, 100, 100, case, bound=200, offset=30)
    assert sorted(sink.out, key=repr) == expected
    assert sorted(late.out, key=repr) == expected_late
    op.close()


@pytest.mark.parametrize("sizes", list(SIZES.values()), ids=list(SIZES))
@pytest.mark.parametrize("case", ["count", "sum", "min", "max", "avg", "with_key"])
def test_builtins_on_the_generic_window_operator_match_reference(case, sizes):
    """The same built-ins through their own methods (the generic operator calls them per record)."""
    size, slide = sizes
    recs = _records(n=2000, disorder=40 if size == slide else 330)
    op, sink, late = _generic(_spec(case, size, slide), "hashmap")
    _feed(op, recs)
    op.process_watermark(MAX_WATERMARK)
    expected, expected_late = _reference(recs, size, slide, case)
    assert sorted(sink.out, key=repr) == expected
    assert sorted(late.out, key=repr) == expected_late
    op.close()


@pytest.mark.parametrize("restore_backend", ["hashmap", "rocksdb"])
@pytest.mark.parametrize("case", ["count", "avg", "sum_values"])
def test_snapshot_with_spilled_entries_restores_same_and_rescaled(case, restore_backend):
    size = 200
    recs = _records(n=4000, keys=300, disorder=0)  # in order: rescaled watermarks make nothing late
    half = len(recs) // 2
    expected, _ = _reference(recs, size, size, case)

    first, first_out, _ = _aligned(_spec(case, size, size), "rocksdb", budget=1)
    _feed(first, recs[:half])
    # spilled entries, then newer values of some of them in memory
    first.memory_budget = 10**9
    first.process_batch(recs[half:half + 50])
    assert first._on_disk and any(first._wins.values())
    snap = first.snapshot_state(1)
    raw = snap() if callable(snap) else snap
    before = list(first_out.out)
    first.close()
    rest = recs[half + 50:]

    again, out, _ = _aligned(_spec(case, size, size), restore_backend)
    again.restore_state([raw], None)
    _feed(again, rest)
    again.process_watermark(MAX_WATERMARK)
    assert sorted(before + out.out, key=repr) == expected
    again.close()

    rescaled = []
    for i in range(2):
        op, o, _ = _aligned(_spec(case, size, size), restore_backend, subtask=i, parallelism=2)
        op.restore_state([raw], key_group_range(128, 2, i))
        _feed(op, [r for r in rest if assign_key_to_subtask(r[1][0], 128, 2) == i])
        op.process_watermark(MAX_WATERMARK)
        rescaled += o.out
        op.close()
    assert sorted(before + rescaled, key=repr) == expected


@pytest.mark.parametrize("backend", ["hashmap", "rocksdb"])
@pytest.mark.parametrize("case", ["count", "min", "avg"])
def test_generic_snapshot_restores_on_the_fast_path(case, backend):
    """Accumulators made by a built-in's methods (generic operator) continue in the fast path's folds."""
    size = 200
    recs = _records(n=3000, keys=80, disorder=0)
    half = len(recs) // 2
    expected, _ = _reference(recs, size, size, case)
    first, first_out, _ = _generic(_spec(case, size, size), backend)
    _feed(first, recs[:half])
    snap = first.snapshot_state(1)
    raw = snap() if callable(snap) else snap
    before = list(first_out.out)
    first.close()
    again, out, _ = _aligned(_spec(case, size, size), backend)
    assert again.fast_path
    again.restore_state([raw], None)
    _feed(again, recs[half:])
    again.process_watermark(MAX_WATERMARK)
    assert sorted(before + out.out, key=repr) == expected
    again.close()


def _window_name(windowed, function):
    env = StreamExecutionEnvironment.get_execution_environment()
    stream = env.from_collection([("a", 1, 0)]).assign_timestamps_and_watermarks(
        WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda r: r[2]))
    return windowed(stream.key_by(lambda r: r[0])).aggregate(function).get_name()


def test_the_path_is_chosen_by_the_builtin_class_and_shown_in_the_operator_name():
    tumbling = lambda ks: ks.window(TumblingEventTimeWindows.of(10))  # noqa: E731

    class MyCount(Count):  # a subclass may change any method: it runs its own
        pass

    assert _window_name(tumbling, Count()) == "Window(aggregate Count(), fast path)"
    assert _window_name(tumbling, Sum(1)) == "Window(aggregate Sum(1), fast path)"
    assert _window_name(lambda ks: ks.window(SlidingEventTimeWindows.of(10, 5)), Avg("x")) \
        == "Window(aggregate Avg('x'), fast path)"
    # same code as the old count template, or a subclass of a built-in: no fast path
    assert _window_name(tumbling, HandCount()) == "Window(aggregate)"
    assert _window_name(tumbling, MyCount()) == "Window(aggregate)"
    # a built-in where the windows are not aligned: named, without the fast path
    assert _window_name(lambda ks: tumbling(ks).trigger(CountTrigger.of(2)), Count()) == "Window(aggregate Count())"
    assert _window_name(lambda ks: ks.window(EventTimeSessionWindows.with_gap(5)), Max(1)) \
        == "Window(aggregate Max(1))"

    for function, fast in ((Count(), True), (HandCount(), False), (MyCount(), False)):
        spec = WindowSpec(assigner=TumblingEventTimeWindows.of(10), kind="aggregate", function=function)
        op, sink, _ = _aligned(spec, "hashmap")
        assert op.fast_path is fast, function
        op.process_batch([(1, ("a", 0)), (2, ("a", 0)), (3, ("b", 0))])
        op.process_watermark(MAX_WATERMARK)
        assert sorted(sink.out) == [(9, 1), (9, 2)]
    # not aligned: the generic operator
    spec = WindowSpec(assigner=TumblingEventTimeWindows.of(10), trigger=CountTrigger.of(2), kind="aggregate",
                      function=Count())
    assert window_operator_class(spec, True) is WindowOperator


@pytest.mark.parametrize("backend", ["hashmap", "rocksdb"])
def test_empty_batches_and_a_batch_across_windows(backend):
    spec = WindowSpec(assigner=TumblingEventTimeWindows.of(10), kind="aggregate", function=Count())
    op, sink, _ = _aligned(spec, backend)
    op.process_batch([])
    op.process_batch([(9, ("a", 1)), (10, ("a", 1)), (5, ("b", 1)), (25, ("a", 1)), (11, ("a", 1))])
    op.process_watermark(MAX_WATERMARK)
    assert sorted(sink.out) == [(9, 1), (9, 1), (19, 2), (29, 1)]
    op.close()


Rating = namedtuple("Rating", "user stars")


def test_builtin_methods_follow_plain_python():
    rng = random.Random(5)
    values = [rng.choice([rng.randrange(-50, 50), rng.random() * 10]) for _ in range(300)]

    def fold(f, records):
        acc = f.create_accumulator()
        for r in records:
            acc = f.add(r, acc)
        return acc

    records = [("k", v) for v in values]
    for f, expected in ((Count(), len(values)), (Sum(1), sum(values)), (Min(1), min(values)),
                        (Max(1), max(values)), (Avg(1), sum(values) / len(values))):
        assert f.get_result(fold(f, records)) == expected, f
        a, b = fold(f, records[:100]), fold(f, records[100:])
        assert f.get_result(f.merge(a, b)) == pytest.approx(expected), f
        assert f.get_result(f.merge(f.create_accumulator(), fold(f, records))) == expected, f
    # ties keep the first value, as Python's min and max
    assert fold(Min(), [1, 1.0, 2]) is min([1, 1.0, 2])
    assert fold(Max(), [2, 2.0, 1]) is max([2, 2.0, 1])
    assert Min().merge(1, 1.0) is 1 and Max().merge(2, 2.0) is 2  # noqa: F632
    # fields: positions, dict keys, attributes, the record itself
    assert Sum("stars").get_result(fold(Sum("stars"), [{"stars": 2}, {"stars": 3}])) == 5
    assert Max("stars").get_result(fold(Max("stars"), [Rating("u", 4), Rating("v", 1)])) == 4
    assert Avg().get_result(fold(Avg(), [1, 2])) == 1.5
    with pytest.raises(TypeError, match="field 'stars'"):
        Sum("stars").add(("u", 4), 0)
    with pytest.raises(TypeError, match=r"Sum expects a field position \(int\), a field name \(str\)"):
        Sum(1.5)
    with pytest.raises(TypeError, match="Min expects"):
        Min(True)


def test_builtins_on_session_windows():
    """Session windows merge accumulators with ``merge`` (generic operator)."""
    recs = [(0, ("a", 4)), (5, ("a", 1)), (100, ("a", 7)), (3, ("b", 2)), (12, ("a", 5))]
    for f, expected in ((Count(), [3, 1, 1]), (Sum(1), [10, 7, 2]), (Min(1), [1, 7, 2]), (Max(1), [5, 7, 2]),
                        (Avg(1), [10 / 3, 7.0, 2.0])):
        spec = WindowSpec(assigner=EventTimeSessionWindows.with_gap(10), kind="aggregate", function=f)
        assert window_operator_class(spec, True) is WindowOperator
        op, sink, _ = _generic(spec, "hashmap")
        op.process_batch(recs)
        op.process_watermark(MAX_WATERMARK)
        # a: [0, 22) from 0, 5, 12; a: [100, 110); b: [3, 13)
        assert sorted(sink.out) == sorted(zip([21, 109, 12], expected)), f
        op.close()
