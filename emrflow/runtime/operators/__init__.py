"""Physical operators: what runs inside a task, one batch of records at a time.

There are few physical operators, one class per operator kind of the JobGraph
(:data:`OPERATORS`); :func:`create_operator` builds a node's operator through its
class's ``from_node``. Modules:

* :mod:`~emrflow.runtime.operators.base`: :class:`Operator`, :class:`Output` and the
  helpers keyed operators share (keyed snapshots, process-function context).
* :mod:`~emrflow.runtime.operators.basic`: source, map, flat_map, filter, process,
  timestamps/watermarks, sink.
* :mod:`~emrflow.runtime.operators.keyed`: keyed process functions with timers; keyed
  reduce and the rolling aggregations (sum, min, max, min_by, max_by).
* :mod:`~emrflow.runtime.operators.window`: the generic window operator.
* :mod:`~emrflow.runtime.operators.aligned`: tumbling/sliding event-time windows, with
  the fast path for the built-in aggregates (``Count()``, ``Sum(field)``, ...).
"""

from __future__ import annotations

from typing import Any

from emrflow.api import transformations as T
from emrflow.config import Configuration
from emrflow.runtime.operators.aligned import AlignedWindowOperator
from emrflow.runtime.operators.base import (
    Operator,
    OperatorSetup,
    Output,
    ProcessContext,
    key_filter,
    keyed_restore,
    keyed_snapshot,
)
from emrflow.runtime.operators.basic import (
    FilterOperator,
    FlatMapOperator,
    MapOperator,
    ProcessOperator,
    SinkOperator,
    SourceOperator,
    TimestampsOperator,
)
from emrflow.runtime.operators.keyed import KeyedAggregateOperator, KeyedProcessOperator, TimerService
from emrflow.runtime.operators.window import WindowOperator

#: operator kind of a JobGraph node -> the class that runs it
OPERATORS: dict[str, type[Operator]] = {
    T.SOURCE: SourceOperator,
    T.MAP: MapOperator,
    T.FLAT_MAP: FlatMapOperator,
    T.FILTER: FilterOperator,
    T.PROCESS: ProcessOperator,
    T.TIMESTAMPS: TimestampsOperator,
    T.SINK: SinkOperator,
    T.KEYED_PROCESS: KeyedProcessOperator,
    T.KEYED_REDUCE: KeyedAggregateOperator,
    T.KEYED_AGGREGATE: KeyedAggregateOperator,
    T.WINDOW: WindowOperator,  # AlignedWindowOperator where it accepts the windows
}


def window_operator_class(spec: Any, timestamped: bool) -> type[WindowOperator]:
    """The class for windows of ``spec`` (a :class:`~emrflow.api.windowed.WindowSpec`):
    :class:`AlignedWindowOperator` for aligned event-time windows, else the generic one."""
    return AlignedWindowOperator if AlignedWindowOperator.accepts(spec, timestamped) else WindowOperator


def create_operator(node: Any, batch: bool, max_parallelism: int, sink_writer: Any = None,
                    config: Any = None) -> Operator:
    """Instantiate the physical operator of an :class:`~emrflow.graph.jobgraph.OperatorNode`.

    Args:
        node: the JobGraph node.
        batch: the job runs in BATCH mode.
        max_parallelism: the vertex's number of key groups.
        sink_writer: for a sink node, its writer.
        config: the job's :class:`~emrflow.config.Configuration`, ``None`` for the defaults.

    Raises:
        ValueError: the node's kind has no operator.
    """
    cls = OPERATORS.get(node.kind)
    if cls is None:
        raise ValueError(f"unknown operator kind {node.kind!r} of operator {node.name!r}")
    if cls is WindowOperator:
        cls = window_operator_class(node.function, node.timestamped)
    setup = OperatorSetup(batch=batch, max_parallelism=max_parallelism, sink_writer=sink_writer,
                          config=config if config is not None else Configuration())
    return cls.from_node(node, setup)


__all__ = [
    "OPERATORS", "AlignedWindowOperator", "FilterOperator", "FlatMapOperator", "KeyedAggregateOperator",
    "KeyedProcessOperator", "MapOperator", "Operator", "OperatorSetup", "Output", "ProcessContext",
    "ProcessOperator", "SinkOperator", "SourceOperator", "TimerService", "TimestampsOperator",
    "WindowOperator", "create_operator", "key_filter", "keyed_restore", "keyed_snapshot",
    "window_operator_class",
]
