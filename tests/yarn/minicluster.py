"""A real YARN for the tests: Hadoop's MiniYARNCluster (one ResourceManager, two NodeManagers) on a
MiniDFSCluster (HDFS is the default file system, as on EMR; skein 0.8.2 cannot submit with a
``file:///`` one) in one JVM, started from the Maven Central jars in ``tests/yarn/target/lib``
(``.ci/fetch-yarn-jars``).

The JVM runs ``tests/yarn/MiniYarn.java`` with a scrubbed environment (only ``PATH``, ``JAVA_HOME``,
``LANG``, ``HOME``, ``TZ``, ``HADOOP_CONF_DIR`` and ``JDK_JAVA_OPTIONS``), so its containers see
what containers on a real cluster see and nothing of the test process (no ``VIRTUAL_ENV``, no
``PYTHONPATH``, the system ``python3`` first on ``PATH``). Clients get :attr:`MiniYarnCluster.env`:
``PATH`` with the ``yarn`` shim (``tests/yarn/bin/yarn``), ``HADOOP_CONF_DIR``, ``JAVA_HOME``,
``SKEIN_CONFIG``, ``JDK_JAVA_OPTIONS``.

By hand (prints the exports, runs until Ctrl-C)::

    python tests/yarn/minicluster.py [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Optional

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
LIB_DIR = os.path.join(HERE, "target", "lib")
CLASSES_DIR = os.path.join(HERE, "target", "classes")
LAUNCHER_SOURCE = os.path.join(HERE, "MiniYarn.java")
SHIM_DIR = os.path.join(HERE, "bin")

#: What a NodeManager on a plain Linux host has on PATH; containers inherit it (no virtualenv).
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

#: Java 17 closes the JDK's internals; Hadoop, Guice and skein's ApplicationMaster reflect into
#: them (the list Spark's JavaModuleOptions uses). Given to the cluster JVM, to clients' JVMs and,
#: through the NodeManagers' env-whitelist, to containers' JVMs.
ADD_OPENS = " ".join(["-XX:+IgnoreUnrecognizedVMOptions"] + [
    f"--add-opens=java.base/{pkg}=ALL-UNNAMED" for pkg in (
        "java.lang", "java.lang.invoke", "java.lang.reflect", "java.io", "java.net", "java.nio",
        "java.util", "java.util.concurrent", "java.util.concurrent.atomic", "jdk.internal.ref",
        "sun.nio.ch", "sun.nio.cs", "sun.security.action", "sun.util.calendar")])

#: The cluster JVM: small heap, one GC thread, quick JIT (2 cores shared with the tests).
CLUSTER_JVM_OPTIONS = ["-Xmx768m", "-Xss512k", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                       "-XX:ReservedCodeCacheSize=64m"]


class MiniYarnError(RuntimeError):
    """The MiniYARNCluster could not be started or stopped (the message names the log to read)."""


def java_home() -> Optional[str]:
    """The JDK to run: ``$JAVA_HOME``, else the one whose ``java`` is on ``PATH``.

    Returns:
        The JDK's directory, or None when there is no Java.
    """
    home = os.environ.get("JAVA_HOME")
    if home and os.path.isfile(os.path.join(home, "bin", "java")):
        return home
    java = shutil.which("java")
    if not java:
        return None
    return os.path.dirname(os.path.dirname(os.path.realpath(java)))


def unavailable_reason() -> Optional[str]:
    """Why the MiniYARNCluster cannot run here, or None when it can.

    Returns:
        A sentence naming what is missing (the jar directory, Java), or None.
    """
    if not os.path.isdir(LIB_DIR) or not any(n.startswith("hadoop-minicluster-")
                                             for n in os.listdir(LIB_DIR)):
        return f"no MiniYARNCluster jars in {LIB_DIR}: run .ci/fetch-yarn-jars (needs Maven)"
    if java_home() is None:
        return "no Java: set JAVA_HOME or put java on PATH (MiniYARNCluster needs Java 17)"
    return None


class MiniYarnCluster:
    """A MiniYARNCluster in a child JVM, with the configuration and environment its clients need.

    Args:
        work_dir: Directory for everything the cluster writes: ``conf/`` (``HADOOP_CONF_DIR``),
            ``cluster/`` (NodeManagers' local and log dirs: running containers' logs), ``dfs/``
            (HDFS's blocks), ``skein/`` (``SKEIN_CONFIG``), ``minicluster.log``,
            ``launcher.out``/``launcher.err``.
        nodemanagers: Number of NodeManagers.
        nm_memory_mb: Memory each NodeManager offers to containers, in MiB (also the maximum
            allocation).
        nm_vcores: Vcores each NodeManager offers.
        nm_web: Start the NodeManagers' web servers (their REST API serves the logs of running
            containers, as on a real cluster); False saves a few seconds of start per NodeManager.
        start_timeout_s: Seconds to wait for the ResourceManager and every NodeManager.
        stop_timeout_s: Seconds to wait for a clean stop before the JVM is killed.

    Attributes:
        conf_dir: The ``HADOOP_CONF_DIR`` (``yarn-site.xml``, ``core-site.xml``) once started.
        rm_address: The ResourceManager's client address (``host:port``) once started.
        web_address: The ResourceManager's web address (``host:port``) once started.
        default_fs: The default file system's URI (``hdfs://host:port``) once started.
        app_log_dir: The HDFS directory where log aggregation puts finished applications'
            container logs (``yarn logs -applicationId ID`` reads them).
        start_seconds: Wall time from launching the JVM to ready, in seconds.
    """

    def __init__(self, work_dir: str, *, nodemanagers: int = 2, nm_memory_mb: int = 4096,
                 nm_vcores: int = 4, nm_web: bool = True, start_timeout_s: float = 180,
                 stop_timeout_s: float = 30) -> None:
        self.work_dir = os.path.abspath(work_dir)
        self.conf_dir = os.path.join(self.work_dir, "conf")
        self.nodemanagers = nodemanagers
        self.nm_memory_mb = nm_memory_mb
        self.nm_vcores = nm_vcores
        self.nm_web = nm_web
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.rm_address: Optional[str] = None
        self.web_address: Optional[str] = None
        self.default_fs: Optional[str] = None
        self.app_log_dir = "/app-logs"
        self.start_seconds: Optional[float] = None
        self._java_home = java_home()
        self._proc: Optional[subprocess.Popen] = None

    # -- environments ------------------------------------------------------------------

    def cluster_env(self) -> dict[str, str]:
        """The scrubbed environment of the cluster JVM, which its containers inherit in part.

        Returns:
            Only PATH (the system's), JAVA_HOME, LANG, HOME, TZ, HADOOP_CONF_DIR, JDK_JAVA_OPTIONS.
        """
        env = {
            "PATH": SYSTEM_PATH,
            "JAVA_HOME": self._java_home or "",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": os.environ.get("HOME", self.work_dir),
            "HADOOP_CONF_DIR": self.conf_dir,
            "JDK_JAVA_OPTIONS": ADD_OPENS,
        }
        if os.environ.get("TZ"):
            env["TZ"] = os.environ["TZ"]
        return env

    @property
    def env(self) -> dict[str, str]:
        """What a client of this cluster adds to its environment (skein, ``yarn``, emrflow's CLI).

        Returns:
            PATH (the ``yarn`` shim first, then the caller's PATH), HADOOP_CONF_DIR, JAVA_HOME,
            SKEIN_CONFIG (a directory of this cluster, so no ``~/.skein`` is touched),
            JDK_JAVA_OPTIONS (Java 17's ``--add-opens`` for skein's driver).
        """
        return {
            "PATH": SHIM_DIR + os.pathsep + os.environ.get("PATH", SYSTEM_PATH),
            "HADOOP_CONF_DIR": self.conf_dir,
            "JAVA_HOME": self._java_home or "",
            "SKEIN_CONFIG": os.path.join(self.work_dir, "skein"),
            "JDK_JAVA_OPTIONS": ADD_OPENS,
        }

    # -- life cycle --------------------------------------------------------------------

    def launcher_command(self) -> list[str]:
        """The java command line: the compiled launcher when it is up to date, else source launch."""
        java = os.path.join(self._java_home or "", "bin", "java")
        compiled = os.path.join(CLASSES_DIR, "MiniYarn.class")
        options = ["--conf-dir", self.conf_dir, "--work-dir", self.work_dir, "--lib-dir", LIB_DIR,
                   "--nodemanagers", str(self.nodemanagers), "--nm-memory-mb", str(self.nm_memory_mb),
                   "--nm-vcores", str(self.nm_vcores), "--nm-web", "1" if self.nm_web else "0",
                   "--start-timeout-s", str(int(self.start_timeout_s))]
        jvm = CLUSTER_JVM_OPTIONS + [f"-Djava.io.tmpdir={os.path.join(self.work_dir, 'tmp')}"]
        if os.path.exists(compiled) and os.path.getmtime(compiled) >= os.path.getmtime(LAUNCHER_SOURCE):
            return [java, *jvm, "-cp", f"{CLASSES_DIR}:{LIB_DIR}/*", "MiniYarn", *options]
        return [java, *jvm, "-cp", f"{LIB_DIR}/*", LAUNCHER_SOURCE, *options]

    def start(self) -> "MiniYarnCluster":
        """Starts the JVM and waits until the ResourceManager and every NodeManager are up.

        Returns:
            self, with :attr:`rm_address`, :attr:`web_address`, :attr:`start_seconds` set and the
            client configuration written to :attr:`conf_dir`.

        Raises:
            MiniYarnError: Jars or Java missing, the JVM exited, or it was not ready within
                ``start_timeout_s``; the message quotes the end of its log. The JVM is stopped.
        """
        reason = unavailable_reason()
        if reason:
            raise MiniYarnError(reason)
        if self._proc is not None:
            raise MiniYarnError("MiniYarnCluster.start() called twice")
        for sub in ("conf", "tmp", "skein"):
            os.makedirs(os.path.join(self.work_dir, sub), exist_ok=True)
        out_path = os.path.join(self.work_dir, "launcher.out")
        t0 = time.monotonic()
        with open(out_path, "wb") as out, open(os.path.join(self.work_dir, "launcher.err"), "wb") as err:
            # stdin stays open: the JVM stops the cluster when it closes (also if this process dies).
            self._proc = subprocess.Popen(self.launcher_command(), cwd=self.work_dir, env=self.cluster_env(),
                                          stdin=subprocess.PIPE, stdout=out, stderr=err,
                                          start_new_session=True)
        deadline = t0 + self.start_timeout_s
        while True:
            ready = self._ready_line(out_path)
            if ready is not None:
                break
            status = self._proc.poll()
            if status is not None:
                self._proc = None
                raise MiniYarnError(f"the MiniYARNCluster JVM exited with status {status} before it was "
                                    f"ready; {self._log_tail()}")
            if time.monotonic() > deadline:
                tail = self._log_tail()
                self.stop()
                raise MiniYarnError(f"the MiniYARNCluster was not ready within {self.start_timeout_s:.0f} s "
                                    f"(start_timeout_s); {tail}")
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - t0
        self.rm_address = ready["rm_address"]
        self.web_address = ready["web_address"]
        self.default_fs = ready["default_fs"]
        self.app_log_dir = ready.get("app_log_dir") or self.app_log_dir
        return self

    @staticmethod
    def _ready_line(path: str) -> Optional[dict]:
        with open(path, "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                if line.startswith("MINIYARN READY "):
                    return json.loads(line[len("MINIYARN READY "):])
        return None

    def _log_tail(self, lines: int = 15) -> str:
        parts = []
        for name in ("launcher.err", "minicluster.log"):
            path = os.path.join(self.work_dir, name)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace").splitlines()
                interesting = [ln for ln in text if "Picked up JDK_JAVA_OPTIONS" not in ln][-lines:]
                parts.append(f"{path} ends with:\n" + "\n".join(interesting))
        return "\n".join(parts) if parts else f"no log in {self.work_dir}"

    @property
    def pid(self) -> Optional[int]:
        """The cluster JVM's process id, None when not running."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def container_processes(self) -> list[psutil.Process]:
        """Processes started by this cluster's NodeManagers that are still running.

        A container process runs in (or names, or has in ``LOCAL_DIRS``) a NodeManager local
        directory under :attr:`work_dir`; that holds for its children too unless they move away.
        """
        marker = os.path.join(self.work_dir, "cluster")
        jvm = self.pid
        found = []
        for p in psutil.process_iter(["pid", "cmdline"]):
            if p.pid in (jvm, os.getpid()):
                continue
            try:
                if any(marker in part for part in (p.info["cmdline"] or [])):
                    found.append(p)
                    continue
                if p.cwd().startswith(marker):
                    found.append(p)
                    continue
                if marker in p.environ().get("LOCAL_DIRS", ""):
                    found.append(p)
            except psutil.Error:
                continue
        return found

    def stop(self) -> None:
        """Stops the cluster: closes the JVM's stdin (it stops the NodeManagers, which kill their
        containers), after ``stop_timeout_s`` kills its process group, then kills any container
        process that is left. Safe to call twice.

        Raises:
            MiniYarnError: A container process survived SIGKILL (its pid and command line named).
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._kill_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    self._kill_group(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            # the JVM's own children (jetty, shell helpers) share its process group
            self._kill_group(proc.pid, signal.SIGKILL)
        left = self.container_processes()
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        gone, alive = psutil.wait_procs(left, timeout=10)
        if alive:
            raise MiniYarnError("container processes survived the MiniYARNCluster's stop: "
                                + "; ".join(f"{p.pid} {p.cmdline()}" for p in alive))

    @staticmethod
    def _kill_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> "MiniYarnCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Optional[list[str]] = None) -> int:
    """Starts a MiniYARNCluster, prints the exports a client needs, runs until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", help="directory for the cluster's state (default: a new temporary one)")
    parser.add_argument("--nodemanagers", type=int, default=2)
    parser.add_argument("--nm-memory-mb", type=int, default=4096)
    parser.add_argument("--nm-vcores", type=int, default=4)
    parser.add_argument("--no-nm-web", dest="nm_web", action="store_false",
                        help="no NodeManager web servers (starts faster; no live container logs)")
    args = parser.parse_args(argv)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="miniyarn-")
    cluster = MiniYarnCluster(work_dir, nodemanagers=args.nodemanagers, nm_memory_mb=args.nm_memory_mb,
                              nm_vcores=args.nm_vcores, nm_web=args.nm_web)
    try:
        cluster.start()
    except MiniYarnError as exc:
        print(f"minicluster: {exc}", file=sys.stderr)
        return 1
    def interrupt(*_):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        print(f"# MiniYARNCluster up in {cluster.start_seconds:.1f} s: ResourceManager {cluster.rm_address}, "
              f"web UI http://{cluster.web_address}, default file system {cluster.default_fs}, "
              f"state in {work_dir}")
        for key, value in cluster.env.items():
            print(f"export {key}='{value}'")
        print("# Ctrl-C stops the cluster", flush=True)
        while cluster.pid is not None:
            time.sleep(1)
        print("minicluster: the cluster JVM exited; see " + os.path.join(work_dir, "minicluster.log"),
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
