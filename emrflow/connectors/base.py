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


@dataclass
class SubtaskContext:
    """What a source reader or sink writer knows about where it runs.

    Attributes:
        operator_name: name of the operator (for messages).
        subtask_index: 0-based index of this subtask.
        parallelism: number of parallel subtasks of the operator.
        attempt: restart attempt number, 0 for the first run.
        config: the job's configuration as a plain ``dict`` of key -> typed value.
        report_bad_record: callback ``(path: str, line: int, reason: str) -> None``
            that counts a skipped bad record; the runtime keeps the first few in full.
    """

    operator_name: str
    subtask_index: int
    parallelism: int
    attempt: int = 0
    config: dict = field(default_factory=dict)
    report_bad_record: Callable[[str, int, str], None] = lambda path, line, reason: None


class SourceReader(ABC):
    """Reads one subtask's share of a bounded source."""

    @abstractmethod
    def read_batches(self) -> Iterator[list]:
        """Yield the subtask's records as lists (a few hundred to a few thousand each).

        Returns when the subtask's share is exhausted. Blocking is allowed.
        """

    def close(self) -> None:
        """Release files and connections; called once, also after a failure."""


class Source(ABC):
    """A bounded input; subclasses say how it is split among subtasks."""

    #: Name shown for the source operator unless the user sets one.
    default_name: str = "Source"
    #: Largest parallelism the source supports (``from_collection`` is 1), or None.
    max_parallelism: int | None = None

    def validate(self) -> None:
        """Check the input before the job is submitted.

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

    def abort(self) -> None:
        """Remove everything this writer wrote that is not committed."""


class Sink(ABC):
    """An output; subclasses create one writer per subtask."""

    default_name: str = "Sink"

    def validate(self) -> None:
        """Check the output before the job is submitted.

        Raises:
            OutputExistsError: the output exists and may not be overwritten.
        """

    @abstractmethod
    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        """Return the writer for subtask ``ctx.subtask_index``."""
