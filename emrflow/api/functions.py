"""User function interfaces, with Flink's (PyFlink's) names.

Every transformation accepts either a plain callable or an instance of the
matching function class. Function classes may override :meth:`Function.open`,
called once per subtask before the first record with the subtask's
:class:`RuntimeContext`, and :meth:`Function.close`, called after the last.
Instances are shipped to the TaskManagers with cloudpickle, so every subtask
gets its own copy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterable


class RuntimeContext:
    """What a user function can learn about the subtask it runs in.

    Mirrors Flink's ``RuntimeContext``. Keyed state is only available in
    functions applied to a ``KeyedStream``.
    """

    def __init__(self, task_name: str, subtask_index: int, parallelism: int,
                 max_parallelism: int, attempt: int, job_parameters: Any,
                 state_backend=None):
        self._task_name = task_name
        self._subtask_index = subtask_index
        self._parallelism = parallelism
        self._max_parallelism = max_parallelism
        self._attempt = attempt
        self._job_parameters = job_parameters
        self._state_backend = state_backend

    def get_task_name(self) -> str:
        """Return the name of the operator this function belongs to."""
        return self._task_name

    def get_index_of_this_subtask(self) -> int:
        """Return the 0-based index of this parallel subtask."""
        return self._subtask_index

    def get_number_of_parallel_subtasks(self) -> int:
        """Return the operator's parallelism."""
        return self._parallelism

    def get_max_number_of_parallel_subtasks(self) -> int:
        """Return the job's max parallelism (the number of key groups)."""
        return self._max_parallelism

    def get_attempt_number(self) -> int:
        """Return the restart attempt, 0 for the first execution."""
        return self._attempt

    def get_job_parameter(self, key: str, default_value: Any = None) -> Any:
        """Return the job's configuration value for ``key`` (typed), or ``default_value``.

        Args:
            key: a configuration key (``docs/configuration.md``).
            default_value: returned when ``key`` is unknown or neither set nor defaulted.
        """
        params = self._job_parameters
        from emrflow.config import OPTIONS, Configuration
        if isinstance(params, Configuration):
            value = params.get(key) if key in OPTIONS else None
            return default_value if value is None else value
        return params.get(key, default_value)

    def _backend(self):
        if self._state_backend is None:
            from emrflow.errors import JobGraphError
            raise JobGraphError(
                f"operator {self._task_name!r}: keyed state is only available on a "
                "KeyedStream (call key_by(...) first)")
        return self._state_backend

    def get_state(self, state_descriptor):
        """Return the keyed :class:`~emrflow.api.state.ValueState` described by ``state_descriptor``.

        The handle always refers to the value of the key of the record being processed.

        Raises:
            JobGraphError: the function is not applied to a keyed stream.
        """
        from emrflow.api.state import ValueStateDescriptor
        if not isinstance(state_descriptor, ValueStateDescriptor):
            raise TypeError(f"get_state expects a ValueStateDescriptor, got {state_descriptor!r}")
        return self._backend().get_state(state_descriptor)

    def get_list_state(self, state_descriptor):
        """Return the keyed :class:`~emrflow.api.state.ListState` of a ``ListStateDescriptor``."""
        return self._backend().get_state(state_descriptor)

    def get_map_state(self, state_descriptor):
        """Return the keyed :class:`~emrflow.api.state.MapState` of a ``MapStateDescriptor``."""
        return self._backend().get_state(state_descriptor)

    def get_reducing_state(self, state_descriptor):
        """Return the keyed :class:`~emrflow.api.state.ReducingState` of a ``ReducingStateDescriptor``."""
        return self._backend().get_state(state_descriptor)

    def get_aggregating_state(self, state_descriptor):
        """Return the keyed :class:`~emrflow.api.state.AggregatingState` of an ``AggregatingStateDescriptor``."""
        return self._backend().get_state(state_descriptor)


class Function(ABC):
    """Base of all user function classes."""

    def open(self, runtime_context: RuntimeContext) -> None:
        """Set up the function in its subtask (open files, create state handles)."""

    def close(self) -> None:
        """Release what :meth:`open` acquired; called once after the last record."""


class MapFunction(Function):
    """One record in, one record out."""

    @abstractmethod
    def map(self, value: Any) -> Any:
        """Return the output record for ``value``."""


class FlatMapFunction(Function):
    """One record in, zero or more out."""

    @abstractmethod
    def flat_map(self, value: Any) -> Iterable[Any]:
        """Return (or yield) the output records for ``value``."""


class FilterFunction(Function):
    """Keeps the records for which :meth:`filter` is true."""

    @abstractmethod
    def filter(self, value: Any) -> bool:
        """Return True to keep ``value``."""


class ReduceFunction(Function):
    """Combines two values of the same key into one; must be associative."""

    @abstractmethod
    def reduce(self, value1: Any, value2: Any) -> Any:
        """Return the combination of two values of the same key."""


class KeySelector(Function):
    """Extracts the key of a record for ``key_by``."""

    @abstractmethod
    def get_key(self, value: Any) -> Any:
        """Return the key of ``value`` (str, int, float, bytes, tuple, ...)."""


class SinkFunction(Function):
    """Receives every record that reaches an ``add_sink`` sink (at-least-once)."""

    @abstractmethod
    def invoke(self, value: Any, context: Any = None) -> None:
        """Consume one record."""


class ProcessFunction(Function):
    """Low-level per-record function; may emit any number of records.

    :meth:`process_element` either returns/yields output records or returns ``None``.
    """

    class Context(ABC):
        """Per-record context of a :class:`ProcessFunction`; ``output(tag, value)`` emits to a side output."""

        def timestamp(self) -> int | None:
            """Return the record's event timestamp in ms, or ``None`` if it has none."""
            return None

    @abstractmethod
    def process_element(self, value: Any, ctx: "ProcessFunction.Context") -> Iterable[Any] | None:
        """Handle one record; return or yield outputs (or return None)."""


class KeyedProcessFunction(Function):
    """A :class:`ProcessFunction` on a ``KeyedStream``, with keyed state.

    Obtain state in :meth:`open` through ``runtime_context.get_state(...)``; in
    :meth:`process_element` it refers to the current record's key.
    """

    class Context(ABC):
        """Per-record context of a :class:`KeyedProcessFunction`.

        Also offers ``timer_service()`` (``register_event_time_timer(ms)``,
        ``register_processing_time_timer(ms)``, ``delete_*``, ``current_watermark()``,
        ``current_processing_time()``) and ``output(tag, value)`` for side outputs.
        """

        @abstractmethod
        def get_current_key(self) -> Any:
            """Return the key of the record being processed."""

        def timestamp(self) -> int | None:
            """Return the record's event timestamp in ms, or ``None``."""
            return None

    @abstractmethod
    def process_element(self, value: Any, ctx: "KeyedProcessFunction.Context") -> Iterable[Any] | None:
        """Handle one record of the current key; return or yield outputs (or return None)."""

    def on_timer(self, timestamp: int, ctx: "KeyedProcessFunction.OnTimerContext") -> Iterable[Any] | None:
        """Called when a timer registered through ``ctx.timer_service()`` fires.

        ``ctx.time_domain()`` says which clock, ``ctx.get_current_key()`` the timer's key;
        outputs carry ``timestamp``. Event-time timers fire when the watermark passes
        them (all of them at the end of a bounded input); processing-time timers when the
        wall clock does, and not after the input ended (as in Flink).
        """
        return None

    class OnTimerContext(ABC):
        """Context of :meth:`KeyedProcessFunction.on_timer`."""

        @abstractmethod
        def time_domain(self) -> str:
            """Return ``TimeDomain.EVENT_TIME`` or ``TimeDomain.PROCESSING_TIME``."""


def name_of(fn: Any) -> str:
    """Return a short human name for a user function (for operator names and messages)."""
    if isinstance(fn, Function):
        return type(fn).__name__
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name or type(fn).__name__


class OutputTag:
    """Names a side output (Flink's ``OutputTag``); emit with ``ctx.output(tag, value)``.

    Args:
        tag_id: unique name of the side output.
        type_info: optional type hint (kept for PyFlink compatibility).
    """

    def __init__(self, tag_id: str, type_info: Any = None):
        if not isinstance(tag_id, str) or not tag_id:
            raise ValueError(f"an OutputTag needs a non-empty name, got {tag_id!r}")
        self.tag_id = tag_id
        self.type_info = type_info

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputTag) and other.tag_id == self.tag_id

    def __hash__(self) -> int:
        return hash(("OutputTag", self.tag_id))

    def __repr__(self) -> str:
        return f"OutputTag({self.tag_id!r})"


class AggregateFunction(Function):
    """Incremental aggregation with an accumulator (Flink's ``AggregateFunction``).

    ``create_accumulator() -> acc``, ``add(value, acc) -> acc``, ``get_result(acc) -> out``,
    ``merge(acc_a, acc_b) -> acc`` (for merging session windows).
    """

    @abstractmethod
    def create_accumulator(self) -> Any:
        """Return a new, empty accumulator."""

    @abstractmethod
    def add(self, value: Any, accumulator: Any) -> Any:
        """Return the accumulator with ``value`` added."""

    @abstractmethod
    def get_result(self, accumulator: Any) -> Any:
        """Return the result of an accumulator."""

    def merge(self, acc_a: Any, acc_b: Any) -> Any:
        """Combine two accumulators (needed by merging windows)."""
        raise TypeError(f"{type(self).__name__} must implement merge() to be used with session windows")


class WindowFunction(Function):
    """``apply(key, window, inputs) -> iterable of outputs`` (Flink's ``WindowFunction``)."""

    @abstractmethod
    def apply(self, key: Any, window: Any, inputs: Iterable[Any]) -> Iterable[Any]:
        """Return or yield the outputs of one window of ``key``."""


class ProcessWindowFunction(Function):
    """``process(key, context, elements) -> iterable of outputs`` with window metadata.

    ``context.window()`` is the window; ``context.current_watermark()``,
    ``context.current_processing_time()``, ``context.output(tag, value)`` for side
    outputs. (Flink's ``ProcessWindowFunction``.)
    """

    class Context(ABC):
        @abstractmethod
        def window(self) -> Any:
            """Return the window being evaluated."""

    @abstractmethod
    def process(self, key: Any, context: "ProcessWindowFunction.Context", elements: Iterable[Any]) -> Iterable[Any]:
        """Return or yield the outputs of one window of ``key``; ``context.window()`` is the window."""


class AllWindowFunction(Function):
    """``apply(window, inputs)`` for non-keyed windows."""

    @abstractmethod
    def apply(self, window: Any, inputs: Iterable[Any]) -> Iterable[Any]:
        """Return or yield the outputs of one window."""


class ProcessAllWindowFunction(Function):
    """``process(context, elements)`` for non-keyed windows."""

    @abstractmethod
    def process(self, context: Any, elements: Iterable[Any]) -> Iterable[Any]:
        """Return or yield the outputs of one window; ``context.window()`` is the window."""


class TimeDomain:
    """Which clock fired a timer (Flink's ``TimeDomain``)."""

    EVENT_TIME = "EVENT_TIME"
    PROCESSING_TIME = "PROCESSING_TIME"
