"""File sources and sinks, driven directly through their readers and writers (no processes)."""

from __future__ import annotations

import csv
import os
import random

import pytest

from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.files import CsvFileSink, CsvSource, TextFileSink, TextFileSource, WriteMode
from emrflow.errors import BadRecordError, InputNotFoundError, OutputExistsError


def read_all(source, parallelism: int, bad: list | None = None) -> list:
    out = []
    for i in range(parallelism):
        ctx = SubtaskContext("src", i, parallelism,
                             report_bad_record=lambda p, n, r: bad.append((p, n, r)) if bad is not None else None)
        reader = source.create_reader(ctx)
        try:
            for batch in reader.read_batches():
                out.extend(batch)
        finally:
            reader.close()
    return out


@pytest.mark.parametrize("seed", range(25))
def test_every_line_exactly_once_at_any_parallelism(tmp_path, seed):
    rng = random.Random(seed)
    lengths = [0, 1, 2, 7, 80, 3000, 9000]  # lines longer than the read block, empty lines
    lines = ["".join(rng.choice("abcé ") for _ in range(rng.choice(lengths)))
             for _ in range(rng.randint(0, 120))]
    newline = rng.choice(["\n", "\r\n"])
    text = newline.join(lines) + (newline if rng.random() < 0.5 else "")
    path = tmp_path / "in.txt"
    path.write_bytes(text.encode("utf-8"))
    expected = text.splitlines()
    for parallelism in range(1, 8):
        assert read_all(TextFileSource(str(path)), parallelism) == expected


def test_directory_input_skips_hidden_files(tmp_path):
    (tmp_path / "b.txt").write_text("b1\nb2\n")
    (tmp_path / "a.txt").write_text("a1\n")
    (tmp_path / ".hidden").write_text("no\n")
    (tmp_path / "_SUCCESS").write_text("")
    for p in (1, 3):
        assert sorted(read_all(TextFileSource(str(tmp_path)), p)) == ["a1", "b1", "b2"]


def test_missing_input_is_named(tmp_path):
    with pytest.raises(InputNotFoundError, match="input path does not exist: .*nope"):
        TextFileSource(str(tmp_path / "nope")).validate()


def write_csv(path, rows, header=None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        if header:
            w.writerow(header)
        w.writerows(rows)


@pytest.mark.parametrize("parallelism", [1, 2, 5])
def test_csv_types_and_header(tmp_path, parallelism):
    rows = [(i, f"name {i}", i / 4) for i in range(500)]
    path = tmp_path / "t.csv"
    write_csv(path, rows, header=["id", "name", "score"])
    src = CsvSource(str(path), header=True, names=["id", "name", "score"], types=[int, str, float])
    assert sorted(read_all(src, parallelism)) == rows


def test_csv_other_delimiter_and_untyped(tmp_path):
    path = tmp_path / "seed.txt"
    path.write_text("1^2^4.5^100\n3^4^1^200\n")
    assert read_all(CsvSource(str(path), delimiter="^"), 1) == [("1", "2", "4.5", "100"), ("3", "4", "1", "200")]


@pytest.mark.parametrize("parallelism", [1, 3])
def test_bad_rows_are_reported_with_absolute_line_numbers(tmp_path, parallelism):
    rng = random.Random(parallelism)
    lines = ["id,value"]
    expected_bad = {}
    good = []
    for i in range(2, 3000):
        roll = rng.random()
        if roll < 0.02:
            lines.append(f"{i},x{i}")
            expected_bad[i] = "could not convert"
        elif roll < 0.04:
            lines.append(f"{i},{i},{i}")
            expected_bad[i] = "expected 2 fields, got 3"
        else:
            lines.append(f"{i},{i * 2}")
            good.append((i, i * 2))
    path = tmp_path / "b.csv"
    path.write_text("\n".join(lines) + "\n")
    bad: list = []
    got = read_all(CsvSource(str(path), header=True, names=["id", "value"], types=[int, int]),
                   parallelism, bad)
    assert sorted(got) == good
    assert {n for _, n, _ in bad} == set(expected_bad)
    for p, n, reason in bad:
        assert p == str(path) and expected_bad[n] in reason
    assert any("field 2 'value': could not convert 'x" in r for _, _, r in bad)


def test_fail_on_bad_records(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("1,2\n3,oops\n")
    with pytest.raises(BadRecordError) as info:
        read_all(CsvSource(str(path), types=[int, int], fail_on_bad_records=True), 1)
    assert info.value.line == 2 and info.value.path == str(path)
    ctx_config = {"emrflow.bad-records.fail": True}
    reader = CsvSource(str(path), types=[int, int]).create_reader(
        SubtaskContext("s", 0, 1, config=ctx_config))
    with pytest.raises(BadRecordError):
        list(reader.read_batches())


def test_names_and_types_must_agree():
    with pytest.raises(ValueError, match="names has 2 fields but types has 1"):
        CsvSource("x", names=["a", "b"], types=[int])


def sink_round(sink, parallelism, batches_per_subtask):
    writers = [sink.create_writer(SubtaskContext("sink", i, parallelism)) for i in range(parallelism)]
    for w, batch in zip(writers, batches_per_subtask):
        w.write_batch(batch)
    for w in writers:
        w.prepare_commit()
    return writers


def test_sink_files_appear_only_on_commit(tmp_path):
    out = tmp_path / "out"
    sink = CsvFileSink(str(out), header=["k", "v"])
    sink.validate()
    writers = sink_round(sink, 2, [[("a", 1), ("b", 2)], [("c", 3)]])
    assert not [n for n in os.listdir(out) if n.startswith("part-")]
    for w in writers:
        w.commit()
    assert sorted(os.listdir(out)) == ["part-0-0.csv", "part-1-0.csv"]
    assert (out / "part-0-0.csv").read_text() == "k,v\na,1\nb,2\n"
    assert (out / "part-1-0.csv").read_text() == "k,v\nc,3\n"


def test_abort_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    writers = sink_round(TextFileSink(str(out)), 2, [["x"], ["y"]])
    for w in writers:
        w.abort()
    assert os.listdir(out) == []


def test_no_overwrite_refuses_existing_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-0-0").write_text("old")
    with pytest.raises(OutputExistsError, match="output path already exists"):
        TextFileSink(str(out)).validate()


def test_overwrite_replaces_and_removes_stale_parts(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for i in range(4):
        (out / f"part-{i}-0").write_text("old")
    sink = TextFileSink(str(out), write_mode=WriteMode.OVERWRITE)
    sink.validate()
    for w in sink_round(sink, 2, [[1, 2], [3]]):
        w.commit()
    assert sorted(os.listdir(out)) == ["part-0-0", "part-1-0"]
    assert (out / "part-0-0").read_text() == "1\n2\n"
