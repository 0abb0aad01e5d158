"""Record functions the exchange can evaluate over columns: field selections and integer arithmetic.

A user writes ``key_by(lambda r: r[1])`` or a timestamp assigner
``def event_time_ms(r): return r[3] * 1000``, not ``key_by(1)``. When such a
function reaches a keyed exchange or a timestamp assigner whose records are a
:class:`~emrflow.runtime.network.columns.ColumnBatch`, calling it once per row
would make the rows the columnar exchange exists to avoid. This module reads the
function's bytecode (as Polars does to translate ``map_elements`` lambdas into
expressions) and recognises a small, exact subset:

* ``r[i]`` for a non-negative integer constant ``i`` (a field by position);
* ``(r[i], r[j], ...)`` (a composite key);
* ``+``, ``-``, ``*`` and ``//`` over such fields and integer constants, e.g.
  ``r[3] * 1000`` or ``1000 * r[3] + 5``.

Anything else (a closure, a global, a call, a branch, an attribute, a float
constant, a function of more than one argument) is not recognised, and the
caller calls the function per record as before. Recognition is a pure function
of the code object; it never calls the user's function.

The arithmetic is evaluated with NumPy only over ``int64`` columns, and only when
interval arithmetic over the columns' minimum and maximum proves that no
intermediate value leaves the ``int64`` range and no ``//`` divides by zero;
otherwise :meth:`IntExpression.evaluate` returns ``None`` and the caller falls
back to Python, so the result is always the one Python's unbounded integers give.
"""

from __future__ import annotations

import dis
import inspect
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

_INT64_MIN, _INT64_MAX = -(2 ** 63), 2 ** 63 - 1
_IGNORED = frozenset({"RESUME", "NOP", "CACHE", "EXTENDED_ARG", "NOT_TAKEN"})
_LOAD_ARG = frozenset({"LOAD_FAST", "LOAD_FAST_BORROW", "LOAD_FAST_CHECK"})
_ARITHMETIC = frozenset({"+", "-", "*", "//"})
_VARARGS = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS

# expression nodes: ("field", i) | ("const", int) | ("op", symbol, a, b) | ("tuple", (node, ...))


def _expression(fn: Any) -> tuple | None:
    """The expression tree of ``fn``'s single return value over its one argument, or ``None``."""
    if type(fn) is not types.FunctionType:
        return None
    code = fn.__code__
    if (code.co_argcount != 1 or code.co_kwonlyargcount or code.co_flags & _VARARGS
            or fn.__closure__ or code.co_freevars):
        return None
    stack: list[tuple] = []
    try:
        instructions = list(dis.get_instructions(fn))
    except Exception:  # noqa: BLE001 - an exotic code object: not recognised
        return None
    for ins in instructions:
        name = ins.opname
        if name in _IGNORED:
            continue
        if name in _LOAD_ARG:
            if ins.arg != 0:
                return None
            stack.append(("arg",))
        elif name in ("LOAD_CONST", "LOAD_SMALL_INT"):
            value = ins.argval
            if type(value) is not int:
                return None
            stack.append(("const", value))
        elif name == "BINARY_SUBSCR" or (name == "BINARY_OP" and ins.argrepr == "[]"):
            if len(stack) < 2:
                return None
            index, obj = stack.pop(), stack.pop()
            if obj != ("arg",) or index[0] != "const" or index[1] < 0:
                return None
            stack.append(("field", index[1]))
        elif name == "BINARY_OP" and ins.argrepr in _ARITHMETIC:
            if len(stack) < 2:
                return None
            b, a = stack.pop(), stack.pop()
            if a[0] not in ("field", "const", "op") or b[0] not in ("field", "const", "op"):
                return None
            stack.append(("op", ins.argrepr, a, b))
        elif name == "BUILD_TUPLE":
            n = ins.arg or 0
            if n < 1 or len(stack) < n:
                return None
            items = tuple(stack[len(stack) - n:])
            del stack[len(stack) - n:]
            stack.append(("tuple", items))
        elif name == "RETURN_VALUE":
            return stack[0] if len(stack) == 1 and stack[0][0] != "arg" else None
        else:
            return None
    return None


def field_positions(fn: Any) -> tuple[tuple[int, ...], bool] | None:
    """Return ``(positions, composite)`` when ``fn`` is ``lambda r: r[i]`` (``((i,), False)``)
    or ``lambda r: (r[i], r[j], ...)`` (``((i, j, ...), True)``), else ``None``.

    Args:
        fn: a key selector as the user wrote it.
    """
    e = _expression(fn)
    if e is None:
        return None
    if e[0] == "field":
        return (e[1],), False
    if e[0] == "tuple" and all(item[0] == "field" for item in e[1]):
        return tuple(item[1] for item in e[1]), True
    return None


class IntExpression:
    """Integer arithmetic over fields, recognised from a function (see the module's docstring).

    Args:
        tree: the expression tree (made by :func:`int_expression`).
    """

    __slots__ = ("tree",)

    def __init__(self, tree: tuple):
        self.tree = tree

    def evaluate(self, record_batch: "pa.RecordBatch") -> "np.ndarray | None":
        """The function's value for every row of ``record_batch`` as an ``int64`` array, or
        ``None`` when it cannot be computed exactly over these columns (a field that is not an
        ``int64`` column or not there, a possible overflow of ``int64``, a division by zero)."""
        import numpy as np
        import pyarrow as pa
        columns: dict[int, tuple] = {}
        n = record_batch.num_rows

        def value(node: tuple) -> tuple | None:  # (array or int, low, high)
            kind = node[0]
            if kind == "const":
                return node[1], node[1], node[1]
            if kind == "field":
                i = node[1]
                if i not in columns:
                    if i >= record_batch.num_columns:
                        return None
                    col = record_batch.column(i)
                    if col.type != pa.int64() or col.null_count:
                        return None
                    arr = col.to_numpy()
                    if n == 0:
                        return None
                    columns[i] = (arr, int(arr.min()), int(arr.max()))
                return columns[i]
            a, b = value(node[2]), value(node[3])
            if a is None or b is None:
                return None
            (x, xl, xh), (y, yl, yh) = a, b
            sym = node[1]
            if sym == "+":
                lo, hi = xl + yl, xh + yh
            elif sym == "-":
                lo, hi = xl - yh, xh - yl
            elif sym == "*":
                corners = (xl * yl, xl * yh, xh * yl, xh * yh)
                lo, hi = min(corners), max(corners)
            else:  # "//": the divisor must keep one sign and never be 0
                if yl <= 0 <= yh:
                    return None
                corners = (xl // yl, xl // yh, xh // yl, xh // yh)
                lo, hi = min(corners), max(corners)
            if lo < _INT64_MIN or hi > _INT64_MAX:
                return None
            if type(x) is int and type(y) is int:
                return lo, lo, hi  # constant folding: lo == hi
            with np.errstate(all="raise"):
                if sym == "+":
                    out = np.add(x, y, dtype=np.int64)
                elif sym == "-":
                    out = np.subtract(x, y, dtype=np.int64)
                elif sym == "*":
                    out = np.multiply(x, y, dtype=np.int64)
                else:
                    out = np.floor_divide(x, y, dtype=np.int64)
            return out, lo, hi

        try:
            result = value(self.tree)
        except (OverflowError, FloatingPointError, TypeError, ValueError):
            return None
        if result is None:
            return None
        out = result[0]
        if type(out) is int:
            return np.full(n, out, dtype=np.int64)
        return out


def int_expression(fn: Any) -> IntExpression | None:
    """An :class:`IntExpression` for ``fn`` when it is integer arithmetic over fields and integer
    constants with at least one field (``lambda r: r[3] * 1000``), else ``None``.

    Args:
        fn: a ``record -> int`` function as the user wrote it (e.g. a timestamp assigner).
    """
    e = _expression(fn)
    if e is None or e[0] == "tuple":
        return None

    def has_field(node: tuple) -> bool:
        return node[0] == "field" or (node[0] == "op" and (has_field(node[2]) or has_field(node[3])))

    return IntExpression(e) if has_field(e) else None
