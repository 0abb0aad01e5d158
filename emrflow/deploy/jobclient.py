"""One way to follow a job, whatever carries the requests (Flink's ``JobClient``).

A :class:`JobClient` submits a JobGraph, reports a job's status and cancels it: the RPC
:class:`~emrflow.deploy.client.ClusterClient` of the embedded local cluster and the
:class:`~emrflow.deploy.rest_client.RestClient` of a standalone cluster or YARN session both
are one. :func:`follow` is the one attached-run loop over any of them: submit, report progress,
turn the end into a :class:`~emrflow.job.JobExecutionResult` or a
:class:`~emrflow.errors.JobExecutionError`, and on Ctrl-C cancel the job and give its sinks
time to abort.
"""

from __future__ import annotations

import time
from typing import Callable, Protocol

from emrflow.errors import ClusterError, JobExecutionError
from emrflow.job import JobExecutionResult, OperatorMetrics
from emrflow.runtime.jobmanager.states import TERMINAL, JobStatus

#: Seconds an interrupted client waits for its cancelled job to end (sinks to abort).
CANCEL_WAIT_S = 10.0

#: Job states after which nothing changes.


class JobClient(Protocol):
    """What :func:`follow` needs of a connection to a JobManager."""

    def submit(self, job_graph) -> str:
        """Submit a JobGraph; returns the job id once the JobManager accepted it."""

    def status(self, job_id: str, wait_s: float = 0.0) -> dict:
        """The job's status (``state``, ``name``, ``failure``, vertices...); waits up to
        ``wait_s`` seconds for it to end."""

    def cancel(self, job_id: str) -> object:
        """Cancel the job."""


def follow(client: JobClient, job_graph, attached: bool = True, context=None,
           interval_s: float = 1.0) -> JobExecutionResult:
    """Submit ``job_graph`` through ``client`` and, attached, follow it to its end.

    Args:
        client: any :class:`JobClient`.
        job_graph: the :class:`~emrflow.graph.jobgraph.JobGraph`.
        attached: wait for the end (Flink's attached mode); detached (``-d``) returns once the
            job is accepted, with ``net_runtime_ms`` 0.
        context: the launcher's :class:`~emrflow.job.ExecutionContext` (``on_submitted``,
            ``on_progress`` callbacks), or ``None``.
        interval_s: seconds between progress reports.

    Returns:
        The job's :class:`~emrflow.job.JobExecutionResult`.

    Raises:
        JobExecutionError: the job failed or was cancelled (with the user's traceback).
        ClusterError: the JobManager refused the job or stopped answering.
        KeyboardInterrupt: after cancelling the job and waiting up to :data:`CANCEL_WAIT_S`
            for it to end, so an interrupted run leaves the output as it was.
    """
    job_id = client.submit(job_graph)
    if context is not None and context.on_submitted is not None:
        context.on_submitted(job_id, job_graph.name)
    if not attached:
        return JobExecutionResult(job_id=job_id, job_name=job_graph.name, net_runtime_ms=0)
    try:
        status = wait_for_end(client, job_id, context.on_progress if context is not None else None, interval_s)
    except KeyboardInterrupt:
        try:
            client.cancel(job_id)
            # let the sinks abort (delete their in-progress files) before the caller stops
            # the cluster: an interrupted run leaves the output as it was
            deadline = time.monotonic() + CANCEL_WAIT_S
            while time.monotonic() < deadline:
                if client.status(job_id, wait_s=0.5)["state"] in TERMINAL:
                    break
        except (ClusterError, ConnectionError, OSError):
            pass
        raise
    return result_from_status(status)


def wait_for_end(client: JobClient, job_id: str, on_progress: Callable[[dict], None] | None = None,
                 interval_s: float = 1.0) -> dict:
    """Follow a job until it ends; returns its final status.

    Args:
        client: any :class:`JobClient`.
        job_id: the job.
        on_progress: called with the job's status about every ``interval_s`` seconds while it runs.
        interval_s: seconds between status requests (each waits that long for the end).

    Raises:
        ClusterError: the JobManager stopped answering.
    """
    while True:
        status = client.status(job_id, wait_s=interval_s)
        if status["state"] in TERMINAL:
            return status
        if on_progress is not None:
            on_progress(status)


def result_from_status(status: dict, job_graph=None) -> JobExecutionResult:
    """Turn a terminal job status into a result, or raise :class:`JobExecutionError`.

    Args:
        status: the JobManager's status of an ended job.
        job_graph: unused; kept for callers that pass it.

    Raises:
        JobExecutionError: the job failed (its operator, subtask and remote traceback) or was
            cancelled.
    """
    name = status["name"]
    if status["state"] != JobStatus.FINISHED:
        f = status.get("failure") or {}
        if status["state"] == JobStatus.CANCELED and not f:
            raise JobExecutionError(f"job {name!r} ({status['job_id']}) was cancelled",
                                    job_id=status["job_id"], job_name=name)
        where = ""
        if f.get("operator"):
            where = f" in operator {f['operator']!r}"
            if f.get("subtask_index") is not None and f.get("parallelism"):
                where += f" (subtask {f['subtask_index']} of {f['parallelism']})"
        raise JobExecutionError(
            f"job {name!r} ({status['job_id']}) failed{where}: {f.get('message', 'unknown cause')}",
            job_id=status["job_id"], job_name=name, operator=f.get("operator"),
            subtask_index=f.get("subtask_index"), parallelism=f.get("parallelism"),
            remote_traceback=f.get("traceback", ""))
    operators = []
    for v in status.get("vertices", []):
        for o in v["operators"]:
            operators.append(OperatorMetrics(o["name"], v["parallelism"], o["records_in"],
                                             o["records_out"], int(o.get("late_records_dropped", 0))))
    return JobExecutionResult(job_id=status["job_id"], job_name=name,
                              net_runtime_ms=int(status["duration_ms"]), operators=operators,
                              bad_records=int(status.get("bad_records", 0)),
                              bad_record_samples=list(status.get("bad_record_samples", [])),
                              late_records_dropped=int(status.get("late_records_dropped", 0)))
