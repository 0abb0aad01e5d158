"""What a job is on both sides of submission: its result, its metrics, the launcher's context.

A neutral module: the API (:mod:`emrflow.api.environment`) and the deploy targets
(:mod:`emrflow.deploy`) both use these types, and neither imports the other for them.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any, Callable

from emrflow.config import Configuration


@dataclass
class OperatorMetrics:
    """Records counted for one operator over all its subtasks.

    Attributes:
        name: operator name.
        parallelism: number of subtasks.
        records_in: records the operator received.
        records_out: records the operator emitted.
        late_records_dropped: records an event-time window operator dropped as late.
    """

    name: str
    parallelism: int
    records_in: int
    records_out: int
    late_records_dropped: int = 0


@dataclass
class JobExecutionResult:
    """What :meth:`StreamExecutionEnvironment.execute` returns (Flink's ``JobExecutionResult``).

    Attributes:
        job_id: hex job id (32 characters, as Flink's ``JobID``).
        job_name: the job's name.
        net_runtime_ms: time from the JobManager accepting the job to its end, in ms.
        operators: per-operator record counts, in topological order.
        bad_records: number of input records skipped as unparsable.
        bad_record_samples: the first few of them as ``"path:line: reason"``.
        late_records_dropped: records event-time windows dropped because they arrived after
            the watermark passed their window's end plus the allowed lateness (Flink's
            ``numLateRecordsDropped``).
    """

    job_id: str
    job_name: str
    net_runtime_ms: int
    operators: list[OperatorMetrics] = field(default_factory=list)
    bad_records: int = 0
    bad_record_samples: list[str] = field(default_factory=list)
    late_records_dropped: int = 0

    def get_job_id(self) -> str:
        """Return the job id."""
        return self.job_id

    def get_net_runtime(self) -> int:
        """Return the net runtime in milliseconds."""
        return self.net_runtime_ms

    def get_accumulator_result(self, name: str) -> Any:
        """Return an accumulator: ``numBadRecords``, ``numLateRecordsDropped``, or
        ``<operator>.numRecordsIn/Out/numLateRecordsDropped``."""
        return self.get_all_accumulator_results().get(name)

    def get_all_accumulator_results(self) -> dict[str, Any]:
        """Return every accumulator by name."""
        out: dict[str, Any] = {"numBadRecords": self.bad_records,
                               "numLateRecordsDropped": self.late_records_dropped}
        for op in self.operators:
            out[f"{op.name}.numRecordsIn"] = op.records_in
            out[f"{op.name}.numRecordsOut"] = op.records_out
            if op.late_records_dropped:
                out[f"{op.name}.numLateRecordsDropped"] = op.late_records_dropped
        return out


class DryRunComplete(BaseException):
    """Raised by :meth:`StreamExecutionEnvironment.execute` under ``emrflow run --dry-run`` once the
    plan is printed, so that the rest of the script (which would use the job's output) does not run.

    A ``BaseException``, so that a script's ``except Exception`` does not swallow it.
    """


@dataclass
class ExecutionContext:
    """What a launcher such as ``emrflow run`` passes to environments the program creates.

    Attributes:
        config: settings from the command line (``-p``, ``-D``, ``--conf``).
        on_progress: called about once a second with a job status ``dict`` while a
            job runs (for progress display), or ``None``.
        on_submitted: called with ``(job_id, job_name)`` once the job is accepted.
        results: every :class:`JobExecutionResult` the program's ``execute`` calls returned.
        dry_run: print what would be submitted (the YARN spec, or the JobGraph) and run nothing.
    """

    config: Configuration
    on_progress: Callable[[dict], None] | None = None
    on_submitted: Callable[[str, str], None] | None = None
    results: list = field(default_factory=list)
    dry_run: bool = False


_context: contextvars.ContextVar[ExecutionContext | None] = contextvars.ContextVar(
    "emrflow_execution_context", default=None)


def set_execution_context(ctx: ExecutionContext | None) -> contextvars.Token:
    """Install ``ctx`` for environments created afterwards; returns a token for ``reset``."""
    return _context.set(ctx)


def reset_execution_context(token: contextvars.Token) -> None:
    """Undo :func:`set_execution_context`."""
    _context.reset(token)


def current_execution_context() -> ExecutionContext | None:
    """The context a launcher installed with :func:`set_execution_context`, or ``None``."""
    return _context.get()
