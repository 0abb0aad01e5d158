"""SplitSource runtime pieces on plain inputs: the JobManager machine's enumerator events and
instructions, per-split watermarks with idleness, the monitored FileSource's enumerator and
reader, and the redistribution of split states on restore."""

from __future__ import annotations

import copy
import os
import pickle
import threading

import cloudpickle
import pytest

from emrflow.api.eventtime import MIN_WATERMARK
from emrflow.connectors.monitoring import FileSource, FileSplit
from emrflow.connectors.splits import SplitEnumeratorContext, split_owner
from emrflow.fs import FileSystem
from emrflow.runtime import checkpoint as chk
from emrflow.runtime.jobmanager import machine as m
from emrflow.runtime.split_task import restored_splits
from emrflow.runtime.split_watermarks import SplitWatermarks
from tests.unit.test_jobmanager_machine import CKP, FIXED, Driver, of, sends, topology


def split_topology(**kw):
    t = topology(**kw)
    t["vertices"][0]["split_source"] = "files"  # vertex 0 reads a SplitSource whose uid is "files"
    return t


def running_split_job(d, cfg=CKP, **kw):
    out = d.feed(m.SubmitJob(split_topology(config=cfg, checkpointing=True, **kw), b"graph"))
    d.all_tasks("RUNNING")
    return out


# -- the machine ------------------------------------------------------------------------------------
def test_deploy_resets_enumerators_and_registered_readers_get_their_splits_in_order():
    d = Driver()
    out = running_split_job(d)
    (reset,) = of(out, m.ResetEnumerators)
    assert (reset.generation, reset.vertices, reset.job_bytes, reset.restore) == (0, ((0, "files"),), b"graph", None)
    assert out.index(reset) < out.index(sends(out, "deploy")[0])
    # a reader registers: the enumerator hears of it
    out = d.feed(m.ReaderRegistered("job1", 0, 1, attempt=0))
    assert of(out, m.EnumeratorCall) == [m.EnumeratorCall("job1", 0, 0, "add_reader", 1)]
    assert d.feed(m.ReaderRegistered("job1", 1, 0)) == []  # not a split source vertex
    # splits to the registered reader go to the slot of its subtask
    out = d.feed(m.SplitsAssigned("job1", 0, 0, {1: b"s1"}, no_more=(1,)))
    (send,) = sends(out, "add_splits")
    assert send.slot_id == "tm1/1" and send.body == {"job_id": "job1", "vertex": 0, "subtask": 1, "attempt": 0,
                                                      "splits": b"s1", "no_more": True}
    # an old enumerator's assignment (another generation) is dropped
    assert d.feed(m.SplitsAssigned("job1", 0, 7, {1: b"s2"})) == []


def test_assignment_to_an_unregistered_reader_fails_the_job(caplog):
    d = Driver()
    running_split_job(d, cfg=CKP | FIXED)
    d.feed(m.SplitsAssigned("job1", 0, 0, {0: b"s"}))
    assert d.job().state == "RESTARTING"
    assert "assigned splits to subtask 0, whose reader is not registered" in caplog.text


def test_checkpoint_snapshots_enumerators_first_then_triggers_and_counts_their_state_files():
    d = Driver()
    running_split_job(d)
    out = d.feed(m.CheckpointTimerFired(), dt=1.1)
    assert sends(out, "trigger_checkpoint") == []  # not before the enumerators' snapshot
    (snap,) = of(out, m.SnapshotEnumerators)
    assert (snap.checkpoint_id, snap.target, snap.generations) == (1, "/chk/job1/chk-1", ((0, 0),))
    out = d.feed(m.EnumeratorsSnapshotted("job1", 1))
    assert [t.slot_id for t in sends(out, "trigger_checkpoint")] == ["tm1/0", "tm1/1"]
    for (v, i) in sorted(d.job().tasks):
        out = d.feed(m.CheckpointAcknowledged("job1", 0, 1, v, i, entry={"vertex": v, "subtask": i, "size": 1,
                                                                          "file": f"t{v}{i}"}))
    assert of(out, m.WriteCheckpointMetadata) == []  # the enumerator's state file is missing
    entry = {"file": "enumerator-0.state", "size": 5, "vertex": 0, "subtask": -1, "enumerator": "files",
             "operators": {}}
    (write,) = of(d.feed(m.EnumeratorStateWritten("job1", 1, 0, entry)), m.WriteCheckpointMetadata)
    assert write.metadata["tasks"][0] == entry and write.metadata["size_bytes"] == 9
    out = d.feed(m.CheckpointMetadataWritten("job1", 1))
    assert m.EnumeratorCall("job1", 0, 0, "notify_checkpoint_complete", 1) in out


def test_failed_enumerator_snapshot_aborts_the_checkpoint_and_a_failed_enumerator_restarts_the_job(caplog):
    d = Driver()
    running_split_job(d, cfg=CKP | FIXED)
    d.feed(m.CheckpointTimerFired(), dt=1.1)
    out = d.feed(m.EnumeratorsSnapshotted("job1", 1, error="boom"))
    assert of(out, m.CheckpointDone)[0].error == "the split enumerators' snapshot failed: boom"
    assert sends(out, "trigger_checkpoint") == []
    assert d.feed(m.EnumeratorFailed("job1", 0, 5, "old")) == []  # another generation: ignored
    d.feed(m.EnumeratorFailed("job1", 0, 0, "OSError: listing failed"))
    assert d.job().state == "RESTARTING"
    assert "the split enumerator of 'v0' failed: OSError: listing failed; restarting in" in caplog.text


def test_restart_resets_the_enumerator_from_the_restored_plan_and_drops_stale_assignments():
    d = Driver()
    running_split_job(d, cfg=CKP | FIXED)
    d.feed(m.ReaderRegistered("job1", 0, 0))
    d.feed(m.TaskStateChanged("job1", 0, 0, "FAILED", failure={"message": "x", "traceback": ""}))
    assert d.feed(m.SplitsAssigned("job1", 0, 0, {0: b"s"})) == []  # restarting: dropped
    d.all_tasks("CANCELED")
    (timer,) = of(d.acks(), m.StartTimer)
    d.feed(timer.event, dt=2.0)
    plan = {"path": "/chk/job1/chk-3", "checkpoint_id": 3, "operators": {}, "enumerators": {"files": "e"}}
    out = d.feed(m.RestorePlanned("job1", plan))
    (reset,) = of(out, m.ResetEnumerators)
    assert reset.generation == 1 and reset.restore == plan
    assert d.feed(m.ReaderRegistered("job1", 0, 0, attempt=0)) == []  # a report of the old attempt
    d.all_tasks("RUNNING", attempt=1)
    assert of(d.feed(m.ReaderRegistered("job1", 0, 0, attempt=1)), m.EnumeratorCall)[0].generation == 1


def test_region_failover_of_a_failed_enumerator_resets_only_that_regions_enumerator():
    """An enumerator that raised is reset from the checkpoint when its region restarts (its own
    state is suspect); the enumerator of the other region goes on."""
    d = Driver()
    t = topology(config=CKP | FIXED, checkpointing=True, vertices=((0, 2), (1, 2), (2, 2), (3, 2)),
                 edges=((0, 1), (2, 3)))
    t["vertices"][0]["split_source"], t["vertices"][2]["split_source"] = "a", "b"
    (reset,) = of(d.feed(m.SubmitJob(t, b"graph")), m.ResetEnumerators)
    assert reset.vertices == ((0, "a"), (2, "b"))
    d.all_tasks("RUNNING")
    d.feed(m.ReaderRegistered("job1", 2, 0))
    d.feed(m.ReaderRegistered("job1", 0, 0))
    (forget,) = of(d.feed(m.EnumeratorFailed("job1", 2, 0, "boom")), m.EnumeratorCall)
    assert (forget.vertex, forget.method, forget.arg) == (2, "subtasks_reset", (0, 1))
    assert sends(d.feed(m.SplitsAssigned("job1", 2, 0, {0: b"s"})), "add_splits") == []  # its region restarts
    assert sends(d.feed(m.SplitsAssigned("job1", 0, 0, {0: b"s"})), "add_splits")  # the other region goes on
    for k in [(2, 0), (2, 1), (3, 0), (3, 1)]:
        d.feed(m.TaskStateChanged("job1", *k, "CANCELED"))
    d.feed(m.TasksAborted("tm1/0", "job1"))
    assert of(d.feed(m.TasksAborted("tm1/1", "job1")), m.StartTimer) == []  # the enumerator has not forgotten
    (timer,) = of(d.feed(m.EnumeratorCallDone("job1", 2, forget.call_id)), m.StartTimer)
    (plan,) = of(d.feed(timer.event, dt=2.0), m.PlanRestore)
    out = d.feed(m.RestorePlanned("job1", None, region=plan.region, token=plan.token))
    (reset,) = of(out, m.ResetEnumerators)
    assert (reset.generation, reset.vertices) == (1, ((2, "b"),))
    assert [c for c in of(out, m.EnumeratorCall) if c.method == "add_splits_back"] == []
    assert d.feed(m.SplitsAssigned("job1", 2, 0, {0: b"s"})) == []  # the old enumerator's: dropped
    assert of(d.feed(m.ReaderRegistered("job1", 2, 0, attempt=1)), m.EnumeratorCall)[0].generation == 1


def test_region_failover_gives_the_splits_assigned_after_the_last_completed_checkpoint_back():
    """Flink's regional failover of source subtasks: the enumerator is not reset; it forgets the
    region's readers, and once they are redeployed from checkpoint n it gets back, per subtask, the
    splits assigned after n's triggers (add_splits_back), also those assigned while the region was
    going down; the readers get those assigned before from their checkpointed states."""
    d = Driver()
    t = split_topology(config=CKP | FIXED, checkpointing=True, vertices=((0, 2), (1, 2), (2, 1)), edges=((0, 1),))
    d.feed(m.SubmitJob(t, b"graph"))
    d.all_tasks("RUNNING")
    d.feed(m.ReaderRegistered("job1", 0, 0))
    d.feed(m.ReaderRegistered("job1", 0, 1))
    d.feed(m.SplitsAssigned("job1", 0, 0, {0: b"a"}))            # before checkpoint 1's triggers
    start_checkpoint(d, 1)
    d.feed(m.SplitsAssigned("job1", 0, 0, {0: b"b", 1: b"c"}))   # after them: not in its reader states
    assert of(acknowledge_all(d, 0, 1), m.WriteCheckpointMetadata)
    d.feed(m.CheckpointMetadataWritten("job1", 1))
    assert d.job().checkpoints.completed == 1
    d.feed(m.SplitsAssigned("job1", 0, 0, {1: b"d"}))
    out = d.feed(m.TaskStateChanged("job1", 1, 0, "FAILED", failure={"message": "boom", "traceback": ""}))
    assert of(out, m.ResetEnumerators) == []
    (forget,) = of(out, m.EnumeratorCall)
    assert (forget.vertex, forget.generation, forget.method, forget.arg) == (0, 0, "subtasks_reset", (0, 1))
    # an assignment the enumerator made before it forgot the readers is kept, not sent
    assert sends(d.feed(m.SplitsAssigned("job1", 0, 0, {0: b"e"})), "add_splits") == []
    assert d.feed(m.SplitRequested("job1", 0, 1, attempt=0)) == []   # the old attempt asks: dropped
    for k in [(0, 0), (0, 1), (1, 0), (1, 1)]:
        d.feed(m.TaskStateChanged("job1", *k, "CANCELED"))
    d.feed(m.EnumeratorCallDone("job1", 0, forget.call_id))
    d.feed(m.TasksAborted("tm1/0", "job1"))
    (timer,) = of(d.feed(m.TasksAborted("tm1/1", "job1")), m.StartTimer)
    (plan,) = of(d.feed(timer.event, dt=2.0), m.PlanRestore)
    restore = {"path": "/chk/job1/chk-1", "checkpoint_id": 1, "operators": {}, "enumerators": {"files": "e"}}
    out = d.feed(m.RestorePlanned("job1", restore, region=plan.region, token=plan.token))
    assert of(out, m.ResetEnumerators) == []
    back = of(out, m.EnumeratorCall)
    assert [(c.vertex, c.generation, c.method, c.arg) for c in back] == [
        (0, 0, "add_splits_back", (0, (b"b", b"e"))), (0, 0, "add_splits_back", (1, (b"c", b"d")))]
    assert out.index(back[-1]) < out.index(sends(out, "deploy_tasks")[0])
    # the enumerator (still attempt 0's) hears of the new readers and assigns to them
    assert of(d.feed(m.ReaderRegistered("job1", 0, 0, attempt=1)), m.EnumeratorCall) == [
        m.EnumeratorCall("job1", 0, 0, "add_reader", 0)]
    d.all_tasks("RUNNING", attempt=1)
    assert sends(d.feed(m.SplitsAssigned("job1", 0, 0, {0: b"b"})), "add_splits")[0].body["attempt"] == 1


def test_split_requests_become_handle_split_request_calls_after_the_readers_registration():
    d = Driver()
    running_split_job(d)
    assert d.feed(m.SplitRequested("job1", 1, 0)) == []            # not a split source vertex
    assert d.feed(m.SplitRequested("job1", 0, 0, attempt=3)) == []  # another attempt
    assert d.feed(m.SplitRequested("job1", 0, 0)) == []             # asked in start(), before registering
    assert of(d.feed(m.ReaderRegistered("job1", 0, 0)), m.EnumeratorCall) == [
        m.EnumeratorCall("job1", 0, 0, "add_reader", 0), m.EnumeratorCall("job1", 0, 0, "handle_split_request", 0)]
    assert of(d.feed(m.SplitRequested("job1", 0, 0)), m.EnumeratorCall) == [
        m.EnumeratorCall("job1", 0, 0, "handle_split_request", 0)]
    # the answer travels as every assignment: to the asking subtask's slot
    (send,) = sends(d.feed(m.SplitsAssigned("job1", 0, 0, {0: b"s"})), "add_splits")
    assert (send.slot_id, send.body["subtask"]) == ("tm1/0", 0)


def test_job_end_closes_the_enumerators():
    d = Driver()
    running_split_job(d)
    d.feed(m.CancelJob("job1"))
    d.all_tasks("CANCELED")
    assert of(d.acks(), m.CloseEnumerators) == [m.CloseEnumerators("job1")]


def entry(v, i):
    return {"vertex": v, "subtask": i, "size": 1, "file": f"t{v}{i}"}


def start_checkpoint(d, checkpoint_id: int) -> None:
    """Fire the checkpoint timer; the enumerators snapshot and store their state for ``checkpoint_id``."""
    d.feed(m.CheckpointTimerFired(), dt=1.1)
    d.feed(m.EnumeratorsSnapshotted("job1", checkpoint_id))
    d.feed(m.EnumeratorStateWritten("job1", checkpoint_id, 0, {"file": "e", "size": 1, "vertex": 0, "subtask": -1}))


def acknowledge_all(d, attempt: int, checkpoint_id: int) -> list:
    """Every task of the job acknowledges ``checkpoint_id``; return the actions."""
    out = []
    for k in sorted(d.job().tasks):
        out += d.feed(m.CheckpointAcknowledged("job1", attempt, checkpoint_id, *k, entry=entry(*k)))
    return out


def test_finished_splits_become_enumerator_calls_and_hold_later_acknowledged_checkpoints():
    """A reader's report of finished splits becomes a handle_splits_finished call on the
    enumerator, in report order; a checkpoint whose acknowledgement of that subtask came after
    the report completes only once the call returned (EnumeratorCallDone), one acknowledged
    before the report does not wait for it."""
    d = Driver()
    running_split_job(d)
    d.feed(m.ReaderRegistered("job1", 0, 0))
    d.feed(m.ReaderRegistered("job1", 0, 1))
    start_checkpoint(d, 1)
    assert d.feed(m.CheckpointAcknowledged("job1", 0, 1, 0, 0, entry=entry(0, 0))) == []
    (first,) = of(d.feed(m.SplitsFinished("job1", 0, 1, 0, ["shard-0"])), m.EnumeratorCall)
    (second,) = of(d.feed(m.SplitsFinished("job1", 0, 1, 0, ["shard-1", "shard-2"])), m.EnumeratorCall)
    assert (first.vertex, first.generation, first.method, first.arg) == (0, 0, "handle_splits_finished",
                                                                         (1, ("shard-0",)))
    assert second.arg == (1, ("shard-1", "shard-2")) and second.call_id > first.call_id
    (own,) = of(d.feed(m.SplitsFinished("job1", 0, 0, 0, ["shard-3"])), m.EnumeratorCall)  # after (0, 0)'s ack
    for k in [(0, 1), (1, 0), (1, 1)]:
        assert of(d.feed(m.CheckpointAcknowledged("job1", 0, 1, *k, entry=entry(*k))),
                  m.WriteCheckpointMetadata) == []       # (0, 1) acknowledged after its two reports
    assert of(d.feed(m.EnumeratorCallDone("job1", 0, second.call_id)), m.WriteCheckpointMetadata) == []
    assert d.job().checkpoints.in_progress == 1
    (write,) = of(d.feed(m.EnumeratorCallDone("job1", 0, first.call_id)), m.WriteCheckpointMetadata)
    assert [(t["vertex"], t["subtask"]) for t in write.metadata["tasks"]] == [(0, -1), (0, 0), (0, 1), (1, 0),
                                                                             (1, 1)]
    assert write.metadata["size_bytes"] == 5   # the held calls add no entries
    # (0, 0)'s call is still running: it holds the next checkpoint's (0, 0) ack, until it returns
    d.feed(m.CheckpointMetadataWritten("job1", 1))
    start_checkpoint(d, 2)
    assert of(acknowledge_all(d, 0, 2), m.WriteCheckpointMetadata) == []
    assert of(d.feed(m.EnumeratorCallDone("job1", 0, own.call_id)), m.WriteCheckpointMetadata)
    assert d.feed(m.EnumeratorCallDone("job1", 0, own.call_id)) == []   # a repeated or late one: nothing


def test_stale_finished_split_reports_are_ignored_and_a_restart_drops_the_calls_in_flight():
    d = Driver()
    running_split_job(d, cfg=CKP | FIXED)
    d.feed(m.ReaderRegistered("job1", 0, 0))
    assert d.feed(m.SplitsFinished("job1", 1, 0, 0, ["s"])) == []        # not a split source vertex
    assert d.feed(m.SplitsFinished("job1", 0, 0, 3, ["s"])) == []        # another attempt
    assert d.feed(m.SplitsFinished("job1", 0, 0, 0, [])) == []           # nothing finished
    (call,) = of(d.feed(m.SplitsFinished("job1", 0, 0, 0, ["s"])), m.EnumeratorCall)
    d.feed(m.TaskStateChanged("job1", 0, 0, "FAILED", failure={"message": "x", "traceback": ""}))
    assert d.feed(m.SplitsFinished("job1", 0, 0, 0, ["s"])) == []        # restarting
    d.all_tasks("CANCELED")
    (timer,) = of(d.acks(), m.StartTimer)
    d.feed(timer.event, dt=2.0)
    d.feed(m.RestorePlanned("job1", None))
    d.all_tasks("RUNNING", attempt=1)
    assert d.feed(m.SplitsFinished("job1", 0, 0, 0, ["s"])) == []        # the old attempt's report
    d.feed(m.ReaderRegistered("job1", 0, 0, attempt=1))
    # the old enumerator's call (skipped by the shell) holds no checkpoint of the new attempt
    start_checkpoint(d, 1)
    assert of(acknowledge_all(d, 1, 1), m.WriteCheckpointMetadata)
    assert d.feed(m.EnumeratorCallDone("job1", 0, call.call_id)) == []
    (new,) = of(d.feed(m.SplitsFinished("job1", 0, 0, 1, ["s"])), m.EnumeratorCall)
    assert new.generation == 1 and new.arg == (0, ("s",))


# -- per-split watermarks ------------------------------------------------------------------------------
def test_subtask_watermark_is_the_minimum_over_active_splits():
    w = SplitWatermarks(out_of_orderness_ms=10, idleness_ms=None, now_ms=0)
    w.add_split("a", 0)
    w.add_split("b", 0)
    w.on_records("a", 1000, 1)
    assert w.advance(1) == (None, None)  # b has no records yet: it holds event time back
    w.on_records("b", 500, 2)
    assert w.advance(2) == (489, None)
    w.on_records("b", 2000, 3)
    assert w.advance(3) == (989, None)  # now a is the slowest
    w.on_records("a", 900, 4)  # an out-of-order record does not move a split back
    assert w.advance(4) == (None, None)
    w.finish("a", 5)  # finished splits drop out
    assert w.advance(5) == (1989, None)


def test_idle_split_does_not_hold_back_and_returns_on_its_next_record():
    w = SplitWatermarks(out_of_orderness_ms=0, idleness_ms=100, now_ms=0)
    w.add_split("a", 0)
    w.add_split("b", 0)
    w.on_records("a", 50, 10)
    w.on_records("b", 5000, 10)
    assert w.advance(10) == (49, None)
    w.on_records("b", 6000, 150)
    assert w.advance(150) == (5999, None)  # a has been silent for 140 ms >= 100: idle
    w.on_records("a", 60, 160)  # active again, but the watermark never goes back
    assert w.advance(160) == (None, None)
    assert w.advance(400) == (None, True)  # both silent: the subtask is idle
    assert w.on_records("b", 7000, 401) is True  # and active again with b's next record
    assert w.advance(401) == (6999, None)  # a is still idle


def test_subtask_without_splits_turns_idle_after_the_timeout_and_never_without_idleness():
    w = SplitWatermarks(out_of_orderness_ms=0, idleness_ms=300, now_ms=1000)
    assert w.advance(1200) == (None, None)
    assert w.advance(1300) == (None, True)
    w.add_split("a", 1400)  # a split arrives: active, held back until its first record
    assert w.advance(1400) == (None, False)
    w.on_records("a", 7, 1401)
    assert w.advance(1401) == (6, None)
    w.finish("a", 1500)  # all splits finished: idle again after the timeout
    assert w.advance(1700) == (None, None) and w.advance(1800) == (None, True)
    # without with_idleness a subtask waiting for its first split holds event time back: a split
    # assigned late must not find its records late (Flink's behaviour)
    held = SplitWatermarks(out_of_orderness_ms=0, idleness_ms=None, now_ms=0)
    assert held.advance(0) == (None, None) and held.advance(10**9) == (None, None) and not held.idle


def test_no_watermarks_strategy_tracks_idleness_only():
    w = SplitWatermarks(out_of_orderness_ms=None, idleness_ms=10, now_ms=0)
    w.on_records("a", 100, 0)
    assert w.advance(5) == (None, None) and w.split_watermark("a") == MIN_WATERMARK
    assert w.advance(20) == (None, True)


# -- the monitored FileSource on its own (the context below records what a runtime would do) ----
class RecordingContext(SplitEnumeratorContext):
    """A stand-in for the JobManager's context: records assignments, runs nothing periodically."""

    def __init__(self, parallelism, readers=(), file_system=None):
        self._p = parallelism
        self._fs = file_system or FileSystem()
        self.readers = set(readers)
        self.assigned: dict[int, list] = {}
        self.no_more: list[int] = []
        self.periodic = []

    parallelism = property(lambda self: self._p)
    config = property(lambda self: None)
    file_system = property(lambda self: self._fs)

    def registered_readers(self):
        return set(self.readers)

    def assign_splits(self, assignment):
        assert set(assignment) <= self.readers
        for i, splits in assignment.items():
            self.assigned.setdefault(i, []).extend(splits)

    def signal_no_more_splits(self, subtask):
        self.no_more.append(subtask)

    def call_periodically(self, fn, interval_ms):
        self.periodic.append((fn, interval_ms))


def subtask_reader(source, ctx, splits=None):
    """The started split reader of subtask ``ctx.subtask_index`` of a bounded source with the splits
    its enumerator assigns it (or ``splits``, restored ones), then "no more splits"."""
    if splits is None:
        ectx = RecordingContext(ctx.parallelism, readers={ctx.subtask_index}, file_system=ctx.file_system)
        source.create_enumerator(ectx).start()
        assert ectx.no_more == [ctx.subtask_index]
        splits = ectx.assigned.get(ctx.subtask_index, [])
    reader = source.create_split_reader(ctx)
    reader.add_splits(copy.deepcopy(splits))
    reader.notify_no_more_splits()
    reader.start()
    return reader


def polled_batches(reader):
    """Poll a bounded split reader until it is finished; yield each non-empty list of records."""
    while not reader.is_finished():
        for sr in reader.poll(0):
            if sr.records:
                yield sr.records


def write(path, lines):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    with open(tmp, "w") as f:
        f.write("".join(f"{x}\n" for x in lines))
    os.replace(tmp, path)


def test_enumerator_discovers_new_files_once_and_its_state_restores(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write(str(d / "a.txt"), [1, 2])
    write(str(d / "_ignored"), [9])
    source = FileSource.for_text_lines(str(d)).monitor_continuously(250)
    ctx = RecordingContext(2)
    e = source.create_enumerator(ctx)
    e.start()
    assert ctx.periodic[0][1] == 250 and ctx.assigned == {}  # no reader registered yet
    ctx.readers = {0, 1}
    e.add_reader(0)
    e.add_reader(1)
    want_a = split_owner(str(d / "a.txt"), 2)
    assert ctx.assigned == {want_a: [FileSplit(str(d / "a.txt"))]}
    write(str(d / "b.txt"), [3])
    ctx.periodic[0][0]()  # the next listing: only the new file
    state = pickle.loads(pickle.dumps(e.snapshot_state(1)))
    assert sum(len(v) for v in ctx.assigned.values()) == 2 and ctx.no_more == []  # unbounded: never "no more"
    write(str(d / "c.txt"), [4])
    ctx2 = RecordingContext(2, readers={0, 1})
    e2 = source.restore_enumerator(ctx2, state)
    e2.start()
    assert [s.split_id for v in ctx2.assigned.values() for s in v] == [str(d / "c.txt")]


def test_bounded_file_source_signals_no_more_splits_and_reader_ends(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    write(str(d / "a.csv"), ["x,1", "y,2"])
    source = FileSource.for_csv(str(d))
    ctx = RecordingContext(1, readers={0})
    e = source.create_enumerator(ctx)
    e.start()
    assert ctx.no_more == [0] and ctx.periodic == []
    from emrflow.connectors.base import SubtaskContext
    r = source.create_split_reader(SubtaskContext("src", 0, 1))
    r.add_splits(ctx.assigned[0])
    r.notify_no_more_splits()
    r.start()
    got = r.poll(0.01) + r.poll(0.01)  # a block per poll, then the split's end
    assert got[0].records == [("x", "1"), ("y", "2")] and got[-1].finished and r.is_finished()


def test_reader_resumes_at_the_checkpointed_line(tmp_path, monkeypatch):
    from emrflow.connectors import files
    from emrflow.connectors.base import SubtaskContext
    monkeypatch.setattr(files, "BLOCK_BYTES", 5)  # blocks of three 2-byte lines
    path = str(tmp_path / "f.txt")
    write(path, range(7))
    source = FileSource.for_text_lines(path)
    r = source.create_split_reader(SubtaskContext("src", 0, 1))
    r.add_splits([FileSplit(path)])
    assert r.poll(0.01)[0].records == ["0", "1", "2"]
    (snap,) = r.snapshot_state(1)
    assert snap.line == 3 and snap.offset == 6
    r.close()
    r2 = source.create_split_reader(SubtaskContext("src", 0, 1))
    r2.add_splits([snap])
    rest = r2.poll(0.01) + r2.poll(0.01) + r2.poll(0.01)
    assert [x for sr in rest for x in sr.records] == ["3", "4", "5", "6"] and rest[-1].finished


@pytest.mark.parametrize("kind", ["json", "parquet"])
def test_monitored_json_lines_and_parquet_files_are_read_once_across_a_restore(tmp_path, monkeypatch, kind):
    """New files found by later listings, a snapshot of enumerator and readers mid-file, a restore at
    another parallelism: every record once, as ``json.loads`` / the rows written say."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from emrflow.connectors import files
    from emrflow.connectors.base import SubtaskContext
    monkeypatch.setattr(files, "BLOCK_BYTES", 256)
    d = tmp_path / "in"
    d.mkdir()
    want = []

    def drop(name, n):
        rows = [{"i": len(want) + k, "s": f"r{len(want) + k}"} for k in range(n)]
        want.extend(rows)
        tmp = d / ("." + name)
        if kind == "json":
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        else:
            pq.write_table(pa.Table.from_pylist(rows), tmp, row_group_size=40)
        os.replace(tmp, d / name)
    source = (FileSource.for_json_lines(str(d)) if kind == "json" else FileSource.for_parquet(str(d), batch_rows=16))
    source = source.monitor_continuously(100)

    def reader_of(i, p, splits):
        r = source.create_split_reader(SubtaskContext("src", i, p))
        r.add_splits(copy.deepcopy(splits))
        r.start()
        return r

    def drain(readers):
        got = []
        for r in readers:
            while rs := r.poll(0):
                got += [x for sr in rs for x in sr.records]
        return got
    drop("a", 100)
    ctx = RecordingContext(2, readers={0, 1})
    e = source.create_enumerator(ctx)
    e.start()
    drop("b", 120)
    drop("c", 90)
    ctx.periodic[0][0]()  # the next listing finds b and c
    readers = [reader_of(i, 2, ctx.assigned.get(i, [])) for i in range(2)]
    got = [x for r in readers for sr in r.poll(0) for x in sr.records]  # one batch each: files half read
    states = [s for r in readers for s in r.snapshot_state(1)]
    enum_state = pickle.loads(pickle.dumps(e.snapshot_state(1)))
    for r in readers:  # the attempt fails here
        r.close()
    assert all((s.offset or 0) > 0 if kind == "json" else s.rows > 0 for s in states if s.split_id.endswith("/a"))
    drop("d", 50)  # after the checkpoint: found by the restored enumerator
    ctx3 = RecordingContext(3, readers={0, 1, 2})
    e3 = source.restore_enumerator(ctx3, enum_state)
    e3.start()
    restored = [[s for s in states if split_owner(s.split_id, 3) == i] + ctx3.assigned.get(i, []) for i in range(3)]
    readers = [reader_of(i, 3, restored[i]) for i in range(3)]
    got += drain(readers)
    for r in readers:
        r.close()
    assert sorted(got, key=lambda r: r["i"]) == want  # every record once, with its values


def test_bounded_csv_restored_at_another_parallelism_reads_every_row_once_and_reports_its_lines(
        tmp_path, monkeypatch):
    """Byte-range splits of two files read in part at p=2, then restored at p=3 the way the runtime
    hands split states out (``split_owner``): every row once; bad lines keep their file:line."""
    import csv

    from emrflow.connectors import files
    from emrflow.connectors.base import SubtaskContext
    from emrflow.connectors.files import CsvSource
    monkeypatch.setattr(files, "BLOCK_BYTES", 64)
    d = tmp_path / "in"
    d.mkdir()
    for f in ("a.csv", "b.csv"):
        (d / f).write_text("id,name\n" + "".join(f"{i},{f}-{i}\n" if i % 50 else f"{i}\n" for i in range(400)))
    want, want_bad = [], []
    for f in ("a.csv", "b.csv"):
        with open(d / f, newline="") as fh:
            for n, row in enumerate(csv.reader(fh), 1):
                if n == 1:
                    continue
                if len(row) == 2:
                    want.append((int(row[0]), row[1]))
                else:
                    want_bad.append((str(d / f), n, "expected 2 fields, got 1"))
    source = CsvSource(str(d), header=True, types=[int, str], fail_on_bad_records=False)
    bad: list = []

    def ctx(i, p):
        return SubtaskContext("src", i, p, report_bad_record=lambda *a: bad.append(a))
    ectx = RecordingContext(2, readers={0, 1})
    e = source.create_enumerator(ectx)
    e.start()
    assert sorted(ectx.no_more) == [0, 1] and sum(map(len, ectx.assigned.values())) == 4  # 2 files x 2 ranges
    got, states = [], []
    for i in range(2):
        r = subtask_reader(source, ctx(i, 2), ectx.assigned[i])
        batches = polled_batches(r)
        for _ in range(3):
            got += next(batches)
        states += cloudpickle.loads(cloudpickle.dumps(r.snapshot_state(1)))
        r.close()
    assert [s.path for s in states if s.offset is not None] == [str(d / "a.csv")] * 2  # a.csv's ranges in part
    assert e.snapshot_state(1)["pending"] == []  # every split was with a reader
    for i in range(3):
        mine = [s for s in states if split_owner(s.split_id, 3) == i]
        for batch in polled_batches(subtask_reader(source, ctx(i, 3), mine)):
            got += batch
    assert sorted(got) == sorted(want)
    assert sorted(bad) == sorted(want_bad)


# -- restore: split states go to split_owner(id, new parallelism) ----------------------------------
def test_restored_split_states_are_spread_by_split_owner_at_any_parallelism(tmp_path):
    fsys = FileSystem()
    splits = [FileSplit(f"/in/f{i}", offset=i, line=i) for i in range(20)]
    files = {}
    for old in range(2):  # two former subtasks, each with half the splits
        mine = splits[old::2]
        entry = chk.write_task_state(fsys, str(tmp_path), 0, old, {"files": cloudpickle.dumps({"splits": mine})})
        files[old] = entry["file"]
    plan = {"path": str(tmp_path), "checkpoint_id": 1, "enumerators": {},
            "operators": {"files": {"parallelism": 2, "max_parallelism": 128, "files": files}}}
    for p in (1, 2, 3):
        reader = chk.StateReader(fsys, plan)
        got = [restored_splits(reader, "files", i, p) for i in range(p)]
        assert sorted(s.split_id for g in got for s in g) == sorted(s.split_id for s in splits)  # exactly once
        for i, g in enumerate(got):
            assert all(split_owner(s.split_id, p) == i for s in g)
            assert all(s.line == int(s.split_id[5:]) for s in g)  # positions kept


def test_plan_restore_names_the_enumerator_state_files():
    meta = {"path": "/sp", "checkpoint_id": 4, "tasks": [
        {"file": "enumerator-0.state", "vertex": 0, "subtask": -1, "enumerator": "files", "operators": {}},
        {"file": "task-0-0.state", "vertex": 0, "subtask": 0,
         "operators": {"files": {"parallelism": 1, "max_parallelism": 128, "name": "src"}}}]}
    topo = split_topology(vertices=((0, 1),), edges=())
    topo["vertices"][0]["operators"][0]["uid"] = "files"
    plan = chk.plan_restore(meta, topo, allow_non_restored=False)
    assert plan["enumerators"] == {"files": "enumerator-0.state"}
    assert plan["operators"]["files"]["files"] == {0: "task-0-0.state"}


def test_unbounded_source_in_batch_mode_is_refused():
    from emrflow import RuntimeExecutionMode, StreamExecutionEnvironment
    from emrflow.errors import JobGraphError
    from emrflow.testing import CollectSink
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    env.from_source(FileSource.for_text_lines("/nonexistent").monitor_continuously(100)).sink_to(CollectSink("/x"))
    with pytest.raises(JobGraphError, match="unbounded source .* needs execution.runtime-mode STREAMING"):
        env.get_job_graph()


def test_uid_and_parallelism_of_a_split_source_with_a_strategy_are_the_sources(tmp_path):
    from emrflow import StreamExecutionEnvironment
    from emrflow.api.eventtime import WatermarkStrategy
    from emrflow.testing import CollectSink
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda s: 0)
    (env.from_source(FileSource.for_text_lines(str(tmp_path)).monitor_continuously(100), strategy, "files")
        .uid("landing").set_parallelism(3)
        .sink_to(CollectSink(str(tmp_path / "out"))))
    graph = env.get_job_graph()
    (source_vertex,) = [v for v in graph.topology()["vertices"] if v.get("split_source")]
    assert source_vertex["split_source"] == "landing" and source_vertex["parallelism"] == 3
    assert [o["kind"] for o in source_vertex["operators"]][:2] == ["source", "timestamps"]  # chained


class RecordingFeed:
    """The JobManager's ``_feed`` for :class:`SourceCoordinators` in a test: records the events;
    answers an :class:`~m.EnumeratorsSnapshotted` with a trigger sent."""

    def __init__(self):
        self.events, self.fed = [], threading.Event()

    def feed(self, event):
        self.events.append(event)
        self.fed.set()
        return [m.SendToSlot("tm1/0", "trigger_checkpoint", {})] if isinstance(event, m.EnumeratorsSnapshotted) else []

    def wait_for(self, kind, n=1):
        """The first ``n`` events of type ``kind`` (waiting up to 10 s for them)."""
        for _ in range(200):
            found = [e for e in self.events if isinstance(e, kind)]
            if len(found) >= n:
                return found[:n]
            self.fed.wait(0.05)
            self.fed.clear()
        raise AssertionError(f"no {kind.__name__} in {self.events}")


def test_source_coordinators_run_the_enumerator_and_write_its_state_after_the_triggers(tmp_path):
    """The shell's side with a recording feed: reset, add_reader, assignment, snapshot, state file."""
    from emrflow import StreamExecutionEnvironment
    from emrflow.runtime.jobmanager.coordinators import SourceCoordinators
    from emrflow.testing import CollectSink
    src = tmp_path / "in"
    src.mkdir()
    write(str(src / "a"), [1])
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    env.from_source(FileSource.for_text_lines(str(src)).monitor_continuously(60_000)).uid("files") \
        .sink_to(CollectSink(str(tmp_path / "out")))
    graph = env.get_job_graph()
    (vertex,) = [v for v in graph.topology()["vertices"] if v.get("split_source")]
    rec = RecordingFeed()
    events, wait_for = rec.events, rec.wait_for
    c = SourceCoordinators(rec.feed)
    v = vertex["id"]
    c.perform(m.ResetEnumerators(graph.job_id, 0, ((v, "files"),), cloudpickle.dumps(graph)))
    c.perform(m.EnumeratorCall(graph.job_id, v, 0, "add_reader", 0))
    (assigned,) = wait_for(m.SplitsAssigned)
    assert assigned.generation == 0 and [s.split_id for s in cloudpickle.loads(assigned.splits[0])] == [
        str(src / "a")]
    target = str(tmp_path / "chk-1")
    c.perform(m.SnapshotEnumerators(graph.job_id, 1, target, ((v, 0),)))
    (written,) = wait_for(m.EnumeratorStateWritten)
    assert [type(e) for e in events[-2:]] == [m.EnumeratorsSnapshotted, m.EnumeratorStateWritten]
    assert written.entry["subtask"] == -1 and written.entry["enumerator"] == "files"
    with open(os.path.join(target, written.entry["file"]), "rb") as f:
        assert cloudpickle.loads(f.read()) == {"seen": [str(src / "a")], "listed": True, "pending": []}
    # a snapshot for an enumerator of another generation is declined
    c.perform(m.SnapshotEnumerators(graph.job_id, 2, target, ((v, 5),)))
    (_, declined) = wait_for(m.EnumeratorsSnapshotted, 2)
    assert "(re)starting" in declined.error
    # a finished-splits call reports that it returned, also when it was skipped (another generation)
    c.perform(m.EnumeratorCall(graph.job_id, v, 0, "handle_splits_finished", (0, (str(src / "a"),)), 7))
    c.perform(m.EnumeratorCall(graph.job_id, v, 5, "handle_splits_finished", (0, (str(src / "a"),)), 8))
    done = wait_for(m.EnumeratorCallDone, 2)
    assert [(e.vertex, e.call_id) for e in done] == [(v, 7), (v, 8)]
    assert not [e for e in events if isinstance(e, m.EnumeratorFailed)]
    c.perform(m.CloseEnumerators(graph.job_id))


def test_source_coordinators_forget_reset_readers_and_take_splits_back(tmp_path, capsys):
    """A split request becomes handle_split_request; after subtasks_reset the enumerator can no
    longer assign to that reader (its assign_splits raises: the job fails over); add_splits_back
    hands it the cloudpickled splits, which it assigns again to the reader that registers anew."""
    from emrflow import StreamExecutionEnvironment
    from emrflow.runtime.jobmanager.coordinators import SourceCoordinators
    from emrflow.testing import CollectSink
    from tests.jobs.pull_count import PullSource
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(1)
    env.from_source(PullSource(250, 100)).uid("pull").sink_to(CollectSink(str(tmp_path / "out")))
    graph = env.get_job_graph()
    (vertex,) = [v["id"] for v in graph.topology()["vertices"] if v.get("split_source")]
    rec, job = RecordingFeed(), graph.job_id
    c = SourceCoordinators(rec.feed)
    c.perform(m.ResetEnumerators(job, 0, ((vertex, "pull"),), cloudpickle.dumps(graph)))
    c.perform(m.EnumeratorCall(job, vertex, 0, "add_reader", 0))
    c.perform(m.EnumeratorCall(job, vertex, 0, "handle_split_request", 0))
    (first,) = rec.wait_for(m.SplitsAssigned)
    assert [s.split_id for s in cloudpickle.loads(first.splits[0])] == ["range-0"]
    c.perform(m.EnumeratorCall(job, vertex, 0, "subtasks_reset", (0,), 1))
    c.perform(m.EnumeratorCall(job, vertex, 0, "handle_split_request", 0))  # of a forgotten reader
    c.perform(m.EnumeratorCall(job, vertex, 0, "add_splits_back", (0, (first.splits[0],))))
    (done,) = rec.wait_for(m.EnumeratorCallDone)
    (failed,) = rec.wait_for(m.EnumeratorFailed)
    assert done.call_id == 1 and "subtask(s) [0] of 'Source: Source' have no registered reader" in failed.message
    c.perform(m.EnumeratorCall(job, vertex, 0, "add_reader", 0))
    c.perform(m.EnumeratorCall(job, vertex, 0, "handle_split_request", 0))
    (_, again) = rec.wait_for(m.SplitsAssigned, 2)
    assert [(s.split_id, s.next) for s in cloudpickle.loads(again.splits[0])] == [("range-0", 0)]
    assert "add_splits_back: 1 split(s) of subtask 0" in capsys.readouterr().err
    c.perform(m.CloseEnumerators(job))
