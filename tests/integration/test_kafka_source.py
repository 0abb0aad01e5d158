"""The Kafka source (emrflow.connectors.kafka_source) against a real Apache Kafka broker (KRaft).

Component tests first: the split enumerator and the split readers are driven directly, the
way the FLIP-27 runtime drives them (:class:`RecordingContext` below is a STAND-IN for the
runtime's ``SplitEnumeratorContext``: it only records assignments and periodic calls).
Records are produced with a plain confluent-kafka producer; what the readers return is
compared with the plain-Python reference of what was produced (multisets: a lost record
leaves a value out, one read twice shows it twice).

Then real jobs on a local cluster (tests/jobs/kafka_keyed_count.py: a running count per key
to the exactly-once file sink) with a SIGKILLed TaskManager, a partition added while the job
runs, a bounded run from a timestamp and a bad record; and examples/replay_ratings.py.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from conftest_kafka import kafka_broker  # noqa: F401  (the session's broker)
from test_checkpoints import (
    cancel,
    checkpointed_run,
    completed_checkpoints,
    output_lines,
    running,
    runtime_children,
    settled_output,
    wait_for,
)

from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.kafka_source import KafkaRecord, KafkaSource, partition_owner
from emrflow.connectors.splits import SplitEnumeratorContext
from emrflow.errors import BadRecordError, ConfigError, ConnectorError
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration]


class RecordingContext(SplitEnumeratorContext):
    """STAND-IN for the runtime's enumerator context: records assignments, signals and periodic calls."""

    def __init__(self, parallelism: int, registered: set[int] | None = None):
        self._p = parallelism
        self.registered = set(range(parallelism)) if registered is None else registered
        self.assigned: dict[int, list] = collections.defaultdict(list)
        self.no_more: set[int] = set()
        self.periodic: list = []

    @property
    def parallelism(self) -> int:
        return self._p

    @property
    def config(self):
        return {}

    @property
    def file_system(self):
        return None

    def registered_readers(self) -> set[int]:
        return set(self.registered)

    def assign_splits(self, assignment) -> None:
        for subtask, splits in assignment.items():
            assert subtask in self.registered, f"split assigned to unregistered subtask {subtask}"
            self.assigned[subtask].extend(splits)

    def signal_no_more_splits(self, subtask: int) -> None:
        self.no_more.add(subtask)

    def call_periodically(self, fn, interval_ms: int) -> None:
        self.periodic.append((fn, interval_ms))


class Config(dict):
    def get(self, key, default=None):
        return super().get(key, default)


def new_topic(broker, partitions: int = 2) -> str:
    name = f"src-{uuid.uuid4().hex[:10]}"
    broker.create_topic(name, partitions)
    return name


def produce(broker, topic: str, values, partition_of=lambda i, v: i % 2, timestamp_of=None) -> list[tuple]:
    """Produce ``values`` (str or bytes); return ``[(partition, offset, value bytes)]`` as acknowledged."""
    from confluent_kafka import Producer
    acked: list[tuple] = []
    prod = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})

    def on_delivery(err, msg):
        assert err is None, err
        acked.append((msg.partition(), msg.offset(), msg.value()))

    for i, v in enumerate(values):
        kwargs = {"timestamp": timestamp_of(i)} if timestamp_of else {}
        prod.produce(topic, v.encode() if isinstance(v, str) else v, partition=partition_of(i, v),
                     on_delivery=on_delivery, **kwargs)
    assert prod.flush(20) == 0
    return acked


def reader_ctx(subtask: int, p: int, bad: list | None = None, fail: bool = False) -> SubtaskContext:
    return SubtaskContext(operator_name="Kafka Source", subtask_index=subtask, parallelism=p,
                          config=Config({"emrflow.bad-records.fail": fail}),
                          report_bad_record=(lambda path, line, reason: bad.append((path, line, reason)))
                          if bad is not None else (lambda *a: None))


def drain(reader, until, timeout_s: float = 15.0) -> list:
    """Poll ``reader`` until ``until(records so far, batches)`` holds; return the records."""
    got: list = []
    deadline = time.monotonic() + timeout_s
    while not until(got):
        assert time.monotonic() < deadline, f"reader returned {len(got)} records before the timeout"
        for batch in reader.poll(0.2):
            got.extend(batch.records)
    return got


def enumerate_splits(source: KafkaSource, p: int) -> RecordingContext:
    ctx = RecordingContext(p)
    enum = source.create_enumerator(ctx)
    enum.start()
    for i in range(p):
        enum.add_reader(i)
    enum.close()
    return ctx


def test_enumerator_spreads_partitions_and_resolves_start_offsets(kafka_broker):
    topic = new_topic(kafka_broker, 4)
    acked = produce(kafka_broker, topic, [str(i) for i in range(40)], partition_of=lambda i, v: i % 4)
    ends = collections.Counter(part for part, _, _ in acked)
    for start, want in (("earliest", {q: 0 for q in range(4)}), ("latest", dict(ends))):
        ctx = enumerate_splits(KafkaSource(topic, kafka_broker.bootstrap_servers, starting_offsets=start), 2)
        got = {s.partition: s.offset for splits in ctx.assigned.values() for s in splits}
        assert got == want, start
        for subtask, splits in ctx.assigned.items():   # Flink's placement: round robin per topic
            assert all(partition_owner(topic, s.partition, 2) == subtask for s in splits)
        assert sorted(len(v) for v in ctx.assigned.values()) == [2, 2]
        assert [fn for fn, ms in ctx.periodic if ms == 300_000], "discovery not scheduled"
        assert not ctx.no_more   # unbounded: no end


def test_two_readers_with_checkpoint_and_restore_read_each_record_once(kafka_broker):
    """Reader of subtask 0 is 'killed' after a snapshot and more polls; a new reader restored
    from the snapshot re-reads only what came after it: the union since the snapshot is exact."""
    topic = new_topic(kafka_broker, 2)
    values = [f"v{i}" for i in range(2000)]
    produce(kafka_broker, topic, values)
    source = KafkaSource(topic, kafka_broker.bootstrap_servers, max_poll_records=100)
    ctx = enumerate_splits(source, 2)
    readers = {}
    for subtask in range(2):
        r = readers[subtask] = source.create_split_reader(reader_ctx(subtask, 2))
        r.add_splits(ctx.assigned[subtask])
        r.start()
    before = {i: drain(r, lambda got: len(got) >= 300) for i, r in readers.items()}
    state = {i: r.snapshot_state(1) for i, r in readers.items()}
    assert sorted(s.split_id for v in state.values() for s in v) == [f"{topic}-0", f"{topic}-1"]
    after_snapshot = drain(readers[0], lambda got: len(got) >= 100)   # lost with the "failure"
    for r in readers.values():
        r.close()
    restored = {}
    for subtask in range(2):
        r = restored[subtask] = source.create_split_reader(reader_ctx(subtask, 2))
        r.add_splits(state[subtask])
        r.start()
    # read what the restored readers return until all records are accounted for
    rest: list = []
    total = collections.Counter(v for b in before.values() for v in b)
    deadline = time.monotonic() + 15
    while sum(total.values()) < len(values):
        assert time.monotonic() < deadline, f"{sum(total.values())} of {len(values)} read"
        for r in restored.values():
            for batch in r.poll(0.1):
                total.update(batch.records)
                rest.extend(batch.records)
    for r in restored.values():
        assert not any(b.records for b in r.poll(0.3)), "records beyond what was produced"
        r.close()
    assert total == collections.Counter(values)
    assert set(after_snapshot) <= set(rest)   # re-read after the restore, once


def test_bounded_mode_stops_at_the_start_offsets_and_signals_no_more_splits(kafka_broker):
    """Partition 1 ends with a transaction's commit marker (a control record, never returned):
    the reader must still see it reached the stopping offset."""
    from confluent_kafka import Producer
    topic = new_topic(kafka_broker, 2)
    produce(kafka_broker, topic, [str(i) for i in range(90)])
    txn = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "transactional.id": f"tx-{topic}"})
    txn.init_transactions(30)
    txn.begin_transaction()
    for i in range(90, 100):
        txn.produce(topic, str(i).encode(), partition=1)
    txn.commit_transaction(30)
    source = KafkaSource(topic, kafka_broker.bootstrap_servers, stopping_offsets="latest")
    ctx = enumerate_splits(source, 2)
    assert ctx.no_more == {0, 1} and not ctx.periodic
    produce(kafka_broker, topic, [str(i) for i in range(100, 150)])   # after the start: not read
    got = collections.Counter()
    for subtask in range(2):
        r = source.create_split_reader(reader_ctx(subtask, 2))
        r.add_splits(ctx.assigned[subtask])
        r.start()
        r.notify_no_more_splits()
        deadline = time.monotonic() + 15
        while not r.is_finished():
            assert time.monotonic() < deadline, "bounded reader did not finish"
            for b in r.poll(0.2):
                got.update(b.records)
        r.close()
    assert got == collections.Counter(str(i) for i in range(100))


def test_timestamp_start_and_record_metadata(kafka_broker):
    topic = new_topic(kafka_broker, 2)
    base = 1_700_000_000_000
    produce(kafka_broker, topic, [str(i) for i in range(60)], timestamp_of=lambda i: base + i * 1000)
    t0 = base + 25_500   # records 26 .. 59
    source = KafkaSource(topic, kafka_broker.bootstrap_servers, starting_offsets=t0, with_metadata=True,
                         deserializer=int)
    ctx = enumerate_splits(source, 1)
    r = source.create_split_reader(reader_ctx(0, 1))
    r.add_splits(ctx.assigned[0])
    r.start()
    got = drain(r, lambda g: len(g) >= 34)
    assert not any(b.records for b in r.poll(0.3))
    r.close()
    assert sorted(x.value for x in got) == list(range(26, 60))
    assert all(isinstance(x, KafkaRecord) and x.timestamp == base + x.value * 1000 and x.topic == topic
               and x.partition == x.value % 2 for x in got)


def test_partition_and_topic_added_while_running_are_discovered(kafka_broker):
    from confluent_kafka.admin import AdminClient, NewPartitions
    prefix = f"pat-{uuid.uuid4().hex[:6]}"
    first = f"{prefix}-a"
    kafka_broker.create_topic(first, 1)
    source = KafkaSource(bootstrap_servers=kafka_broker.bootstrap_servers, topic_pattern=rf"{prefix}-.*",
                         starting_offsets="latest", partition_discovery_interval_ms=1000)
    ctx = RecordingContext(2)
    enum = source.create_enumerator(ctx)
    enum.start()
    (discover, ms), = ctx.periodic
    assert ms == 1000
    assert [s.split_id for v in ctx.assigned.values() for s in v] == [f"{first}-0"]
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    for f in admin.create_partitions([NewPartitions(first, 2)]).values():
        f.result(10)
    kafka_broker.create_topic(f"{prefix}-b", 1)
    produce(kafka_broker, first, ["early"], partition_of=lambda i, v: 1)   # before the next discovery
    state = enum.snapshot_state(1)
    discover()
    enum.close()
    new = {s.split_id: s for v in ctx.assigned.values() for s in v}
    assert set(new) == {f"{first}-0", f"{first}-1", f"{prefix}-b-0"}
    assert new[f"{first}-1"].offset == 0   # found later: from the earliest offset (record 'early' is read)
    # a restored enumerator remembers what it discovered: nothing assigned twice
    ctx2 = RecordingContext(2)
    enum2 = source.restore_enumerator(ctx2, state)
    enum2.start()
    enum2.close()
    assert {s.split_id for v in ctx2.assigned.values() for s in v} == {f"{first}-1", f"{prefix}-b-0"}


def test_bad_record_reported_by_partition_and_offset_or_fatal(kafka_broker):
    topic = new_topic(kafka_broker, 1)
    acked = produce(kafka_broker, topic, ["ok0", b"\xff\xfe", "ok2"], partition_of=lambda i, v: 0)
    bad_offset = [o for _, o, v in acked if v == b"\xff\xfe"][0]
    source = KafkaSource(topic, kafka_broker.bootstrap_servers)
    ctx = enumerate_splits(source, 1)
    bad: list = []
    r = source.create_split_reader(reader_ctx(0, 1, bad))
    r.add_splits(ctx.assigned[0])
    r.start()
    assert drain(r, lambda g: len(g) >= 2) == ["ok0", "ok2"]
    r.close()
    assert [(p, line) for p, line, _ in bad] == [(f"{topic}-0", bad_offset)]
    assert "UnicodeDecodeError" in bad[0][2] and "2 bytes" in bad[0][2]
    r = source.create_split_reader(reader_ctx(0, 1, [], fail=True))   # emrflow.bad-records.fail
    r.add_splits(ctx.assigned[0])
    r.start()
    with pytest.raises(BadRecordError, match=rf"{topic}-0:{bad_offset}: cannot deserialize"):
        drain(r, lambda g: False)
    r.close()


def test_offsets_committed_to_the_group_on_checkpoint_completion(kafka_broker):
    from confluent_kafka import Consumer, TopicPartition
    topic, group = new_topic(kafka_broker, 2), f"g-{uuid.uuid4().hex[:8]}"
    produce(kafka_broker, topic, [str(i) for i in range(200)])
    source = KafkaSource(topic, kafka_broker.bootstrap_servers, group_id=group)
    ctx = enumerate_splits(source, 1)
    rctx = reader_ctx(0, 1)
    r = source.create_split_reader(rctx)
    r.add_splits(ctx.assigned[0])
    r.start()
    drain(r, lambda g: len(g) >= 200)
    snap = {(s.topic, s.partition): s.offset for s in r.snapshot_state(7)}
    assert snap == {(topic, 0): 100, (topic, 1): 100}
    r.notify_checkpoint_complete(7)
    deadline = time.monotonic() + 10
    while r.commits_succeeded.get_count() == 0:   # the commit callback is served by the next polls
        assert time.monotonic() < deadline and r.commits_failed.get_count() == 0
        r.poll(0.1)
    r.close()
    c = Consumer({"bootstrap.servers": kafka_broker.bootstrap_servers, "group.id": group})
    got = {(tp.topic, tp.partition): tp.offset
           for tp in c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)}
    c.close()
    assert got == snap
    # Flink's KafkaSourceReader metrics: per partition the next offset to read and the offset the group has
    metrics = {rest_id: value for rest_id, _, _, value in rctx.metric_group.snapshot()}
    assert metrics["KafkaSourceReader.commitsSucceeded"] >= 1 and metrics["KafkaSourceReader.commitsFailed"] == 0
    for (t, p), offset in got.items():
        assert metrics[f"KafkaSourceReader.topic.{t}.partition.{p}.committedOffset"] == offset
        assert metrics[f"KafkaSourceReader.topic.{t}.partition.{p}.currentOffset"] == 100
    # starting_offsets="committed" resumes there
    ctx = enumerate_splits(KafkaSource(topic, kafka_broker.bootstrap_servers, group_id=group,
                                       starting_offsets="committed"), 1)
    assert {s.partition: s.offset for s in ctx.assigned[0]} == {0: 100, 1: 100}


def test_bad_options_and_missing_topic_name_what_is_wrong(kafka_broker):
    servers = kafka_broker.bootstrap_servers
    for kwargs, key in (({}, "topics"), ({"topics": "t", "topic_pattern": "x"}, "topics"),
                        ({"topics": "t", "starting_offsets": "newest"}, "starting_offsets"),
                        ({"topics": "t", "starting_offsets": "committed"}, "group_id"),
                        ({"topics": "t", "stopping_offsets": "earliest"}, "stopping_offsets"),
                        ({"topics": "t", "topic_pattern": None, "properties": {"enable.auto.commit": True}},
                         "enable.auto.commit"),
                        ({"topic_pattern": "("}, "topic_pattern"),
                        ({"topics": "t", "max_poll_records": 0}, "max_poll_records")):
        with pytest.raises(ConfigError) as e:
            KafkaSource(bootstrap_servers=servers, **kwargs)
        assert e.value.key == key and key in str(e.value)
    with pytest.raises(ConfigError, match="bootstrap_servers"):
        KafkaSource("t")
    source = KafkaSource("no-such-topic", servers)
    with pytest.raises(ConnectorError, match="'no-such-topic' do not exist"):
        source.create_enumerator(RecordingContext(1)).start()


def test_replay_ratings_script_paces_and_sets_event_time(kafka_broker, tmp_path):
    """examples/replay_ratings.py: 300 ratings at 1000 records/s, read back with the source
    (with_metadata) and compared with the first 300 ratings in event-time order, read here
    with the csv module."""
    import csv
    topic = new_topic(kafka_broker, 2)
    script = os.path.join(ROOT, "examples", "replay_ratings.py")
    proc = subprocess.run([sys.executable, script, "--bootstrap-servers", kafka_broker.bootstrap_servers,
                           "--topic", topic, "--rate", "1000", "--limit", "300"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("sent 300 ratings"), proc.stdout
    seconds = float(proc.stdout.split(" in ")[1].split(" s ")[0])
    assert seconds >= 0.299 - 0.01, f"300 records at 1000/s took {seconds} s"   # paced
    with open(os.path.join(ROOT, "examples", "data", "movielens-latest-small", "ratings.csv"), newline="") as f:
        rows = sorted((r for r in list(csv.reader(f))[1:]), key=lambda r: int(r[3]))[:300]
    want = collections.Counter((",".join(r), int(r[3]) * 1000, r[1]) for r in rows)
    source = KafkaSource(topic, kafka_broker.bootstrap_servers, with_metadata=True)
    ctx = enumerate_splits(source, 1)
    r = source.create_split_reader(reader_ctx(0, 1))
    r.add_splits(ctx.assigned[0])
    r.start()
    got = drain(r, lambda g: len(g) >= 300)
    r.close()
    assert collections.Counter((x.value, x.timestamp, x.key.decode()) for x in got) == want
    bad = subprocess.run([sys.executable, script, "--bootstrap-servers", kafka_broker.bootstrap_servers,
                          "--topic", "no-such-topic"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert bad.returncode == 1 and "'no-such-topic' (--topic) does not exist" in bad.stderr


# -- end to end: real jobs on a local cluster (the FLIP-27 runtime) ---------------------------------

JOB = os.path.join(ROOT, "tests", "jobs", "kafka_keyed_count.py")


def count_reference(values) -> collections.Counter:
    """The lines a correct keyed-count run writes for ``key,seq`` values: ``k,1 .. k,n_k`` once each."""
    n = collections.Counter(v.split(",")[0] for v in values)
    return collections.Counter(f"{k},{c}" for k, total in n.items() for c in range(1, total + 1))


def test_job_is_exactly_once_through_a_taskmanager_kill_and_reads_a_partition_added_while_running(
        tmp_path, kafka_broker):
    """p=2 over a topic with 2 partitions, checkpoints every 300 ms: records produced before the
    start, while it runs, a TaskManager SIGKILLed, then a third partition added and filled. The
    committed output must equal the reference exactly (nothing lost, nothing counted twice)."""
    from confluent_kafka.admin import AdminClient, NewPartitions
    topic, keys = new_topic(kafka_broker, 2), 13
    values = [f"k{i % keys},{i}" for i in range(3000)]
    acked_all = produce(kafka_broker, topic, values[:1000])
    produce(kafka_broker, topic, [b"\xff not utf-8"], partition_of=lambda i, v: 0)   # skipped, reported
    out, ckdir = str(tmp_path / "out"), str(tmp_path / "checkpoints")
    args = [*checkpointed_run(out, ckdir, "-D", "execution.checkpointing.interval=300ms"), JOB,
            "--bootstrap", kafka_broker.bootstrap_servers, "--topic", topic, "--output", out,
            "--discovery-ms", "300", "--slow-ms", "0.5", "--group", f"g-{topic}"]
    with running(*args) as proc:
        wait_for(lambda: completed_checkpoints(ckdir) or proc.poll() is not None, 60, "the first checkpoint")
        assert proc.poll() is None, proc.communicate()[1]
        acked_all += produce(kafka_broker, topic, values[1000:2000])            # in flight at the kill
        tms = runtime_children(proc, "emrflow.runtime.taskmanager")
        assert tms, "no TaskManager to kill"
        tms[0].send_signal(signal.SIGKILL)
        admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
        for f in admin.create_partitions([NewPartitions(topic, 3)]).values():
            f.result(10)
        produce(kafka_broker, topic, values[2000:], partition_of=lambda i, v: 2)
        want = count_reference(values)
        total = sum(want.values())
        got = settled_output(proc, out, total, 90, 1.0)
        committed = group_offsets(kafka_broker, f"g-{topic}", topic, 3)
        stderr = cancel(proc, 60)
    assert "restarting in" in stderr, stderr
    assert got == want, (f"{len(set(want) - set(got))} lines lost, "
                         f"{sum(n - 1 for n in got.values() if n > 1)} duplicated")
    # the checkpoints' offsets, committed to the group for monitoring: every partition read to its end
    ends = collections.Counter(p for p, _, _ in acked_all)
    assert committed == {0: ends[0] + 1, 1: ends[1], 2: 1000}, committed


def group_offsets(broker, group: str, topic: str, partitions: int) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        return {tp.partition: tp.offset
                for tp in c.committed([TopicPartition(topic, q) for q in range(partitions)], timeout=10)}
    finally:
        c.close()


def test_bounded_event_time_job_from_a_timestamp_reports_a_bad_record_by_partition_and_offset(
        tmp_path, kafka_broker):
    """BOUNDED source (stopping offsets = latest at start), 3 partitions at p=2 (one subtask reads
    two), no checkpoints, starting at a timestamp; event time = the Kafka timestamps, counted per
    key in 50 ms tumbling windows. Exactly the records at or after the start are counted, each in
    its window (none dropped as late although one subtask interleaves two partitions), the job
    ends by itself, and the bad record is in the job's report as <topic>-<partition>:<offset>."""
    topic, base = new_topic(kafka_broker, 3), 1_600_000_000_000
    values = [f"k{i % 5},{i}" for i in range(400)]
    produce(kafka_broker, topic, values, partition_of=lambda i, v: i % 3, timestamp_of=lambda i: base + i)
    bad = produce(kafka_broker, topic, [b"\xc3\x28"], partition_of=lambda i, v: 1,
                  timestamp_of=lambda i: base + 1000)
    proc = subprocess.run([sys.executable, "-m", "emrflow.cli", "run", "-p", "2", JOB, "--bootstrap",
                           kafka_broker.bootstrap_servers, "--topic", topic, "--output", str(tmp_path / "out"),
                           "--bounded", "--start", str(base + 150), "--window-ms", "50"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    want = collections.Counter()
    for i in range(150, 400):
        ts = base + i
        want[(f"k{i % 5}", ts - ts % 50)] += 1
    assert output_lines(str(tmp_path / "out")) == collections.Counter(f"{k},{w},{n}" for (k, w), n in want.items())
    assert "Skipped 1 bad input records" in proc.stderr, proc.stderr
    assert f"{topic}-1:{bad[0][1]}: cannot deserialize the value" in proc.stderr, proc.stderr
