"""The ``standalone`` cluster: a JobManager and TaskManagers as background processes on hosts.

``emrflow cluster start`` starts them on this host and returns; ``emrflow cluster
stop`` stops every process it started; ``emrflow taskmanager start`` adds a
TaskManager (from this or another host) to a running JobManager. The working
directory (``--workdir``, ``$EMRFLOW_CLUSTER_DIR`` or ``~/.emrflow/cluster``) holds
``cluster.json`` (addresses, pids, the cluster secret; mode 0600), pid files and,
unless ``log.dir`` says otherwise, the processes' logs. Mirrors Flink's
``start-cluster.sh`` / ``stop-cluster.sh`` / ``taskmanager.sh start``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass

import psutil

from emrflow.config import Configuration
from emrflow.deploy.rest_client import RestClient
from emrflow.errors import ClusterError
from emrflow.runtime.process import spawn

_DAEMONS: list[subprocess.Popen] = []


def default_workdir() -> str:
    """``$EMRFLOW_CLUSTER_DIR`` or ``~/.emrflow/cluster``."""
    return os.environ.get("EMRFLOW_CLUSTER_DIR") or os.path.join(os.path.expanduser("~"), ".emrflow",
                                                                  "cluster")


@dataclass
class ClusterInfo:
    """What ``cluster.json`` records of a running standalone cluster."""

    workdir: str
    secret: str
    rpc_address: tuple[str, int]
    rest_address: tuple[str, int]
    jobmanager_pid: int
    taskmanager_pids: list[int]
    metrics_port: int | None = None

    @property
    def rest(self) -> str:
        """``host:port`` of the REST API."""
        return f"{self.rest_address[0]}:{self.rest_address[1]}"

    @property
    def rpc(self) -> str:
        """``host:port`` of the JobManager's RPC endpoint (for TaskManagers)."""
        return f"{self.rpc_address[0]}:{self.rpc_address[1]}"

    def save(self) -> None:
        path = os.path.join(self.workdir, "cluster.json")
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"secret": self.secret, "rpc_address": list(self.rpc_address),
                       "rest_address": list(self.rest_address), "jobmanager_pid": self.jobmanager_pid,
                       "taskmanager_pids": self.taskmanager_pids, "metrics_port": self.metrics_port}, f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, workdir: str) -> "ClusterInfo":
        """Read ``cluster.json``.

        Raises:
            ClusterError: there is none (no cluster was started from this directory).
        """
        path = os.path.join(workdir, "cluster.json")
        try:
            with open(path) as f:
                d = json.load(f)
        except FileNotFoundError:
            raise ClusterError(f"no standalone cluster recorded in {workdir} (no cluster.json); "
                               "start one with `emrflow cluster start`") from None
        return cls(workdir, d["secret"], tuple(d["rpc_address"]), tuple(d["rest_address"]),
                   d["jobmanager_pid"], list(d["taskmanager_pids"]), d.get("metrics_port"))


def _alive(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _log_dir(config: Configuration, workdir: str) -> str:
    d = config.get("log.dir") or os.path.join(workdir, "log")
    os.makedirs(d, exist_ok=True)
    return d


def _start_daemon(module: str, args: list[str], secret: str, config: Configuration, workdir: str,
                  name: str, extra_env: dict | None = None) -> int:
    log_dir = _log_dir(config, workdir)
    log = open(os.path.join(log_dir, f"{name}.log"), "ab")
    out = open(os.path.join(log_dir, f"{name}.out"), "ab")
    try:
        proc = spawn(module, args, secret, config.get("python.executable"), new_session=True,
                     stdout=out, stderr=log, extra_env=extra_env)
    finally:
        log.close()
        out.close()
    _DAEMONS.append(proc)  # they outlive this process; keep the handles so none is reaped as garbage
    with open(os.path.join(workdir, f"{name}.pid"), "w") as f:
        f.write(str(proc.pid))
    return proc.pid


def start_cluster(config: Configuration, workdir: str | None = None, taskmanagers: int = 1,
                  slots: int | None = None, rest_port: int | None = None,
                  timeout_s: float = 60.0) -> ClusterInfo:
    """Start a JobManager and ``taskmanagers`` TaskManagers on this host in the background.

    Args:
        config: configuration (``rest.bind-address``, ``rest.auth.token``,
            ``heartbeat.*``, ``metrics.reporter.prom.port``, ``jobmanager.rpc.port``).
        workdir: working directory (default :func:`default_workdir`).
        taskmanagers: TaskManager processes.
        slots: task slots per TaskManager (default ``taskmanager.numberOfTaskSlots``).
        rest_port: REST port (default ``rest.port``; 0 = any free port).
        timeout_s: how long to wait for every slot to register.

    Returns:
        The :class:`ClusterInfo` (also saved as ``cluster.json``).

    Raises:
        ClusterError: a cluster already runs from ``workdir``, or start-up failed.
    """
    workdir = workdir or default_workdir()
    os.makedirs(workdir, exist_ok=True)
    try:
        old = ClusterInfo.load(workdir)
        if _alive(old.jobmanager_pid):
            raise ClusterError(f"a cluster is already running from {workdir} "
                               f"(JobManager pid {old.jobmanager_pid}, REST {old.rest}); "
                               "stop it with `emrflow cluster stop`")
    except ClusterError as exc:
        if "already running" in str(exc):
            raise
    slots = slots or int(config.get("taskmanager.numberOfTaskSlots"))
    rest_port = int(config.get("rest.port")) if rest_port is None else rest_port
    secret = secrets.token_hex(16)
    info_file = os.path.join(workdir, "jobmanager.json")
    if os.path.exists(info_file):
        os.remove(info_file)
    bind = config.get("rest.bind-address")
    args = ["--bind", f"{config.get('jobmanager.rpc.address')}:{config.get('jobmanager.rpc.port')}",
            "--rest-bind", f"{bind}:{rest_port}", "--info-file", info_file,
            "--heartbeat-timeout-ms", str(config.get("heartbeat.timeout"))]
    if config.get("state.savepoints.dir"):
        args += ["--savepoint-dir", str(config.get("state.savepoints.dir"))]
    if config.get("metrics.reporter.prom.port") is not None:
        args += ["--metrics-port", str(config.get("metrics.reporter.prom.port"))]
    token = config.get("rest.auth.token")
    jm_pid = _start_daemon("emrflow.runtime.jobmanager", args, secret, config, workdir, "jobmanager",
                           {"EMRFLOW_REST_TOKEN": token} if token else None)
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(info_file):
        if not _alive(jm_pid):
            log_path = os.path.join(_log_dir(config, workdir), "jobmanager.log")
            with open(log_path, errors="replace") as f:
                last = [ln.strip() for ln in f.read().splitlines() if ln.strip()][-1:]
            raise ClusterError(f"the JobManager exited during start-up: {' '.join(last) or '?'} "
                               f"(log: {log_path})")
        if time.monotonic() > deadline:
            raise ClusterError(f"the JobManager did not start within {timeout_s:.0f} s")
        time.sleep(0.02)
    with open(info_file) as f:
        jm_info = json.load(f)
    rpc_host = config.get("jobmanager.rpc.address")
    rpc = (rpc_host, jm_info["rpc_address"][1])
    rest = (config.get("rest.address") if bind in ("0.0.0.0", "::") else bind, jm_info["rest_address"][1])
    info = ClusterInfo(workdir, secret, rpc, rest, jm_pid, [], jm_info.get("metrics_port"))
    info.save()
    for i in range(taskmanagers):
        info.taskmanager_pids.append(start_taskmanager(config, info.rpc, secret, slots, workdir,
                                                       f"tm-{i}", save_to=None))
    info.save()
    try:
        RestClient(info.rest, token).wait_for_slots(taskmanagers * slots, max(1.0, deadline - time.monotonic()))
    except ClusterError:
        stop_cluster(workdir)
        raise
    return info


def start_taskmanager(config: Configuration, jobmanager: str, secret: str, slots: int,
                      workdir: str | None = None, tm_id: str | None = None,
                      save_to: ClusterInfo | None | str = "auto") -> int:
    """Start one TaskManager in the background, registering with ``jobmanager`` (``host:port``).

    Args:
        config: configuration.
        jobmanager: the JobManager's RPC address.
        secret: the cluster secret.
        slots: task slots.
        workdir: where its pid file and logs go.
        tm_id: its id (default: random).
        save_to: ``"auto"`` records the pid in the workdir's ``cluster.json`` if there is one,
            so ``emrflow cluster stop`` stops it too.

    Returns:
        The TaskManager's pid.
    """
    workdir = workdir or default_workdir()
    os.makedirs(workdir, exist_ok=True)
    tm_id = tm_id or f"tm-{socket.gethostname()}-{secrets.token_hex(3)}"
    pid = _start_daemon("emrflow.runtime.taskmanager",
                        ["--jobmanager", jobmanager, "--slots", str(slots), "--id", tm_id,
                         "--heartbeat-interval-ms", str(config.get("heartbeat.interval"))],
                        secret, config, workdir, f"taskmanager-{tm_id}")
    if save_to == "auto":
        try:
            info = ClusterInfo.load(workdir)
            info.taskmanager_pids.append(pid)
            info.save()
        except ClusterError:
            pass
    return pid


def stop_cluster(workdir: str | None = None, timeout_s: float = 10.0) -> list[int]:
    """Stop the cluster recorded in ``workdir``: ask the JobManager to shut down, then
    terminate and finally kill whatever of its processes is left.

    Returns:
        The pids that were stopped.

    Raises:
        ClusterError: no cluster is recorded there.
    """
    workdir = workdir or default_workdir()
    info = ClusterInfo.load(workdir)
    procs: list[psutil.Process] = []
    for pid in [info.jobmanager_pid, *info.taskmanager_pids]:
        try:
            p = psutil.Process(pid)
            procs.append(p)
            procs.extend(p.children(recursive=True))
        except psutil.Error:
            pass
    try:
        RestClient(info.rest, os.environ.get("EMRFLOW_REST_TOKEN"), timeout_s=5).shutdown()
    except ClusterError:
        pass  # not reachable: terminate below
    _, alive = psutil.wait_procs(procs, timeout=timeout_s / 2)
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(alive, timeout=timeout_s / 2)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=2)
    for name in os.listdir(workdir):
        if name.endswith(".pid") or name in ("cluster.json", "jobmanager.json"):
            os.remove(os.path.join(workdir, name))
    return [p.pid for p in procs]
