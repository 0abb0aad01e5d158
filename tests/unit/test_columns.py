"""Column batches and key-group routing over columns, against a plain-Python reference.

The reference below writes out the documented assignment (CRC-32 of the key's bytes,
the tuple combination, MurmurHash3's finaliser, Flink's range assignment) with
``zlib`` and ``struct`` only, for the key types a CSV source produces.
"""

from __future__ import annotations

import math
import operator
import random
import struct
import zlib

import numpy as np
import pyarrow as pa
import pytest

from emrflow.api.datastream import key_selector_of
from emrflow.graph.jobgraph import _on_value
from emrflow.runtime.aggregators import ReduceAggregator
from emrflow.runtime.network.columns import ColumnBatch, KeyColumns, crc32_words, key_fields
from emrflow.runtime.network.writers import CombiningWriter, ForwardWriter, HashWriter, RebalanceWriter


def _fmix(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return h ^ (h >> 16)


def _hash(v) -> int:
    if isinstance(v, str):
        return zlib.crc32(v.encode())
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and -2**63 <= v < 2**63:
            return zlib.crc32(struct.pack("<q", int(v)))
        return zlib.crc32(struct.pack("<d", v))
    return zlib.crc32(struct.pack("<q", int(v)))


def reference_subtask(key, max_parallelism: int, parallelism: int) -> int:
    if isinstance(key, tuple):
        h = 0x345678 ^ len(key)
        for item in key:
            h = ((h * 1000003) ^ _hash(item)) & 0xFFFFFFFF
    else:
        h = _hash(key)
    return (_fmix(h) % max_parallelism) * parallelism // max_parallelism


RNG = random.Random(11)
N = 3000
INTS = ([RNG.randrange(-2**63, 2**63) for _ in range(N // 2)] + [RNG.randrange(-1000, 1000) for _ in range(N // 2 - 6)]
        + [0, -1, 2**63 - 1, -2**63, 1, 255])
FLOATS = ([RNG.uniform(-1e9, 1e9) for _ in range(N // 2)] + [float(RNG.randrange(-500, 500)) for _ in range(N // 2 - 8)]
          + [math.inf, -math.inf, math.nan, -0.0, 2.0**63, -2.0**63, 1e300, 0.5])
STRS = [RNG.choice(["", "a", "é", "日本語", "x" * 50, "m1"]) + str(RNG.randrange(300)) for _ in range(N)]
BOOLS = [RNG.random() < 0.5 for _ in range(N)]
BATCH = ColumnBatch(pa.record_batch([pa.array(INTS, pa.int64()), pa.array(FLOATS, pa.float64()),
                                     pa.array(STRS, pa.string()), pa.array(BOOLS, pa.bool_())],
                                    names=["i", "f", "s", "b"]))


@pytest.mark.parametrize("bound", [2**16, 2**32, 2**63])  # one, two or four table reads per value
def test_crc32_of_int64_words_is_zlibs(bound):
    values = [v % bound for v in INTS] + [bound - 1, 0]
    got = crc32_words(pa.array(values, pa.int64()).to_numpy()).tolist()
    assert got == [zlib.crc32(struct.pack("<q", v)) for v in values]
    signed = crc32_words(pa.array(INTS, pa.int64()).to_numpy()).tolist()
    assert signed == [zlib.crc32(struct.pack("<q", v)) for v in INTS]


def test_rows_are_the_columns_values_as_python_objects():
    rows = BATCH.rows()
    assert len(rows) == N and all(type(r) is tuple for r in rows)
    for r, i, f, s, b in zip(rows, INTS, FLOATS, STRS, BOOLS):
        assert r[0] == i and type(r[0]) is int and r[2] == s and r[3] is b
        assert type(r[1]) is float and (r[1] == f or (math.isnan(f) and math.isnan(r[1])))


@pytest.mark.parametrize("key", [0, 1, 2, 3, (1, 0), (2, 3, 1), (0,), (3, 3)])
@pytest.mark.parametrize("max_parallelism,parallelism", [(128, 2), (128, 3), (4096, 7), (5, 5), (1, 1)])
def test_key_groups_over_columns_are_the_documented_assignment(key, max_parallelism, parallelism):
    fields = key_fields(key_selector_of(key))
    assert fields is not None
    got = KeyColumns(*fields, max_parallelism, parallelism).subtasks(BATCH).tolist()
    composite = isinstance(key, tuple)
    positions = key if composite else (key,)
    expected = [reference_subtask(tuple(r[p] for p in positions) if composite else r[key],
                                  max_parallelism, parallelism) for r in BATCH.rows()]
    assert got == expected


def test_only_field_position_selectors_route_columns():
    assert key_fields(operator.itemgetter(2)) == ((2,), False)
    assert key_fields(key_selector_of((1, 0))) == ((1, 0), True)
    assert key_fields(key_selector_of((4,))) == ((4,), True)
    assert key_selector_of((4,))((0, 1, 2, 3, "k")) == ("k",)
    assert key_fields(key_selector_of("name")) is None   # dict records
    assert key_fields(lambda r: r[1]) == ((1,), False)            # read from the bytecode
    assert key_fields(lambda r: (r[1], r[0])) == ((1, 0), True)
    assert key_fields(lambda r: r[1] // 10) is None                # not a field
    assert key_fields(_on_value(lambda r: r[2])) == ((2,), False)  # of (timestamp, value) records
    assert key_fields(_on_value(lambda r: str(r[2]))) is None
    with_nulls = ColumnBatch(pa.record_batch([pa.array([1, None, 3])], names=["a"]))
    assert KeyColumns((0,), False, 128, 2).subtasks(with_nulls) is None
    assert KeyColumns((5,), False, 128, 2).subtasks(with_nulls) is None  # no such field


def test_split_keeps_order_and_ipc_round_trips():
    subtasks = KeyColumns((0,), False, 128, 3).subtasks(BATCH)
    parts = BATCH.split(subtasks, 3)
    rows = BATCH.rows()
    for i, part in enumerate(parts):
        expected = [r for r, s in zip(rows, subtasks.tolist()) if s == i]
        assert part is not None and part.rows()[:50] == expected[:50]
        back = ColumnBatch.from_bytes(part.to_bytes())
        assert [r[0] for r in back.rows()] == [r[0] for r in expected]
    joined = ColumnBatch.concat([p for p in parts if p is not None])
    assert len(joined) == N and sorted(r[0] for r in joined.rows()) == sorted(INTS)
    many = BATCH.split(KeyColumns((0,), False, 128, 6).subtasks(BATCH), 6)  # the sort-based split
    assert sum(len(p) for p in many if p is not None) == N


@pytest.mark.parametrize("rows_per_slice", [1, 7, N - 1, N, 10 * N])
def test_slices_cut_a_batch_in_order_without_copying(rows_per_slice):
    parts = BATCH.slices(rows_per_slice)
    assert [len(p) for p in parts] == [min(rows_per_slice, N - i) for i in range(0, N, rows_per_slice)]
    assert repr([r for p in parts for r in p.rows()]) == repr(BATCH.rows())  # NaN too
    base = BATCH.record_batch.column(0).buffers()[1].address
    assert all(p.record_batch.column(0).buffers()[1].address == base for p in parts)  # shared memory
    stamped = BATCH.with_timestamps(np.arange(N, dtype=np.int64))
    assert repr([r for p in stamped.slices(rows_per_slice) for r in p.rows()]) == repr(stamped.rows())
    assert all(p.timestamped for p in stamped.slices(rows_per_slice))


class ListChannel:
    """Keeps what it was sent, as ("rows"/"columns", list of rows)."""

    def __init__(self):
        self.sent = []

    def send_records(self, records) -> float:
        if type(records) is ColumnBatch:
            self.sent.append(("columns", records.rows()))
        else:
            self.sent.append(("rows", list(records)))
        return 0.0

    def send_event(self, event) -> float:
        self.sent.append(("event", event))
        return 0.0

    def records(self) -> list:
        return [r for kind, buf in self.sent if kind != "event" for r in buf]


def _ratings(n: int, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    return [(rng.randrange(600), rng.randrange(9000), rng.randrange(1, 11) / 2, i) for i in range(n)]


def _columns(rows: list[tuple]) -> ColumnBatch:
    cols = list(zip(*rows))
    return ColumnBatch(pa.record_batch([pa.array(cols[0], pa.int64()), pa.array(cols[1], pa.int64()),
                                        pa.array(cols[2], pa.float64()), pa.array(cols[3], pa.int64())],
                                       names=["u", "m", "r", "t"]))


@pytest.mark.parametrize("parallelism", [1, 2, 3, 5])
def test_hash_writer_mixing_rows_and_columns_keeps_each_consumers_order(parallelism):
    records = _ratings(9000, parallelism)
    channels = [ListChannel() for _ in range(parallelism)]
    writer = HashWriter(channels, 700, key_selector_of((1, 0)), 128)
    pieces = [records[i:i + 900] for i in range(0, len(records), 900)]
    for k, piece in enumerate(pieces):  # alternate lists and column batches
        writer.write_batch(_columns(piece) if k % 3 else piece)
    writer.flush()
    for idx, ch in enumerate(channels):
        expected = [r for r in records if reference_subtask((r[1], r[0]), 128, parallelism) == idx]
        assert ch.records() == expected
        kinds = [kind for kind, _ in ch.sent]
        assert "columns" in kinds and "rows" in kinds


def test_writers_that_cannot_route_columns_turn_them_into_rows():
    records = _ratings(3000, 5)
    for make in (lambda chs: HashWriter(chs, 512, lambda rec: rec[1] + 0, 128),
                 lambda chs: RebalanceWriter(chs, 512),
                 lambda chs: CombiningWriter(chs, 512, key_selector_of(1), 128,
                                         ReduceAggregator(lambda a, b: max(a, b)))):
        channels = [ListChannel(), ListChannel()]
        writer = make(channels)
        writer.write_batch(_columns(records))
        writer.end_input()
        writer.flush()
        got = channels[0].records() + channels[1].records()
        assert all(kind == "rows" for ch in channels for kind, _ in ch.sent)
        assert len(got) > 0 and all(type(r) is tuple for r in got)
    single = ListChannel()
    forward = ForwardWriter([single], 512)
    forward.write_batch(_columns(records))
    forward.flush()
    assert single.sent[0][0] == "columns" and single.records() == records



def test_timestamped_batches_carry_pairs_through_split_ipc_and_routing():
    records = _ratings(4000, 9)
    stamps = [r[3] * 1000 + 7 for r in records]
    batch = _columns(records).with_timestamps(pa.array(stamps).to_numpy())
    assert batch.timestamped and len(batch) == len(records)
    assert batch.rows() == list(zip(stamps, records))
    assert batch.values() == records
    with pytest.raises(ValueError):
        batch.with_timestamps(pa.array(stamps).to_numpy())
    back = ColumnBatch.from_bytes(batch.to_bytes())
    assert back.timestamped and back.rows() == batch.rows()
    # routing by a key of the value: the timestamp column is not a field of the value
    channels = [ListChannel(), ListChannel(), ListChannel()]
    writer = HashWriter(channels, 512, _on_value(lambda r: r[1]), 128)
    writer.write_batch(batch)
    writer.flush()
    for idx, ch in enumerate(channels):
        assert all(kind == "columns" for kind, _ in ch.sent)
        assert ch.records() == [(t, r) for t, r in zip(stamps, records)
                                if reference_subtask(r[1], 128, 3) == idx]
    assert KeyColumns((4,), False, 128, 2).subtasks(batch) is None  # position 4 is the timestamp
    assert not _columns(records).timestamped
