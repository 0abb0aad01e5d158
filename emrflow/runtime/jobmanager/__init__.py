"""The JobManager: dispatcher, scheduler and job coordinator of one cluster.

* :mod:`.states`: ``JobStatus`` and ``ExecutionState`` (Flink's names).
* :mod:`.machine`: the state machine, without I/O: events in, instructions out.
* :mod:`.checkpoints`: the checkpoint coordinator of one job.
* :mod:`.server`: the process's shell (sockets, threads, timers) performing the instructions.
* :mod:`.query`: read-only snapshots for REST, metrics and the YARN resource manager.
* :mod:`.errors`: typed errors of client requests.

Run as ``python -m emrflow.runtime.jobmanager``.
"""

from emrflow.runtime.jobmanager.checkpoints import CheckpointCoordinator, PendingCheckpoint
from emrflow.runtime.jobmanager.errors import JobAlreadySubmitted, JobManagerError, JobNotFound, SavepointError
from emrflow.runtime.jobmanager.machine import JobManagerStateMachine, JobState, SlotInfo, TaskManagerInfo
from emrflow.runtime.jobmanager.query import JobManagerQuery
from emrflow.runtime.jobmanager.server import JobManager, main
from emrflow.runtime.jobmanager.states import TERMINAL, ExecutionState, JobStatus

__all__ = ["CheckpointCoordinator", "ExecutionState", "JobAlreadySubmitted", "JobManager", "JobManagerError",
           "JobManagerQuery", "JobManagerStateMachine", "JobNotFound", "JobState", "JobStatus",
           "PendingCheckpoint", "SavepointError", "SlotInfo", "TERMINAL", "TaskManagerInfo", "main"]
