"""JSON lines and Parquet sources and sinks, and bucketed file sinks, driven directly through their
readers and writers (no processes); every expectation is computed here in plain Python."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import zoneinfo

import cloudpickle
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emrflow.config import Configuration
from emrflow.connectors import files
from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.files import CsvFileSink, TextFileSink, WriteMode
from emrflow.connectors.formats import (
    DateTimeBucketAssigner,
    JsonLinesFileSink,
    JsonLinesSource,
    ParquetFileSink,
    ParquetSource,
    check_bucket,
)
from emrflow.errors import BadRecordError
from emrflow.fs import FileSystem
from tests.unit.test_files import block_sizes, read_all  # noqa: F401  (block_sizes: a fixture)
from tests.unit.test_split_runtime import polled_batches, subtask_reader


def ctx(i: int, p: int, bad: list | None = None, checkpointing: bool = False, job_id: str = "",
        config: dict | None = None) -> SubtaskContext:
    return SubtaskContext("op", i, p, config=Configuration(config or {}), checkpointing=checkpointing,
                          job_id=job_id,
                          report_bad_record=lambda path, n, r: bad.append((path, n, r)) if bad is not None else None)


def key(r):
    return json.dumps(r, sort_keys=True)


# -- JSON lines source ---------------------------------------------------------------------------

def make_jsonl(path, rng: random.Random, n: int, newline: str = "\n") -> tuple[list, dict[int, str]]:
    """Write ``n`` lines (some blank, some bad); return the good records and ``{line: reason start}``."""
    good, bad, lines = [], {}, []
    for i in range(1, n + 1):
        roll = rng.random()
        if roll < 0.05:
            lines.append("")
        elif roll < 0.1:
            lines.append('{"a": 1,')
            bad[i] = "malformed JSON"
        elif roll < 0.13:
            lines.append("[1, 2]")
            bad[i] = "expected a JSON object, got a JSON array"
        else:
            rec = {"i": i, "s": rng.choice(["x", "é", "a\"b", "ü,\\n"]), "l": [rng.random()], "n": None}
            good.append(rec)
            lines.append(json.dumps(rec, ensure_ascii=rng.random() < 0.5))
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(newline.join(lines) + newline)
    return good, bad


@pytest.mark.parametrize("p", [1, 2, 3, 7])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_json_lines_every_record_once_and_bad_lines_by_file_and_line(tmp_path, p, newline, block_sizes):  # noqa: F811
    path = tmp_path / "in.jsonl"
    good, bad_lines = make_jsonl(path, random.Random(p), 300, newline)
    bad: list = []
    got = read_all(JsonLinesSource(str(path)), p, bad)
    assert sorted(map(key, got)) == sorted(map(key, good))
    assert {n for _, n, _ in bad} == set(bad_lines)
    for path_, n, reason in bad:
        assert path_ == str(path) and reason.startswith(bad_lines[n])


def test_json_lines_fail_on_bad_records_names_file_and_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": oops}\n')
    with pytest.raises(BadRecordError, match=r"in\.jsonl:4: malformed JSON") as e:
        read_all(JsonLinesSource(str(path), fail_on_bad_records=True), 1)
    assert e.value.line == 4 and e.value.__cause__ is None
    with pytest.raises(BadRecordError, match=r":4: "):
        read_all(JsonLinesSource(str(path)), 2, config={"emrflow.bad-records.fail": True})
    path.write_bytes(b'{"a": 1}\n{"a": "\xff"}\n')
    bad: list = []
    assert read_all(JsonLinesSource(str(path)), 1, bad) == [{"a": 1}]
    assert bad == [(str(path), 2, "could not decode line as utf-8: invalid start byte")]


def test_json_lines_position_restores_after_the_last_batch(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "BLOCK_BYTES", 64)
    d = tmp_path / "in"
    d.mkdir()
    recs = [{"i": i} for i in range(500)]
    for f in range(3):
        (d / f"f{f}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[f::3]))
    source = JsonLinesSource(str(d))
    for p in (1, 2):
        got = []
        for i in range(p):
            reader = subtask_reader(source, ctx(i, p))
            it = polled_batches(reader)
            for _ in range(5):
                got += next(it)
            position = reader.snapshot_state(0)
            reader.close()
            again = subtask_reader(source, ctx(i, p), cloudpickle.loads(cloudpickle.dumps(position)))
            for batch in polled_batches(again):
                got += batch
            again.close()
        assert sorted(r["i"] for r in got) == list(range(500))


# -- JSON lines sink ---------------------------------------------------------------------------

def commit_run(sink, batches_per_subtask, job_id="j" * 32):
    """Every subtask prepared, the commit record written, every subtask committed, the record finished."""
    writers = [sink.create_writer(ctx(i, len(batches_per_subtask), job_id=job_id))
               for i in range(len(batches_per_subtask))]
    for w, batches in zip(writers, batches_per_subtask):
        for b in batches:
            w.write_batch(b)
    records = files.write_commit_records(FileSystem(), job_id, [w.prepare_commit() for w in writers])
    for w in writers:
        w.commit()
    for r in records:
        files.finish_commit(FileSystem(), r)
    return writers


def tree(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, _, ns in os.walk(root) for n in ns)


def test_json_lines_sink_round_trip(tmp_path):
    out = tmp_path / "out"
    recs = [{"k": i, "v": "é" * (i % 3), "t": (i, None)} for i in range(50)]
    commit_run(JsonLinesFileSink(str(out)), [[recs[:20], recs[20:30]], [recs[30:]]])
    assert tree(out) == ["part-0-0.jsonl", "part-1-0.jsonl"]
    assert "é" in (out / "part-0-0.jsonl").read_text(encoding="utf-8")  # ensure_ascii=False
    back = read_all(JsonLinesSource(str(out)), 2)
    assert sorted(map(key, back)) == sorted(key({**r, "t": list(r["t"])}) for r in recs)
    with pytest.raises(TypeError, match="not JSON serializable"):
        JsonLinesFileSink(str(tmp_path / "o2")).create_writer(ctx(0, 1)).write_batch([{"x": object()}])


# -- Parquet source ---------------------------------------------------------------------------

def write_parquet_dir(d, n_files=3, rows=1000, group=97):
    d.mkdir()
    all_rows = []
    for f in range(n_files):
        rows_f = [{"id": f * rows + j, "name": f"n{j % 7}", "x": None if j % 11 == 0 else j / 4}
                  for j in range(rows - f * 100)]
        pq.write_table(pa.Table.from_pylist(rows_f), d / f"f{f}.parquet", row_group_size=group)
        all_rows += rows_f
    return all_rows


@pytest.mark.parametrize("p", [1, 2, 5])
def test_parquet_source_every_row_once_dicts_and_tuples(tmp_path, p):
    rows = write_parquet_dir(tmp_path / "in")
    got = read_all(ParquetSource(str(tmp_path / "in"), batch_rows=40), p)
    assert sorted(map(key, got)) == sorted(map(key, rows))
    got = read_all(ParquetSource(str(tmp_path / "in"), columns=["x", "id"], record_type="tuple"), p)
    assert sorted(got, key=lambda t: t[1]) == [(r["x"], r["id"]) for r in rows]


def test_parquet_source_row_groups_are_dealt_round_robin(tmp_path):
    write_parquet_dir(tmp_path / "in", n_files=2, rows=300, group=100)  # 3 + 2 row groups
    per = [len(read_all(ParquetSource(str(tmp_path / "in")), 1))]
    for i in range(2):
        reader = subtask_reader(ParquetSource(str(tmp_path / "in")), ctx(i, 2))
        per.append(sum(map(len, polled_batches(reader))))
        reader.close()
    assert per == [500, 300, 200]  # groups 0, 2, 4 (100 + 100 + 100) and 1, 3 (100 + 100)


def test_parquet_source_position_restores_mid_row_group(tmp_path):
    rows = write_parquet_dir(tmp_path / "in", group=250)
    source = ParquetSource(str(tmp_path / "in"), batch_rows=33)
    for p in (1, 3):
        got = []
        for i in range(p):
            reader = subtask_reader(source, ctx(i, p))
            it = polled_batches(reader)
            for _ in range(11):  # 11 * 33 rows: into the second row group
                got += next(it, [])
            position = reader.snapshot_state(0)
            reader.close()
            again = subtask_reader(source, ctx(i, p), position)
            for batch in polled_batches(again):
                got += batch
            again.close()
        assert sorted(r["id"] for r in got) == sorted(r["id"] for r in rows)


def test_parquet_source_errors_name_the_file(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.parquet").write_text("not parquet")
    with pytest.raises(BadRecordError, match=r"a\.parquet:0: not a readable Parquet file"):
        read_all(ParquetSource(str(tmp_path / "in")), 1)
    write_parquet_dir(tmp_path / "ok", n_files=1)
    with pytest.raises(BadRecordError, match=r"no column\(s\) \['nope'\]"):
        read_all(ParquetSource(str(tmp_path / "ok"), columns=["nope"]), 1)
    for bad in (dict(record_type="list"), dict(columns="id"), dict(columns=[]), dict(batch_rows=0)):
        with pytest.raises(ValueError):
            ParquetSource("x", **bad)


# -- Parquet sink -------------------------------------------------------------------------------

def read_parquet_rows(out) -> list:
    return [r for name in tree(out) if name.endswith(".parquet")
            for r in pq.read_table(os.path.join(out, name)).to_pylist()]


def test_parquet_sink_inferred_and_given_schema(tmp_path):
    out = tmp_path / "dicts"
    recs = [{"id": i, "s": f"v{i}", "f": i / 3} for i in range(300)]
    commit_run(ParquetFileSink(str(out), row_group_rows=64), [[recs[:150], recs[150:200]], [recs[200:]], []])
    assert tree(out) == ["part-0-0.parquet", "part-1-0.parquet"]  # no schema, no records: no file
    assert pq.ParquetFile(out / "part-0-0.parquet").metadata.num_row_groups == 4  # 200 rows / 64
    assert sorted(read_parquet_rows(out), key=lambda r: r["id"]) == recs

    out = tmp_path / "tuples"
    schema = pa.schema([("a", pa.int32()), ("b", pa.string())])
    commit_run(ParquetFileSink(str(out), schema=schema), [[[(1, "x"), (2, None)]], []])
    assert tree(out) == ["part-0-0.parquet", "part-1-0.parquet"]  # the empty one has the schema
    assert pq.read_schema(out / "part-1-0.parquet").names == ["a", "b"]
    assert read_parquet_rows(out) == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]

    out = tmp_path / "named"
    commit_run(ParquetFileSink(str(out), names=["k", "n"]), [[[("a", 1), ["b", 2]]]])
    assert read_parquet_rows(out) == [{"k": "a", "n": 1}, {"k": "b", "n": 2}]


def test_parquet_sink_refuses_records_that_do_not_fit(tmp_path):
    w = ParquetFileSink(str(tmp_path / "a"), row_group_rows=2).create_writer(ctx(0, 1))
    w.write_batch([{"a": 1}])
    with pytest.raises(ValueError, match=r"fields \['b'\] of record .* are not in the schema's columns \['a'\]"):
        w.write_batch([{"a": 2, "b": 3}])
    w = ParquetFileSink(str(tmp_path / "b"), row_group_rows=1).create_writer(ctx(0, 1))
    with pytest.raises(TypeError, match="writes dicts or tuples, got int"):
        w.write_batch([1])
    w = ParquetFileSink(str(tmp_path / "c"), row_group_rows=1).create_writer(ctx(0, 1))
    w.write_batch([{"a": 1}])
    with pytest.raises(ValueError, match="do not fit the Parquet schema"):
        w.write_batch([{"a": "text"}])
    with pytest.raises(TypeError, match="pyarrow.Schema"):
        ParquetFileSink("x", schema={"a": "int"})
    with pytest.raises(ValueError, match="disagree"):
        ParquetFileSink("x", schema=pa.schema([("a", pa.int8())]), names=["b"])


def test_parquet_sink_rolls_at_every_checkpoint_and_restores(tmp_path):
    out = tmp_path / "out"
    sink = ParquetFileSink(str(out))
    w = sink.create_writer(ctx(0, 1, checkpointing=True, job_id="a" * 32))
    w.write_batch([{"i": 1}, {"i": 2}])
    s1 = w.snapshot_state(1)
    w.write_batch([{"i": 3}])
    s2 = w.snapshot_state(2)
    assert [n for n in tree(out) if not n.startswith(".")] == []
    w.notify_checkpoint_complete(1)
    assert tree(out) == [".part-0-1.parquet.inprogress." + w._token, "part-0-0.parquet"]
    w.write_batch([{"i": 4}])  # after checkpoint 2, then the process dies: in progress, never committed
    # a new attempt restores checkpoint 2: publishes its pending file, drops the dead writer's files
    w2 = sink.create_writer(ctx(0, 1, checkpointing=True, job_id="a" * 32))
    w2.restore_state([cloudpickle.loads(cloudpickle.dumps(s2))])
    assert tree(out) == ["part-0-0.parquet", "part-0-1.parquet"]
    w2.write_batch([{"i": 4}])
    w2.snapshot_state(3)
    w2.notify_checkpoint_complete(3)
    assert tree(out) == ["part-0-0.parquet", "part-0-1.parquet", "part-0-2.parquet"]
    assert [r["i"] for r in read_parquet_rows(out)] == [1, 2, 3, 4]
    assert s1["counter"] == 1


# -- buckets -----------------------------------------------------------------------------------

def test_date_time_bucket_assigner():
    a = DateTimeBucketAssigner(timestamp=lambda r: r)
    assert a(1706684400000) == "dt=2024-01-31/hour=07"
    assert a(1706684400000 - 1) == "dt=2024-01-31/hour=06"
    assert a(0.0) == "dt=1970-01-01/hour=00"
    assert a(dt.datetime(2024, 1, 31, 23, 59)) == "dt=2024-01-31/hour=23"  # naive: UTC
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    assert a(dt.datetime(2024, 1, 31, 23, 59, tzinfo=paris)) == "dt=2024-01-31/hour=22"
    b = DateTimeBucketAssigner("%Y/%m/%d/%H", timestamp=lambda r: r, timezone=paris)
    assert b(1706684400000) == "2024/01/31/08"
    b2 = cloudpickle.loads(cloudpickle.dumps(b))
    assert b2(1706684400000) == "2024/01/31/08"
    with pytest.raises(TypeError, match="expected epoch milliseconds"):
        a("2024-01-31")
    with pytest.raises(ValueError, match="relative path"):
        DateTimeBucketAssigner("/%Y")
    now = DateTimeBucketAssigner("%Y")  # processing time
    assert now(None) == str(dt.datetime.now(dt.timezone.utc).year)


@pytest.mark.parametrize("bucket", ["", "/abs", "a//b", "a/../b", ".hidden", "x/_tmp", "a\\b", None, 3])
def test_bad_buckets_are_refused_with_the_record(bucket):
    with pytest.raises(ValueError, match=r"for record 'rec': expected a relative path"):
        check_bucket(bucket, "rec")


def hour_of(r):
    return r[1] // 3_600_000


def bucket_reference(recs):
    out: dict = {}
    for r in recs:
        b = dt.datetime.fromtimestamp(r[1] / 1000, dt.timezone.utc).strftime("dt=%Y-%m-%d/hour=%H")
        out.setdefault(b, []).append(f"{r[0]},{r[1]}")
    return {b: sorted(v) for b, v in out.items()}


def csv_buckets(out) -> dict:
    got: dict = {}
    for name in tree(out):
        b, _, base = name.rpartition("/")
        if base.startswith("part-"):
            got.setdefault(b, []).extend((out / name).read_text().splitlines())
    return {b: sorted(v) for b, v in got.items()}


def test_bucketed_sink_end_of_job_commit_and_overwrite_of_the_buckets_written(tmp_path):
    out = tmp_path / "out"
    t0 = 1706684400000
    recs = [(i, t0 + i * 1_000_000) for i in range(40)]  # ~11 hours, 2 days
    assign = DateTimeBucketAssigner(timestamp=lambda r: r[1])
    sink = CsvFileSink(str(out), bucket_assigner=assign)
    commit_run(sink, [[recs[0::2]], [recs[1::2]], []])
    assert csv_buckets(out) == bucket_reference(recs)
    assert all(n.rsplit("/", 1)[-1] in ("part-0-%d.csv" % k for k in range(20)) or "/part-1-" in n
               for n in tree(out))
    assert not [n for n in tree(out) if "inprogress" in n or "_emrflow-commit" in n]
    # OVERWRITE replaces the buckets the new job writes, keeps the others (dynamic partition overwrite)
    new = [(100 + i, t0 + i * 1_000_000) for i in range(3)]  # hours 07, 07, 07-08
    commit_run(CsvFileSink(str(out), bucket_assigner=assign, write_mode=WriteMode.OVERWRITE), [[new], []],
               job_id="k" * 32)
    want = bucket_reference(recs)
    want.update(bucket_reference(new))
    assert csv_buckets(out) == want


def test_a_bucketed_commit_interrupted_after_its_record_is_rolled_forward(tmp_path):
    out = tmp_path / "out"
    recs = [("a", 1), ("b", 2), ("c", 3)]
    sink = TextFileSink(str(out), bucket_assigner=lambda r: f"k={r[0]}/v={r[1] % 2}")
    writers = [sink.create_writer(ctx(i, 2, job_id="m" * 32)) for i in range(2)]
    writers[0].write_batch(recs[:2])
    writers[1].write_batch(recs[2:])
    (record,) = files.write_commit_records(FileSystem(), "m" * 32, [w.prepare_commit() for w in writers])
    with open(record) as f:
        assert json.load(f)["buckets"] == {"k=a/v=1": ["part-0-0"], "k=b/v=0": ["part-0-1"],
                                                "k=c/v=1": ["part-1-0"]}
    writers[0].commit()  # killed before subtask 1 committed
    assert files.list_input_files(str(out / "k=c" / "v=1"), FileSystem()) == []  # not published yet
    files.finish_interrupted_commits(str(out), FileSystem())  # the next job touching the output
    assert tree(out) == ["k=a/v=1/part-0-0", "k=b/v=0/part-0-1", "k=c/v=1/part-1-0"]
    assert (out / "k=c/v=1/part-1-0").read_text() == "('c', 3)\n"


def test_bucketed_sink_with_checkpoints_restores_and_cleans_every_bucket(tmp_path):
    out = tmp_path / "out"
    sink = JsonLinesFileSink(str(out), bucket_assigner=lambda r: f"b={r['b']}")
    w = sink.create_writer(ctx(0, 1, checkpointing=True, job_id="c" * 32))
    w.write_batch([{"b": 1, "i": 0}, {"b": 2, "i": 1}])
    state = w.snapshot_state(1)
    w.write_batch([{"b": 3, "i": 2}, {"b": 1, "i": 3}])  # lost with the process: in progress only
    w2 = sink.create_writer(ctx(0, 1, checkpointing=True, job_id="c" * 32))
    w2.restore_state([state])
    assert tree(out) == ["b=1/part-0-0.jsonl", "b=2/part-0-1.jsonl"]  # b=3's in-progress file is gone
    w2.write_batch([{"b": 3, "i": 2}, {"b": 1, "i": 3}])
    w2.prepare_commit()
    w2.commit()
    got = {n: [json.loads(x)["i"] for x in (out / n).read_text().splitlines()] for n in tree(out)}
    assert got == {"b=1/part-0-0.jsonl": [0], "b=2/part-0-1.jsonl": [1], "b=3/part-0-2.jsonl": [2],
                   "b=1/part-0-3.jsonl": [3]}


def test_bucket_assigner_must_be_callable_and_sinks_pickle(tmp_path):
    with pytest.raises(TypeError, match="bucket_assigner must be a callable"):
        TextFileSink(str(tmp_path), bucket_assigner="dt=%Y")
    for sink in (JsonLinesFileSink(str(tmp_path), bucket_assigner=DateTimeBucketAssigner(timestamp=hour_of)),
                 ParquetFileSink(str(tmp_path), schema=pa.schema([("a", pa.int64())])),
                 JsonLinesSource(str(tmp_path)), ParquetSource(str(tmp_path))):
        assert type(cloudpickle.loads(cloudpickle.dumps(sink))) is type(sink)
