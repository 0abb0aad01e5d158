"""The description a user's program builds: a DAG of transformations.

Nothing here runs anything. :mod:`emrflow.graph.jobgraph` turns the DAG into a
JobGraph (operator chains, edges with partitioners) and the runtime executes
that. Objects are plain data and are shipped with cloudpickle.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

_ids = itertools.count(1)

# Kinds of operator a transformation may carry (``Transformation.kind``).
SOURCE = "source"
MAP = "map"
FLAT_MAP = "flat_map"
FILTER = "filter"
PROCESS = "process"
KEYED_PROCESS = "keyed_process"
KEYED_REDUCE = "keyed_reduce"
KEYED_AGGREGATE = "keyed_aggregate"
SINK = "sink"
UNION = "union"
PARTITION = "partition"
TIMESTAMPS = "timestamps"
WINDOW = "window"
SIDE_OUTPUT = "side_output"

# Partitioners of an edge (Flink's StreamPartitioner names).
FORWARD = "forward"
HASH = "hash"
REBALANCE = "rebalance"
BROADCAST = "broadcast"


@dataclass(frozen=True)
class AggregationSpec:
    """A built-in keyed aggregation (``sum``, ``min``, ``max``, ``min_by``, ``max_by``).

    Attributes:
        kind: one of ``"sum"``, ``"min"``, ``"max"``, ``"min_by"``, ``"max_by"``.
        field: int position in a tuple/list record, str key of a dict record (or
            attribute name), or ``None`` for the record itself (scalar records).
        first: for ``min_by``/``max_by``, on ties keep the earlier record.
    """

    kind: str
    field: int | str | None
    first: bool = True


@dataclass(eq=False)
class Transformation:
    """One node of the user's dataflow.

    Attributes:
        kind: which operator (one of the module's kind constants).
        name: operator name shown in progress, metrics and errors.
        inputs: upstream transformations (several only for ``union``).
        function: the user function, source, sink or :class:`AggregationSpec`.
        parallelism: explicit parallelism, or ``None`` for the job default.
        max_parallelism: explicit max parallelism, or ``None`` for the job's.
        uid: stable operator id (for savepoints), or ``None``.
        partitioner: for ``partition`` nodes, how records go to the next operator.
        key_selector: for ``hash`` partitions and keyed operators, the key function.
        chaining: ``False`` keeps the operator out of operator chains.
        tag: for ``side_output`` nodes, the side output's name.
    """

    kind: str
    name: str
    inputs: list["Transformation"] = field(default_factory=list)
    function: Any = None
    parallelism: int | None = None
    max_parallelism: int | None = None
    uid: str | None = None
    partitioner: str | None = None
    key_selector: Callable[[Any], Any] | None = None
    chaining: bool = True
    tag: str | None = None
    id: int = field(default_factory=lambda: next(_ids))

    def __repr__(self) -> str:
        return f"Transformation({self.id}, {self.kind}, {self.name!r})"
