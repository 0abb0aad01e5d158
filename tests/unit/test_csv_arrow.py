"""The CSV source's pyarrow path against its per-block path: same rows, bad-record reports, positions.

:class:`~emrflow.connectors.files.CsvSource` parses runs of blocks with ``pyarrow.csv`` where
the schema allows, and falls back to the per-block ``csv``/``str.split`` path otherwise. The
reference here is that per-block path (pyarrow switched off) over the same bytes: every batch,
the read position after it, and every bad line with its file, line number and reason must be
the same, on tricky inputs (quotes, empty fields and lines, CRLF, a lone CR, bad rows in the
middle of a block, lines across read buffers and subtask ranges, hex, blanks, BOM, big ints).
"""

from __future__ import annotations

import contextlib
import tempfile

import hypothesis.configuration
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emrflow.connectors import files
from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.files import CsvSource
from emrflow.runtime.network.columns import ColumnBatch
from tests.unit.test_split_runtime import polled_batches, subtask_reader

hypothesis.configuration.set_hypothesis_home_dir(tempfile.mkdtemp(prefix="emrflow-hypothesis-"))


@contextlib.contextmanager
def arrow_calls(enabled: bool, block_bytes: int | None = None, arrow_bytes: int | None = None):
    """Switch the pyarrow path on or off; yield counts of the runs it parsed and refused."""
    calls = {"parsed": 0, "refused": 0}
    original = files._ArrowCsv.batches

    def counting(self, blocks, newlines):
        out = original(self, blocks, newlines)
        calls["parsed" if out is not None else "refused"] += 1
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(files._ArrowCsv, "batches", counting)
        if not enabled:
            mp.setattr(files._ArrowCsv, "usable", staticmethod(lambda source: False))
        if block_bytes is not None:
            mp.setattr(files, "BLOCK_BYTES", block_bytes)
            mp.setattr(files, "_READ_BYTES", max(5, block_bytes // 2))
        if arrow_bytes is not None:
            mp.setattr(files, "_ARROW_BYTES", arrow_bytes)
        yield calls


def read(source: CsvSource, parallelism: int, columnar: bool = False) -> tuple[list, list]:
    """Every subtask's (batch, read position after it) in turn, and the bad-record reports."""
    out, bad = [], []
    for i in range(parallelism):
        ctx = SubtaskContext("src", i, parallelism, report_bad_record=lambda p, n, r: bad.append((p, n, r)),
                             columnar=columnar)
        reader = subtask_reader(source, ctx)
        try:
            for batch in polled_batches(reader):
                out.append((batch, reader.snapshot_state(0)))
        finally:
            reader.close()
    return out, bad


def both_paths(source: CsvSource, parallelism: int, **sizes) -> tuple[tuple, tuple, dict]:
    with arrow_calls(False, **sizes):
        reference = read(source, parallelism)
    with arrow_calls(True, **sizes) as calls:
        got = read(source, parallelism)
    return reference, got, calls


def typed_identical(a, b) -> bool:
    """Same reprs: equal values of the same types (True == 1 == 1.0 would hide a bool/int/float
    mix-up, and -0.0 == 0.0), and NaN where NaN (two NaN objects are not ==)."""
    return repr(a) == repr(b)


TYPES = [int, str, float, bool]
TRICKY_LINES = [
    "1,plain,2.5,true", "2,,0.5,0", "3,a b,-1e3,FALSE", "4, x ,inf,1",           # empty field, blanks
    '5,"quoted, with comma",1.5,true', '6,say ""hi"",2,false', '7,"open,1,true',   # quotes, good and bad
    "8,x,1.0,true,extra", "9,y,1.5", "", "10",                                     # field counts, empty line
    "1.0,z,1,1", "0x10,hex,1,1", " 11 ,blank int,2,0", "+12,plus,3,1", "1_3,under,4,0",
    "99999999999999999999,big,5,1", "14,bool?,6,tRue", "15,bool?,7, true", "16,bool?,8,yes",
    "17,nan,nan,True", "18,é ü,1e400,0", "19,nul\x00,2,1", "20,\u00a021,3,0", "٢١,arabic,1,1",
    "22,cr\rinside,1,1", "23,tab\t,1.,.5", "24,e,1e,1",
]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("block_bytes, arrow_bytes", [(None, None), (7, 64), (40, 10)])
def test_tricky_lines_in_every_position_give_the_same_batches_positions_and_reports(
        tmp_path, newline, block_bytes, arrow_bytes):
    good = [f"{i},name {i},{i / 8},{'true' if i % 2 else '0'}" for i in range(40)]
    lines = []
    for k, tricky in enumerate(TRICKY_LINES):  # each tricky line in the middle of good ones
        lines += good[k % 7:k % 7 + 6] + [tricky]
    lines += good
    path = tmp_path / "t.csv"
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))
    for header in (False, True):
        source = CsvSource(str(path), header=header, names=["id", "name", "score", "flag"], types=TYPES)
        for parallelism in (1, 2, 3):
            reference, got, calls = both_paths(source, parallelism, block_bytes=block_bytes,
                                               arrow_bytes=arrow_bytes)
            assert typed_identical(got, reference), (header, parallelism)
            if arrow_bytes is not None:  # (with the default sizes the whole file is one refused run)
                assert calls["parsed"] > 0 and calls["refused"] > 0, calls
    bad_reasons = {r for _, _, r in reference[1]}
    assert "expected 4 fields, got 5" in bad_reasons and "field 1 'id': could not convert '1.0' to int" in bad_reasons


@pytest.mark.parametrize("block_bytes, arrow_bytes", [(None, None), (7, 64), (40, 10), (64, 700)])
def test_column_batches_hold_the_same_rows_positions_and_reports(tmp_path, block_bytes, arrow_bytes):
    """With ``ctx.columnar`` (records go straight to the exchange) a run pyarrow parses is one
    ColumnBatch: its rows, the position after it and the bad-line reports are the per-block path's."""
    good = [f"{i},name {i},{i / 8},{'true' if i % 2 else '0'}" for i in range(60)]
    lines = []
    for k, tricky in enumerate(TRICKY_LINES):
        lines += good[k % 9:k % 9 + 30] + [tricky]
    path = tmp_path / "t.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
    source = CsvSource(str(path), header=True, names=["id", "name", "score", "flag"], types=TYPES)
    for parallelism in (1, 2):
        with arrow_calls(False, block_bytes=block_bytes, arrow_bytes=arrow_bytes):
            reference, ref_bad = read(source, parallelism)
        with arrow_calls(True, block_bytes=block_bytes, arrow_bytes=arrow_bytes):
            got, bad = read(source, parallelism, columnar=True)
        assert bad == ref_bad
        rows = [r for batch, _ in got for r in (batch.rows() if type(batch) is ColumnBatch else batch)]
        assert typed_identical(rows, [r for batch, _ in reference for r in batch])
        # the position after each batch is the per-block path's after the same rows
        seen, after = 0, {}
        for batch, position in reference:
            seen += len(batch)
            after[seen] = position
        seen = 0
        for batch, position in got:
            seen += len(batch)
            assert after[seen] == position
        if arrow_bytes is not None:
            kinds = {type(batch) for batch, _ in got}
            assert kinds == {ColumnBatch, list}, kinds


def test_every_tricky_line_alone_after_good_lines(tmp_path):
    """One run per file: the tricky line decides whether pyarrow may take the whole run."""
    for tricky in TRICKY_LINES + ["\ufeff1,bom,1,1", "\ufeff"]:
        for at_start in (False, True):
            lines = [tricky, "1,a,1,1"] if at_start else ["1,a,1,1", "2,b,2,0", tricky]
            path = tmp_path / "one.csv"
            path.write_bytes("\n".join(lines).encode("utf-8"))  # last line unterminated
            source = CsvSource(str(path), types=TYPES)
            reference, got, _ = both_paths(source, 1)
            assert typed_identical(got, reference), tricky


def test_other_encodings_and_undecodable_bytes(tmp_path):
    path = tmp_path / "l.csv"
    for data in ("1,é,1,1\n2,b,2,0\n".encode("latin-1"), b"1,\xff,1,1\n2,b,2,0\n", b"1,a,1,1\n2,b,2,0\n",
                 b"1,\xed\xa0\x80,1,1\n", b"1,\xc0\x80,1,1\n", b"1,\xf4\x90\x80\x80,1,1\n"):
        path.write_bytes(data)
        for encoding in ("utf-8", "latin-1", "cp1252"):
            source = CsvSource(str(path), types=TYPES, encoding=encoding)
            reference, got, _ = both_paths(source, 1)
            assert typed_identical(got, reference), (data, encoding)


def test_the_pyarrow_path_is_used_only_where_it_is_exact(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("".join(f"{i},{i * 2},{i / 2}\n" for i in range(5000)))
    with arrow_calls(True) as calls:
        rows, bad = read(CsvSource(str(path), types=[int, int, float]), 2)
    assert calls["parsed"] > 0 and calls["refused"] == 0 and bad == []
    assert [r for batch, _ in rows for r in batch] == [(i, i * 2, i / 2) for i in range(5000)]
    for kwargs in ({}, {"names": ["a", "b", "c"]}, {"types": [str, str, str]},
                   {"types": [int, lambda s: int(s), float]}, {"types": [int, int, float], "delimiter": "§"},
                   {"types": [int, int, float], "encoding": "utf-7"}):
        with arrow_calls(True) as calls:
            read(CsvSource(str(path), **kwargs), 1)
        assert calls == {"parsed": 0, "refused": 0}, kwargs


def test_a_restored_position_continues_exactly(tmp_path):
    path = tmp_path / "p.csv"
    lines = [f"{i},n{i},{i},1" if i % 97 else f"{i},bad" for i in range(3000)]
    path.write_text("\n".join(["id,name,score,flag"] + lines) + "\n")
    source = CsvSource(str(path), header=True, types=TYPES)
    for parallelism in (1, 2):
        for i in range(parallelism):
            bad: list = []
            ctx = SubtaskContext("src", i, parallelism, report_bad_record=lambda *a, bad=bad: bad.append(a))
            with arrow_calls(True, arrow_bytes=2048) as calls:
                reader = subtask_reader(source, ctx)
                batches = [(b, reader.snapshot_state(0), len(bad)) for b in polled_batches(reader)]
            assert calls["parsed"] and calls["refused"] and bad
            for k in (0, len(batches) // 3, len(batches) - 2):
                full_bad, bad[:] = bad[:], []
                resumed = subtask_reader(source, ctx, batches[k][1])
                with arrow_calls(True, arrow_bytes=2048):
                    rest = list(polled_batches(resumed))
                assert rest == [b for b, _, _ in batches[k + 1:]], (parallelism, i, k)
                assert bad == full_bad[batches[k][2]:], (parallelism, i, k)  # same lines, same numbers
                bad[:] = full_bad


FIELD = st.one_of(
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "1", "0", "true", "False", "TRUE", "tRue", " 1", "1 ", "+1", "-0", "0x1f", "1.",
                     ".5", "1e5", "1_0", "nan", "-inf", "Infinity", '"', '"a,b"', '""', "a\rb", "é", "\x00",
                     "\ufeff", "٣", "\u00a07", "x" * 300]),
    st.text(alphabet="019+-.eExXinfatyINFATY_ \t", max_size=6),   # numbers, nearly
)
LINE = st.one_of(st.lists(FIELD, min_size=4, max_size=4), st.lists(FIELD, max_size=6)).map(",".join)
GOOD = st.tuples(st.integers(-10**6, 10**6), st.text(alphabet="abcdé xyz", max_size=5),
                 st.floats(-1e6, 1e6).map(lambda f: round(f, 3)), st.booleans()).map(
    lambda t: f"{t[0]},{t[1]},{t[2]},{'true' if t[3] else '0'}")


@settings(max_examples=120, deadline=3000, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(st.one_of(GOOD, GOOD, GOOD, LINE), max_size=60), newline=st.sampled_from(["\n", "\r\n"]),
       final_newline=st.booleans(), parallelism=st.integers(1, 3), header=st.booleans(),
       sizes=st.sampled_from([(None, None), (3, 16), (16, 40), (64, 1)]))
def test_random_lines_give_what_the_per_block_path_gives(tmp_path, lines, newline, final_newline,
                                                          parallelism, header, sizes):
    path = tmp_path / "f.csv"
    path.write_bytes((newline.join(lines) + (newline if final_newline else "")).encode("utf-8"))
    source = CsvSource(str(path), header=header, names=["id", "name", "score", "flag"], types=TYPES)
    reference, got, _ = both_paths(source, parallelism, block_bytes=sizes[0], arrow_bytes=sizes[1])
    assert typed_identical(got, reference)
