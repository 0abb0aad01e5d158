"""A standalone cluster of background processes: remote submission, REST API, metrics, losses."""

from __future__ import annotations

import csv
import glob
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

SLOW_JOB = '''
import sys, time
from emrflow import StreamExecutionEnvironment
from emrflow.testing import GeneratedSource

def slow(v):
    time.sleep(0.002)
    return v

env = StreamExecutionEnvironment.get_execution_environment()
env.from_source(GeneratedSource(int(sys.argv[1]), batch_size=50)).map(slow).name("slow map") \\
    .add_sink(lambda v: None).name("discard")
env.execute("slow job")
'''


def cli(*args, workdir, check=True, timeout=120, env_extra=None):
    env = dict(os.environ, EMRFLOW_CLUSTER_DIR=str(workdir), **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True, text=True,
                          env=env, cwd=os.path.dirname(workdir), timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def get(rest, path, token=None):
    req = urllib.request.Request(f"http://{rest}{path}")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class Cluster:
    def __init__(self, workdir, taskmanagers=2, slots=1, extra=()):
        self.workdir = workdir
        cli("cluster", "start", "--taskmanagers", str(taskmanagers), "--slots", str(slots),
            "--rest-port", "0", "-D", "jobmanager.rpc.port=0", *extra, workdir=workdir)
        with open(os.path.join(workdir, "cluster.json")) as f:
            self.info = json.load(f)
        self.rest = "%s:%s" % tuple(self.info["rest_address"])
        self.rpc = "%s:%s" % tuple(self.info["rpc_address"])

    def pids(self):
        out = []
        for pid in [self.info["jobmanager_pid"], *self.info["taskmanager_pids"]]:
            try:
                p = psutil.Process(pid)
                out += [p.pid] + [c.pid for c in p.children(recursive=True)]
            except psutil.Error:
                pass
        return out

    def stop(self):
        pids = self.pids()
        if os.path.exists(os.path.join(self.workdir, "cluster.json")):
            cli("cluster", "stop", workdir=self.workdir, check=False)
        gone, alive = psutil.wait_procs([psutil.Process(p) for p in pids if psutil.pid_exists(p)], timeout=10)
        return alive


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(str(tmp_path / "cluster"))
    yield c
    alive = c.stop()
    assert not alive, f"processes left: {alive}"


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _mapped_rings(pids) -> int:
    """Shared-memory channel rings mapped by the processes ``pids``."""
    count = 0
    for pid in pids:
        try:
            count += sum("emrflow-channel" in m.path for m in psutil.Process(pid).memory_maps(grouped=False))
        except psutil.Error:
            pass
    return count


def test_cluster_runs_remote_jobs_and_stop_leaves_nothing(tmp_path):
    c = Cluster(str(tmp_path / "cluster"))
    try:
        ov = get(c.rest, "/overview")
        assert ov["taskmanagers"] == 2 and ov["slots-total"] == 2 and ov["slots-available"] == 2
        out = tmp_path / "out"
        proc = cli("run", "-m", c.rest, "-p", "2", os.path.join(ROOT, "examples", "latest_rating.py"),
                   "--output", str(out), workdir=c.workdir)
        assert "Job Runtime" in proc.stderr
        rows = []
        for path in glob.glob(str(out / "part-*")):
            with open(path, newline="") as f:
                rows += list(csv.reader(f))[1:]
        ratings = os.path.join(ROOT, "examples", "data", "movielens-latest-small", "ratings.csv")
        with open(ratings, newline="") as f:
            pairs = {(r[1], r[0]) for r in list(csv.reader(f))[1:]}
        assert {(m, u) for m, u, _, _ in rows} == pairs
        jobs = get(c.rest, "/jobs/overview")["jobs"]
        assert [j["state"] for j in jobs] == ["FINISHED"]
        details = get(c.rest, f"/jobs/{jobs[0]['jid']}")
        assert details["state"] == "FINISHED" and len(details["vertices"]) == 2
        assert details["vertices"][0]["metrics"]["read-records"] == 100_004
        assert {n["inputs"][0]["ship_strategy"] for n in details["plan"]["nodes"] if n["inputs"]} == {"HASH"}
        # the slots outlive the job; its channels' shared-memory rings must not
        wait_for(lambda: _mapped_rings(c.pids()) == 0, timeout=15, what="the job's channel rings unmapped")
    finally:
        pids = c.pids()
        assert len(pids) >= 5  # JobManager, 2 TaskManagers, 2 slots
        cli("cluster", "stop", workdir=c.workdir)
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not os.path.exists(os.path.join(c.workdir, "cluster.json"))
    proc = cli("cluster", "stop", workdir=c.workdir, check=False)
    assert proc.returncode == 1 and "no standalone cluster" in proc.stderr


def test_second_start_is_refused(cluster):
    proc = cli("cluster", "start", "--rest-port", "0", workdir=cluster.workdir, check=False)
    assert proc.returncode == 1 and "already running" in proc.stderr


def test_detached_list_cancel(cluster, tmp_path):
    job = tmp_path / "slow.py"
    job.write_text(SLOW_JOB)
    proc = cli("run", "-d", "-p", "2", "-t", "remote", str(job), "200000", workdir=cluster.workdir)
    job_id = proc.stdout.strip().split()[-1]
    assert len(job_id) == 32
    listed = cli("list", workdir=cluster.workdir).stdout
    assert job_id in listed and "RUNNING" in listed
    def slow_map_in():
        ops = get(cluster.rest, f"/jobs/{job_id}")["vertices"][0]["operators"]
        return [o for o in ops if o["name"] == "slow map"][0]["records-in"]
    wait_for(lambda: slow_map_in() > 0, what="records to flow")
    vertex = get(cluster.rest, f"/jobs/{job_id}")["vertices"][0]
    sub = wait_for(lambda: (lambda d: d if all(s["status"] == "RUNNING" for s in d["subtasks"]) else None)(
        get(cluster.rest, f"/jobs/{job_id}/vertices/{vertex['id']}")), what="both subtasks running")
    assert [s["subtask"] for s in sub["subtasks"]] == [0, 1]
    cli("cancel", job_id, workdir=cluster.workdir)
    wait_for(lambda: get(cluster.rest, f"/jobs/{job_id}")["state"] == "CANCELED", what="cancellation")
    details = get(cluster.rest, f"/jobs/{job_id}")
    assert details["status-counts"]["CANCELED"] == 2
    assert get(cluster.rest, "/overview")["slots-available"] == 2
    assert "CANCELED" in cli("list", "--all", workdir=cluster.workdir).stdout
    assert job_id not in cli("list", workdir=cluster.workdir).stdout


def test_prometheus_metrics_during_a_job(tmp_path):
    c = Cluster(str(tmp_path / "cluster"), extra=("-D", "metrics.reporter.prom.port=0"))
    try:
        job = tmp_path / "slow.py"
        job.write_text(SLOW_JOB)
        job_id = cli("run", "-d", "-m", c.rest, str(job), "100000", workdir=c.workdir).stdout.split()[-1]
        port = c.info["metrics_port"]

        def scrape():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                text = r.read().decode()
            for line in text.splitlines():
                if (line.startswith("flink_taskmanager_job_task_operator_numRecordsIn{")
                        and 'operator_name="slow map"' in line):
                    if float(line.rsplit(" ", 1)[1]) > 0:
                        return text
            return None
        text = wait_for(scrape, what="records in the Prometheus metrics")
        assert f'job_id="{job_id}"' in text
        assert "flink_jobmanager_taskSlotsTotal 2.0" in text
        assert "flink_taskmanager_job_task_busyTimeMsPerSecond" in text
        assert "flink_taskmanager_job_task_operator_currentInputWatermark" in text
        cli("cancel", job_id, "-m", c.rest, workdir=c.workdir)
    finally:
        assert not c.stop()


def test_lost_taskmanager_fails_its_job(tmp_path):
    c = Cluster(str(tmp_path / "cluster"),
                extra=("-D", "heartbeat.timeout=2 s", "-D", "heartbeat.interval=200 ms"))
    try:
        job = tmp_path / "slow.py"
        job.write_text(SLOW_JOB)
        job_id = cli("run", "-d", "-p", "2", "-m", c.rest, str(job), "200000", workdir=c.workdir).stdout.split()[-1]
        wait_for(lambda: get(c.rest, f"/jobs/{job_id}")["state"] == "RUNNING", what="running")
        tm_pid = c.info["taskmanager_pids"][1]
        os.kill(tm_pid, signal.SIGSTOP)  # silent, but its connections stay open
        try:
            wait_for(lambda: get(c.rest, f"/jobs/{job_id}")["state"] == "FAILED", timeout=30, what="failure")
            exc = get(c.rest, f"/jobs/{job_id}/exceptions")
            assert "lost: no heartbeat for" in exc["root-exception"]
            assert get(c.rest, "/overview")["taskmanagers"] == 1
        finally:
            os.kill(tm_pid, signal.SIGCONT)
    finally:
        assert not c.stop()


def test_taskmanager_start_adds_slots(cluster):
    before = get(cluster.rest, "/overview")["slots-total"]
    cli("taskmanager", "start", "--jobmanager", cluster.rpc, "--slots", "2", workdir=cluster.workdir)
    wait_for(lambda: get(cluster.rest, "/overview")["slots-total"] == before + 2, what="new slots")
    assert len(get(cluster.rest, "/taskmanagers")["taskmanagers"]) == 3


def test_rest_token_and_bind_address(tmp_path):
    wd = str(tmp_path / "c")
    proc = cli("cluster", "start", "--rest-port", "0", "-D", "rest.bind-address=0.0.0.0",
               "-D", "jobmanager.rpc.port=0", workdir=wd, check=False, timeout=60)
    assert proc.returncode == 1
    assert "the JobManager exited during start-up" in proc.stderr
    assert "without rest.auth.token" in proc.stderr
    c = Cluster(str(tmp_path / "c2"), extra=("-D", "rest.auth.token=s3cret"))
    try:
        for token in (None, "wrong"):
            with pytest.raises(urllib.error.HTTPError) as info:
                get(c.rest, "/overview", token=token)
            assert info.value.code == 401
            info.value.close()
        assert get(c.rest, "/overview", token="s3cret")["slots-total"] == 2
    finally:
        # stop cannot use REST without the token, so it terminates the processes itself
        assert not c.stop()


def test_rpc_rejects_unauthenticated_peers(cluster):
    """Wrong secret, garbage and absurd frame lengths: closed unread; the JobManager stays up."""
    import socket
    import struct
    host, port = cluster.info["rpc_address"]
    for payload in (struct.pack("!I", 40) + json.dumps({"type": "hello", "secret": "x" * 8}).encode().ljust(40),
                    struct.pack("!I", 2**31) + b"junk",
                    b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(payload)
            s.settimeout(15)
            assert s.recv(1) == b""  # closed by the JobManager
    assert get(cluster.rest, "/overview")["slots-total"] == 2


def test_killed_taskmanager_is_reported_lost(cluster, tmp_path):
    job = tmp_path / "slow.py"
    job.write_text(SLOW_JOB)
    job_id = cli("run", "-d", "-p", "2", "-m", cluster.rest, str(job), "200000",
                 workdir=cluster.workdir).stdout.split()[-1]
    wait_for(lambda: get(cluster.rest, f"/jobs/{job_id}")["state"] == "RUNNING", what="running")
    tm = psutil.Process(cluster.info["taskmanager_pids"][0])
    slots = tm.children(recursive=True)
    tm.kill()
    wait_for(lambda: get(cluster.rest, f"/jobs/{job_id}")["state"] == "FAILED", what="the job to fail")
    exc = get(cluster.rest, f"/jobs/{job_id}/exceptions")["root-exception"]
    assert "tm-0" in exc and ("lost" in exc or "disconnected" in exc)
    wait_for(lambda: get(cluster.rest, "/overview")["taskmanagers"] == 1, what="the TaskManager to be dropped")
    gone, alive = psutil.wait_procs(slots, timeout=10)
    assert not alive  # its slot processes died with it


def test_fuzzed_requests_never_break_the_jobmanager(cluster):
    """Random methods, paths and bodies: every answer is a 2xx or 4xx with JSON, and the JobManager stays up."""
    import http.client

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    host, port = cluster.rest.split(":")
    segments = st.sampled_from(["jobs", "overview", "config", "taskmanagers", "vertices", "exceptions",
                                "execution-result", "cluster", "x" * 300, "%00", "..", "0" * 32, ""])
    paths = st.lists(segments, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
    queries = st.sampled_from(["", "?mode=cancel", "?mode=stop", "?wait=abc", "?wait=-1", "?wait=0.01"])
    bodies = st.one_of(st.none(), st.binary(max_size=2000), st.text(max_size=200).map(str.encode),
                       st.sampled_from([b"{}", b'{"topology": {}, "jobgraph": "@@"}', b"[1,2]",
                                        b'{"topology": {"job_id": "a", "name": "b", "vertices": []}, "jobgraph": ""}']))
    methods = st.sampled_from(["GET", "POST", "PATCH", "PUT", "HEAD"])  # no DELETE: that one stops the cluster

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(methods, paths, queries, bodies)
    def one_request(method, path, query, body):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            conn.request(method, path + query, body=body,
                         headers={"Content-Type": "application/json"} if body is not None else {})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        assert resp.status < 500, (method, path, query, body, resp.status, data[:200])
        if resp.status >= 400 and method != "HEAD":
            assert json.loads(data)["errors"]

    one_request()
    assert get(cluster.rest, "/overview")["slots-total"] == 2
    big = "x" * (300 * 1024 * 1024)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", "/jobs")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(big)))
        conn.endheaders()
        try:
            conn.send(big.encode()[:1024])
            status = conn.getresponse().status
        except (BrokenPipeError, ConnectionResetError):
            status = 413
    finally:
        conn.close()
    assert status == 413
    assert get(cluster.rest, "/overview")["slots-total"] == 2
