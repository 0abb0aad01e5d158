"""Per-key aggregations shared by keyed operators and BATCH-mode local aggregation.

An :class:`Aggregator` folds batches of records into a table ``{key: accumulated}``
with tight loops (C-level where possible); the DataStream API's ``reduce``,
``sum``, ``min``, ``max``, ``min_by`` and ``max_by`` all run through one.
"""

from __future__ import annotations

import operator
from collections import _count_elements, deque  # type: ignore[attr-defined]
from typing import Any, Callable

from emrflow.api import transformations as T
from emrflow.api.aggregates import field_access as _field_access
from emrflow.api.aggregates import field_values as _values
from emrflow.api.functions import ReduceFunction
from emrflow.api.transformations import AggregationSpec

_MISSING = object()


class Aggregator:
    """An associative per-key aggregation over a table ``{key: accumulated record}``.

    Used by the keyed aggregation operator and, in BATCH mode, by the combiner in
    front of the exchange. Subclasses implement three batch loops over a table
    made by :meth:`new_table` (its ``len`` is the number of keys).
    """

    def new_table(self) -> Any:
        """Return an empty table."""
        return {}

    def fold(self, table: dict, keys: list, records: list) -> None:
        """Fold records into the table (no output)."""
        self.fold_emit(table, keys, records)

    def fold_emit(self, table: dict, keys: list, records: list) -> list:
        """Fold records into the table and return the updated value after every record."""
        raise TypeError(f"{type(self).__name__} must define fold_emit")  # subclasses do

    def results(self, table: dict) -> list:
        """Return the final record of every key in the table."""
        return list(table.values())

    def keys(self, table: dict) -> list:
        """Return the table's keys, in the order :meth:`results` gives their records."""
        return list(table)


class ReduceAggregator(Aggregator):
    """``reduce(fn)``: ``acc = fn(acc, record)``."""

    def __init__(self, fn: Callable[[Any, Any], Any]):
        self.fn = fn

    def fold(self, table: dict, keys: list, records: list) -> None:
        fn, get = self.fn, table.get
        for k, r in zip(keys, records):
            acc = get(k, _MISSING)
            table[k] = r if acc is _MISSING else fn(acc, r)

    def fold_emit(self, table: dict, keys: list, records: list) -> list:
        fn, get = self.fn, table.get
        out = []
        append = out.append
        for k, r in zip(keys, records):
            acc = get(k, _MISSING)
            acc = r if acc is _MISSING else fn(acc, r)
            table[k] = acc
            append(acc)
        return out


class _SumTable:
    """Running sums per key, and the key's first record (whose other fields the output keeps)."""

    __slots__ = ("sums", "firsts")

    def __init__(self):
        self.sums: dict = {}
        self.firsts: dict = {}

    def __len__(self) -> int:
        return len(self.sums)


class SumAggregator(Aggregator):
    """``sum(field)``: the key's first record with ``field`` replaced by the running sum."""

    def __init__(self, field: int | str | None):
        self.field = field
        self.get, self.replace = _field_access(field)

    def new_table(self) -> _SumTable:
        return _SumTable()

    def fold(self, table: _SumTable, keys: list, records: list) -> None:
        vals = records if self.field is None else _values(self.get, records)
        sums = table.sums
        if vals and vals.count(1) == len(vals) and all(map(int.__instancecheck__, vals)):
            _count_elements(sums, keys)  # counting: the C loop of collections.Counter
        else:
            get = sums.get
            for k, v in zip(keys, vals):
                sums[k] = get(k, 0) + v
        deque(map(table.firsts.setdefault, keys, records), maxlen=0)

    def fold_emit(self, table: _SumTable, keys: list, records: list) -> list:
        vals = records if self.field is None else _values(self.get, records)
        sums, firsts, replace = table.sums, table.firsts, self.replace
        get, setdefault = sums.get, firsts.setdefault
        out = []
        append = out.append
        for k, r, v in zip(keys, records, vals):
            total = sums[k] = get(k, 0) + v
            append(replace(setdefault(k, r), total))
        return out

    def results(self, table: _SumTable) -> list:
        replace, firsts = self.replace, table.firsts
        return [replace(firsts[k], total) for k, total in table.sums.items()]

    def keys(self, table: _SumTable) -> list:
        return list(table.sums)


class CompareAggregator(Aggregator):
    """``min``/``max`` (replace the field) and ``min_by``/``max_by`` (keep the whole record)."""

    def __init__(self, spec: AggregationSpec):
        self.get, self.replace = _field_access(spec.field)
        self.is_min = spec.kind in ("min", "min_by")
        self.by = spec.kind.endswith("_by")
        self.first = spec.first
        # new replaces old when better(new, old): strictly, or on a tie for min_by/max_by(first=False)
        ties = not self.first and self.by
        self.better = (operator.le if ties else operator.lt) if self.is_min else \
            (operator.ge if ties else operator.gt)

    def fold_emit(self, table: dict, keys: list, records: list) -> list:
        get_acc, get, better, by, replace = table.get, self.get, self.better, self.by, self.replace
        fast = getattr(get, "fast", get)  # the C itemgetter; ``get`` explains a record without the field
        out = []
        append = out.append
        for k, r in zip(keys, records):
            acc = get_acc(k, _MISSING)
            if acc is _MISSING:
                acc = r
            else:
                try:
                    v, old = fast(r), fast(acc)
                except (TypeError, KeyError, IndexError):
                    v, old = get(r), get(acc)
                if better(v, old):
                    acc = r if by else replace(acc, v)
            table[k] = acc
            append(acc)
        return out


def make_aggregator(kind: str, function: Any) -> Aggregator:
    """Return the :class:`Aggregator` of a keyed reduce or built-in aggregation."""
    if kind == T.KEYED_REDUCE:
        return ReduceAggregator(function.reduce if isinstance(function, ReduceFunction) else function)
    if function.kind == "sum":
        return SumAggregator(function.field)
    return CompareAggregator(function)
