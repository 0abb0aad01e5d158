"""YARN through skein: session, per-job and application clusters (Flink on YARN).

The client side. It builds one ``skein.ApplicationSpec`` per YARN application —
``master`` runs the JobManager in the ApplicationMaster container, the service
``taskmanager`` runs TaskManagers (see :mod:`emrflow.deploy.yarn_containers`) —
submits it, waits (bounded) for the application to run, finds the JobManager
through the application's key-value store and talks to it over REST. The end of
an application is read from YARN's application report (state, final status,
diagnostics), never from the application itself, which may be gone.

A started session is recorded in ``~/.emrflow/yarn-session.json`` (Flink's
``.yarn-properties-<user>``) so later commands find it.

Files an application needs while it runs (the client's configuration as
``emrflow-conf/emrflow-conf.yaml``, a per-job JobGraph) are written to a staging
directory (``yarn.staging-directory``). With HDFS as the default file system (EMR)
skein uploads them at submission and the local copy goes at once; with
``file:///`` YARN reads them in place whenever a container starts, so they stay
until the application ends (the ApplicationMaster removes them).

Config keys (Flink's names): ``yarn.application.name``, ``yarn.application.queue``,
``yarn.application.node-label``, ``yarn.taskmanager.node-label``, ``yarn.tags``,
``yarn.application-attempts``, ``yarn.maximum-failed-containers``,
``jobmanager.memory.process.size``, ``taskmanager.memory.process.size``,
``taskmanager.numberOfTaskSlots``, ``yarn.containers.vcores``, ``yarn.ship-files``,
``yarn.ship-archives``, ``yarn.staging-directory``, ``python.executable``,
``resourcemanager.taskmanager-timeout``, ``yarn.application.id``; emrflow's
``yarn.application.start-timeout``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

from emrflow.config import Configuration
from emrflow.deploy import hadoop_conf
from emrflow.deploy.yarn_containers import CONF_DIR_NAME, KV_REST, KV_TOKEN, reveal
from emrflow.errors import ClusterError, ConfigError, JobExecutionError

SESSION_FILE = os.path.join(os.path.expanduser("~"), ".emrflow", "yarn-session.json")

#: memory of skein's Java ApplicationMaster, which shares the master container with the JobManager
SKEIN_AM_MIB = 256
#: smallest container share of a TaskManager process and of each of its slot processes
TASKMANAGER_MIN_MIB = 128
SLOT_MIN_MIB = 128
#: YARN application states after which nothing changes any more
TERMINAL_STATES = ("FINISHED", "FAILED", "KILLED")
#: how long the end of a per-job application may lag behind the end of its job
_FINAL_REPORT_TIMEOUT_S = 120.0


def check_hadoop() -> None:
    """Fail with a clear message when this machine cannot reach YARN.

    Raises:
        ClusterError: no ``yarn`` command or no ``HADOOP_CONF_DIR``/``YARN_CONF_DIR``.
    """
    missing = []
    if shutil.which("yarn") is None:
        missing.append("no `yarn` command on PATH")
    if not hadoop_conf.conf_dir():
        missing.append("HADOOP_CONF_DIR is not set")
    if missing:
        raise ClusterError("cannot reach YARN: " + " and ".join(missing) +
                           " (run on a Hadoop client or EMR master node; --dry-run prints the "
                           "application spec without YARN)")


# --------------------------------------------------------------------------- the spec

def _mib(key: str, value_bytes: int) -> int:
    mib = value_bytes // 2**20
    if mib < 256:
        raise ConfigError(f"{key}: expected at least 256m for a YARN container, got {mib}m", key=key)
    return mib


def _memory(config: Configuration, key: str, override: str | None) -> int:
    from emrflow.config import parse_memory_bytes
    if override is None:
        return _mib(key, int(config.get(key)))
    try:
        return _mib(key, parse_memory_bytes(override))
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}", key=key) from exc


def container_memory(config: Configuration, slots: int, jobmanager_memory: str | None = None,
                     taskmanager_memory: str | None = None) -> tuple[int, int]:
    """Size the master and TaskManager containers from Flink's memory keys.

    ``jobmanager.memory.process.size`` is the JobManager's process; its container also
    holds skein's Java ApplicationMaster, so the master container asks for
    :data:`SKEIN_AM_MIB` more. ``taskmanager.memory.process.size`` is the whole
    TaskManager container: the TaskManager process and its ``slots`` slot processes,
    which the NodeManager's physical-memory check counts together.

    Args:
        config: the configuration.
        slots: task slots (slot processes) per TaskManager.
        jobmanager_memory, taskmanager_memory: overrides such as ``"1024m"`` (CLI flags).

    Returns:
        ``(master container MiB, TaskManager container MiB)``.

    Raises:
        ConfigError: a size below 256 MiB, or a TaskManager too small for its slots
            (names both keys and the least that fits).
    """
    jm = _memory(config, "jobmanager.memory.process.size", jobmanager_memory)
    tm = _memory(config, "taskmanager.memory.process.size", taskmanager_memory)
    least = TASKMANAGER_MIN_MIB + slots * SLOT_MIN_MIB
    if tm < least:
        raise ConfigError(
            f"taskmanager.memory.process.size: {tm}m cannot hold a TaskManager and its {slots} slot "
            f"processes (taskmanager.numberOfTaskSlots); expected at least {least}m "
            f"({TASKMANAGER_MIN_MIB}m + {SLOT_MIN_MIB}m per slot)", key="taskmanager.memory.process.size")
    return jm + SKEIN_AM_MIB, tm


def _ship(config: Configuration) -> dict:
    """``yarn.ship-files`` and ``yarn.ship-archives`` as skein files (for every container)."""
    import skein
    files = {}
    for path in config.get("yarn.ship-files") or ():
        if not os.path.exists(path):
            raise ConfigError(f"yarn.ship-files: {path} does not exist", key="yarn.ship-files")
        # a directory is localized as a directory (type FILE); only archives are extracted
        files[os.path.basename(path.rstrip("/"))] = skein.File(source=os.path.abspath(path), type="file")
    for path in config.get("yarn.ship-archives") or ():
        if not os.path.isfile(path):
            raise ConfigError(f"yarn.ship-archives: {path} does not exist or is not a file",
                              key="yarn.ship-archives")
        name = os.path.basename(path)
        for suffix in (".tar.gz", ".tgz", ".zip", ".tar"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        else:
            raise ConfigError(f"yarn.ship-archives: {path}: expected a .tar.gz, .tgz, .tar or .zip archive",
                              key="yarn.ship-archives")
        files[name] = skein.File(source=os.path.abspath(path), type="archive")
    return files


def _web_ui_users(config) -> list[str]:
    """skein's ``ui_users`` from ``yarn.application.web-ui.users`` (``*``, a list, or empty: the owner)."""
    value = str(config.get("yarn.application.web-ui.users") or "")
    return [u.strip() for u in value.split(",") if u.strip()]


def _container_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1", "EMRFLOW_CONF_DIR": CONF_DIR_NAME}
    if os.environ.get("EMRFLOW_LOG_LEVEL"):
        env["EMRFLOW_LOG_LEVEL"] = os.environ["EMRFLOW_LOG_LEVEL"]
    env.update(extra or {})
    return env


def build_spec(config: Configuration, mode: str, *, name: str | None = None, queue: str | None = None,
               taskmanagers: int = 1, slots: int | None = None, jobmanager_memory: str | None = None,
               taskmanager_memory: str | None = None, taskmanager_vcores: int | None = None,
               master_files: dict[str, str] | None = None, conf_dir: str | None = None,
               staging_dir: str | None = None, job_args: list[str] | None = None):
    """Build the skein ``ApplicationSpec`` of an emrflow application.

    Args:
        config: configuration (YARN keys, memory sizes, ``python.executable``).
        mode: ``session``, ``per-job`` or ``application``.
        name: application name (default ``yarn.application.name`` or "emrflow <mode>").
        queue: YARN queue (default ``yarn.application.queue``).
        taskmanagers: initial TaskManager containers (sessions); per-job and application
            clusters start none and ask for what the job needs.
        slots: task slots per TaskManager (default ``taskmanager.numberOfTaskSlots``).
        jobmanager_memory, taskmanager_memory: container memory like ``"1024m"``; see
            :func:`container_memory`.
        taskmanager_vcores: vcores per TaskManager container (default ``yarn.containers.vcores``).
        master_files: files only the ApplicationMaster needs (the JobGraph, the job's script
            and ``--py-files``), ``{name in the container: local path}``; localized as files,
            never extracted.
        conf_dir: a directory holding the client's ``emrflow-conf.yaml``, localized in every
            container as ``emrflow-conf`` (``$EMRFLOW_CONF_DIR`` there); ``None`` for a dry run.
        staging_dir: the local staging directory the ApplicationMaster removes at its end.
        job_args: for ``application`` mode, the job script (its localized name) and arguments.

    Returns:
        A ``skein.ApplicationSpec`` (validated by skein itself). Its containers run
        ``python.executable``, by default this client's own interpreter (on EMR the
        bootstrap action installs emrflow at the same path on every node).

    Raises:
        ConfigError: a bad size, count or path, naming the key.
    """
    import skein
    if mode not in ("session", "per-job", "application"):
        raise ConfigError(f"unknown YARN mode {mode!r}; expected session, per-job or application")
    slots = slots or int(config.get("taskmanager.numberOfTaskSlots"))
    if taskmanagers < 0:
        raise ConfigError(f"--taskmanagers must be >= 0, got {taskmanagers}")
    python = config.get("python.executable") or sys.executable
    master_mib, tm_mib = container_memory(config, slots, jobmanager_memory, taskmanager_memory)
    vcores = taskmanager_vcores or int(config.get("yarn.containers.vcores"))
    master_cmd = [python, "-m", "emrflow.deploy.yarn_containers", "master", "--mode", mode,
                  "--slots", str(slots), "--taskmanagers", str(taskmanagers if mode == "session" else 0)]
    if job_args:
        master_cmd += ["--", *job_args]
    tm_cmd = [python, "-m", "emrflow.deploy.yarn_containers", "taskmanager", "--slots", str(slots)]
    shipped = _ship(config)
    if conf_dir is not None:
        shipped[CONF_DIR_NAME] = skein.File(source=os.path.abspath(conf_dir), type="file")
    own = {n: skein.File(source=os.path.abspath(p), type="file") for n, p in (master_files or {}).items()}
    tags = set(config.get("yarn.tags") or ())
    tags.add("emrflow")
    app_label = config.get("yarn.application.node-label") or ""
    master_env = {"EMRFLOW_STAGING_DIR": staging_dir} if staging_dir else {}
    return skein.ApplicationSpec(
        name=name or config.get("yarn.application.name") or f"emrflow {mode}",
        queue=queue or config.get("yarn.application.queue"),
        node_label=app_label,
        tags=sorted(tags),
        max_attempts=int(config.get("yarn.application-attempts")),
        # ACLs on: only the owner may read or change the key-value store (which holds the cluster
        # secret and the REST token) through skein; its web UI shows neither (yarn_containers.hide)
        acls=skein.ACLs(enable=True, ui_users=_web_ui_users(config)),
        master=skein.Master(resources=skein.Resources(memory=master_mib, vcores=1),
                            script=" ".join(shlex.quote(c) for c in master_cmd),
                            files={**shipped, **own}, env=_container_env(master_env)),
        services={"taskmanager": skein.Service(
            resources=skein.Resources(memory=tm_mib, vcores=vcores),
            script=" ".join(shlex.quote(c) for c in tm_cmd), instances=taskmanagers if mode == "session" else 0,
            files=shipped, env=_container_env(),
            # a TaskManager that exits on its own is replaced, up to this many times; then the
            # application fails with the container's exit status in its diagnostics
            max_restarts=int(config.get("yarn.maximum-failed-containers")),
            node_label=config.get("yarn.taskmanager.node-label") or app_label)})


# --------------------------------------------------------------------------- staging

class Staging:
    """The local files of one YARN application that must outlive its submission.

    Args:
        config: ``yarn.staging-directory`` names the parent directory.
    """

    def __init__(self, config: Configuration):
        parent = config.get("yarn.staging-directory") or os.path.join(
            os.path.expanduser("~"), ".emrflow", "yarn-staging")
        os.makedirs(parent, mode=0o700, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix="app-", dir=parent)
        self.conf_dir = os.path.join(self.dir, CONF_DIR_NAME)
        os.mkdir(self.conf_dir, 0o700)
        from emrflow.config import CONF_FILE_NAME
        fd = os.open(os.path.join(self.conf_dir, CONF_FILE_NAME), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(config.to_yaml())

    def write_job_graph(self, job_graph) -> str:
        """Pickle ``job_graph`` (the job's own modules by value) into ``jobgraph.pkl``; returns its path."""
        from emrflow.graph.pickling import dumps_job_graph
        path = os.path.join(self.dir, "jobgraph.pkl")
        with open(path, "wb") as f:
            f.write(dumps_job_graph(job_graph))
        return path

    def submitted(self) -> None:
        """The application was accepted: drop the local copy if YARN already uploaded it."""
        if not hadoop_conf.default_fs_is_local():
            self.remove()

    def remove(self) -> None:
        """Delete the staging directory (idempotent)."""
        shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------- YARN

@dataclass(frozen=True)
class ApplicationReport:
    """What YARN's ResourceManager says of an application.

    Attributes:
        id: ``application_<cluster>_<n>``.
        name, queue, user: as submitted.
        state: YARN's state: NEW, NEW_SAVING, SUBMITTED, ACCEPTED, RUNNING, FINISHED, FAILED, KILLED.
        final_status: UNDEFINED while running, then SUCCEEDED, FAILED or KILLED.
        diagnostics: YARN's and the ApplicationMaster's diagnostics text.
        tracking_url: the ResourceManager web proxy URL of the application's UI.
    """

    id: str
    name: str
    state: str
    final_status: str
    queue: str
    user: str
    diagnostics: str
    tracking_url: str

    @property
    def ended(self) -> bool:
        """Whether the application has ended (FINISHED, FAILED or KILLED)."""
        return self.state in TERMINAL_STATES


def _name(enum_value) -> str:
    return getattr(enum_value, "name", str(enum_value)).rsplit(".", 1)[-1]


def skein_security():
    """Return skein's security credentials (TLS key and certificate between client and driver).

    The same as ``skein.Security.from_default()`` on a machine that has them (in
    ``$SKEIN_CONFIG``, default ``~/.skein``): those are loaded. On a machine that has none (a
    fresh EMR primary node, a new laptop) new ones are written there, as skein does, but without
    skein's ``UserWarning``: it says nothing the user must act on. Two processes writing at once
    both end up with the one that was written first. Inside a container skein started, the
    application's own credentials are used, as skein does.

    Returns:
        A ``skein.Security``.
    """
    import skein
    from skein.core import properties
    if properties.application_id is not None:  # in a container: the application's credentials
        return skein.Security.from_default()
    try:
        return skein.Security.from_directory(properties.config_dir)
    except FileNotFoundError:
        pass
    try:
        return skein.Security.new_credentials().to_directory(properties.config_dir)
    except FileExistsError:  # another process wrote them just now
        return skein.Security.from_directory(properties.config_dir)


class YarnClient:
    """The YARN operations emrflow needs, through skein, with skein's errors made clear.

    Args:
        config: the configuration (Kerberos principal and keytab).
        principal, keytab: override ``security.kerberos.login.principal`` / ``.keytab``.

    Raises:
        ClusterError: no Hadoop client here, or skein's Java driver did not start.
    """

    def __init__(self, config: Configuration, principal: str | None = None, keytab: str | None = None):
        check_hadoop()
        import skein
        principal = principal or config.get("security.kerberos.login.principal")
        keytab = keytab or config.get("security.kerberos.login.keytab")
        if not (principal or keytab):
            # a global driver (`skein driver start`) saves starting a JVM for every command
            try:
                self.client = skein.Client.from_global_driver()
                return
            except Exception:  # noqa: BLE001 - none running, or a stale record of one
                pass
        # skein's Java driver logs to this process's stderr: only its errors, unless asked for more
        verbose = os.environ.get("EMRFLOW_LOG_LEVEL", "").upper() in ("DEBUG", "INFO")
        try:
            self.client = skein.Client(principal=principal, keytab=keytab, security=skein_security(),
                                       log_level="INFO" if verbose else "ERROR")
        except Exception as exc:  # noqa: BLE001 - skein raises several driver errors
            raise ClusterError(f"cannot start skein's YARN client: {exc}") from exc

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (KeyError, ValueError) as exc:
            raise ClusterError(f"{what}: {exc.args[0] if exc.args else exc}") from exc
        except Exception as exc:  # noqa: BLE001 - skein's ConnectionError, DriverError, gRPC errors
            raise ClusterError(f"{what}: {type(exc).__name__}: {exc}") from exc

    def submit(self, spec) -> str:
        """Submit ``spec``; returns the application id.

        Raises:
            ClusterError: YARN refused it (unknown queue, a container larger than the
                scheduler's maximum allocation, ...), with YARN's words.
        """
        return self._call(f"YARN refused the application {spec.name!r} (queue {spec.queue!r})",
                          self.client.submit, spec)

    def report(self, app_id: str) -> ApplicationReport:
        """YARN's report of ``app_id``.

        Raises:
            ClusterError: YARN does not know the application.
        """
        r = self._call(f"no YARN application {app_id}", self.client.application_report, app_id)
        return ApplicationReport(id=r.id, name=r.name, state=_name(r.state), final_status=_name(r.final_status),
                                 queue=r.queue, user=r.user, diagnostics=(r.diagnostics or "").strip(),
                                 tracking_url=r.tracking_url or "")

    def wait_running(self, app_id: str, timeout_s: float, kill_on_timeout: bool = True):
        """Wait until ``app_id`` runs; returns a skein ``ApplicationClient`` for it.

        Args:
            app_id: the application.
            timeout_s: how long it may stay NEW, SUBMITTED or ACCEPTED.
            kill_on_timeout: kill an application still not running at the deadline.

        Raises:
            ClusterError: it ended first (with YARN's diagnostics: an unknown queue, an
                ApplicationMaster that died), or it was still waiting for resources at the
                deadline (names the state, queue and YARN's diagnostics).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            report = self.report(app_id)
            if report.state == "RUNNING":
                return self._call(f"cannot connect to YARN application {app_id}",
                                  self.client.connect, app_id, wait=False)
            if report.ended:
                raise ClusterError(f"YARN application {app_id} ended {report.state}/{report.final_status} "
                                   f"before it ran: {report.diagnostics or 'no diagnostics'}")
            if time.monotonic() > deadline:
                if kill_on_timeout:
                    self.kill(app_id)
                raise ClusterError(
                    f"YARN application {app_id} was still {report.state} in queue {report.queue!r} after "
                    f"{timeout_s:.0f} s (yarn.application.start-timeout)"
                    + ("; it was killed" if kill_on_timeout else "")
                    + f". YARN says: {report.diagnostics or 'nothing'}. Check the queue's free capacity "
                    "and the maximum container size")
            time.sleep(0.3)

    def wait_ended(self, app_id: str, timeout_s: float | None = None) -> ApplicationReport:
        """Wait until ``app_id`` has ended; returns its final report.

        Raises:
            ClusterError: still running after ``timeout_s`` (``None``: wait as long as it runs).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            report = self.report(app_id)
            if report.ended:
                return report
            if deadline is not None and time.monotonic() > deadline:
                raise ClusterError(f"YARN application {app_id} still {report.state} after {timeout_s:.0f} s")
            time.sleep(0.5)

    def kill(self, app_id: str) -> None:
        """Kill ``app_id`` (a no-op for an application that has already ended)."""
        if not self.report(app_id).ended:
            self._call(f"cannot kill YARN application {app_id}", self.client.kill_application, app_id)

    def list(self) -> list[ApplicationReport]:
        """Running and waiting emrflow applications (tagged ``emrflow``)."""
        apps = self._call("cannot list YARN applications", self.client.get_applications,
                          states=["SUBMITTED", "ACCEPTED", "RUNNING"])
        return [self.report(r.id) for r in apps if "emrflow" in (r.tags or ())]


def yarn_client(config: Configuration, principal: str | None = None, keytab: str | None = None) -> YarnClient:
    """A :class:`YarnClient` for this machine's Hadoop configuration."""
    return YarnClient(config, principal, keytab)


def jobmanager_of(yarn: YarnClient, app_id: str, app, timeout_s: float) -> tuple[str, str]:
    """Wait (bounded) for an application's JobManager to publish itself.

    Args:
        yarn: the client.
        app_id: the application.
        app: its skein ``ApplicationClient`` (from :meth:`YarnClient.wait_running`).
        timeout_s: how long to wait.

    Returns:
        ``(REST address host:port, REST token)``.

    Raises:
        ClusterError: the application ended first (with YARN's diagnostics), or nothing
            was published within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            rest, token = app.kv.get(KV_REST), app.kv.get(KV_TOKEN)
        except Exception as exc:  # noqa: BLE001 - the ApplicationMaster went away
            rest = token = None
            error: Exception | None = exc
        else:
            error = None
        if rest and token:
            return rest.decode(), reveal(token)
        report = yarn.report(app_id)
        if report.ended:
            raise ClusterError(f"YARN application {app_id} ended {report.state}/{report.final_status} before "
                               f"its JobManager was reachable: {report.diagnostics or error or 'no diagnostics'}; "
                               f"see `emrflow yarn-session logs --id {app_id}`")
        if time.monotonic() > deadline:
            raise ClusterError(f"the JobManager of YARN application {app_id} did not publish its address "
                               f"within {timeout_s:.0f} s; see `emrflow yarn-session logs --id {app_id}`")
        time.sleep(0.2)


# --------------------------------------------------------------------------- sessions

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


def forget_session(app_id: str, path: str = SESSION_FILE) -> None:
    """Forget the recorded session if it is ``app_id``."""
    if recorded_session(path) == app_id:
        os.remove(path)


def _start_timeout_s(config: Configuration) -> float:
    return int(config.get("yarn.application.start-timeout")) / 1000


def start_session(config: Configuration, yarn: YarnClient | None = None, **spec_args) -> tuple[str, str]:
    """Submit a YARN session, wait (bounded) for its JobManager and record it.

    Args:
        config: the configuration; it is shipped to the session's containers.
        yarn: the client (default: a new one).
        spec_args: :func:`build_spec` arguments (name, queue, taskmanagers, slots, memory, vcores).

    Returns:
        ``(application id, REST address)``.

    Raises:
        ClusterError: YARN refused the application, or it did not run within
            ``yarn.application.start-timeout`` (it is killed then).
    """
    yarn = yarn or yarn_client(config)
    staging = Staging(config)
    try:
        spec = build_spec(config, "session", conf_dir=staging.conf_dir, staging_dir=staging.dir, **spec_args)
        app_id = yarn.submit(spec)
    except BaseException:
        staging.remove()
        raise
    staging.submitted()
    try:
        app = yarn.wait_running(app_id, _start_timeout_s(config))
        rest, _ = jobmanager_of(yarn, app_id, app, _start_timeout_s(config))
    except BaseException:
        yarn.kill(app_id)
        staging.remove()
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


def session_rest(config: Configuration, yarn: YarnClient | None = None, app_id: str | None = None,
                 timeout_s: float = 60.0):
    """A :class:`~emrflow.deploy.rest_client.RestClient` for a running session's JobManager.

    Raises:
        ClusterError: the session is unknown, has ended (with YARN's final status and
            diagnostics) or its JobManager did not answer within ``timeout_s``.
    """
    from emrflow.deploy.rest_client import RestClient
    yarn = yarn or yarn_client(config)
    app_id = app_id or session_app_id(config)
    app = yarn.wait_running(app_id, timeout_s, kill_on_timeout=False)
    rest, token = jobmanager_of(yarn, app_id, app, timeout_s)
    return RestClient(rest, token)


def _dry_run_result(job_graph):
    from emrflow.job import JobExecutionResult
    return JobExecutionResult(job_id="dry-run", job_name=job_graph.name, net_runtime_ms=0)


def execute_session(job_graph, config: Configuration, context=None):
    """The ``yarn-session`` target: submit to the session's JobManager over REST.

    Attached, the client follows the job; Ctrl-C cancels it. Detached (``-d``) returns
    once the job is accepted.
    """
    if context is not None and getattr(context, "dry_run", False):
        print(f"would submit to YARN session {session_app_id(config)}:\n{job_graph.to_json()}")
        return _dry_run_result(job_graph)
    from emrflow.deploy.jobclient import follow
    return follow(session_rest(config), job_graph, bool(config.get("execution.attached")), context)


def execute_per_job(job_graph, config: Configuration, context=None):
    """The ``yarn-per-job`` target: one YARN application for this job, shut down when it ends.

    The JobGraph is localized in the ApplicationMaster only, as ``jobgraph.pkl``; the
    ApplicationMaster runs it and ends the application SUCCEEDED, FAILED or KILLED with
    the job's diagnostics. Attached, the client follows the job over REST and then reads
    YARN's final report; a failed job raises with the user's traceback. Ctrl-C kills the
    application. Detached, it returns once the application runs.

    Raises:
        JobExecutionError: the job or the application failed.
        ClusterError: YARN refused the application or it did not start in time.
    """
    from emrflow.deploy.jobclient import result_from_status
    from emrflow.job import JobExecutionResult
    name = config.get("yarn.application.name") or job_graph.name
    if context is not None and getattr(context, "dry_run", False):
        print(build_spec(config, "per-job", name=name, master_files={"jobgraph.pkl": os.devnull}).to_yaml(),
              end="")
        return _dry_run_result(job_graph)
    yarn = yarn_client(config)
    staging = Staging(config)
    try:
        spec = build_spec(config, "per-job", name=name, conf_dir=staging.conf_dir, staging_dir=staging.dir,
                          master_files={"jobgraph.pkl": staging.write_job_graph(job_graph)})
        app_id = yarn.submit(spec)
    except BaseException:
        staging.remove()
        raise
    staging.submitted()
    if context is not None and context.on_submitted is not None:
        context.on_submitted(app_id, job_graph.name)
    timeout_s = _start_timeout_s(config)
    try:
        app = yarn.wait_running(app_id, timeout_s)
        if not bool(config.get("execution.attached")):
            return JobExecutionResult(job_id=app_id, job_name=job_graph.name, net_runtime_ms=0)
        status = _follow_application_job(yarn, app_id, app, timeout_s, context)
        report = yarn.wait_ended(app_id, _FINAL_REPORT_TIMEOUT_S)
    except KeyboardInterrupt:
        yarn.kill(app_id)
        raise
    except BaseException:
        if bool(config.get("execution.attached")):
            staging.remove()
        raise
    if bool(config.get("execution.attached")):
        staging.remove()
    if status is not None:
        return result_from_status(status, job_graph)   # raises with the user's traceback on failure
    if report.final_status != "SUCCEEDED":
        raise JobExecutionError(f"YARN application {app_id} ended {report.final_status}: "
                                f"{report.diagnostics or 'no diagnostics'}", job_name=job_graph.name)
    return JobExecutionResult(job_id=app_id, job_name=job_graph.name, net_runtime_ms=0)


def _follow_application_job(yarn: YarnClient, app_id: str, app, timeout_s: float, context) -> dict | None:
    """Follow the one job of a per-job application; its final status, or ``None`` if the
    application ended before the job's end could be read (YARN's report decides then)."""
    from emrflow.deploy.jobclient import wait_for_end
    from emrflow.deploy.rest_client import RestClient
    try:
        rest, token = jobmanager_of(yarn, app_id, app, timeout_s)
    except ClusterError:
        if yarn.report(app_id).ended:
            return None
        raise
    client = RestClient(rest, token)
    deadline = time.monotonic() + timeout_s
    try:
        jobs = client.list_jobs()
        while not jobs:
            if time.monotonic() > deadline:
                raise ClusterError(f"the JobManager of YARN application {app_id} accepted no job within "
                                   f"{timeout_s:.0f} s")
            time.sleep(0.2)
            jobs = client.list_jobs()
        return wait_for_end(client, jobs[0]["jid"], context.on_progress if context is not None else None)
    except ClusterError as exc:
        # the JobManager stopped answering: the application ended (its job's end, or a dead
        # ApplicationMaster that YARN notices within its heartbeat) or the network failed
        try:
            yarn.wait_ended(app_id, _FINAL_REPORT_TIMEOUT_S)
        except ClusterError:
            raise exc from None
        return None       # YARN's final report decides


def submit_application(config: Configuration, script: str, job_args: list[str], py_files: list[str] = (),
                       context=None, dry_run: bool = False) -> tuple[str, str, str]:
    """The ``yarn-application`` target: run the job's script inside the ApplicationMaster.

    The script and ``py_files`` (``.py`` files, or ``.zip``/``.egg`` archives put on
    ``sys.path`` as they are) are localized in the ApplicationMaster only. Attached, the
    client waits for the application's end; detached, it returns once the application runs.

    Returns:
        ``(application id, YARN final status, diagnostics)``; the status is ``RUNNING``
        when detached.

    Raises:
        ConfigError: the script or a py-file does not exist.
        ClusterError: YARN refused the application or it did not start in time.
    """
    for path in [script, *py_files]:
        if not os.path.isfile(path):
            raise ConfigError(f"file to ship does not exist: {path}", source="--py-files")
    files = {os.path.basename(p): p for p in py_files}
    files[os.path.basename(script)] = script
    name = config.get("yarn.application.name") or os.path.basename(script)
    # the script is localized by its base name; the master compiles it under the path the
    # user gave, so tracebacks name the user's file
    job = [os.path.basename(script), *job_args]
    config = config.with_overrides({"yarn.application.script-path": script}, source="emrflow run")
    if dry_run:
        print(build_spec(config, "application", name=name, master_files=files, job_args=job).to_yaml(), end="")
        return "dry-run", "DRY-RUN", ""
    yarn = yarn_client(config)
    staging = Staging(config)
    try:
        spec = build_spec(config, "application", name=name, master_files=files, conf_dir=staging.conf_dir,
                          staging_dir=staging.dir, job_args=job)
        app_id = yarn.submit(spec)
    except BaseException:
        staging.remove()
        raise
    staging.submitted()
    if context is not None and context.on_submitted is not None:
        context.on_submitted(app_id, spec.name)
    try:
        yarn.wait_running(app_id, _start_timeout_s(config))
        if not bool(config.get("execution.attached")):
            return app_id, "RUNNING", ""
        report = yarn.wait_ended(app_id)
    except KeyboardInterrupt:
        yarn.kill(app_id)
        raise
    return app_id, report.final_status, report.diagnostics


def stop_session(config: Configuration, app_id: str | None = None, timeout_s: float = 60.0) -> ApplicationReport:
    """Stop a session: ask its JobManager to shut down (jobs are cancelled), else kill it.

    Returns:
        YARN's final report of the application.

    Raises:
        ClusterError: the application is unknown, or it did not end within ``timeout_s``.
    """
    yarn = yarn_client(config)
    app_id = app_id or session_app_id(config)
    if not yarn.report(app_id).ended:
        try:
            session_rest(config, yarn, app_id, timeout_s=10).shutdown()
            report = yarn.wait_ended(app_id, timeout_s)
        except ClusterError:
            yarn.kill(app_id)
            report = yarn.wait_ended(app_id, timeout_s)
    else:
        report = yarn.report(app_id)
    forget_session(app_id)
    return report
