"""Keyed operators: ``KeyedProcessFunction`` with state and timers, and the keyed
reduce and built-in rolling aggregations (sum, min, max, min_by, max_by).

The aggregations all run in :class:`KeyedAggregateOperator` through an
:class:`~emrflow.runtime.aggregators.Aggregator`.
"""

from __future__ import annotations

import heapq
import pickle
import time
from typing import Any, Callable

from emrflow.api.functions import RuntimeContext, TimeDomain
from emrflow.runtime.aggregators import make_aggregator
from emrflow.runtime.operators.base import (
    Operator,
    OperatorSetup,
    ProcessContext,
    key_filter,
    keyed_restore,
    keyed_snapshot,
)
from emrflow.runtime.state import create_backend


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

    @classmethod
    def from_node(cls, node: Any, setup: OperatorSetup) -> "KeyedProcessOperator":
        return cls(node.name, node.function, node.key_selector, setup.max_parallelism, node.timestamped,
                   setup.backend_kind)

    def open(self, ctx: RuntimeContext) -> None:
        ctx._state_backend = self.backend
        super().open(ctx)
        self._ctx = ProcessContext(self, self.timers)

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

    @classmethod
    def from_node(cls, node: Any, setup: OperatorSetup) -> "KeyedAggregateOperator":
        return cls(node.name, node.kind, node.function, node.key_selector, setup.batch, node.timestamped,
                   setup.max_parallelism)

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


