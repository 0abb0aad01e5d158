"""The YARN layer's pure logic, without YARN: the skein application specs emrflow builds (checked
by skein itself), container sizing, the TaskManager scaling decisions and ``--dry-run``. Everything
that depends on YARN's behaviour runs on a real MiniYARNCluster in tests/yarn/."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import skein

from emrflow.config import Configuration
from emrflow.deploy.yarn import SKEIN_AM_MIB, build_spec, container_memory
from emrflow.deploy.yarn_containers import ResourceManagerLogic
from emrflow.errors import ConfigError
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def read_json(path):
    with open(path) as f:
        return json.load(f)


# -- specs --------------------------------------------------------------------------

def test_session_spec_round_trips_and_holds_every_field(tmp_path):
    ship = tmp_path / "helpers.py"
    ship.write_text("X = 1\n")
    venv = tmp_path / "env.tar.gz"
    venv.write_bytes(b"not really an archive")
    config = Configuration.load(dynamic=[
        "yarn.application.queue=streaming", "yarn.tags=team-a;nightly", "yarn.application.node-label=core",
        "yarn.application-attempts=2", "taskmanager.numberOfTaskSlots=3", "yarn.containers.vcores=2",
        "taskmanager.memory.process.size=4g", "jobmanager.memory.process.size=1024m",
        f"yarn.ship-files={ship}", f"yarn.ship-archives={venv}", "python.executable=env/bin/python"],
        env={})
    spec = build_spec(config, "session", name="my session", taskmanagers=4)
    def norm(d):  # tags are a set: their order is arbitrary
        return dict(d, tags=sorted(d["tags"]))
    # (skein's == compares serialised forms, in which the tag set's order may differ)
    assert norm(skein.ApplicationSpec.from_yaml(spec.to_yaml()).to_dict()) == norm(spec.to_dict())
    via_protobuf = norm(skein.ApplicationSpec.from_protobuf(spec.to_protobuf()).to_dict())
    # skein 0.8's protobuf form does not carry max_attempts (its YAML form does)
    assert {k: v for k, v in via_protobuf.items() if k != "max_attempts"} == \
        {k: v for k, v in norm(spec.to_dict()).items() if k != "max_attempts"}
    assert spec.name == "my session" and spec.queue == "streaming" and spec.max_attempts == 2
    assert spec.node_label == "core" and set(spec.tags) == {"team-a", "nightly", "emrflow"}
    # the master container holds skein's Java ApplicationMaster beside the JobManager
    assert spec.master.resources.memory == 1024 + SKEIN_AM_MIB and spec.master.resources.vcores == 1
    assert spec.master.script.startswith("env/bin/python -m emrflow.deploy.yarn_containers master --mode session")
    assert "--slots 3" in spec.master.script and "--taskmanagers 4" in spec.master.script
    tm = spec.services["taskmanager"]
    assert tm.instances == 4 and tm.resources.memory == 4096 and tm.resources.vcores == 2
    assert tm.script.startswith("env/bin/python -m emrflow.deploy.yarn_containers taskmanager --slots 3")
    assert tm.max_restarts == 10  # yarn.maximum-failed-containers: a failing TaskManager does not loop for ever
    assert tm.node_label == "core"
    assert tm.files["helpers.py"].source == f"file://{ship}" and tm.files["helpers.py"].type == "FILE"
    assert tm.files["env"].type == "ARCHIVE"
    assert spec.master.env["PYTHONUNBUFFERED"] == "1"
    assert spec.acls.enable  # the key-value store holds the secret: only the owner sees skein's UI


def test_per_job_spec_localizes_the_job_graph_in_the_master_only(tmp_path):
    graph = tmp_path / "g.pkl"
    graph.write_bytes(b"x")
    deps = tmp_path / "deps.zip"
    deps.write_bytes(b"PK")
    conf = tmp_path / "conf"
    conf.mkdir()
    spec = build_spec(Configuration(), "per-job", master_files={"jobgraph.pkl": str(graph), "deps.zip": str(deps)},
                      conf_dir=str(conf), staging_dir=str(tmp_path))
    tm = spec.services["taskmanager"]
    assert tm.instances == 0  # asked for on demand
    assert "jobgraph.pkl" in spec.master.files and "--mode per-job" in spec.master.script
    assert "jobgraph.pkl" not in tm.files and "deps.zip" not in tm.files
    # a zip among the job's files stays a zip (put on sys.path as it is), never extracted
    assert spec.master.files["deps.zip"].type == "FILE"
    # the client's configuration reaches every container
    for files, env in ((spec.master.files, spec.master.env), (tm.files, tm.env)):
        assert files["emrflow-conf"].source == f"file://{conf}" and env["EMRFLOW_CONF_DIR"] == "emrflow-conf"
    assert spec.master.env["EMRFLOW_STAGING_DIR"] == str(tmp_path)


def test_containers_run_the_clients_interpreter_by_default():
    spec = build_spec(Configuration(), "session")
    assert spec.master.script.startswith(f"{sys.executable} -m emrflow.deploy.yarn_containers master")
    assert spec.services["taskmanager"].script.startswith(f"{sys.executable} -m ")


def test_taskmanager_container_must_hold_its_slot_processes():
    config = Configuration.load(dynamic=["taskmanager.numberOfTaskSlots=4", "taskmanager.memory.process.size=512m"],
                                env={})
    with pytest.raises(ConfigError, match="cannot hold a TaskManager and its 4 slot processes") as info:
        build_spec(config, "session")
    assert "taskmanager.memory.process.size" in str(info.value) and "640m" in str(info.value)
    _, tm = container_memory(config.with_overrides({"taskmanager.memory.process.size": "640m"}), 4)
    assert tm == 640


def test_configuration_shipped_to_containers_round_trips(tmp_path):
    config = Configuration.load(dynamic=["heartbeat.timeout=20 s", "yarn.tags=a;b", "metrics.reporter.prom.port=0",
                                         "taskmanager.memory.process.size=768m"], env={})
    (tmp_path / "emrflow-conf.yaml").write_text(config.to_yaml())
    assert Configuration.load(env={"EMRFLOW_CONF_DIR": str(tmp_path)}) == config


@pytest.mark.parametrize("key,value,message", [
    ("taskmanager.memory.process.size", "100m", "at least 256m"),
    ("yarn.ship-files", "/no/such/file", "does not exist"),
])
def test_bad_spec_input_names_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_spec(Configuration.load(dynamic=[f"{key}={value}"], env={}), "session")
    assert key in str(info.value)


def test_resource_manager_logic():
    rm = ResourceManagerLogic(slots_per_taskmanager=2, min_taskmanagers=1, idle_timeout_ms=1000)
    assert rm.wanted(slots_needed=0, slots_busy=0, registered_taskmanagers=1, now_ms=0) == 1
    assert rm.wanted(slots_needed=5, slots_busy=0, registered_taskmanagers=1, now_ms=10) == 3
    assert rm.wanted(slots_needed=5, slots_busy=5, registered_taskmanagers=3, now_ms=20) == 3
    # the job ended: keep the containers until they were idle for the timeout
    assert rm.wanted(slots_needed=0, slots_busy=0, registered_taskmanagers=3, now_ms=100) == 3
    assert rm.wanted(slots_needed=0, slots_busy=0, registered_taskmanagers=3, now_ms=1200) == 1


def cli(*args, env, check=True, timeout=180):
    proc = subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True, text=True,
                          env=env, cwd=env["HOME"], timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.mark.parametrize("target", ["yarn-per-job", "yarn-application"])
def test_dry_run_prints_the_spec_and_submits_nothing(tmp_path, target):
    # no Hadoop client at all: a dry run must not need one
    env = {k: v for k, v in os.environ.items() if k not in ("HADOOP_CONF_DIR", "YARN_CONF_DIR")}
    env.update(HOME=str(tmp_path), PATH="/usr/bin:/bin")
    proc = cli("run", "--dry-run", "-t", target, "-p", "2", os.path.join(ROOT, "examples", "latest_rating.py"),
               "--output", str(tmp_path / "o"), env=env)
    yaml_text = proc.stdout.split("latest ratings written")[0]
    spec = skein.ApplicationSpec.from_yaml(yaml_text)
    assert f"--mode {target.split('-', 1)[1]}" in spec.master.script
    proc = cli("yarn-session", "start", "--dry-run", "-n", "3", "-s", "2", "-jm", "512m", "-tm", "1g",
               "-nm", "nightly", "-qu", "etl", env=env)
    spec = skein.ApplicationSpec.from_yaml(proc.stdout)
    tm = spec.services["taskmanager"]
    assert (tm.instances, tm.resources.memory, spec.master.resources.memory) == (3, 1024, 512 + SKEIN_AM_MIB)
    assert (spec.name, spec.queue) == ("nightly", "etl") and "--slots 2" in tm.script
    assert not os.path.exists(tmp_path / ".emrflow")
