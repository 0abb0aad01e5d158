"""Logs of an emrflow YARN application: live from the NodeManagers, aggregated through ``yarn logs``.

Where a YARN application's logs are depends on its state:

* **running**: each container writes into its own log directory on its NodeManager
  (``yarn.nodemanager.log-dirs``). The ResourceManager REST API names the containers
  (``/ws/v1/cluster/apps/{app}/appattempts/{attempt}/containers``) and the NodeManager REST
  API lists and serves their files (``/ws/v1/node/containers/{cid}/logs``,
  ``/ws/v1/node/containerlogs/{cid}/{file}``).
* **ended** (FINISHED, FAILED, KILLED): with log aggregation on
  (``yarn.log-aggregation-enable``), the NodeManagers upload the files under
  ``yarn.nodemanager.remote-app-log-dir`` (HDFS or S3) once the application has ended;
  ``yarn logs -applicationId APP`` reads them. On Amazon EMR they are also copied to the
  cluster's log URI under ``<cluster-id>/containers/<application id>/``.

The files of an emrflow application (names set by skein 0.8, see :data:`FILE_ROLES`):

* ``application.driver.log`` in the ApplicationMaster container: the JobManager (stdout and
  stderr of skein's master script, ``python -m emrflow.deploy.yarn_containers master``);
* ``application.master.log`` in the same container: skein's own Java ApplicationMaster;
* ``taskmanager.log`` in each ``taskmanager`` service container: a TaskManager.

Only HTTP is supported for the REST APIs; a cluster with ``yarn.http.policy`` ``HTTPS_ONLY``
gets a clear error (``yarn logs`` still works there for ended applications).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from emrflow.deploy.hadoop_conf import conf_get, parse_site
from emrflow.errors import ClusterError, ConfigError

#: what each log file of an emrflow application holds (skein 0.8 names them)
FILE_ROLES = {
    "application.driver.log": "JobManager log: stdout and stderr of skein's master script",
    "application.master.log": "skein's ApplicationMaster log: Java, containers and key-value store",
    "taskmanager.log": "TaskManager log: stdout and stderr of the skein service taskmanager",
    "prelaunch.out": "YARN's container launch, stdout",
    "prelaunch.err": "YARN's container launch, stderr: why a container did not start",
    "launch_container.sh": "the script YARN ran to start the container",
    "directory.info": "listing of the container's working directory",
}

#: files left out unless asked for by name (YARN's launch details), and prelaunch.err when empty
QUIET_FILES = ("launch_container.sh", "directory.info", "prelaunch.out")

#: YARN application states after which only aggregated logs are left
ENDED_STATES = ("FINISHED", "FAILED", "KILLED")

#: the yarn-default.xml values this module needs (Hadoop 3.x)
YARN_DEFAULTS = {
    "yarn.resourcemanager.hostname": "0.0.0.0",
    "yarn.resourcemanager.webapp.address": "${yarn.resourcemanager.hostname}:8088",
    "yarn.http.policy": "HTTP_ONLY",
    "yarn.resourcemanager.ha.enabled": "false",
    "yarn.log-aggregation-enable": "false",
    "yarn.nodemanager.remote-app-log-dir": "/tmp/logs",
    "yarn.nodemanager.log-dirs": "${yarn.log.dir}/userlogs",
    "yarn.nodemanager.log.retain-seconds": "10800",
}



def file_role(name: str) -> str:
    """What the log file ``name`` of an emrflow container holds, in words.

    Args:
        name: file name in a container's log directory, e.g. ``taskmanager.log``.

    Returns:
        A short description; for another skein service ``<service>.log`` its output, and
        ``""`` for a file not known.
    """
    if name in FILE_ROLES:
        return FILE_ROLES[name]
    if name.endswith(".log"):
        return f"stdout and stderr of the skein service {name[:-4]}"
    return ""


# -- configuration --------------------------------------------------------------------------------

def hadoop_conf_dir() -> str:
    """The Hadoop client configuration directory, as Hadoop's scripts choose it.

    ``YARN_CONF_DIR`` wins when set (Hadoop 3 maps the deprecated variable onto
    ``HADOOP_CONF_DIR``), else ``HADOOP_CONF_DIR``.

    Raises:
        ClusterError: neither variable is set.
    """
    conf_dir = os.environ.get("YARN_CONF_DIR") or os.environ.get("HADOOP_CONF_DIR")
    if not conf_dir:
        raise ClusterError("HADOOP_CONF_DIR is not set: it must name the directory holding yarn-site.xml "
                           "(run on a Hadoop client or the EMR master node)")
    return conf_dir


def read_yarn_site(conf_dir: str) -> dict[str, str]:
    """The raw YARN client configuration: yarn-default values, then core-site.xml, then yarn-site.xml.

    A property marked ``<final>true</final>`` is not overridden by a later file (Hadoop's rule).
    Values are not substituted; use :func:`conf_get`.

    Args:
        conf_dir: ``$HADOOP_CONF_DIR``.

    Returns:
        Property name to raw value.

    Raises:
        ConfigError: ``yarn-site.xml`` is missing or not valid XML (naming file:line:column).
    """
    yarn_site = os.path.join(conf_dir, "yarn-site.xml")
    if not os.path.isfile(yarn_site):
        raise ConfigError(f"{yarn_site} does not exist: HADOOP_CONF_DIR must name the directory "
                          "holding the cluster's yarn-site.xml", source=yarn_site)
    props = dict(YARN_DEFAULTS)
    final: set[str] = set()
    core_site = os.path.join(conf_dir, "core-site.xml")
    if os.path.isfile(core_site):
        parse_site(core_site, props, final)
    parse_site(yarn_site, props, final)
    props["__source__"] = yarn_site
    return props


def _host_port(address: str, key: str, source: str) -> str:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{source}: {key} is {address!r}; expected HOST:PORT", key=key, source=source)
    if host == "0.0.0.0":
        host = "127.0.0.1"  # a wildcard bind: the ResourceManager is on this host (Hadoop uses the local host)
    return f"{host}:{port}"


def rm_web_addresses(conf_dir: str) -> list[str]:
    """Every ResourceManager web address of the cluster (several with ResourceManager HA).

    Per ResourceManager: ``yarn.resourcemanager.webapp.address[.<rm-id>]``, else
    ``yarn.resourcemanager.hostname[.<rm-id>]:8088``, with ``${...}`` substituted.

    Args:
        conf_dir: ``$HADOOP_CONF_DIR``.

    Returns:
        ``HOST:PORT`` strings, the first to try first.

    Raises:
        ConfigError: yarn-site.xml missing or malformed, or an address without a port.
        ClusterError: ``yarn.http.policy`` is ``HTTPS_ONLY`` (not supported).
    """
    props = read_yarn_site(conf_dir)
    source = props["__source__"]
    policy = (conf_get(props, "yarn.http.policy") or "HTTP_ONLY").strip().upper()
    if policy != "HTTP_ONLY":
        raise ClusterError(f"{source}: yarn.http.policy is {policy}; emrflow reads the ResourceManager and "
                           "NodeManager REST APIs over HTTP only (HTTP_ONLY). Read the logs of an ended "
                           "application with `yarn logs -applicationId APP`, or the live ones in the "
                           "ResourceManager's web UI")
    if (conf_get(props, "yarn.resourcemanager.ha.enabled") or "").strip().lower() == "true":
        rm_ids = [i.strip() for i in (conf_get(props, "yarn.resourcemanager.ha.rm-ids") or "").split(",")
                  if i.strip()]
        if not rm_ids:
            raise ConfigError(f"{source}: yarn.resourcemanager.ha.enabled is true but "
                              "yarn.resourcemanager.ha.rm-ids names no ResourceManager",
                              key="yarn.resourcemanager.ha.rm-ids", source=source)
        suffixes = [f".{i}" for i in rm_ids]
    else:
        suffixes = [""]
    out = []
    for suffix in suffixes:
        key = "yarn.resourcemanager.webapp.address" + suffix
        address = props.get(key) is not None and conf_get(props, key)
        if not address:
            host_key = "yarn.resourcemanager.hostname" + suffix
            host = conf_get(props, host_key)
            if not host:
                raise ConfigError(f"{source}: neither {key} nor {host_key} is set", key=key, source=source)
            address, key = f"{host}:8088", host_key
        if "${" in address:
            raise ConfigError(f"{source}: {key} is {props.get(key)!r}, which refers to a property that is not "
                              f"set ({address!r} after substitution)", key=key, source=source)
        out.append(_host_port(address.strip(), key, source))
    return out


def rm_web_address(conf_dir: str) -> str:
    """The ResourceManager's web address ``HOST:PORT`` from ``$HADOOP_CONF_DIR/yarn-site.xml``.

    ``yarn.resourcemanager.webapp.address``, else ``yarn.resourcemanager.hostname``:8088
    (Hadoop's default ``${yarn.resourcemanager.hostname}:8088``); ``${...}`` is substituted
    as Hadoop does. With ResourceManager HA, the first ResourceManager's.

    Args:
        conf_dir: the Hadoop configuration directory.

    Returns:
        ``HOST:PORT``.

    Raises:
        ConfigError: yarn-site.xml is missing or malformed, naming the file (and line).
        ClusterError: ``yarn.http.policy`` asks for HTTPS, which is not supported.
    """
    return rm_web_addresses(conf_dir)[0]


# -- REST -----------------------------------------------------------------------------------------

class YarnRestError(ClusterError):
    """A ResourceManager or NodeManager REST call failed.

    Attributes:
        url: the URL requested.
        status: the HTTP status, or ``None`` when there was no answer.
    """

    def __init__(self, message: str, url: str, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class ApplicationNotFoundError(ClusterError):
    """The ResourceManager does not know the application.

    Attributes:
        app_id: the application id asked for.
    """

    def __init__(self, message: str, app_id: str):
        super().__init__(message)
        self.app_id = app_id


def http_get(url: str, timeout_s: float, accept: str = "application/json") -> bytes:
    """GET ``url`` and return the body.

    Args:
        url: an ``http://`` URL.
        timeout_s: seconds for connecting and for each read.
        accept: the ``Accept`` header.

    Raises:
        YarnRestError: no answer within ``timeout_s``, connection refused, or an HTTP error
            status (with Hadoop's ``RemoteException`` message when it sent one), naming the URL.
    """
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.reason
        try:
            body = exc.read(4096).decode("utf-8", "replace")
            remote = json.loads(body).get("RemoteException", {})
            detail = remote.get("message") or detail
        except (ValueError, AttributeError, OSError):
            pass
        hint = " (the cluster asks for authentication: Kerberos/SPNEGO is not supported)" \
            if exc.code in (401, 403) else ""
        raise YarnRestError(f"GET {url}: HTTP {exc.code}: {detail}{hint}", url, exc.code) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise YarnRestError(f"GET {url}: no answer ({reason}) within {timeout_s:g} s", url) from exc


def _get_json(url: str, timeout_s: float) -> dict:
    body = http_get(url, timeout_s)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise YarnRestError(f"GET {url}: expected JSON, got {body[:200]!r}", url) from exc


def _rows(doc, wrapper: str, item: str) -> list[dict]:
    """The list of ``item`` objects in Hadoop's JSON, however it is wrapped.

    Jersey writes ``{wrapper: {item: [...]}}``; a list of one may come as a lone object, and
    some versions drop a level (``{item: [...]}``, ``{wrapper: [...]}`` or a bare list).
    """
    for path in ((wrapper, item), (item,), (wrapper,)):
        node = doc
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, list):
            return [d for d in node if isinstance(d, dict)]
        if isinstance(node, dict) and path[-1] == item:
            return [node]
    if isinstance(doc, list):
        return [d for d in doc if isinstance(d, dict)]
    return []


def _strip_scheme(address: str) -> str:
    return re.sub(r"^[a-z]+://", "", address or "").rstrip("/")


@dataclass(frozen=True)
class Container:
    """A running container of a YARN application.

    Attributes:
        container_id: ``container_<cluster ts>_<app>_<attempt>_<n>``.
        node_http_address: its NodeManager's web address, ``HOST:PORT``.
        state: YARN's container state (``RUNNING``...).
        application_master: whether it is the ApplicationMaster container (the JobManager's).
    """

    container_id: str
    node_http_address: str
    state: str
    application_master: bool = False


@dataclass
class LogFile:
    """One log file of one container.

    Attributes:
        container_id: the container.
        node: its NodeManager (web address for live logs, node id for aggregated ones).
        file_name: e.g. ``application.driver.log``.
        size: the whole file's length in bytes (``text`` may be only its end).
        text: the content read (the last ``tail_bytes`` when asked), decoded as UTF-8.
        aggregated: read from the aggregated logs rather than live from the NodeManager.
    """

    container_id: str
    node: str
    file_name: str
    size: int
    text: str
    aggregated: bool = False

    @property
    def quiet(self) -> bool:
        """Whether the file is one of YARN's launch details, worth reading only when asked for."""
        return self.file_name in QUIET_FILES or (self.file_name == "prelaunch.err" and not self.text.strip())

    @property
    def role(self) -> str:
        """What the file holds, in words (see :func:`file_role`)."""
        return file_role(self.file_name)


def application_report(app_id: str, conf_dir: str | None = None, timeout_s: float = 10.0) -> dict:
    """The ResourceManager's report of an application (``/ws/v1/cluster/apps/{app}``).

    Args:
        app_id: ``application_<cluster ts>_<n>``.
        conf_dir: Hadoop configuration directory (default :func:`hadoop_conf_dir`).
        timeout_s: seconds per HTTP call.

    Returns:
        The ``app`` object (``state``, ``finalStatus``, ``logAggregationStatus``, ``user``...),
        plus ``rm`` (the ResourceManager address that answered).

    Raises:
        ApplicationNotFoundError: the ResourceManager does not know the application.
        ClusterError: no ResourceManager answered (naming the URLs).
    """
    _check_app_id(app_id)
    errors = []
    for rm in rm_web_addresses(conf_dir or hadoop_conf_dir()):
        url = f"http://{rm}/ws/v1/cluster/apps/{app_id}"
        try:
            doc = _get_json(url, timeout_s)
        except YarnRestError as exc:
            if exc.status == 404:
                raise ApplicationNotFoundError(f"no YARN application {app_id} at the ResourceManager {rm} "
                                               f"(GET {url}: 404)", app_id) from exc
            errors.append(str(exc))
            continue
        app = doc.get("app") if isinstance(doc, dict) else None
        if not isinstance(app, dict) or "state" not in app:
            raise YarnRestError(f"GET {url}: expected {{\"app\": {{\"state\": ...}}}}, got {str(doc)[:200]}", url)
        return {**app, "rm": rm}
    raise ClusterError("no ResourceManager answered: " + "; ".join(errors))


def _check_app_id(app_id: str) -> None:
    if not re.fullmatch(r"application_\d+_\d+", app_id or ""):
        raise ClusterError(f"{app_id!r} is not a YARN application id; expected application_<digits>_<digits>")


def _attempt_id(app_id: str, attempt: dict) -> str:
    if attempt.get("appAttemptId"):
        return attempt["appAttemptId"]
    return f"appattempt_{app_id[len('application_'):]}_{int(attempt.get('id', 1)):06d}"


def parse_containers(attempt: dict, containers_doc: dict) -> list[Container]:
    """Containers from the ResourceManager's JSON answers (pure: no I/O).

    Args:
        attempt: the current element of ``/ws/v1/cluster/apps/{app}/appattempts``
            (its ``containerId`` is the ApplicationMaster's).
        containers_doc: the answer of ``.../appattempts/{attempt}/containers``
            (``{"container": [...]}``, or wrapped in ``{"containers": ...}``).

    Returns:
        The ApplicationMaster container first, then the others by id.
    """
    am_id = attempt.get("containerId", "")
    found: dict[str, Container] = {}
    rows = _rows(containers_doc, "containers", "container")
    for row in rows:
        cid = row.get("containerId")
        if not cid:
            continue
        node = _strip_scheme(row.get("nodeHttpAddress") or "")
        if not node and row.get("logUrl"):
            node = urllib.parse.urlsplit(row["logUrl"]).netloc
        found[cid] = Container(cid, node, str(row.get("containerState", "")), cid == am_id)
    if am_id and am_id not in found and attempt.get("nodeHttpAddress"):
        found[am_id] = Container(am_id, _strip_scheme(attempt["nodeHttpAddress"]),
                                 str(attempt.get("appAttemptState", "RUNNING")), True)
    return sorted(found.values(), key=lambda c: (not c.application_master, c.container_id))


def containers(app_id: str, conf_dir: str | None = None, timeout_s: float = 10.0) -> list[Container]:
    """Every container of a live application: the ApplicationMaster's and the services' (TaskManagers).

    An application is live from the launch of its ApplicationMaster container (YARN still says
    ACCEPTED until the ApplicationMaster registers) until it ends.

    Args:
        app_id: the YARN application id.
        conf_dir: Hadoop configuration directory (default :func:`hadoop_conf_dir`).
        timeout_s: seconds per HTTP call.

    Returns:
        The containers of the current application attempt, ApplicationMaster first.

    Raises:
        ClusterError: the application is unknown, ended, or has no container yet, or a REST call
            failed (naming the URL).
    """
    report = application_report(app_id, conf_dir, timeout_s)
    if report["state"] in ENDED_STATES:
        raise ClusterError(f"YARN application {app_id} is {report['state']}: its containers are gone "
                           "(read its aggregated logs)")
    found = _containers(app_id, report["rm"], timeout_s)
    if not found:
        raise ClusterError(f"YARN application {app_id} is {report['state']} and has no container yet, so no "
                           f"logs. {report.get('diagnostics') or ''}".rstrip())
    return found


def _containers(app_id: str, rm: str, timeout_s: float) -> list[Container]:
    url = f"http://{rm}/ws/v1/cluster/apps/{app_id}/appattempts"
    attempts = _rows(_get_json(url, timeout_s), "appAttempts", "appAttempt")
    if not attempts:
        return []
    attempt = max(attempts, key=lambda a: int(a.get("id", 0)))
    url = f"http://{rm}/ws/v1/cluster/apps/{app_id}/appattempts/{_attempt_id(app_id, attempt)}/containers"
    return parse_containers(attempt, _get_json(url, timeout_s))


def parse_log_listing(doc) -> list[tuple[str, int]]:
    """``(file name, size in bytes)`` from a NodeManager's ``/ws/v1/node/containers/{cid}/logs`` answer (pure).

    Accepts Hadoop 3's ``{"containerLogsInfo": [{"containerLogInfo": [{"fileName", "fileSize"}]}]}``
    with single elements as objects or lists, and a bare list of ``containerLogsInfo``.
    """
    out = []
    for group in _rows(doc, "containerLogsInfos", "containerLogsInfo"):
        for info in _rows(group, "containerLogInfos", "containerLogInfo"):
            name = info.get("fileName")
            if name:
                try:
                    size = int(info.get("fileSize", 0))
                except (TypeError, ValueError):
                    size = 0
                out.append((name, size))
    return sorted(set(out))


# A block of a log dump: `yarn logs` output, and a NodeManager's containerlogs answer (Hadoop 3's
# LogToolUtils.outputContainerLog); Hadoop 2's spelling (no type line, "Log Upload Time", "Log Contents") too.
_BLOCK = re.compile(
    rb"Container: (?P<container>\S+) on (?P<node>\S+)[ \t]*\r?\n"
    rb"(?:LogAggregationType: (?P<type>\S+)\r?\n)?"
    rb"=+\r?\n"
    rb"LogType: ?(?P<file>[^\r\n]+)\r?\n"
    rb"(?:Log ?(?:LastModified|Upload) ?Time: ?[^\n]*\n)?"
    rb"LogLength: ?(?P<length>\d+)\r?\n"
    rb"Log ?Contents:\r?\n")


def parse_log_dump(data: bytes, tail_bytes: int | None = None) -> list[tuple[str, str, str, int, str]]:
    """Split ``yarn logs`` output (or a NodeManager's containerlogs answer) into files (pure).

    Each block is Hadoop's ``Container: CID on NODE`` / ``LogType:`` / ``LogLength:`` /
    ``LogContents:`` header, the content, and an ``End of LogType:`` trailer. The content is
    taken by length, so log text that looks like a header cannot confuse the split.

    Args:
        data: the raw bytes.
        tail_bytes: the ``-size -N`` / ``size=-N`` asked for, so the content is at most that long.

    Returns:
        ``(container id, node, file name, file length, text)`` per block, in order.
    """
    out = []
    pos = 0
    while True:
        m = _BLOCK.search(data, pos)
        if m is None:
            return out
        name = m.group("file").decode("utf-8", "replace").strip()
        length = int(m.group("length"))
        want = min(length, tail_bytes) if tail_bytes else length
        start = m.end()
        end = start + want
        trailer = re.compile(rb"\r?\n?End of LogType: ?" + re.escape(name.encode()))
        if not trailer.match(data, end):
            # the file changed between stat and read: fall back to the trailer
            t = trailer.search(data, start)
            end = t.start() if t else len(data)
        out.append((m.group("container").decode(), m.group("node").decode(), name, length,
                    data[start:end].decode("utf-8", "replace")))
        pos = end


def _read_live(container: Container, names: list[tuple[str, int]], tail_bytes: int | None,
               timeout_s: float) -> list[LogFile]:
    out = []
    for name, size in names:
        url = (f"http://{container.node_http_address}/ws/v1/node/containerlogs/{container.container_id}/"
               f"{urllib.parse.quote(name)}")
        if tail_bytes:
            url += f"?size=-{int(tail_bytes)}"
        data = http_get(url, timeout_s, accept="text/plain")
        blocks = parse_log_dump(data, tail_bytes)
        if blocks:
            _, _, _, size, text = blocks[0]
        else:  # a NodeManager that sends the bare file (or an empty file: no header at all)
            text = data.decode("utf-8", "replace")
        out.append(LogFile(container.container_id, container.node_http_address, name, size, text))
    return out


def live_logs(app_id: str, files: list[str] | None = None, tail_bytes: int | None = None,
              container_id: str | None = None, conf_dir: str | None = None,
              timeout_s: float = 10.0, _report: dict | None = None) -> list[LogFile]:
    """Log files of a live application, read from its containers' NodeManagers.

    Args:
        app_id: the YARN application id.
        files: file names to read (default: every file of each container).
        tail_bytes: read only the last this many bytes of each file.
        container_id: only this container.
        conf_dir: Hadoop configuration directory (default :func:`hadoop_conf_dir`).
        timeout_s: seconds per HTTP call.

    Returns:
        One :class:`LogFile` per file, ApplicationMaster container first.

    Raises:
        ClusterError: ended or no container yet, unknown container or file, or a REST call failed
            (naming the URL).
    """
    if _report is None:
        listing = containers(app_id, conf_dir, timeout_s)
    else:  # application_logs asked the ResourceManager already
        listing = _containers(app_id, _report["rm"], timeout_s)
        if not listing:
            raise ClusterError(f"YARN application {app_id} is {_report['state']} and has no container yet, so "
                               f"no logs. {_report.get('diagnostics') or ''}".rstrip())
    if container_id:
        listing = [c for c in listing if c.container_id == container_id]
        if not listing:
            raise ClusterError(f"--container {container_id}: not a running container of {app_id}")
    out: list[LogFile] = []
    seen: dict[str, list[str]] = {}
    for c in listing:
        url = f"http://{c.node_http_address}/ws/v1/node/containers/{c.container_id}/logs"
        try:
            names = parse_log_listing(_get_json(url, timeout_s))
        except YarnRestError as exc:
            if exc.status == 404 and not container_id:
                continue  # the container ended since the ResourceManager listed it
            raise
        seen[c.container_id] = [n for n, _ in names]
        if files:
            names = [(n, s) for n, s in names if n in files]
        out.extend(_read_live(c, names, tail_bytes, timeout_s))
    if files and not out:
        there = "; ".join(f"{cid}: {', '.join(n) or 'none'}" for cid, n in seen.items())
        raise ClusterError(f"--file {', '.join(files)}: no such log file in the containers of {app_id} "
                           f"(files there: {there})")
    return out


def aggregated_logs(app_id: str, files: list[str] | None = None, tail_bytes: int | None = None,
                    container_id: str | None = None, conf_dir: str | None = None,
                    timeout_s: float = 180.0) -> list[LogFile]:
    """Log files of an ended application through ``yarn logs -applicationId APP`` (Hadoop's LogsCLI).

    Args:
        app_id: the YARN application id.
        files: file names to read (``-log_files``; default all).
        tail_bytes: only the last this many bytes of each file (``-size -N``).
        container_id: only this container (``-containerId``).
        conf_dir: ``HADOOP_CONF_DIR`` for the command (default: the environment's).
        timeout_s: seconds the command may take (it starts a JVM).

    Returns:
        One :class:`LogFile` per file found.

    Raises:
        ClusterError: no ``yarn`` command, it failed or timed out, or it printed no log file; the
            message carries the end of its output.
    """
    _check_app_id(app_id)
    yarn = shutil.which("yarn")
    if yarn is None:
        raise ClusterError("no `yarn` command on PATH to read the aggregated logs with")
    cmd = [yarn, "logs", "-applicationId", app_id]
    if container_id:
        cmd += ["-containerId", container_id]
    if files:
        cmd += ["-log_files", ",".join(files)]
    if tail_bytes:
        cmd += ["-size", str(-int(tail_bytes))]
    env = dict(os.environ)
    if conf_dir:
        env["HADOOP_CONF_DIR"] = conf_dir
        env.pop("YARN_CONF_DIR", None)
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"`{' '.join(cmd[1:])}` did not finish within {timeout_s:g} s") from exc
    blocks = parse_log_dump(proc.stdout, tail_bytes)
    if not blocks:
        said = (proc.stderr + proc.stdout).decode("utf-8", "replace").strip().splitlines()
        said = [line for line in said if " WARN " not in line and "SLF4J" not in line][-6:]
        raise ClusterError(f"`yarn {' '.join(cmd[1:])}` found no log file (exit {proc.returncode}): "
                           + " / ".join(said))
    return [LogFile(cid, node, name, size, text, aggregated=True) for cid, node, name, size, text in blocks]


def where_the_logs_are(app_id: str, props: dict[str, str] | None, user: str | None = None,
                       aggregation_status: str | None = None) -> str:
    """A sentence saying where an ended application's logs are kept and when they appear.

    Args:
        app_id: the YARN application id.
        props: from :func:`read_yarn_site`, or ``None`` when it could not be read.
        user: the application's user (its logs are under a directory of that name).
        aggregation_status: the ResourceManager's ``logAggregationStatus`` if known.
    """
    props = props or dict(YARN_DEFAULTS)
    enabled = (conf_get(props, "yarn.log-aggregation-enable") or "false").strip().lower() == "true"
    remote = conf_get(props, "yarn.nodemanager.remote-app-log-dir")
    local = conf_get(props, "yarn.nodemanager.log-dirs")
    retain = conf_get(props, "yarn.nodemanager.log.retain-seconds")
    emr = (f" On Amazon EMR they are also copied to the cluster's log URI under "
           f"<cluster-id>/containers/{app_id}/.")
    if aggregation_status == "DISABLED" or (not enabled and aggregation_status is None):
        return (f"Log aggregation is off (yarn.log-aggregation-enable is not true): the logs of {app_id} stay on "
                f"each NodeManager under {local}/{app_id}/<container>/ (yarn.nodemanager.log-dirs; one of them "
                f"when it lists several) for "
                f"yarn.nodemanager.log.retain-seconds ({retain} s) after the application ends." + emr)
    when = ""
    if aggregation_status in ("NOT_START", "RUNNING", "RUNNING_WITH_FAILURE"):
        when = f" YARN is still uploading them (log aggregation {aggregation_status}): retry in a few seconds."
    elif aggregation_status in ("FAILED", "TIME_OUT"):
        when = f" Log aggregation ended {aggregation_status}: some files may be only on the NodeManagers."
    return (f"The NodeManagers upload the logs of {app_id} under yarn.nodemanager.remote-app-log-dir "
            f"({remote}/{user or '<user>'}/...) once the application has ended (log aggregation on); "
            f"`yarn logs -applicationId {app_id}` reads them there.{when}" + emr)


def application_logs(app_id: str, files: list[str] | None = None, tail_bytes: int | None = None,
                     container_id: str | None = None, conf_dir: str | None = None,
                     timeout_s: float = 10.0, aggregation_wait_s: float = 30.0) -> list[LogFile]:
    """An application's logs: live while it runs, aggregated after it ended.

    A live application's files (RUNNING, or ACCEPTED with its ApplicationMaster container
    launched) are read from its containers' NodeManagers; a FINISHED,
    FAILED or KILLED one's through ``yarn logs``. When the ResourceManager cannot be asked,
    ``yarn logs`` is tried.

    Args:
        app_id: the YARN application id.
        files: file names to read, e.g. ``["application.driver.log"]`` (default all).
        tail_bytes: only the last this many bytes of each file.
        container_id: only this container.
        conf_dir: Hadoop configuration directory (default :func:`hadoop_conf_dir`).
        timeout_s: seconds per HTTP call.
        aggregation_wait_s: for an application that has just ended, seconds to wait for the
            NodeManagers to finish uploading its logs (``logAggregationStatus`` NOT_START or
            RUNNING) before reading them.

    Returns:
        One :class:`LogFile` per file; :attr:`LogFile.role` says what it holds.

    Raises:
        ClusterError: no logs could be read: the message says why, where the logs are kept and
            when they appear.
    """
    _check_app_id(app_id)
    if tail_bytes is not None and tail_bytes <= 0:
        raise ClusterError(f"--tail must be a positive number of bytes, got {tail_bytes}")
    conf_dir = conf_dir or hadoop_conf_dir()
    rm_error = None
    try:
        report = application_report(app_id, conf_dir, timeout_s)
    except (ConfigError, ApplicationNotFoundError):
        raise
    except ClusterError as exc:  # no ResourceManager answered (or HTTPS only): `yarn logs` may still work
        report, rm_error = None, exc
    if report is not None and report["state"] not in ENDED_STATES:
        return live_logs(app_id, files, tail_bytes, container_id, conf_dir, timeout_s, _report=report)
    deadline = time.monotonic() + aggregation_wait_s
    while report is not None and report.get("logAggregationStatus") in ("NOT_START", "RUNNING") \
            and time.monotonic() < deadline:
        time.sleep(1.0)
        report = application_report(app_id, conf_dir, timeout_s)
    try:
        return aggregated_logs(app_id, files, tail_bytes, container_id, conf_dir)
    except ClusterError as exc:
        try:
            props = read_yarn_site(conf_dir)
        except ConfigError:
            props = None
        status = report.get("logAggregationStatus") if report else None
        why = str(exc) if report else f"{rm_error}; {exc}"
        state = f"is {report['state']}" if report else "could not be asked about"
        raise ClusterError(f"cannot read the logs of {app_id}, which {state}: {why}. "
                           + where_the_logs_are(app_id, props, report.get("user") if report else None,
                                                status)) from exc
