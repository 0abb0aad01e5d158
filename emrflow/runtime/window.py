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
"""

from __future__ import annotations

import heapq
import itertools
import pickle
import time
from itertools import repeat
from operator import itemgetter
from typing import Any, Callable

try:  # the C loop behind Counter.update: mapping[x] = mapping.get(x, 0) + 1 for x in iterable
    from collections import _count_elements  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Pythons
    def _count_elements(mapping: dict, iterable: Any) -> None:
        get = mapping.get
        for x in iterable:
            mapping[x] = get(x, 0) + 1

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
from emrflow.api.windowing import GlobalWindow, SlidingEventTimeWindows, TimeWindow, TumblingEventTimeWindows
from emrflow.runtime.operators import Operator, keyed_restore, keyed_snapshot
from emrflow.runtime.state import MISSING, HashMapStateBackend, create_backend

_first, _second = itemgetter(0), itemgetter(1)

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


def _call_window_function(fn: Any, all_windows: bool, key: Any, ctx: _Context, window: Any,
                          values: list) -> Any:
    if isinstance(fn, (ProcessWindowFunction,)):
        return fn.process(key, ctx, values)
    if isinstance(fn, ProcessAllWindowFunction):
        return fn.process(ctx, values)
    if isinstance(fn, WindowFunction):
        return fn.apply(key, window, values)
    if isinstance(fn, AllWindowFunction):
        return fn.apply(window, values)
    return fn(window, values) if all_windows else fn(key, window, values)


class _Templates:
    """Reference methods: a user method with the same code (bytecode, typed constants, names,
    argument count, no closure) behaves exactly like these, so the fast path may specialise."""

    def create_accumulator(self):
        return 0

    def add(self, value, accumulator):
        return accumulator + 1

    def get_result(self, accumulator):
        return accumulator


def _same_code(fn: Any, template: Any) -> bool:
    import types
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    if not isinstance(fn, types.FunctionType) or fn.__closure__:
        return False
    a, b = fn.__code__, template.__code__
    return (a.co_code == b.co_code and a.co_argcount == b.co_argcount and a.co_flags == b.co_flags
            and a.co_kwonlyargcount == b.co_kwonlyargcount and a.co_names == b.co_names
            and [(type(c), c) for c in a.co_consts] == [(type(c), c) for c in b.co_consts])


def _is_count(f: Any) -> bool:
    """``f`` is an AggregateFunction that counts: accumulator ``0``, ``add`` returns ``acc + 1``,
    ``get_result`` returns ``acc`` (recognised by code, so any other function takes the general path)."""
    return (_same_code(getattr(f, "create_accumulator", None), _Templates.create_accumulator)
            and _same_code(getattr(f, "add", None), _Templates.add)
            and _same_code(getattr(f, "get_result", None), _Templates.get_result))


class _SnapshotOf:
    """What :func:`keyed_snapshot` needs of a backend, with another ``snapshot``."""

    def __init__(self, max_parallelism: int, snapshot: Callable[[], Callable[[], bytes]]):
        self.max_parallelism = max_parallelism
        self.snapshot = snapshot


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

    #: rocksdb fast path: estimated bytes of in-memory window accumulators before spilling
    FAST_MEMORY_BYTES = 64 * 2**20

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
        # fast path: aligned event-time windows, default trigger, incremental (either backend)
        self.fast = (isinstance(self.assigner, (TumblingEventTimeWindows, SlidingEventTimeWindows))
                     and spec.trigger is None and self.incremental and self.lateness == 0
                     and timestamped)
        if self.fast:
            self._wins: dict[int, dict] = {}   # live window start -> {key: accumulator}
            self._starts: list[int] = []       # heap of live window starts (windows share one size)
            # rocksdb: the live windows' accumulators stay in memory up to ``memory_budget``
            # (estimated bytes); beyond it they are spilled to the backend under
            # CONTENTS (key, window start), and these windows may have entries there
            self._spills = not isinstance(self.backend, HashMapStateBackend)
            self._on_disk: set[int] = set()
            self.memory_budget = self.FAST_MEMORY_BYTES
            self.spilled_entries = 0
            self._count = False                # the AggregateFunction is a plain count
            self._identity_result = spec.kind == "reduce"

    # -- set-up -----------------------------------------------------------------
    def open(self, ctx: RuntimeContext) -> None:
        ctx._state_backend = self.backend
        for fn in (self.spec.function, self.spec.window_function):
            if isinstance(fn, Function):
                fn.open(ctx)
        f = self.spec.function
        if self.spec.kind == "reduce":
            self._reduce = f.reduce if isinstance(f, ReduceFunction) else f
        elif self.fast:  # after open(): the methods the fast path will call
            self._count = _is_count(f)
            self._identity_result = _same_code(getattr(f, "get_result", None), _Templates.get_result)

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

    # -- fast path ---------------------------------------------------------------
    def _fast_window(self, start: int) -> dict:
        """The accumulators of the live window starting at ``start`` (created if new)."""
        d = self._wins.get(start)
        if d is None:
            d = self._wins[start] = {}
            heapq.heappush(self._starts, start)
        return d

    def _fast_batch(self, records: list) -> None:
        """Aligned windows with the default event-time trigger: per live window a dict
        ``key -> accumulator``; a batch is grouped by window first (usually it falls in one)."""
        a = self.assigner
        size, offset = a.size, a.offset
        slide = getattr(a, "slide", size)
        wm = self.current_watermark
        if slide == size and records:
            stamps = list(map(_first, records))
            lo, hi = min(stamps), max(stamps)
            start = lo - (lo - offset) % size
            if hi < start + size and start + size - 1 > wm:  # the whole batch in one live window
                self._fast_add(start, list(map(_second, records)))
                if self._spills:
                    self._fast_budget()
                return
        groups: dict[int, list] = {}
        late = []
        for rec in records:
            ts = rec[0]
            start = ts - (ts - offset) % slide
            accepted = False
            while start > ts - size:
                if start + size - 1 > wm:
                    accepted = True
                    g = groups.get(start)
                    if g is None:
                        groups[start] = [rec[1]]
                    else:
                        g.append(rec[1])
                start -= slide
            if not accepted:
                if self.spec.late_tag is not None:
                    late.append(rec)
                else:
                    self.late_records_dropped += 1
        for start, values in groups.items():
            self._fast_add(start, values)
        if self._spills:
            self._fast_budget()
        if late:
            self.emit_side(self.spec.late_tag, late)

    def _fast_add(self, start: int, values: list) -> None:
        """Fold ``values`` (in order) into the accumulators of window ``start``."""
        d = self._fast_window(start)
        key_of = self.key_selector
        disk = start in self._on_disk
        if self._count and not disk:
            _count_elements(d, map(key_of, values))  # acc + 1 per value, in C
            return
        get = d.get
        load = self.backend.get
        if self.spec.kind == "reduce":
            reduce = self._reduce
            for v in values:
                k = key_of(v)
                acc = get(k, MISSING)
                if acc is MISSING and disk:
                    acc = load(CONTENTS, (k, start))
                d[k] = v if acc is MISSING else reduce(acc, v)
        else:
            add, create = self.spec.function.add, self.spec.function.create_accumulator
            for v in values:
                k = key_of(v)
                acc = get(k, MISSING)
                if acc is MISSING:
                    if disk:
                        acc = load(CONTENTS, (k, start))
                    if acc is MISSING:
                        acc = create()
                d[k] = add(v, acc)

    def _fast_budget(self) -> None:
        """rocksdb: spill every in-memory accumulator to the backend when they exceed the budget."""
        n = sum(map(len, self._wins.values()))
        if n == 0:
            return
        biggest = max(self._wins.values(), key=len)
        sample = next(reversed(biggest.items()))
        if n * (64 + 2 * len(pickle.dumps(sample, protocol=5))) <= self.memory_budget:
            return
        put = self.backend.put
        for start, d in self._wins.items():
            if d:
                for k, acc in d.items():
                    put(CONTENTS, (k, start), acc)
                self.spilled_entries += len(d)
                d.clear()
                self._on_disk.add(start)
        self.backend.flush()

    def _fast_unspill(self, starts: set) -> None:
        """Bring the spilled entries of windows ``starts`` back (memory wins: it is newer) and
        delete them from the backend."""
        b = self.backend
        found = [(key, acc) for key, acc in b.items(CONTENTS)
                 if type(key) is tuple and len(key) == 2 and key[1] in starts]
        for key, acc in found:
            k, start = key
            d = self._fast_window(start)
            if k not in d:
                d[k] = acc
            b.delete(CONTENTS, key)
        b.flush()
        self._on_disk -= starts

    def _fast_fire(self, upto: int) -> None:
        starts, size = self._starts, self.assigner.size
        due = []
        while starts and starts[0] + size - 1 <= upto:
            due.append(heapq.heappop(starts))
        if not due:
            return
        if self._on_disk:
            spilled = self._on_disk.intersection(due)
            if spilled:
                self._fast_unspill(spilled)
        spec = self.spec
        for start in due:
            d = self._wins.pop(start)
            end_ts = start + size - 1
            if spec.window_function is None:
                # no window function: a whole window's results at C speed where possible
                accs = d.values() if self._identity_result else map(spec.function.get_result, d.values())
                self._out.extend(zip(repeat(end_ts), accs))
            else:
                window = TimeWindow(start, end_ts + 1)
                for k, acc in d.items():
                    self._emit_result(k, window, acc)
        self._flush()

    def _fast_entries(self) -> list:
        """The in-memory accumulators as backend entries ``((key, window start), acc)``."""
        return [((k, start), acc) for start, d in self._wins.items() for k, acc in d.items()]

    # -- records ----------------------------------------------------------------
    def process_batch(self, records: list) -> None:
        if self.fast:
            self.records_in += len(records)
            self._fast_batch(records)
            return
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
            self._collect(window, _call_window_function(spec.function, spec.all_windows, key, ctx, window, values))
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
            self._collect(window, _call_window_function(spec.window_function, spec.all_windows, key,
                                                        self._ctx, window, [result]))

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
        if self.fast:
            self._fast_fire(timestamp_ms)
        else:
            self._on_timers(self.event_timers, self.event_set, timestamp_ms, True)
        super().process_watermark(timestamp_ms)

    def tick(self, now_ms: int) -> None:
        self._on_timers(self.proc_timers, self.proc_set, now_ms, False)

    # -- checkpoints ----------------------------------------------------------------
    def snapshot_state(self, checkpoint_id: int):
        """Window contents and trigger state (the backend's entries) and the live timers."""
        timers = (list(self.event_set), list(self.proc_set))
        if not self.fast:
            return keyed_snapshot(self.backend, timers)
        # the fast path's accumulators live beside the backend: copy them now (pickled, as user
        # accumulators may change in place) and lay them over the backend's CONTENTS entries
        # (spilled ones, possibly older) in the asynchronous part; same format as the backend's
        fresh = pickle.dumps(self._fast_entries(), protocol=5)
        backend = self.backend

        def merged_snapshot():
            take = backend.snapshot()

            def materialize() -> bytes:
                states = pickle.loads(take())
                mem = pickle.loads(fresh)
                if mem:
                    newer = {key for key, _ in mem}
                    states[CONTENTS] = [e for e in states.get(CONTENTS, ()) if e[0] not in newer] + mem
                return pickle.dumps(states, protocol=5)
            return materialize
        return keyed_snapshot(_SnapshotOf(backend.max_parallelism, merged_snapshot), timers)

    def restore_state(self, parts: list[bytes], key_groups: range | None) -> None:
        def restore_timers(timers: tuple, keep) -> None:
            for heap, members, entries in ((self.event_timers, self.event_set, timers[0]),
                                           (self.proc_timers, self.proc_set, timers[1])):
                for t, key, window in entries:
                    if keep(key) and (t, key, window) not in members:
                        members.add((t, key, window))
                        heapq.heappush(heap, (t, next(self._seq), key, window))
        keyed_restore(self.backend, parts, key_groups, restore_timers)
        if self.fast:  # the fast path's timers follow from its accumulators' (key, window start)
            b = self.backend
            if self._spills:  # rocksdb: the entries stay in the backend, their windows spilled
                renamed = []
                for key, acc in b.items(CONTENTS):
                    k, w = key
                    if type(w) is not int:  # (key, TimeWindow) of the general path
                        renamed.append((key, (k, w.start), acc))
                    start = w if type(w) is int else w.start
                    self._fast_window(start)
                    self._on_disk.add(start)
                for old, new, acc in renamed:
                    b.delete(CONTENTS, old)
                    b.put(CONTENTS, new, acc)
                b.flush()
            else:
                table = b.table(CONTENTS)
                for (k, w), acc in table.items():
                    self._fast_window(w if type(w) is int else w.start)[k] = acc
                table.clear()
