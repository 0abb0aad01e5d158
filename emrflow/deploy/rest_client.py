"""A client of the JobManager's REST API (submit, follow, list, cancel, shut down)."""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any

from emrflow.deploy.jobclient import follow
from emrflow.errors import ClusterError
from emrflow.graph.pickling import dumps_job_graph


class RestClient:
    """Talks to a JobManager's REST endpoint.

    Args:
        address: ``"host:port"`` of the REST API.
        token: bearer token (``rest.auth.token``), or ``None``.
        timeout_s: per-request timeout in seconds.
    """

    def __init__(self, address: str, token: str | None = None, timeout_s: float = 60.0):
        if "://" not in address:
            address = "http://" + address
        self.base = address.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None, timeout_s: float | None = None) -> Any:
        """Send a request and return the decoded JSON reply.

        Raises:
            ClusterError: the JobManager cannot be reached or answers with an error.
        """
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s or self.timeout_s) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                detail = "; ".join(json.loads(exc.read()).get("errors", []))
            except ValueError:
                detail = exc.reason
            if exc.code == 401:
                detail = (f"{detail}: " if detail else "") + (
                    "the token was refused (rest.auth.token)" if self.token else
                    "the cluster needs a token: pass -D rest.auth.token=<token> (or set it in --conf FILE)")
            raise ClusterError(f"{method} {path} on {self.base} failed ({exc.code}): {detail}") from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise ClusterError(f"cannot reach the JobManager's REST API at {self.base}: "
                               f"{getattr(exc, 'reason', exc)}") from exc
        return json.loads(raw) if raw else {}

    def overview(self) -> dict:
        """``GET /overview``: TaskManagers, slots, job counts."""
        return self.request("GET", "/overview")

    def submit(self, job_graph) -> str:
        """Submit a JobGraph (``POST /jobs``); returns the job id."""
        payload = base64.b64encode(dumps_job_graph(job_graph)).decode()
        return self.request("POST", "/jobs", {"topology": job_graph.topology(), "jobgraph": payload})["jobid"]

    def status(self, job_id: str, wait_s: float = 0.0) -> dict:
        """Return the job's status, waiting up to ``wait_s`` seconds for it to end."""
        reply = self.request("GET", f"/jobs/{job_id}/execution-result?wait={wait_s}",
                             timeout_s=self.timeout_s + wait_s)
        return reply["emrflow-status"]

    def cancel(self, job_id: str) -> None:
        """Cancel a job (``PATCH /jobs/{id}?mode=cancel``)."""
        self.request("PATCH", f"/jobs/{job_id}?mode=cancel")

    def savepoint(self, job_id: str, directory: str | None = None, stop: bool = False,
                  timeout_s: float = 600.0) -> str:
        """Trigger a savepoint (``POST /jobs/{id}/savepoints``, or ``/stop`` with ``stop``) and wait for it.

        Args:
            job_id: the running job.
            directory: target directory; ``None`` means the cluster's ``state.savepoints.dir``.
            stop: stop the job after the savepoint (Flink's stop-with-savepoint).
            timeout_s: seconds to wait for completion.

        Returns:
            The savepoint's path.

        Raises:
            ClusterError: the trigger was refused, the savepoint failed, or it timed out.
        """
        if stop:
            trigger = self.request("POST", f"/jobs/{job_id}/stop", {"targetDirectory": directory})
        else:
            trigger = self.request("POST", f"/jobs/{job_id}/savepoints",
                                   {"target-directory": directory, "cancel-job": False})
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.request("GET", f"/jobs/{job_id}/savepoints/{trigger['request-id']}")
            if st["status"]["id"] == "COMPLETED":
                op = st["operation"]
                if "failure-cause" in op:
                    raise ClusterError(f"savepoint of job {job_id} failed: "
                                       f"{op['failure-cause'].get('stack-trace', '')}")
                return op["location"]
            if time.monotonic() > deadline:
                raise ClusterError(f"savepoint of job {job_id} not complete after {timeout_s:.0f} s")
            time.sleep(0.1)

    def checkpoints(self, job_id: str) -> dict:
        """``GET /jobs/{id}/checkpoints``: checkpoint counts and the latest completed one."""
        return self.request("GET", f"/jobs/{job_id}/checkpoints")

    def list_jobs(self) -> list[dict]:
        """``GET /jobs/overview``: every job, newest first."""
        return self.request("GET", "/jobs/overview")["jobs"]

    def shutdown(self) -> None:
        """``DELETE /cluster``: stop the JobManager and its TaskManagers."""
        self.request("DELETE", "/cluster")

    def wait_for_slots(self, slots: int, timeout_s: float) -> dict:
        """Poll ``/overview`` until ``slots`` task slots are registered."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ov = self.overview()
                if ov["slots-total"] >= slots:
                    return ov
            except ClusterError:
                if time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise ClusterError(f"only {ov['slots-total']} of {slots} task slots registered "
                                   f"after {timeout_s:.0f} s")
            time.sleep(0.05)


def execute(job_graph, config, context=None):
    """The ``remote`` target: run ``job_graph`` on the cluster at ``rest.address:rest.port`` (see :func:`follow`)."""
    client = RestClient(f"{config.get('rest.address')}:{config.get('rest.port')}",
                        config.get("rest.auth.token"))
    return follow(client, job_graph, bool(config.get("execution.attached")), context)
