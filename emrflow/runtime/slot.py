"""The process behind one task slot of a TaskManager.

Python threads cannot run Python code in parallel, so every task slot is its own
OS process. It registers with the JobManager, receives deployments (the
cloudpickled JobGraph and the subtasks that go into this slot: with slot
sharing, subtask ``i`` of every vertex), runs each subtask in a thread, reports
metrics every ``metrics.report-interval`` and the subtasks' outcomes, and
commits or aborts its sinks when the JobManager says so.

Run as ``python -m emrflow.runtime.slot``; the cluster secret comes from the
``EMRFLOW_CLUSTER_SECRET`` environment variable, never from the command line.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field

import cloudpickle

from emrflow.config_views import NetworkConfig
from emrflow.connectors.base import abort_writer
from emrflow.connectors.files import COMMIT_KIND
from emrflow.fs import FileSystem
from emrflow.graph.jobgraph import JobGraph
from emrflow.runtime import rpc
from emrflow.runtime.aggregators import make_aggregator
from emrflow.runtime.checkpoint import StateReader
from emrflow.runtime.jobmanager.states import ExecutionState
from emrflow.runtime.network.channels import Cancelled, DataServer, InputGate, LocalChannel, RemoteChannel
from emrflow.runtime.network.events import CheckpointBarrier
from emrflow.runtime.network.writers import make_writer
from emrflow.runtime.process import die_with_parent, setup_logging
from emrflow.runtime.task import StreamTask, TaskFailure, describe_failure

log = logging.getLogger("emrflow.slot")


#: a subtask that has not ended yet
_NOT_STARTED_OR_RUNNING = (ExecutionState.CREATED, ExecutionState.RUNNING)


@dataclass
class _Deployment:
    job: JobGraph
    attempt: int
    slot_addresses: dict[int, tuple]  # DataServer.data_address of each slot
    completed_checkpoint: int = -1
    #: vertex id -> the cancel event of its pipelined region's current tasks
    region_cancel: dict[int, threading.Event] = field(default_factory=dict)
    tasks: dict[tuple[int, int], StreamTask] = field(default_factory=dict)
    gates: dict[tuple[int, int], InputGate] = field(default_factory=dict)

    @property
    def file_system(self) -> FileSystem:
        """The job's file system (its ``s3.*`` options): checkpoints, inputs, outputs."""
        return FileSystem.of(self.job.config)

    def cancel_all(self) -> None:
        """Cancel every task of the deployment."""
        for ev in set(self.region_cancel.values()):
            ev.set()


class SlotProcess:
    """Executes the subtasks deployed to one task slot.

    Args:
        jobmanager: ``(host, port)`` of the JobManager's RPC endpoint.
        secret: the cluster secret.
        taskmanager_id: id of the owning TaskManager.
        slot_index: index of this slot within the TaskManager.
        host: address other slots use to reach this slot's data server.
    """

    def __init__(self, jobmanager: tuple[str, int], secret: str, taskmanager_id: str,
                 slot_index: int, host: str):
        self.secret = secret
        self.server = DataServer(host, secret)
        self.conn = rpc.connect(jobmanager, secret, role="slot", taskmanager_id=taskmanager_id,
                                slot_index=slot_index, data_address=self.server.data_address,
                                pid=os.getpid())
        self.slot_id = f"{taskmanager_id}/{slot_index}"
        self.deployments: dict[str, _Deployment] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.handlers = {
            "deploy": self._on_deploy,
            "cancel": self._on_cancel,
            "commit": self._on_commit,
            "abort": self._on_abort,
            "trigger_checkpoint": self._on_trigger_checkpoint,
            "deploy_tasks": self._on_deploy_tasks,
            "cancel_tasks": self._on_cancel_tasks,
            "abort_tasks": self._on_abort_tasks,
            "notify_checkpoint_complete": self._on_checkpoint_complete,
            "add_splits": self._on_add_splits,
            "shutdown": self._on_shutdown,
        }

    def serve(self) -> None:
        """Handle JobManager messages until shutdown or until the JobManager goes away."""
        threading.Thread(target=self._report_metrics, daemon=True, name="metrics").start()
        try:
            while not self._stop.is_set():
                msg_type, body = self.conn.recv()
                handler = self.handlers.get(msg_type)
                if handler is None:
                    log.warning("ignoring unknown message %r from the JobManager", msg_type)
                    continue
                handler(**body)
        except rpc.ConnectionClosed:
            if not self._stop.is_set():
                log.info("JobManager connection closed; slot %s exits", self.slot_id)
        finally:
            for d in self.deployments.values():
                d.cancel_all()
            self.server.close()

    # -- handlers -----------------------------------------------------------------
    def _on_deploy(self, job_id: str, job_bytes: bytes, subtasks: list, attempt: int,
                   slot_addresses: dict, restore: dict | None = None) -> None:
        try:
            job: JobGraph = cloudpickle.loads(job_bytes)
        except Exception as exc:  # noqa: BLE001 - report any unpickling problem to the user
            from emrflow.runtime.task import format_user_traceback
            for vertex_id, index in subtasks:
                self.conn.send("task_state", job_id=job_id, vertex=vertex_id, subtask=index,
                               state=ExecutionState.FAILED, metrics={}, failure={
                                   "operator": "(deployment)", "subtask_index": index,
                                   "parallelism": None, "task": "deployment",
                                   "message": f"cannot load the job in slot {self.slot_id}: {exc}",
                                   "traceback": format_user_traceback(exc)}, attempt=attempt)
            return
        dep = _Deployment(job=job, attempt=attempt,
                          slot_addresses={int(k): tuple(v) for k, v in slot_addresses.items()})
        tune_gc()
        with self._lock:
            self.deployments[job_id] = dep
        self._start_tasks(job_id, dep, subtasks, attempt, restore)

    def _start_tasks(self, job_id: str, dep: _Deployment, subtasks: list, attempt: int,
                     restore: dict | None) -> None:
        """Create gates, then tasks, then start them; each pipelined region gets its own cancel event."""
        job = dep.job
        cancel = {}
        for vertex_id, _index in subtasks:
            ev = dep.region_cancel.get(vertex_id)
            if ev is None or ev.is_set():
                region = job.region_of(vertex_id)
                ev = cancel.get(region) or threading.Event()
                cancel[region] = ev
                for v in region:
                    dep.region_cancel[v] = ev
        # gates first, so producers anywhere can connect as soon as they start
        for vertex_id, index in subtasks:
            v = job.vertices[vertex_id]
            if not v.is_source:
                gate = InputGate(job.num_input_channels(vertex_id), dep.region_cancel[vertex_id])
                dep.gates[(vertex_id, index)] = gate
                self.server.register(job_id, vertex_id, index, gate)
        started = []
        for vertex_id, index in subtasks:
            v = job.vertices[vertex_id]
            ev = dep.region_cancel[vertex_id]
            task = StreamTask(job, v, index, attempt, dep.gates.get((vertex_id, index)),
                              lambda v=v, index=index, ev=ev: self._make_writers(dep, v, index, ev), ev,
                              restore=StateReader(dep.file_system, restore) if restore else None,
                              acknowledge=lambda _j=job_id, _a=attempt, **kw: self._acknowledge(_j, _a, **kw),
                              register_reader=lambda _j=job_id, _a=attempt, _v=vertex_id, _i=index:
                                  self._reader_event("reader_registered", _j, _a, _v, _i),
                              report_splits_finished=lambda ids, _j=job_id, _a=attempt, _v=vertex_id, _i=index:
                                  self._reader_event("splits_finished", _j, _a, _v, _i, split_ids=list(ids)),
                              request_split=lambda _j=job_id, _a=attempt, _v=vertex_id, _i=index:
                                  self._reader_event("split_request", _j, _a, _v, _i))
            dep.tasks[(vertex_id, index)] = task
            started.append(task)
        for task in started:
            threading.Thread(target=self._run_task, args=(dep, task), daemon=True,
                             name=f"task-{task.label}").start()

    def _on_deploy_tasks(self, job_id: str, subtasks: list, attempt: int, restore: dict | None = None) -> None:
        """Deploy some subtasks again into a running deployment (region failover)."""
        dep = self.deployments.get(job_id)
        if dep is not None:
            self._start_tasks(job_id, dep, [tuple(t) for t in subtasks], attempt, restore)

    def _on_cancel_tasks(self, job_id: str, subtasks: list) -> None:
        """Cancel some subtasks (their region's cancel event)."""
        dep = self.deployments.get(job_id)
        if dep is None:
            return
        for vertex_id, index in subtasks:
            task = dep.tasks.get((vertex_id, index))
            if task is not None:
                task.cancel.set()

    def _on_abort_tasks(self, job_id: str, subtasks: list) -> None:
        """Abort the sinks of ended subtasks and forget them and their gates (region failover)."""
        dep = self.deployments.get(job_id)
        error = None
        if dep is not None:
            for vertex_id, index in subtasks:
                task = dep.tasks.pop((vertex_id, index), None)
                dep.gates.pop((vertex_id, index), None)
                self.server.unregister(job_id, vertex_id, index)
                if task is not None:
                    error = self._end_sinks(dep, task, commit=False, final=False) or error  # a restore follows
        self.conn.send("tasks_aborted", job_id=job_id, error=error)

    @staticmethod
    def _end_sinks(dep: _Deployment, task: StreamTask, commit: bool, final: bool) -> str | None:
        """Commit or abort an ended task's sinks; returns an error message, or ``None``.

        Before an abort, the sinks first publish what the newest completed checkpoint
        covers: the task may have ended before it saw that completion notice.
        """
        error = None
        for w in task.sink_writers:
            try:
                if commit:
                    w.commit()
                    continue
                if dep.completed_checkpoint >= 0:
                    w.notify_checkpoint_complete(dep.completed_checkpoint)
                abort_writer(w, discard_pending=final)
            except Exception as exc:  # noqa: BLE001 - reported to the JobManager
                error = f"{'commit' if commit else 'abort'} of {task.label} failed: {exc!r}"
        return error

    def _make_writers(self, dep: _Deployment, vertex, index: int, cancel: threading.Event) -> dict:
        job = dep.job
        network = NetworkConfig.of(job.config)
        credits, batch = network.buffers_per_channel, network.batch_size
        writers = {}
        for e_idx in vertex.output_edges:
            edge = job.edges[e_idx]
            target = job.vertices[edge.target_vertex]
            consumers = [index] if edge.partitioner == "forward" else range(target.parallelism)
            ch_index = job.channel_index(e_idx, index)
            channels = []
            for c in consumers:
                local_gate = dep.gates.get((target.id, c))
                if local_gate is not None:
                    channels.append(LocalChannel(local_gate, ch_index, credits, cancel))
                else:
                    channels.append(RemoteChannel(dep.slot_addresses[c], self.secret, job.job_id,
                                                  target.id, c, ch_index, credits, cancel,
                                                  network.shared_memory_slot_bytes))
            writers[e_idx] = make_writer(
                edge, channels, batch, index, target.max_parallelism, make_aggregator,
                combine_max_keys=int(job.config.get("execution.batch.local-aggregation.max-keys")))
        return writers

    def _run_task(self, dep: _Deployment, task: StreamTask) -> None:
        job_id = dep.job.job_id
        failure = None
        try:
            task.run()
        except Cancelled:
            pass
        except TaskFailure as exc:
            failure = describe_failure(task, exc)
        except BaseException as exc:  # noqa: BLE001 - never let a task thread die silently
            failure = describe_failure(task, TaskFailure(task.vertex.name, repr(exc), repr(exc)))
        committables = None
        if task.state == ExecutionState.FINISHED:  # the file sinks' share of the commit record; others unknown
            committables = [c if isinstance(c, dict) and c.get("kind") == COMMIT_KIND else "other"
                            for c in getattr(task, "committables", [])]
        try:
            self.conn.send("task_state", job_id=job_id, vertex=task.vertex.id,
                           subtask=task.subtask_index, state=task.state, metrics=task.metrics(),
                           failure=failure, attempt=task.attempt, committables=committables)
        except rpc.ConnectionClosed:
            pass  # the JobManager is gone; serve() ends the process

    def _acknowledge(self, job_id: str, attempt: int, **body) -> None:
        try:
            self.conn.send("checkpoint_ack", job_id=job_id, attempt=attempt, **body)
        except rpc.ConnectionClosed:
            pass

    def _reader_event(self, msg: str, job_id: str, attempt: int, vertex: int, subtask: int, **body) -> None:
        """A SplitSource's reader event for its enumerator, from the task's thread:
        ``reader_registered`` (the reader started: ``add_reader``), ``split_request``
        (``handle_split_request``) or ``splits_finished`` (``split_ids``: ``handle_splits_finished``).
        Sent on the same connection as checkpoint acknowledgements (:meth:`_acknowledge`), so a
        report arrives before the acknowledgement of any later snapshot of the subtask."""
        try:
            self.conn.send(msg, job_id=job_id, vertex=vertex, subtask=subtask, attempt=attempt, **body)
        except rpc.ConnectionClosed:
            pass

    def _on_add_splits(self, job_id: str, vertex: int, subtask: int, attempt: int, splits: bytes | None = None,
                       no_more: bool = False) -> None:
        """Splits the enumerator assigned (cloudpickled list), or "no more splits": into the task's
        control queue, in order with the checkpoint triggers."""
        dep = self.deployments.get(job_id)
        task = dep.tasks.get((vertex, subtask)) if dep is not None else None
        if task is None or task.attempt != attempt or task.state not in _NOT_STARTED_OR_RUNNING:
            return  # a failover is under way: the JobManager gives them back (add_splits_back), or
            #         the enumerator restored from the checkpoint assigns them again
        if splits is not None:
            task.control.put(("splits", splits))
        if no_more:
            task.control.put(("no_more_splits", None))

    def _on_trigger_checkpoint(self, job_id: str, checkpoint_id: int, timestamp_ms: int, target: str,
                               savepoint: bool = False) -> None:
        dep = self.deployments.get(job_id)
        if dep is None:
            return
        barrier = CheckpointBarrier(checkpoint_id, timestamp_ms, target, savepoint)
        for task in dep.tasks.values():
            if task.vertex.is_source and task.state in _NOT_STARTED_OR_RUNNING:
                task.control.put(("trigger", barrier))

    def _on_checkpoint_complete(self, job_id: str, checkpoint_id: int) -> None:
        dep = self.deployments.get(job_id)
        if dep is None:
            return
        dep.completed_checkpoint = max(dep.completed_checkpoint, checkpoint_id)
        for task in dep.tasks.values():
            if (task.sink_writers or task._split_reader is not None) and task.state in _NOT_STARTED_OR_RUNNING:
                task.control.put(("notify", checkpoint_id))

    def _on_cancel(self, job_id: str) -> None:
        dep = self.deployments.get(job_id)
        if dep is not None:
            dep.cancel_all()

    def _finish(self, job_id: str, commit: bool, final: bool = True) -> None:
        dep = self.deployments.pop(job_id, None)
        error = None
        if dep is not None:
            self.server.unregister_job(job_id)
            for task in dep.tasks.values():
                error = self._end_sinks(dep, task, commit, final) or error
        self.conn.send("finished_ack", job_id=job_id, commit=commit, error=error,
                       attempt=dep.attempt if dep is not None else -1)

    def _on_commit(self, job_id: str) -> None:
        # a fault-injection point for the tests of the commit record: hold the commit, after the
        # commit point, for this many seconds (tests/integration/test_output_integrity.py)
        pause = float(os.environ.get("EMRFLOW_FAULT_COMMIT_PAUSE_S") or 0)
        if pause > 0:
            time.sleep(pause)
        self._finish(job_id, True)

    def _on_abort(self, job_id: str, final: bool = True) -> None:
        """Abort the job's sinks; ``final=False`` on a failover (a restore follows)."""
        self._finish(job_id, False, final)

    def _on_shutdown(self) -> None:
        self._stop.set()

    def _report_metrics(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                deps = list(self.deployments.items())
            for job_id, dep in deps:
                running = {f"{v}.{i}": dict(t.metrics(), attempt=t.attempt)
                           for (v, i), t in list(dep.tasks.items()) if t.state == ExecutionState.RUNNING}
                if running:
                    try:
                        self.conn.send("metrics", job_id=job_id, tasks=running, attempt=dep.attempt)
                    except rpc.ConnectionClosed:
                        return


#: gen-0 threshold of a slot process (CPython's default is 700)
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for record processing.

    Records are tuples and lists made and dropped by the batch (no cycles), so the
    default gen-0 threshold (700 allocations) runs thousands of collections per
    second that find nothing, and promotes records of batches in flight to older
    generations that are scanned again. A threshold of :data:`GC_GEN0_THRESHOLD` lets a
    batch die before it is looked at; ``gc.freeze()`` moves what exists after a
    deployment (modules, the job graph, user code) out of the collector's reach.
    Called on every deployment: what an earlier job left (its classes are cycles) is
    unfrozen and collected first, so a long-lived slot does not keep it.
    Reference counting, which frees nearly everything, is unaffected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


def main(argv: list[str] | None = None) -> None:
    """Entry point of a slot process."""
    parser = argparse.ArgumentParser(prog="python -m emrflow.runtime.slot")
    parser.add_argument("--jobmanager", required=True, help="HOST:PORT of the JobManager")
    parser.add_argument("--taskmanager-id", required=True)
    parser.add_argument("--slot-index", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address for data connections")
    args = parser.parse_args(argv)
    die_with_parent()
    setup_logging(f"slot {args.taskmanager_id}/{args.slot_index}")
    secret = os.environ.get("EMRFLOW_CLUSTER_SECRET", "")
    host, _, port = args.jobmanager.rpartition(":")
    slot = SlotProcess((host, int(port)), secret, args.taskmanager_id, args.slot_index, args.host)
    slot.serve()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
