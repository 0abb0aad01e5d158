"""Built-in aggregate functions for windows: :class:`Count`, :class:`Sum`, :class:`Min`, :class:`Max`, :class:`Avg`.

Each is an ordinary :class:`~emrflow.api.functions.AggregateFunction` (Flink's
``AggregateFunction``: ``create_accumulator``, ``add``, ``get_result``, ``merge``),
so it works on every window: tumbling, sliding, session, count and global windows,
with triggers, evictors and allowed lateness. On aligned event-time windows
(``TumblingEventTimeWindows``/``SlidingEventTimeWindows`` with the default
trigger, no evictor and no allowed lateness) the window operator recognises these
exact classes and folds whole batches in tight loops instead of calling ``add``
once per record: the window *fast path*. An operator that takes it is named
``Window(aggregate Count(), fast path)`` in the dashboard, the REST API and
``env.get_execution_plan()``. A function you write yourself, even one with the
same code, always runs by calling its methods::

    from emrflow.api.aggregates import Count, Sum

    (ratings.key_by(lambda r: r[1])
        .window(TumblingEventTimeWindows.of(Time.hours(1)))
        .aggregate(Sum(2)))            # per movie and hour: the sum of field 2 (stars)

A field is an int position of tuple/list records, a str key of dict records (or
an attribute name, as for namedtuples), or ``None`` for the record itself (scalar
records), as in ``KeyedStream.sum``.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

from emrflow.api.functions import AggregateFunction


def field_access(field: int | str | None) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
    """Return ``(get, replace)`` for a record field: ``replace(record, value)`` makes a new record.

    ``get`` is a C-level ``itemgetter`` for positions (tuples, lists) and names of
    dict records, with a fallback to attributes (namedtuples, objects); the
    ``itemgetter`` is also ``get.fast`` (see :func:`field_values`).

    Args:
        field: an int position, a str key or attribute name, or ``None`` (the record itself).

    Returns:
        ``(get, replace)``; ``get`` raises ``TypeError`` naming the field and the record
        when the record has no such field.
    """
    if field is None:
        return (lambda r: r), (lambda r, v: v)
    fast = operator.itemgetter(field)

    def get(r: Any, _f=field, _fast=fast) -> Any:
        try:
            return _fast(r)
        except (TypeError, KeyError, IndexError):
            if isinstance(_f, str) and hasattr(r, _f):
                return getattr(r, _f)
            raise TypeError(f"cannot take field {_f!r} of the record {r!r}; use a field position "
                            "for tuple records, a name for dict records, or no field for "
                            "scalar records") from None

    def replace(r: Any, v: Any, _f=field) -> Any:
        if type(r) is tuple:
            return r[:_f] + (v,) + r[_f + 1:]
        if isinstance(r, list):
            copy = list(r)
            copy[_f] = v
            return copy
        if isinstance(r, dict):
            changed = dict(r)
            changed[_f] = v
            return changed
        if hasattr(r, "_replace"):  # namedtuple
            return r._replace(**{r._fields[_f] if isinstance(_f, int) else _f: v})
        raise TypeError(f"cannot set field {_f!r} of a {type(r).__name__} record")

    get.fast = fast  # type: ignore[attr-defined]
    return get, replace


def field_values(get: Callable[[Any], Any], records: list) -> list:
    """``list(map(get, records))`` at C speed, with ``get``'s clear error for odd records.

    Args:
        get: a getter made by :func:`field_access`.
        records: the records.
    """
    fast = getattr(get, "fast", None)
    if fast is not None:
        try:
            return list(map(fast, records))
        except (TypeError, KeyError, IndexError):
            pass
    return list(map(get, records))


class BuiltinAggregate(AggregateFunction):
    """Base of the built-in aggregates; the window fast path recognises its exact subclasses.

    Args:
        field: which field of a record to aggregate (see the module docstring).

    Raises:
        TypeError: ``field`` is not an int, a str or ``None``.
    """

    def __init__(self, field: int | str | None = None):
        if isinstance(field, bool) or not (field is None or isinstance(field, (int, str))):
            raise TypeError(f"{type(self).__name__} expects a field position (int), a field name (str) "
                            f"or None for the record itself, got {field!r}")
        self.field = field
        self._get = field_access(field)[0]

    def __reduce__(self) -> tuple:  # pickled as class and field, not the getter closure
        return type(self), (self.field,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'' if self.field is None else repr(self.field)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BuiltinAggregate) and type(other) is type(self) and other.field == self.field

    def __hash__(self) -> int:
        return hash((type(self), self.field))


class Count(BuiltinAggregate):
    """The number of records in a window.

    Follows the counting ``AggregateFunction`` of Flink's documentation (Flink's
    DataStream API has no built-in count): accumulator ``0``, ``+ 1`` per record;
    the result is the accumulator (an int).

    Example: windows holding ``"a", "b", "c"`` give ``3``.
    """

    def __init__(self) -> None:
        super().__init__(None)

    def __reduce__(self) -> tuple:
        return type(self), ()

    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: int) -> int:
        return accumulator + 1

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, acc_a: int, acc_b: int) -> int:
        return acc_a + acc_b


class Sum(BuiltinAggregate):
    """The sum of a field over a window's records (``0 + v1 + v2 + ...``, as Python's ``sum``).

    Follows Flink's built-in ``sum(position)`` aggregation, as an ``AggregateFunction``
    whose result is the sum itself (Flink's ``WindowedStream.sum`` emits the window's
    first record with the field replaced; add a window function for the key and window).

    Args:
        field: the field to sum (``None``: the records are the numbers).

    Example: ``Sum(1)`` over ``("a", 2), ("a", 5)`` gives ``7``.
    """

    def create_accumulator(self) -> Any:
        return 0

    def add(self, value: Any, accumulator: Any) -> Any:
        return accumulator + self._get(value)

    def get_result(self, accumulator: Any) -> Any:
        return accumulator

    def merge(self, acc_a: Any, acc_b: Any) -> Any:
        return acc_a + acc_b


class Min(BuiltinAggregate):
    """The smallest value of a field in a window (as Python's ``min``: the first of equal values).

    Follows Flink's built-in ``min(position)`` aggregation, as an ``AggregateFunction``
    whose result is the value itself. The accumulator is ``None`` until the first record.

    Args:
        field: the field to compare (``None``: the records themselves).

    Example: ``Min(1)`` over ``("a", 2), ("a", 5)`` gives ``2``.
    """

    def create_accumulator(self) -> Any:
        return None

    def add(self, value: Any, accumulator: Any) -> Any:
        v = self._get(value)
        return v if accumulator is None or v < accumulator else accumulator

    def get_result(self, accumulator: Any) -> Any:
        return accumulator

    def merge(self, acc_a: Any, acc_b: Any) -> Any:
        if acc_a is None:
            return acc_b
        return acc_a if acc_b is None or not acc_b < acc_a else acc_b


class Max(BuiltinAggregate):
    """The largest value of a field in a window (as Python's ``max``: the first of equal values).

    Follows Flink's built-in ``max(position)`` aggregation, as an ``AggregateFunction``
    whose result is the value itself. The accumulator is ``None`` until the first record.

    Args:
        field: the field to compare (``None``: the records themselves).

    Example: ``Max(1)`` over ``("a", 2), ("a", 5)`` gives ``5``.
    """

    def create_accumulator(self) -> Any:
        return None

    def add(self, value: Any, accumulator: Any) -> Any:
        v = self._get(value)
        return v if accumulator is None or v > accumulator else accumulator

    def get_result(self, accumulator: Any) -> Any:
        return accumulator

    def merge(self, acc_a: Any, acc_b: Any) -> Any:
        if acc_a is None:
            return acc_b
        return acc_a if acc_b is None or not acc_b > acc_a else acc_b


class Avg(BuiltinAggregate):
    """The mean of a field over a window's records (``sum / count``, a float).

    Follows the ``AverageAggregate`` example of Flink's ``AggregateFunction``
    documentation: the accumulator is the pair ``(count, sum)``.

    Args:
        field: the field to average (``None``: the records are the numbers).

    Example: ``Avg(1)`` over ``("a", 2), ("a", 5)`` gives ``3.5``.
    """

    def create_accumulator(self) -> tuple:
        return (0, 0)

    def add(self, value: Any, accumulator: tuple) -> tuple:
        return (accumulator[0] + 1, accumulator[1] + self._get(value))

    def get_result(self, accumulator: tuple) -> float:
        return accumulator[1] / accumulator[0]

    def merge(self, acc_a: tuple, acc_b: tuple) -> tuple:
        return (acc_a[0] + acc_b[0], acc_a[1] + acc_b[1])


#: the classes the window fast path folds itself (exact classes: a subclass runs its own methods)
BUILTIN_AGGREGATES: tuple[type, ...] = (Count, Sum, Min, Max, Avg)


def is_builtin_aggregate(function: Any) -> bool:
    """Is ``function`` exactly one of :data:`BUILTIN_AGGREGATES` (not a subclass)."""
    return type(function) in BUILTIN_AGGREGATES
