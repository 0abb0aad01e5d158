"""Checkpoint pieces on their own: restart strategies, barrier alignment, source positions,
state snapshots and their redistribution by key group, checkpoint metadata checks."""

from __future__ import annotations

import logging
import os
import random

import cloudpickle
import pytest

from emrflow.api.eventtime import MAX_WATERMARK
from emrflow.api.functions import KeyedProcessFunction, RuntimeContext
from emrflow.api.state import ListStateDescriptor, ValueStateDescriptor
from emrflow.api.windowed import WindowSpec
from emrflow.api.windowing import EventTimeSessionWindows, SlidingEventTimeWindows, TumblingEventTimeWindows
from emrflow.config import Configuration
from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.files import CsvSource, TextFileSource
from emrflow.fs import FileSystem
from emrflow.graph.keygroups import assign_key_to_subtask, key_group_range
from emrflow.runtime import checkpoint as chk
from emrflow.runtime.network.events import CheckpointBarrier
from emrflow.runtime.operators import KeyedProcessOperator, Output, window_operator_class
from emrflow.runtime.restart import RestartStrategy
from emrflow.runtime.state import create_backend
from emrflow.runtime.task import _Alignment
from emrflow.testing import CollectingTarget
from tests.unit.test_split_runtime import polled_batches, subtask_reader

# -- restart strategies ------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_restart_strategy_defaults_follow_checkpointing():
    assert RestartStrategy(Configuration({})).kind == "none"
    assert RestartStrategy(Configuration({})).on_failure() is None
    assert RestartStrategy(Configuration({"execution.checkpointing.interval": 1000})).kind == "exponential-delay"


def test_fixed_delay_counts_attempts():
    s = RestartStrategy(Configuration({"restart-strategy.type": "fixed-delay",
                                       "restart-strategy.fixed-delay.attempts": 2,
                                       "restart-strategy.fixed-delay.delay": 1500}))
    assert [s.on_failure(), s.on_failure(), s.on_failure()] == [1.5, 1.5, None]


def test_failure_rate_counts_failures_in_the_interval():
    clock = Clock()
    s = RestartStrategy(Configuration({"restart-strategy.type": "failure-rate",
                         "restart-strategy.failure-rate.max-failures-per-interval": 2,
                         "restart-strategy.failure-rate.failure-rate-interval": 10_000,
                         "restart-strategy.failure-rate.delay": 200}), clock)
    assert s.on_failure() == 0.2
    clock.t += 1
    assert s.on_failure() == 0.2
    clock.t += 1
    assert s.on_failure() is None  # a third failure within 10 s
    clock.t += 20
    assert s.on_failure() == 0.2   # the window moved on


def test_exponential_delay_grows_caps_and_resets():
    clock = Clock()
    s = RestartStrategy(Configuration({"restart-strategy.type": "exponential-delay",
                         "restart-strategy.exponential-delay.initial-backoff": 100,
                         "restart-strategy.exponential-delay.max-backoff": 500,
                         "restart-strategy.exponential-delay.backoff-multiplier": 2.0,
                         "restart-strategy.exponential-delay.jitter-factor": 0.0,
                         "restart-strategy.exponential-delay.reset-backoff-threshold": 60_000}), clock)
    pauses = []
    for _ in range(5):
        pauses.append(s.on_failure())
        clock.t += 1
    assert pauses == [0.1, 0.2, 0.4, 0.5, 0.5]
    clock.t += 61  # ran longer than the threshold without failing
    assert s.on_failure() == 0.1


# -- barrier alignment ----------------------------------------------------------------------------------

def test_exactly_once_alignment_blocks_until_every_channel_delivered_the_barrier():
    a = _Alignment(3, exactly_once=True)
    b1 = CheckpointBarrier(1, 0)
    assert a.barrier(0, b1) is False and a.blocked == {0}
    assert a.barrier(2, b1) is False and a.blocked == {0, 2}
    a.held.append((0, "records", [1]))
    assert a.finish(1) is True  # the last open channel ended: aligned
    a.complete()
    assert a.blocked == set() and list(a.replay) == [(0, "records", [1])]
    assert a.barrier(1, b1) is False  # a stale barrier of a finished checkpoint


def test_at_least_once_alignment_never_blocks_and_a_newer_barrier_abandons_the_old_one():
    a = _Alignment(2, exactly_once=False)
    assert a.barrier(0, CheckpointBarrier(1, 0)) is False and a.blocked == set()
    e = _Alignment(2, exactly_once=True)
    e.barrier(0, CheckpointBarrier(1, 0))
    e.held.append("x")
    assert e.barrier(1, CheckpointBarrier(2, 0)) is False  # checkpoint 1 abandoned
    assert list(e.replay) == ["x"] and e.blocked == {1} and e.current.checkpoint_id == 2


# -- source positions ------------------------------------------------------------------------------------

@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("kind", ["text", "csv"])
def test_file_readers_resume_exactly_after_the_snapshotted_batch(tmp_path, parallelism, kind):
    rng = random.Random(7)
    lines = [f"{i},{'x' * rng.randrange(0, 80)}" for i in range(5000)]
    (tmp_path / "a.csv").write_text("\n".join(lines[:3000]) + "\n")
    (tmp_path / "b.csv").write_text("\n".join(lines[3000:]) + "\n")
    source = TextFileSource(str(tmp_path)) if kind == "text" else CsvSource(str(tmp_path), types=[int, str])
    for index in range(parallelism):
        ctx = SubtaskContext("src", index, parallelism)
        full = [r for b in polled_batches(subtask_reader(source, ctx)) for r in b]
        for stop_after in (0, 1, 3, 7):
            reader = subtask_reader(source, ctx)
            head, position = [], reader.snapshot_state(0)
            for n, batch in enumerate(polled_batches(reader)):
                if n == stop_after:
                    break
                head += batch
                position = reader.snapshot_state(0)
            reader.close()
            resumed = subtask_reader(source, ctx, cloudpickle.loads(cloudpickle.dumps(position)))
            rest = [r for b in polled_batches(resumed) for r in b]
            assert head + rest == full, (index, stop_after)


# -- keyed state snapshots -----------------------------------------------------------------------------------

@pytest.mark.parametrize("src,dst", [("hashmap", "rocksdb"), ("rocksdb", "hashmap"), ("rocksdb", "rocksdb")])
def test_backend_snapshots_restore_into_either_backend_and_split_by_key_group(src, dst):
    maxp = 128
    a = create_backend(src, maxp)
    data = {f"k{i}": i for i in range(2000)}
    for k, v in data.items():
        a.put("count", k, v)
        a.put("window-contents", (k, (0, 10)), [v])
    snap = a.snapshot()  # synchronous part
    a.put("count", "k1", -1)  # changes after the snapshot are not in it
    raw = snap()  # asynchronous part
    a.close()
    whole = create_backend(dst, maxp)
    whole.restore([raw], None)
    assert dict(whole.items("count")) == data
    whole.close()
    parts = []
    for i in range(3):
        b = create_backend(dst, maxp)
        b.restore([raw], key_group_range(maxp, 3, i))
        got = dict(b.items("count"))
        assert all(assign_key_to_subtask(k, maxp, 3) == i for k in got)
        assert {k for (k, _w) in dict(b.items("window-contents"))} == set(got)
        parts.append(got)
        b.close()
    merged = {k: v for p in parts for k, v in p.items()}
    assert merged == data and sum(map(len, parts)) == len(data)


def _window_op(spec, backend, subtask=0, parallelism=1):
    # tumbling and sliding windows: the aligned-window operator; sessions: the generic one
    op = window_operator_class(spec, True)("w", spec, lambda r: r[0], 128, True, backend)
    sink = CollectingTarget()
    op.output = Output([sink], [])
    op.open(RuntimeContext("w", subtask, parallelism, 128, 0, {}))
    return op, sink


@pytest.mark.parametrize("backend", ["hashmap", "rocksdb"])
@pytest.mark.parametrize("assigner", [TumblingEventTimeWindows.of(100), SlidingEventTimeWindows.of(100, 50),
                                      EventTimeSessionWindows.with_gap(30)], ids=["tumbling", "sliding", "session"])
def test_window_operator_restores_mid_stream_at_the_same_and_another_parallelism(backend, assigner):
    rng = random.Random(3)
    records = sorted(((rng.randrange(0, 2000), (f"u{rng.randrange(40)}", 1)) for _ in range(4000)))
    spec = WindowSpec(assigner=assigner, kind="reduce", function=lambda a, b: (a[0], a[1] + b[1]))
    half = len(records) // 2

    def feed(op, recs, wm):
        for i in range(0, len(recs), 100):
            op.process_batch(recs[i:i + 100])
        op.process_watermark(wm)

    whole, out = _window_op(spec, backend)
    feed(whole, records[:half], records[half][0] - 1)
    feed(whole, records[half:], MAX_WATERMARK)
    expected = sorted(out.out)
    whole.close()

    first, first_out = _window_op(spec, backend)
    feed(first, records[:half], records[half][0] - 1)
    snap = first.snapshot_state(1)
    raw = snap() if callable(snap) else snap
    fired_before = list(first_out.out)
    first.close()
    # same parallelism
    again, again_out = _window_op(spec, backend)
    again.restore_state([raw], None)
    feed(again, records[half:], MAX_WATERMARK)
    assert sorted(fired_before + again_out.out) == expected
    again.close()
    # rescaled to 2: each subtask takes its key groups
    rest = []
    for i in range(2):
        op, o = _window_op(spec, backend, i, 2)
        op.restore_state([raw], key_group_range(128, 2, i))
        mine = [r for r in records[half:] if assign_key_to_subtask(r[1][0], 128, 2) == i]
        feed(op, mine, MAX_WATERMARK)
        rest += o.out
        op.close()
    assert sorted(fired_before + rest) == expected


class _Buffer(KeyedProcessFunction):
    """Keeps every value in list state, emits the list on an event-time timer."""

    def open(self, ctx):
        self.values = ctx.get_list_state(ListStateDescriptor("values"))
        self.seen = ctx.get_state(ValueStateDescriptor("seen"))

    def process_element(self, value, ctx):
        self.values.add(value[1])
        if not self.seen.value():
            self.seen.update(True)
            ctx.timer_service().register_event_time_timer(1000)

    def on_timer(self, ts, ctx):
        yield (ctx.get_current_key(), sorted(self.values.get()))


@pytest.mark.parametrize("backend", ["hashmap", "rocksdb"])
def test_keyed_process_state_and_timers_survive_a_restore(backend):
    records = [(i, (f"k{i % 7}", i)) for i in range(300)]

    def make():
        op = KeyedProcessOperator("p", _Buffer(), lambda r: r[0], 128, True, backend)
        sink = CollectingTarget()
        op.output = Output([sink], [])
        op.open(RuntimeContext("p", 0, 1, 128, 0, {}))
        return op, sink
    a, _ = make()
    a.process_batch(records[:150])
    snap = a.snapshot_state(1)
    raw = snap() if callable(snap) else snap
    a.close()
    b, out = make()
    b.restore_state([raw], None)
    b.process_batch(records[150:])
    b.process_watermark(MAX_WATERMARK)
    want = {f"k{j}": sorted(i for i in range(300) if i % 7 == j) for j in range(7)}
    assert {k: v for _, (k, v) in out.out} == want and len(out.out) == 7  # each timer fired once
    b.close()


# -- checkpoint files ------------------------------------------------------------------------------------

def _checkpoint(directory, cid, payload=b"state"):
    entry = chk.write_task_state(FileSystem(), str(directory), 1, 0, {"op": payload})
    entry.update(vertex=1, subtask=0, operators={"op": {"parallelism": 1, "max_parallelism": 128, "name": "op"}})
    chk.write_metadata(FileSystem(), str(directory), {"format": 1, "job_id": "j", "checkpoint_id": cid,
                                                      "kind": "checkpoint", "tasks": [entry]})


def test_incomplete_truncated_and_bit_flipped_checkpoints_are_detected(tmp_path, caplog):
    job = tmp_path / "job"
    for n in (1, 2, 3):
        _checkpoint(job / f"chk-{n}", n, payload=bytes(1000))
    (job / "chk-4").mkdir()  # started, never completed: no _metadata
    (job / "chk-4" / "task-1-0.state").write_bytes(b"partial")
    with pytest.raises(chk.CheckpointError, match="no _metadata"):
        chk.load_metadata(FileSystem(), str(job / "chk-4"))
    state3 = job / "chk-3" / "task-1-0.state"
    state3.write_bytes(state3.read_bytes()[:-10])
    with pytest.raises(chk.CheckpointError, match="truncated"):
        chk.load_metadata(FileSystem(), str(job / "chk-3"))
    state2 = job / "chk-2" / "task-1-0.state"
    data = bytearray(state2.read_bytes())
    data[-3] ^= 0xFF
    state2.write_bytes(bytes(data))
    with pytest.raises(chk.CheckpointError, match="CRC-32"):
        chk.load_metadata(FileSystem(), str(job / "chk-2"))
    with caplog.at_level(logging.WARNING, logger="emrflow.checkpoint"):
        meta = chk.find_latest_valid(FileSystem(), str(job))
    assert meta["checkpoint_id"] == 1
    text = caplog.text
    assert "skipping checkpoint chk-4" in text and "skipping checkpoint chk-3" in text \
        and "skipping checkpoint chk-2" in text
    os.remove(job / "chk-1" / "task-1-0.state")
    with pytest.raises(chk.CheckpointError, match="no valid checkpoint under .*chk-1.*is missing"):
        chk.find_latest_valid(FileSystem(), str(job))
    with pytest.raises(chk.CheckpointError, match="no checkpoint or savepoint at"):
        chk.find_latest_valid(FileSystem(), str(tmp_path / "nothing-here"))


def test_restore_plan_refuses_another_max_parallelism(tmp_path):
    _checkpoint(tmp_path / "sp", 5)
    meta = chk.load_metadata(FileSystem(), str(tmp_path / "sp"))
    topology = {"vertices": [{"id": 1, "parallelism": 2, "max_parallelism": 256,
                              "operators": [{"id": 3, "uid": "op", "name": "op"}]}]}
    with pytest.raises(chk.CheckpointError, match="max parallelism 128, the job now has 256"):
        chk.plan_restore(meta, topology, allow_non_restored=False)
    topology["vertices"][0]["max_parallelism"] = 128
    plan = chk.plan_restore(meta, topology, allow_non_restored=False)
    assert plan["checkpoint_id"] == 5 and set(plan["operators"]) == {"op"}


# -- the file sink with checkpoints ------------------------------------------------------------------

def _ckpt_writer(sink, index=0, parallelism=1, **config):
    from emrflow.connectors.base import SubtaskContext as Ctx
    return sink.create_writer(Ctx("sink", index, parallelism, config=Configuration(config), checkpointing=True))


def _visible(directory):
    return sorted(n for n in os.listdir(directory) if not n.startswith("."))


def test_file_sink_rolls_by_size_and_publishes_only_completed_checkpoints(tmp_path):
    from emrflow.connectors.files import CsvFileSink
    out = tmp_path / "out"
    sink = CsvFileSink(str(out), header=["n"])
    w = _ckpt_writer(sink, **{"sink.rolling-policy.file-size": 2000})
    assert os.listdir(out) == []  # nothing is opened before the first record
    for i in range(0, 3000, 100):
        w.write_batch(list(range(i, i + 100)))
    # the BufferedWriter counts bytes once they reach the file: rolling happens at 1 MiB
    # buffers, so with 2000 bytes asked for, every batch that flushes rolls; at least one did
    state1 = w.snapshot_state(1)
    w.write_batch([10_000, 10_001])
    state2 = w.snapshot_state(2)
    assert _visible(out) == []  # pending until the checkpoints complete
    w.notify_checkpoint_complete(1)
    first = _visible(out)
    assert first and all(n.startswith("part-0-") and n.endswith(".csv") for n in first)
    rows = [r for n in first for r in (out / n).read_text().split("\n")[1:] if r]
    assert sorted(map(int, rows)) == list(range(3000))  # every file has its header
    w.write_batch([20_000])  # after checkpoint 2: in progress, lost if the job fails now
    # a failover: the subtask is aborted (files of checkpoints stay), a new one restores
    # checkpoint 2, whose completion notice never arrived
    w.abort(discard_pending=False)
    assert state2["pending"] and state1["counter"] <= state2["counter"]
    r = _ckpt_writer(sink)
    r.restore_state([state2])
    published = _visible(out)
    rows = [int(x) for n in published for x in (out / n).read_text().split("\n")[1:] if x]
    assert sorted(rows) == list(range(3000)) + [10_000, 10_001]  # checkpoint 2 published, 20_000 not
    assert [n for n in os.listdir(out) if n.startswith(".")] == []  # no in-progress leftovers
    r.write_batch([30_000])
    r.snapshot_state(3)
    r.notify_checkpoint_complete(3)
    assert len(_visible(out)) == len(published) + 1  # the part counter went on: no name reused


def test_file_sink_rolls_by_age(tmp_path):
    import time as _time

    from emrflow.connectors.files import TextFileSink
    out = tmp_path / "out"
    w = _ckpt_writer(TextFileSink(str(out)), **{"sink.rolling-policy.rollover-interval": 50})
    w.write_batch(["a"])
    _time.sleep(0.08)
    w.write_batch(["b"])  # the file is older than 50 ms: it rolls after this batch
    w.write_batch(["c"])
    w.snapshot_state(1)
    w.notify_checkpoint_complete(1)
    assert [(out / n).read_text() for n in _visible(out)] == ["a\nb\n", "c\n"]
