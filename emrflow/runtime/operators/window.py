"""The window operator (Flink's ``WindowOperator`` / ``EvictingWindowOperator``).

Per key, records go to the windows their assigner names. A window's contents
live in the subtask's keyed state backend under ``(key, window)``: an
accumulator for incremental ``reduce``/``aggregate`` without an evictor, else
the list of ``(timestamp, value)`` elements. The trigger decides when a window
fires (its results are emitted with the timestamp ``window.max_timestamp()``)
and purges; timers live in two heaps (event time, processing time) with one
entry per ``(time, key, window)``.

Lateness: an event-time window is cleaned up when the watermark passes
``max_timestamp() + allowed_lateness``; a record whose windows are all past that
point is late and goes to the late-data side output or is dropped. Records that
arrive after the window fired but within the allowed lateness fire it again.

Session windows (merging assigners) keep each key's windows in a list; a new
record's window merges with every window it overlaps or touches, merging their
contents (``reduce``, ``AggregateFunction.merge`` or concatenation).

Aligned event-time windows with the default trigger run in the subclass
:class:`~emrflow.runtime.operators.aligned.AlignedWindowOperator` instead (see there).
"""

from __future__ import annotations

import heapq
import itertools
import time
from typing import Any, Callable

from emrflow.api.eventtime import MAX_WATERMARK
from emrflow.api.functions import (
    AllWindowFunction,
    Function,
    ProcessAllWindowFunction,
    ProcessWindowFunction,
    ReduceFunction,
    RuntimeContext,
    WindowFunction,
)
from emrflow.api.windowing import GlobalWindow
from emrflow.runtime.operators.base import Operator, OperatorSetup, keyed_restore, keyed_snapshot
from emrflow.runtime.state import MISSING, create_backend

CONTENTS = "window-contents"
SESSIONS = "window-sessions"
TRIGGER_STATE = "window-trigger"


class _TriggerState:
    """``ctx.get_partitioned_state(name)`` of a trigger: one value per key, window and name."""

    def __init__(self, op: "WindowOperator", name: str):
        self._op, self._name = op, name

    def _key(self):
        return (self._op._key, self._op._window, self._name)

    def value(self):
        v = self._op.backend.get(TRIGGER_STATE, self._key())
        return None if v is MISSING else v

    def update(self, value) -> None:
        self._op.backend.put(TRIGGER_STATE, self._key(), value)

    def clear(self) -> None:
        self._op.backend.delete(TRIGGER_STATE, self._key())


class _Context:
    """The context triggers, evictors and process window functions get."""

    def __init__(self, op: "WindowOperator"):
        self._op = op

    # trigger context
    def register_event_time_timer(self, time_ms: int) -> None:
        self._op._register(self._op.event_timers, self._op.event_set, int(time_ms))

    def register_processing_time_timer(self, time_ms: int) -> None:
        self._op.wants_ticks = True
        self._op._register(self._op.proc_timers, self._op.proc_set, int(time_ms))

    def delete_event_time_timer(self, time_ms: int) -> None:
        self._op.event_set.discard((int(time_ms), self._op._key, self._op._window))

    def delete_processing_time_timer(self, time_ms: int) -> None:
        self._op.proc_set.discard((int(time_ms), self._op._key, self._op._window))

    def get_current_watermark(self) -> int:
        return self._op.current_watermark

    def get_current_processing_time(self) -> int:
        return int(time.time() * 1000)

    def get_partitioned_state(self, descriptor: Any) -> _TriggerState:
        return _TriggerState(self._op, getattr(descriptor, "name", descriptor))

    # process window function context
    def window(self) -> Any:
        return self._op._window

    def current_watermark(self) -> int:
        return self._op.current_watermark

    def current_processing_time(self) -> int:
        return int(time.time() * 1000)

    def output(self, output_tag: Any, value: Any) -> None:
        op = self._op
        tag = getattr(output_tag, "tag_id", output_tag)
        ts = op._window.max_timestamp()
        op.emit_side(tag, [(ts, value) if op.timestamped else value])


def window_function_caller(fn: Any, all_windows: bool, ctx: _Context) -> Callable[[Any, Any, list], Any]:
    """Bind a window function once: return ``call(key, window, values) -> outputs or None``.

    ``fn`` is a (``Process``)``WindowFunction``, a (``Process``)``AllWindowFunction`` or a plain
    callable ``(key, window, values)`` (``(window, values)`` for all-windows); ``ctx`` is what
    process functions get as their context.
    """
    if isinstance(fn, ProcessWindowFunction):
        process = fn.process
        return lambda key, window, values: process(key, ctx, values)
    if isinstance(fn, ProcessAllWindowFunction):
        process_all = fn.process
        return lambda key, window, values: process_all(ctx, values)
    if isinstance(fn, WindowFunction):
        return fn.apply
    if isinstance(fn, AllWindowFunction):
        apply_all = fn.apply
        return lambda key, window, values: apply_all(window, values)
    if all_windows:
        return lambda key, window, values: fn(window, values)
    return fn


class WindowOperator(Operator):
    """Keyed windows with triggers, evictors, allowed lateness and late-data side output.

    Args:
        name: operator name.
        spec: the :class:`~emrflow.api.windowed.WindowSpec`.
        key_selector: the ``key_by`` function.
        max_parallelism: number of key groups (for the state backend).
        timestamped: input records are ``(timestamp, value)`` pairs.
        backend_kind: ``hashmap`` or ``rocksdb``.
    """

    def __init__(self, name: str, spec: Any, key_selector: Callable, max_parallelism: int,
                 timestamped: bool, backend_kind: str = "hashmap"):
        super().__init__(name, spec.function, timestamped)
        self.spec = spec
        self.assigner = spec.assigner
        self.trigger = spec.trigger or spec.assigner.default_trigger()
        self.evictor = spec.evictor
        self.key_selector = key_selector
        self.backend = create_backend(backend_kind, max_parallelism)
        self.incremental = spec.evictor is None and spec.kind in ("reduce", "aggregate")
        self.lateness = spec.allowed_lateness_ms
        self.event_timers: list = []
        self.event_set: set = set()
        self.proc_timers: list = []
        self.proc_set: set = set()
        self._seq = itertools.count()
        self._key: Any = None
        self._window: Any = None
        self._ctx = _Context(self)
        self.wants_ticks = not self.assigner.is_event_time
        self.late_records_dropped = 0
        self._out: list = []

    @classmethod
    def from_node(cls, node: Any, setup: OperatorSetup) -> "WindowOperator":
        return cls(node.name, node.function, node.key_selector, setup.max_parallelism, node.timestamped,
                   setup.backend_kind)

    # -- set-up -----------------------------------------------------------------
    def open(self, ctx: RuntimeContext) -> None:
        ctx._state_backend = self.backend
        for fn in (self.spec.function, self.spec.window_function):
            if isinstance(fn, Function):
                fn.open(ctx)
        f = self.spec.function
        if self.spec.kind == "reduce":
            self._reduce = f.reduce if isinstance(f, ReduceFunction) else f
        # process/apply: the function is the window function; reduce/aggregate: the optional one after it
        window_fn = self.spec.window_function if self.spec.kind in ("reduce", "aggregate") else f
        if window_fn is not None:
            self._call_window = window_function_caller(window_fn, self.spec.all_windows, self._ctx)

    def close(self) -> None:
        for fn in (self.spec.function, self.spec.window_function):
            if isinstance(fn, Function):
                fn.close()
        self.backend.close()

    # -- timers -------------------------------------------------------------------
    def _register(self, heap: list, members: set, time_ms: int) -> None:
        entry = (time_ms, self._key, self._window)
        if entry not in members:
            members.add(entry)
            heapq.heappush(heap, (time_ms, next(self._seq), self._key, self._window))

    def _cleanup_time(self, window: Any) -> int:
        if isinstance(window, GlobalWindow):
            return MAX_WATERMARK
        if self.assigner.is_event_time:
            return min(window.max_timestamp() + self.lateness, MAX_WATERMARK)
        return window.max_timestamp()

    def _is_late(self, window: Any) -> bool:
        return self.assigner.is_event_time and self._cleanup_time(window) <= self.current_watermark

    # -- contents ---------------------------------------------------------------
    def _add(self, key: Any, window: Any, ts: int, value: Any) -> None:
        b, slot = self.backend, (key, window)
        acc = b.get(CONTENTS, slot)
        kind = self.spec.kind
        if not self.incremental:
            b.put(CONTENTS, slot, [(ts, value)] if acc is MISSING else acc + [(ts, value)])
        elif kind == "reduce":
            b.put(CONTENTS, slot, value if acc is MISSING else self._reduce(acc, value))
        else:
            f = self.spec.function
            b.put(CONTENTS, slot, f.add(value, f.create_accumulator() if acc is MISSING else acc))

    def _merge_contents(self, a: Any, b: Any) -> Any:
        if not self.incremental:
            return a + b
        if self.spec.kind == "reduce":
            return self._reduce(a, b)
        return self.spec.function.merge(a, b)

    def _merge_sessions(self, key: Any, new: Any) -> Any:
        """Merge ``new`` into the key's session windows; return the window the record belongs to."""
        b = self.backend
        sessions = b.get(SESSIONS, key)
        sessions = [] if sessions is MISSING else list(sessions)
        touching = [w for w in sessions if w.intersects(new)]
        if not touching:
            sessions.append(new)
            b.put(SESSIONS, key, sessions)
            return new
        merged = new
        for w in touching:
            merged = merged.cover(w)
        if len(touching) == 1 and touching[0] == merged:
            return merged
        acc = MISSING
        self._key = key
        for w in touching:
            sessions.remove(w)
            part = b.get(CONTENTS, (key, w))
            if part is not MISSING:
                acc = part if acc is MISSING else self._merge_contents(acc, part)
                b.delete(CONTENTS, (key, w))
            self._window = w
            self.trigger.clear(w, self._ctx)
            self.event_set.discard((self._cleanup_time(w), key, w))
            self.proc_set.discard((self._cleanup_time(w), key, w))
        sessions.append(merged)
        b.put(SESSIONS, key, sessions)
        if acc is not MISSING:
            b.put(CONTENTS, (key, merged), acc)
        self._window = merged
        self.trigger.on_merge(merged, self._ctx)
        return merged

    # -- records ----------------------------------------------------------------
    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        assign, key_of, trigger, ctx = self.assigner.assign_windows, self.key_selector, self.trigger, self._ctx
        merging = self.assigner.is_merging
        now = int(time.time() * 1000)
        late: list = []
        for rec in records:
            ts, value = rec if self.timestamped else (now, rec)
            key = key_of(value)
            windows = assign(value, ts, now)
            if merging:
                windows = [self._merge_sessions(key, windows[0])]
            accepted = False
            self._key = key
            for w in windows:
                if self._is_late(w):
                    continue
                accepted = True
                self._window = w
                self._add(key, w, ts, value)
                result = trigger.on_element(value, ts, w, ctx)
                if result.is_fire:
                    self._fire(key, w)
                if result.is_purge:
                    self._purge(key, w)
                cleanup = self._cleanup_time(w)
                if cleanup < MAX_WATERMARK:
                    heap, members = ((self.event_timers, self.event_set) if self.assigner.is_event_time
                                     else (self.proc_timers, self.proc_set))
                    self._register(heap, members, cleanup)
            if not accepted and windows:
                if self.spec.late_tag is not None:
                    late.append(rec)
                else:
                    self.late_records_dropped += 1
        self._flush()
        if late:
            self.emit_side(self.spec.late_tag, late)

    def _flush(self) -> None:
        if self._out:
            out, self._out = self._out, []
            self.output.emit(out)

    def _purge(self, key: Any, window: Any) -> None:
        self.backend.delete(CONTENTS, (key, window))

    def _fire(self, key: Any, window: Any) -> None:
        contents = self.backend.get(CONTENTS, (key, window))
        if contents is MISSING:
            return
        spec, ctx = self.spec, self._ctx
        self._key, self._window = key, window
        if self.evictor is not None:
            size = len(contents)
            kept = self.evictor.evict_before(list(contents), size, window, ctx)
            values = [v for _, v in kept]
        elif not self.incremental:
            kept = contents
            values = [v for _, v in contents]
        if self.incremental:
            self._emit_result(key, window, contents)
            return
        if spec.kind == "reduce":
            if not values:
                return
            acc = values[0]
            for v in values[1:]:
                acc = self._reduce(acc, v)
        elif spec.kind == "aggregate":
            f = spec.function
            acc = f.create_accumulator()
            for v in values:
                acc = f.add(v, acc)
        if spec.kind in ("reduce", "aggregate"):
            self._emit_result(key, window, acc)
        else:
            self._collect(window, self._call_window(key, window, values))
        if self.evictor is not None:
            after = self.evictor.evict_after(kept, len(kept), window, ctx)
            self.backend.put(CONTENTS, (key, window), after) if after else self._purge(key, window)

    def _emit_result(self, key: Any, window: Any, acc: Any) -> None:
        """Emit an incremental result (the reduce value or the aggregate's result), through the window function."""
        spec = self.spec
        result = acc if spec.kind == "reduce" else spec.function.get_result(acc)
        if spec.window_function is None:
            self._collect(window, (result,))
        else:
            self._key, self._window = key, window
            self._collect(window, self._call_window(key, window, [result]))

    def _collect(self, window: Any, outputs: Any) -> None:
        if outputs is not None:
            ts = window.max_timestamp()
            self._out.extend([(ts, o) for o in outputs] if self.timestamped else outputs)

    def _clear_window(self, key: Any, window: Any) -> None:
        self._purge(key, window)
        self._key, self._window = key, window
        self.trigger.clear(window, self._ctx)
        if self.assigner.is_merging:
            sessions = self.backend.get(SESSIONS, key)
            if sessions is not MISSING:
                rest = [w for w in sessions if w != window]
                self.backend.put(SESSIONS, key, rest) if rest else self.backend.delete(SESSIONS, key)

    def _on_timers(self, heap: list, members: set, upto: int, event_time: bool) -> None:
        trigger, ctx = self.trigger, self._ctx
        while heap and heap[0][0] <= upto:
            t, _, key, window = heapq.heappop(heap)
            if (t, key, window) not in members:
                continue
            members.discard((t, key, window))
            self._key, self._window = key, window
            result = (trigger.on_event_time(t, window, ctx) if event_time
                      else trigger.on_processing_time(t, window, ctx))
            if result.is_fire:
                self._fire(key, window)
            if result.is_purge:
                self._purge(key, window)
            if event_time == self.assigner.is_event_time and t == self._cleanup_time(window):
                self._clear_window(key, window)
        self._flush()

    def process_watermark(self, timestamp_ms: int) -> None:
        self.current_watermark = timestamp_ms
        self._on_timers(self.event_timers, self.event_set, timestamp_ms, True)
        super().process_watermark(timestamp_ms)

    def tick(self, now_ms: int) -> None:
        self._on_timers(self.proc_timers, self.proc_set, now_ms, False)

    # -- checkpoints ----------------------------------------------------------------
    def snapshot_state(self, checkpoint_id: int):
        """Window contents and trigger state (the backend's entries) and the live timers."""
        return keyed_snapshot(self.backend, (list(self.event_set), list(self.proc_set)))

    def restore_state(self, parts: list[bytes], key_groups: range | None) -> None:
        def restore_timers(timers: tuple, keep) -> None:
            for heap, members, entries in ((self.event_timers, self.event_set, timers[0]),
                                           (self.proc_timers, self.proc_set, timers[1])):
                for t, key, window in entries:
                    if keep(key) and (t, key, window) not in members:
                        members.add((t, key, window))
                        heapq.heappush(heap, (t, next(self._seq), key, window))
        keyed_restore(self.backend, parts, key_groups, restore_timers)
