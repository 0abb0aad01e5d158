"""The JobManager's state machine driven with plain events: no processes, sockets or clocks.

Each test feeds events (a slot's report, a lost TaskManager, a timer that fired, the outcome of
I/O the shell did) and checks the instructions that come back and the job's state, as
:class:`~emrflow.runtime.jobmanager.query.JobView` shows it.
"""

from __future__ import annotations

import json
import re

import pytest

from emrflow.connectors.files import COMMIT_KIND
from emrflow.runtime.jobmanager import machine as m
from emrflow.runtime.jobmanager.errors import JobAlreadySubmitted, JobNotFound, SavepointError
from emrflow.runtime.jobmanager.query import job_view
from emrflow.runtime.jobmanager.states import TERMINAL, ExecutionState, JobStatus

FILE = {"kind": COMMIT_KIND, "dir": "/out"}  # a file sink's committable


def topology(job_id="job1", vertices=((0, 2), (1, 2)), edges=((0, 1),), config=None, checkpointing=False):
    return {"job_id": job_id, "name": "test job", "batch": not checkpointing, "checkpointing": checkpointing,
            "config": dict(config or {}), "restore": None,
            "vertices": [{"id": v, "name": f"v{v}", "parallelism": p, "max_parallelism": 128,
                          "operators": [{"id": 10 * v, "name": f"op{v}", "uid": "", "kind": "map"}]}
                         for v, p in vertices],
            "edges": [{"source": a, "target": b, "ship_strategy": "FORWARD", "local_aggregation": False}
                      for a, b in edges]}


class Driver:
    """Feeds events with a clock of its own (monotonic ``now`` and ``wall`` = 1e9 + now)."""

    def __init__(self, slots=2, **kw):
        self.m = m.JobManagerStateMachine(heartbeat_timeout_s=10.0, slot_request_timeout_s=30.0, **kw)
        self.now = 100.0
        if slots:
            self.feed(m.TaskManagerRegistered("tm1", slots))
            for i in range(slots):
                self.feed(m.SlotRegistered("tm1", i, ("127.0.0.1", 7000 + i)))

    def feed(self, event, dt=0.01):
        self.now += dt
        import dataclasses
        return self.m.handle(dataclasses.replace(event, now=self.now, wall=1e9 + self.now))

    def job(self, job_id="job1"):
        return job_view(self.m.job(job_id))

    def all_tasks(self, state, job_id="job1", attempt=0, **kw):
        out = []
        for (v, i) in sorted(self.job(job_id).tasks):
            out += self.feed(m.TaskStateChanged(job_id, v, i, state, attempt=attempt, **kw))
        return out

    def acks(self, job_id="job1", attempt=0, slots=("tm1/0", "tm1/1")):
        out = []
        for s in slots:
            out += self.feed(m.FinishedAck(s, job_id, commit=True, attempt=attempt))
        return out


def sends(instructions, msg):
    return [i for i in instructions if isinstance(i, m.SendToSlot) and i.msg == msg]


def of(instructions, kind):
    return [i for i in instructions if isinstance(i, kind)]


def running(d, job_id="job1", cfg=None, **kw):
    """Submit a job and report all its tasks RUNNING; returns the submit's instructions."""
    out = d.feed(m.SubmitJob(topology(job_id, config=cfg, **kw), b"graph"))
    d.all_tasks("RUNNING", job_id)
    return out


# -- states ---------------------------------------------------------------------------------------
def test_states_are_strings_with_flinks_public_names():
    assert JobStatus.RUNNING == "RUNNING" and f"{JobStatus.FAILED}" == "FAILED" == str(JobStatus.FAILED)
    assert json.dumps({"s": JobStatus.CANCELED}) == '{"s": "CANCELED"}'
    assert "FINISHED" in TERMINAL and "RUNNING" not in TERMINAL and JobStatus.CANCELED.is_terminal
    assert JobStatus.RESTARTING_WAIT.public == "RESTARTING" == JobStatus.RESTARTING_ABORTING.rest_name
    assert JobStatus.COMMITTING.public == "COMMITTING" and JobStatus.COMMITTING.rest_name == "RUNNING"
    assert JobStatus.FAILED_ABORTING.rest_name == "FAILING" and JobStatus.CANCELED_ABORTING.rest_name == "CANCELLING"
    assert ExecutionState("DEPLOYING") is ExecutionState.DEPLOYING and not ExecutionState.RUNNING.is_terminal


def test_status_marks_source_vertices_whatever_their_names_for_the_clis_progress_line():
    from emrflow.cli import _Progress
    from emrflow.runtime.jobmanager.query import describe
    d = Driver()
    topo = topology()
    topo["vertices"][0]["name"] = "Ratings -> Map"  # a user-named source chain
    topo["vertices"][0]["operators"][0]["kind"] = "source"
    d.feed(m.SubmitJob(topo, b"graph"))
    d.all_tasks("RUNNING")
    # vertex 0's source emitted 7 + 5 records, vertex 1's first operator took in 4 + 6
    d.feed(m.MetricsReported("job1", {"0.0": {"operators": {0: (0, 7)}}, "0.1": {"operators": {0: (0, 5)}},
                                      "1.0": {"operators": {10: (4, 4)}}, "1.1": {"operators": {10: (6, 6)}}}))
    status = describe(d.job(), d.now + 1e9)
    assert [v["is_source"] for v in status["vertices"]] == [True, False]
    line = _Progress.summary(status)
    assert "source records 12 " in line and "records into operators 10 " in line, line


# -- scheduling and the end-of-job commit ------------------------------------------------------------
def test_submit_waits_for_slots_deploys_runs_commits_and_finishes():
    d = Driver(slots=0)
    d.feed(m.TaskManagerRegistered("tm1", 2))
    assert d.feed(m.SubmitJob(topology(), b"graph")) == []
    assert d.job().state == JobStatus.CREATED
    assert d.feed(m.SlotRegistered("tm1", 0, ("h", 1))) == []  # one slot is not enough
    out = d.feed(m.SlotRegistered("tm1", 1, ("h", 2)))
    deploys = sends(out, "deploy")
    assert [(s.slot_id, s.body["subtasks"], s.body["attempt"]) for s in deploys] == [
        ("tm1/0", [(0, 0), (1, 0)], 0), ("tm1/1", [(0, 1), (1, 1)], 0)]
    assert deploys[0].body["slot_addresses"] == {0: ["h", 1], 1: ["h", 2]} and deploys[0].body["job_bytes"] == b"graph"
    job = d.job()
    assert job.state == "RUNNING" and set(job.tasks.values()) == {"DEPLOYING"} and job.start is not None
    assert d.all_tasks("RUNNING") == [] and set(d.job().tasks.values()) == {"RUNNING"}

    out = d.all_tasks("FINISHED", committables=[FILE])
    assert d.job().state == JobStatus.COMMITTING
    (write,) = of(out, m.WriteCommitRecords)
    assert write.attempt == 0 and write.committables == (FILE,) * 4
    out = d.feed(m.CommitRecordsWritten("job1", 0, ("rec-1",)))
    assert [s.slot_id for s in sends(out, "commit")] == ["tm1/0", "tm1/1"]
    assert of(d.feed(m.FinishedAck("tm1/0", "job1", commit=True)), m.FinishCommit) == []
    (finish,) = of(d.feed(m.FinishedAck("tm1/1", "job1", commit=True)), m.FinishCommit)
    assert finish.records == ("rec-1",) and d.job().state == JobStatus.COMMITTING
    d.feed(m.CommitFinished("job1"))
    job = d.job()
    assert job.state == JobStatus.FINISHED and job.failure is None and job.end is not None
    assert all(s.job_id is None for s in d.m.slots.values())


def test_not_enough_slots_fails_the_job_after_the_slot_request_timeout():
    d = Driver(slots=1)
    d.feed(m.SubmitJob(topology(), b"g"))
    d.feed(m.CheckpointTimerFired(), dt=29.0)
    assert d.job().state == JobStatus.CREATED
    d.feed(m.CheckpointTimerFired(), dt=2.0)
    job = d.job()
    assert job.state == JobStatus.FAILED
    assert job.failure["message"].startswith("not enough task slots: the job needs 2 (its largest parallelism), "
                                             "the cluster has 1 free of 1")


def test_commit_record_write_error_aborts_the_sinks_and_fails_the_job():
    d = Driver()
    running(d)
    d.all_tasks("FINISHED", committables=[FILE])
    out = d.feed(m.CommitRecordsWritten("job1", 0, error="disk full"))
    assert [s.body for s in sends(out, "abort")] == [{"job_id": "job1", "final": True}] * 2
    assert d.job().state == JobStatus.FAILED_ABORTING
    d.acks()
    job = d.job()
    assert job.state == "FAILED"
    assert "cannot write the commit record of the job's output: disk full" in job.failure["message"]


@pytest.mark.parametrize("committable, state", [(FILE, "FINISHED"), ("other", "FAILED")])
def test_slot_lost_during_the_commit(committable, state):
    """A lost slot's file sinks are in the commit record: the JobManager finishes them (FINISHED);
    another sink's commit may be missing (FAILED)."""
    d = Driver()
    running(d)
    d.all_tasks("FINISHED", committables=[committable])
    d.feed(m.CommitRecordsWritten("job1", 0, ("rec-1",)))
    out = d.feed(m.FinishedAck("tm1/0", "job1", commit=True))
    assert of(out, m.FinishCommit) == []
    (finish,) = of(d.feed(m.SlotLost("tm1/1", "slot tm1/1 disconnected")), m.FinishCommit)
    assert finish.records == ("rec-1",) and d.job().state == JobStatus.COMMITTING
    d.feed(m.CommitFinished("job1"))
    job = d.job()
    assert job.state == state
    if state == "FAILED":
        assert job.failure["message"] == ("slot tm1/1 disconnected while the output was being committed; "
                                          "its sinks' output may be missing")


def test_roll_forward_error_fails_the_job():
    d = Driver()
    running(d)
    d.all_tasks("FINISHED", committables=[FILE])
    d.feed(m.CommitRecordsWritten("job1", 0, ("rec-1",)))
    d.acks()
    d.feed(m.CommitFinished("job1", error="the commit of the job's output did not finish: gone"))
    assert d.job().state == "FAILED" and "did not finish: gone" in d.job().failure["message"]


# -- failures, restarts, failover ---------------------------------------------------------------------
FIXED = {"restart-strategy.type": "fixed-delay", "restart-strategy.fixed-delay.attempts": 1,
         "restart-strategy.fixed-delay.delay": 2000}


def test_task_failure_with_fixed_delay_restarts_the_job_once():
    d = Driver()
    running(d, cfg=FIXED)
    out = d.feed(m.TaskStateChanged("job1", 1, 0, "FAILED", failure={"message": "boom", "traceback": ""}))
    assert d.job().state == JobStatus.RESTARTING and d.job().state.public == "RESTARTING"
    assert [s.slot_id for s in sends(out, "cancel")] == ["tm1/0", "tm1/1"]
    out = d.all_tasks("CANCELED")
    assert [s.body["final"] for s in sends(out, "abort")] == [False, False]  # a restart follows
    assert d.job().state == JobStatus.RESTARTING_ABORTING
    out = d.acks()
    (timer,) = of(out, m.StartTimer)
    assert timer.delay == 2.0 and timer.event == m.RestartTimerFired("job1")
    assert d.job().state == JobStatus.RESTARTING_WAIT and d.job().slots == ()
    (plan,) = of(d.feed(timer.event, dt=2.0), m.PlanRestore)
    assert plan.candidates == () and plan.region is None
    out = d.feed(m.RestorePlanned("job1", None))
    assert [s.body["attempt"] for s in sends(out, "deploy")] == [1, 1]
    job = d.job()
    assert job.state == "RUNNING" and job.restarts == 1 and job.failure is None
    # a late report of attempt 0 changes nothing
    assert d.feed(m.TaskStateChanged("job1", 0, 0, "FAILED", attempt=0)) == []
    assert d.job().state == "RUNNING"

    # the second failure: no restart left
    d.all_tasks("RUNNING", attempt=1)
    out = d.feed(m.TaskStateChanged("job1", 0, 1, "FAILED", attempt=1, failure={"message": "again", "traceback": ""}))
    assert d.job().state == JobStatus.FAILING and len(sends(out, "cancel")) == 2
    out = d.all_tasks("CANCELED", attempt=1)
    assert [s.body["final"] for s in sends(out, "abort")] == [True, True]
    d.acks(attempt=1)
    job = d.job()
    assert job.state == "FAILED"
    assert job.failure["message"] == "again (no more restarts: restart strategy fixed-delay, 2 failures)"


def test_without_a_restart_strategy_the_first_failure_fails_the_job():
    d = Driver()
    running(d)
    d.feed(m.TaskStateChanged("job1", 0, 0, "FAILED", failure={"message": "boom", "traceback": ""}))
    d.all_tasks("CANCELED")
    d.acks()
    assert d.job().state == "FAILED" and d.job().failure["message"] == "boom"


def test_region_failover_restarts_only_the_failed_pipelined_region():
    d = Driver()
    running(d, cfg=FIXED, vertices=((0, 2), (1, 2), (2, 2), (3, 2)), edges=((0, 1), (2, 3)))
    out = d.feed(m.TaskStateChanged("job1", 3, 1, "FAILED", failure={"message": "boom", "traceback": ""}))
    assert sends(out, "cancel") == []
    assert [s.body["subtasks"] for s in sends(out, "cancel_tasks")] == [[(2, 0), (2, 1), (3, 0), (3, 1)]] * 2
    assert d.job().state == "RUNNING"
    out = []
    for k in [(2, 0), (2, 1), (3, 0)]:
        out += d.feed(m.TaskStateChanged("job1", *k, "CANCELED"))
    assert len(sends(out, "abort_tasks")) == 2
    assert of(d.feed(m.TasksAborted("tm1/0", "job1")), m.StartTimer) == []
    (timer,) = of(d.feed(m.TasksAborted("tm1/1", "job1")), m.StartTimer)
    assert timer.delay == 2.0 and timer.event.region == frozenset({2, 3})
    (plan,) = of(d.feed(timer.event, dt=2.0), m.PlanRestore)
    out = d.feed(m.RestorePlanned("job1", None, region=plan.region, token=plan.token))
    assert [(s.slot_id, s.body["subtasks"], s.body["attempt"]) for s in sends(out, "deploy_tasks")] == [
        ("tm1/0", [(2, 0), (3, 0)], 1), ("tm1/1", [(2, 1), (3, 1)], 1)]
    job = d.job()
    assert job.state == "RUNNING" and job.restarts == 1
    assert {k: str(v) for k, v in job.tasks.items() if k[0] < 2} == {(0, 0): "RUNNING", (0, 1): "RUNNING",
                                                                    (1, 0): "RUNNING", (1, 1): "RUNNING"}
    assert {str(v) for k, v in job.tasks.items() if k[0] >= 2} == {"DEPLOYING"}


def test_silent_taskmanager_is_lost_and_its_job_fails():
    d = Driver()
    running(d)
    assert d.feed(m.HeartbeatTimerFired(), dt=5.0) == []
    d.feed(m.Heartbeat("tm1"), dt=0.0)
    out = d.feed(m.HeartbeatTimerFired(), dt=10.5)
    assert of(out, m.CloseTaskManager) == [m.CloseTaskManager("tm1")]
    job = d.job()
    assert job.state == "FAILED" and d.m.slots == {} and d.m.taskmanagers == {}
    assert re.fullmatch(r"TaskManager tm1 lost: no heartbeat for 10[45]\d\d ms \(heartbeat.timeout 10000 ms\)",
                        job.failure["message"])


def test_taskmanager_lost_restarts_a_job_with_a_restart_strategy_once_slots_return():
    d = Driver()
    running(d, cfg=FIXED)
    d.feed(m.TaskManagerLost("tm1", "its connection closed"))
    assert d.job().state == JobStatus.RESTARTING_WAIT
    d.feed(m.RestartTimerFired("job1"), dt=2.0)
    assert d.feed(m.RestorePlanned("job1", None)) == []  # no slots: waits for them
    d.feed(m.TaskManagerRegistered("tm2", 2))
    d.feed(m.SlotRegistered("tm2", 0, ("h", 1)))
    out = d.feed(m.SlotRegistered("tm2", 1, ("h", 2)))
    assert [s.slot_id for s in sends(out, "deploy")] == ["tm2/0", "tm2/1"]
    assert d.job().state == "RUNNING" and d.job().restarts == 1


def test_deploy_to_a_closed_slot_is_a_lost_slot():
    d = Driver()
    d.feed(m.SubmitJob(topology(), b"g"))
    d.feed(m.SendFailed("tm1/1", "deploy", "job1"))
    job = d.job()
    assert job.state == JobStatus.FAILING and job.failure["message"] == "slot tm1/1 disconnected during deployment"


# -- client commands ------------------------------------------------------------------------------------
def test_cancel_running_job_aborts_its_sinks():
    d = Driver()
    running(d)
    out = d.feed(m.CancelJob("job1"))
    assert d.job().state == JobStatus.CANCELLING and len(sends(out, "cancel")) == 2
    out = d.all_tasks("CANCELED")
    assert [s.body["final"] for s in sends(out, "abort")] == [True, True]
    d.acks()
    assert d.job().state == "CANCELED" and d.job().failure is None
    d.feed(m.CancelJob("job1"))  # cancelling an ended job changes nothing
    assert d.job().state == "CANCELED"
    with pytest.raises(JobNotFound, match="no job with id nope"):
        d.feed(m.CancelJob("nope"))


def test_cancel_during_the_restart_pause_ends_the_job_at_once():
    d = Driver()
    running(d, cfg=FIXED)
    d.feed(m.TaskStateChanged("job1", 0, 0, "FAILED", failure={"message": "x", "traceback": ""}))
    d.all_tasks("CANCELED")
    d.acks()
    d.feed(m.CancelJob("job1"))
    assert d.job().state == "CANCELED"
    d.feed(m.RestartTimerFired("job1"), dt=2.0)
    assert sends(d.feed(m.RestorePlanned("job1", None)), "deploy") == []


def test_refused_commands_raise_and_change_nothing():
    d = Driver()
    running(d)
    with pytest.raises(JobAlreadySubmitted, match="job job1 was already submitted"):
        d.feed(m.SubmitJob(topology(), b"g"))
    with pytest.raises(SavepointError, match="runs in BATCH mode"):
        d.feed(m.TriggerSavepoint("job1", "/sp"))


# -- checkpoints -----------------------------------------------------------------------------------------
CKP = {"execution.checkpointing.interval": 1000, "execution.checkpointing.timeout": 5000,
       "state.checkpoints.dir": "/chk", "state.checkpoints.num-retained": 1}


def ack_all(d, cid, attempt=0):
    out = []
    for (v, i) in sorted(d.job().tasks):
        out += d.feed(m.CheckpointAcknowledged("job1", attempt, cid, v, i,
                                               entry={"vertex": v, "subtask": i, "size": 10, "file": f"t{v}{i}"}))
    return out


def test_periodic_checkpoint_triggered_acknowledged_completed_and_notified():
    d = Driver()
    running(d, cfg=CKP, checkpointing=True)
    assert d.feed(m.CheckpointTimerFired(), dt=0.5) == []  # the interval is not over
    out = d.feed(m.CheckpointTimerFired(), dt=0.6)
    triggers = sends(out, "trigger_checkpoint")
    assert [(t.slot_id, t.body["checkpoint_id"], t.body["target"], t.body["savepoint"]) for t in triggers] == [
        ("tm1/0", 1, "/chk/job1/chk-1", False), ("tm1/1", 1, "/chk/job1/chk-1", False)]
    assert d.feed(m.CheckpointTimerFired(), dt=1.5) == []  # max-concurrent-checkpoints 1
    out = ack_all(d, 1)
    (write,) = of(out, m.WriteCheckpointMetadata)
    assert write.target == "/chk/job1/chk-1" and write.metadata["size_bytes"] == 40
    assert [(t["vertex"], t["subtask"]) for t in write.metadata["tasks"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    out = d.feed(m.CheckpointMetadataWritten("job1", 1))
    assert [s.body for s in sends(out, "notify_checkpoint_complete")] == [{"job_id": "job1", "checkpoint_id": 1}] * 2
    assert of(out, m.CheckpointDone) == [m.CheckpointDone("job1", 1, "/chk/job1/chk-1", False)]
    stats = d.job().checkpoints
    assert (stats.completed, stats.failed, stats.in_progress) == (1, 0, 0)
    assert stats.latest["path"] == "/chk/job1/chk-1"
    # the next one pushes the first out (num-retained 1)
    assert sends(d.feed(m.CheckpointTimerFired(), dt=1.1), "trigger_checkpoint")
    ack_all(d, 2)
    out = d.feed(m.CheckpointMetadataWritten("job1", 2))
    assert of(out, m.RemoveCheckpoint) == [m.RemoveCheckpoint("/chk/job1/chk-1", "now")]
    # a restart plans from the retained checkpoints, newest first
    d.feed(m.CancelJob("job1"))
    d.all_tasks("CANCELED")
    out = d.acks()
    assert of(out, m.RemoveCheckpoint) == [m.RemoveCheckpoint("/chk/job1", "cleanup")]  # not retained


def test_checkpoint_timeout_and_declined_checkpoint_are_aborted():
    d = Driver()
    running(d, cfg=CKP, checkpointing=True)
    d.feed(m.CheckpointTimerFired(), dt=1.1)
    out = d.feed(m.CheckpointTimerFired(), dt=5.1)
    (done,) = of(out, m.CheckpointDone)
    assert done.checkpoint_id == 1 and done.error == "not complete after 5 s (execution.checkpointing.timeout)"
    assert m.RemoveCheckpoint("/chk/job1/chk-1", "background") in out
    # no min-pause: the next one is due at once
    assert sends(out, "trigger_checkpoint")[0].body["checkpoint_id"] == 2
    assert d.job().checkpoints.failed == 1
    out = d.feed(m.CheckpointAcknowledged("job1", 0, 2, 1, 0, error="no space"))
    assert of(out, m.CheckpointDone)[0].error == "subtask 0 of vertex 1 declined: no space"
    d.feed(m.CheckpointTimerFired(), dt=1.1)
    ack_all(d, 3)
    out = d.feed(m.CheckpointMetadataWritten("job1", 3, error="OSError('read-only')"))
    assert of(out, m.CheckpointDone)[0].error == "cannot write its metadata: OSError('read-only')"
    assert d.job().checkpoints.failed == 3 and d.job().checkpoints.completed == 0


def test_stop_with_savepoint_takes_no_periodic_checkpoint_after_it_and_ends_finished():
    d = Driver(savepoint_dir="/sp")
    running(d, cfg=CKP, checkpointing=True)
    out = d.feed(m.TriggerSavepoint("job1", stop=True))
    (started,) = of(out, m.SavepointTriggered)
    assert started.target.startswith("/sp/savepoint-job1-")
    assert {t.body["savepoint"] for t in sends(out, "trigger_checkpoint")} == {True}
    with pytest.raises(SavepointError, match="already being stopped"):
        d.feed(m.TriggerSavepoint("job1", stop=True))
    assert sends(d.feed(m.CheckpointTimerFired(), dt=3.0), "trigger_checkpoint") == []  # stopping
    ack_all(d, started.checkpoint_id)
    out = d.feed(m.CheckpointMetadataWritten("job1", started.checkpoint_id))
    assert of(out, m.CheckpointDone) == [m.CheckpointDone("job1", started.checkpoint_id, started.target, True)]
    assert sends(d.feed(m.CheckpointTimerFired(), dt=3.0), "trigger_checkpoint") == []  # still stopping
    out = d.feed(m.StopJob("job1", started.target))
    assert d.job().state == JobStatus.CANCELLING and len(sends(out, "cancel")) == 2
    d.all_tasks("CANCELED")
    d.acks()
    assert d.job().state == "FINISHED"
    assert d.job().checkpoints.latest_savepoint["path"] == started.target


def test_failed_stop_savepoint_lets_periodic_checkpoints_resume():
    d = Driver()
    running(d, cfg=CKP, checkpointing=True)
    with pytest.raises(SavepointError, match="no savepoint directory"):
        d.feed(m.TriggerSavepoint("job1", stop=True))
    (started,) = of(d.feed(m.TriggerSavepoint("job1", "/sp", stop=True)), m.SavepointTriggered)
    out = d.feed(m.CheckpointTimerFired(), dt=6.0)  # the savepoint times out
    assert of(out, m.CheckpointDone)[0].checkpoint_id == started.checkpoint_id
    assert sends(d.feed(m.CheckpointTimerFired(), dt=1.1), "trigger_checkpoint") == []
    d.feed(m.StopSavepointFailed("job1"))
    assert sends(d.feed(m.CheckpointTimerFired(), dt=1.1), "trigger_checkpoint")
    assert d.job().state == "RUNNING"


def test_savepoint_needs_every_task_running():
    d = Driver()
    d.feed(m.SubmitJob(topology(config=CKP, checkpointing=True), b"g"))
    with pytest.raises(SavepointError, match="job job1 is RUNNING, not running with all its tasks: try again"):
        d.feed(m.TriggerSavepoint("job1", "/sp"))


def test_restart_plans_from_retained_checkpoints_and_drops_corrupt_ones():
    d = Driver()
    running(d, cfg=CKP | FIXED, checkpointing=True)
    d.feed(m.CheckpointTimerFired(), dt=1.1)
    ack_all(d, 1)
    d.feed(m.CheckpointMetadataWritten("job1", 1))
    d.feed(m.TaskStateChanged("job1", 0, 0, "FAILED", failure={"message": "x", "traceback": ""}))
    d.all_tasks("CANCELED")
    (timer,) = of(d.acks(), m.StartTimer)
    (plan,) = of(d.feed(timer.event, dt=2.0), m.PlanRestore)
    assert plan.candidates == ("/chk/job1/chk-1",)
    out = d.feed(m.RestorePlanned("job1", None, corrupt=("/chk/job1/chk-1",)))
    assert sends(out, "deploy")[0].body["restore"] is None
    assert d.job().checkpoints.latest is None
