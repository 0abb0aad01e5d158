"""emrflow's YARN start-up on a real YARN: Hadoop's MiniYARNCluster on this machine.

Starts the MiniYARNCluster of the test suite (tests/yarn/minicluster.py: one ResourceManager,
two NodeManagers; the jars come from ``.ci/fetch-yarn-jars``) and prints, median of
``--repeat`` runs:

* ``yarn-session start -d`` until N TaskManagers registered with the JobManager;
* ``run -t yarn-session -d`` until the job is RUNNING;
* ``run -t yarn-per-job`` of a trivial job until RUNNING and until the command returned;

each with the CPU seconds of emrflow's Python processes (the client, JobManager, TaskManagers and
slots) and of the JVMs (skein's driver, started by each command unless a global one runs, and
skein's ApplicationMaster); the rest of the wall time is waiting for YARN (allocation,
localization) and for processes to start.

With ``--flink`` (the default), each repeat also runs Apache Flink's own client on the same
cluster: ``flink run -t yarn-per-job`` (attached) of the same trivial job in Java
(``bench/flink/TrivialJob.java``), Flink 1.20 from PyPI in ``bench/.cache/flink-venv``
(``bench/flink_yarn.py`` installs it on first use), and prints both figures with the ratio
Flink / emrflow. When Flink cannot be installed or built, it says why and measures emrflow alone.

Usage::

    python bench/bench_yarn.py [--repeat 3] [--taskmanagers 2] [--no-flink]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Optional

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flink_yarn  # noqa: E402

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
    """Runs CLI commands against the cluster."""

    def __init__(self, cluster: MiniYarnCluster, env: dict):
        self.cluster, self.env = cluster, env

    def cli(self, *args, wait=True):
        cmd = [sys.executable, "-m", "emrflow.cli", *args]
        if not wait:
            return subprocess.Popen(cmd, env=self.env, cwd=self.env["HOME"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        proc = subprocess.run(cmd, env=self.env, cwd=self.env["HOME"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return proc


class CpuSampler:
    """Samples the CPU time of the client's process tree and of the cluster's container processes
    every 50 ms, keeping each process's last reading (processes that end keep what was seen), split
    into emrflow's Python processes and the JVMs (skein's driver and ApplicationMaster)."""

    def __init__(self, cluster: MiniYarnCluster, root: psutil.Process):
        self.cluster, self.root = cluster, root
        self.seen: dict[int, tuple[str, float]] = {}
        self.baseline: dict[int, float] = {}
        self._stop = threading.Event()
        for p in self._processes():
            self.baseline[p.pid] = self._cpu(p)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _processes(self):
        procs = [self.root]
        try:
            procs += self.root.children(recursive=True)
        except psutil.Error:
            pass
        return procs + self.cluster.container_processes()

    @staticmethod
    def _cpu(p) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for p in self._processes():
                try:
                    name = p.name()
                except psutil.Error:
                    continue
                kind = "java" if name.startswith("java") else "python" if name.startswith("python") else "other"
                cpu = self._cpu(p) - self.baseline.get(p.pid, 0.0)
                if cpu > 0 or p.pid not in self.seen:
                    self.seen[p.pid] = (kind, cpu)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        out = {"python": 0.0, "java": 0.0, "other": 0.0}
        for kind, cpu in self.seen.values():
            out[kind] += max(cpu, 0.0)
        return out


def get(rest: str, token: str, path: str) -> dict:
    req = urllib.request.Request(f"http://{rest}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def token_of(app_id: str, env: dict) -> str:
    import skein
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        # skein read SKEIN_CONFIG at import: name the cluster's credentials explicitly
        with skein.Client(security=skein.Security.from_directory(env["SKEIN_CONFIG"])) as client:
            return client.connect(app_id, wait=False).kv["emrflow.rest.token"][1:].decode()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def timed(run: Run, args: list[str], until) -> tuple[float, dict[str, float]]:
    """Wall seconds from starting ``emrflow args`` until ``until(proc)`` is true; CPU seconds by kind."""
    t0 = time.perf_counter()
    proc = run.cli(*args, wait=False)
    wall, cpu = timed_process(run.cluster, proc, t0, until)
    if proc.returncode not in (0, None):
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr.read()}")
    return wall, cpu


def timed_process(cluster: MiniYarnCluster, proc: subprocess.Popen, t0: float, until) -> tuple[float, dict]:
    """Wall seconds from ``t0`` until ``until(proc)`` is true (polled every 20 ms), then waits for
    ``proc``; CPU seconds by kind of its process tree and of the cluster's containers meanwhile."""
    sampler = CpuSampler(cluster, psutil.Process(proc.pid))
    value = None
    while not value:
        value = until(proc)
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    if proc.poll() is None:
        proc.wait()
    return wall, sampler.stop()


def once(cluster: MiniYarnCluster, taskmanagers: int) -> dict[str, tuple[float, dict]]:
    home = tempfile.mkdtemp(prefix="emrflow-bench-yarn-")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HADOOP_", "YARN_", "EMRFLOW_"))}
    env.update(cluster.env, HOME=home)
    run = Run(cluster, env)
    for name, text in (("forever.py", FOREVER), ("trivial.py", TRIVIAL)):
        with open(os.path.join(home, name), "w") as f:
            f.write(text)
    out: dict[str, tuple[float, dict]] = {}
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
        out["run -t yarn-per-job (trivial) -> TaskManager up"] = (marks["running"] - t0, {})
    return out


FLINK_TM = "flink: TaskManager up"
FLINK_RUNNING = "flink: tasks RUNNING"
FLINK_DONE = "flink: finished"


def flink_once(cluster: MiniYarnCluster, home: str, jar: str) -> dict[str, tuple[float, dict]]:
    """``flink run -t yarn-per-job`` (attached) of the trivial Java job: seconds from the command's
    start to the deployment's phases (from the client's log lines), to the first TaskManager
    container process, to every task RUNNING (Flink's REST API, polled every 200 ms; the
    timestamps are the JobManager's) and to the command's end; CPU of the client's process tree
    and of the containers.

    Raises:
        flink_yarn.FlinkUnavailable: The command failed (its output's end and log dir quoted).
    """
    work = tempfile.mkdtemp(prefix="emrflow-bench-flink-")
    env = flink_yarn.client_env(home, cluster.env, work)
    out_path = os.path.join(work, "client.out")
    marks: dict[str, float] = {}
    state: dict = {"next_poll": 0.0}
    epoch0, t0 = time.time(), time.perf_counter()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(flink_yarn.per_job_command(home, jar, work), env=env, cwd=work,
                                stdout=out, stderr=subprocess.STDOUT)

    def until(proc):
        now = time.perf_counter()
        if "tm" not in marks:
            for p in cluster.container_processes():
                try:
                    if any("YarnTaskExecutorRunner" in part for part in p.cmdline()):
                        marks["tm"] = now - t0
                        break
                except psutil.Error:
                    pass
        if "tasks" not in marks and now >= state["next_poll"]:
            state["next_poll"] = now + 0.2
            if "rest" not in state:
                with open(out_path, errors="replace") as f:
                    found = flink_yarn.web_interface(f.read())
                if found:
                    state["rest"] = found[0]
            if "rest" in state:
                try:
                    at = flink_yarn.tasks_running_at(state["rest"])
                except (OSError, ValueError, KeyError):
                    at = None
                if at:
                    marks["tasks"] = at - epoch0
        return proc.poll() is not None
    wall, cpu = timed_process(cluster, proc, t0, until)
    with open(out_path, errors="replace") as f:
        text = f.read()
    if proc.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise flink_yarn.FlinkUnavailable(f"`flink run -t yarn-per-job` exited with status {proc.returncode}; "
                                          f"output in {out_path}, client log in {work}/log; it ends with:\n{tail}")
    out: dict[str, tuple[float, dict]] = {}
    for name, at in flink_yarn.phases(text).items():
        out[f"flink: {name}"] = (at - epoch0, {})
    if "tm" in marks:
        out[FLINK_TM] = (marks["tm"], {})
    if "tasks" in marks:
        out[FLINK_RUNNING] = (marks["tasks"], {})
    out[FLINK_DONE] = (wall, cpu)
    return out


def prepare_flink(cluster: MiniYarnCluster) -> tuple[str, str, str]:
    """Flink's distribution, the job jar and Flink's version; installs and builds on first use.

    Raises:
        flink_yarn.FlinkUnavailable: Flink cannot be installed or the job not built.
    """
    home = flink_yarn.flink_home()
    return home, flink_yarn.job_jar(home, cluster.env["JAVA_HOME"]), flink_yarn.flink_version(home)


def median(runs: list[dict], name: str, key=None) -> Optional[float]:
    """The median over ``runs`` of row ``name``'s wall seconds (or ``key(cpu)``), None if absent."""
    values = [(key(r[name][1]) if key else r[name][0]) for r in runs if name in r]
    return statistics.median(values) if values else None


def print_comparison(emrflow_runs: list[dict], flink_runs: list[dict], version: str) -> None:
    """emrflow's and Flink's yarn-per-job figures side by side, with Flink / emrflow."""
    rows = [
        ("TaskManager container process up", "run -t yarn-per-job (trivial) -> TaskManager up", FLINK_TM, None),
        ("all tasks RUNNING", None, FLINK_RUNNING, None),
        ("job finished, client returned", "run -t yarn-per-job (trivial) -> finished", FLINK_DONE, None),
        ("CPU s, all processes (client + containers)", "run -t yarn-per-job (trivial) -> finished", FLINK_DONE,
         lambda cpu: sum(cpu.values())),
    ]
    print(f"\nyarn-per-job of the trivial job, attached, median of {len(emrflow_runs)} "
          f"(wall seconds from the command's start):")
    print(f"  {'':44} {'emrflow':>9} {'Flink ' + version:>13} {'Flink/emrflow':>14}")
    for label, ours, theirs, key in rows:
        a = median(emrflow_runs, ours, key) if ours else None
        b = median(flink_runs, theirs, key)
        ratio = f"{b / a:.2f}x" if a and b else "-"
        print(f"  {label:44} {(f'{a:.2f}' if a is not None else '-'):>9} "
              f"{(f'{b:.2f}' if b is not None else '-'):>13} {ratio:>14}")
    for name in flink_runs[0]:
        if name.startswith("flink: ") and name not in (FLINK_TM, FLINK_RUNNING, FLINK_DONE):
            print(f"  Flink {name[len('flink: '):]}: {median(flink_runs, name):.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--taskmanagers", type=int, default=2)
    parser.add_argument("--flink", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure Apache Flink's `flink run -t yarn-per-job` (default: on)")
    args = parser.parse_args()
    flink_runs: list[dict] = []
    flink_skipped = "--no-flink" if not args.flink else None
    with tempfile.TemporaryDirectory(prefix="emrflow-bench-miniyarn-") as work:
        cluster = MiniYarnCluster(work)
        t0 = time.perf_counter()
        with cluster:
            print(f"MiniYARNCluster (1 ResourceManager, 2 NodeManagers) ready in {time.perf_counter() - t0:.1f} s")
            if args.flink:
                try:
                    home, jar, version = prepare_flink(cluster)
                    print(f"Flink {version} from {home}")
                except flink_yarn.FlinkUnavailable as exc:
                    flink_skipped = str(exc)
            runs = []
            for _ in range(args.repeat):
                runs.append(once(cluster, args.taskmanagers))
                if flink_skipped is None:
                    try:
                        flink_runs.append(flink_once(cluster, home, jar))
                    except flink_yarn.FlinkUnavailable as exc:
                        flink_skipped = str(exc)
                        flink_runs = []
    print("CPU: emrflow's Python processes (client, JobManager, TaskManagers, slots) and the JVMs "
          "(skein's driver and ApplicationMaster); on 2 cores CPU can exceed wall time")
    for name in runs[0]:
        wall = statistics.median(r[name][0] for r in runs)
        line = f"{name}: {wall:.2f} s wall (median of {len(runs)})"
        if runs[0][name][1]:
            py = statistics.median(r[name][1]["python"] for r in runs)
            java = statistics.median(r[name][1]["java"] for r in runs)
            line += f"; CPU emrflow Python {py:.2f} s, JVMs {java:.2f} s"
        print(line)
    if flink_runs:
        print_comparison(runs, flink_runs, version)
    else:
        print(f"\nFlink skipped: {flink_skipped}")


if __name__ == "__main__":
    main()
