"""The EMR cluster spec objects (emrflow.deploy.emr.spec): each validates its own keys, names the
key path and the file (and line), and is frozen; a template becomes the RunJobFlow request its
YAML says.

No processes, no network: specs are written under tmp_path; expected values come from the YAML
read with plain ``yaml.safe_load``, and lines from the file's text.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import os

import pytest
import yaml

from emrflow.deploy.emr import requests, spec
from emrflow.deploy.emr.spec import (
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
)
from emrflow.deploy.emr.staging import Staging
from emrflow.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATES = [os.path.join(ROOT, "configs", f) for f in ("emr-batch.yaml", "emr-streaming.yaml")]
WHEEL_URI = "s3://bkt/w/emrflow-0.1.0-py3-none-any.whl"

MINIMAL = {"name": "c", "release_label": "emr-7.1.0",
           "instance_groups": [{"role": "MASTER", "instance_type": "m5.xlarge", "count": 1}]}

# class, a valid mapping, a key, a value of the wrong type for it, what the message expects
VALID = [
    (InstanceGroup, {"role": "CORE", "instance_type": "m5.xlarge", "count": 2}, "count", "two",
     "an integer >= 0"),
    (InstanceFleet, {"role": "CORE", "on_demand_capacity": 2, "spot_capacity": 1,
                     "instance_types": [{"instance_type": "m5.xlarge"}]},
     "spot_capacity", "many", "an integer >= 0"),
    (InstanceTypeConfig, {"instance_type": "m5.xlarge", "weight": 2}, "weight", "heavy", "an integer >= 1"),
    (SpotProvisioning, {"timeout_minutes": 10}, "timeout_minutes", "ten", "an integer >= 5 and <= 1440"),
    (Ec2Attributes, {"key_name": "k", "subnet_ids": ["subnet-1"]}, "subnet_ids", "subnet-1", "a list of strings"),
    (Classification, {"Classification": "yarn-site", "Properties": {"a": "1"}}, "Properties", ["a"],
     "a mapping of property names to values"),
    (BootstrapAction, {"name": "b", "path": "s3://bkt/b.sh", "args": ["x"]}, "args", "x", "a list of strings"),
    (StepSpec, {"job": "s3://bkt/j.py", "parallelism": 2}, "parallelism", "2", "an integer >= 1"),
    (ManagedScaling, {"minimum_capacity_units": 1, "maximum_capacity_units": 2}, "maximum_capacity_units",
     "2", "an integer >= 1"),
    (ClusterSpec, {**MINIMAL, "idle_timeout": 3600}, "idle_timeout", "1h", "an integer >= 60 and <= 604800"),
]
IDS = [c[0].__name__ for c in VALID]


@pytest.mark.parametrize("cls,data,key,bad,expected", VALID, ids=IDS)
def test_each_class_takes_its_valid_mapping(cls, data, key, bad, expected):
    obj = cls.from_dict(copy.deepcopy(data), "spec.yaml")
    assert isinstance(obj, cls)
    value = getattr(obj, key.lower())
    assert value == (tuple(data[key]) if isinstance(data[key], list) else data[key])


@pytest.mark.parametrize("cls,data,key,bad,expected", VALID, ids=IDS)
def test_each_class_rejects_an_unknown_key_naming_it_and_the_file(cls, data, key, bad, expected):
    with pytest.raises(ConfigError) as info:
        cls.from_dict({**copy.deepcopy(data), "zz_unknown": 1}, "spec.yaml")
    text = str(info.value)
    assert text.startswith("spec.yaml: zz_unknown: expected one of the keys "), text
    assert text.endswith("got 'unknown key zz_unknown'"), text
    assert info.value.key == "zz_unknown" and info.value.source == "spec.yaml"


@pytest.mark.parametrize("cls,data,key,bad,expected", VALID, ids=IDS)
def test_each_class_rejects_a_wrong_type_naming_the_key_and_the_file(cls, data, key, bad, expected):
    with pytest.raises(ConfigError) as info:
        cls.from_dict({**copy.deepcopy(data), key: bad}, "spec.yaml")
    assert str(info.value) == f"spec.yaml: {key}: expected {expected}, got {bad!r}"
    assert info.value.key == key


def test_a_mapping_is_required():
    with pytest.raises(ConfigError, match=r"^spec.yaml: instance_groups\[2\]: expected a mapping \(instance_groups\), "
                                          r"got 'm5.xlarge'$"):
        InstanceGroup.from_dict("m5.xlarge", spec.Origin.of("spec.yaml").child("instance_groups", 2))


# --------------------------------------------------------------------------- nested, in a real file

def _fleets(data: dict) -> None:
    del data["instance_groups"]
    data["instance_fleets"] = [
        {"role": "MASTER", "on_demand_capacity": 1, "instance_types": [{"instance_type": "m5.xlarge"}]},
        {"role": "TASK", "spot_capacity": 2, "instance_types": [{"instance_type": "c5.xlarge"}],
         "spot": {"timeout_minutes": 10}}]
    data.pop("managed_scaling", None)


def _at(*path):
    """An edit putting ``value`` at ``path`` of the spec's mapping."""
    def put(data, value):
        cur = data
        for k in path[:-1]:
            cur = cur[k]
        cur[path[-1]] = value
    return put


NESTED = [  # (edit before, path, key path in the message, a wrong-type value, expected)
    (None, ("instance_groups", 1), "instance_groups[1]", ("count", "two-xyz"), "an integer >= 0"),
    (_fleets, ("instance_fleets", 1), "instance_fleets[1]", ("spot_capacity", "many-xyz"), "an integer >= 0"),
    (_fleets, ("instance_fleets", 1, "instance_types", 0), "instance_fleets[1].instance_types[0]",
     ("weight", "heavy-xyz"), "an integer >= 1"),
    (_fleets, ("instance_fleets", 1, "spot"), "instance_fleets[1].spot",
     ("timeout_minutes", "ten-xyz"), "an integer >= 5 and <= 1440"),
    (None, ("ec2",), "ec2", ("subnet_ids", "subnet-xyz"), "a list of strings"),
    (None, ("configurations", 0), "configurations[0]", ("Properties", "props-xyz"),
     "a mapping of property names to values"),
    (lambda d: d["configurations"].append({"Classification": "hadoop-env",
                                           "Configurations": [{"Classification": "export"}]}),
     ("configurations", 4, "Configurations", 0), "configurations[4].Configurations[0]",
     ("Properties", "props-xyz"), "a mapping of property names to values"),
    (lambda d: d.update(bootstrap_actions=[{"name": "mine", "path": "s3://bkt/mine.sh"}]),
     ("bootstrap_actions", 0), "bootstrap_actions[0]", ("args", "args-xyz"), "a list of strings"),
    (lambda d: d.update(steps=[{"job": "s3://bkt/job.py"}]), ("steps", 0), "steps[0]",
     ("parallelism", "two-xyz"), "an integer >= 1"),
    (lambda d: d.update(managed_scaling={"minimum_capacity_units": 1, "maximum_capacity_units": 2}),
     ("managed_scaling",), "managed_scaling", ("maximum_capacity_units", "max-xyz"), "an integer >= 1"),
    (None, (), "", ("idle_timeout", "hour-xyz"), "an integer >= 60 and <= 604800"),
]


def _write(tmp_path, edit, path, key, value) -> tuple[str, int]:
    """The batch template, edited, with ``value`` at ``path + (key,)``; return the file and its line."""
    with open(TEMPLATES[0]) as f:
        data = yaml.safe_load(f)
    if edit:
        edit(data)
    _at(*path, key)(data, value)
    out = tmp_path / "spec.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    lines = out.read_text().splitlines()
    marker = key + ":"
    # the line of `key` in the block of `value` (a unique marker value, or the unknown key itself)
    line = next(i for i, text in enumerate(lines, 1)
                if text.strip().lstrip("- ").startswith(marker) and (str(value) in text or key.startswith("zz")))
    return str(out), line


@pytest.mark.parametrize("edit,path,name,bad,expected", NESTED, ids=[n[2] or "top" for n in NESTED])
def test_nested_unknown_key_names_key_path_file_and_line(tmp_path, edit, path, name, bad, expected):
    file, line = _write(tmp_path, edit, path, "zz_unknown", 1)
    with pytest.raises(ConfigError) as info:
        spec.load_cluster_spec(file)
    full = f"{name}.zz_unknown" if name else "zz_unknown"
    assert str(info.value).startswith(f"{file}:{line}: {full}: expected one of the keys "), str(info.value)
    assert info.value.key == full and info.value.source == f"{file}:{line}"


@pytest.mark.parametrize("edit,path,name,bad,expected", NESTED, ids=[n[2] or "top" for n in NESTED])
def test_nested_wrong_type_names_key_path_file_and_line(tmp_path, edit, path, name, bad, expected):
    key, value = bad
    file, line = _write(tmp_path, edit, path, key, value)
    with pytest.raises(ConfigError) as info:
        spec.load_cluster_spec(file)
    full = f"{name}.{key}" if name else key
    assert str(info.value) == f"{file}:{line}: {full}: expected {expected}, got {value!r}"


def test_a_command_line_override_is_named_instead_of_the_line(tmp_path):
    file, line = _write(tmp_path, None, ("instance_groups", 1), "ebs_size_gb", 0)
    with pytest.raises(ConfigError) as info:
        spec.load_cluster_spec(file, instance_type="c5.large")
    assert str(info.value) == (f"--instance-type (overriding {file}:{line}): instance_groups[1].ebs_size_gb: "
                               "expected an integer >= 1 and <= 16384, got 0")


# --------------------------------------------------------------------------- frozen

@pytest.mark.parametrize("cls,data,key,bad,expected", VALID, ids=IDS)
def test_spec_objects_are_frozen(cls, data, key, bad, expected):
    obj = cls.from_dict(copy.deepcopy(data), "spec.yaml")
    field = dataclasses.fields(obj)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, field, getattr(obj, field))


def test_collections_inside_a_spec_are_read_only():
    s = spec.load_cluster_spec(TEMPLATES[0])
    with pytest.raises(TypeError):
        s.tags["owner"] = "me"                                  # type: ignore[index]
    with pytest.raises(TypeError):
        s.configurations[0].properties["x"] = "1"               # type: ignore[index]
    with pytest.raises(AttributeError):
        s.instance_groups.append(s.instance_groups[0])          # type: ignore[union-attr]
    assert s.tags == {"project": "emrflow", "purpose": "batch"}


def test_to_dict_round_trips_and_with_overrides_leaves_the_spec_alone():
    s = spec.load_cluster_spec(TEMPLATES[1])
    assert ClusterSpec.from_dict(s.to_dict(), "again.yaml") == s
    t = spec.with_overrides(s, name="other", idle_timeout=600)
    assert (t.name, t.idle_timeout, s.name, s.idle_timeout) == ("other", 600, "emrflow-streaming", None)
    with pytest.raises(ConfigError, match=r"emr-streaming.yaml:\d+: idle_timeout: expected an integer >= 60"):
        spec.with_overrides(s, idle_timeout=5)


# --------------------------------------------------------------------------- template -> request

def _props(properties: dict) -> dict:
    """EMR's property values: strings; YAML booleans as Hadoop spells them."""
    return {k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in properties.items()}


@pytest.mark.parametrize("template", TEMPLATES, ids=os.path.basename)
def test_template_to_request_carries_what_the_yaml_says(template):
    with open(template) as f:
        y = yaml.safe_load(f)
    request = requests.build_run_job_flow_request(spec.load_cluster_spec(template),
                                                  Staging("s3://bkt/stage", wheel_uri=WHEEL_URI))
    assert request["Name"] == y["name"] and request["ReleaseLabel"] == y["release_label"]
    assert [a["Name"] for a in request["Applications"]] == ["Hadoop"] + [a for a in y["applications"]
                                                                          if a != "Hadoop"]
    assert request["LogUri"] == y["log_uri"]
    assert request["Tags"] == [{"Key": k, "Value": str(v)} for k, v in y["tags"].items()]
    inst = request["Instances"]
    assert (inst["Ec2KeyName"], inst["Ec2SubnetId"]) == (y["ec2"]["key_name"], y["ec2"]["subnet_id"])
    assert inst["KeepJobFlowAliveWhenNoSteps"] is y["keep_alive"]
    assert inst["TerminationProtected"] is y.get("termination_protected", False)
    groups = inst["InstanceGroups"]
    assert len(groups) == len(y["instance_groups"])
    for g, yg in zip(groups, y["instance_groups"]):
        assert (g["Name"], g["InstanceRole"], g["InstanceType"], g["InstanceCount"], g["Market"]) == (
            yg["name"], yg["role"], yg["instance_type"], yg["count"], yg.get("market", "ON_DEMAND"))
        assert g.get("BidPrice") == yg.get("bid_price")
        sizes = [c["VolumeSpecification"]["SizeInGB"]
                 for c in g.get("EbsConfiguration", {}).get("EbsBlockDeviceConfigs", [])]
        assert sizes == ([yg["ebs_size_gb"]] if "ebs_size_gb" in yg else [])
    # EMR gets every classification but emrflow's own, with string values
    sent = [c for c in y["configurations"] if c["Classification"] not in ("emrflow-conf", "emrflow-log")]
    assert [c["Classification"] for c in request["Configurations"]] == [c["Classification"] for c in sent]
    for got, want in zip(request["Configurations"], sent):
        assert got.get("Properties") == (_props(want["Properties"]) if "Properties" in want else None)
        assert [n["Properties"] for n in got.get("Configurations", [])] == [
            _props(n["Properties"]) for n in want.get("Configurations", [])]
    # emrflow-conf reaches the nodes through the bootstrap action, base64 YAML
    actions = {a["Name"]: a["ScriptBootstrapAction"] for a in request["BootstrapActions"]}
    assert actions["install emrflow"]["Args"] == [WHEEL_URI]
    args = actions["write emrflow configuration"]["Args"]
    written = {args[i]: yaml.safe_load(base64.b64decode(args[i + 1])) for i in range(0, len(args), 2)}
    own = {c["Classification"]: c.get("Properties") for c in y["configurations"]}
    assert written["--conf-b64"] == own["emrflow-conf"]
    assert written.get("--log-b64") == own.get("emrflow-log")
    if y.get("idle_timeout"):
        assert request["AutoTerminationPolicy"] == {"IdleTimeout": y["idle_timeout"]}
    else:
        assert "AutoTerminationPolicy" not in request
    assert request.get("StepConcurrencyLevel") == y.get("step_concurrency_level")


def test_fleet_spec_to_request_carries_what_the_yaml_says():
    data = {**MINIMAL, "instance_groups": None, "instance_fleets": [
        {"role": "MASTER", "on_demand_capacity": 1, "instance_types": [{"instance_type": "m5.xlarge"}]},
        {"role": "TASK", "name": "spot tasks", "spot_capacity": 4,
         "instance_types": [{"instance_type": "c5.xlarge", "weight": 2, "bid_percent": 80}],
         "spot": {"timeout_minutes": 15, "allocation_strategy": "price-capacity-optimized"}}],
        "managed_scaling": {"unit_type": "InstanceFleetUnits", "minimum_capacity_units": 1,
                            "maximum_capacity_units": 9}}
    del data["instance_groups"]
    request = requests.build_run_job_flow_request(ClusterSpec.from_dict(copy.deepcopy(data), "fleets.yaml"),
                                                  Staging("s3://bkt/stage", wheel_uri=WHEEL_URI))
    master, task = request["Instances"]["InstanceFleets"]
    assert (master["Name"], master["TargetOnDemandCapacity"], master["TargetSpotCapacity"]) == ("Master", 1, 0)
    assert (task["Name"], task["InstanceFleetType"], task["TargetSpotCapacity"]) == ("spot tasks", "TASK", 4)
    assert task["InstanceTypeConfigs"] == [{"InstanceType": "c5.xlarge", "WeightedCapacity": 2,
                                            "BidPriceAsPercentageOfOnDemandPrice": 80.0}]
    assert task["LaunchSpecifications"] == {"SpotSpecification": {
        "TimeoutDurationMinutes": 15, "TimeoutAction": "SWITCH_TO_ON_DEMAND",
        "AllocationStrategy": "price-capacity-optimized"}}
    assert request["ManagedScalingPolicy"] == {"ComputeLimits": {
        "UnitType": "InstanceFleetUnits", "MinimumCapacityUnits": 1, "MaximumCapacityUnits": 9}}
