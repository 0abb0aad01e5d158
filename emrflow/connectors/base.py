"""The contracts between the runtime and sources and sinks.

A *source* describes a bounded input; the runtime calls
:meth:`Source.create_reader` once in every source subtask, which yields lists
of records (batches). A *sink* describes an output; every sink subtask gets a
:class:`SinkWriter`. Sinks commit in two phases, as Flink's ``TwoPhaseCommittingSink``:
writers write hidden in-progress files, :meth:`SinkWriter.prepare_commit` closes
them when input ends, and :meth:`SinkWriter.commit` (called only once *every*
subtask of the job has finished) makes them visible. A failed or cancelled job
calls :meth:`SinkWriter.abort` instead, so it never leaves output that looks
complete.

Source, sink and their readers/writers must be picklable with cloudpickle
(they travel from the client to the TaskManagers); readers and writers are
created on the TaskManager and need not be.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from emrflow.config import Configuration
from emrflow.connectors.metric_group import MetricGroup
from emrflow.fs import FileSystem


@dataclass
class SubtaskContext:
    """What a source reader or sink writer knows about where it runs.

    Attributes:
        operator_name: name of the operator (for messages).
        subtask_index: 0-based index of this subtask.
        parallelism: number of parallel subtasks of the operator.
        attempt: restart attempt number, 0 for the first run.
        config: the job's :class:`~emrflow.config.Configuration` (read a key with ``config.get(key)``).
        report_bad_record: callback ``(path: str, line: int, reason: str) -> None``
            that counts a skipped bad record; the runtime keeps the first few in full.
        checkpointing: the job takes checkpoints (STREAMING with a checkpoint interval),
            so sinks commit per checkpoint rather than at the end of the job.
        job_id: the job's id (32 hex characters), ``""`` if unknown.
        file_system: the job's :class:`~emrflow.fs.FileSystem` (its ``s3.*`` options); file
            sources and sinks read and write through it.
        send_split_request: ``() -> None``: a split reader asks its enumerator for a split
            (Flink's ``SourceReaderContext.sendSplitRequest``): the JobManager calls the
            enumerator's ``handle_split_request(subtask_index)``, after ``add_reader`` if the
            reader has not registered yet; does nothing for other readers and writers.
        metric_group: the operator subtask's :class:`~emrflow.connectors.metric_group.MetricGroup`
            (Flink's ``SourceReaderContext.metricGroup()`` / ``SinkWriter.InitContext.metricGroup()``):
            counters and gauges registered there are served by the REST API and Prometheus.
        columnar: the runtime takes :class:`~emrflow.runtime.network.columns.ColumnBatch`
            batches from this source reader (its records go straight to the exchange;
            ``taskmanager.network.columnar-exchange``); a reader may then yield them instead
            of lists. Readers that ignore it are correct.
    """

    operator_name: str
    subtask_index: int
    parallelism: int
    attempt: int = 0
    config: Configuration = field(default_factory=Configuration)
    report_bad_record: Callable[[str, int, str], None] = lambda path, line, reason: None
    checkpointing: bool = False
    job_id: str = ""
    file_system: FileSystem = field(default_factory=FileSystem)
    send_split_request: Callable[[], None] = lambda: None
    metric_group: MetricGroup = field(default_factory=MetricGroup)
    columnar: bool = False


class SourceReader(ABC):
    """Reads one subtask's share of a bounded source."""

    @abstractmethod
    def read_batches(self) -> Iterator[list]:
        """Yield the subtask's records as lists (a few hundred to a few thousand each).

        Returns when the subtask's share is exhausted. Blocking is allowed.
        """

    def close(self) -> None:
        """Release files and connections; called once, also after a failure."""

    #: The reader keeps a read position (:meth:`snapshot_position`, :meth:`restore_position`).
    #: A job with checkpointing enabled over a reader without one fails at start with a
    #: message naming the source, and its savepoints are declined.
    checkpointable: bool = False

    def snapshot_position(self) -> Any:
        """Return where reading stands after the last batch :meth:`read_batches` yielded.

        Called between batches at a checkpoint barrier (Flink's split state), only if
        :attr:`checkpointable`; the value must be picklable.
        """
        return None

    def restore_position(self, position: Any) -> None:
        """Continue after ``position`` (from :meth:`snapshot_position`); called before :meth:`read_batches`.

        Raises:
            TypeError: the reader is not :attr:`checkpointable`.
        """
        raise TypeError(f"{type(self).__name__} keeps no read position to restore")


class Source(ABC):
    """A bounded input; subclasses say how it is split among subtasks."""

    #: Name shown for the source operator unless the user sets one.
    default_name: str = "Source"
    #: Largest parallelism the source supports (``from_collection`` is 1), or None.
    max_parallelism: int | None = None

    def validate(self, file_system: FileSystem | None = None) -> None:
        """Check the input before the job is submitted (on the client).

        Args:
            file_system: the job's file system (its ``s3.*`` options); sources that read
                no files ignore it. A subclass may also define ``validate(self)`` alone.

        Raises:
            InputNotFoundError: a path does not exist.
        """

    @abstractmethod
    def create_reader(self, ctx: SubtaskContext) -> SourceReader:
        """Return the reader for subtask ``ctx.subtask_index`` of ``ctx.parallelism``."""


class SinkWriter(ABC):
    """Writes one subtask's share of a sink's output."""

    @abstractmethod
    def write_batch(self, records: list) -> None:
        """Write a list of records."""

    def prepare_commit(self) -> Any:
        """Flush and close what was written at the end of input (phase one).

        Returns:
            A picklable description of what :meth:`commit` will publish.
        """
        return None

    def commit(self) -> None:
        """Make the output visible (phase two); called after the whole job finished."""

    def abort(self, discard_pending: bool = True) -> None:
        """Remove what this writer wrote that is not committed.

        Args:
            discard_pending: also remove output already covered by a checkpoint but not yet
                committed. ``False`` on a failover: the checkpoint may have completed, and the
                restored writer publishes or removes that output (:meth:`restore_state`).
        """

    def snapshot_state(self, checkpoint_id: int) -> Any:
        """Phase one of the two-phase commit at a checkpoint barrier (Flink's ``preCommit``).

        Close what was written since the last checkpoint so it can be committed once
        checkpoint ``checkpoint_id`` completes; return picklable state (what is
        pending, counters) or ``None`` if the writer keeps none.
        """
        return None

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Phase two: checkpoint ``checkpoint_id`` completed, publish what it covers (idempotent)."""

    def restore_state(self, states: list) -> None:
        """Restore from :meth:`snapshot_state` values of former subtasks, before the first record.

        Publishes what those snapshots held pending (their checkpoint completed, the
        commit may not have happened) and discards what was written after them.
        """


class Sink(ABC):
    """An output; subclasses create one writer per subtask."""

    default_name: str = "Sink"

    def validate(self, file_system: FileSystem | None = None) -> None:
        """Check the output before the job is submitted (on the client).

        Args:
            file_system: the job's file system (its ``s3.*`` options); sinks that write no
                files ignore it. A subclass may also define ``validate(self)`` alone.

        Raises:
            OutputExistsError: the output exists and may not be overwritten.
        """

    @abstractmethod
    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        """Return the writer for subtask ``ctx.subtask_index``."""


def validate_connector(connector: "Source | Sink", file_system: FileSystem) -> None:
    """Call ``connector.validate``, passing the job's file system only to a ``validate`` that takes it."""
    if _takes(connector.validate, "file_system"):
        connector.validate(file_system=file_system)
    else:
        connector.validate()


def _takes(method: Callable, parameter: str) -> bool:
    import inspect
    try:
        return parameter in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


def abort_writer(writer: SinkWriter, discard_pending: bool) -> None:
    """Call ``writer.abort``, passing ``discard_pending`` only to writers whose ``abort`` takes it."""
    if _takes(writer.abort, "discard_pending"):
        writer.abort(discard_pending=discard_pending)
    else:
        writer.abort()
