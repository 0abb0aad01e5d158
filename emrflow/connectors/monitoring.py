"""Files as a FLIP-27 split source: :class:`FileSource` with a record format, bounded or monitoring a
directory or S3 prefix for new files (Flink's ``FileSource`` with ``monitorContinuously``).

Example::

    from emrflow.api.environment import StreamExecutionEnvironment
    from emrflow.connectors.monitoring import FileSource

    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(1000)
    lines = env.from_source(FileSource.for_text_lines("s3://bucket/landing/")
                            .monitor_continuously(5000), source_name="landing zone")

One source, one :class:`FileFormat` per record format, as Flink's ``FileSource`` with a
``StreamFormat`` or ``BulkFormat``: text lines and CSV (:mod:`emrflow.connectors.files`), JSON lines
and Parquet (:mod:`emrflow.connectors.formats`). ``TextFileSource``, ``CsvSource``,
``JsonLinesSource`` and ``ParquetSource`` (``env.read_text_file``, ``read_csv``, ``read_json_lines``,
``read_parquet``) are builders of a bounded :class:`FileSource`.

The split enumerator (in the JobManager) lists the path when the job starts:

* **Bounded** (the default): the path's files (a file, or a directory's regular files whose names do
  not start with ``.`` or ``_``, sorted by name) become splits placed statically, as the readers of
  earlier versions read them: a line format (text, CSV, JSON lines) cuts each file into
  ``parallelism`` byte ranges of near-equal size (:func:`~emrflow.connectors.files.split_range`),
  range ``i`` of every file is a split of subtask ``i``, and a line belongs to the range its first
  byte lies in (Hadoop's ``LineRecordReader`` rule); Parquet deals the row groups of all files
  round-robin, the row groups of one file for one subtask being one split. A subtask's splits are
  assigned when its reader registers, followed by "no more splits".
* **Monitored** (:meth:`FileSource.monitor_continuously`): the directory is listed again every
  ``interval_ms``; each file not seen before becomes one split (its URI is the split id), assigned
  to subtask :func:`~emrflow.connectors.splits.split_owner` ``(uri, parallelism)``. Files must be
  complete when they appear: write them under a hidden name (``.name`` or ``_name``) and rename
  them, as with Flink. A file that grows after it was read is not read again; one that is deleted
  before it was read fails the job.

A split carries its read position (:class:`FileSplit`: the byte offset of the next line and the
number of lines before it, so a bad record is reported as ``file:line``; ``ParquetSplit``: row group
and rows emitted). A reader reads its splits one after the other, one block of whole lines (about
:data:`~emrflow.connectors.files.BLOCK_BYTES`) or one Parquet record batch per poll. The
enumerator's checkpointed state is the set of files seen and the splits not yet assigned; a
reader's is its unfinished splits with their positions. So after a failover or a restore from a
savepoint, at any parallelism, every split is read once, from where the checkpoint left it.

Event time is per split (:mod:`emrflow.runtime.split_watermarks`): a split assigned but not yet
started holds a subtask's watermark back, so with several files per subtask event time advances
once the subtask reads its last split (or, with ``with_idleness``, when the waiting splits are idle).
"""

from __future__ import annotations

import collections
import copy
import os
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator

from emrflow import fs
from emrflow.api.eventtime import Duration, to_millis
from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.splits import (
    Boundedness,
    SplitEnumerator,
    SplitEnumeratorContext,
    SplitReader,
    SplitRecords,
    SplitSource,
    split_owner,
)
from emrflow.errors import InputNotFoundError
from emrflow.fs import FileSystem

__all__ = ["FileSource", "FileSplit", "FileFormat"]


@dataclass
class FileSplit:
    """A byte range of a file (the whole file by default), with the position after the lines read.

    Attributes:
        path: the file's URI (local path or ``s3://``).
        start: first byte of the range; a line belongs to the range its first byte lies in.
        end: end of the range (exclusive), ``None`` for the end of the file.
        offset: byte offset of the next line; ``None`` before the first read (the first line
            starting at or after ``start``).
        line: lines of the range before ``offset`` (the next line's 0-based index in the range).
        first_line: 1-based line number in the file of the range's first line, once known
            (counted only when a bad record is reported).
    """

    path: str
    start: int = 0
    end: int | None = None
    offset: int | None = None
    line: int = 0
    first_line: int | None = None

    @property
    def split_id(self) -> str:
        """The file's URI for a whole file, else ``<uri>[<start>:<end>]``."""
        if self.start == 0 and self.end is None:
            return self.path
        return f"{self.path}[{self.start}:{self.end}]"

    @property
    def stop(self) -> int:
        """End of the range, the end of the file as a number."""
        return sys.maxsize if self.end is None else self.end

    def first_line_number(self, file_system: FileSystem) -> int:
        """Return the 1-based line number (in the file) of the first line starting in the range."""
        if self.first_line is None:
            n = 0
            if self.start > 0:  # n newlines before byte start - 1: it is on line n + 1,
                left = self.start - 1  # and the first line starting after it is n + 2
                with file_system.open_input(self.path) as f:
                    while left > 0 and (data := f.read(min(left, 1 << 20))):
                        n += data.count(b"\n")
                        left -= len(data)
                n += 1
            self.first_line = n + 1
        return self.first_line


class FileFormat(ABC):
    """How a :class:`FileSource` reads records from files (Flink's ``StreamFormat`` / ``BulkFormat``).

    Implementations: ``TextLineFormat``, ``CsvFormat`` (:mod:`emrflow.connectors.files`),
    ``JsonLinesFormat``, ``ParquetFormat`` (:mod:`emrflow.connectors.formats`).
    """

    #: name of the format in messages
    name = "file"

    def bounded_splits(self, files: list[str], file_system: FileSystem, parallelism: int) -> list[tuple[int, Any]]:
        """The splits of a bounded source as ``(subtask, split)`` pairs: range ``i`` of ``parallelism``
        byte ranges of every file goes to subtask ``i`` (empty ranges are left out).

        Args:
            files: the URIs listed, by name.
            file_system: the job's file system.
            parallelism: the source's parallelism.
        """
        from emrflow.connectors.files import split_range
        out = []
        for path in files:
            size = file_system.size(path)
            for i in range(parallelism):
                start, end = split_range(size, parallelism, i)
                if start < end:
                    out.append((i, FileSplit(path, start, end)))
        return out

    def file_split(self, path: str) -> Any:
        """The split of a whole file (a monitored source's new file)."""
        return FileSplit(path)

    @abstractmethod
    def create_reader(self, ctx: SubtaskContext) -> Any:
        """Return the reader of subtask ``ctx.subtask_index``: an object with ``read_split(split)``
        (an iterator of record lists that sets the split's position before yielding each) and ``close()``."""


def list_directory(path: str, file_system: FileSystem) -> list[str]:
    """URIs of the regular files directly under ``path`` not named ``.*`` or ``_*``, by name; ``[path]``
    for a file.

    Raises:
        InputNotFoundError: ``path`` does not exist.
    """
    if fs.is_s3(path):
        if file_system.is_file(path):
            return [path]
        files = file_system.list_files(path)
        if not files and not file_system.exists(path):
            raise InputNotFoundError(f"monitored path does not exist: {path}", path)
    else:
        if os.path.isfile(path):
            return [path]
        if not os.path.isdir(path):
            raise InputNotFoundError(f"monitored path does not exist: {path}", path)
        files = file_system.list_files(path)
    return [f for f in files if not f.rstrip("/").rsplit("/", 1)[-1].startswith((".", "_"))]


class FileSource(SplitSource):
    """The records of the files in a directory, S3 prefix or file, optionally watched for new files.

    Build one with :meth:`for_text_lines`, :meth:`for_csv`, :meth:`for_json_lines` or
    :meth:`for_parquet`, or with a :class:`FileFormat`. Bounded unless
    :meth:`monitor_continuously` is called. Attributes of the format (``encoding``, ``types``...)
    read as attributes of the source.

    Args:
        path: a directory, S3 prefix (``s3://bucket/prefix/``) or single file.
        record_format: a :class:`FileFormat`, or ``"text"`` (each line a ``str`` without its line
            break) or ``"csv"`` (each line a ``tuple`` of ``str`` fields; quoted fields may not
            span lines; empty lines are skipped).
        delimiter: the CSV field delimiter (with ``"csv"``).
        encoding: the files' text encoding (ASCII-compatible; with ``"text"``/``"csv"``).

    Raises:
        ValueError: no path, an unknown ``record_format``, or a bad ``delimiter``/``encoding``.
    """

    default_name = "FileSource"
    max_parallelism = None

    def __init__(self, path: str, record_format: "FileFormat | str" = "text", delimiter: str = ",",
                 encoding: str = "utf-8"):
        if isinstance(record_format, str):
            from emrflow.connectors.files import CsvFormat, TextLineFormat
            if record_format == "text":
                record_format = TextLineFormat(encoding)
            elif record_format == "csv":
                record_format = CsvFormat(delimiter=delimiter, encoding=encoding)
        if not isinstance(record_format, FileFormat):
            raise ValueError("FileSource record_format must be 'text', 'csv' or a FileFormat (CsvFormat, "
                             f"JsonLinesFormat, ParquetFormat...), got {record_format!r}")
        if not isinstance(path, str) or not path:
            raise ValueError(f"FileSource needs a path (directory, s3:// prefix or file), got {path!r}")
        self.path = path
        self.record_format = record_format
        #: ``None``: bounded; else the discovery interval in ms
        self.monitor_interval_ms: int | None = None
        self.boundedness = Boundedness.BOUNDED

    def __getattr__(self, name: str) -> Any:
        fmt = self.__dict__.get("record_format")
        if fmt is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(fmt, name)

    @staticmethod
    def for_text_lines(path: str, encoding: str = "utf-8") -> "FileSource":
        """Each line of each file is one ``str`` record (Flink's ``TextLineInputFormat``)."""
        return FileSource(path, "text", encoding=encoding)

    @staticmethod
    def for_csv(path: str, delimiter: str = ",", encoding: str = "utf-8", **options: Any) -> "FileSource":
        """Each line is one ``tuple`` of fields, split by ``delimiter``; ``options`` are those of
        :class:`~emrflow.connectors.files.CsvSource` (``header``, ``names``, ``types``, ``quote_char``,
        ``fail_on_bad_records``). Without ``types`` the fields are ``str``."""
        from emrflow.connectors.files import CsvFormat
        return FileSource(path, CsvFormat(delimiter=delimiter, encoding=encoding, **options))

    @staticmethod
    def for_json_lines(path: str, fail_on_bad_records: bool | None = None, encoding: str = "utf-8") -> "FileSource":
        """Each line is one JSON object, a ``dict`` (see :class:`~emrflow.connectors.formats.JsonLinesSource`)."""
        from emrflow.connectors.formats import JsonLinesFormat
        return FileSource(path, JsonLinesFormat(fail_on_bad_records, encoding))

    @staticmethod
    def for_parquet(path: str, columns: list[str] | None = None, record_type: str = "dict",
                    batch_rows: int = 1024) -> "FileSource":
        """Records of Parquet files (see :class:`~emrflow.connectors.formats.ParquetSource`)."""
        from emrflow.connectors.formats import ParquetFormat
        return FileSource(path, ParquetFormat(columns, record_type, batch_rows))

    def monitor_continuously(self, interval: Duration | int) -> "FileSource":
        """Watch the path for new files every ``interval`` (a Duration or int ms); the source
        becomes unbounded (Flink's ``monitorContinuously``). Returns a new FileSource."""
        ms = to_millis(interval, "monitor_continuously interval")
        if ms <= 0:
            raise ValueError(f"monitor_continuously interval must be > 0 ms, got {ms}")
        other = copy.copy(self)
        other.monitor_interval_ms = ms
        other.boundedness = Boundedness.CONTINUOUS_UNBOUNDED
        return other

    def build(self) -> "FileSource":
        """Return the source itself (PyFlink's builder ends with ``build()``)."""
        return self

    def list_files(self, file_system: FileSystem) -> list[str]:
        """List the path: the input of a bounded source (finishing a commit a killed writer of it
        left decided), or the monitored directory's files.

        Raises:
            InputNotFoundError: ``path`` does not exist.
        """
        if self.monitor_interval_ms is None:
            from emrflow.connectors.files import list_input_files
            return list_input_files(self.path, file_system)
        return list_directory(self.path, file_system)

    def validate(self, file_system: FileSystem | None = None) -> None:
        """Check that ``path`` exists (see :meth:`list_files`).

        Raises:
            InputNotFoundError: ``path`` does not exist.
        """
        self.list_files(file_system or FileSystem())

    def create_enumerator(self, ctx: SplitEnumeratorContext) -> SplitEnumerator:
        return _FileEnumerator(self, ctx, set(), [], False)

    def restore_enumerator(self, ctx: SplitEnumeratorContext, state: Any) -> SplitEnumerator:
        pending = [p if isinstance(p, tuple) else (None, p) for p in state["pending"]]
        return _FileEnumerator(self, ctx, set(state["seen"]), pending, state.get("listed", True))

    def create_split_reader(self, ctx: SubtaskContext) -> SplitReader:
        return FileSplitReader(self.record_format.create_reader(ctx))


class _FileEnumerator(SplitEnumerator):
    """Lists the path; bounded: every split once, placed statically; monitored: new files as they
    appear, each to subtask ``split_owner(uri, p)``.

    ``pending`` holds ``(subtask or None, split)`` pairs not yet assigned (``None``: ``split_owner``;
    a subtask beyond the parallelism of a restored job also goes by ``split_owner``).
    """

    def __init__(self, source: FileSource, ctx: SplitEnumeratorContext, seen: set, pending: list,
                 listed: bool):
        self.source = source
        self.ctx = ctx
        self.seen = seen
        self.pending = pending
        self._listed = listed
        self._told_no_more: set[int] = set()

    def start(self) -> None:
        if self.source.monitor_interval_ms is None:
            if not self._listed:  # bounded: list once (a restored enumerator has listed)
                files = self.source.list_files(self.ctx.file_system)
                self.seen.update(files)
                fmt = self.source.record_format
                self.pending += fmt.bounded_splits(files, self.ctx.file_system, self.ctx.parallelism)
                self._listed = True
            self._assign()
            return
        self.discover()
        self.ctx.call_periodically(self.discover, self.source.monitor_interval_ms)

    def discover(self) -> None:
        """List the path; new files become pending splits; assign what can be."""
        files = self.source.list_files(self.ctx.file_system)
        new = [f for f in files if f not in self.seen]
        self.seen.update(new)
        self.pending.extend((None, self.source.record_format.file_split(f)) for f in new)
        self._listed = True
        self._assign()

    def _owner(self, subtask: int | None, split: Any) -> int:
        p = self.ctx.parallelism
        return subtask if subtask is not None and subtask < p else split_owner(split.split_id, p)

    def _assign(self) -> None:
        readers = self.ctx.registered_readers()
        out: dict[int, list] = {}
        keep = []
        for subtask, s in self.pending:
            owner = self._owner(subtask, s)
            if owner in readers:
                out.setdefault(owner, []).append(s)
            else:
                keep.append((subtask, s))
        self.pending = keep
        if out:
            self.ctx.assign_splits(out)
        if self.source.monitor_interval_ms is None and self._listed:  # bounded: all listed once
            waiting = {self._owner(subtask, s) for subtask, s in self.pending}
            for r in sorted(readers - self._told_no_more - waiting):
                self.ctx.signal_no_more_splits(r)
                self._told_no_more.add(r)

    def add_reader(self, subtask: int) -> None:
        self._told_no_more.discard(subtask)  # a restarted reader is told again
        self._assign()

    def add_splits_back(self, splits: list, subtask: int) -> None:
        self.pending.extend((subtask, s) for s in splits)  # to the reader that had them, when it is back
        self._assign()

    def snapshot_state(self, checkpoint_id: int) -> dict:
        return {"seen": sorted(self.seen), "listed": self._listed,
                "pending": [(subtask, copy.copy(s)) for subtask, s in self.pending]}


class FileSplitReader(SplitReader):
    """Reads a subtask's splits one after the other with the format's reader: one batch per poll.

    Args:
        reader: the format's reader (``read_split(split)``, ``close()``), see :meth:`FileFormat.create_reader`.
    """

    def __init__(self, reader: Any):
        self.reader = reader
        self._splits: collections.deque = collections.deque()
        self._batches: Iterator[list] | None = None
        self._split_id = ""  # of the split being read (a property of the split, computed once)
        self._no_more = False

    def add_splits(self, splits: list) -> None:
        self._splits.extend(splits)

    def notify_no_more_splits(self) -> None:
        self._no_more = True

    def is_finished(self) -> bool:
        return self._no_more and not self._splits

    def poll(self, timeout_s: float) -> list[SplitRecords]:
        splits = self._splits
        if not splits:
            time.sleep(timeout_s)
            return []
        if self._batches is None:
            self._batches = self.reader.read_split(splits[0])
            self._split_id = splits[0].split_id
        for batch in self._batches:
            return [SplitRecords(self._split_id, batch)]
        self._batches = None
        splits.popleft()
        return [SplitRecords(self._split_id, [], True)]

    def snapshot_state(self, checkpoint_id: int) -> list:
        return [copy.copy(s) for s in self._splits]

    def close(self) -> None:
        batches, self._batches = self._batches, None
        if batches is not None:
            batches.close()  # closes the open file
        self.reader.close()
