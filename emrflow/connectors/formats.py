"""File formats beside text and CSV: JSON lines and Parquet; bucketing of file sinks by event time.

* :class:`JsonLinesFormat` (bounded: :class:`JsonLinesSource`) reads one JSON object per line, a
  record format of :class:`~emrflow.connectors.monitoring.FileSource` split by byte range exactly
  as text lines (a line belongs to the range its first byte lies in); a line that is not a JSON
  object is a bad record reported as ``file:line: reason`` (``emrflow.bad-records.*``), as a bad
  CSV line is.
* :class:`JsonLinesFileSink` writes ``json.dumps(record)`` lines through the part-file machinery
  of :class:`~emrflow.connectors.files.FileSink` (two-phase commit, rolling, exactly once).
* :class:`ParquetFormat` (bounded: :class:`ParquetSource`) reads Parquet files with pyarrow, split
  among subtasks by row group (:class:`ParquetSplit`);
  :class:`ParquetFileSink` writes one Parquet file per part file (Flink's bulk format: a
  Parquet file cannot be appended to once closed, so it rolls at every checkpoint as with
  Flink's ``OnCheckpointRollingPolicy``).
* ``bucket_assigner=`` on every file sink (Flink's ``BucketAssigner``) puts each record in the
  sub-directory its function returns; :class:`DateTimeBucketAssigner` is Flink's assigner of
  the same name (``dt=YYYY-MM-DD/hour=HH`` of a timestamp taken from the record, in UTC).

Part files of a bucketed sink, and of every Parquet sink, are written by :class:`_BucketWriter`:
one in-progress file per bucket a subtask has records for, ``<path>/<bucket>/.part-<i>-<n><suffix>
.inprogress.<token>``, renamed to ``<path>/<bucket>/part-<i>-<n><suffix>`` when committed: at
the end of the job through the job's commit record (which lists every bucket written, so the
roll forward and the clean-up after a killed run cover the bucket sub-directories), or when
the checkpoint that covers the file completes. ``<n>`` counts the part files of subtask ``i``
over all buckets.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from emrflow import fs
from emrflow.connectors.base import SinkWriter, SubtaskContext
from emrflow.connectors.files import (
    _WRITE_BUFFER,
    FileSink,
    WriteMode,
    _check_encoding,
    _ParsingReader,
    _PartWriter,
)
from emrflow.connectors.monitoring import FileFormat, FileSource, FileSplit
from emrflow.errors import BadRecordError
from emrflow.fs import FileSystem

__all__ = ["JsonLinesSource", "JsonLinesFormat", "JsonLinesFileSink", "ParquetSource", "ParquetFormat",
           "ParquetSplit", "ParquetFileSink", "DateTimeBucketAssigner", "check_bucket"]

_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}


# -- JSON lines ------------------------------------------------------------------------------

class JsonLinesFormat(FileFormat):
    """Dicts from JSON lines (one JSON object per line), split like :class:`~emrflow.connectors.files.TextLineFormat`.

    A JSON lines ``StreamFormat`` of Flink's ``FileSource``. Files are cut into
    byte ranges, one per subtask, and a line belongs to the range its first byte lies in, so
    every line is read exactly once at any parallelism; the read position (file, byte offset,
    line) is checkpointed. Lines are parsed a block at a time (``json.loads`` mapped over
    the block's lines); only a block holding a bad line is parsed again line by line.

    Empty (or blank) lines are skipped. A line that is not valid JSON, is not a JSON object
    (``[1, 2]``, ``3``) or cannot be decoded is a bad record: skipped, counted and reported
    through ``ctx.report_bad_record`` as ``file:line: reason`` (1-based line of the file),
    subject to ``emrflow.bad-records.max-ratio`` / ``.max-count``; or fatal.

    Args:
        fail_on_bad_records: raise :class:`~emrflow.errors.BadRecordError` on the first bad
            line; ``None`` follows the ``emrflow.bad-records.fail`` option.
        encoding: ASCII-compatible text encoding of the files (JSON lines are UTF-8).

    Raises:
        ValueError: the encoding is not ASCII-compatible (LookupError: unknown).
    """

    name = "JSON lines"

    def __init__(self, fail_on_bad_records: bool | None = None, encoding: str = "utf-8"):
        _check_encoding(encoding)
        self.fail_on_bad_records = fail_on_bad_records
        self.encoding = encoding

    def create_reader(self, ctx: SubtaskContext) -> "_JsonLinesReader":
        return _JsonLinesReader(self, ctx)


class JsonLinesSource(FileSource):
    """Dicts from JSON lines files: a bounded :class:`~emrflow.connectors.monitoring.FileSource` with a
    :class:`JsonLinesFormat` (see there for splitting and bad lines).

    Args:
        path: a file or a directory of files (names starting with ``.`` or ``_`` are skipped),
            local or ``s3://``.
        fail_on_bad_records: raise :class:`~emrflow.errors.BadRecordError` on the first bad
            line; ``None`` follows the ``emrflow.bad-records.fail`` option.
        encoding: ASCII-compatible text encoding of the files (JSON lines are UTF-8).

    Raises:
        ValueError: the encoding is not ASCII-compatible (LookupError: unknown).

    Example::

        env.read_json_lines("events.jsonl").map(lambda e: e["user"])   # or
        env.from_source(JsonLinesSource("s3://bucket/events/"))
    """

    default_name = "JSON Lines Source"

    def __init__(self, path: str, fail_on_bad_records: bool | None = None, encoding: str = "utf-8"):
        super().__init__(path, JsonLinesFormat(fail_on_bad_records, encoding))


class _JsonLinesReader(_ParsingReader):
    def __init__(self, source: JsonLinesFormat, ctx: SubtaskContext):
        super().__init__(ctx, source.encoding, source.fail_on_bad_records)
        self._loads = json.JSONDecoder().decode

    def read_split(self, split: FileSplit) -> Iterator[list]:
        reached = self._reached
        index = split.line  # line index within the range of the block's first line
        for block in self._blocks(split):
            batch = self._convert(block, split, index)
            index += block.count(b"\n")
            split.offset, split.line = reached[0], index
            if batch:
                yield batch

    def _fast(self, block: bytes) -> list:
        lines = self._decode_lines(block)
        if "" in lines:
            lines = list(filter(None, lines))
        records = list(map(self._loads, lines))
        if records and {*map(type, records)} != {dict}:
            raise ValueError("not only objects")
        return records

    def _parse_line(self, raw: bytes) -> tuple[dict | None, str | None]:
        """Return ``(object, None)``, ``(None, None)`` for a blank line, or ``(None, reason)``."""
        try:
            line = raw.decode(self._encoding)
        except UnicodeDecodeError as e:
            return None, f"could not decode line as {self._encoding}: {e.reason}"
        if not line.strip():
            return None, None
        try:
            value = self._loads(line)
        except json.JSONDecodeError as e:
            return None, f"malformed JSON: {e.msg} (column {e.colno})"
        if type(value) is not dict:
            return None, "expected a JSON object, got a JSON " + _JSON_TYPES.get(type(value), type(value).__name__)
        return value, None


class JsonLinesFileSink(FileSink):
    """One ``json.dumps(record)`` line per record (JSON lines), in part files ``part-<i>-<n>.jsonl``.

    A text format on :class:`~emrflow.connectors.files.FileSink`: same two-phase commit,
    rolling policy (``sink.rolling-policy.*``), write modes and exactly-once guarantee.
    Records must be JSON-serialisable (dicts, lists, str, numbers, bool, None; tuples
    become arrays); anything else fails the job with a ``TypeError`` naming the type.

    Args:
        path: output directory (local or ``s3://``).
        write_mode: see :class:`~emrflow.connectors.files.FileSink`.
        encoding: text encoding of the part files.
        bucket_assigner: ``record -> bucket`` (a relative sub-directory such as
            ``"dt=2024-01-31/hour=07"``), see :class:`DateTimeBucketAssigner`; ``None``:
            all part files directly under ``path``.
        ensure_ascii: escape non-ASCII characters (``json.dumps``'s option); default False.
    """

    default_name = "JSON Lines File Sink"
    suffix = ".jsonl"

    def __init__(self, path: str, write_mode: WriteMode = WriteMode.NO_OVERWRITE, encoding: str = "utf-8",
                 bucket_assigner: Callable[[Any], str] | None = None, ensure_ascii: bool = False):
        super().__init__(path, write_mode, encoding, bucket_assigner=bucket_assigner)
        self.ensure_ascii = ensure_ascii

    def formatter(self, f: io.TextIOBase) -> Callable[[list], None]:
        write = f.write
        dumps = json.JSONEncoder(ensure_ascii=self.ensure_ascii).encode

        def write_json(records: list) -> None:
            if records:
                write("\n".join(map(dumps, records)) + "\n")
        return write_json


# -- Parquet -----------------------------------------------------------------------------------

def _pq():
    import pyarrow.parquet as pq
    return pq


@dataclass
class ParquetSplit:
    """Row groups of one Parquet file (all of them by default), with the position after the records read.

    Attributes:
        path: the file's URI.
        row_groups: the row groups to read, in order; ``None``: every row group of the file.
        group: index into the split's row groups of the one being read.
        rows: rows of that row group already emitted.
    """

    path: str
    row_groups: tuple[int, ...] | None = None
    group: int = 0
    rows: int = 0

    @property
    def split_id(self) -> str:
        """The file's URI for a whole file, else ``<uri>#<first row group>``."""
        return self.path if self.row_groups is None else f"{self.path}#{self.row_groups[0]}"


class ParquetFormat(FileFormat):
    """Records from Parquet files (pyarrow): Flink's Parquet ``BulkFormat``.

    A bounded source deals the row groups of all files, in file order (``path``'s files sorted by
    name), round-robin: row group ``k`` goes to subtask ``k % parallelism``, so subtasks beyond the
    number of row groups read nothing; a subtask's row groups of one file are one split. A monitored
    source reads each new file as one split. The read position (row group, rows of it already
    emitted) is checkpointed, so a restore continues at the record after the checkpoint.

    Records are dicts ``{column: value}`` (``record_type="dict"``, the default) or tuples
    in column order (``record_type="tuple"``), with Python values as pyarrow's
    ``to_pylist`` gives them (``int``, ``float``, ``str``, ``bytes``, ``datetime``, lists,
    dicts for structs, ``None`` for nulls).

    Args:
        columns: the columns to read, in this order; ``None``: all.
        record_type: ``"dict"`` or ``"tuple"``.
        batch_rows: records per batch handed to the runtime.

    Raises:
        ValueError: bad ``record_type``, ``columns`` or ``batch_rows`` (the message names it).
    """

    name = "Parquet"

    def __init__(self, columns: Sequence[str] | None = None, record_type: str = "dict", batch_rows: int = 1024):
        if record_type not in ("dict", "tuple"):
            raise ValueError(f"record_type must be 'dict' or 'tuple', got {record_type!r}")
        if columns is not None and (isinstance(columns, str) or not columns
                                    or not all(isinstance(c, str) for c in columns)):
            raise ValueError(f"columns must be a non-empty list of column names, got {columns!r}")
        if not isinstance(batch_rows, int) or batch_rows < 1:
            raise ValueError(f"batch_rows must be a positive int, got {batch_rows!r}")
        self.columns = list(columns) if columns is not None else None
        self.record_type = record_type
        self.batch_rows = batch_rows

    def bounded_splits(self, files: list[str], file_system: FileSystem, parallelism: int) -> list[tuple[int, Any]]:
        """Row group ``k`` of all files to subtask ``k % parallelism``; one split per file and subtask
        (a file whose footer cannot be read is one split, so its reader reports it)."""
        out: list[tuple[int, Any]] = []
        k = 0
        for path in files:
            try:
                with file_system.open_input(path) as f:
                    groups = _pq().ParquetFile(f).metadata.num_row_groups
            except Exception:  # noqa: BLE001 - pyarrow's ArrowInvalid and OSError: the reader reports it
                out.append((k % parallelism, ParquetSplit(path)))
                continue
            for i in range(parallelism):
                mine = tuple(range((i - k) % parallelism, groups, parallelism))
                if mine:
                    out.append((i, ParquetSplit(path, mine)))
            k += groups
        return out

    def file_split(self, path: str) -> ParquetSplit:
        return ParquetSplit(path)

    def create_reader(self, ctx: SubtaskContext) -> "_ParquetReader":
        return _ParquetReader(self, ctx)


class ParquetSource(FileSource):
    """Records from Parquet files (pyarrow), split among subtasks by row group: a bounded
    :class:`~emrflow.connectors.monitoring.FileSource` with a :class:`ParquetFormat` (see there).

    Args:
        path: a Parquet file or a directory of them, local or ``s3://``.
        columns, record_type, batch_rows: see :class:`ParquetFormat`.

    Raises:
        ValueError: see :class:`ParquetFormat`.
    """

    default_name = "Parquet Source"

    def __init__(self, path: str, columns: Sequence[str] | None = None, record_type: str = "dict",
                 batch_rows: int = 1024):
        super().__init__(path, ParquetFormat(columns, record_type, batch_rows))


class _ParquetReader:
    """Reads :class:`ParquetSplit`\\ s a record batch at a time; keeps the last file open."""

    def __init__(self, source: ParquetFormat, ctx: SubtaskContext):
        self._src = source
        self._ctx = ctx
        self._open: tuple[str, Any, Any] | None = None  # (path, file object, ParquetFile)

    def _parquet_file(self, path: str):
        if self._open is not None and self._open[0] == path:
            return self._open[2]
        self.close()
        f = self._ctx.file_system.open_input(path)
        try:
            pf = _pq().ParquetFile(f)
        except Exception as exc:  # noqa: BLE001 - pyarrow's ArrowInvalid and OSError
            f.close()
            raise BadRecordError(path, 0, f"not a readable Parquet file: {exc}") from None
        self._open = (path, f, pf)
        return pf

    def read_split(self, split: ParquetSplit) -> Iterator[list]:
        """Yield the records of ``split`` from its position; sets it before each yield."""
        src = self._src
        as_dicts = src.record_type == "dict"
        pf = self._parquet_file(split.path)
        if src.columns is not None:
            missing = [c for c in src.columns if c not in pf.schema_arrow.names]
            if missing:
                raise BadRecordError(split.path, 0, f"no column(s) {missing} in the file; it has "
                                     f"{pf.schema_arrow.names}")
        groups = split.row_groups if split.row_groups is not None else range(pf.metadata.num_row_groups)
        first = split.group
        for u in range(first, len(groups)):
            skip = split.rows if u == first else 0
            emitted = 0
            for rb in pf.iter_batches(batch_size=src.batch_rows, row_groups=[groups[u]], columns=src.columns,
                                      use_threads=False):
                if skip:
                    if skip >= rb.num_rows:
                        skip -= rb.num_rows
                        emitted += rb.num_rows
                        continue
                    rb, emitted, skip = rb.slice(skip), emitted + skip, 0
                if as_dicts:
                    records = rb.to_pylist()
                else:
                    records = list(zip(*(c.to_pylist() for c in rb.columns)))
                emitted += len(records)
                split.group, split.rows = u, emitted
                if records:
                    yield records
            split.group, split.rows = u + 1, 0

    def close(self) -> None:
        if self._open is not None:
            f = self._open[1]
            self._open = None
            f.close()


class ParquetFileSink(FileSink):
    """Parquet part files (pyarrow), ``part-<i>-<n>.parquet``: Flink's ``FileSink.forBulkFormat``.

    Records are dicts (``{column: value}``; a key missing from a record is written as null, a
    key not in the schema fails the job rather than being dropped) or tuples/lists in column
    order. The schema is ``schema`` if given, else inferred by pyarrow from the first row group
    a subtask writes (all part files of a subtask then share it; a column that is null in
    all those records is inferred as type ``null`` and later values fail: give ``schema``).
    Tuple records without ``schema`` take their column names from ``names`` (default ``f0``,
    ``f1``...). Records are buffered and written a row group of ``row_group_rows`` at a time.

    A Parquet file is complete only when its footer is written, so a part file rolls at every
    checkpoint (Flink's ``OnCheckpointRollingPolicy``), when it reaches
    ``sink.rolling-policy.file-size`` bytes or is older than ``sink.rolling-policy.rollover-interval``.
    Commit and delivery are those of every file sink: exactly once with checkpoints, all or
    nothing at the end of a job without them. Without checkpoints and without a bucket
    assigner, a subtask that got no records writes an empty file if ``schema`` is given and
    no file otherwise.

    Args:
        path: output directory (local or ``s3://``).
        schema: a ``pyarrow.Schema``, or ``None`` to infer it.
        names: column names of tuple records when ``schema`` is ``None``.
        compression: Parquet codec (``"snappy"``, ``"zstd"``, ``"gzip"``, ``"none"``...).
        row_group_rows: records per row group (buffered in memory until written).
        write_mode: see :class:`~emrflow.connectors.files.FileSink`.
        bucket_assigner: ``record -> bucket`` sub-directory, see :class:`DateTimeBucketAssigner`.

    Raises:
        TypeError: ``schema`` is not a ``pyarrow.Schema``.
        ValueError: ``row_group_rows`` is not positive, or ``names`` is empty or disagrees with ``schema``.
    """

    default_name = "Parquet File Sink"
    suffix = ".parquet"
    #: A bulk format: written through :meth:`open_bulk`, not a text stream.
    bulk = True

    def __init__(self, path: str, schema: Any = None, names: Sequence[str] | None = None,
                 compression: str = "snappy", row_group_rows: int = 65536,
                 write_mode: WriteMode = WriteMode.NO_OVERWRITE,
                 bucket_assigner: Callable[[Any], str] | None = None):
        super().__init__(path, write_mode, bucket_assigner=bucket_assigner)
        import pyarrow as pa
        if schema is not None and not isinstance(schema, pa.Schema):
            raise TypeError(f"schema must be a pyarrow.Schema, got {type(schema).__name__}")
        if names is not None and (isinstance(names, str) or not names):
            raise ValueError(f"names must be a non-empty list of column names, got {names!r}")
        if schema is not None and names is not None and list(names) != schema.names:
            raise ValueError(f"names {list(names)} disagree with the schema's {schema.names}")
        if not isinstance(row_group_rows, int) or row_group_rows < 1:
            raise ValueError(f"row_group_rows must be a positive int, got {row_group_rows!r}")
        self.schema = schema
        self.names = list(names) if names is not None else None
        self.compression = compression
        self.row_group_rows = row_group_rows

    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        return _BucketWriter(self, ctx)

    def open_bulk(self, out: io.BufferedIOBase, memo: dict, uri: str) -> "_ParquetPart":
        """Return the writer of one part file on ``out``; ``memo`` is shared by a subtask's parts
        (it keeps the inferred schema); ``uri`` names the file in messages."""
        return _ParquetPart(self, out, memo, uri)


class _ParquetPart:
    """One Parquet part file: buffers records, writes row groups, the footer on :meth:`close`."""

    def __init__(self, sink: ParquetFileSink, out: io.BufferedIOBase, memo: dict, uri: str):
        self._sink, self._out, self._memo, self._uri = sink, out, memo, uri
        self._buf: list = []
        self._writer: Any = None  # pyarrow.parquet.ParquetWriter, opened with the first row group

    def write(self, records: list) -> None:
        self._buf += records
        if len(self._buf) >= self._sink.row_group_rows:
            self._flush()

    def _schema(self, records: list):
        import pyarrow as pa
        schema = self._sink.schema or self._memo.get("schema")
        if schema is not None:
            return schema
        first = records[0]
        try:
            if isinstance(first, dict):
                schema = pa.Table.from_pylist(records).schema
            else:
                names = self._sink.names or [f"f{j}" for j in range(len(first))]
                schema = pa.Table.from_pydict(dict(zip(names, map(list, zip(*records))))).schema
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise ValueError(f"{self._uri}: cannot infer a Parquet schema from the records "
                             f"(first: {first!r}): {exc}; give ParquetFileSink(schema=...)") from None
        self._memo["schema"] = schema
        return schema

    def _table(self, records: list):
        import pyarrow as pa
        kinds = {*map(type, records)}
        if kinds <= {dict}:
            as_dicts = True
        elif all(issubclass(k, (tuple, list)) for k in kinds):
            as_dicts = False
        else:
            raise TypeError(f"{self._uri}: a Parquet sink writes dicts or tuples, got "
                            f"{', '.join(sorted(k.__name__ for k in kinds))} records")
        schema = self._schema(records)
        names = schema.names
        try:
            if as_dicts:
                known = set(names)
                extra = next((r for r in records if not r.keys() <= known), None)
                if extra is not None:
                    raise ValueError(f"fields {sorted(set(extra) - known)} of record {extra!r} are not in "
                                     f"the schema's columns {names}")
                return pa.Table.from_pylist(records, schema=schema)
            wrong = next((r for r in records if len(r) != len(names)), None)
            if wrong is not None:
                raise ValueError(f"record {wrong!r} has {len(wrong)} fields, the schema {len(names)}")
            return pa.Table.from_pydict(dict(zip(names, map(list, zip(*records)))), schema=schema)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise ValueError(f"{self._uri}: records do not fit the Parquet schema "
                             f"({schema.to_string(show_schema_metadata=False)!r}): {exc}") from None

    def _flush(self) -> None:
        if not self._buf:
            return
        table = self._table(self._buf)
        self._buf = []
        if self._writer is None:
            self._writer = _pq().ParquetWriter(self._out, table.schema, compression=self._sink.compression)
        self._writer.write_table(table, row_group_size=self._sink.row_group_rows)

    def close(self) -> None:
        """Write the buffered records and the footer (the file stays open: the caller closes it)."""
        self._flush()
        if self._writer is None:
            schema = self._sink.schema or self._memo.get("schema")
            if schema is None:
                raise ValueError("no schema")  # the caller does not open files without records and schema
            self._writer = _pq().ParquetWriter(self._out, schema, compression=self._sink.compression)
        self._writer.close()

    def discard(self) -> None:
        """Forget buffered records (the file is being deleted)."""
        self._buf = []


# -- buckets ---------------------------------------------------------------------------------

def check_bucket(bucket: Any, record: Any = None) -> str:
    """Return ``bucket`` if it is a valid bucket id: a relative path of ``/``-separated names.

    Args:
        bucket: what a bucket assigner returned.
        record: the record it was returned for (named in the message).

    Raises:
        ValueError: not a ``str``, empty, absolute, with an empty, ``.``/``..`` or hidden
            (``.``/``_``-prefixed: readers skip those) component, or a backslash.
    """
    parts = bucket.split("/") if isinstance(bucket, str) else []
    if (not parts or "\\" in bucket or any(not p or p in (".", "..") or p[0] in "._" for p in parts)):
        raise ValueError(f"the bucket assigner returned {bucket!r} for record {record!r}: expected a relative "
                         "path such as 'dt=2024-01-31/hour=07' (non-empty names separated by '/', none "
                         "starting with '.' or '_', no '..' nor backslash)")
    return bucket


class DateTimeBucketAssigner:
    """Buckets by date and time of a timestamp (Flink's ``DateTimeBucketAssigner``).

    ``assigner(record)`` returns ``time.strftime(format)`` of the record's timestamp in
    ``timezone`` (UTC by default), e.g. ``"dt=2024-01-31/hour=07"``. Pass it as
    ``bucket_assigner=`` to a file sink.

    Args:
        format: a ``strftime`` format; ``/`` makes nested directories. Default
            ``"dt=%Y-%m-%d/hour=%H"`` (Hive-style partitions by day and hour).
        timestamp: ``record -> event time``: milliseconds since the epoch (int or float, as
            Flink's timestamps), or a ``datetime`` (a naive one is taken as UTC). ``None``:
            the processing time when the sink writes the record (Flink's default; output
            then depends on when records arrive).
        timezone: a ``datetime.tzinfo`` (``zoneinfo.ZoneInfo("Europe/Paris")``); default UTC.

    Raises:
        ValueError: ``format`` is empty or makes no valid bucket of the epoch.
        TypeError: ``timestamp`` is not callable.

    Example::

        >>> a = DateTimeBucketAssigner(timestamp=lambda r: r["ts_ms"])
        >>> a({"ts_ms": 1706684400000})
        'dt=2024-01-31/hour=07'
    """

    def __init__(self, format: str = "dt=%Y-%m-%d/hour=%H",  # noqa: A002 - Flink's name
                 timestamp: Callable[[Any], Any] | None = None, timezone: _dt.tzinfo | None = None):
        if timestamp is not None and not callable(timestamp):
            raise TypeError(f"timestamp must be a callable record -> epoch milliseconds, got {timestamp!r}")
        if not isinstance(format, str) or not format:
            raise ValueError(f"format must be a non-empty strftime format, got {format!r}")
        self.format = format
        self.timestamp = timestamp
        self.timezone = timezone or _dt.timezone.utc
        check_bucket(_dt.datetime.fromtimestamp(0, self.timezone).strftime(format), "(the epoch)")
        self._cache: dict[int, str] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}

    def bucket_of_second(self, second: int) -> str:
        """The bucket of a whole second since the epoch (cached)."""
        b = self._cache.get(second)
        if b is None:
            if len(self._cache) >= 4096:
                self._cache.clear()
            b = self._cache[second] = _dt.datetime.fromtimestamp(second, self.timezone).strftime(self.format)
        return b

    def __call__(self, record: Any) -> str:
        if self.timestamp is None:
            return self.bucket_of_second(int(time.time()))
        ts = self.timestamp(record)
        if isinstance(ts, _dt.datetime):
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=_dt.timezone.utc)
            return ts.astimezone(self.timezone).strftime(self.format)
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise TypeError(f"the timestamp of record {record!r} is {ts!r}: expected epoch milliseconds "
                            "(int or float) or a datetime")
        return self.bucket_of_second(int(ts // 1000))

    def __repr__(self) -> str:
        return f"DateTimeBucketAssigner(format={self.format!r}, timezone={self.timezone})"


# -- the writer of bucketed and bulk part files -------------------------------------------------

class _Part:
    """One open in-progress file of a bucket."""

    __slots__ = ("tmp", "final", "raw", "text", "write", "bulk", "opened")

    def __init__(self, tmp: str, final: str):
        self.tmp, self.final = tmp, final
        self.raw: Any = None    # _RawStream: counts the bytes written
        self.text: Any = None   # the (text or binary) stream the format writes to
        self.write: Any = None  # records -> None
        self.bulk: Any = None   # a bulk format's part writer (close() writes its footer)
        self.opened = time.monotonic()


def _walk_files(file_system: FileSystem, path: str) -> list[tuple[str, str]]:
    """``(directory uri, file name)`` of every file under ``path``, at any depth."""
    if not fs.is_s3(path):
        local = path[len("file://"):] if path.startswith("file://") else path
        return [(d, n) for d, _, names in os.walk(local) for n in names]
    import pyarrow.fs as pafs
    pfs, root = file_system.resolve(path)
    infos = pfs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=True))
    out = []
    for i in infos:
        if i.type == pafs.FileType.File:
            rel = i.path[len(root):].lstrip("/")
            d, _, name = rel.rpartition("/")
            out.append((fs.join(path, d) if d else path, name))
    return out


class _BucketWriter(_PartWriter):
    """Part files of one subtask, one open in-progress file per bucket (Flink's ``Buckets``).

    The same two-phase commit as :class:`~emrflow.connectors.files._FileWriter` (both subclass
    :class:`~emrflow.connectors.files._PartWriter`): without checkpoints each bucket's file
    is committed at the end of the job through the job's commit record; with checkpoints every
    open file rolls at the barrier (also by size and age) and is published when that checkpoint
    completes; a restore publishes what the checkpoint held pending and deletes this subtask's
    in-progress files of failed attempts in every bucket directory (and in subtask 0 those of
    subtasks beyond the current parallelism).
    """

    def __init__(self, sink: FileSink, ctx: SubtaskContext):
        super().__init__(sink, ctx)
        self._assign = getattr(sink, "bucket_assigner", None)
        self._bulk = bool(getattr(sink, "bulk", False))
        self._memo: dict = {}
        self._parts: dict[str, _Part] = {}           # bucket -> open in-progress file
        self._buckets: dict[str, set[str]] = {}      # bucket -> names of the part files written
        self._valid: set = set()                     # buckets already checked

    # -- files -----------------------------------------------------------------------
    def _open(self, bucket: str) -> _Part:
        d = fs.join(self._path, bucket) if bucket else self._path
        part = _Part(*self._next_names(d))
        if self._local:
            os.makedirs(d, exist_ok=True)
        part.raw = self._open_raw(part.tmp)
        self._parts[bucket] = part
        self._buckets.setdefault(bucket, set()).add(part.final.rsplit("/", 1)[-1])
        buffered = io.BufferedWriter(part.raw, _WRITE_BUFFER)
        try:
            if self._bulk:
                part.text = buffered
                part.bulk = getattr(self._sink, "open_bulk")(buffered, self._memo, part.final)  # noqa: B009
                part.write = part.bulk.write
            else:
                part.text = io.TextIOWrapper(buffered, encoding=self._sink.encoding, newline="")
                self._sink.start(part.text)
                part.write = self._sink.formatter(part.text)
        except BaseException:
            self.abort()
            raise
        return part

    def _close(self, bucket: str) -> tuple[str, str]:
        """Finish, flush, sync and close a bucket's in-progress file; return its names."""
        part = self._parts.pop(bucket)
        if part.bulk is not None:
            part.bulk.close()
        self._sync_close(part.text, part.raw)
        return part.tmp, part.final

    def _roll_all(self) -> None:
        for bucket in list(self._parts):
            self._closed.append(self._close(bucket))

    def _listing(self) -> list[tuple[str, str]]:
        return _walk_files(self._fs, self._path)

    def write_batch(self, records: list) -> None:
        if not records:
            return
        assign = self._assign
        if assign is None:
            groups = {"": records}
        else:
            keys = list(map(assign, records))
            first = keys[0]
            if keys.count(first) == len(keys):
                groups = {first: records}
            else:
                groups = {}
                try:
                    for k, r in zip(keys, records):
                        g = groups.get(k)
                        if g is None:
                            groups[k] = [r]
                        else:
                            g.append(r)
                except TypeError:  # an unhashable bucket: name it
                    j = next(j for j, k in enumerate(keys) if not isinstance(k, str))
                    check_bucket(keys[j], records[j])
                    raise
            for k in groups:
                if k not in self._valid:
                    check_bucket(k, groups[k][0])
                    self._valid.add(k)
        for bucket, recs in groups.items():
            part = self._parts.get(bucket) or self._open(bucket)
            part.write(recs)
            if self._rolls(part.raw, part.opened):
                self._closed.append(self._close(bucket))

    # -- end of the job ----------------------------------------------------------------------
    def prepare_commit(self) -> Any:
        """Close every in-progress file; returns this subtask's share of the job's commit record.

        Returns:
            The dict of :meth:`~emrflow.connectors.files._PartWriter.prepare_commit` (``keep``
            empty when records are bucketed), plus ``buckets``: ``{bucket: [part file names this
            subtask wrote there]}`` (``""``: ``path`` itself), with which the commit cleans (and in
            OVERWRITE mode replaces) each bucket.
        """
        if (not self._checkpointing and self._assign is None and not self._buckets
                and (not self._bulk or getattr(self._sink, "schema", None) is not None)):
            self._open("")  # one file per subtask, even if empty, as the other file sinks
        record = super().prepare_commit()
        if self._assign is not None:
            record["keep"] = []
        record["buckets"] = {b: sorted(names) for b, names in self._buckets.items()}
        return record

    def abort(self, discard_pending: bool = True) -> None:
        """Close and delete the in-progress files and files not yet in a checkpoint; with
        ``discard_pending`` also the files of checkpoints not yet committed."""
        parts, self._parts = list(self._parts.values()), {}
        for part in parts:
            if part.bulk is not None:
                part.bulk.discard()
            try:
                if part.text is not None:
                    part.text.close()
                else:
                    part.raw.close()
            except (OSError, ValueError):
                pass  # e.g. the disk is full: the file goes anyway
        self._delete_unpublished([p.tmp for p in parts], discard_pending)
