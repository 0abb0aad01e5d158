"""BATCH-mode local aggregation (``CombiningWriter``): what reaches each consumer, against plain Python.

The channels are ``ListChannel``s from ``test_columns`` (they keep what was sent: pure logic,
no sockets); the consumer's side is played by a few lines of plain Python that fold what
arrived per key, and the routing reference is the documented key-group assignment written
with ``zlib`` and ``struct`` in ``test_columns``.
"""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from emrflow.api.datastream import key_selector_of
from emrflow.config import ConfigError, Configuration
from emrflow.graph.jobgraph import JobEdge
from emrflow.runtime.aggregators import ReduceAggregator
from emrflow.runtime.network.columns import ColumnBatch
from emrflow.runtime.network.writers import CombiningWriter, HashWriter, int_pair_keys, make_writer
from tests.unit.test_columns import ListChannel, reference_subtask


def later(a: tuple, b: tuple) -> tuple:
    return b if (b[3], b[2]) > (a[3], a[2]) else a


def spread(keys: int, copies: int, seed: int) -> list[tuple]:
    """(user, movie, rating, ts) rows: every (movie, user) pair once per ``keys`` rows, ``copies`` times."""
    rng = random.Random(seed)
    pairs = [(rng.randrange(-2**31, 2**31), rng.randrange(-2**31, 2**31)) for _ in range(keys)]
    return [(u, m, rng.randrange(1, 11) / 2, rng.randrange(10**6))
            for _ in range(copies) for (u, m) in pairs]


def as_columns(rows: list[tuple]) -> ColumnBatch:
    cols = list(zip(*rows))
    return ColumnBatch(pa.record_batch([pa.array(cols[0], pa.int64()), pa.array(cols[1], pa.int64()),
                                        pa.array(cols[2], pa.float64()), pa.array(cols[3], pa.int64())],
                                       names=["u", "m", "r", "t"]))


def expected_latest(rows: list[tuple]) -> dict:
    best: dict = {}
    for r in rows:
        k = (r[1], r[0])
        if k not in best or (r[3], r[2]) > (best[k][3], best[k][2]):
            best[k] = r
    return best


def run(writer: CombiningWriter, pieces: list) -> None:
    for piece in pieces:
        writer.write_batch(piece)
    writer.end_input()
    writer.flush()


def check_delivery(channels: list[ListChannel], rows: list[tuple]) -> list[tuple]:
    """Every record a consumer got belongs to it by key group; folded per key, they give the
    plain-Python result. Returns all records sent."""
    sent = []
    for idx, ch in enumerate(channels):
        got = ch.records()
        assert all(reference_subtask((r[1], r[0]), 128, len(channels)) == idx for r in got)
        sent += got
    final: dict = {}
    for r in sent:
        k = (r[1], r[0])
        final[k] = later(final[k], r) if k in final else r
    assert final == expected_latest(rows)
    return sent


@pytest.mark.parametrize("parallelism", [2, 3])
def test_keys_spread_over_the_input_are_folded_when_the_table_holds_them(parallelism):
    rows = spread(keys=700, copies=6, seed=parallelism)  # each key once per 700 rows
    channels = [ListChannel() for _ in range(parallelism)]
    writer = CombiningWriter(channels, 256, key_selector_of((1, 0)), 128, ReduceAggregator(later),
                             max_keys=1000)
    run(writer, [as_columns(rows[i:i + 300]) for i in range(0, len(rows), 300)])
    sent = check_delivery(channels, rows)
    assert writer.active
    assert len(sent) == 700  # one partial result per key: nothing crossed twice


def test_a_batch_longer_than_a_slice_is_folded_slice_by_slice_and_the_table_fills_between(monkeypatch):
    """A column batch of many slices (``ROWS_PER_SLICE``): the table may fill after any slice;
    what reaches the consumers is what plain Python folds."""
    from emrflow.runtime.network import columns, writers
    monkeypatch.setattr(columns, "ROWS_PER_SLICE", 128)
    monkeypatch.setattr(writers, "ROWS_PER_SLICE", 128)
    rows = spread(keys=900, copies=5, seed=11)
    channels = [ListChannel(), ListChannel()]
    writer = CombiningWriter(channels, 256, key_selector_of((1, 0)), 128, ReduceAggregator(later),
                             max_keys=1000)
    pieces = [as_columns(rows[:2500]), as_columns(rows[2500:])]  # 20 and 16 slices
    run(writer, pieces)
    sent = check_delivery(channels, rows)
    assert writer.active and len(sent) < len(rows) / 2


def test_a_full_table_that_folded_little_switches_the_combiner_off_and_loses_nothing():
    rows = spread(keys=5000, copies=2, seed=3)  # 5000 keys, a table of 400: hardly any folding
    channels = [ListChannel(), ListChannel()]
    writer = CombiningWriter(channels, 256, key_selector_of((1, 0)), 128, ReduceAggregator(later),
                             max_keys=400)
    run(writer, [as_columns(rows[i:i + 100]) for i in range(0, len(rows), 100)])
    sent = check_delivery(channels, rows)
    assert not writer.active
    assert len(sent) == len(rows)  # off after the first fill: the rest went through as they came


def test_a_full_table_that_folded_enough_sends_its_partials_and_stays_on():
    rows = spread(keys=300, copies=8, seed=4) + spread(keys=300, copies=8, seed=5)
    channels = [ListChannel(), ListChannel()]
    writer = CombiningWriter(channels, 256, key_selector_of((1, 0)), 128, ReduceAggregator(later),
                             max_keys=300)
    run(writer, [as_columns(rows[i:i + 150]) for i in range(0, len(rows), 150)])
    sent = check_delivery(channels, rows)
    assert writer.active
    assert len(sent) < len(rows) / 4


def test_column_batches_and_row_batches_mixed_never_share_a_table_wrongly():
    # stand-in int keys (two int32 columns) and tuple keys (rows, or columns out of int32 range)
    rows = spread(keys=500, copies=4, seed=6)
    wide = [(u * 2**20, m, r, t) for (u, m, r, t) in spread(keys=200, copies=3, seed=7)]
    wide += [(u, m, r + 0.5, t + 1) for (u, m, r, t) in wide[:150]]
    pieces, everything = [], []
    for i, part in enumerate([rows[:700], wide[:300], rows[700:1400], rows[1400:], wide[300:]]):
        pieces.append(as_columns(part) if i % 2 == 0 else list(part))
        everything += part
    pieces.insert(2, as_columns(wide[:100]))  # 64-bit values: no stand-ins for this batch
    everything += wide[:100]
    channels = [ListChannel(), ListChannel()]
    writer = CombiningWriter(channels, 128, key_selector_of((1, 0)), 128, ReduceAggregator(later))
    run(writer, pieces)
    check_delivery(channels, everything)


def test_a_single_field_key_folds_on_the_columns_values():
    rows = spread(keys=400, copies=5, seed=8)
    rows = [(u, m % 37, r, t) for (u, m, r, t) in rows]  # 37 movies
    channels = [ListChannel(), ListChannel()]
    agg = ReduceAggregator(lambda a, b: (a[0], a[1], a[2] + b[2], max(a[3], b[3])))
    writer = CombiningWriter(channels, 64, key_selector_of(1), 128, agg)
    run(writer, [as_columns(rows[i:i + 250]) for i in range(0, len(rows), 250)])
    totals: dict = {}
    for idx, ch in enumerate(channels):
        for r in ch.records():
            assert reference_subtask(r[1], 128, 2) == idx
            totals[r[1]] = totals.get(r[1], 0) + r[2]
    expected: dict = {}
    for r in rows:
        expected[r[1]] = expected.get(r[1], 0) + r[2]
    assert totals == pytest.approx(expected)
    assert sum(len(ch.records()) for ch in channels) == 37


def test_int_pair_stand_ins_are_distinct_for_distinct_pairs_and_refuse_wide_values():
    edge = [-2**31, -1, 0, 1, 2**31 - 1]
    a = [x for x in edge for _ in edge]
    b = [y for _ in edge for y in edge]
    keys = int_pair_keys(pa.array(a, pa.int64()), pa.array(b, pa.int32()))
    assert len(set(keys)) == len(keys) == 25
    assert all(k == x * 2**32 + y + 2**31 for k, x, y in zip(keys, a, b))
    assert int_pair_keys(pa.array([2**31], pa.int64()), pa.array([0], pa.int64())) is None
    assert int_pair_keys(pa.array([0], pa.int64()), pa.array([-2**31 - 1], pa.int64())) is None
    assert int_pair_keys(pa.array([0], pa.uint64()), pa.array([0], pa.int64())) is None
    assert int_pair_keys(pa.array([0.5], pa.float64()), pa.array([0], pa.int64())) is None


def test_a_combining_edge_gets_a_combiner_with_the_configured_table_size():
    edge = JobEdge(index=0, source_vertex=0, source_operator=0, target_vertex=1, partitioner="hash",
                   key_selector=key_selector_of(1), combine=("keyed_reduce", later))
    writer = make_writer(edge, [ListChannel(), ListChannel()], 64, 0, 128,
                         lambda kind, fn: ReduceAggregator(fn), combine_max_keys=77)
    assert type(writer) is CombiningWriter and writer._max_keys == 77
    plain = make_writer(JobEdge(index=0, source_vertex=0, source_operator=0, target_vertex=1,
                                partitioner="hash", key_selector=key_selector_of(1)),
                        [ListChannel()], 64, 0, 128, lambda kind, fn: ReduceAggregator(fn))
    assert type(plain) is HashWriter


def test_max_keys_is_checked_where_it_is_set():
    with pytest.raises(ConfigError, match="execution.batch.local-aggregation.max-keys"):
        Configuration({"execution.batch.local-aggregation.max-keys": 0})
    assert Configuration({"execution.batch.local-aggregation.max-keys": "5000"}).get(
        "execution.batch.local-aggregation.max-keys") == 5000
    with pytest.raises(ValueError, match="max-keys"):
        CombiningWriter([ListChannel()], 8, key_selector_of(1), 128, ReduceAggregator(later), max_keys=0)
