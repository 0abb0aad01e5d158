"""Job and task states, named as Flink's ``JobStatus`` and ``ExecutionState``.

Both are ``str``-valued enums: a member compares equal to its name as a string, formats as it,
and serialises to JSON as it, so messages, REST replies and comparisons with plain strings keep
working. :class:`JobStatus` has, besides Flink's public states, the JobManager's internal phases
(``COMMITTING``, ``*_ABORTING``, ``RESTARTING_WAIT``); :attr:`JobStatus.public` and
:attr:`JobStatus.rest_name` map them to the names clients see.
"""

from __future__ import annotations

from enum import Enum


class _StrEnum(str, Enum):
    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class JobStatus(_StrEnum):
    """The state of a job (Flink's ``JobStatus``, plus the JobManager's internal phases)."""

    CREATED = "CREATED"                          # submitted, waiting for enough free slots
    RUNNING = "RUNNING"
    FAILING = "FAILING"                          # a task failed for good: the others are cancelled
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELED = "CANCELED"
    FINISHED = "FINISHED"
    RESTARTING = "RESTARTING"                    # a restart: the attempt's tasks are being cancelled
    # internal phases
    COMMITTING = "COMMITTING"                    # every task finished: the sinks commit
    FAILED_ABORTING = "FAILED_ABORTING"          # the sinks abort, then FAILED
    CANCELED_ABORTING = "CANCELED_ABORTING"      # the sinks abort, then CANCELED (FINISHED after stop)
    RESTARTING_ABORTING = "RESTARTING_ABORTING"  # the sinks abort, then RESTARTING_WAIT
    RESTARTING_WAIT = "RESTARTING_WAIT"          # the restart pause, then waiting for slots

    @property
    def is_terminal(self) -> bool:
        """FINISHED, FAILED or CANCELED."""
        return self in TERMINAL

    @property
    def public(self) -> JobStatus:
        """The state as the RPC status reports it (``RESTARTING`` for every phase of a restart)."""
        return JobStatus.RESTARTING if self.value.startswith("RESTARTING") else self

    @property
    def rest_name(self) -> str:
        """The state as Flink's REST API names it (internal phases map to Flink's public states)."""
        return _REST_NAMES.get(self, self.value)


class ExecutionState(_StrEnum):
    """The state of one subtask (Flink's ``ExecutionState``)."""

    CREATED = "CREATED"
    SCHEDULED = "SCHEDULED"
    DEPLOYING = "DEPLOYING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    FAILED = "FAILED"
    RECONCILING = "RECONCILING"
    INITIALIZING = "INITIALIZING"

    @property
    def is_terminal(self) -> bool:
        """FINISHED, FAILED or CANCELED."""
        return self in TASK_TERMINAL


class RegionRestartPhase(_StrEnum):
    """Where the restart of one pipelined region stands (region failover, Flink's
    ``RestartPipelinedRegionFailoverStrategy``)."""

    CANCELLING = "CANCELLING"   # the region's subtasks are being cancelled
    ABORTING = "ABORTING"       # the region's sinks discard what they wrote since the checkpoint
    WAITING = "WAITING"         # the restart pause; then the region's subtasks are deployed again


#: The states a job ends in.
TERMINAL: tuple[JobStatus, ...] = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED)
#: The states a subtask ends in.
TASK_TERMINAL: tuple[ExecutionState, ...] = (ExecutionState.FINISHED, ExecutionState.FAILED,
                                             ExecutionState.CANCELED)

_REST_NAMES = {
    JobStatus.COMMITTING: "RUNNING", JobStatus.FAILED_ABORTING: "FAILING",
    JobStatus.CANCELED_ABORTING: "CANCELLING", JobStatus.RESTARTING_ABORTING: "RESTARTING",
    JobStatus.RESTARTING_WAIT: "RESTARTING",
}


def execution_state(name: str) -> ExecutionState | str:
    """The :class:`ExecutionState` named ``name``; an unknown name is kept as the string."""
    try:
        return ExecutionState(name)
    except ValueError:
        return name
