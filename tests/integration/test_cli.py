"""`emrflow run` as a user runs it: real subprocesses, real files, real signals."""

from __future__ import annotations

import csv
import glob
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from tests.conftest import ROOT, SHARED_DATA

pytestmark = pytest.mark.integration

RATINGS = os.path.join(ROOT, "examples", "data", "movielens-latest-small", "ratings.csv")
LATEST_RATING = os.path.join(ROOT, "examples", "latest_rating.py")


def emrflow(*args: str, env_extra: dict | None = None, timeout: float = 240,
            cwd: str | None = None) -> tuple[subprocess.CompletedProcess, str]:
    """Run the emrflow CLI in a subprocess tagged with a unique token in its environment.

    It runs in ``cwd``, by default the test's own ``tmp_path`` (see ``tests/conftest.py``).
    """
    token = uuid.uuid4().hex
    env = dict(os.environ, EMRFLOW_TEST_TOKEN=token, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=cwd)
    return proc, token


def processes_with_token(token: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("EMRFLOW_TEST_TOKEN") == token:
                out.append(p)
        except psutil.Error:
            pass
    return out


def assert_nothing_left(token: str) -> None:
    deadline = time.monotonic() + 10
    while processes_with_token(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = processes_with_token(token)
    for p in left:
        p.kill()
    assert not left, f"left behind: {[p.cmdline() for p in left]}"


def read_parts(directory: str, header: list[str]) -> list[list[str]]:
    rows = []
    parts = sorted(glob.glob(os.path.join(directory, "part-*")))
    assert parts, f"no part files in {directory}: {os.listdir(directory)}"
    for path in parts:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            assert next(reader) == header
            rows.extend(reader)
    return rows


def latest_reference(path: str) -> dict:
    """Plain Python: the latest (then highest) rating per (movie, user)."""
    best: dict = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for user, movie, rating, ts in reader:
            key = (int(movie), int(user))
            cand = (int(ts), float(rating))
            if key not in best or cand > best[key]:
                best[key] = cand
    return best


# -- help, version, usage errors ----------------------------------------------------

@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["config", "--help"],
                                  ["config", "keys", "--help"], ["config", "show", "--help"]])
def test_help(args):
    proc, _ = emrflow(*args)
    assert proc.returncode == 0
    assert "Usage:" in proc.stdout


def test_version():
    from emrflow import __version__
    proc, _ = emrflow("--version")
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_unknown_target_is_a_usage_error(tmp_path):
    proc, _ = emrflow("run", "-t", "moon", LATEST_RATING)
    assert proc.returncode == 2
    assert "unknown target 'moon'" in proc.stderr and "local" in proc.stderr


def test_bad_config_key_names_it(tmp_path):
    proc, _ = emrflow("run", "-D", "paralellism.default=2", LATEST_RATING)
    assert proc.returncode == 1
    assert "paralellism.default" in proc.stderr and "parallelism.default" in proc.stderr


def test_bad_config_value_names_key_and_type():
    proc, _ = emrflow("run", "-D", "taskmanager.numberOfTaskSlots=four", LATEST_RATING)
    assert proc.returncode == 1
    assert "taskmanager.numberOfTaskSlots" in proc.stderr and "integer" in proc.stderr


def test_missing_job_script():
    proc, _ = emrflow("run", "no/such/job.py")
    assert proc.returncode == 2 and "no/such/job.py" in proc.stderr


# -- the main job on real data ---------------------------------------------------------

def test_latest_rating_p2_on_real_ratings_with_rerating(tmp_path):
    rng = random.Random(3)
    with open(RATINGS, newline="") as f:
        rows = list(csv.reader(f))
    header, data = rows[0], rows[1:]
    extra = []
    for user, movie, _rating, ts in rng.sample(data, 10_000):
        # later re-ratings, earlier ones, and equal timestamps with another rating
        extra.append([user, movie, f"{rng.randint(1, 10) / 2:g}", str(int(ts) + rng.randint(1, 10**7))])
        extra.append([user, movie, "0.5", str(int(ts) - 1)])
        extra.append([user, movie, f"{rng.randint(1, 10) / 2:g}", ts])
    all_rows = data + extra
    rng.shuffle(all_rows)
    src = tmp_path / "ratings.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(all_rows)
    out = tmp_path / "out"
    proc, token = emrflow("run", "-p", "2", LATEST_RATING, "--input", str(src),
                          "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert_nothing_left(token)
    got = read_parts(str(out), ["movieId", "userId", "rating", "timestamp"])
    expected = latest_reference(str(src))
    assert len(got) == len(expected)
    assert {(int(m), int(u)): (int(ts), float(r)) for m, u, r, ts in got} == expected
    assert len(glob.glob(str(out / "part-*"))) == 2
    assert "Job Runtime" in proc.stderr


def test_latest_rating_runs_with_no_arguments(tmp_path):
    proc, token = emrflow("run", LATEST_RATING, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    got = read_parts(str(tmp_path / "out" / "latest-rating"), ["movieId", "userId", "rating", "timestamp"])
    assert len(got) == len(latest_reference(RATINGS))
    # a second run refuses to overwrite, a third with --overwrite replaces
    proc, _ = emrflow("run", LATEST_RATING, cwd=str(tmp_path))
    assert proc.returncode == 1 and "already exists" in proc.stderr
    proc, _ = emrflow("run", LATEST_RATING, "--overwrite",
                      cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr


def test_seed_format_with_caret_delimiter(tmp_path):
    src = tmp_path / "seed.txt"
    src.write_text("10^1^4.5^100\n10^1^2^200\n11^1^3^50\n10^2^5^10\n")
    out = tmp_path / "out"
    proc, _ = emrflow("run", LATEST_RATING, "--format", "seed", "--input", str(src),
                      "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    got = sorted(read_parts(str(out), ["movieId", "userId", "rating", "timestamp"]))
    assert got == [["10", "1", "2", "200"], ["10", "2", "5", "10"], ["11", "1", "3", "50"]]


# -- bad input ---------------------------------------------------------------------------

def test_bad_records_are_skipped_counted_and_located(tmp_path):
    lines = ["userId,movieId,rating,timestamp"]
    bad_lines = set()
    for i in range(2, 400):
        if i % 37 == 0:
            lines.append(f"{i},x{i},3,100")       # unparsable number
            bad_lines.add(i)
        elif i % 41 == 0:
            lines.append(f"{i},{i},3")            # wrong number of fields
            bad_lines.add(i)
        else:
            lines.append(f"{i},{i % 13},3.5,{i}")
    src = tmp_path / "r.csv"
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    proc, _ = emrflow("run", "-p", "2", LATEST_RATING, "--input", str(src),
                      "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"Skipped {len(bad_lines)} bad input records" in proc.stderr
    reported = {int(n) for n in re.findall(re.escape(str(src)) + r":(\d+):", proc.stderr)}
    assert reported and reported <= bad_lines
    assert len(reported) == min(len(bad_lines), 20)  # 10 per subtask in full
    assert len(read_parts(str(out), ["movieId", "userId", "rating", "timestamp"])) == 398 - len(bad_lines)

    proc, _ = emrflow("run", LATEST_RATING, "--input", str(src), "--output",
                      str(tmp_path / "out2"), "--fail-on-bad-records")
    assert proc.returncode == 1
    assert re.search(re.escape(str(src)) + r":37: ", proc.stderr), proc.stderr
    assert not glob.glob(str(tmp_path / "out2" / "part-*"))


def test_missing_input_fails_before_the_job_starts(tmp_path):
    missing = tmp_path / "nope.csv"
    proc, _ = emrflow("run", LATEST_RATING, "--input", str(missing), "--output",
                      str(tmp_path / "o"))
    assert proc.returncode == 1
    assert f"input path does not exist: {missing}" in proc.stderr
    assert "submitted" not in proc.stderr


# -- failures and interruption -------------------------------------------------------

FAILING_JOB = '''
from emrflow import StreamExecutionEnvironment
from emrflow.testing import GeneratedSource
import sys

def explode(v):
    if v == 777:
        return 1 / 0
    return v

env = StreamExecutionEnvironment.get_execution_environment()
env.from_source(GeneratedSource(5000)).map(explode).name("exploding map") \\
    .write_as_text(sys.argv[1])
env.execute("doomed")
'''


def test_failing_job_reports_user_traceback_and_leaves_nothing(tmp_path):
    job = tmp_path / "failing_job.py"
    job.write_text(FAILING_JOB)
    out = tmp_path / "out"
    proc, token = emrflow("run", "-p", "2", str(job), str(out))
    assert proc.returncode == 1
    err = proc.stderr
    assert "ZeroDivisionError: division by zero" in err
    assert "in explode" in err and "return 1 / 0" in err
    assert "exploding map" in err and "subtask 1 of 2" in err  # 777 is odd -> subtask 1
    assert "emrflow/runtime" not in err  # the user's frames only
    assert not glob.glob(str(out / "part-*"))
    assert not [n for n in os.listdir(out) if "inprogress" in n] if out.exists() else True
    assert_nothing_left(token)


SLOW_JOB = '''
import time
from emrflow import StreamExecutionEnvironment
from emrflow.testing import GeneratedSource

def slow(v):
    time.sleep(0.001)
    return v

env = StreamExecutionEnvironment.get_execution_environment()
env.from_source(GeneratedSource(10**6, batch_size=64)).map(slow).print()
env.execute("slow")
'''


def test_ctrl_c_stops_job_and_cluster(tmp_path):
    job = tmp_path / "slow_job.py"
    job.write_text(SLOW_JOB)
    token = uuid.uuid4().hex
    env = dict(os.environ, EMRFLOW_TEST_TOKEN=token)
    proc = subprocess.Popen([sys.executable, "-m", "emrflow.cli", "run", "-p", "2", str(job)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=tmp_path)
    # wait for the job to run, then press Ctrl-C
    deadline = time.monotonic() + 60
    line = ""
    while "submitted" not in line and time.monotonic() < deadline:
        line = proc.stderr.readline()
    assert "submitted" in line
    time.sleep(1.0)
    assert len(processes_with_token(token)) >= 4  # client, JobManager, TaskManager, slots
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 130, rest
    assert "Interrupted" in rest
    assert_nothing_left(token)


# -- word count on real text ----------------------------------------------------------

def test_word_count_on_shakespeare(tmp_path):
    text = os.path.join(SHARED_DATA, "shakespeare", "t8.shakespeare.txt")
    if not os.path.exists(text):
        pytest.skip("Shakespeare's text is not next to the repository")
    out = tmp_path / "wc"
    proc, _ = emrflow("run", "-p", "2", os.path.join(ROOT, "examples", "word_count.py"), "--input", text,
                      "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    got = {w: int(c) for w, c in read_parts(str(out), ["word", "count"])}
    expected: dict = {}
    with open(text, encoding="utf-8") as f:
        for line in f:
            for w in re.findall(r"[a-z]+", line.lower()):
                expected[w] = expected.get(w, 0) + 1
    assert got == expected


PROGRESS_JOB = '''
import time
from emrflow import StreamExecutionEnvironment
from emrflow.testing import GeneratedSource

def slow(v):
    if v % 100 == 0:
        time.sleep(0.01)
    return v

env = StreamExecutionEnvironment.get_execution_environment()
env.from_source(GeneratedSource(30_000, batch_size=100)).map(slow).add_sink(lambda v: None)
env.execute("progressing")
'''


def test_progress_lines_when_not_on_a_terminal(tmp_path):
    job = tmp_path / "progress_job.py"
    job.write_text(PROGRESS_JOB)
    proc, _ = emrflow("run", "-p", "2", "-D", "client.progress.delay=0 ms", str(job))
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("RUNNING")]
    assert lines, proc.stderr
    assert re.search(r"source records [\d,]+", lines[0])
    assert "Map (parallelism 2): records in 30,000, out 30,000" in proc.stderr
