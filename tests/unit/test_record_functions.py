"""Recognising field selections and integer arithmetic from a function's bytecode, and evaluating
them over columns: every recognised function must give, on every row, what calling it on the
row's tuple gives (the reference is the function itself, called row by row in plain Python);
anything outside the subset must not be recognised."""

from __future__ import annotations

import operator
import random

import pyarrow as pa
import pytest

from emrflow.runtime.network.record_functions import field_positions, int_expression

IDX = 1


def _rows_and_batch(columns: dict[str, list]) -> tuple[list[tuple], pa.RecordBatch]:
    batch = pa.record_batch([pa.array(v) for v in columns.values()], names=list(columns))
    return list(zip(*columns.values())), batch


def test_field_selections_are_recognised():
    def key(record):
        return record[2]

    assert field_positions(lambda r: r[1]) == ((1,), False)
    assert field_positions(key) == ((2,), False)
    assert field_positions(lambda r: (r[1], r[0])) == ((1, 0), True)
    assert field_positions(lambda r: (r[3],)) == ((3,), True)


@pytest.mark.parametrize("fn", [
    lambda r: r[-1],                 # negative index: not a position
    lambda r: r[IDX],                # a global
    lambda r: r[1:3],                # a slice
    lambda r: r.count(1),            # a method call
    lambda r: str(r[1]),             # a call
    lambda r: r[1] + 1,              # arithmetic is not a field
    lambda r: (r[1], 5),             # a constant in a composite key
    lambda r, i=1: r[i],             # two parameters
    lambda *r: r[0],                 # varargs
    lambda r: r[0][1],               # a field of a field
    lambda r: r[1] if r else None,   # a branch
    operator.itemgetter(1),          # not a Python function (itemgetter is read elsewhere)
    len,
])
def test_anything_else_is_not_a_field_selection(fn):
    assert field_positions(fn) is None


def test_a_closure_is_not_recognised():
    i = 1
    assert field_positions(lambda r: r[i]) is None
    assert int_expression(lambda r: r[i] * 1000) is None


def seconds_to_ms(record):
    return record[3] * 1000


FUNCTIONS = [
    seconds_to_ms,
    lambda r: r[0],
    lambda r: 1000 * r[3] + 5,
    lambda r: r[0] - r[1],
    lambda r: (r[0] + 1) * 2 - r[1] * 3,
    lambda r: r[2] // 7,
    lambda r: r[2] // -3,
    lambda r: -7 // r[4],            # r[4] never 0 and of one sign
    lambda r: r[1] * r[2],
]


@pytest.mark.parametrize("fn", FUNCTIONS)
def test_int_expressions_equal_the_function_row_by_row(fn):
    rng = random.Random(7)
    n = 2_000
    rows, batch = _rows_and_batch({
        "a": [rng.randrange(-10**9, 10**9) for _ in range(n)],
        "b": [rng.randrange(-10**6, 10**6) for _ in range(n)],
        "c": [rng.randrange(-10**12, 10**12) for _ in range(n)],
        "ts": [rng.randrange(0, 2 * 10**9) for _ in range(n)],
        "d": [rng.randrange(1, 50) for _ in range(n)],
    })
    expr = int_expression(fn)
    assert expr is not None
    got = expr.evaluate(batch)
    assert got is not None and str(got.dtype) == "int64"
    assert got.tolist() == [fn(r) for r in rows]


def test_no_result_where_int64_could_overflow_or_a_divisor_could_be_zero():
    rows, batch = _rows_and_batch({"a": [2**62, 1, -5], "b": [0, 3, 4], "f": [1.5, 2.0, 3.0]})
    assert int_expression(lambda r: r[0] * 1000).evaluate(batch) is None   # 2**62 * 1000
    assert int_expression(lambda r: r[0] + r[0]).evaluate(batch) is None    # 2**63
    assert int_expression(lambda r: r[1] * 1000).evaluate(batch).tolist() == [0, 3000, 4000]
    assert int_expression(lambda r: r[0] // r[1]).evaluate(batch) is None   # b holds 0
    assert int_expression(lambda r: r[2] * 1000).evaluate(batch) is None    # a float column
    assert int_expression(lambda r: r[5] * 1000).evaluate(batch) is None    # no such column


@pytest.mark.parametrize("fn", [
    lambda r: 5,                     # no field
    lambda r: r[3] * 1000.0,         # a float constant
    lambda r: r[3] / 1000,           # true division gives floats
    lambda r: int(r[3]) * 1000,      # a call
    lambda r: r[3] % 7,              # an operator outside the subset
    lambda r: r[3] ** 2,
    lambda r: (r[3], r[1]),          # a tuple
    lambda r: r[IDX] * 1000,         # a global
])
def test_other_functions_are_not_int_expressions(fn):
    assert int_expression(fn) is None
