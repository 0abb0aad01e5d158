"""EMR requests from specs: RunJobFlow, step configs (AddJobFlowSteps), and the same as ``aws emr`` lines.

:func:`build_run_job_flow_request` turns a validated :class:`~emrflow.deploy.emr.spec.ClusterSpec`
into the keyword arguments of ``emr.run_job_flow``, each part from its spec object
(:func:`instance_group_config`, :func:`instance_fleet_config`, :func:`bootstrap_action_config`,
:func:`managed_scaling_policy`...), and checks the result against botocore's model
(:func:`emrflow.deploy.emr.checks.validate_request`). :func:`emrflow_step` and
:func:`session_step` make ``command-runner.jar`` steps. emrflow's own configuration
classifications, ``emrflow-conf`` and ``emrflow-log``, are not sent to EMR (it would refuse them):
they become a bootstrap action running ``bootstrap/write-emrflow-conf.sh`` with their content,
base64-encoded, on every node.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
from typing import Any, Mapping

import yaml

from emrflow import resources
from emrflow.deploy.emr import checks
from emrflow.deploy.emr.spec import (
    BootstrapAction,
    ClusterSpec,
    Ec2Attributes,
    InstanceFleet,
    InstanceGroup,
    ManagedScaling,
    StepSpec,
)
from emrflow.deploy.emr.staging import Staging
from emrflow.errors import ConfigError

DEFAULT_SERVICE_ROLE = "EMR_DefaultRole"
DEFAULT_JOB_FLOW_ROLE = "EMR_EC2_DefaultRole"
#: configuration classifications emrflow handles itself (bootstrap action, not sent to EMR)
EMRFLOW_CLASSIFICATIONS = ("emrflow-conf", "emrflow-log")
ACTIONS_ON_FAILURE = ("CONTINUE", "CANCEL_AND_WAIT", "TERMINATE_CLUSTER")
#: classifications that configure emrflow (mapped, see checks.emrflow_configuration); the
#: Flink ones also go to EMR when the cluster installs Flink
FLINK_CLASSIFICATIONS = ("flink-conf", "flink-log4j")
#: ``ec2`` fields and the ``Instances`` fields of RunJobFlow they become, in the request's order
_EC2_FIELDS = (("key_name", "Ec2KeyName"), ("subnet_id", "Ec2SubnetId"),
               ("master_security_group", "EmrManagedMasterSecurityGroup"),
               ("slave_security_group", "EmrManagedSlaveSecurityGroup"),
               ("subnet_ids", "Ec2SubnetIds"),
               ("additional_master_security_groups", "AdditionalMasterSecurityGroups"),
               ("additional_slave_security_groups", "AdditionalSlaveSecurityGroups"))


def _check_action_on_failure(action_on_failure: str) -> None:
    if action_on_failure not in ACTIONS_ON_FAILURE:
        raise ConfigError(f"--action-on-failure: expected one of {', '.join(ACTIONS_ON_FAILURE)}, "
                          f"got {action_on_failure!r}", source="--action-on-failure")


def _dynamic_args(dynamic: list[str] | tuple[str, ...]) -> list[str]:
    """``-D key=value`` arguments of a step; raise ConfigError on a malformed one."""
    args: list[str] = []
    for d in dynamic:
        if "=" not in d or not d.split("=", 1)[0].strip():
            raise ConfigError(f"-D: expected key=value, got {d!r}", source="-D")
        args += ["-D", d]
    return args


def emrflow_step(job_uri: str, job_args: list[str] | tuple[str, ...] = (), *, name: str | None = None,
                 parallelism: int | None = None, dynamic: list[str] | tuple[str, ...] = (),
                 action_on_failure: str = "CONTINUE", target: str = "yarn-per-job") -> dict:
    """Return a step (EMR StepConfig) running ``emrflow run`` through ``command-runner.jar``.

    Args:
        job_uri: the job script's ``s3://`` URI.
        job_args: the job's own arguments.
        name: the step's name (default: ``emrflow <script name>``).
        parallelism: ``-p``, or ``None``.
        dynamic: ``-D key=value`` options.
        action_on_failure: CONTINUE, CANCEL_AND_WAIT or TERMINATE_CLUSTER.
        target: the ``-t`` deploy target on the cluster: ``yarn-per-job`` (one YARN application
            for the job), ``yarn-session`` (the session a :func:`session_step` started) or
            ``yarn-application``.

    Returns:
        ``{"Name", "ActionOnFailure", "HadoopJarStep": {"Jar": "command-runner.jar", "Args":
        ["emrflow", "run", "-t", target, ...options, job_uri, ...job_args]}}``, as RunJobFlow's
        and AddJobFlowSteps' ``Steps`` take it (``steps/emrflow-job.json`` in the CLI's shape).

    Raises:
        ConfigError: a bad action on failure, parallelism or ``-D`` option.
    """
    _check_action_on_failure(action_on_failure)
    if parallelism is not None and (not isinstance(parallelism, int) or parallelism < 1):
        raise ConfigError(f"-p: expected an integer >= 1, got {parallelism!r}", source="-p")
    args = ["emrflow", "run", "-t", target]
    if parallelism is not None:
        args += ["-p", str(parallelism)]
    dynamic = list(dynamic)
    if target == "yarn-session" and not any(str(d).startswith("yarn.session.wait-timeout=") for d in dynamic):
        # with step concurrency > 1 the session step may still be starting the session
        dynamic.append("yarn.session.wait-timeout=10 min")
    args += [*_dynamic_args(dynamic), job_uri, *map(str, job_args)]
    return {"Name": name or f"emrflow {job_uri.rsplit('/', 1)[-1]}",
            "ActionOnFailure": action_on_failure,
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}


def session_step(*, taskmanagers: int = 1, slots: int | None = None, name: str = "emrflow yarn-session",
                 dynamic: list[str] | tuple[str, ...] = (), action_on_failure: str = "CONTINUE") -> dict:
    """Return a step starting a detached emrflow session on the cluster's YARN.

    Args:
        taskmanagers: TaskManager containers at start (>= 0).
        slots: task slots per TaskManager, or ``None`` for the configured default.
        name: the step's name.
        dynamic: ``-D key=value`` options for the session.
        action_on_failure: CONTINUE, CANCEL_AND_WAIT or TERMINATE_CLUSTER.

    Returns:
        A ``command-runner.jar`` StepConfig running ``emrflow yarn-session start --detached
        ...`` (the seed's ``flink-yarn-session`` step; ``steps/yarn-session.json``). The step
        ends once the session runs; later steps use it with ``-t yarn-session``.

    Raises:
        ConfigError: a bad count, slot count, ``-D`` option or action on failure.
    """
    _check_action_on_failure(action_on_failure)
    if not isinstance(taskmanagers, int) or taskmanagers < 0:
        raise ConfigError(f"--taskmanagers: expected an integer >= 0, got {taskmanagers!r}")
    args = ["emrflow", "yarn-session", "start", "--detached", "--taskmanagers", str(taskmanagers)]
    if slots is not None:
        if not isinstance(slots, int) or slots < 1:
            raise ConfigError(f"--slots: expected an integer >= 1, got {slots!r}")
        args += ["--slots", str(slots)]
    args += _dynamic_args(dynamic)
    return {"Name": name, "ActionOnFailure": action_on_failure,
            "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}}



def _encode_properties(properties: Mapping[str, Any]) -> str:
    text = yaml.safe_dump({str(k): v for k, v in properties.items()}, sort_keys=True, default_flow_style=False)
    return base64.b64encode(text.encode()).decode()


def step_config(step: StepSpec, staging: Staging) -> dict:
    """Return the StepConfig of one of the spec's ``steps``; plan its job script's upload.

    Raises:
        ConfigError: its local job script is missing.
    """
    dynamic = [f"{k}={v}" for k, v in step.dynamic.items()]
    return emrflow_step(staging.add_job(step.job), list(step.args), name=step.name,
                        parallelism=step.parallelism, dynamic=dynamic,
                        action_on_failure=step.action_on_failure)


def bootstrap_action_config(action: BootstrapAction) -> dict:
    """Return EMR's BootstrapActionConfig of one of the spec's own bootstrap actions."""
    return {"Name": action.name, "ScriptBootstrapAction": {"Path": action.path, "Args": list(action.args)}}


def _emrflow_bootstrap_actions(spec: ClusterSpec, staging: Staging, bootstrap_dir: str) -> list[dict]:
    """emrflow's two bootstrap actions: install emrflow, write its configuration."""
    install = staging.add(os.path.join(bootstrap_dir, "install-emrflow.sh"), "bootstrap", "install-emrflow.sh",
                          what="emrflow's bootstrap script")
    actions = [{"Name": "install emrflow",
                "ScriptBootstrapAction": {"Path": install, "Args": [staging.wheel_uri]}}]
    # always written, empty when the spec configures nothing: the `emrflow` wrapper points
    # EMRFLOW_CONF_DIR at it, and a step must find emrflow-conf.yaml there
    write = staging.add(os.path.join(bootstrap_dir, "write-emrflow-conf.sh"), "bootstrap",
                        "write-emrflow-conf.sh", what="emrflow's bootstrap script")
    args = ["--conf-b64", _encode_properties(spec.emrflow_conf)]
    if spec.emrflow_log:
        args += ["--log-b64", _encode_properties(spec.emrflow_log)]
    actions.append({"Name": "write emrflow configuration",
                    "ScriptBootstrapAction": {"Path": write, "Args": args}})
    return actions


def _ec2_instances(ec2: Ec2Attributes | None) -> dict:
    """The ``Instances`` fields of RunJobFlow the ``ec2`` block sets (those given and not empty)."""
    out: dict[str, Any] = {}
    for key, name in _EC2_FIELDS:
        value = getattr(ec2, key) if ec2 is not None else None
        if value:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def managed_scaling_policy(scaling: ManagedScaling) -> dict:
    """Return EMR's ManagedScalingPolicy ``{"ComputeLimits": {...}}`` of ``managed_scaling``."""
    limits = {"UnitType": scaling.unit_type, "MinimumCapacityUnits": scaling.minimum_capacity_units,
              "MaximumCapacityUnits": scaling.maximum_capacity_units}
    if scaling.maximum_on_demand_capacity_units is not None:
        limits["MaximumOnDemandCapacityUnits"] = scaling.maximum_on_demand_capacity_units
    if scaling.maximum_core_capacity_units is not None:
        limits["MaximumCoreCapacityUnits"] = scaling.maximum_core_capacity_units
    return {"ComputeLimits": limits}


def build_run_job_flow_request(spec: ClusterSpec, staging: Staging, *,
                               steps: list[dict] | None = None, transient: bool = False,
                               bootstrap_dir: str | None = None) -> dict:
    """Return the RunJobFlow request for ``spec``; plan the uploads it needs in ``staging``.

    Args:
        spec: the validated cluster spec.
        staging: where the wheel, bootstrap scripts and jobs go; its ``wheel_uri`` must be set.
        steps: steps to run (after the spec's own ``steps``, whose jobs are staged here).
        transient: end the cluster after its last step (KeepJobFlowAliveWhenNoSteps false,
            no AutoTerminationPolicy).
        bootstrap_dir: directory holding install-emrflow.sh and write-emrflow-conf.sh; default:
            the packaged ``bootstrap/`` (:func:`emrflow.resources.resource_dir`).

    Returns:
        Keyword arguments of ``emr.run_job_flow`` (EMR's RunJobFlow; ``aws emr create-cluster``).

    Raises:
        ConfigError: a bootstrap script or a local job script of the spec's ``steps`` is missing,
            or botocore's model refuses the request.
        ResourceNotFoundError: the install has no ``bootstrap/`` at all.
    """
    apps = ["Hadoop"] + [a for a in spec.applications if a != "Hadoop"]
    # emrflow's own classifications never go to EMR (it refuses them); Flink's only when the
    # cluster installs Flink. All of them configure emrflow (ClusterSpec.emrflow_conf).
    consumed = EMRFLOW_CLASSIFICATIONS + (() if "Flink" in apps else FLINK_CLASSIFICATIONS)
    emr_conf = checks.emr_properties([cl for cl in spec.configurations or ()
                                      if cl.classification not in consumed])
    actions = _emrflow_bootstrap_actions(spec, staging, bootstrap_dir or resources.resource_dir("bootstrap"))
    actions += [bootstrap_action_config(ba) for ba in spec.bootstrap_actions]
    instances: dict[str, Any] = {}
    if spec.instance_groups is not None:
        instances["InstanceGroups"] = [instance_group_config(g) for g in spec.instance_groups]
    else:
        instances["InstanceFleets"] = [instance_fleet_config(f) for f in spec.instance_fleets or ()]
    instances.update(_ec2_instances(spec.ec2))
    keep_alive = False if transient else (spec.keep_alive is not False)
    instances["KeepJobFlowAliveWhenNoSteps"] = keep_alive
    instances["TerminationProtected"] = bool(spec.termination_protected) and not transient
    all_steps = [step_config(st, staging) for st in spec.steps] + (steps or [])
    request: dict[str, Any] = {
        "Name": spec.name, "ReleaseLabel": spec.release_label,
        "Applications": [{"Name": a} for a in apps],
        "Instances": instances,
        "BootstrapActions": actions,
        "ServiceRole": spec.service_role or DEFAULT_SERVICE_ROLE,
        "JobFlowRole": spec.job_flow_role or DEFAULT_JOB_FLOW_ROLE,
        "VisibleToAllUsers": True,
        "Tags": [{"Key": k, "Value": v} for k, v in (spec.tags or {}).items()],
    }
    if emr_conf:
        request["Configurations"] = emr_conf
    if spec.log_uri:
        request["LogUri"] = spec.log_uri
    if all_steps:
        request["Steps"] = all_steps
    if spec.step_concurrency_level:
        request["StepConcurrencyLevel"] = spec.step_concurrency_level
    if keep_alive and spec.idle_timeout:
        request["AutoTerminationPolicy"] = {"IdleTimeout": spec.idle_timeout}
    if spec.security_configuration:
        request["SecurityConfiguration"] = spec.security_configuration
    if spec.managed_scaling:
        request["ManagedScalingPolicy"] = managed_scaling_policy(spec.managed_scaling)
    return checks.validate_request("RunJobFlow", request)


def _ebs(size_gb: int | None) -> dict:
    if not size_gb:
        return {}
    return {"EbsConfiguration": {"EbsBlockDeviceConfigs": [
        {"VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": size_gb}, "VolumesPerInstance": 1}]}}


def instance_group_config(group: InstanceGroup) -> dict:
    """Return EMR's InstanceGroupConfig of an instance group (name: the role's, capitalised, when unset)."""
    out: dict[str, Any] = {"Name": group.role.capitalize() if group.name is None else group.name,
                           "InstanceRole": group.role,
                           "Market": group.market, "InstanceType": group.instance_type,
                           "InstanceCount": group.count}
    if group.bid_price is not None:
        out["BidPrice"] = group.bid_price
    out.update(_ebs(group.ebs_size_gb))
    return out


def instance_fleet_config(fleet: InstanceFleet) -> dict:
    """Return EMR's InstanceFleetConfig of an instance fleet (name: the role's, capitalised, when unset)."""
    out: dict[str, Any] = {"Name": fleet.role.capitalize() if fleet.name is None else fleet.name,
                           "InstanceFleetType": fleet.role,
                           "TargetOnDemandCapacity": fleet.on_demand_capacity,
                           "TargetSpotCapacity": fleet.spot_capacity, "InstanceTypeConfigs": []}
    for t in fleet.instance_types:
        cfg: dict[str, Any] = {"InstanceType": t.instance_type, "WeightedCapacity": t.weight}
        if t.bid_percent is not None:
            cfg["BidPriceAsPercentageOfOnDemandPrice"] = float(t.bid_percent)
        cfg.update(_ebs(t.ebs_size_gb))
        out["InstanceTypeConfigs"].append(cfg)
    if fleet.spot:
        s: dict[str, Any] = {"TimeoutDurationMinutes": fleet.spot.timeout_minutes,
                             "TimeoutAction": fleet.spot.timeout_action}
        if fleet.spot.allocation_strategy is not None:
            s["AllocationStrategy"] = fleet.spot.allocation_strategy
        out["LaunchSpecifications"] = {"SpotSpecification": s}
    return out


def aws_cli_step(step: dict) -> dict:
    """Return a step (EMR's StepConfig, as RunJobFlow/AddJobFlowSteps take it) in the AWS CLI's shape.

    The AWS CLI's ``--steps`` of ``aws emr create-cluster`` and ``aws emr add-steps`` takes
    ``{"Type": "CUSTOM_JAR", "Name", "ActionOnFailure", "Jar", "Args"}``: the shape of the
    templates in ``steps/`` (usable as ``--steps file://steps/emrflow-job.json``).

    Args:
        step: ``{"Name", "ActionOnFailure", "HadoopJarStep": {"Jar", "Args"}}``.

    Returns:
        The step as the AWS CLI takes it.
    """
    return {"Type": "CUSTOM_JAR", "Name": step["Name"], "ActionOnFailure": step["ActionOnFailure"],
            "Jar": step["HadoopJarStep"]["Jar"], "Args": list(step["HadoopJarStep"]["Args"])}


def aws_cli_add_steps_command(cluster_id: str, steps: list[dict], *, profile: str | None = None,
                              region: str | None = None, endpoint_url: str | None = None) -> str:
    """Return the ``aws emr add-steps`` command line equivalent to an AddJobFlowSteps request.

    Args:
        cluster_id: ``j-...``.
        steps: the steps (EMR's StepConfig shape).
        profile: ``--profile`` to repeat on the line, or ``None``.
        region: ``--region`` to repeat, or ``None``.
        endpoint_url: ``--endpoint-url`` to repeat, or ``None``.

    Returns:
        The shell-quoted command line.
    """
    parts = ["aws", "emr", "add-steps", "--cluster-id", cluster_id,
             "--steps", json.dumps([aws_cli_step(s) for s in steps])]
    return " ".join(shlex.quote(p) for p in parts + _aws_cli_globals(profile, region, endpoint_url))


def _aws_cli_globals(profile: str | None, region: str | None, endpoint_url: str | None) -> list[str]:
    out: list[str] = []
    for opt, value in (("--profile", profile), ("--region", region), ("--endpoint-url", endpoint_url)):
        if value:
            out += [opt, value]
    return out


def aws_cli_command(request: dict, *, profile: str | None = None, region: str | None = None,
                    endpoint_url: str | None = None) -> str:
    """Return the ``aws emr create-cluster`` command line equivalent to a RunJobFlow request.

    Args:
        request: the RunJobFlow request (:func:`build_run_job_flow_request`).
        profile: ``--profile`` to repeat on the line, or ``None``.
        region: ``--region`` to repeat, or ``None``.
        endpoint_url: ``--endpoint-url`` to repeat, or ``None``.

    Returns:
        The shell-quoted command line (what ``create-cluster --dry-run`` prints last).
    """
    inst = request["Instances"]
    parts = ["aws", "emr", "create-cluster", "--name", request["Name"],
             "--release-label", request["ReleaseLabel"],
             "--applications", *[f"Name={a['Name']}" for a in request["Applications"]]]
    if "InstanceGroups" in inst:
        groups = [{"Name": g["Name"], "InstanceGroupType": g["InstanceRole"], "InstanceType": g["InstanceType"],
                   "InstanceCount": g["InstanceCount"], "Market": g.get("Market", "ON_DEMAND"),
                   **({"BidPrice": g["BidPrice"]} if "BidPrice" in g else {}),
                   **({"EbsConfiguration": g["EbsConfiguration"]} if "EbsConfiguration" in g else {})}
                  for g in inst["InstanceGroups"]]
        parts += ["--instance-groups", json.dumps(groups)]
    else:
        parts += ["--instance-fleets", json.dumps(inst["InstanceFleets"])]
    ec2 = {k2: inst[k1] for k1, k2 in (
        ("Ec2KeyName", "KeyName"), ("Ec2SubnetId", "SubnetId"), ("Ec2SubnetIds", "SubnetIds"),
        ("EmrManagedMasterSecurityGroup", "EmrManagedMasterSecurityGroup"),
        ("EmrManagedSlaveSecurityGroup", "EmrManagedSlaveSecurityGroup"),
        ("AdditionalMasterSecurityGroups", "AdditionalMasterSecurityGroups"),
        ("AdditionalSlaveSecurityGroups", "AdditionalSlaveSecurityGroups")) if k1 in inst}
    ec2["InstanceProfile"] = request["JobFlowRole"]
    parts += ["--ec2-attributes", json.dumps(ec2), "--service-role", request["ServiceRole"]]
    if "LogUri" in request:
        parts += ["--log-uri", request["LogUri"]]
    if "Configurations" in request:
        parts += ["--configurations", json.dumps(request["Configurations"])]
    parts += ["--bootstrap-actions", json.dumps([{"Name": a["Name"], "Path": a["ScriptBootstrapAction"]["Path"],
                                                  "Args": a["ScriptBootstrapAction"]["Args"]}
                                                 for a in request["BootstrapActions"]])]
    if "Steps" in request:
        parts += ["--steps", json.dumps([aws_cli_step(s) for s in request["Steps"]])]
    if request.get("Tags"):
        parts += ["--tags", *[f"{t['Key']}={t['Value']}" for t in request["Tags"]]]
    parts.append("--no-auto-terminate" if inst["KeepJobFlowAliveWhenNoSteps"] else "--auto-terminate")
    if inst.get("TerminationProtected"):
        parts.append("--termination-protected")
    if "AutoTerminationPolicy" in request:
        parts += ["--auto-termination-policy", f"IdleTimeout={request['AutoTerminationPolicy']['IdleTimeout']}"]
    if "StepConcurrencyLevel" in request:
        parts += ["--step-concurrency-level", str(request["StepConcurrencyLevel"])]
    if "SecurityConfiguration" in request:
        parts += ["--security-configuration", request["SecurityConfiguration"]]
    if "ManagedScalingPolicy" in request:
        parts += ["--managed-scaling-policy", json.dumps(request["ManagedScalingPolicy"])]
    parts += _aws_cli_globals(profile, region, endpoint_url)
    return " ".join(shlex.quote(str(p)) for p in parts)

