"""Talking to a JobManager: submit a job, follow it, turn its end into a result or an error."""

from __future__ import annotations

import time
from typing import Callable

from emrflow.errors import ClusterError, JobExecutionError
from emrflow.graph.pickling import dumps_job_graph
from emrflow.runtime import rpc

#: Seconds an interrupted client waits for its cancelled job to end (sinks to abort).
CANCEL_WAIT_S = 10.0


class ClusterClient:
    """A client connection to a JobManager.

    Args:
        address: ``(host, port)`` of the JobManager's RPC endpoint.
        secret: the cluster secret.
    """

    def __init__(self, address: tuple[str, int], secret: str):
        self.address = address
        self.conn = rpc.connect(address, secret, role="client")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def cluster_status(self) -> dict:
        """Return TaskManagers, total and free slots."""
        return self.conn.request("cluster_status")

    def submit(self, job_graph) -> str:
        """Submit ``job_graph``; returns its job id once the JobManager accepted it.

        Raises:
            ClusterError: the JobManager refused the job.
        """
        job_bytes = dumps_job_graph(job_graph)
        return self.conn.request("submit", topology=job_graph.topology(), job_bytes=job_bytes)["job_id"]

    def job_status(self, job_id: str, wait_s: float = 0.0) -> dict:
        """Return the job's status; waits up to ``wait_s`` seconds for it to end."""
        return self.conn.request("job_status", job_id=job_id, wait_s=wait_s)

    def cancel(self, job_id: str) -> str:
        """Cancel the job; returns its state."""
        return self.conn.request("cancel", job_id=job_id)["state"]

    def wait(self, job_id: str, on_progress: Callable[[dict], None] | None = None,
             interval_s: float = 1.0) -> dict:
        """Wait for the job to end, calling ``on_progress(status)`` about every ``interval_s``."""
        while True:
            status = self.job_status(job_id, wait_s=interval_s)
            if status["state"] in ("FINISHED", "FAILED", "CANCELED"):
                return status
            if on_progress is not None:
                on_progress(status)

    def run_job(self, job_graph, context=None):
        """Submit ``job_graph``, wait for it and return its result.

        Args:
            job_graph: the job.
            context: an :class:`~emrflow.api.environment.ExecutionContext` for callbacks, or ``None``.

        Returns:
            A :class:`~emrflow.api.environment.JobExecutionResult`.

        Raises:
            JobExecutionError: the job failed or was cancelled.
        """
        job_id = self.submit(job_graph)
        if context is not None and context.on_submitted is not None:
            context.on_submitted(job_id, job_graph.name)
        try:
            status = self.wait(job_id, context.on_progress if context is not None else None)
        except KeyboardInterrupt:
            try:
                self.cancel(job_id)
                # let the sinks abort (delete their in-progress files) before the caller
                # stops the cluster: an interrupted run leaves the output as it was
                deadline = time.monotonic() + CANCEL_WAIT_S
                while time.monotonic() < deadline:
                    if self.job_status(job_id, wait_s=0.5)["state"] in ("FAILED", "CANCELED", "FINISHED"):
                        break
            except (ClusterError, rpc.ConnectionClosed, OSError):
                pass
            raise
        return result_from_status(status, job_graph)


def result_from_status(status: dict, job_graph=None):
    """Turn a terminal job status into a result, or raise :class:`JobExecutionError`."""
    from emrflow.api.environment import JobExecutionResult, OperatorMetrics
    name = status["name"]
    if status["state"] != "FINISHED":
        f = status.get("failure") or {}
        if status["state"] == "CANCELED" and not f:
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


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
               poll_s: float = 0.02) -> None:
    """Poll ``predicate`` until true; raise :class:`ClusterError` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
