"""A bounded source over an in-memory collection (Flink's ``fromCollection``)."""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from emrflow.config_views import NetworkConfig
from emrflow.connectors.base import Source, SourceReader, SubtaskContext


class _CollectionReader(SourceReader):
    checkpointable = True

    def __init__(self, records: list, batch_size: int):
        self._records = records
        self._batch_size = batch_size
        self._next = 0

    def read_batches(self) -> Iterator[list]:
        n = self._batch_size
        for i in range(self._next, len(self._records), n):
            self._next = min(i + n, len(self._records))
            yield self._records[i:i + n]

    def snapshot_position(self) -> int:
        """Index of the next element to emit."""
        return self._next

    def restore_position(self, position: int) -> None:
        self._next = int(position)


class CollectionSource(Source):
    """Emits the elements of a collection, in order, from a single subtask.

    As in Flink, a collection source is not parallel (``max_parallelism`` 1): use
    ``rebalance()`` after it to spread records over a parallel operator.

    Args:
        collection: any finite iterable; it is copied into a list when the job is
            built and shipped with the job (keep it small, read files instead).
    """

    default_name = "Collection Source"
    max_parallelism = 1

    def __init__(self, collection: Iterable[Any]):
        self.records = list(collection)

    def create_reader(self, ctx: SubtaskContext) -> SourceReader:
        batch = NetworkConfig.of(ctx.config).batch_size
        return _CollectionReader(self.records, batch)
