"""Shared test configuration: markers, --runslow, process-leak guard."""

from __future__ import annotations

import os
import time

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    runslow = config.getoption("--runslow")
    have_yarn = bool(os.environ.get("HADOOP_CONF_DIR")) and bool(
        __import__("shutil").which("yarn"))
    for item in items:
        if "slow" in item.keywords and not runslow:
            item.add_marker(pytest.mark.skip(reason="slow: run with --runslow"))
        if "yarn" in item.keywords and not have_yarn:
            item.add_marker(pytest.mark.skip(reason="needs a yarn command and HADOOP_CONF_DIR"))


def cluster_processes() -> list[psutil.Process]:
    """emrflow runtime processes (JobManager, TaskManager, slot) descended from this test run."""
    me = psutil.Process()
    out = []
    for p in me.children(recursive=True):
        try:
            if any("emrflow.runtime" in part for part in p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def emrflow_processes_anywhere(marker: str) -> list[psutil.Process]:
    """Every process on the machine whose command line contains ``marker``."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in (p.info["cmdline"] or [])):
                out.append(p)
        except psutil.Error:
            pass
    return out


@pytest.fixture(autouse=True)
def no_leaked_processes(request):
    """Fail a test that leaves JobManager/TaskManager/slot processes behind (and kill them)."""
    yield
    deadline = time.monotonic() + 10
    left = cluster_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = cluster_processes()
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()) for p in left]}"


@pytest.fixture(params=[1, 2], ids=["p1", "p2"])
def parallelism(request) -> int:
    """Run engine tests at parallelism 1 and 2."""
    return request.param


@pytest.fixture(params=["BATCH", "STREAMING"])
def mode(request) -> str:
    """Run engine tests in both runtime modes."""
    return request.param
