"""What runs inside the YARN containers of an emrflow application (Flink on YARN's entry points).

* ``python -m emrflow.deploy.yarn_containers master --mode session|per-job|application``
  runs in the skein ApplicationMaster container: it starts the JobManager (RPC and
  REST, with a fresh cluster secret and REST token), publishes their addresses in the
  application's skein key-value store (``emrflow.jobmanager.rpc``,
  ``emrflow.jobmanager.rest``, ``emrflow.secret``, ``emrflow.rest.token``), asks skein
  for TaskManager containers when jobs need more slots and releases idle ones after
  ``resourcemanager.taskmanager-timeout``. In ``per-job`` mode it runs the localized
  JobGraph (``jobgraph.pkl``), in ``application`` mode the job's script, then shuts
  the application down with SUCCEEDED, FAILED or KILLED and the job's diagnostics.
* ``python -m emrflow.deploy.yarn_containers taskmanager --slots S`` runs in each
  ``taskmanager`` service container: it reads the JobManager's address and the secret
  from the key-value store and runs a TaskManager.

The skein ``ApplicationClient`` comes from :func:`application_client`; tests swap in a
stand-in through ``EMRFLOW_YARN_APP_CLIENT=module:factory``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import secrets
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
KV_STATUS = "emrflow.job.status"


def application_client():
    """The skein ``ApplicationClient`` of the current container (or the test stand-in)."""
    spec = os.environ.get("EMRFLOW_YARN_APP_CLIENT")
    if spec:
        module, _, func = spec.partition(":")
        return getattr(importlib.import_module(module), func)()
    import skein
    return skein.ApplicationClient.from_current()


def container_host() -> str:
    """The address other containers reach this one at (YARN's NodeManager host)."""
    return os.environ.get("EMRFLOW_CONTAINER_HOST") or socket.gethostbyname(socket.gethostname())


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


def _start_jobmanager(rest_token: str, secret: str, heartbeat_timeout_ms: int):
    from emrflow.runtime.jobmanager import JobManager
    from emrflow.runtime.rest import start_rest_server
    listener = socket.create_server(("0.0.0.0", 0))
    jm = JobManager(listener, secret, heartbeat_timeout_ms, slot_request_timeout_ms=300_000)
    rest = start_rest_server(jm, "0.0.0.0", 0, rest_token)
    threading.Thread(target=jm.serve, daemon=True, name="jobmanager").start()
    return jm, listener.getsockname()[1], rest[1]


def _scale_loop(jm, app, logic: ResourceManagerLogic, stop: threading.Event) -> None:
    current = None
    while not stop.wait(0.5):
        with jm.cond:
            waiting = sum(max(v["parallelism"] for v in j.topology["vertices"])
                          for j in jm.jobs.values() if j.state in ("CREATED", "WAITING", "RESTARTING_WAIT"))
            busy = sum(1 for s in jm.slots.values() if s.job_id is not None)
            registered = len(jm.taskmanagers)
        target = logic.wanted(waiting + busy, busy, registered, time.time() * 1000)
        # also re-issued while fewer TaskManagers are registered than wanted: YARN does not
        # replace a container that died, scaling to the same count does (a restarting job waits)
        if target != current or registered < target:
            try:
                app.scale("taskmanager", count=target)
                current = target
            except Exception as exc:  # noqa: BLE001 - YARN refusals are logged, retried next round
                log.warning("scaling the taskmanager service to %d failed: %s", target, exc)


def run_master(mode: str, slots: int, taskmanagers: int, idle_timeout_ms: int,
               heartbeat_timeout_ms: int, job_args: list[str]) -> int:
    """Entry point of the ApplicationMaster container; returns the process exit status."""
    app = application_client()
    secret, token = secrets.token_hex(16), secrets.token_hex(16)
    jm, rpc_port, rest_port = _start_jobmanager(token, secret, heartbeat_timeout_ms)
    host = container_host()
    app.kv[KV_SECRET] = secret.encode()
    app.kv[KV_TOKEN] = token.encode()
    app.kv[KV_RPC] = f"{host}:{rpc_port}".encode()
    app.kv[KV_REST] = f"{host}:{rest_port}".encode()
    logic = ResourceManagerLogic(slots, taskmanagers if mode == "session" else 0, idle_timeout_ms)
    stop = threading.Event()
    threading.Thread(target=_scale_loop, args=(jm, app, logic, stop), daemon=True, name="scaler").start()
    if mode == "session":
        jm.stopping.wait()
        stop.set()
        app.shutdown("SUCCEEDED", "session stopped")
        return 0
    status, diagnostics = "FAILED", ""
    try:
        status, diagnostics = _run_job(mode, jm, rest_port, token, job_args)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes YARN diagnostics
        status, diagnostics = "FAILED", f"{type(exc).__name__}: {exc}"
    finally:
        stop.set()
        app.kv[KV_STATUS] = f"{status}\n{diagnostics}".encode()
        jm.shutdown()
        app.shutdown(status, diagnostics[-4000:])
    return 0 if status == "SUCCEEDED" else 1


def _run_job(mode: str, jm, rest_port: int, token: str, job_args: list[str]) -> tuple[str, str]:
    from emrflow.deploy.client import result_from_status
    from emrflow.errors import JobExecutionError
    if mode == "per-job":
        import cloudpickle
        with open("jobgraph.pkl", "rb") as f:
            job_graph = cloudpickle.load(f)
        reply = jm.submit(topology=job_graph.topology(), job_bytes=cloudpickle.dumps(job_graph))
        if isinstance(reply, str):
            return "FAILED", reply
        while True:
            status = jm.job_status(reply["job_id"], wait_s=5)
            if status["state"] in ("FINISHED", "FAILED", "CANCELED"):
                break
        try:
            result = result_from_status(status)
        except JobExecutionError as exc:
            return ("KILLED" if status["state"] == "CANCELED" else "FAILED"), str(exc)
        return "SUCCEEDED", f"job {result.job_id} finished in {result.net_runtime_ms} ms"
    # application mode: the job's main runs here, submitting to this JobManager
    import runpy

    from emrflow.api.environment import ExecutionContext, set_execution_context
    from emrflow.config import Configuration
    config = Configuration.load(dynamic=["execution.target=remote", "rest.address=127.0.0.1",
                                         f"rest.port={rest_port}", f"rest.auth.token={token}"])
    set_execution_context(ExecutionContext(config=config))
    script, *args = job_args
    sys.argv = [script, *args]
    sys.path.insert(0, os.getcwd())  # the localized --py-files
    try:
        runpy.run_path(script, run_name="__main__")
    except JobExecutionError as exc:
        return "FAILED", str(exc)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            return "FAILED", f"{script} exited with status {exc.code}"
    return "SUCCEEDED", f"{script} finished"


def run_taskmanager(slots: int, heartbeat_interval_ms: int) -> int:
    """Entry point of a ``taskmanager`` service container."""
    from emrflow.runtime.taskmanager import TaskManager
    app = application_client()
    rpc = app.kv.wait(KV_RPC).decode()
    secret = app.kv.wait(KV_SECRET).decode()
    os.environ["EMRFLOW_CLUSTER_SECRET"] = secret
    host, _, port = rpc.rpartition(":")
    container = os.environ.get("SKEIN_CONTAINER_ID") or os.environ.get("CONTAINER_ID") or f"tm-{secrets.token_hex(3)}"
    TaskManager((host, int(port)), secret, slots, container, container_host(), heartbeat_interval_ms).run()
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
    m.add_argument("--idle-timeout-ms", type=int, default=30_000)
    m.add_argument("--heartbeat-timeout-ms", type=int, default=50_000)
    m.add_argument("job_args", nargs=argparse.REMAINDER)
    t = sub.add_parser("taskmanager")
    t.add_argument("--slots", type=int, default=1)
    t.add_argument("--heartbeat-interval-ms", type=int, default=10_000)
    args = parser.parse_args(argv)
    setup_logging(f"yarn {args.role}")
    if args.role == "master":
        job_args = [a for a in args.job_args if a != "--"]
        sys.exit(run_master(args.mode, args.slots, args.taskmanagers, args.idle_timeout_ms,
                            args.heartbeat_timeout_ms, job_args))
    sys.exit(run_taskmanager(args.slots, args.heartbeat_interval_ms))


if __name__ == "__main__":
    main()
