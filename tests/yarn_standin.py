"""A small stand-in for skein (its Client and ApplicationClient), to test the YARN layer without YARN.

Containers are real local processes, each in its own working directory with the
spec's files copied in (as YARN localizes them); the key-value store is a
directory of files; ``scale`` starts and stops ``taskmanager`` containers.
Selected by ``EMRFLOW_YARN_DRIVER=tests.yarn_standin:driver`` (client side) and
``EMRFLOW_YARN_APP_CLIENT=tests.yarn_standin:app_client`` (inside containers).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import skein

def read_json(path):
    with open(path) as f:
        return json.load(f)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _base() -> str:
    return os.environ["STANDIN_YARN_DIR"]


class KV:
    """The application's key-value store: one file per key."""

    def __init__(self, app_dir: str):
        self.dir = os.path.join(app_dir, "kv")
        os.makedirs(self.dir, exist_ok=True)

    def __setitem__(self, key: str, value: bytes) -> None:
        tmp = os.path.join(self.dir, key + ".tmp")
        with open(tmp, "wb") as f:
            f.write(value)
        os.replace(tmp, os.path.join(self.dir, key))

    def get(self, key: str, default=None):
        try:
            with open(os.path.join(self.dir, key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return default

    def wait(self, key: str) -> bytes:
        while True:
            value = self.get(key)
            if value is not None:
                return value
            if os.path.exists(os.path.join(os.path.dirname(self.dir), "final.json")):
                raise RuntimeError("the application has finished")
            time.sleep(0.05)


class AppClient:
    """What ``skein.ApplicationClient`` offers the containers and the client."""

    def __init__(self, app_dir: str):
        self.app_dir = app_dir
        self.kv = KV(app_dir)
        self.spec = skein.ApplicationSpec.from_file(os.path.join(app_dir, "spec.yaml"))

    def _containers(self) -> list[dict]:
        path = os.path.join(self.app_dir, "containers.json")
        return read_json(path) if os.path.exists(path) else []

    def _save(self, containers: list[dict]) -> None:
        with open(os.path.join(self.app_dir, "containers.json"), "w") as f:
            json.dump(containers, f)

    def get_containers(self, services=None) -> list[dict]:
        return [c for c in self._containers() if _alive(c["pid"])]

    def scale(self, service: str, count: int | None = None, delta: int | None = None) -> None:
        live = self.get_containers()
        target = count if count is not None else len(live) + delta
        while len(live) < target:
            live.append(launch(self.app_dir, self.spec.services[service], f"{service}_{len(self._containers())}"))
            self._save(self._containers() + [live[-1]])
        for c in live[target:]:
            os.kill(c["pid"], signal.SIGTERM)

    def shutdown(self, status: str = "SUCCEEDED", diagnostics: str | None = None) -> None:
        with open(os.path.join(self.app_dir, "final.json"), "w") as f:
            json.dump({"status": status, "diagnostics": diagnostics}, f)
        for c in self.get_containers():
            try:
                os.kill(c["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # reap our own children
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def launch(app_dir: str, role, name: str) -> dict:
    """Start a container: copy its files into a fresh working directory, run its script."""
    cwd = os.path.join(app_dir, name)
    os.makedirs(cwd, exist_ok=True)
    for target, f in role.files.items():
        src = f.source[len("file://"):] if f.source.startswith("file://") else f.source
        staged = os.path.join(app_dir, "staging", target)
        shutil.copy(staged if os.path.exists(staged) else src, os.path.join(cwd, target))
    env = dict(os.environ, **role.env, EMRFLOW_YARN_APP_CLIENT="tests.yarn_standin:app_client",
               STANDIN_APP_DIR=app_dir, EMRFLOW_CONTAINER_HOST="127.0.0.1", SKEIN_CONTAINER_ID=name,
               PYTHONPATH=ROOT)
    env.pop("EMRFLOW_YARN_DRIVER", None)
    log = open(os.path.join(cwd, "container.log"), "wb")
    proc = subprocess.Popen(["bash", "-c", role.script.replace("python3 ", sys.executable + " ", 1)],
                            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return {"name": name, "pid": proc.pid}


def app_client() -> AppClient:
    """Inside a container: its application."""
    return AppClient(os.environ["STANDIN_APP_DIR"])


class Driver:
    """The client side: submit, connect, kill, report, list, logs."""

    def submit(self, spec) -> str:
        app_id = f"application_{int(time.time() * 1000)}_{os.getpid() % 10000:04d}"
        app_dir = os.path.join(_base(), app_id)
        os.makedirs(os.path.join(app_dir, "staging"))
        for role in [spec.master, *spec.services.values()]:  # files are uploaded at submission
            for target, f in role.files.items():
                src = f.source[len("file://"):]
                shutil.copy(src, os.path.join(app_dir, "staging", target))
        spec.to_file(os.path.join(app_dir, "spec.yaml"))
        master = launch(app_dir, spec.master, "master")
        with open(os.path.join(app_dir, "master.json"), "w") as f:
            json.dump(master, f)
        app = AppClient(app_dir)
        app.scale("taskmanager", count=spec.services["taskmanager"].instances)
        return app_id

    def connect(self, app_id: str) -> AppClient:
        app_dir = os.path.join(_base(), app_id)
        if not os.path.exists(app_dir):
            from emrflow.errors import ClusterError
            raise ClusterError(f"cannot connect to YARN application {app_id}: no such application")
        return AppClient(app_dir)

    def kill(self, app_id: str) -> None:
        app_dir = os.path.join(_base(), app_id)
        for c in [read_json(os.path.join(app_dir, "master.json"))] + AppClient(app_dir)._containers():
            try:
                os.killpg(c["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not os.path.exists(os.path.join(app_dir, "final.json")):
            with open(os.path.join(app_dir, "final.json"), "w") as f:
                json.dump({"status": "KILLED", "diagnostics": "killed by the client"}, f)

    def report(self, app_id: str) -> dict:
        app_dir = os.path.join(_base(), app_id)
        final = os.path.join(app_dir, "final.json")
        if os.path.exists(final):
            d = read_json(final)
            return {"id": app_id, "state": "FINISHED", "final_status": d["status"], "diagnostics": d["diagnostics"]}
        return {"id": app_id, "state": "RUNNING", "final_status": "UNDEFINED", "diagnostics": ""}

    def list(self) -> list[dict]:
        return [self.report(a) for a in sorted(os.listdir(_base()))]

    def logs(self, app_id: str) -> str:
        app_dir = os.path.join(_base(), app_id)
        out = []
        for name in sorted(os.listdir(app_dir)):
            log = os.path.join(app_dir, name, "container.log")
            if os.path.exists(log):
                out.append(f"** {name}\n" + _read_text(log))
        return "\n".join(out)


def _read_text(path: str) -> str:
    with open(path, errors="replace") as f:
        return f.read()


def driver() -> Driver:
    return Driver()
