"""Bad-input fuzzing of the text and CSV sources, driven in-process (no cluster).

Random bytes, text in several encodings, CRLF and lone CR, quotes, empty files, very long
lines and huge fields, read at parallelism 1 to 3: never a crash other than a
:class:`BadRecordError` naming file and line (text source, undecodable line), never a hang
(each example is bounded by hypothesis' deadline and pytest's timeout), and every
non-empty input line is either in the output or reported bad with its file and line.
The reference is plain Python over the same bytes.
"""

from __future__ import annotations

import csv
import tempfile

import hypothesis.configuration
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.files import CsvSource, TextFileSource
from emrflow.errors import BadRecordError
from tests.unit.test_split_runtime import polled_batches, subtask_reader

# hypothesis keeps its example database and caches under ./.hypothesis: not in the checkout
hypothesis.configuration.set_hypothesis_home_dir(tempfile.mkdtemp(prefix="emrflow-hypothesis-"))

FIELD = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(['"', '""', '"a,b"', "a\rb", "\r", "é", "ü", "\ufeff", "1", "-7", "x" * 5000]),
    st.integers(-10**6, 10**6).map(str),
)
LINE = st.lists(FIELD, max_size=5).map(",".join)
ENCODED = st.tuples(st.lists(LINE, max_size=30), st.sampled_from(["utf-8", "latin-1", "cp1252"]),
                    st.sampled_from(["\n", "\r\n"]), st.booleans()).map(
    lambda t: t[2].join(t[0]).encode(t[1], errors="replace") + (t[2].encode() if t[3] else b""))
DATA = st.one_of(st.binary(max_size=3000), ENCODED,
                 st.just(b""), st.just(b"\n\n\r\n"), st.just(b"a" * 70_000 + b"\n1,2\n"))


def read_all(source, path: str, parallelism: int) -> tuple[list, list]:
    rows, bad = [], []
    for i in range(parallelism):
        ctx = SubtaskContext("src", i, parallelism, report_bad_record=lambda p, n, r: bad.append((p, n, r)))
        reader = subtask_reader(source, ctx)
        try:
            for batch in polled_batches(reader):
                rows.extend(batch)
        finally:
            reader.close()
    return rows, bad


def lines_of(data: bytes) -> list[bytes]:
    """The file's lines as the sources define them: split at \\n, a final \\r and \\n dropped."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


@settings(max_examples=150, deadline=2000, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=DATA, parallelism=st.integers(1, 3), encoding=st.sampled_from(["utf-8", "latin-1"]))
def test_text_source_reads_every_line_or_names_the_bad_one(tmp_path, data, parallelism, encoding):
    path = tmp_path / "in.txt"
    path.write_bytes(data)
    lines = lines_of(data)
    try:
        rows, bad = read_all(TextFileSource(str(path), encoding=encoding), str(path), parallelism)
    except BadRecordError as e:
        assert e.path == str(path)
        assert 1 <= e.line <= len(lines)
        with pytest.raises(UnicodeDecodeError):
            lines[e.line - 1].decode(encoding)
        return
    assert bad == []
    assert rows == [ln.decode(encoding) for ln in lines]


@settings(max_examples=150, deadline=2000, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=DATA, parallelism=st.integers(1, 3), typed=st.booleans(), header=st.booleans())
def test_csv_source_reads_every_line_or_counts_it_bad_with_file_and_line(tmp_path, data, parallelism,
                                                                           typed, header):
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    lines = lines_of(data)
    types = [int, str] if typed else None
    src = CsvSource(str(path), header=header, types=types)
    rows, bad = read_all(src, str(path), parallelism)
    numbered = [(n, ln) for n, ln in enumerate(lines, 1) if ln and not (header and n == 1)]
    assert all(p == str(path) for p, _, _ in bad)
    bad_lines = [n for _, n, _ in bad]
    assert len(set(bad_lines)) == len(bad_lines), "a line reported twice"
    assert set(bad_lines) <= {n for n, _ in numbered}, "a bad line number that is not a record's"
    good = [(n, ln) for n, ln in numbered if n not in set(bad_lines)]
    assert len(rows) == len(good), f"{len(numbered)} records: {len(rows)} rows + {len(bad)} bad"
    for (n, ln), row in zip(good, rows):
        text = ln.decode("utf-8")                               # decodable, or it would be bad
        if '"' not in text and "\r" not in text:                # the plain case: exact reference
            fields = text.split(",")
            assert row == ((int(fields[0]), fields[1]) if typed else tuple(fields)), n
        else:                                                   # quoted: as the csv module reads it
            assert len(row) == (2 if typed else len(row)) and isinstance(row, tuple)
    for n, ln in numbered:
        if n in bad_lines:                                      # bad for a reason the reference sees
            try:
                text = ln.decode("utf-8")
            except UnicodeDecodeError:
                continue
            if '"' not in text and "\r" not in text:
                fields = text.split(",")
                assert typed and (len(fields) != 2 or not _is_int(fields[0])), (n, text)


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def test_encodings_that_are_not_ascii_compatible_are_refused_by_name():
    with pytest.raises(ValueError, match="utf-16"):
        CsvSource("x.csv", encoding="utf-16")
    with pytest.raises(LookupError):
        TextFileSource("x.txt", encoding="no-such-codec")


def test_csv_module_agrees_on_a_quoted_field(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b'1,"a,b"\r\n2,"say ""hi"""\n')
    rows, bad = read_all(CsvSource(str(path), types=[int, str]), str(path), 1)
    assert bad == [] and rows == [tuple(r[:1] and (int(r[0]), r[1])) for r in
                                  csv.reader(['1,"a,b"', '2,"say ""hi"""'])]
