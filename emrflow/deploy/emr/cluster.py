"""Cluster operations: create, add steps, describe, list, cancel, terminate, follow to the end.

Each function is one EMR call or a poll over some (RunJobFlow, AddJobFlowSteps,
DescribeCluster, ListSteps, DescribeStep...), through an :class:`~emrflow.deploy.emr.staging.EmrSession`
and its error boundary. A step that does not complete becomes a :class:`StepFailedError` carrying
the diagnosis from its logs (:mod:`emrflow.deploy.emr.logs`).
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

from emrflow.deploy.emr import checks
from emrflow.deploy.emr.logs import step_logs
from emrflow.deploy.emr.requests import build_run_job_flow_request
from emrflow.deploy.emr.spec import ClusterSpec
from emrflow.deploy.emr.staging import EmrSession, Staging, aws_errors
from emrflow.errors import ClusterError, ConfigError, EmrflowError

STEP_TERMINAL_STATES = ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED")
CLUSTER_TERMINAL_STATES = ("TERMINATED", "TERMINATED_WITH_ERRORS")
CLUSTER_ACTIVE_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING")
CLUSTER_ID_RE = re.compile(r"^j-[A-Z0-9]{1,64}$")
STEP_ID_RE = re.compile(r"^s-[A-Z0-9]{1,64}$")


class StepFailedError(EmrflowError, RuntimeError):
    """An EMR step ended FAILED, CANCELLED or INTERRUPTED, or its cluster ended under it.

    Attributes:
        cluster_id: ``j-...``.
        step_id: ``s-...``.
        step_name: the step's name.
        index: 1-based position of the step among the cluster's steps.
        total: how many steps the cluster has.
        state: the step's final state (``FAILED``...), or its state when the cluster ended.
        reason: EMR's failure reason (``Status.FailureDetails``), or "".
        log_prefix: S3 prefix of the step's logs, or "" without a log URI.
        diagnosis: the relevant part of the logs (last traceback or last lines).
    """

    def __init__(self, *, cluster_id: str, step_id: str, step_name: str, index: int, total: int,
                 state: str, reason: str = "", log_prefix: str = "", diagnosis: str = ""):
        self.cluster_id, self.step_id, self.step_name = cluster_id, step_id, step_name
        self.index, self.total, self.state, self.reason = index, total, state, reason
        self.log_prefix, self.diagnosis = log_prefix, diagnosis
        text = (f"step {index} of {total} '{step_name}' ({step_id}) of cluster {cluster_id} "
                f"ended {state}")
        if reason:
            text += f": {reason}"
        if diagnosis:
            text += "\n" + diagnosis.rstrip()
        if log_prefix:
            text += f"\nstep logs: {log_prefix}"
        super().__init__(text)


def create_cluster(session: EmrSession, request: dict, staging: Staging,
                   log: Callable[[str], None] = lambda s: None) -> str:
    """Create a cluster: upload the staged files, then call EMR's RunJobFlow.

    Args:
        session: the AWS session.
        request: the RunJobFlow request (:func:`build_run_job_flow_request`).
        staging: the uploads the request refers to (wheel, bootstrap scripts, jobs).
        log: receives a line per upload.

    Returns:
        The cluster id, ``j-...``.

    Raises:
        ClusterError: an upload or RunJobFlow failed (the AWS code, e.g. ``ValidationException``).
    """
    checks.validate_request("RunJobFlow", request)    # before anything is uploaded
    session.upload_all(staging, log)
    with aws_errors("RunJobFlow"):
        return session.emr.run_job_flow(**request)["JobFlowId"]


def check_cluster_id(cluster_id: str) -> str:
    """Check a cluster id (EMR's ``j-`` followed by upper-case letters and digits).

    Returns:
        ``cluster_id``.

    Raises:
        ConfigError: anything else.
    """
    if not isinstance(cluster_id, str) or not CLUSTER_ID_RE.match(cluster_id):
        raise ConfigError("cluster id: expected j- and capital letters or digits (like j-1K48XUW4CPOOB), "
                          f"got {cluster_id!r}", source="CLUSTER_ID")
    return cluster_id


def check_step_id(step_id: str) -> str:
    """Check a step id (EMR's ``s-`` followed by upper-case letters and digits).

    Returns:
        ``step_id``.

    Raises:
        ConfigError: anything else.
    """
    if not isinstance(step_id, str) or not STEP_ID_RE.match(step_id):
        raise ConfigError("step id: expected s- and capital letters or digits (like s-2QJ7LNM4PEWQ8), "
                          f"got {step_id!r}", source="STEP_ID")
    return step_id


def check_steps(session: EmrSession, cluster_id: str, steps: list[dict]) -> None:
    """Check an AddJobFlowSteps request as EMR would: botocore's model, and ``ActionOnFailure``
    against the cluster's step concurrency (only CONTINUE when it is > 1; one DescribeCluster).

    Raises:
        ConfigError: what EMR would refuse, naming the step and what is expected.
        ClusterError: no such cluster, or another AWS error.
    """
    checks.validate_request("AddJobFlowSteps", {"JobFlowId": cluster_id, "Steps": steps})
    concurrency = describe_cluster(session, cluster_id).get("StepConcurrencyLevel", 1)
    for i, step in enumerate(steps, 1):
        checks.check_action_on_failure(step["ActionOnFailure"], concurrency,
                                           f"--action-on-failure of step {i} ({step['Name']}) "
                                           f"for {cluster_id}")


def add_steps(session: EmrSession, cluster_id: str, steps: list[dict]) -> list[str]:
    """Add steps to a cluster (EMR's AddJobFlowSteps; ``aws emr add-steps``).

    Args:
        session: the AWS session.
        cluster_id: ``j-...``.
        steps: StepConfigs (:func:`emrflow_step`, :func:`session_step`).

    Returns:
        The new steps' ids (``s-...``), in the order given.

    Raises:
        ClusterError: EMR refused (an ended cluster, too many steps...).
    """
    check_steps(session, cluster_id, steps)
    with aws_errors(f"AddJobFlowSteps on {cluster_id}"):
        return session.emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=steps)["StepIds"]


def describe_cluster(session: EmrSession, cluster_id: str) -> dict:
    """Describe a cluster (EMR's DescribeCluster).

    Args:
        session: the AWS session.
        cluster_id: ``j-...``.

    Returns:
        DescribeCluster's ``Cluster``: ``Status`` (``State``, ``StateChangeReason``, ``Timeline``),
        ``LogUri``, ``ReleaseLabel``, ``Applications``, ``Tags``...

    Raises:
        ClusterError: no such cluster (``InvalidRequestException``) or another AWS error.
    """
    with aws_errors(f"DescribeCluster {cluster_id}"):
        return session.emr.describe_cluster(ClusterId=cluster_id)["Cluster"]


def list_clusters(session: EmrSession, active: bool = False) -> list[dict]:
    """List clusters (EMR's ListClusters, all pages).

    Args:
        session: the AWS session.
        active: only clusters STARTING, BOOTSTRAPPING, RUNNING, WAITING or TERMINATING.

    Returns:
        ListClusters' summaries (``Id``, ``Name``, ``Status``), newest first as EMR lists them.

    Raises:
        ClusterError: an AWS error.
    """
    kwargs = {"ClusterStates": list(CLUSTER_ACTIVE_STATES)} if active else {}
    with aws_errors("ListClusters"):
        pages = session.emr.get_paginator("list_clusters").paginate(**kwargs)
        return [c for page in pages for c in page.get("Clusters", [])]


def list_steps(session: EmrSession, cluster_id: str) -> list[dict]:
    """List a cluster's steps (EMR's ListSteps, all pages).

    Args:
        session: the AWS session.
        cluster_id: ``j-...``.

    Returns:
        The step summaries (``Id``, ``Name``, ``Config``, ``ActionOnFailure``, ``Status``),
        oldest first (EMR lists the newest first).

    Raises:
        ClusterError: an AWS error.
    """
    with aws_errors(f"ListSteps {cluster_id}"):
        pages = session.emr.get_paginator("list_steps").paginate(ClusterId=cluster_id)
        steps = [s for page in pages for s in page.get("Steps", [])]
    return list(reversed(steps))        # EMR lists the newest first


def cancel_step(session: EmrSession, cluster_id: str, step_id: str) -> dict:
    """Cancel a pending or running step (EMR's CancelSteps with ``SEND_INTERRUPT``).

    ``SEND_INTERRUPT`` sends SIGTERM to the step's process: ``emrflow run`` then kills its
    YARN application (attached ``yarn-per-job``) or cancels its job, as on Ctrl-C; EMR's
    other option, ``TERMINATE_PROCESS`` (SIGKILL), would leave the YARN application running.

    Args:
        session: the AWS session.
        cluster_id: ``j-...``.
        step_id: ``s-...``.

    Returns:
        EMR's CancelStepsInfo for the step (``Status`` SUBMITTED or FAILED, ``Reason``).

    Raises:
        ClusterError: an AWS error.
    """
    with aws_errors(f"CancelSteps {step_id} on {cluster_id}"):
        info = session.emr.cancel_steps(ClusterId=cluster_id, StepIds=[step_id],
                                        StepCancellationOption="SEND_INTERRUPT")
    return (info.get("CancelStepsInfoList") or [{}])[0]


def terminate_cluster(session: EmrSession, cluster_id: str) -> None:
    """Terminate a cluster (EMR's TerminateJobFlows); its running steps are cancelled.

    Args:
        session: the AWS session.
        cluster_id: ``j-...``.

    Raises:
        ClusterError: an AWS error (a termination-protected cluster is refused by EMR).
    """
    with aws_errors(f"TerminateJobFlows {cluster_id}"):
        session.emr.terminate_job_flows(JobFlowIds=[cluster_id])


def wait_for_cluster(session: EmrSession, cluster_id: str, *, timeout_s: float = 3600,
                     poll_s: float = 30, progress: Callable[[str], None] = lambda s: None) -> str:
    """Poll DescribeCluster until the cluster is WAITING or RUNNING (ready for steps) or has ended.

    Args:
        session: the AWS session.
        cluster_id: ``j-...``.
        timeout_s: give up after this many seconds.
        poll_s: seconds between DescribeCluster calls.
        progress: called with a line whenever the state changes.

    Returns:
        The cluster's state.

    Raises:
        ClusterError: it ended (with EMR's state-change reason) or ``timeout_s`` (seconds) passed.
    """
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        c = describe_cluster(session, cluster_id)
        state = c["Status"]["State"]
        if state != last:
            progress(f"cluster {cluster_id}: {state}")
            last = state
        if state in ("WAITING", "RUNNING"):
            return state
        if state in CLUSTER_TERMINAL_STATES:
            reason = c["Status"].get("StateChangeReason", {}).get("Message", "")
            raise ClusterError(f"cluster {cluster_id} ended {state} before it was ready"
                               + (f": {reason}" if reason else ""))
        if time.monotonic() > deadline:
            raise ClusterError(f"cluster {cluster_id} still {state} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def step_failure(session: EmrSession, cluster_id: str, step_id: str, state: str | None = None, *,
                 log_wait_s: float = 0, poll_s: float = 15,
                 progress: Callable[[str], None] = lambda s: None) -> StepFailedError:
    """Build the error of a step that did not complete.

    EMR copies logs to S3 about every five minutes, so right after a failure they may not be
    there: this looks again every ``poll_s`` seconds, for up to ``log_wait_s`` seconds, until
    the step's ``stderr`` and the container logs of every YARN application it names are there.

    Args:
        session: the AWS session.
        cluster_id: ``j-...``.
        step_id: ``s-...``.
        state: the state to report, else the step's recorded state.
        log_wait_s: longest time to wait for the logs to reach S3, seconds (0: look once).
        poll_s: seconds between looks.
        progress: receives a line when waiting for logs.

    Returns:
        A :class:`StepFailedError` with the step's position among the cluster's steps, EMR's
        failure reason and the diagnosis from its logs at the log URI.

    Raises:
        ClusterError: an AWS error while looking.
    """
    cluster = describe_cluster(session, cluster_id)
    steps = list_steps(session, cluster_id)
    ids = [s["Id"] for s in steps]
    index = ids.index(step_id) + 1 if step_id in ids else 0
    step: dict[str, Any] = steps[index - 1] if index else {"Name": step_id, "Status": {}}
    status = step.get("Status", {})
    details = status.get("FailureDetails") or {}
    reason = details.get("Message") or details.get("Reason") or status.get(
        "StateChangeReason", {}).get("Message", "")
    state = state or status.get("State", "UNKNOWN")
    log_uri = cluster.get("LogUri")
    prefix, diagnosis = "", "the cluster has no log URI, so the step's logs are not in S3"
    if log_uri:
        deadline = time.monotonic() + log_wait_s
        logs = step_logs(session, log_uri, cluster_id, step_id)
        if not logs.complete() and time.monotonic() < deadline:
            progress(f"waiting up to {log_wait_s:.0f} s for the logs of step {step_id} to reach "
                     f"{log_uri.rstrip('/')}/{cluster_id}/ (EMR copies them about every 5 minutes)")
        while not logs.complete() and time.monotonic() < deadline:
            time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
            logs = step_logs(session, log_uri, cluster_id, step_id)
        prefix, diagnosis = logs.prefix, logs.diagnosis()
    return StepFailedError(cluster_id=cluster_id, step_id=step_id, step_name=step.get("Name", ""),
                           index=index, total=len(steps), state=state, reason=reason,
                           log_prefix=prefix, diagnosis=diagnosis)


def wait_for_step(session: EmrSession, cluster_id: str, step_id: str, *, timeout_s: float = 86400,
                  poll_s: float = 15, progress: Callable[[str], None] = lambda s: None,
                  log_wait_s: float = 0) -> dict:
    """Follow a step (and its cluster) to the end.

    Args:
        session: the AWS session.
        cluster_id: ``j-...``.
        step_id: ``s-...``.
        timeout_s: give up after this many seconds.
        poll_s: seconds between DescribeStep calls.
        progress: called with a line whenever the step's or cluster's state changes.
        log_wait_s: on failure, how long to wait for its logs to reach S3 (:func:`step_failure`).

    Returns:
        The step (DescribeStep's ``Step``) once COMPLETED.

    Raises:
        StepFailedError: the step ended FAILED/CANCELLED/INTERRUPTED, or the cluster ended
            while the step had not completed; with the log diagnosis.
        ClusterError: ``timeout_s`` passed, or an AWS error.
    """
    deadline, last = time.monotonic() + timeout_s, None
    while True:
        with aws_errors(f"DescribeStep {step_id}"):
            step = session.emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
        cluster = describe_cluster(session, cluster_id)
        s_state, c_state = step["Status"]["State"], cluster["Status"]["State"]
        if (s_state, c_state) != last:
            progress(f"cluster {cluster_id} {c_state}, step {step_id} '{step['Name']}' {s_state}")
            last = (s_state, c_state)
        if s_state == "COMPLETED":
            return step
        if s_state in STEP_TERMINAL_STATES:
            raise step_failure(session, cluster_id, step_id, s_state, log_wait_s=log_wait_s,
                               poll_s=poll_s, progress=progress)
        if c_state in CLUSTER_TERMINAL_STATES:
            reason = cluster["Status"].get("StateChangeReason", {}).get("Message", "")
            err = step_failure(session, cluster_id, step_id,
                               f"{s_state} when the cluster ended {c_state}" + (f" ({reason})" if reason else ""),
                               log_wait_s=log_wait_s, poll_s=poll_s, progress=progress)
            raise err
        if time.monotonic() > deadline:
            raise ClusterError(f"step {step_id} of cluster {cluster_id} still {s_state} after "
                               f"{timeout_s:.0f} s; it goes on: `emrflow list-steps {cluster_id}`")
        time.sleep(poll_s)


def run_transient(session: EmrSession, spec: ClusterSpec, staging: Staging, step: dict, *,
                  timeout_s: float = 86400, poll_s: float = 30,
                  progress: Callable[[str], None] = lambda s: None,
                  on_created: Callable[[str], None] = lambda cluster_id: None,
                  log_wait_s: float = 0) -> tuple[str, str, dict]:
    """Run a job on a transient cluster that ends after its last step.

    Args:
        session: the AWS session.
        spec: the cluster spec (its ``steps`` run before ``step``).
        staging: staging plan (wheel set; the job's upload already planned).
        step: the job's step.
        timeout_s: seconds to follow the step before giving up.
        poll_s: seconds between polls.
        progress: receives progress lines.
        on_created: called with the cluster id as soon as RunJobFlow returned (so that a
            caller interrupted while following the step knows which cluster to terminate).
        log_wait_s: on failure, how long to wait for its logs to reach S3 (:func:`step_failure`).

    Returns:
        ``(cluster_id, step_id, step)`` once the step COMPLETED.

    Raises:
        StepFailedError: the step did not complete (with the diagnosis).
        ClusterError: an AWS error or the timeout.
    """
    request = build_run_job_flow_request(spec, staging, steps=[step], transient=True)
    cluster_id = create_cluster(session, request, staging, progress)
    on_created(cluster_id)
    progress(f"cluster {cluster_id} created (transient: ends after its last step)")
    steps = list_steps(session, cluster_id)
    step_id = steps[-1]["Id"]
    return cluster_id, step_id, wait_for_step(session, cluster_id, step_id, timeout_s=timeout_s,
                                              poll_s=poll_s, progress=progress, log_wait_s=log_wait_s)


