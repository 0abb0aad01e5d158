"""The connectors' metric group and the REST API's views of it (plain values, no processes)."""

from __future__ import annotations

import threading

import pytest

from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.metric_group import Counter, MetricGroup
from emrflow.runtime.rest import _subtask_list, aggregated_metrics, metric_values, operator_metrics


def by_id(group: MetricGroup) -> dict:
    return {rest: (prom, dict(labels), value) for rest, prom, labels, value in group.snapshot()}


def test_counters_gauges_and_flink_names():
    g = MetricGroup()
    sent = g.counter("numRecordsSend")
    sent.inc(3)
    sent.inc()
    sent.dec(2)
    assert g.counter("numRecordsSend") is sent and sent.get_count() == 2
    lag = g.gauge("lag")
    lag.set(7)
    offsets = {("t", 0): 41}
    part = g.add_group("KafkaSourceReader").add_group("topic", "t").add_group("partition", 0)
    part.gauge("currentOffset", lambda: offsets.get(("t", 0)))
    g.add_group("shardId", "shardId-1").gauge("millisBehindLatest", lambda: None)   # no value: left out
    g.gauge("broken", lambda: 1 // 0)                                               # raises: left out
    assert by_id(g) == {
        "numRecordsSend": ("numRecordsSend", {}, 2),
        "lag": ("lag", {}, 7),
        "KafkaSourceReader.topic.t.partition.0.currentOffset":
            ("KafkaSourceReader_topic_partition_currentOffset", {"topic": "t", "partition": "0"}, 41)}
    offsets[("t", 0)] = 99                       # read when reported, not when registered
    assert by_id(g)["KafkaSourceReader.topic.t.partition.0.currentOffset"][2] == 99
    assert by_id(g.add_group("a b.c").add_group("key-1", "v"))  # sub-groups share the registry
    named = MetricGroup().add_group("a b").add_group("k-1", "x y")
    named.counter("n.1")
    assert by_id(named) == {"a b.k-1.x y.n.1": ("a_b_k_1_n_1", {"k_1": "x y"}, 0)}
    with pytest.raises(ValueError, match="name"):
        g.add_group("")
    with pytest.raises(ValueError, match="name"):
        g.counter("")


def test_every_context_has_its_own_group():
    a, b = SubtaskContext("s", 0, 1), SubtaskContext("s", 0, 1)
    a.metric_group.counter("n").inc()
    assert by_id(b.metric_group) == {} and by_id(a.metric_group)["n"][2] == 1


def test_snapshot_while_another_thread_registers_and_counts():
    """The task thread registers and counts while the metrics thread reads: no error, and the
    last snapshot after the writer stopped has every count exactly."""
    g = MetricGroup()
    counters: list[Counter] = []
    done = threading.Event()

    def work():
        for i in range(2000):
            c = g.add_group("partition", i % 50).counter("n")
            if i < 50:
                counters.append(c)
            c.inc()
        done.set()
    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        g.snapshot()
    t.join()
    assert sorted(v for _, _, _, v in g.snapshot()) == [40] * 50


def test_rest_ids_values_and_aggregates_in_flinks_shape():
    vertex = {"id": 3, "parallelism": 2,
              "operators": [{"id": 7, "name": "Source: Kinesis"}, {"id": 8, "name": "kinesis.sink"}]}

    class Job:  # the fields of a JobView the REST functions read
        metrics = {(3, 0): {"operators": {7: (0, 5), 8: (5, 5)},
                            "connector": {8: [("numRecordsSend", "numRecordsSend", (), 5)]}},
                   (3, 1): {"operators": {7: (0, 4), 8: (4, 4)},
                            "connector": {8: [("numRecordsSend", "numRecordsSend", (), 4),
                                              ("state", "state", (), "open")]}}}
    m0 = operator_metrics(Job, vertex, 0)
    assert m0 == {"Source__Kinesis.numRecordsIn": 0, "Source__Kinesis.numRecordsOut": 5,
                  "kinesis_sink.numRecordsIn": 5, "kinesis_sink.numRecordsOut": 5,
                  "kinesis_sink.numRecordsSend": 5}
    assert metric_values(m0, None)[-1] == {"id": "kinesis_sink.numRecordsSend"}
    assert metric_values(m0, "kinesis_sink.numRecordsSend,nope") == [{"id": "kinesis_sink.numRecordsSend",
                                                                      "value": "5"}]
    both = [operator_metrics(Job, vertex, i) for i in (0, 1)]
    assert aggregated_metrics(both, "kinesis_sink.numRecordsSend,kinesis_sink.state", None) == [
        {"id": "kinesis_sink.numRecordsSend", "min": 4, "max": 5, "avg": 4.5, "sum": 9}]
    assert aggregated_metrics(both, "kinesis_sink.numRecordsSend", "sum,bogus") == [
        {"id": "kinesis_sink.numRecordsSend", "sum": 9}]
    assert {"id": "kinesis_sink.state"} in aggregated_metrics(both, None, None)
    assert _subtask_list("0,2-3,9", 4) == [0, 2, 3] and _subtask_list(None, 2) == [0, 1]
    with pytest.raises(ValueError):
        _subtask_list("x", 2)


def test_prometheus_names_labels_and_reserved_names():
    """A key-value group's key is part of the name and its value a label (Flink's reporter); strings
    and the runtime's own names (numRecordsIn) are left out."""
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from emrflow.runtime.metrics import _add_connector_metrics
    g = MetricGroup()
    g.add_group("KafkaSourceReader").add_group("topic", "t").add_group("partition", 3).gauge("currentOffset").set(42)
    g.gauge("state").set("open")
    g.counter("numRecordsIn").inc(5)
    reserved = "flink_taskmanager_job_task_operator_numRecordsIn"
    families: dict = {reserved: None}
    _add_connector_metrics(families, ["job_id", "subtask_index"], ["j", "0"], g.snapshot())
    del families[reserved]

    class Collector:
        def collect(self):
            return list(families.values())
    registry = CollectorRegistry()
    registry.register(Collector())
    text = generate_latest(registry).decode()
    assert ('flink_taskmanager_job_task_operator_KafkaSourceReader_topic_partition_currentOffset{job_id="j",'
            'partition="3",subtask_index="0",topic="t"} 42.0') in text   # labels sorted by the client
    assert "state" not in text and "numRecordsIn" not in text
