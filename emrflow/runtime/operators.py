"""Physical operators: what runs inside a task, one batch of records at a time.

An operator receives a list of records in :meth:`Operator.process_batch` and
hands lists to its :class:`Output`, which calls the chained operators'
``process_batch`` directly and the record writers of outgoing edges: no queue
and no serialisation inside an operator chain. :meth:`Operator.end_input`
runs once when the input is exhausted; BATCH-mode aggregations emit their
results there and then the call moves down the chain.

There are few physical operators; the DataStream API's aggregations (sum,
min, max, min_by, max_by, reduce) all run in :class:`KeyedAggregateOperator`
through an :class:`Aggregator`.
"""

from __future__ import annotations

import operator
from collections import _count_elements, deque  # type: ignore[attr-defined]
from typing import Any, Callable

from emrflow.api import transformations as T
from emrflow.api.functions import (
    FilterFunction, FlatMapFunction, Function, KeyedProcessFunction, MapFunction,
    ProcessFunction, ReduceFunction, RuntimeContext)
from emrflow.api.state import ValueState, ValueStateDescriptor
from emrflow.api.transformations import AggregationSpec

_MISSING = object()


class Output:
    """Fans an operator's output batches out to chained operators and record writers."""

    __slots__ = ("targets", "records_out", "emit")

    def __init__(self, targets: list[Callable[[list], None]]):
        self.targets = targets
        self.records_out = 0
        if len(targets) == 1:
            only = targets[0]

            def emit(records: list) -> None:
                if records:
                    self.records_out += len(records)
                    only(records)
        else:
            def emit(records: list) -> None:
                if records:
                    self.records_out += len(records)
                    for t in targets:
                        t(records)
        self.emit = emit


class Operator:
    """Base of the physical operators.

    Attributes:
        name: the operator's name (for metrics and errors).
        records_in: records received so far.
        output: where results go; set by the task before :meth:`open`.
        next_operators: chained operators, so :meth:`end_input` can move down the chain.
    """

    def __init__(self, name: str, function: Any):
        self.name = name
        self.function = function
        self.records_in = 0
        self.output: Output | None = None
        self.next_operators: list["Operator"] = []

    def open(self, ctx: RuntimeContext) -> None:
        """Open the user function (``Function.open``)."""
        if isinstance(self.function, Function):
            self.function.open(ctx)

    def process_batch(self, records: list) -> None:
        """Process a list of records; subclasses emit through ``self.output.emit``."""
        self.records_in += len(records)
        self.output.emit(records)

    def end_input(self) -> None:
        """Input is exhausted: emit what is held back, then tell the chained operators."""
        for op in self.next_operators:
            op.end_input()

    def close(self) -> None:
        """Close the user function (``Function.close``)."""
        if isinstance(self.function, Function):
            self.function.close()


class MapOperator(Operator):
    def open(self, ctx: RuntimeContext) -> None:
        super().open(ctx)
        self._call = self.function.map if isinstance(self.function, MapFunction) else self.function

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        self.output.emit(list(map(self._call, records)))


class FlatMapOperator(Operator):
    def open(self, ctx: RuntimeContext) -> None:
        super().open(ctx)
        self._call = (self.function.flat_map if isinstance(self.function, FlatMapFunction)
                      else self.function)

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        out: list = []
        extend = out.extend
        for results in map(self._call, records):
            if results is not None:
                extend(results)
        self.output.emit(out)


class FilterOperator(Operator):
    def open(self, ctx: RuntimeContext) -> None:
        super().open(ctx)
        self._call = (self.function.filter if isinstance(self.function, FilterFunction)
                      else self.function)

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        call = self._call
        self.output.emit([r for r in records if call(r)])


class _ProcessContext(ProcessFunction.Context, KeyedProcessFunction.Context):
    __slots__ = ("current_key",)

    def __init__(self):
        self.current_key = None

    def get_current_key(self) -> Any:
        return self.current_key

    def timestamp(self) -> int | None:
        return None


class ProcessOperator(Operator):
    def open(self, ctx: RuntimeContext) -> None:
        super().open(ctx)
        fn = self.function
        self._call = fn.process_element if isinstance(fn, ProcessFunction) else fn
        self._ctx = _ProcessContext()

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        call, ctx = self._call, self._ctx
        out: list = []
        for r in records:
            res = call(r, ctx)
            if res is not None:
                out.extend(res)
        self.output.emit(out)


# -- keyed state ---------------------------------------------------------------

class _ValueStateHandle(ValueState):
    __slots__ = ("_table", "_backend", "_default")

    def __init__(self, table: dict, backend: "HashMapKeyedStateBackend"):
        self._table = table
        self._backend = backend

    def value(self) -> Any:
        return self._table.get(self._backend.current_key)

    def update(self, value: Any) -> None:
        if value is None:
            self._table.pop(self._backend.current_key, None)
        else:
            self._table[self._backend.current_key] = value

    def clear(self) -> None:
        self._table.pop(self._backend.current_key, None)


class HashMapKeyedStateBackend:
    """Keyed state as Python objects in memory (Flink's ``HashMapStateBackend``).

    Each named state is a dict ``key -> value``; the key group of a key is
    derived from its stable hash when state has to be split by key group
    (:meth:`entries_by_key_group`). ``current_key`` is set by the operator
    before user code runs.
    """

    def __init__(self, max_parallelism: int):
        self.max_parallelism = max_parallelism
        self.current_key: Any = None
        self.tables: dict[str, dict] = {}

    def get_value_state(self, descriptor: ValueStateDescriptor) -> ValueState:
        """Return the handle of ``descriptor``'s state (created empty on first use)."""
        if not isinstance(descriptor, ValueStateDescriptor):
            raise TypeError(f"get_state expects a ValueStateDescriptor, got {descriptor!r}")
        return _ValueStateHandle(self.tables.setdefault(descriptor.name, {}), self)

    def entries_by_key_group(self) -> dict[int, dict[str, dict]]:
        """Return ``{key group: {state name: {key: value}}}`` (for snapshots)."""
        from emrflow.graph.keygroups import assign_to_key_group
        out: dict[int, dict[str, dict]] = {}
        for name, table in self.tables.items():
            for k, v in table.items():
                g = assign_to_key_group(k, self.max_parallelism)
                out.setdefault(g, {}).setdefault(name, {})[k] = v
        return out


class KeyedProcessOperator(Operator):
    """Runs a :class:`KeyedProcessFunction` with keyed state."""

    def __init__(self, name: str, function: Any, key_selector: Callable, max_parallelism: int):
        super().__init__(name, function)
        self.key_selector = key_selector
        self.backend = HashMapKeyedStateBackend(max_parallelism)

    def open(self, ctx: RuntimeContext) -> None:
        ctx._state_backend = self.backend
        super().open(ctx)
        self._ctx = _ProcessContext()

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        call, ctx, backend = self.function.process_element, self._ctx, self.backend
        out: list = []
        for k, r in zip(map(self.key_selector, records), records):
            backend.current_key = ctx.current_key = k
            res = call(r, ctx)
            if res is not None:
                out.extend(res)
        self.output.emit(out)


# -- keyed aggregations ---------------------------------------------------------

def _field_access(field: int | str | None) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
    """Return ``(get, replace)`` for a record field: ``replace(record, value)`` makes a new record.

    ``get`` is a C-level ``itemgetter`` for positions (tuples, lists) and names of
    dict records, with a fallback to attributes (namedtuples, objects).
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
            out = list(r)
            out[_f] = v
            return out
        if isinstance(r, dict):
            out = dict(r)
            out[_f] = v
            return out
        if hasattr(r, "_replace"):  # namedtuple
            return r._replace(**{r._fields[_f] if isinstance(_f, int) else _f: v})
        raise TypeError(f"cannot set field {_f!r} of a {type(r).__name__} record")

    get.fast = fast  # type: ignore[attr-defined]
    return get, replace


def _values(get: Callable[[Any], Any], records: list) -> list:
    """``list(map(get, records))`` at C speed, with ``get``'s clear error for odd records."""
    fast = getattr(get, "fast", None)
    if fast is not None:
        try:
            return list(map(fast, records))
        except (TypeError, KeyError, IndexError):
            pass
    return list(map(get, records))


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


class CompareAggregator(Aggregator):
    """``min``/``max`` (replace the field) and ``min_by``/``max_by`` (keep the whole record)."""

    def __init__(self, spec: AggregationSpec):
        self.get, self.replace = _field_access(spec.field)
        self.is_min = spec.kind in ("min", "min_by")
        self.by = spec.kind.endswith("_by")
        self.first = spec.first

    def _better(self, new: Any, old: Any) -> bool:
        if self.is_min:
            return new < old or (not self.first and self.by and new == old)
        return new > old or (not self.first and self.by and new == old)

    def fold_emit(self, table: dict, keys: list, records: list) -> list:
        get_acc, get, better = table.get, self.get, self._better
        by, replace = self.by, self.replace
        out = []
        append = out.append
        for k, r in zip(keys, records):
            acc = get_acc(k, _MISSING)
            if acc is _MISSING:
                acc = r
            else:
                v = get(r)
                if better(v, get(acc)):
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


class KeyedAggregateOperator(Operator):
    """Keyed reduce and built-in aggregations.

    STREAMING: emits the key's updated value for every record. BATCH: emits one
    final record per key at the end of input (Flink's batch execution of keyed
    reductions).
    """

    def __init__(self, name: str, kind: str, function: Any, key_selector: Callable, batch: bool):
        super().__init__(name, function)
        self.key_selector = key_selector
        self.batch = batch
        self.aggregator = make_aggregator(kind, function)
        self.table = self.aggregator.new_table()

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        keys = list(map(self.key_selector, records))
        if self.batch:
            self.aggregator.fold(self.table, keys, records)
        else:
            self.output.emit(self.aggregator.fold_emit(self.table, keys, records))

    def end_input(self) -> None:
        if self.batch:
            table, self.table = self.table, self.aggregator.new_table()
            self.output.emit(self.aggregator.results(table))
        super().end_input()


class SinkOperator(Operator):
    """Hands batches to a :class:`~emrflow.connectors.base.SinkWriter`."""

    def __init__(self, name: str, sink: Any, writer: Any):
        super().__init__(name, sink)
        self.writer = writer

    def process_batch(self, records: list) -> None:
        self.records_in += len(records)
        self.writer.write_batch(records)


def create_operator(node, batch: bool, max_parallelism: int, sink_writer=None) -> Operator:
    """Instantiate the physical operator of an :class:`~emrflow.graph.jobgraph.OperatorNode`."""
    kind = node.kind
    if kind == T.MAP:
        return MapOperator(node.name, node.function)
    if kind == T.FLAT_MAP:
        return FlatMapOperator(node.name, node.function)
    if kind == T.FILTER:
        return FilterOperator(node.name, node.function)
    if kind == T.PROCESS:
        return ProcessOperator(node.name, node.function)
    if kind == T.KEYED_PROCESS:
        return KeyedProcessOperator(node.name, node.function, node.key_selector, max_parallelism)
    if kind in (T.KEYED_REDUCE, T.KEYED_AGGREGATE):
        return KeyedAggregateOperator(node.name, kind, node.function, node.key_selector, batch)
    if kind == T.SINK:
        return SinkOperator(node.name, node.function, sink_writer)
    if kind == T.SOURCE:
        return Operator(node.name, None)
    raise ValueError(f"unknown operator kind {kind!r}")
