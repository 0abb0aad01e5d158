"""WindowedStream and AllWindowedStream (Flink's windowed streams).

``keyed.window(assigner)`` groups each key's records into windows; a window
function turns each window into results when its trigger fires::

    (ratings.assign_timestamps_and_watermarks(strategy)
        .key_by(lambda r: r.movie)
        .window(TumblingEventTimeWindows.of(Time.days(7)))
        .aggregate(CountAndMean(), window_function=WithWindowEnd()))

Results carry the timestamp ``window.max_timestamp()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emrflow.api import transformations as T
from emrflow.api.aggregates import is_builtin_aggregate
from emrflow.api.eventtime import to_millis
from emrflow.api.functions import (
    AggregateFunction,
    AllWindowFunction,
    OutputTag,
    ProcessAllWindowFunction,
    ProcessWindowFunction,
    ReduceFunction,
    WindowFunction,
)
from emrflow.api.transformations import Transformation
from emrflow.api.windowing import (
    Evictor,
    SlidingEventTimeWindows,
    Trigger,
    TumblingEventTimeWindows,
    WindowAssigner,
)
from emrflow.errors import JobGraphError

if TYPE_CHECKING:
    from emrflow.api.datastream import DataStream


@dataclass
class WindowSpec:
    """Everything the window operator needs (shipped to the TaskManagers).

    Attributes:
        assigner: the window assigner.
        trigger: the trigger (the assigner's default if not set).
        evictor: an evictor or ``None``.
        allowed_lateness_ms: how long after the watermark passed a window's end late
            records still update it.
        late_tag: side-output name for records too late, or ``None`` (dropped).
        kind: ``reduce``, ``aggregate``, ``process`` or ``apply``.
        function: the reduce function, AggregateFunction, ProcessWindowFunction or WindowFunction.
        window_function: for ``reduce``/``aggregate``, an optional function applied to the result.
        all_windows: non-keyed windows (``window_all``): functions take no key.
    """

    assigner: WindowAssigner
    trigger: Trigger | None = None
    evictor: Evictor | None = None
    allowed_lateness_ms: int = 0
    late_tag: str | None = None
    kind: str = "reduce"
    function: Any = None
    window_function: Any = None
    all_windows: bool = False

    def is_aligned(self) -> bool:
        """Runs on the aligned-window operator: tumbling or sliding event-time windows, the
        default trigger, no evictor, no allowed lateness, and ``reduce`` or ``aggregate``."""
        return (isinstance(self.assigner, (TumblingEventTimeWindows, SlidingEventTimeWindows))
                and self.trigger is None and self.evictor is None and self.allowed_lateness_ms == 0
                and self.kind in ("reduce", "aggregate"))

    def is_fast_path(self) -> bool:
        """Aligned windows aggregated by a built-in (:mod:`emrflow.api.aggregates`), which the
        operator folds per batch instead of calling ``add`` per record."""
        return self.is_aligned() and self.kind == "aggregate" and is_builtin_aggregate(self.function)


class WindowedStream:
    """A keyed stream grouped into windows; finish it with a window function."""

    def __init__(self, keyed: "DataStream", assigner: WindowAssigner, all_windows: bool = False):
        if not isinstance(assigner, WindowAssigner):
            raise TypeError(f"window expects a WindowAssigner, got {assigner!r}")
        self._keyed = keyed
        self._spec = WindowSpec(assigner=assigner, all_windows=all_windows)

    def trigger(self, trigger: Trigger) -> "WindowedStream":
        """Replace the assigner's default trigger."""
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger expects a Trigger, got {trigger!r}")
        self._spec.trigger = trigger
        return self

    def evictor(self, evictor: Evictor) -> "WindowedStream":
        """Remove elements before/after the window function (keeps all elements in state)."""
        if not isinstance(evictor, Evictor):
            raise TypeError(f"evictor expects an Evictor, got {evictor!r}")
        self._spec.evictor = evictor
        return self

    def allowed_lateness(self, time_ms: Any) -> "WindowedStream":
        """Keep windows for ``time_ms`` after the watermark passed their end; late records fire them again."""
        ms = to_millis(time_ms, "allowed lateness")
        if ms < 0:
            raise ValueError(f"allowed lateness must be >= 0 ms, got {ms}")
        self._spec.allowed_lateness_ms = ms
        return self

    def side_output_late_data(self, output_tag: OutputTag) -> "WindowedStream":
        """Send records that arrive after their window was cleaned up to ``output_tag``."""
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"side_output_late_data expects an OutputTag, got {output_tag!r}")
        self._spec.late_tag = output_tag.tag_id
        return self

    def _build(self, kind: str, function: Any, window_function: Any, name: str) -> "DataStream":
        from emrflow.api.datastream import DataStream
        spec = self._spec
        spec.kind, spec.function, spec.window_function = kind, function, window_function
        if kind == "aggregate" and is_builtin_aggregate(function):
            name = f"Window(aggregate {function!r}{', fast path' if spec.is_fast_path() else ''})"
        if spec.assigner.is_merging and kind in ("aggregate",) and spec.evictor is None \
                and type(function).merge is AggregateFunction.merge:
            raise JobGraphError("session windows merge accumulators: the AggregateFunction needs merge()")
        t = Transformation(kind=T.WINDOW, name=name, inputs=[self._keyed._t], function=spec,
                           key_selector=self._keyed._t.key_selector)
        if spec.all_windows:
            t.parallelism = 1
        self._keyed._env._add(t)
        return DataStream(self._keyed._env, t)

    def reduce(self, reduce_function: Any, window_function: Any = None) -> "DataStream":
        """Combine each window's records incrementally; optionally pass the result to a window function."""
        if not (isinstance(reduce_function, ReduceFunction) or callable(reduce_function)):
            raise TypeError(f"reduce expects a ReduceFunction or callable, got {reduce_function!r}")
        return self._build("reduce", reduce_function, window_function, "Window(reduce)")

    def aggregate(self, aggregate_function: AggregateFunction, window_function: Any = None) -> "DataStream":
        """Aggregate each window with an :class:`AggregateFunction`; optionally then a window function.

        A built-in aggregate (:class:`~emrflow.api.aggregates.Count`, ``Sum``, ``Min``, ``Max``,
        ``Avg``) is named in the operator's name, with ``, fast path`` when the aligned-window fast
        path folds it (see :meth:`WindowSpec.is_fast_path`): ``Window(aggregate Count(), fast path)``.
        """
        if not isinstance(aggregate_function, AggregateFunction):
            raise TypeError(f"aggregate expects an AggregateFunction, got {aggregate_function!r}")
        return self._build("aggregate", aggregate_function, window_function, "Window(aggregate)")

    def process(self, process_window_function: Any) -> "DataStream":
        """Call a :class:`ProcessWindowFunction` with all of a window's records and its metadata."""
        if not isinstance(process_window_function, (ProcessWindowFunction, ProcessAllWindowFunction)):
            raise TypeError(f"process expects a ProcessWindowFunction, got {process_window_function!r}")
        return self._build("process", process_window_function, None, "Window(process)")

    def apply(self, window_function: Any) -> "DataStream":
        """Call a :class:`WindowFunction` (or ``f(key, window, inputs)``) with all of a window's records."""
        if not (isinstance(window_function, (WindowFunction, AllWindowFunction)) or callable(window_function)):
            raise TypeError(f"apply expects a WindowFunction or callable, got {window_function!r}")
        return self._build("apply", window_function, None, "Window(apply)")


class AllWindowedStream(WindowedStream):
    """Windows over the whole stream (``window_all``), computed at parallelism 1."""
