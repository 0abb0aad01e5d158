"""Amazon EMR deploy layer: cluster specs, RunJobFlow requests, steps, transient clusters.

A *cluster spec* is a YAML file (``configs/emr-*.yaml``) describing an EMR
cluster: release label, applications, configuration classifications,
bootstrap actions, instance groups or instance fleets, roles, tags. This
module validates it completely (every error names the field and the file and
line) before any AWS call, turns it into a RunJobFlow request, stages what the
cluster needs in S3 (the emrflow wheel, the bootstrap scripts, job scripts),
adds ``command-runner.jar`` steps running ``emrflow run -t yarn-per-job`` and
follows steps to their end, diagnosing failures from the step logs at the
cluster's log URI.

emrflow's own configuration classifications, ``emrflow-conf`` and
``emrflow-log``, are not sent to EMR (it would refuse them): they become a
bootstrap action running ``bootstrap/write-emrflow-conf.sh`` with their
content, base64-encoded, on every node.

All botocore errors are translated at one boundary (:func:`aws_errors`) into
:class:`~emrflow.errors.ClusterError` carrying the AWS error code.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator

import yaml

from emrflow import resources
from emrflow.deploy import emr_checks
from emrflow.deploy.emr_logs import STEP_LOG_FILES, StepLogs, container_log_prefix, decode_log, step_log_prefix
from emrflow.deploy.wheel import build_wheel, check_wheel_name, self_wheel, wheel_digest  # noqa: F401
from emrflow.errors import ClusterError, ConfigError, EmrflowError

DEFAULT_SERVICE_ROLE = "EMR_DefaultRole"
DEFAULT_JOB_FLOW_ROLE = "EMR_EC2_DefaultRole"
#: configuration classifications emrflow handles itself (bootstrap action, not sent to EMR)
EMRFLOW_CLASSIFICATIONS = ("emrflow-conf", "emrflow-log")
ACTIONS_ON_FAILURE = ("CONTINUE", "CANCEL_AND_WAIT", "TERMINATE_CLUSTER")
ROLES = ("MASTER", "CORE", "TASK")
MARKETS = ("ON_DEMAND", "SPOT")
STEP_TERMINAL_STATES = ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED")
CLUSTER_TERMINAL_STATES = ("TERMINATED", "TERMINATED_WITH_ERRORS")
CLUSTER_ACTIVE_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING", "TERMINATING")
#: the source checkout emrflow runs from, if it does
REPO_ROOT = resources.REPO_ROOT
#: the bootstrap scripts install-emrflow.sh and write-emrflow-conf.sh: in the installed package
#: (emrflow/_data/bootstrap), else in the source checkout; None when neither has them
BOOTSTRAP_DIR = resources.find_dir("bootstrap")
#: ``--wheel index``: the nodes install this emrflow version from the package index
WHEEL_FROM_INDEX = "index"
#: what a dry run shows for the digest of a wheel it does not build
DIGEST_PLACEHOLDER = "<sha256>"

RELEASE_LABEL_RE = re.compile(r"^emr-\d+\.\d+\.\d+$")
INSTANCE_TYPE_RE = re.compile(
    r"^[a-z][a-z0-9-]*\d[a-z0-9-]*\.(nano|micro|small|medium|\d*x?large|metal(-\d+xl)?)$")
S3_URI_RE = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/.*)?$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
CLUSTER_ID_RE = re.compile(r"^j-[A-Z0-9]{1,64}$")
STEP_ID_RE = re.compile(r"^s-[A-Z0-9]{1,64}$")
BID_PRICE_RE = re.compile(r"^\d+(\.\d+)?$")


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


# --------------------------------------------------------------------------- YAML with line marks

@dataclass
class SourceMap:
    """Where each value of a YAML document came from.

    Attributes:
        file: the YAML file's path.
        lines: path of keys/indexes (a tuple) to the 1-based line of that value.
    """

    file: str
    lines: dict[tuple, int] = field(default_factory=dict)

    def where(self, path: tuple) -> str:
        """Return ``file:line`` of ``path``, or of its closest ancestor that has a line."""
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        line = self.lines.get(p)
        return f"{self.file}:{line}" if line else self.file


def _mark_nodes(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (str(key.value),)
            lines[sub] = key.start_mark.line + 1
            _mark_nodes(value, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _mark_nodes(item, path + (i,), lines)


def load_yaml_with_marks(path: str) -> tuple[Any, SourceMap]:
    """Load a YAML file and record the line of every value.

    Args:
        path: the YAML file.

    Returns:
        ``(data, source_map)``.

    Raises:
        ConfigError: the file is missing or is not valid YAML (with its line).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read cluster config {path}: {exc.strerror}", source=path) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}",
                          source=where) from None
    smap = SourceMap(path)
    if node is not None:
        smap.lines[()] = node.start_mark.line + 1
        _mark_nodes(node, (), smap.lines)
    return data, smap


# --------------------------------------------------------------------------- the cluster spec

@dataclass(frozen=True)
class ClusterSpec:
    """A validated cluster spec, as loaded from YAML, with command-line overrides applied.

    Attributes:
        data: the spec's mapping (snake_case keys, configuration classifications in EMR's shape).
        source: where each value came from.
        overrides: field name -> command-line option that set it (``--release-label``).
    """

    data: dict
    source: SourceMap
    overrides: dict = field(default_factory=dict)

    def where(self, path: tuple) -> str:
        """Return where ``path`` was set: the command-line option, else ``file:line``."""
        for key in (path[:1], path[:2]):
            if key in self.overrides:
                return f"{self.overrides[key]} (overriding {self.source.where(path)})"
        return self.source.where(path)

    def get(self, key: str, default: Any = None) -> Any:
        """Return the spec's top-level ``key``, or ``default``."""
        value = self.data.get(key)
        return default if value is None else value


_TOP_KEYS = {
    "name", "release_label", "applications", "log_uri", "staging_uri", "service_role",
    "job_flow_role", "keep_alive", "idle_timeout", "termination_protected",
    "step_concurrency_level", "ec2", "instance_groups", "instance_fleets", "configurations",
    "bootstrap_actions", "tags", "steps", "wheel", "managed_scaling", "security_configuration",
}
_EC2_KEYS = {"key_name", "subnet_id", "subnet_ids", "master_security_group", "slave_security_group",
             "additional_master_security_groups", "additional_slave_security_groups"}
_GROUP_KEYS = {"role", "name", "instance_type", "count", "market", "bid_price", "ebs_size_gb"}
_FLEET_KEYS = {"role", "name", "on_demand_capacity", "spot_capacity", "instance_types", "spot"}
_FLEET_TYPE_KEYS = {"instance_type", "weight", "bid_percent", "ebs_size_gb"}
_SPOT_KEYS = {"timeout_minutes", "timeout_action", "allocation_strategy"}
_BA_KEYS = {"name", "path", "args"}
_STEP_KEYS = {"name", "job", "args", "parallelism", "dynamic", "action_on_failure"}
_SCALING_KEYS = {"unit_type", "minimum_capacity_units", "maximum_capacity_units",
                 "maximum_on_demand_capacity_units", "maximum_core_capacity_units"}
#: classifications that configure emrflow (mapped, see emr_checks.emrflow_configuration); the
#: Flink ones also go to EMR when the cluster installs Flink
FLINK_CLASSIFICATIONS = ("flink-conf", "flink-log4j")


class _Checker:
    """Validation helpers that raise ConfigError naming the field and where it was set."""

    def __init__(self, spec: ClusterSpec):
        self.spec = spec

    def fail(self, path: tuple, expected: str, got: Any) -> None:
        name = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
        where = self.spec.where(path)
        raise ConfigError(f"{where}: {name or 'cluster config'}: expected {expected}, got {got!r}",
                          key=name, source=where)

    def keys(self, value: Any, path: tuple, allowed: set, what: str) -> dict:
        if not isinstance(value, dict):
            self.fail(path, f"a mapping ({what})", value)
        for k in value:
            if k not in allowed:
                self.fail(path + (str(k),), f"one of the keys {', '.join(sorted(allowed))}",
                          f"unknown key {k}")
        return value

    def string(self, value: Any, path: tuple, pattern: re.Pattern | None = None,
               expected: str = "a non-empty string") -> str:
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            self.fail(path, expected, value)
        return value

    def integer(self, value: Any, path: tuple, minimum: int, maximum: int | None = None) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum and (
            maximum is None or value <= maximum)
        if not ok:
            bound = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
            self.fail(path, bound, value)
        return value

    def boolean(self, value: Any, path: tuple) -> bool:
        if not isinstance(value, bool):
            self.fail(path, "true or false", value)
        return value

    def s3(self, value: Any, path: tuple, key_required: bool = False) -> str:
        return check_s3_uri(value, self.spec.where(path), ".".join(map(str, path)), key_required)

    def str_list(self, value: Any, path: tuple) -> list:
        if not isinstance(value, list):
            self.fail(path, "a list of strings", value)
        for i, v in enumerate(value):
            self.string(v, path + (i,))
        return value


def check_s3_uri(value: Any, where: str, name: str, key_required: bool = False) -> str:
    """Check an S3 URI ``s3://bucket/key``.

    Args:
        value: the URI.
        where: where it was set (``file:line`` or an option), for the message.
        name: the field's name, for the message.
        key_required: an object key (not only a bucket or prefix) is needed.

    Returns:
        ``value``.

    Raises:
        ConfigError: not an S3 URI, a bad bucket name, or no key when one is needed.
    """
    m = S3_URI_RE.match(value) if isinstance(value, str) else None
    if not m or (key_required and len((m.group(2) or "/").strip("/")) == 0):
        expected = "s3://bucket/key" if key_required else "s3://bucket[/prefix]"
        raise ConfigError(f"{where}: {name}: expected an S3 URI {expected}, got {value!r}",
                          key=name, source=where)
    return value


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split an S3 URI.

    Args:
        uri: ``s3://bucket[/key]``.

    Returns:
        ``(bucket, key)``, the key without its leading slash ("" for a bare bucket).

    Raises:
        ConfigError: ``uri`` is not an S3 URI.
    """
    m = S3_URI_RE.match(uri)
    if not m:
        raise ConfigError(f"expected an S3 URI s3://bucket/key, got {uri!r}")
    return m.group(1), (m.group(2) or "/")[1:]


def _validate_classifications(c: _Checker, value: Any, path: tuple) -> None:
    if not isinstance(value, list):
        c.fail(path, "a list of configuration classifications {Classification, Properties, "
                     "Configurations}", value)
    for i, cl in enumerate(value):
        p = path + (i,)
        c.keys(cl, p, {"Classification", "Properties", "Configurations"},
               "a configuration classification {Classification, Properties, Configurations}")
        c.string(cl.get("Classification"), p + ("Classification",),
                 re.compile(r"^[a-z0-9][a-z0-9.-]*$"), "a classification name such as yarn-site")
        props = cl.get("Properties", {})
        if not isinstance(props, dict):
            c.fail(p + ("Properties",), "a mapping of property names to values", props)
        for k, v in props.items():
            if isinstance(v, (dict, list)) or v is None:
                c.fail(p + ("Properties", str(k)), "a string, number or boolean", v)
        if "Configurations" in cl:
            _validate_classifications(c, cl["Configurations"], p + ("Configurations",))
        if cl["Classification"] == "emrflow-conf":
            from emrflow.config import Configuration
            try:
                Configuration.from_dict({str(k): v for k, v in props.items()},
                                        source=c.spec.where(p + ("Properties",)))
            except ConfigError as exc:
                where = c.spec.where(p + ("Properties", str(exc.key or "")))
                raise ConfigError(f"{where}: emrflow-conf: {exc}", key=exc.key, source=where) from None


def validate_spec(spec: ClusterSpec) -> ClusterSpec:
    """Check every field of ``spec`` before any AWS call; return it unchanged.

    Checks the release label (``emr-X.Y.Z``), instance types and counts (one MASTER of 1 or
    3 instances, at most one CORE), markets and bid prices, instance fleets and their Spot
    options, S3 URIs, roles, the idle timeout (60..604800 s), configuration classifications
    (EMR's shape; ``emrflow-conf`` keys against emrflow's own options), bootstrap actions,
    tags and steps.

    Args:
        spec: the spec to check.

    Returns:
        ``spec``.

    Raises:
        ConfigError: the first wrong field, with its name, ``file:line`` (or the
            overriding option), what was expected and what was found.
    """
    c = _Checker(spec)
    d = c.keys(spec.data, (), _TOP_KEYS, "an EMR cluster spec")
    c.string(d.get("name"), ("name",))
    c.string(d.get("release_label"), ("release_label",), RELEASE_LABEL_RE,
             "a release label emr-X.Y.Z (such as emr-7.1.0)")
    emr_checks.check_release_label(d["release_label"], spec.where(("release_label",)))
    c.str_list(d.get("applications", []), ("applications",))
    if d.get("log_uri") is not None:
        c.s3(d["log_uri"], ("log_uri",))
    if d.get("staging_uri") is not None:
        c.s3(d["staging_uri"], ("staging_uri",))
    for k in ("service_role", "job_flow_role"):
        if k in d:
            c.string(d[k], (k,))
    for k in ("keep_alive", "termination_protected"):
        if k in d:
            c.boolean(d[k], (k,))
    if d.get("idle_timeout") is not None:
        c.integer(d["idle_timeout"], ("idle_timeout",), 60, 604800)
    if "step_concurrency_level" in d:
        c.integer(d["step_concurrency_level"], ("step_concurrency_level",), 1, 256)
    if "ec2" in d:
        ec2 = c.keys(d["ec2"], ("ec2",), _EC2_KEYS, "EC2 attributes")
        for k in ("key_name", "subnet_id", "master_security_group", "slave_security_group"):
            if k in ec2:
                c.string(ec2[k], ("ec2", k))
        for k in ("subnet_ids", "additional_master_security_groups", "additional_slave_security_groups"):
            if k in ec2:
                c.str_list(ec2[k], ("ec2", k))
    groups, fleets = d.get("instance_groups"), d.get("instance_fleets")
    if (groups is None) == (fleets is None):
        c.fail(("instance_groups",), "exactly one of instance_groups and instance_fleets",
               "both" if groups is not None else "neither")
    items, what = (groups, "instance_groups") if groups is not None else (fleets, "instance_fleets")
    if not isinstance(items, list) or not items:
        c.fail((what,), "a non-empty list", items)
    roles = []
    for i, g in enumerate(items):
        p = (what, i)
        c.keys(g, p, _GROUP_KEYS if groups is not None else _FLEET_KEYS, what)
        role = c.string(g.get("role"), p + ("role",), re.compile("^(MASTER|CORE|TASK)$"),
                        "MASTER, CORE or TASK")
        roles.append(role)
        if groups is not None:
            c.string(g.get("instance_type"), p + ("instance_type",), INSTANCE_TYPE_RE,
                     "an EC2 instance type such as m5.xlarge")
            c.integer(g.get("count"), p + ("count",), 1 if role == "MASTER" else 0,
                      3 if role == "MASTER" else None)
            if role == "MASTER" and g["count"] == 2:
                c.fail(p + ("count",), "1 or 3 (3: high availability)", 2)
            market = g.get("market", "ON_DEMAND")
            c.string(market, p + ("market",), re.compile("^(ON_DEMAND|SPOT)$"), "ON_DEMAND or SPOT")
            if "bid_price" in g:
                if market != "SPOT":
                    c.fail(p + ("bid_price",), "bid_price only with market: SPOT", g["bid_price"])
                c.string(str(g["bid_price"]), p + ("bid_price",), BID_PRICE_RE, "a price in USD")
            if "ebs_size_gb" in g:
                c.integer(g["ebs_size_gb"], p + ("ebs_size_gb",), 1, 16384)
        else:
            on_demand = c.integer(g.get("on_demand_capacity", 0), p + ("on_demand_capacity",), 0)
            spot = c.integer(g.get("spot_capacity", 0), p + ("spot_capacity",), 0)
            if role == "MASTER" and on_demand + spot != 1:
                c.fail(p + ("on_demand_capacity",), "a MASTER fleet of capacity 1", on_demand + spot)
            types = g.get("instance_types")
            if not isinstance(types, list) or not types or len(types) > 30:
                c.fail(p + ("instance_types",), "a list of 1 to 30 instance types", types)
            for j, t in enumerate(types):
                tp = p + ("instance_types", j)
                c.keys(t, tp, _FLEET_TYPE_KEYS, "an instance type config")
                c.string(t.get("instance_type"), tp + ("instance_type",), INSTANCE_TYPE_RE,
                         "an EC2 instance type such as m5.xlarge")
                if "weight" in t:
                    c.integer(t["weight"], tp + ("weight",), 1)
                if "bid_percent" in t:
                    c.integer(t["bid_percent"], tp + ("bid_percent",), 1, 1000)
                if "ebs_size_gb" in t:
                    c.integer(t["ebs_size_gb"], tp + ("ebs_size_gb",), 1, 16384)
            if "spot" in g:
                s = c.keys(g["spot"], p + ("spot",), _SPOT_KEYS, "Spot options")
                if "timeout_minutes" not in s:     # EMR's SpotProvisioningSpecification requires it
                    c.fail(p + ("spot", "timeout_minutes"), "timeout_minutes (5..1440) in a spot block: "
                           "how long to wait for Spot capacity, then timeout_action (default "
                           "SWITCH_TO_ON_DEMAND)", "nothing")
                if "timeout_minutes" in s:
                    c.integer(s["timeout_minutes"], p + ("spot", "timeout_minutes"), 5, 1440)
                if "timeout_action" in s:
                    c.string(s["timeout_action"], p + ("spot", "timeout_action"),
                             re.compile("^(SWITCH_TO_ON_DEMAND|TERMINATE_CLUSTER)$"),
                             "SWITCH_TO_ON_DEMAND or TERMINATE_CLUSTER")
                if "allocation_strategy" in s:
                    c.string(s["allocation_strategy"], p + ("spot", "allocation_strategy"),
                             re.compile("^(capacity-optimized|price-capacity-optimized|lowest-price|"
                                        "diversified|capacity-optimized-prioritized)$"),
                             "an allocation strategy such as price-capacity-optimized")
    if roles.count("MASTER") != 1:
        c.fail((what,), f"exactly one MASTER entry in {what}", f"{roles.count('MASTER')} MASTER")
    for r in ("CORE",):
        if roles.count(r) > 1:
            c.fail((what,), f"at most one {r} entry", roles.count(r))
    if "configurations" in d:
        _validate_classifications(c, d["configurations"], ("configurations",))
        emr_checks.emrflow_configuration(d["configurations"], lambda path: spec.where(("configurations", *path)))
    _validate_scaling_and_security(c, d)
    for i, ba in enumerate(d.get("bootstrap_actions", []) or []):
        p = ("bootstrap_actions", i)
        c.keys(ba, p, _BA_KEYS, "a bootstrap action {name, path, args}")
        c.string(ba.get("name"), p + ("name",))
        c.s3(ba.get("path"), p + ("path",), key_required=True)
        c.str_list([str(a) for a in ba.get("args", [])] if isinstance(ba.get("args", []), list)
                   else ba.get("args"), p + ("args",))
    if "tags" in d:
        tags = d["tags"]
        if not isinstance(tags, dict):
            c.fail(("tags",), "a mapping of tag keys to values", tags)
        for k, v in tags.items():
            if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                c.fail(("tags", str(k)), "a string", v)
    for i, st in enumerate(d.get("steps", []) or []):
        p = ("steps", i)
        c.keys(st, p, _STEP_KEYS, "a step {name, job, args, parallelism, dynamic, action_on_failure}")
        c.string(st.get("job"), p + ("job",), expected="a job script (local path or s3:// URI)")
        if "parallelism" in st:
            c.integer(st["parallelism"], p + ("parallelism",), 1)
        if "action_on_failure" in st:
            c.string(st["action_on_failure"], p + ("action_on_failure",),
                     re.compile("^(CONTINUE|CANCEL_AND_WAIT|TERMINATE_CLUSTER)$"),
                     "CONTINUE, CANCEL_AND_WAIT or TERMINATE_CLUSTER")
            emr_checks.check_action_on_failure(st["action_on_failure"], d.get("step_concurrency_level", 1),
                                               spec.where(p + ("action_on_failure",)))
        if "args" in st:
            c.str_list([str(a) for a in st["args"]] if isinstance(st["args"], list) else st["args"],
                       p + ("args",))
        if "dynamic" in st and not isinstance(st["dynamic"], dict):
            c.fail(p + ("dynamic",), "a mapping of emrflow configuration keys to values", st["dynamic"])
    if "wheel" in d:
        c.string(d["wheel"], ("wheel",), expected="a wheel file path or s3:// URI")
    return spec


def _validate_scaling_and_security(c: _Checker, d: dict) -> None:
    """``managed_scaling`` (EMR managed scaling's ComputeLimits) and ``security_configuration``."""
    if "security_configuration" in d:
        c.string(d["security_configuration"], ("security_configuration",),
                 re.compile(r"^[\w.+=@-]{1,10280}$"), "the name of an EMR security configuration")
    if "managed_scaling" not in d:
        return
    p = ("managed_scaling",)
    m = c.keys(d["managed_scaling"], p, _SCALING_KEYS, "EMR managed scaling's compute limits")
    unit = m.get("unit_type", "Instances")
    c.string(unit, p + ("unit_type",), re.compile("^(Instances|InstanceFleetUnits|VCPU)$"),
             "Instances, InstanceFleetUnits or VCPU")
    if unit == "InstanceFleetUnits" and "instance_fleets" not in d:
        c.fail(p + ("unit_type",), "Instances or VCPU with instance_groups (InstanceFleetUnits needs "
               "instance_fleets)", unit)
    if unit == "Instances" and "instance_fleets" in d:
        c.fail(p + ("unit_type",), "InstanceFleetUnits or VCPU with instance_fleets", unit)
    for k in ("minimum_capacity_units", "maximum_capacity_units"):
        if k not in m:
            c.fail(p + (k,), f"{k}, an integer >= 1", "nothing")
    low = c.integer(m["minimum_capacity_units"], p + ("minimum_capacity_units",), 1)
    high = c.integer(m["maximum_capacity_units"], p + ("maximum_capacity_units",), low)
    for k in ("maximum_on_demand_capacity_units", "maximum_core_capacity_units"):
        if k in m:
            c.integer(m[k], p + (k,), 0 if k == "maximum_on_demand_capacity_units" else 1, high)


def resolve_cluster_spec(path: str) -> str:
    """Return the file of a cluster spec given as a path or as a packaged template's name.

    Args:
        path: a YAML file; if there is no such file and ``path`` is a bare name (no
            directory), the packaged template of that name (``emr-batch``, ``emr-batch.yaml``
            or ``batch``; :func:`emrflow.resources.cluster_templates`).

    Returns:
        The file to read.

    Raises:
        ConfigError: neither a file nor a template's name; lists the packaged templates.
    """
    if os.path.exists(path):
        return path
    bare = os.path.basename(path) == path and "/" not in path
    template = resources.cluster_template(path) if bare else None
    if template is not None:
        return template
    names = ", ".join(resources.cluster_templates()) or "none"
    raise ConfigError(f"--config: cluster spec not found: {path} (no such file"
                      + (", and no packaged template of that name" if bare else "")
                      + f"); packaged templates: {names}, e.g. --config emr-batch",
                      key="config", source=path)


def load_cluster_spec(path: str, *, name: str | None = None, release_label: str | None = None,
                      instance_type: str | None = None, core_instance_count: int | None = None,
                      log_uri: str | None = None, staging_uri: str | None = None) -> ClusterSpec:
    """Load and validate a cluster spec, with command-line overrides.

    Args:
        path: the YAML file, or a packaged template's name (:func:`resolve_cluster_spec`).
        name: ``--name``: the cluster's name.
        release_label: ``--release-label``, such as ``emr-7.1.0``.
        instance_type: ``--instance-type``: the type of every instance group (or of the
            MASTER and CORE instance fleets, which then offer only this type).
        core_instance_count: ``--core-instance-count``: instances of the CORE group (or
            on-demand units of the CORE fleet); 0 drops the CORE group (one-node cluster).
        log_uri: ``--log-uri``: S3 URI for the cluster's logs.
        staging_uri: ``--s3-staging``: S3 URI for the wheel, bootstrap scripts and jobs.

    Returns:
        The validated :class:`ClusterSpec`.

    Raises:
        ConfigError: a wrong field, named with its ``file:line`` or option.
    """
    data, smap = load_yaml_with_marks(resolve_cluster_spec(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{smap.where(())}: expected a mapping (an EMR cluster spec), "
                          f"got {type(data).__name__}", source=path)
    data = json.loads(json.dumps(data, default=str))      # private deep copy, dates as text
    over: dict = {}

    def put(key: str, value: Any, option: str) -> None:
        if value is not None:
            data[key] = value
            over[(key,)] = option

    put("name", name, "--name")
    put("release_label", release_label, "--release-label")
    put("log_uri", log_uri, "--log-uri")
    put("staging_uri", staging_uri, "--s3-staging")
    groups = data.get("instance_groups")
    fleets = data.get("instance_fleets")
    if instance_type is not None:
        if not INSTANCE_TYPE_RE.match(instance_type):
            raise ConfigError(f"--instance-type: expected an EC2 instance type such as m5.xlarge, "
                              f"got {instance_type!r}", key="instance_type", source="--instance-type")
        for i, g in enumerate(groups if isinstance(groups, list) else []):
            if isinstance(g, dict):
                g["instance_type"] = instance_type
                over[("instance_groups", i)] = "--instance-type"
        for i, f in enumerate(fleets if isinstance(fleets, list) else []):
            if isinstance(f, dict) and f.get("role") in ("MASTER", "CORE"):
                f["instance_types"] = [{"instance_type": instance_type}]
                over[("instance_fleets", i)] = "--instance-type"
    if core_instance_count is not None:
        if isinstance(core_instance_count, bool) or not isinstance(core_instance_count, int) \
                or core_instance_count < 0:
            raise ConfigError(f"--core-instance-count: expected an integer >= 0, got "
                              f"{core_instance_count!r}", key="core_instance_count",
                              source="--core-instance-count")
        if isinstance(groups, list):
            for g in list(groups):
                if isinstance(g, dict) and g.get("role") == "CORE":
                    if core_instance_count == 0:
                        groups.remove(g)
                    else:
                        g["count"] = core_instance_count
                        over[("instance_groups", groups.index(g))] = "--core-instance-count"
        if isinstance(fleets, list):
            for i, f in enumerate(fleets):
                if isinstance(f, dict) and f.get("role") == "CORE":
                    f["on_demand_capacity"] = core_instance_count
                    over[("instance_fleets", i)] = "--core-instance-count"
    return validate_spec(ClusterSpec(data, smap, over))


# --------------------------------------------------------------------------- building requests

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


@dataclass
class Staging:
    """What a cluster needs in S3 and where it goes.

    Every local file is checked when its upload is planned, and all of them again just before
    the first upload (:meth:`check`), so a missing file stops everything before S3 holds any
    of them.

    Attributes:
        uri: the staging prefix, ``s3://bucket/prefix``.
        uploads: ``(local path, s3 uri)`` pairs to upload before RunJobFlow.
        wheel_uri: what the bootstrap action installs: the emrflow wheel's S3 URI, or the
            requirement ``emrflow==X.Y.Z`` (installed from the package index, ``--wheel index``).
    """

    uri: str
    uploads: list[tuple[str, str]] = field(default_factory=list)
    wheel_uri: str = ""

    def child(self, *parts: str) -> str:
        """Return ``<uri>/<parts...>``."""
        return "/".join([self.uri.rstrip("/"), *parts])

    def add(self, local: str, *parts: str, what: str = "file") -> str:
        """Plan the upload of ``local`` to ``<uri>/<parts...>``; return that URI.

        Args:
            local: the local file.
            *parts: the key's parts below the staging prefix.
            what: what the file is (``bootstrap script``), for the error message.

        Raises:
            ConfigError: ``local`` is not a file.
        """
        if not os.path.isfile(local):
            raise ConfigError(f"{what} not found: {local} (nothing was uploaded)", source=local)
        uri = self.child(*parts)
        if (local, uri) not in self.uploads:
            self.uploads.append((local, uri))
        return uri

    def add_wheel(self, wheel: str, where: str = "--wheel") -> str:
        """Plan a wheel's upload under a content-addressed key and make it the one installed.

        Args:
            wheel: the local wheel file.
            where: where it came from (``--wheel``), for error messages.

        Returns:
            Its S3 URI, ``<uri>/wheels/<first 16 hex digits of its SHA-256>/<file name>``: the
            same build always has the same key, a different build never does, so nodes added
            later install exactly this build. The file name stays as it is, so pip takes it.

        Raises:
            ConfigError: not a file, or not named like a wheel.
        """
        check_wheel_name(wheel, where)
        if not os.path.isfile(wheel):
            raise ConfigError(f"{where}: wheel not found: {wheel}", source=where)
        self.wheel_uri = self.add(wheel, "wheels", wheel_digest(wheel), os.path.basename(wheel),
                                  what="wheel")
        return self.wheel_uri

    def check(self) -> None:
        """Check that every planned local file still exists.

        Raises:
            ConfigError: naming every missing file (nothing was uploaded).
        """
        missing = [local for local, _ in self.uploads if not os.path.isfile(local)]
        if missing:
            raise ConfigError(f"file{'s' if len(missing) > 1 else ''} to stage not found: "
                              f"{', '.join(missing)} (nothing was uploaded)", source=missing[0])

    def add_job(self, job: str) -> str:
        """Plan a job script's upload under ``jobs/<content hash>/``.

        Args:
            job: a local script, or an ``s3://`` URI (kept as it is, nothing uploaded).

        Returns:
            The script's S3 URI, ``<uri>/jobs/<first 12 hex digits of its SHA-256>/<name>``.

        Raises:
            ConfigError: the local script does not exist, or a malformed S3 URI.
        """
        if job.startswith("s3://"):
            return check_s3_uri(job, "JOB", "job script", key_required=True)
        if not os.path.isfile(job):
            raise ConfigError(f"job script not found: {job}", source="JOB")
        with open(job, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        return self.add(job, "jobs", digest, os.path.basename(job), what="job script")


def _encode_classification(cl: dict) -> str:
    text = yaml.safe_dump({str(k): v for k, v in (cl.get("Properties") or {}).items()},
                           sort_keys=True, default_flow_style=False)
    return base64.b64encode(text.encode()).decode()


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
        ConfigError: a bootstrap script or a local job script of the spec's ``steps`` is missing.
        ResourceNotFoundError: the install has no ``bootstrap/`` at all.
    """
    d = spec.data
    apps = ["Hadoop"] + [a for a in d.get("applications", []) if a != "Hadoop"]
    # emrflow's own classifications never go to EMR (it refuses them); Flink's only when the
    # cluster installs Flink. All of them configure emrflow (emr_checks.emrflow_configuration).
    consumed = EMRFLOW_CLASSIFICATIONS + (() if "Flink" in apps else FLINK_CLASSIFICATIONS)
    emr_conf = emr_checks.emr_properties([cl for cl in d.get("configurations", [])
                                          if cl["Classification"] not in consumed])
    own_conf, own_log, _ = emr_checks.emrflow_configuration(
        d.get("configurations", []), lambda path: spec.where(("configurations", *path)), warn=lambda m: None)
    bootstrap_dir = bootstrap_dir or resources.resource_dir("bootstrap")
    install = staging.add(os.path.join(bootstrap_dir, "install-emrflow.sh"), "bootstrap", "install-emrflow.sh",
                          what="emrflow's bootstrap script")
    actions = [{"Name": "install emrflow",
                "ScriptBootstrapAction": {"Path": install, "Args": [staging.wheel_uri]}}]
    # always written, empty when the spec configures nothing: the `emrflow` wrapper points
    # EMRFLOW_CONF_DIR at it, and a step must find emrflow-conf.yaml there
    write = staging.add(os.path.join(bootstrap_dir, "write-emrflow-conf.sh"), "bootstrap",
                        "write-emrflow-conf.sh", what="emrflow's bootstrap script")
    args = ["--conf-b64", _encode_classification({"Properties": own_conf})]
    if own_log:
        args += ["--log-b64", _encode_classification({"Properties": own_log})]
    actions.append({"Name": "write emrflow configuration",
                    "ScriptBootstrapAction": {"Path": write, "Args": args}})
    for ba in d.get("bootstrap_actions", []) or []:
        actions.append({"Name": ba["name"], "ScriptBootstrapAction": {
            "Path": ba["path"], "Args": [str(a) for a in ba.get("args", [])]}})
    ec2 = d.get("ec2", {})
    instances: dict[str, Any] = {}
    if "instance_groups" in d:
        instances["InstanceGroups"] = [_instance_group(g) for g in d["instance_groups"]]
    else:
        instances["InstanceFleets"] = [_instance_fleet(f) for f in d["instance_fleets"]]
    for key, name in (("key_name", "Ec2KeyName"), ("subnet_id", "Ec2SubnetId"),
                      ("master_security_group", "EmrManagedMasterSecurityGroup"),
                      ("slave_security_group", "EmrManagedSlaveSecurityGroup"),
                      ("subnet_ids", "Ec2SubnetIds"),
                      ("additional_master_security_groups", "AdditionalMasterSecurityGroups"),
                      ("additional_slave_security_groups", "AdditionalSlaveSecurityGroups")):
        if ec2.get(key):
            instances[name] = ec2[key]
    keep_alive = False if transient else bool(d.get("keep_alive", True))
    instances["KeepJobFlowAliveWhenNoSteps"] = keep_alive
    instances["TerminationProtected"] = bool(d.get("termination_protected", False)) and not transient
    all_steps = []
    for st in d.get("steps", []) or []:
        dyn = [f"{k}={v}" for k, v in (st.get("dynamic") or {}).items()]
        all_steps.append(emrflow_step(staging.add_job(st["job"]), [str(a) for a in st.get("args", [])],
                                      name=st.get("name"), parallelism=st.get("parallelism"),
                                      dynamic=dyn, action_on_failure=st.get("action_on_failure",
                                                                            "CONTINUE")))
    all_steps += steps or []
    request: dict[str, Any] = {
        "Name": d["name"], "ReleaseLabel": d["release_label"],
        "Applications": [{"Name": a} for a in apps],
        "Instances": instances,
        "BootstrapActions": actions,
        "ServiceRole": d.get("service_role", DEFAULT_SERVICE_ROLE),
        "JobFlowRole": d.get("job_flow_role", DEFAULT_JOB_FLOW_ROLE),
        "VisibleToAllUsers": True,
        "Tags": [{"Key": str(k), "Value": str(v)} for k, v in (d.get("tags") or {}).items()],
    }
    if emr_conf:
        request["Configurations"] = emr_conf
    if d.get("log_uri"):
        request["LogUri"] = d["log_uri"]
    if all_steps:
        request["Steps"] = all_steps
    if d.get("step_concurrency_level"):
        request["StepConcurrencyLevel"] = d["step_concurrency_level"]
    if keep_alive and d.get("idle_timeout"):
        request["AutoTerminationPolicy"] = {"IdleTimeout": d["idle_timeout"]}
    if d.get("security_configuration"):
        request["SecurityConfiguration"] = d["security_configuration"]
    if d.get("managed_scaling"):
        m = d["managed_scaling"]
        limits = {"UnitType": m.get("unit_type", "Instances"),
                  "MinimumCapacityUnits": m["minimum_capacity_units"],
                  "MaximumCapacityUnits": m["maximum_capacity_units"]}
        for key, name in (("maximum_on_demand_capacity_units", "MaximumOnDemandCapacityUnits"),
                          ("maximum_core_capacity_units", "MaximumCoreCapacityUnits")):
            if key in m:
                limits[name] = m[key]
        request["ManagedScalingPolicy"] = {"ComputeLimits": limits}
    return emr_checks.validate_request("RunJobFlow", request)


def _ebs(size_gb: int | None) -> dict:
    if not size_gb:
        return {}
    return {"EbsConfiguration": {"EbsBlockDeviceConfigs": [
        {"VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": size_gb}, "VolumesPerInstance": 1}]}}


def _instance_group(g: dict) -> dict:
    out = {"Name": g.get("name", g["role"].capitalize()), "InstanceRole": g["role"],
           "Market": g.get("market", "ON_DEMAND"), "InstanceType": g["instance_type"],
           "InstanceCount": g["count"]}
    if g.get("bid_price") is not None:
        out["BidPrice"] = str(g["bid_price"])
    out.update(_ebs(g.get("ebs_size_gb")))
    return out


def _instance_fleet(f: dict) -> dict:
    out: dict[str, Any] = {"Name": f.get("name", f["role"].capitalize()), "InstanceFleetType": f["role"],
                           "TargetOnDemandCapacity": f.get("on_demand_capacity", 0),
                           "TargetSpotCapacity": f.get("spot_capacity", 0), "InstanceTypeConfigs": []}
    for t in f["instance_types"]:
        cfg = {"InstanceType": t["instance_type"], "WeightedCapacity": t.get("weight", 1)}
        if "bid_percent" in t:
            cfg["BidPriceAsPercentageOfOnDemandPrice"] = float(t["bid_percent"])
        cfg.update(_ebs(t.get("ebs_size_gb")))
        out["InstanceTypeConfigs"].append(cfg)
    spot = f.get("spot")
    if spot:
        s: dict[str, Any] = {}
        if "timeout_minutes" in spot:
            s["TimeoutDurationMinutes"] = spot["timeout_minutes"]
            s["TimeoutAction"] = spot.get("timeout_action", "SWITCH_TO_ON_DEMAND")
        if "allocation_strategy" in spot:
            s["AllocationStrategy"] = spot["allocation_strategy"]
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


# --------------------------------------------------------------------------- the wheel

def expected_wheel_name() -> str:
    """Return the file name ``pip wheel`` gives this version's wheel (``emrflow-X.Y.Z-py3-none-any.whl``)."""
    from emrflow import __version__
    return f"emrflow-{__version__}-py3-none-any.whl"


def plan_staging(spec: ClusterSpec, staging_uri: str | None, wheel: str | None, work_dir: str | None,
                 dry_run: bool = False) -> Staging:
    """Decide the staging prefix and the emrflow the nodes install.

    emrflow stages itself (:func:`emrflow.deploy.wheel.self_wheel`): an installed emrflow is
    repacked into a wheel, a source checkout built with pip; ``wheel`` (``--wheel``, or the
    spec's ``wheel``) overrides that with a built wheel (a local file or an ``s3://`` URI), or
    with ``index``: the nodes install ``emrflow==<this version>`` from the package index (their
    pip's, e.g. a mirror in ``/etc/pip.conf``). A local wheel goes under a content-addressed
    key, ``wheels/<sha256 prefix>/<file name>``.

    Args:
        spec: the cluster spec (its ``staging_uri`` and ``wheel`` are the defaults).
        staging_uri: ``--s3-staging``, overriding the spec.
        wheel: ``--wheel``: a built wheel (path or s3:// URI) or ``index``, overriding the
            spec, or ``None`` to stage this emrflow.
        work_dir: directory for the wheel made here (a temporary one when ``None``).
        dry_run: build nothing: the key of a wheel made here shows ``<sha256>`` for its digest.

    Returns:
        The :class:`Staging` plan: prefix, wheel URI and the uploads planned so far.

    Raises:
        ConfigError: no staging URI, a bad or missing wheel, or the wheel could not be made.
    """
    uri = staging_uri or spec.get("staging_uri")
    if not uri:
        raise ConfigError(f"{spec.where(('staging_uri',))}: staging_uri: expected an S3 URI "
                          "s3://bucket[/prefix] (or --s3-staging) for the wheel, bootstrap scripts "
                          "and jobs, got nothing", key="staging_uri", source=spec.source.file)
    check_s3_uri(uri, "--s3-staging" if staging_uri else spec.where(("staging_uri",)), "staging_uri")
    staging = Staging(uri)
    where = "--wheel" if wheel else spec.where(("wheel",))
    wheel = wheel or spec.get("wheel")
    if wheel == WHEEL_FROM_INDEX:
        from emrflow import __version__
        staging.wheel_uri = f"emrflow=={__version__}"
    elif wheel and wheel.startswith("s3://"):
        staging.wheel_uri = check_wheel_name(check_s3_uri(wheel, where, "wheel", key_required=True), where)
    elif wheel:
        if not (os.path.isfile(wheel) and wheel.endswith(".whl")):
            raise ConfigError(f"{where}: expected a .whl file, an s3:// URI or {WHEEL_FROM_INDEX}, "
                              f"got {wheel!r}" + ("" if os.path.exists(wheel) else " (no such file)"),
                              source=where)
        staging.add_wheel(wheel, where)
    elif dry_run:
        staging.wheel_uri = staging.child("wheels", DIGEST_PLACEHOLDER, expected_wheel_name())
    else:
        staging.add_wheel(self_wheel(work_dir or tempfile.mkdtemp(prefix="emrflow-wheel-")), "the staged emrflow")
    return staging


# --------------------------------------------------------------------------- AWS access

@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Translate botocore errors raised inside into :class:`ClusterError` (the one boundary).

    Args:
        action: what was being done (``"RunJobFlow"``), for the message.

    boto3's S3 transfer manager (``upload_file``/``download_file``) wraps the
    ClientError of a failed upload in ``boto3.exceptions.S3UploadFailedError``;
    the ClientError it wraps (its ``__context__``) gives the AWS code.

    Raises:
        ClusterError: with ``code`` (the AWS error code, such as ``NoSuchBucket``, or the
            botocore/boto3 class name) and the AWS message.
    """
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    def translated(exc: BaseException) -> ClusterError:
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code, msg = err.get("Code", "Unknown"), err.get("Message", str(exc))
        else:
            code, msg = type(exc).__name__, str(exc)
        error = ClusterError(f"{action} failed: {code}: {msg}")
        error.code = code
        return error

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translated(exc) from None
    except Boto3Error as exc:
        cause = exc.__cause__ or exc.__context__
        raise translated(cause if isinstance(cause, ClientError) else exc) from None


class EmrSession:
    """boto3 EMR and S3 clients with adaptive retries; a context manager that closes them.

    Args:
        profile: AWS profile (``--profile``), else the standard credential chain.
        region: AWS region (``--region``), else the profile's or ``AWS_DEFAULT_REGION``.
        endpoint_url: endpoint for both services (``--endpoint-url``), else ``AWS_ENDPOINT_URL``.

    Raises:
        ConfigError: a malformed region or endpoint URL (checked before any AWS call).
    """

    def __init__(self, profile: str | None = None, region: str | None = None,
                 endpoint_url: str | None = None):
        if region is not None and not REGION_RE.match(region):
            raise ConfigError(f"--region: expected an AWS region such as us-east-1, got {region!r}",
                              source="--region")
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        if endpoint_url is not None and not re.match(r"^https?://[^\s/]+", endpoint_url):
            raise ConfigError(f"--endpoint-url: expected http(s)://host[:port], got {endpoint_url!r}",
                              source="--endpoint-url")
        self.profile, self.region, self.endpoint_url = profile, region, endpoint_url
        self._clients: dict[str, Any] = {}

    def client(self, service: str):
        """Return the (cached) boto3 client of ``service`` (``emr`` or ``s3``)."""
        if service not in self._clients:
            import boto3
            from botocore.config import Config
            with aws_errors("creating the AWS session"):
                session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
                self._clients[service] = session.client(
                    service, endpoint_url=self.endpoint_url,
                    config=Config(retries={"mode": "adaptive", "max_attempts": 10}))
        return self._clients[service]

    @property
    def emr(self):
        """The EMR client."""
        return self.client("emr")

    @property
    def s3(self):
        """The S3 client."""
        return self.client("s3")

    def close(self) -> None:
        """Close every client's connections."""
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    def __enter__(self) -> "EmrSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- S3
    def upload(self, local: str, uri: str) -> None:
        """Upload a local file to the S3 object ``uri`` (PutObject, multipart when large).

        Args:
            local: the local file.
            uri: ``s3://bucket/key``.

        Raises:
            ConfigError: ``uri`` is not an S3 URI.
            ClusterError: S3 refused, with the AWS code (``NoSuchBucket``, ``AccessDenied``...).
        """
        bucket, key = split_s3_uri(uri)
        with aws_errors(f"uploading {local} to {uri}"):
            self.s3.upload_file(local, bucket, key)

    def upload_all(self, staging: Staging, log: Callable[[str], None] = lambda s: None) -> None:
        """Upload every file ``staging`` plans, in order.

        Args:
            staging: the plan.
            log: receives a line per upload.

        Raises:
            ConfigError: a planned file is missing (checked for all before the first upload).
            ClusterError: an upload failed (the AWS code).
        """
        staging.check()
        for local, uri in staging.uploads:
            log(f"uploading {local} -> {uri}")
            self.upload(local, uri)

    def read(self, uri: str) -> bytes | None:
        """Read an S3 object (GetObject).

        Args:
            uri: ``s3://bucket/key``.

        Returns:
            Its bytes, or ``None`` when there is no such key.

        Raises:
            ClusterError: any other S3 error (a missing bucket, access denied...).
        """
        from botocore.exceptions import ClientError
        bucket, key = split_s3_uri(uri)
        with aws_errors(f"reading {uri}"):
            try:
                obj = self.s3.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            with contextlib.closing(obj["Body"]) as body:
                return body.read()


def fetch_job_script(uri: str, dest_dir: str, session: EmrSession | None = None) -> str:
    """Download a job script from S3 (``emrflow run s3://bucket/job.py``).

    Args:
        uri: ``s3://bucket/key/job.py``.
        dest_dir: local directory to put it in (created if missing).
        session: the AWS session to use, else one from the standard chain and ``AWS_ENDPOINT_URL``.

    Returns:
        The local path, ``dest_dir/<file name>``.

    Raises:
        ConfigError: ``uri`` is not an S3 object URI.
        ClusterError: S3 refused (the AWS error code and message), or the object is missing.
    """
    bucket, key = split_s3_uri(check_s3_uri(uri, "JOB", "job script", key_required=True))
    os.makedirs(dest_dir, exist_ok=True)
    local = os.path.join(dest_dir, os.path.basename(key))
    own = session is None
    session = session or EmrSession()
    try:
        with aws_errors(f"downloading the job script {uri}"):
            session.s3.download_file(bucket, key, local)
    finally:
        if own:
            session.close()
    return local


def upload_directory(session: EmrSession, local_dir: str, uri: str) -> list[str]:
    """Upload every file below ``local_dir`` to ``uri/<relative path>``.

    Args:
        session: the AWS session.
        local_dir: the directory.
        uri: the S3 prefix, ``s3://bucket/prefix``.

    Returns:
        The URIs written, in upload order.

    Raises:
        ConfigError: ``uri`` is not an S3 URI.
        ClusterError: an upload failed.
    """
    check_s3_uri(uri, "output", "output URI")
    out = []
    for root, _, files in os.walk(local_dir):
        for f in sorted(files):
            path = os.path.join(root, f)
            rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
            dest = f"{uri.rstrip('/')}/{rel}"
            session.upload(path, dest)
            out.append(dest)
    return out


# --------------------------------------------------------------------------- cluster operations

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
    emr_checks.validate_request("RunJobFlow", request)    # before anything is uploaded
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
    emr_checks.validate_request("AddJobFlowSteps", {"JobFlowId": cluster_id, "Steps": steps})
    concurrency = describe_cluster(session, cluster_id).get("StepConcurrencyLevel", 1)
    for i, step in enumerate(steps, 1):
        emr_checks.check_action_on_failure(step["ActionOnFailure"], concurrency,
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


def step_logs(session: EmrSession, log_uri: str, cluster_id: str, step_id: str) -> StepLogs:
    """Fetch a step's log files from the cluster's log URI.

    Args:
        session: the AWS session.
        log_uri: the cluster's ``LogUri``.
        cluster_id: ``j-...``.
        step_id: ``s-...``.

    Returns:
        :class:`StepLogs` with the decompressed text of the files found (``stderr.gz`` or
        ``stderr``, and so on) and the names of those missing; and the ``stderr``/``stdout`` of
        the containers of every YARN application the step's logs name, under
        ``<log-uri>/<cluster-id>/containers/<application-id>/`` (or the prefixes without any yet).

    Raises:
        ClusterError: an S3 error other than a missing key.
    """
    prefix = step_log_prefix(log_uri, cluster_id, step_id)
    logs = StepLogs(prefix)
    for name in STEP_LOG_FILES:
        data = session.read(prefix + name + ".gz")
        if data is None:
            data = session.read(prefix + name)
        if data is None:
            logs.missing.append(name)
        else:
            logs.files[name] = decode_log(data)
    for app_id in logs.applications():
        app_prefix = container_log_prefix(log_uri, cluster_id, app_id)
        bucket, key = split_s3_uri(app_prefix)
        with aws_errors(f"listing {app_prefix}"):
            pages = session.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        wanted = [k for k in keys if k.rsplit("/", 1)[-1] in ("stderr", "stderr.gz", "stdout", "stdout.gz")]
        if not wanted:
            logs.containers_missing.append(app_prefix)
        for k in sorted(wanted):
            data = session.read(f"s3://{bucket}/{k}")
            if data is not None:
                logs.containers[f"s3://{bucket}/{k}"] = decode_log(data)
    return logs


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
    step = steps[index - 1] if index else {"Name": step_id, "Status": {}}
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


def with_overrides(spec: ClusterSpec, **data: Any) -> ClusterSpec:
    """Return ``spec`` with top-level fields replaced (programmatic use), re-validated.

    Args:
        spec: the spec.
        **data: top-level fields (``name=``, ``log_uri=``...) and their new values.

    Returns:
        A new :class:`ClusterSpec`; ``spec`` is unchanged.

    Raises:
        ConfigError: a new value is invalid.
    """
    return validate_spec(replace(spec, data={**spec.data, **data}))
