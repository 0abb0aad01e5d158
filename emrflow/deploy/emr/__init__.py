"""Amazon EMR deploy layer: cluster specs, RunJobFlow requests, steps, transient clusters.

A *cluster spec* is a YAML file (``configs/emr-*.yaml``) describing an EMR cluster: release
label, applications, configuration classifications, bootstrap actions, instance groups or
instance fleets, roles, tags. It is validated completely (every error names the field and the
file and line) before any AWS call, turned into a RunJobFlow request, what the cluster needs is
staged in S3 (the emrflow wheel, the bootstrap scripts, job scripts), ``command-runner.jar``
steps run ``emrflow run -t yarn-per-job``, and steps are followed to their end, failures
diagnosed from the step logs at the cluster's log URI.

Modules, each depending only on those above it:

- :mod:`~emrflow.deploy.emr.checks`: the rules EMR itself applies (release labels, property
  values as strings, ActionOnFailure with concurrent steps, botocore's request model) and
  ``flink-conf``/``emrflow-conf`` to emrflow's configuration.
- :mod:`~emrflow.deploy.emr.source`: the YAML with line marks, and :class:`Origin`, whose
  checks name a value's key path and ``file:line`` (or overriding option).
- :mod:`~emrflow.deploy.emr.spec`: the typed, frozen spec objects
  (:class:`ClusterSpec`, :class:`InstanceGroup`, :class:`InstanceFleet`,
  :class:`BootstrapAction`, :class:`StepSpec`...), each validating its own keys.
- :mod:`~emrflow.deploy.emr.staging`: the S3 staging plan and :class:`EmrSession` (boto3
  clients; every botocore error becomes a :class:`~emrflow.errors.ClusterError` in
  :func:`aws_errors`).
- :mod:`~emrflow.deploy.emr.requests`: spec objects to RunJobFlow and step configs, and the
  equivalent ``aws emr`` command lines.
- :mod:`~emrflow.deploy.emr.logs`: step and YARN container logs in S3, failure diagnosis.
- :mod:`~emrflow.deploy.emr.cluster`: cluster operations (create, add steps, wait, cancel,
  terminate, run a transient cluster) and :class:`StepFailedError`.

Every public name of these modules that the CLI and tests use is importable from here.
"""

from __future__ import annotations

from emrflow.deploy.emr import checks
from emrflow.deploy.emr.cluster import (
    CLUSTER_ACTIVE_STATES,
    CLUSTER_ID_RE,
    CLUSTER_TERMINAL_STATES,
    STEP_ID_RE,
    STEP_TERMINAL_STATES,
    StepFailedError,
    add_steps,
    cancel_step,
    check_cluster_id,
    check_step_id,
    check_steps,
    create_cluster,
    describe_cluster,
    list_clusters,
    list_steps,
    run_transient,
    step_failure,
    terminate_cluster,
    wait_for_cluster,
    wait_for_step,
)
from emrflow.deploy.emr.logs import (
    STEP_LOG_FILES,
    StepLogs,
    container_log_prefix,
    decode_log,
    step_log_prefix,
    step_logs,
)
from emrflow.deploy.emr.requests import (
    ACTIONS_ON_FAILURE,
    DEFAULT_JOB_FLOW_ROLE,
    DEFAULT_SERVICE_ROLE,
    EMRFLOW_CLASSIFICATIONS,
    FLINK_CLASSIFICATIONS,
    aws_cli_add_steps_command,
    aws_cli_command,
    aws_cli_step,
    build_run_job_flow_request,
    emrflow_step,
    session_step,
)
from emrflow.deploy.emr.source import (
    S3_URI_RE,
    Origin,
    SourceMap,
    check_s3_uri,
    load_yaml_with_marks,
    split_s3_uri,
)
from emrflow.deploy.emr.spec import (
    BID_PRICE_RE,
    INSTANCE_TYPE_RE,
    MARKETS,
    RELEASE_LABEL_RE,
    ROLES,
    BootstrapAction,
    Classification,
    ClusterSpec,
    Ec2Attributes,
    InstanceFleet,
    InstanceGroup,
    InstanceTypeConfig,
    ManagedScaling,
    SpotProvisioning,
    StepSpec,
    load_cluster_spec,
    resolve_cluster_spec,
    validate_spec,
    with_overrides,
)
from emrflow.deploy.emr.staging import (
    BOOTSTRAP_DIR,
    DIGEST_PLACEHOLDER,
    REGION_RE,
    REPO_ROOT,
    WHEEL_FROM_INDEX,
    EmrSession,
    Staging,
    aws_errors,
    expected_wheel_name,
    fetch_job_script,
    plan_staging,
    upload_directory,
)
from emrflow.deploy.wheel import build_wheel, check_wheel_name, self_wheel, wheel_digest

__all__ = [
    "ACTIONS_ON_FAILURE", "BID_PRICE_RE", "BOOTSTRAP_DIR", "CLUSTER_ACTIVE_STATES", "CLUSTER_ID_RE",
    "CLUSTER_TERMINAL_STATES", "DEFAULT_JOB_FLOW_ROLE", "DEFAULT_SERVICE_ROLE", "DIGEST_PLACEHOLDER",
    "EMRFLOW_CLASSIFICATIONS", "FLINK_CLASSIFICATIONS", "INSTANCE_TYPE_RE", "MARKETS", "REGION_RE",
    "RELEASE_LABEL_RE", "REPO_ROOT", "ROLES", "S3_URI_RE", "STEP_ID_RE", "STEP_LOG_FILES",
    "STEP_TERMINAL_STATES", "WHEEL_FROM_INDEX",
    "BootstrapAction", "Classification", "ClusterSpec", "Ec2Attributes", "EmrSession", "InstanceFleet",
    "InstanceGroup", "InstanceTypeConfig", "ManagedScaling", "Origin", "SourceMap", "SpotProvisioning",
    "Staging", "StepFailedError", "StepLogs", "StepSpec",
    "add_steps", "aws_cli_add_steps_command", "aws_cli_command", "aws_cli_step", "aws_errors",
    "build_run_job_flow_request", "build_wheel", "cancel_step", "check_cluster_id", "check_s3_uri",
    "check_step_id", "check_steps", "check_wheel_name", "checks", "container_log_prefix", "create_cluster",
    "decode_log", "describe_cluster", "emrflow_step", "expected_wheel_name", "fetch_job_script",
    "list_clusters", "list_steps", "load_cluster_spec", "load_yaml_with_marks", "plan_staging",
    "resolve_cluster_spec", "run_transient", "self_wheel", "session_step", "split_s3_uri", "step_failure",
    "step_log_prefix", "step_logs", "terminate_cluster", "upload_directory", "validate_spec",
    "wait_for_cluster", "wait_for_step", "wheel_digest", "with_overrides",
]
