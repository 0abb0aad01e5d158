"""The JobManager's state machine, without I/O: events in, instructions out.

:class:`JobManagerStateMachine` holds what the JobManager knows of the cluster (TaskManagers,
slots) and of every job (its :class:`~.states.JobStatus`, subtask states, restarts, checkpoints,
the end-of-job commit). :meth:`JobManagerStateMachine.handle` takes one event (a small frozen
dataclass: a slot's message, a lost TaskManager, a timer that fired, the result of some I/O the
shell did) and returns the instructions that follow from it (send a message to a slot, start a
timer, write the commit records...). Nothing in here touches a socket, a thread, a clock or a
file: times come in on the events (``now``: monotonic seconds, ``wall``: epoch seconds), and
the shell (:mod:`.server`) performs the instructions and feeds their outcome back as events.
Client commands that are refused raise a :class:`~.errors.JobManagerError` before changing
anything.

Job life cycle (Flink's ``JobStatus``)::

    CREATED -> RUNNING -> COMMITTING -> FINISHED
                       -> FAILING -> FAILED_ABORTING -> FAILED
                       -> CANCELLING -> CANCELED_ABORTING -> CANCELED (FINISHED after stop)
                       -> RESTARTING -> RESTARTING_ABORTING -> RESTARTING_WAIT -> RUNNING
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from emrflow.config import Configuration
from emrflow.config_views import BadRecordsConfig, CheckpointConfig
from emrflow.fs import FileSystem
from emrflow.runtime.jobmanager.checkpoints import CheckpointCoordinator, PendingCheckpoint
from emrflow.runtime.jobmanager.errors import JobAlreadySubmitted, JobNotFound, SavepointError
from emrflow.runtime.jobmanager.states import (
    TASK_TERMINAL,
    TERMINAL,
    ExecutionState,
    JobStatus,
    RegionRestartPhase,
    execution_state,
)
from emrflow.runtime.restart import RestartStrategy

log = logging.getLogger("emrflow.jobmanager")

J = JobStatus
X = ExecutionState


# -- the state ----------------------------------------------------------------------------------
@dataclass
class SlotInfo:
    """A registered task slot."""

    taskmanager_id: str
    index: int
    data_address: tuple
    job_id: str | None = None

    @property
    def id(self) -> str:
        return f"{self.taskmanager_id}/{self.index}"


@dataclass
class TaskManagerInfo:
    """A registered TaskManager (times: ``registered`` epoch s, ``last_heartbeat`` monotonic s)."""

    id: str
    slots: int
    host: str
    pid: int
    registered: float = 0.0
    last_heartbeat: float = 0.0
    rss_bytes: int = 0
    cpu_percent: float = 0.0
    data_host: str = "127.0.0.1"


@dataclass
class JobState:
    """What the JobManager knows of one job (wall times in epoch seconds)."""

    id: str
    name: str
    topology: dict
    job_bytes: bytes
    #: the JobManager's keys of the job's configuration (``topology["config"]``), read back
    config: Configuration = field(default_factory=Configuration)
    state: JobStatus = JobStatus.CREATED
    submitted: float = 0.0
    start: float | None = None
    end: float | None = None
    slots: list[SlotInfo] = field(default_factory=list)
    tasks: dict[tuple[int, int], Any] = field(default_factory=dict)   # -> ExecutionState
    metrics: dict[tuple[int, int], dict] = field(default_factory=dict)
    failure: dict | None = None
    failure_time: float | None = None
    rates: dict[tuple[int, int], dict] = field(default_factory=dict)
    metric_times: dict[tuple[int, int], float] = field(default_factory=dict)
    pending_acks: set[str] = field(default_factory=set)
    finish_errors: list[str] = field(default_factory=list)
    committables: dict[tuple[int, int], list] = field(default_factory=dict)  # finished task -> its sinks'
    commit_records: list[str] = field(default_factory=list)  # the file sinks' commit records (uris)
    commit_lost: list[str] = field(default_factory=list)     # slots lost during the commit (reasons)
    commit_sent: bool = False                                # records written, "commit" sent to slots
    commit_finishing: bool = False                           # the records are being finished
    attempt: int = 0
    restore: dict | None = None          # restore plan of the next deployment
    restart: RestartStrategy | None = None
    restarts: int = 0
    coordinator: CheckpointCoordinator | None = None
    stop_savepoint: str | None = None    # stop-with-savepoint: ends FINISHED
    stopping: bool = False               # stop-with-savepoint triggered: no more periodic checkpoints
    restart_pause: float = 0.0           # seconds before the pending restart
    deploy_attempt: int = 0              # attempt of the last deployment of the whole job
    task_attempts: dict = field(default_factory=dict)  # (vertex, subtask) -> attempt it runs
    regions: list = field(default_factory=list)        # pipelined regions (frozensets of vertex ids)
    region_restarts: dict = field(default_factory=dict)  # region -> {"phase", "pause", "pending", "token"}
    region_failover: bool = True         # jobmanager.execution.failover-strategy is region
    slot_deadline: float | None = None   # waiting for free slots until then (monotonic s)
    split_vertices: dict = field(default_factory=dict)  # SplitSource vertex -> its source's uid
    enum_generation: dict = field(default_factory=dict)  # vertex -> attempt its enumerator was reset at
    readers: set = field(default_factory=set)            # (vertex, subtask) whose split reader registered
    enum_calls: dict = field(default_factory=dict)       # call id -> (vertex, subtask): handle_splits_finished
    #                                                      calls issued and not yet returned (SplitsFinished)
    split_requests: set = field(default_factory=set)     # (vertex, subtask) that asked for a split before its
    #                                                      reader registered: handle_split_request after add_reader
    assigned: dict = field(default_factory=dict)         # (vertex, subtask) -> [(epoch, cloudpickled splits)]:
    #                                                      assignments no completed checkpoint covers (add_splits_back)
    trigger_epoch: int = 0                               # id of the last checkpoint whose triggers were sent
    enum_base: dict = field(default_factory=dict)        # vertex -> id of the checkpoint (0: none) whose reader
    #                                                      states plus `assigned` hold every split its running
    #                                                      enumerator handed out; None: reset it on a restart

    @property
    def file_system(self) -> FileSystem:
        """The file system of the job's configuration (its ``s3.*`` options)."""
        return FileSystem.of(self.config)

    @property
    def need(self) -> int:
        """Slots the job needs: its largest parallelism (slot sharing)."""
        return max(v["parallelism"] for v in self.topology["vertices"])


# -- events ---------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Event:
    """Base of every event: ``now`` is monotonic seconds, ``wall`` epoch seconds."""

    now: float = 0.0
    wall: float = 0.0


@dataclass(frozen=True)
class TaskManagerRegistered(Event):
    tm_id: str
    slots: int
    host: str = "?"
    pid: int = 0
    data_host: str = "127.0.0.1"


@dataclass(frozen=True)
class Heartbeat(Event):
    tm_id: str
    rss_bytes: int = 0
    cpu_percent: float = 0.0


@dataclass(frozen=True)
class TaskManagerLost(Event):
    tm_id: str
    reason: str


@dataclass(frozen=True)
class HeartbeatTimerFired(Event):
    """The heartbeat watchdog's clock: TaskManagers silent past ``heartbeat.timeout`` are lost."""


@dataclass(frozen=True)
class SlotRegistered(Event):
    taskmanager_id: str
    index: int
    data_address: tuple


@dataclass(frozen=True)
class SlotLost(Event):
    slot_id: str
    reason: str


@dataclass(frozen=True)
class SendFailed(Event):
    """A :class:`SendToSlot` could not be sent (the slot's connection is closed)."""

    slot_id: str
    msg: str
    job_id: str | None = None


@dataclass(frozen=True)
class SubmitJob(Event):
    topology: dict
    job_bytes: bytes


@dataclass(frozen=True)
class CancelJob(Event):
    job_id: str


@dataclass(frozen=True)
class TriggerSavepoint(Event):
    """Take a savepoint into ``directory`` (default: the job's, else the cluster's);
    ``stop``: of a stop-with-savepoint (no periodic checkpoint is triggered after it)."""

    job_id: str
    directory: str | None = None
    stop: bool = False


@dataclass(frozen=True)
class StopSavepointFailed(Event):
    """The savepoint of a stop-with-savepoint failed: the job goes on, with its checkpoints."""

    job_id: str


@dataclass(frozen=True)
class StopJob(Event):
    """The stop's savepoint is complete at ``path``: end the job (FINISHED)."""

    job_id: str
    path: str


@dataclass(frozen=True)
class TaskStateChanged(Event):
    job_id: str
    vertex: int
    subtask: int
    state: str
    metrics: dict = field(default_factory=dict)
    failure: dict | None = None
    attempt: int = 0
    committables: list | None = None


@dataclass(frozen=True)
class MetricsReported(Event):
    job_id: str
    tasks: dict
    attempt: int = 0


@dataclass(frozen=True)
class FinishedAck(Event):
    """A slot committed or aborted its sinks."""

    slot_id: str
    job_id: str
    commit: bool
    error: str | None = None
    attempt: int = 0


@dataclass(frozen=True)
class TasksAborted(Event):
    """A slot aborted the sinks of a region's tasks."""

    slot_id: str
    job_id: str
    error: str | None = None


@dataclass(frozen=True)
class CheckpointAcknowledged(Event):
    job_id: str
    attempt: int
    checkpoint_id: int
    vertex: int
    subtask: int
    entry: dict | None = None
    error: str | None = None


@dataclass(frozen=True)
class CheckpointMetadataWritten(Event):
    """Outcome of :class:`WriteCheckpointMetadata` (``error``: why it could not be written)."""

    job_id: str
    checkpoint_id: int
    error: str | None = None


@dataclass(frozen=True)
class CheckpointTimerFired(Event):
    """The coordinators' clock: periodic checkpoints, checkpoint timeouts, slot request timeouts."""


@dataclass(frozen=True)
class RestartTimerFired(Event):
    """The restart pause of the job (``region`` None) or of one pipelined region is over."""

    job_id: str
    region: frozenset | None = None
    token: int = 0


@dataclass(frozen=True)
class RestorePlanned(Event):
    """Outcome of :class:`PlanRestore`: the plan (or None) and the checkpoints found corrupt."""

    job_id: str
    plan: dict | None
    corrupt: tuple = ()
    region: frozenset | None = None
    token: int = 0


@dataclass(frozen=True)
class CommitRecordsWritten(Event):
    """Outcome of :class:`WriteCommitRecords`."""

    job_id: str
    attempt: int
    records: tuple = ()
    error: str | None = None


@dataclass(frozen=True)
class CommitFinished(Event):
    """Outcome of :class:`FinishCommit` (``error``: why the roll forward did not finish)."""

    job_id: str
    error: str | None = None


@dataclass(frozen=True)
class ReaderRegistered(Event):
    """The split reader of a SplitSource's subtask started (``reader_registered`` from its slot)."""

    job_id: str
    vertex: int
    subtask: int
    attempt: int = 0


@dataclass(frozen=True)
class SplitsFinished(Event):
    """The split reader of a SplitSource's subtask returned these splits finished from a poll
    (``splits_finished`` from its slot, sent before any later checkpoint acknowledgement of it)."""

    job_id: str
    vertex: int
    subtask: int
    attempt: int
    split_ids: tuple = ()


@dataclass(frozen=True)
class SplitRequested(Event):
    """The split reader of a SplitSource's subtask asks for a split (``split_request`` from its slot,
    Flink's ``RequestSplitEvent``)."""

    job_id: str
    vertex: int
    subtask: int
    attempt: int = 0


@dataclass(frozen=True)
class EnumeratorCallDone(Event):
    """The :class:`EnumeratorCall` with ``call_id`` returned (or raised, or was skipped as stale)."""

    job_id: str
    vertex: int
    call_id: int


@dataclass(frozen=True)
class SplitsAssigned(Event):
    """A split enumerator (reset at attempt ``generation``) assigned splits: ``{subtask: cloudpickled
    list}``; ``no_more``: subtasks told that no further splits come."""

    job_id: str
    vertex: int
    generation: int
    splits: dict = field(default_factory=dict)
    no_more: tuple = ()


@dataclass(frozen=True)
class EnumeratorsSnapshotted(Event):
    """Outcome of :class:`SnapshotEnumerators`: the enumerators' states were taken (assignments
    still paused), or ``error``."""

    job_id: str
    checkpoint_id: int
    error: str | None = None


@dataclass(frozen=True)
class EnumeratorStateWritten(Event):
    """An enumerator's state file of a checkpoint was written (``entry`` as a task's) or not (``error``)."""

    job_id: str
    checkpoint_id: int
    vertex: int
    entry: dict | None = None
    error: str | None = None


@dataclass(frozen=True)
class EnumeratorFailed(Event):
    """A split enumerator (of attempt ``generation``) raised: the job fails over."""

    job_id: str
    vertex: int
    generation: int
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class ClusterShutdown(Event):
    """The cluster shuts down: lost slots no longer fail jobs."""


# -- instructions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    """Base of what the shell is told to do."""


@dataclass(frozen=True)
class SendToSlot(Instruction):
    """Send ``msg`` with ``body`` to a slot; on a closed connection feed :class:`SendFailed`."""

    slot_id: str
    msg: str
    body: dict


@dataclass(frozen=True)
class CloseTaskManager(Instruction):
    """Close a (silent) TaskManager's connection."""

    tm_id: str


@dataclass(frozen=True)
class StartTimer(Instruction):
    """Feed ``event`` (with fresh times) after ``delay`` seconds."""

    delay: float
    event: Event


@dataclass(frozen=True)
class PlanRestore(Instruction):
    """Find the newest of ``candidates`` (checkpoint directories, newest first) that checks out
    and plan the restore of ``topology`` from it (else ``fallback``); feed :class:`RestorePlanned`."""

    job_id: str
    topology: dict
    candidates: tuple
    fallback: dict | None
    region: frozenset | None = None
    token: int = 0
    #: the job's file system (its ``s3.*`` options), where the I/O is done
    file_system: FileSystem = field(default_factory=FileSystem)


@dataclass(frozen=True)
class WriteCheckpointMetadata(Instruction):
    """Write a checkpoint's ``_metadata``; feed :class:`CheckpointMetadataWritten`."""

    job_id: str
    checkpoint_id: int
    target: str
    metadata: dict
    #: the job's file system (its ``s3.*`` options), where the I/O is done
    file_system: FileSystem = field(default_factory=FileSystem)


@dataclass(frozen=True)
class CheckpointDone(Instruction):
    """A checkpoint or savepoint completed at ``path`` or failed (``error``)."""

    job_id: str
    checkpoint_id: int
    path: str
    savepoint: bool
    error: str | None = None


@dataclass(frozen=True)
class SavepointTriggered(Instruction):
    """The savepoint a :class:`TriggerSavepoint` started."""

    job_id: str
    checkpoint_id: int
    target: str


@dataclass(frozen=True)
class RemoveCheckpoint(Instruction):
    """Delete a checkpoint directory: ``"now"`` (before the next event), ``"background"``, or
    ``"cleanup"`` (in the background, awaited by shutdown)."""

    path: str
    when: str = "background"
    #: the job's file system (its ``s3.*`` options), where the I/O is done
    file_system: FileSystem = field(default_factory=FileSystem)


@dataclass(frozen=True)
class WriteCommitRecords(Instruction):
    """Write the file sinks' commit records of a finished job; feed :class:`CommitRecordsWritten`."""

    job_id: str
    attempt: int
    committables: tuple
    #: the job's file system (its ``s3.*`` options), where the I/O is done
    file_system: FileSystem = field(default_factory=FileSystem)


@dataclass(frozen=True)
class FinishCommit(Instruction):
    """Roll the commit records forward; feed :class:`CommitFinished`."""

    job_id: str
    records: tuple
    #: the job's file system (its ``s3.*`` options), where the I/O is done
    file_system: FileSystem = field(default_factory=FileSystem)


@dataclass(frozen=True)
class ResetEnumerators(Instruction):
    """Close the split enumerators of ``vertices`` (``((vertex, source uid), ...)``) and create them
    again from ``restore``'s enumerator state files (fresh without): the job's attempt ``generation``
    starts. The shell loads the sources from ``job_bytes``."""

    job_id: str
    generation: int
    vertices: tuple
    job_bytes: bytes
    restore: dict | None = None
    file_system: FileSystem = field(default_factory=FileSystem)


@dataclass(frozen=True)
class EnumeratorCall(Instruction):
    """Call ``method(arg)`` (``add_reader``, ``handle_split_request`` with a subtask index,
    ``notify_checkpoint_complete`` with a checkpoint id; for ``handle_splits_finished`` ``arg`` is
    ``(subtask, [split id, ...])``, for ``add_splits_back`` ``(subtask, (cloudpickled list of
    splits, ...))``) on the enumerator of ``vertex`` if it is still the one of attempt
    ``generation``, in order with the other calls and resets of that enumerator.
    ``subtasks_reset`` (``arg``: subtask indexes) calls no user code: the enumerator's context
    forgets those readers (their region restarts), so it can no longer assign them splits.
    With a ``call_id``, feed :class:`EnumeratorCallDone` once it returned, raised or was skipped."""

    job_id: str
    vertex: int
    generation: int
    method: str
    arg: Any = None
    call_id: int | None = None


@dataclass(frozen=True)
class SnapshotEnumerators(Instruction):
    """Pause assignments, snapshot every enumerator of the job (``generations``: ``((vertex,
    attempt), ...)`` they must be at), feed :class:`EnumeratorsSnapshotted` (whose instructions send
    the triggers) while still paused; then write the states into ``target`` and feed one
    :class:`EnumeratorStateWritten` per enumerator."""

    job_id: str
    checkpoint_id: int
    target: str
    generations: tuple
    file_system: FileSystem = field(default_factory=FileSystem)


@dataclass(frozen=True)
class CloseEnumerators(Instruction):
    """The job ended: close its split enumerators."""

    job_id: str


Instructions = list[Instruction]


def _call_key(call_id: int) -> tuple:
    """What a checkpoint held for an enumerator call waits for (beside its subtasks' acks)."""
    return ("enumerator call", call_id)


def _failure(message: str, **extra: Any) -> dict:
    f = {"message": message, "operator": None, "subtask_index": None, "parallelism": None, "traceback": ""}
    f.update(extra)
    return f


class JobManagerStateMachine:
    """Everything the JobManager decides, driven by :meth:`handle`.

    Args:
        heartbeat_timeout_s: a TaskManager silent for longer is lost.
        slot_request_timeout_s: how long a job waits for enough free slots.
        savepoint_dir: the cluster's ``state.savepoints.dir`` (or None).
    """

    def __init__(self, heartbeat_timeout_s: float = 50.0, slot_request_timeout_s: float = 30.0,
                 savepoint_dir: str | None = None):
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.slot_request_timeout_s = slot_request_timeout_s
        self.savepoint_dir = savepoint_dir
        self.taskmanagers: dict[str, TaskManagerInfo] = {}
        self.slots: dict[str, SlotInfo] = {}
        self.jobs: dict[str, JobState] = {}
        self.shutting_down = False
        self._now = 0.0
        self._wall = 0.0
        self._tokens = 0
        self._out: Instructions = []
        self._handlers = {
            TaskManagerRegistered: self._on_taskmanager_registered, Heartbeat: self._on_heartbeat,
            TaskManagerLost: self._on_taskmanager_lost, HeartbeatTimerFired: self._on_heartbeat_timer,
            SlotRegistered: self._on_slot_registered, SlotLost: self._on_slot_lost,
            SendFailed: self._on_send_failed, SubmitJob: self._on_submit, CancelJob: self._on_cancel,
            TriggerSavepoint: self._on_trigger_savepoint, StopSavepointFailed: self._on_stop_failed,
            StopJob: self._on_stop, TaskStateChanged: self._on_task_state, MetricsReported: self._on_metrics,
            FinishedAck: self._on_finished_ack, TasksAborted: self._on_tasks_aborted,
            CheckpointAcknowledged: self._on_checkpoint_ack,
            CheckpointMetadataWritten: self._on_metadata_written,
            CheckpointTimerFired: self._on_checkpoint_timer, RestartTimerFired: self._on_restart_timer,
            RestorePlanned: self._on_restore_planned, CommitRecordsWritten: self._on_commit_records,
            CommitFinished: self._on_commit_finished, ClusterShutdown: self._on_shutdown,
            ReaderRegistered: self._on_reader_registered, SplitsAssigned: self._on_splits_assigned,
            SplitsFinished: self._on_splits_finished, SplitRequested: self._on_split_requested,
            EnumeratorCallDone: self._on_enumerator_call_done,
            EnumeratorsSnapshotted: self._on_enumerators_snapshotted,
            EnumeratorStateWritten: self._on_enumerator_state_written, EnumeratorFailed: self._on_enumerator_failed,
        }

    # -- the entry point --------------------------------------------------------------------
    def handle(self, event: Event) -> Instructions:
        """Apply one event; return the instructions that follow, in order.

        Raises:
            JobNotFound, JobAlreadySubmitted, SavepointError: a client command was refused
                (nothing changed).
        """
        self._now, self._wall = event.now, event.wall
        self._out = []
        self._handlers[type(event)](event)  # type: ignore[operator]
        self._deploy_waiting()
        out, self._out = self._out, []
        return out

    def job(self, job_id: str) -> JobState:
        """The job with that id.

        Raises:
            JobNotFound: no such job.
        """
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    @staticmethod
    def all_running(job: JobState) -> bool:
        """The job runs with every task running (no deployment or restart in progress)."""
        return job.state == J.RUNNING and all(st == X.RUNNING for st in job.tasks.values())

    def _send(self, slot: SlotInfo, msg: str, **body: Any) -> None:
        self._out.append(SendToSlot(slot.id, msg, body))

    def _token(self) -> int:
        self._tokens += 1
        return self._tokens

    # -- cluster membership -------------------------------------------------------------------
    def _on_taskmanager_registered(self, e: TaskManagerRegistered) -> None:
        self.taskmanagers[e.tm_id] = TaskManagerInfo(e.tm_id, e.slots, e.host, e.pid, registered=e.wall,
                                                     last_heartbeat=e.now, data_host=e.data_host)
        log.info("TaskManager %s registered with %d slots", e.tm_id, e.slots)

    def _on_heartbeat(self, e: Heartbeat) -> None:
        tm = self.taskmanagers.get(e.tm_id)
        if tm is not None:
            tm.last_heartbeat, tm.rss_bytes, tm.cpu_percent = e.now, e.rss_bytes, e.cpu_percent

    def _on_heartbeat_timer(self, e: HeartbeatTimerFired) -> None:
        silent = [tm for tm in self.taskmanagers.values() if e.now - tm.last_heartbeat > self.heartbeat_timeout_s]
        for tm in silent:
            self._taskmanager_lost(tm.id, f"no heartbeat for {int((e.now - tm.last_heartbeat) * 1000)} ms "
                                          f"(heartbeat.timeout {int(self.heartbeat_timeout_s * 1000)} ms)")
            self._out.append(CloseTaskManager(tm.id))

    def _on_taskmanager_lost(self, e: TaskManagerLost) -> None:
        self._taskmanager_lost(e.tm_id, e.reason)

    def _taskmanager_lost(self, tm_id: str, why: str) -> None:
        if self.taskmanagers.pop(tm_id, None) is None:
            return
        for sid in [s.id for s in self.slots.values() if s.taskmanager_id == tm_id]:
            self._slot_lost(sid, f"TaskManager {tm_id} lost: {why}")

    def _on_slot_registered(self, e: SlotRegistered) -> None:
        slot = SlotInfo(e.taskmanager_id, e.index, tuple(e.data_address))
        self.slots[slot.id] = slot

    def _on_slot_lost(self, e: SlotLost) -> None:
        self._slot_lost(e.slot_id, e.reason)

    def _on_shutdown(self, e: ClusterShutdown) -> None:
        self.shutting_down = True

    def _slot_lost(self, slot_id: str, reason: str) -> None:
        slot = self.slots.pop(slot_id, None)
        if slot is None or self.shutting_down:
            return
        job = self.jobs.get(slot.job_id) if slot.job_id else None
        if job is None or job.state in TERMINAL:
            return
        index = job.slots.index(slot)
        for key, st in job.tasks.items():
            if key[1] == index and st not in TASK_TERMINAL:
                job.tasks[key] = X.FAILED
        if job.state != J.COMMITTING:  # every task finished: nothing to restart
            self._fail(job, _failure(reason, subtask_index=index))
        if job.state == J.COMMITTING and slot_id in job.pending_acks:
            from emrflow.connectors.files import COMMIT_KIND
            # its file sinks' commit is in the commit record: the JobManager finishes it;
            # any other sink's commit may not have run: the job cannot be called finished
            ours = [c for (_v, i), cs in job.committables.items() if i == index for c in cs]
            if all(isinstance(c, dict) and c.get("kind") == COMMIT_KIND for c in ours):
                job.commit_lost.append(f"{reason} while the output was being committed")
            else:
                job.finish_errors.append(f"{reason} while the output was being committed; "
                                         "its sinks' output may be missing")
        job.pending_acks.discard(slot_id)
        self._progress(job)
        if (job.state.endswith("ABORTING") or job.state == J.COMMITTING) and not job.pending_acks:
            self._complete(job)

    def _on_send_failed(self, e: SendFailed) -> None:
        job = self.jobs.get(e.job_id) if e.job_id else None
        if e.msg == "deploy":
            self._slot_lost(e.slot_id, f"slot {e.slot_id} disconnected during deployment")
        elif job is None:
            return
        elif e.msg in ("commit", "abort") and e.slot_id in job.pending_acks:
            job.pending_acks.discard(e.slot_id)
            if not job.pending_acks:
                self._complete(job)
        elif e.msg == "abort_tasks":
            for region, r in list(job.region_restarts.items()):
                if r["phase"] == RegionRestartPhase.ABORTING and e.slot_id in r["pending"]:
                    r["pending"].discard(e.slot_id)
                    self._region_aborted(job, region)

    # -- client commands ---------------------------------------------------------------------
    def _on_submit(self, e: SubmitJob) -> None:
        topology = e.topology
        if topology["job_id"] in self.jobs:
            raise JobAlreadySubmitted(topology["job_id"])
        config = Configuration(topology.get("config") or {}, source=f"job {topology['job_id']}")
        job = JobState(id=topology["job_id"], name=topology["name"], topology=topology,
                       job_bytes=e.job_bytes, config=config, submitted=e.wall)
        job.restart = RestartStrategy(config, clock=lambda: self._now)
        job.restore = topology.get("restore")
        from emrflow.graph.jobgraph import pipelined_regions
        job.regions = [frozenset(r) for r in pipelined_regions(
            [v["id"] for v in topology["vertices"]], [(x["source"], x["target"]) for x in topology["edges"]])]
        job.region_failover = config.get("jobmanager.execution.failover-strategy") == "region"
        job.split_vertices = {v["id"]: v["split_source"] for v in topology["vertices"] if v.get("split_source")}
        if topology.get("checkpointing"):
            job.coordinator = CheckpointCoordinator(job.id, CheckpointConfig.of(config), e.now)
            if job.restore:  # continue the numbering of the checkpoint restored from
                job.coordinator.next_id = int(job.restore["checkpoint_id"]) + 1
        self.jobs[job.id] = job
        job.slot_deadline = e.now + self.slot_request_timeout_s

    def _on_cancel(self, e: CancelJob) -> None:
        job = self.job(e.job_id)
        if job.state in TERMINAL:
            return
        if job.state == J.RESTARTING_WAIT:
            self._set_terminal(job, J.CANCELED)
        elif job.state in (J.RUNNING, J.RESTARTING):
            job.state = J.CANCELLING
            self._cancel_tasks(job)
        elif job.state == J.RESTARTING_ABORTING:
            job.state = J.CANCELED_ABORTING

    def savepoint_precheck(self, job_id: str) -> JobState:
        """The job, if it can take savepoints at all.

        Raises:
            JobNotFound: no such job.
            SavepointError: a BATCH job.
        """
        job = self.job(job_id)
        if job.coordinator is None:
            raise SavepointError(f"job {job_id} runs in BATCH mode: savepoints are for STREAMING jobs "
                                 "(Flink takes no savepoints of batch jobs)")
        return job

    def _on_trigger_savepoint(self, e: TriggerSavepoint) -> None:
        job = self.savepoint_precheck(e.job_id)
        assert job.coordinator is not None
        if not self.all_running(job):
            raise SavepointError(f"job {e.job_id} is {job.state.public}, not running with all its tasks: "
                                 "try again")
        directory = e.directory or job.coordinator.savepoint_dir or self.savepoint_dir
        if not directory:
            raise SavepointError("no savepoint directory: give one, or set state.savepoints.dir")
        if e.stop:
            if job.stopping:
                raise SavepointError(f"job {e.job_id} is already being stopped with a savepoint")
            job.stopping = True
        p = self._trigger(job, directory)
        self._out.append(SavepointTriggered(job.id, p.id, p.target))

    def _on_stop_failed(self, e: StopSavepointFailed) -> None:
        self.job(e.job_id).stopping = False  # the job goes on, with its periodic checkpoints

    def _on_stop(self, e: StopJob) -> None:
        job = self.job(e.job_id)
        job.stop_savepoint = e.path
        if job.state == J.RUNNING:
            job.state = J.CANCELLING
            self._cancel_tasks(job)

    # -- scheduling ------------------------------------------------------------------------------
    def _deploy_waiting(self) -> None:
        """Deploy the jobs waiting for slots (submission order) that fit now; fail those past
        the slot request timeout."""
        for job in list(self.jobs.values()):
            if job.slot_deadline is None:
                continue
            if job.state in TERMINAL or job.state in (J.CANCELLING, J.CANCELED_ABORTING):
                job.slot_deadline = None
                continue
            free = [s for s in self.slots.values() if s.job_id is None]
            if len(free) >= job.need:
                self._deploy(job, free)
            elif self._now >= job.slot_deadline:
                job.slot_deadline = None
                self._set_terminal(job, J.FAILED, failure=_failure(
                    f"not enough task slots: the job needs {job.need} (its largest "
                    f"parallelism), the cluster has {len(free)} free of {len(self.slots)}; "
                    "add TaskManagers or lower the parallelism"))

    def _deploy(self, job: JobState, free: list[SlotInfo]) -> None:
        """Deploy attempt ``job.attempt`` to the first ``job.need`` free slots."""
        job.slot_deadline = None
        topology = job.topology
        need = job.need
        free.sort(key=lambda s: (s.taskmanager_id, s.index))
        job.slots = free[:need]
        for s in job.slots:
            s.job_id = job.id
        job.tasks = {}
        job.metrics, job.rates, job.metric_times = {}, {}, {}  # metrics are per attempt, as in Flink
        job.region_restarts = {}
        job.deploy_attempt = job.attempt
        for v in topology["vertices"]:
            for i in range(v["parallelism"]):
                job.tasks[(v["id"], i)] = X.DEPLOYING
                job.task_attempts[(v["id"], i)] = job.attempt
        job.state = J.RUNNING
        if job.start is None:
            job.start = self._wall
        if job.coordinator is not None:
            job.coordinator.last_trigger = self._now
        self._reset_enumerators(job, list(job.split_vertices), job.restore)
        addresses = {i: list(s.data_address) for i, s in enumerate(job.slots)}
        for i, s in enumerate(job.slots):
            subtasks = [(v["id"], i) for v in topology["vertices"] if v["parallelism"] > i]
            self._send(s, "deploy", job_id=job.id, job_bytes=job.job_bytes, subtasks=subtasks,
                       attempt=job.attempt, slot_addresses=addresses, restore=job.restore)

    # -- slot reports ----------------------------------------------------------------------------
    def _on_task_state(self, e: TaskStateChanged) -> None:
        job = self.jobs.get(e.job_id)
        key = (e.vertex, e.subtask)
        if job is None or job.state in TERMINAL or e.attempt != job.task_attempts.get(key):
            return
        job.tasks[key] = execution_state(e.state)
        if e.state == X.FINISHED:
            job.committables[key] = list(e.committables or [])
        if e.metrics:
            job.metrics[key] = e.metrics
        if e.state == X.FAILED:
            self._fail(job, e.failure or {"message": "a subtask failed", "traceback": ""}, e.vertex)
        self._region_progress(job)
        self._progress(job)

    def _on_metrics(self, e: MetricsReported) -> None:
        job = self.jobs.get(e.job_id)
        if job is None:
            return
        for key, m in e.tasks.items():
            v, i = key.split(".")
            k = (int(v), int(i))
            if m.get("attempt", e.attempt) != job.task_attempts.get(k):
                continue  # a report of an earlier attempt
            if job.tasks.get(k) in (X.DEPLOYING, X.RUNNING):
                job.tasks[k] = X.RUNNING
                self._update_rates(job, k, m, e.now)
                job.metrics[k] = m

    @staticmethod
    def _update_rates(job: JobState, k: tuple[int, int], m: dict, now: float) -> None:
        """Derive per-second rates (records, busy and back-pressured ms) from two reports."""
        prev, t_prev = job.metrics.get(k), job.metric_times.get(k)
        job.metric_times[k] = now
        if prev is None or t_prev is None or now <= t_prev:
            return
        dt = now - t_prev
        ops = {}
        for op_id, (rin, rout) in m.get("operators", {}).items():
            pin, pout = prev.get("operators", {}).get(op_id, (0, 0))
            ops[op_id] = ((rin - pin) / dt, (rout - pout) / dt)
        job.rates[k] = {
            "operators": ops,
            "busy_ms_per_s": min(1000.0, (m.get("busy_s", 0) - prev.get("busy_s", 0)) * 1000 / dt),
            "backpressured_ms_per_s": min(1000.0, (m.get("backpressured_s", 0)
                                                   - prev.get("backpressured_s", 0)) * 1000 / dt),
        }

    def _on_finished_ack(self, e: FinishedAck) -> None:
        job = self.jobs.get(e.job_id)
        if job is None or e.attempt != job.deploy_attempt:
            return
        job.pending_acks.discard(e.slot_id)
        if e.error:
            job.finish_errors.append(e.error)
        if not job.pending_acks:
            self._complete(job)

    # -- failures and restarts ---------------------------------------------------------------------
    def _fail(self, job: JobState, failure: dict, vertex: int | None = None) -> None:
        if job.state == J.CANCELLING:
            return  # tasks torn down by the cancellation fail on their closed channels: not a failure
        region = None
        if vertex is not None and job.region_failover and len(job.regions) > 1:
            region = next(r for r in job.regions if vertex in r)
            if region in job.region_restarts:
                return  # that region is restarting already
        if job.state == J.RUNNING and job.stop_savepoint is None and job.restart is not None:
            pause = job.restart.on_failure()
            if pause is not None and region is not None:
                self._restart_region(job, region, pause, failure)
                return
            if pause is not None:
                log.warning("job %s: %s; restarting in %.1f s (%s)", job.id, failure.get("message"),
                            pause, job.restart.describe())
                job.state = J.RESTARTING
                job.restart_pause = pause
                self._abort_pending_checkpoints(job, "the job is restarting")
                self._cancel_tasks(job)
                return
            if job.restart.kind != "none":
                failure = dict(failure)
                failure["message"] = (f"{failure.get('message')} (no more restarts: restart strategy "
                                      f"{job.restart.describe()})")
        if job.failure is None and job.state not in (J.RESTARTING, J.RESTARTING_ABORTING):
            job.failure = failure
            job.failure_time = self._wall
        if job.state == J.RUNNING:
            job.state = J.FAILING
            self._abort_pending_checkpoints(job, "the job failed")
            self._cancel_tasks(job)

    def _cancel_tasks(self, job: JobState) -> None:
        for s in job.slots:
            self._send(s, "cancel", job_id=job.id)

    def _progress(self, job: JobState) -> None:
        states = job.tasks.values()
        if job.state == J.RUNNING and all(s == X.FINISHED for s in states):
            too_many = self._bad_records_exceeded(job)
            if too_many is not None:  # deterministic: no restart; the sinks abort, nothing committed
                job.failure = _failure(too_many)
                job.failure_time = self._wall
                job.state = J.FAILING
                self._abort_pending_checkpoints(job, "the job failed")
                self._finish_on_slots(job, "abort")
                return
            job.state = J.COMMITTING
            self._abort_pending_checkpoints(job, "the job finished")
            self._out.append(WriteCommitRecords(job.id, job.deploy_attempt,
                                                tuple(c for cs in job.committables.values() for c in cs),
                                                job.file_system))
        elif job.state in (J.FAILING, J.CANCELLING, J.RESTARTING) and all(s in TASK_TERMINAL for s in states):
            self._finish_on_slots(job, "abort")

    @staticmethod
    def _bad_records_exceeded(job: JobState) -> str | None:
        """The failure message if the job's bad input records pass ``emrflow.bad-records.max-ratio``
        or ``.max-count`` (or all input records were bad), else ``None``."""
        bad = sum(m.get("bad_records", 0) for m in job.metrics.values())
        if not bad:
            return None
        sources = {o["id"] for v in job.topology["vertices"] for o in v["operators"] if o.get("kind") == "source"}
        good = sum(rout for m in job.metrics.values()
                   for op_id, (_rin, rout) in m.get("operators", {}).items() if int(op_id) in sources)
        limits = BadRecordsConfig.of(job.config)
        ratio, count = limits.max_ratio, limits.max_count
        total = bad + good
        if good == 0:
            why = "all of them"
        elif bad / total > ratio:
            why = f"more than emrflow.bad-records.max-ratio={ratio:g}"
        elif count is not None and bad > count:
            why = f"more than emrflow.bad-records.max-count={count}"
        else:
            return None
        samples = [x for m in job.metrics.values() for x in m.get("bad_record_samples", [])][:3]
        return (f"{bad:,} of {total:,} input records were bad ({why}); no output was committed. "
                f"First: {'; '.join(samples)}")

    def _finish_on_slots(self, job: JobState, what: str) -> None:
        job.pending_acks = {s.id for s in job.slots if s.id in self.slots}
        if what == "abort":
            job.state = {J.FAILING: J.FAILED_ABORTING, J.RESTARTING: J.RESTARTING_ABORTING}.get(
                job.state, J.CANCELED_ABORTING)
        for s in job.slots:
            if s.id in job.pending_acks:
                if what == "abort":  # a restart follows: output of checkpoints stays for it
                    self._send(s, what, job_id=job.id, final=job.state != J.RESTARTING_ABORTING)
                else:
                    self._send(s, what, job_id=job.id)
        if not job.pending_acks:
            self._complete(job)

    def _complete(self, job: JobState) -> None:
        if job.state == J.COMMITTING:
            if job.commit_finishing or not job.commit_sent:
                return
            job.commit_finishing = True  # one completion only; the roll forward does I/O
            self._out.append(FinishCommit(job.id, tuple(job.commit_records), job.file_system))
        elif job.state == J.FAILED_ABORTING:
            self._set_terminal(job, J.FAILED)
        elif job.state == J.CANCELED_ABORTING:
            self._set_terminal(job, J.FINISHED if job.stop_savepoint else J.CANCELED)
        elif job.state == J.RESTARTING_ABORTING:
            job.state = J.RESTARTING_WAIT
            for s in job.slots:
                if s.job_id == job.id:
                    s.job_id = None
            job.slots = []
            self._out.append(StartTimer(job.restart_pause, RestartTimerFired(job.id)))

    def _set_terminal(self, job: JobState, state: JobStatus, failure: dict | None = None) -> None:
        job.state = state
        if failure is not None and job.failure is None:
            job.failure = failure
            job.failure_time = self._wall
        job.end = self._wall
        for s in job.slots:
            if s.job_id == job.id:
                s.job_id = None
        if job.split_vertices:
            self._out.append(CloseEnumerators(job.id))
        c = job.coordinator
        if c is not None:
            self._abort_pending_checkpoints(job, f"the job is {state}")
            if not c.keeps_on(state):
                self._out.append(RemoveCheckpoint(c.job_dir, "cleanup", job.file_system))

    # -- the end-of-job commit: record, commit on the slots, roll forward (files.py) -----
    def _on_commit_records(self, e: CommitRecordsWritten) -> None:
        job = self.job(e.job_id)
        current = job.state == J.COMMITTING and e.attempt == job.deploy_attempt
        if e.error is not None:  # nothing was published
            if current:
                job.failure = _failure(f"cannot write the commit record of the job's output: {e.error}; "
                                       "nothing was committed")
                job.failure_time = self._wall
                job.state = J.FAILING
                self._finish_on_slots(job, "abort")
            return
        job.commit_records = list(e.records)
        if current:
            job.commit_sent = True
            self._finish_on_slots(job, "commit")

    def _on_commit_finished(self, e: CommitFinished) -> None:
        job = self.job(e.job_id)
        if e.error is not None:
            job.finish_errors.append(e.error)
        elif job.commit_lost:
            log.warning("job %s: %s; the JobManager finished their commit", job.id, "; ".join(job.commit_lost))
        if job.finish_errors:
            self._set_terminal(job, J.FAILED, {"message": "; ".join(job.finish_errors), "traceback": ""})
        else:
            self._set_terminal(job, J.FINISHED)

    # -- region failover --------------------------------------------------------------------------------
    def _restart_region(self, job: JobState, region: frozenset, pause: float, failure: dict) -> None:
        """Cancel, abort and later redeploy only the tasks of one pipelined region."""
        assert job.restart is not None
        log.warning("job %s: %s; restarting the pipelined region %s in %.1f s (%s)", job.id,
                    failure.get("message"), sorted(region), pause, job.restart.describe())
        r = job.region_restarts[region] = {"phase": RegionRestartPhase.CANCELLING, "pause": pause,
                                           "pending": set(), "calls": set(), "token": self._token()}
        for v in job.split_vertices:
            if v in region:  # as Flink's subtaskFailed: the enumerator forgets the readers, is not reset
                call_id = self._token()
                r["calls"].add(_call_key(call_id))
                indexes = tuple(sorted(i for (u, i) in job.tasks if u == v))
                self._out.append(EnumeratorCall(job.id, v, job.enum_generation[v], "subtasks_reset", indexes,
                                                call_id))
        job.readers = {k for k in job.readers if k[0] not in region}
        job.split_requests = {k for k in job.split_requests if k[0] not in region}
        self._abort_pending_checkpoints(job, "a region is restarting")
        subtasks = [k for k in job.tasks if k[0] in region]
        for s in job.slots:
            self._send(s, "cancel_tasks", job_id=job.id, subtasks=subtasks)
        self._region_progress(job)

    def _region_progress(self, job: JobState) -> None:
        for region, r in list(job.region_restarts.items()):
            if r["phase"] != RegionRestartPhase.CANCELLING:
                continue
            subtasks = [k for k in job.tasks if k[0] in region]
            if all(job.tasks[k] in TASK_TERMINAL for k in subtasks):
                r["phase"] = RegionRestartPhase.ABORTING
                r["pending"] = {s.id for s in job.slots if s.id in self.slots}
                for s in job.slots:
                    self._send(s, "abort_tasks", job_id=job.id, subtasks=subtasks)
                self._region_aborted(job, region)

    def _on_tasks_aborted(self, e: TasksAborted) -> None:
        job = self.jobs.get(e.job_id)
        if job is None:
            return
        if e.error:
            log.warning("job %s: %s", e.job_id, e.error)
        for region, r in list(job.region_restarts.items()):
            if r["phase"] == RegionRestartPhase.ABORTING and e.slot_id in r["pending"]:
                r["pending"].discard(e.slot_id)
                self._region_aborted(job, region)

    def _region_aborted(self, job: JobState, region: frozenset) -> None:
        """Start the restart pause once the region's sinks aborted and its enumerators forgot its
        readers (so no assignment to the old attempts can arrive after the redeployment)."""
        r = job.region_restarts[region]
        if r["phase"] == RegionRestartPhase.ABORTING and not r["pending"] and not r["calls"]:
            r["phase"] = RegionRestartPhase.WAITING
            self._out.append(StartTimer(r["pause"], RestartTimerFired(job.id, region, r["token"])))

    def _on_restart_timer(self, e: RestartTimerFired) -> None:
        job = self.jobs.get(e.job_id)
        if job is None:
            return
        c = job.coordinator
        candidates = tuple(m["path"] for m in reversed(c.completed)) if c is not None else ()
        self._out.append(PlanRestore(job.id, job.topology, candidates, job.restore, e.region, e.token,
                                     job.file_system))

    def _on_restore_planned(self, e: RestorePlanned) -> None:
        job = self.jobs.get(e.job_id)
        if job is None:
            return
        if job.coordinator is not None:
            for path in e.corrupt:
                job.coordinator.discard_completed(path)
        plan = e.plan
        if e.region is None:  # the whole job
            if job.state != J.RESTARTING_WAIT:
                return  # cancelled meanwhile
            self._next_attempt(job, plan, "the job")
            if plan is not None:
                job.restore = plan
            job.slot_deadline = self._now + self.slot_request_timeout_s
            return  # handle() deploys it once enough slots are free
        r = job.region_restarts.get(e.region)
        if job.state != J.RUNNING or r is None or r["token"] != e.token:
            return  # a full restart, a cancellation or the end of the job came first
        del job.region_restarts[e.region]
        self._next_attempt(job, plan, f"region {sorted(e.region)}")
        restored = plan["checkpoint_id"] if plan else 0
        split_vertices = [v for v in job.split_vertices if v in e.region]
        self._reset_enumerators(job, [v for v in split_vertices if job.enum_base.get(v) != restored], plan)
        for v in split_vertices:
            if job.enum_base.get(v) == restored:
                self._add_splits_back(job, v)
        subtasks = [k for k in job.tasks if k[0] in e.region]
        for k in subtasks:
            job.tasks[k] = X.DEPLOYING
            job.task_attempts[k] = job.attempt
            job.metrics.pop(k, None)
        for i, s in enumerate(job.slots):
            mine = [k for k in subtasks if k[1] == i]
            if mine:
                self._send(s, "deploy_tasks", job_id=job.id, subtasks=mine, attempt=job.attempt, restore=plan)

    @staticmethod
    def _next_attempt(job: JobState, plan: dict | None, what: str) -> None:
        """Count a restart and number the attempt about to be deployed."""
        job.attempt += 1
        job.restarts += 1
        log.info("job %s: %s, attempt %d, starts from %s", job.id, what, job.attempt,
                 plan["path"] if plan else "the beginning (no checkpoint yet)")

    # -- checkpoints -----------------------------------------------------------------------------------
    def _trigger(self, job: JobState, savepoint_dir: str | None = None) -> PendingCheckpoint:
        c = job.coordinator
        assert c is not None
        p = c.start(list(job.tasks) + [(v, -1) for v in job.split_vertices], self._now, savepoint_dir)
        if job.split_vertices:  # the enumerators first, with assignments paused (see _on_enumerators_snapshotted)
            p.trigger_ms = int(self._wall * 1000)
            self._out.append(SnapshotEnumerators(job.id, p.id, p.target, tuple(sorted(job.enum_generation.items())),
                                                 job.file_system))
            return p
        self._send_triggers(job, p, int(self._wall * 1000))
        return p

    def _send_triggers(self, job: JobState, p: PendingCheckpoint, timestamp_ms: int) -> None:
        job.trigger_epoch = p.id  # assignments from now on are not in this checkpoint's reader states
        for s in job.slots:
            self._send(s, "trigger_checkpoint", job_id=job.id, checkpoint_id=p.id,
                       timestamp_ms=timestamp_ms, target=p.target, savepoint=p.savepoint)

    def _on_checkpoint_timer(self, e: CheckpointTimerFired) -> None:
        for job in list(self.jobs.values()):
            c = job.coordinator
            if c is None or job.state != J.RUNNING:
                continue
            for p in c.expired(e.now):
                self._abort_checkpoint(job, p.id, f"not complete after {c.timeout_s:.0f} s "
                                                  "(execution.checkpointing.timeout)")
            if c.due(e.now) and not job.stopping and self.all_running(job):
                self._trigger(job)

    def _abort_checkpoint(self, job: JobState, checkpoint_id: int, why: str) -> None:
        assert job.coordinator is not None
        p = job.coordinator.abort(checkpoint_id, self._now)
        if p is None:
            return
        log.warning("job %s: checkpoint %d aborted: %s", job.id, p.id, why)
        self._out.append(CheckpointDone(job.id, p.id, p.target, p.savepoint, error=why))
        self._out.append(RemoveCheckpoint(p.target, "background", job.file_system))

    def _abort_pending_checkpoints(self, job: JobState, why: str) -> None:
        if job.coordinator is not None:
            for cid in list(job.coordinator.pending):
                self._abort_checkpoint(job, cid, why)

    def _on_checkpoint_ack(self, e: CheckpointAcknowledged) -> None:
        job = self.jobs.get(e.job_id)
        if job is None or job.coordinator is None or e.attempt != job.task_attempts.get((e.vertex, e.subtask)):
            return
        c = job.coordinator
        if e.checkpoint_id not in c.pending:
            return
        if e.error is not None:
            self._abort_checkpoint(job, e.checkpoint_id, f"subtask {e.subtask} of vertex {e.vertex} "
                                                         f"declined: {e.error}")
            return
        # finished splits this subtask reported before this ack: the checkpoint also waits for the
        # enumerator's handle_splits_finished calls (see _on_splits_finished)
        calls = {_call_key(n) for n, k in job.enum_calls.items() if k == (e.vertex, e.subtask)}
        if calls:
            c.hold(e.checkpoint_id, calls)
        self._acknowledged(job, e.checkpoint_id, (e.vertex, e.subtask), e.entry, e.attempt)

    def _acknowledged(self, job: JobState, checkpoint_id: int, task: tuple, entry: dict | None,
                      attempt: int) -> None:
        c = job.coordinator
        assert c is not None  # only checkpointing jobs get acknowledgements
        p = c.acknowledge(checkpoint_id, task, entry)
        if p is None:
            return
        p.metadata = c.metadata(p, job.name, attempt, self._now, int(self._wall * 1000))
        self._out.append(WriteCheckpointMetadata(job.id, p.id, p.target, p.metadata, job.file_system))

    def _on_metadata_written(self, e: CheckpointMetadataWritten) -> None:
        job = self.jobs.get(e.job_id)
        c = job.coordinator if job is not None else None
        if job is None or c is None:
            return
        p = c.completing.get(e.checkpoint_id)
        if p is None:
            return
        if e.error is not None:
            self._abort_checkpoint(job, p.id, f"cannot write its metadata: {e.error}")
            return
        meta = dict(p.metadata or {})
        meta["path"] = p.target
        drop = c.complete(p.id, meta, self._now)
        if job.state in (J.RUNNING, J.CANCELLING):
            for s in job.slots:
                self._send(s, "notify_checkpoint_complete", job_id=job.id, checkpoint_id=p.id)
            for v, gen in job.enum_generation.items():
                self._out.append(EnumeratorCall(job.id, v, gen, "notify_checkpoint_complete", p.id))
            self._checkpoint_covers_assignments(job, p.id)
        self._out.append(CheckpointDone(job.id, p.id, p.target, p.savepoint))
        log.info("job %s: %s %d complete (%d bytes, %d ms) at %s", job.id, meta["kind"], p.id,
                 meta["size_bytes"], meta["duration_ms"], p.target)
        for d in drop:
            self._out.append(RemoveCheckpoint(d, "now", job.file_system))

    # -- split enumerators (SplitSource, Flink's source coordinators) ------------------------------------
    def _reset_enumerators(self, job: JobState, vertices: list, restore: dict | None) -> None:
        """The enumerators of ``vertices`` start over for attempt ``job.attempt``, from ``restore``."""
        if not vertices:
            return
        for v in vertices:
            job.enum_generation[v] = job.attempt
            job.enum_base[v] = restore["checkpoint_id"] if restore else 0
        job.readers = {k for k in job.readers if k[0] not in vertices}
        job.split_requests = {k for k in job.split_requests if k[0] not in vertices}
        job.assigned = {k: a for k, a in job.assigned.items() if k[0] not in vertices}
        job.enum_calls = {n: k for n, k in job.enum_calls.items() if k[0] not in vertices}  # stale: skipped
        self._out.append(ResetEnumerators(job.id, job.attempt, tuple((v, job.split_vertices[v]) for v in vertices),
                                          job.job_bytes, restore, job.file_system))

    def _reader_job(self, e: ReaderRegistered | SplitsFinished | SplitRequested) -> JobState | None:
        """The running job of a split reader's message, if it comes from the current attempt of a
        SplitSource's subtask that is not done (else ``None``: a stale message, dropped)."""
        job = self.jobs.get(e.job_id)
        key = (e.vertex, e.subtask)
        if (job is None or job.state != J.RUNNING or e.vertex not in job.split_vertices
                or e.attempt != job.task_attempts.get(key) or job.tasks.get(key) in TASK_TERMINAL):
            return None
        return job

    def _on_reader_registered(self, e: ReaderRegistered) -> None:
        job = self._reader_job(e)
        if job is None:
            return
        key = (e.vertex, e.subtask)
        job.readers.add(key)
        gen = job.enum_generation[e.vertex]
        self._out.append(EnumeratorCall(job.id, e.vertex, gen, "add_reader", e.subtask))
        if key in job.split_requests:  # it asked before it registered (e.g. in its start())
            job.split_requests.discard(key)
            self._out.append(EnumeratorCall(job.id, e.vertex, gen, "handle_split_request", e.subtask))

    def _on_split_requested(self, e: SplitRequested) -> None:
        """Call the enumerator's ``handle_split_request`` (Flink's ``sendSplitRequest``).

        A request of the current attempt that arrives before its reader registered is kept and
        made right after ``add_reader``, so the enumerator can always answer with an assignment
        to the asking subtask; a request of an earlier attempt is dropped (that reader is gone;
        the restarted one asks again). The splits the enumerator assigns in answer travel as every
        assignment does (:meth:`_on_splits_assigned`).
        """
        job = self._reader_job(e)
        if job is None:
            return
        key = (e.vertex, e.subtask)
        if key not in job.readers:
            job.split_requests.add(key)
            return
        self._out.append(EnumeratorCall(job.id, e.vertex, job.enum_generation[e.vertex], "handle_split_request",
                                        e.subtask))

    def _on_splits_finished(self, e: SplitsFinished) -> None:
        """Call the enumerator's ``handle_splits_finished``; hold checkpoints until it returned.

        The contract (:meth:`~emrflow.connectors.splits.SplitEnumerator.handle_splits_finished`):
        the call has returned before any checkpoint whose snapshot of the subtask was taken after
        the poll *completes*. The slot sends the report before the acknowledgement of any such
        snapshot, on the same connection, so when that acknowledgement arrives the call is in
        :attr:`JobState.enum_calls`; :meth:`_on_checkpoint_ack` then makes the checkpoint also
        wait for it, and :class:`EnumeratorCallDone` releases it. The call itself runs queued on
        the enumerator's thread (never under the JobManager's lock), in report order; a call
        that never returns leaves the checkpoint to its timeout. Reports of another attempt are
        dropped: the reader's restored state reports its finished splits again.
        """
        job = self._reader_job(e)
        if job is None or not e.split_ids:
            return
        gen = job.enum_generation[e.vertex]
        call_id = self._token()
        job.enum_calls[call_id] = (e.vertex, e.subtask)
        self._out.append(EnumeratorCall(job.id, e.vertex, gen, "handle_splits_finished",
                                        (e.subtask, tuple(e.split_ids)), call_id))

    def _on_enumerator_call_done(self, e: EnumeratorCallDone) -> None:
        job = self.jobs.get(e.job_id)
        if job is None:
            return
        job.enum_calls.pop(e.call_id, None)
        key = _call_key(e.call_id)
        for region, r in list(job.region_restarts.items()):
            if key in r["calls"]:
                r["calls"].discard(key)
                self._region_aborted(job, region)
        c = job.coordinator
        if c is None:
            return
        for cid in [cid for cid, p in c.pending.items() if key in p.waiting]:
            self._acknowledged(job, cid, key, None, job.attempt)

    def _on_splits_assigned(self, e: SplitsAssigned) -> None:
        """Send an enumerator's assignment to the subtasks' slots, and remember it (per subtask,
        tagged with the last checkpoint triggered before it) until a completed checkpoint covers it.

        Assignments of an enumerator that was reset since are dropped (the restored one assigns
        those splits again). Splits for a subtask whose region is restarting, or whose task is
        failing, are not sent: they come back with ``add_splits_back`` when it is redeployed.
        """
        job = self.jobs.get(e.job_id)
        if job is None or job.state != J.RUNNING or job.enum_generation.get(e.vertex) != e.generation:
            return  # a failover is under way: the restored enumerator assigns them again
        for subtask, payload in e.splits.items():
            job.assigned.setdefault((e.vertex, subtask), []).append((job.trigger_epoch, payload))
        if any(e.vertex in region for region in job.region_restarts):
            return
        for subtask in sorted(set(e.splits) | set(e.no_more)):
            key = (e.vertex, subtask)
            state = job.tasks.get(key)
            if state is None or state in (X.FAILED, X.CANCELED, X.CANCELING):
                continue
            if key not in job.readers:
                if subtask in e.splits:
                    self._fail(job, _failure(
                        f"the split enumerator of {self._vertex_name(job, e.vertex)!r} assigned splits to "
                        f"subtask {subtask}, whose reader is not registered (ctx.registered_readers())"), e.vertex)
                    return
                continue  # "no more splits" for a reader that registers later: add_reader tells it again
            self._send(job.slots[subtask], "add_splits", job_id=job.id, vertex=e.vertex, subtask=subtask,
                       attempt=job.task_attempts[key], splits=e.splits.get(subtask),
                       no_more=subtask in e.no_more)

    def _add_splits_back(self, job: JobState, vertex: int) -> None:
        """The region of ``vertex`` restarts from the checkpoint its enumerator's assignments are
        tracked from (``job.enum_base``): give the enumerator back, per subtask, the splits it
        assigned after that checkpoint's triggers (Flink's ``subtaskReset``); the restored readers
        get the splits assigned before, from their checkpointed states."""
        gen = job.enum_generation[vertex]
        for key in sorted(k for k in job.assigned if k[0] == vertex):
            blobs = tuple(b for _epoch, b in job.assigned.pop(key))
            self._out.append(EnumeratorCall(job.id, vertex, gen, "add_splits_back", (key[1], blobs)))

    @staticmethod
    def _checkpoint_covers_assignments(job: JobState, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed: the assignments made before its triggers are in
        its reader states (or were finished): forget them."""
        for v in job.split_vertices:
            if job.enum_base.get(v) is not None:
                job.enum_base[v] = checkpoint_id
        for key in list(job.assigned):
            kept = [(epoch, b) for epoch, b in job.assigned[key] if epoch >= checkpoint_id]
            if kept:
                job.assigned[key] = kept
            else:
                del job.assigned[key]

    @staticmethod
    def _vertex_name(job: JobState, vertex: int) -> str:
        return next((v["name"] for v in job.topology["vertices"] if v["id"] == vertex), str(vertex))

    def _on_enumerators_snapshotted(self, e: EnumeratorsSnapshotted) -> None:
        job = self.jobs.get(e.job_id)
        c = job.coordinator if job is not None else None
        if job is None or c is None or e.checkpoint_id not in c.pending:
            return
        if e.error is not None:
            self._abort_checkpoint(job, e.checkpoint_id, f"the split enumerators' snapshot failed: {e.error}")
            return
        p = c.pending[e.checkpoint_id]
        self._send_triggers(job, p, p.trigger_ms)

    def _on_enumerator_state_written(self, e: EnumeratorStateWritten) -> None:
        job = self.jobs.get(e.job_id)
        if job is None or job.coordinator is None or e.checkpoint_id not in job.coordinator.pending:
            return
        if e.error is not None:
            self._abort_checkpoint(job, e.checkpoint_id, f"the state of the split enumerator of "
                                                         f"{self._vertex_name(job, e.vertex)!r}: {e.error}")
            return
        self._acknowledged(job, e.checkpoint_id, (e.vertex, -1), e.entry, job.attempt)

    def _on_enumerator_failed(self, e: EnumeratorFailed) -> None:
        job = self.jobs.get(e.job_id)
        if job is None or job.state != J.RUNNING or job.enum_generation.get(e.vertex) != e.generation:
            return
        job.enum_base[e.vertex] = None  # its state is suspect: the restart resets it from the checkpoint
        self._fail(job, _failure(f"the split enumerator of {self._vertex_name(job, e.vertex)!r} failed: "
                                 f"{e.message}", operator=self._vertex_name(job, e.vertex),
                                 traceback=e.traceback), e.vertex)
