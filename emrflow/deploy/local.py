"""The ``local`` target: an embedded cluster of real processes, started for one job.

:class:`LocalCluster` starts a JobManager and ``local.number-taskmanager``
TaskManagers (each with its slot processes) as children of the client, and
stops them again; the children die with the client even if it is killed
(Linux ``PR_SET_PDEATHSIG``), and :meth:`LocalCluster.stop` kills whatever is
left of the process tree. Mirrors Flink's ``MiniCluster``.
"""

from __future__ import annotations

import logging
import math
import secrets
import socket
import subprocess
import threading
import time

import psutil

from emrflow.config import Configuration
from emrflow.deploy.client import ClusterClient, wait_until
from emrflow.errors import ClusterError
from emrflow.runtime.process import spawn

log = logging.getLogger("emrflow.local")


class LocalCluster:
    """A JobManager and TaskManagers on this host, as child processes.

    Args:
        num_taskmanagers: TaskManager processes to start.
        slots_per_taskmanager: task slots (slot processes) per TaskManager.
        config: configuration (``heartbeat.*``, ``python.executable``); default: defaults.
        startup_timeout_s: how long to wait for every slot to register, in seconds.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, num_taskmanagers: int = 1, slots_per_taskmanager: int = 1,
                 config: Configuration | None = None, startup_timeout_s: float = 60.0):
        if num_taskmanagers < 1 or slots_per_taskmanager < 1:
            raise ValueError("a local cluster needs at least one TaskManager with one slot")
        self.num_taskmanagers = num_taskmanagers
        self.slots_per_taskmanager = slots_per_taskmanager
        self.config = config or Configuration.load()
        self.startup_timeout_s = startup_timeout_s
        self.secret = secrets.token_hex(16)
        self.address: tuple[str, int] | None = None
        self.processes: list[subprocess.Popen] = []
        self._client: ClusterClient | None = None
        self._taskmanagers: dict[str, subprocess.Popen] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        #: TaskManagers started to replace ones that died, as ``(id, exit status)``
        self.replaced: list[tuple[str, int]] = []

    @classmethod
    def for_parallelism(cls, config: Configuration, parallelism: int) -> "LocalCluster":
        """Return a cluster with enough slots for a job of ``parallelism`` (at least the configured slots)."""
        n_tm = int(config.get("local.number-taskmanager"))
        slots = max(int(config.get("taskmanager.numberOfTaskSlots")), math.ceil(parallelism / n_tm))
        return cls(n_tm, slots, config)

    def start(self) -> "LocalCluster":
        """Start the processes and wait until every slot has registered.

        Raises:
            ClusterError: a process died or the slots did not register in time.
        """
        python = self.config.get("python.executable")
        listener = socket.create_server(("127.0.0.1", 0))
        self.address = ("127.0.0.1", listener.getsockname()[1])
        try:
            self.processes.append(spawn(
                "emrflow.runtime.jobmanager",
                ["--listen-fd", str(listener.fileno()), "--die-with-parent",
                 "--heartbeat-timeout-ms", str(self.config.get("heartbeat.timeout"))],
                self.secret, python, new_session=True, pass_fds=(listener.fileno(),)))
            for i in range(self.num_taskmanagers):
                self._start_taskmanager(f"tm-{i}")
        finally:
            listener.close()
        try:
            self._client = ClusterClient(self.address, self.secret)
            total = self.num_taskmanagers * self.slots_per_taskmanager

            def ready() -> bool:
                dead = [p for p in self.processes if p.poll() is not None]
                if dead:
                    raise ClusterError(f"a cluster process exited during start-up "
                                       f"(pid {dead[0].pid}, exit status {dead[0].returncode}); "
                                       "see its messages above")
                return self._client.cluster_status()["slots_total"] >= total
            wait_until(ready, self.startup_timeout_s, f"{total} task slots to register", poll_s=0.01)
        except BaseException:
            self.stop()
            raise
        threading.Thread(target=self._replace_dead_taskmanagers, daemon=True,
                         name="taskmanager-watch").start()
        return self

    def _start_taskmanager(self, tm_id: str) -> None:
        jm_address = f"{self.address[0]}:{self.address[1]}"
        proc = spawn("emrflow.runtime.taskmanager",
                     ["--jobmanager", jm_address, "--slots", str(self.slots_per_taskmanager),
                      "--id", tm_id, "--die-with-parent",
                      "--heartbeat-interval-ms", str(self.config.get("heartbeat.interval"))],
                     self.secret, self.config.get("python.executable"), new_session=True)
        with self._lock:
            self.processes.append(proc)
            self._taskmanagers[tm_id] = proc

    def _lost_taskmanagers(self, watcher: ClusterClient | None, registered: set) -> list[str]:
        """Ids of TaskManagers whose process runs but that the JobManager declared lost
        (no heartbeat for ``heartbeat.timeout``): they are killed, then replaced."""
        if watcher is None:
            return []
        try:
            now = {tm["id"] for tm in watcher.cluster_status()["taskmanagers"]}
        except (ClusterError, OSError):  # the cluster is stopping
            return []
        registered |= now
        with self._lock:
            return [i for i, p in self._taskmanagers.items()
                    if i in registered and i not in now and p.poll() is None]

    def _replace_dead_taskmanagers(self) -> None:
        """Start a new TaskManager for each one that exits, or is declared lost, while the cluster runs.

        Flink's active resource managers (YARN, Kubernetes) do the same, so a job
        with a restart strategy gets its slots back after a TaskManager is lost. A
        TaskManager the JobManager gave up on (say, a frozen process) is killed first,
        with its slot processes, so it cannot keep working for a cancelled attempt.
        """
        registered: set = set()
        try:
            watcher: ClusterClient | None = ClusterClient(self.address, self.secret)
        except ClusterError:
            watcher = None
        try:
            self._watch(watcher, registered)
        finally:
            if watcher is not None:
                watcher.close()

    def _watch(self, watcher: ClusterClient | None, registered: set) -> None:
        n = tick = 0
        while not self._stopping.wait(0.2):
            tick += 1
            if tick % 5 == 0:
                for tm_id in self._lost_taskmanagers(watcher, registered):
                    log.warning("TaskManager %s was declared lost by the JobManager; killing it", tm_id)
                    _kill_tree(self._taskmanagers[tm_id].pid)
            with self._lock:
                dead = [(i, p) for i, p in self._taskmanagers.items() if p.poll() is not None]
            for tm_id, proc in dead:
                if self._stopping.is_set():
                    return
                n += 1
                base = tm_id.split("-r")[0]
                new_id = f"{base}-r{n}"
                log.warning("TaskManager %s (pid %d) exited with status %s; starting %s in its place",
                            tm_id, proc.pid, proc.returncode, new_id)
                with self._lock:
                    self._taskmanagers.pop(tm_id, None)
                    self.processes.remove(proc)
                self.replaced.append((tm_id, proc.returncode))
                registered.discard(tm_id)
                try:
                    self._start_taskmanager(new_id)
                except OSError as exc:
                    log.error("cannot start a replacement TaskManager: %s", exc)

    def client(self) -> ClusterClient:
        """Return the client connection of this cluster."""
        if self._client is None:
            raise ClusterError("the local cluster is not running")
        return self._client

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every process of the cluster; kill what does not stop within ``timeout_s``."""
        self._stopping.set()
        tree: list[psutil.Process] = []
        for p in self.processes:
            try:
                proc = psutil.Process(p.pid)
                tree.append(proc)
                tree.extend(proc.children(recursive=True))
            except psutil.Error:
                pass
        if self._client is not None:
            try:
                self._client.conn.request("shutdown")
            except ClusterError:
                pass
            self._client.close()
            self._client = None
        deadline = time.monotonic() + timeout_s
        for p in self.processes:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        _, alive = psutil.wait_procs(tree, timeout=max(0.0, deadline - time.monotonic()))
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=2)
        for p in self.processes:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.processes.clear()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def execute(job_graph, config: Configuration, context=None):
    """Run ``job_graph`` on a fresh local cluster sized for it, then stop the cluster.

    Raises:
        ConfigError: detached execution was asked for (nothing would keep the cluster).
    """
    if not bool(config.get("execution.attached")):
        from emrflow.errors import ConfigError
        raise ConfigError("detached execution (-d) needs a cluster that outlives the client; "
                          "the local target stops its cluster when the job ends",
                          key="execution.attached")
    with LocalCluster.for_parallelism(config, job_graph.max_vertex_parallelism) as cluster:
        return cluster.client().run_job(job_graph, context)


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and its descendants (a stopped process dies too)."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) + [root]
    except psutil.Error:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
