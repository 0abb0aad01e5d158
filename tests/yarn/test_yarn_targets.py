"""emrflow's YARN targets on a real YARN: Hadoop's MiniYARNCluster (tests/yarn/minicluster.py).

Every test drives the ``emrflow`` CLI in a subprocess, as a user would, with only the Hadoop
client's environment (``yarn`` on PATH, ``HADOOP_CONF_DIR``, ``JAVA_HOME``). Containers start
from a scrubbed environment in which the system ``python3`` has no emrflow, so they work only
if emrflow tells YARN the right interpreter. Outputs are compared with plain-Python references.
"""

from __future__ import annotations

import collections
import csv
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile

import psutil
import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.yarn, pytest.mark.integration]

RATINGS = os.path.join(ROOT, "examples", "data", "movielens-latest-small", "ratings.csv")
LATEST = os.path.join(ROOT, "examples", "latest_rating.py")
COUNT_JOB = os.path.join(ROOT, "tests", "jobs", "checkpointed_count.py")
#: small containers: the two NodeManagers offer 4 GiB each
SMALL = ["-D", "jobmanager.memory.process.size=512m", "-D", "taskmanager.memory.process.size=512m"]


# -- helpers ---------------------------------------------------------------------------------

@pytest.fixture
def yenv(yarn_cluster, yarn_apps, tmp_path):
    """The environment of a user's shell on a Hadoop client node, with a fresh HOME."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HADOOP_", "YARN_", "EMRFLOW_", "SKEIN_"))}
    env.update(yarn_cluster.env, HOME=str(tmp_path))
    return env


def cli(*args, env, check=True, timeout=240):
    proc = subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True, text=True,
                          env=env, cwd=env["HOME"], timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.3)


def latest_rating_reference() -> set[tuple]:
    best: dict[tuple, tuple] = {}
    with open(RATINGS, newline="") as f:
        for user, movie, rating, ts in list(csv.reader(f))[1:]:
            rec = (int(movie), int(user), float(rating), int(ts))
            key = rec[:2]
            old = best.get(key)
            if old is None or (rec[3], rec[2]) > (old[3], old[2]):
                best[key] = rec
    return set(best.values())


def read_latest(directory) -> list[tuple]:
    rows = []
    for p in glob.glob(os.path.join(str(directory), "part-*")):
        with open(p, newline="") as f:
            reader = csv.reader(f)
            assert next(reader) == ["movieId", "userId", "rating", "timestamp"]
            rows += [(int(m), int(u), float(r), int(t)) for m, u, r, t in reader]
    return rows


def app_id_of(text: str) -> str:
    ids = [w.strip(".:,") for w in text.split() if w.startswith("application_")]
    assert ids, text
    return ids[0]


def rest_get(address: str, token: str, path: str):
    req = urllib.request.Request(f"http://{address}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def emrflow_containers(yarn_cluster, role: str) -> list[psutil.Process]:
    out = []
    for p in yarn_cluster.container_processes():
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "emrflow.deploy.yarn_containers" in cmd and role in cmd:
            out.append(p)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- sessions --------------------------------------------------------------------------------

def test_session_start_status_list_job_scale_stop(yarn_cluster, yarn_apps, yenv, tmp_path):
    prom = free_port()
    out = cli("yarn-session", "start", "-d", "-n", "1", "-s", "2", "-nm", "test session", *SMALL,
              "-D", "resourcemanager.taskmanager-timeout=3 s",
              # the client's -D options must be what the containers run with: with the default
              # heartbeat interval (10 s) the JobManager would declare the TaskManagers lost
              "-D", "heartbeat.interval=1 s", "-D", "heartbeat.timeout=6 s",
              "-D", f"metrics.reporter.prom.port={prom}", env=yenv).stdout
    app_id = app_id_of(out)
    yarn_apps.append(app_id)
    rest = out.split("http://")[1].split("/")[0]
    report = yarn_apps.report(app_id)
    assert (report.state, report.name) == ("RUNNING", "test session")
    session = json.loads((tmp_path / ".emrflow" / "yarn-session.json").read_text())
    assert session["application_id"] == app_id and session["rest"] == rest
    # the REST address is the NodeManager's host, which the client can reach
    token = yarn_apps.kv(app_id)["emrflow.rest.token"][1:].decode()  # after the byte that hides it
    overview = wait_for(lambda: (ov := rest_get(rest, token, "/overview"))["slots-total"] == 2 and ov,
                        120, "the first TaskManager")
    assert overview["taskmanagers"] == 1
    with urllib.request.urlopen(f"http://{rest.split(':')[0]}:{prom}/metrics", timeout=10) as r:
        assert b"flink_jobmanager_taskSlotsAvailable" in r.read()

    status = cli("yarn-session", "status", env=yenv).stdout
    assert f"{app_id}: RUNNING" in status and "1 TaskManagers" in status and "2/2 slots free" in status
    assert app_id in cli("yarn-session", "list", env=yenv).stdout

    # a job needing 4 slots on a 2-slot session: the JobManager asks YARN for a second container
    cli("run", "-t", "yarn-session", "-p", "4", LATEST, "--output", str(tmp_path / "o"), env=yenv)
    assert sorted(read_latest(tmp_path / "o")) == sorted(latest_rating_reference())
    tms = rest_get(rest, token, "/taskmanagers")["taskmanagers"]
    assert len(tms) == 2
    # heartbeats every second (the shipped heartbeat.interval), not every 10 s
    for _ in range(4):
        now_ms = time.time() * 1000
        ages = [now_ms - tm["timeSinceLastHeartbeat"] for tm in rest_get(rest, token, "/taskmanagers")["taskmanagers"]]
        assert max(ages) < 3000, ages
        time.sleep(0.7)
    # idle for resourcemanager.taskmanager-timeout: back to the session's one container
    wait_for(lambda: len(yarn_apps.running_containers(app_id, "taskmanager")) == 1, 90,
             "the idle TaskManager container to be released")

    out = cli("yarn-session", "stop", env=yenv).stdout
    assert f"Stopped YARN session {app_id} (FINISHED/SUCCEEDED)" in out
    assert yarn_apps.report(app_id).final_status == "SUCCEEDED"
    assert not (tmp_path / ".emrflow" / "yarn-session.json").exists()
    wait_for(lambda: not emrflow_containers(yarn_cluster, "master") and
             not emrflow_containers(yarn_cluster, "taskmanager"), 60, "the containers to exit")
    # the staging directory (configuration shipped to the containers) is gone with the application
    assert os.listdir(tmp_path / ".emrflow" / "yarn-staging") == []
    proc = cli("run", "-t", "yarn-session", LATEST, "--output", str(tmp_path / "o2"), env=yenv, check=False)
    assert proc.returncode == 1 and "no YARN session" in proc.stderr


def test_a_session_that_ended_is_a_clear_error_not_a_hang(yarn_cluster, yarn_apps, yenv, tmp_path):
    out = cli("yarn-session", "start", "-d", "-n", "0", *SMALL, env=yenv).stdout
    app_id = app_id_of(out)
    yarn_apps.append(app_id)
    (master,) = emrflow_containers(yarn_cluster, "master")
    master.kill()                              # the ApplicationMaster's JobManager dies
    wait_for(lambda: yarn_apps.report(app_id).state in ("FINISHED", "FAILED", "KILLED"), 120,
             "YARN to notice the dead ApplicationMaster")
    t0 = time.monotonic()
    proc = cli("run", "-t", "yarn-session", LATEST, "--output", str(tmp_path / "o"), env=yenv, check=False)
    assert proc.returncode == 1 and time.monotonic() - t0 < 60
    assert app_id in proc.stderr and "FAILED" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("run", "-t", "yarn-session", "-D", "yarn.application.id=application_1_0042", LATEST,
               env=yenv, check=False)
    assert proc.returncode == 1 and "no YARN application application_1_0042" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- one application per job -----------------------------------------------------------------

def test_per_job_success_and_failure_with_the_users_traceback(yarn_cluster, yarn_apps, yenv, tmp_path):
    cli("run", "-t", "yarn-per-job", "-p", "2", *SMALL, "-D", "yarn.application.name=per-job ok",
        LATEST, "--output", str(tmp_path / "o"), env=yenv)
    assert sorted(read_latest(tmp_path / "o")) == sorted(latest_rating_reference())
    (ok,) = yarn_apps.find("per-job ok")
    assert (ok.state, ok.final_status) == ("FINISHED", "SUCCEEDED")
    # the JobGraph and configuration were staged until the application ended, then removed
    assert os.listdir(tmp_path / ".emrflow" / "yarn-staging") == []

    bad = tmp_path / "bad_job.py"
    bad.write_text("from emrflow import StreamExecutionEnvironment\n"
                   "\n"
                   "def explode(v):\n"
                   "    return 1 // v\n"
                   "\n"
                   "env = StreamExecutionEnvironment.get_execution_environment()\n"
                   "env.from_collection([1, 2, 0]).map(explode).print()\n"
                   "env.execute('bad')\n")
    proc = cli("run", "-t", "yarn-per-job", *SMALL, "-D", "yarn.application.name=per-job bad", str(bad),
               env=yenv, check=False)
    assert proc.returncode == 1, proc.stderr
    assert "ZeroDivisionError" in proc.stderr and "return 1 // v" in proc.stderr
    assert f'File "{bad}", line 4, in explode' in proc.stderr
    (failed,) = yarn_apps.find("per-job bad")
    assert (failed.state, failed.final_status) == ("FINISHED", "FAILED")
    assert "ZeroDivisionError" in failed.diagnostics


def test_application_mode_detached_with_py_files(yarn_cluster, yarn_apps, yenv, tmp_path):
    helper = tmp_path / "wordhelpers.py"
    helper.write_text("def words(line):\n    return line.split()\n")
    deps = tmp_path / "deps.zip"
    with zipfile.ZipFile(deps, "w") as z:
        z.writestr("zipped_helpers.py", "def pair(w):\n    return (w, 1)\n")
    job = tmp_path / "app_job.py"
    job.write_text(
        "import sys\n"
        "from emrflow import StreamExecutionEnvironment, RuntimeExecutionMode\n"
        "from wordhelpers import words\n"
        "from zipped_helpers import pair\n"
        "env = StreamExecutionEnvironment.get_execution_environment()\n"
        "env.set_runtime_mode(RuntimeExecutionMode.BATCH)\n"
        "env.from_collection(['a b', 'b c', 'c']).flat_map(words).map(pair)"
        ".key_by(0).sum(1).write_as_csv(sys.argv[1], header=['word', 'count'])\n"
        "env.execute('in the application master')\n")
    out = tmp_path / "o"
    proc = cli("run", "-t", "yarn-application", "-d", *SMALL, "--py-files", str(helper), "--py-files", str(deps),
               str(job), str(out), env=yenv)
    app_id = app_id_of(proc.stdout)
    yarn_apps.append(app_id)
    report = wait_for(lambda: (r := yarn_apps.report(app_id)).state in ("FINISHED", "FAILED", "KILLED") and r,
                      180, "the application to end")
    assert report.final_status == "SUCCEEDED", report.diagnostics
    rows = []
    for p in glob.glob(str(out / "part-*")):
        with open(p, newline="") as f:
            rows += list(csv.reader(f))[1:]
    assert sorted(rows) == [["a", "1"], ["b", "2"], ["c", "2"]]
    # without the zip the script fails in the ApplicationMaster: attached, the client says so
    proc = cli("run", "-t", "yarn-application", *SMALL, "--py-files", str(helper), str(job),
               str(tmp_path / "o2"), env=yenv, check=False)
    assert proc.returncode == 1 and "ended FAILED" in proc.stderr and "zipped_helpers" in proc.stderr


def test_packed_virtual_environment_shipped_as_an_archive(yarn_cluster, yarn_apps, yenv, tmp_path):
    """``yarn.ship-archives`` + ``python.executable=env/bin/python``: the containers run the shipped
    environment's interpreter, which alone has the module ``venv_marker``."""
    env_dir = tmp_path / "venv-build"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    site = glob.glob(str(env_dir / "lib" / "python3*" / "site-packages"))[0]
    with open(os.path.join(site, "venv_marker.py"), "w") as f:
        f.write("WHERE = 'from the shipped environment'\n")
    # emrflow and its dependencies: this test's own site-packages, reached through the archive's .pth
    ours = [p for p in sys.path if p.endswith("site-packages")][0]
    with open(os.path.join(site, "emrflow-deps.pth"), "w") as f:
        f.write(f"import site; site.addsitedir({ours!r})\n")
    archive = tmp_path / "pyenv.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(env_dir, arcname=".")
    job = tmp_path / "marker_job.py"
    job.write_text(
        "import sys\n"
        "from emrflow import StreamExecutionEnvironment\n"
        "def where(v):\n"
        "    import venv_marker\n"
        "    return f'{v} {venv_marker.WHERE}'\n"
        "env = StreamExecutionEnvironment.get_execution_environment()\n"
        "env.from_collection([1, 2]).map(where).write_as_text(sys.argv[1])\n"
        "env.execute('marker')\n")
    cli("run", "-t", "yarn-per-job", *SMALL, "-D", f"yarn.ship-archives={archive}",
        "-D", "python.executable=pyenv/bin/python", str(job), str(tmp_path / "o"), env=yenv)
    lines = []
    for part in glob.glob(str(tmp_path / "o" / "part-*")):
        with open(part) as f:
            lines += [line.strip() for line in f]
    lines.sort()
    assert lines == ["1 from the shipped environment", "2 from the shipped environment"]


def test_killed_taskmanager_container_restarts_the_job_exactly_once(yarn_cluster, yarn_apps, yenv, tmp_path):
    out, ck = tmp_path / "out", tmp_path / "ck"
    env = dict(yenv)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emrflow.cli", "run", "-t", "yarn-per-job", "-p", "2", *SMALL,
         "-D", "yarn.application.name=tm kill", "-D", "execution.checkpointing.interval=500ms",
         "-D", f"state.checkpoints.dir={ck}", "-D", "restart-strategy.type=fixed-delay",
         "-D", "restart-strategy.fixed-delay.attempts=3", "-D", "restart-strategy.fixed-delay.delay=100ms",
         COUNT_JOB, "--count", "300000", "--keys", "100", "--rate", "20000", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=env["HOME"])
    try:
        wait_for(lambda: glob.glob(str(ck / "*" / "chk-*" / "_metadata")) or proc.poll() is not None, 180,
                 "a completed checkpoint")
        assert proc.poll() is None, proc.communicate()
        tms = emrflow_containers(yarn_cluster, "taskmanager")
        assert len(tms) == 2, [p.cmdline() for p in tms]
        tms[0].kill()                                # SIGKILL: the container exits 137
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    got = collections.Counter()
    for part in glob.glob(str(out / "part-*")):
        with open(part) as f:
            got.update(line.strip() for line in f if line.strip())
    assert got == collections.Counter(f"{k},{c}" for k in range(100) for c in range(1, 3001))
    (report,) = yarn_apps.find("tm kill")
    assert report.final_status == "SUCCEEDED"


def test_killed_application_master_ends_an_attached_run_clearly(yarn_cluster, yarn_apps, yenv, tmp_path):
    env = dict(yenv)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emrflow.cli", "run", "-t", "yarn-per-job", "-p", "1", *SMALL,
         "-D", "yarn.application.name=am kill", COUNT_JOB, "--count", "10000000", "--keys", "10",
         "--rate", "1000", "--output", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=env["HOME"])
    try:
        wait_for(lambda: emrflow_containers(yarn_cluster, "taskmanager") or proc.poll() is not None, 180,
                 "the job's TaskManager")
        assert proc.poll() is None, proc.communicate()
        (master,) = emrflow_containers(yarn_cluster, "master")
        t0 = time.monotonic()
        master.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    (report,) = yarn_apps.find("am kill")
    assert proc.returncode == 1 and took < 90
    assert report.id in stderr and "FAILED" in stderr and "Traceback" not in stderr, stderr
    assert report.final_status == "FAILED"
    wait_for(lambda: not emrflow_containers(yarn_cluster, "taskmanager"), 60, "the TaskManagers to go")
    # nothing was published: the job's output directory holds no visible part file
    assert not glob.glob(str(tmp_path / "out" / "part-*"))


# -- what YARN refuses -----------------------------------------------------------------------

def test_unknown_queue_is_a_clear_error(yarn_cluster, yarn_apps, yenv):
    t0 = time.monotonic()
    proc = cli("yarn-session", "start", "-d", "-qu", "no-such-queue", *SMALL, env=yenv, check=False)
    assert proc.returncode == 1 and time.monotonic() - t0 < 60
    assert "no-such-queue" in proc.stderr and "Traceback" not in proc.stderr
    assert not yarn_apps.running()


def test_master_larger_than_the_maximum_allocation_is_refused(yarn_cluster, yarn_apps, yenv):
    proc = cli("yarn-session", "start", "-d", "-jm", f"{yarn_cluster.nm_memory_mb}m", "-tm", "512m",
               env=yenv, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "YARN refused the application" in proc.stderr and "memory" in proc.stderr.lower()
    assert not yarn_apps.running()


def test_application_stuck_in_accepted_times_out_and_is_killed(yarn_cluster, yarn_apps, yenv):
    # the `small` queue may use 10 % of the cluster: an ApplicationMaster of 1 GiB never starts there
    t0 = time.monotonic()
    proc = cli("yarn-session", "start", "-d", "-qu", "small", "-jm", "1024m", "-tm", "512m",
               "-D", "yarn.application.start-timeout=15 s", env=yenv, check=False)
    took = time.monotonic() - t0
    assert proc.returncode == 1 and 15 <= took < 90, (took, proc.stderr)
    assert re.search(r"still ACCEPTED in queue '(root\.)?small' after 15 s", proc.stderr), proc.stderr
    assert "it was killed" in proc.stderr
    app_id = app_id_of(proc.stderr)
    assert yarn_apps.report(app_id).state == "KILLED"


def test_taskmanagers_failing_beyond_the_limit_fail_the_application(yarn_cluster, yarn_apps, yenv, tmp_path):
    """``yarn.maximum-failed-containers``: a TaskManager container that keeps failing does not loop for
    ever; past the limit the application fails and the client says so (YARN's diagnostics)."""
    env = dict(yenv)
    proc = subprocess.Popen(
        [sys.executable, "-m", "emrflow.cli", "run", "-t", "yarn-per-job", "-p", "1", *SMALL,
         "-D", "yarn.application.name=tm limit", "-D", "yarn.maximum-failed-containers=1",
         # the job itself would survive: checkpoints and restarts
         "-D", "execution.checkpointing.interval=500ms", "-D", f"state.checkpoints.dir={tmp_path / 'ck'}",
         "-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.attempts=10",
         "-D", "restart-strategy.fixed-delay.delay=100ms",
         COUNT_JOB, "--count", "10000000", "--keys", "10", "--rate", "1000", "--output", str(tmp_path / "out")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=env["HOME"])
    killed: set[int] = set()
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and len(killed) < 2:
            assert time.monotonic() < deadline, "no second TaskManager container to kill"
            for tm in emrflow_containers(yarn_cluster, "taskmanager"):
                if tm.pid not in killed:
                    tm.kill()                                   # the container fails (exit 137)
                    killed.add(tm.pid)
            time.sleep(0.3)
        _, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert len(killed) == 2 and proc.returncode == 1, stderr
    (report,) = yarn_apps.find("tm limit")
    assert report.final_status == "FAILED" and "Failure in service taskmanager" in report.diagnostics, \
        report.diagnostics
    assert report.id in stderr and "FAILED" in stderr and "Traceback" not in stderr, stderr
