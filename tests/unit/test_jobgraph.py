"""From transformations to a JobGraph: chaining, partitioners, validation (no processes)."""

from __future__ import annotations

import pytest

from emrflow import RuntimeExecutionMode, StreamExecutionEnvironment
from emrflow.errors import JobGraphError
from emrflow.testing import GeneratedSource


def env(p=2, batch=True):
    e = StreamExecutionEnvironment.get_execution_environment()
    e.set_parallelism(p)
    if batch:
        e.set_runtime_mode(RuntimeExecutionMode.BATCH)
    return e


def test_chains_forward_operators_and_splits_at_key_by():
    e = env()
    e.from_source(GeneratedSource(10)).map(abs).filter(bool).key_by(lambda v: v).sum().print()
    g = e.get_job_graph()
    names = [v.name for v in g.vertices.values()]
    assert names == ["Source: Generated Source -> Map -> Filter",
                     "Keyed Aggregation (sum) -> Sink: Print to Std. Out"]
    (edge,) = g.edges
    assert edge.partitioner == "hash" and edge.combine is not None  # BATCH: local aggregation
    assert g.max_vertex_parallelism == 2


def test_parallelism_change_means_rebalance_and_no_chain():
    e = env(2)
    e.from_collection([1, 2]).map(abs).print()
    g = e.get_job_graph()
    assert [v.parallelism for v in g.vertices.values()] == [1, 2]
    assert g.edges[0].partitioner == "rebalance"


def test_disable_chaining_and_streaming_has_no_local_aggregation():
    e = env(1, batch=False)
    e.from_source(GeneratedSource(10)).map(abs).disable_chaining().key_by(0).sum(1).print()
    g = e.get_job_graph()
    assert len(g.vertices) == 3
    assert all(edge.combine is None for edge in g.edges)


def test_union_feeds_one_gate_with_all_channels():
    e = env(2)
    a = e.from_source(GeneratedSource(10))
    b = e.from_collection([1])
    a.union(b).key_by(lambda v: v).reduce(max).print()
    g = e.get_job_graph()
    target = [v for v in g.vertices.values() if v.input_edges][0]
    # two channels from the parallel source (hash), one from the collection source
    assert g.num_input_channels(target.id) == 3
    indices = sorted(g.channel_index(e_i, p) for e_i in target.input_edges
                     for p in range(g.vertices[g.edges[e_i].source_vertex].parallelism))
    assert indices == [0, 1, 2]


def test_no_sink_is_an_error():
    e = env()
    e.from_collection([1]).map(abs)
    with pytest.raises(JobGraphError, match="no sink"):
        e.get_job_graph()


def test_parallelism_above_max_parallelism():
    e = env(4)
    e.set_max_parallelism(2)
    e.from_source(GeneratedSource(3)).print()
    with pytest.raises(JobGraphError, match="exceeds max parallelism 2"):
        e.get_job_graph()


def test_collection_source_is_not_parallel():
    e = env(2)
    with pytest.raises(JobGraphError, match="parallelism 1 at most"):
        e.from_collection([1]).set_parallelism(2)


def test_uid_must_be_unique_and_key_by_has_no_name():
    e = env()
    s = e.from_collection([1]).map(abs).uid("a")
    with pytest.raises(JobGraphError, match="uid 'a' is used by two operators"):
        s.map(abs).uid("a")
    with pytest.raises(JobGraphError, match="key_by has no operator"):
        s.key_by(lambda v: v).name("x")


def test_function_classes_must_be_instances():
    from emrflow import MapFunction

    class M(MapFunction):
        def map(self, v):
            return v
    with pytest.raises(TypeError, match=r"pass M\(\)"):
        env().from_collection([1]).map(M)
    with pytest.raises(TypeError, match="MapFunction or a callable"):
        env().from_collection([1]).map(42)


def test_plan_is_json_without_user_code():
    import json
    e = env()
    e.from_source(GeneratedSource(10)).key_by(lambda v: v % 2).sum().print()
    plan = json.loads(e.get_execution_plan())
    assert [edge["ship_strategy"] for edge in plan["edges"]] == ["HASH"]
    assert plan["vertices"][0]["parallelism"] == 2
