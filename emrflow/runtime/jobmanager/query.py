"""A read-only view of the JobManager for REST, metrics and the YARN resource manager.

:class:`JobManagerQuery` takes the JobManager's lock for the time of one copy and returns plain
snapshots (frozen dataclasses, copied dicts), so readers never hold the lock while they format
their answer and never see a job half-way through an event. The snapshots' attribute names are
those of the state they copy (``job.tasks``, ``job.metrics``, ``slot.data_address``...).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from emrflow.runtime.jobmanager.errors import JobNotFound
from emrflow.runtime.jobmanager.machine import JobManagerStateMachine, JobState, TaskManagerInfo
from emrflow.runtime.jobmanager.states import TERMINAL, ExecutionState, JobStatus


@dataclass(frozen=True)
class SlotView:
    """One task slot."""

    id: str
    taskmanager_id: str
    index: int
    data_address: tuple
    job_id: str | None


@dataclass(frozen=True)
class CheckpointStats:
    """A STREAMING job's checkpoint counts and retained checkpoints (metadata dicts)."""

    completed: int
    failed: int
    in_progress: int
    latest: dict | None
    latest_savepoint: dict | None
    directory: str


@dataclass(frozen=True)
class JobView:
    """One job (wall times in epoch seconds; ``state`` is the internal :class:`JobStatus`)."""

    id: str
    name: str
    state: JobStatus
    topology: dict
    submitted: float
    start: float | None
    end: float | None
    failure: dict | None
    failure_time: float | None
    restarts: int
    tasks: dict
    metrics: dict
    rates: dict
    slots: tuple[SlotView, ...]
    checkpoints: CheckpointStats | None

    @property
    def need(self) -> int:
        """Slots the job needs (its largest parallelism)."""
        return max(v["parallelism"] for v in self.topology["vertices"])


@dataclass(frozen=True)
class TaskManagerView:
    """One TaskManager (``last_heartbeat``: monotonic seconds) and its slots."""

    id: str
    slots: int
    host: str
    pid: int
    last_heartbeat: float
    rss_bytes: int
    cpu_percent: float
    slot_views: tuple[SlotView, ...]


@dataclass(frozen=True)
class ClusterOverview:
    """TaskManagers, slots and the state of every job."""

    taskmanagers: int
    slots_total: int
    slots_available: int
    job_states: tuple[JobStatus, ...]

    @property
    def jobs_running(self) -> int:
        """Jobs not yet ended."""
        return sum(1 for s in self.job_states if s not in TERMINAL)


@dataclass(frozen=True)
class ResourceDemand:
    """What the resource manager scales on: slots wanted by jobs waiting for their deployment
    (submitted or restarting), slots in use, TaskManagers registered."""

    slots_waiting: int
    slots_busy: int
    taskmanagers: int


def _slot(s) -> SlotView:
    return SlotView(s.id, s.taskmanager_id, s.index, tuple(s.data_address), s.job_id)


def job_view(job: JobState) -> JobView:
    """A snapshot of one job (call with the JobManager's lock held)."""
    c = job.coordinator
    stats = None if c is None else CheckpointStats(
        c.stats["completed"], c.stats["failed"], len(c.pending), c.latest(), c.latest_savepoint(), c.job_dir)
    return JobView(job.id, job.name, job.state, job.topology, job.submitted, job.start, job.end,
                   job.failure, job.failure_time, job.restarts, dict(job.tasks), dict(job.metrics),
                   dict(job.rates), tuple(_slot(s) for s in job.slots), stats)


def describe(job: JobView, now: float, details: bool = True) -> dict:
    """A job's status as the RPC ``job_status`` and ``list_jobs`` replies carry it.

    Args:
        job: the job.
        now: the current epoch time, seconds.
        details: also per-vertex states and operator counters.
    """
    duration = ((job.end or now) - (job.start or job.submitted)) * 1000
    out: dict[str, Any] = {"job_id": job.id, "name": job.name, "state": job.state.public.value,
                           "start_time": job.start, "end_time": job.end,
                           "duration_ms": int(duration), "failure": job.failure,
                           "restarts": job.restarts}
    c = job.checkpoints
    if c is not None:
        latest = c.latest
        out["checkpoints"] = {"completed": c.completed, "failed": c.failed,
                              "in_progress": c.in_progress,
                              "latest": None if latest is None else {k: latest[k] for k in (
                                  "checkpoint_id", "kind", "timestamp_ms", "duration_ms", "size_bytes",
                                  "path")},
                              "latest_path": latest["path"] if latest else None,
                              "directory": c.directory}
    if not details:
        return out
    ops: dict[int, list[int]] = {}
    bad, samples = 0, []
    busy: dict[int, float] = {}
    late: dict[int, int] = {}
    for (v, _i), m in job.metrics.items():
        for op_id, n in m.get("late", {}).items():
            late[int(op_id)] = late.get(int(op_id), 0) + n
        for op_id, (rin, rout) in m.get("operators", {}).items():
            acc = ops.setdefault(int(op_id), [0, 0])
            acc[0] += rin
            acc[1] += rout
        bad += m.get("bad_records", 0)
        samples.extend(m.get("bad_record_samples", []))
        busy[v] = busy.get(v, 0.0) + m.get("busy_s", 0.0)
    vertices = []
    for v in job.topology["vertices"]:
        states = [str(job.tasks.get((v["id"], i), ExecutionState.CREATED)) for i in range(v["parallelism"])]
        operators = [{"id": o["id"], "name": o["name"], "uid": o["uid"],
                      "records_in": ops.get(o["id"], [0, 0])[0],
                      "records_out": ops.get(o["id"], [0, 0])[1],
                      "late_records_dropped": late.get(o["id"], 0)} for o in v["operators"]]
        vertices.append({"id": v["id"], "name": v["name"], "parallelism": v["parallelism"],
                         # the chain starts with a source (whatever the user named it)
                         "is_source": bool(v["operators"]) and v["operators"][0].get("kind") == "source",
                         "subtask_states": states, "operators": operators,
                         "busy_s": busy.get(v["id"], 0.0)})
    out.update(vertices=vertices, bad_records=bad, bad_record_samples=samples,
               late_records_dropped=sum(late.values()))
    return out


class JobManagerQuery:
    """Read-only snapshots of a JobManager's state.

    Args:
        machine: the JobManager's state machine.
        lock: the lock its shell holds while the machine handles an event.
    """

    def __init__(self, machine: JobManagerStateMachine, lock: threading.Condition):
        self._m = machine
        self._lock = lock

    def overview(self) -> ClusterOverview:
        """TaskManager and slot counts, and every job's state."""
        with self._lock:
            m = self._m
            return ClusterOverview(len(m.taskmanagers), len(m.slots),
                                   sum(1 for s in m.slots.values() if s.job_id is None),
                                   tuple(j.state for j in m.jobs.values()))

    def jobs(self) -> list[JobView]:
        """Every job, in submission order."""
        with self._lock:
            return [job_view(j) for j in self._m.jobs.values()]

    def job(self, job_id: str) -> JobView:
        """One job.

        Raises:
            JobNotFound: no job with that id.
        """
        with self._lock:
            return job_view(self._m.job(job_id))

    def find_job(self, job_id: str) -> JobView | None:
        """One job, or ``None``."""
        try:
            return self.job(job_id)
        except JobNotFound:
            return None

    def taskmanagers(self) -> list[TaskManagerView]:
        """Every registered TaskManager."""
        with self._lock:
            return [self._tm(tm) for tm in self._m.taskmanagers.values()]

    def taskmanager(self, tm_id: str) -> TaskManagerView | None:
        """One TaskManager, or ``None``."""
        with self._lock:
            tm = self._m.taskmanagers.get(tm_id)
            return None if tm is None else self._tm(tm)

    def _tm(self, tm: TaskManagerInfo) -> TaskManagerView:
        slots = tuple(_slot(s) for s in self._m.slots.values() if s.taskmanager_id == tm.id)
        return TaskManagerView(tm.id, tm.slots, tm.host, tm.pid, tm.last_heartbeat, tm.rss_bytes,
                               tm.cpu_percent, slots)

    def resource_demand(self) -> ResourceDemand:
        """Slots wanted by jobs waiting for a deployment, slots busy, TaskManagers registered."""
        with self._lock:
            m = self._m
            waiting = sum(j.need for j in m.jobs.values()
                          if j.state in (JobStatus.CREATED, JobStatus.RESTARTING_WAIT))
            return ResourceDemand(waiting, sum(1 for s in m.slots.values() if s.job_id is not None),
                                  len(m.taskmanagers))
