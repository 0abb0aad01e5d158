"""SplitSources end to end (Flink's FLIP-27): a streaming job watching a directory while the test drops
files into it, with checkpoints, a killed TaskManager and a savepoint restored at another parallelism.

The job (tests/jobs/monitored_count.py) writes ``key,count`` per record with the exactly-once file
sink, so the committed output equals a plain-Python reference exactly only if every record of every
file was read once: a record read twice writes a count twice, a lost one leaves a count out.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import pickle
import random
import subprocess
import sys
import time

import cloudpickle
import pytest
from conftest_emr import aws, aws_env, moto_endpoint  # noqa: F401  (moto server fixtures)

from tests.conftest import ROOT
from tests.integration.test_checkpoints import (
    cancel,
    checkpointed_run,
    completed_checkpoints,
    kill_a_taskmanager,
    output_lines,
    running,
    settled_output,
    wait_for,
)

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:moto.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:werkzeug.*")]

JOB = os.path.join(ROOT, "tests", "jobs", "monitored_count.py")
PULL_JOB = os.path.join(ROOT, "tests", "jobs", "pull_count.py")


def drop(directory: str, name: str, numbers: range) -> None:
    """Write a file the way a landing zone should get one: hidden first, then renamed."""
    tmp = os.path.join(directory, "." + name)
    with open(tmp, "w") as f:
        f.write("".join(f"{i}\n" for i in numbers))
    os.replace(tmp, os.path.join(directory, name))


def reference(numbers, keys: int) -> collections.Counter:
    """The lines a correct run writes: ``k,1 .. k,n_k`` once each."""
    n = collections.Counter(i % keys for i in numbers)
    return collections.Counter(f"{k},{c}" for k, total in n.items() for c in range(1, total + 1))


def test_monitored_directory_with_a_taskmanager_kill_is_exactly_once(tmp_path):
    src, out, ckdir = str(tmp_path / "in"), str(tmp_path / "out"), str(tmp_path / "checkpoints")
    os.makedirs(src)
    keys, files, per_file = 50, 24, 1500
    drop(src, "f-000", range(per_file))  # one file before the start, the others while it runs
    args = [JOB, "--input", src, "--output", out, "--keys", str(keys), "--interval-ms", "100"]
    with running(*checkpointed_run(out, ckdir, "-D", "execution.checkpointing.interval=300ms"), *args) as proc:
        wait_for(lambda: completed_checkpoints(ckdir), 60, "the first checkpoint")
        rng = random.Random()
        for n in range(1, files):
            drop(src, f"f-{n:03d}", range(n * per_file, (n + 1) * per_file))
            time.sleep(rng.uniform(0.05, 0.2))
            if n == files // 2:
                kill_a_taskmanager(proc, rng.choice)
        want = reference(range(files * per_file), keys)
        total = sum(want.values())
        got = settled_output(proc, out, total, 90, 1.0)
        stderr = cancel(proc, 60)
    assert "restarting in" in stderr, stderr
    assert got == want, (f"{len(set(want) - set(got))} lines lost, "
                         f"{sum(n - 1 for n in got.values() if n > 1)} duplicated")


def test_monitored_json_lines_and_parquet_directories_pick_up_new_files(tmp_path):
    """One job watching a text, a JSON lines and a Parquet directory (FileSource with each format) while
    files land in all three: the committed counts equal the reference of every record once."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    dirs = {k: str(tmp_path / k) for k in ("text", "json", "parquet")}
    for d in dirs.values():
        os.makedirs(d)
    out, ckdir = str(tmp_path / "out"), str(tmp_path / "checkpoints")
    keys, per_file, numbers = 20, 700, []

    def land(kind: str, name: str) -> None:
        rows = range(len(numbers), len(numbers) + per_file)
        numbers.extend(rows)
        if kind == "text":
            return drop(dirs["text"], name, rows)
        tmp = os.path.join(dirs[kind], "." + name)
        if kind == "json":
            with open(tmp, "w") as f:
                f.write("".join(json.dumps({"i": i, "pad": "x" * (i % 7)}) + "\n" for i in rows))
        else:
            pq.write_table(pa.table({"i": list(rows), "s": [str(i) for i in rows]}), tmp, row_group_size=300)
        os.replace(tmp, os.path.join(dirs[kind], name))
    for kind in dirs:
        land(kind, "f-0")
    args = [JOB, "--input", dirs["text"], "--json-input", dirs["json"], "--parquet-input", dirs["parquet"],
            "--output", out, "--keys", str(keys), "--interval-ms", "100"]
    with running(*checkpointed_run(out, ckdir, "-D", "execution.checkpointing.interval=300ms"), *args) as proc:
        wait_for(lambda: completed_checkpoints(ckdir), 60, "the first checkpoint")
        for n in range(1, 3):
            for kind in ("json", "parquet"):
                land(kind, f"f-{n}")
            time.sleep(0.2)
        want = reference(numbers, keys)
        got = settled_output(proc, out, sum(want.values()), 90, 1.0)
        cancel(proc, 60)
    assert got == want, (f"{len(set(want) - set(got))} lines lost, "
                         f"{sum(n - 1 for n in got.values() if n > 1)} duplicated")


def test_pull_source_through_a_region_failure_and_a_taskmanager_kill_is_exactly_once(tmp_path):
    """Readers that ask for one split at a time (handle_split_request): subtask 0 fails once after
    the first checkpoint, so its region restarts and the splits assigned since the last completed
    checkpoint go back to the enumerator (add_splits_back); then a TaskManager is killed (the
    whole job restarts from a checkpoint). Both pipelines' committed output equals the reference."""
    out, side, ckdir = str(tmp_path / "out"), str(tmp_path / "side"), str(tmp_path / "checkpoints")
    marker = str(tmp_path / "splits-back")
    count, side_count, keys = 4000, 300, 20
    args = [PULL_JOB, "--output", out, "--side-output", side, "--count", str(count), "--keys", str(keys),
            "--rate", "800", "--fail-region", "--marker", marker, "--side-count", str(side_count),
            "--side-rate", "60"]
    with running(*checkpointed_run(out, ckdir, "-D", "execution.checkpointing.interval=300ms"), *args) as proc:
        wait_for(lambda: os.path.exists(marker), 60, "the region restart's add_splits_back")
        time.sleep(0.3)  # the region runs again
        kill_a_taskmanager(proc)
        stderr = proc.communicate(timeout=90)[1]
    assert proc.returncode == 0, stderr
    assert "restarting the pipelined region" in stderr and "restarting in" in stderr, stderr
    assert "add_splits_back: " in stderr, stderr
    assert output_lines(out) == reference(range(count), keys)
    assert output_lines(side) == reference(range(side_count), keys)


def test_savepoint_then_restore_at_another_parallelism_reads_every_split_once(tmp_path):
    """Stop with a savepoint while files are half read, drop more files, restore at parallelism 3."""
    workdir, src, out = str(tmp_path / "cluster"), str(tmp_path / "in"), str(tmp_path / "out")
    os.makedirs(src)
    env = dict(os.environ, EMRFLOW_CLUSTER_DIR=workdir)

    def cli(*args, timeout=120):
        return subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=tmp_path)
    r = cli("cluster", "start", "--taskmanagers", "1", "--slots", "3")
    assert r.returncode == 0, r.stderr
    try:
        keys, per_file = 40, 8_000
        for n in range(4):  # big files: the savepoint finds some read in part
            drop(src, f"a-{n}", range(n * per_file, (n + 1) * per_file))
        # at most 4,000 records/s per subtask: the stop comes while files are being read
        args = [JOB, "--input", src, "--output", out, "--keys", str(keys), "--interval-ms", "100",
                "--rate", "4000"]
        r = cli("run", "-t", "remote", "-d", "-p", "2", "-D", "execution.checkpointing.interval=200ms", *args)
        assert r.returncode == 0, r.stderr
        job_id = r.stderr.split("JobID ")[1].split()[0] if "JobID " in r.stderr else r.stdout.split()[-1]
        wait_for(lambda: sum(output_lines(out).values()) > 0, 60, "the first committed output")
        r = cli("stop", job_id, "--savepoint-path", str(tmp_path / "final"))
        assert r.returncode == 0, r.stderr
        final = r.stdout.split("Path: ")[1].split()[0]
        with open(os.path.join(final, "_metadata")) as f:
            meta = json.load(f)
        (enum_entry,) = [t for t in meta["tasks"] if t.get("enumerator") == "landing"]
        with open(os.path.join(final, enum_entry["file"]), "rb") as f:
            enum_state = cloudpickle.loads(f.read())
        assert sorted(os.path.basename(p) for p in enum_state["seen"]) == [f"a-{n}" for n in range(4)]
        in_readers = []
        for t in meta["tasks"]:
            if t["subtask"] >= 0 and "landing" in t["operators"]:
                with open(os.path.join(final, t["file"]), "rb") as f:
                    in_readers += cloudpickle.loads(pickle.loads(f.read())["landing"])["splits"]
        partial = sum(output_lines(out).values())
        assert 0 < partial < 4 * per_file
        # the stop caught files read in part: their positions move to split_owner(file, 3) on restore
        assert any(s.line > 0 for s in in_readers) or enum_state["pending"], (in_readers, enum_state)
        for n in range(4, 6):  # new files while the job is stopped
            drop(src, f"a-{n}", range(n * per_file, (n + 1) * per_file))
        r = cli("run", "-t", "remote", "-d", "-p", "3", "-s", final, "-D", "execution.checkpointing.interval=200ms",
                *args)
        assert r.returncode == 0, r.stderr
        job2 = r.stderr.split("JobID ")[1].split()[0] if "JobID " in r.stderr else r.stdout.split()[-1]
        want = reference(range(6 * per_file), keys)
        wait_for(lambda: sum(output_lines(out).values()) >= sum(want.values()), 120, "all records committed")
        time.sleep(0.8)
        assert output_lines(out) == want
        assert glob.glob(os.path.join(out, "part-2-*"))  # the restored job ran at parallelism 3
        assert job2 != job_id
    finally:
        cli("cluster", "stop")


def test_event_time_is_per_split_so_interleaved_files_lose_no_record_as_late(tmp_path):
    """Three files with ascending timestamps read one after the other by one subtask: with one watermark
    per subtask the second and third files would be late and dropped; per split (a split assigned but
    not started holds event time back), every window is complete."""
    from emrflow import RuntimeExecutionMode, StreamExecutionEnvironment
    from emrflow.api.eventtime import Time, WatermarkStrategy
    from emrflow.api.windowing import TumblingEventTimeWindows
    from emrflow.connectors.monitoring import FileSource
    src = tmp_path / "in"
    src.mkdir()
    lines = 6000  # each file takes many polls
    for f in range(3):
        drop(str(src), f"e-{f}", range(lines))  # timestamps 0, 10, 20, ... ms in every file
    from emrflow.config import Configuration
    env = StreamExecutionEnvironment.get_execution_environment(
        Configuration.from_dict({"pipeline.auto-watermark-interval": 0}))  # a watermark after every batch
    env.set_parallelism(1)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda s: int(s) * 10)
    got = (env.from_source(FileSource.for_text_lines(str(src)), strategy, "files")
           .map(lambda s: ("all", 1))
           .key_by(lambda r: r[0])
           .window(TumblingEventTimeWindows.of(Time.seconds(1)))
           .reduce(lambda a, b: (a[0], a[1] + b[1]))
           .execute_and_collect())
    want = collections.Counter()
    for _ in range(3):
        for i in range(lines):
            want[i * 10 // 1000] += 1
    assert sorted(c for _, c in got) == sorted(want.values()) and sum(c for _, c in got) == 3 * lines


def test_file_source_lists_and_reads_an_s3_prefix(aws, moto_endpoint):
    """The monitored FileSource's enumerator and reader on S3 (moto in server mode, over HTTP); the
    recording context stands in for the JobManager."""
    import uuid

    from conftest_emr import BUCKET

    from emrflow.config import Configuration
    from emrflow.connectors.base import SubtaskContext
    from emrflow.connectors.monitoring import FileSource
    from emrflow.fs import FileSystem
    from tests.unit.test_split_runtime import RecordingContext
    file_system = FileSystem.of(Configuration.from_dict({"s3.endpoint": moto_endpoint}))
    prefix = f"landing-{uuid.uuid4().hex[:8]}"
    aws.s3.put_object(Bucket=BUCKET, Key=f"{prefix}/a.csv", Body=b"x,1\ny,2\n")
    aws.s3.put_object(Bucket=BUCKET, Key=f"{prefix}/_SUCCESS", Body=b"")
    source = FileSource.for_csv(f"s3://{BUCKET}/{prefix}/").monitor_continuously(1000)

    class Ctx(RecordingContext):
        file_system = property(lambda self: file_system)
    ctx = Ctx(1, readers={0})
    enumerator = source.create_enumerator(ctx)
    enumerator.start()
    assert [s.split_id for s in ctx.assigned[0]] == [f"s3://{BUCKET}/{prefix}/a.csv"]
    aws.s3.put_object(Bucket=BUCKET, Key=f"{prefix}/b.csv", Body=b"z,3")
    ctx.periodic[0][0]()
    assert [s.split_id.rsplit("/", 1)[1] for s in ctx.assigned[0]] == ["a.csv", "b.csv"]
    reader = source.create_split_reader(SubtaskContext("files", 0, 1, file_system=file_system))
    reader.add_splits(ctx.assigned[0])
    reader.start()
    got = [r for _ in range(4) for r in reader.poll(0.01)]  # a file's block, then its end, per poll
    assert [(r.split_id.rsplit("/", 1)[1], r.records, r.finished) for r in got] == [
        ("a.csv", [("x", "1"), ("y", "2")], False), ("a.csv", [], True),
        ("b.csv", [("z", "3")], False), ("b.csv", [], True)]
    assert reader.snapshot_state(1) == []
