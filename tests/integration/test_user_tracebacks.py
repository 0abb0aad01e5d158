"""A failing job shows the user's own frames: their file path, line numbers and source lines.

The job's files are moved away once the job is submitted, so the source lines can
only come from what the client shipped; the script is given by a relative path
and the TaskManagers' working directory is not the client's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.integration

JOB = '''\
import os
import sys
import time

import job_helpers
from emrflow import StreamExecutionEnvironment
from emrflow.testing import GeneratedSource

GO = sys.argv[1]


def explode(v):
    if v == 777:
        deadline = time.monotonic() + 120
        while not os.path.exists(GO) and time.monotonic() < deadline:  # the test moves the files first
            time.sleep(0.05)
        return job_helpers.ratio(v, 0)  # frame 1
    return v


env = StreamExecutionEnvironment.get_execution_environment()
env.from_source(GeneratedSource(5000)).map(explode).name("exploding map").add_sink(lambda v: None)
env.execute("doomed")
'''

HELPERS = '''\
def ratio(a, b):
    """A helper module next to the job script (shipped by value)."""
    return a / b  # frame 2
'''

FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>\S+)\n    (?P<text>.*)$',
                   re.MULTILINE)


def marked_line(path: str, marker: str) -> tuple[int, str]:
    """1-based number and stripped text of the line of ``path`` that contains ``marker``."""
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if marker in line:
                return i, line.strip()
    raise AssertionError(f"{marker!r} not in {path}")


def cli(*args: str, cwd, env_extra=None, **kwargs):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "emrflow.cli", *args], cwd=cwd, env=env, text=True,
                            **kwargs)


@pytest.fixture
def standalone(tmp_path):
    """A standalone cluster whose processes run in their own working directory; yields its REST address."""
    workdir, cwd = tmp_path / "cluster", tmp_path / "cluster-cwd"
    cwd.mkdir()
    env = {"EMRFLOW_CLUSTER_DIR": str(workdir)}
    start = cli("cluster", "start", "--taskmanagers", "1", "--slots", "2", "--rest-port", "0",
                "-D", "jobmanager.rpc.port=0", cwd=cwd, env_extra=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = start.communicate(timeout=120)
    assert start.returncode == 0, out + err
    with open(workdir / "cluster.json") as f:
        info = json.load(f)
    pids = []
    for pid in [info["jobmanager_pid"], *info["taskmanager_pids"]]:
        p = psutil.Process(pid)
        assert p.cwd() == str(cwd)
        pids.append(p)
    try:
        yield "%s:%s" % tuple(info["rest_address"])
    finally:
        pids += [c for p in pids if p.is_running() for c in p.children(recursive=True)]
        cli("cluster", "stop", cwd=cwd, env_extra=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL).wait(timeout=60)
        _, alive = psutil.wait_procs(pids, timeout=10)
        for p in alive:
            p.kill()
        assert not alive, f"processes left: {alive}"


@pytest.fixture(params=["local", "remote"])
def target_args(request) -> list[str]:
    if request.param == "local":
        return []
    return ["-m", request.getfixturevalue("standalone")]


def test_traceback_shows_user_files_lines_and_source(tmp_path, target_args):
    client = tmp_path / "client"
    (client / "jobs").mkdir(parents=True)
    (client / "jobs" / "failing_job.py").write_text(JOB)
    (client / "jobs" / "job_helpers.py").write_text(HELPERS)
    go = tmp_path / "go"
    # what the user sees: the script as they named it, the helper as Python found it
    expected = [("jobs/failing_job.py", *marked_line(str(client / "jobs" / "failing_job.py"), "# frame 1")),
                (os.path.join(os.path.realpath(client), "jobs", "job_helpers.py"),
                 *marked_line(str(client / "jobs" / "job_helpers.py"), "# frame 2"))]
    proc = cli("run", "-p", "2", *target_args, "jobs/failing_job.py", str(go), cwd=client,
               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        line = ""
        while "submitted" not in line and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stderr.readline()
        assert "submitted" in line, line + proc.stderr.read()
        os.rename(client / "jobs", tmp_path / "moved")  # the source lines must have travelled
        go.touch()
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 1, err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert "failed in operator 'exploding map' (subtask 1 of 2): ZeroDivisionError: division by zero" in err
    tb = err[err.index("Traceback (most recent call last):"):]
    frames = [(m["file"], int(m["line"]), m["text"].strip()) for m in FRAME.finditer(tb)]
    names = [m["name"] for m in FRAME.finditer(tb)]
    assert frames == expected, tb  # the user's frames only, nothing of emrflow
    assert names == ["explode", "ratio"]
    assert tb.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "/emrflow/" not in tb
