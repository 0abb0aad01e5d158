"""From the user's transformations to a JobGraph: operator chains, edges, partitioners.

The rules follow Flink's ``StreamingJobGraphGenerator``:

* only what leads to a sink is part of the job (a program without a sink is an error);
* ``key_by``, ``rebalance``, ``broadcast``, ``forward`` and ``union`` are virtual:
  they decide the partitioner of the edge into the next operator;
* an edge without an explicit partitioner is ``forward`` between equal
  parallelisms and ``rebalance`` otherwise;
* an operator is *chained* onto its input (same task, direct calls, no
  serialisation) when the edge is forward, parallelisms are equal, it has a
  single input and neither side disabled chaining. A chain may fan out: one
  operator may feed several chained operators and several edges.

A :class:`JobVertex` is one chain; it runs as ``parallelism`` subtasks.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from emrflow.api import transformations as T
from emrflow.api.transformations import Transformation
from emrflow.config import Configuration
from emrflow.errors import JobGraphError

KEYED_KINDS = (T.KEYED_REDUCE, T.KEYED_AGGREGATE, T.KEYED_PROCESS, T.WINDOW)
VIRTUAL_KINDS = (T.UNION, T.PARTITION, T.SIDE_OUTPUT)


@dataclass
class OperatorNode:
    """One operator inside a chain.

    Attributes:
        id: the transformation id (unique in the job).
        name: operator name.
        uid: stable user-given id, or ``None``.
        kind: operator kind (see :mod:`emrflow.api.transformations`).
        function: user function, source, sink or aggregation spec.
        key_selector: key function for keyed operators, else ``None``.
        chained_outputs: ids of operators in the same chain fed by this one.
        edge_outputs: indices in :attr:`JobGraph.edges` of the edges fed by this one.
        side_chained, side_edges: the same per side-output tag.
        timestamped: its input records are ``(timestamp ms, value)`` pairs (event time).
    """

    id: int
    name: str
    uid: str | None
    kind: str
    function: Any
    key_selector: Any = None
    chained_outputs: list[int] = field(default_factory=list)
    edge_outputs: list[int] = field(default_factory=list)
    side_chained: dict[str, list[int]] = field(default_factory=dict)
    side_edges: dict[str, list[int]] = field(default_factory=dict)
    timestamped: bool = False


@dataclass
class JobEdge:
    """A data exchange between two vertices.

    Attributes:
        index: position in :attr:`JobGraph.edges`.
        source_vertex, target_vertex: vertex ids.
        source_operator: id of the operator in the source chain that produces into the edge.
        partitioner: ``forward``, ``hash``, ``rebalance`` or ``broadcast``.
        key_selector: the key function for ``hash``.
        combine: for BATCH jobs, the keyed aggregation of the target that may be
            pre-applied per key before the exchange (local aggregation), else ``None``.
    """

    index: int
    source_vertex: int
    source_operator: int
    target_vertex: int
    partitioner: str
    key_selector: Any = None
    combine: Any = None


@dataclass
class JobVertex:
    """An operator chain, executed as ``parallelism`` subtasks.

    Attributes:
        id: id of the chain's head operator.
        name: the chained operators' names joined by ``" -> "``, as Flink shows them.
        parallelism: number of subtasks.
        max_parallelism: number of key groups.
        head: id of the first operator of the chain.
        operators: the chain's operators by id, in topological order.
        input_edges, output_edges: edge indices.
    """

    id: int
    name: str
    parallelism: int
    max_parallelism: int
    head: int
    operators: dict[int, OperatorNode] = field(default_factory=dict)
    input_edges: list[int] = field(default_factory=list)
    output_edges: list[int] = field(default_factory=list)

    @property
    def is_source(self) -> bool:
        """True if the chain starts with a source."""
        return self.operators[self.head].kind == T.SOURCE


@dataclass
class JobGraph:
    """The job as the runtime executes it; shipped to TaskManagers with cloudpickle.

    Attributes:
        job_id: 32 hex characters.
        name: job name.
        vertices: by id, in topological order.
        edges: all edges.
        config: the job's :class:`~emrflow.config.Configuration`; the runtime reads it only
            through it (and the views of :mod:`emrflow.config_views`).
        batch: True for BATCH execution.
    """

    job_id: str
    name: str
    vertices: dict[int, JobVertex]
    edges: list[JobEdge]
    config: Configuration
    batch: bool
    #: the restore plan of ``emrflow run -s`` (see :func:`emrflow.runtime.checkpoint.plan_restore`)
    restore: dict | None = None

    @property
    def max_vertex_parallelism(self) -> int:
        """Slots the job needs with slot sharing (one slot holds one subtask of every vertex)."""
        return max(v.parallelism for v in self.vertices.values())

    def num_input_channels(self, vertex_id: int) -> int:
        """Return how many channels feed one subtask of ``vertex_id`` (its input gate's size)."""
        return sum(1 if self.edges[e].partitioner == "forward"
                   else self.vertices[self.edges[e].source_vertex].parallelism
                   for e in self.vertices[vertex_id].input_edges)

    def region_of(self, vertex_id: int) -> frozenset[int]:
        """The pipelined region of ``vertex_id``: every vertex connected to it by edges.

        All exchanges are pipelined, so a region is a connected component of the graph
        (Flink's pipelined region); failover strategy ``region`` restarts one alone.
        """
        return frozenset(next(r for r in pipelined_regions(
            [v.id for v in self.vertices.values()],
            [(e.source_vertex, e.target_vertex) for e in self.edges]) if vertex_id in r))

    def channel_index(self, edge_index: int, producer_index: int) -> int:
        """Return the gate channel of ``producer_index`` on ``edge_index`` at each consumer subtask.

        Channels are numbered edge by edge in the consumer's ``input_edges`` order,
        then by producer subtask (a forward edge contributes one channel).
        """
        edge = self.edges[edge_index]
        base = 0
        for e in self.vertices[edge.target_vertex].input_edges:
            other = self.edges[e]
            if e == edge_index:
                return base + (0 if other.partitioner == "forward" else producer_index)
            base += 1 if other.partitioner == "forward" else self.vertices[other.source_vertex].parallelism
        raise ValueError(f"edge {edge_index} is not an input of vertex {edge.target_vertex}")

    def topology(self) -> dict:
        """Return the graph without user code, as plain data (what the JobManager needs)."""
        jm_keys = ("execution.checkpointing.", "state.", "restart-strategy", "jobmanager.execution.",
                   "execution.savepoint.", "s3.", "emrflow.bad-records.")
        return {
            "job_id": self.job_id, "name": self.name, "batch": self.batch,
            "checkpointing": bool(self.config.get("execution.checkpointing.interval")) and not self.batch,
            # the explicitly set keys the JobManager reads, as plain data; it reads them back
            # through a Configuration (jobmanager.machine)
            "config": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in self.config.explicit().items() if k.startswith(jm_keys)},
            "vertices": [{"id": v.id, "name": v.name, "parallelism": v.parallelism,
                          "max_parallelism": v.max_parallelism,
                          "operators": [{"id": o.id, "name": o.name, "uid": o.uid, "kind": o.kind}
                                        for o in v.operators.values()],
                          # a SplitSource's vertex: the uid of the source (its enumerator runs in the JM)
                          **({"split_source": _split_source_uid(v)} if _split_source_uid(v) else {})}
                         for v in self.vertices.values()],
            "edges": [{"source": e.source_vertex, "target": e.target_vertex,
                       "ship_strategy": e.partitioner.upper(),
                       "local_aggregation": e.combine is not None} for e in self.edges],
            "restore": self.restore,
        }

    def to_json(self) -> str:
        """Return :meth:`topology` as indented JSON."""
        return json.dumps(self.topology(), indent=2)

    def validate_connectors(self, sinks: bool = True) -> None:
        """Run every source's and sink's client-side checks (inputs exist, outputs may be written),
        with the file system of the job's configuration.

        Args:
            sinks: also check sinks; a job restored from a savepoint skips that, since its
                sinks continue output that exists already.

        Raises:
            InputNotFoundError, OutputExistsError: as the connectors raise them.
            StorageError: a source's or sink's file system cannot be reached (e.g. S3).
        """
        from emrflow.connectors.base import validate_connector
        from emrflow.errors import EmrflowError, StorageError
        from emrflow.fs import FileSystem
        file_system = FileSystem.of(self.config)
        kinds = (T.SOURCE, T.SINK) if sinks else (T.SOURCE,)
        for v in self.vertices.values():
            for op in v.operators.values():
                if op.kind in kinds:
                    try:
                        validate_connector(op.function, file_system)
                    except EmrflowError:
                        raise
                    except OSError as exc:  # pyarrow's S3 errors are long: their first line says it
                        path = str(getattr(op.function, "path", ""))
                        text = str(exc).strip().splitlines()
                        raise StorageError(f"{op.name}: cannot access {path}: "
                                           f"{text[0] if text else type(exc).__name__}", path) from None


def _split_source_uid(v: JobVertex) -> str | None:
    """The state id of the vertex's source when it is a SplitSource, else ``None``."""
    head = v.operators[v.head]
    if head.kind != T.SOURCE or not hasattr(head.function, "create_enumerator"):
        return None
    return head.uid if head.uid else f"auto-{head.id}"


def pipelined_regions(vertices: list[int], edges: list[tuple[int, int]]) -> list[set[int]]:
    """Split a graph into its connected components (pipelined regions), in vertex order."""
    parent = {v: v for v in vertices}

    def find(v: int) -> int:
        while parent[v] != v:
            parent[v] = parent[parent[v]]
            v = parent[v]
        return v
    for a, b in edges:
        parent[find(a)] = find(b)
    regions: dict[int, set[int]] = {}
    for v in vertices:
        regions.setdefault(find(v), set()).add(v)
    return list(regions.values())


def _reachable(transformations: list[Transformation]) -> list[Transformation]:
    """Return the transformations that lead to a sink, in topological order."""
    sinks = [t for t in transformations if t.kind == T.SINK]
    if not sinks:
        raise JobGraphError("the program defines no sink, so there is nothing to execute: "
                            "end each stream with print(), sink_to(...) or add_sink(...)")
    order: list[Transformation] = []
    seen: set[int] = set()

    def visit(t: Transformation) -> None:
        stack = [(t, False)]
        while stack:
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if node.id in seen:
                continue
            seen.add(node.id)
            stack.append((node, True))
            for i in reversed(node.inputs):
                if i.id not in seen:
                    stack.append((i, False))

    for s in sorted(sinks, key=lambda t: t.id):
        visit(s)
    return order


def _physical_inputs(t: Transformation) -> list[tuple[Transformation, str | None, Any, str | None]]:
    """Resolve virtual nodes: ``(upstream operator, partitioner or None, key selector, side-output tag)``."""
    out = []
    for i in t.inputs:
        stack = [(i, None, None, None)]
        while stack:
            node, part, key, tag = stack.pop()
            if node.kind == T.UNION:
                stack.extend((x, part, key, tag) for x in reversed(node.inputs))
            elif node.kind == T.PARTITION:
                # the partitioning nearest to the consumer wins, as in Flink
                stack.append((node.inputs[0], part or node.partitioner,
                              key if part else node.key_selector, tag))
            elif node.kind == T.SIDE_OUTPUT:
                stack.append((node.inputs[0], part, key, node.tag))
            else:
                out.append((node, part, key, tag))
    return out


def _on_value(key_selector):
    """A key selector for ``(timestamp, value)`` records that applies ``key_selector`` to the value
    (its ``on_value`` attribute: the hash writer reads field positions from it)."""
    on_value = lambda record, _k=key_selector: _k(record[1])  # noqa: E731
    on_value.on_value = key_selector  # type: ignore[attr-defined]
    return on_value


def build_job_graph(transformations: list[Transformation], config: Configuration, name: str,
                    batch: bool) -> JobGraph:
    """Translate transformations into a :class:`JobGraph`.

    Args:
        transformations: everything the program defined, in creation order.
        config: effective configuration (``parallelism.default``,
            ``pipeline.max-parallelism``, ``execution.batch.local-aggregation``).
        name: job name.
        batch: BATCH execution mode.

    Raises:
        JobGraphError: no sink; a forward edge between different parallelisms; a
            parallelism above the max parallelism; a keyed operator without key_by.
    """
    order = [t for t in _reachable(transformations) if t.kind not in VIRTUAL_KINDS]
    default_p = int(config.get("parallelism.default"))
    job_maxp = int(config.get("pipeline.max-parallelism"))
    local_agg = bool(config.get("execution.batch.local-aggregation"))

    par: dict[int, int] = {}
    maxp: dict[int, int] = {}
    inputs: dict[int, list] = {}
    stamped: dict[int, bool] = {}      # the operator's output carries timestamps
    stamped_in: dict[int, bool] = {}   # its input does
    for t in order:
        p = t.parallelism or default_p
        if t.kind == T.SOURCE:
            if batch and str(getattr(t.function, "boundedness", "")) .endswith("CONTINUOUS_UNBOUNDED"):
                raise JobGraphError(f"{t.name!r} is an unbounded source (CONTINUOUS_UNBOUNDED): it needs "
                                    "execution.runtime-mode STREAMING, the job runs in BATCH mode")
            limit = getattr(t.function, "max_parallelism", None)
            if limit is not None:
                p = min(p, limit) if t.parallelism is None else p
                if p > limit:
                    raise JobGraphError(f"{t.name!r} supports parallelism {limit} at most, got {p}")
        mp = t.max_parallelism or job_maxp
        if p > mp:
            raise JobGraphError(f"operator {t.name!r}: parallelism {p} exceeds max parallelism {mp} "
                                "(raise pipeline.max-parallelism or lower the parallelism)")
        par[t.id], maxp[t.id] = p, mp
        ins = _physical_inputs(t)
        resolved = []
        for (u, part, key, tag) in ins:
            if part is None:
                part = T.FORWARD if par[u.id] == p else T.REBALANCE
            elif part == T.FORWARD and par[u.id] != p:
                raise JobGraphError(
                    f"forward partitioning from {u.name!r} (parallelism {par[u.id]}) to {t.name!r} "
                    f"(parallelism {p}) needs equal parallelism; use rebalance() instead")
            resolved.append((u, part, key, tag))
        if t.kind in KEYED_KINDS and not any(part == T.HASH for (_, part, _, _) in resolved):
            raise JobGraphError(f"operator {t.name!r} needs a keyed stream: call key_by(...) before it")
        inputs[t.id] = resolved
        in_ts = {stamped[u.id] for (u, _, _, _) in resolved}
        if len(in_ts) > 1:
            raise JobGraphError(f"operator {t.name!r} unions streams with and without event timestamps; "
                                "assign timestamps (assign_timestamps_and_watermarks) on all of them")
        stamped_in[t.id] = bool(in_ts and in_ts.pop())
        stamped[t.id] = stamped_in[t.id] or t.kind == T.TIMESTAMPS
        if t.kind == T.WINDOW and t.function.assigner.is_event_time and not stamped_in[t.id]:
            raise JobGraphError(f"{t.name!r} uses event-time windows but its input has no timestamps: "
                                "call assign_timestamps_and_watermarks(...) first")

    # chaining: operator id -> vertex (head) id
    head_of: dict[int, int] = {}
    for t in order:
        ins = inputs[t.id]
        if (len(ins) == 1 and ins[0][1] == T.FORWARD and t.chaining and ins[0][0].chaining
                and par[ins[0][0].id] == par[t.id] and t.kind != T.SOURCE):
            head_of[t.id] = head_of[ins[0][0].id]
        else:
            head_of[t.id] = t.id

    vertices: dict[int, JobVertex] = {}
    nodes: dict[int, OperatorNode] = {}
    edges: list[JobEdge] = []
    for t in order:
        node = OperatorNode(id=t.id, name=t.name, uid=t.uid, kind=t.kind, function=t.function,
                            timestamped=stamped_in[t.id])
        keyed_keys = [key for (_, part, key, _) in inputs[t.id] if part == T.HASH]
        if t.kind in KEYED_KINDS:
            node.key_selector = keyed_keys[0]
        nodes[t.id] = node
        h = head_of[t.id]
        if h == t.id:
            vertices[t.id] = JobVertex(id=t.id, name=t.name, parallelism=par[t.id],
                                       max_parallelism=maxp[t.id], head=t.id)
        else:
            vertices[h].name += f" -> {t.name}"
        vertices[h].operators[t.id] = node
        for (u, part, key, tag) in inputs[t.id]:
            if head_of[t.id] == head_of[u.id]:
                if tag is None:
                    nodes[u.id].chained_outputs.append(t.id)
                else:
                    nodes[u.id].side_chained.setdefault(tag, []).append(t.id)
                continue
            combine = None
            if (batch and local_agg and part == T.HASH and t.kind in (T.KEYED_REDUCE, T.KEYED_AGGREGATE)
                    and len(inputs[t.id]) == 1 and not stamped_in[t.id]):
                combine = (t.kind, t.function)
            if part == T.HASH and stamped_in[t.id]:
                key = _on_value(key)
            e = JobEdge(index=len(edges), source_vertex=head_of[u.id], source_operator=u.id,
                        target_vertex=h, partitioner=part, key_selector=key, combine=combine)
            edges.append(e)
            if tag is None:
                nodes[u.id].edge_outputs.append(e.index)
            else:
                nodes[u.id].side_edges.setdefault(tag, []).append(e.index)
            vertices[head_of[u.id]].output_edges.append(e.index)
            vertices[h].input_edges.append(e.index)

    return JobGraph(job_id=uuid.uuid4().hex, name=name, vertices=vertices, edges=edges,
                    config=config, batch=batch)
