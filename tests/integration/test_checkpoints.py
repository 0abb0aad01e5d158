"""Checkpoints, restarts, savepoints and the exactly-once file sink, proven by killing real processes.

Every job here is tests/jobs/checkpointed_count.py: a running count per key written as
``key,count`` lines. Whatever the interleaving of records, a correct run's output is
exactly the set ``{k,1 .. k,n_k}`` with every line once; the reference is computed
here in plain Python. A lost record leaves a line out, a replayed one writes a line twice.
"""

from __future__ import annotations

import collections
import contextlib
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest
from conftest_emr import aws, aws_env, moto_endpoint  # noqa: F401  (moto server fixtures)

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:moto.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:werkzeug.*")]

JOB = os.path.join(ROOT, "tests", "jobs", "checkpointed_count.py")


def reference(count: int, keys: int) -> collections.Counter:
    """The lines a correct run writes: ``k,1 .. k,n_k`` once each, for i % keys over range(count)."""
    n = collections.Counter(i % keys for i in range(count))
    return collections.Counter(f"{k},{c}" for k, total in n.items() for c in range(1, total + 1))


def output_lines(directory: str) -> collections.Counter:
    lines: collections.Counter = collections.Counter()
    for part in glob.glob(os.path.join(directory, "part-*")):
        with open(part) as f:
            lines.update(line.strip() for line in f if line.strip())
    return lines


def start(*args: str, env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, EMRFLOW_TEST_TOKEN=uuid.uuid4().hex, **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "emrflow.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # cwd: the test's tmp_path


@contextlib.contextmanager
def running(*args: str, env_extra: dict | None = None):
    """``emrflow ARGS`` in a subprocess (see :func:`start`), killed if the block leaves it running."""
    proc = start(*args, env_extra=env_extra)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def runtime_children(proc: subprocess.Popen, module: str) -> list[psutil.Process]:
    out = []
    try:
        for c in psutil.Process(proc.pid).children(recursive=True):
            try:
                if any(module in part for part in c.cmdline()):
                    out.append(c)
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return out


def completed_checkpoints(directory: str) -> list[str]:
    return sorted(glob.glob(os.path.join(directory, "*", "chk-*", "_metadata")))


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def checkpointed_run(out, ckdir, *extra_d, p="2", retention="NO_EXTERNALIZED_CHECKPOINTS", interval=True):
    every = ["-D", "execution.checkpointing.interval=1s"] if interval else []
    return ["run", "-p", p, "-D", "local.number-taskmanager=2", *every,
            "-D", f"state.checkpoints.dir={ckdir}", "-D", "restart-strategy.type=fixed-delay",
            "-D", "restart-strategy.fixed-delay.attempts=10", "-D", "restart-strategy.fixed-delay.delay=200ms",
            "-D", f"execution.checkpointing.externalized-checkpoint-retention={retention}", *extra_d]


def kill_a_taskmanager(proc: subprocess.Popen, choose=random.choice) -> None:
    """SIGKILL one TaskManager, picked by ``choose`` from the list, of the job ``proc`` runs
    (``emrflow run``), which must still be running."""
    tms = runtime_children(proc, "emrflow.runtime.taskmanager")
    assert tms and proc.poll() is None, ("the job ended before the kill; raise --count"
                                         + (f": {proc.stderr.read()}" if proc.poll() is not None else ""))
    choose(tms).send_signal(signal.SIGKILL)


def kill_after_first_checkpoint(proc: subprocess.Popen, ckdir: str, pause_s: float | tuple[float, float],
                                timeout_s: float, choose=random.choice, checkpoint_timeout_s: float = 60) -> str:
    """Wait for the first completed checkpoint in ``ckdir``, then ``pause_s`` seconds (or a
    random time in a ``(low, high)`` range), kill a TaskManager (:func:`kill_a_taskmanager`) and
    wait up to ``timeout_s`` seconds for the job to end; return its stderr."""
    wait_for(lambda: completed_checkpoints(ckdir), checkpoint_timeout_s, "the first checkpoint")
    time.sleep(random.uniform(*pause_s) if isinstance(pause_s, tuple) else pause_s)
    kill_a_taskmanager(proc, choose)
    return proc.communicate(timeout=timeout_s)[1]


def settled_output(proc: subprocess.Popen, out: str, lines: int, timeout_s: float,
                   settle_s: float) -> collections.Counter:
    """The committed output (:func:`output_lines`) of the unbounded job ``proc`` once it holds ``lines``
    lines (waiting up to ``timeout_s`` seconds) and ``settle_s`` seconds more, in which more checkpoints
    complete: a record read twice would show up. The job must still run."""
    wait_for(lambda: sum(output_lines(out).values()) >= lines or proc.poll() is not None, timeout_s,
             "all records in the committed output")
    time.sleep(settle_s)
    assert proc.poll() is None, "the unbounded job ended by itself"
    return output_lines(out)


def cancel(proc: subprocess.Popen, timeout_s: float) -> str:
    """Cancel the job ``proc`` runs (SIGINT), wait up to ``timeout_s`` seconds for it to end; return its stderr."""
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=timeout_s)[1]


def test_taskmanager_killed_three_times_output_is_exactly_once(tmp_path):
    out, ckdir = str(tmp_path / "out"), str(tmp_path / "checkpoints")
    count, keys = 2_000_000, 1000
    with running(*checkpointed_run(out, ckdir), JOB, "--count", str(count), "--keys", str(keys),
                 "--rate", "90000", "--output", out) as proc:
        wait_for(lambda: completed_checkpoints(ckdir), 60, "the first checkpoint")
        kills = 0
        rng = random.Random()
        while kills < 3:
            time.sleep(rng.uniform(1.2, 2.5))
            tms = runtime_children(proc, "emrflow.runtime.taskmanager")
            assert tms and proc.poll() is None, "the job ended before three kills; raise --count"
            rng.choice(tms).send_signal(signal.SIGKILL)
            kills += 1
        stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr
    assert stderr.count("restarting in") >= 3, stderr
    assert "starting tm-" in stderr  # lost TaskManagers were replaced by new processes
    got = output_lines(out)
    want = reference(count, keys)
    assert sum(got.values()) == sum(want.values())
    assert got == want, (f"{len(set(want) - set(got))} lines lost, "
                         f"{sum(n - 1 for n in got.values() if n > 1)} duplicated")
    assert not [f for f in os.listdir(out) if not f.startswith("part-")]  # no in-progress files left


def test_task_failure_restarts_from_checkpoint_in_at_least_once_mode_too(tmp_path):
    """A user exception restarts the job (fixed-delay); exactly-once and at-least-once both finish."""
    for mode in ("EXACTLY_ONCE", "AT_LEAST_ONCE"):
        out, ckdir, flag = (str(tmp_path / f"out-{mode}"), str(tmp_path / f"ck-{mode}"),
                            str(tmp_path / f"failed-{mode}"))
        proc = start(*checkpointed_run(out, ckdir, "-D", f"execution.checkpointing.mode={mode}",
                                       "-D", "execution.checkpointing.interval=300ms"),
                     JOB, "--count", "300000", "--keys", "100", "--rate", "60000", "--output", out,
                     "--fail-once", flag)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        assert os.path.exists(flag) and "failing once, as asked; restarting in" in stderr
        got, want = output_lines(out), reference(300_000, 100)
        if mode == "EXACTLY_ONCE":
            assert got == want
        else:  # nothing lost; replays may duplicate
            assert set(got) == set(want)


def test_jobmanager_killed_then_run_s_resumes_from_the_retained_checkpoint(tmp_path):
    out, ckdir = str(tmp_path / "out"), str(tmp_path / "checkpoints")
    count, keys = 1_200_000, 500
    args = [JOB, "--count", str(count), "--keys", str(keys), "--rate", "80000", "--output", out]
    with running(*checkpointed_run(out, ckdir, retention="RETAIN_ON_CANCELLATION"), *args) as proc:
        wait_for(lambda: any(int(m.split("chk-")[1].split(os.sep)[0]) >= 3
                             for m in completed_checkpoints(ckdir)), 60, "the third checkpoint")
        (jm,) = runtime_children(proc, "emrflow.runtime.jobmanager")
        jm.send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert sum(output_lines(out).values()) < count  # the first run did not finish
    (job_dir,) = glob.glob(os.path.join(ckdir, "*"))
    resumed = start(*checkpointed_run(out, str(tmp_path / "ck2")), "-s", job_dir, *args)
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert output_lines(out) == reference(count, keys)
    assert not [f for f in os.listdir(out) if not f.startswith("part-")]


def test_corrupt_latest_checkpoint_is_skipped_with_a_log_line(tmp_path):
    out, ckdir = str(tmp_path / "out"), str(tmp_path / "checkpoints")
    count, keys = 1_000_000, 200
    args = [JOB, "--count", str(count), "--keys", str(keys), "--rate", "70000", "--output", out]
    with running(*checkpointed_run(out, ckdir, "-D", "state.checkpoints.num-retained=3",
                                   retention="RETAIN_ON_CANCELLATION"), *args) as proc:
        wait_for(lambda: len(completed_checkpoints(ckdir)) >= 3, 60, "three retained checkpoints")
        proc.send_signal(signal.SIGINT)  # cancels the job: RETAIN_ON_CANCELLATION keeps them
        proc.communicate(timeout=60)
    (job_dir,) = glob.glob(os.path.join(ckdir, "*"))
    metas = sorted(completed_checkpoints(ckdir), key=lambda m: int(m.split("chk-")[1].split(os.sep)[0]))
    latest = os.path.dirname(metas[-1])
    state_file = sorted(glob.glob(os.path.join(latest, "task-*.state")))[-1]
    with open(state_file, "r+b") as f:
        f.truncate(os.path.getsize(state_file) // 2)
    resumed = start(*checkpointed_run(out, str(tmp_path / "ck2")), "-s", job_dir, *args)
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    name = os.path.basename(latest)
    assert f"skipping checkpoint {name}" in stderr and "truncated" in stderr, stderr
    assert set(output_lines(out)) == set(reference(count, keys))  # nothing lost


def test_savepoint_stop_and_restore_at_another_parallelism(tmp_path):
    """`emrflow savepoint` and `stop` on a standalone cluster, then `run -s` with keyed state rescaled 2 -> 3."""
    workdir, out, sp = str(tmp_path / "cluster"), str(tmp_path / "out"), str(tmp_path / "savepoints")
    env = dict(os.environ, EMRFLOW_CLUSTER_DIR=workdir)

    def cli(*args, timeout=120):
        return subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=tmp_path)
    r = cli("cluster", "start", "--taskmanagers", "1", "--slots", "3", "--rest-port", "0",
            "-D", f"state.savepoints.dir={sp}")
    assert r.returncode == 0, r.stderr
    try:
        count, keys = 900_000, 300
        args = [JOB, "--count", str(count), "--keys", str(keys), "--output", out, "--source-parallelism", "2"]
        # checkpoints every 200 ms: periodic checkpoints are in flight when the savepoints are taken
        # slow (at most 45 s), so that it still runs when a loaded machine gets to the stop; the
        # restored run goes at full speed (the rate is no part of the state)
        r = cli("run", "-t", "remote", "-d", "-p", "2", "-D", "execution.checkpointing.interval=200ms", *args,
                "--rate", "10000")
        assert r.returncode == 0, r.stderr
        job_id = r.stderr.split("JobID ")[1].split()[0] if "JobID " in r.stderr else r.stdout.split()[-1]
        time.sleep(2.0)
        from emrflow.deploy.rest_client import RestClient
        with open(os.path.join(workdir, "cluster.json")) as f:
            rest = RestClient(f"127.0.0.1:{json.load(f)['rest_address'][1]}")
        ck = rest.checkpoints(job_id)
        assert ck["counts"]["completed"] >= 1 and ck["latest"]["completed"]["id"] >= 1
        assert ck["latest"]["completed"]["is_savepoint"] is False
        r = cli("savepoint", job_id)
        assert r.returncode == 0, r.stderr
        first = r.stdout.split("Path: ")[1].strip()
        with open(os.path.join(first, "_metadata")) as f:
            meta = json.load(f)
        assert meta["kind"] == "savepoint" and first.startswith(sp)
        # a periodic checkpoint may complete right after it: the savepoint has its own entry, as in Flink
        latest = rest.checkpoints(job_id)["latest"]["savepoint"]
        assert latest["is_savepoint"] is True and latest["external_path"] == first
        time.sleep(1.0)
        r = cli("stop", job_id, "--savepoint-path", str(tmp_path / "final"))
        assert r.returncode == 0, r.stderr
        final = r.stdout.split("Path: ")[1].split()[0]
        assert f"Stopped job {job_id}." in r.stdout
        listing = cli("list", "--all").stdout
        assert f"{job_id} : checkpointed count (FINISHED)" in listing
        partial = output_lines(out)
        assert 0 < sum(partial.values()) < count
        r = cli("run", "-t", "remote", "-p", "3", "-s", final, "-D", "execution.checkpointing.interval=1s",
                *args, timeout=180)
        assert r.returncode == 0, r.stderr
        assert output_lines(out) == reference(count, keys)
        # the counting operator ran at 3 subtasks: part files of subtask 2 exist now
        assert glob.glob(os.path.join(out, "part-2-*"))
    finally:
        cli("cluster", "stop")


def test_restoring_state_of_a_missing_operator_needs_allow_non_restored_state(tmp_path):
    """A savepoint holding state of an operator whose uid the job no longer has."""
    from emrflow.fs import FileSystem
    from emrflow.runtime import checkpoint as chk
    sp = tmp_path / "sp"
    sp.mkdir()
    entry = chk.write_task_state(FileSystem(), str(sp), 9, 0, {"gone-operator": b"x"})
    entry.update(vertex=9, subtask=0, operators={"gone-operator": {"parallelism": 1, "max_parallelism": 128,
                                                                   "name": "old map"}})
    chk.write_metadata(FileSystem(), str(sp), {"format": 1, "job_id": "x", "checkpoint_id": 4, "kind": "savepoint",
                                 "tasks": [entry]})
    out = str(tmp_path / "out")
    r = subprocess.run([sys.executable, "-m", "emrflow.cli", "run", "-s", str(sp), JOB, "--count", "1000",
                        "--output", out], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1
    assert "'old map' (uid gone-operator)" in r.stderr and "--allow-non-restored-state" in r.stderr
    r = subprocess.run([sys.executable, "-m", "emrflow.cli", "run", "-s", str(sp),
                        "--allow-non-restored-state", JOB, "--count", "1000", "--keys", "10",
                        "--output", out], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert output_lines(out) == reference(1000, 10)


def test_s3_checkpoints_and_exactly_once_s3_sink_survive_a_taskmanager_kill(tmp_path, aws, moto_endpoint):
    """Checkpoints and part files on S3 (moto in server mode, reached over HTTP through s3.endpoint)."""
    from conftest_emr import BUCKET
    prefix = f"ck-{uuid.uuid4().hex[:8]}"
    out, ckdir = f"s3://{BUCKET}/{prefix}/out", f"s3://{BUCKET}/{prefix}/checkpoints"
    count, keys = 600_000, 300

    def s3_keys(sub: str) -> list[str]:
        pages = aws.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/{sub}")
        return [o["Key"] for page in pages for o in page.get("Contents", [])]
    # the program enables checkpointing itself here (env.enable_checkpointing)
    with running(*checkpointed_run(out, ckdir, "-D", f"s3.endpoint={moto_endpoint}", interval=False),
                 JOB, "--count", str(count), "--keys", str(keys), "--checkpoint-ms", "1000",
                 "--rate", "50000", "--output", out) as proc:
        wait_for(lambda: any(k.endswith("/_metadata") for k in s3_keys("checkpoints")), 60,
                 "a checkpoint on S3")
        time.sleep(1.0)
        tms = runtime_children(proc, "emrflow.runtime.taskmanager")
        assert tms and proc.poll() is None
        tms[0].send_signal(signal.SIGKILL)
        _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    assert "restarting in" in stderr
    names = [k for k in s3_keys("out") if not k.endswith("/")]  # pyarrow keeps empty "directory" markers
    assert names and all(k.split("/")[-1].startswith("part-") for k in names), names
    got: collections.Counter = collections.Counter()
    for k in names:
        body = aws.s3.get_object(Bucket=BUCKET, Key=k)["Body"].read().decode()
        got.update(line for line in body.splitlines() if line)
    assert got == reference(count, keys)
    wait_for(lambda: not [k for k in s3_keys("checkpoints") if not k.endswith("/")], 10,
             "the checkpoints to be deleted (NO_EXTERNALIZED_CHECKPOINTS, the job finished)")


@pytest.mark.parametrize("strategy", ["region", "full"])
def test_region_failover_restarts_only_the_failed_pipeline(tmp_path, strategy):
    """Two disconnected pipelines: with `region` only the failing one restarts, with `full` both do."""
    out_a, out_b, opens = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "opens")
    proc = start(*checkpointed_run(out_a, str(tmp_path / "ck"), "-D",
                                   f"jobmanager.execution.failover-strategy={strategy}",
                                   "-D", "execution.checkpointing.interval=300ms"),
                 os.path.join(ROOT, "tests", "jobs", "two_pipelines.py"), "--out-a", out_a, "--out-b", out_b,
                 "--fail-once", str(tmp_path / "failed"), "--opens", opens)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert os.path.exists(tmp_path / "failed")
    assert output_lines(out_a) == reference(200_000, 100)
    assert output_lines(out_b) == reference(200_000, 100)
    with open(opens) as f:
        b_opens = sorted(f.read().split())
    if strategy == "region":
        assert "restarting the pipelined region" in stderr, stderr
        assert b_opens == ["0", "1"]  # pipeline B ran once, untouched by A's failure
    else:
        assert "restarting the pipelined region" not in stderr
        assert b_opens == ["0", "0", "1", "1"]


def test_frozen_taskmanager_is_declared_lost_killed_and_replaced(tmp_path):
    """SIGSTOP (no heartbeats, connections open): after heartbeat.timeout the job restarts on a new one."""
    out, ckdir = str(tmp_path / "out"), str(tmp_path / "checkpoints")
    count, keys = 500_000, 200
    with running(*checkpointed_run(out, ckdir, "-D", "heartbeat.interval=200ms", "-D", "heartbeat.timeout=2s"),
                 JOB, "--count", str(count), "--keys", str(keys), "--rate", "50000", "--output", out) as proc:
        wait_for(lambda: completed_checkpoints(ckdir), 60, "the first checkpoint")
        frozen = runtime_children(proc, "emrflow.runtime.taskmanager")[0]
        frozen.send_signal(signal.SIGSTOP)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "no heartbeat for" in stderr and "declared lost by the JobManager; killing it" in stderr, stderr
    assert not frozen.is_running() or frozen.status() == psutil.STATUS_ZOMBIE
    assert output_lines(out) == reference(count, keys)
