"""Talking to a JobManager over RPC (the embedded local cluster): a :class:`~emrflow.deploy.jobclient.JobClient`."""

from __future__ import annotations

import time
from typing import Callable

from emrflow.deploy.jobclient import CANCEL_WAIT_S, follow, result_from_status  # noqa: F401 (re-exported)
from emrflow.errors import ClusterError
from emrflow.graph.pickling import dumps_job_graph
from emrflow.job import JobExecutionResult
from emrflow.runtime import rpc


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

    def status(self, job_id: str, wait_s: float = 0.0) -> dict:
        """Return the job's status; waits up to ``wait_s`` seconds for it to end."""
        return self.conn.request("job_status", job_id=job_id, wait_s=wait_s)

    def cancel(self, job_id: str) -> str:
        """Cancel the job; returns its state."""
        return self.conn.request("cancel", job_id=job_id)["state"]

    def run_job(self, job_graph, context=None) -> JobExecutionResult:
        """Submit ``job_graph``, wait for it and return its result (:func:`~emrflow.deploy.jobclient.follow`).

        Raises:
            JobExecutionError: the job failed or was cancelled.
        """
        return follow(self, job_graph, True, context)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str,
               poll_s: float = 0.02) -> None:
    """Poll ``predicate`` until true; raise :class:`ClusterError` naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
