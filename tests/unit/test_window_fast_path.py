"""The window operator's fast path (aligned event-time windows, default trigger, incremental
functions) on both backends, against a plain-Python reference: grouping by window, the count
specialisation, spilling to RocksDB under a tiny memory budget and back, and snapshots taken
while entries are spilled."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from emrflow.api.eventtime import MAX_WATERMARK
from emrflow.api.functions import AggregateFunction, ProcessWindowFunction, RuntimeContext
from emrflow.api.windowed import WindowSpec
from emrflow.api.windowing import SlidingEventTimeWindows, TumblingEventTimeWindows
from emrflow.graph.keygroups import assign_key_to_subtask, key_group_range
from emrflow.runtime.operators import Output
from emrflow.runtime.window import WindowOperator, _is_count
from emrflow.testing import CollectingTarget


class Count(AggregateFunction):
    def create_accumulator(self):
        return 0

    def add(self, value, acc):
        return acc + 1

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return a + b


class CountFloat(Count):
    def add(self, value, acc):
        return acc + 1.0


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


def _op(spec, backend, budget=None, subtask=0, parallelism=1):
    op = WindowOperator("w", spec, lambda r: r[0], 128, True, backend)
    assert op.fast
    if budget is not None:
        op.memory_budget = budget
    sink, late = CollectingTarget(), CollectingTarget()
    op.output = Output([sink], [])
    op.side_outputs = {"late": Output([late], [])}
    op.open(RuntimeContext("w", subtask, parallelism, 128, 0, {}))
    return op, sink, late


def _records(n=6000, keys=50, seed=7, disorder=40):
    rng = random.Random(seed)
    recs = [(i + rng.randrange(-disorder, disorder + 1), (f"k{rng.randrange(keys)}", rng.randrange(10)))
            for i in range(n)]
    return recs


def _feed(op, recs, bound=20, batch=97):
    """Batches, each followed by the watermark max ts - bound - 1."""
    top = -2**62
    for i in range(0, len(recs), batch):
        b = recs[i:i + batch]
        op.process_batch(b)
        top = max(top, max(t for t, _ in b))
        op.process_watermark(top - bound - 1)


def _reference(recs, size, slide, kind, bound=20, batch=97):
    """Plain Python: windows of each record that are not late when its batch arrives."""
    wm, top = -2**63, -2**62
    contents, late = defaultdict(list), []
    for i in range(0, len(recs), batch):
        b = recs[i:i + batch]
        for ts, v in b:
            starts = [s for s in range(ts - ts % slide - size + slide, ts + 1, slide) if s <= ts < s + size]
            live = [s for s in starts if s + size - 1 > wm]
            if not live:
                late.append((ts, v))
            for s in live:
                contents[(v[0], s)].append(v)
        top = max(top, max(t for t, _ in b))
        wm = max(wm, top - bound - 1)
    out = []
    for (k, s), vals in contents.items():
        end = s + size - 1
        if kind == "count":
            out.append((end, len(vals)))
        elif kind == "sum_values":
            out.append((end, (sum(v[1] for v in vals), tuple(v[1] for v in vals))))
        elif kind == "reduce":
            out.append((end, (k, sum(v[1] for v in vals))))
        elif kind == "with_key":
            out.append((end, (k, s, s + size, len(vals))))
    return sorted(out, key=repr), sorted(late, key=repr)


CASES = {
    "count": lambda: dict(kind="aggregate", function=Count()),
    "sum_values": lambda: dict(kind="aggregate", function=SumAndValues()),
    "reduce": lambda: dict(kind="reduce", function=lambda a, b: (a[0], a[1] + b[1])),
    "with_key": lambda: dict(kind="aggregate", function=Count(), window_function=WithKey()),
}


@pytest.mark.parametrize("budget", [None, 1], ids=["in-memory", "spill-every-batch"])
@pytest.mark.parametrize("backend", ["hashmap", "rocksdb"])
@pytest.mark.parametrize("sizes", [(100, 100), (300, 100)], ids=["tumbling", "sliding"])
@pytest.mark.parametrize("case", list(CASES))
def test_fast_path_matches_reference(case, sizes, backend, budget):
    size, slide = sizes
    assigner = (TumblingEventTimeWindows.of(size) if size == slide
                else SlidingEventTimeWindows.of(size, slide))
    spec = WindowSpec(assigner=assigner, late_tag="late", **CASES[case]())
    recs = _records(disorder=40 if size == slide else 330)  # some records late for all their windows
    op, sink, late = _op(spec, backend, budget)
    assert op._count == (case in ("count", "with_key"))
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


@pytest.mark.parametrize("restore_backend", ["hashmap", "rocksdb"])
@pytest.mark.parametrize("case", ["count", "sum_values"])
def test_snapshot_with_spilled_entries_restores_same_and_rescaled(case, restore_backend):
    size = 200
    spec = lambda: WindowSpec(assigner=TumblingEventTimeWindows.of(size), late_tag="late", **CASES[case]())  # noqa: E731
    recs = _records(n=4000, keys=300, disorder=0)  # in order: rescaled watermarks make nothing late
    half = len(recs) // 2
    expected, _ = _reference(recs, size, size, case)

    first, first_out, _ = _op(spec(), "rocksdb", budget=1)
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

    again, out, _ = _op(spec(), restore_backend)
    again.restore_state([raw], None)
    _feed(again, rest)
    again.process_watermark(MAX_WATERMARK)
    assert sorted(before + out.out, key=repr) == expected
    again.close()

    rescaled = []
    for i in range(2):
        op, o, _ = _op(spec(), restore_backend, subtask=i, parallelism=2)
        op.restore_state([raw], key_group_range(128, 2, i))
        _feed(op, [r for r in rest if assign_key_to_subtask(r[1][0], 128, 2) == i])
        op.process_watermark(MAX_WATERMARK)
        rescaled += o.out
        op.close()
    assert sorted(before + rescaled, key=repr) == expected


def test_count_is_recognised_by_code_only():
    assert _is_count(Count())
    assert not _is_count(CountFloat())
    assert not _is_count(SumAndValues())

    class Plus2(Count):
        def add(self, value, acc):
            return acc + 2

    class ValuePlus1(Count):
        def add(self, value, acc):
            return value + 1

    class StartsAtOne(Count):
        def create_accumulator(self):
            return 1

    class Halves(Count):
        def get_result(self, acc):
            return acc / 2

    for cls in (Plus2, ValuePlus1, StartsAtOne, Halves):
        assert not _is_count(cls()), cls.__name__


@pytest.mark.parametrize("backend", ["hashmap", "rocksdb"])
def test_empty_batches_and_a_batch_across_windows(backend):
    spec = WindowSpec(assigner=TumblingEventTimeWindows.of(10), kind="aggregate", function=Count())
    op, sink, _ = _op(spec, backend)
    op.process_batch([])
    op.process_batch([(9, ("a", 1)), (10, ("a", 1)), (5, ("b", 1)), (25, ("a", 1)), (11, ("a", 1))])
    op.process_watermark(MAX_WATERMARK)
    assert sorted(sink.out) == [(9, 1), (9, 1), (19, 2), (29, 1)]
    op.close()
