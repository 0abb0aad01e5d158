"""File sources and sinks, driven directly through their readers and writers (no processes)."""

from __future__ import annotations

import csv
import os
import random

import cloudpickle
import pytest

from emrflow.config import Configuration
from emrflow.connectors import files
from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.files import CsvFileSink, CsvSource, TextFileSink, TextFileSource, WriteMode, parse_bool
from emrflow.errors import BadRecordError, InputNotFoundError, OutputCorruptError, OutputExistsError
from emrflow.fs import FileSystem
from tests.unit.test_split_runtime import RecordingContext, polled_batches, subtask_reader


def read_all(source, parallelism: int, bad: list | None = None, config: dict | None = None) -> list:
    """Read every subtask's share in turn and concatenate (subtask order, then file, then line)."""
    out = []
    for i in range(parallelism):
        ctx = SubtaskContext("src", i, parallelism, config=Configuration(config or {}),
                             report_bad_record=lambda p, n, r: bad.append((p, n, r)) if bad is not None else None)
        reader = subtask_reader(source, ctx)
        try:
            for batch in polled_batches(reader):
                assert isinstance(batch, list) and batch
                out.extend(batch)
        finally:
            reader.close()
    return out


def reference_lines(path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


@pytest.fixture(params=["default", "tiny-blocks"])
def block_sizes(request, monkeypatch):
    """Also run with tiny blocks and reads, so that every refill and cut path is taken."""
    if request.param == "tiny-blocks":
        monkeypatch.setattr(files, "BLOCK_BYTES", 3)
        monkeypatch.setattr(files, "_READ_BYTES", 5)
    return request.param


def random_text(rng: random.Random) -> str:
    lengths = [0, 0, 1, 2, 7, 80, 3000, 9000]  # empty lines, lines longer than a block
    lines = ["".join(rng.choice("abcé ,") for _ in range(rng.choice(lengths)))
             for _ in range(rng.randint(0, 60))]
    newline = rng.choice(["\n", "\r\n"])
    return newline.join(lines) + (newline if rng.random() < 0.5 else "")


@pytest.mark.parametrize("seed", range(20))
def test_every_line_exactly_once_at_any_parallelism(tmp_path, seed, block_sizes):
    text = random_text(random.Random(seed))
    path = tmp_path / "in.txt"
    path.write_bytes(text.encode("utf-8"))
    expected = reference_lines(path)
    for parallelism in range(1, 8):
        assert read_all(TextFileSource(str(path)), parallelism) == expected, parallelism


@pytest.mark.parametrize("text", ["", "\n", "\n\n\n", "x", "x\n", "abc\r\n", "a\nb", "\r\n\r\nz",
                                  "one line longer than a range" * 3, "é" * 10 + "\n" + "ü"])
def test_edge_files(tmp_path, text, block_sizes):
    path = tmp_path / "e.txt"
    path.write_bytes(text.encode("utf-8"))
    for parallelism in range(1, 8):  # 7 subtasks on files of 0 to 84 bytes: ranges smaller than a line
        assert read_all(TextFileSource(str(path)), parallelism) == reference_lines(path)


def test_directory_reads_visible_files_sorted(tmp_path, block_sizes):
    rng = random.Random(7)
    expected = []
    for name in ["c.txt", "a.txt", "b", "empty.txt"]:
        text = random_text(rng) if name != "empty.txt" else ""
        (tmp_path / name).write_bytes(text.encode("utf-8"))
    for name in sorted(["c.txt", "a.txt", "b", "empty.txt"]):
        expected.extend(reference_lines(tmp_path / name))
    (tmp_path / ".hidden").write_text("no\n")
    (tmp_path / "_SUCCESS").write_text("no\n")
    (tmp_path / ".part-0-0.inprogress").write_text("no\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.txt").write_text("no\n")
    assert read_all(TextFileSource(str(tmp_path)), 1) == expected
    for parallelism in range(2, 8):
        got = read_all(TextFileSource(str(tmp_path)), parallelism)
        assert sorted(got) == sorted(expected)


def test_missing_input(tmp_path):
    missing = str(tmp_path / "nope")
    for src in (TextFileSource(missing), CsvSource(missing)):
        with pytest.raises(InputNotFoundError, match="input path does not exist: .*nope") as info:
            src.validate()
        assert info.value.path == missing
        with pytest.raises(InputNotFoundError):  # the enumerator lists the input in the JobManager
            src.create_enumerator(RecordingContext(1, readers={0})).start()
    assert TextFileSource.default_name == "Text File Source" and CsvSource.default_name == "CSV Source"
    assert TextFileSource.max_parallelism is None and CsvSource.max_parallelism is None


def test_reader_close_releases_the_file_mid_read(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "BLOCK_BYTES", 8)
    path = tmp_path / "t.txt"
    path.write_text("".join(f"line {i}\n" for i in range(1000)))

    def open_fds() -> list[str]:
        out = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                    out.append(fd)
            except OSError:  # the listing's own descriptor, closed meanwhile
                pass
        return out
    reader = subtask_reader(TextFileSource(str(path)), SubtaskContext("s", 0, 1))
    first = next(polled_batches(reader))
    assert first[0] == "line 0"
    assert open_fds()
    reader.close()
    assert not open_fds()


def test_undecodable_line_fails_with_its_line_number(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok\nfine\n\xff\xfe broken\nafter\n")
    for parallelism in (1, 2):
        with pytest.raises(BadRecordError) as info:
            read_all(TextFileSource(str(path)), parallelism)
        assert (info.value.path, info.value.line) == (str(path), 3)
    assert read_all(TextFileSource(str(path), encoding="latin-1"), 1)[2] == "\xff\xfe broken"


def test_non_ascii_compatible_encoding_is_refused():
    with pytest.raises(ValueError, match="not ASCII-compatible"):
        TextFileSource("x", encoding="utf-16")
    with pytest.raises(LookupError):
        CsvSource("x", encoding="no-such-codec")


# -- CSV ---------------------------------------------------------------------------------------

def write_csv(path, rows, header=None, newline="\n"):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator=newline)
        if header:
            w.writerow(header)
        w.writerows(rows)


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_csv_types_and_header_at_any_parallelism(tmp_path, newline, block_sizes):
    rows = [(i, f"name {i}", i / 4, i % 3 == 0) for i in range(300)]
    path = tmp_path / "t.csv"
    write_csv(path, rows, header=["id", "name", "score", "flag"], newline=newline)
    src = CsvSource(str(path), header=True, names=["id", "name", "score", "flag"],
                    types=[int, str, float, bool])
    for parallelism in range(1, 8):
        got = read_all(src, parallelism)
        assert got == rows, parallelism  # subtask order is file order
        assert all(type(v) is t for v, t in zip(got[0], (int, str, float, bool)))


def test_csv_header_only_and_header_without_newline(tmp_path):
    for text in ("a,b", "a,b\n", "a,b\r\n", "a,b\n1,2"):
        path = tmp_path / "h.csv"
        path.write_text(text)
        for parallelism in range(1, 5):
            expected = [(1, 2)] if "1,2" in text else []
            assert read_all(CsvSource(str(path), header=True, types=[int, int]), parallelism) == expected


def test_csv_header_of_every_file_in_a_directory(tmp_path):
    for name, rows in (("a.csv", [(1, "x")]), ("b.csv", [(2, "y"), (3, "z")])):
        write_csv(tmp_path / name, rows, header=["n", "s"])
    for parallelism in (1, 2, 3):
        got = read_all(CsvSource(str(tmp_path), header=True, types=[int, str]), parallelism)
        assert sorted(got) == [(1, "x"), (2, "y"), (3, "z")]


def test_csv_other_delimiter_untyped_and_quoted(tmp_path, block_sizes):
    path = tmp_path / "seed.txt"
    path.write_text("1^2^4.5^100\n\n3^4^1^200\n5\n")
    assert read_all(CsvSource(str(path), delimiter="^"), 1) == [
        ("1", "2", "4.5", "100"), ("3", "4", "1", "200"), ("5",)]
    path = tmp_path / "q.csv"
    rows = [("a,b", 'say "hi"', ""), ("plain", "x", "y")] * 50
    write_csv(path, rows)
    for parallelism in (1, 3):
        assert read_all(CsvSource(str(path), names=["a", "b", "c"]), parallelism) == rows
        assert read_all(CsvSource(str(path)), parallelism) == rows
    path.write_text("'a,b',c\n")
    assert read_all(CsvSource(str(path), quote_char="'"), 1) == [("a,b", "c")]
    assert read_all(CsvSource(str(path), quote_char=None), 1) == [("'a", "b'", "c")]


def test_csv_custom_converter_and_bool():
    assert parse_bool(" TRUE ") is True and parse_bool("0") is False
    with pytest.raises(ValueError):
        parse_bool("yes please")


def test_csv_constructor_checks():
    with pytest.raises(ValueError, match="names has 2 fields but types has 1"):
        CsvSource("x", names=["a", "b"], types=[int])
    with pytest.raises(ValueError, match="delimiter"):
        CsvSource("x", delimiter=";;")
    with pytest.raises(ValueError, match="callable"):
        CsvSource("x", types=[int, "float"])


def make_bad_file(path, rng: random.Random, newline: str = "\n") -> tuple[dict[int, str], list]:
    """Write a CSV with a header, good rows, empty lines and bad rows; return {line: reason part}, good rows."""
    lines = ["id,value,rating"]
    for i in range(2, 2500):
        roll = rng.random()
        if roll < 0.02:
            lines.append(f"{i},{i},x{i}")
        elif roll < 0.04:
            lines.append(f"{i},{i}")
        elif roll < 0.05:
            lines.append("")
        elif roll < 0.06:
            lines.append(f"{i},{i},{i},{i}")
        else:
            lines.append(f"{i},{i * 2},{i % 5}.5")
    with open(path, "w", newline="") as f:
        f.write(newline.join(lines) + newline)
    expected_bad: dict[int, str] = {}
    good = []
    with open(path, newline="") as f:  # the reference: a plain enumerate over the file
        for number, line in enumerate(f, start=1):
            fields = line.rstrip("\r\n").split(",")
            if number == 1 or fields == [""]:
                continue
            if len(fields) != 3:
                expected_bad[number] = f"expected 3 fields, got {len(fields)}"
            elif fields[2].startswith("x"):
                expected_bad[number] = f"field 3 'rating': could not convert '{fields[2]}' to float"
            else:
                good.append((int(fields[0]), int(fields[1]), float(fields[2])))
    return expected_bad, good


@pytest.mark.parametrize("parallelism", [1, 3])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_bad_rows_are_reported_with_absolute_line_numbers(tmp_path, parallelism, newline, block_sizes):
    path = tmp_path / "b.csv"
    expected_bad, good = make_bad_file(path, random.Random(parallelism), newline)
    bad: list = []
    src = CsvSource(str(path), header=True, names=["id", "value", "rating"], types=[int, int, float])
    got = read_all(src, parallelism, bad)
    assert got == good
    assert {n: r for _, n, r in bad} == expected_bad
    assert {p for p, _, _ in bad} == {str(path)}


def test_undecodable_csv_line_is_a_bad_record(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes(b"1,2\n\xff,3\n4,5\n")
    bad: list = []
    assert read_all(CsvSource(str(path), types=[str, int]), 1, bad) == [("1", 2), ("4", 5)]
    assert bad[0][1] == 2 and "could not decode" in bad[0][2]


def test_fail_on_bad_records(tmp_path):
    path = tmp_path / "b.csv"
    path.write_text("1,2\n\n3,oops\n")
    with pytest.raises(BadRecordError) as info:
        read_all(CsvSource(str(path), types=[int, int], fail_on_bad_records=True), 1)
    assert (info.value.path, info.value.line) == (str(path), 3)
    assert "field 2: could not convert 'oops' to int" in str(info.value)
    with pytest.raises(BadRecordError, match=r":3: field 2"):
        read_all(CsvSource(str(path), types=[int, int]), 1, config={"emrflow.bad-records.fail": True})
    bad: list = []
    assert read_all(CsvSource(str(path), types=[int, int], fail_on_bad_records=False), 1, bad,
                    config={"emrflow.bad-records.fail": True}) == [(1, 2)]
    assert len(bad) == 1


def test_sources_pickle(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("1,a\n")
    src = cloudpickle.loads(cloudpickle.dumps(CsvSource(str(path), types=[lambda s: int(s) * 10, str])))
    assert read_all(src, 1) == [(10, "a")]


# -- sinks -------------------------------------------------------------------------------------

def sink_round(sink, parallelism, batches_per_subtask):
    writers = [sink.create_writer(SubtaskContext("sink", i, parallelism)) for i in range(parallelism)]
    for w, batches in zip(writers, batches_per_subtask):
        for batch in batches:
            w.write_batch(batch)
    for w in writers:
        w.prepare_commit()
    return writers


def visible(path) -> list[str]:
    return sorted(n for n in os.listdir(path) if not n.startswith("."))


def test_sink_files_appear_only_on_commit_with_a_header_in_every_part(tmp_path):
    out = tmp_path / "out"
    sink = CsvFileSink(str(out), header=["k", "v"])
    sink.validate()
    writers = sink_round(sink, 3, [[[("a", 1), ("b,c", 2)], []], [[("c", 3)]], []])
    assert visible(out) == []
    for w in writers:
        w.commit()
    assert sorted(os.listdir(out)) == ["part-0-0.csv", "part-1-0.csv", "part-2-0.csv"]
    assert (out / "part-0-0.csv").read_text() == 'k,v\na,1\n"b,c",2\n'
    assert (out / "part-1-0.csv").read_text() == "k,v\nc,3\n"
    assert (out / "part-2-0.csv").read_text() == "k,v\n"
    writers[0].commit()  # a repeated commit is harmless
    assert CsvFileSink.default_name == "CSV File Sink" and TextFileSink.default_name == "Text File Sink"


def test_csv_sink_scalars_and_delimiter(tmp_path):
    out = tmp_path / "out"
    (w,) = sink_round(CsvFileSink(str(out), delimiter=";"), 1, [[["abc", 5, ("x", "y"), ["l", 1.5]]]])
    w.commit()
    assert (out / "part-0-0.csv").read_text() == "abc\n5\nx;y\nl;1.5\n"


def test_text_sink_contents(tmp_path):
    out = tmp_path / "out"
    (w,) = sink_round(TextFileSink(str(out)), 1, [[[1, "a"], [], [("t", 2)]]])
    w.commit()
    assert (out / "part-0-0").read_text() == "1\na\n('t', 2)\n"


def test_abort_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    writers = sink_round(TextFileSink(str(out)), 2, [[["x"]], [["y"]]])
    for w in writers:
        w.abort()
    assert os.listdir(out) == []
    sink = TextFileSink(str(out))
    w = sink.create_writer(SubtaskContext("sink", 0, 1))
    w.write_batch(["z"])
    w.abort()  # before prepare_commit: the open file is closed and removed
    assert os.listdir(out) == []


def test_no_overwrite_refuses_existing_output(tmp_path):
    out = tmp_path / "out"
    TextFileSink(str(out)).validate()  # missing: fine
    out.mkdir()
    TextFileSink(str(out)).validate()  # empty: fine
    (out / "part-0-0").write_text("old")
    with pytest.raises(OutputExistsError, match="output path already exists: .*use write mode OVERWRITE") as info:
        TextFileSink(str(out)).validate()
    assert info.value.path == str(out)
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    with pytest.raises(OutputExistsError, match="already exists"):
        CsvFileSink(str(a_file)).validate()


def test_overwrite_of_a_regular_file_fails_and_deletes_nothing(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    sink = TextFileSink(str(a_file), write_mode=WriteMode.OVERWRITE)
    with pytest.raises(OutputExistsError, match="is a file, not a directory"):
        sink.validate()
    with pytest.raises(OutputExistsError, match="is a file, not a directory"):
        sink.create_writer(SubtaskContext("sink", 0, 1))
    assert a_file.read_text() == "keep"


def test_overwrite_replaces_and_removes_stale_parts(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for i in range(4):
        (out / f"part-{i}-0").write_text("old")
        (out / f"part-{i}-0.csv").write_text("old")
    (out / "_SUCCESS").write_text("")
    (out / "notes.txt").write_text("user file")
    sink = TextFileSink(str(out), write_mode=WriteMode.OVERWRITE)
    sink.validate()
    writers = sink_round(sink, 2, [[[1, 2]], [[3]]])
    assert (out / "part-3-0").read_text() == "old"  # nothing changes before the commit
    for w in reversed(writers):
        w.commit()
    assert sorted(os.listdir(out)) == ["notes.txt", "part-0-0", "part-1-0"]
    assert (out / "part-0-0").read_text() == "1\n2\n"
    assert (out / "part-1-0").read_text() == "3\n"


def test_write_mode_must_be_a_write_mode(tmp_path):
    with pytest.raises(TypeError):
        TextFileSink(str(tmp_path), write_mode="OVERWRITE")


# -- the end-of-job commit record: all or nothing, finished by whoever comes next ---------------

def overwrite_run(out, parallelism: int, job_id: str, rows_per_subtask: list[list[str]]):
    """A job's file sink up to the commit point: every subtask prepared, the record written."""
    sink = TextFileSink(str(out), write_mode=WriteMode.OVERWRITE)
    writers = [sink.create_writer(SubtaskContext("sink", i, parallelism, job_id=job_id))
               for i in range(parallelism)]
    for w, rows in zip(writers, rows_per_subtask):
        w.write_batch(rows)
    committables = [w.prepare_commit() for w in writers]
    records = files.write_commit_records(FileSystem(), job_id, committables + [None, "other"])
    return writers, records


def part_lines(out) -> list[str]:
    return sorted(line for n in os.listdir(out) if n.startswith("part-")
                  for line in (out / n).read_text().splitlines())


@pytest.mark.parametrize("renamed", [0, 1, 2])
def test_a_commit_interrupted_after_its_record_is_finished_by_the_next_reader(tmp_path, renamed):
    """Killed after the record and ``renamed`` of the 2 renames: reading the directory rolls forward
    to exactly the new output; the previous run's wider output leaves no part behind."""
    out = tmp_path / "out"
    old, _ = overwrite_run(out, 3, "a" * 32, [["o0"], ["o1"], ["o2"]])
    for w in old:
        w.commit()
    files.finish_interrupted_commits(str(out), FileSystem())
    assert part_lines(out) == ["o0", "o1", "o2"]
    new, (record,) = overwrite_run(out, 2, "b" * 32, [["n0", "n00"], ["n1"]])
    assert os.path.basename(record) == "_emrflow-commit-" + "b" * 32 + ".json"
    for w in new[:renamed]:  # the kill came after `renamed` subtasks committed
        w.commit()
    if renamed == 1:  # subtask 0 renamed its file and removed the stale part-2-0; part-1-0 is old
        assert part_lines(out) == ["n0", "n00", "o1"]
    assert os.path.exists(record)
    assert files.list_input_files(str(out), FileSystem()) == [str(out / "part-0-0"), str(out / "part-1-0")]
    assert part_lines(out) == ["n0", "n00", "n1"]
    assert sorted(os.listdir(out)) == ["part-0-0", "part-1-0"]  # no record, no in-progress file left
    assert files.finish_interrupted_commits(str(out), FileSystem()) == []


def test_validate_and_the_next_writer_finish_an_interrupted_commit(tmp_path):
    out = tmp_path / "out"
    overwrite_run(out, 1, "c" * 32, [["x"]])
    TextFileSink(str(out), write_mode=WriteMode.OVERWRITE).validate()
    assert part_lines(out) == ["x"]
    overwrite_run(out, 1, "d" * 32, [["y"]])
    TextFileSink(str(out), write_mode=WriteMode.OVERWRITE).create_writer(SubtaskContext("sink", 0, 1))
    assert part_lines(out) == ["y"]
    # NO_OVERWRITE sees the finished output, so it refuses the directory
    overwrite_run(out, 1, "e" * 32, [["z"]])
    with pytest.raises(OutputExistsError):
        TextFileSink(str(out)).validate()
    assert part_lines(out) == ["z"]


def test_a_commit_record_whose_files_are_gone_is_an_error_that_keeps_the_record(tmp_path):
    out = tmp_path / "out"
    _, (record,) = overwrite_run(out, 1, "f" * 32, [["x"]])
    for n in os.listdir(out):
        if ".inprogress" in n:
            os.remove(out / n)
    with pytest.raises(OutputCorruptError, match=r"part-0-0 is missing and so is its in-progress file"):
        files.finish_interrupted_commits(str(out), FileSystem())
    assert os.path.exists(record)
    (out / os.path.basename(record)).write_text("{not json")
    with pytest.raises(OutputCorruptError, match="unreadable commit record"):
        files.list_input_files(str(out), FileSystem())


def test_without_a_record_nothing_of_the_output_changed(tmp_path):
    """Killed before the commit point: the previous output is whole and the next run replaces it."""
    out = tmp_path / "out"
    old, _ = overwrite_run(out, 1, "1" * 32, [["old"]])
    old[0].commit()
    files.finish_interrupted_commits(str(out), FileSystem())
    sink = TextFileSink(str(out), write_mode=WriteMode.OVERWRITE)
    w = sink.create_writer(SubtaskContext("sink", 0, 1, job_id="2" * 32))
    w.write_batch(["new"])
    w.prepare_commit()  # ... and killed here, before the JobManager wrote the record
    assert part_lines(out) == ["old"]
    assert files.list_input_files(str(out), FileSystem()) == [str(out / "part-0-0")]
