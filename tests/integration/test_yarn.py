"""The YARN layer without YARN: real skein specs, and the container scripts as local processes
with a stand-in for skein's clients (tests/yarn_standin.py). Tests marked ``yarn`` need a real cluster."""

from __future__ import annotations

import csv
import glob
import json
import os
import subprocess
import sys
import time

import psutil
import pytest
import skein

from emrflow.config import Configuration
from emrflow.deploy.yarn import build_spec
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
    assert spec.master.resources.memory == 1024 and spec.master.resources.vcores == 1
    assert spec.master.script.startswith("env/bin/python -m emrflow.deploy.yarn_containers master --mode session")
    assert "--slots 3" in spec.master.script and "--taskmanagers 4" in spec.master.script
    tm = spec.services["taskmanager"]
    assert tm.instances == 4 and tm.resources.memory == 4096 and tm.resources.vcores == 2
    assert tm.script.startswith("env/bin/python -m emrflow.deploy.yarn_containers taskmanager --slots 3")
    assert tm.max_restarts == -1  # lost containers are replaced
    assert tm.files["helpers.py"].source == f"file://{ship}" and tm.files["helpers.py"].type == "FILE"
    assert tm.files["env"].type == "ARCHIVE"
    assert spec.master.env["PYTHONUNBUFFERED"] == "1"


def test_per_job_spec_localizes_the_job_graph(tmp_path):
    graph = tmp_path / "g.pkl"
    graph.write_bytes(b"x")
    spec = build_spec(Configuration(), "per-job", files={"jobgraph.pkl": str(graph)})
    assert spec.services["taskmanager"].instances == 0  # asked for on demand
    assert "jobgraph.pkl" in spec.master.files and "--mode per-job" in spec.master.script


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


# -- the stand-in ---------------------------------------------------------------------

def cli(*args, env, check=True, timeout=180):
    proc = subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture
def yarn_env(tmp_path):
    base = tmp_path / "yarn"
    base.mkdir()
    env = dict(os.environ, EMRFLOW_YARN_DRIVER="tests.yarn_standin:driver", STANDIN_YARN_DIR=str(base),
               HOME=str(tmp_path), PYTHONPATH=ROOT)
    yield env
    # kill whatever the applications left (the test fails below if anything was left)
    left = []
    deadline = time.time() + 10
    while True:
        left = []
        for p in psutil.process_iter():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and \
                        p.environ().get("STANDIN_APP_DIR", "").startswith(str(base)):
                    left.append(p)
            except psutil.Error:
                pass
        if not left or time.time() > deadline:
            break
        time.sleep(0.2)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not left, f"containers left running: {[p.cmdline() for p in left]}"


def read_rows(directory):
    rows = []
    for p in glob.glob(os.path.join(directory, "part-*")):
        with open(p, newline="") as f:
            rows += list(csv.reader(f))[1:]
    return rows


def test_session_start_run_scale_status_stop(yarn_env, tmp_path):
    out = cli("yarn-session", "start", "-d", "--taskmanagers", "1", "--slots", "2",
              "-D", "resourcemanager.taskmanager-timeout=2 s", env=yarn_env).stdout
    app_id = out.split()[2]
    assert app_id.startswith("application_") and "REST API and dashboard at http://127.0.0.1:" in out
    session = read_json(tmp_path / ".emrflow" / "yarn-session.json")
    assert session["application_id"] == app_id
    # a job needing 4 slots on a 2-slot session: the JobManager asks for a second container
    proc = cli("run", "-t", "yarn-session", "-p", "4", "examples/latest_rating.py", "--output",
               str(tmp_path / "o"), env=yarn_env)
    assert "Job Runtime" in proc.stderr
    assert len(read_rows(str(tmp_path / "o"))) > 90_000
    containers = read_json(tmp_path / "yarn" / app_id / "containers.json")
    assert len(containers) >= 2
    status = cli("yarn-session", "status", env=yarn_env).stdout
    assert app_id in status and "RUNNING" in status
    cli("yarn-session", "stop", env=yarn_env)
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.exists(tmp_path / "yarn" / app_id / "final.json"):
        time.sleep(0.2)
    logs = cli("yarn-session", "logs", "--id", app_id, env=yarn_env, check=False).stdout
    final = read_json(tmp_path / "yarn" / app_id / "final.json")
    assert final["status"] == "SUCCEEDED", logs
    assert not os.path.exists(tmp_path / ".emrflow" / "yarn-session.json")
    proc = cli("run", "-t", "yarn-session", "examples/latest_rating.py", env=yarn_env, check=False)
    assert proc.returncode == 1 and "no YARN session" in proc.stderr


def test_per_job_cluster_succeeds_and_fails_with_diagnostics(yarn_env, tmp_path):
    proc = cli("run", "-t", "yarn-per-job", "-p", "2", "examples/latest_rating.py", "--output",
               str(tmp_path / "o"), env=yarn_env)
    assert len(read_rows(str(tmp_path / "o"))) > 90_000
    (app_id,) = os.listdir(tmp_path / "yarn")
    deadline = time.time() + 60
    while time.time() < deadline and not os.path.exists(tmp_path / "yarn" / app_id / "final.json"):
        time.sleep(0.2)
    assert read_json(tmp_path / "yarn" / app_id / "final.json")["status"] == "SUCCEEDED"

    bad = tmp_path / "bad.py"
    bad.write_text("from emrflow import StreamExecutionEnvironment\n"
                   "env = StreamExecutionEnvironment.get_execution_environment()\n"
                   "env.from_collection([1, 2, 0]).map(lambda v: 1 // v).print()\n"
                   "env.execute('bad')\n")
    proc = cli("run", "-t", "yarn-per-job", str(bad), env=yarn_env, check=False)
    assert proc.returncode == 1 and "ZeroDivisionError" in proc.stderr
    apps = [a for a in os.listdir(tmp_path / "yarn") if a != app_id]
    deadline = time.time() + 60
    final_path = tmp_path / "yarn" / apps[0] / "final.json"
    while time.time() < deadline and not os.path.exists(final_path):
        time.sleep(0.2)
    final = read_json(final_path)
    assert final["status"] == "FAILED" and "ZeroDivisionError" in final["diagnostics"]


def test_unknown_application_id_is_clear(yarn_env):
    proc = cli("run", "-t", "yarn-session", "-D", "yarn.application.id=application_0_0000",
               "examples/latest_rating.py", env=yarn_env, check=False)
    assert proc.returncode == 1 and "application_0_0000" in proc.stderr


@pytest.mark.yarn
def test_real_yarn_session(tmp_path):
    """On a real cluster (EMR master node): start a session, run the main job, stop it."""
    env = dict(os.environ)
    out = cli("yarn-session", "start", "-d", "--taskmanagers", "1", env=env).stdout
    try:
        cli("run", "-t", "yarn-session", "-p", "2", "examples/latest_rating.py", "--output",
            str(tmp_path / "o"), env=env)
        assert len(read_rows(str(tmp_path / "o"))) > 90_000
    finally:
        cli("yarn-session", "stop", env=env, check=False)
    assert "application_" in out


def test_application_mode_runs_the_script_in_the_master(yarn_env, tmp_path):
    helper = tmp_path / "wordhelpers.py"
    helper.write_text("def words(line):\n    return line.split()\n")
    job = tmp_path / "app_job.py"
    job.write_text(
        "import sys\n"
        "from emrflow import StreamExecutionEnvironment, RuntimeExecutionMode\n"
        "from wordhelpers import words\n"
        "env = StreamExecutionEnvironment.get_execution_environment()\n"
        "env.set_runtime_mode(RuntimeExecutionMode.BATCH)\n"
        "env.from_collection(['a b', 'b c', 'c']).flat_map(words).map(lambda w: (w, 1))"
        ".key_by(0).sum(1).write_as_csv(sys.argv[1], header=['word', 'count'])\n"
        "env.execute('in the application master')\n")
    out = tmp_path / "o"
    proc = cli("run", "-t", "yarn-application", "--py-files", str(helper), str(job), str(out), env=yarn_env)
    assert "ended SUCCEEDED" in proc.stderr
    assert sorted(read_rows(str(out))) == [["a", "1"], ["b", "2"], ["c", "2"]]
    proc = cli("run", "-t", "yarn-application", str(job), str(tmp_path / "o2"), env=yarn_env, check=False)
    assert proc.returncode == 1 and "ended FAILED" in proc.stderr and "wordhelpers" in proc.stderr


@pytest.mark.parametrize("target", ["yarn-per-job", "yarn-application"])
def test_dry_run_prints_the_spec_and_submits_nothing(yarn_env, tmp_path, target):
    proc = cli("run", "--dry-run", "-t", target, "-p", "2", "examples/latest_rating.py", "--output",
               str(tmp_path / "o"), env=yarn_env)
    yaml_text = proc.stdout.split("latest ratings written")[0]
    spec = skein.ApplicationSpec.from_yaml(yaml_text)
    assert f"--mode {target.split('-', 1)[1]}" in spec.master.script
    assert os.listdir(tmp_path / "yarn") == []
    proc = cli("yarn-session", "start", "--dry-run", "--taskmanagers", "3", env=yarn_env)
    assert skein.ApplicationSpec.from_yaml(proc.stdout).services["taskmanager"].instances == 3
    assert os.listdir(tmp_path / "yarn") == []


def test_dead_session_is_a_clear_error(yarn_env, tmp_path):
    out = cli("yarn-session", "start", "-d", "--taskmanagers", "1", env=yarn_env).stdout
    app_id = out.split()[2]
    master = read_json(tmp_path / "yarn" / app_id / "master.json")
    os.killpg(master["pid"], 9)  # the ApplicationMaster dies with its JobManager
    for c in read_json(tmp_path / "yarn" / app_id / "containers.json"):
        try:
            os.killpg(c["pid"], 9)
        except ProcessLookupError:
            pass
    proc = cli("run", "-t", "yarn-session", "examples/latest_rating.py", "--output", str(tmp_path / "o"),
               env=yarn_env, check=False)
    assert proc.returncode == 1
    assert "cannot reach the JobManager" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_per_job_cluster_replaces_a_killed_taskmanager_container_and_restarts_exactly_once(yarn_env, tmp_path):
    """A TaskManager container dies: the ApplicationMaster asks YARN for another, the job restarts
    from its latest checkpoint, and the output still holds every record exactly once."""
    import collections
    out, ck = str(tmp_path / "out"), str(tmp_path / "ck")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emrflow.cli", "run", "-t", "yarn-per-job", "-p", "2",
         "-D", "execution.checkpointing.interval=500ms", "-D", f"state.checkpoints.dir={ck}",
         "-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.attempts=3",
         "-D", "restart-strategy.fixed-delay.delay=100ms",
         "tests/jobs/checkpointed_count.py", "--count", "400000", "--keys", "100", "--rate", "40000",
         "--output", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=yarn_env, cwd=ROOT)
    try:
        deadline = time.time() + 90
        while not glob.glob(os.path.join(ck, "*", "chk-*", "_metadata")):
            assert time.time() < deadline and proc.poll() is None, "no checkpoint"
            time.sleep(0.1)
        tms = [p for p in psutil.process_iter() if _is_taskmanager_container(p)]
        assert len(tms) == 2, [p.cmdline() for p in tms]
        tms[0].kill()
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    got = collections.Counter()
    for part in glob.glob(os.path.join(out, "part-*")):
        with open(part) as f:
            got.update(line.strip() for line in f if line.strip())
    want = collections.Counter(f"{k},{c}" for k in range(100) for c in range(1, 4001))
    assert got == want
    (app_id,) = os.listdir(tmp_path / "yarn")
    containers = read_json(tmp_path / "yarn" / app_id / "containers.json")
    assert len(containers) == 3, containers  # two TaskManagers and the replacement of the killed one


def _is_taskmanager_container(p) -> bool:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return False
    return "emrflow.deploy.yarn_containers" in cmd and "taskmanager" in cmd
