"""Stateless and per-record operators: source, map, flat_map, filter, process,
timestamps/watermarks and sink."""

from __future__ import annotations

import pickle
import time
from typing import Any

from emrflow.api.eventtime import MAX_WATERMARK, MIN_WATERMARK
from emrflow.api.functions import (
    FilterFunction,
    FlatMapFunction,
    MapFunction,
    ProcessFunction,
    RuntimeContext,
)
from emrflow.runtime.network.columns import ColumnBatch
from emrflow.runtime.operators.base import Operator, OperatorSetup, ProcessContext


class SourceOperator(Operator):
    """The head of a source's chain: the task hands it the source's batches, it passes them on."""

    @classmethod
    def from_node(cls, node: Any, setup: OperatorSetup) -> "SourceOperator":
        return cls(node.name, None)


class MapOperator(Operator):
    """``map``: one output per record (a :class:`MapFunction` or a callable)."""

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
    """``flat_map``: any number of outputs per record (``None`` for none)."""

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
    """``filter``: keeps the records the function accepts."""

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


class ProcessOperator(Operator):
    """``process`` on a non-keyed stream: a :class:`ProcessFunction` with side outputs, no timers."""

    def open(self, ctx: RuntimeContext) -> None:
        super().open(ctx)
        fn = self.function
        self._call = fn.process_element if isinstance(fn, ProcessFunction) else fn
        self._ctx = ProcessContext(self)

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
        #: chained right after a SplitSource: the task calls process_split, event time is per split
        self.per_split = False
        self._splits = None
        #: the assigner as column arithmetic (IntExpression), None if it is not; False: not yet looked at
        self._int_expression: Any = False

    @classmethod
    def from_node(cls, node: Any, setup: OperatorSetup) -> "TimestampsOperator":
        return cls(node.name, node.function, int(setup.config.get("pipeline.auto-watermark-interval")),
                   node.timestamped)

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

    # -- per-split event time (SplitSource) ------------------------------------------------
    def enable_per_split(self) -> None:
        """Track event time per split (:class:`~emrflow.runtime.split_watermarks.SplitWatermarks`);
        the task of a SplitSource calls this when this operator is chained right after the source."""
        from emrflow.runtime.split_watermarks import SplitWatermarks
        self.per_split = True
        self._splits = SplitWatermarks(self._lag, self._idle_ms, int(time.time() * 1000))

    def add_split(self, split_id: str) -> None:
        """A split was assigned to the subtask (per-split mode)."""
        self._splits.add_split(split_id, int(time.time() * 1000))

    def process_split(self, split_id: str, records: list, finished: bool) -> None:
        """Records of one split (per-split mode): timestamps, then the split's event time."""
        now = int(time.time() * 1000)
        splits = self._splits
        if records:
            self.records_in += len(records)
            if type(records) is ColumnBatch:
                top, out = self._stamp_columns(records)
            else:
                stamps = list(map(self._extract, records))
                if set(map(type, stamps)) != {int}:
                    stamps = [int(t) for t in stamps]
                top, out = max(stamps), list(zip(stamps, records))
            if splits.on_records(split_id, top, now):
                self.output.emit_status(False)
            self.output.emit(out)
        if finished:
            splits.finish(split_id, now)
        if self._interval_ms == 0:
            self._advance_splits(now)

    def _stamp_columns(self, batch: ColumnBatch) -> tuple[int, Any]:
        """``(largest timestamp, timestamped records)`` of a column batch: a timestamped
        :class:`ColumnBatch` when the timestamps fit ``int64``, else ``(timestamp, record)`` tuples.

        An assigner that is integer arithmetic over fields (``r[3] * 1000``) is evaluated over
        the columns (:mod:`~emrflow.runtime.network.record_functions`), any other is called
        once per record, as for a list batch."""
        import numpy as np
        if self._int_expression is False:
            from emrflow.runtime.network.record_functions import int_expression
            self._int_expression = int_expression(self._extract)
        expr = self._int_expression
        stamps = expr.evaluate(batch.record_batch) if expr is not None else None
        if stamps is None:
            values = batch.values()
            listed = list(map(self._extract, values))
            if set(map(type, listed)) != {int}:
                listed = [int(t) for t in listed]
            try:
                stamps = np.array(listed, dtype=np.int64)
            except OverflowError:  # beyond int64 ms: keep Python ints, as records
                return max(listed), list(zip(listed, values))
        return int(stamps.max()), batch.with_timestamps(stamps)

    def _advance_splits(self, now_ms: int) -> None:
        wm, status = self._splits.advance(now_ms)
        if status is False:
            self.output.emit_status(False)
        if wm is not None and wm > self._emitted:
            self._emitted = wm
            super().process_watermark(wm)
        if status is True:
            self.output.emit_status(True)

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
        if self.per_split:
            self._advance_splits(now_ms)
            return
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

    @classmethod
    def from_node(cls, node: Any, setup: OperatorSetup) -> "SinkOperator":
        return cls(node.name, node.function, setup.sink_writer, node.timestamped)

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


