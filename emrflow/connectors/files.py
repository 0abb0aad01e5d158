"""Files: line and CSV sources split by byte range, text and CSV part-file sinks.

Sources mirror Flink's ``FileSource`` with a ``TextLineInputFormat``: a path is a
file or a directory (its regular files not starting with ``.`` or ``_``, sorted
by name). Each file is cut into ``parallelism`` byte ranges; subtask ``i`` reads
range ``i`` of every file, and a line belongs to the range its first byte lies
in (Hadoop's rule), so every line is read exactly once at any parallelism.

Sinks mirror Flink's ``FileSink`` with two-phase commit: subtask ``i`` writes
``<dir>/.part-<i>-0.inprogress`` and renames it to ``part-<i>-0[suffix]`` only in
:meth:`~emrflow.connectors.base.SinkWriter.commit`, which the JobManager
triggers once every subtask of the job has finished. A failed job's writers
abort and delete their in-progress files.
"""

from __future__ import annotations

import csv
import enum
import io
import os
from typing import Any, Callable, Iterator, Sequence

from emrflow.connectors.base import Sink, SinkWriter, Source, SourceReader, SubtaskContext
from emrflow.errors import BadRecordError, InputNotFoundError, OutputExistsError

_CHUNK = 4 << 10  # bytes per block of lines: small batches stay in the CPU cache between chained operators and tasks


def list_input_files(path: str) -> list[str]:
    """Return ``path`` if it is a file, or its visible regular files sorted by name.

    Raises:
        InputNotFoundError: ``path`` does not exist.
    """
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        return [os.path.join(path, n) for n in sorted(os.listdir(path))
                if not n.startswith((".", "_")) and os.path.isfile(os.path.join(path, n))]
    raise InputNotFoundError(f"input path does not exist: {path}", path)


def split_range(size: int, parallelism: int, index: int) -> tuple[int, int]:
    """Return ``[start, end)`` byte range ``index`` of ``parallelism`` near-equal ranges of ``size`` bytes."""
    return size * index // parallelism, size * (index + 1) // parallelism


def read_line_chunks(path: str, start: int, end: int, block_bytes: int = _CHUNK
                     ) -> Iterator[tuple[int, bytes]]:
    """Yield ``(index of the first line within the range, block)`` for the lines starting in ``[start, end)``.

    Each block holds whole lines (terminators included, except possibly the
    file's last line); blocks are about ``block_bytes`` long, so the per-line work
    (decoding, splitting) happens in C over a whole block.
    """
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                f.readline()  # the partial first line belongs to the previous range
        pos = f.tell()  # file offset of the first byte of `carry`
        carry = b""
        index = 0
        while pos < end:
            data = f.read(block_bytes)
            buf = carry + data if carry else data
            if not data:
                if buf:
                    yield index, buf
                return
            limit = end - pos  # bytes of buf that lie before the range's end
            if limit <= len(buf):
                nl = buf.find(b"\n", limit - 1)
                if nl == -1:  # the last line of the range goes on beyond this block
                    buf += f.readline()
                    nl = len(buf) - 1
                chunk = buf[:nl + 1]
                yield index, chunk
                return
            nl = buf.rfind(b"\n")
            if nl == -1:  # no complete line yet
                carry = buf
                continue
            chunk, carry = buf[:nl + 1], buf[nl + 1:]
            pos += nl + 1
            yield index, chunk
            index += chunk.count(b"\n")


def _count_lines_before(path: str, offset: int) -> int:
    """Return the number of newlines in the first ``offset`` bytes of ``path``."""
    n = 0
    with open(path, "rb") as f:
        left = offset
        while left > 0:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            n += block.count(b"\n")
            left -= len(block)
    return n


class _Split:
    """A subtask's share of one file, and the line number of its first line (computed lazily)."""

    def __init__(self, path: str, parallelism: int, index: int):
        self.path = path
        self.start, self.end = split_range(os.path.getsize(path), parallelism, index)
        self._first_line: int | None = None

    def first_line_number(self) -> int:
        """1-based line number of the first line that starts in this range."""
        if self._first_line is None:
            if self.start == 0:
                self._first_line = 1
            else:
                before = _count_lines_before(self.path, self.start)
                with open(self.path, "rb") as f:
                    f.seek(self.start - 1)
                    at_line_start = f.read(1) == b"\n"
                self._first_line = before + 1 if at_line_start else before + 2
        return self._first_line


def _strip(block: bytes, encoding: str) -> list[str]:
    """Decode a block of whole lines and split it into lines without terminators."""
    text = block.decode(encoding)
    out = text.split("\n")
    if out and out[-1] == "":
        out.pop()
    if "\r" in text:
        out = [s[:-1] if s.endswith("\r") else s for s in out]
    return out


class _TextReader(SourceReader):
    def __init__(self, files: list[str], ctx: SubtaskContext, encoding: str):
        self._splits = [_Split(f, ctx.parallelism, ctx.subtask_index) for f in files]
        self._encoding = encoding

    def read_batches(self) -> Iterator[list]:
        for split in self._splits:
            for _, block in read_line_chunks(split.path, split.start, split.end):
                if block:
                    yield _strip(block, self._encoding)


class TextFileSource(Source):
    """The lines of a file, or of every file in a directory, without line terminators.

    Mirrors Flink's ``FileSource.forRecordStreamFormat(TextLineInputFormat, path)``.

    Args:
        path: a file or a directory.
        encoding: text encoding of the files.
    """

    default_name = "Text File Source"
    max_parallelism = None

    def __init__(self, path: str, encoding: str = "utf-8"):
        self.path = path
        self.encoding = encoding

    def validate(self) -> None:
        list_input_files(self.path)

    def create_reader(self, ctx: SubtaskContext) -> SourceReader:
        return _TextReader(list_input_files(self.path), ctx, self.encoding)


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", repr(t))


class CsvSource(Source):
    """Tuples from CSV files, split among subtasks like :class:`TextFileSource`.

    Args:
        path: a file or a directory of files.
        delimiter: one-character field separator (``"^"`` for ``Movie^User^Rating^Timestamp``).
        header: the first line of every file is a header and is skipped.
        names: field names (for messages); fixes the number of fields.
        types: one converter per field (``int``, ``float``, ``str``, ``bool`` or any
            ``str -> value`` callable); fixes the number of fields. ``None``: all ``str``.
        quote_char: quote character of the CSV dialect.
        fail_on_bad_records: raise :class:`~emrflow.errors.BadRecordError` on the first
            bad line; ``None`` follows the ``emrflow.bad-records.fail`` option. Otherwise
            bad lines are skipped and reported through ``ctx.report_bad_record`` with
            file and 1-based line number.
        encoding: text encoding.

    Raises:
        ValueError: ``names`` and ``types`` differ in length, or the delimiter is not one character.
    """

    default_name = "CSV Source"
    max_parallelism = None

    def __init__(self, path: str, delimiter: str = ",", header: bool = False,
                 names: Sequence[str] | None = None, types: Sequence[Any] | None = None,
                 quote_char: str = '"', fail_on_bad_records: bool | None = None,
                 encoding: str = "utf-8"):
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ValueError(f"delimiter must be one character, got {delimiter!r}")
        if names is not None and types is not None and len(names) != len(types):
            raise ValueError(f"names has {len(names)} fields but types has {len(types)}")
        self.path = path
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
        if self.types is not None:
            return len(self.types)
        if self.names is not None:
            return len(self.names)
        return None

    def validate(self) -> None:
        list_input_files(self.path)

    def create_reader(self, ctx: SubtaskContext) -> SourceReader:
        return _CsvReader(self, list_input_files(self.path), ctx)


def _compile_converter(types: list | None, n: int | None) -> Callable[[list], tuple]:
    """Return a fast ``row -> tuple`` converter (generated once per reader)."""
    if types is None:
        if n is None:
            return tuple
        return eval(f"lambda r: ({''.join(f'r[{i}], ' for i in range(n))})")  # noqa: S307
    env = {f"t{i}": t for i, t in enumerate(types)}
    body = "".join(f"r[{i}], " if t is str else f"t{i}(r[{i}]), " for i, t in enumerate(types))
    return eval(f"lambda r: ({body})", env)  # noqa: S307 - source text built from indices only


class _CsvReader(SourceReader):
    def __init__(self, source: CsvSource, files: list[str], ctx: SubtaskContext):
        self._src = source
        self._splits = [_Split(f, ctx.parallelism, ctx.subtask_index) for f in files]
        self._ctx = ctx
        fail = source.fail_on_bad_records
        if fail is None:
            fail = bool(ctx.config.get("emrflow.bad-records.fail", False))
        self._fail = fail
        self._n = source.num_fields
        self._convert = _compile_converter(source.types, self._n)

    def read_batches(self) -> Iterator[list]:
        src = self._src
        for split in self._splits:
            for first_index, raw in read_line_chunks(split.path, split.start, split.end):
                lines = _strip(raw, src.encoding)
                skip_header = src.header and split.start == 0 and first_index == 0
                base = 1 if skip_header else 0
                rows = list(csv.reader(lines[base:], delimiter=src.delimiter,
                                       quotechar=src.quote_char))
                batch = self._convert_rows(rows, split, first_index + base)
                if batch:
                    yield batch

    def _convert_rows(self, rows: list[list[str]], split: _Split, first_index: int) -> list:
        n, convert = self._n, self._convert
        try:
            if n is None or all(len(r) == n for r in rows):
                return list(map(convert, rows)) if all(rows) else [convert(r) for r in rows if r]
        except (ValueError, TypeError, IndexError):
            pass
        # slow path: find and report the bad rows
        out = []
        for i, row in enumerate(rows):
            if not row:  # empty line
                continue
            reason = None
            if n is not None and len(row) != n:
                reason = f"expected {n} fields, got {len(row)}"
            else:
                try:
                    out.append(convert(row))
                    continue
                except (ValueError, TypeError, IndexError):
                    reason = self._conversion_problem(row)
            self._bad(split, first_index + i, reason)
        return out

    def _conversion_problem(self, row: list[str]) -> str:
        types = self._src.types or []
        names = self._src.names or []
        for j, (t, value) in enumerate(zip(types, row)):
            try:
                t(value)
            except (ValueError, TypeError):
                label = f"field {j + 1}" + (f" '{names[j]}'" if j < len(names) else "")
                return f"{label}: could not convert {value!r} to {_type_name(t)}"
        return "could not convert the row"

    def _bad(self, split: _Split, index_in_split: int, reason: str) -> None:
        line = split.first_line_number() + index_in_split
        if self._fail:
            raise BadRecordError(split.path, line, reason)
        self._ctx.report_bad_record(split.path, line, reason)


class WriteMode(enum.Enum):
    """What a file sink does when its output exists (Flink's ``FileSystem.WriteMode``)."""

    NO_OVERWRITE = "NO_OVERWRITE"
    OVERWRITE = "OVERWRITE"


class _FileWriter(SinkWriter):
    def __init__(self, sink: "FileSink", ctx: SubtaskContext):
        self._sink = sink
        self._ctx = ctx
        if os.path.isfile(sink.path):
            raise OutputExistsError(f"output path is a file, not a directory: {sink.path}", sink.path)
        os.makedirs(sink.path, exist_ok=True)
        self._tmp = os.path.join(sink.path, f".part-{ctx.subtask_index}-0.inprogress")
        self._final = os.path.join(sink.path, f"part-{ctx.subtask_index}-0{sink.suffix}")
        self._f = open(self._tmp, "w", encoding=sink.encoding, newline="", buffering=1 << 20)
        sink.start(self._f)
        self._format = sink.formatter(self._f)

    def write_batch(self, records: list) -> None:
        self._format(records)

    def prepare_commit(self) -> Any:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        return self._tmp

    def commit(self) -> None:
        if self._sink.write_mode is WriteMode.OVERWRITE and self._ctx.subtask_index == 0:
            self._remove_stale()
        os.replace(self._tmp, self._final)

    def _remove_stale(self) -> None:
        for name in os.listdir(self._sink.path):
            if name == "_SUCCESS":
                os.remove(os.path.join(self._sink.path, name))
            elif name.startswith("part-"):
                try:
                    index = int(name.split("-")[1])
                except (IndexError, ValueError):
                    index = -1
                if not 0 <= index < self._ctx.parallelism:
                    os.remove(os.path.join(self._sink.path, name))

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)


class FileSink(Sink):
    """Part files in an output directory, published by two-phase commit.

    Args:
        path: output directory (created if missing).
        write_mode: NO_OVERWRITE refuses an existing non-empty output before the job
            starts; OVERWRITE replaces its ``part-*`` files when the job commits.
        encoding: text encoding.
    """

    suffix = ""

    def __init__(self, path: str, write_mode: WriteMode = WriteMode.NO_OVERWRITE,
                 encoding: str = "utf-8"):
        if not isinstance(write_mode, WriteMode):
            raise TypeError(f"write_mode must be a WriteMode, got {write_mode!r}")
        self.path = path
        self.write_mode = write_mode
        self.encoding = encoding

    def validate(self) -> None:
        exists = os.path.isfile(self.path) or (os.path.isdir(self.path) and os.listdir(self.path))
        if exists and self.write_mode is WriteMode.NO_OVERWRITE:
            raise OutputExistsError(
                f"output path already exists: {self.path} (use write mode OVERWRITE, "
                "--overwrite in the examples, to replace it)", self.path)
        if os.path.isfile(self.path):
            raise OutputExistsError(f"output path is a file, not a directory: {self.path}", self.path)

    def start(self, f: io.TextIOBase) -> None:
        """Write what every part file begins with (a header)."""

    def formatter(self, f: io.TextIOBase) -> Callable[[list], None]:
        """Return ``records -> None`` that writes a batch to ``f``."""
        raise TypeError("FileSink subclasses define formatter")  # every subclass overrides

    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        return _FileWriter(self, ctx)


class TextFileSink(FileSink):
    """One ``str(record)`` line per record."""

    default_name = "Text File Sink"

    def formatter(self, f: io.TextIOBase) -> Callable[[list], None]:
        write = f.write

        def fmt(records: list) -> None:
            write("\n".join(map(str, records)))
            write("\n")
        return fmt


class CsvFileSink(FileSink):
    """CSV lines of tuple/list records (a scalar is one field), with an optional header per part file.

    Args:
        path: output directory.
        delimiter: field separator.
        header: field names written as the first line of every part file.
        write_mode: see :class:`FileSink`.
    """

    default_name = "CSV File Sink"
    suffix = ".csv"

    def __init__(self, path: str, delimiter: str = ",", header: Sequence[str] | None = None,
                 write_mode: WriteMode = WriteMode.NO_OVERWRITE, encoding: str = "utf-8"):
        super().__init__(path, write_mode, encoding)
        self.delimiter = delimiter
        self.header = list(header) if header is not None else None

    def start(self, f: io.TextIOBase) -> None:
        if self.header is not None:
            csv.writer(f, delimiter=self.delimiter, lineterminator="\n").writerow(self.header)

    def formatter(self, f: io.TextIOBase) -> Callable[[list], None]:
        writer = csv.writer(f, delimiter=self.delimiter, lineterminator="\n")

        def fmt(records: list) -> None:
            if isinstance(records[0], (tuple, list)):
                try:
                    writer.writerows(records)
                    return
                except csv.Error:
                    pass  # a scalar among the tuples: write row by row below
            writer.writerows(r if isinstance(r, (tuple, list)) else (r,) for r in records)
        return fmt
