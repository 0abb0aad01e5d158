"""Fixtures of the real-YARN tests (the cluster itself is ``yarn_cluster`` in tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

# the EMR fixtures (one moto server per run, ...) for tests/yarn/test_emr_steps_on_yarn.py
from tests.integration.conftest_emr import aws, aws_env, built_wheel, moto_endpoint  # noqa: F401


class Report:
    def __init__(self, r):
        self.id, self.name, self.queue = r.id, r.name, r.queue
        self.state, self.final_status = str(r.state), str(r.final_status)
        self.diagnostics = r.diagnostics or ""


class YarnApps:
    """The test's own view of YARN (skein's client in the test process, not emrflow's), and a guard
    that kills every application a test started and left running."""

    def __init__(self, client):
        self.client = client
        self.started: list[str] = []
        self.before = {r.id for r in client.get_applications(
            states=["NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING", "FINISHED", "FAILED", "KILLED"])}

    def append(self, app_id: str) -> None:
        self.started.append(app_id)

    def report(self, app_id: str) -> Report:
        return Report(self.client.application_report(app_id))

    def _all(self):
        return [r for r in self.client.get_applications(
            states=["NEW", "NEW_SAVING", "SUBMITTED", "ACCEPTED", "RUNNING", "FINISHED", "FAILED", "KILLED"])
            if r.id not in self.before]

    def find(self, name: str) -> list[Report]:
        return [Report(r) for r in self._all() if r.name == name]

    def running(self) -> list[Report]:
        return [Report(r) for r in self._all() if str(r.state) in ("NEW", "NEW_SAVING", "SUBMITTED",
                                                                    "ACCEPTED", "RUNNING")]

    def kv(self, app_id: str) -> dict:
        return dict(self.client.connect(app_id, wait=False).kv)

    def running_containers(self, app_id: str, service: str) -> list:
        return self.client.connect(app_id, wait=False).get_containers(services=[service], states=["RUNNING"])

    def cleanup(self) -> list[str]:
        left = [r.id for r in self.running()]
        for app_id in left:
            self.client.kill_application(app_id)
        return left


@pytest.fixture(scope="session")
def skein_client(yarn_cluster):
    """One global skein driver for the run (``skein driver start``, as a user may start one):
    emrflow's commands connect to it instead of starting a JVM each; the test's own client too."""
    import skein
    env = dict(os.environ, **yarn_cluster.env)
    skein_cli = os.path.join(os.path.dirname(sys.executable), "skein")
    subprocess.run([skein_cli, "driver", "start", "--log-level", "ERROR"], env=env, check=True,
                   capture_output=True, timeout=120)
    config_dir = yarn_cluster.env["SKEIN_CONFIG"]
    with open(os.path.join(config_dir, "driver")) as f:
        address = json.load(f)["address"]
    # skein read SKEIN_CONFIG when it was imported: name the cluster's credentials explicitly
    client = skein.Client(address=address, security=skein.Security.from_directory(config_dir))
    yield client
    client.close()
    subprocess.run([skein_cli, "driver", "stop"], env=env, capture_output=True, timeout=60)


@pytest.fixture
def yarn_apps(skein_client, yarn_cluster):
    """Fails a test that leaves a YARN application running (and kills it)."""
    apps = YarnApps(skein_client)
    yield apps
    left = apps.cleanup()
    if left:
        deadline = time.monotonic() + 60
        while any(apps.report(a).state not in ("FINISHED", "FAILED", "KILLED") for a in left):
            assert time.monotonic() < deadline, f"applications {left} did not end after a kill"
            time.sleep(0.5)
    assert not left, f"YARN applications left running: {left}"


