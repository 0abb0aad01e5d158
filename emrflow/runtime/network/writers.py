"""Record writers: a producer subtask's side of one JobEdge (Flink's ``RecordWriter`` + partitioner).

A writer holds one channel per consumer subtask and one output buffer per
channel. Records are appended to buffers batch-wise; a buffer is sent when it
holds ``batch_size`` records, on :meth:`RecordWriter.flush` (buffer timeout,
end of input) and before every event, so events stay in order with records.

Partitioners, as Flink's:

* ``forward``: everything to the consumer with the producer's index;
* ``rebalance``: round-robin over consumers, record by record;
* ``broadcast``: every record to every consumer;
* ``hash``: by key group (:mod:`emrflow.graph.keygroups`); the key-to-subtask
  lookup is memoised in a dict that maps a key straight to its consumer's
  staging list, so a batch is split in one C-level pass (a dict lookup and a
  ``list.append`` per record, no Python frame); only a key seen for the first
  time runs the stable hash in Python. A :class:`~emrflow.runtime.network.columns.ColumnBatch`
  (records still in the source's typed columns) under a key of field positions
  (``key_by(1)``, ``key_by((1, 0))``) gets its key groups computed over whole columns and
  is split with Arrow's ``filter``, so no Python object per record is made here.

Every writer takes column batches: those that cannot route them by column
(``rebalance`` to several consumers, a key given as a function) turn them into
rows first. A channel's staged column batches are sent before a record buffer
for the same channel and the other way round, so each consumer sees records in
the producer's order.

:class:`CombiningWriter` adds BATCH-mode local aggregation in front of a hash
writer (a combiner): records of the same key are pre-aggregated with the
consumer's own aggregation before they cross the network.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import pyarrow as pa

from emrflow.graph.keygroups import KeyToSubtask
from emrflow.runtime.network.columns import ROWS_PER_SLICE, ColumnBatch, KeyColumns, column_keys, key_fields


class RecordWriter:
    """Base writer: buffering, flushing and events over ``channels``.

    Args:
        channels: one channel per consumer subtask (``send_records``/``send_event``).
        batch_size: records per buffer.
    """

    def __init__(self, channels: list, batch_size: int):
        self.channels = channels
        self.batch_size = batch_size
        self._buffers: list[list] = [[] for _ in channels]
        # column batches waiting per channel (a channel holds either these or a record buffer,
        # never both, so the consumer sees the producer's order)
        self._columns: list[list[ColumnBatch]] = [[] for _ in channels]
        self._column_rows = [0] * len(channels)
        #: seconds spent blocked on credit (back-pressured time)
        self.backpressured_s = 0.0

    def _emit_to(self, idx: int, records: list) -> None:
        if self._column_rows[idx]:
            self._send_columns(idx)
        buf = self._buffers[idx]
        if not buf and len(records) >= self.batch_size:
            self.backpressured_s += self.channels[idx].send_records(records)
            return
        buf.extend(records)
        if len(buf) >= self.batch_size:
            self._buffers[idx] = []
            self.backpressured_s += self.channels[idx].send_records(buf)

    def _emit_columns(self, idx: int, batch: ColumnBatch) -> None:
        """Stage a column batch for channel ``idx``; send once ``batch_size`` rows are staged."""
        buf = self._buffers[idx]
        if buf:
            self._buffers[idx] = []
            self.backpressured_s += self.channels[idx].send_records(buf)
        self._columns[idx].append(batch)
        self._column_rows[idx] += len(batch)
        if self._column_rows[idx] >= self.batch_size:
            self._send_columns(idx)

    def _send_columns(self, idx: int) -> None:
        parts, self._columns[idx] = self._columns[idx], []
        self._column_rows[idx] = 0
        self.backpressured_s += self.channels[idx].send_records(ColumnBatch.concat(parts))

    def write_batch(self, records: list) -> None:
        """Partition ``records`` (a list, or a :class:`ColumnBatch`) into the channels' buffers."""
        raise TypeError(f"{type(self).__name__} does not partition")  # every subclass overrides

    def flush(self) -> None:
        """Send every non-empty buffer."""
        for idx, buf in enumerate(self._buffers):
            if buf:
                self._buffers[idx] = []
                self.backpressured_s += self.channels[idx].send_records(buf)
            elif self._column_rows[idx]:
                self._send_columns(idx)

    def end_input(self) -> None:
        """Called once when the producer's input ended, before the final flush."""

    def broadcast_event(self, event: Any) -> None:
        """Flush, then send ``event`` on every channel."""
        self.flush()
        for ch in self.channels:
            self.backpressured_s += ch.send_event(event)

    def close(self) -> None:
        """Close every channel."""
        for ch in self.channels:
            ch.close()


class ForwardWriter(RecordWriter):
    """Sends everything to the single consumer with the producer's index."""

    def write_batch(self, records: list) -> None:
        if type(records) is ColumnBatch:
            self._emit_columns(0, records)
        else:
            self._emit_to(0, records)


class RebalanceWriter(RecordWriter):
    """Round-robin over consumers, continuing where the previous batch stopped."""

    def __init__(self, channels: list, batch_size: int, start: int = 0):
        super().__init__(channels, batch_size)
        self._next = start % len(channels)

    def write_batch(self, records: list) -> None:
        n = len(self.channels)
        if type(records) is ColumnBatch:
            if n == 1:
                self._emit_columns(0, records)
                return
            records = records.rows()
        if n == 1:
            self._emit_to(0, records)
            return
        first = self._next
        for j in range(min(n, len(records))):
            self._emit_to((first + j) % n, records[j::n])
        self._next = (first + len(records)) % n


class BroadcastWriter(RecordWriter):
    """Every record to every consumer."""

    def write_batch(self, records: list) -> None:
        emit = self._emit_columns if type(records) is ColumnBatch else self._emit_to
        for idx in range(len(self.channels)):
            emit(idx, records)


class HashWriter(RecordWriter):
    """Key-group partitioning: key -> key group -> consumer subtask, as Flink's ``KeyGroupStreamPartitioner``.

    Args:
        channels: one per consumer subtask.
        batch_size: records per buffer.
        key_selector: the ``key_by`` function.
        max_parallelism: the consumer's max parallelism (number of key groups).
    """

    def __init__(self, channels: list, batch_size: int, key_selector: Callable[[Any], Any],
                 max_parallelism: int):
        super().__init__(channels, batch_size)
        self.key_selector = key_selector
        # one staging list per consumer; the memo maps a key straight to its consumer's list,
        # so a batch is partitioned in one C-level pass (dict lookup + list.append per record)
        self._stages: list[list] = [[] for _ in channels]
        self._route = KeyToSubtask(max_parallelism, len(channels), targets=self._stages)
        self._consume: Callable[[Any], None] = deque(maxlen=0).extend
        self._fields = key_fields(key_selector)  # (positions, composite), or None for a function
        self._key_columns: KeyColumns | None = None  # made for the first column batch
        self._max_parallelism = max_parallelism

    def write_batch(self, records: list) -> None:
        n = len(self.channels)
        if type(records) is ColumnBatch:
            if n == 1:
                self._emit_columns(0, records)
                return
            subtasks = None
            if self._fields is not None:
                if self._key_columns is None:
                    self._key_columns = KeyColumns(*self._fields, self._max_parallelism, n)
                subtasks = self._key_columns.subtasks(records)
            if subtasks is not None:
                for idx, part in enumerate(records.split(subtasks, n)):
                    if part is not None:
                        self._emit_columns(idx, part)
                return
            records = records.rows()
        if n == 1:  # one consumer: the key cannot change the target
            self._emit_to(0, records)
            return
        keys = list(map(self.key_selector, records))
        stages = self._stages
        try:
            self._consume(map(list.append, map(self._route.__getitem__, keys), records))
        except TypeError:  # an unhashable key (a list): no memo for this batch
            for stage in stages:
                stage.clear()
            route = self._route.__missing__  # raises TypeError for a key without stable hash
            for key, record in zip(keys, records):
                route(key).append(record)
        self._emit_stages()

    def _emit_stages(self) -> None:
        """Send what the staging lists hold, each to its consumer, and empty them."""
        for idx, stage in enumerate(self._stages):
            if stage:
                part = stage.copy()
                stage.clear()
                self._emit_to(idx, part)


class CombiningWriter(HashWriter):
    """A hash writer that pre-aggregates per key before the exchange (BATCH mode only).

    Local aggregation (a combiner, as Flink's batch "local-global" aggregation): records
    of the same key are folded with the consumer's own associative aggregation, and only
    the partial results cross the network; the consumer folds those, so the final result
    is unchanged. The table holds up to ``max_keys`` keys (the whole key space of the
    producer's input when it fits, so keys need not repeat near each other). When a batch
    takes it past that, its partial results are sent on; if that fill folded fewer than
    ``min_reduction`` records per key, the input's keys are too many for the table and
    the writer switches itself off (it then partitions records as a :class:`HashWriter`).

    A :class:`~emrflow.runtime.network.columns.ColumnBatch` under a key of field positions
    has its keys taken from the key's columns (no key selector call per record); a key of
    two integer fields that fit 32 bits is folded under one Python ``int`` standing for
    the pair, which hashes faster than the tuple. That stand-in never leaves the table:
    what is sent on are the aggregated records.

    Args:
        channels: one per consumer subtask.
        batch_size: records per buffer.
        key_selector: the ``key_by`` function.
        max_parallelism: the consumer's max parallelism (number of key groups).
        aggregator: a :class:`~emrflow.runtime.aggregators.Aggregator` of the consumer's operation.
        max_keys: keys (``execution.batch.local-aggregation.max-keys``) before partial results
            are sent on.
        min_reduction: records per key a full table must have folded to stay on.
    """

    def __init__(self, channels: list, batch_size: int, key_selector, max_parallelism: int,
                 aggregator, max_keys: int = 250_000, min_reduction: float = 2.0):
        super().__init__(channels, batch_size, key_selector, max_parallelism)
        if max_keys < 1:
            raise ValueError(f"execution.batch.local-aggregation.max-keys must be >= 1, got {max_keys}")
        self._agg = aggregator
        self._table = aggregator.new_table()
        self._max_keys = max_keys
        self._min_reduction = min_reduction
        self._folded = 0          # records folded into the current table
        self._paired = False      # the current table's keys are int stand-ins for int pairs
        self.active = True

    def write_batch(self, records: list) -> None:
        if not self.active:
            HashWriter.write_batch(self, records)
            return
        keys, paired = None, False
        if type(records) is ColumnBatch:
            if len(records) > ROWS_PER_SLICE:  # fold a slice's records while they are in cache
                for part in records.slices():
                    self.write_batch(part)
                return
            keys, paired = self._column_keys(records)
            records = records.rows()
        if keys is None:
            keys = list(map(self.key_selector, records))
        if paired != self._paired and len(self._table):
            self._drain()  # stand-ins and real keys must not meet in one table
        self._paired = paired
        self._agg.fold(self._table, keys, records)
        self._folded += len(records)
        if len(self._table) > self._max_keys:
            reduction = self._folded / len(self._table)
            self._drain()
            if reduction < self._min_reduction:
                self.active = False

    def _column_keys(self, batch: ColumnBatch) -> tuple[list | None, bool]:
        """The batch's keys from its columns, and whether they are int stand-ins for int pairs;
        ``(None, False)`` when the key is a function or a key column has nulls."""
        rb = batch.record_batch
        fields = self._fields
        if (fields is not None and fields[1] and len(fields[0]) == 2
                and max(fields[0]) < rb.num_columns - batch.timestamped):
            a, b = rb.column(fields[0][0]), rb.column(fields[0][1])
            pair = None if a.null_count or b.null_count else int_pair_keys(a, b)
            if pair is not None:
                return pair, True
        return column_keys(rb, fields, batch.timestamped), False

    def _drain(self) -> None:
        table, self._table = self._table, self._agg.new_table()
        paired, self._paired = self._paired, False
        self._folded = 0
        if not len(table):
            return
        results = self._agg.results(table)
        n = len(self.channels)
        if not paired or n == 1:
            HashWriter.write_batch(self, results)
            return
        # the stand-ins give the key's two fields back as columns: key groups over whole
        # columns, then one C-level pass puts each result in its consumer's staging list
        import numpy as np
        import pyarrow as pa
        pairs = np.fromiter(self._agg.keys(table), dtype=np.int64, count=len(table))
        first, second = pairs >> 32, (pairs & 0xFFFFFFFF) - 2**31
        if self._key_columns is None:
            self._key_columns = KeyColumns(*self._fields, self._max_parallelism, n)
        subtasks = self._key_columns.subtasks_of([pa.array(first), pa.array(second)])
        self._consume(map(list.append, map(self._stages.__getitem__, subtasks.tolist()), results))
        self._emit_stages()

    def end_input(self) -> None:
        self._drain()


def int_pair_keys(a: "pa.Array", b: "pa.Array") -> list | None:
    """One Python ``int`` per row standing for the pair ``(a[i], b[i])``: ``a * 2**32 + b + 2**31``,
    distinct for distinct pairs, when both integer columns fit 32 bits; else ``None``."""
    import numpy as np
    import pyarrow as pa
    for c in (a, b):
        t = c.type
        if not pa.types.is_integer(t) or (t.bit_width == 64 and not pa.types.is_signed_integer(t)):
            return None
    x = a.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    y = b.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    if len(x) and (x.min() < -2**31 or x.max() >= 2**31 or y.min() < -2**31 or y.max() >= 2**31):
        return None
    return ((x << 32) + (y + 2**31)).tolist()


def make_writer(edge, channels: list, batch_size: int, producer_index: int,
                max_parallelism: int, aggregator_factory=None,
                combine_max_keys: int = 250_000) -> RecordWriter:
    """Return the writer for ``edge`` (a :class:`~emrflow.graph.jobgraph.JobEdge`).

    Args:
        edge: the edge.
        channels: one channel per consumer subtask (for ``forward``: just the one).
        batch_size: records per buffer.
        producer_index: the producer's subtask index (start of round-robin).
        max_parallelism: the consumer's max parallelism.
        aggregator_factory: ``(kind, function) -> Aggregator`` for combining edges.
        combine_max_keys: ``execution.batch.local-aggregation.max-keys`` of a combining edge.
    """
    p = edge.partitioner
    if p == "forward":
        return ForwardWriter(channels, batch_size)
    if p == "rebalance":
        return RebalanceWriter(channels, batch_size, start=producer_index)
    if p == "broadcast":
        return BroadcastWriter(channels, batch_size)
    if p == "hash":
        if edge.combine is not None and aggregator_factory is not None:
            return CombiningWriter(channels, batch_size, edge.key_selector, max_parallelism,
                                   aggregator_factory(*edge.combine), max_keys=combine_max_keys)
        return HashWriter(channels, batch_size, edge.key_selector, max_parallelism)
    raise ValueError(f"unknown partitioner {p!r}")


class FlushTimer:
    """Tells when the buffer timeout (``execution.buffer-timeout``, ms) has passed."""

    def __init__(self, timeout_ms: int):
        self._timeout = max(timeout_ms, 0) / 1000.0
        self._last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self._timeout:
            self._last = now
            return True
        return False


