"""YARN through skein: session, per-job and application clusters (Flink on YARN).

The client side: it builds one ``skein.ApplicationSpec`` per YARN application —
``master`` runs the JobManager in the ApplicationMaster container, the service
``taskmanager`` runs TaskManagers (see :mod:`emrflow.deploy.yarn_containers`) —
submits it, finds the JobManager through the application's key-value store and
talks to it over REST. A started session is recorded in
``~/.emrflow/yarn-session.json`` (Flink's ``.yarn-properties-<user>``) so later
commands find it.

Config keys (Flink's names): ``yarn.application.name``, ``yarn.application.queue``,
``yarn.application.node-label``, ``yarn.tags``, ``yarn.application-attempts``,
``jobmanager.memory.process.size``, ``taskmanager.memory.process.size``,
``taskmanager.numberOfTaskSlots``, ``yarn.containers.vcores``, ``yarn.ship-files``,
``yarn.ship-archives``, ``python.executable``, ``resourcemanager.taskmanager-timeout``,
``yarn.application.id``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import time
from typing import Any

from emrflow.config import Configuration
from emrflow.deploy.yarn_containers import KV_REST, KV_STATUS, KV_TOKEN
from emrflow.errors import ClusterError, ConfigError

SESSION_FILE = os.path.join(os.path.expanduser("~"), ".emrflow", "yarn-session.json")


def check_hadoop() -> None:
    """Fail with a clear message when this machine cannot reach YARN.

    Raises:
        ClusterError: no ``yarn`` command or no ``HADOOP_CONF_DIR``/``YARN_CONF_DIR``.
    """
    missing = []
    if shutil.which("yarn") is None:
        missing.append("no `yarn` command on PATH")
    if not (os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")):
        missing.append("HADOOP_CONF_DIR is not set")
    if missing:
        raise ClusterError("cannot reach YARN: " + " and ".join(missing) +
                           " (run on a Hadoop client or EMR master node; --dry-run prints the "
                           "application spec without YARN)")


def _mib(config: Configuration, key: str, override: Any = None) -> int:
    from emrflow.config import parse_memory_bytes
    value = parse_memory_bytes(override) if override is not None else int(config.get(key))
    mib = value // 2**20
    if mib < 256:
        raise ConfigError(f"{key}: expected at least 256m for a YARN container, got {mib}m", key=key)
    return mib


def _files(config: Configuration, extra: dict[str, str] | None) -> dict:
    import skein
    files = {}
    for path in config.get("yarn.ship-files") or ():
        if not os.path.exists(path):
            raise ConfigError(f"yarn.ship-files: {path} does not exist", key="yarn.ship-files")
        files[os.path.basename(path.rstrip("/"))] = skein.File(source=os.path.abspath(path))
    for path in config.get("yarn.ship-archives") or ():
        if not os.path.exists(path):
            raise ConfigError(f"yarn.ship-archives: {path} does not exist", key="yarn.ship-archives")
        name = os.path.basename(path)
        for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        files[name] = skein.File(source=os.path.abspath(path), type="archive")
    for name, path in (extra or {}).items():
        files[name] = skein.File(source=os.path.abspath(path))
    return files


def build_spec(config: Configuration, mode: str, *, name: str | None = None, queue: str | None = None,
               taskmanagers: int = 1, slots: int | None = None, jobmanager_memory: str | None = None,
               taskmanager_memory: str | None = None, taskmanager_vcores: int | None = None,
               files: dict[str, str] | None = None, job_args: list[str] | None = None):
    """Build the skein ``ApplicationSpec`` of an emrflow application.

    Args:
        config: configuration (YARN keys, memory sizes, ``python.executable``).
        mode: ``session``, ``per-job`` or ``application``.
        name: application name (default ``yarn.application.name`` or "emrflow <mode>").
        queue: YARN queue (default ``yarn.application.queue``).
        taskmanagers: initial TaskManager containers (sessions); per-job clusters start none
            and ask for what the job needs.
        slots: task slots per TaskManager (default ``taskmanager.numberOfTaskSlots``).
        jobmanager_memory, taskmanager_memory: container memory like ``"1024m"``.
        taskmanager_vcores: vcores per TaskManager container (default ``yarn.containers.vcores``).
        files: extra files to localize, ``{name in the container: local path}``.
        job_args: for ``application`` mode, the job script (its localized name) and arguments.

    Returns:
        A ``skein.ApplicationSpec`` (validated by skein itself).

    Raises:
        ConfigError: a bad size, count or path, naming the key.
    """
    import skein
    if mode not in ("session", "per-job", "application"):
        raise ConfigError(f"unknown YARN mode {mode!r}; expected session, per-job or application")
    slots = slots or int(config.get("taskmanager.numberOfTaskSlots"))
    if taskmanagers < 0:
        raise ConfigError(f"--taskmanagers must be >= 0, got {taskmanagers}")
    python = config.get("python.executable") or "python3"
    jm_mib = _mib(config, "jobmanager.memory.process.size", jobmanager_memory)
    tm_mib = _mib(config, "taskmanager.memory.process.size", taskmanager_memory)
    vcores = taskmanager_vcores or int(config.get("yarn.containers.vcores"))
    idle = int(config.get("resourcemanager.taskmanager-timeout"))
    heartbeat_timeout = int(config.get("heartbeat.timeout"))
    master_cmd = [python, "-m", "emrflow.deploy.yarn_containers", "master", "--mode", mode,
                  "--slots", str(slots), "--taskmanagers", str(taskmanagers),
                  "--idle-timeout-ms", str(idle), "--heartbeat-timeout-ms", str(heartbeat_timeout)]
    if job_args:
        master_cmd += ["--", *job_args]
    tm_cmd = [python, "-m", "emrflow.deploy.yarn_containers", "taskmanager", "--slots", str(slots),
              "--heartbeat-interval-ms", str(config.get("heartbeat.interval"))]
    shipped = _files(config, files)
    env = {"PYTHONUNBUFFERED": "1"}
    tags = set(config.get("yarn.tags") or ())
    tags.add("emrflow")
    return skein.ApplicationSpec(
        name=name or config.get("yarn.application.name") or f"emrflow {mode}",
        queue=queue or config.get("yarn.application.queue"),
        node_label=config.get("yarn.application.node-label") or "",
        tags=sorted(tags),
        max_attempts=int(config.get("yarn.application-attempts")),
        master=skein.Master(resources=skein.Resources(memory=jm_mib, vcores=1),
                            script=" ".join(shlex.quote(c) for c in master_cmd),
                            files=shipped, env=env),
        services={"taskmanager": skein.Service(
            resources=skein.Resources(memory=tm_mib, vcores=vcores),
            script=" ".join(shlex.quote(c) for c in tm_cmd), instances=taskmanagers if mode == "session" else 0,
            files=shipped, env=env, max_restarts=-1,
            node_label=config.get("yarn.application.node-label") or "")})


def skein_client(config: Configuration, principal: str | None = None, keytab: str | None = None):
    """A ``skein.Client`` (Kerberos ``principal``/``keytab`` pass through)."""
    check_hadoop()
    import skein
    try:
        return skein.Client(principal=principal, keytab=keytab)
    except Exception as exc:  # noqa: BLE001 - skein raises several driver errors
        raise ClusterError(f"cannot start skein's YARN client: {exc}") from exc


def record_session(app_id: str, rest: str, path: str = SESSION_FILE) -> None:
    """Remember the running session for later commands (mode 0600)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"application_id": app_id, "rest": rest, "recorded": time.time()}, f)
    os.replace(path + ".tmp", path)


def recorded_session(path: str = SESSION_FILE) -> str | None:
    """The application id of the recorded session, or ``None``."""
    try:
        with open(path) as f:
            return json.load(f)["application_id"]
    except (FileNotFoundError, ValueError, KeyError):
        return None


def jobmanager_of(app_client, timeout_s: float = 300.0) -> tuple[str, str]:
    """Wait for an application's JobManager to publish itself; returns ``(REST address, token)``.

    Raises:
        ClusterError: nothing was published within ``timeout_s`` (the application died).
    """
    import threading
    found: dict = {}

    def wait() -> None:
        try:
            found["value"] = (app_client.kv.wait(KV_REST), app_client.kv.wait(KV_TOKEN))
        except Exception as exc:  # noqa: BLE001 - the application ended or the KV store is gone
            found["error"] = exc
    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    waiter.join(timeout_s)
    if "error" in found:
        raise ClusterError(f"the application ended before its JobManager was reachable: "
                           f"{found['error']}") from found["error"]
    if "value" not in found:
        raise ClusterError(f"the JobManager did not publish its address within {timeout_s:.0f} s; "
                           "see `emrflow yarn-session logs`")
    rest, token = found["value"]
    return rest.decode(), token.decode()


def final_status(app_client) -> tuple[str, str]:
    """The ``(status, diagnostics)`` a per-job application published when its job ended."""
    raw = app_client.kv.wait(KV_STATUS).decode()
    status, _, diagnostics = raw.partition("\n")
    return status, diagnostics


def write_job_graph(job_graph) -> str:
    """Pickle ``job_graph`` into a temporary file to localize as ``jobgraph.pkl``."""
    import cloudpickle

    from emrflow.deploy.client import ship_user_modules_by_value
    ship_user_modules_by_value()
    fd, path = tempfile.mkstemp(prefix="emrflow-jobgraph-", suffix=".pkl")
    with os.fdopen(fd, "wb") as f:
        cloudpickle.dump(job_graph, f, protocol=5)
    return path


class SkeinDriver:
    """Submits and finds YARN applications through skein (the production driver)."""

    def __init__(self, config: Configuration, principal: str | None = None, keytab: str | None = None):
        self.client = skein_client(config, principal, keytab)

    def submit(self, spec) -> str:
        try:
            return self.client.submit(spec)
        except Exception as exc:  # noqa: BLE001 - YARN refusals (queue, resources) arrive here
            raise ClusterError(f"YARN refused the application: {exc}") from exc

    def connect(self, app_id: str):
        try:
            return self.client.connect(app_id, wait=True)
        except Exception as exc:  # noqa: BLE001 - unknown or finished applications
            raise ClusterError(f"cannot connect to YARN application {app_id}: {exc}") from exc

    def kill(self, app_id: str) -> None:
        self.client.kill_application(app_id)

    def report(self, app_id: str) -> dict:
        r = self.client.application_report(app_id)
        return {"id": r.id, "name": r.name, "state": str(r.state), "final_status": str(r.final_status),
                "queue": r.queue, "diagnostics": r.diagnostics}

    def list(self) -> list[dict]:
        return [{"id": r.id, "name": r.name, "state": str(r.state), "queue": r.queue}
                for r in self.client.get_applications(states=["RUNNING", "ACCEPTED", "SUBMITTED"])
                if "emrflow" in (r.tags or ())]

    def logs(self, app_id: str) -> str:
        return self.client.application_logs(app_id).dumps()


def yarn_driver(config: Configuration, principal: str | None = None, keytab: str | None = None):
    """The driver: skein's, or a stand-in named by ``EMRFLOW_YARN_DRIVER=module:factory`` (tests)."""
    spec = os.environ.get("EMRFLOW_YARN_DRIVER")
    if spec:
        import importlib
        module, _, func = spec.partition(":")
        return getattr(importlib.import_module(module), func)()
    return SkeinDriver(config, principal or config.get("security.kerberos.login.principal"),
                       keytab or config.get("security.kerberos.login.keytab"))


def start_session(config: Configuration, driver=None, **spec_args) -> tuple[str, str]:
    """Submit a YARN session; wait for its JobManager; record it. Returns ``(application id, REST address)``."""
    driver = driver or yarn_driver(config)
    spec = build_spec(config, "session", **spec_args)
    app_id = driver.submit(spec)
    try:
        rest, _ = jobmanager_of(driver.connect(app_id))
    except BaseException:
        driver.kill(app_id)
        raise
    record_session(app_id, rest)
    return app_id, rest


def session_app_id(config: Configuration) -> str:
    """``yarn.application.id`` or the recorded session.

    Raises:
        ClusterError: neither is there.
    """
    app_id = config.get("yarn.application.id") or recorded_session()
    if not app_id:
        raise ClusterError("no YARN session: start one with `emrflow yarn-session start` or pass "
                           "-D yarn.application.id=application_...")
    return app_id


def _follow(rest: str, token: str, job_graph, context, detached: bool):
    from emrflow.api.environment import JobExecutionResult
    from emrflow.deploy.client import result_from_status
    from emrflow.deploy.rest_client import RestClient
    client = RestClient(rest, token)
    job_id = client.submit(job_graph)
    if context is not None and context.on_submitted is not None:
        context.on_submitted(job_id, job_graph.name)
    if detached:
        return JobExecutionResult(job_id=job_id, job_name=job_graph.name, net_runtime_ms=0)
    status = client.wait(job_id, context.on_progress if context is not None else None)
    return result_from_status(status, job_graph)


def execute_session(job_graph, config: Configuration, context=None):
    """The ``yarn-session`` target: submit to the session's JobManager found in skein's key-value store."""
    if context is not None and getattr(context, "dry_run", False):
        from emrflow.api.environment import JobExecutionResult
        print(f"would submit to YARN session {session_app_id(config)}:\n{job_graph.to_json()}")
        return JobExecutionResult(job_id="dry-run", job_name=job_graph.name, net_runtime_ms=0)
    driver = yarn_driver(config)
    rest, token = jobmanager_of(driver.connect(session_app_id(config)), timeout_s=60)
    return _follow(rest, token, job_graph, context, not bool(config.get("execution.attached")))


def execute_per_job(job_graph, config: Configuration, context=None):
    """The ``yarn-per-job`` target: one YARN application for this job, shut down when it ends.

    The JobGraph is localized as ``jobgraph.pkl``; the ApplicationMaster runs it and reports
    SUCCEEDED, FAILED or KILLED to YARN. Attached, the client follows the job over REST.
    """
    from emrflow.api.environment import JobExecutionResult
    from emrflow.deploy.client import result_from_status
    from emrflow.deploy.rest_client import RestClient
    from emrflow.errors import JobExecutionError
    if context is not None and getattr(context, "dry_run", False):
        spec = build_spec(config, "per-job", name=config.get("yarn.application.name") or job_graph.name,
                          files={"jobgraph.pkl": os.devnull})
        print(spec.to_yaml(), end="")
        return JobExecutionResult(job_id="dry-run", job_name=job_graph.name, net_runtime_ms=0)
    driver = yarn_driver(config)
    path = write_job_graph(job_graph)
    try:  # skein uploads the files when it submits, so the local copy can go afterwards
        spec = build_spec(config, "per-job", name=config.get("yarn.application.name") or job_graph.name,
                          files={"jobgraph.pkl": path})
        app_id = driver.submit(spec)
    finally:
        os.remove(path)
    if context is not None and context.on_submitted is not None:
        context.on_submitted(app_id, job_graph.name)
    if not bool(config.get("execution.attached")):
        return JobExecutionResult(job_id=app_id, job_name=job_graph.name, net_runtime_ms=0)
    app = driver.connect(app_id)
    rest, token = jobmanager_of(app)
    client = RestClient(rest, token)
    status = None
    try:
        job = client.list_jobs()
        while not job:
            time.sleep(0.2)
            job = client.list_jobs()
        status = client.wait(job[0]["jid"], context.on_progress if context is not None else None)
    except ClusterError:
        pass  # the application may end before the last poll; its published status decides
    yarn_status, diagnostics = final_status(app)
    if status is not None and status["state"] in ("FINISHED", "FAILED", "CANCELED"):
        return result_from_status(status, job_graph)
    if yarn_status != "SUCCEEDED":
        raise JobExecutionError(f"YARN application {app_id} ended {yarn_status}: {diagnostics}",
                                job_name=job_graph.name)
    return JobExecutionResult(job_id=app_id, job_name=job_graph.name, net_runtime_ms=0)


def submit_application(config: Configuration, script: str, job_args: list[str], py_files: list[str] = (),
                       context=None, dry_run: bool = False) -> tuple[str, str, str]:
    """The ``yarn-application`` target: run the job's script inside the ApplicationMaster.

    The script and ``py_files`` are localized; the client may go away (``-d``). Attached, it
    waits for the application's end.

    Returns:
        ``(application id, YARN final status, diagnostics)``; the status is ``SUBMITTED``
        when detached.

    Raises:
        ConfigError: the script or a py-file does not exist.
    """
    for path in [script, *py_files]:
        if not os.path.isfile(path):
            raise ConfigError(f"file to ship does not exist: {path}")
    files = {os.path.basename(p): p for p in py_files}
    files[os.path.basename(script)] = script
    spec = build_spec(config, "application", name=config.get("yarn.application.name") or os.path.basename(script),
                      files=files, job_args=[os.path.basename(script), *job_args])
    if dry_run:
        print(spec.to_yaml(), end="")
        return "dry-run", "DRY-RUN", ""
    driver = yarn_driver(config)
    app_id = driver.submit(spec)
    if context is not None and context.on_submitted is not None:
        context.on_submitted(app_id, spec.name)
    if not bool(config.get("execution.attached")):
        return app_id, "SUBMITTED", ""
    status, diagnostics = final_status(driver.connect(app_id))
    return app_id, status, diagnostics
