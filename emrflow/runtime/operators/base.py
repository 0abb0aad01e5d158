"""The operator base class and what every operator shares.

An operator receives a list of records in :meth:`Operator.process_batch` and
hands lists to its :class:`Output`, which calls the chained operators'
``process_batch`` directly and the record writers of outgoing edges: no queue
and no serialisation inside an operator chain. Records of a stream with event
time are ``(timestamp ms, value)`` pairs; user functions only see the value.
:meth:`Operator.process_watermark` moves event time forward (timers and windows
fire there) and :meth:`Operator.end_input` runs once when the input is
exhausted (BATCH-mode aggregations emit there).

A class builds itself from a JobGraph node with :meth:`Operator.from_node`;
:func:`emrflow.runtime.operators.create_operator` picks the class by the node's kind.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, Callable

from emrflow.api.eventtime import MIN_WATERMARK
from emrflow.api.functions import (
    Function,
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
)
from emrflow.config import Configuration
from emrflow.errors import JobGraphError
from emrflow.graph.keygroups import assign_to_key_group
from emrflow.runtime.network.events import Watermark, WatermarkStatus


@dataclass(frozen=True)
class OperatorSetup:
    """What a task knows when it builds an operator, besides the node itself.

    Attributes:
        batch: the job runs in BATCH mode.
        max_parallelism: the vertex's number of key groups.
        sink_writer: for a sink, the writer the task made for it, else ``None``.
        config: the job's :class:`~emrflow.config.Configuration`.
    """

    batch: bool = False
    max_parallelism: int = 128
    sink_writer: Any = None
    config: Configuration = field(default_factory=Configuration)

    @property
    def backend_kind(self) -> str:
        """The keyed state backend, ``state.backend.type`` (``hashmap`` or ``rocksdb``)."""
        return str(self.config.get("state.backend.type"))


class Output:
    """Fans an operator's output batches out to chained operators and record writers.

    Watermarks and watermark-status changes go the same way: chained operators get
    ``process_watermark``, record writers send the event in-band on every channel.
    """

    __slots__ = ("ops", "writers", "records_out", "emit")

    def __init__(self, ops: list, writers: list):
        self.ops = ops
        self.writers = writers
        self.records_out = 0
        targets = [op.process_batch for op in ops] + [w.write_batch for w in writers]
        if len(targets) == 1:
            only = targets[0]

            def emit(records: list) -> None:
                if records:
                    self.records_out += len(records)
                    only(records)
        else:
            def emit(records: list) -> None:
                if records:
                    self.records_out += len(records)
                    for t in targets:
                        t(records)
        self.emit = emit

    def emit_watermark(self, timestamp_ms: int) -> None:
        """Send a watermark to every target."""
        for op in self.ops:
            op.process_watermark(timestamp_ms)
        if self.writers:
            ev = Watermark(timestamp_ms)
            for w in self.writers:
                w.broadcast_event(ev)

    def emit_status(self, idle: bool) -> None:
        """Tell every target that this stream went idle or became active."""
        for op in self.ops:
            op.process_watermark_status(idle)
        if self.writers:
            ev = WatermarkStatus(idle)
            for w in self.writers:
                w.broadcast_event(ev)


class Operator:
    """Base of the physical operators.

    Attributes:
        name: the operator's name (for metrics and errors).
        timestamped: input records are ``(timestamp ms, value)`` pairs.
        records_in: records received so far.
        output: where results go; set by the task before :meth:`open`.
        side_outputs: outputs of side-output tags that have consumers.
        next_operators: chained operators, so :meth:`end_input` can move down the chain.
        current_watermark: the last watermark received (ms).
    """

    #: operators that need :meth:`tick` calls (processing-time timers, periodic watermarks)
    wants_ticks = False
    #: :meth:`process_batch` takes a :class:`~emrflow.runtime.network.columns.ColumnBatch` as it
    #: crossed the exchange (else the task hands over its rows)
    takes_columns = False
    #: state is keyed (redistributed by key group when rescaled); else operator state,
    #: which a rescaled job hands out round-robin by former subtask index
    keyed_state = True

    def __init__(self, name: str, function: Any, timestamped: bool = False):
        self.name = name
        self.function = function
        self.timestamped = timestamped
        self.records_in = 0
        self.output: Output | None = None
        self.side_outputs: dict[str, Output] = {}
        self.next_operators: list["Operator"] = []
        self.current_watermark = MIN_WATERMARK

    @classmethod
    def from_node(cls, node: Any, setup: OperatorSetup) -> "Operator":
        """Build the operator of a JobGraph :class:`~emrflow.graph.jobgraph.OperatorNode`.

        The default suits operators that take ``(name, function, timestamped)``.
        """
        return cls(node.name, node.function, node.timestamped)

    def open(self, ctx: RuntimeContext) -> None:
        """Open the user function (``Function.open``)."""
        if isinstance(self.function, Function):
            self.function.open(ctx)

    def process_batch(self, records: list) -> None:
        """Process a list of records; subclasses emit through ``self.output.emit``."""
        self.records_in += len(records)
        self.output.emit(records)

    def process_watermark(self, timestamp_ms: int) -> None:
        """Event time advanced to ``timestamp_ms``: fire what is due, then forward it."""
        self.current_watermark = timestamp_ms
        self.output.emit_watermark(timestamp_ms)
        for out in self.side_outputs.values():
            out.emit_watermark(timestamp_ms)

    def process_watermark_status(self, idle: bool) -> None:
        """Forward an idle/active change of the input."""
        self.output.emit_status(idle)

    def tick(self, now_ms: int) -> None:
        """Called regularly with the wall-clock time (ms) when :attr:`wants_ticks` is set."""

    def end_input(self) -> None:
        """Input is exhausted: emit what is held back, then tell the chained operators."""
        for op in self.next_operators:
            op.end_input()

    def emit_side(self, tag: str, records: list) -> None:
        """Emit to side output ``tag`` (dropped if nothing consumes it, as in Flink)."""
        out = self.side_outputs.get(tag)
        if out is not None:
            out.emit(records)

    def close(self) -> None:
        """Close the user function (``Function.close``)."""
        if isinstance(self.function, Function):
            self.function.close()

    # -- checkpoints ------------------------------------------------------------------
    def snapshot_state(self, checkpoint_id: int) -> bytes | Callable[[], bytes] | None:
        """Snapshot the operator's state at a checkpoint barrier (Flink's ``snapshotState``).

        ``checkpoint_id`` numbers the checkpoint (savepoints included). Runs in the task thread while the
        task is stopped at the barrier (the synchronous part). Returns ``None`` (no state), the snapshot as bytes, or a
        function that produces the bytes later in a background thread (the
        asynchronous part), which must not read anything the task changes meanwhile.
        """
        return None

    def restore_state(self, parts: list[bytes], key_groups: range | None) -> None:
        """Load state from snapshots before the first record (Flink's ``initializeState``).

        Args:
            parts: :meth:`snapshot_state` outputs of the former subtasks this subtask
                takes state from (one at the same parallelism; all after rescaling).
            key_groups: the key groups this subtask owns when rescaled, else ``None``.
        """



class ProcessContext(ProcessFunction.Context, KeyedProcessFunction.Context,
                      KeyedProcessFunction.OnTimerContext):
    """The ``ctx`` of process functions: timestamp, key, timers, side outputs.

    Side outputs are collected per batch; the operator calls :meth:`flush_side` after it.
    """

    def __init__(self, op: Operator, timers: Any = None):
        self.current_key: Any = None
        self.ts: int | None = None
        self.domain: str | None = None
        self._op = op
        self._timers = timers
        self.side: dict[str, list] = {}

    def get_current_key(self) -> Any:
        return self.current_key

    def timestamp(self) -> int | None:
        return self.ts

    def time_domain(self) -> str:
        return self.domain

    def timer_service(self) -> Any:
        if self._timers is None:
            raise JobGraphError("timers need a KeyedProcessFunction on a KeyedStream")
        return self._timers

    def output(self, output_tag: Any, value: Any) -> None:
        """Emit ``value`` to the side output ``output_tag``."""
        tag = output_tag.tag_id if isinstance(output_tag, OutputTag) else str(output_tag)
        self.side.setdefault(tag, []).append((self.ts, value) if self._op.timestamped else value)

    def flush_side(self) -> None:
        if self.side:
            side, self.side = self.side, {}
            for tag, records in side.items():
                self._op.emit_side(tag, records)


def keyed_snapshot(backend, timers: Any) -> Callable[[], bytes]:
    """A keyed operator's snapshot: its backend's entries and its live ``timers`` (picklable).

    The timers are serialised now (synchronous part); the backend's entries when the
    returned function runs (asynchronous part, see ``KeyedStateBackend.snapshot``).
    """
    take = backend.snapshot()
    frozen = pickle.dumps(timers, protocol=5)
    return lambda: pickle.dumps((take(), frozen), protocol=5)


def keyed_restore(backend, parts: list[bytes], key_groups: range | None,
                  restore_timers: Callable[[Any, Callable[[Any], bool]], None]) -> None:
    """Restore :func:`keyed_snapshot` outputs: timers through ``restore_timers(timers, keep)``,
    where ``keep(key)`` tells whether a key belongs to ``key_groups``, then the backend."""
    keep = key_filter(key_groups, backend.max_parallelism)
    states = []
    for raw in parts:
        backend_bytes, timers = pickle.loads(raw)
        states.append(backend_bytes)
        restore_timers(pickle.loads(timers), keep)
    backend.restore(states, key_groups)


def key_filter(key_groups: range | None, max_parallelism: int) -> Callable[[Any], bool]:
    """Return ``key -> bool``: is the key in ``key_groups`` (always true for ``None``)."""
    if key_groups is None:
        return lambda key: True
    return lambda key: assign_to_key_group(key, max_parallelism) in key_groups


