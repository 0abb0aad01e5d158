"""The JobManager process's shell: sockets, threads and timers around the state machine.

:class:`JobManager` accepts connections (TaskManagers, slots, clients), turns what they say
into events for :class:`~.machine.JobManagerStateMachine`, and performs the instructions it
returns: messages to slots are sent at once, under the lock (so they leave in the machine's
order); checkpoint metadata, restore plans and the deletion of old checkpoints are done by the
thread that fed the event, after releasing the lock; commits and timers get threads of their
own. What I/O produced goes back into the machine as an event. Client requests are methods
(:meth:`JobManager.submit`...) that return dicts or raise :class:`~.errors.JobManagerError`;
over RPC the error's message is the ``error`` reply.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import dataclasses
import logging
import os
import socket
import threading
import time
from typing import Any, Callable

from emrflow.runtime import checkpoint as chk
from emrflow.runtime import rpc
from emrflow.runtime.jobmanager import machine as m
from emrflow.runtime.jobmanager.coordinators import SourceCoordinators
from emrflow.runtime.jobmanager.errors import JobManagerError, SavepointError
from emrflow.runtime.jobmanager.query import JobManagerQuery, describe, job_view
from emrflow.runtime.jobmanager.states import TERMINAL, JobStatus
from emrflow.runtime.process import die_with_parent, setup_logging

log = logging.getLogger("emrflow.jobmanager")

#: slot message -> the event it is (given the slot's id and the message body)
_SLOT_EVENTS: dict[str, Callable[[str, dict], m.Event]] = {
    "task_state": lambda sid, b: m.TaskStateChanged(**b),
    "metrics": lambda sid, b: m.MetricsReported(**b),
    "finished_ack": lambda sid, b: m.FinishedAck(sid, **b),
    "checkpoint_ack": lambda sid, b: m.CheckpointAcknowledged(**b),
    "tasks_aborted": lambda sid, b: m.TasksAborted(sid, **b),
    "reader_registered": lambda sid, b: m.ReaderRegistered(**b),
    "splits_finished": lambda sid, b: m.SplitsFinished(**b),
    "split_request": lambda sid, b: m.SplitRequested(**b),
}


class JobManager:
    """Coordinates one cluster: the I/O shell of :class:`~.machine.JobManagerStateMachine`.

    Args:
        listener: a bound, listening TCP socket for RPC.
        secret: the cluster secret every peer must present.
        heartbeat_timeout_ms: a TaskManager silent for longer is lost.
        slot_request_timeout_ms: how long a job waits for enough free slots.

    Attributes:
        query: the read-only view (:class:`~.query.JobManagerQuery`) for REST, metrics, YARN.
        stopping: set once :meth:`shutdown` was called.
    """

    def __init__(self, listener: socket.socket, secret: str, heartbeat_timeout_ms: int = 50_000,
                 slot_request_timeout_ms: int = 30_000):
        self.listener = listener
        self.secret = secret
        self.machine = m.JobManagerStateMachine(heartbeat_timeout_ms / 1000.0, slot_request_timeout_ms / 1000.0)
        self.cond = threading.Condition()
        self.query = JobManagerQuery(self.machine, self.cond)
        self.stopping = threading.Event()
        self._slot_conns: dict[str, rpc.Connection] = {}
        self._tm_conns: dict[str, rpc.Connection] = {}
        self._savepoints: dict[tuple[str, int], concurrent.futures.Future] = {}
        self._cleanups: list[threading.Thread] = []  # checkpoint deletions shutdown() waits for
        #: the split enumerators of SplitSources (their threads call back into _feed)
        self.coordinators = SourceCoordinators(self._feed)
        self.client_handlers: dict[str, Callable[..., dict]] = {
            "submit": self.submit, "job_status": self.job_status, "list_jobs": self.list_jobs,
            "cancel": self.cancel, "cluster_status": self.cluster_status, "shutdown": self.shutdown,
            "savepoint": self.savepoint, "stop": self.stop,
        }

    @property
    def savepoint_dir(self) -> str | None:
        """The cluster's ``state.savepoints.dir``, used when neither the request nor the job gives one."""
        return self.machine.savepoint_dir

    @savepoint_dir.setter
    def savepoint_dir(self, value: str | None) -> None:
        self.machine.savepoint_dir = value

    # -- events in, instructions out ------------------------------------------------------------
    def _feed(self, event: m.Event) -> list[m.Instruction]:
        """Handle ``event`` and the events its instructions lead to; returns its own instructions.

        Raises:
            JobManagerError: the machine refused a client command (nothing changed).
        """
        queue: collections.deque[m.Event] = collections.deque([event])
        first: list[m.Instruction] | None = None
        while queue:
            after: list[m.Instruction] = []
            with self.cond:
                while queue:
                    ev = dataclasses.replace(queue.popleft(), now=time.monotonic(), wall=time.time())
                    instructions = self.machine.handle(ev)
                    if first is None:
                        first = instructions
                    for ins in instructions:
                        follow = self._perform(ins, after)
                        if follow is not None:
                            queue.append(follow)
                self.cond.notify_all()
            for ins in after:
                follow = self._perform_io(ins)
                if follow is not None:
                    queue.append(follow)
        return first or []

    def _perform(self, ins: m.Instruction, after: list[m.Instruction]) -> m.Event | None:
        """Perform an instruction (lock held); I/O that can wait for the lock's release goes to
        ``after``. Returns the event it leads to at once, if any."""
        if isinstance(ins, m.SendToSlot):
            conn = self._slot_conns.get(ins.slot_id)
            try:
                if conn is None:
                    raise rpc.ConnectionClosed(f"slot {ins.slot_id} is gone")
                conn.send(ins.msg, **ins.body)
            except rpc.ConnectionClosed:
                return m.SendFailed(ins.slot_id, ins.msg, ins.body.get("job_id"))
        elif isinstance(ins, m.SavepointTriggered):
            self._savepoints[(ins.job_id, ins.checkpoint_id)] = concurrent.futures.Future()
        elif isinstance(ins, m.CheckpointDone):
            fut = self._savepoints.get((ins.job_id, ins.checkpoint_id))
            if fut is not None and not fut.done():
                fut.set_result(ins)
        elif isinstance(ins, m.CloseTaskManager):
            conn = self._tm_conns.get(ins.tm_id)
            if conn is not None:
                conn.close()
        elif isinstance(ins, m.StartTimer):
            timer = threading.Timer(ins.delay, self._feed, args=(ins.event,))
            timer.daemon = True
            timer.start()
        elif isinstance(ins, m.RemoveCheckpoint) and ins.when != "now":
            t = threading.Thread(target=chk.remove, args=(ins.file_system, ins.path), daemon=True)
            t.start()
            if ins.when == "cleanup":
                self._cleanups.append(t)
        elif isinstance(ins, m.WriteCommitRecords):
            self._in_thread(f"commit-{ins.job_id[:8]}", ins)
        elif isinstance(ins, m.FinishCommit):
            self._in_thread(f"finish-commit-{ins.job_id[:8]}", ins)
        elif isinstance(ins, (m.ResetEnumerators, m.EnumeratorCall, m.SnapshotEnumerators, m.CloseEnumerators)):
            self.coordinators.perform(ins)  # queued to the enumerators' threads: never blocks
        else:  # WriteCheckpointMetadata, PlanRestore, RemoveCheckpoint(now)
            after.append(ins)
        return None

    def _in_thread(self, name: str, ins: m.Instruction) -> None:
        def run() -> None:
            event = self._perform_io(ins)
            if event is not None:
                self._feed(event)
        threading.Thread(target=run, daemon=True, name=name).start()

    @staticmethod
    def _perform_io(ins: m.Instruction) -> Any:
        """Do the I/O of an instruction (no lock held); returns the event reporting its outcome."""
        if isinstance(ins, m.WriteCheckpointMetadata):
            try:
                chk.write_metadata(ins.file_system, ins.target, ins.metadata)
            except OSError as exc:
                return m.CheckpointMetadataWritten(ins.job_id, ins.checkpoint_id, error=repr(exc))
            return m.CheckpointMetadataWritten(ins.job_id, ins.checkpoint_id)
        if isinstance(ins, m.PlanRestore):
            corrupt = []
            plan = ins.fallback
            for path in ins.candidates:  # the newest that checks out; corrupt ones are skipped
                try:
                    verified = chk.load_metadata(ins.file_system, path, verify=True)
                    plan = chk.plan_restore(verified, ins.topology, allow_non_restored=True)
                    break
                except chk.CheckpointError as exc:
                    log.warning("job %s: skipping checkpoint %s: %s; falling back to the previous one",
                                ins.job_id, path, exc)
                    corrupt.append(path)
            else:
                plan = ins.fallback
            return m.RestorePlanned(ins.job_id, plan, tuple(corrupt), ins.region, ins.token)
        if isinstance(ins, m.RemoveCheckpoint):
            chk.remove(ins.file_system, ins.path)
            return None
        if isinstance(ins, m.WriteCommitRecords):
            from emrflow.connectors import files
            try:
                records = files.write_commit_records(ins.file_system, ins.job_id, list(ins.committables))
            except Exception as exc:  # noqa: BLE001 - any storage error: nothing was published
                return m.CommitRecordsWritten(ins.job_id, ins.attempt, error=str(exc))
            return m.CommitRecordsWritten(ins.job_id, ins.attempt, tuple(records))
        if isinstance(ins, m.FinishCommit):
            from emrflow.connectors import files
            error = None
            for uri in ins.records:
                try:
                    files.finish_commit(ins.file_system, uri)
                except Exception as exc:  # noqa: BLE001 - reported as the job's failure
                    error = (f"the commit of the job's output did not finish: {exc}; the next job writing "
                             f"to that directory finishes it (commit record {uri})")
            return m.CommitFinished(ins.job_id, error)
        raise TypeError(f"not an I/O instruction: {ins!r}")

    # -- network shell -------------------------------------------------------------
    def serve(self) -> None:
        """Accept connections until :meth:`shutdown`."""
        self._clock(1.0, m.HeartbeatTimerFired, "heartbeats")
        self._clock(0.05, m.CheckpointTimerFired, "checkpoints")
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

    def _clock(self, period: float, event: Callable[[], m.Event], name: str) -> None:
        def tick() -> None:
            while not self.stopping.wait(period):
                self._feed(event())
        threading.Thread(target=tick, daemon=True, name=name).start()

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
        tm_id = str(hello["taskmanager_id"])
        with self.cond:
            self._tm_conns[tm_id] = conn
        self._feed(m.TaskManagerRegistered(tm_id, int(hello["slots"]), str(hello.get("host", "?")),
                                           int(hello.get("pid", 0)), str(hello.get("data_host", "127.0.0.1"))))
        try:
            while True:
                msg_type, body = conn.recv()
                if msg_type == "heartbeat":
                    self._feed(m.Heartbeat(tm_id, int(body.get("rss_bytes", 0)),
                                           float(body.get("cpu_percent", 0.0))))
        finally:
            self._feed(m.TaskManagerLost(tm_id, "its connection closed"))
            with self.cond:
                if self._tm_conns.get(tm_id) is conn:
                    del self._tm_conns[tm_id]

    def _serve_slot(self, conn: rpc.Connection, hello: dict) -> None:
        event = m.SlotRegistered(str(hello["taskmanager_id"]), int(hello["slot_index"]),
                                 tuple(hello["data_address"]))
        slot_id = f"{event.taskmanager_id}/{event.index}"
        with self.cond:
            self._slot_conns[slot_id] = conn
        self._feed(event)
        try:
            while True:
                msg_type, body = conn.recv()
                make = _SLOT_EVENTS.get(msg_type)
                if make is not None:
                    self._feed(make(slot_id, body))
        finally:
            self._feed(m.SlotLost(slot_id, f"slot {slot_id} disconnected"))
            with self.cond:
                if self._slot_conns.get(slot_id) is conn:
                    del self._slot_conns[slot_id]

    def _serve_client(self, conn: rpc.Connection) -> None:
        while True:
            msg_type, body = conn.recv()
            handler = self.client_handlers.get(msg_type)
            if handler is None:
                conn.send("error", message=f"unknown request {msg_type!r}")
                continue
            try:
                reply = handler(**body)
            except JobManagerError as exc:
                conn.send("error", message=str(exc))
                continue
            except (TypeError, KeyError, ValueError) as exc:
                conn.send("error", message=f"bad {msg_type} request: {exc}")
                continue
            conn.send("ok", **reply)

    # -- client requests -------------------------------------------------------
    def submit(self, topology: dict, job_bytes: bytes) -> dict:
        """Accept a job, wait for enough free slots, deploy it; returns ``{"job_id"}``.

        Raises:
            JobAlreadySubmitted: a job with its id was submitted before.
        """
        self._feed(m.SubmitJob(topology, job_bytes))
        job_id = topology["job_id"]
        with self.cond:  # deployed, or failed for want of slots (the clock thread's timeout)
            while self.machine.jobs[job_id].state == JobStatus.CREATED and not self.stopping.is_set():
                self.cond.wait(0.5)
        return {"job_id": job_id}

    def job_status(self, job_id: str, wait_s: float = 0.0) -> dict:
        """Return a job's status; with ``wait_s`` > 0 return early only if it ends.

        Raises:
            JobNotFound: no such job.
        """
        deadline = time.monotonic() + min(float(wait_s), 30.0)
        with self.cond:
            job = self.machine.job(job_id)
            while job.state not in TERMINAL:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            return describe(job_view(job), time.time())

    def list_jobs(self) -> dict:
        """Return ``{"jobs": [status...]}`` for every job, newest first."""
        now = time.time()
        jobs = sorted(self.query.jobs(), key=lambda j: j.submitted, reverse=True)
        return {"jobs": [describe(j, now, details=False) for j in jobs]}

    def cancel(self, job_id: str) -> dict:
        """Cancel a running job (its sinks abort); returns ``{"state"}``.

        Raises:
            JobNotFound: no such job.
        """
        with self.cond:
            self._feed(m.CancelJob(job_id))
            return {"state": self.machine.job(job_id).state.public.value}

    def savepoint(self, job_id: str, directory: str | None = None, timeout_s: float = 600.0,
                  _stop: bool = False) -> dict:
        """Take a savepoint of a running job; returns ``{"path", "checkpoint_id"}`` once complete.

        Args:
            job_id: the job.
            directory: where the ``savepoint-<job>-<id>`` directory goes; default
                ``state.savepoints.dir``.
            timeout_s: how long to wait for completion, in seconds.
            _stop: for :meth:`stop`: no periodic checkpoint is triggered after this savepoint, so
                no exactly-once sink commits output of records the savepoint does not cover.

        Raises:
            JobNotFound: no such job.
            SavepointError: a BATCH job, not running with all its tasks, no directory, already
                stopping, or the savepoint failed or timed out.
        """
        with self.cond:
            job = self.machine.savepoint_precheck(job_id)
            deadline = time.monotonic() + 10.0  # a job just deployed or restarted: let its tasks start
            while job.state not in TERMINAL and time.monotonic() < deadline and not self.machine.all_running(job):
                self.cond.wait(0.1)
            started = next(i for i in self._feed(m.TriggerSavepoint(job_id, directory, _stop))
                           if isinstance(i, m.SavepointTriggered))
            fut = self._savepoints[(job_id, started.checkpoint_id)]
        error = None
        try:
            done = fut.result(timeout_s)
            if done.error:
                error = f"savepoint failed: {done.error}"
        except concurrent.futures.TimeoutError:
            error = f"savepoint {started.target} did not complete within {timeout_s:.0f} s"
        finally:
            with self.cond:
                self._savepoints.pop((job_id, started.checkpoint_id), None)
        if error is not None:
            if _stop:
                self._feed(m.StopSavepointFailed(job_id))
            raise SavepointError(error)
        return {"path": started.target, "checkpoint_id": started.checkpoint_id}

    def stop(self, job_id: str, directory: str | None = None, timeout_s: float = 600.0) -> dict:
        """Stop a job with a final savepoint (Flink's stop-with-savepoint); the job ends FINISHED.

        From the savepoint's trigger on, the job takes no periodic checkpoint, so its exactly-once
        sinks commit nothing beyond the savepoint: a job restored from it writes each record once.
        If the savepoint fails, the job keeps running and takes checkpoints again (as in Flink).

        Raises:
            JobNotFound, SavepointError: as :meth:`savepoint`.
        """
        reply = self.savepoint(job_id, directory, timeout_s, _stop=True)
        self._feed(m.StopJob(job_id, reply["path"]))
        return reply

    def cluster_status(self) -> dict:
        """Return TaskManagers and slot counts."""
        with self.cond:
            mc = self.machine
            return {
                "taskmanagers": [{"id": tm.id, "slots": tm.slots, "host": tm.host, "pid": tm.pid,
                                  "rss_bytes": tm.rss_bytes, "cpu_percent": tm.cpu_percent}
                                 for tm in mc.taskmanagers.values()],
                "slots_total": len(mc.slots),
                "slots_free": sum(1 for s in mc.slots.values() if s.job_id is None),
                "jobs_running": sum(1 for j in mc.jobs.values() if j.state not in TERMINAL),
            }

    def shutdown(self) -> dict:
        """Stop TaskManagers and slots, then this process (after deleting finished jobs' checkpoints)."""
        deadline = time.monotonic() + 30
        for t in list(self._cleanups):
            t.join(max(0.0, deadline - time.monotonic()))
        self.stopping.set()
        self._feed(m.ClusterShutdown())
        with self.cond:
            peers = list(self._tm_conns.values()) + list(self._slot_conns.values())
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
    info: dict[str, Any] = {"rpc_address": list(listener.getsockname()[:2]), "pid": os.getpid()}
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
