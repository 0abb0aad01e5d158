"""Helpers for testing emrflow programs: collect a stream's records back into the client."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
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
    def __init__(self, count: int, make, batch_size: int, start: int, step: int):
        self._count, self._make, self._batch = count, make, batch_size
        self._start, self._step = start, step

    def read_batches(self):
        make = self._make
        batch: list = []
        for i in range(self._start, self._count, self._step):
            batch.append(make(i))
            if len(batch) >= self._batch:
                yield batch
                batch = []
        if batch:
            yield batch

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
    """

    default_name = "Generated Source"

    def __init__(self, count: int, make=None, batch_size: int = 1024, max_parallelism: int | None = None):
        self.count = count
        self.make = make or (lambda i: i)
        self.batch_size = batch_size
        self.max_parallelism = max_parallelism

    def create_reader(self, ctx: SubtaskContext):
        return _GeneratedReader(self.count, self.make, self.batch_size, ctx.subtask_index,
                                ctx.parallelism)
