"""Nothing lost, mixed or silently skipped: output on local disk and S3 (moto in server mode).

The fault-injection suite runs tests/jobs/integrity_job.py again and again into the same
output, alternating two inputs and parallelism 2 and 1, and kills the client, a TaskManager
or the JobManager at a seeded random moment. After each run the visible output
(``part-*``) must be exactly the previous run's or exactly the new one's, against a
plain-Python reference; a finished run (exit 0) must have written the new one.
"""

from __future__ import annotations

import collections
import csv
import io
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest
from conftest_emr import BUCKET, aws, aws_env, moto_endpoint  # noqa: F401  (moto server fixtures)

from emrflow import fs
from emrflow.connectors import files
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:moto.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:werkzeug.*")]

JOB = os.path.join(ROOT, "tests", "jobs", "integrity_job.py")
LATEST_RATING = os.path.join(ROOT, "examples", "latest_rating.py")
HEADER = ["movieId", "userId", "rating", "timestamp"]


def cli(*args: str, cwd, env_extra: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


class Storage:
    """The files under an output location, local or on the moto S3 server."""

    def __init__(self, kind: str, tmp_path, s3=None):
        self.kind, self.s3 = kind, s3
        if kind == "local":
            self.uri = str(tmp_path / "out")
        else:
            self.prefix = f"it-{uuid.uuid4().hex[:10]}/out"
            self.uri = f"s3://{BUCKET}/{self.prefix}"

    def files(self) -> dict[str, bytes]:
        """Name -> content of every file directly in the output."""
        if self.kind == "local":
            if not os.path.isdir(self.uri):
                return {}
            out = {}
            for n in os.listdir(self.uri):
                with open(os.path.join(self.uri, n), "rb") as f:
                    out[n] = f.read()
            return out
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=self.prefix + "/")
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        return {k[len(self.prefix) + 1:]: self.s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()
                for k in keys if not k.endswith("/") and "/" not in k[len(self.prefix) + 1:]}

    def parts(self) -> dict[str, bytes]:
        return {n: b for n, b in self.files().items() if n.startswith("part-")}


def csv_rows(parts: dict[str, bytes], header: list[str] | None = None) -> list[tuple]:
    rows = []
    for body in parts.values():
        reader = csv.reader(io.StringIO(body.decode()))
        if header is not None:
            assert next(reader) == header
        rows.extend(map(tuple, reader))
    return rows


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        yield Storage("local", tmp_path)
    else:
        session = request.getfixturevalue("aws")
        os.environ["AWS_ENDPOINT_URL"] = request.getfixturevalue("moto_endpoint")
        try:
            yield Storage("s3", tmp_path, session.s3)
        finally:
            os.environ.pop("AWS_ENDPOINT_URL", None)


def ratings(path, rows) -> None:
    path.write_text("userId,movieId,rating,timestamp\n" + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in rows))


def latest(rows) -> list[tuple]:
    """Plain Python: (movie, user, rating text, ts) of the latest, then highest, rating per pair."""
    best: dict = {}
    for u, m, r, t in rows:
        if (m, u) not in best or (t, r) > best[(m, u)]:
            best[(m, u)] = (t, r)
    return sorted((str(m), str(u), format(float(r), "g"), str(t)) for (m, u), (t, r) in best.items())


# -- 1. S3 (and local) outputs are not mixed ---------------------------------------------------

def test_narrower_rerun_is_refused_then_overwrite_removes_stale_parts(storage, tmp_path):
    rows = [(u, m, 1 + (u * m) % 5, 1000 + u + m) for u in range(1, 30) for m in range(1, 20)]
    src = tmp_path / "r.csv"
    ratings(src, rows)
    r = cli("run", "-q", "-p", "2", LATEST_RATING, "--input", str(src), "--output", storage.uri, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(storage.parts()) == ["part-0-0.csv", "part-1-0.csv"]
    assert sorted(csv_rows(storage.parts(), HEADER)) == latest(rows)

    rows2 = [(u, m, t, r) for u, m, t, r in rows[::2]]
    ratings(src, rows2)
    r = cli("run", "-q", "-p", "1", LATEST_RATING, "--input", str(src), "--output", storage.uri, cwd=tmp_path)
    assert r.returncode == 1 and f"output path already exists: {storage.uri}" in r.stderr, r.stderr
    assert sorted(csv_rows(storage.parts(), HEADER)) == latest(rows)           # untouched

    r = cli("run", "-q", "-p", "1", LATEST_RATING, "--input", str(src), "--output", storage.uri,
            "--overwrite", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(storage.parts()) == ["part-0-0.csv"]                          # part-1-0 went
    assert sorted(csv_rows(storage.parts(), HEADER)) == latest(rows2)


# -- 2. all records bad ------------------------------------------------------------------------

def test_seed_ids_are_text_and_a_job_of_only_bad_records_fails(tmp_path):
    src = tmp_path / "seed.txt"
    src.write_text("m1^u1^4.0^2000\nm1^u1^3.5^2001\nm2^u7^5^1999\n")
    out = tmp_path / "out"
    r = cli("run", "-q", LATEST_RATING, "--format", "seed", "--input", str(src), "--output", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(csv_rows(Storage("local", tmp_path).parts(), HEADER)) == [
        ("m1", "u1", "3.5", "2001"), ("m2", "u7", "5", "1999")]

    src.write_text("m1^u1^four^2000\nm1^u1\n")                                  # every line bad
    r = cli("run", LATEST_RATING, "--format", "seed", "--input", str(src), "--output", str(tmp_path / "o2"),
            cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "2 of 2 input records were bad (all of them)" in r.stderr
    assert f"{src}:1: field 3 'rating': could not convert 'four' to float" in r.stderr
    assert "latest ratings written" not in r.stdout
    assert not [n for n in os.listdir(tmp_path / "o2") if n.startswith("part-")]


@pytest.mark.parametrize("option, fails", [("emrflow.bad-records.max-ratio=0.2", True),
                                           ("emrflow.bad-records.max-ratio=0.5", False),
                                           ("emrflow.bad-records.max-count=2", True),
                                           ("emrflow.bad-records.max-count=4", False)])
def test_bad_record_thresholds(tmp_path, option, fails):
    src = tmp_path / "seed.txt"
    src.write_text("".join(f"m{i}^u1^{'x' if i % 3 == 0 else 4}^{i}\n" for i in range(10)))  # 4 of 10 bad
    r = cli("run", "-q", "-D", option, LATEST_RATING, "--format", "seed", "--input", str(src),
            "--output", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == (1 if fails else 0), r.stderr
    if fails:
        assert "4 of 10 input records were bad (more than " + option + ")" in r.stderr
        assert f"{src}:1: field 3 'rating'" in r.stderr


# -- 3. unusable checkpoint storage -----------------------------------------------------------

@pytest.mark.parametrize("uri, words", [("hdfs:///flink/checkpoints", "HDFS is not supported"),
                                        ("gs://bucket/ck", "unsupported file system gs://")])
def test_unsupported_checkpoint_storage_fails_before_the_job_runs(tmp_path, uri, words):
    r = cli("run", "-q", "-D", f"state.checkpoints.dir={uri}", "-D", "execution.checkpointing.interval=1 s",
            os.path.join(ROOT, "tests", "jobs", "checkpointed_count.py"), "--count", "10", "--keys", "2",
            "--output", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 1
    assert f"state.checkpoints.dir={uri}" in r.stderr and words in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "submitted" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2


def test_checkpoint_storage_s3_spellings_and_unreachable_endpoint(aws, moto_endpoint, tmp_path, monkeypatch):
    from emrflow.errors import ConfigError
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    for scheme in ("s3", "s3a", "s3n", "s3p"):
        fs.FileSystem().check_storage(f"{scheme}://{BUCKET}/ck-{scheme}", "state.checkpoints.dir")
    with pytest.raises(ConfigError, match=r"state.checkpoints.dir=s3p://no-such-bucket-x/ck: cannot write"):
        fs.FileSystem().check_storage("s3p://no-such-bucket-x/ck", "state.checkpoints.dir")
    fs.FileSystem().check_storage(str(tmp_path / "ck"), "state.checkpoints.dir")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):
        pytest.skip("running as root: permissions are not enforced")
    with pytest.raises(ConfigError, match="cannot write there: .*Permission denied"):
        fs.FileSystem().check_storage(str(ro / "ck"), "state.checkpoints.dir")


# -- 4. an interrupted run leaves the output as it was -----------------------------------------

def test_ctrl_c_leaves_the_output_as_it_was_and_the_next_run_is_not_refused(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("".join(f"w{i}\n" for i in range(20_000)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")                # the output "as it was": one foreign file
    before = Storage("local", tmp_path).files()
    proc = subprocess.Popen([sys.executable, "-m", "emrflow.cli", "run", "-p", "2", JOB, "--input", str(src),
                             "--output", str(out), "--sink", "text", "--sleep-ms", "50"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not [n for n in os.listdir(out) if ".inprogress" in n]:
        time.sleep(0.05)
    assert [n for n in os.listdir(out) if ".inprogress" in n], "the job never started writing"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert Storage("local", tmp_path).files() == before
    (out / "keep.txt").unlink()
    src.write_text("a\nbb\n")
    r = subprocess.run([sys.executable, "-m", "emrflow.cli", "run", "-q", JOB, "--input", str(src), "--output",
                        str(out), "--sink", "csv"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["part-0-0.csv"]


def test_killed_client_leftovers_do_not_block_a_no_overwrite_run(tmp_path):
    """In-progress files of a killed run are not output: NO_OVERWRITE accepts the directory."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".part-0-0.csv.inprogress.0123abcd").write_text("half")
    src = tmp_path / "seed.txt"
    src.write_text("m1^u1^4.0^2000\n")
    r = cli("run", "-q", LATEST_RATING, "--format", "seed", "--input", str(src), "--output", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(out)) == ["part-0-0.csv"]                          # the leftover went too


# -- 4b. the commit record: a kill after the commit point, held there on purpose -----------------

def run_held_in_commit(tmp_path, out, src: str, sink: str) -> tuple[subprocess.Popen, psutil.Process]:
    """Start a p=2 run whose slots hold their commit (after the commit point) for 60 s; return it
    once its commit record is in ``out``."""
    env = dict(os.environ, EMRFLOW_FAULT_COMMIT_PAUSE_S="60")
    proc = subprocess.Popen([sys.executable, "-m", "emrflow.cli", "run", "-q", "-p", "2", JOB, "--input", src,
                             "--output", str(out), "--sink", sink], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if [n for n in os.listdir(out) if n.startswith("_emrflow-commit-")]:
            return proc, psutil.Process(proc.pid)
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no commit record appeared: {proc.communicate()[1][-2000:]}")


def two_inputs(tmp_path) -> list[tuple[str, collections.Counter]]:
    out = []
    for k in range(2):
        lines = [f"{'ab'[k]}{i}" for i in range(3000 + 500 * k)]
        path = tmp_path / f"in{k}.txt"
        path.write_text("\n".join(lines) + "\n")
        out.append((str(path), reference(lines, "text")))
    return out


def test_taskmanagers_lost_after_the_commit_point_the_jobmanager_finishes_the_commit(tmp_path):
    (old_src, old_ref), (new_src, new_ref) = two_inputs(tmp_path)
    out = tmp_path / "out"
    r = cli("run", "-q", "-p", "3", JOB, "--input", old_src, "--output", str(out), "--sink", "text", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert visible(Storage("local", tmp_path), "text") == old_ref
    assert not [n for n in os.listdir(out) if n.startswith("_emrflow-commit-")]  # a finished run leaves none
    proc, root = run_held_in_commit(tmp_path, out, new_src, "text")
    deadline = time.monotonic() + 10
    while not (taskmanagers := runtime_processes(root, "emrflow.runtime.taskmanager")):
        assert time.monotonic() < deadline, [p.cmdline() for p in root.children(recursive=True)]
        time.sleep(0.1)
    for tm in taskmanagers:
        tm.kill()
    _, err = proc.communicate(timeout=120)
    # every slot was lost while committing: the JobManager published their files from the record
    assert proc.returncode == 0, err
    assert visible(Storage("local", tmp_path), "text") == new_ref
    assert sorted(os.listdir(out)) == ["part-0-0", "part-1-0"]     # no record, no stale part-2-0


def test_a_killed_client_after_the_commit_point_leaves_a_record_that_the_next_reader_finishes(tmp_path):
    (old_src, old_ref), (new_src, new_ref) = two_inputs(tmp_path)
    out = tmp_path / "out"
    r = cli("run", "-q", "-p", "3", JOB, "--input", old_src, "--output", str(out), "--sink", "text", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not [n for n in os.listdir(out) if n.startswith("_emrflow-commit-")]  # a finished run leaves none
    proc, root = run_held_in_commit(tmp_path, out, new_src, "text")
    family = root.children(recursive=True)
    root.kill()                                     # the client and, with it, its embedded cluster
    proc.communicate(timeout=60)
    assert kill_tree_leftovers(family) == 0
    names = os.listdir(out)
    assert [n for n in names if n.startswith("_emrflow-commit-")]
    assert visible(Storage("local", tmp_path), "text") == old_ref  # the slots held: nothing renamed yet
    # the next job reading the directory finishes the commit first: it reads exactly the new output
    copy = tmp_path / "copy"
    r = cli("run", "-q", JOB, "--input", str(out), "--output", str(copy), "--sink", "text", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert visible(Storage("local", tmp_path), "text") == new_ref
    assert sorted(os.listdir(out)) == ["part-0-0", "part-1-0"]
    got = collections.Counter(line for n in os.listdir(copy) if n.startswith("part-")
                              for line in (copy / n).read_text().splitlines())
    assert got == collections.Counter(str((line, len(line))) for line in new_ref)


# -- fault injection -----------------------------------------------------------------------

def reference(lines: list[str], sink: str) -> collections.Counter:
    """What a complete run writes, as a multiset of lines (text) or rows (CSV)."""
    if sink == "text":
        return collections.Counter(str((s, len(s))) for s in lines)
    return collections.Counter((s, str(len(s))) for s in lines)


def visible(storage: Storage, sink: str) -> collections.Counter:
    parts = storage.parts()
    if sink == "text":
        return collections.Counter(line for b in parts.values() for line in b.decode().splitlines())
    return collections.Counter(csv_rows(parts))


def runtime_processes(root: psutil.Process, module: str) -> list[psutil.Process]:
    out = []
    for p in root.children(recursive=True):
        try:
            if module in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def kill_tree_leftovers(procs: list[psutil.Process]) -> int:
    """Kill what is still alive of ``procs`` after a grace period; return how many were left."""
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        p.kill()
    return len(alive)


def fault_injection(tmp_path, storage: Storage, sink: str, runs: int, seed: int) -> dict:
    rng = random.Random(seed)
    inputs = []
    for k in range(2):
        lines = [f"{'ab'[k]}{i}-{rng.randrange(10**6)}" for i in range(4000)]
        path = tmp_path / f"in{k}.txt"
        path.write_text("\n".join(lines) + "\n")
        inputs.append((str(path), reference(lines, sink)))
    stats = collections.Counter()
    # an undisturbed first run: the output to protect, and how long a run takes on this machine
    t0 = time.monotonic()
    r = cli("run", "-q", JOB, "--input", inputs[1][0], "--output", storage.uri, "--sink", sink, cwd=tmp_path)
    duration = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    expected_now = visible(storage, sink)
    assert expected_now == inputs[1][1]
    for run in range(runs):
        # the input whose output the directory does not hold: old and new output always differ
        src, ref = next((path, want) for path, want in inputs if want != expected_now)
        kind = ("client", "taskmanager", "jobmanager")[run % 3]
        p = 2 - (run // 2) % 2                   # 2, 2, 1, 1, ...: narrower runs leave stale parts
        proc = subprocess.Popen([sys.executable, "-m", "emrflow.cli", "run", "-q", "-p", str(p), JOB,
                                 "--input", src, "--output", storage.uri, "--sink", sink, "--sleep-ms", "15"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        root = psutil.Process(proc.pid)
        delay = rng.uniform(0.1, 1.2 * duration)     # some runs finish before their kill
        deadline = time.monotonic() + delay
        family: list[psutil.Process] = []
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                pass
            time.sleep(0.02)
        killed = False
        if proc.poll() is None:
            target = [root] if kind == "client" else runtime_processes(root, f"emrflow.runtime.{kind}")[:1]
            for t in target:
                try:
                    t.send_signal(signal.SIGKILL)
                    killed = True
                except psutil.Error:
                    pass
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            stats["hung"] += 1
            print(f"HUNG: run {run} (seed {seed}), kill of the {kind} after {delay:.2f} s "
                  f"(killed: {killed}); stderr: {err[-3000:]}")
        stats["leftover processes"] += kill_tree_leftovers([q for q in family if q.pid != root.pid])
        records = [n for n in storage.files() if n.startswith("_emrflow-commit-")]
        stats["runs"] += 1
        stats["kills"] += killed
        stats[f"kills of the {kind}"] += killed
        if proc.returncode == 0:
            stats["finished"] += 1
            assert not records, f"run {run} (seed {seed}) exited 0 and left its commit record"
            assert visible(storage, sink) == ref, f"run {run} (seed {seed}) exited 0 with wrong output: {err[-2000:]}"
        if records:
            # killed after the commit point (every subtask finished, the record written): the
            # output is decided; whoever reads or writes the directory next finishes the commit
            assert killed and len(records) == 1, (run, seed, records)
            stats["commits finished by the next reader"] += 1
            assert files.list_input_files(storage.uri, fs.FileSystem())  # a reader: rolls forward
            assert not [n for n in storage.files() if n.startswith("_emrflow-commit-")]
        got = visible(storage, sink)
        if got == ref:
            stats["new output"] += 1
        elif got == expected_now:
            stats["previous output"] += 1
        else:
            stats["lost"] += sum(((ref | expected_now) - got).values()) > 0
            stats["duplicated"] += any(v > 1 for v in got.values())
            raise AssertionError(f"run {run} (seed {seed}, kill {kind} after {delay:.2f} s, exit "
                                 f"{proc.returncode}): output is neither the previous nor the new one; "
                                 f"{sum(got.values())} lines, {sorted(storage.files())}")
        expected_now = got
    # a last undisturbed run commits and removes every leftover in-progress file
    src, ref = next((path, want) for path, want in inputs if want != expected_now)
    r = cli("run", "-q", JOB, "--input", src, "--output", storage.uri, "--sink", sink, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert visible(storage, sink) == ref
    assert not [n for n in storage.files() if ".inprogress" in n], sorted(storage.files())
    for k in ("lost", "duplicated", "commits finished by the next reader"):
        stats.setdefault(k, 0)
    return stats


def _report(what: str, stats: dict, seconds: float) -> None:
    line = (f"fault injection {what}: {stats['runs']} runs, {stats['kills']} kills "
            f"(client {stats['kills of the client']}, TaskManager {stats['kills of the taskmanager']}, "
            f"JobManager {stats['kills of the jobmanager']}), {stats['lost']} lost, {stats['duplicated']} "
            f"duplicated; new output {stats['new output']}, previous output {stats['previous output']}, "
            f"commits finished by the next reader {stats['commits finished by the next reader']}, "
            f"exit 0 {stats['finished']}, leftover processes {stats['leftover processes']}, "
            f"{seconds:.0f} s")
    print(line)
    report = os.environ.get("EMRFLOW_FAULT_REPORT")
    if report:
        with open(report, "a") as f:
            f.write(line + "\n")


@pytest.mark.parametrize("sink", ["text", "csv"])
def test_fault_injection_keeps_output_whole(storage, tmp_path, sink, request):
    """10 runs per sink and storage (20 per sink), 30 with --runslow; seeded."""
    runs = 30 if request.config.getoption("--runslow") else 10
    seed = int(os.environ.get("EMRFLOW_FAULT_SEED", "14")) + (storage.kind == "s3") * 7 + (sink == "csv")
    t0 = time.monotonic()
    stats = fault_injection(tmp_path, storage, sink, runs, seed)
    _report(f"{sink} on {storage.kind} (seed {seed})", stats, time.monotonic() - t0)
    assert stats["lost"] == stats["duplicated"] == stats["hung"] == 0
    assert stats["kills"] >= runs // 3


# -- 5. late records are counted and shown -------------------------------------------------------

LATE_JOB = '''
import sys
from emrflow import StreamExecutionEnvironment
from emrflow.api.eventtime import Time, WatermarkStrategy
from emrflow.api.windowing import TumblingEventTimeWindows
from emrflow.config import Configuration
from emrflow.testing import GeneratedSource

data = [("k", t, 1) for t in range(0, 30_000, 100)]
data = data[:250] + [("k", 2_000, 100), ("k", 12_000, 100), ("k", 5_000, 100)] + data[250:]
env = StreamExecutionEnvironment.get_execution_environment()
mono = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e[1])
(env.from_source(GeneratedSource(len(data), data.__getitem__, batch_size=10, max_parallelism=1), mono)
    .key_by(lambda e: e[0]).window(TumblingEventTimeWindows.of(Time.seconds(10)))
    .reduce(lambda a, b: (a[0], a[1], a[2] + b[2])).name("windows").write_as_text(sys.argv[1]))
r = env.execute("late")
print("result", r.late_records_dropped, r.get_accumulator_result("numLateRecordsDropped"))
'''


def test_late_records_dropped_are_counted_and_warned_about(tmp_path):
    """Three records 13-23 s behind a monotonous watermark (watermark after every 10 records)."""
    job = tmp_path / "late.py"
    job.write_text(LATE_JOB)
    for quiet in ([], ["-q"]):
        r = cli("run", *quiet, "-D", "pipeline.auto-watermark-interval=0", str(job), str(tmp_path / f"o{len(quiet)}"),
                cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "result 3 3" in r.stdout
        assert "Warning: 3 records" in r.stderr and "numLateRecordsDropped" in r.stderr
        if not quiet:
            assert "late records dropped (numLateRecordsDropped) 3" in r.stderr
    lines = [ln for p in (tmp_path / "o0").iterdir() if p.name.startswith("part-") for ln in p.read_text().splitlines()]
    assert sorted(lines) == [str(("k", t, 100)) for t in (0, 10_000, 20_000)]   # the late ones are not in


def test_late_records_in_the_job_status_rest_and_prometheus():
    """The JobManager's job status, REST vertex metrics and Prometheus read the tasks' counter."""
    from types import SimpleNamespace

    from emrflow.runtime import rest
    from emrflow.runtime.metrics import _collector
    topology = {"vertices": [{"id": 1, "name": "w", "parallelism": 2, "max_parallelism": 128,
                              "operators": [{"id": 5, "name": "windows", "uid": "u", "kind": "window"}]}],
                "edges": [], "batch": False}
    metrics = {(1, 0): {"operators": {5: (10, 4)}, "late": {5: 2}}, (1, 1): {"operators": {5: (7, 3)}, "late": {5: 1}}}
    from emrflow.runtime.jobmanager.machine import JobState
    from emrflow.runtime.jobmanager.query import JobManagerQuery
    from emrflow.runtime.jobmanager.states import JobStatus
    job = JobState(id="j", name="late", topology=topology, job_bytes=b"", state=JobStatus.RUNNING, metrics=metrics)
    vm = [rest._subtask_metrics(job, 1, i, 5, 5)["numLateRecordsDropped"] for i in range(2)]
    assert vm == [2, 1] and rest._sum_metrics([rest._subtask_metrics(job, 1, i, 5, 5) for i in range(2)])[
        "numLateRecordsDropped"] == 3
    import threading
    machine = SimpleNamespace(jobs={"j": job}, taskmanagers={}, slots={})  # what the query surface reads
    jm = SimpleNamespace(query=JobManagerQuery(machine, threading.Condition()))
    fam = {f.name: f for f in _collector(jm).collect()}
    samples = fam["flink_taskmanager_job_task_operator_numLateRecordsDropped"].samples
    assert sorted((s.labels["subtask_index"], s.value) for s in samples) == [("0", 2), ("1", 1)]
