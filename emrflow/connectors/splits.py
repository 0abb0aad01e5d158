"""Sources that discover their input over time: split enumerator and split readers (Flink's FLIP-27).

A :class:`SplitSource` has two halves:

* a :class:`SplitEnumerator`, one per source operator, running in the JobManager. It
  discovers *splits* (a Kinesis shard, a Kafka partition, a file) when the job starts and,
  for an unbounded source, periodically afterwards (:meth:`SplitEnumeratorContext.call_periodically`),
  and assigns them to the source's subtasks (:meth:`SplitEnumeratorContext.assign_splits`);
* a :class:`SplitReader` in every source subtask, which reads the splits assigned to it and
  hands the runtime records *per split* (:class:`SplitRecords`), so event time is tracked
  per split: the subtask's watermark is the minimum over its active splits, and a split that
  is idle (``WatermarkStrategy.with_idleness``) does not hold it back.

Enumerators push splits (assign as they discover them, on :meth:`SplitEnumerator.add_reader`)
or readers pull them: a reader calls ``ctx.send_split_request()`` (its
:class:`~emrflow.connectors.base.SubtaskContext`; Flink's ``sendSplitRequest``) when it wants
work, and the runtime calls :meth:`SplitEnumerator.handle_split_request` with its subtask index,
which typically assigns it one split or signals that no more come (Flink's ``FileSource``). A
request a reader sends before it registered (from :meth:`SplitReader.start`) is delivered right
after ``add_reader``; one from an attempt that is gone is dropped (the restarted reader asks again).

A split is any picklable object with a ``split_id`` (``str``) attribute that is stable for
the life of the input (a shard id, ``"topic-3"``, a file's URI). A split carries its read
position: :meth:`SplitReader.snapshot_state` returns the reader's splits with the positions
after the last records it returned.

Checkpoints (exactly once): the runtime snapshots the enumerator (its unassigned splits and
whatever discovery state it keeps) at the moment it triggers a checkpoint, and split
assignments travel to the source subtasks in order with the checkpoint triggers; so a split
is either in the enumerator's state (not yet assigned when the checkpoint was triggered) or
in exactly one reader's state (assigned before), never both and never neither. This holds
whatever made the enumerator assign: discovery, ``add_reader``, ``add_splits_back`` or a
reader's split request. A request only leads to a call of the enumerator; the assignment it
makes goes through :meth:`SplitEnumeratorContext.assign_splits` under the enumerator's lock,
which the checkpoint's snapshot also takes, and travels on the slot's one connection like any
other; an assignment in answer to a request of a reader that restarts meanwhile is kept by the
JobManager and given back (below), never sent to the new attempt unasked.

Restarts (Flink's failover of source coordinators):

* a restart of the whole job (a lost TaskManager, ``failover-strategy: full``, a job with one
  pipelined region) closes the enumerator and restores it from the checkpoint's state
  (:meth:`SplitSource.restore_enumerator`; a fresh one without a checkpoint), and every reader
  gets the splits of the readers' states that :func:`split_owner` gives it, so a restore at
  another parallelism (from a savepoint) keeps every split exactly once;
* a restart of the pipelined region of the source (a failed task, region failover in a job of
  several regions) keeps the enumerator running, as Flink does: its context forgets the
  region's readers (assigning to them raises), the restarted readers get their splits from
  the checkpoint restored, and the enumerator gets back, per subtask,
  :meth:`SplitEnumerator.add_splits_back`, every split it assigned after that checkpoint was
  triggered (the JobManager sees every assignment and keeps those no completed checkpoint
  covers); then ``add_reader`` as the readers register again. Each split is again in exactly
  one place: a reader's restored state (assigned before the trigger) or the enumerator
  (assigned after, given back; or never assigned). Records of splits read since the
  checkpoint are read again, as are the downstream operators' states of the region restored,
  so keyed state and exactly-once sinks see every record once. What the enumerator learned
  since the checkpoint (``handle_splits_finished``) it keeps: the restored readers may read
  again, and report again, a split it knows finished, so an enumerator that orders splits
  (Kinesis: child shards after their parents) may hand out a child while the parent's tail is
  read again. If the region restores another checkpoint than the last completed
  one (the latter was found corrupt), or the enumerator itself failed, it is closed and
  restored from that checkpoint instead.

A bounded source is the special case whose enumerator calls
:meth:`SplitEnumeratorContext.signal_no_more_splits` once everything is assigned; a subtask
ends when it has no more splits coming and its reader has finished all it was given. Every file
source is one (:class:`~emrflow.connectors.monitoring.FileSource`: byte ranges or Parquet row
groups, each subtask's assigned when its reader registers).
"""

from __future__ import annotations

import enum
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from emrflow.connectors.base import Source, SourceReader, SubtaskContext

__all__ = ["Boundedness", "SplitRecords", "SplitEnumeratorContext", "SplitEnumerator", "SplitReader",
           "SplitSource", "split_owner"]


class Boundedness(str, enum.Enum):
    """Whether a source ends (Flink's ``Boundedness``)."""

    BOUNDED = "BOUNDED"
    CONTINUOUS_UNBOUNDED = "CONTINUOUS_UNBOUNDED"


@dataclass
class SplitRecords:
    """Records a :class:`SplitReader` read from one split.

    Attributes:
        split_id: the split the records come from.
        records: the records, in the split's order (may be empty, e.g. only to report ``finished``).
        finished: the split is exhausted (a closed Kinesis shard read to its end, a file read
            completely); the reader drops it from its state after this.
    """

    split_id: str
    records: list = field(default_factory=list)
    finished: bool = False


def split_owner(split_id: str, parallelism: int) -> int:
    """The subtask a split belongs to when splits are spread without other knowledge.

    A stable hash (CRC-32 of the UTF-8 id, the same in every process and Python version)
    modulo ``parallelism``. Used to hand restored split states to the subtasks of a job
    restored at another parallelism, and by enumerators that want a fixed placement.

    Args:
        split_id: the split's id.
        parallelism: number of source subtasks (> 0).

    Returns:
        A subtask index in ``[0, parallelism)``.
    """
    return zlib.crc32(split_id.encode("utf-8")) % parallelism


class SplitEnumeratorContext(ABC):
    """What the runtime offers a :class:`SplitEnumerator` (Flink's ``SplitEnumeratorContext``).

    All methods may be called from any thread.
    """

    @property
    @abstractmethod
    def parallelism(self) -> int:
        """Number of source subtasks (readers)."""

    @property
    @abstractmethod
    def config(self) -> Any:
        """The job's :class:`~emrflow.config.Configuration`."""

    @property
    @abstractmethod
    def file_system(self) -> Any:
        """The job's :class:`~emrflow.fs.FileSystem`."""

    @abstractmethod
    def registered_readers(self) -> set[int]:
        """Subtask indexes whose readers are running and registered."""

    @abstractmethod
    def assign_splits(self, assignment: Mapping[int, Sequence[Any]]) -> None:
        """Hand splits to readers: ``{subtask index: [split, ...]}``.

        The runtime delivers them to the subtask in order with checkpoint triggers; a split
        assigned to a subtask that is not registered (restarting) is an error.
        """

    @abstractmethod
    def signal_no_more_splits(self, subtask: int) -> None:
        """Tell subtask ``subtask`` that it gets no further splits (bounded sources)."""

    @abstractmethod
    def call_periodically(self, fn: Callable[[], None], interval_ms: int) -> None:
        """Run ``fn`` every ``interval_ms`` in a runtime thread (discovery of new splits).

        ``fn`` may block on I/O (listing shards, partitions, files); an exception it raises
        fails the job with that exception's message.
        """


class SplitEnumerator(ABC):
    """Discovers splits and assigns them to readers; lives in the JobManager (Flink's ``SplitEnumerator``)."""

    def start(self) -> None:
        """Start discovery (called once, before any reader registers)."""

    def add_reader(self, subtask: int) -> None:
        """The reader of ``subtask`` registered (at its start, and again after a restart).

        After a region restart the enumerator is not reset (see the module docstring): a bounded
        source must tell a re-registered reader again that no more splits come, if so.
        """

    def handle_split_request(self, subtask: int) -> None:
        """The reader of ``subtask`` asks for a split (pull-based sources, e.g. files): its reader
        called ``ctx.send_split_request()``. Called after :meth:`add_reader` for that reader, so
        assigning to ``subtask`` here is allowed; answer with a split, or with
        :meth:`SplitEnumeratorContext.signal_no_more_splits` when none is left.

        Args:
            subtask: the asking reader's subtask index.
        """

    def handle_splits_finished(self, subtask: int, split_ids: list[str]) -> None:
        """The reader of ``subtask`` finished these splits: its :meth:`SplitReader.poll` returned
        them with ``finished=True`` (the one reader-to-enumerator event; Flink's Kinesis source
        sends a ``SplitsFinishedEvent`` for it). A Kinesis enumerator assigns the children of a
        closed shard only after this; most enumerators ignore it (the default does nothing).

        Runtime obligations: the runtime calls this, in the enumerator's thread, for every split
        a poll reported finished, in the order the subtask reported them, and this call has
        returned before the runtime *completes* any checkpoint whose snapshot of ``subtask``
        was taken after that poll. A reader that keeps a finished split in its own
        :meth:`SplitReader.snapshot_state` (as a marker) until such a checkpoint completed and
        reports it again when it is restored with it then guarantees the enumerator learns it
        after any restore. Reports may repeat: implementations must be idempotent.

        Args:
            subtask: the reporting reader's subtask index.
            split_ids: the ``split_id`` of each finished split.
        """

    def add_splits_back(self, splits: list, subtask: int) -> None:
        """Splits assigned to ``subtask`` after the checkpoint its region restarts from come back
        (they are in no restored reader's state): assign them again, to any registered reader.

        Called when the region of the source restarts without resetting the enumerator, before
        the restarted readers register again (so usually keep them until :meth:`add_reader` or a
        split request); each split as it was assigned (its position then).

        Args:
            splits: the splits, in the order they were assigned.
            subtask: the subtask they had been assigned to.
        """

    @abstractmethod
    def snapshot_state(self, checkpoint_id: int) -> Any:
        """Return the enumerator's picklable state for checkpoint ``checkpoint_id`` (unassigned
        splits, what it has discovered so far). Called with assignments paused: keep it quick."""

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed."""

    def close(self) -> None:
        """Release clients and threads; called once when the job ends or restarts."""


class SplitReader(SourceReader):
    """Reads the splits assigned to one source subtask (Flink's ``SourceReader``).

    The runtime calls :meth:`add_splits` and :meth:`notify_no_more_splits` between calls to
    :meth:`poll`, all from the subtask's thread.
    """

    checkpointable = True

    def start(self) -> None:
        """Open clients; called once before the first :meth:`poll` (after restored splits were added)."""

    @abstractmethod
    def add_splits(self, splits: list) -> None:
        """Read these splits too (each at the position it carries)."""

    def notify_no_more_splits(self) -> None:
        """No further splits will come (a bounded source ends once the current ones are finished)."""

    @abstractmethod
    def poll(self, timeout_s: float) -> list[SplitRecords]:
        """Return records read since the last call, per split; wait at most ``timeout_s`` for some.

        Returns:
            ``[]`` when nothing arrived in time (the runtime then handles timers, idleness and
            checkpoints and calls again).
        """

    @abstractmethod
    def is_finished(self) -> bool:
        """True when no more splits will come and every split given was reported finished."""

    @abstractmethod
    def snapshot_state(self, checkpoint_id: int) -> list:
        """Return the unfinished splits with their positions after the last :meth:`poll`."""

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed (e.g. commit offsets for monitoring)."""

    def read_batches(self):  # the bounded-reader protocol does not apply
        raise TypeError(f"{type(self).__name__} is a split reader: the runtime drives it with poll()")


class SplitSource(Source):
    """A source with a split enumerator (Flink's FLIP-27 ``Source``)."""

    #: BOUNDED or CONTINUOUS_UNBOUNDED
    boundedness: Boundedness = Boundedness.CONTINUOUS_UNBOUNDED

    @abstractmethod
    def create_enumerator(self, ctx: SplitEnumeratorContext) -> SplitEnumerator:
        """Return a fresh enumerator (a job started without state)."""

    @abstractmethod
    def restore_enumerator(self, ctx: SplitEnumeratorContext, state: Any) -> SplitEnumerator:
        """Return an enumerator continuing from :meth:`SplitEnumerator.snapshot_state`'s ``state``."""

    @abstractmethod
    def create_split_reader(self, ctx: SubtaskContext) -> SplitReader:
        """Return the reader of subtask ``ctx.subtask_index``."""

    def create_reader(self, ctx: SubtaskContext) -> SourceReader:
        return self.create_split_reader(ctx)
