"""Column batches: records that cross an exchange as typed columns, never as Python objects.

A :class:`ColumnBatch` is a batch of flat records (tuples of ``int``, ``float``,
``str``, ``bool``) held as the columns of one ``pyarrow.RecordBatch``. The CSV
source produces them straight from ``pyarrow.csv`` when its records go to a
record writer with nothing chained in between; the hash writer then assigns
key groups to a whole batch at once (:class:`KeyColumns`) and splits it by
consumer with Arrow's ``filter``; a TCP channel sends a part as one Arrow IPC
stream message; the consumer turns it into the same row tuples the source
would have made (:meth:`ColumnBatch.rows`). So the producer of a keyed exchange
never allocates a Python object per record, and the consumer allocates its
records in order, right before it uses them.

The key-group assignment is exactly that of :func:`emrflow.graph.keygroups.stable_hash`
and Flink's ``KeyGroupRangeAssignment`` for every key, computed over columns:

* an integer (or bool, or integral float in the int64 range) ``v``: the CRC-32 of its
  8 little-endian bytes, evaluated as the XOR of four 65,536-entry tables indexed by
  the value's four 16-bit words (CRC-32 is affine over GF(2), so the CRC of the
  whole is the XOR of the words' contributions and the CRC of zero);
* any other float: the CRC-32 of its 8 IEEE-754 bytes, the same way;
* a string: :func:`stable_hash` of each distinct value, memoised per column;
* a composite key ``(a, b, ...)``: the tuple combination ``h = (h * 1000003) ^ item``
  from ``0x345678 ^ len``, in ``uint32`` arithmetic (products wrap mod 2**32);
* then MurmurHash3's finaliser, ``% max_parallelism``, and the key group's subtask.

``tests/unit/test_columns.py`` compares it with :func:`stable_hash` and
:func:`~emrflow.graph.keygroups.assign_key_to_subtask` on random keys of every kind.

NumPy and pyarrow are imported when the first column batch is made or routed, so
processes that never see one do not pay for the imports.
"""

from __future__ import annotations

import operator
import zlib
from typing import TYPE_CHECKING, Any, Callable

from emrflow.graph.keygroups import stable_hash, subtask_table

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

_CRC_ZERO = zlib.crc32(bytes(8))
_INT64_MIN, _INT64_END = -(2.0 ** 63), 2.0 ** 63
#: the name of a timestamped batch's last column (event timestamps, ms)
TIMESTAMP_FIELD = "__emrflow_timestamp__"
_tables: "np.ndarray | None" = None


def _crc_tables() -> np.ndarray:
    """Four tables ``T[j][w]``: the CRC-32 contribution of 16-bit word ``w`` at word ``j`` of 8 bytes.

    Built from the contributions of single bytes (8 x 256 ``zlib.crc32`` calls): by
    linearity, a word's contribution is the XOR of its two bytes' contributions.
    """
    global _tables
    if _tables is None:
        import numpy as np
        byte = np.array([[zlib.crc32(bytes(k) + bytes([v]) + bytes(7 - k)) ^ _CRC_ZERO
                          for v in range(256)] for k in range(8)], dtype=np.uint32)
        words = np.arange(1 << 16)
        _tables = np.stack([byte[2 * j][words & 0xFF] ^ byte[2 * j + 1][words >> 8] for j in range(4)])
    return _tables


def crc32_words(values: np.ndarray) -> np.ndarray:
    """CRC-32 of each element's 8 little-endian bytes.

    An integer column whose values all fit 16 (or 32) unsigned bits, as ids mostly do, has
    constant upper words: their contribution is one constant and only the low words are
    looked up (one or two table reads per value instead of four).

    Args:
        values: a 1-D array of 8-byte elements (``int64``, ``uint64`` or ``float64``).

    Returns:
        ``uint32`` array of CRCs, equal to ``zlib.crc32`` of each element's bytes.
    """
    import numpy as np
    t = _crc_tables()
    v = np.ascontiguousarray(values)
    words = 4
    if v.dtype.kind in "iu" and len(v):
        lo, hi = int(v.min()), int(v.max())
        if lo >= 0 and hi < 1 << 32:
            words = 1 if hi < 1 << 16 else 2
    w = v.view("<u2").reshape(-1, 4)
    c = np.take(t[0], w[:, 0])
    for j in range(1, words):
        c ^= np.take(t[j], w[:, j])
    const = _CRC_ZERO
    for j in range(words, 4):
        const ^= int(t[j][0])
    c ^= np.uint32(const)
    return c


def _fmix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser over a ``uint32`` array (in place; products wrap mod 2**32)."""
    import numpy as np
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


class _StrHashes(dict):
    """A bounded memo ``value -> stable_hash(value)`` for string and other non-numeric key columns."""

    def __missing__(self, key: Any) -> int:
        if len(self) >= 200_000:
            self.clear()
        h = self[key] = stable_hash(key)
        return h


class KeyColumns:
    """Key-group routing of whole column batches: the consumer subtask of every row.

    Args:
        positions: the key's field positions.
        composite: whether the key is the tuple of those fields (``key_by((1, 0))``) rather
            than the single field itself (``key_by(1)``).
        max_parallelism: number of key groups of the consumer.
        parallelism: number of consumer subtasks.
    """

    def __init__(self, positions: tuple[int, ...], composite: bool, max_parallelism: int,
                 parallelism: int):
        import numpy as np
        self.positions = positions
        self.composite = composite
        self._maxp = np.uint32(max_parallelism)
        self._table = np.array(subtask_table(max_parallelism, parallelism), dtype=np.intp)
        self._memos: dict[int, _StrHashes] = {}

    def _column_hash(self, position: int, column: "pa.Array") -> "np.ndarray | None":
        import numpy as np
        import pyarrow as pa
        t = column.type
        if column.null_count:
            return None
        if pa.types.is_boolean(t) or (pa.types.is_integer(t) and (pa.types.is_signed_integer(t)
                                                                   or t.bit_width < 64)):
            return crc32_words(column.to_numpy(zero_copy_only=False).astype(np.int64))
        if pa.types.is_floating(t):
            x = column.to_numpy(zero_copy_only=False).astype(np.float64)
            with np.errstate(invalid="ignore"):
                integral = (np.floor(x) == x) & (x >= _INT64_MIN) & (x < _INT64_END)
            if integral.all():
                return crc32_words(x.astype(np.int64))
            h = crc32_words(x)
            if integral.any():
                h[integral] = crc32_words(x[integral].astype(np.int64))
            return h
        if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t):
            memo = self._memos.get(position)
            if memo is None:
                memo = self._memos[position] = _StrHashes()
            return np.fromiter(map(memo.__getitem__, column.to_pylist()), dtype=np.uint32,
                               count=len(column))
        return None

    def subtasks(self, batch: "ColumnBatch") -> "np.ndarray | None":
        """Return each row's consumer subtask index (``intp`` array, one per row), or ``None``
        when a key column has a type or a null this routing does not handle (the caller then
        routes the rows one by one)."""
        rb = batch.record_batch
        if max(self.positions) >= rb.num_columns - batch.timestamped:
            return None
        return self.subtasks_of([rb.column(p) for p in self.positions])

    def subtasks_of(self, columns: "list[pa.Array]") -> "np.ndarray | None":
        """Return each row's consumer subtask index for the key's columns given apart, one
        array per key field in the order of ``positions`` (all of one length), or ``None``
        as :meth:`subtasks` does."""
        hashes = []
        for p, column in zip(self.positions, columns):
            h = self._column_hash(p, column)
            if h is None:
                return None
            hashes.append(h)
        if self.composite:
            import numpy as np
            h = np.full(len(columns[0]), 0x345678 ^ len(hashes), dtype=np.uint32)
            for x in hashes:
                h *= np.uint32(1000003)  # wraps mod 2**32: the reference's "& 0xFFFFFFFF"
                h ^= x
        else:
            h = hashes[0]
        return self._table[_fmix(h) % self._maxp]


class FieldTuple:
    """A key selector ``record -> (record[position],)``: ``key_by((position,))``.

    A class rather than a lambda so that the hash writer can see the field position.
    """

    __slots__ = ("position",)

    def __init__(self, position: int):
        self.position = position

    def __call__(self, record: Any) -> tuple:
        return (record[self.position],)

    def __reduce__(self):
        return (FieldTuple, (self.position,))


def key_fields(key_selector: Callable[[Any], Any]) -> tuple[tuple[int, ...], bool] | None:
    """Return ``(positions, composite)`` when ``key_selector`` selects fields by position, else ``None``.

    Recognised: ``operator.itemgetter`` of ints (as ``key_by(1)`` and ``key_by((1, 0))`` build
    it), :class:`FieldTuple`, a function ``lambda r: r[i]`` or ``lambda r: (r[i], r[j])``
    (:func:`~emrflow.runtime.network.record_functions.field_positions`), and any of these
    applied to the value of ``(timestamp, value)`` records (a selector with an ``on_value``
    attribute, as the job graph makes for timestamped streams; the positions are then those
    of the value's fields)."""
    inner = getattr(key_selector, "on_value", None)
    if inner is not None:
        return key_fields(inner)
    if isinstance(key_selector, FieldTuple):
        return (key_selector.position,), True
    if type(key_selector) is operator.itemgetter:
        items = key_selector.__reduce__()[1]
        if items and all(type(i) is int and i >= 0 for i in items):
            return tuple(items), len(items) > 1
        return None
    from emrflow.runtime.network.record_functions import field_positions
    return field_positions(key_selector)


#: rows of a :class:`ColumnBatch` turned into Python objects and processed at a time where a
#: consumer works per record (:meth:`ColumnBatch.slices`): about 1 MB of tuples, ints, floats
#: and strs, which stays in a core's L2 cache while the records are used; a whole 512 KiB CSV
#: run (about 23 k rows, 5 MB of objects) does not, and two slot processes then compete for
#: the shared cache and memory
ROWS_PER_SLICE = 4096


class ColumnBatch:
    """A batch of flat records held as columns (one ``pyarrow.RecordBatch``).

    Row ``i`` is the tuple of the columns' ``i``-th values, as Python objects of the
    columns' types (``int64`` -> ``int``, ``double`` -> ``float``, ``string`` -> ``str``,
    ``bool`` -> ``bool``).

    A *timestamped* batch holds ``(timestamp, record)`` pairs, as an event-time stream
    carries them after its timestamp assigner: its last column, named :data:`TIMESTAMP_FIELD`,
    is the ``int64`` timestamp (ms) and the columns before it are the record's fields.

    Args:
        record_batch: the columns; no nulls.
    """

    __slots__ = ("record_batch", "timestamped")

    def __init__(self, record_batch: "pa.RecordBatch"):
        self.record_batch = record_batch
        self.timestamped = bool(record_batch.num_columns) and record_batch.schema.names[-1] == TIMESTAMP_FIELD

    def __len__(self) -> int:
        return self.record_batch.num_rows

    def __bool__(self) -> bool:
        return self.record_batch.num_rows > 0

    def rows(self) -> list[tuple]:
        """Return the records as a list of tuples (allocated now, in order): of a timestamped
        batch, ``(timestamp, record)`` pairs."""
        cols = _python_columns(self.record_batch)
        if self.timestamped:
            stamps = cols.pop()
            return list(zip(stamps, zip(*cols)))
        return list(zip(*cols))

    def slices(self, rows: int = 0) -> "list[ColumnBatch]":
        """Return the batch cut into consecutive batches of at most ``rows`` rows
        (:data:`ROWS_PER_SLICE` by default), in order; ``[self]`` if it is no longer. The
        slices share the columns' memory (nothing is copied)."""
        rows = rows or ROWS_PER_SLICE
        n = self.record_batch.num_rows
        if n <= rows:
            return [self]
        rb = self.record_batch
        return [ColumnBatch(rb.slice(i, rows)) for i in range(0, n, rows)]

    def values(self) -> list[tuple]:
        """Return the records without their timestamps (of any batch) as a list of tuples."""
        rb = self.record_batch
        if self.timestamped:
            rb = rb.select(list(range(rb.num_columns - 1)))
        return list(zip(*_python_columns(rb)))

    def with_timestamps(self, stamps: "np.ndarray") -> "ColumnBatch":
        """Return the timestamped batch of this batch's records with ``stamps`` (``int64`` ms,
        one per row)."""
        import pyarrow as pa
        if self.timestamped:
            raise ValueError("the batch already carries timestamps")
        return ColumnBatch(self.record_batch.append_column(TIMESTAMP_FIELD, pa.array(stamps, pa.int64())))

    def split(self, subtasks: "np.ndarray", n: int) -> list["ColumnBatch | None"]:
        """Split by consumer: entry ``i`` holds the rows whose ``subtasks`` entry is ``i``, in
        their order, or ``None`` if there are none."""
        import numpy as np
        import pyarrow as pa
        rb = self.record_batch
        counts = np.bincount(subtasks, minlength=n)
        out: list[ColumnBatch | None] = [None] * n
        if (counts == len(rb)).any():
            out[int(np.argmax(counts))] = self
            return out
        if n <= 4:
            for i in range(n):
                if counts[i]:
                    out[i] = ColumnBatch(rb.filter(pa.array(subtasks == i)))
            return out
        taken = rb.take(pa.array(np.argsort(subtasks, kind="stable")))
        start = 0
        for i in range(n):
            c = int(counts[i])
            if c:
                out[i] = ColumnBatch(taken.slice(start, c))
                start += c
        return out

    @staticmethod
    def concat(parts: list["ColumnBatch"]) -> "ColumnBatch":
        """One batch of the rows of ``parts`` in order (they share a schema)."""
        if len(parts) == 1:
            return parts[0]
        import pyarrow as pa
        table = pa.Table.from_batches([p.record_batch for p in parts])
        return ColumnBatch(table.combine_chunks().to_batches()[0])

    def to_buffer(self) -> "pa.Buffer":
        """Serialise as an Arrow IPC stream (schema and one record batch) into an Arrow buffer.

        The buffer supports Python's buffer protocol, so it can be written to a socket or copied
        into shared memory without another copy; :meth:`from_bytes` reads it back.
        """
        import pyarrow as pa
        import pyarrow.ipc as pa_ipc
        sink = pa.BufferOutputStream()
        with pa_ipc.new_stream(sink, self.record_batch.schema) as writer:
            writer.write_batch(self.record_batch)
        return sink.getvalue()

    def to_bytes(self) -> bytes:
        """Serialise as an Arrow IPC stream (schema and one record batch), as ``bytes``."""
        return self.to_buffer().to_pybytes()

    @staticmethod
    def from_bytes(data: bytes | memoryview) -> "ColumnBatch":
        """Read what :meth:`to_bytes` wrote."""
        import pyarrow as pa
        import pyarrow.ipc as pa_ipc
        reader = pa_ipc.open_stream(pa.py_buffer(data))
        batches = [b for b in reader]
        if len(batches) == 1:
            return ColumnBatch(batches[0])
        return ColumnBatch(pa.Table.from_batches(batches, reader.schema).combine_chunks().to_batches()[0])


def python_column(column: "pa.Array") -> list:
    """The values of ``column`` as a list of Python objects (``int``, ``float``, ``bool``, ``str``),
    the ones :meth:`ColumnBatch.rows` puts in the records."""
    import pyarrow as pa
    t = column.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return column.to_numpy(zero_copy_only=False).tolist()
    return column.to_pylist()


def _python_columns(record_batch: "pa.RecordBatch") -> list[list]:
    """Each column of ``record_batch`` as a list of Python values."""
    return [python_column(c) for c in record_batch.columns]


def column_keys(record_batch: "pa.RecordBatch", fields: tuple[tuple[int, ...], bool] | None,
                timestamped: bool = False) -> list | None:
    """The keys a key selector of field positions gives the rows of ``record_batch``, taken from
    its columns: the field's values for one field, tuples of them for a composite key.

    Args:
        record_batch: the batch's columns (of a timestamped batch: the last is the timestamp).
        fields: ``(positions, composite)`` as :func:`key_fields` returns it, or ``None``.
        timestamped: whether the last column is the timestamp (not a record field).

    Returns:
        One key per row, or ``None`` when ``fields`` is ``None``, a position is beyond the
        record's fields or a key column has nulls (the caller then calls the key selector).
    """
    if fields is None:
        return None
    positions, composite = fields
    if max(positions) >= record_batch.num_columns - timestamped:
        return None
    cols = [record_batch.column(p) for p in positions]
    if any(c.null_count for c in cols):
        return None
    if not composite:
        return python_column(cols[0])
    return list(zip(*map(python_column, cols)))


def materialize(batch: Any) -> list:
    """``batch`` as a list of records: the rows of a :class:`ColumnBatch`, any other batch as is."""
    return batch.rows() if type(batch) is ColumnBatch else batch

