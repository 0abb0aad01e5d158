"""JSON lines and Parquet round trips through real jobs, and a bucketed Parquet sink that survives a
killed TaskManager exactly once; every expectation is computed here in plain Python."""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest_emr import aws, aws_env, moto_endpoint  # noqa: F401  (moto server fixtures)
from test_checkpoints import checkpointed_run, kill_after_first_checkpoint, running

from emrflow import RuntimeExecutionMode, StreamExecutionEnvironment
from emrflow.config import Configuration
from emrflow.connectors import files
from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.formats import JsonLinesFileSink, JsonLinesSource, ParquetFileSink, ParquetSource
from emrflow.fs import FileSystem
from tests.conftest import ROOT
from tests.unit.test_split_runtime import polled_batches, subtask_reader

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:moto.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:werkzeug.*")]

BUCKETED_JOB = os.path.join(ROOT, "tests", "jobs", "bucketed_events.py")


def files_under(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns)


@pytest.fixture(scope="module")
def round_trips(tmp_path_factory):
    """One job (one local cluster) with two pipelines: JSON lines in and out, Parquet in and out.

    Returns ``(tmp dir, JobExecutionResult, JSON lines input, expected JSON records,
    expected Parquet rows, the Parquet sink's schema)``.
    """
    tmp = tmp_path_factory.mktemp("formats")
    src = tmp / "events.jsonl"
    lines, want_json = [], []
    for i in range(3000):
        if i == 1234:
            lines.append('{"user": "u1", "n": }')  # line 1235
        else:
            rec = {"user": f"u{i % 17}", "n": i, "tags": ["é"] * (i % 3)}
            lines.append(json.dumps(rec))
            want_json.append({**rec, "double": 2 * i})
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")

    pq_src = tmp / "in"
    pq_src.mkdir()
    rows = []
    for f in range(2):
        part = [{"id": f * 10_000 + j, "movie": f"m{j % 31}", "rating": (j % 10) / 2,
                 "at": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(minutes=j)}
                for j in range(2500)]
        pq.write_table(pa.Table.from_pylist(part), pq_src / f"ratings-{f}.parquet", row_group_size=300)
        rows += part
    want_pq = [{"id": r["id"], "movie": r["movie"], "stars": r["rating"] * 2} for r in rows if r["rating"] >= 1.0]
    schema = pa.schema([("id", pa.int64()), ("movie", pa.string()), ("stars", pa.float64())])

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_parallelism(2)
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    (env.read_json_lines(str(src)).map(lambda r: {**r, "double": 2 * r["n"]})
        .sink_to(JsonLinesFileSink(str(tmp / "json-out"))))
    (env.read_parquet(str(pq_src), columns=["id", "movie", "rating"], record_type="tuple")
        .filter(lambda t: t[2] >= 1.0)
        .map(lambda t: {"id": t[0], "movie": t[1], "stars": t[2] * 2})
        .sink_to(ParquetFileSink(str(tmp / "pq-out"), schema=schema, row_group_rows=1000)))
    result = env.execute("file format round trips")
    return tmp, result, src, want_json, want_pq, schema


def test_json_lines_round_trip_and_a_bad_line_reported_by_file_and_line(round_trips):
    tmp, result, src, want, _, _ = round_trips
    out = tmp / "json-out"
    assert result.bad_records == 1
    assert any(re.match(re.escape(str(src)) + r":1235: malformed JSON", s) for s in result.bad_record_samples), \
        result.bad_record_samples
    assert files_under(out) == ["part-0-0.jsonl", "part-1-0.jsonl"]
    got = [json.loads(line) for n in files_under(out) for line in (out / n).read_text("utf-8").splitlines()]
    assert sorted(got, key=lambda r: r["n"]) == want


def test_parquet_round_trip_split_by_row_group(round_trips):
    tmp, _, _, _, want, schema = round_trips
    out = tmp / "pq-out"
    assert files_under(out) == ["part-0-0.parquet", "part-1-0.parquet"]
    got = pq.read_table(out).to_pylist()  # pyarrow reads the directory as one dataset
    assert sorted(got, key=lambda r: r["id"]) == want
    assert pq.read_schema(out / "part-0-0.parquet").equals(schema)


def test_bucketed_parquet_sink_is_exactly_once_across_a_taskmanager_kill(tmp_path):
    """Events 10 s of event time apart, into dt=/hour= buckets; a TaskManager is killed
    after the first completed checkpoint; the output holds every id once, in its hour's bucket."""
    out, ckdir = str(tmp_path / "out"), str(tmp_path / "ck")
    count, step_ms = 24_000, 10_000
    with running(*checkpointed_run(out, ckdir, "-D", "execution.checkpointing.interval=500ms"),
                 BUCKETED_JOB, "--count", str(count), "--step-ms", str(step_ms), "--rate", "5000",
                 "--output", out) as proc:
        stderr = kill_after_first_checkpoint(proc, ckdir, 0.3, 120, choose=lambda tms: tms[0])
    assert proc.returncode == 0, stderr
    assert "restarting in" in stderr
    t0 = 1_706_659_200_000
    want: dict[str, set] = collections.defaultdict(set)
    for i in range(count):
        want[dt.datetime.fromtimestamp((t0 + i * step_ms) / 1000, dt.timezone.utc)
             .strftime("dt=%Y-%m-%d/hour=%H")].add(i)
    names = files_under(out)
    assert all(re.fullmatch(r"dt=\d{4}-\d\d-\d\d/hour=\d\d/part-[01]-\d+\.parquet", n) for n in names), names
    got: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for n in names:
        table = pq.read_table(os.path.join(out, n))
        got[n.rsplit("/", 1)[0]].update(table.column("id").to_pylist())
    assert sorted(got) == sorted(want)  # exactly the expected buckets (67 hours)
    dup = sum(c - 1 for ids in got.values() for c in ids.values() if c > 1)
    lost = sum(len(ids - set(got[b])) for b, ids in want.items())
    assert (lost, dup) == (0, 0), f"{lost} records lost, {dup} duplicated"
    assert {b: set(c) for b, c in got.items()} == want


def test_bucketed_sinks_and_sources_on_s3(tmp_path, aws, moto_endpoint):
    """On S3 (moto server): a bucketed JSON lines sink restored after a lost attempt (its in-progress
    object in a bucket prefix is deleted), a Parquet sink committed through its commit record, and
    both read back by the sources."""
    from conftest_emr import BUCKET
    base = f"s3://{BUCKET}/formats-{os.urandom(4).hex()}"
    fs_ = FileSystem.of(Configuration({"s3.endpoint": moto_endpoint}))

    def ctx(i, p, checkpointing=False, job_id="5" * 32):
        return SubtaskContext("op", i, p, config=Configuration({}), checkpointing=checkpointing, job_id=job_id,
                              file_system=fs_)

    def keys(prefix):
        pages = aws.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix.split("/", 3)[3])
        return sorted(o["Key"].split("/", 1)[1] for page in pages for o in page.get("Contents", [])
                      if not o["Key"].endswith("/"))

    sink = JsonLinesFileSink(f"{base}/json", bucket_assigner=lambda r: f"b={r['b']}")
    w = sink.create_writer(ctx(0, 1, checkpointing=True))
    w.write_batch([{"b": 1, "i": 0}, {"b": 2, "i": 1}])
    state = w.snapshot_state(1)
    w.write_batch([{"b": 3, "i": 2}])
    w._parts["b=3"].text.flush()  # the lost attempt's object exists (a multipart upload completes on close)
    w._close("b=3")
    w2 = sink.create_writer(ctx(0, 1, checkpointing=True))
    w2.restore_state([state])
    w2.write_batch([{"b": 3, "i": 2}])
    for rec in files.write_commit_records(fs_, "5" * 32, [w2.prepare_commit()]):
        w2.commit()
        files.finish_commit(fs_, rec)
    assert keys(f"{base}/json/") == ["json/b=1/part-0-0.jsonl", "json/b=2/part-0-1.jsonl",
                                     "json/b=3/part-0-2.jsonl"]
    got = []
    for b in (1, 2, 3):
        reader = subtask_reader(JsonLinesSource(f"{base}/json/b={b}"), ctx(0, 1))
        got += [r for batch in polled_batches(reader) for r in batch]
        reader.close()
    assert sorted(r["i"] for r in got) == [0, 1, 2]

    psink = ParquetFileSink(f"{base}/pq")
    writers = [psink.create_writer(ctx(i, 2)) for i in range(2)]
    writers[0].write_batch([{"id": i} for i in range(0, 100, 2)])
    writers[1].write_batch([{"id": i} for i in range(1, 100, 2)])
    for rec in files.write_commit_records(fs_, "5" * 32, [w.prepare_commit() for w in writers]):
        files.finish_commit(fs_, rec)  # the roll forward alone publishes every file
    assert keys(f"{base}/pq/") == ["pq/part-0-0.parquet", "pq/part-1-0.parquet"]
    ids = []
    for i in range(3):
        reader = subtask_reader(ParquetSource(f"{base}/pq", record_type="tuple"), ctx(i, 3))
        ids += [t[0] for batch in polled_batches(reader) for t in batch]
        reader.close()
    assert sorted(ids) == list(range(100))
