"""Physical operators: what runs inside a task, one batch of records at a time.

An operator receives a list of records in :meth:`Operator.process_batch` and
hands lists to its :class:`Output`, which calls the chained operators'
``process_batch`` directly and the record writers of outgoing edges: no queue
and no serialisation inside an operator chain. Records of a stream with event
time are ``(timestamp ms, value)`` pairs; user functions only see the value.
:meth:`Operator.process_watermark` moves event time forward (timers and windows
fire there) and :meth:`Operator.end_input` runs once when the input is
exhausted (BATCH-mode aggregations emit there).

There are few physical operators; the DataStream API's aggregations (sum, min,
max, min_by, max_by, reduce) all run in :class:`KeyedAggregateOperator` through
an :class:`~emrflow.runtime.aggregators.Aggregator`, windows in
:class:`~emrflow.runtime.window.WindowOperator`.
"""

from __future__ import annotations

import heapq
import pickle
import time
from typing import Any, Callable

from emrflow.api import transformations as T
from emrflow.api.eventtime import MAX_WATERMARK, MIN_WATERMARK
from emrflow.api.functions import (
    FilterFunction,
    FlatMapFunction,
    Function,
    KeyedProcessFunction,
    MapFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
    TimeDomain,
)
from emrflow.graph.keygroups import assign_to_key_group
from emrflow.runtime.aggregators import make_aggregator
from emrflow.runtime.network.events import Watermark, WatermarkStatus
from emrflow.runtime.state import create_backend


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


class MapOperator(Operator):
    def open(self, ctx: RuntimeContext) -> None:
        super().open(ctx)
        self._call = self.function.map if isinstance(self.function, MapFunction) else self.function

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        if self.timestamped:
            call = self._call
            self.output.emit([(t, call(v)) for t, v in records])
        else:
            self.output.emit(list(map(self._call, records)))


class FlatMapOperator(Operator):
    def open(self, ctx: RuntimeContext) -> None:
        super().open(ctx)
        self._call = (self.function.flat_map if isinstance(self.function, FlatMapFunction)
                      else self.function)

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        out: list = []
        extend = out.extend
        if self.timestamped:
            call = self._call
            for t, v in records:
                results = call(v)
                if results is not None:
                    extend([(t, r) for r in results])
        else:
            for results in map(self._call, records):
                if results is not None:
                    extend(results)
        self.output.emit(out)


class FilterOperator(Operator):
    def open(self, ctx: RuntimeContext) -> None:
        super().open(ctx)
        self._call = (self.function.filter if isinstance(self.function, FilterFunction)
                      else self.function)

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        call = self._call
        if self.timestamped:
            self.output.emit([r for r in records if call(r[1])])
        else:
            self.output.emit([r for r in records if call(r)])


class _ProcessContext(ProcessFunction.Context, KeyedProcessFunction.Context,
                      KeyedProcessFunction.OnTimerContext):
    """The ``ctx`` of process functions: timestamp, key, timers, side outputs."""

    def __init__(self, op: Operator, timers: "TimerService | None" = None):
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

    def timer_service(self) -> "TimerService":
        if self._timers is None:
            from emrflow.errors import JobGraphError
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


class ProcessOperator(Operator):
    def open(self, ctx: RuntimeContext) -> None:
        super().open(ctx)
        fn = self.function
        self._call = fn.process_element if isinstance(fn, ProcessFunction) else fn
        self._ctx = _ProcessContext(self)

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        call, ctx = self._call, self._ctx
        out: list = []
        if self.timestamped:
            for t, v in records:
                ctx.ts = t
                res = call(v, ctx)
                if res is not None:
                    out.extend([(t, r) for r in res])
        else:
            for r in records:
                res = call(r, ctx)
                if res is not None:
                    out.extend(res)
        self.output.emit(out)
        ctx.flush_side()


class TimerService:
    """Event- and processing-time timers per key (Flink's ``TimerService``).

    A timer is ``(time ms, key)``; registering it twice keeps one. Timers fire in
    time order: event-time ones when the watermark reaches them, processing-time
    ones when the wall clock does (checked on every task tick).
    """

    def __init__(self, op: "KeyedProcessOperator"):
        self._op = op
        self.event: list = []
        self.event_set: set = set()
        self.proc: list = []
        self.proc_set: set = set()
        self._seq = 0

    def _push(self, heap: list, members: set, time_ms: int) -> None:
        key = self._op.backend.current_key
        entry = (time_ms, key)
        if entry in members:
            return
        members.add(entry)
        self._seq += 1
        heapq.heappush(heap, (time_ms, self._seq, key))

    def register_event_time_timer(self, time_ms: int) -> None:
        """Call ``on_timer`` when the watermark reaches ``time_ms``."""
        self._push(self.event, self.event_set, int(time_ms))

    def register_processing_time_timer(self, time_ms: int) -> None:
        """Call ``on_timer`` when the wall clock reaches ``time_ms`` (epoch ms)."""
        self._push(self.proc, self.proc_set, int(time_ms))
        self._op.wants_ticks = True

    def delete_event_time_timer(self, time_ms: int) -> None:
        self.event_set.discard((int(time_ms), self._op.backend.current_key))

    def delete_processing_time_timer(self, time_ms: int) -> None:
        self.proc_set.discard((int(time_ms), self._op.backend.current_key))

    def current_watermark(self) -> int:
        return self._op.current_watermark

    def current_processing_time(self) -> int:
        return int(time.time() * 1000)

    def snapshot(self) -> tuple[list, list]:
        """Return the live timers: ``([(time, key)] event time, [(time, key)] processing time)``."""
        return list(self.event_set), list(self.proc_set)

    def restore(self, event: list, proc: list, keep: Callable[[Any], bool]) -> None:
        """Re-register restored timers whose key ``keep(key)`` accepts."""
        for heap, members, timers in ((self.event, self.event_set, event), (self.proc, self.proc_set, proc)):
            for t, key in timers:
                if keep(key) and (t, key) not in members:
                    members.add((t, key))
                    self._seq += 1
                    heapq.heappush(heap, (t, self._seq, key))
        if self.proc:
            self._op.wants_ticks = True

    @staticmethod
    def due(heap: list, members: set, upto: int):
        """Pop and yield ``(time, key)`` of live timers ``<= upto``, in time order."""
        while heap and heap[0][0] <= upto:
            t, _, key = heapq.heappop(heap)
            if (t, key) in members:
                members.discard((t, key))
                yield t, key


class KeyedProcessOperator(Operator):
    """Runs a :class:`KeyedProcessFunction` with keyed state, timers and side outputs."""

    def __init__(self, name: str, function: Any, key_selector: Callable, max_parallelism: int,
                 timestamped: bool = False, backend_kind: str = "hashmap"):
        super().__init__(name, function, timestamped)
        self.key_selector = key_selector
        self.backend = create_backend(backend_kind, max_parallelism)
        self.timers = TimerService(self)

    def open(self, ctx: RuntimeContext) -> None:
        ctx._state_backend = self.backend
        super().open(ctx)
        self._ctx = _ProcessContext(self, self.timers)

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        call, ctx, backend, key_of = self.function.process_element, self._ctx, self.backend, self.key_selector
        out: list = []
        if self.timestamped:
            for t, v in records:
                backend.current_key = ctx.current_key = key_of(v)
                ctx.ts = t
                res = call(v, ctx)
                if res is not None:
                    out.extend([(t, r) for r in res])
        else:
            for k, r in zip(map(key_of, records), records):
                backend.current_key = ctx.current_key = k
                res = call(r, ctx)
                if res is not None:
                    out.extend(res)
        self.output.emit(out)
        ctx.flush_side()

    def _fire(self, due, domain: str) -> None:
        ctx, backend, on_timer = self._ctx, self.backend, self.function.on_timer
        out: list = []
        for t, key in due:
            backend.current_key = ctx.current_key = key
            ctx.ts, ctx.domain = t, domain
            res = on_timer(t, ctx)
            if res is not None:
                out.extend([(t, r) for r in res] if self.timestamped else res)
        ctx.domain = None
        self.output.emit(out)
        ctx.flush_side()

    def process_watermark(self, timestamp_ms: int) -> None:
        self.current_watermark = timestamp_ms
        self._fire(self.timers.due(self.timers.event, self.timers.event_set, timestamp_ms),
                   TimeDomain.EVENT_TIME)
        super().process_watermark(timestamp_ms)

    def tick(self, now_ms: int) -> None:
        self._fire(self.timers.due(self.timers.proc, self.timers.proc_set, now_ms),
                   TimeDomain.PROCESSING_TIME)

    def close(self) -> None:
        super().close()
        self.backend.close()

    def snapshot_state(self, checkpoint_id: int) -> Callable[[], bytes]:
        return keyed_snapshot(self.backend, self.timers.snapshot())

    def restore_state(self, parts: list[bytes], key_groups: range | None) -> None:
        keyed_restore(self.backend, parts, key_groups, lambda timers, keep: self.timers.restore(*timers, keep))


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


class KeyedAggregateOperator(Operator):
    """Keyed reduce and built-in aggregations.

    STREAMING: emits the key's updated value for every record. BATCH: emits one
    final record per key at the end of input (Flink's batch execution of keyed
    reductions). With event time, a result carries the timestamp of the record
    that produced it (in BATCH: the key's last record).
    """

    def __init__(self, name: str, kind: str, function: Any, key_selector: Callable, batch: bool,
                 timestamped: bool = False, max_parallelism: int = 128):
        super().__init__(name, function, timestamped)
        self.key_selector = key_selector
        self.max_parallelism = max_parallelism
        self.batch = batch
        self.aggregator = make_aggregator(kind, function)
        self.table = self.aggregator.new_table()
        self.last_ts: dict = {}

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        if self.timestamped:
            stamps = [t for t, _ in records]
            records = [v for _, v in records]
        keys = list(map(self.key_selector, records))
        if self.batch:
            self.aggregator.fold(self.table, keys, records)
            if self.timestamped:
                self.last_ts.update(zip(keys, stamps))
        else:
            out = self.aggregator.fold_emit(self.table, keys, records)
            self.output.emit(list(zip(stamps, out)) if self.timestamped else out)

    def snapshot_state(self, checkpoint_id: int) -> bytes:
        return pickle.dumps((self.table, self.last_ts), protocol=5)

    def restore_state(self, parts: list[bytes], key_groups: range | None) -> None:
        keep = key_filter(key_groups, self.max_parallelism)
        for raw in parts:
            table, last_ts = pickle.loads(raw)
            if isinstance(table, dict):
                self.table.update((k, v) for k, v in table.items() if keep(k))
            else:  # running sums and the keys' first records
                self.table.sums.update((k, v) for k, v in table.sums.items() if keep(k))
                self.table.firsts.update((k, v) for k, v in table.firsts.items() if keep(k))
            self.last_ts.update((k, v) for k, v in last_ts.items() if keep(k))

    def end_input(self) -> None:
        if self.batch:
            table, self.table = self.table, self.aggregator.new_table()
            results = self.aggregator.results(table)
            if self.timestamped:
                results = [(self.last_ts[self.key_selector(r)], r) for r in results]
            self.output.emit(results)
        super().end_input()


class TimestampsOperator(Operator):
    """Assigns event timestamps and emits periodic watermarks (``assign_timestamps_and_watermarks``).

    Every ``pipeline.auto-watermark-interval`` (0: after every batch) it emits ``max
    timestamp seen - out-of-orderness - 1`` if that advanced; with ``with_idleness(d)`` it declares
    its stream idle after ``d`` without records and active again on the next one.
    """

    wants_ticks = True

    def __init__(self, name: str, strategy: Any, interval_ms: int, timestamped: bool = False):
        super().__init__(name, strategy, timestamped)
        self._extract = strategy.timestamp_function()
        self._lag = strategy.out_of_orderness_ms
        self._idle_ms = strategy.idleness_ms
        self.needs_clock = strategy.idleness_ms is not None
        self._interval_ms = interval_ms  # 0: after every batch
        self._max_ts = MIN_WATERMARK
        self._emitted = MIN_WATERMARK
        self._next_emit = 0
        self._last_record_ms = time.time() * 1000
        self._idle = False

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        if self.timestamped:
            records = [v for _, v in records]
        stamps = list(map(self._extract, records))
        if set(map(type, stamps)) != {int}:  # anything but plain ints (floats, bools, ...) to int
            stamps = [int(t) for t in stamps]
        out = list(zip(stamps, records))
        if out:
            self._max_ts = max(self._max_ts, max(stamps))
            self._last_record_ms = time.time() * 1000
            if self._idle:
                self._idle = False
                self.output.emit_status(False)
        self.output.emit(out)
        if self._interval_ms == 0:
            self._emit_watermark()

    def _emit_watermark(self) -> None:
        if self._lag is not None and self._max_ts > MIN_WATERMARK:
            wm = self._max_ts - self._lag - 1
            if wm > self._emitted:
                self._emitted = wm
                super().process_watermark(wm)

    def tick(self, now_ms: int) -> None:
        if now_ms < self._next_emit:
            return
        self._next_emit = now_ms + self._interval_ms
        self._emit_watermark()
        if self._idle_ms is not None and not self._idle and now_ms - self._last_record_ms >= self._idle_ms:
            self._idle = True
            self.output.emit_status(True)

    def process_watermark(self, timestamp_ms: int) -> None:
        # upstream watermarks are replaced by this strategy's, except the final one
        if timestamp_ms == MAX_WATERMARK and self._emitted < MAX_WATERMARK:
            self._emitted = MAX_WATERMARK
            super().process_watermark(MAX_WATERMARK)


class SinkOperator(Operator):
    """Hands batches to a :class:`~emrflow.connectors.base.SinkWriter` (values only)."""

    keyed_state = False

    def __init__(self, name: str, sink: Any, writer: Any, timestamped: bool = False):
        super().__init__(name, sink, timestamped)
        self.writer = writer

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        self.writer.write_batch([v for _, v in records] if self.timestamped else records)

    def process_watermark(self, timestamp_ms: int) -> None:
        self.current_watermark = timestamp_ms

    def snapshot_state(self, checkpoint_id: int) -> bytes | None:
        state = self.writer.snapshot_state(checkpoint_id)
        return None if state is None else pickle.dumps(state, protocol=5)

    def restore_state(self, parts: list[bytes], key_groups: range | None) -> None:
        self.writer.restore_state([pickle.loads(p) for p in parts])


def create_operator(node, batch: bool, max_parallelism: int, sink_writer=None,
                    config: dict | None = None) -> Operator:
    """Instantiate the physical operator of an :class:`~emrflow.graph.jobgraph.OperatorNode`."""
    config = config or {}
    kind, ts = node.kind, node.timestamped
    backend = str(config.get("state.backend.type", "hashmap"))
    if kind == T.MAP:
        return MapOperator(node.name, node.function, ts)
    if kind == T.FLAT_MAP:
        return FlatMapOperator(node.name, node.function, ts)
    if kind == T.FILTER:
        return FilterOperator(node.name, node.function, ts)
    if kind == T.PROCESS:
        return ProcessOperator(node.name, node.function, ts)
    if kind == T.KEYED_PROCESS:
        return KeyedProcessOperator(node.name, node.function, node.key_selector, max_parallelism, ts, backend)
    if kind in (T.KEYED_REDUCE, T.KEYED_AGGREGATE):
        return KeyedAggregateOperator(node.name, kind, node.function, node.key_selector, batch, ts,
                                      max_parallelism)
    if kind == T.TIMESTAMPS:
        return TimestampsOperator(node.name, node.function,
                                  int(config.get("pipeline.auto-watermark-interval", 200)), ts)
    if kind == T.WINDOW:
        from emrflow.runtime.window import WindowOperator
        return WindowOperator(node.name, node.function, node.key_selector, max_parallelism, ts, backend)
    if kind == T.SINK:
        return SinkOperator(node.name, node.function, sink_writer, ts)
    if kind == T.SOURCE:
        return Operator(node.name, None)
    raise ValueError(f"unknown operator kind {kind!r}")
