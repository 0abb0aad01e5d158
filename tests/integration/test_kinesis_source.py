"""The Kinesis Data Streams source against moto in server mode (one ThreadedMotoServer per session).

Component tests drive the source's enumerator and readers directly: :class:`RecordingEnumeratorContext`
is a STAND-IN for the runtime (it records assignments and hands them to the readers, and
forwards a reader's finished shards to the enumerator as the runtime does), while every
Kinesis call goes over HTTP to the moto server (boto3 is not patched). Records are JSON
``[key, i]`` put with partition key ``k<key>``; the reference is the list of what the test put,
in plain Python.

moto 5.x differs from Kinesis in four points that matter to a reader; the ``aws_fidelity``
fixture (autouse, this module only) makes the *server* (it runs in this process) follow the
AWS documentation, and leaves the client alone:

1. ``SplitShard``/``MergeShards`` move the records of the closed parents into the children (moto
   re-puts them); in Kinesis they stay in the parents until they expire and the children start
   empty (``SplitShard``: "the parent shard ... data records ... remain accessible");
2. ``GetRecords`` on a closed shard always returns a ``NextShardIterator``; in Kinesis it is
   null once the closed shard was read to its end (``GetRecords``: "If set to null, the shard
   has been closed and the requested iterator does not return any more data");
3. ``ListShards`` with a ``NextToken`` requires the first page's ``StreamName`` again; Kinesis
   rejects it ("NextToken and StreamName cannot be provided together", see boto/botocore#2009);
4. ``PutRecords`` puts a record in the first shard whose hash key range holds its key, closed
   or open; Kinesis writes only to open shards (a closed shard "no longer receives data").
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import random
import time
import uuid

import boto3
import pytest
from conftest_emr import MotoRelay, aws_env, moto_endpoint  # noqa: F401  (moto server fixtures)
from test_checkpoints import (
    cancel,
    checkpointed_run,
    completed_checkpoints,
    kill_a_taskmanager,
    running,
    settled_output,
    wait_for,
)

from emrflow.config import Configuration
from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.kinesis_source import KinesisShardSplit, KinesisSource
from emrflow.connectors.splits import SplitEnumeratorContext, split_owner
from emrflow.errors import BadRecordError, ConfigError, ConnectorError
from tests.conftest import ROOT

JOB = os.path.join(ROOT, "tests", "jobs", "kinesis_keyed_count.py")

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:moto.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:werkzeug.*")]


# -- server, streams, records ------------------------------------------------------------------
@pytest.fixture(scope="module")
def kinesis(moto_endpoint):
    return boto3.client("kinesis", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture(scope="module", autouse=True)
def aws_fidelity(moto_endpoint):
    """The moto server follows AWS in four points (see the module docs); this module only."""
    from moto.kinesis import models
    from moto.kinesis.utils import decompose_shard_iterator

    def keep_records(original):
        def reshard(self, *args, **kwargs):
            before = {sid: shard.records for sid, shard in self.shards.items()}
            original(self, *args, **kwargs)
            for sid, shard in self.shards.items():
                shard.records = before.get(sid, collections.OrderedDict())
        return reshard

    original_get = models.KinesisBackend.get_records

    def get_records(self, stream_arn, shard_iterator, limit):
        next_iterator, records, behind = original_get(self, stream_arn, shard_iterator, limit)
        stream_name, shard_id, last = decompose_shard_iterator(next_iterator)
        shard = self.describe_stream(stream_arn=stream_arn, stream_name=stream_name).get_shard(shard_id)
        if not shard.is_open and int(last) >= shard.get_max_sequence_number():
            next_iterator = None
        return next_iterator, records, behind

    original_list = models.KinesisBackend.list_shards
    token_streams: dict[str, tuple] = {}

    def list_shards(self, stream_arn=None, stream_name=None, limit=None, next_token=None):
        if next_token and not (stream_arn or stream_name):
            stream_arn, stream_name = token_streams[next_token]
        shards, token = original_list(self, stream_arn=stream_arn, stream_name=stream_name, limit=limit,
                                      next_token=next_token)
        if token:
            token_streams[token] = (stream_arn, stream_name)
        return shards, token

    original_route = models.Stream.get_shard_for_key

    def get_shard_for_key(self, partition_key, explicit_hash_key):
        shard = original_route(self, partition_key, explicit_hash_key)   # validates the key
        if shard is None or shard.is_open:
            return shard
        key = (int(explicit_hash_key) if explicit_hash_key
               else int(hashlib.md5(partition_key.encode("utf-8")).hexdigest(), 16))
        return next((x for x in self.shards.values() if x.is_open and x.starting_hash <= key <= x.ending_hash), None)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models.Stream, "get_shard_for_key", get_shard_for_key)
        mp.setattr(models.KinesisBackend, "list_shards", list_shards)
        mp.setattr(models.Stream, "split_shard", keep_records(models.Stream.split_shard))
        mp.setattr(models.Stream, "merge_shards", keep_records(models.Stream.merge_shards))
        mp.setattr(models.KinesisBackend, "get_records", get_records)
        yield


def new_stream(kinesis, shards: int) -> str:
    name = f"src-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    wait_for(lambda: kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
             == "ACTIVE", 10, f"stream {name} to be ACTIVE")
    return name


def put(kinesis, stream: str, records: list[tuple[int, int]]) -> None:
    """Put ``(key, i)`` records in order (one PutRecords of up to 500 at a time)."""
    for start in range(0, len(records), 500):
        chunk = records[start:start + 500]
        resp = kinesis.put_records(StreamName=stream, Records=[
            {"Data": json.dumps([k, i]).encode(), "PartitionKey": f"k{k}"} for k, i in chunk])
        assert resp["FailedRecordCount"] == 0


def numbered(first: int, count: int, keys: int) -> list[tuple[int, int]]:
    return [(i % keys, i) for i in range(first, first + count)]


def shard_ids(kinesis, stream: str) -> list[str]:
    return [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]


# -- a stand-in for the runtime -----------------------------------------------------------------
class RecordingEnumeratorContext(SplitEnumeratorContext):
    """STAND-IN for the runtime's enumerator context: records every assignment in order and keeps
    it in a per-subtask inbox that :class:`Harness` hands to the reader; periodic calls are
    recorded, the test runs them (``Harness.discover``)."""

    def __init__(self, parallelism: int):
        self._parallelism = parallelism
        self.readers: set[int] = set()
        self.inbox: dict[int, list] = collections.defaultdict(list)
        self.assignments: list[tuple[int, str]] = []
        self.periodic: list[tuple] = []

    @property
    def parallelism(self) -> int:
        return self._parallelism

    @property
    def config(self):
        return Configuration()

    @property
    def file_system(self):
        return None

    def registered_readers(self) -> set[int]:
        return set(self.readers)

    def assign_splits(self, assignment) -> None:
        for subtask, splits in assignment.items():
            assert subtask in self.readers, f"split assigned to unregistered subtask {subtask}"
            for split in splits:
                self.inbox[subtask].append(split)
                self.assignments.append((subtask, split.split_id))

    def signal_no_more_splits(self, subtask: int) -> None:
        raise AssertionError("an unbounded source signalled no more splits")

    def call_periodically(self, fn, interval_ms: int) -> None:
        self.periodic.append((fn, interval_ms))


class Harness:
    """An enumerator and ``p`` readers of one source, driven as the runtime drives them.

    ``events`` is the global order of what the readers returned: ``("records", subtask, shard,
    [values])`` and ``("finished", subtask, shard)``; ``forward_finished=False`` queues the
    finished reports instead of handing them to the enumerator (a report still in flight).
    """

    def __init__(self, source: KinesisSource, p: int, enum_state=None, reader_states=()):
        self.source, self.p = source, p
        self.ctx = RecordingEnumeratorContext(p)
        self.enum = (source.restore_enumerator(self.ctx, enum_state) if enum_state is not None
                     else source.create_enumerator(self.ctx))
        self.bad: list[tuple[str, int, str]] = []
        self.contexts = [SubtaskContext("Kinesis Source", i, p, report_bad_record=lambda *a: self.bad.append(a))
                         for i in range(p)]
        self.readers = [source.create_split_reader(ctx) for ctx in self.contexts]
        for split in reader_states:                      # the runtime's rule for restored split states
            self.readers[split_owner(split.split_id, p)].add_splits([split])
        self.enum.start()
        for i, reader in enumerate(self.readers):
            reader.start()
            self.ctx.readers.add(i)
            self.enum.add_reader(i)
        self.events: list[tuple] = []
        self.forward_finished = True
        self.held: list[tuple[int, str]] = []

    def metric(self, rest_id: str) -> list:
        """The value of the metric ``rest_id`` in each reader's metric group (absent ones left out)."""
        return [v for ctx in self.contexts for rid, _, _, v in ctx.metric_group.snapshot() if rid == rest_id]

    def values(self) -> list[tuple]:
        return [tuple(v) for e in self.events if e[0] == "records" for v in e[3]]

    def deliver(self) -> None:
        for i, reader in enumerate(self.readers):
            splits, self.ctx.inbox[i] = self.ctx.inbox[i], []
            if splits:
                reader.add_splits(splits)

    def step(self, timeout_s: float = 0.02) -> None:
        self.deliver()
        for i, reader in enumerate(self.readers):
            for batch in reader.poll(timeout_s):
                if batch.records:
                    self.events.append(("records", i, batch.split_id, list(batch.records)))
                if batch.finished:
                    self.events.append(("finished", i, batch.split_id))
                    self.held.append((i, batch.split_id))
            if self.forward_finished:
                self.flush_finished()

    def flush_finished(self) -> None:
        held, self.held = self.held, []
        for i, sid in held:
            self.enum.handle_splits_finished(i, [sid])

    def discover(self) -> None:
        for fn, _ in self.ctx.periodic:
            fn()

    def run_until(self, predicate, timeout_s: float = 15.0, discover_every: int = 0) -> None:
        deadline = time.monotonic() + timeout_s
        n = 0
        while not predicate():
            assert time.monotonic() < deadline, (
                f"timed out; {len(self.values())} records read; assignments {self.ctx.assignments}; "
                f"reading {[r.shard_ids for r in self.readers]}; enumerator {self.enum.snapshot_state(0)}")
            self.step()
            n += 1
            if discover_every and n % discover_every == 0:
                self.discover()

    def checkpoint(self, checkpoint_id: int):
        """Enumerator state at the trigger, then the assignments made before it, then the readers' states."""
        enum_state = self.enum.snapshot_state(checkpoint_id)
        self.deliver()
        return enum_state, [s for r in self.readers for s in r.snapshot_state(checkpoint_id)]

    def complete(self, checkpoint_id: int) -> None:
        for r in self.readers:
            r.notify_checkpoint_complete(checkpoint_id)
        self.enum.notify_checkpoint_complete(checkpoint_id)

    def close(self) -> None:
        for r in self.readers:
            r.close()
        self.enum.close()


def source_for(stream: str, endpoint: str, **kw) -> KinesisSource:
    kw.setdefault("start_position", "TRIM_HORIZON")
    kw.setdefault("get_records_interval_ms", 0)
    return KinesisSource(stream, endpoint_url=endpoint, region="us-east-1", **kw)


def in_key_order(values: list[tuple]) -> bool:
    """Every key's ``i`` values appear in ascending order (the order they were put)."""
    last: dict[int, int] = {}
    for k, i in values:
        if last.get(k, -1) >= i:
            return False
        last[k] = i
    return True


# -- component tests ----------------------------------------------------------------------------
def test_trim_horizon_reads_every_shard_once_balanced_with_paged_listing(kinesis, moto_endpoint):
    """3 shards, 2 readers, ListShards one shard per page: every record once, in key order;
    the shards spread 2/1 over the readers; MillisBehindLatest reaches 0."""
    stream = new_stream(kinesis, 3)
    want = numbered(0, 300, 30)
    put(kinesis, stream, want)
    h = Harness(source_for(stream, moto_endpoint, list_shards_page_size=1, max_records_per_get=40), 2)
    h.run_until(lambda: len(h.values()) >= len(want))
    h.step()
    assert collections.Counter(h.values()) == collections.Counter(want)
    assert in_key_order(h.values())
    assert sorted(sid for _, sid in h.ctx.assignments) == shard_ids(kinesis, stream)
    assert sorted(collections.Counter(i for i, _ in h.ctx.assignments).values()) == [1, 2]
    assert all(v == 0 for r in h.readers for v in r.millis_behind_latest.values())
    for sid in shard_ids(kinesis, stream):                         # the gauges report the same
        assert h.metric(f"shardId.{sid}.millisBehindLatest") == [0]
    assert sum(r.get_records_calls.get_count() for r in h.readers) >= 8       # 300 records on 3 shards, 40 per call
    h.close()


def test_split_and_merge_while_reading_children_only_after_their_parents(kinesis, moto_endpoint):
    """A real SplitShard of shard 0 while it is half read, then a MergeShards of its two children:
    the children are assigned only after shard 0 was reported finished, the merged shard only
    after both children; every record is read once and each key's records in the order put."""
    stream = new_stream(kinesis, 2)
    s0, s1 = shard_ids(kinesis, stream)
    a, b, c = numbered(0, 200, 40), numbered(200, 200, 40), numbered(400, 200, 40)
    put(kinesis, stream, a)
    h = Harness(source_for(stream, moto_endpoint, max_records_per_get=15), 2)
    h.step()
    h.step()
    read_of_0 = sum(len(e[3]) for e in h.events if e[0] == "records" and e[2] == s0)
    assert 0 < read_of_0 <= 30                                    # shard 0 (~105 records) is partly read
    shard0 = kinesis.list_shards(StreamName=stream)["Shards"][0]
    lo, hi = int(shard0["HashKeyRange"]["StartingHashKey"]), int(shard0["HashKeyRange"]["EndingHashKey"])
    kinesis.split_shard(StreamName=stream, ShardToSplit=s0, NewStartingHashKey=str((lo + hi) // 2))
    put(kinesis, stream, b)
    h.discover()
    children = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]
                if s.get("ParentShardId") == s0]
    assert len(children) == 2
    assert not {sid for _, sid in h.ctx.assignments} & set(children)     # parent 0 not finished yet
    h.run_until(lambda: any(e[0] == "finished" and e[2] == s0 for e in h.events))
    h.step()
    kinesis.merge_shards(StreamName=stream, ShardToMerge=children[0], AdjacentShardToMerge=children[1])
    put(kinesis, stream, c)
    want = a + b + c
    h.run_until(lambda: len(h.values()) >= len(want), discover_every=5)
    h.step()
    assert collections.Counter(h.values()) == collections.Counter(want)
    assert in_key_order(h.values())
    merged = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]
              if s.get("AdjacentParentShardId")]
    assert len(merged) == 1

    def index(kind, sid):
        return next(n for n, e in enumerate(h.events) if e[0] == kind and e[2] == sid)

    for child in children:
        assert index("records", child) > index("finished", s0)
        assert index("records", merged[0]) > index("finished", child)
    order = [sid for _, sid in h.ctx.assignments]
    assert order.index(children[0]) > order.index(s0) and order.index(merged[0]) > order.index(children[1])
    assert s1 in order and not any(e[0] == "finished" and e[2] == s1 for e in h.events)   # open shard
    h.close()


def test_restore_keeps_every_record_once_and_a_finished_marker_releases_the_children(
        kinesis, moto_endpoint):
    """A checkpoint is taken while the reader's report that shard 0 is finished is still in
    flight (the enumerator's state still has it assigned); the job 'fails' after reading more,
    and is restored from that checkpoint at parallelism 3. The reader's finished marker is
    reported again, so the children of shard 0 are read; the output of the first run up to the
    checkpoint plus that of the restored run is every record exactly once."""
    stream = new_stream(kinesis, 2)
    s0 = shard_ids(kinesis, stream)[0]
    a, b = numbered(0, 160, 20), numbered(160, 160, 20)
    put(kinesis, stream, a)
    source = source_for(stream, moto_endpoint, max_records_per_get=20)
    h = Harness(source, 2)
    h.step()
    shard0 = kinesis.list_shards(StreamName=stream)["Shards"][0]
    mid = (int(shard0["HashKeyRange"]["StartingHashKey"]) + int(shard0["HashKeyRange"]["EndingHashKey"])) // 2
    kinesis.split_shard(StreamName=stream, ShardToSplit=s0, NewStartingHashKey=str(mid))
    put(kinesis, stream, b)
    h.discover()
    h.forward_finished = False
    h.run_until(lambda: any(e[0] == "finished" and e[2] == s0 for e in h.events))
    enum_state, reader_states = h.checkpoint(1)
    committed = h.values()
    assert s0 in enum_state["assigned"] and s0 not in enum_state["finished"]
    markers = [s for s in reader_states if s.finished]
    assert [m.split_id for m in markers] == [s0]
    h.flush_finished()
    h.forward_finished = True
    h.run_until(lambda: len(h.values()) > len(committed) + 30, discover_every=3)   # read on, then fail
    h.close()

    r = Harness(source, 3, enum_state, reader_states)
    r.run_until(lambda: len(committed) + len(r.values()) >= len(a + b), discover_every=3)
    r.step()
    assert collections.Counter(committed + r.values()) == collections.Counter(a + b)
    assert ("finished", split_owner(s0, 3), s0) in r.events                   # the marker, reported again
    # the marker leaves the reader's state once a checkpoint the enumerator covers completed
    _, states = r.checkpoint(2)
    assert s0 in {s.split_id for s in states if s.finished}
    r.complete(2)
    r.complete(3)
    _, states = r.checkpoint(4)
    assert s0 not in {s.split_id for s in states}
    r.close()


def test_latest_and_at_timestamp_read_only_what_arrived_after(kinesis, moto_endpoint):
    """LATEST: records put before the enumerator started are not read, all after are (also after a
    checkpoint taken before the first of them: LATEST is resolved to a timestamp); AT_TIMESTAMP:
    exactly the records put at or after the timestamp."""
    stream = new_stream(kinesis, 2)
    old, new, newer = numbered(0, 40, 10), numbered(40, 40, 10), numbered(80, 40, 10)
    put(kinesis, stream, old)
    time.sleep(0.05)
    source = source_for(stream, moto_endpoint, start_position="LATEST")
    h = Harness(source, 1)
    h.step()
    enum_state, reader_states = h.checkpoint(1)                 # nothing read yet
    assert all(s.sequence_number is None and s.start_position == "AT_TIMESTAMP" for s in reader_states)
    time.sleep(0.05)
    put(kinesis, stream, new)
    h.run_until(lambda: len(h.values()) >= len(new))
    h.step()
    assert collections.Counter(h.values()) == collections.Counter(new)
    h.close()
    r = Harness(source, 2, enum_state, reader_states)       # restored: still from the job's start time
    r.run_until(lambda: len(r.values()) >= len(new))
    assert collections.Counter(r.values()) == collections.Counter(new)
    r.close()

    at = int(time.time() * 1000) + 20
    time.sleep(0.06)
    put(kinesis, stream, newer)
    t = Harness(source_for(stream, moto_endpoint, start_position="AT_TIMESTAMP", start_timestamp_ms=at), 2)
    t.run_until(lambda: len(t.values()) >= len(newer))
    t.step()
    assert collections.Counter(t.values()) == collections.Counter(newer)
    t.close()


class FaultProxy(MotoRelay):
    """A relay to moto that answers chosen Kinesis calls with an AWS error instead of
    forwarding them: ``faults[action]`` is a list of ``(every_n, status, code)``; the n-th call of
    that action gets the first matching error. It records every request as ``(action, body)``."""

    def __init__(self, target: str, faults: dict):
        super().__init__(target)
        self.faults = faults
        self.calls: collections.Counter = collections.Counter()
        self.injected: collections.Counter = collections.Counter()   # error code -> times answered

    def handle(self, action, body, request):
        with self.lock:
            self.calls[action] += 1
            n = self.calls[action]
            self.requests.append((action, json.loads(body or b"{}")))
            fault = next(((st, code) for every, st, code in self.faults.get(action, ()) if n % every == 0), None)
            if fault:
                self.injected[fault[1]] += 1
        if fault:
            return (fault[0], [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", fault[1])],
                    json.dumps({"__type": fault[1], "message": "injected"}).encode())
        return self.forward(body, request)


def test_throttling_expired_iterators_and_failures_are_retried_per_shard(kinesis, moto_endpoint):
    """Every 3rd GetRecords throttled, every 7th answered ExpiredIteratorException, every 5th an
    InternalFailure (500), every 2nd GetShardIterator LimitExceededException: every record is
    still read exactly once, each is counted, and an expired iterator is replaced
    AFTER_SEQUENCE_NUMBER of the last record read. A shard failing max_attempts times in a row
    fails with an error naming the stream and the shard."""
    stream = new_stream(kinesis, 2)
    want = numbered(0, 200, 20)
    put(kinesis, stream, want)
    faults = {"GetRecords": [(3, 400, "ProvisionedThroughputExceededException"), (7, 400, "ExpiredIteratorException"),
                             (5, 500, "InternalFailure")],
              "GetShardIterator": [(2, 400, "LimitExceededException")]}
    with FaultProxy(moto_endpoint, faults) as proxy:
        source = source_for(stream, proxy.url, max_records_per_get=20, initial_backoff_ms=2, max_backoff_ms=20)
        h = Harness(source, 2)
        h.run_until(lambda: len(h.values()) >= len(want), timeout_s=25)
        h.step()
        assert collections.Counter(h.values()) == collections.Counter(want)
        assert in_key_order(h.values())
        total = lambda attr: sum(getattr(r, attr).get_count() for r in h.readers)  # noqa: E731
        got = proxy.injected
        assert got["ProvisionedThroughputExceededException"] and got["ExpiredIteratorException"]
        assert got["InternalFailure"] and got["LimitExceededException"]
        assert total("throttled") == got["ProvisionedThroughputExceededException"] + got["LimitExceededException"]
        assert total("iterators_renewed") == got["ExpiredIteratorException"]
        assert total("transient_errors") == got["InternalFailure"]
        # the same counts on the metric groups; each throttled or failed call backed off its
        # shard for 1 to 20 ms (half to all of initial_backoff_ms=2, doubling up to max_backoff_ms=20)
        throttled, failed = sum(h.metric("numThrottledRequests")), sum(h.metric("numTransientErrors"))
        assert throttled == total("throttled") and failed == got["InternalFailure"]
        assert sum(h.metric("numGetRecordsRequests")) == sum(n for a, n in proxy.calls.items() if a == "GetRecords")
        assert throttled + failed <= sum(h.metric("backoffTimeMs")) <= 20 * (throttled + failed)
        after = [b for a, b in proxy.requests if a == "GetShardIterator"
                 and b.get("ShardIteratorType") == "AFTER_SEQUENCE_NUMBER"]
        assert after and all(b["StartingSequenceNumber"] for b in after)
        h.close()

    with FaultProxy(moto_endpoint, {"GetRecords": [(1, 503, "ServiceUnavailable")]}) as proxy:
        source = source_for(stream, proxy.url, max_attempts=3, initial_backoff_ms=1, max_backoff_ms=2)
        h = Harness(source, 1)
        with pytest.raises(ConnectorError, match=rf"{stream}.*shard shardId-\d+: GetRecords failed 3 times"):
            h.run_until(lambda: False, timeout_s=10)
        h.close()


def test_bad_records_are_reported_with_shard_and_sequence_number_or_fatal(kinesis, moto_endpoint):
    """Data that is not JSON is skipped and reported as <stream>/<shard>:<sequence number>; the
    good records around it are read once; with fail_on_bad_records it fails naming the same."""
    stream = new_stream(kinesis, 1)
    put(kinesis, stream, numbered(0, 5, 5))
    bad = kinesis.put_record(StreamName=stream, Data=b"\xff not json", PartitionKey="x")["SequenceNumber"]
    put(kinesis, stream, numbered(5, 5, 5))
    h = Harness(source_for(stream, moto_endpoint, with_metadata=True), 1)
    h.run_until(lambda: len(h.values()) >= 10)
    got = [r for e in h.events if e[0] == "records" for r in e[3]]
    assert [tuple(r.value) for r in got] == numbered(0, 10, 5)
    shard = shard_ids(kinesis, stream)[0]
    assert {(r.stream, r.shard_id, r.partition_key) for r in got} == {(stream, shard, f"k{k}") for k in range(5)}
    assert all(abs(r.arrival_timestamp_ms - time.time() * 1000) < 60_000 for r in got)
    assert [(p, n) for p, n, _ in h.bad] == [(f"{stream}/{shard}", int(bad))]
    assert "cannot deserialize" in h.bad[0][2]
    assert h.readers[0].bad_records.get_count() == 1
    h.close()
    h = Harness(source_for(stream, moto_endpoint, fail_on_bad_records=True), 1)
    with pytest.raises(BadRecordError, match=rf"{stream}/{shard}:{bad}: cannot deserialize"):
        h.run_until(lambda: False, timeout_s=10)
    h.close()


def test_options_and_a_missing_stream_are_errors_naming_them(moto_endpoint):
    for kwargs, key in [({"start_position": "EARLIEST"}, "start_position"),
                        ({"start_position": "AT_TIMESTAMP"}, "start_timestamp_ms"),
                        ({"start_timestamp_ms": 5}, "start_timestamp_ms"),
                        ({"max_records_per_get": 10_001}, "max_records_per_get"),
                        ({"shard_discovery_interval_ms": 0}, "shard_discovery_interval_ms"),
                        ({"list_shards_page_size": 0}, "list_shards_page_size"),
                        ({"deserializer": "json"}, "deserializer"),
                        ({"max_backoff_ms": 1}, "max_backoff_ms")]:
        with pytest.raises(ConfigError, match=key) as info:
            KinesisSource("s", **kwargs)
        assert info.value.key == key
    with pytest.raises(ConfigError, match="stream_name"):
        KinesisSource("")
    source = KinesisSource("no-such-stream", endpoint_url=moto_endpoint, region="us-east-1")
    with pytest.raises(ConnectorError, match="Kinesis stream 'no-such-stream' does not exist"):
        source.create_enumerator(RecordingEnumeratorContext(1)).start()


def test_split_state_is_a_plain_picklable_dataclass():
    import pickle
    split = KinesisShardSplit("shardId-000000000002", "s", "AT_TIMESTAMP", 5, "49", ("shardId-000000000000",))
    assert pickle.loads(pickle.dumps(split)) == split


# -- a job --------------------------------------------------------------------------------------
def test_job_on_two_shards_with_a_taskmanager_kill_counts_every_record_once(tmp_path, kinesis, moto_endpoint):
    """tests/jobs/kinesis_keyed_count.py at p=2 on a 2-shard stream, checkpoints every 300 ms,
    records put while it runs and one TaskManager killed with SIGKILL: the committed output is
    exactly ``k,1 .. k,n_k`` per key (a record read twice writes a count twice, a lost one leaves
    one out), computed here from what was put."""
    stream = new_stream(kinesis, 2)
    out, ckdir = str(tmp_path / "out"), str(tmp_path / "checkpoints")
    keys, batches, per_batch = 30, 8, 250
    put(kinesis, stream, numbered(0, per_batch, keys))
    args = [JOB, "--stream", stream, "--output", out, "--endpoint-url", moto_endpoint]
    with running(*checkpointed_run(out, ckdir, "-D", "execution.checkpointing.interval=300ms"), *args) as proc:
        wait_for(lambda: completed_checkpoints(ckdir) or proc.poll() is not None, 60, "the first checkpoint")
        assert proc.poll() is None, proc.stderr.read()
        rng = random.Random()
        for n in range(1, batches):
            put(kinesis, stream, numbered(n * per_batch, per_batch, keys))
            time.sleep(rng.uniform(0.05, 0.15))
            if n == batches // 2:
                kill_a_taskmanager(proc, rng.choice)
        counts = collections.Counter(k for k, _ in numbered(0, batches * per_batch, keys))
        want = collections.Counter(f"{k},{c}" for k, n in counts.items() for c in range(1, n + 1))
        got = settled_output(proc, out, sum(want.values()), 90, 0.8)
        stderr = cancel(proc, 60)
    assert "restarting in" in stderr, stderr
    assert got == want, (f"{len(set(want) - set(got))} lines lost, {len(set(got) - set(want))} unexpected "
                         f"(records read twice count past n_k), {sum(n - 1 for n in got.values() if n > 1)} "
                         "duplicated")


def test_job_reads_the_children_of_a_shard_split_while_it_runs_after_their_parent(tmp_path, kinesis,
                                                                                  moto_endpoint):
    """The job at p=2 on a 2-shard stream with checkpoints every 200 ms; while it runs the test
    splits shard 0 (a real SplitShard), puts more records (those of shard 0's keys land in its
    children), kills a TaskManager with SIGKILL and puts more. The runtime forwards the reader's
    "shard 0 finished" to the enumerator, which then assigns the children. The committed output
    (``key,count,i``) is exactly what reading every record once, each key's in the order put,
    gives: a child read before its parent was finished would number that key's records out of
    order, a record read twice or lost would shift the counts."""
    stream = new_stream(kinesis, 2)
    s0 = shard_ids(kinesis, stream)[0]
    out, ckdir = str(tmp_path / "out"), str(tmp_path / "checkpoints")
    keys, per_batch = 20, 200
    put(kinesis, stream, numbered(0, per_batch, keys))
    args = [JOB, "--stream", stream, "--output", out, "--endpoint-url", moto_endpoint,
            "--discovery-interval-ms", "100", "--emit-index"]
    with running(*checkpointed_run(out, ckdir, "-D", "execution.checkpointing.interval=200ms"), *args) as proc:
        wait_for(lambda: completed_checkpoints(ckdir) or proc.poll() is not None, 30, "the first checkpoint")
        assert proc.poll() is None, proc.stderr.read()
        shard0 = kinesis.list_shards(StreamName=stream)["Shards"][0]
        lo, hi = int(shard0["HashKeyRange"]["StartingHashKey"]), int(shard0["HashKeyRange"]["EndingHashKey"])
        kinesis.split_shard(StreamName=stream, ShardToSplit=s0, NewStartingHashKey=str((lo + hi) // 2))
        children = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]
                    if s.get("ParentShardId") == s0]
        assert len(children) == 2
        put(kinesis, stream, numbered(per_batch, per_batch, keys))
        time.sleep(0.3)
        kill_a_taskmanager(proc)
        put(kinesis, stream, numbered(2 * per_batch, per_batch, keys))
        put_order = numbered(0, 3 * per_batch, keys)
        seen: dict[int, int] = collections.defaultdict(int)
        want = collections.Counter()
        for k, i in put_order:
            seen[k] += 1
            want[f"{k},{seen[k]},{i}"] += 1
        got = settled_output(proc, out, len(put_order), 12, 0.5)
        stderr = cancel(proc, 30)
    assert "restarting in" in stderr, stderr
    # the children hold records: the split moved shard 0's keys there
    routed = kinesis.get_records(ShardIterator=kinesis.get_shard_iterator(
        StreamName=stream, ShardId=children[0], ShardIteratorType="TRIM_HORIZON")["ShardIterator"])["Records"]
    routed += kinesis.get_records(ShardIterator=kinesis.get_shard_iterator(
        StreamName=stream, ShardId=children[1], ShardIteratorType="TRIM_HORIZON")["ShardIterator"])["Records"]
    assert len(routed) > 0
    assert got == want, (f"{len(set(want) - set(got))} lines missing, {len(set(got) - set(want))} unexpected; "
                         f"e.g. missing {sorted(set(want) - set(got))[:5]}, unexpected "
                         f"{sorted(set(got) - set(want))[:5]}")
