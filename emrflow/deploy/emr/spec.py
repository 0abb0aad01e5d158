"""Cluster specs: typed, frozen objects, each validating its own keys and naming where they were set.

A cluster spec is a YAML file (``configs/emr-*.yaml``). :func:`load_cluster_spec` reads it with
the line of every value (:class:`~emrflow.deploy.emr.source.SourceMap`), applies the
command-line overrides and builds a :class:`ClusterSpec` with :meth:`ClusterSpec.from_dict`,
which hands each part to its own class: :class:`InstanceGroup`, :class:`InstanceFleet` (with
:class:`InstanceTypeConfig` and :class:`SpotProvisioning`), :class:`Ec2Attributes`,
:class:`Classification`, :class:`BootstrapAction`, :class:`StepSpec`, :class:`ManagedScaling`.
Every ``from_dict`` takes the mapping and where it came from (an
:class:`~emrflow.deploy.emr.source.Origin`, or just a file name), refuses unknown keys and wrong
values with a :class:`~emrflow.errors.ConfigError` that names the key path and its ``file:line``
(or the overriding command-line option), and returns a frozen object: nothing after validation
sees raw YAML. (The shape of skein's ``model.py``: one class per part, ``from_dict`` with
``_check_keys``.)
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from emrflow import resources
from emrflow.deploy.emr import checks
from emrflow.deploy.emr.source import Origin, SourceMap, load_yaml_with_marks
from emrflow.errors import ConfigError

ROLES = ("MASTER", "CORE", "TASK")
MARKETS = ("ON_DEMAND", "SPOT")
RELEASE_LABEL_RE = re.compile(r"^emr-\d+\.\d+\.\d+$")
INSTANCE_TYPE_RE = re.compile(
    r"^[a-z][a-z0-9-]*\d[a-z0-9-]*\.(nano|micro|small|medium|\d*x?large|metal(-\d+xl)?)$")
BID_PRICE_RE = re.compile(r"^\d+(\.\d+)?$")
_ROLE_RE = re.compile("^(MASTER|CORE|TASK)$")
_MARKET_RE = re.compile("^(ON_DEMAND|SPOT)$")
_CLASSIFICATION_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_TIMEOUT_ACTION_RE = re.compile("^(SWITCH_TO_ON_DEMAND|TERMINATE_CLUSTER)$")
_ALLOCATION_RE = re.compile("^(capacity-optimized|price-capacity-optimized|lowest-price|"
                            "diversified|capacity-optimized-prioritized)$")
_ACTION_ON_FAILURE_RE = re.compile("^(CONTINUE|CANCEL_AND_WAIT|TERMINATE_CLUSTER)$")
_UNIT_TYPE_RE = re.compile("^(Instances|InstanceFleetUnits|VCPU)$")
_SECURITY_CONFIGURATION_RE = re.compile(r"^[\w.+=@-]{1,10280}$")

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
_CLASSIFICATION_KEYS = {"Classification", "Properties", "Configurations"}
_BA_KEYS = {"name", "path", "args"}
_STEP_KEYS = {"name", "job", "args", "parallelism", "dynamic", "action_on_failure"}
_SCALING_KEYS = {"unit_type", "minimum_capacity_units", "maximum_capacity_units",
                 "maximum_on_demand_capacity_units", "maximum_core_capacity_units"}


def _frozen(mapping: Mapping) -> Mapping:
    return MappingProxyType(dict(mapping))


def _some(**fields: Any) -> dict:
    """The fields that are set (not ``None``), for ``to_dict``."""
    return {k: v for k, v in fields.items() if v is not None}


# --------------------------------------------------------------------------- instance groups and fleets

@dataclass(frozen=True)
class InstanceGroup:
    """One instance group (``instance_groups[i]``): EMR's InstanceGroupConfig.

    Attributes:
        role: MASTER, CORE or TASK.
        instance_type: the EC2 instance type (``m5.xlarge``).
        count: instances: MASTER 1 or 3 (high availability), CORE and TASK >= 0.
        name: the group's name, or ``None`` for the role's (``Core``).
        market: ON_DEMAND or SPOT.
        bid_price: Spot bid in USD per instance-hour (its text), only with SPOT; ``None``: up
            to the On-Demand price.
        ebs_size_gb: one gp3 EBS volume of this size per instance (GiB, 1..16384), or ``None``.
    """

    role: str
    instance_type: str
    count: int
    name: str | None = None
    market: str = "ON_DEMAND"
    bid_price: str | None = None
    ebs_size_gb: int | None = None

    @classmethod
    def from_dict(cls, data: Any, where: Origin | str) -> InstanceGroup:
        """Validate one ``instance_groups`` entry.

        Args:
            data: the entry's mapping (keys ``role``, ``name``, ``instance_type``, ``count``,
                ``market``, ``bid_price``, ``ebs_size_gb``).
            where: the entry's :class:`Origin` (or the spec file's name).

        Returns:
            The group.

        Raises:
            ConfigError: an unknown key or a wrong value, naming its key path and ``file:line``.
        """
        o = Origin.of(where)
        o.keys(data, (), _GROUP_KEYS, "instance_groups")
        role = o.string(data.get("role"), ("role",), _ROLE_RE, "MASTER, CORE or TASK")
        instance_type = o.string(data.get("instance_type"), ("instance_type",), INSTANCE_TYPE_RE,
                                 "an EC2 instance type such as m5.xlarge")
        count = o.integer(data.get("count"), ("count",), 1 if role == "MASTER" else 0,
                          3 if role == "MASTER" else None)
        if role == "MASTER" and count == 2:
            o.fail(("count",), "1 or 3 (3: high availability)", 2)
        market = data.get("market", "ON_DEMAND")
        o.string(market, ("market",), _MARKET_RE, "ON_DEMAND or SPOT")
        bid_price = None
        if "bid_price" in data:
            if market != "SPOT":
                o.fail(("bid_price",), "bid_price only with market: SPOT", data["bid_price"])
            bid_price = o.string(str(data["bid_price"]), ("bid_price",), BID_PRICE_RE, "a price in USD")
        ebs = o.integer(data["ebs_size_gb"], ("ebs_size_gb",), 1, 16384) if "ebs_size_gb" in data else None
        return cls(role=role, instance_type=instance_type, count=count, name=data.get("name"),
                   market=market, bid_price=bid_price, ebs_size_gb=ebs)

    def to_dict(self) -> dict:
        """Return the entry as the spec writes it (unset fields left out)."""
        return _some(role=self.role, name=self.name, instance_type=self.instance_type, count=self.count,
                     market=self.market, bid_price=self.bid_price, ebs_size_gb=self.ebs_size_gb)


@dataclass(frozen=True)
class InstanceTypeConfig:
    """One instance type a fleet offers (``instance_fleets[i].instance_types[j]``).

    Attributes:
        instance_type: the EC2 instance type.
        weight: units of the fleet's capacity one instance counts for (>= 1).
        bid_percent: Spot bid as a percentage of the On-Demand price (1..1000), or ``None``.
        ebs_size_gb: one gp3 EBS volume of this size per instance (GiB), or ``None``.
    """

    instance_type: str
    weight: int = 1
    bid_percent: int | None = None
    ebs_size_gb: int | None = None

    @classmethod
    def from_dict(cls, data: Any, where: Origin | str) -> InstanceTypeConfig:
        """Validate one entry of a fleet's ``instance_types``.

        Raises:
            ConfigError: an unknown key or a wrong value, naming its key path and ``file:line``.
        """
        o = Origin.of(where)
        o.keys(data, (), _FLEET_TYPE_KEYS, "an instance type config")
        instance_type = o.string(data.get("instance_type"), ("instance_type",), INSTANCE_TYPE_RE,
                                 "an EC2 instance type such as m5.xlarge")
        weight = o.integer(data["weight"], ("weight",), 1) if "weight" in data else 1
        bid = o.integer(data["bid_percent"], ("bid_percent",), 1, 1000) if "bid_percent" in data else None
        ebs = o.integer(data["ebs_size_gb"], ("ebs_size_gb",), 1, 16384) if "ebs_size_gb" in data else None
        return cls(instance_type=instance_type, weight=weight, bid_percent=bid, ebs_size_gb=ebs)

    def to_dict(self) -> dict:
        """Return the entry as the spec writes it."""
        return _some(instance_type=self.instance_type, weight=self.weight, bid_percent=self.bid_percent,
                     ebs_size_gb=self.ebs_size_gb)


@dataclass(frozen=True)
class SpotProvisioning:
    """A fleet's Spot options (``instance_fleets[i].spot``): EMR's SpotProvisioningSpecification.

    Attributes:
        timeout_minutes: how long to wait for Spot capacity (5..1440 minutes).
        timeout_action: then SWITCH_TO_ON_DEMAND or TERMINATE_CLUSTER.
        allocation_strategy: such as ``price-capacity-optimized``, or ``None``.
    """

    timeout_minutes: int
    timeout_action: str = "SWITCH_TO_ON_DEMAND"
    allocation_strategy: str | None = None

    @classmethod
    def from_dict(cls, data: Any, where: Origin | str) -> SpotProvisioning:
        """Validate a fleet's ``spot`` block.

        Raises:
            ConfigError: an unknown key, no ``timeout_minutes`` (EMR requires it) or a wrong
                value, naming its key path and ``file:line``.
        """
        o = Origin.of(where)
        o.keys(data, (), _SPOT_KEYS, "Spot options")
        if "timeout_minutes" not in data:     # EMR's SpotProvisioningSpecification requires it
            o.fail(("timeout_minutes",), "timeout_minutes (5..1440) in a spot block: how long to wait "
                   "for Spot capacity, then timeout_action (default SWITCH_TO_ON_DEMAND)", "nothing")
        minutes = o.integer(data["timeout_minutes"], ("timeout_minutes",), 5, 1440)
        action = "SWITCH_TO_ON_DEMAND"
        if "timeout_action" in data:
            action = o.string(data["timeout_action"], ("timeout_action",), _TIMEOUT_ACTION_RE,
                              "SWITCH_TO_ON_DEMAND or TERMINATE_CLUSTER")
        strategy = None
        if "allocation_strategy" in data:
            strategy = o.string(data["allocation_strategy"], ("allocation_strategy",), _ALLOCATION_RE,
                                "an allocation strategy such as price-capacity-optimized")
        return cls(timeout_minutes=minutes, timeout_action=action, allocation_strategy=strategy)

    def to_dict(self) -> dict:
        """Return the block as the spec writes it."""
        return _some(timeout_minutes=self.timeout_minutes, timeout_action=self.timeout_action,
                     allocation_strategy=self.allocation_strategy)


@dataclass(frozen=True)
class InstanceFleet:
    """One instance fleet (``instance_fleets[i]``): EMR's InstanceFleetConfig.

    Attributes:
        role: MASTER, CORE or TASK.
        instance_types: the instance types offered (1..30).
        name: the fleet's name, or ``None`` for the role's.
        on_demand_capacity: target On-Demand capacity (units of ``weight``).
        spot_capacity: target Spot capacity.
        spot: Spot options, or ``None``.
    """

    role: str
    instance_types: tuple[InstanceTypeConfig, ...]
    name: str | None = None
    on_demand_capacity: int = 0
    spot_capacity: int = 0
    spot: SpotProvisioning | None = None

    @classmethod
    def from_dict(cls, data: Any, where: Origin | str) -> InstanceFleet:
        """Validate one ``instance_fleets`` entry.

        Args:
            data: the entry's mapping (keys ``role``, ``name``, ``on_demand_capacity``,
                ``spot_capacity``, ``instance_types``, ``spot``).
            where: the entry's :class:`Origin` (or the spec file's name).

        Returns:
            The fleet.

        Raises:
            ConfigError: an unknown key or a wrong value (a MASTER fleet's capacity other than
                1), naming its key path and ``file:line``.
        """
        o = Origin.of(where)
        o.keys(data, (), _FLEET_KEYS, "instance_fleets")
        role = o.string(data.get("role"), ("role",), _ROLE_RE, "MASTER, CORE or TASK")
        on_demand = o.integer(data.get("on_demand_capacity", 0), ("on_demand_capacity",), 0)
        spot_capacity = o.integer(data.get("spot_capacity", 0), ("spot_capacity",), 0)
        if role == "MASTER" and on_demand + spot_capacity != 1:
            o.fail(("on_demand_capacity",), "a MASTER fleet of capacity 1", on_demand + spot_capacity)
        types = data.get("instance_types")
        if not isinstance(types, list) or not types or len(types) > 30:
            o.fail(("instance_types",), "a list of 1 to 30 instance types", types)
        configs = tuple(InstanceTypeConfig.from_dict(t, o.child("instance_types", j))
                        for j, t in enumerate(types))
        spot = SpotProvisioning.from_dict(data["spot"], o.child("spot")) if "spot" in data else None
        return cls(role=role, instance_types=configs, name=data.get("name"), on_demand_capacity=on_demand,
                   spot_capacity=spot_capacity, spot=spot)

    def to_dict(self) -> dict:
        """Return the entry as the spec writes it."""
        return _some(role=self.role, name=self.name, on_demand_capacity=self.on_demand_capacity,
                     spot_capacity=self.spot_capacity,
                     instance_types=[t.to_dict() for t in self.instance_types],
                     spot=self.spot.to_dict() if self.spot else None)


@dataclass(frozen=True)
class Ec2Attributes:
    """Where the instances run (``ec2``): key pair, subnets, security groups.

    Attributes:
        key_name: the EC2 key pair, or ``None``.
        subnet_id: one subnet (instance groups), or ``None``.
        subnet_ids: subnets to choose from (instance fleets), or ``None``.
        master_security_group: EMR-managed security group of the primary node, or ``None``.
        slave_security_group: EMR-managed security group of core and task nodes, or ``None``.
        additional_master_security_groups: more groups for the primary node, or ``None``.
        additional_slave_security_groups: more groups for core and task nodes, or ``None``.
    """

    key_name: str | None = None
    subnet_id: str | None = None
    subnet_ids: tuple[str, ...] | None = None
    master_security_group: str | None = None
    slave_security_group: str | None = None
    additional_master_security_groups: tuple[str, ...] | None = None
    additional_slave_security_groups: tuple[str, ...] | None = None

    @classmethod
    def from_dict(cls, data: Any, where: Origin | str) -> Ec2Attributes:
        """Validate the ``ec2`` block.

        Raises:
            ConfigError: an unknown key or a wrong value, naming its key path and ``file:line``.
        """
        o = Origin.of(where)
        o.keys(data, (), _EC2_KEYS, "EC2 attributes")
        values: dict[str, Any] = {}
        for k in ("key_name", "subnet_id", "master_security_group", "slave_security_group"):
            if k in data:
                values[k] = o.string(data[k], (k,))
        for k in ("subnet_ids", "additional_master_security_groups", "additional_slave_security_groups"):
            if k in data:
                values[k] = tuple(o.str_list(data[k], (k,)))
        return cls(**values)

    def to_dict(self) -> dict:
        """Return the block as the spec writes it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items() if v is not None}


# --------------------------------------------------------------------------- configurations

@dataclass(frozen=True)
class Classification:
    """A configuration classification (``configurations[i]``), in EMR's shape.

    Attributes:
        classification: its name (``yarn-site``, ``emrflow-conf``...).
        properties: property name to value (scalars as written), or ``None`` when the spec
            gives no ``Properties``.
        configurations: nested classifications, or ``None`` when the spec gives no
            ``Configurations``.
    """

    classification: str
    properties: Mapping[str, Any] | None = None
    configurations: tuple[Classification, ...] | None = None

    @classmethod
    def from_dict(cls, data: Any, where: Origin | str) -> Classification:
        """Validate one classification ``{Classification, Properties, Configurations}``.

        An ``emrflow-conf`` classification's properties are checked as emrflow's options.

        Raises:
            ConfigError: an unknown key, a bad name, a nested or empty property value, or an
                ``emrflow-conf`` value emrflow refuses, naming its key path and ``file:line``.
        """
        o = Origin.of(where)
        o.keys(data, (), _CLASSIFICATION_KEYS,
               "a configuration classification {Classification, Properties, Configurations}")
        name = o.string(data.get("Classification"), ("Classification",), _CLASSIFICATION_RE,
                        "a classification name such as yarn-site")
        props = data.get("Properties", {})
        if not isinstance(props, dict):
            o.fail(("Properties",), "a mapping of property names to values", props)
        for k, v in props.items():
            if isinstance(v, (dict, list)) or v is None:
                o.fail(("Properties", str(k)), "a string, number or boolean", v)
        nested = None
        if "Configurations" in data:
            nested = classifications_from_list(data["Configurations"], o.child("Configurations"))
        if name == "emrflow-conf":
            from emrflow.config import Configuration
            try:
                Configuration.from_dict({str(k): v for k, v in props.items()}, source=o.where("Properties"))
            except ConfigError as exc:
                at = o.where("Properties", str(exc.key or ""))
                raise ConfigError(f"{at}: emrflow-conf: {exc}", key=exc.key, source=at) from None
        return cls(classification=name, properties=_frozen(props) if "Properties" in data else None,
                   configurations=nested)

    def to_dict(self) -> dict:
        """Return the classification in EMR's shape, values as the spec wrote them."""
        out: dict[str, Any] = {"Classification": self.classification}
        if self.properties is not None:
            out["Properties"] = dict(self.properties)
        if self.configurations is not None:
            out["Configurations"] = [c.to_dict() for c in self.configurations]
        return out


def classifications_from_list(value: Any, where: Origin | str) -> tuple[Classification, ...]:
    """Validate a list of configuration classifications (``configurations``, or a nested one).

    Raises:
        ConfigError: not a list, or a bad classification (:meth:`Classification.from_dict`).
    """
    o = Origin.of(where)
    if not isinstance(value, list):
        o.fail((), "a list of configuration classifications {Classification, Properties, "
                   "Configurations}", value)
    return tuple(Classification.from_dict(cl, o.child(i)) for i, cl in enumerate(value))


# --------------------------------------------------------------------------- bootstrap actions, steps

@dataclass(frozen=True)
class BootstrapAction:
    """One of the spec's own bootstrap actions (``bootstrap_actions[i]``), run after emrflow's.

    Attributes:
        name: its name.
        path: the script's ``s3://bucket/key``.
        args: its arguments (as text).
    """

    name: str
    path: str
    args: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Any, where: Origin | str) -> BootstrapAction:
        """Validate one ``bootstrap_actions`` entry ``{name, path, args}``.

        Raises:
            ConfigError: an unknown key, no name, a path that is not an S3 object URI, or
                arguments that are not a list of non-empty values, naming the key and ``file:line``.
        """
        o = Origin.of(where)
        o.keys(data, (), _BA_KEYS, "a bootstrap action {name, path, args}")
        name = o.string(data.get("name"), ("name",))
        path = o.s3(data.get("path"), ("path",), key_required=True)
        args = o.text_args(data.get("args", []), ("args",))
        return cls(name=name, path=path, args=args)

    def to_dict(self) -> dict:
        """Return the entry as the spec writes it."""
        return {"name": self.name, "path": self.path, "args": list(self.args)}


@dataclass(frozen=True)
class StepSpec:
    """A step the spec runs on its cluster (``steps[i]``): ``emrflow run`` of a job script.

    Attributes:
        job: the job script, a local path (staged) or an ``s3://`` URI.
        name: the step's name as written (not checked), or ``None`` for ``emrflow <script>``.
        args: the job's own arguments (as text).
        parallelism: ``-p``, or ``None``.
        dynamic: ``-D`` options, emrflow configuration key to value.
        action_on_failure: CONTINUE, CANCEL_AND_WAIT or TERMINATE_CLUSTER.
    """

    job: str
    name: str | None = None
    args: tuple[str, ...] = ()
    parallelism: int | None = None
    dynamic: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    action_on_failure: str = "CONTINUE"

    @classmethod
    def from_dict(cls, data: Any, where: Origin | str, *, step_concurrency_level: int = 1) -> StepSpec:
        """Validate one ``steps`` entry.

        Args:
            data: the entry's mapping (keys ``name``, ``job``, ``args``, ``parallelism``,
                ``dynamic``, ``action_on_failure``).
            where: the entry's :class:`Origin` (or the spec file's name).
            step_concurrency_level: the cluster's; above 1 EMR takes only CONTINUE.

        Returns:
            The step.

        Raises:
            ConfigError: an unknown key or a wrong value, naming its key path and ``file:line``.
        """
        o = Origin.of(where)
        o.keys(data, (), _STEP_KEYS, "a step {name, job, args, parallelism, dynamic, action_on_failure}")
        job = o.string(data.get("job"), ("job",), expected="a job script (local path or s3:// URI)")
        parallelism = o.integer(data["parallelism"], ("parallelism",), 1) if "parallelism" in data else None
        action = "CONTINUE"
        if "action_on_failure" in data:
            action = o.string(data["action_on_failure"], ("action_on_failure",), _ACTION_ON_FAILURE_RE,
                              "CONTINUE, CANCEL_AND_WAIT or TERMINATE_CLUSTER")
            checks.check_action_on_failure(action, step_concurrency_level, o.where("action_on_failure"))
        args = o.text_args(data["args"], ("args",)) if "args" in data else ()
        if "dynamic" in data and not isinstance(data["dynamic"], dict):
            o.fail(("dynamic",), "a mapping of emrflow configuration keys to values", data["dynamic"])
        return cls(job=job, name=data.get("name"), args=args, parallelism=parallelism,
                   dynamic=_frozen(data.get("dynamic") or {}), action_on_failure=action)

    def to_dict(self) -> dict:
        """Return the entry as the spec writes it."""
        return _some(name=self.name, job=self.job, args=list(self.args), parallelism=self.parallelism,
                     dynamic=dict(self.dynamic), action_on_failure=self.action_on_failure)


# --------------------------------------------------------------------------- scaling

@dataclass(frozen=True)
class ManagedScaling:
    """EMR managed scaling's compute limits (``managed_scaling``).

    Attributes:
        unit_type: Instances (instance groups), InstanceFleetUnits (instance fleets) or VCPU.
        minimum_capacity_units: the least capacity (>= 1).
        maximum_capacity_units: the most (>= the minimum).
        maximum_on_demand_capacity_units: the most On-Demand capacity (0..maximum), or ``None``.
        maximum_core_capacity_units: the most CORE capacity (1..maximum), or ``None``.
    """

    minimum_capacity_units: int
    maximum_capacity_units: int
    unit_type: str = "Instances"
    maximum_on_demand_capacity_units: int | None = None
    maximum_core_capacity_units: int | None = None

    @classmethod
    def from_dict(cls, data: Any, where: Origin | str, *, fleets: bool = False) -> ManagedScaling:
        """Validate the ``managed_scaling`` block.

        Args:
            data: its mapping.
            where: its :class:`Origin` (or the spec file's name).
            fleets: the spec has ``instance_fleets`` (which decides the unit types allowed).

        Raises:
            ConfigError: an unknown key, a unit type that does not fit the instances, a missing
                or inconsistent limit, naming its key path and ``file:line``.
        """
        o = Origin.of(where)
        o.keys(data, (), _SCALING_KEYS, "EMR managed scaling's compute limits")
        unit = data.get("unit_type", "Instances")
        o.string(unit, ("unit_type",), _UNIT_TYPE_RE, "Instances, InstanceFleetUnits or VCPU")
        if unit == "InstanceFleetUnits" and not fleets:
            o.fail(("unit_type",), "Instances or VCPU with instance_groups (InstanceFleetUnits needs "
                   "instance_fleets)", unit)
        if unit == "Instances" and fleets:
            o.fail(("unit_type",), "InstanceFleetUnits or VCPU with instance_fleets", unit)
        for k in ("minimum_capacity_units", "maximum_capacity_units"):
            if k not in data:
                o.fail((k,), f"{k}, an integer >= 1", "nothing")
        low = o.integer(data["minimum_capacity_units"], ("minimum_capacity_units",), 1)
        high = o.integer(data["maximum_capacity_units"], ("maximum_capacity_units",), low)
        limits: dict[str, Any] = {}
        for k in ("maximum_on_demand_capacity_units", "maximum_core_capacity_units"):
            if k in data:
                limits[k] = o.integer(data[k], (k,), 0 if k == "maximum_on_demand_capacity_units" else 1, high)
        return cls(minimum_capacity_units=low, maximum_capacity_units=high, unit_type=unit, **limits)

    def to_dict(self) -> dict:
        """Return the block as the spec writes it."""
        return {k: v for k, v in vars(self).items() if v is not None}


# --------------------------------------------------------------------------- the cluster spec

@dataclass(frozen=True)
class ClusterSpec:
    """A validated cluster spec, as loaded from YAML, with command-line overrides applied.

    Exactly one of ``instance_groups`` and ``instance_fleets`` is set. A field the spec leaves
    out is ``None`` (or empty); the request builder (:mod:`emrflow.deploy.emr.requests`) applies
    EMR's defaults.

    Attributes:
        name: the cluster's name.
        release_label: ``emr-X.Y.Z`` (7 or later).
        instance_groups: the instance groups, or ``None``.
        instance_fleets: the instance fleets, or ``None``.
        applications: applications besides Hadoop (which is always installed).
        log_uri: S3 URI of the cluster's logs, or ``None``.
        staging_uri: S3 URI for the wheel, bootstrap scripts and jobs, or ``None``.
        service_role: EMR's service role, or ``None`` for ``EMR_DefaultRole``.
        job_flow_role: the instances' profile, or ``None`` for ``EMR_EC2_DefaultRole``.
        keep_alive: keep the cluster when it has no steps (``None``: yes).
        idle_timeout: seconds idle before EMR ends a kept-alive cluster (60..604800), or ``None``.
        termination_protected: refuse TerminateJobFlows (``None``: no).
        step_concurrency_level: steps running at once (1..256), or ``None`` (1).
        ec2: key pair, subnets and security groups, or ``None``.
        configurations: configuration classifications, or ``None``.
        bootstrap_actions: the spec's own bootstrap actions.
        tags: tag key to value (text), or ``None``.
        steps: steps to run at creation.
        wheel: the emrflow the nodes install (path, ``s3://`` URI or ``index``), or ``None``.
        managed_scaling: managed scaling's compute limits, or ``None``.
        security_configuration: an EMR security configuration's name, or ``None``.
        emrflow_conf: emrflow's configuration for the nodes (``flink-conf`` mapped, then
            ``emrflow-conf``; :func:`emrflow.deploy.emr.checks.emrflow_configuration`).
        emrflow_log: emrflow's logging configuration for the nodes (``emrflow-log``,
            ``flink-log4j``'s root level).
        origin: where the values came from (the file's lines, the overriding options).
    """

    name: str
    release_label: str
    instance_groups: tuple[InstanceGroup, ...] | None = None
    instance_fleets: tuple[InstanceFleet, ...] | None = None
    applications: tuple[str, ...] = ()
    log_uri: str | None = None
    staging_uri: str | None = None
    service_role: str | None = None
    job_flow_role: str | None = None
    keep_alive: bool | None = None
    idle_timeout: int | None = None
    termination_protected: bool | None = None
    step_concurrency_level: int | None = None
    ec2: Ec2Attributes | None = None
    configurations: tuple[Classification, ...] | None = None
    bootstrap_actions: tuple[BootstrapAction, ...] = ()
    tags: Mapping[str, str] | None = None
    steps: tuple[StepSpec, ...] = ()
    wheel: str | None = None
    managed_scaling: ManagedScaling | None = None
    security_configuration: str | None = None
    emrflow_conf: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    emrflow_log: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    origin: Origin = field(default_factory=lambda: Origin(SourceMap("<spec>")), compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Any, where: Origin | str) -> ClusterSpec:
        """Validate a whole cluster spec before any AWS call.

        Checks the release label (``emr-X.Y.Z``, 7 or later), instance types and counts (one
        MASTER of 1 or 3 instances, at most one CORE), markets and bid prices, instance fleets
        and their Spot options, S3 URIs, roles, the idle timeout (60..604800 s), configuration
        classifications (EMR's shape; ``emrflow-conf`` keys against emrflow's own options;
        ``flink-conf`` keys emrflow has no use for are logged as warnings), managed scaling,
        the security configuration, bootstrap actions, tags and steps.

        Args:
            data: the spec's mapping (snake_case keys).
            where: its :class:`Origin` (line marks, command-line overrides) or the file's name.

        Returns:
            The spec.

        Raises:
            ConfigError: the first wrong field, with its name, ``file:line`` (or the
                overriding option), what was expected and what was found.
        """
        o = Origin.of(where)
        d = o.keys(data, (), _TOP_KEYS, "an EMR cluster spec")
        v: dict[str, Any] = {"origin": o}
        v["name"] = o.string(d.get("name"), ("name",))
        v["release_label"] = o.string(d.get("release_label"), ("release_label",), RELEASE_LABEL_RE,
                                      "a release label emr-X.Y.Z (such as emr-7.1.0)")
        checks.check_release_label(v["release_label"], o.where("release_label"))
        v["applications"] = tuple(o.str_list(d.get("applications", []), ("applications",)))
        for k in ("log_uri", "staging_uri"):
            if d.get(k) is not None:
                v[k] = o.s3(d[k], (k,))
        for k in ("service_role", "job_flow_role"):
            if k in d:
                v[k] = o.string(d[k], (k,))
        for k in ("keep_alive", "termination_protected"):
            if k in d:
                v[k] = o.boolean(d[k], (k,))
        if d.get("idle_timeout") is not None:
            v["idle_timeout"] = o.integer(d["idle_timeout"], ("idle_timeout",), 60, 604800)
        if "step_concurrency_level" in d:
            v["step_concurrency_level"] = o.integer(d["step_concurrency_level"], ("step_concurrency_level",),
                                                    1, 256)
        if "ec2" in d:
            v["ec2"] = Ec2Attributes.from_dict(d["ec2"], o.child("ec2"))
        groups, fleets = d.get("instance_groups"), d.get("instance_fleets")
        if (groups is None) == (fleets is None):
            o.fail(("instance_groups",), "exactly one of instance_groups and instance_fleets",
                   "both" if groups is not None else "neither")
        items, what = (groups, "instance_groups") if groups is not None else (fleets, "instance_fleets")
        if not isinstance(items, list) or not items:
            o.fail((what,), "a non-empty list", items)
        kind = InstanceGroup if groups is not None else InstanceFleet
        v[what] = parts = tuple(kind.from_dict(g, o.child(what, i)) for i, g in enumerate(items))
        roles = [p.role for p in parts]
        if roles.count("MASTER") != 1:
            o.fail((what,), f"exactly one MASTER entry in {what}", f"{roles.count('MASTER')} MASTER")
        if roles.count("CORE") > 1:
            o.fail((what,), "at most one CORE entry", roles.count("CORE"))
        if "configurations" in d:
            v["configurations"] = classifications_from_list(d["configurations"], o.child("configurations"))
            conf, log, _ = checks.emrflow_configuration(v["configurations"],
                                                        lambda path: o.where("configurations", *path))
            v["emrflow_conf"], v["emrflow_log"] = _frozen(conf), _frozen(log)
        if "security_configuration" in d:
            v["security_configuration"] = o.string(
                d["security_configuration"], ("security_configuration",), _SECURITY_CONFIGURATION_RE,
                "the name of an EMR security configuration")
        if "managed_scaling" in d:
            v["managed_scaling"] = ManagedScaling.from_dict(d["managed_scaling"], o.child("managed_scaling"),
                                                            fleets="instance_fleets" in d)
        v["bootstrap_actions"] = tuple(BootstrapAction.from_dict(ba, o.child("bootstrap_actions", i))
                                       for i, ba in enumerate(d.get("bootstrap_actions", []) or []))
        if "tags" in d:
            tags = d["tags"]
            if not isinstance(tags, dict):
                o.fail(("tags",), "a mapping of tag keys to values", tags)
            for k, value in tags.items():
                if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                    o.fail(("tags", str(k)), "a string", value)
            v["tags"] = _frozen({str(k): str(value) for k, value in tags.items()})
        concurrency = v.get("step_concurrency_level") or 1
        v["steps"] = tuple(StepSpec.from_dict(st, o.child("steps", i), step_concurrency_level=concurrency)
                           for i, st in enumerate(d.get("steps", []) or []))
        if "wheel" in d:
            v["wheel"] = o.string(d["wheel"], ("wheel",), expected="a wheel file path or s3:// URI")
        return cls(**v)

    def to_dict(self) -> dict:
        """Return the spec's mapping as the YAML writes it (unset fields left out)."""
        out: dict[str, Any] = _some(name=self.name, release_label=self.release_label,
                                    applications=list(self.applications), log_uri=self.log_uri,
                                    staging_uri=self.staging_uri, service_role=self.service_role,
                                    job_flow_role=self.job_flow_role, keep_alive=self.keep_alive,
                                    idle_timeout=self.idle_timeout,
                                    termination_protected=self.termination_protected,
                                    step_concurrency_level=self.step_concurrency_level,
                                    wheel=self.wheel, security_configuration=self.security_configuration)
        if self.ec2 is not None:
            out["ec2"] = self.ec2.to_dict()
        if self.instance_groups is not None:
            out["instance_groups"] = [g.to_dict() for g in self.instance_groups]
        if self.instance_fleets is not None:
            out["instance_fleets"] = [f.to_dict() for f in self.instance_fleets]
        if self.configurations is not None:
            out["configurations"] = [c.to_dict() for c in self.configurations]
        if self.managed_scaling is not None:
            out["managed_scaling"] = self.managed_scaling.to_dict()
        if self.bootstrap_actions:
            out["bootstrap_actions"] = [b.to_dict() for b in self.bootstrap_actions]
        if self.tags is not None:
            out["tags"] = dict(self.tags)
        if self.steps:
            out["steps"] = [s.to_dict() for s in self.steps]
        return out

    @property
    def source(self) -> SourceMap:
        """The YAML file's line marks."""
        return self.origin.source

    @property
    def overrides(self) -> Mapping[tuple, str]:
        """Key path to the command-line option that set it (``--release-label``)."""
        return self.origin.overrides

    def where(self, path: tuple) -> str:
        """Return where ``path`` was set: the command-line option, else ``file:line``."""
        return self.origin.where(*path)

    def get(self, key: str, default: Any = None) -> Any:
        """Return the spec's top-level field ``key``, or ``default`` when it is not set."""
        value = getattr(self, key, None) if not key.startswith("_") else None
        return default if value is None else value


def validate_spec(spec: ClusterSpec) -> ClusterSpec:
    """Check every field of ``spec`` again (:meth:`ClusterSpec.from_dict`); return it unchanged.

    Raises:
        ConfigError: the first wrong field, with its name and ``file:line`` (or option).
    """
    ClusterSpec.from_dict(spec.to_dict(), spec.origin)
    return spec


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
    return ClusterSpec.from_dict(data, Origin(smap, over))


def with_overrides(spec: ClusterSpec, **data: Any) -> ClusterSpec:
    """Return ``spec`` with top-level fields replaced (programmatic use), re-validated.

    Args:
        spec: the spec.
        **data: top-level fields (``name=``, ``log_uri=``...) and their new values, as the
            YAML writes them.

    Returns:
        A new :class:`ClusterSpec`; ``spec`` is unchanged.

    Raises:
        ConfigError: a new value is invalid.
    """
    return ClusterSpec.from_dict({**spec.to_dict(), **data}, spec.origin)
