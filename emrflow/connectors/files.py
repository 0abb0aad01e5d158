"""Files: the text line and CSV formats of :class:`~emrflow.connectors.monitoring.FileSource`, text and
CSV part-file sinks.

:class:`TextLineFormat` and :class:`CsvFormat` are record formats of the one file source (a
FLIP-27 split source, Flink's ``FileSource`` with a ``TextLineInputFormat`` / ``CsvReaderFormat``);
:class:`TextFileSource` and :class:`CsvSource` build a bounded one. A path is a file or a
directory (its regular files whose names do not start with ``.`` or ``_``, sorted by name). The
split enumerator (in the JobManager) cuts each file into ``parallelism`` byte ranges of
near-equal size (:func:`split_range`); range ``i`` of every file is a split of subtask ``i``, and
a line belongs to the range its first byte lies in (Hadoop's ``LineRecordReader`` rule), so every
line is read exactly once at any parallelism. A split
(:class:`~emrflow.connectors.monitoring.FileSplit`) carries the byte offset of its next line and
the number of lines before it, so it resumes there after a restore (at any parallelism) and a bad
line is reported with its file and line number.

Reading is block-wise: a reader cuts the file into blocks of whole lines of
about :data:`BLOCK_BYTES` bytes and does the per-line work (decoding, splitting,
type conversion) in C over a whole block; one block becomes one batch. Files
must use an ASCII-compatible encoding (UTF-8, Latin-1...), since lines are found
by their ``b"\\n"`` byte before decoding.

A CSV source whose types are ``int``/``float``/``str``/``bool`` parses runs of about
:data:`_ARROW_BYTES` of consecutive blocks with one ``pyarrow.csv.read_csv`` call into
typed columns, then cuts the rows back into the same blocks: batches, read positions,
checkpoints and bad-record reports are those of the per-block path, which still takes
every run pyarrow would read differently or rejects (see :class:`_ArrowCsv`;
``tests/unit/test_csv_arrow.py`` compares both paths). Reading ``bench/data/ratings-spread.csv``
(5.0 M rows ``int,int,float,int``, 113 MB) with the reader alone takes 4.7 s of CPU on
the per-block path and 2.7 s with pyarrow (1.05 vs 1.85 M records/s; a ``csv.reader``
loop converting the same fields: 6.4 s); about 40 % of the 2.7 s is pyarrow's parsing,
the rest making the Python ints, floats and tuples, and with the garbage collector off
the reader takes a quarter less. A slot process pays about 0.1 s and 32 MiB for importing
pyarrow.

Sinks mirror Flink's ``FileSink`` with its two-phase commit, on local disk or S3:
subtask ``i`` writes hidden in-progress files (``.part-<i>-<n>[suffix].inprogress.<token>``)
and renames them to ``part-<i>-<n>[suffix]`` only when the output is committed: when
the whole job has finished (BATCH, or no checkpoints), or when the checkpoint that
covers a file completes (STREAMING with checkpoints; files roll at each barrier and
by size and age). A failed job's writers abort and delete their in-progress files, so
a failed job never leaves ``part-*`` files that were not committed.
"""

from __future__ import annotations

import codecs
import csv
import enum
import io
import json
import logging
import operator
import os
import re
import secrets
import time
from abc import ABC, abstractmethod
from itertools import islice
from typing import Any, BinaryIO, Callable, Iterator, Sequence

from emrflow import fs
from emrflow.connectors.base import Sink, SinkWriter, SubtaskContext
from emrflow.connectors.monitoring import FileFormat, FileSource, FileSplit
from emrflow.errors import BadRecordError, InputNotFoundError, OutputCorruptError, OutputExistsError
from emrflow.fs import FileSystem
from emrflow.runtime.network.columns import ColumnBatch

log = logging.getLogger(__name__)

#: Bytes of whole lines per block (= batch): small batches stay in the CPU cache
#: between chained operators and tasks.
BLOCK_BYTES = 4 << 10
_READ_BYTES = 1 << 20  # bytes per read() from the file; blocks are cut from this buffer
#: Bytes of consecutive blocks parsed by one ``pyarrow.csv.read_csv`` call (a call costs
#: about 0.2 ms, a whole 4 KiB block's worth of parsing: one call per block would be slower).
#: A run is also one column batch of the columnar exchange: 512 KiB (about 23 k ratings rows)
#: rather than 128 KiB cut the 30-day window job at p=2 from 6.3-6.6 s to 5.4-5.8 s (fewer
#: exchange messages, per-batch NumPy and Arrow calls, and hand-overs between threads).
_ARROW_BYTES = 512 << 10
_WRITE_BUFFER = 1 << 20  # bytes of buffer of a part file


# -- splitting -----------------------------------------------------------------------------

def list_input_files(path: str, file_system: FileSystem) -> list[str]:
    """Return ``[path]`` for a file, or a directory's regular files not starting with ``.``/``_``, by name.

    Args:
        path: a local path or ``s3://`` URI.
        file_system: the job's file system.

    Raises:
        InputNotFoundError: ``path`` does not exist (or is neither a file nor a directory).
    """
    if fs.is_s3(path):
        if file_system.is_file(path):
            return [path]
        finish_interrupted_commits(path, file_system)  # a killed run's decided commit: finish it
        files = [f for f in file_system.list_files(path) if not f.rsplit("/", 1)[-1].startswith((".", "_"))]
        if files or file_system.exists(path):
            return files
        raise InputNotFoundError(f"input path does not exist: {path}", path)
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        finish_interrupted_commits(path, file_system)  # the output of a killed run's decided commit: finish it
        return [os.path.join(path, n) for n in sorted(os.listdir(path))
                if not n.startswith((".", "_")) and os.path.isfile(os.path.join(path, n))]
    if os.path.exists(path):
        raise InputNotFoundError(f"input path is neither a file nor a directory: {path}", path)
    raise InputNotFoundError(f"input path does not exist: {path}", path)


def split_range(size: int, parallelism: int, index: int) -> tuple[int, int]:
    """Return ``(start, end)``, the bytes ``[start, end)`` of range ``index`` of ``parallelism``
    near-equal ranges of a file of ``size`` bytes."""
    return size * index // parallelism, size * (index + 1) // parallelism


def _line_blocks(f: BinaryIO, start: int, end: int, block_bytes: int = BLOCK_BYTES,
                 reached: list | None = None) -> Iterator[bytes]:
    """Yield blocks (``>= block_bytes``, but the last) of ``f``'s whole lines starting in ``[start, end)``.

    With ``reached`` (a one-element list), ``reached[0]`` is the file offset just after
    the block last yielded, whenever a block is yielded (a checkpointable read position).
    """
    if start > 0:
        f.seek(start - 1)
        if f.read(1) != b"\n":
            f.readline()  # the partial first line belongs to the previous range
    base = f.tell()  # file offset of buf[0]
    buf = b""
    i = 0  # start of the next line in buf
    eof = False
    while True:
        limit = end - base  # lines starting at buf index < limit are ours
        if i >= limit:
            return
        j = buf.find(b"\n", min(i + block_bytes, limit) - 1)
        if j >= 0:
            if reached is not None:
                reached[0] = base + j + 1
            yield buf[i:j + 1]
            i = j + 1
        elif eof:
            if i < len(buf):
                if reached is not None:
                    reached[0] = base + len(buf)
                yield buf[i:]
            return
        else:
            want = end - base - len(buf)  # bytes of the range not yet read (then: rest of a line)
            data = f.read(min(_READ_BYTES, max(want, 1 << 16)))
            eof = not data
            buf = buf[i:] + data
            base += i
            i = 0


def _check_encoding(encoding: str) -> None:
    if not "a\n".encode(encoding).endswith(b"a\n"):  # also raises LookupError for unknown names
        raise ValueError(f"encoding {encoding!r} is not ASCII-compatible; files are split at b'\\n'")


class _BlockReader(ABC):
    """Reads the blocks of :class:`~emrflow.connectors.monitoring.FileSplit`\\ s (byte ranges of files) for
    a line format; :meth:`read_split` yields one batch per block and sets the split's position
    (offset, line) before it yields."""

    def __init__(self, ctx: SubtaskContext, encoding: str, fail_on_bad_records: bool | None = None):
        self._ctx = ctx
        self._encoding = encoding
        #: a bad record fails the job (the source's option, else ``emrflow.bad-records.fail``)
        self._fail = (bool(ctx.config.get("emrflow.bad-records.fail")) if fail_on_bad_records is None
                      else fail_on_bad_records)
        self._reached = [0]

    def _bad(self, split: FileSplit, index_in_split: int, reason: str) -> None:
        line = split.first_line_number(self._ctx.file_system) + index_in_split
        if self._fail:
            raise BadRecordError(split.path, line, reason) from None
        self._ctx.report_bad_record(split.path, line, reason)

    def _blocks(self, split: FileSplit) -> Iterator[bytes]:
        start = split.start if split.offset is None else split.offset
        if start >= split.stop:
            return
        with self._ctx.file_system.open_input(split.path) as f:
            yield from _line_blocks(f, start, split.stop, BLOCK_BYTES, self._reached)

    @abstractmethod
    def read_split(self, split: FileSplit) -> Iterator[list]:
        """Yield the records of ``split`` from its position, a batch per block (see the class)."""

    def _decode_lines(self, block: bytes) -> list[str]:
        """Decode a block and split it into lines without ``\\n`` / ``\\r\\n`` terminators."""
        text = block.decode(self._encoding)
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        last = lines.pop()  # "" after a final newline, else the file's unterminated last line
        if last:
            lines.append(last[:-1] if last[-1] == "\r" else last)
        return lines

    def close(self) -> None:
        """Nothing to release: a split's file is closed with its :meth:`read_split` iterator."""


class _ParsingReader(_BlockReader):
    """A :class:`_BlockReader` of a format that parses each line into a record (CSV, JSON lines): a
    block goes through :meth:`_fast` (C speed, fails if any line is bad), else line by line through
    :meth:`_parse_line`, which names what is wrong with each bad line."""

    def _convert(self, block: bytes, split: FileSplit, index: int) -> list:
        """The records of a block whose first line is line ``index`` of ``split``: by ``_fast`` (C speed,
        raises if any line is bad), else line by line by ``_slow``, which reports the bad lines."""
        try:
            batch = self._fast(block)
        except Exception:  # noqa: BLE001 - any failure: find the bad lines one by one
            batch = None
        if batch is None:  # outside the except clause: a BadRecordError has no internal cause
            batch = self._slow(block, split, index)
        return batch

    @abstractmethod
    def _fast(self, block: bytes) -> list | None:
        """The records of a whole block, or ``None`` (or an exception) when a line needs a closer look."""

    @abstractmethod
    def _parse_line(self, raw: bytes) -> tuple[Any, str | None]:
        """Return ``(record, None)``, ``(None, None)`` for a line without a record, or ``(None, reason)``."""

    def _slow(self, block: bytes, split: FileSplit, index: int) -> list:
        """Convert a block line by line, reporting (or raising on) its bad lines."""
        out = []
        raw_lines = block.split(b"\n")
        if not raw_lines[-1]:
            raw_lines.pop()
        for i, raw in enumerate(raw_lines):
            record, reason = self._parse_line(raw)
            if reason is not None:
                self._bad(split, index + i, reason)
            elif record is not None:
                out.append(record)
        return out


class _TextReader(_BlockReader):
    def read_split(self, split: FileSplit) -> Iterator[list]:
        decode, reached = self._decode_lines, self._reached
        index = split.line  # line index within the range of the block's first line
        for block in self._blocks(split):
            try:
                lines = decode(block)
            except UnicodeDecodeError as e:
                line = split.first_line_number(self._ctx.file_system) + index + block.count(b"\n", 0, e.start)
                raise BadRecordError(split.path, line,
                                     f"could not decode line as {self._encoding}: {e.reason}") from None
            index += len(lines)
            split.offset, split.line = reached[0], index
            if lines:
                yield lines


class TextLineFormat(FileFormat):
    """Each line a ``str`` without its terminator (Flink's ``TextLineInputFormat``); lines end at
    ``"\\n"``, a ``"\\r"`` before it is dropped too. A line that cannot be decoded fails the job
    with :class:`~emrflow.errors.BadRecordError` naming its file and line.

    Args:
        encoding: ASCII-compatible text encoding of the files.

    Raises:
        ValueError: the encoding is not ASCII-compatible (LookupError: unknown).
    """

    name = "text"

    def __init__(self, encoding: str = "utf-8"):
        _check_encoding(encoding)
        self.encoding = encoding

    def create_reader(self, ctx: SubtaskContext) -> _TextReader:
        return _TextReader(ctx, self.encoding)


class TextFileSource(FileSource):
    """The lines of a file, or of every file in a directory, without line terminators.

    Mirrors Flink's ``FileSource.forRecordStreamFormat(new TextLineInputFormat(), path)``: a bounded
    :class:`~emrflow.connectors.monitoring.FileSource` with a :class:`TextLineFormat`; files are
    split among subtasks by byte range (see the module docstring). Lines end at ``"\\n"``; a
    ``"\\r"`` before it is dropped too.

    A line that cannot be decoded fails the job with :class:`~emrflow.errors.BadRecordError`.

    Args:
        path: a file or a directory of files.
        encoding: ASCII-compatible text encoding of the files.

    Raises:
        ValueError: the encoding is not ASCII-compatible (LookupError: unknown).
    """

    default_name = "Text File Source"

    def __init__(self, path: str, encoding: str = "utf-8"):
        super().__init__(path, TextLineFormat(encoding))


# -- CSV -----------------------------------------------------------------------------------

def parse_bool(value: str) -> bool:
    """Parse ``true``/``false`` (any case and blanks) or ``1``/``0``: :class:`CsvSource`'s ``bool``.

    Raises:
        ValueError: any other text (``bool("false")`` would be True).
    """
    v = value.strip().lower()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _compile_converters(types: list | None, n: int) -> tuple[Callable, Callable]:
    """Generate, once per reader, ``(columns, row)`` converters of rows of ``n`` fields.

    ``columns(flat)`` converts a flat field list (each row's ``n`` fields and a marker)
    column-wise, a ``map`` of the type over a slice per column and a ``zip``: no Python
    code runs per record. ``row(fields)`` converts one row (the slow path).
    """
    env: dict[str, Any] = {}
    cols, items = [], []
    for j in range(n):
        t = types[j] if types is not None else str
        if t is bool:
            t = parse_bool
        if t is str:
            cols.append(f"f[{j}::{n + 1}]")
            items.append(f"r[{j}]")
        else:
            env[f"t{j}"] = t
            cols.append(f"map(t{j}, f[{j}::{n + 1}])")
            items.append(f"t{j}(r[{j}])")
    # the source text is made of indices and generated names only
    columns = eval(f"lambda f: list(zip({', '.join(cols)}))", env)  # noqa: S307
    row = eval(f"lambda r: ({', '.join(items)},)", env)  # noqa: S307
    return columns, row


#: Encodings in which an all-ASCII block means the same as in ASCII (pyarrow reads bytes).
_ARROW_ENCODINGS = {"utf-8", "ascii", "iso8859-1", "cp1252"}


class _ArrowCsv:
    """Parses runs of consecutive blocks with ``pyarrow.csv`` into the rows the per-block path gives.

    Used only where the result is exactly that of :meth:`_CsvReader._fast` (the
    property tests compare both): ``types`` all ``int``/``float``/``str``/``bool``, at
    least one not ``str``; a one-byte ASCII delimiter; an encoding listed in
    :data:`_ARROW_ENCODINGS`. A run is refused (``None``: the caller parses its blocks
    one by one, finding and reporting bad lines as before) when it holds what pyarrow
    reads otherwise than Python: the quote character (pyarrow runs with quoting off),
    a ``\\r`` not followed by ``\\n`` (a line end to pyarrow), a leading UTF-8 BOM
    (pyarrow drops it), ``0x``/``0X`` where an ``int`` column may be (pyarrow reads
    hex), non-ASCII bytes that are not UTF-8; or when pyarrow rejects anything: an
    empty line (not skipped here, so it fails), a wrong number of fields, a value it
    cannot convert (``""`` is no null here; ``int`` is int64, so a larger value falls
    back to Python's ``int``, as do ``+1``, ``1_000`` and non-ASCII digits; ``bool`` is
    only ``true``/``True``/``TRUE``/``1`` and the ``false`` forms, the rest falls back
    to :func:`parse_bool`); or when its row count or a null says anything went
    otherwise than one row per line.

    Measured: pyarrow accepts no ``float`` text that Python's ``float`` reads
    otherwise, and no ``int`` text but hex (200,000 random short strings).
    """

    def __init__(self, source: "CsvFormat", n: int):
        import pyarrow as pa  # lazily: only readers that use it pay for the import
        import pyarrow.csv as pa_csv

        arrow_types = {int: pa.int64(), float: pa.float64(), str: pa.string(), bool: pa.bool_()}
        types = list(source.types or [])
        names = [f"f{j}" for j in range(n)]
        self._pa, self._csv, self._names = pa, pa_csv, names
        self._parse = pa_csv.ParseOptions(delimiter=source.delimiter, quote_char=False,
                                          double_quote=False, escape_char=False, newlines_in_values=False,
                                          ignore_empty_lines=False)  # an empty line: an error
        self._convert = pa_csv.ConvertOptions(
            column_types={name: arrow_types[t] for name, t in zip(names, types)},
            null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False,
            true_values=["true", "True", "TRUE", "1"], false_values=["false", "False", "FALSE", "0"],
            check_utf8=True)
        self._read_options: dict[int, Any] = {}
        self._hex = int in types
        self._utf8 = codecs.lookup(source.encoding).name == "utf-8"
        q = source.quote_char
        self._quote = q.encode(source.encoding) if q is not None else None

    @staticmethod
    def usable(source: "CsvFormat") -> bool:
        """Whether a source's schema and dialect can be read by pyarrow exactly."""
        types = source.types
        return (types is not None and all(t in (int, float, str, bool) for t in types)
                and any(t is not str for t in types)
                and source.delimiter.isascii() and codecs.lookup(source.encoding).name in _ARROW_ENCODINGS)

    def record_batch(self, blocks: list[bytes], newlines: list[int]) -> Any:
        """Parse consecutive blocks into one ``pyarrow.RecordBatch`` (one row per line), or
        return ``None`` if any block needs the per-block path.

        Args:
            blocks: consecutive blocks of whole lines (only the file's last line may lack its ``\\n``).
            newlines: ``block.count(b"\\n")`` of each block.
        """
        data = b"".join(blocks)
        if self._quote is not None and self._quote in data:
            return None
        if self._hex and ((b"x" in data and b"0x" in data) or (b"X" in data and b"0X" in data)):
            return None  # (a one-byte search is much faster than a two-byte one)
        if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
            return None
        if not data.isascii():
            if not self._utf8 or data[:3] == codecs.BOM_UTF8:
                return None
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return None
        rows = sum(n + (b[-1:] not in (b"\n", b"")) for b, n in zip(blocks, newlines))  # a line is one
        if not rows:
            return None
        size = max(1 << 20, 1 << len(data).bit_length())  # one pyarrow block holds all the data
        options = self._read_options.get(size)
        if options is None:
            options = self._read_options[size] = self._csv.ReadOptions(
                column_names=self._names, use_threads=False, block_size=size)
        try:
            table = self._csv.read_csv(self._pa.BufferReader(data), read_options=options,
                                       parse_options=self._parse, convert_options=self._convert)
        except (self._pa.ArrowException, ValueError):
            return None
        if table.num_rows != rows or any(c.null_count for c in table.columns):
            return None
        return table.combine_chunks().to_batches()[0]

    def batches(self, blocks: list[bytes], newlines: list[int]) -> list[list] | None:
        """Return one list of row tuples per block, or ``None`` if any block needs the per-block path.

        Args:
            blocks: consecutive blocks of whole lines (only the file's last line may lack its ``\\n``).
            newlines: ``block.count(b"\\n")`` of each block.
        """
        counts = [n + (b[-1:] not in (b"\n", b"")) for b, n in zip(blocks, newlines)]
        if not sum(counts):
            return [[] for _ in blocks]
        batch = self.record_batch(blocks, newlines)
        if batch is None:
            return None
        rows = iter(ColumnBatch(batch).rows())
        return [list(islice(rows, c)) for c in counts]


class CsvFormat(FileFormat):
    """Tuples from CSV lines (Flink's ``CsvReaderFormat``); files are split among subtasks like
    :class:`TextLineFormat`'s.

    A record is one line
    (quoted fields cannot span lines). With ``types`` of only ``int``, ``float``,
    ``str`` and ``bool`` (not all ``str``), a one-byte delimiter and UTF-8, ASCII,
    Latin-1 or cp1252, runs of lines without the quote character are parsed by
    ``pyarrow.csv`` into typed columns; other chunks of lines are split by the ``csv``
    module, or by ``str.split`` when they hold no quote character, and converted
    column-wise by code generated once per reader. Both give the same records; only
    a chunk that fails is parsed again line by line to find its bad lines. Empty
    lines are skipped.

    Args:
        delimiter: one-character field separator (``"^"`` for ``Movie^User^Rating^Timestamp``).
        header: the first line of every file is a header and is skipped (its
            contents are not used).
        names: field names, used in messages; fix the number of fields.
        types: one converter per field: ``int``, ``float``, ``str``, ``bool``
            (``true``/``false``/``1``/``0``, see :func:`parse_bool`) or any
            ``str -> value`` callable (called again for the rows of a chunk that
            holds a bad line); fix the number of fields. ``None``: all ``str``.
            Without names and types a row is a tuple of any number of ``str``.
        quote_char: quote character of the CSV dialect, ``None`` for none.
        fail_on_bad_records: raise :class:`~emrflow.errors.BadRecordError` on the
            first bad line; ``None`` follows the ``emrflow.bad-records.fail``
            option. Otherwise a bad line (wrong number of fields, a value that does
            not convert, undecodable bytes) is skipped and reported through
            ``ctx.report_bad_record`` with its file and 1-based line number.
        encoding: ASCII-compatible text encoding.

    Raises:
        ValueError: ``names`` and ``types`` differ in length or are empty, a type is
            not callable, or the delimiter or quote character is not one character
            (or is a line break, or the same).
    """

    name = "CSV"

    def __init__(self, delimiter: str = ",", header: bool = False,
                 names: Sequence[str] | None = None, types: Sequence[Any] | None = None,
                 quote_char: str | None = '"', fail_on_bad_records: bool | None = None,
                 encoding: str = "utf-8"):
        for what, c in (("delimiter", delimiter), ("quote_char", quote_char or "'")):
            if not isinstance(c, str) or len(c) != 1 or c in "\r\n" or delimiter == quote_char:
                raise ValueError(f"{what} must be one character, not a line break nor the other one: {c!r}")
        if names is not None and types is not None and len(names) != len(types):
            raise ValueError(f"names has {len(names)} fields but types has {len(types)}")
        if any(f is not None and not len(f) for f in (names, types)) or not all(map(callable, types or [])):
            raise ValueError(f"names and types need at least one field, types must be callable: {types!r}")
        _check_encoding(encoding)
        self.delimiter = delimiter
        self.header = header
        self.names = list(names) if names is not None else None
        self.types = list(types) if types is not None else None
        self.quote_char = quote_char
        self.fail_on_bad_records = fail_on_bad_records
        self.encoding = encoding

    @property
    def num_fields(self) -> int | None:
        """Fields per row fixed by ``names`` or ``types``, or ``None``."""
        fields = self.types if self.types is not None else self.names
        return len(fields) if fields is not None else None

    def create_reader(self, ctx: SubtaskContext) -> "_CsvReader":
        return _CsvReader(self, ctx)


class CsvSource(FileSource):
    """Tuples from CSV files, split among subtasks like :class:`TextFileSource`: a bounded
    :class:`~emrflow.connectors.monitoring.FileSource` with a :class:`CsvFormat` (whose options,
    and what they do, are listed there; they read as attributes of the source).

    Args:
        path: a file or a directory of files.
        delimiter, header, names, types, quote_char, fail_on_bad_records, encoding: see :class:`CsvFormat`.

    Raises:
        ValueError: see :class:`CsvFormat`.
    """

    default_name = "CSV Source"

    def __init__(self, path: str, delimiter: str = ",", header: bool = False,
                 names: Sequence[str] | None = None, types: Sequence[Any] | None = None,
                 quote_char: str | None = '"', fail_on_bad_records: bool | None = None,
                 encoding: str = "utf-8"):
        super().__init__(path, CsvFormat(delimiter, header, names, types, quote_char, fail_on_bad_records,
                                         encoding))


class _CsvReader(_ParsingReader):
    def __init__(self, source: CsvFormat, ctx: SubtaskContext):
        super().__init__(ctx, source.encoding, source.fail_on_bad_records)
        self._src = source
        self._n = source.num_fields
        if self._n is not None:
            self._columns, self._row = _compile_converters(source.types, self._n)
        q = source.quote_char
        self._dialect = dict(delimiter=source.delimiter, quotechar=q)  # used only if q is not None
        self._qbytes = q.encode(source.encoding) if q is not None else None
        self._split_fields = operator.methodcaller("split", source.delimiter)
        self._arrow = _ArrowCsv(source, self._n) if self._n is not None and _ArrowCsv.usable(source) else None
        # the runtime takes column batches: a run pyarrow parses is yielded as one, unconverted
        self._columnar = self._arrow is not None and ctx.columnar

    def read_split(self, split: FileSplit) -> Iterator[list]:
        header, reached = self._src.header, self._reached
        index = split.line  # line index within the range of the block's first line
        run: list[tuple[bytes, int, int, int]] = []  # blocks not converted: (block, end, index, lines)
        size = 0
        for block in self._blocks(split):
            if header and index == 0 and split.start == 0:
                nl = block.find(b"\n")
                block = block[nl + 1:] if nl >= 0 else b""
                index = 1
            lines = block.count(b"\n")
            run.append((block, reached[0], index, lines))
            index += lines
            size += len(block)
            if self._arrow is None or size >= _ARROW_BYTES:
                yield from self._convert_run(run, split)
                run, size = [], 0
        yield from self._convert_run(run, split)

    def _convert_run(self, run: list[tuple[bytes, int, int, int]], split: FileSplit) -> Iterator[list]:
        """Yield the batch of each block of a run, by pyarrow if it can, else block by block;
        after each, the read position is just after that block, as if read alone."""
        batches = None
        if self._columnar and run:
            columns = self._arrow.record_batch([r[0] for r in run], [r[3] for r in run])
            if columns is not None:
                _block, reached, index, lines = run[-1]
                split.offset, split.line = reached, index + lines
                yield ColumnBatch(columns)
                return
        if self._arrow is not None and run:
            batches = self._arrow.batches([r[0] for r in run], [r[3] for r in run])
        for k, (block, reached, index, lines) in enumerate(run):
            batch = batches[k] if batches is not None else self._convert(block, split, index)
            split.offset, split.line = reached, index + lines
            if batch:
                yield batch

    def _fast(self, block: bytes) -> list:
        """Convert a block at C speed; raises if anything is wrong with any of its lines."""
        lines = self._decode_lines(block)
        if "" in lines:
            lines = list(filter(None, lines))
        if not lines:
            return []
        n = self._n
        if self._qbytes is not None and self._qbytes in block:
            rows = list(csv.reader(lines, **self._dialect))
            if len(rows) != len(lines):  # a quoted field went on over a line break
                raise ValueError("record spans lines")
            if n is None:
                return list(map(tuple, rows))
            if {*map(len, rows)} != {n}:
                raise ValueError("wrong number of fields")
            return list(map(self._row, rows))
        if n is None:
            k = lines[0].count(self._src.delimiter) + 1
            flat = self._flat(lines, k)
            if flat is None:  # rows differ in length
                return list(map(tuple, map(self._split_fields, lines)))
            return list(zip(*[flat[j::k + 1] for j in range(k)]))
        flat = self._flat(lines, n)
        if flat is None:
            raise ValueError("wrong number of fields")
        return self._columns(flat)

    def _flat(self, lines: list[str], n: int) -> list[str] | None:
        """Split all lines at once, each line's ``n`` fields and a ``"\\n"``; ``None`` if one has not ``n``."""
        d = self._src.delimiter
        flat = (d + "\n" + d).join(lines).split(d)
        if len(flat) != len(lines) * (n + 1) - 1:
            return None
        flat.append("\n")
        # every line break became exactly one "\n" field; all of them must be at row ends
        if flat[n::n + 1].count("\n") != len(lines):
            return None
        return flat

    def _parse_line(self, raw: bytes) -> tuple[tuple | None, str | None]:
        """Return ``(row, None)``, ``(None, None)`` for an empty line, or ``(None, reason)``."""
        src, n = self._src, self._n
        try:
            line = raw.decode(self._encoding)
        except UnicodeDecodeError as e:
            return None, f"could not decode line as {self._encoding}: {e.reason}"
        if line.endswith("\r"):
            line = line[:-1]
        if not line:
            return None, None
        if src.quote_char is not None and src.quote_char in line:
            try:
                fields = next(csv.reader([line], **self._dialect), [])
            except csv.Error as e:
                return None, f"malformed CSV: {e}"
        else:
            fields = line.split(src.delimiter)
        if n is None:
            return tuple(fields), None
        if len(fields) != n:
            return None, f"expected {n} fields, got {len(fields)}"
        try:
            return self._row(fields), None
        except Exception:  # noqa: BLE001 - a user converter may raise anything
            return None, self._conversion_problem(fields)

    def _conversion_problem(self, fields: list[str]) -> str:
        types = self._src.types or []
        names = self._src.names or []
        for j, (t, value) in enumerate(zip(types, fields)):
            try:
                (parse_bool if t is bool else t)(value)
            except Exception:  # noqa: BLE001 - a user converter may raise anything
                label = f"field {j + 1}" + (f" '{names[j]}'" if j < len(names) else "")
                return f"{label}: could not convert {value!r} to {getattr(t, '__name__', repr(t))}"
        return "could not convert the row"


# -- sinks ---------------------------------------------------------------------------------

class WriteMode(enum.Enum):
    """What a file sink does with existing output (Flink's ``FileSystem.WriteMode``).

    ``NO_OVERWRITE`` refuses, before the job starts, an output path that is a file or
    a non-empty directory; ``OVERWRITE`` writes into it and replaces its ``part-*`` files.
    """

    NO_OVERWRITE = "NO_OVERWRITE"
    OVERWRITE = "OVERWRITE"


def _not_a_directory(path: str) -> OutputExistsError:
    return OutputExistsError(f"output path is a file, not a directory: {path} (a file sink writes "
                             "part files into a directory; remove or rename the file)", path)


class _PartWriter(SinkWriter):
    """What the part-file writers share: the output directory, the rolling policy, and the
    two-phase commit of rolled files (pending per checkpoint, published when it completes).

    Used by :class:`_FileWriter` (one open part file) and
    :class:`~emrflow.connectors.formats._BucketWriter` (one per bucket). A subclass opens and
    closes its in-progress files and implements :meth:`_roll_all` and :meth:`_listing`.
    """

    def __init__(self, sink: "FileSink", ctx: SubtaskContext):
        self._sink = sink
        self._ctx = ctx
        self._path = sink.path
        self._local = not fs.is_s3(sink.path)
        if self._local:
            if os.path.isfile(sink.path):
                raise _not_a_directory(sink.path)
            os.makedirs(sink.path, exist_ok=True)
        self._fs = ctx.file_system
        if ctx.subtask_index == 0:  # a job submitted without validate(): finish what a killed run decided
            finish_interrupted_commits(sink.path, self._fs)
        config = ctx.config
        self._checkpointing = ctx.checkpointing
        if self._checkpointing and sink.write_mode is WriteMode.OVERWRITE:
            raise ValueError(f"{sink.path}: write mode OVERWRITE needs a job without checkpoints; "
                             "with checkpoints a file sink adds part files, as Flink's FileSink does")
        self._max_bytes = int(config.get("sink.rolling-policy.file-size"))
        self._max_age_s = int(config.get("sink.rolling-policy.rollover-interval")) / 1000.0
        self._counter = 0
        # <job id prefix><random>: the commit tells this job's in-progress files from those of
        # interrupted earlier runs
        self._token = (ctx.job_id[:8] if ctx.job_id else "") + secrets.token_hex(4)
        self._closed: list[tuple[str, str]] = []     # rolled since the last checkpoint
        self._pending: list[tuple[int, list]] = []   # (checkpoint id, files) awaiting commit
        self._prepared: list[tuple[str, str]] = []

    # -- files -----------------------------------------------------------------------
    def _next_names(self, directory: str) -> tuple[str, str]:
        """In-progress and final name of the next part file in ``directory``; the in-progress
        name is unique to this writer, so a lingering writer of an earlier attempt never writes
        into this one's file."""
        i, sfx, n = self._ctx.subtask_index, self._sink.suffix, self._counter
        self._counter += 1
        return (fs.join(directory, f".part-{i}-{n}{sfx}.inprogress.{self._token}"),
                fs.join(directory, f"part-{i}-{n}{sfx}"))

    def _open_raw(self, tmp: str) -> _RawStream:
        """Open in-progress file ``tmp`` for writing (local or S3)."""
        return _RawStream(open(tmp, "wb", buffering=0) if self._local else self._fs.open_output(tmp))

    def _sync_close(self, f: io.IOBase, raw: _RawStream) -> None:
        """Flush, sync (local disk) and close ``f``, written through ``raw``."""
        if not f.closed:
            f.flush()
            if self._local:
                os.fsync(raw.fileno())
            f.close()

    def _rolls(self, raw: _RawStream, opened: float) -> bool:
        """Whether the rolling policy closes a file of ``raw.written`` bytes opened at ``opened``
        (``time.monotonic()``); never without checkpoints."""
        return self._checkpointing and (raw.written >= self._max_bytes
                                        or time.monotonic() - opened >= self._max_age_s)

    @abstractmethod
    def _roll_all(self) -> None:
        """Close every open in-progress file and append its names to ``self._closed``."""

    @abstractmethod
    def _listing(self) -> list[tuple[str, str]]:
        """``(directory uri, file name)`` of the files a restore looks at for stale ones."""

    def _delete_unpublished(self, in_progress: list[str], discard_pending: bool) -> None:
        """Delete the ``in_progress`` files, the files rolled since the last checkpoint and,
        with ``discard_pending``, the files of checkpoints not yet committed."""
        pending = [x for _, files in self._pending for x in files] if discard_pending else []
        for tmp in in_progress + [t for t, _ in self._closed + pending]:
            try:
                self._fs.delete(tmp)
            except OSError:
                pass

    # -- end of the job (no checkpoints, or the last records after the last checkpoint) --------
    def prepare_commit(self) -> Any:
        """Close the in-progress files; returns this subtask's share of the job's commit record.

        Returns:
            A dict (see :func:`write_commit_records`): the output ``path``, the ``files`` still
            to publish as ``[in-progress uri, final uri]`` pairs, and for subtask 0 what else the
            commit changes (``remove_stale``, ``keep``: the part names the job writes, ``job_prefix``).
        """
        self._roll_all()
        self._prepared = [f for _, files in self._pending for f in files] + self._closed
        ctx = self._ctx
        return {"kind": COMMIT_KIND, "path": self._path, "subtask": ctx.subtask_index,
                "files": [list(f) for f in self._prepared],
                "remove_stale": (ctx.subtask_index == 0 and self._sink.write_mode is WriteMode.OVERWRITE
                                 and not self._checkpointing),
                "clean_in_progress": ctx.subtask_index == 0,
                "keep": [self._sink.part_name(i) for i in range(ctx.parallelism)],
                "job_prefix": "." + ctx.job_id[:8] if ctx.job_id else None}

    def commit(self) -> None:
        """Publish every file written (rename its in-progress file; idempotent)."""
        for tmp, final in self._prepared:
            _publish(self._fs, tmp, final)
        self._pending, self._closed = [], []

    # -- checkpoints ----------------------------------------------------------------------
    def snapshot_state(self, checkpoint_id: int) -> dict:
        """Roll the in-progress files; what was rolled since the last checkpoint is pending on this one."""
        self._roll_all()
        if self._closed:
            self._pending.append((checkpoint_id, self._closed))
            self._closed = []
        return {"subtask": self._ctx.subtask_index, "counter": self._counter,
                "pending": [(cid, list(files)) for cid, files in self._pending]}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Publish the files of checkpoints up to ``checkpoint_id``."""
        keep = []
        for cid, files in self._pending:
            if cid <= checkpoint_id:
                for tmp, final in files:
                    _publish(self._fs, tmp, final)
            else:
                keep.append((cid, files))
        self._pending = keep

    def restore_state(self, states: list) -> None:
        """Publish the restored pending files, continue the part counter, drop stale in-progress files."""
        me = self._ctx.subtask_index
        counter = 0
        for st in states:
            for _, files in st["pending"]:
                for tmp, final in files:
                    _publish(self._fs, tmp, final)
            if st["subtask"] == me:
                counter = max(counter, st["counter"])
        self._counter = max(self._counter, counter, self._clean_and_count(self._listing()))

    def _clean_and_count(self, files: list[tuple[str, str]]) -> int:
        """Delete stale in-progress files among ``files`` (``(directory uri, name)`` pairs of
        :meth:`_listing`); return one past the highest part number of this subtask's committed files.

        Stale: in-progress files of this subtask written by other writers (earlier attempts),
        and in subtask 0 those of subtasks beyond the current parallelism.
        """
        me, p, top = self._ctx.subtask_index, self._ctx.parallelism, -1
        for d, name in files:
            m = _IN_PROGRESS.match(name)
            if m:
                owner = int(m.group(1))
                if (owner == me or (me == 0 and owner >= p)) and not name.endswith("." + self._token):
                    self._fs.delete(fs.join(d, name))
                continue
            m = _COMMITTED.match(name)
            if m and int(m.group(1)) == me:
                top = max(top, int(m.group(2)))
        return top + 1


class _FileWriter(_PartWriter):
    """Part files of one subtask, committed at the end of the job or checkpoint by checkpoint.

    Without checkpoints (BATCH, or STREAMING with checkpointing off) the subtask
    writes one in-progress file ``.part-<i>-0<suffix>.inprogress.<token>`` and renames it to
    ``part-<i>-0<suffix>`` in :meth:`commit`, after the whole job finished.

    With checkpoints it follows Flink's ``FileSink`` with a rolling policy: the
    in-progress file rolls when it reaches ``sink.rolling-policy.file-size`` bytes,
    is older than ``sink.rolling-policy.rollover-interval`` ms, or a checkpoint
    barrier arrives; rolled files are pending until the checkpoint that covers
    them completes (:meth:`notify_checkpoint_complete`), then renamed to
    ``part-<i>-<n><suffix>``. A restore commits what the checkpoint held pending and
    deletes this subtask's in-progress files of the failed attempt.
    """

    def __init__(self, sink: "FileSink", ctx: SubtaskContext):
        super().__init__(sink, ctx)
        self._f: io.TextIOBase | None = None
        self._raw = None
        self._current: tuple[str, str] | None = None  # (in-progress uri, final uri)
        self._opened = 0.0
        self._write: Callable[[list], None] | None = None
        if not self._checkpointing:
            self._open()  # one file per subtask, even if empty (a CSV header at least)

    # -- files -----------------------------------------------------------------------
    def _open(self) -> None:
        tmp, _ = self._current = self._next_names(self._path)
        sink = self._sink
        self._raw = self._open_raw(tmp)
        self._f = io.TextIOWrapper(io.BufferedWriter(self._raw, _WRITE_BUFFER),
                                   encoding=sink.encoding, newline="")
        self._opened = time.monotonic()
        try:
            sink.start(self._f)
            self._write = sink.formatter(self._f)
        except BaseException:
            self.abort()
            raise

    def _close_current(self) -> tuple[str, str] | None:
        """Flush, sync and close the in-progress file; return its names."""
        cur, f = self._current, self._f
        if cur is None or f is None:
            return None
        self._sync_close(f, self._raw)
        self._f = self._current = self._write = None
        return cur

    def _roll_all(self) -> None:
        cur = self._close_current()
        if cur is not None:
            self._closed.append(cur)

    def _listing(self) -> list[tuple[str, str]]:
        return [(self._path, name) for name in self._fs.listdir(self._path)]

    def write_batch(self, records: list) -> None:
        if self._f is None:
            self._open()
        self._write(records)
        if self._rolls(self._raw, self._opened):
            self._closed.append(self._close_current())

    # -- end of the job (no checkpoints, or the last records after the last checkpoint) --------
    def commit(self) -> None:
        """Publish every file written (rename its in-progress file; idempotent); subtask 0 first
        deletes stale files (see :meth:`_remove_stale`)."""
        if self._ctx.subtask_index == 0:
            self._remove_stale(self._sink.write_mode is WriteMode.OVERWRITE and not self._checkpointing)
        super().commit()

    def _remove_stale(self, parts: bool) -> None:
        """Delete in-progress files of other jobs (interrupted runs) and, with ``parts``, the
        ``part-*`` files no subtask of this job writes and a ``_SUCCESS`` marker (local or S3)."""
        keep = {self._sink.part_name(i) for i in range(self._ctx.parallelism)}
        mine = "." + self._ctx.job_id[:8] if self._ctx.job_id else None
        _remove_stale(self._fs, self._path, keep, mine, parts)

    def abort(self, discard_pending: bool = True) -> None:
        """Close and delete the in-progress file and files not yet in a checkpoint; with
        ``discard_pending`` also the files of checkpoints not yet committed (committed ones stay)."""
        f, cur = self._f, self._current
        self._f = self._current = None
        if f is not None:
            try:
                f.close()
            except (OSError, ValueError):
                pass  # e.g. the disk is full: the file goes anyway
        self._delete_unpublished([cur[0]] if cur else [], discard_pending)

def _remove_stale(file_system: FileSystem, path: str, keep: set[str], job_prefix: str | None,
                  parts: bool) -> None:
    """Delete the in-progress files in ``path`` not written by the job with ``job_prefix`` and,
    with ``parts``, the ``part-*`` files not named in ``keep`` and a ``_SUCCESS`` marker."""
    local = not fs.is_s3(path)
    for name in file_system.listdir(path):
        m = _IN_PROGRESS.match(name)
        stale_tmp = m is not None and job_prefix is not None and not (m.group(3) or "").startswith(job_prefix)
        stale_part = parts and (name == "_SUCCESS" or (name.startswith("part-") and name not in keep))
        if stale_tmp or stale_part:
            full = fs.join(path, name)
            if not local or os.path.isfile(full) or os.path.islink(full):
                file_system.delete(full)


# -- the job's commit record: the end-of-job commit is all or nothing ---------------------------

COMMIT_KIND = "emrflow.files"
_RECORD_PREFIX = "_emrflow-commit-"
_RECORD = re.compile(r"^_emrflow-commit-([0-9a-zA-Z-]+)\.json$")


def write_commit_records(file_system: FileSystem, job_id: str, committables: list) -> list[str]:
    """Write the commit record of a finished job into each output directory; return their uris.

    The end-of-job commit of the file sinks renames every subtask's in-progress files and,
    in OVERWRITE mode, deletes the previous run's other part files: many steps, each of which
    a killed process can interrupt. The record, written (atomically: a rename on local disk,
    one PUT on S3) before the first of them, makes the commit all or nothing: once it exists,
    the job's output is decided, and whoever next touches the directory (the JobManager at the
    end of the commit, a job reading or writing it, :meth:`FileSink.validate`) finishes the
    commit with :func:`finish_interrupted_commits` (a roll forward, as Flink's committers do
    on recovery). Without the record nothing of the output changed.

    Args:
        file_system: the job's file system.
        job_id: the job (names the record ``_emrflow-commit-<job id>.json``).
        committables: what the subtasks' :meth:`_FileWriter.prepare_commit` returned; items
            of other kinds (other sinks) are ignored.

    Returns:
        The uris of the records written, one per output directory.

    Raises:
        OSError: a record could not be written (nothing was renamed or deleted).
    """
    by_path: dict[str, dict] = {}
    for c in committables:
        if not isinstance(c, dict) or c.get("kind") != COMMIT_KIND:
            continue
        rec = by_path.setdefault(c["path"], {"job_id": job_id, "path": c["path"], "files": [],
                                             "remove_stale": False, "clean_in_progress": False,
                                             "keep": [], "job_prefix": None, "buckets": {}})
        rec["files"] += c["files"]
        for bucket, names in c.get("buckets", {}).items():  # bucketed sinks (formats.py): every subtask's
            rec["buckets"][bucket] = sorted({*rec["buckets"].get(bucket, []), *names})
        if c["clean_in_progress"] or c["remove_stale"]:
            rec["remove_stale"] = rec["remove_stale"] or c["remove_stale"]
            rec["clean_in_progress"] = True
            rec["keep"], rec["job_prefix"] = c["keep"], c["job_prefix"]
    uris = []
    for path, rec in by_path.items():
        uri = fs.join(path, f"{_RECORD_PREFIX}{job_id}.json")
        file_system.write_bytes(uri, json.dumps(rec, indent=1).encode())
        uris.append(uri)
    return uris


def finish_commit(file_system: FileSystem, record_uri: str) -> int:
    """Finish (roll forward) the commit a record describes, then delete the record; idempotent.

    Args:
        file_system: the file system of the directory's jobs (its ``s3.*`` options).
        record_uri: a ``_emrflow-commit-<job id>.json`` file written by :func:`write_commit_records`.

    Returns:
        How many part files this call published (0 if the commit had been completed already).

    Raises:
        OutputCorruptError: the record is unreadable, or a file it lists is neither in progress
            nor published (deleted by hand?); the record stays, naming the problem.
    """
    try:
        rec = json.loads(file_system.read_bytes(record_uri))
        files, path = rec["files"], rec["path"]
    except FileNotFoundError:
        return 0  # finished meanwhile by another process
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputCorruptError(f"{record_uri}: unreadable commit record ({exc}); the output in "
                                 "that directory may be incomplete: check it, then delete the record",
                                 record_uri) from exc
    published = 0
    for tmp, final in files:
        try:
            if file_system.exists(tmp):
                file_system.move(tmp, final)
                published += 1
                continue
        except FileNotFoundError:
            pass  # moved meanwhile by another process finishing the same record
        if not file_system.exists(final):
            raise OutputCorruptError(f"{record_uri}: cannot finish the commit of job {rec.get('job_id')}: "
                                     f"{final} is missing and so is its in-progress file {tmp}", record_uri)
    if rec.get("clean_in_progress"):
        _remove_stale(file_system, path, set(rec["keep"]), rec["job_prefix"], bool(rec["remove_stale"]))
        for bucket, names in (rec.get("buckets") or {}).items():  # a bucketed sink: each bucket it wrote
            _remove_stale(file_system, fs.join(path, bucket) if bucket else path, set(names),
                          rec["job_prefix"], bool(rec["remove_stale"]))
    file_system.delete(record_uri)
    return published


def finish_interrupted_commits(path: str, file_system: FileSystem) -> list[str]:
    """Finish every commit left unfinished in the output directory ``path`` (see :func:`finish_commit`).

    Args:
        path: a local directory or ``s3://`` prefix; nothing happens if it does not exist.
        file_system: the file system of the job touching the directory.

    Returns:
        The ids of the jobs whose commit this call finished, oldest record first.
    """
    try:
        names = sorted(n for n in file_system.listdir(path) if _RECORD.match(n))
    except (FileNotFoundError, NotADirectoryError):
        return []
    done = []
    for name in names:
        uri = fs.join(path, name)
        if not file_system.exists(uri):
            continue  # finished meanwhile by another process
        n = finish_commit(file_system, uri)
        job = _RECORD.match(name).group(1)
        log.warning("finished the interrupted commit of job %s in %s (%d part files published)", job, path, n)
        done.append(job)
    return done


_IN_PROGRESS = re.compile(r"^\.part-(\d+)-(\d+).*\.inprogress(\.[0-9a-f]+)?$")
_COMMITTED = re.compile(r"^part-(\d+)-(\d+)")


def _publish(file_system: FileSystem, tmp: str, final: str) -> None:
    """Rename an in-progress file to its final name; nothing if that already happened."""
    if file_system.exists(tmp):
        file_system.move(tmp, final)
    elif not file_system.exists(final):
        raise FileNotFoundError(f"cannot commit {final}: its in-progress file {tmp} is gone")


class _RawStream(io.RawIOBase):
    """A writable raw stream over a local file or a pyarrow output stream; counts bytes written."""

    def __init__(self, sink):
        self._sink = sink
        self.written = 0

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._sink.fileno()

    def write(self, b) -> int:
        self._sink.write(b)
        n = len(b)
        self.written += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._sink.close()
        super().close()


class FileSink(Sink):
    """Part files in an output directory, published by two-phase commit.

    Mirrors Flink's ``FileSink`` (a ``TwoPhaseCommittingSink``). Without checkpoints,
    subtask ``i`` writes ``<path>/.part-<i>-0<suffix>.inprogress.<token>``;
    ``prepare_commit`` flushes, fsyncs and closes it at the end of input, and ``commit``
    (after every subtask of the job finished) renames it to ``<path>/part-<i>-0<suffix>``;
    ``abort`` deletes it. Every subtask writes a part file, empty if it got no records.
    With checkpoints, part files roll and are committed checkpoint by checkpoint (see
    ``docs/checkpoints.md``). ``path`` may be a local directory or an ``s3://`` prefix.

    An output path that is a regular file is refused in both write modes, by
    :meth:`validate` and by the writers; nothing is deleted.

    Args:
        path: output directory (created if missing).
        write_mode: ``NO_OVERWRITE`` refuses an existing non-empty output before the
            job starts; ``OVERWRITE`` writes into it, and the commit of subtask 0
            deletes the ``part-*`` files no subtask of the job writes (those of a
            run with higher parallelism, or another suffix) and ``_SUCCESS``.
        encoding: text encoding of the part files.
        bucket_assigner: ``record -> bucket``, a relative sub-directory of ``path`` such as
            ``"dt=2024-01-31/hour=07"`` (Flink's ``BucketAssigner``; see
            :class:`emrflow.connectors.formats.DateTimeBucketAssigner`); part files then go to
            ``<path>/<bucket>/``. In OVERWRITE mode only the buckets the job writes are
            replaced. ``None``: every part file directly under ``path``.

    Raises:
        TypeError: ``write_mode`` is not a :class:`WriteMode`, ``bucket_assigner`` not callable.
    """

    #: Ending of the part files' names (``".csv"``).
    suffix = ""

    def __init__(self, path: str, write_mode: WriteMode = WriteMode.NO_OVERWRITE,
                 encoding: str = "utf-8", bucket_assigner: Callable[[Any], str] | None = None):
        if not isinstance(write_mode, WriteMode):
            raise TypeError(f"write_mode must be a WriteMode, got {write_mode!r}")
        if bucket_assigner is not None and not callable(bucket_assigner):
            raise TypeError(f"bucket_assigner must be a callable record -> bucket path, got {bucket_assigner!r}")
        self.path = path
        self.write_mode = write_mode
        self.encoding = encoding
        self.bucket_assigner = bucket_assigner

    def part_name(self, subtask_index: int) -> str:
        """Return the committed file name of subtask ``subtask_index`` (``part-<i>-0<suffix>``)."""
        return f"part-{subtask_index}-0{self.suffix}"

    def validate(self, file_system: FileSystem | None = None) -> None:
        """Check the output before the job starts, on local disk and S3 alike.

        Hidden in-progress files (``.part-*.inprogress.*``) left by an interrupted or
        killed run do not count: they were never committed, and the run that commits
        next deletes them. A commit that a killed run left unfinished (its commit record
        is there) is finished first (:func:`finish_interrupted_commits`).

        Raises:
            OutputExistsError: ``path`` is a file, or holds anything else and the
                write mode is NO_OVERWRITE.
            OutputCorruptError: an unfinished commit cannot be finished.
        """
        file_system = file_system or FileSystem()
        is_file = file_system.is_file(self.path)
        if not is_file:
            finish_interrupted_commits(self.path, file_system)
        exists = is_file or any(not _IN_PROGRESS.match(n) for n in file_system.listdir(self.path))
        if exists and self.write_mode is WriteMode.NO_OVERWRITE:
            raise OutputExistsError(
                f"output path already exists: {self.path} (use write mode OVERWRITE, "
                "--overwrite in the examples, to replace it)", self.path)
        if is_file:
            raise _not_a_directory(self.path)

    def start(self, f: io.TextIOBase) -> None:
        """Write what every part file begins with (nothing here; a header for CSV)."""

    def formatter(self, f: io.TextIOBase) -> Callable[[list], None]:
        """Return the function ``records -> None`` that writes a batch to ``f``.

        Raises:
            TypeError: a subclass that does not say how it formats records.
        """
        raise TypeError(f"{type(self).__name__} must define formatter(): FileSink itself has no "
                        "record format (use TextFileSink or CsvFileSink)")

    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        if getattr(self, "bucket_assigner", None) is not None:
            from emrflow.connectors.formats import _BucketWriter  # one open part file per bucket
            return _BucketWriter(self, ctx)
        return _FileWriter(self, ctx)


class TextFileSink(FileSink):
    """One ``str(record)`` line per record (Flink's ``writeAsText`` / ``SimpleStringEncoder``).

    Args:
        path: output directory.
        write_mode: see :class:`FileSink`.
        encoding: text encoding of the part files.
    """

    default_name = "Text File Sink"

    def formatter(self, f: io.TextIOBase) -> Callable[[list], None]:
        write = f.write

        def write_text(records: list) -> None:
            if records:
                write("\n".join(map(str, records)) + "\n")
        return write_text


class CsvFileSink(FileSink):
    """CSV lines of tuple or list records (Flink's ``writeAsCsv``); a scalar is one field.

    Args:
        path: output directory.
        delimiter: field separator.
        header: field names written as the first line of every part file.
        write_mode: see :class:`FileSink`.
        encoding: text encoding of the part files.
        bucket_assigner: see :class:`FileSink`.
    """

    default_name = "CSV File Sink"
    suffix = ".csv"

    def __init__(self, path: str, delimiter: str = ",", header: Sequence[str] | None = None,
                 write_mode: WriteMode = WriteMode.NO_OVERWRITE, encoding: str = "utf-8",
                 bucket_assigner: Callable[[Any], str] | None = None):
        super().__init__(path, write_mode, encoding, bucket_assigner=bucket_assigner)
        self.delimiter = delimiter
        self.header = list(header) if header is not None else None

    def start(self, f: io.TextIOBase) -> None:
        if self.header is not None:
            csv.writer(f, delimiter=self.delimiter, lineterminator="\n").writerow(self.header)

    def formatter(self, f: io.TextIOBase) -> Callable[[list], None]:
        writerows = csv.writer(f, delimiter=self.delimiter, lineterminator="\n").writerows
        rows = {tuple, list}

        def write_csv(records: list) -> None:
            if {*map(type, records)} <= rows:
                writerows(records)
            else:  # scalars (a str would be split into characters), tuple subclasses
                writerows(r if isinstance(r, (tuple, list)) else (r,) for r in records)
        return write_csv
