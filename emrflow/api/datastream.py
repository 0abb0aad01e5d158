"""DataStream, KeyedStream and DataStreamSink: Flink's DataStream API in PyFlink's names.

Every method only records a :class:`~emrflow.api.transformations.Transformation`;
``StreamExecutionEnvironment.execute`` runs the whole program.

Example::

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    (env.from_collection(["a b", "b"])
        .flat_map(str.split)
        .map(lambda w: (w, 1))
        .key_by(lambda t: t[0])
        .sum(1)
        .print())
    env.execute("words")      # prints ('a', 1) and ('b', 2)
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any, Callable

from emrflow.api import transformations as T
from emrflow.api.functions import (
    FilterFunction,
    FlatMapFunction,
    Function,
    KeyedProcessFunction,
    KeySelector,
    MapFunction,
    ProcessFunction,
    ReduceFunction,
    SinkFunction,
    name_of,
)
from emrflow.api.transformations import AggregationSpec, Transformation
from emrflow.errors import JobGraphError
from emrflow.runtime.network.columns import FieldTuple

if TYPE_CHECKING:
    from emrflow.api.environment import StreamExecutionEnvironment
    from emrflow.api.windowed import AllWindowedStream, WindowedStream
    from emrflow.connectors.base import Sink


def _check_function(fn: Any, cls: type, method: str, what: str) -> Any:
    if isinstance(fn, type) and issubclass(fn, Function):
        raise TypeError(f"{what} expects an instance: pass {fn.__name__}(), not the class")
    if isinstance(fn, cls) or callable(fn):
        return fn
    raise TypeError(f"{what} expects a {cls.__name__} or a callable, got {fn!r}")


def key_selector_of(key: Any) -> Callable[[Any], Any]:
    """Turn what ``key_by`` accepts into a key function.

    Args:
        key: a callable, a :class:`KeySelector`, an int field position (tuple/list
            records), a tuple of int positions (composite key, a tuple), or a str
            (dict records: ``record[key]``).

    Raises:
        TypeError: ``key`` is none of these.
    """
    if isinstance(key, KeySelector):
        return key.get_key
    if isinstance(key, bool):
        raise TypeError(f"key_by expects a callable, KeySelector, int or str, got {key!r}")
    if isinstance(key, (int, str)):
        return operator.itemgetter(key)
    if isinstance(key, tuple) and key and all(isinstance(k, int) for k in key):
        if len(key) > 1:
            return operator.itemgetter(*key)
        return FieldTuple(key[0])
    if callable(key) and not isinstance(key, type):
        return key
    raise TypeError(f"key_by expects a callable, KeySelector, int, tuple of int or str, got {key!r}")


class DataStream:
    """A stream of records of one type, produced by one transformation (Flink's ``DataStream``)."""

    def __init__(self, env: "StreamExecutionEnvironment", transformation: Transformation):
        self._env = env
        self._t = transformation

    # -- properties ---------------------------------------------------------------
    def get_name(self) -> str:
        """Return the operator name."""
        return self._t.name

    def name(self, name: str) -> "DataStream":
        """Set the operator name shown in progress, metrics and errors; returns self."""
        self._t.name = str(name)
        return self

    def uid(self, uid: str) -> "DataStream":
        """Set the operator's stable id (state is matched by it on restore); returns self."""
        self._env._register_uid(uid, self._t)
        self._t.uid = uid
        return self

    def get_parallelism(self) -> int:
        """Return the operator's parallelism (the job default if not set)."""
        return self._t.parallelism or self._env.get_parallelism()

    def set_parallelism(self, parallelism: int) -> "DataStream":
        """Set this operator's parallelism; returns self.

        Raises:
            ValueError: ``parallelism`` is not a positive int.
            JobGraphError: the operator cannot have that parallelism (a partitioning
                such as ``key_by`` has none; ``from_collection`` only 1).
        """
        if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
            raise ValueError(f"parallelism must be an int >= 1, got {parallelism!r}")
        if self._t.kind in (T.PARTITION, T.UNION):
            raise JobGraphError(f"cannot set the parallelism of a {self._t.kind} ({self._t.name}); "
                                "set it on the operator that follows")
        limit = getattr(self._t.function, "max_parallelism", None) if self._t.kind == T.SOURCE else None
        if limit is not None and parallelism > limit:
            raise JobGraphError(f"source {self._t.name!r} supports parallelism {limit} at most, "
                                f"got {parallelism}")
        self._t.parallelism = parallelism
        return self

    def set_max_parallelism(self, max_parallelism: int) -> "DataStream":
        """Set this operator's max parallelism (its number of key groups); returns self."""
        if not isinstance(max_parallelism, int) or not 1 <= max_parallelism <= 32768:
            raise ValueError(f"max parallelism must be an int in [1, 32768], got {max_parallelism!r}")
        self._t.max_parallelism = max_parallelism
        return self

    def disable_chaining(self) -> "DataStream":
        """Keep this operator out of operator chains (it gets its own task); returns self."""
        self._t.chaining = False
        return self

    # -- transformations -------------------------------------------------------
    def _one_input(self, kind: str, name: str, function: Any, key_selector=None) -> Transformation:
        t = Transformation(kind=kind, name=name, inputs=[self._t], function=function,
                           key_selector=key_selector)
        self._env._add(t)
        return t

    def map(self, func: MapFunction | Callable[[Any], Any]) -> "DataStream":
        """Apply ``func`` to every record; emits one record per record."""
        func = _check_function(func, MapFunction, "map", "map")
        return DataStream(self._env, self._one_input(T.MAP, "Map", func))

    def flat_map(self, func: FlatMapFunction | Callable[[Any], Any]) -> "DataStream":
        """Apply ``func`` to every record; it returns an iterable of zero or more records."""
        func = _check_function(func, FlatMapFunction, "flat_map", "flat_map")
        return DataStream(self._env, self._one_input(T.FLAT_MAP, "Flat Map", func))

    def filter(self, func: FilterFunction | Callable[[Any], bool]) -> "DataStream":
        """Keep the records for which ``func`` returns true."""
        func = _check_function(func, FilterFunction, "filter", "filter")
        return DataStream(self._env, self._one_input(T.FILTER, "Filter", func))

    def process(self, func: ProcessFunction) -> "DataStream":
        """Apply a :class:`ProcessFunction` (any number of outputs per record)."""
        if isinstance(func, KeyedProcessFunction):
            raise JobGraphError("a KeyedProcessFunction needs a KeyedStream: call key_by(...) first")
        func = _check_function(func, ProcessFunction, "process", "process")
        return DataStream(self._env, self._one_input(T.PROCESS, "Process", func))

    def assign_timestamps_and_watermarks(self, watermark_strategy) -> "DataStream":
        """Give records event timestamps and emit watermarks (see :class:`~emrflow.api.eventtime.WatermarkStrategy`)."""
        from emrflow.api.eventtime import WatermarkStrategy
        if not isinstance(watermark_strategy, WatermarkStrategy):
            raise TypeError(f"expected a WatermarkStrategy, got {watermark_strategy!r}")
        watermark_strategy.timestamp_function()  # fails early without an assigner
        return DataStream(self._env, self._one_input(T.TIMESTAMPS, "Timestamps/Watermarks",
                                                     watermark_strategy))

    def get_side_output(self, output_tag) -> "DataStream":
        """The records this operator emitted to the side output ``output_tag``."""
        from emrflow.api.functions import OutputTag
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"get_side_output expects an OutputTag, got {output_tag!r}")
        t = Transformation(kind=T.SIDE_OUTPUT, name=f"Side output {output_tag.tag_id}",
                           inputs=[self._t], tag=output_tag.tag_id)
        self._env._add(t)
        return DataStream(self._env, t)

    def window_all(self, window_assigner) -> "AllWindowedStream":
        """Windows over all records (not keyed), computed by one subtask."""
        from emrflow.api.windowed import AllWindowedStream
        keyed = self.key_by(_constant_key)
        return AllWindowedStream(keyed, window_assigner, all_windows=True)

    def count_window_all(self, size: int, slide: int | None = None) -> "AllWindowedStream":
        """Count windows over all records (see :meth:`KeyedStream.count_window`)."""
        return _count_window(self.window_all(_global()), size, slide)

    def key_by(self, key_selector: Any) -> "KeyedStream":
        """Partition the stream by key (hash partitioning over key groups).

        Args:
            key_selector: callable, :class:`KeySelector`, int field position,
                tuple of positions, or str (see :func:`key_selector_of`).
        """
        fn = key_selector_of(key_selector)
        t = Transformation(kind=T.PARTITION, name="Key By", inputs=[self._t],
                           partitioner=T.HASH, key_selector=fn)
        self._env._add(t)
        return KeyedStream(self._env, t)

    def _partition(self, partitioner: str, name: str) -> "DataStream":
        t = Transformation(kind=T.PARTITION, name=name, inputs=[self._t], partitioner=partitioner)
        self._env._add(t)
        return DataStream(self._env, t)

    def rebalance(self) -> "DataStream":
        """Distribute records round-robin over the next operator's subtasks."""
        return self._partition(T.REBALANCE, "Rebalance")

    def broadcast(self) -> "DataStream":
        """Send every record to every subtask of the next operator."""
        return self._partition(T.BROADCAST, "Broadcast")

    def forward(self) -> "DataStream":
        """Send subtask i's records to subtask i of the next operator (equal parallelism)."""
        return self._partition(T.FORWARD, "Forward")

    def union(self, *streams: "DataStream") -> "DataStream":
        """Merge this stream with ``streams`` (records of the same type); no ordering across inputs."""
        for s in streams:
            if not isinstance(s, DataStream):
                raise TypeError(f"union expects DataStreams, got {s!r}")
            if s._env is not self._env:
                raise JobGraphError("cannot union streams of different execution environments")
        t = Transformation(kind=T.UNION, name="Union", inputs=[self._t] + [s._t for s in streams])
        self._env._add(t)
        return DataStream(self._env, t)

    # -- sinks ---------------------------------------------------------------
    def sink_to(self, sink: "Sink") -> "DataStreamSink":
        """Write the stream to ``sink`` (a :class:`~emrflow.connectors.base.Sink`)."""
        from emrflow.connectors.base import Sink
        if not isinstance(sink, Sink):
            raise TypeError(f"sink_to expects an emrflow Sink, got {sink!r}")
        t = self._one_input(T.SINK, f"Sink: {sink.default_name}", sink)
        return DataStreamSink(self._env, t)

    def add_sink(self, sink_func: SinkFunction | Callable[[Any], None]) -> "DataStreamSink":
        """Call ``sink_func`` (a :class:`SinkFunction` or callable) for every record (at-least-once)."""
        from emrflow.connectors.functions import FunctionSink
        sink_func = _check_function(sink_func, SinkFunction, "invoke", "add_sink")
        return self.sink_to(FunctionSink(sink_func))

    def print(self, sink_identifier: str | None = None) -> "DataStreamSink":
        """Print every record to the TaskManager's standard output, as Flink's ``print()``.

        With parallelism > 1 each line starts with ``<subtask index + 1>> ``.
        """
        from emrflow.connectors.functions import PrintSink
        return self.sink_to(PrintSink(sink_identifier))

    def write_as_text(self, path: str, write_mode=None) -> "DataStreamSink":
        """Write ``str(record)`` lines into part files under directory ``path``."""
        from emrflow.connectors.files import TextFileSink, WriteMode
        return self.sink_to(TextFileSink(path, write_mode or WriteMode.NO_OVERWRITE))

    def write_as_csv(self, path: str, write_mode=None, header: list[str] | None = None,
                     delimiter: str = ",") -> "DataStreamSink":
        """Write tuple records as CSV part files under directory ``path``, with an optional header."""
        from emrflow.connectors.files import CsvFileSink, WriteMode
        return self.sink_to(CsvFileSink(path, delimiter=delimiter, header=header,
                                        write_mode=write_mode or WriteMode.NO_OVERWRITE))

    def execute_and_collect(self, job_name: str | None = None, limit: int | None = None) -> list:
        """Run the job and return this stream's records as a list (for tests and notebooks).

        The records travel back through files in a temporary local directory, so the
        TaskManagers must share the client's file system (the ``local`` target).

        Args:
            job_name: the job's name.
            limit: return at most this many records.
        """
        from emrflow.testing import execute_and_collect
        return execute_and_collect(self, job_name=job_name, limit=limit)


class KeyedStream(DataStream):
    """A stream partitioned by key (Flink's ``KeyedStream``); keyed operators keep state per key.

    In STREAMING mode ``reduce``/``sum``/``min``/``max``/``min_by``/``max_by`` emit the
    updated value for every record; in BATCH mode they emit one final record per
    key when the input ends.
    """

    def _keyed(self, kind: str, name: str, function: Any) -> DataStream:
        return DataStream(self._env, self._one_input(kind, name, function, self._t.key_selector))

    def reduce(self, func: ReduceFunction | Callable[[Any, Any], Any]) -> DataStream:
        """Combine the records of each key with ``func(accumulated, new)`` (associative)."""
        func = _check_function(func, ReduceFunction, "reduce", "reduce")
        return self._keyed(T.KEYED_REDUCE, "Keyed Reduce", func)

    def _aggregate(self, kind: str, position: Any, first: bool = True) -> DataStream:
        if position is not None and not isinstance(position, (int, str)) or isinstance(position, bool):
            raise TypeError(f"{kind} expects a field position (int), a field name (str) or None, "
                            f"got {position!r}")
        return self._keyed(T.KEYED_AGGREGATE, f"Keyed Aggregation ({kind})",
                           AggregationSpec(kind, position, first))

    def sum(self, position_to_sum: int | str | None = None) -> DataStream:
        """Running sum of field ``position_to_sum`` per key.

        The output is the key's first record with that field replaced by the sum;
        ``None`` sums scalar records themselves.
        """
        return self._aggregate("sum", position_to_sum)

    def min(self, position_to_min: int | str | None = None) -> DataStream:
        """Minimum of a field per key; the other fields are those of the key's first record."""
        return self._aggregate("min", position_to_min)

    def max(self, position_to_max: int | str | None = None) -> DataStream:
        """Maximum of a field per key; the other fields are those of the key's first record."""
        return self._aggregate("max", position_to_max)

    def min_by(self, position_to_min_by: int | str | None = None, first: bool = True) -> DataStream:
        """The whole record with the smallest field per key (on ties the first one, or the last)."""
        return self._aggregate("min_by", position_to_min_by, first)

    def max_by(self, position_to_max_by: int | str | None = None, first: bool = True) -> DataStream:
        """The whole record with the greatest field per key (on ties the first one, or the last)."""
        return self._aggregate("max_by", position_to_max_by, first)

    def window(self, window_assigner) -> "WindowedStream":
        """Group each key's records into windows of ``window_assigner``."""
        from emrflow.api.windowed import WindowedStream
        return WindowedStream(self, window_assigner)

    def count_window(self, size: int, slide: int | None = None) -> "WindowedStream":
        """Windows of ``size`` records per key, every ``slide`` records if given (Flink's countWindow).

        Tumbling: fires and purges every ``size`` records. Sliding: fires every ``slide``
        records with the last ``size`` of them.
        """
        return _count_window(self.window(_global()), size, slide)

    # Narrower than DataStream.process on purpose, as Flink's KeyedStream.process(KeyedProcessFunction):
    # a keyed stream's process function gets keyed state and timers.
    def process(self, func: KeyedProcessFunction) -> DataStream:  # type: ignore[override]
        """Apply a :class:`KeyedProcessFunction` with keyed state."""
        func = _check_function(func, KeyedProcessFunction, "process", "process")
        if not isinstance(func, KeyedProcessFunction):
            raise TypeError(f"KeyedStream.process expects a KeyedProcessFunction, got {name_of(func)}")
        return self._keyed(T.KEYED_PROCESS, "Keyed Process", func)

    def name(self, name: str) -> "KeyedStream":
        raise JobGraphError("key_by has no operator to name; name the operator that follows")

    def uid(self, uid: str) -> "KeyedStream":
        raise JobGraphError("key_by has no operator to give a uid; set it on the operator that follows")


class DataStreamSink:
    """The end of a stream written to a sink (Flink's ``DataStreamSink``)."""

    def __init__(self, env: "StreamExecutionEnvironment", transformation: Transformation):
        self._env = env
        self._t = transformation

    def name(self, name: str) -> "DataStreamSink":
        """Set the sink operator's name; returns self."""
        self._t.name = str(name)
        return self

    def uid(self, uid: str) -> "DataStreamSink":
        """Set the sink operator's stable id; returns self."""
        self._env._register_uid(uid, self._t)
        self._t.uid = uid
        return self

    def set_parallelism(self, parallelism: int) -> "DataStreamSink":
        """Set the sink's parallelism (its number of part files); returns self."""
        DataStream.set_parallelism(self, parallelism)  # type: ignore[arg-type]
        return self

    def disable_chaining(self) -> "DataStreamSink":
        """Keep the sink out of operator chains; returns self."""
        self._t.chaining = False
        return self


def _constant_key(value: Any) -> int:
    return 0


def _global():
    from emrflow.api.windowing import GlobalWindows
    return GlobalWindows.create()


def _count_window(windowed, size: int, slide: int | None):
    from emrflow.api.windowing import CountEvictor, CountTrigger, PurgingTrigger
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"count window size must be an int >= 1, got {size!r}")
    if slide is None:
        return windowed.trigger(PurgingTrigger.of(CountTrigger.of(size)))
    if not isinstance(slide, int) or slide < 1:
        raise ValueError(f"count window slide must be an int >= 1, got {slide!r}")
    return windowed.evictor(CountEvictor.of(size)).trigger(CountTrigger.of(slide))
