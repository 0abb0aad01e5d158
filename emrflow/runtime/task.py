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

import os
import pickle
import sys
import threading
import time
import traceback
from typing import Any, Callable

from emrflow.api import transformations as T
from emrflow.api.functions import RuntimeContext
from emrflow.connectors.base import SubtaskContext
from emrflow.graph.jobgraph import JobGraph, JobVertex
from emrflow.runtime.network.channels import BROKEN, BYTES, EVENT, RECORDS, Cancelled, InputGate
from emrflow.api.eventtime import MAX_WATERMARK, MIN_WATERMARK
from emrflow.runtime.network.events import END_OF_PARTITION, Watermark, WatermarkStatus
from emrflow.runtime.network.writers import FlushTimer, RecordWriter
from emrflow.runtime.operators import Operator, Output, create_operator

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
                 cancel: threading.Event):
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
        self.state = "CREATED"
        self.bad_records = 0
        self.bad_record_samples: list[str] = []
        self.busy_s = 0.0
        self.start_time = time.time()
        self._limit = int(job.config.get("emrflow.bad-records.report-limit", 10))

    @property
    def label(self) -> str:
        """``'<vertex name> (i/n)'``, Flink's task name with subtask."""
        return f"{self.vertex.name} ({self.subtask_index + 1}/{self.vertex.parallelism})"

    # -- metrics -------------------------------------------------------------
    def metrics(self) -> dict:
        """Return this subtask's counters (records per operator, busy and back-pressured time)."""
        ops = {op_id: (op.records_in, op.output.records_out if op.output else 0)
               for op_id, op in self.operators.items()}
        head = self.operators.get(self.vertex.head)
        return {"operators": ops, "bad_records": self.bad_records,
                "bad_record_samples": list(self.bad_record_samples),
                "busy_s": self.busy_s,
                "watermark": head.current_watermark if head is not None else MIN_WATERMARK,
                "backpressured_s": sum(w.backpressured_s for w in self.writers.values())}

    def _report_bad_record(self, path: str, line: int, reason: str) -> None:
        self.bad_records += 1
        if len(self.bad_record_samples) < self._limit:
            self.bad_record_samples.append(f"{path}:{line}: {reason}")

    # -- set-up ----------------------------------------------------------------
    def _subtask_context(self, name: str) -> SubtaskContext:
        return SubtaskContext(operator_name=name, subtask_index=self.subtask_index,
                              parallelism=self.vertex.parallelism, attempt=self.attempt,
                              config=self.job.config, report_bad_record=self._report_bad_record)

    def _build_chain(self) -> None:
        v = self.vertex
        for op_id, node in v.operators.items():
            writer = None
            if node.kind == T.SINK:
                writer = node.function.create_writer(self._subtask_context(node.name))
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
        self.state = "RUNNING"
        current = self.vertex.name
        try:
            self.writers = self._make_writers()
            self._build_chain()
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
            self.state = "FINISHED"
        except Cancelled:
            self.state = "CANCELED"
            self._abort()
            raise
        except BaseException as exc:  # noqa: BLE001 - user code may raise anything
            self.state = "FAILED"
            self._abort()
            if self.cancel.is_set() and not isinstance(exc, TaskFailure):
                # failures caused by the cancellation itself (closed channels)
                self.state = "CANCELED"
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
        for w in self.sink_writers:
            try:
                w.abort()
            except Exception:  # noqa: BLE001 - best effort; the failure is already reported
                pass
        for w in self.writers.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - best effort while failing
                pass

    def _run_source(self, head: Operator) -> None:
        node = self.vertex.operators[self.vertex.head]
        reader = node.function.create_reader(self._subtask_context(node.name))
        streaming = not self.job.batch
        timer = FlushTimer(int(self.job.config.get("execution.buffer-timeout", 100)))
        cancel = self.cancel
        clock = time.perf_counter
        tickers = [op for op in self.operators.values() if op.wants_ticks]
        # a reader may block; only idleness detection needs the clock to go on meanwhile
        needs_clock = any(getattr(op, "needs_clock", False) for op in tickers)
        batches = self._read_ahead(reader, tickers) if needs_clock else reader.read_batches()
        try:
            for batch in batches:
                if cancel.is_set():
                    raise Cancelled()
                t0 = clock()
                head.process_batch(batch)
                if tickers:
                    self._tick(tickers)
                self.busy_s += clock() - t0
                if streaming and timer.due():
                    for w in self.writers.values():
                        w.flush()
        finally:
            reader.close()

    def _read_ahead(self, reader, tickers: list):
        """Read batches in a helper thread, so timers and idleness run while the reader blocks.

        Used only when an operator of the chain must see time pass without records
        (``with_idleness``); at most two batches wait in the queue.
        """
        import queue as _queue
        q: _queue.Queue = _queue.Queue(maxsize=2)
        done = object()

        def pump() -> None:
            try:
                for b in reader.read_batches():
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
        timeout_ms = int(self.job.config.get("execution.buffer-timeout", 100))
        timer = FlushTimer(timeout_ms)
        wait_s = max(timeout_ms, 10) / 1000.0
        process, loads, ack = head.process_batch, pickle.loads, gate.ack
        cancel = self.cancel
        clock = time.perf_counter
        valve = WatermarkValve(gate.num_channels)
        tickers = [op for op in self.operators.values() if op.wants_ticks]
        while open_channels:
            item = gate.get(wait_s)
            tickers = tickers or [op for op in self.operators.values() if op.wants_ticks]
            if item is None:
                for w in self.writers.values():
                    w.flush()
                if tickers:
                    self._tick(tickers)
                continue
            channel, kind, payload = item
            if kind == BYTES:
                t0 = clock()
                process(loads(payload))
                self.busy_s += clock() - t0
            elif kind == RECORDS:
                t0 = clock()
                process(payload)
                self.busy_s += clock() - t0
            elif kind == EVENT:
                if payload is END_OF_PARTITION:
                    open_channels -= 1
                    advanced = valve.finish(channel)
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
