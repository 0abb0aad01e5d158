"""What runs inside the YARN containers of an emrflow application (Flink on YARN's entry points).

* ``python -m emrflow.deploy.yarn_containers master --mode session|per-job|application``
  runs in the skein ApplicationMaster container: it starts the JobManager (RPC and
  REST, with a fresh cluster secret and REST token), publishes their addresses in the
  application's skein key-value store (``emrflow.jobmanager.rpc``,
  ``emrflow.jobmanager.rest``, ``emrflow.secret``, ``emrflow.rest.token``, with
  ``metrics.reporter.prom.port`` also ``emrflow.metrics.prom``; the application's ACLs
  keep the store to its owner), adds the dashboard and the Prometheus endpoint to
  skein's web UI (the tracking URL, see ``_publish_ui_pages``), asks skein for TaskManager
  containers when jobs need more slots and releases idle ones after
  ``resourcemanager.taskmanager-timeout``. In ``per-job`` mode it runs the localized
  JobGraph (``jobgraph.pkl``), in ``application`` mode the job's script, then shuts
  the application down with SUCCEEDED, FAILED or KILLED and the job's diagnostics,
  which YARN's application report carries to the client.
* ``python -m emrflow.deploy.yarn_containers taskmanager --slots S`` runs in each
  ``taskmanager`` service container: it reads the JobManager's address and the secret
  from the key-value store and runs a TaskManager.

Both read the client's configuration from the localized ``emrflow-conf`` directory
(``$EMRFLOW_CONF_DIR``), so ``-D`` options and the client's configuration file apply
in the containers too. Other containers reach this one at the NodeManager's host
(``$NM_HOST``).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("emrflow.yarn")

KV_RPC = "emrflow.jobmanager.rpc"
KV_REST = "emrflow.jobmanager.rest"
KV_SECRET = "emrflow.secret"
KV_TOKEN = "emrflow.rest.token"
KV_PROM = "emrflow.metrics.prom"
#: first byte of the secrets in the key-value store: not UTF-8, so skein's web UI shows them as
#: "<binary value>" (the UI may be open to every web user: yarn.application.web-ui.users)
_HIDDEN = b"\xff"


def hide(value: str) -> bytes:
    """A secret as stored in the key-value store: skein's web UI does not show it."""
    return _HIDDEN + value.encode()


def reveal(raw: bytes) -> str:
    """A value of the key-value store as text, a secret stored by :func:`hide` too."""
    return (raw[1:] if raw[:1] == _HIDDEN else raw).decode()
#: skein web UI routes (``<tracking URL>pages/<route>/``) of the dashboard and the Prometheus endpoint
UI_ROUTE_DASHBOARD, UI_ROUTE_METRICS = "emrflow", "metrics"
#: name of the localized directory holding the client's emrflow-conf.yaml
CONF_DIR_NAME = "emrflow-conf"


def application_client():
    """The skein ``ApplicationClient`` of the current container."""
    import skein
    return skein.ApplicationClient.from_current()


def container_host() -> str:
    """The address other containers reach this one at: the NodeManager's host (``$NM_HOST``)."""
    return os.environ.get("NM_HOST") or socket.getfqdn()


@dataclass
class ResourceManagerLogic:
    """Decides how many TaskManager containers to ask YARN for (sans I/O: events in, actions out).

    Args:
        slots_per_taskmanager: task slots of each container.
        min_taskmanagers: containers to keep even when idle (the session's initial count).
        idle_timeout_ms: release a container idle for this long
            (``resourcemanager.taskmanager-timeout``).
    """

    slots_per_taskmanager: int
    min_taskmanagers: int = 0
    idle_timeout_ms: int = 30_000
    requested: int = 0
    idle_since_ms: float | None = field(default=None)

    def wanted(self, slots_needed: int, slots_busy: int, registered_taskmanagers: int, now_ms: float) -> int:
        """Return the number of TaskManager containers the application should have.

        Args:
            slots_needed: slots the waiting and running jobs need in total.
            slots_busy: slots in use.
            registered_taskmanagers: containers registered with the JobManager.
            now_ms: the current time in ms.
        """
        need = -(-slots_needed // self.slots_per_taskmanager)
        target = max(self.min_taskmanagers, need, self.requested if slots_needed else 0)
        if slots_needed or slots_busy:
            self.idle_since_ms = None
        elif self.idle_since_ms is None:
            self.idle_since_ms = now_ms
        if not slots_needed and not slots_busy:
            if self.idle_since_ms is not None and now_ms - self.idle_since_ms >= self.idle_timeout_ms:
                target = self.min_taskmanagers
            else:
                target = max(self.min_taskmanagers, registered_taskmanagers, self.requested)
        self.requested = target
        return target


def _start_jobmanager(config, rest_token: str, secret: str):
    from emrflow.runtime.jobmanager import JobManager
    from emrflow.runtime.rest import start_rest_server
    listener = socket.create_server(("0.0.0.0", 0))
    jm = JobManager(listener, secret, int(config.get("heartbeat.timeout")), slot_request_timeout_ms=300_000)
    jm.savepoint_dir = config.get("state.savepoints.dir")
    rest = start_rest_server(jm, "0.0.0.0", 0, rest_token)
    prom_port = None
    if config.get("metrics.reporter.prom.port") is not None:
        from emrflow.runtime.metrics import start_prometheus_endpoint
        prom_port = start_prometheus_endpoint(jm, int(config.get("metrics.reporter.prom.port")), host="0.0.0.0")
    threading.Thread(target=jm.serve, daemon=True, name="jobmanager").start()
    return jm, listener.getsockname()[1], rest[1], prom_port


def _publish_ui_pages(app, host: str, rest_port: int, rest_token: str, prom_port: int | None) -> None:
    """Add the dashboard (and the Prometheus endpoint) to skein's web UI, YARN's tracking URL.

    They are then reachable through the ResourceManager's web proxy at
    ``<tracking URL>pages/emrflow/`` and ``<tracking URL>pages/metrics``, for whom skein's UI
    admits (``yarn.application.web-ui.users``). YARN's proxy forwards neither ``Authorization``
    nor the browser's cookies, but it forwards the query: the dashboard opened with a signed
    link's ``?expires=...&signature=...`` (:func:`~emrflow.runtime.rest.login_link`) sends them on
    every request (see ``docs/yarn.md``). Failures are logged: the session works without the pages.

    Args:
        app: The skein ``ApplicationClient``.
        host: The JobManager's host.
        rest_port: The REST server's port.
        rest_token: The REST server's ``rest.auth.token``.
        prom_port: The Prometheus endpoint's port, or None when there is none.
    """
    try:
        app.ui.add_page(UI_ROUTE_DASHBOARD, f"http://{host}:{rest_port}/",
                        link_name="emrflow dashboard")
        if prom_port is not None:
            app.kv[KV_PROM] = f"{host}:{prom_port}".encode()
            app.ui.add_page(UI_ROUTE_METRICS, f"http://{host}:{prom_port}/metrics",
                            link_name="Prometheus metrics")
    except Exception as exc:  # noqa: BLE001 - the session works without the pages
        log.warning("cannot add the dashboard to skein's web UI: %s", exc)


def _failed_taskmanagers(app, seen: set[str]) -> None:
    """Log TaskManager containers that failed since the last look, with YARN's exit message."""
    try:
        failed = app.get_containers(services=["taskmanager"], states=["FAILED"])
    except Exception as exc:  # noqa: BLE001 - the ApplicationMaster is shutting down
        log.debug("cannot list failed containers: %s", exc)
        return
    for c in failed:
        if c.yarn_container_id not in seen:
            seen.add(c.yarn_container_id)
            log.warning("TaskManager container %s on %s failed: %s", c.yarn_container_id,
                        c.yarn_node_http_address, (c.exit_message or "no exit message").strip()[-2000:])


def _scale_loop(jm, app, logic: ResourceManagerLogic, stop: threading.Event) -> None:
    current = None
    seen_failures: set[str] = set()
    while not stop.wait(0.5):
        demand = jm.query.resource_demand()
        waiting, busy, registered = demand.slots_waiting, demand.slots_busy, demand.taskmanagers
        target = logic.wanted(waiting + busy, busy, registered, time.time() * 1000)
        # also re-issued while fewer TaskManagers are registered than wanted: a TaskManager
        # killed from outside (not failed on its own) is not replaced by skein, scaling is
        if target != current or registered < target:
            try:
                app.scale("taskmanager", count=target)
                current = target
            except Exception as exc:  # noqa: BLE001 - YARN refusals are logged, retried next round
                log.warning("scaling the taskmanager service to %d failed: %s", target, exc)
        _failed_taskmanagers(app, seen_failures)


def run_master(mode: str, slots: int, taskmanagers: int, job_args: list[str]) -> int:
    """Entry point of the ApplicationMaster container; returns the process exit status."""
    from emrflow.config import Configuration
    config = Configuration.load()
    app = application_client()
    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    jm, rpc_port, rest_port, prom_port = _start_jobmanager(config, token, secret)
    host = container_host()
    app.kv[KV_SECRET] = hide(secret)
    app.kv[KV_TOKEN] = hide(token)
    app.kv[KV_RPC] = f"{host}:{rpc_port}".encode()
    app.kv[KV_REST] = f"{host}:{rest_port}".encode()
    _publish_ui_pages(app, host, rest_port, token, prom_port)
    log.info("JobManager RPC at %s:%d, REST API and dashboard at http://%s:%d/", host, rpc_port, host, rest_port)
    logic = ResourceManagerLogic(slots, taskmanagers if mode == "session" else 0,
                                 int(config.get("resourcemanager.taskmanager-timeout")))
    stop = threading.Event()
    threading.Thread(target=_scale_loop, args=(jm, app, logic, stop), daemon=True, name="scaler").start()
    status, diagnostics = "FAILED", ""
    try:
        if mode == "session":
            jm.stopping.wait()
            status, diagnostics = "SUCCEEDED", "session stopped"
        else:
            status, diagnostics = _run_job(mode, jm, rest_port, token, job_args, config)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes YARN diagnostics
        log.exception("the ApplicationMaster failed")
        status, diagnostics = "FAILED", f"{type(exc).__name__}: {exc}"
    finally:
        stop.set()
        jm.shutdown()
        staging = os.environ.get("EMRFLOW_STAGING_DIR")
        if staging and os.path.isdir(staging):  # file:/// default file system: the client's files
            shutil.rmtree(staging, ignore_errors=True)
        app.shutdown(status, diagnostics[-4000:])
    return 0 if status == "SUCCEEDED" else 1


def _run_job(mode: str, jm, rest_port: int, token: str, job_args: list[str], config) -> tuple[str, str]:
    from emrflow.deploy.jobclient import result_from_status
    from emrflow.errors import JobExecutionError
    if mode == "per-job":
        import cloudpickle
        with open("jobgraph.pkl", "rb") as f:
            job_bytes = f.read()  # passed on as the client pickled it (file names, sources)
        job_graph = cloudpickle.loads(job_bytes)
        from emrflow.runtime.jobmanager import TERMINAL, JobManagerError, JobStatus
        try:
            reply = jm.submit(topology=job_graph.topology(), job_bytes=job_bytes)
        except JobManagerError as exc:
            return "FAILED", str(exc)
        while True:
            status = jm.job_status(reply["job_id"], wait_s=5)
            if status["state"] in TERMINAL:
                break
        # an attached client long-polls the job's status: give it a moment to read the end
        # over REST (with the user's traceback) before the JobManager goes away
        time.sleep(1.0)
        try:
            result = result_from_status(status)
        except JobExecutionError as exc:
            return ("KILLED" if status["state"] == JobStatus.CANCELED else "FAILED"), str(exc)
        return "SUCCEEDED", f"job {result.job_id} finished in {result.net_runtime_ms} ms"
    # application mode: the job's main runs here, submitting to this JobManager
    from emrflow.job import ExecutionContext, set_execution_context
    job_config = config.with_overrides({"execution.target": "remote", "rest.address": "127.0.0.1",
                                        "rest.port": rest_port, "rest.auth.token": token,
                                        "execution.attached": True}, source="yarn-application")
    set_execution_context(ExecutionContext(config=job_config))
    script, *args = job_args
    sys.argv = [script, *args]
    # the localized --py-files: modules beside the script, and .zip/.egg archives as they are
    sys.path[:0] = [os.getcwd()] + sorted(os.path.abspath(f) for f in os.listdir(".")
                                          if f.endswith((".zip", ".egg")))
    try:
        _run_script(script, config.get("yarn.application.script-path") or script)
    except JobExecutionError as exc:
        return "FAILED", str(exc)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return "FAILED", f"{script} exited with status {exc.code}"
    except Exception:  # noqa: BLE001 - the user's script raised before or after its job
        import traceback
        return "FAILED", f"{script} raised:\n{traceback.format_exc()}"
    return "SUCCEEDED", f"{script} finished"


def _run_script(path: str, shown_as: str) -> None:
    """Run the localized script ``path`` as ``__main__``, compiled under the name the user gave it."""
    import types

    from emrflow.graph.pickling import remember_source
    with open(path, encoding="utf-8") as f:
        source = f.read()
    remember_source(shown_as, source)
    module = types.ModuleType("__main__")
    module.__file__ = shown_as
    saved = sys.modules.get("__main__")
    sys.modules["__main__"] = module
    try:
        exec(compile(source, shown_as, "exec"), module.__dict__)
    finally:
        if saved is not None:
            sys.modules["__main__"] = saved


def run_taskmanager(slots: int) -> int:
    """Entry point of a ``taskmanager`` service container."""
    from emrflow.config import Configuration
    from emrflow.runtime.taskmanager import TaskManager
    config = Configuration.load()
    app = application_client()
    rpc = app.kv.wait(KV_RPC).decode()
    secret = reveal(app.kv.wait(KV_SECRET))
    os.environ["EMRFLOW_CLUSTER_SECRET"] = secret
    host, _, port = rpc.rpartition(":")
    container = os.environ.get("CONTAINER_ID") or f"tm-{secrets.token_hex(3)}"
    TaskManager((host, int(port)), secret, slots, container, container_host(),
                int(config.get("heartbeat.interval"))).run()
    return 0


def main(argv: list[str] | None = None) -> None:
    """``python -m emrflow.deploy.yarn_containers master|taskmanager ...``."""
    from emrflow.runtime.process import setup_logging
    parser = argparse.ArgumentParser(prog="python -m emrflow.deploy.yarn_containers")
    sub = parser.add_subparsers(dest="role", required=True)
    m = sub.add_parser("master")
    m.add_argument("--mode", choices=["session", "per-job", "application"], required=True)
    m.add_argument("--slots", type=int, default=1)
    m.add_argument("--taskmanagers", type=int, default=0)
    m.add_argument("job_args", nargs=argparse.REMAINDER)
    t = sub.add_parser("taskmanager")
    t.add_argument("--slots", type=int, default=1)
    args = parser.parse_args(argv)
    setup_logging(f"yarn {args.role}")
    if args.role == "master":
        job_args = list(args.job_args)
        if job_args[:1] == ["--"]:
            job_args = job_args[1:]
        sys.exit(run_master(args.mode, args.slots, args.taskmanagers, job_args))
    sys.exit(run_taskmanager(args.slots))


if __name__ == "__main__":
    main()
