"""Errors that used to bury the user's message (issue 14, item 6): each shows the message first."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

LATEST_RATING = os.path.join(ROOT, "examples", "latest_rating.py")


def cli(*args: str, cwd, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env=dict(os.environ, **(env_extra or {})))


def test_syntax_error_is_file_line_and_caret(tmp_path):
    (tmp_path / "job.py").write_text("import os\nx = (1,\n")
    r = cli("run", "job.py", cwd=tmp_path)
    assert r.returncode == 1
    assert 'File "job.py", line 2' in r.stderr and "SyntaxError: '(' was never closed" in r.stderr
    assert "click" not in r.stderr and "runpy" not in r.stderr and len(r.stderr.splitlines()) <= 5


def test_error_before_execute_shows_the_script_frames_only(tmp_path):
    (tmp_path / "job.py").write_text("def load():\n    raise ValueError('no such table: ratings')\n\nload()\n")
    r = cli("run", "job.py", cwd=tmp_path)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].startswith('  File "job.py", line 4') and lines[-1] == "ValueError: no such table: ratings"
    assert "click" not in r.stderr and "runpy" not in r.stderr and len(lines) == 6


def test_a_jar_is_refused_by_name(tmp_path):
    (tmp_path / "WordCount.jar").write_bytes(b"PK\x03\x04" + b"\0" * 100)
    r = cli("run", "WordCount.jar", cwd=tmp_path)
    assert r.returncode == 2
    assert "WordCount.jar is a Java archive" in r.stderr and "SyntaxError" not in r.stderr


def test_a_script_that_never_calls_execute_fails(tmp_path):
    (tmp_path / "job.py").write_text("from emrflow import StreamExecutionEnvironment\n"
                                     "env = StreamExecutionEnvironment.get_execution_environment()\n"
                                     "env.from_collection([1, 2]).print()\n")
    r = cli("run", "job.py", cwd=tmp_path)
    assert r.returncode == 1
    assert "job.py did not submit a job: it never called env.execute()" in r.stderr


def test_fail_on_bad_records_names_the_line_without_an_internal_cause(tmp_path):
    src = tmp_path / "r.csv"
    src.write_text('userId,movieId,rating,timestamp\n1,2,3.5,100\n1,"3,4.0,200\n')
    r = cli("run", LATEST_RATING, "--input", str(src), "--output", str(tmp_path / "o"), "--fail-on-bad-records",
            cwd=tmp_path)
    assert r.returncode == 1
    assert f"{src}:3: expected 4 fields, got 2" in r.stderr
    assert "record spans lines" not in r.stderr and "direct cause" not in r.stderr


def test_unreachable_s3_endpoint_is_one_line(tmp_path):
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_EC2_METADATA_DISABLED": "true"}
    r = cli("run", LATEST_RATING, "--input", "s3://bucket/in.csv", "--output", str(tmp_path / "o"), cwd=tmp_path,
            env_extra=env)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Source: ratings: cannot access s3://bucket/in.csv: ")
    assert "127.0.0.1:9" in lines[0]


def test_dry_run_stops_after_printing_the_plan(tmp_path):
    r = cli("run", "--dry-run", LATEST_RATING, "--output", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '"job_id"' in r.stdout and "latest ratings written" not in r.stdout
    assert not (tmp_path / "o").exists()


def test_list_cancel_savepoint_take_the_rest_token(tmp_path):
    from tests.integration.test_standalone import Cluster
    c = Cluster(str(tmp_path / "cluster"), taskmanagers=1, extra=("-D", "rest.auth.token=s3cret"))
    try:
        r = cli("list", "-a", "-m", c.rest, cwd=tmp_path)
        assert r.returncode == 1 and "(401)" in r.stderr and "-D rest.auth.token=" in r.stderr, r.stderr
        r = cli("list", "-a", "-m", c.rest, "-D", "rest.auth.token=wrong", cwd=tmp_path)
        assert r.returncode == 1 and "the token was refused (rest.auth.token)" in r.stderr, r.stderr
        r = cli("list", "-a", "-m", c.rest, "-D", "rest.auth.token=s3cret", cwd=tmp_path)
        assert r.returncode == 0 and "No jobs." in r.stderr, r.stderr
        conf = tmp_path / "conf.yaml"
        conf.write_text("rest.auth.token: s3cret\n")
        r = cli("cancel", "0" * 32, "-m", c.rest, "--conf", str(conf), cwd=tmp_path)
        assert r.returncode == 1 and "(401)" not in r.stderr and "0" * 32 in r.stderr, r.stderr
        for command in (["savepoint", "0" * 32, str(tmp_path / "sp")], ["stop", "0" * 32]):
            r = cli(*command, "-m", c.rest, "-D", "rest.auth.token=s3cret", "--timeout", "5", cwd=tmp_path)
            assert r.returncode == 1 and "(401)" not in r.stderr, r.stderr
    finally:
        assert not c.stop(), "cluster processes left running"
