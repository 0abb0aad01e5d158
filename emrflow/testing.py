"""Helpers for testing emrflow programs: collect a stream's records back into the client."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
from typing import Any

from emrflow.connectors.base import Sink, SinkWriter, Source, SourceReader, SubtaskContext


class _CollectWriter(SinkWriter):
    def __init__(self, directory: str, index: int):
        self._final = os.path.join(directory, f"part-{index}")
        self._tmp = os.path.join(directory, f".part-{index}.inprogress")
        self._f = open(self._tmp, "wb")

    def write_batch(self, records: list) -> None:
        pickle.dump(records, self._f, protocol=5)

    def prepare_commit(self) -> Any:
        self._f.close()
        return self._tmp

    def commit(self) -> None:
        os.replace(self._tmp, self._final)

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)


class CollectSink(Sink):
    """Writes pickled batches into ``directory``; :meth:`records` reads them back.

    The TaskManagers must share the client's file system (the ``local`` target).

    Args:
        directory: an existing, empty directory.
    """

    default_name = "Collect"

    def __init__(self, directory: str):
        self.directory = directory

    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        return _CollectWriter(self.directory, ctx.subtask_index)

    def records(self) -> list:
        """Return every committed record, subtask by subtask, in the order each subtask wrote them."""
        out: list = []
        names = sorted((n for n in os.listdir(self.directory) if n.startswith("part-")),
                       key=lambda n: int(n.split("-")[1]))
        for name in names:
            with open(os.path.join(self.directory, name), "rb") as f:
                while True:
                    try:
                        out.extend(pickle.load(f))
                    except EOFError:
                        break
        return out


def execute_and_collect(stream, job_name: str | None = None, limit: int | None = None) -> list:
    """Add a :class:`CollectSink` to ``stream``, execute its environment, return the records.

    Args:
        stream: a :class:`~emrflow.api.datastream.DataStream`.
        job_name: the job's name.
        limit: return at most this many records.
    """
    directory = tempfile.mkdtemp(prefix="emrflow-collect-")
    try:
        sink = CollectSink(directory)
        stream.sink_to(sink)
        stream._env.execute(job_name or "collect")
        records = sink.records()
        return records if limit is None else records[:limit]
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class _GeneratedReader(SourceReader):
    checkpointable = True

    def __init__(self, count: int, make, batch_size: int, start: int, step: int,
                 rate: float | None = None):
        self._count, self._make, self._batch = count, make, batch_size
        self._start, self._step = start, step
        self._rate = rate

    def read_batches(self):
        make, step = self._make, self._step
        t0, emitted = time.monotonic(), 0
        i = self._start
        while i < self._count:
            stop = min(self._count, i + self._batch * step)
            batch = [make(j) for j in range(i, stop, step)]
            i = stop
            self._start = i
            if self._rate:
                emitted += len(batch)
                ahead = emitted / self._rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            yield batch

    def snapshot_position(self) -> int:
        """The next index this subtask produces."""
        return self._start

    def restore_position(self, position: int) -> None:
        self._start = int(position)

    def close(self) -> None:
        """Nothing to release."""


class GeneratedSource(Source):
    """A parallel test source of ``make(i)`` for ``i`` in ``range(count)``, built lazily.

    Subtask ``s`` of ``n`` produces the indices ``s, s + n, s + 2n, ...``, in order.

    Args:
        count: number of records over all subtasks.
        make: ``int -> record`` (default: the index itself).
        batch_size: records per batch handed to the runtime.
        max_parallelism: cap on the source's parallelism (1: ordered, non-parallel).
        rate: records per second per subtask at most (``None``: as fast as possible),
            for jobs that must run long enough to be checkpointed and killed.

    Checkpointable: its position is the next index a subtask produces.
    """

    default_name = "Generated Source"

    def __init__(self, count: int, make=None, batch_size: int = 1024, max_parallelism: int | None = None,
                 rate: float | None = None):
        self.count = count
        self.make = make or (lambda i: i)
        self.batch_size = batch_size
        self.max_parallelism = max_parallelism
        self.rate = rate

    def create_reader(self, ctx: SubtaskContext):
        return _GeneratedReader(self.count, self.make, self.batch_size, ctx.subtask_index,
                                ctx.parallelism, self.rate)


class CollectingTarget:
    """Stands in for the next operator of a physical operator driven directly in a test.

    Put it in the operator's ``Output``; every batch the operator emits is appended
    to :attr:`out` (a list of records); watermarks and idleness changes are ignored.
    """

    def __init__(self):
        self.out: list = []

    def process_batch(self, records: list) -> None:
        self.out.extend(records)

    def process_watermark(self, timestamp_ms: int) -> None:
        """Ignored."""

    def process_watermark_status(self, idle: bool) -> None:
        """Ignored."""
