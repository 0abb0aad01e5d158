"""A subtask: one parallel instance of a JobVertex (an operator chain), run in a thread.

The task builds the chain's physical operators, wires their outputs to each
other and to the record writers of outgoing edges, then drives the chain:
a source task pulls batches from its :class:`~emrflow.connectors.base.SourceReader`,
any other task takes buffers and events from its input gate. At the end of
input it lets the chain emit what it held back, sends ``EndOfPartition`` on
every outgoing channel, closes the user functions and prepares its sinks'
commit. Its outcome (FINISHED, FAILED with the user's traceback, CANCELED)
goes to the JobManager through the slot process.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import sys
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from emrflow.api import transformations as T
from emrflow.api.eventtime import MAX_WATERMARK, MIN_WATERMARK
from emrflow.api.functions import RuntimeContext
from emrflow.config_views import BadRecordsConfig, CheckpointConfig, NetworkConfig
from emrflow.connectors.base import SubtaskContext, abort_writer
from emrflow.connectors.metric_group import MetricGroup
from emrflow.fs import FileSystem
from emrflow.graph.jobgraph import JobGraph, JobVertex
from emrflow.runtime import checkpoint as chk
from emrflow.runtime.jobmanager.states import ExecutionState
from emrflow.runtime.network.channels import BROKEN, BYTES, COLUMNS, EVENT, RECORDS, Cancelled, InputGate
from emrflow.runtime.network.columns import ColumnBatch
from emrflow.runtime.network.events import END_OF_PARTITION, CheckpointBarrier, Watermark, WatermarkStatus
from emrflow.runtime.network.writers import FlushTimer, RecordWriter
from emrflow.runtime.operators import Operator, Output, create_operator
from emrflow.runtime.process import set_os_thread_name

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
log = logging.getLogger("emrflow.task")


def format_user_traceback(exc: BaseException) -> str:
    """Format ``exc`` with emrflow's own frames left out, so the user's code stands out."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(_PACKAGE_DIR + os.sep)]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    if cause is not None:
        lines = [format_user_traceback(cause),
                 "\nThe above exception was the direct cause of the following exception:\n\n"] + lines
    return "".join(lines)


class TaskFailure(Exception):
    """A subtask failed; carries which operator and the formatted traceback."""

    def __init__(self, operator: str, traceback_text: str, message: str):
        super().__init__(message)
        self.operator = operator
        self.traceback_text = traceback_text


class StreamTask:
    """Runs subtask ``subtask_index`` of ``vertex``.

    Args:
        job: the job graph.
        vertex: the vertex (operator chain) this task runs.
        subtask_index: 0-based subtask index.
        attempt: restart attempt (0 first).
        gate: the input gate, ``None`` for a source task.
        writers: ``{edge index: RecordWriter}`` for the vertex's outgoing edges,
            created by ``make_writers`` in the task's thread.
        make_writers: ``() -> {edge index: RecordWriter}``, called when the task starts.
        cancel: set to cancel the task.
    """

    def __init__(self, job: JobGraph, vertex: JobVertex, subtask_index: int, attempt: int,
                 gate: InputGate | None, make_writers: Callable[[], dict[int, RecordWriter]],
                 cancel: threading.Event, restore: "chk.StateReader | None" = None,
                 acknowledge: Callable[..., None] | None = None,
                 register_reader: Callable[[], None] | None = None,
                 report_splits_finished: Callable[[list[str]], None] | None = None,
                 request_split: Callable[[], None] | None = None):
        self.job = job
        self.vertex = vertex
        self.subtask_index = subtask_index
        self.attempt = attempt
        self.gate = gate
        self._make_writers = make_writers
        self.cancel = cancel
        self.writers: dict[int, RecordWriter] = {}
        self.operators: dict[int, Operator] = {}
        self.sink_writers: list[Any] = []
        self.state = ExecutionState.CREATED
        self.bad_records = 0
        self.bad_record_samples: list[str] = []
        self.busy_s = 0.0
        self.start_time = time.time()
        self._limit = BadRecordsConfig.of(job.config).report_limit
        self.network = NetworkConfig.of(job.config)
        #: the job's file system (its ``s3.*`` options): checkpoint state, inputs, outputs
        self.file_system = FileSystem.of(job.config)
        # checkpoints (see _checkpoint): every STREAMING task can take part in a savepoint;
        # periodic checkpoints need an interval
        checkpoints = CheckpointConfig.of(job.config)
        self.checkpointing = not job.batch
        self.periodic = checkpoints.periodic and not job.batch
        self._positions_ok = True
        self.exactly_once = checkpoints.exactly_once
        #: ("trigger", CheckpointBarrier) for source tasks, ("notify", checkpoint id) for all
        self.control: queue.SimpleQueue = queue.SimpleQueue()
        self._restore = restore
        self._acknowledge = acknowledge or (lambda **kw: None)
        self._async: ThreadPoolExecutor | None = None
        self._source_position: Any = None
        self._restored_position: Any = None
        # a SplitSource (emrflow.runtime.split_task): its reader, restored splits, registration
        self._register_reader = register_reader or (lambda: None)
        #: tells the JobManager which splits a poll() returned finished (before any later checkpoint ack)
        self._report_splits_finished = report_splits_finished or (lambda split_ids: None)
        #: a split reader asks the JobManager for a split (SubtaskContext.send_split_request)
        self._request_split = request_split or (lambda: None)
        self._split_reader: Any = None
        self._split_stamps: Any = None
        self._restored_splits: list | None = None
        #: operator id -> the metric group its source reader or sink writer registers on
        self.metric_groups: dict[int, MetricGroup] = {}

    @property
    def label(self) -> str:
        """``'<vertex name> (i/n)'``, Flink's task name with subtask."""
        return f"{self.vertex.name} ({self.subtask_index + 1}/{self.vertex.parallelism})"

    # -- metrics -------------------------------------------------------------
    def metrics(self) -> dict:
        """Return this subtask's counters (records per operator, busy and back-pressured time) and, under
        ``"connector"``, each source reader's or sink writer's metric group snapshot by operator id."""
        ops = {op_id: (op.records_in, op.output.records_out if op.output else 0)
               for op_id, op in self.operators.items()}
        head = self.operators.get(self.vertex.head)
        late = {op_id: op.late_records_dropped for op_id, op in self.operators.items()
                if getattr(op, "late_records_dropped", 0)}
        return {"operators": ops, "bad_records": self.bad_records, "late": late,
                "bad_record_samples": list(self.bad_record_samples),
                "busy_s": self.busy_s,
                "watermark": head.current_watermark if head is not None else MIN_WATERMARK,
                "backpressured_s": sum(w.backpressured_s for w in self.writers.values()),
                "connector": {op_id: g.snapshot() for op_id, g in list(self.metric_groups.items())}}

    def _report_bad_record(self, path: str, line: int, reason: str) -> None:
        self.bad_records += 1
        if len(self.bad_record_samples) < self._limit:
            self.bad_record_samples.append(f"{path}:{line}: {reason}")

    # -- set-up ----------------------------------------------------------------
    def _subtask_context(self, node: Any) -> SubtaskContext:
        """The context of the reader or writer of ``node`` (an operator of the chain), with its metric group."""
        group = self.metric_groups[node.id] = MetricGroup()
        return SubtaskContext(operator_name=node.name, subtask_index=self.subtask_index,
                              parallelism=self.vertex.parallelism, attempt=self.attempt,
                              config=self.job.config, report_bad_record=self._report_bad_record,
                              checkpointing=self.periodic, job_id=self.job.job_id,
                              file_system=self.file_system, metric_group=group,
                              send_split_request=self._request_split)

    def _build_chain(self) -> None:
        v = self.vertex
        for op_id, node in v.operators.items():
            writer = None
            if node.kind == T.SINK:
                writer = node.function.create_writer(self._subtask_context(node))
                self.sink_writers.append(writer)
            self.operators[op_id] = create_operator(node, self.job.batch, v.max_parallelism, writer,
                                                    self.job.config)
        for op_id, node in v.operators.items():
            op = self.operators[op_id]
            op.next_operators = [self.operators[i] for i in node.chained_outputs]
            op.output = Output(list(op.next_operators), [self.writers[e] for e in node.edge_outputs])
            for tag in set(node.side_chained) | set(node.side_edges):
                side_ops = [self.operators[i] for i in node.side_chained.get(tag, [])]
                op.next_operators.extend(side_ops)
                op.side_outputs[tag] = Output(side_ops, [self.writers[e] for e in node.side_edges.get(tag, [])])
        for op_id in reversed(list(v.operators)):
            op = self.operators[op_id]
            op.open(RuntimeContext(op.name, self.subtask_index, v.parallelism, v.max_parallelism,
                                   self.attempt, self.job.config))

    # -- execution ---------------------------------------------------------------
    def run(self) -> None:
        """Execute the subtask; sets ``state`` to FINISHED, or raises.

        Raises:
            Cancelled: the task was cancelled.
            TaskFailure: user code or a channel failed.
        """
        self.state = ExecutionState.RUNNING
        current = self.vertex.name
        suffix = f" {self.subtask_index + 1}/{self.vertex.parallelism}"
        set_os_thread_name(self.vertex.name[:max(15 - len(suffix), 1)] + suffix)
        try:
            self.writers = self._make_writers()
            self._build_chain()
            if self._restore is not None:
                self._restore_state()
            head = self.operators[self.vertex.head]
            current = head.name
            if self.vertex.is_source:
                self._run_source(head)
                # a bounded input ends event time: every event-time timer and window fires
                head.process_watermark(MAX_WATERMARK)
            else:
                self._run_gate(head)
            current = self.vertex.name
            head.end_input()
            for w in self.writers.values():
                w.end_input()
                w.broadcast_event(END_OF_PARTITION)
            for op in self.operators.values():
                current = op.name
                op.close()
            self.committables = [w.prepare_commit() for w in self.sink_writers]
            for w in self.writers.values():
                w.close()
            self._drain_async()
            self.state = ExecutionState.FINISHED
        except Cancelled:
            self.state = ExecutionState.CANCELED
            self._abort()
            raise
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything
            self.state = ExecutionState.FAILED
            self._abort()
            if self.cancel.is_set() and not isinstance(exc, TaskFailure):
                # failures caused by the cancellation itself (closed channels)
                self.state = ExecutionState.CANCELED
                raise Cancelled() from exc
            if isinstance(exc, TaskFailure):
                raise
            op_name = self._failing_operator(exc) or current
            raise TaskFailure(op_name, format_user_traceback(exc),
                              f"{type(exc).__name__}: {exc}") from exc


    def _failing_operator(self, exc: BaseException) -> str | None:
        """Find the operator whose user function raised, from the traceback's frames."""
        tb = exc.__traceback__
        found = None
        while tb is not None:
            obj = tb.tb_frame.f_locals.get("self")
            if isinstance(obj, Operator):
                found = obj.name
            tb = tb.tb_next
        return found

    def _abort(self) -> None:
        if self._async is not None:
            self._async.shutdown(wait=False, cancel_futures=True)
        for w in self.sink_writers:
            try:
                # files of checkpoints stay: one may have completed, a restore decides
                abort_writer(w, discard_pending=not self.checkpointing)
            except Exception:  # noqa: BLE001 - best effort; the failure is already reported
                pass
        for w in self.writers.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - best effort while failing
                pass

    def _run_source(self, head: Operator) -> None:
        node = self.vertex.operators[self.vertex.head]
        if is_split_source(node.function):
            from emrflow.runtime.split_task import run_split_source
            run_split_source(self, head, node)
            return
        reader = node.function.create_reader(self._subtask_context(node))
        streaming = not self.job.batch
        timer = FlushTimer(self.network.buffer_timeout_ms)
        cancel = self.cancel
        clock = time.perf_counter
        tickers = [op for op in self.operators.values() if op.wants_ticks]
        # a reader may block; only idleness detection needs the clock to go on meanwhile
        needs_clock = any(getattr(op, "needs_clock", False) for op in tickers)
        if self._restored_position is not None:
            reader.restore_position(self._restored_position)
        checkpointing, control = self.checkpointing, self.control
        if checkpointing:
            self._check_checkpointable(reader, node)
            batches = self._with_positions(reader)
        else:
            batches = reader.read_batches()
        if needs_clock:
            batches = self._read_ahead(batches, tickers)
        try:
            for batch in batches:
                if cancel.is_set():
                    raise Cancelled()
                if checkpointing:
                    batch, self._source_position = batch
                t0 = clock()
                head.process_batch(batch)
                if tickers:
                    self._tick(tickers)
                self.busy_s += clock() - t0
                if streaming and timer.due():
                    for w in self.writers.values():
                        w.flush()
                if checkpointing and not control.empty():
                    self._on_control()
        finally:
            reader.close()

    def _with_positions(self, reader):
        """Pair each batch with the reader's position after it (taken while the reader is suspended)."""
        if not self._positions_ok:
            for batch in reader.read_batches():
                yield batch, None
            return
        position = reader.snapshot_position
        for batch in reader.read_batches():
            yield batch, position()

    def _check_checkpointable(self, reader, node) -> None:
        if getattr(reader, "checkpointable", False):  # a reader of its own kind may lack the attribute
            self._source_position = reader.snapshot_position()
            return
        if self.periodic:
            raise TaskFailure(node.name, "", f"source {node.name!r} ({type(node.function).__name__}) "
                              "cannot checkpoint its read position, so a job reading it cannot take "
                              "checkpoints; unset execution.checkpointing.interval")
        self._positions_ok = False

    def _read_ahead(self, batches, tickers: list):
        """Read batches in a helper thread, so timers and idleness run while the reader blocks.

        Used only when an operator of the chain must see time pass without records
        (``with_idleness``); at most two batches wait in the queue.
        """
        import queue as _queue
        q: _queue.Queue = _queue.Queue(maxsize=2)
        done = object()

        def pump() -> None:
            try:
                for b in batches:
                    while True:
                        try:
                            q.put(b, timeout=0.2)
                            break
                        except _queue.Full:
                            if self.cancel.is_set():
                                return
                q.put(done)
            except BaseException as exc:  # noqa: BLE001 - handed to the task thread
                q.put(exc)

        threading.Thread(target=pump, daemon=True, name=f"reader-{self.label}").start()
        while True:
            try:
                item = q.get(timeout=0.02)
            except _queue.Empty:
                if self.cancel.is_set():
                    raise Cancelled() from None
                self._tick(tickers)
                continue
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _tick(self, tickers: list) -> None:
        now = int(time.time() * 1000)
        for op in tickers:
            op.tick(now)

    def _run_gate(self, head: Operator) -> None:
        gate = self.gate
        open_channels = gate.num_channels
        streaming = not self.job.batch
        timeout_ms = self.network.buffer_timeout_ms
        timer = FlushTimer(timeout_ms)
        wait_s = max(timeout_ms, 10) / 1000.0
        process, loads, ack = head.process_batch, pickle.loads, gate.ack
        columns = head.takes_columns
        cancel = self.cancel
        clock = time.perf_counter
        valve = WatermarkValve(gate.num_channels)
        tickers = [op for op in self.operators.values() if op.wants_ticks]
        checkpointing, control = self.checkpointing, self.control
        align = _Alignment(gate.num_channels, self.exactly_once)
        replay = align.replay
        while open_channels:
            item = replay.popleft() if replay else gate.get(wait_s)
            tickers = tickers or [op for op in self.operators.values() if op.wants_ticks]
            if checkpointing and not control.empty():
                self._on_control()
            if item is None:
                for w in self.writers.values():
                    w.flush()
                if tickers:
                    self._tick(tickers)
                continue
            channel, kind, payload = item
            if align.blocked and channel in align.blocked:
                align.held.append(item)  # not acknowledged: its producer runs out of credit
                continue
            if kind == BYTES:
                t0 = clock()
                process(loads(payload))
                self.busy_s += clock() - t0
            elif kind == RECORDS or kind == COLUMNS:
                t0 = clock()
                if kind == COLUMNS:
                    payload = ColumnBatch.from_bytes(payload)
                if type(payload) is ColumnBatch:
                    for part in payload.slices():  # processed while its records are in cache
                        process(part if columns else part.rows())
                else:
                    process(payload)
                self.busy_s += clock() - t0
            elif kind == EVENT:
                if type(payload) is CheckpointBarrier:
                    advanced = None
                    if align.barrier(channel, payload):
                        self._checkpoint(align.current)
                        align.complete()
                elif payload is END_OF_PARTITION:
                    open_channels -= 1
                    advanced = valve.finish(channel)
                    if align.finish(channel):
                        self._checkpoint(align.current)
                        align.complete()
                elif type(payload) is Watermark:
                    advanced = valve.watermark(channel, payload.timestamp_ms)
                elif type(payload) is WatermarkStatus:
                    advanced = valve.status(channel, payload.idle)
                    if valve.idle_changed():
                        head.process_watermark_status(valve.all_idle)
                else:
                    advanced = None
                if advanced is not None:
                    t0 = clock()
                    head.process_watermark(advanced)
                    self.busy_s += clock() - t0
            elif kind == BROKEN:
                raise TaskFailure(head.name, payload + "\n", payload)
            ack(channel)
            if tickers:
                self._tick(tickers)
            if cancel.is_set():
                raise Cancelled()
            if streaming and timer.due():
                for w in self.writers.values():
                    w.flush()


    # -- checkpoints ---------------------------------------------------------------
    def _on_control(self) -> None:
        """Handle checkpoint triggers (source tasks) and completion notices, between batches."""
        while True:
            try:
                what, arg = self.control.get_nowait()
            except queue.Empty:
                return
            if what == "trigger":
                if not self._positions_ok:
                    self._ack(arg.checkpoint_id, None, f"source {self.vertex.name!r} cannot checkpoint "
                              "its read position")
                    continue
                self._checkpoint(arg)
            elif what == "notify":
                for w in self.sink_writers:
                    w.notify_checkpoint_complete(arg)
                if self._split_reader is not None:
                    self._split_reader.notify_checkpoint_complete(arg)
            elif what in ("splits", "no_more_splits"):
                from emrflow.runtime.split_task import on_split_control
                on_split_control(self, what, arg)

    def _checkpoint(self, barrier: CheckpointBarrier) -> None:
        """Snapshot every operator of the chain, forward the barrier, write and acknowledge asynchronously.

        The synchronous part (operator snapshots, the barrier sent downstream) runs
        here, in the task thread; writing the state file and acknowledging to the
        JobManager run in a background thread while records flow again.
        """
        t0 = time.perf_counter()
        snaps: dict[str, Any] = {}
        described: dict[str, dict] = {}
        v = self.vertex
        for op_id, op in self.operators.items():
            node = v.operators[op_id]
            uid = chk.operator_uid(node)
            if node.kind == T.SOURCE and self._split_reader is not None:
                from emrflow.runtime.split_task import snapshot_splits
                snap = snapshot_splits(self._split_reader, barrier.checkpoint_id)
            elif node.kind == T.SOURCE:
                snap = pickle.dumps({"position": self._source_position}, protocol=5)
            else:
                snap = op.snapshot_state(barrier.checkpoint_id)
            if snap is not None:
                snaps[uid] = snap
                described[uid] = {"parallelism": v.parallelism, "max_parallelism": v.max_parallelism,
                                  "name": node.name, "kind": node.kind}
        for w in self.writers.values():
            w.broadcast_event(barrier)
        sync_ms = (time.perf_counter() - t0) * 1000
        if self._async is None:
            self._async = ThreadPoolExecutor(1, thread_name_prefix=f"checkpoint-{self.label}")
        self._async.submit(self._write_snapshot, barrier, snaps, described, sync_ms)

    def _write_snapshot(self, barrier: CheckpointBarrier, snaps: dict, described: dict,
                        sync_ms: float) -> None:
        t0 = time.perf_counter()
        try:
            data = {uid: (s() if callable(s) else s) for uid, s in snaps.items()}
            entry = chk.write_task_state(self.file_system, barrier.target, self.vertex.id, self.subtask_index, data)
        except Exception as exc:  # noqa: BLE001 - the checkpoint is declined, the job goes on
            log.warning("%s: checkpoint %d failed: %r", self.label, barrier.checkpoint_id, exc)
            self._ack(barrier.checkpoint_id, None, repr(exc))
            return
        entry.update(vertex=self.vertex.id, subtask=self.subtask_index, operators=described,
                     sync_ms=round(sync_ms, 3), async_ms=round((time.perf_counter() - t0) * 1000, 3))
        self._ack(barrier.checkpoint_id, entry, None)

    def _ack(self, checkpoint_id: int, entry: dict | None, error: str | None) -> None:
        """Acknowledge checkpoint ``checkpoint_id`` with this subtask's state file, or decline it."""
        self._acknowledge(checkpoint_id=checkpoint_id, vertex=self.vertex.id, subtask=self.subtask_index,
                          entry=entry, error=error)

    def _drain_async(self) -> None:
        if self._async is not None:
            self._async.shutdown(wait=True)

    def _restore_state(self) -> None:
        """Load the chain's operators' state from the checkpoint being restored (before any record)."""
        reader, v, i = self._restore, self.vertex, self.subtask_index
        for op_id, op in self.operators.items():
            node = v.operators[op_id]
            uid = chk.operator_uid(node)
            try:
                found = reader.parts(uid, i, v.parallelism)
            except Exception as exc:  # noqa: BLE001 - unreadable state names the operator
                raise TaskFailure(node.name, "", f"cannot read the state of {node.name!r} (uid {uid}) "
                                  f"from {reader.plan['path']}: {exc!r}") from exc
            if found is None:
                continue
            parts, key_groups, old_p = found
            if node.kind == T.SOURCE and is_split_source(node.function):
                from emrflow.runtime.split_task import restored_splits
                self._restored_splits = restored_splits(reader, uid, i, v.parallelism)
                continue
            if node.kind == T.SOURCE:
                if old_p != v.parallelism:
                    raise TaskFailure(node.name, "", f"source {node.name!r} ran at parallelism {old_p} "
                                      f"in {reader.plan['path']}, now {v.parallelism}: its read "
                                      "positions cannot be redistributed; keep the source's parallelism "
                                      "(set_parallelism on the source) and change the others'")
                if parts:
                    self._restored_position = pickle.loads(parts[0][1])["position"]
                continue
            if op.keyed_state:
                op.restore_state([b for _, b in parts], key_groups)
            else:  # operator state: former subtask j goes to subtask j mod parallelism
                mine = [b for j, b in parts if key_groups is None or j % v.parallelism == i]
                op.restore_state(mine, None)


def is_split_source(source: Any) -> bool:
    """True for a :class:`~emrflow.connectors.splits.SplitSource` (its enumerator runs in the JobManager)."""
    from emrflow.connectors.splits import SplitSource
    return isinstance(source, SplitSource)


class _Alignment:
    """Checkpoint barrier alignment at a task with several input channels (Flink's barrier handlers).

    Exactly-once: a channel that delivered the barrier of the checkpoint being
    aligned is blocked (its items are held back, unacknowledged) until every open
    channel delivered it; then the task snapshots and the held items are replayed.
    At-least-once: nothing is blocked; the task snapshots when the last barrier
    arrives. A barrier of a newer checkpoint abandons an unfinished alignment.
    """

    def __init__(self, num_channels: int, exactly_once: bool):
        self.n = num_channels
        self.exactly_once = exactly_once
        self.current: CheckpointBarrier | None = None
        self.seen: set[int] = set()
        self.finished: set[int] = set()
        self.blocked: set[int] = set()
        self.held: list = []
        self.replay = deque()
        self.last_done = -1

    def _aligned(self) -> bool:
        return self.current is not None and len(self.seen | self.finished) >= self.n

    def barrier(self, channel: int, b: CheckpointBarrier) -> bool:
        """A barrier arrived; True when the checkpoint is aligned and the task must snapshot."""
        cid = b.checkpoint_id
        if cid <= self.last_done or (self.current is not None and cid < self.current.checkpoint_id):
            return False  # stale: an abandoned or finished checkpoint
        if self.current is None or cid > self.current.checkpoint_id:
            self._release()
            self.current = b
            self.seen = set()
        self.seen.add(channel)
        if self.exactly_once:
            self.blocked.add(channel)
        return self._aligned()

    def finish(self, channel: int) -> bool:
        """A channel ended; True if that completes an alignment in progress."""
        self.finished.add(channel)
        return self._aligned()

    def complete(self) -> None:
        """The snapshot was taken: unblock and replay the held items."""
        self.last_done = self.current.checkpoint_id
        self.current = None
        self._release()

    def _release(self) -> None:
        self.blocked = set()
        if self.held:
            self.replay.extend(self.held)
            self.held = []


class WatermarkValve:
    """A task's event time from its input channels' watermarks (Flink's ``StatusWatermarkValve``).

    The task's watermark is the minimum over channels that are neither idle nor
    finished; it only moves forward. When every open channel is idle nothing
    advances and the task itself is idle.
    """

    def __init__(self, num_channels: int):
        self.wms = [MIN_WATERMARK] * num_channels
        self.idle = [False] * num_channels
        self.done = [False] * num_channels
        self.current = MIN_WATERMARK
        self.all_idle = False
        self._was_idle = False

    def _advance(self) -> int | None:
        live = [w for w, i, d in zip(self.wms, self.idle, self.done) if not i and not d]
        if not live:
            if all(self.done):
                low = max(self.wms) if self.wms else MAX_WATERMARK
            else:
                return None
        else:
            low = min(live)
        if low > self.current:
            self.current = low
            return low
        return None

    def watermark(self, channel: int, ts: int) -> int | None:
        """Channel ``channel`` reached ``ts``; returns the task's new watermark, if it advanced."""
        if ts > self.wms[channel]:
            self.wms[channel] = ts
        if self.idle[channel]:
            self.idle[channel] = False
        return self._advance()

    def status(self, channel: int, idle: bool) -> int | None:
        """Channel ``channel`` went idle or active."""
        self.idle[channel] = idle
        open_idle = [i for i, d in zip(self.idle, self.done) if not d]
        self.all_idle = bool(open_idle) and all(open_idle)
        return None if idle is False else self._advance()

    def idle_changed(self) -> bool:
        """True once each time the task as a whole turned idle or active."""
        changed = self.all_idle != self._was_idle
        self._was_idle = self.all_idle
        return changed

    def finish(self, channel: int) -> int | None:
        """Channel ``channel`` ended: it no longer holds event time back."""
        self.done[channel] = True
        return self._advance()


def describe_failure(task: StreamTask, failure: TaskFailure) -> dict:
    """Return the failure report a slot sends to the JobManager."""
    return {"operator": failure.operator, "subtask_index": task.subtask_index,
            "parallelism": task.vertex.parallelism, "task": task.label,
            "message": str(failure), "traceback": failure.traceback_text,
            "python": sys.version.split()[0]}
