"""emrflow's YARN start-up on a real YARN: Hadoop's MiniYARNCluster on this machine.

Starts the MiniYARNCluster of the test suite (tests/yarn/minicluster.py: one ResourceManager,
two NodeManagers; the jars come from ``.ci/fetch-yarn-jars``) and prints, median of
``--repeat`` runs:

* ``yarn-session start -d`` until N TaskManagers registered with the JobManager;
* ``run -t yarn-session -d`` until the job is RUNNING;
* ``run -t yarn-per-job`` of a trivial job until RUNNING and until the command returned;

each split into the share spent in emrflow's code (CPU seconds of the client and of the
emrflow processes in the containers) and the rest, which is waiting: for YARN (allocation,
localization, the container JVM of skein's ApplicationMaster) and for processes to start.

Usage::

    python bench/bench_yarn.py [--repeat 3] [--taskmanagers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.yarn.minicluster import MiniYarnCluster  # noqa: E402

FOREVER = '''
import time
from emrflow import StreamExecutionEnvironment
from emrflow.testing import GeneratedSource
env = StreamExecutionEnvironment.get_execution_environment()
env.from_source(GeneratedSource(10**9, batch_size=10)).map(lambda v: time.sleep(0.01) or v).add_sink(lambda v: None)
env.execute("forever")
'''
TRIVIAL = '''
from emrflow import StreamExecutionEnvironment
env = StreamExecutionEnvironment.get_execution_environment()
env.from_collection(list(range(1000))).map(lambda v: v + 1).add_sink(lambda v: None)
env.execute("trivial")
'''
SMALL = ["-D", "jobmanager.memory.process.size=512m", "-D", "taskmanager.memory.process.size=512m"]


class Run:
    """One CLI command and the CPU the emrflow processes of the cluster used meanwhile."""

    def __init__(self, cluster: MiniYarnCluster, env: dict):
        self.cluster, self.env = cluster, env

    def emrflow_cpu(self) -> float:
        total = 0.0
        for p in self.cluster.container_processes():
            try:
                if any("emrflow" in part for part in p.cmdline()):
                    t = p.cpu_times()
                    total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def cli(self, *args, wait=True):
        cmd = [sys.executable, "-m", "emrflow.cli", *args]
        if not wait:
            return subprocess.Popen(cmd, env=self.env, cwd=self.env["HOME"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        proc = subprocess.run(cmd, env=self.env, cwd=self.env["HOME"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc


def child_cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def get(rest: str, token: str, path: str) -> dict:
    req = urllib.request.Request(f"http://{rest}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def token_of(app_id: str, env: dict) -> str:
    import skein
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with skein.Client() as client:
            return client.connect(app_id, wait=False).kv["emrflow.rest.token"].decode()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def timed(run: Run, args: list[str], until) -> tuple[float, float]:
    """Wall seconds from starting ``emrflow args`` until ``until()`` is true; emrflow CPU seconds."""
    me = psutil.Process()
    cpu0 = child_cpu(me) + run.emrflow_cpu()
    t0 = time.perf_counter()
    proc = run.cli(*args, wait=False)
    value = None
    while not value:
        value = until(proc)
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    if proc.poll() is None:
        proc.wait()
    if proc.returncode not in (0, None):
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr.read()}")
    return wall, child_cpu(me) + run.emrflow_cpu() - cpu0


def once(cluster: MiniYarnCluster, taskmanagers: int) -> dict[str, tuple[float, float]]:
    home = tempfile.mkdtemp(prefix="emrflow-bench-yarn-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HADOOP_", "YARN_", "EMRFLOW_"))}
    env.update(cluster.env, HOME=home)
    run = Run(cluster, env)
    for name, text in (("forever.py", FOREVER), ("trivial.py", TRIVIAL)):
        with open(os.path.join(home, name), "w") as f:
            f.write(text)
    out: dict[str, tuple[float, float]] = {}
    state: dict = {}

    def session_ready(proc):
        if "rest" not in state:
            if proc.poll() is None:
                return False
            text = proc.stdout.read()
            state["app"] = [w for w in text.split() if w.startswith("application_")][0]
            state["rest"] = text.split("http://")[1].split("/")[0]
            state["token"] = token_of(state["app"], env)
        return get(state["rest"], state["token"], "/overview")["taskmanagers"] >= taskmanagers
    out["session start -> TaskManagers registered"] = timed(
        run, ["yarn-session", "start", "-d", "-n", str(taskmanagers), "-s", "1", *SMALL], session_ready)

    def job_running(proc):
        return any(j["state"] == "RUNNING" for j in get(state["rest"], state["token"], "/jobs/overview")["jobs"])
    out["run -t yarn-session -d -> job RUNNING"] = timed(
        run, ["run", "-d", "-t", "yarn-session", "-p", "1", os.path.join(home, "forever.py")], job_running)
    run.cli("yarn-session", "stop")

    marks: dict = {}

    def per_job_running(proc):
        for p in cluster.container_processes():
            try:
                if "taskmanager" in p.cmdline() and "running" not in marks:
                    marks["running"] = time.perf_counter()
            except psutil.Error:
                pass
        return proc.poll() is not None
    t0 = time.perf_counter()
    wall, cpu = timed(run, ["run", "-t", "yarn-per-job", *SMALL, os.path.join(home, "trivial.py")],
                      per_job_running)
    out["run -t yarn-per-job (trivial) -> finished"] = (wall, cpu)
    if "running" in marks:
        out["run -t yarn-per-job (trivial) -> TaskManager up"] = (marks["running"] - t0, float("nan"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--taskmanagers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="emrflow-bench-miniyarn-") as work:
        cluster = MiniYarnCluster(work)
        t0 = time.perf_counter()
        with cluster:
            print(f"MiniYARNCluster (1 ResourceManager, 2 NodeManagers) ready in {time.perf_counter() - t0:.1f} s")
            runs = [once(cluster, args.taskmanagers) for _ in range(args.repeat)]
    for name in runs[0]:
        wall = statistics.median(r[name][0] for r in runs)
        cpu = statistics.median(r[name][1] for r in runs)
        share = "" if cpu != cpu else f"; emrflow CPU {cpu:.2f} s = {100 * cpu / wall:.0f} % of it, " \
                                      f"the rest waiting for YARN and process start-up"
        print(f"{name}: {wall:.2f} s (median of {len(runs)}{share})")


if __name__ == "__main__":
    main()
