"""The aligned-window operator: tumbling and sliding event-time windows, fast.

Aligned event-time windows (``TumblingEventTimeWindows``, ``SlidingEventTimeWindows``)
with the default trigger, no evictor, no allowed lateness and an incremental
function (``reduce`` or ``aggregate``; see ``WindowSpec.is_aligned``) need no
per-window timers and no per-record state access: per live window a dict
``key -> accumulator`` and a heap of window starts, fired as the watermark passes
their ends. A tumbling batch without late records gets its records' window starts
from C-level ``map`` calls (a batch in one window skips even that); sliding windows
and batches with late records take a per-record loop.

How a batch is folded into a window's dict:

* **fast path**: the function is exactly one of the built-in aggregates
  :class:`~emrflow.api.aggregates.Count`, ``Sum``, ``Min``, ``Max``, ``Avg``
  (``WindowSpec.is_fast_path``). The operator folds the whole batch itself (a count
  in C through ``collections``' ``_count_elements``, a field's values taken with a
  C ``itemgetter``) without calling ``add``; the accumulators are exactly the ones
  the built-in's own methods make, so checkpoints move freely between paths.
  Which path a window takes shows in its operator name: ``Window(aggregate Count(), fast path)``.
* otherwise (a user's ``reduce`` or ``AggregateFunction``, whatever its code): its
  methods are called per record, as on the generic path, in one pass over the batch
  (per record: the key, the window's dict, one lookup and the user's call).

A window fires with one call of the window function per key (bound once in ``open``),
or, without one, all its results in one C-level ``extend``.

With the ``rocksdb`` backend the dicts stay in memory up to :attr:`AlignedWindowOperator.FAST_MEMORY_BYTES`
(estimated); beyond it every in-memory accumulator is spilled to RocksDB as
``(key, window start)`` under ``window-contents``, a miss in a spilled window reads
RocksDB, and a spilled window is read back (memory wins) when it fires.
"""

from __future__ import annotations

import heapq
import pickle
from bisect import bisect_right
from itertools import repeat
from operator import itemgetter, mod, sub
from typing import Any, Callable

try:  # the C loop behind Counter.update: mapping[x] = mapping.get(x, 0) + 1 for x in iterable
    from collections import _count_elements  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other Pythons
    def _count_elements(mapping: dict, iterable: Any) -> None:
        get = mapping.get
        for x in iterable:
            mapping[x] = get(x, 0) + 1

from emrflow.api.aggregates import Avg, Count, Max, Min, Sum, field_access, field_values
from emrflow.api.windowing import TimeWindow
from emrflow.runtime.network.columns import ColumnBatch, column_keys, key_fields
from emrflow.runtime.operators.base import keyed_snapshot
from emrflow.runtime.operators.window import CONTENTS, WindowOperator
from emrflow.runtime.state import MISSING, HashMapStateBackend

_first, _second = itemgetter(0), itemgetter(1)
_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1

#: a batch fold: ``fold(accumulators, key_selector, values)`` updates ``{key: accumulator}``
Fold = Callable[[dict, Callable[[Any], Any], list], None]


def _count_fold(f: Count) -> Fold:
    def fold(d: dict, key_of: Callable, values: list) -> None:
        _count_elements(d, map(key_of, values))  # acc + 1 per value, in C
    return fold


def _sum_fold(f: Sum) -> Fold:
    get_field = field_access(f.field)[0]

    def fold(d: dict, key_of: Callable, values: list) -> None:
        get = d.get
        for k, v in zip(map(key_of, values), field_values(get_field, values)):
            d[k] = get(k, 0) + v
    return fold


def _min_fold(f: Min) -> Fold:
    get_field = field_access(f.field)[0]

    def fold(d: dict, key_of: Callable, values: list) -> None:
        get = d.get
        for k, v in zip(map(key_of, values), field_values(get_field, values)):
            acc = get(k)
            if acc is None or v < acc:
                d[k] = v
    return fold


def _max_fold(f: Max) -> Fold:
    get_field = field_access(f.field)[0]

    def fold(d: dict, key_of: Callable, values: list) -> None:
        get = d.get
        for k, v in zip(map(key_of, values), field_values(get_field, values)):
            acc = get(k)
            if acc is None or v > acc:
                d[k] = v
    return fold


def _avg_fold(f: Avg) -> Fold:
    get_field = field_access(f.field)[0]

    def fold(d: dict, key_of: Callable, values: list) -> None:
        get = d.get
        for k, v in zip(map(key_of, values), field_values(get_field, values)):
            n, total = get(k, (0, 0))
            d[k] = (n + 1, total + v)
    return fold


#: built-in aggregate class -> (its batch fold, its result is its accumulator)
FAST_PATH: dict[type, tuple[Callable[[Any], Fold], bool]] = {
    Count: (_count_fold, True),
    Sum: (_sum_fold, True),
    Min: (_min_fold, True),
    Max: (_max_fold, True),
    Avg: (_avg_fold, False),
}


class _SnapshotOf:
    """What :func:`keyed_snapshot` needs of a backend, with another ``snapshot``."""

    def __init__(self, max_parallelism: int, snapshot: Callable[[], Callable[[], bytes]]):
        self.max_parallelism = max_parallelism
        self.snapshot = snapshot


class AlignedWindowOperator(WindowOperator):
    """Tumbling and sliding event-time windows with the default trigger (see the module docstring).

    Takes the arguments of :class:`~emrflow.runtime.operators.window.WindowOperator`; use it
    only where :meth:`accepts` says so.

    Attributes:
        fast_path: the function is a built-in aggregate folded per batch (set by :meth:`open`).
        memory_budget: rocksdb only: estimated bytes of in-memory accumulators before spilling.
        spilled_entries: accumulators spilled to RocksDB so far.
    """

    #: rocksdb: estimated bytes of in-memory window accumulators before spilling
    FAST_MEMORY_BYTES = 64 * 2**20
    takes_columns = True

    @staticmethod
    def accepts(spec: Any, timestamped: bool) -> bool:
        """Can windows of ``spec`` over this input run here (``WindowSpec.is_aligned``, event time)."""
        return timestamped and spec.is_aligned()

    def __init__(self, name: str, spec: Any, key_selector: Callable, max_parallelism: int,
                 timestamped: bool, backend_kind: str = "hashmap"):
        super().__init__(name, spec, key_selector, max_parallelism, timestamped, backend_kind)
        if not self.accepts(spec, timestamped):
            raise ValueError(f"{name}: the aligned-window operator needs tumbling or sliding event-time "
                             "windows with the default trigger, no evictor, no allowed lateness and "
                             "reduce or aggregate over timestamped records")
        self._wins: dict[int, dict] = {}   # live window start -> {key: accumulator}
        self._starts: list[int] = []       # heap of live window starts (windows share one size)
        # rocksdb: the live windows' accumulators stay in memory up to ``memory_budget``
        # (estimated bytes); beyond it they are spilled to the backend under
        # CONTENTS (key, window start), and these windows may have entries there
        self._spills = not isinstance(self.backend, HashMapStateBackend)
        self._on_disk: set[int] = set()
        self.memory_budget = self.FAST_MEMORY_BYTES
        self.spilled_entries = 0
        self.fast_path = False
        self._kernel: Fold | None = None
        self._identity_result = spec.kind == "reduce"
        self._key_fields: Any = False  # key_fields(key_selector), once a column batch came

    def open(self, ctx: Any) -> None:
        super().open(ctx)
        f = self.spec.function
        if self.spec.is_fast_path():  # exactly a built-in: fold batches without calling its methods
            make, self._identity_result = FAST_PATH[type(f)]
            self._kernel = make(f)
            self.fast_path = True

    # -- records ------------------------------------------------------------------
    def _window_of(self, start: int) -> dict:
        """The accumulators of the live window starting at ``start`` (created if new)."""
        d = self._wins.get(start)
        if d is None:
            d = self._wins[start] = {}
            heapq.heappush(self._starts, start)
        return d

    def process_batch(self, records: list) -> None:
        """Group the batch by window (one dict ``key -> accumulator`` per live window) and fold it.

        ``records`` is a list of ``(timestamp, value)`` pairs or a timestamped
        :class:`~emrflow.runtime.network.columns.ColumnBatch` (see :meth:`_fold_columns`)."""
        if type(records) is ColumnBatch:
            if self._fold_columns(records):
                return
            records = records.rows()
        self.records_in += len(records)
        a = self.assigner
        size, offset = a.size, a.offset
        slide = getattr(a, "slide", size)
        wm = self.current_watermark
        if slide == size and records:
            stamps = list(map(_first, records))
            lo, hi = min(stamps), max(stamps)
            start = lo - (lo - offset) % size
            if start + size - 1 > wm:  # the earliest record's window is live: no record is late
                if hi < start + size:  # the whole batch in one window
                    self._fold(start, list(map(_second, records)))
                else:
                    self._fold_tumbling(stamps, list(map(_second, records)), size, offset)
                if self._spills:
                    self._check_budget()
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
            self._fold(start, values)
        if self._spills:
            self._check_budget()
        if late:
            self.emit_side(self.spec.late_tag, late)

    def _fold_columns(self, batch: ColumnBatch) -> bool:
        """Fold a timestamped column batch of tumbling windows with a user's function, none of its
        records late and no window spilled; return ``False`` (nothing done) otherwise.

        The window starts come from the timestamp column in NumPy, the values are made once
        (no ``(timestamp, value)`` pairs), and a key selector that picks fields by position
        (``lambda r: r[1]``, see :func:`~emrflow.runtime.network.columns.key_fields`) takes
        its keys from the columns; the user's ``reduce`` or ``add`` is called per record in
        arrival order, as on the list path."""
        a = self.assigner
        size, offset = a.size, a.offset
        if (not batch.timestamped or not len(batch) or getattr(a, "slide", size) != size
                or self._kernel is not None or self._on_disk):
            return False
        rb = batch.record_batch
        stamps = rb.column(rb.num_columns - 1).to_numpy()
        lo, hi = int(stamps.min()), int(stamps.max())
        if lo - offset < _INT64_MIN or hi - offset > _INT64_MAX:
            return False
        start = lo - (lo - offset) % size
        if start + size - 1 <= self.current_watermark:  # a record may be late: per record
            return False
        self.records_in += len(batch)
        values = batch.values()
        keys = self._column_keys(rb)
        if hi < start + size:  # the whole batch in one window
            self._fold_each(repeat(start), values, keys)
        else:
            shifted = stamps - offset if offset else stamps
            self._fold_each((stamps - shifted % size).tolist(), values, keys)
        if self._spills:
            self._check_budget()
        return True

    def _column_keys(self, record_batch: Any) -> list | None:
        """The keys of a timestamped batch's records from its columns, when the key selector picks
        fields by position; else ``None``."""
        if self._key_fields is False:
            self._key_fields = key_fields(self.key_selector)
        return column_keys(record_batch, self._key_fields, timestamped=True)

    def _fold_tumbling(self, stamps: list, values: list, size: int, offset: int) -> None:
        """Fold a batch spanning several tumbling windows, none late.

        Each record's window start ``ts - (ts - offset) % size`` comes from ``map``. A user's
        function over windows in memory folds in one pass (records of a batch are spread over
        many windows); a built-in or spilled windows group the records by a stable sort by
        start first, which keeps a window's records in arrival order.
        """
        shifted = stamps if offset == 0 else list(map(sub, stamps, repeat(offset)))
        starts = list(map(sub, stamps, map(mod, shifted, repeat(size))))
        if self._kernel is None and not self._on_disk:
            self._fold_each(starts, values)
            return
        order = sorted(range(len(starts)), key=starts.__getitem__)
        starts = list(map(starts.__getitem__, order))
        values = list(map(values.__getitem__, order))
        i, n = 0, len(starts)
        while i < n:
            j = bisect_right(starts, starts[i], i)
            self._fold(starts[i], values[i:j])
            i = j

    def _fold_each(self, starts: Any, values: list, keys: list | None = None) -> None:
        """Fold ``values`` (in order) into the in-memory accumulators of their windows ``starts``
        (live ones, none spilled) with a user's function: per record the key (from C, or
        ``keys`` when given), the window's dict, one lookup and the user's ``reduce`` or ``add``."""
        window, new_window = self._wins.get, self._window_of
        if keys is None:
            keys = map(self.key_selector, values)
        if self.spec.kind == "reduce":
            reduce = self._reduce
            for start, k, v in zip(starts, keys, values):
                d = window(start)
                if d is None:
                    d = new_window(start)
                acc = d.get(k, MISSING)
                d[k] = v if acc is MISSING else reduce(acc, v)
        else:
            add, create = self.spec.function.add, self.spec.function.create_accumulator
            for start, k, v in zip(starts, keys, values):
                d = window(start)
                if d is None:
                    d = new_window(start)
                acc = d.get(k, MISSING)
                d[k] = add(v, create() if acc is MISSING else acc)

    def _fold(self, start: int, values: list) -> None:
        """Fold ``values`` (in order) into the accumulators of window ``start``."""
        if start not in self._on_disk:
            if self._kernel is not None:
                self._kernel(self._window_of(start), self.key_selector, values)
            else:
                self._fold_each(repeat(start), values)
            return
        d = self._window_of(start)
        get, load, key_of = d.get, self.backend.get, self.key_selector
        if self.spec.kind == "reduce":  # spilled: a miss in memory reads the backend
            reduce = self._reduce
            for k, v in zip(map(key_of, values), values):
                acc = get(k, MISSING)
                if acc is MISSING:
                    acc = load(CONTENTS, (k, start))
                d[k] = v if acc is MISSING else reduce(acc, v)
        else:
            add, create = self.spec.function.add, self.spec.function.create_accumulator
            for k, v in zip(map(key_of, values), values):
                acc = get(k, MISSING)
                if acc is MISSING:
                    acc = load(CONTENTS, (k, start))
                    if acc is MISSING:
                        acc = create()
                d[k] = add(v, acc)

    def _check_budget(self) -> None:
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

    def _unspill(self, starts: set) -> None:
        """Bring the spilled entries of windows ``starts`` back (memory wins: it is newer) and
        delete them from the backend."""
        b = self.backend
        found = [(key, acc) for key, acc in b.items(CONTENTS)
                 if type(key) is tuple and len(key) == 2 and key[1] in starts]
        for key, acc in found:
            k, start = key
            d = self._window_of(start)
            if k not in d:
                d[k] = acc
            b.delete(CONTENTS, key)
        b.flush()
        self._on_disk -= starts

    def process_watermark(self, timestamp_ms: int) -> None:
        """Fire every window whose end the watermark passed, then forward the watermark."""
        self.current_watermark = timestamp_ms
        self._fire_due(timestamp_ms)
        super(WindowOperator, self).process_watermark(timestamp_ms)

    def tick(self, now_ms: int) -> None:
        """Event time only: nothing to do on the wall clock."""

    def _fire_due(self, upto: int) -> None:
        starts, size = self._starts, self.assigner.size
        due = []
        while starts and starts[0] + size - 1 <= upto:
            due.append(heapq.heappop(starts))
        if not due:
            return
        if self._on_disk:
            spilled = self._on_disk.intersection(due)
            if spilled:
                self._unspill(spilled)
        spec, out = self.spec, self._out
        get_result = None if self._identity_result else spec.function.get_result
        for start in due:
            d = self._wins.pop(start)
            end_ts = start + size - 1
            results = d.values() if get_result is None else map(get_result, d.values())
            if spec.window_function is None:  # a whole window's results at C speed where possible
                out.extend(zip(repeat(end_ts), results))
                continue
            # the window function per key, called straight (what _emit_result does, less its lookups)
            call = self._call_window
            window = self._window = TimeWindow(start, end_ts + 1)
            for k, result in zip(d, results):  # a dict's keys and values come in the same order
                self._key = k
                outputs = call(k, window, [result])
                if outputs is not None:
                    out.extend(zip(repeat(end_ts), outputs))
        self._flush()

    def _memory_entries(self) -> list:
        """The in-memory accumulators as backend entries ``((key, window start), acc)``."""
        return [((k, start), acc) for start, d in self._wins.items() for k, acc in d.items()]

    # -- checkpoints ----------------------------------------------------------------
    def snapshot_state(self, checkpoint_id: int):
        """The accumulators, in the backend's snapshot format (entries ``(key, window start)``)."""
        timers = (list(self.event_set), list(self.proc_set))
        # the accumulators live beside the backend: copy them now (pickled, as user
        # accumulators may change in place) and lay them over the backend's CONTENTS entries
        # (spilled ones, possibly older) in the asynchronous part; same format as the backend's
        fresh = pickle.dumps(self._memory_entries(), protocol=5)
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
        """Restore entries of either window path; their windows become live again."""
        super().restore_state(parts, key_groups)
        # the windows follow from the accumulators' (key, window start)
        b = self.backend
        if self._spills:  # rocksdb: the entries stay in the backend, their windows spilled
            renamed = []
            for key, acc in b.items(CONTENTS):
                k, w = key
                if type(w) is not int:  # (key, TimeWindow) of the generic path
                    renamed.append((key, (k, w.start), acc))
                start = w if type(w) is int else w.start
                self._window_of(start)
                self._on_disk.add(start)
            for old, new, acc in renamed:
                b.delete(CONTENTS, old)
                b.put(CONTENTS, new, acc)
            b.flush()
        else:
            table = b.table(CONTENTS)
            for (k, w), acc in table.items():
                self._window_of(w if type(w) is int else w.start)[k] = acc
            table.clear()
