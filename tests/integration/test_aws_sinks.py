"""The DynamoDB and Kinesis sinks against moto in server mode (one ThreadedMotoServer per session).

Jobs are tests/jobs/aws_sinks_job.py, run by ``emrflow run`` in a subprocess: a running count
per key written to a DynamoDB table (one item per key, upserted) and to a Kinesis stream (one
record per count). The references are computed here in plain Python: the table must hold,
for every key, the item of its last count; the stream must hold every ``[key, count]`` once
(at least once after a failover). What the sinks send is checked at the wire by
:class:`RecordingProxy`, a plain HTTP relay between the sink and moto (boto3 is not patched).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import decimal
import hashlib
import json
import os
import random
import threading
import time
import urllib.request
import uuid

import boto3
import pytest
from conftest_emr import MotoRelay, aws_env, moto_endpoint  # noqa: F401  (moto server fixtures)
from test_checkpoints import checkpointed_run, kill_after_first_checkpoint, running, start, wait_for
from test_standalone import Cluster, cli, get

from emrflow.connectors import _aws
from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.dynamodb import DynamoDbSink, send_with_retries
from emrflow.connectors.kinesis import KinesisSink, failed_entries, put_with_retries
from emrflow.errors import ConfigError, ConnectorError
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:moto.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:werkzeug.*")]

JOB = os.path.join(ROOT, "tests", "jobs", "aws_sinks_job.py")
SPREAD = 37  # as in the job: key k is item (pk "k<k % 37>", sk k // 37)


def new_ctx() -> SubtaskContext:
    """A writer's context, with a metric group of its own (counters start at 0)."""
    return SubtaskContext(operator_name="sink", subtask_index=0, parallelism=1)


# -- servers, tables, streams --------------------------------------------------------------
@pytest.fixture(scope="module")
def dynamodb(moto_endpoint):
    return boto3.client("dynamodb", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture(scope="module")
def kinesis(moto_endpoint):
    return boto3.client("kinesis", endpoint_url=moto_endpoint, region_name="us-east-1")


def new_table(dynamodb, composite: bool = True) -> str:
    name = f"t-{uuid.uuid4().hex[:10]}"
    keys = [("pk", "HASH", "S")] + ([("sk", "RANGE", "N")] if composite else [])
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": a, "KeyType": t} for a, t, _ in keys],
                          AttributeDefinitions=[{"AttributeName": a, "AttributeType": s} for a, _, s in keys])
    return name


def new_stream(kinesis, shards: int = 3) -> str:
    name = f"s-{uuid.uuid4().hex[:10]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    wait_for(lambda: kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"]
             == "ACTIVE", 10, f"stream {name} to be ACTIVE")
    return name


def scan(dynamodb, table: str) -> dict:
    """Every item of ``table`` as ``{(pk, sk): item}`` (plain boto3 paging and deserializing)."""
    from boto3.dynamodb.types import TypeDeserializer
    des = TypeDeserializer()
    items, kwargs = {}, {}
    while True:
        page = dynamodb.scan(TableName=table, **kwargs)
        for raw in page["Items"]:
            item = {k: des.deserialize(v) for k, v in raw.items()}
            items[(item["pk"], item.get("sk"))] = item
        if "LastEvaluatedKey" not in page:
            return items
        kwargs = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


def read_stream(kinesis, stream: str) -> list[tuple[dict, str, bytes]]:
    """Every record of every shard, from TRIM_HORIZON: ``(shard, partition key, data)``."""
    out = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            page = kinesis.get_records(ShardIterator=it, Limit=10_000)
            out.extend((shard, r["PartitionKey"], r["Data"]) for r in page["Records"])
            if not page["Records"]:
                break
            it = page.get("NextShardIterator")
    return out


def counts_per_key(count: int, keys: int) -> collections.Counter:
    return collections.Counter(i % keys for i in range(count))


def reference_items(count: int, keys: int) -> dict:
    """What the table must hold: per key, the item of its last (highest) count, as DynamoDB returns it."""
    out = {}
    for k, n in counts_per_key(count, keys).items():
        pk, sk = f"k{k % SPREAD}", decimal.Decimal(k // SPREAD)
        out[(pk, sk)] = {"pk": pk, "sk": sk, "count": decimal.Decimal(n), "ratio": decimal.Decimal(repr(n / 4)),
                         "tags": ["even" if n % 2 == 0 else "odd", str(k)]}
    return out


def reference_records(count: int, keys: int) -> collections.Counter:
    """What the stream must hold: ``[k,c]`` once for every key k and c in 1..n_k."""
    return collections.Counter(json.dumps([k, c], separators=(",", ":")).encode()
                               for k, n in counts_per_key(count, keys).items() for c in range(1, n + 1))


def in_shard(shard: dict, partition_key: str) -> bool:
    """Kinesis routes a record to the shard whose hash key range holds MD5(partition key)."""
    h = int(hashlib.md5(partition_key.encode()).hexdigest(), 16)
    rng = shard["HashKeyRange"]
    return int(rng["StartingHashKey"]) <= h <= int(rng["EndingHashKey"])


class RecordingProxy(MotoRelay):
    """A relay to moto that records every request body and how many bytes of
    ``PutRecords`` (data plus partition keys) were in flight at once; ``delay_s`` slows each
    request down so that a writer's concurrent requests overlap.

    It hands ``PutRecords`` requests to moto one at a time: moto's Kinesis shard is not safe for concurrent
    ``PutRecords`` (``Shard.put_record`` says so; two requests at once can get one sequence
    number and one record overwrites the other), while the sinks send concurrently, as real
    Kinesis allows.
    """

    def __init__(self, target: str, delay_s: float = 0.0):
        super().__init__(target)
        self.delay_s = delay_s
        self.forward_lock = threading.Lock()
        self.in_flight = self.peak_in_flight = 0

    def handle(self, action, body, request):
        payload = json.loads(body or b"{}")
        size = sum(len(base64.b64decode(r["Data"])) + len(r["PartitionKey"].encode())
                   for r in payload.get("Records", [])) if action == "PutRecords" else 0
        with self.lock:
            self.requests.append((action, payload))
            self.in_flight += size
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            with self.forward_lock if action == "PutRecords" else contextlib.nullcontext():
                return self.forward(body, request)
        finally:
            with self.lock:
                self.in_flight -= size


@pytest.fixture()
def relay(moto_endpoint):
    """A :class:`RecordingProxy` to moto for a job's sinks."""
    with RecordingProxy(moto_endpoint) as proxy:
        yield proxy


def check_wire(proxy: RecordingProxy) -> None:
    """Every request the sinks sent kept the services' limits: BatchWriteItem <= 25 items with
    distinct primary keys, PutRecords <= 500 records of <= 5 MiB."""
    writes = [b for body in proxy.bodies("BatchWriteItem") for b in body["RequestItems"].values()]
    assert writes
    for batch in writes:
        keys = [(r["PutRequest"]["Item"]["pk"]["S"], r["PutRequest"]["Item"]["sk"]["N"]) for r in batch]
        assert 1 <= len(batch) <= 25 and len(set(keys)) == len(keys)
    for body in proxy.bodies("PutRecords"):
        assert 1 <= len(body["Records"]) <= 500
        assert sum(len(base64.b64decode(r["Data"])) + len(r["PartitionKey"]) for r in body["Records"]) <= 5 << 20


def run_job(tmp_path, *args: str, env_extra: dict | None = None, p: str = "2"):
    proc = start("run", "-q", "-p", p, JOB, *args, env_extra=env_extra)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, err


# -- jobs ----------------------------------------------------------------------------------
def test_job_upserts_the_last_item_per_key_and_writes_every_record_once(tmp_path, dynamodb, kinesis, relay):
    """One job, p=2, no failure, on a standalone cluster: the table equals the last value per key;
    the stream holds every serialized record exactly once, in the shard its partition key hashes
    to. 40 keys: about 20 per sink subtask, so most updates of a key are merged in the writer's
    buffer. The sinks' metrics, read back from the JobManager's REST API and Prometheus endpoint
    after the job finished, agree with the stream and with what the relay saw on the wire."""
    count, keys = 3000, 40
    table, stream = new_table(dynamodb), new_stream(kinesis)
    c = Cluster(str(tmp_path / "cluster"), taskmanagers=1, slots=2, extra=("-D", "metrics.reporter.prom.port=0"))
    try:
        job_id = cli("run", "-d", "-p", "2", "-m", c.rest, JOB, "--count", str(count), "--keys", str(keys),
                     "--table", table, "--stream", stream, "--endpoint-url", relay.url,
                     workdir=c.workdir).stdout.split()[-1]
        wait_for(lambda: get(c.rest, f"/jobs/{job_id}")["state"] in ("FINISHED", "FAILED"), 90, "the job's end")
        details = get(c.rest, f"/jobs/{job_id}")
        assert details["state"] == "FINISHED", get(c.rest, f"/jobs/{job_id}/exceptions")["root-exception"]
        sinks = next(v for v in details["vertices"] if {"kinesis", "dynamodb"} <= {o["name"] for o in v["operators"]})
        base = f"/jobs/{job_id}/vertices/{sinks['id']}"
        ids = {m["id"] for m in get(c.rest, f"{base}/metrics")}
        assert {"0.kinesis.numRecordsSend", "1.dynamodb.numRecordsOutErrors", "1.kinesis.numBytesSend"} <= ids
        names = ["kinesis.numRecordsSend", "kinesis.numBytesSend", "kinesis.numRecordsOutErrors",
                 "kinesis.numPutRecordsRequests", "dynamodb.numRecordsSend", "dynamodb.numBatchWriteItemRequests",
                 "dynamodb.numRecordsOutErrors", "count.numRecordsOut"]
        total = {m["id"]: m["sum"] for m in get(c.rest, f"{base}/subtasks/metrics?get={','.join(names)}&agg=sum")}
        per_subtask = [int(m["value"]) for i in (0, 1)
                       for m in get(c.rest, f"{base}/subtasks/{i}/metrics?get=kinesis.numRecordsSend")]
        with urllib.request.urlopen(f"http://127.0.0.1:{c.info['metrics_port']}/metrics", timeout=10) as r:
            prometheus = [line for line in r.read().decode().splitlines()
                          if line.startswith("flink_taskmanager_job_task_operator_numRecordsSend{")
                          and f'job_id="{job_id}"' in line and 'operator_name="kinesis"' in line]
    finally:
        assert not c.stop()
    check_wire(relay)
    puts, batch_writes = relay.bodies("PutRecords"), relay.bodies("BatchWriteItem")
    in_stream = len(read_stream(kinesis, stream))
    assert in_stream == count
    assert total == {"kinesis.numRecordsSend": in_stream, "count.numRecordsOut": count,
                     "kinesis.numBytesSend": sum(len(base64.b64decode(r["Data"])) + len(r["PartitionKey"])
                                                 for body in puts for r in body["Records"]),
                     "kinesis.numRecordsOutErrors": 0, "kinesis.numPutRecordsRequests": len(puts),
                     "dynamodb.numRecordsSend": sum(len(b) for body in batch_writes
                                                    for b in body["RequestItems"].values()),
                     "dynamodb.numBatchWriteItemRequests": len(batch_writes), "dynamodb.numRecordsOutErrors": 0}
    assert len(per_subtask) == 2 and sum(per_subtask) == in_stream and min(per_subtask) > 0
    assert len(prometheus) == 2 and sum(float(line.rsplit(" ", 1)[1]) for line in prometheus) == in_stream
    got = scan(dynamodb, table)
    want = reference_items(count, keys)
    assert len(got) == keys
    assert got == want
    records = read_stream(kinesis, stream)
    assert collections.Counter(data for _, _, data in records) == reference_records(count, keys)
    for shard, pk, data in records:
        assert pk == f"key-{json.loads(data)[0]}"   # the partition key function's value
        assert in_shard(shard, pk), (pk, shard["ShardId"])
    assert len({shard["ShardId"] for shard, _, _ in records}) == 3  # 40 keys reach every shard


def test_taskmanager_killed_table_stays_exact_and_stream_loses_nothing(tmp_path, dynamodb, kinesis, relay):
    """Checkpoints every 300 ms and a TaskManager killed with SIGKILL after a checkpoint: the job
    restarts from it and replays; upserts keep the table exact, the stream has every record at
    least once and nothing else. Both sinks write between checkpoints (200 keys: a DynamoDB batch
    fills every 25 distinct keys; a Kinesis request of 200 records about once per checkpoint
    interval), so the replay rewrites items and resends records; a partial Kinesis request is
    usually pending at a barrier, so a writer that did not flush there would lose records. The
    endpoint comes from AWS_ENDPOINT_URL here."""
    count, keys = 3000, 200
    table, stream = new_table(dynamodb), new_stream(kinesis)
    ckdir = str(tmp_path / "checkpoints")
    args = checkpointed_run(None, ckdir, "-D", "execution.checkpointing.interval=300ms")
    with running(*args, JOB, "--count", str(count), "--keys", str(keys), "--rate", "600",
                 "--table", table, "--stream", stream, "--kinesis-batch", "200",
                 env_extra={"AWS_ENDPOINT_URL": relay.url}) as proc:
        stderr = kill_after_first_checkpoint(proc, ckdir, (0.3, 0.8), 120)
    assert proc.returncode == 0, stderr
    assert "restarting in" in stderr, stderr
    check_wire(relay)
    assert scan(dynamodb, table) == reference_items(count, keys)
    got = collections.Counter(data for _, _, data in read_stream(kinesis, stream))
    want = reference_records(count, keys)
    assert set(got) - set(want) == set(), "records the job never produced"
    assert set(want) - set(got) == set(), f"{len(set(want) - set(got))} records lost"
    print(f"stream: {sum(got.values())} records for {len(want)} distinct, "
          f"{sum(got.values()) - len(want)} duplicates from the replay")


def test_missing_table_fails_the_job_naming_it(tmp_path, moto_endpoint):
    rc, err = run_job(tmp_path, "--count", "10", "--keys", "2", "--table", "no-such-table",
                      "--endpoint-url", moto_endpoint, p="1")
    assert rc == 1
    assert "DynamoDB table 'no-such-table' does not exist" in err, err


# -- writers against the real server, checked at the wire ------------------------------------
def test_dynamodb_batches_of_25_distinct_keys_last_write_wins(dynamodb, moto_endpoint):
    table = new_table(dynamodb, composite=False)
    rng = random.Random(5)
    records = [{"pk": f"u{rng.randrange(80)}", "v": i, "f": i / 3} for i in range(500)]
    with RecordingProxy(moto_endpoint) as proxy:
        writer = DynamoDbSink(table, endpoint_url=proxy.url).create_writer(new_ctx())
        for i in range(0, len(records), 100):
            writer.write_batch(records[i:i + 100])
        writer.snapshot_state(1)  # a checkpoint flushes everything
        assert writer.requests.get_count() == len(proxy.bodies("BatchWriteItem"))
    batches = [b["RequestItems"][table] for b in proxy.bodies("BatchWriteItem")]
    assert batches and all(1 <= len(b) <= 25 for b in batches)
    for b in batches:  # DynamoDB refuses two writes to one key in a batch (moto does not check it)
        keys = [r["PutRequest"]["Item"]["pk"]["S"] for r in b]
        assert len(keys) == len(set(keys))
    last = {r["pk"]: r for r in records}
    got = {pk: item for (pk, _), item in scan(dynamodb, table).items()}
    assert got == {pk: {"pk": pk, "v": decimal.Decimal(r["v"]), "f": decimal.Decimal(repr(r["f"]))}
                   for pk, r in last.items()}
    assert sum(len(b) for b in batches) < len(records)  # repeated keys were merged in the buffer


def test_dynamodb_item_without_key_attribute_or_not_a_dict(dynamodb, moto_endpoint):
    table = new_table(dynamodb)
    writer = DynamoDbSink(table, endpoint_url=moto_endpoint).create_writer(new_ctx())
    writer.write_batch([{"pk": "a", "sk": 1}, {"pk": "b", "sk": 2}])
    with pytest.raises(ConnectorError, match=rf"DynamoDB table '{table}': record 2 of subtask 0 lacks the key "
                                             r"attribute 'sk' \(the table's key is \['pk', 'sk'\]\)"):
        writer.write_batch([{"pk": "c"}])
    with pytest.raises(ConnectorError, match=r"record 2 of subtask 0 is a tuple, expected a dict.*item="):
        writer.write_batch([("c", 3)])
    writer.flush()
    assert set(scan(dynamodb, table)) == {("a", 1), ("b", 2)}


def test_missing_table_and_stream_errors_name_them(moto_endpoint):
    with pytest.raises(ConnectorError, match=r"DynamoDB table 'absent-table' does not exist in region us-east-1"):
        DynamoDbSink("absent-table", endpoint_url=moto_endpoint).create_writer(new_ctx())
    with pytest.raises(ConnectorError, match=r"Kinesis stream 'absent-stream' does not exist in region us-east-1"):
        KinesisSink("absent-stream", str, endpoint_url=moto_endpoint).create_writer(new_ctx())


def test_kinesis_requests_stay_within_limits_and_in_flight_bytes_are_bounded(kinesis, moto_endpoint):
    """Records of 1 to 3 KiB through a relay that holds each request 30 ms: the writer keeps up to
    8 requests of <= 16 KiB going but never more than 48 KiB in flight (checked at the relay),
    and every record arrives once."""
    stream = new_stream(kinesis, shards=2)
    rng = random.Random(3)
    records = [{"i": i, "pad": "x" * rng.randrange(1024, 3072)} for i in range(300)]
    with RecordingProxy(moto_endpoint, delay_s=0.03) as proxy:
        writer = KinesisSink(stream, lambda r: str(r["i"] % 50), max_batch_bytes=16 << 10,
                             max_buffered_bytes=48 << 10, max_in_flight_requests=8,
                             endpoint_url=proxy.url).create_writer(new_ctx())
        writer.write_batch(records)
        writer.prepare_commit()
        writer.commit()
    puts = proxy.bodies("PutRecords")
    sizes = [sum(len(base64.b64decode(r["Data"])) + len(r["PartitionKey"]) for r in p["Records"]) for p in puts]
    assert all(len(p["Records"]) <= 500 for p in puts) and max(sizes) <= 16 << 10
    assert proxy.peak_in_flight <= 48 << 10, proxy.peak_in_flight
    assert proxy.peak_in_flight > 16 << 10  # requests did overlap: the bound, not the pool, limited them
    assert writer.peak_in_flight_bytes <= 48 << 10
    got = collections.Counter(data for _, _, data in read_stream(kinesis, stream))
    assert got == collections.Counter(json.dumps(r, separators=(",", ":")).encode() for r in records)


def test_kinesis_record_over_1_mib_is_an_error_naming_its_index(kinesis, moto_endpoint):
    stream = new_stream(kinesis, shards=1)
    writer = KinesisSink(stream, lambda r: "p", serializer=lambda r: r,
                         endpoint_url=moto_endpoint).create_writer(new_ctx())
    exactly = b"x" * ((1 << 20) - 1)  # 1 MiB with the 1-byte partition key: Kinesis takes it
    writer.write_batch([b"a", exactly])
    with pytest.raises(ConnectorError, match=rf"Kinesis stream '{stream}': record 3 of subtask 0 is 1048577 bytes "
                                             r"\(data plus partition key\), above Kinesis's limit"):
        writer.write_batch([b"b", exactly + b"y"])
    writer.snapshot_state(1)  # a checkpoint barrier: every record before it is in the stream on return
    assert sorted(len(d) for _, _, d in read_stream(kinesis, stream)) == [1, 1, len(exactly)]


def test_options_are_checked_naming_them():
    with pytest.raises(ConfigError, match=r"DynamoDbSink\('t'\): batch_size must be an integer in \[1, 25\], got 26"):
        DynamoDbSink("t", batch_size=26)
    with pytest.raises(ConfigError, match=r"KinesisSink\('s'\): max_batch_records must be an integer in \[1, 500\]"):
        KinesisSink("s", str, max_batch_records=501)
    with pytest.raises(ConfigError, match=r"max_batch_bytes must be an integer in \[1, 5242880\]"):
        KinesisSink("s", str, max_batch_bytes=(5 << 20) + 1)
    with pytest.raises(ConfigError, match=r"max_attempts must be an integer >= 1, got 0"):
        KinesisSink("s", str, max_attempts=0)


# -- partial failures: pure logic --------------------------------------------------------------
# STAND-IN FOR PURE LOGIC: moto never answers PutRecords with a partial failure (it rejects a whole
# request or writes all of it) nor BatchWriteItem with UnprocessedItems, so the retry loops the
# writers use are driven here with plain response dicts shaped as the AWS API documents them.
def test_kinesis_retries_only_the_failed_entries_then_gives_up_naming_the_stream():
    entries = [{"Data": bytes([i]), "PartitionKey": str(i)} for i in range(6)]
    calls, sleeps = [], []

    def put(batch):
        calls.append(list(batch))
        if len(calls) == 1:
            return {"FailedRecordCount": 3, "Records": [
                {"SequenceNumber": "1", "ShardId": "shardId-0"},
                {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"},
                {"SequenceNumber": "2", "ShardId": "shardId-0"},
                {"ErrorCode": "InternalFailure", "ErrorMessage": "Internal service failure."},
                {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"},
                {"SequenceNumber": "3", "ShardId": "shardId-1"}]}
        if len(calls) == 2:
            return {"FailedRecordCount": 1, "Records": [
                {"SequenceNumber": "4", "ShardId": "shardId-0"},
                {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"},
                {"SequenceNumber": "5", "ShardId": "shardId-1"}]}
        return {"FailedRecordCount": 0, "Records": [{"SequenceNumber": "6", "ShardId": "shardId-1"}] * len(batch)}

    backoff = _aws.Backoff(100, 1000, random.Random(1))
    assert put_with_retries(put, "clicks", entries, 5, backoff, sleeps.append) == (4, 3)
    assert calls == [entries, [entries[1], entries[3], entries[4]], [entries[3]]]
    assert len(sleeps) == 2 and 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2

    calls.clear()
    always = lambda batch: {"FailedRecordCount": len(batch),  # noqa: E731
                            "Records": [{"ErrorCode": "ProvisionedThroughputExceededException"}] * len(batch)}
    with pytest.raises(ConnectorError, match=r"Kinesis stream 'clicks': 6 of 6 records still failed after 3 PutRecords "
                                             r"attempts \(ProvisionedThroughputExceededException x6\)"):
        put_with_retries(always, "clicks", entries, 3, backoff, sleeps.append)
    with pytest.raises(ConnectorError, match="2 results for 6 records"):
        failed_entries(entries, {"FailedRecordCount": 1, "Records": [{}, {"ErrorCode": "InternalFailure"}]})


def test_dynamodb_retries_unprocessed_items_then_fails_naming_the_table_and_count():
    reqs = [{"PutRequest": {"Item": {"pk": {"S": str(i)}}}} for i in range(25)]
    calls, sleeps = [], []

    def send(batch):
        calls.append(list(batch))
        left = batch[::2] if len(calls) < 3 else []
        return {"UnprocessedItems": {"orders": left} if left else {}}

    backoff = _aws.Backoff(50, 5000, random.Random(2))
    assert send_with_retries(send, "orders", reqs, 10, backoff, sleeps.append) == 13 + 7
    assert calls == [reqs, reqs[::2], reqs[::2][::2]]
    assert 0.025 <= sleeps[0] <= 0.05 and 0.05 <= sleeps[1] <= 0.1

    stuck = lambda batch: {"UnprocessedItems": {"orders": batch[:4]}}  # noqa: E731
    with pytest.raises(ConnectorError, match=r"DynamoDB table 'orders': 4 of 25 items still unprocessed after 4 "
                                             r"BatchWriteItem attempts"):
        send_with_retries(stuck, "orders", reqs, 4, backoff, sleeps.append)
