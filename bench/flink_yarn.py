"""Apache Flink's own YARN client, for bench_yarn.py's comparison with emrflow on the same
MiniYARNCluster.

Flink comes from PyPI: ``apache-flink`` (``pyflink/bin``, ``pyflink/conf``) and
``apache-flink-libraries`` (``pyflink/lib``, ``opt``, ``plugins``) hold a whole Flink
distribution. They are installed with ``--no-deps`` into the cached virtual environment
``bench/.cache/flink-venv`` on first use: the Java command-line client needs the jars and
scripts only, not PyFlink's Python dependencies (Apache Beam, pandas, pyarrow). The job is
``bench/flink/TrivialJob.java`` (the same trivial bounded job as emrflow's), compiled with the
JDK's ``javac`` against the installed ``flink-dist`` jar into ``bench/.cache/flink-job``.

By hand (installs, builds, prints the distribution's directory)::

    python bench/flink_yarn.py
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".cache")
VENV = os.path.join(CACHE, "flink-venv")
JOB_DIR = os.path.join(CACHE, "flink-job")
JOB_SOURCE = os.path.join(HERE, "flink", "TrivialJob.java")
#: Flink 1.20 is the last line with ``-t yarn-per-job`` (removed in 2.0); its wheels are for
#: CPython 3.8 to 3.11.
FLINK_SPEC = "1.20.*"
PYTHONS = ("3.11", "3.10", "3.9", "3.8")
#: Flink's smallest comfortable process sizes (a 512m TaskManager leaves no room for network
#: buffers and managed memory after the 256m metaspace and 192m JVM overhead).
MEMORY = ["-Djobmanager.memory.process.size=1024m", "-Dtaskmanager.memory.process.size=1024m"]


class FlinkUnavailable(RuntimeError):
    """Flink's client cannot run here; the message says what is missing."""


def _python() -> str:
    """An interpreter that apache-flink 1.20 has wheels for: this one, else python3.X on PATH."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" in PYTHONS:
        return sys.executable
    for version in PYTHONS:
        found = shutil.which(f"python{version}")
        if found:
            return found
    raise FlinkUnavailable(f"apache-flink {FLINK_SPEC} has wheels for Python {', '.join(PYTHONS)} only; "
                           f"this is {sys.version.split()[0]} and no python3.8-3.11 is on PATH")


def flink_home(install: bool = True) -> str:
    """The Flink distribution (``.../site-packages/pyflink``), installed on first use.

    Args:
        install: Create the virtual environment and pip-install Flink when it is missing.

    Returns:
        The directory holding ``bin/flink``, ``lib/``, ``conf/``.

    Raises:
        FlinkUnavailable: Not installed and ``install`` is False, or venv/pip failed (pip's
            last lines quoted).
    """
    found = glob.glob(os.path.join(VENV, "lib", "python3.*", "site-packages", "pyflink", "bin", "flink"))
    if found and glob.glob(os.path.join(os.path.dirname(os.path.dirname(found[0])), "lib", "flink-dist-*.jar")):
        return os.path.dirname(os.path.dirname(found[0]))
    if not install:
        raise FlinkUnavailable(f"no Flink in {VENV} (run bench/flink_yarn.py)")
    python = _python()
    print(f"installing Flink {FLINK_SPEC} from PyPI into {VENV} (once; about 250 MB)", flush=True)
    steps = [[python, "-m", "venv", "--clear", VENV],
             [os.path.join(VENV, "bin", "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              "--no-deps", f"apache-flink=={FLINK_SPEC}", f"apache-flink-libraries=={FLINK_SPEC}"]]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
            raise FlinkUnavailable(f"`{' '.join(cmd)}` failed with status {proc.returncode}:\n{tail}")
    return flink_home(install=False)


def flink_version(home: str) -> str:
    """Flink's version, from the name of ``lib/flink-dist-VERSION.jar``."""
    jar = glob.glob(os.path.join(home, "lib", "flink-dist-*.jar"))[0]
    return os.path.basename(jar)[len("flink-dist-"):-len(".jar")]


def job_jar(home: str, java_home: str) -> str:
    """``trivial-job.jar``, compiled from ``bench/flink/TrivialJob.java`` when missing or older
    than its source or than the installed Flink.

    Raises:
        FlinkUnavailable: No ``javac`` in ``java_home``, or the compilation failed.
    """
    dist = glob.glob(os.path.join(home, "lib", "flink-dist-*.jar"))[0]
    jar = os.path.join(JOB_DIR, "trivial-job.jar")
    if os.path.exists(jar) and os.path.getmtime(jar) >= max(os.path.getmtime(JOB_SOURCE), os.path.getmtime(dist)):
        return jar
    javac, jar_tool = (os.path.join(java_home, "bin", name) for name in ("javac", "jar"))
    if not os.path.exists(javac):
        raise FlinkUnavailable(f"no javac in {java_home}/bin (a JDK, not a JRE, builds {JOB_SOURCE})")
    classes = os.path.join(JOB_DIR, "classes")
    shutil.rmtree(classes, ignore_errors=True)
    os.makedirs(classes)
    for cmd in ([javac, "--release", "11", "-nowarn", "-cp", dist, "-d", classes, JOB_SOURCE],
                [jar_tool, "cfe", jar, "TrivialJob", "-C", classes, "."]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise FlinkUnavailable(f"`{' '.join(cmd)}` failed:\n{proc.stdout}{proc.stderr}")
    return jar


def client_env(home: str, cluster_env: dict, work: str) -> dict:
    """The Flink client's environment for the MiniYARNCluster whose client environment is
    ``cluster_env`` (PATH with the ``yarn`` shim, HADOOP_CONF_DIR, JAVA_HOME, JDK_JAVA_OPTIONS).

    Adds HADOOP_CLASSPATH (``yarn classpath``: the cluster's conf dir and Hadoop's jars),
    FLINK_CONF_DIR (a copy of the distribution's ``conf/`` under ``work``), FLINK_LOG_DIR
    (``work/log``, the client's log), HOME (``work``).
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HADOOP_", "YARN_", "EMRFLOW_", "FLINK_", "SKEIN_"))}
    env.update(cluster_env)
    classpath = subprocess.run(["yarn", "classpath"], env=env, capture_output=True, text=True, check=True)
    conf = os.path.join(work, "conf")
    if not os.path.isdir(conf):
        shutil.copytree(os.path.join(home, "conf"), conf)
    os.makedirs(os.path.join(work, "log"), exist_ok=True)
    env.update(HADOOP_CLASSPATH=classpath.stdout.strip(), FLINK_CONF_DIR=conf,
               FLINK_LOG_DIR=os.path.join(work, "log"), HOME=work)
    return env


def per_job_command(home: str, jar: str, work: str) -> list[str]:
    """``flink run -t yarn-per-job`` (attached) of ``jar``, sized for the MiniYARNCluster."""
    return [os.path.join(home, "bin", "flink"), "run", "-t", "yarn-per-job", *MEMORY,
            "-Dyarn.application.name=flink-trivial",
            # a yarn-session.sh elsewhere on this host must not redirect the job to its session
            f"-Dyarn.properties-file.location={work}",
            # Hadoop's shutdown hook reads its configuration through the closed user classloader
            # (FLINK-19916), which only prints a stack trace at the end
            "-Dclassloader.check-leaked-classloader=false",
            jar]


WEB_INTERFACE = re.compile(r"Found Web Interface (\S+) of application '(application_\d+_\d+)'")


def web_interface(client_output: str) -> Optional[tuple[str, str]]:
    """``(host:port of the JobManager's REST, application id)`` once the client printed them."""
    m = WEB_INTERFACE.search(client_output)
    return (m.group(1), m.group(2)) if m else None


#: Client log lines (printed on the console too) that mark the deployment's phases.
PHASES = {
    "application submitted": "Submitting application master",
    "JobManager up": "YARN application has been deployed successfully",
}
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def phases(client_output: str) -> dict[str, float]:
    """The epoch seconds of the :data:`PHASES` found in the client's output (its log lines carry
    local wall-clock times with milliseconds)."""
    found: dict[str, float] = {}
    for line in client_output.splitlines():
        m = LOG_TIME.match(line)
        if not m:
            continue
        for name, text in PHASES.items():
            if name not in found and text in line:
                found[name] = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
    return found


def _get(rest: str, path: str) -> dict:
    with urllib.request.urlopen(f"http://{rest}{path}", timeout=2) as r:
        return json.load(r)


def tasks_running_at(rest: str) -> Optional[float]:
    """When every task of the JobManager's job reached RUNNING, in epoch seconds, from Flink's
    REST API (``/jobs/overview``, then each vertex's ``subtasktimes``, whose ``RUNNING``
    timestamps the JobManager keeps after the tasks finished); None while some task has not.

    Raises:
        OSError: The JobManager did not answer (not up yet, or gone).
    """
    for job in _get(rest, "/jobs/overview")["jobs"]:
        tasks = job["tasks"]
        if tasks["total"] == 0 or tasks["running"] + tasks["finished"] < tasks["total"]:
            return None
        latest = 0.0
        for vertex in _get(rest, f"/jobs/{job['jid']}")["vertices"]:
            for sub in _get(rest, f"/jobs/{job['jid']}/vertices/{vertex['id']}/subtasktimes")["subtasks"]:
                running = sub["timestamps"].get("RUNNING", 0)
                if running <= 0:
                    return None
                latest = max(latest, running / 1000)
        return latest
    return None


if __name__ == "__main__":
    try:
        home = flink_home()
        print(home, flink_version(home), job_jar(home, os.environ.get("JAVA_HOME") or
                                                  os.path.dirname(os.path.dirname(os.path.realpath(
                                                      shutil.which("javac") or "/usr/bin/javac")))))
    except FlinkUnavailable as exc:
        sys.exit(f"flink_yarn: {exc}")
