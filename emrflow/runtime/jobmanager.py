"""The JobManager process: dispatcher, scheduler and job coordinator of one cluster.

* TaskManagers register and send heartbeats; one that is silent for longer than
  ``heartbeat.timeout`` (or whose connection drops) is lost, and so are the jobs
  running in its slots.
* Slot processes register the slots they offer.
* Clients submit jobs (a topology plus the cloudpickled JobGraph, which the
  JobManager forwards unopened), ask for their status, cancel them.
* Scheduling uses slot sharing: a job needs as many slots as its largest
  parallelism; slot ``i`` runs subtask ``i`` of every vertex.
* When every subtask has finished, the sinks' commits run (phase two of the
  two-phase commit); when one fails or the job is cancelled, the others are
  cancelled and the sinks abort, so no partial output looks complete.

The job state machine (:class:`JobState`) mirrors Flink's ``JobStatus``:
CREATED -> RUNNING -> FINISHED | FAILING -> FAILED | CANCELLING -> CANCELED.
Messages are dispatched through one table per peer role (``handlers``).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from emrflow import fs
from emrflow.runtime import checkpoint as chk
from emrflow.runtime import rpc
from emrflow.runtime.process import die_with_parent, setup_logging
from emrflow.runtime.restart import RestartStrategy

log = logging.getLogger("emrflow.jobmanager")

TERMINAL = ("FINISHED", "FAILED", "CANCELED")


@dataclass
class SlotInfo:
    """A registered task slot."""

    taskmanager_id: str
    index: int
    data_address: tuple[str, int]
    conn: rpc.Connection
    job_id: str | None = None

    @property
    def id(self) -> str:
        return f"{self.taskmanager_id}/{self.index}"


@dataclass
class TaskManagerInfo:
    """A registered TaskManager."""

    id: str
    slots: int
    host: str
    conn: rpc.Connection
    pid: int
    registered: float = field(default_factory=time.time)
    last_heartbeat: float = field(default_factory=time.monotonic)
    rss_bytes: int = 0
    cpu_percent: float = 0.0
    data_host: str = "127.0.0.1"


@dataclass
class JobState:
    """What the JobManager knows of one job."""

    id: str
    name: str
    topology: dict
    job_bytes: bytes
    state: str = "CREATED"
    submitted: float = field(default_factory=time.time)
    start: float | None = None
    end: float | None = None
    slots: list[SlotInfo] = field(default_factory=list)
    tasks: dict[tuple[int, int], str] = field(default_factory=dict)
    metrics: dict[tuple[int, int], dict] = field(default_factory=dict)
    failure: dict | None = None
    failure_time: float | None = None
    rates: dict[tuple[int, int], dict] = field(default_factory=dict)
    metric_times: dict[tuple[int, int], float] = field(default_factory=dict)
    pending_acks: set[str] = field(default_factory=set)
    finish_errors: list[str] = field(default_factory=list)
    attempt: int = 0
    restore: dict | None = None          # restore plan of the next deployment
    restart: RestartStrategy | None = None
    restarts: int = 0
    coordinator: "CheckpointCoordinator | None" = None
    stop_savepoint: str | None = None    # stop-with-savepoint: ends FINISHED
    restart_pause: float = 0.0           # seconds before the pending restart
    deploy_attempt: int = 0              # attempt of the last deployment of the whole job
    task_attempts: dict = field(default_factory=dict)  # (vertex, subtask) -> attempt it runs
    regions: list = field(default_factory=list)        # pipelined regions (frozensets of vertex ids)
    region_restarts: dict = field(default_factory=dict)  # region -> {"phase", "pause", "pending"}
    region_failover: bool = True         # jobmanager.execution.failover-strategy is region


@dataclass
class PendingCheckpoint:
    """A checkpoint triggered and not yet complete (Flink's ``PendingCheckpoint``)."""

    id: int
    target: str
    savepoint: bool
    started: float
    waiting: set
    entries: list = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class CheckpointCoordinator:
    """Triggers checkpoints of one job, collects acknowledgements, completes them (Flink's).

    A checkpoint completes when every subtask acknowledged it; then its
    ``_metadata`` is written (last, so an incomplete checkpoint is never used),
    sinks are told (the second phase of their commit), and checkpoints beyond
    ``state.checkpoints.num-retained`` are deleted.
    """

    def __init__(self, job_id: str, config: dict):
        self.job_id = job_id
        self.interval_s = int(config.get("execution.checkpointing.interval") or 0) / 1000.0
        self.timeout_s = int(config.get("execution.checkpointing.timeout") or 600_000) / 1000.0
        self.max_concurrent = int(config.get("execution.checkpointing.max-concurrent-checkpoints") or 1)
        self.min_pause_s = int(config.get("execution.checkpointing.min-pause") or 0) / 1000.0
        self.retained = int(config.get("state.checkpoints.num-retained") or 1)
        self.retention = config.get("execution.checkpointing.externalized-checkpoint-retention",
                                    "NO_EXTERNALIZED_CHECKPOINTS")
        base = config.get("state.checkpoints.dir") or os.path.join(tempfile.gettempdir(),
                                                                   "emrflow-checkpoints")
        self.savepoint_dir = config.get("state.savepoints.dir")
        self.job_dir = fs.join(base, job_id)
        self.next_id = 1
        self.pending: dict[int, PendingCheckpoint] = {}
        self.completed: list[dict] = []   # metadata of retained checkpoints, oldest first
        self.last_end = 0.0
        self.last_trigger = time.monotonic()
        self.stats = {"completed": 0, "failed": 0}

    def due(self, now: float) -> bool:
        """True if a periodic checkpoint should be triggered now."""
        periodic = [p for p in self.pending.values() if not p.savepoint]
        return (self.interval_s > 0 and len(periodic) < self.max_concurrent
                and now - self.last_trigger >= self.interval_s and now - self.last_end >= self.min_pause_s)

    def start(self, tasks: list, savepoint_dir: str | None = None) -> PendingCheckpoint:
        """Create a pending checkpoint (or savepoint into ``savepoint_dir``) waiting for ``tasks``."""
        cid = self.next_id
        self.next_id += 1
        if savepoint_dir is not None:
            target = fs.join(savepoint_dir, f"savepoint-{self.job_id[:6]}-{secrets.token_hex(6)}")
        else:
            target = fs.join(self.job_dir, f"chk-{cid}")
        p = PendingCheckpoint(cid, target, savepoint_dir is not None, time.monotonic(), set(tasks))
        self.pending[cid] = p
        if savepoint_dir is None:
            self.last_trigger = p.started
        return p

    def latest(self) -> dict | None:
        """Metadata of the newest completed checkpoint or savepoint, or ``None``."""
        return self.completed[-1] if self.completed else None



class JobManager:
    """Coordinates one cluster; all state is guarded by one condition variable.

    Args:
        listener: a bound, listening TCP socket for RPC.
        secret: the cluster secret every peer must present.
        heartbeat_timeout_ms: a TaskManager silent for longer is lost.
        slot_request_timeout_ms: how long a job waits for enough free slots.
    """

    def __init__(self, listener: socket.socket, secret: str, heartbeat_timeout_ms: int = 50_000,
                 slot_request_timeout_ms: int = 30_000):
        self.listener = listener
        self.secret = secret
        self.heartbeat_timeout_s = heartbeat_timeout_ms / 1000.0
        self.slot_request_timeout_s = slot_request_timeout_ms / 1000.0
        self.cond = threading.Condition()
        self.taskmanagers: dict[str, TaskManagerInfo] = {}
        self.slots: dict[str, SlotInfo] = {}
        self.jobs: dict[str, JobState] = {}
        self.stopping = threading.Event()
        #: the cluster's state.savepoints.dir, used when neither the request nor the job gives one
        self.savepoint_dir: str | None = None
        self._cleanups: list[threading.Thread] = []  # checkpoint deletions shutdown() waits for
        self.client_handlers = {
            "submit": self.submit,
            "job_status": self.job_status,
            "list_jobs": self.list_jobs,
            "cancel": self.cancel,
            "cluster_status": self.cluster_status,
            "shutdown": self.shutdown,
        }
        self.slot_handlers = {
            "task_state": self._on_task_state,
            "metrics": self._on_metrics,
            "finished_ack": self._on_finished_ack,
            "checkpoint_ack": self._on_checkpoint_ack,
            "tasks_aborted": self._on_tasks_aborted,
        }
        self.client_handlers.update(savepoint=self.savepoint, stop=self.stop)

    # -- network shell -------------------------------------------------------------
    def serve(self) -> None:
        """Accept connections until :meth:`shutdown`."""
        threading.Thread(target=self._watch_heartbeats, daemon=True, name="heartbeats").start()
        threading.Thread(target=self._trigger_checkpoints, daemon=True, name="checkpoints").start()
        self.listener.settimeout(0.5)
        while not self.stopping.is_set():
            try:
                sock, addr = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            sock.settimeout(None)
            threading.Thread(target=self._serve_peer, args=(sock, addr), daemon=True,
                             name=f"peer-{addr[0]}:{addr[1]}").start()
        self.listener.close()

    def _serve_peer(self, sock: socket.socket, addr) -> None:
        conn = rpc.Connection(sock, f"{addr[0]}:{addr[1]}")
        hello = rpc.check_hello(conn, self.secret)
        if hello is None:
            log.warning("rejected a connection from %s:%s (bad or missing hello)", *addr[:2])
            return
        role = hello.get("role")
        try:
            if role == "taskmanager":
                self._serve_taskmanager(conn, hello)
            elif role == "slot":
                self._serve_slot(conn, hello)
            elif role == "client":
                self._serve_client(conn)
            else:
                conn.close()
        except rpc.ConnectionClosed:
            pass
        finally:
            conn.close()

    def _serve_taskmanager(self, conn: rpc.Connection, hello: dict) -> None:
        tm = TaskManagerInfo(id=str(hello["taskmanager_id"]), slots=int(hello["slots"]),
                             host=str(hello.get("host", "?")), conn=conn, pid=int(hello.get("pid", 0)),
                             data_host=str(hello.get("data_host", "127.0.0.1")))
        with self.cond:
            self.taskmanagers[tm.id] = tm
            self.cond.notify_all()
        log.info("TaskManager %s registered with %d slots", tm.id, tm.slots)
        try:
            while True:
                msg_type, body = conn.recv()
                if msg_type == "heartbeat":
                    with self.cond:
                        tm.last_heartbeat = time.monotonic()
                        tm.rss_bytes = int(body.get("rss_bytes", 0))
                        tm.cpu_percent = float(body.get("cpu_percent", 0.0))
        finally:
            self._taskmanager_lost(tm.id, "its connection closed")

    def _serve_slot(self, conn: rpc.Connection, hello: dict) -> None:
        slot = SlotInfo(taskmanager_id=str(hello["taskmanager_id"]), index=int(hello["slot_index"]),
                        data_address=tuple(hello["data_address"]), conn=conn)
        with self.cond:
            self.slots[slot.id] = slot
            self.cond.notify_all()
        try:
            while True:
                msg_type, body = conn.recv()
                handler = self.slot_handlers.get(msg_type)
                if handler is not None:
                    handler(slot, **body)
        finally:
            self._slot_lost(slot.id, f"slot {slot.id} disconnected")

    def _serve_client(self, conn: rpc.Connection) -> None:
        while True:
            msg_type, body = conn.recv()
            handler = self.client_handlers.get(msg_type)
            if handler is None:
                conn.send("error", message=f"unknown request {msg_type!r}")
                continue
            try:
                reply = handler(**body)
            except (TypeError, KeyError, ValueError) as exc:
                conn.send("error", message=f"bad {msg_type} request: {exc}")
                continue
            if isinstance(reply, str):
                conn.send("error", message=reply)
            else:
                conn.send("ok", **reply)

    def _watch_heartbeats(self) -> None:
        while not self.stopping.wait(1.0):
            now = time.monotonic()
            with self.cond:
                silent = [tm for tm in self.taskmanagers.values()
                          if now - tm.last_heartbeat > self.heartbeat_timeout_s]
            for tm in silent:
                self._taskmanager_lost(
                    tm.id, f"no heartbeat for {int((now - tm.last_heartbeat) * 1000)} ms "
                           f"(heartbeat.timeout {int(self.heartbeat_timeout_s * 1000)} ms)")
                tm.conn.close()

    # -- client requests -------------------------------------------------------
    def submit(self, topology: dict, job_bytes: bytes) -> dict | str:
        """Accept a job, wait for enough free slots, deploy it; returns ``{"job_id"}``."""
        job = JobState(id=topology["job_id"], name=topology["name"], topology=topology,
                       job_bytes=job_bytes)
        config = topology.get("config", {})
        fs.configure(config)
        job.restart = RestartStrategy(config)
        job.restore = topology.get("restore")
        from emrflow.graph.jobgraph import pipelined_regions
        job.regions = [frozenset(r) for r in pipelined_regions(
            [v["id"] for v in topology["vertices"]], [(e["source"], e["target"]) for e in topology["edges"]])]
        job.region_failover = config.get("jobmanager.execution.failover-strategy", "region") == "region"
        if topology.get("checkpointing"):
            job.coordinator = CheckpointCoordinator(job.id, config)
            if job.restore:  # continue the numbering of the checkpoint restored from
                job.coordinator.next_id = int(job.restore["checkpoint_id"]) + 1
        with self.cond:
            if job.id in self.jobs:
                return f"job {job.id} was already submitted"
            self.jobs[job.id] = job
            self._deploy(job)
        return {"job_id": job.id}

    def _deploy(self, job: JobState) -> None:
        """Wait (releasing the lock) for enough free slots, then deploy attempt ``job.attempt``.

        Called with ``self.cond`` held; on a slot timeout the job fails.
        """
        topology = job.topology
        need = max(v["parallelism"] for v in topology["vertices"])
        deadline = time.monotonic() + self.slot_request_timeout_s
        while True:
            if job.state in TERMINAL or job.state in ("CANCELLING", "CANCELED_ABORTING"):
                return
            free = [s for s in self.slots.values() if s.job_id is None]
            if len(free) >= need:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                total = len(self.slots)
                self._set_terminal(job, "FAILED", failure={
                    "message": f"not enough task slots: the job needs {need} (its largest "
                               f"parallelism), the cluster has {len(free)} free of {total}; "
                               "add TaskManagers or lower the parallelism",
                    "operator": None, "subtask_index": None, "parallelism": None,
                    "traceback": ""})
                return
            self.cond.wait(min(left, 0.5))
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
                job.tasks[(v["id"], i)] = "DEPLOYING"
                job.task_attempts[(v["id"], i)] = job.attempt
        job.state = "RUNNING"
        if job.start is None:
            job.start = time.time()
        if job.coordinator is not None:
            job.coordinator.last_trigger = time.monotonic()
        self.cond.notify_all()
        addresses = {i: list(s.data_address) for i, s in enumerate(job.slots)}
        for i, s in enumerate(job.slots):
            subtasks = [(v["id"], i) for v in topology["vertices"] if v["parallelism"] > i]
            try:
                s.conn.send("deploy", job_id=job.id, job_bytes=job.job_bytes, subtasks=subtasks,
                            attempt=job.attempt, slot_addresses=addresses, restore=job.restore)
            except rpc.ConnectionClosed:
                threading.Thread(target=self._slot_lost, daemon=True,
                                 args=(s.id, f"slot {s.id} disconnected during deployment")).start()

    def job_status(self, job_id: str, wait_s: float = 0.0) -> dict | str:
        """Return a job's status; with ``wait_s`` > 0 return early only if it ends."""
        deadline = time.monotonic() + min(float(wait_s), 30.0)
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                return f"no job with id {job_id}"
            while job.state not in TERMINAL:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return self._describe(job)

    def list_jobs(self) -> dict:
        """Return ``{"jobs": [status...]}`` for every job, newest first."""
        with self.cond:
            jobs = sorted(self.jobs.values(), key=lambda j: j.submitted, reverse=True)
            return {"jobs": [self._describe(j, details=False) for j in jobs]}

    def cancel(self, job_id: str) -> dict | str:
        """Cancel a running job (its sinks abort)."""
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                return f"no job with id {job_id}"
            if job.state in TERMINAL:
                return {"state": job.state}
            if job.state == "RESTARTING_WAIT":
                self._set_terminal(job, "CANCELED")
            elif job.state in ("RUNNING", "RESTARTING"):
                job.state = "CANCELLING"
                self._cancel_tasks(job)
            elif job.state == "RESTARTING_ABORTING":
                job.state = "CANCELED_ABORTING"
            return {"state": self._public_state(job)}

    def savepoint(self, job_id: str, directory: str | None = None, timeout_s: float = 600.0) -> dict | str:
        """Take a savepoint of a running job; returns ``{"path"}`` once it is complete (Flink's).

        Args:
            job_id: the job.
            directory: where the ``savepoint-<job>-<id>`` directory goes; default
                ``state.savepoints.dir``.
            timeout_s: how long to wait for completion, in seconds.
        """
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                return f"no job with id {job_id}"
            if job.coordinator is None:
                return (f"job {job_id} runs in BATCH mode: savepoints are for STREAMING jobs "
                        "(Flink takes no savepoints of batch jobs)")
            deadline = time.monotonic() + 10.0  # a job just deployed or restarted: let its tasks start
            while job.state not in TERMINAL and time.monotonic() < deadline and not self._all_running(job):
                self.cond.wait(0.1)
            if not self._all_running(job):
                return f"job {job_id} is {self._public_state(job)}, not running with all its tasks: try again"
            directory = directory or job.coordinator.savepoint_dir or self.savepoint_dir
            if not directory:
                return "no savepoint directory: give one, or set state.savepoints.dir"
            p = self._trigger(job, directory)
        if not p.done.wait(timeout_s):
            return f"savepoint {p.target} did not complete within {timeout_s:.0f} s"
        if p.error:
            return f"savepoint failed: {p.error}"
        return {"path": p.target, "checkpoint_id": p.id}

    def stop(self, job_id: str, directory: str | None = None, timeout_s: float = 600.0) -> dict | str:
        """Stop a job with a final savepoint (Flink's stop-with-savepoint); the job ends FINISHED."""
        reply = self.savepoint(job_id, directory, timeout_s)
        if isinstance(reply, str):
            return reply
        with self.cond:
            job = self.jobs[job_id]
            job.stop_savepoint = reply["path"]
            if job.state == "RUNNING":
                job.state = "CANCELLING"
                self._cancel_tasks(job)
        return reply

    def cluster_status(self) -> dict:
        """Return TaskManagers and slot counts."""
        with self.cond:
            return {
                "taskmanagers": [{"id": tm.id, "slots": tm.slots, "host": tm.host, "pid": tm.pid,
                                  "rss_bytes": tm.rss_bytes, "cpu_percent": tm.cpu_percent}
                                 for tm in self.taskmanagers.values()],
                "slots_total": len(self.slots),
                "slots_free": sum(1 for s in self.slots.values() if s.job_id is None),
                "jobs_running": sum(1 for j in self.jobs.values() if j.state not in TERMINAL),
            }

    def shutdown(self) -> dict:
        """Stop TaskManagers and slots, then this process (after deleting finished jobs' checkpoints)."""
        deadline = time.monotonic() + 30
        for t in list(self._cleanups):
            t.join(max(0.0, deadline - time.monotonic()))
        self.stopping.set()
        with self.cond:
            peers = [tm.conn for tm in self.taskmanagers.values()] + [s.conn for s in self.slots.values()]
        for c in peers:
            try:
                c.send("shutdown")
            except rpc.ConnectionClosed:
                pass
        try:  # wake the accept loop now rather than at its next timeout
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return {"stopping": True}

    # -- slot messages -------------------------------------------------------------
    def _on_task_state(self, slot: SlotInfo, job_id: str, vertex: int, subtask: int, state: str,
                       metrics: dict, failure: dict | None = None, attempt: int = 0) -> None:
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None or job.state in TERMINAL or attempt != job.task_attempts.get((vertex, subtask)):
                return
            job.tasks[(vertex, subtask)] = state
            if metrics:
                job.metrics[(vertex, subtask)] = metrics
            if state == "FAILED":
                self._fail(job, failure or {"message": "a subtask failed", "traceback": ""}, vertex)
            self._region_progress(job)
            self._progress(job)
            self.cond.notify_all()

    def _on_metrics(self, slot: SlotInfo, job_id: str, tasks: dict, attempt: int = 0) -> None:
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                return
            now = time.monotonic()
            for key, m in tasks.items():
                v, i = key.split(".")
                k = (int(v), int(i))
                if m.get("attempt", attempt) != job.task_attempts.get(k):
                    continue  # a report of an earlier attempt
                if job.tasks.get(k) in ("DEPLOYING", "RUNNING"):
                    job.tasks[k] = "RUNNING"
                    self._update_rates(job, k, m, now)
                    job.metrics[k] = m

    def _on_finished_ack(self, slot: SlotInfo, job_id: str, commit: bool, error: str | None,
                         attempt: int = 0) -> None:
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None or attempt != job.deploy_attempt:
                return
            job.pending_acks.discard(slot.id)
            if error:
                job.finish_errors.append(error)
            if not job.pending_acks:
                self._complete(job)
            self.cond.notify_all()

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

    # -- state machine (called with self.cond held) ----------------------------------
    def _fail(self, job: JobState, failure: dict, vertex: int | None = None) -> None:
        if job.state == "CANCELLING":
            return  # tasks torn down by the cancellation fail on their closed channels: not a failure
        region = None
        if vertex is not None and job.region_failover and len(job.regions) > 1:
            region = next(r for r in job.regions if vertex in r)
            if region in job.region_restarts:
                return  # that region is restarting already
        if job.state == "RUNNING" and job.stop_savepoint is None and job.restart is not None:
            pause = job.restart.on_failure()
            if pause is not None and region is not None:
                self._restart_region(job, region, pause, failure)
                return
            if pause is not None:
                log.warning("job %s: %s; restarting in %.1f s (%s)", job.id, failure.get("message"),
                            pause, job.restart.describe())
                job.state = "RESTARTING"
                job.restart_pause = pause
                self._abort_pending_checkpoints(job, "the job is restarting")
                self._cancel_tasks(job)
                return
            if job.restart.kind != "none":
                failure = dict(failure)
                failure["message"] = (f"{failure.get('message')} (no more restarts: restart strategy "
                                      f"{job.restart.describe()})")
        if job.failure is None and job.state not in ("RESTARTING", "RESTARTING_ABORTING"):
            job.failure = failure
            job.failure_time = time.time()
        if job.state == "RUNNING":
            job.state = "FAILING"
            self._abort_pending_checkpoints(job, "the job failed")
            self._cancel_tasks(job)

    def _cancel_tasks(self, job: JobState) -> None:
        for s in job.slots:
            try:
                s.conn.send("cancel", job_id=job.id)
            except rpc.ConnectionClosed:
                pass

    def _progress(self, job: JobState) -> None:
        states = job.tasks.values()
        if job.state == "RUNNING" and all(s == "FINISHED" for s in states):
            too_many = self._bad_records_exceeded(job)
            if too_many is not None:  # deterministic: no restart; the sinks abort, nothing committed
                job.failure = {"message": too_many, "operator": None, "subtask_index": None,
                               "parallelism": None, "traceback": ""}
                job.failure_time = time.time()
                job.state = "FAILING"
                self._abort_pending_checkpoints(job, "the job failed")
                self._finish_on_slots(job, "abort")
                return
            job.state = "COMMITTING"
            self._abort_pending_checkpoints(job, "the job finished")
            self._finish_on_slots(job, "commit")
        elif job.state in ("FAILING", "CANCELLING", "RESTARTING") and all(
                s in ("FINISHED", "FAILED", "CANCELED") for s in states):
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
        config = job.topology.get("config", {})
        ratio = float(config.get("emrflow.bad-records.max-ratio", 1.0))
        count = config.get("emrflow.bad-records.max-count")
        total = bad + good
        if good == 0:
            why = "all of them"
        elif bad / total > ratio:
            why = f"more than emrflow.bad-records.max-ratio={ratio:g}"
        elif count is not None and bad > int(count):
            why = f"more than emrflow.bad-records.max-count={int(count)}"
        else:
            return None
        samples = [x for m in job.metrics.values() for x in m.get("bad_record_samples", [])][:3]
        return (f"{bad:,} of {total:,} input records were bad ({why}); no output was committed. "
                f"First: {'; '.join(samples)}")

    def _finish_on_slots(self, job: JobState, what: str) -> None:
        job.pending_acks = {s.id for s in job.slots if s.id in self.slots}
        if what == "abort":
            job.state = {"FAILING": "FAILED_ABORTING", "RESTARTING": "RESTARTING_ABORTING"}.get(
                job.state, "CANCELED_ABORTING")
        for s in job.slots:
            if s.id in job.pending_acks:
                try:
                    if what == "abort":  # a restart follows: output of checkpoints stays for it
                        s.conn.send(what, job_id=job.id, final=job.state != "RESTARTING_ABORTING")
                    else:
                        s.conn.send(what, job_id=job.id)
                except rpc.ConnectionClosed:
                    job.pending_acks.discard(s.id)
        if not job.pending_acks:
            self._complete(job)

    def _complete(self, job: JobState) -> None:
        if job.state == "COMMITTING":
            if job.finish_errors:
                self._set_terminal(job, "FAILED", {"message": "; ".join(job.finish_errors),
                                                   "traceback": ""})
            else:
                self._set_terminal(job, "FINISHED")
        elif job.state == "FAILED_ABORTING":
            self._set_terminal(job, "FAILED")
        elif job.state == "CANCELED_ABORTING":
            self._set_terminal(job, "FINISHED" if job.stop_savepoint else "CANCELED")
        elif job.state == "RESTARTING_ABORTING":
            job.state = "RESTARTING_WAIT"
            for s in job.slots:
                if s.job_id == job.id:
                    s.job_id = None
            job.slots = []
            threading.Thread(target=self._restart, args=(job,), daemon=True,
                             name=f"restart-{job.id[:8]}").start()

    # -- region failover (called with self.cond held) ----------------------------------------------
    def _restart_region(self, job: JobState, region: frozenset, pause: float, failure: dict) -> None:
        """Cancel, abort and later redeploy only the tasks of one pipelined region."""
        log.warning("job %s: %s; restarting the pipelined region %s in %.1f s (%s)", job.id,
                    failure.get("message"), sorted(region), pause, job.restart.describe())
        job.region_restarts[region] = {"phase": "CANCELLING", "pause": pause, "pending": set()}
        self._abort_pending_checkpoints(job, "a region is restarting")
        subtasks = [k for k in job.tasks if k[0] in region]
        for s in job.slots:
            try:
                s.conn.send("cancel_tasks", job_id=job.id, subtasks=subtasks)
            except rpc.ConnectionClosed:
                pass
        self._region_progress(job)

    def _region_progress(self, job: JobState) -> None:
        for region, r in list(job.region_restarts.items()):
            if r["phase"] != "CANCELLING":
                continue
            subtasks = [k for k in job.tasks if k[0] in region]
            if all(job.tasks[k] in ("FINISHED", "FAILED", "CANCELED") for k in subtasks):
                r["phase"] = "ABORTING"
                r["pending"] = {s.id for s in job.slots if s.id in self.slots}
                for s in job.slots:
                    try:
                        s.conn.send("abort_tasks", job_id=job.id, subtasks=subtasks)
                    except rpc.ConnectionClosed:
                        r["pending"].discard(s.id)
                self._region_aborted(job, region)

    def _on_tasks_aborted(self, slot: SlotInfo, job_id: str, error: str | None = None) -> None:
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None:
                return
            if error:
                log.warning("job %s: %s", job_id, error)
            for region, r in list(job.region_restarts.items()):
                if r["phase"] == "ABORTING" and slot.id in r["pending"]:
                    r["pending"].discard(slot.id)
                    self._region_aborted(job, region)

    def _region_aborted(self, job: JobState, region: frozenset) -> None:
        r = job.region_restarts[region]
        if r["phase"] == "ABORTING" and not r["pending"]:
            r["phase"] = "WAITING"
            threading.Thread(target=self._redeploy_region, args=(job, region, r), daemon=True,
                             name=f"region-restart-{job.id[:8]}").start()

    def _redeploy_region(self, job: JobState, region: frozenset, r: dict) -> None:
        time.sleep(r["pause"])
        plan = self._restore_plan(job)
        with self.cond:
            if job.state != "RUNNING" or job.region_restarts.get(region) is not r:
                return  # a full restart, a cancellation or the end of the job came first
            del job.region_restarts[region]
            self._next_attempt(job, plan, f"region {sorted(region)}")
            subtasks = [k for k in job.tasks if k[0] in region]
            for k in subtasks:
                job.tasks[k] = "DEPLOYING"
                job.task_attempts[k] = job.attempt
                job.metrics.pop(k, None)
            for i, s in enumerate(job.slots):
                mine = [k for k in subtasks if k[1] == i]
                if not mine:
                    continue
                try:
                    s.conn.send("deploy_tasks", job_id=job.id, subtasks=mine, attempt=job.attempt,
                                restore=plan)
                except rpc.ConnectionClosed:
                    pass
            self.cond.notify_all()

    def _restart(self, job: JobState) -> None:
        """After the restart pause, redeploy the job from its latest valid checkpoint."""
        time.sleep(job.restart_pause)
        plan = self._restore_plan(job)
        with self.cond:
            if job.state != "RESTARTING_WAIT":
                return  # cancelled meanwhile
            self._next_attempt(job, plan, "the job")
            if plan is not None:
                job.restore = plan
            self._deploy(job)

    @staticmethod
    def _next_attempt(job: JobState, plan: dict | None, what: str) -> None:
        """Count a restart and number the attempt about to be deployed (called with the lock held)."""
        job.attempt += 1
        job.restarts += 1
        log.info("job %s: %s, attempt %d, starts from %s", job.id, what, job.attempt,
                 plan["path"] if plan else "the beginning (no checkpoint yet)")

    def _restore_plan(self, job: JobState) -> dict | None:
        """The restore plan of the newest checkpoint that checks out; corrupt ones are skipped, with a log line."""
        c = job.coordinator
        while c is not None:
            with self.cond:
                meta = c.latest()
            if meta is None:
                break
            try:
                verified = chk.load_metadata(meta["path"], verify=True)
                return chk.plan_restore(verified, job.topology, allow_non_restored=True)
            except chk.CheckpointError as exc:
                log.warning("job %s: skipping checkpoint %s: %s; falling back to the previous one",
                            job.id, meta["path"], exc)
                with self.cond:
                    if c.completed and c.completed[-1] is meta:
                        c.completed.pop()
        return job.restore

    # -- checkpoints (called with self.cond held unless said otherwise) --------------------------
    def _trigger(self, job: JobState, savepoint_dir: str | None = None) -> PendingCheckpoint:
        c = job.coordinator
        p = c.start(list(job.tasks), savepoint_dir)
        for s in job.slots:
            try:
                s.conn.send("trigger_checkpoint", job_id=job.id, checkpoint_id=p.id,
                            timestamp_ms=chk.now_ms(), target=p.target, savepoint=p.savepoint)
            except rpc.ConnectionClosed:
                pass
        return p

    def _trigger_checkpoints(self) -> None:
        """The coordinators' clock: trigger periodic checkpoints, expire those past the timeout."""
        while not self.stopping.wait(0.05):
            now = time.monotonic()
            with self.cond:
                for job in list(self.jobs.values()):
                    c = job.coordinator
                    if c is None or job.state != "RUNNING":
                        continue
                    for p in list(c.pending.values()):
                        if now - p.started > c.timeout_s:
                            self._abort_checkpoint(job, p, f"not complete after {c.timeout_s:.0f} s "
                                                   "(execution.checkpointing.timeout)")
                    if c.due(now) and self._all_running(job):
                        self._trigger(job)

    def _abort_checkpoint(self, job: JobState, p: PendingCheckpoint, why: str) -> None:
        c = job.coordinator
        if c.pending.pop(p.id, None) is None:
            return
        c.stats["failed"] += 1
        c.last_end = time.monotonic()
        p.error = why
        p.done.set()
        log.warning("job %s: checkpoint %d aborted: %s", job.id, p.id, why)
        threading.Thread(target=chk.remove, args=(p.target,), daemon=True).start()

    def _abort_pending_checkpoints(self, job: JobState, why: str) -> None:
        if job.coordinator is not None:
            for p in list(job.coordinator.pending.values()):
                self._abort_checkpoint(job, p, why)

    def _on_checkpoint_ack(self, slot: SlotInfo, job_id: str, attempt: int, checkpoint_id: int,
                           vertex: int, subtask: int, entry: dict | None, error: str | None) -> None:
        with self.cond:
            job = self.jobs.get(job_id)
            if job is None or job.coordinator is None or attempt != job.task_attempts.get((vertex, subtask)):
                return
            c = job.coordinator
            p = c.pending.get(checkpoint_id)
            if p is None:
                return
            if error is not None:
                self._abort_checkpoint(job, p, f"subtask {subtask} of vertex {vertex} declined: {error}")
                return
            p.waiting.discard((vertex, subtask))
            p.entries.append(entry)
            if p.waiting:
                return
            del c.pending[checkpoint_id]
        meta = {"format": chk.FORMAT_VERSION, "job_id": job.id, "job_name": job.name,
                "checkpoint_id": p.id, "kind": "savepoint" if p.savepoint else "checkpoint",
                "attempt": attempt, "timestamp_ms": chk.now_ms(),
                "duration_ms": int((time.monotonic() - p.started) * 1000),
                "size_bytes": sum(e["size"] for e in p.entries),
                "tasks": sorted(p.entries, key=lambda e: (e["vertex"], e["subtask"]))}
        try:
            chk.write_metadata(p.target, meta)
        except OSError as exc:
            with self.cond:
                c.pending[p.id] = p
                self._abort_checkpoint(job, p, f"cannot write its metadata: {exc!r}")
            return
        meta["path"] = p.target
        drop = []
        with self.cond:
            c.completed.append(meta)
            regular = [m for m in c.completed if m["kind"] == "checkpoint"]
            while len(regular) > c.retained:
                old = regular.pop(0)
                c.completed.remove(old)
                drop.append(old["path"])
            c.stats["completed"] += 1
            c.last_end = time.monotonic()
            if job.state in ("RUNNING", "CANCELLING"):
                for s in job.slots:
                    try:
                        s.conn.send("notify_checkpoint_complete", job_id=job.id, checkpoint_id=p.id)
                    except rpc.ConnectionClosed:
                        pass
            p.done.set()
        log.info("job %s: %s %d complete (%d bytes, %d ms) at %s", job.id, meta["kind"], p.id,
                 meta["size_bytes"], meta["duration_ms"], p.target)
        for d in drop:
            chk.remove(d)

    def _set_terminal(self, job: JobState, state: str, failure: dict | None = None) -> None:
        job.state = state
        if failure is not None and job.failure is None:
            job.failure = failure
            job.failure_time = time.time()
        job.end = time.time()
        for s in job.slots:
            if s.job_id == job.id:
                s.job_id = None
        c = job.coordinator
        if c is not None:
            self._abort_pending_checkpoints(job, f"the job is {state}")
            keep = {"NO_EXTERNALIZED_CHECKPOINTS": (), "DELETE_ON_CANCELLATION": ("FAILED",),
                    "RETAIN_ON_CANCELLATION": ("FAILED", "CANCELED")}.get(c.retention, ())
            if state not in keep:
                t = threading.Thread(target=chk.remove, args=(c.job_dir,), daemon=True)
                t.start()
                self._cleanups.append(t)
        self.cond.notify_all()

    @staticmethod
    def _all_running(job: JobState) -> bool:
        """The job runs with every task running (no deployment or restart in progress)."""
        return job.state == "RUNNING" and all(st == "RUNNING" for st in job.tasks.values())

    @staticmethod
    def _public_state(job: JobState) -> str:
        """The job state as Flink names it (RESTARTING for every phase of a restart)."""
        return "RESTARTING" if job.state.startswith("RESTARTING") else job.state

    def _slot_lost(self, slot_id: str, reason: str) -> None:
        with self.cond:
            slot = self.slots.pop(slot_id, None)
            if slot is None or self.stopping.is_set():
                return
            job = self.jobs.get(slot.job_id) if slot.job_id else None
            if job is not None and job.state not in TERMINAL:
                index = job.slots.index(slot)
                for key, st in job.tasks.items():
                    if key[1] == index and st not in ("FINISHED", "FAILED", "CANCELED"):
                        job.tasks[key] = "FAILED"
                self._fail(job, {"message": reason, "operator": None, "subtask_index": index,
                                 "parallelism": None, "traceback": ""})
                if job.state == "COMMITTING" and slot_id in job.pending_acks:
                    # its sinks' commit may not have run: the job cannot be called finished
                    job.finish_errors.append(f"{reason} while the output was being committed; "
                                             "its part files may be missing")
                job.pending_acks.discard(slot_id)
                self._progress(job)
                if (job.state.endswith("ABORTING") or job.state == "COMMITTING") and not job.pending_acks:
                    self._complete(job)
            self.cond.notify_all()

    def _taskmanager_lost(self, tm_id: str, why: str) -> None:
        with self.cond:
            tm = self.taskmanagers.pop(tm_id, None)
            if tm is None:
                return
            slot_ids = [s.id for s in self.slots.values() if s.taskmanager_id == tm_id]
        for sid in slot_ids:
            self._slot_lost(sid, f"TaskManager {tm_id} lost: {why}")

    # -- reporting -----------------------------------------------------------------
    def _describe(self, job: JobState, details: bool = True) -> dict:
        now = time.time()
        duration = ((job.end or now) - (job.start or job.submitted)) * 1000
        out: dict[str, Any] = {"job_id": job.id, "name": job.name, "state": self._public_state(job),
                               "start_time": job.start, "end_time": job.end,
                               "duration_ms": int(duration), "failure": job.failure,
                               "restarts": job.restarts}
        if job.coordinator is not None:
            c = job.coordinator
            latest = c.latest()
            out["checkpoints"] = {"completed": c.stats["completed"], "failed": c.stats["failed"],
                                  "in_progress": len(c.pending),
                                  "latest": None if latest is None else {k: latest[k] for k in (
                                      "checkpoint_id", "kind", "timestamp_ms", "duration_ms", "size_bytes",
                                      "path")},
                                  "latest_path": latest["path"] if latest else None,
                                  "directory": c.job_dir}
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
            states = [job.tasks.get((v["id"], i), "CREATED") for i in range(v["parallelism"])]
            operators = [{"id": o["id"], "name": o["name"], "uid": o["uid"],
                          "records_in": ops.get(o["id"], [0, 0])[0],
                          "records_out": ops.get(o["id"], [0, 0])[1],
                          "late_records_dropped": late.get(o["id"], 0)} for o in v["operators"]]
            vertices.append({"id": v["id"], "name": v["name"], "parallelism": v["parallelism"],
                             "subtask_states": states, "operators": operators,
                             "busy_s": busy.get(v["id"], 0.0)})
        out.update(vertices=vertices, bad_records=bad, bad_record_samples=samples,
                   late_records_dropped=sum(late.values()))
        return out


def main(argv: list[str] | None = None) -> None:
    """Entry point of a JobManager process."""
    parser = argparse.ArgumentParser(prog="python -m emrflow.runtime.jobmanager")
    parser.add_argument("--listen-fd", type=int, default=None,
                        help="an inherited listening socket (local clusters)")
    parser.add_argument("--bind", default="127.0.0.1:0", help="HOST:PORT to listen on")
    parser.add_argument("--heartbeat-timeout-ms", type=int, default=50_000)
    parser.add_argument("--slot-request-timeout-ms", type=int, default=30_000)
    parser.add_argument("--die-with-parent", action="store_true")
    parser.add_argument("--rest-bind", default=None,
                        help="HOST:PORT for the REST API and dashboard (none: no REST server)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="port of the Prometheus endpoint (metrics.reporter.prom.port)")
    parser.add_argument("--savepoint-dir", default=None,
                        help="default savepoint directory of the cluster (state.savepoints.dir)")
    parser.add_argument("--info-file", default=None,
                        help="write the bound addresses here as JSON once listening")
    args = parser.parse_args(argv)
    if args.die_with_parent:
        die_with_parent()
    setup_logging("jobmanager")
    if args.listen_fd is not None:
        listener = socket.socket(fileno=args.listen_fd)
    else:
        host, _, port = args.bind.rpartition(":")
        listener = socket.create_server((host, int(port)))
    jm = JobManager(listener, os.environ.get("EMRFLOW_CLUSTER_SECRET", ""), args.heartbeat_timeout_ms,
                    args.slot_request_timeout_ms)
    jm.savepoint_dir = args.savepoint_dir
    info = {"rpc_address": list(listener.getsockname()[:2]), "pid": os.getpid()}
    if args.rest_bind is not None:
        from emrflow.runtime.rest import start_rest_server
        rest_host, _, rest_port = args.rest_bind.rpartition(":")
        info["rest_address"] = list(start_rest_server(
            jm, rest_host, int(rest_port), os.environ.get("EMRFLOW_REST_TOKEN") or None))
    if args.metrics_port is not None:
        from emrflow.runtime.metrics import start_prometheus_endpoint
        info["metrics_port"] = start_prometheus_endpoint(jm, args.metrics_port)
    if args.info_file:
        import json
        tmp = args.info_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(info, f)
        os.replace(tmp, args.info_file)
    jm.serve()


if __name__ == "__main__":
    main()
