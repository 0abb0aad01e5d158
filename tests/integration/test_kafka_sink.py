"""The Kafka sink against a real Apache Kafka broker (KRaft, from Maven Central's jars).

Jobs run through the CLI (tests/jobs/kafka_numbers.py writes the numbers 0 .. n-1); the
topics are read back with a ``read_committed`` consumer and compared with the plain-Python
reference ``{str(i) for i in range(n)}`` as a multiset: a lost record leaves a number out,
a replayed one shows it twice. Failovers kill a real TaskManager process.
"""

from __future__ import annotations

import collections
import os
import time
import uuid

import pytest
from conftest_kafka import kafka_broker  # noqa: F401  (the session's broker)
from test_checkpoints import checkpointed_run, kill_after_first_checkpoint, running, start

from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.kafka import KafkaSink
from emrflow.errors import ConfigError, ConnectorError
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration]

JOB = os.path.join(ROOT, "tests", "jobs", "kafka_numbers.py")


def reference(count: int) -> collections.Counter:
    return collections.Counter(str(i) for i in range(count))


def read_topic(broker, topic: str, isolation: str = "read_committed") -> collections.Counter:
    """Every record value of ``topic`` (all partitions, from the start) as a multiset of strings."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": f"reader-{uuid.uuid4().hex}",
                  "isolation.level": isolation, "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        got: collections.Counter = collections.Counter()
        at_end: set = set()
        deadline = time.monotonic() + 20
        while len(at_end) < len(parts):
            assert time.monotonic() < deadline, f"reading {topic} did not reach its end"
            for m in c.consume(1000, timeout=0.5):
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        at_end.add(m.partition())
                        continue
                    raise AssertionError(m.error())
                got[m.value().decode()] += 1
        return got
    finally:
        c.close()


def new_topic(broker, partitions: int = 2) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    broker.create_topic(name, partitions)
    return name


def test_bounded_exactly_once_job_with_a_topic_function(tmp_path, kafka_broker):
    """BATCH, p=2: one transaction per subtask committed at the end; even numbers to one topic,
    odd to the other (the topic function)."""
    even, odd = new_topic(kafka_broker), new_topic(kafka_broker)
    count = 4000
    proc = start("run", "-p", "2", JOB, "--bootstrap", kafka_broker.bootstrap_servers,
                 "--topics", f"{even},{odd}", "--count", str(count), "--batch")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    got_even, got_odd = read_topic(kafka_broker, even), read_topic(kafka_broker, odd)
    want = reference(count)
    assert got_even == collections.Counter({k: n for k, n in want.items() if int(k) % 2 == 0})
    assert got_odd == collections.Counter({k: n for k, n in want.items() if int(k) % 2 == 1})


def _checkpointed_job(tmp_path, broker, guarantee: str, *job_args: str) -> tuple[str, int, list[str]]:
    topic, count = new_topic(broker), 4000
    args = [*checkpointed_run(str(tmp_path / "unused"), str(tmp_path / "checkpoints"), "-D",
                              "execution.checkpointing.interval=300ms"),
            JOB, "--bootstrap", broker.bootstrap_servers, "--topics", topic, "--count", str(count),
            "--rate", "700", "--guarantee", guarantee, *job_args]
    return topic, count, args


def test_exactly_once_survives_a_taskmanager_kill_between_checkpoint_and_commit(tmp_path, kafka_broker):
    """Subtask 0's TaskManager is SIGKILLed when checkpoint n >= 2 has completed and its notice has
    arrived, but its pre-committed transaction is not committed: the restored writer must find
    out (marker group) and produce the checkpoint's records again, once."""
    flag = str(tmp_path / "killed")
    topic, count, args = _checkpointed_job(tmp_path, kafka_broker, "exactly-once", "--kill-on-commit", flag)
    proc = start(*args)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert os.path.exists(flag) and "restarting in" in stderr, stderr
    got, want = read_topic(kafka_broker, topic), reference(count)
    assert got == want, (f"{len(set(want) - set(got))} lost, "
                         f"{sum(n - 1 for n in got.values() if n > 1)} duplicated")


def test_at_least_once_loses_nothing_after_a_taskmanager_kill(tmp_path, kafka_broker):
    """A TaskManager SIGKILLed at a random moment after the first checkpoint."""
    topic, count, args = _checkpointed_job(tmp_path, kafka_broker, "at-least-once")
    ckdir = str(tmp_path / "checkpoints")
    with running(*args) as proc:
        stderr = kill_after_first_checkpoint(proc, ckdir, (0.3, 0.9), 90)
    assert proc.returncode == 0, stderr
    assert "restarting in" in stderr, stderr
    got, want = read_topic(kafka_broker, topic), reference(count)
    assert set(got) == set(want), f"{len(set(want) - set(got))} lost"
    assert sum(got.values()) >= count


def _writer(sink: KafkaSink, job_id: str, attempt: int = 0):
    return sink.create_writer(SubtaskContext(operator_name="Kafka Sink", subtask_index=0, parallelism=1,
                                             attempt=attempt, checkpointing=True, job_id=job_id))


def test_restore_commits_a_pre_committed_transaction_once(kafka_broker):
    """The recovery protocol driven by hand: a writer pre-commits checkpoint 1 and dies before its
    commit (no notify, no abort); the restored writer fences it and produces the stored records
    again. A second writer, whose checkpoint 1 did commit, restores the same way and adds nothing."""
    topic = new_topic(kafka_broker, 1)
    sink = KafkaSink(topic, kafka_broker.bootstrap_servers, delivery_guarantee="exactly-once",
                     value_serializer=lambda i: str(i).encode())
    job = uuid.uuid4().hex
    w = _writer(sink, job)
    w.write_batch(list(range(0, 50)))
    state = w.snapshot_state(1)          # pre-committed, never committed: the TaskManager dies here
    w.write_batch(list(range(50, 60)))   # after the barrier: must never appear
    restored = _writer(sink, job, attempt=1)  # init_transactions fences w and aborts its transaction
    restored.restore_state([state])
    assert restored.records_recovered.get_count() == 50
    restored.write_batch(list(range(50, 80)))
    restored.snapshot_state(2)
    restored.notify_checkpoint_complete(2)
    assert read_topic(kafka_broker, topic) == reference(80)

    # the same state restored once more (a second failure right after the recovery): the marker
    # says checkpoint 1 committed, nothing is produced again
    again = _writer(sink, job, attempt=2)
    again.restore_state([state])
    assert again.records_recovered.get_count() == 0
    again.commit()
    assert read_topic(kafka_broker, topic) == reference(80)


def test_delivery_failure_fails_the_job_not_silently(kafka_broker):
    """A record larger than the broker accepts: the flush at the checkpoint raises, naming the topic."""
    topic = new_topic(kafka_broker, 1)
    sink = KafkaSink(topic, kafka_broker.bootstrap_servers, properties={"message.max.bytes": 20_000_000},
                     value_serializer=lambda n: b"x" * n)
    w = sink.create_writer(SubtaskContext(operator_name="Kafka Sink", subtask_index=0, parallelism=1,
                                          checkpointing=True))
    w.write_batch([10, 3_000_000])  # the broker's message.max.bytes is about 1 MiB
    with pytest.raises(ConnectorError, match=f"did not take 1 record.*{topic}"):
        w.snapshot_state(1)
    assert (w.records_written.get_count(), w.records_failed.get_count()) == (1, 1)   # numRecordsSend, ...OutErrors
    w.abort()


def test_bad_options_name_the_option(kafka_broker):
    servers = kafka_broker.bootstrap_servers
    with pytest.raises(ConfigError, match="unknown delivery_guarantee 'exactly-twice'.*'exactly-once'"):
        KafkaSink("t", servers, delivery_guarantee="exactly-twice")
    with pytest.raises(ConfigError, match="topic is required"):
        KafkaSink(None, servers)
    with pytest.raises(ConfigError, match="bootstrap_servers is required"):
        KafkaSink("t")
    with pytest.raises(ConfigError, match="needs marker_topic"):
        KafkaSink(lambda r: "t", servers, delivery_guarantee="exactly-once")
    with pytest.raises(ConfigError, match="do not set transactional.id"):
        KafkaSink("t", servers, properties={"transactional.id": "x"})
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ConnectorError, match=f"Kafka topic '{missing}' does not exist"):
        KafkaSink(missing, servers).create_writer(SubtaskContext("Kafka Sink", 0, 1))
