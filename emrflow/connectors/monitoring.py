"""Files as a stream: a :class:`~emrflow.connectors.splits.SplitSource` over a directory or S3 prefix
(Flink's ``FileSource`` with ``monitorContinuously``).

Example::

    from emrflow.api.environment import StreamExecutionEnvironment
    from emrflow.connectors.monitoring import FileSource

    env = StreamExecutionEnvironment.get_execution_environment()
    env.enable_checkpointing(1000)
    lines = env.from_source(FileSource.for_text_lines("s3://bucket/landing/")
                            .monitor_continuously(5000), source_name="landing zone")

The split enumerator (in the JobManager) lists the directory (the regular files directly in it
whose names do not start with ``.`` or ``_``, as Flink's default file filter) when the job
starts and, with :meth:`FileSource.monitor_continuously`, every ``interval_ms`` afterwards.
Each file it has not seen becomes one :class:`FileSplit` (its URI is the split id), assigned
to subtask :func:`~emrflow.connectors.splits.split_owner` ``(uri, parallelism)`` once that
subtask's reader is registered. The enumerator's checkpointed state is the set of files seen
and the splits not yet assigned; a reader's is its files with the byte offset and line number
of the next line. So after a failover or a restore from a savepoint (at any parallelism) each
file is read once, from where the checkpoint left it.

Files must be complete when they appear: write them under a hidden name (``.name`` or
``_name``) and rename them, as with Flink. A file that grows after it was read is not read
again; one that is deleted before it was read fails the job.

Without :meth:`~FileSource.monitor_continuously` the source is bounded: the files present at
the start are read, then the source ends.
"""

from __future__ import annotations

import copy
import csv
import os
import time
from dataclasses import dataclass
from typing import IO, Any

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

__all__ = ["FileSource", "FileSplit"]

#: lines a reader returns per split and poll
LINES_PER_POLL = 2000


@dataclass
class FileSplit:
    """One file to read, with the position after the lines read so far.

    Attributes:
        split_id: the file's URI (local path or ``s3://``).
        offset: byte offset of the next line.
        line: number of lines read (the next line's 0-based index).
    """

    split_id: str
    offset: int = 0
    line: int = 0

    @property
    def path(self) -> str:
        """The file's URI."""
        return self.split_id


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
    """Lines (or CSV rows) of the files in a directory or S3 prefix, optionally watched for new files.

    Build one with :meth:`for_text_lines` or :meth:`for_csv`.

    Args:
        path: a directory, S3 prefix (``s3://bucket/prefix/``) or single file.
        record_format: ``"text"`` (each line a ``str`` without its line break) or ``"csv"``
            (each line a ``tuple`` of ``str`` fields; quoted fields may not span lines).
        delimiter: the CSV field delimiter.
        encoding: the files' text encoding (ASCII-compatible).
    """

    default_name = "FileSource"

    def __init__(self, path: str, record_format: str = "text", delimiter: str = ",", encoding: str = "utf-8"):
        if record_format not in ("text", "csv"):
            raise ValueError(f"FileSource record_format must be 'text' or 'csv', got {record_format!r}")
        if not isinstance(path, str) or not path:
            raise ValueError(f"FileSource needs a path (directory, s3:// prefix or file), got {path!r}")
        self.path = path
        self.record_format = record_format
        self.delimiter = delimiter
        self.encoding = encoding
        #: ``None``: bounded; else the discovery interval in ms
        self.monitor_interval_ms: int | None = None
        self.boundedness = Boundedness.BOUNDED

    @staticmethod
    def for_text_lines(path: str, encoding: str = "utf-8") -> "FileSource":
        """Each line of each file is one ``str`` record (Flink's ``TextLineInputFormat``)."""
        return FileSource(path, "text", encoding=encoding)

    @staticmethod
    def for_csv(path: str, delimiter: str = ",", encoding: str = "utf-8") -> "FileSource":
        """Each line is one ``tuple`` of ``str`` fields, split by ``delimiter`` (simple CSV)."""
        return FileSource(path, "csv", delimiter=delimiter, encoding=encoding)

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

    def validate(self, file_system: FileSystem | None = None) -> None:
        list_directory(self.path, file_system or FileSystem())

    def create_enumerator(self, ctx: SplitEnumeratorContext) -> SplitEnumerator:
        return _FileEnumerator(self, ctx, set(), [])

    def restore_enumerator(self, ctx: SplitEnumeratorContext, state: Any) -> SplitEnumerator:
        return _FileEnumerator(self, ctx, set(state["seen"]), list(state["pending"]))

    def create_split_reader(self, ctx: SubtaskContext) -> SplitReader:
        return _FileReader(self, ctx)


class _FileEnumerator(SplitEnumerator):
    """Lists the path, turns new files into splits, hands each to subtask ``split_owner(uri, p)``."""

    def __init__(self, source: FileSource, ctx: SplitEnumeratorContext, seen: set, pending: list):
        self.source = source
        self.ctx = ctx
        self.seen = seen
        self.pending = pending
        self._listed = False
        self._told_no_more: set[int] = set()

    def start(self) -> None:
        self.discover()
        if self.source.monitor_interval_ms is not None:
            self.ctx.call_periodically(self.discover, self.source.monitor_interval_ms)

    def discover(self) -> None:
        """List the path; new files become pending splits; assign what can be."""
        files = list_directory(self.source.path, self.ctx.file_system)
        new = [f for f in files if f not in self.seen]
        self.seen.update(new)
        self.pending.extend(FileSplit(f) for f in new)
        self._listed = True
        self._assign()

    def _assign(self) -> None:
        readers = self.ctx.registered_readers()
        p = self.ctx.parallelism
        out: dict[int, list] = {}
        keep = []
        for s in self.pending:
            owner = split_owner(s.split_id, p)
            if owner in readers:
                out.setdefault(owner, []).append(s)
            else:
                keep.append(s)
        self.pending = keep
        if out:
            self.ctx.assign_splits(out)
        if self.source.monitor_interval_ms is None and self._listed:  # bounded: all listed once
            for r in sorted(readers - self._told_no_more):
                if not any(split_owner(s.split_id, p) == r for s in self.pending):
                    self.ctx.signal_no_more_splits(r)
                    self._told_no_more.add(r)

    def add_reader(self, subtask: int) -> None:
        self._assign()

    def add_splits_back(self, splits: list, subtask: int) -> None:
        self.pending.extend(splits)
        self._assign()

    def snapshot_state(self, checkpoint_id: int) -> dict:
        return {"seen": sorted(self.seen), "pending": [copy.copy(s) for s in self.pending]}


class _FileReader(SplitReader):
    """Reads its files line by line, :data:`LINES_PER_POLL` lines per split and poll."""

    def __init__(self, source: FileSource, ctx: SubtaskContext):
        self.source = source
        self.ctx = ctx
        self.splits: dict[str, FileSplit] = {}
        self._files: dict[str, IO[bytes]] = {}
        self._no_more = False

    def add_splits(self, splits: list) -> None:
        for s in splits:
            self.splits[s.split_id] = copy.copy(s)

    def notify_no_more_splits(self) -> None:
        self._no_more = True

    def is_finished(self) -> bool:
        return self._no_more and not self.splits

    def poll(self, timeout_s: float) -> list[SplitRecords]:
        if not self.splits:
            time.sleep(timeout_s)
            return []
        out = []
        for sid in list(self.splits):
            out.append(self._read(self.splits[sid]))
        return out

    def _read(self, split: FileSplit) -> SplitRecords:
        f = self._files.get(split.split_id)
        if f is None:
            try:
                f = self.ctx.file_system.open_input(split.path)
            except FileNotFoundError as exc:
                raise InputNotFoundError(f"file {split.path} was listed by the FileSource but is gone",
                                         split.path) from exc
            if split.offset:
                f.seek(split.offset)
            self._files[split.split_id] = f
        raw_lines = []
        finished = False
        for _ in range(LINES_PER_POLL):
            raw = f.readline()
            if not raw:
                finished = True
                break
            raw_lines.append(raw)
            split.offset += len(raw)
        split.line += len(raw_lines)
        enc = self.source.encoding
        lines = [r.decode(enc).rstrip("\r\n") for r in raw_lines]
        if self.source.record_format == "csv":
            lines = [tuple(row) for row in csv.reader(lines, delimiter=self.source.delimiter)]
        if finished:
            self._files.pop(split.split_id).close()
            del self.splits[split.split_id]
        return SplitRecords(split.split_id, lines, finished)

    def snapshot_state(self, checkpoint_id: int) -> list:
        return [copy.copy(s) for s in self.splits.values()]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
