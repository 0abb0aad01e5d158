"""Creating an EMR cluster from a cluster spec in one call, as ``emrflow create-cluster`` does.

Over the public functions of :mod:`emrflow.deploy.emr`: plan the staging (the emrflow wheel,
the bootstrap scripts), build the RunJobFlow request, and, unless it is a dry run, upload
and call RunJobFlow.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence


@dataclass(frozen=True)
class ClusterLaunch:
    """What :func:`create_cluster` did.

    Attributes:
        request: the RunJobFlow request (as sent, or as it would be sent under a dry run).
        cluster_id: the new cluster's id (``j-...``), or ``None`` for a dry run.
    """

    request: dict
    cluster_id: str | None


def create_cluster(spec: Any, session: Any = None, *, staging_uri: str | None = None, wheel: str | None = None,
                   dry_run: bool = False, progress: Callable[[str], None] | None = None) -> ClusterLaunch:
    """Create an EMR cluster from ``spec`` (RunJobFlow), or under ``dry_run`` only build the request.

    Validates the spec and every local file, makes the wheel of this emrflow (unless
    ``wheel``), uploads it (under a content-addressed key) and the bootstrap scripts under the
    staging URI, then calls RunJobFlow. A dry run builds and uploads nothing and calls no AWS
    API. The cluster is not waited for (:func:`emrflow.deploy.emr.wait_for_cluster` does).

    Args:
        spec: a ``ClusterSpec`` (:func:`emrflow.deploy.emr.load_cluster_spec`), or the path
            of a cluster spec YAML file or a packaged template's name (``emr-batch``).
        session: the :class:`~emrflow.deploy.emr.EmrSession` (default: a new one on the
            standard credential chain, ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL``; it is
            closed at the end). Not used under ``dry_run``.
        staging_uri: ``s3://bucket/prefix`` for the wheel, bootstrap scripts and job scripts
            (default: the spec's ``staging_uri``).
        wheel: emrflow for the nodes: a built wheel (path or ``s3://`` URI), or ``index`` for
            this version from the package index; default: this emrflow, staged under
            ``wheels/<sha256>/``.
        dry_run: only validate and build the request.
        progress: called with a line per step (uploads, the call); default: silent.

    Returns:
        The request and the new cluster's id (``None`` under ``dry_run``).

    Raises:
        ConfigError: a bad spec, option or local file (before any AWS call).
        ClusterError: AWS refused a call (the message names the call and AWS's reason).
    """
    from emrflow.deploy import emr
    if isinstance(spec, str):
        spec = emr.load_cluster_spec(spec)
    with tempfile.TemporaryDirectory(prefix="emrflow-wheel-") as tmp:
        staging = emr.plan_staging(spec, staging_uri, wheel, tmp, dry_run=dry_run)
        request = emr.build_run_job_flow_request(spec, staging)
        if dry_run:
            return ClusterLaunch(request, None)
        if session is None:
            with emr.EmrSession() as own:
                return ClusterLaunch(request, emr.create_cluster(own, request, staging, progress or _silent))
        return ClusterLaunch(request, emr.create_cluster(session, request, staging, progress or _silent))


def _silent(line: str) -> None:
    """The default progress: show nothing."""


@dataclass(frozen=True)
class StepLaunch:
    """What :func:`add_job_step` did.

    Attributes:
        request: the AddJobFlowSteps request (as sent, or as it would be sent under a dry run).
        step_id: the new step's id (``s-...``), or ``None`` for a dry run.
    """

    request: dict
    step_id: str | None


def add_job_step(cluster_id: str, job: str | None = None, job_args: Sequence[str] = (), session: Any = None, *,
                 staging_uri: str | None = None, name: str | None = None, parallelism: int | None = None,
                 dynamic: Sequence[str] = (), action_on_failure: str = "CONTINUE", target: str = "yarn-per-job",
                 yarn_session: bool = False, taskmanagers: int | None = None, slots: int | None = None,
                 dry_run: bool = False, wait: bool = False, timeout_s: float = 86400, poll_s: float = 15.0,
                 log_wait_s: float = 330, progress: Callable[[str], None] | None = None) -> StepLaunch:
    """Add an EMR step running ``job`` with ``emrflow run -t TARGET`` (or starting a YARN session).

    EMR's AddJobFlowSteps with a ``command-runner.jar`` step, as ``emrflow add-step`` does. A
    local ``job`` is uploaded under ``staging_uri`` first (after the step was checked against
    the cluster); ``job_args`` go to the job unchanged. The request is validated with
    botocore's model before any call.

    Args:
        cluster_id: the cluster (``j-...``).
        job: the job script, a local path or an ``s3://`` URI; ``None`` with ``yarn_session``.
        job_args: the job's own arguments.
        session: the :class:`~emrflow.deploy.emr.EmrSession` (default: a new one, closed at the
            end). Not used under ``dry_run``.
        staging_uri: ``s3://bucket/prefix`` for a local ``job``.
        name: the step's name (default: ``emrflow <script>``, or ``emrflow yarn-session``).
        parallelism: the step's ``-p`` (``parallelism.default``).
        dynamic: ``key=value`` settings for the step's ``emrflow run`` (its ``-D``).
        action_on_failure: EMR's ``ActionOnFailure`` (``CONTINUE``, ``CANCEL_AND_WAIT``,
            ``TERMINATE_CLUSTER``).
        target: the step's ``emrflow run -t`` (``yarn-per-job``, ``yarn-session``, ``yarn-application``).
        yarn_session: add a step that starts a detached YARN session instead of a job.
        taskmanagers: the session's TaskManagers (its ``-n``).
        slots: task slots per TaskManager (``-s``, ``taskmanager.numberOfTaskSlots``).
        dry_run: only validate and build the request; no upload, no AWS call.
        wait: follow the step until it ends.
        timeout_s: with ``wait``, seconds to follow it.
        poll_s: with ``wait``, seconds between polls.
        log_wait_s: with ``wait``, seconds to wait for a failed step's logs to reach S3.
        progress: called with a line per event (uploads, step states); default: silent.

    Returns:
        The request and the new step's id (``None`` under ``dry_run``).

    Raises:
        ConfigError: a bad argument (named), before any AWS call.
        ClusterError: AWS refused a call.
        StepFailedError: with ``wait``, the step failed (with the diagnosis from its logs).
    """
    from emrflow.deploy import emr
    from emrflow.deploy.emr import checks
    from emrflow.errors import ConfigError
    emr.check_cluster_id(cluster_id)
    staging = None
    if yarn_session:
        if job:
            raise ConfigError("a YARN session step takes no job script", "JOB")
        step = emr.session_step(taskmanagers=taskmanagers, slots=slots, dynamic=list(dynamic),
                                name=name or "emrflow yarn-session", action_on_failure=action_on_failure)
    else:
        if not job:
            raise ConfigError("missing the job script (or a YARN session step)", "JOB")
        if job.startswith("s3://"):
            job_uri = emr.check_s3_uri(job, "JOB", "job script", key_required=True)
        elif not staging_uri:
            raise ConfigError("--s3-staging s3://bucket/prefix is needed to upload a local job script",
                              "--s3-staging")
        else:
            staging = emr.Staging(emr.check_s3_uri(staging_uri, "--s3-staging", "staging_uri"))
            job_uri = staging.add_job(job)
        step = emr.emrflow_step(job_uri, list(job_args), name=name, parallelism=parallelism,
                                dynamic=list(dynamic), action_on_failure=action_on_failure, target=target)
    request = {"JobFlowId": cluster_id, "Steps": [step]}
    checks.validate_request("AddJobFlowSteps", request)
    if dry_run:
        return StepLaunch(request, None)
    say = progress or _silent
    with _own_session(session) as s:
        emr.check_steps(s, cluster_id, [step])        # before the job is uploaded
        if staging is not None:
            s.upload_all(staging, say)
        step_id = emr.add_steps(s, cluster_id, [step])[0]
        if wait:
            say(f"step {step_id} added")
            emr.wait_for_step(s, cluster_id, step_id, timeout_s=timeout_s, poll_s=poll_s, progress=say,
                              log_wait_s=log_wait_s)
    return StepLaunch(request, step_id)


def run_transient_job(spec: Any, job: str, job_args: Sequence[str] = (), session: Any = None, *,
                      staging_uri: str | None = None, wheel: str | None = None, step_name: str | None = None,
                      parallelism: int | None = None, dynamic: Sequence[str] = (), timeout_s: float = 86400,
                      poll_s: float = 30.0, log_wait_s: float = 330,
                      progress: Callable[[str], None] | None = None,
                      on_created: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Run ``job`` on a new EMR cluster that terminates after it, as ``emrflow run-transient`` does.

    RunJobFlow with the job as the only step (``ActionOnFailure`` TERMINATE_CLUSTER, or
    CONTINUE when the spec's ``step_concurrency_level`` > 1, as EMR demands) and
    ``KeepJobFlowAliveWhenNoSteps`` false, then follows the step until it ends.

    Args:
        spec: a ``ClusterSpec``, or the path of a cluster spec YAML file or a template's name.
        job: the job script (local path, uploaded under the staging URI, or ``s3://``).
        job_args: the job's own arguments.
        session: the :class:`~emrflow.deploy.emr.EmrSession` (default: a new one, closed at the end).
        staging_uri: ``s3://bucket/prefix`` (default: the spec's ``staging_uri``).
        wheel: emrflow for the nodes (see :func:`create_cluster`).
        step_name: the step's name (default: ``emrflow <script>``).
        parallelism: the step's ``-p``.
        dynamic: ``key=value`` settings for the step's ``emrflow run``.
        timeout_s: seconds to follow the job.
        poll_s: seconds between polls.
        log_wait_s: seconds to wait for a failed step's logs to reach S3.
        progress: called with a line per event; default: silent.
        on_created: called with the cluster id as soon as RunJobFlow answered (so that a caller
            interrupted later knows which cluster to terminate).

    Returns:
        ``(cluster id, step id)`` of the completed step.

    Raises:
        ConfigError: a bad spec, option or local file (before any AWS call).
        ClusterError: AWS refused a call.
        StepFailedError: the step failed (with the diagnosis from its logs).
    """
    from emrflow.deploy import emr
    from emrflow.deploy.emr import checks
    if isinstance(spec, str):
        spec = emr.load_cluster_spec(spec)
    with tempfile.TemporaryDirectory(prefix="emrflow-wheel-") as tmp, _own_session(session) as s:
        staging = emr.plan_staging(spec, staging_uri, wheel, tmp)
        # TERMINATE_CLUSTER, or CONTINUE when steps run concurrently (all EMR accepts then;
        # the cluster still ends after its last step)
        action = checks.transient_action_on_failure(spec.get("step_concurrency_level", 1))
        step = emr.emrflow_step(staging.add_job(job), list(job_args), name=step_name, parallelism=parallelism,
                                dynamic=list(dynamic), action_on_failure=action)
        cluster_id, step_id, _ = emr.run_transient(s, spec, staging, step, timeout_s=timeout_s, poll_s=poll_s,
                                                   progress=progress or _silent,
                                                   on_created=on_created or (lambda _cid: None),
                                                   log_wait_s=log_wait_s)
    return cluster_id, step_id


@contextlib.contextmanager
def _own_session(session: Any) -> Iterator[Any]:
    """``session``, or a new :class:`~emrflow.deploy.emr.EmrSession` closed at the end."""
    if session is not None:
        yield session
        return
    from emrflow.deploy import emr
    with emr.EmrSession() as own:
        yield own
