"""Kinesis source throughput on moto: the source's readers against a plain boto3 ``GetRecords`` loop.

Starts a moto server in a subprocess (``python -m moto.server``, so it does not share this
process's GIL), creates a stream of ``--shards`` shards and puts ``--records`` JSON records
``[key, i, padding]`` of about ``--size`` bytes (``PutRecords`` of 500). Then, on the same
stream, from ``TRIM_HORIZON``, until every record was read:

* ``boto3 loop``: one ``GetShardIterator`` and ``GetRecords(Limit=10000)`` calls per shard
  in turn, ``json.loads`` of each record's data (the floor of what any Python reader costs);
* ``KinesisSource p=N``: the source's enumerator and N readers (``KinesisShardReader``,
  deserializing with the default JSON deserializer), polled in turn in this process as the
  runtime polls them (a small stand-in context assigns the shards).

Printed per row: records, wall seconds, records/s, GetRecords calls. moto is far slower than
Kinesis per call and holds everything in memory, so the figures compare the reader's own
overhead with the loop's; they are not a Kinesis throughput (Kinesis serves up to 2 MB/s or
5 GetRecords/s per shard).

Usage::

    python bench/bench_kinesis_source.py [--records 20000] [--shards 4] [--size 100]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from emrflow.connectors.base import SubtaskContext  # noqa: E402
from emrflow.connectors.kinesis_source import KinesisSource  # noqa: E402
from emrflow.connectors.splits import SplitEnumeratorContext  # noqa: E402


class _Context(SplitEnumeratorContext):
    """Stand-in for the runtime's enumerator context: keeps assignments for the bench to hand over."""

    def __init__(self, p):
        self.p, self.inbox = p, {i: [] for i in range(p)}

    parallelism = property(lambda self: self.p)
    config = property(lambda self: {})
    file_system = property(lambda self: None)

    def registered_readers(self):
        return set(range(self.p))

    def assign_splits(self, assignment):
        for i, splits in assignment.items():
            self.inbox[i].extend(splits)

    def signal_no_more_splits(self, subtask):
        pass

    def call_periodically(self, fn, interval_ms):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto server did not start")


def fill(client, stream: str, records: int, size: int) -> None:
    pad = "x" * max(0, size - 20)
    for start in range(0, records, 500):
        batch = [{"Data": json.dumps([i % 1000, i, pad]).encode(), "PartitionKey": f"k{i % 1000}"}
                 for i in range(start, min(records, start + 500))]
        resp = client.put_records(StreamName=stream, Records=batch)
        assert resp["FailedRecordCount"] == 0


def boto3_loop(client, stream: str, total: int) -> tuple[int, int]:
    n = calls = 0
    shards = [s["ShardId"] for s in client.list_shards(StreamName=stream)["Shards"]]
    iters = {s: client.get_shard_iterator(StreamName=stream, ShardId=s, ShardIteratorType="TRIM_HORIZON")
             ["ShardIterator"] for s in shards}
    while n < total:
        for s in shards:
            resp = client.get_records(ShardIterator=iters[s], Limit=10_000)
            calls += 1
            n += len([json.loads(r["Data"]) for r in resp["Records"]])
            iters[s] = resp["NextShardIterator"]
    return n, calls


def source_run(endpoint: str, stream: str, total: int, p: int) -> tuple[int, int]:
    source = KinesisSource(stream, start_position="TRIM_HORIZON", endpoint_url=endpoint, region="us-east-1",
                           get_records_interval_ms=0)
    ctx = _Context(p)
    enum = source.create_enumerator(ctx)
    readers = [source.create_split_reader(SubtaskContext("Kinesis Source", i, p)) for i in range(p)]
    enum.start()
    for i, r in enumerate(readers):
        r.start()
        enum.add_reader(i)
    n = 0
    while n < total:
        for i, r in enumerate(readers):
            if ctx.inbox[i]:
                r.add_splits(ctx.inbox[i])
                ctx.inbox[i] = []
            n += sum(len(b.records) for b in r.poll(0.05))
    calls = sum(r.get_records_calls.get_count() for r in readers)
    for r in readers:
        r.close()
    enum.close()
    return n, calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--size", type=int, default=100, help="bytes per record, about")
    args = ap.parse_args()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(k, v)
    import boto3
    proc, endpoint = start_moto()
    try:
        client = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")
        stream = "bench"
        client.create_stream(StreamName=stream, ShardCount=args.shards)
        t = time.perf_counter()
        fill(client, stream, args.records, args.size)
        print(f"put {args.records} records of ~{args.size} B on {args.shards} shards in "
              f"{time.perf_counter() - t:.1f} s (moto server in a subprocess)")
        print(f"{'reader':<22}{'records':>9}{'wall s':>9}{'records/s':>11}{'GetRecords':>12}")
        loop = ("boto3 loop", lambda: boto3_loop(client, stream, args.records))
        rows = [loop] + [(f"KinesisSource p={p}", lambda p=p: source_run(endpoint, stream, args.records, p))
                         for p in (1, 2)] + [loop]   # the loop first and last: moto's speed drifts
        for name, fn in rows:
            t = time.perf_counter()
            n, calls = fn()
            wall = time.perf_counter() - t
            print(f"{name:<22}{n:>9}{wall:>9.2f}{n / wall:>11,.0f}{calls:>12}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
