"""Kafka benchmark: Kafka -> keyed count -> Kafka throughput against a plain confluent-kafka loop,
and end-to-end latency (record created -> visible in the output topic) of a checkpointed job.

What it measures (issue 17, item 8). The script starts its own single-node KRaft broker (the
test fixture's ``KafkaBroker`` from ``tests/integration/conftest_kafka.py``: Maven Central's
jars in ``tests/kafka/target/lib``, ``bash .ci/fetch-kafka-jars`` fetches them) and kills it at
the end. Everything talks to it over TCP through confluent-kafka (librdkafka).

1. **Throughput.** ``--records`` small keyed records (Kafka key ``k<i mod keys>``, value
   ``k<i mod keys>,<i>``, about 12 bytes) are produced into an input topic of 2 partitions.
   Then, each into its own output topic of 2 partitions, one after the other:

   * ``loop``: a plain confluent-kafka program in one process (the reference): a ``Consumer``
     assigned to both partitions reads up to the high watermarks of the start, decodes the
     value, counts per key in a dict and produces ``key -> "key,count"`` with an idempotent
     ``Producer`` whose delivery callback counts failures (the guarantee of the at-least-once
     sink), then flushes;
   * ``emrflow p=1`` and ``p=2``: ``emrflow run`` of the same computation as a job: bounded
     ``KafkaSource`` (``stopping_offsets="latest"``) -> ``map`` to ``(key, 1)`` -> ``key_by`` ->
     ``sum(1)`` (a running count, one output record per input record) -> ``KafkaSink``
     (at-least-once, no checkpoints: it flushes and checks every delivery at the end).

   Printed per run: records/s (records / the job's own runtime, and records / the wall time
   of the whole command with Python start-up, cluster start and stop), the wall seconds, the
   peak RSS of the process tree (the command and every descendant: JobManager, TaskManagers,
   slot processes; psutil, sampled every 20 ms), then the ratios p=1 / loop (target >= 0.5)
   and p=2 / p=1. Every output topic is read back and checked against a plain-Python
   reference of the input: for each key with ``n`` input records the output must hold exactly
   the counts ``1 .. n`` once each (so its final count is ``n``); a run that loses, repeats
   or miscounts a record is reported as FAILED and the script exits 1.

2. **End-to-end latency.** An unbounded job (``KafkaSource`` from the earliest offset ->
   ``key_by`` -> an identity ``map`` -> ``KafkaSink``, checkpoints every second) runs on
   fresh topics (2 partitions each). Once a first warm-up record has come through, a producer
   thread writes ``--rate`` records/s for ``--warmup`` + ``--seconds`` seconds, each value
   carrying its creation time in ms (``time.time()`` just before ``produce``); a consumer in
   the main thread reads the output topic and takes ``now - creation`` for every record
   created after the warm-up (the warm-up leaves out the catching up after the job's start).
   Printed: records measured, p50 / p99 / max in ms, whether the at-least-once target
   p99 < 250 ms is met, records missing or seen twice, the p50 of each second of the run (a
   job that falls behind shows a rising series), the part until the job's sink called
   ``produce()`` (the output records' Kafka ``CreateTime``), and how far the producer thread
   fell behind its schedule (a starved benchmark process, not the job). First, a *floor* run
   without a job (the consumer reads the input topic itself, at most 5 s) shows what the
   producer -> broker -> consumer path alone costs on this machine. With
   ``--exactly-once`` the same runs again with the transactional sink
   (``delivery_guarantee="exactly-once"``, consumer ``isolation.level=read_committed``):
   records become visible when the checkpoint after them completes, so the latency includes
   up to one checkpoint interval (no target). Each job is then cancelled (SIGINT to
   ``emrflow run``: cancel, cluster stop, exit 130) and the script checks that no process of
   its tree is left.

The figures depend on the machine's load: ``emrflow run`` and the reference share its cores
with the broker (a JVM) and the benchmark's own producer and consumer. The load average is
printed at the start and at the end.

Usage::

    python bench/bench_kafka.py [--records 1000000] [--keys 1000] [--rate 20000] [--seconds 20]
                                [--warmup 5] [--latency-parallelism 1] [--exactly-once]
                                [--only throughput|latency]

Internal modes (started by the benchmark itself): ``bench_kafka.py loop ...`` is the plain
loop, ``emrflow run bench/bench_kafka.py job ...`` the emrflow job.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from array import array

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.abspath(__file__)
PARTITIONS = 2


# -- the emrflow jobs (run by `emrflow run bench/bench_kafka.py job ...`) ---------------------------

def key_of_value(v: str) -> str:
    return v.split(",", 1)[0]


def job_main(argv: list[str]) -> None:
    from emrflow.api.environment import StreamExecutionEnvironment
    from emrflow.connectors.kafka import KafkaSink
    from emrflow.connectors.kafka_source import KafkaSource

    p = argparse.ArgumentParser(prog="bench_kafka.py job")
    p.add_argument("kind", choices=["count", "latency"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--guarantee", default="at-least-once")
    args = p.parse_args(argv)
    env = StreamExecutionEnvironment.get_execution_environment()
    if args.kind == "count":
        source = KafkaSource(args.input, args.bootstrap, starting_offsets="earliest", stopping_offsets="latest")
        sink = KafkaSink(args.output, bootstrap_servers=args.bootstrap,
                         key_serializer=lambda r: r[0].encode(),
                         value_serializer=lambda r: f"{r[0]},{r[1]}".encode(),
                         delivery_guarantee=args.guarantee)
        (env.from_source(source, source_name="kafka").uid("kafka")
            .map(lambda v: (key_of_value(v), 1)).uid("pair")
            .key_by(lambda t: t[0])
            .sum(1).uid("count").name("count")
            .sink_to(sink).uid("sink"))
        env.execute("bench kafka keyed count")
        return
    source = KafkaSource(args.input, args.bootstrap, starting_offsets="earliest",
                         partition_discovery_interval_ms=0)
    sink = KafkaSink(args.output, bootstrap_servers=args.bootstrap,
                     key_serializer=lambda v: key_of_value(v).encode(), delivery_guarantee=args.guarantee)
    (env.from_source(source, source_name="kafka").uid("kafka")
        .key_by(key_of_value)
        .map(lambda v: v).uid("keyed-map").name("keyed map")
        .sink_to(sink).uid("sink"))
    env.execute("bench kafka latency")


# -- the reference: a plain confluent-kafka loop in one process ---------------------------------------

def loop_main(argv: list[str]) -> None:
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    p = argparse.ArgumentParser(prog="bench_kafka.py loop")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    consumer = Consumer({"bootstrap.servers": args.bootstrap, "group.id": "bench-loop",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True})
    ends = {}
    for q in range(PARTITIONS):
        low, high = consumer.get_watermark_offsets(TopicPartition(args.input, q), timeout=30)
        if high > low:
            ends[q] = high
    consumer.assign([TopicPartition(args.input, q, 0) for q in ends])
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(err)

    counts: dict[str, int] = {}
    n = 0
    produce, poll, output = producer.produce, producer.poll, args.output
    while ends:
        for m in consumer.consume(500, 1.0):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise SystemExit(f"loop: consumer error: {err}")
            q, off = m.partition(), m.offset()
            if q not in ends or off >= ends[q]:
                continue
            k = m.value().decode("utf-8").split(",", 1)[0]
            c = counts.get(k, 0) + 1
            counts[k] = c
            while True:
                try:
                    produce(output, f"{k},{c}".encode(), k.encode(), on_delivery=on_delivery)
                    break
                except BufferError:
                    poll(0.05)
            n += 1
            if off + 1 >= ends[q]:
                del ends[q]
        poll(0)
    left = producer.flush(120)
    consumer.close()
    if failed or left:
        raise SystemExit(f"loop: {len(failed)} deliveries failed ({failed[:1]}), {left} unacknowledged")
    print(json.dumps({"records": n, "seconds": time.perf_counter() - t0}), flush=True)


# -- the benchmark -----------------------------------------------------------------------------------

def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def start_broker(work_dir: str):
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    import conftest_kafka
    problem = conftest_kafka.unavailable_reason()
    if problem:
        raise SystemExit(f"cannot start a Kafka broker: {problem}")
    broker = conftest_kafka.KafkaBroker(work_dir)
    broker.start()
    return broker


_ADMIN: dict = {}


def create_topic(servers: str, name: str, partitions: int = PARTITIONS) -> None:
    """Create ``name`` (one replica) with one AdminClient kept for the whole run (a client per
    topic logs a librdkafka notice when it is collected)."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = _ADMIN.get(servers)
    if admin is None:
        admin = _ADMIN[servers] = AdminClient({"bootstrap.servers": servers})
    for future in admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10).values():
        future.result(timeout=30)


def produce_input(servers: str, topic: str, records: int, keys: int) -> float:
    from confluent_kafka import Producer
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 50, "batch.num.messages": 10000,
                         "queue.buffering.max.messages": 1_000_000})
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(err)

    t0 = time.perf_counter()
    produce, poll = producer.produce, producer.poll
    for i in range(records):
        k = f"k{i % keys}"
        while True:
            try:
                produce(topic, f"{k},{i}".encode(), k.encode(), on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.1)
        if i % 10000 == 0:
            poll(0)
    left = producer.flush(120)
    if failed or left:
        raise SystemExit(f"producing the input failed: {failed[:1]}, {left} unacknowledged")
    return time.perf_counter() - t0


def reference_counts(records: int, keys: int) -> dict[str, int]:
    """The final count per key of the input (computed from how it was generated, not from Kafka)."""
    return {f"k{j}": records // keys + (1 if j < records % keys else 0) for j in range(min(keys, records))}


def check_counts(servers: str, topic: str, want: dict[str, int]) -> str | None:
    """Read ``topic`` to its end; return None if every key ``k`` holds exactly the counts
    ``1 .. want[k]`` once each, else what is wrong."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": servers, "group.id": "bench-check", "enable.auto.commit": False,
                  "isolation.level": "read_committed"})
    ends = {}
    for q in range(PARTITIONS):
        low, high = c.get_watermark_offsets(TopicPartition(topic, q), timeout=30)
        if high > low:
            ends[q] = high
    c.assign([TopicPartition(topic, q, 0) for q in ends])
    got: dict[str, array] = {}
    deadline = time.monotonic() + 300
    while ends and time.monotonic() < deadline:
        for m in c.consume(1000, 1.0):
            if m.error() is not None:
                continue
            k, n = m.value().decode().split(",")
            a = got.get(k)
            if a is None:
                a = got[k] = array("l")
            a.append(int(n))
            q = m.partition()
            if q in ends and m.offset() + 1 >= ends[q]:
                del ends[q]
    c.close()
    problems = []
    if set(got) != set(want):
        problems.append(f"keys differ: {len(set(want) - set(got))} missing, {len(set(got) - set(want))} extra")
    wrong = [k for k, n in want.items() if k in got and sorted(got[k]) != list(range(1, n + 1))]
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} keys with wrong counts, e.g. {k}: {len(got[k])} records, final "
                        f"{max(got[k])}, expected 1..{want[k]}")
    return "; ".join(problems) or None


class Tree:
    """A started command with its process tree's peak RSS (bench_foundation.TreeRss)."""

    def __init__(self, cmd: list[str]):
        from bench_foundation import TreeRss
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                     stdin=subprocess.DEVNULL)
        self.rss = TreeRss(self.proc.pid)

    def finish(self, timeout: float | None = None) -> tuple[str, str, float, int]:
        out, err = self.proc.communicate(timeout=timeout)
        wall = time.perf_counter() - self.t0
        return out, err, wall, self.rss.stop()


def emrflow_cmd(parallelism: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "emrflow.cli", "run", "-p", str(parallelism), *extra, HERE, "job"]


def throughput(broker, args) -> bool:
    servers = broker.bootstrap_servers
    create_topic(servers, "bench-in")
    print(f"\n== throughput: {args.records:,} records, {args.keys} keys, input topic of {PARTITIONS} partitions")
    secs = produce_input(servers, "bench-in", args.records, args.keys)
    print(f"produced the input in {secs:.1f} s ({args.records / secs:,.0f} records/s)")
    want = reference_counts(args.records, args.keys)
    rows = {}
    ok = True
    print(f"{'run':<12}{'records/s':>11}{'(wall)':>11}{'job s':>8}{'wall s':>8}{'peak RSS':>10}  output check")
    for name, p in (("loop", 0), ("emrflow p=1", 1), ("emrflow p=2", 2)):
        out_topic = f"bench-out-{'loop' if p == 0 else f'p{p}'}"
        create_topic(servers, out_topic)
        if p == 0:
            cmd = [sys.executable, HERE, "loop", "--bootstrap", servers, "--input", "bench-in", "--output", out_topic]
        else:
            cmd = emrflow_cmd(p) + ["count", "--bootstrap", servers, "--input", "bench-in", "--output", out_topic]
        stdout, stderr, wall, peak = Tree(cmd).finish()
        if p == 0:
            if not stdout.strip():
                raise SystemExit(f"the loop failed:\n{stderr}")
            job_s = json.loads(stdout.strip().splitlines()[-1])["seconds"]
        else:
            m = re.search(r"Job Runtime: (\d+) ms", stderr)
            if m is None:
                raise SystemExit(f"emrflow p={p} failed:\n{stderr[-3000:]}")
            job_s = int(m.group(1)) / 1000
        problem = check_counts(servers, out_topic, want)
        ok = ok and problem is None
        rows[p] = (args.records / job_s, args.records / wall)
        print(f"{name:<12}{args.records / job_s:>11,.0f}{args.records / wall:>11,.0f}{job_s:>8.2f}{wall:>8.2f}"
              f"{peak / 2**20:>7.0f} MiB  {'ok: counts 1..n per key' if problem is None else 'FAILED: ' + problem}")
    print(f"p=1 / loop  : {rows[1][0] / rows[0][0]:.2f} (job), {rows[1][1] / rows[0][1]:.2f} (wall)   (target >= 0.5)")
    print(f"p=2 / p=1   : {rows[2][0] / rows[1][0]:.2f} (job), {rows[2][1] / rows[1][1]:.2f} (wall)")
    return ok


def percentile(sorted_values: list[float], q: float) -> float:
    i = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[i]


def latency(broker, args, guarantee: str | None, run: int, ckdir: str) -> bool:
    """One latency run (see the module docs); ``guarantee`` ``None``: no job, the consumer reads
    the input topic itself (the floor of the producer -> broker -> consumer path). Returns
    False if a record was missing (or seen twice with exactly-once) or the cancel was not clean."""
    import psutil
    from confluent_kafka import Consumer, Producer, TopicPartition
    servers = broker.bootstrap_servers
    tin, tout = f"lat-in-{run}", f"lat-out-{run}"
    create_topic(servers, tin)
    eo = guarantee == "exactly-once"
    seconds = args.seconds if guarantee else min(args.seconds, 5.0)
    if guarantee is None:
        tout, job = tin, None
        print(f"\n== latency floor, no job: producer -> input topic -> consumer, {args.rate:,} records/s "
              f"for {seconds} s (after {args.warmup} s of warm-up)")
    else:
        create_topic(servers, tout)
        print(f"\n== end-to-end latency, {guarantee} sink: {args.rate:,} records/s for {seconds} s "
              f"(after {args.warmup} s of warm-up), p={args.latency_parallelism}, checkpoints every 1 s")
        cmd = emrflow_cmd(args.latency_parallelism, "-D", "execution.checkpointing.interval=1s",
                          "-D", f"state.checkpoints.dir={ckdir}/{run}") + [
            "latency", "--bootstrap", servers, "--input", tin, "--output", tout, "--guarantee", guarantee]
        job = Tree(cmd)
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"bench-lat-{run}", "enable.auto.commit": False,
                         "isolation.level": "read_committed" if eo else "read_uncommitted"})
    consumer.assign([TopicPartition(tout, q, 0) for q in range(PARTITIONS)])
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 1})
    # wait until the job runs end to end: one warm-up record every 200 ms until one comes out
    deadline, seen_warm, i = time.monotonic() + 180, False, 0
    while not seen_warm:
        if job is None:
            pass
        elif job.proc.poll() is not None or time.monotonic() > deadline:
            _, err, _, _ = job.finish()
            raise SystemExit(f"the latency job did not start ({guarantee}):\n{err[-3000:]}")
        producer.produce(tin, f"k{i % args.keys},-1,{time.time() * 1000:.3f},w".encode(), f"k{i % args.keys}".encode())
        producer.poll(0)
        i += 1
        seen_warm = bool(consumer.consume(100, 0.2))
    started = time.monotonic() - (deadline - 180)
    total = int(args.rate * seconds)
    state = {"sent": 0, "done": False, "behind_max": 0}

    def produce_at_rate():
        t0 = time.monotonic()
        sent = warm = 0
        warm_n = int(args.rate * args.warmup)
        while sent < total:
            now = time.monotonic() - t0
            due = int(now * args.rate)
            state["behind_max"] = max(state["behind_max"], due - warm - sent)
            while warm + sent < due and sent < total:
                created = time.time() * 1000
                if warm < warm_n:
                    seq, flag, warm = -1, "w", warm + 1
                else:
                    seq, flag, sent = sent, "m", sent + 1
                k = f"k{(seq if seq >= 0 else warm) % args.keys}"
                while True:
                    try:
                        producer.produce(tin, f"{k},{seq},{created:.3f},{flag}".encode(), k.encode())
                        break
                    except BufferError:
                        producer.poll(0.01)
            producer.poll(0)
            time.sleep(0.001)
        producer.flush(60)
        state["sent"], state["done"] = sent, True

    thread = threading.Thread(target=produce_at_rate, daemon=True)
    thread.start()
    lat: list[float] = []
    to_sink: list[float] = []
    by_second: dict[int, list[float]] = {}
    seen = bytearray(total)
    dup = 0
    quiet_until = None
    while True:
        msgs = consumer.consume(1000, 0.1)
        now = time.time() * 1000
        for m in msgs:
            if m.error() is not None:
                continue
            _, seq, created, flag = m.value().decode().split(",")
            if flag != "m":
                continue
            s = int(seq)
            if seen[s]:
                dup += 1
                continue
            seen[s] = 1
            lat.append(now - float(created))
            by_second.setdefault(s // args.rate, []).append(lat[-1])
            ts_type, ts = m.timestamp()   # CreateTime: when the job's sink called produce()
            if ts_type == 1:
                to_sink.append(ts - float(created))
        if state["done"]:
            if len(lat) >= total:
                break
            quiet_until = quiet_until or time.monotonic() + 15 + (1 if eo else 0)
            if time.monotonic() > quiet_until:
                break
        if job is not None and job.proc.poll() is not None:
            break
    thread.join()
    consumer.close()
    if job is None:
        if not lat:
            print("no record came through")
            return False
        lat.sort()
        print(f"records measured: {len(lat):,} of {total:,}; latency ms: p50 {percentile(lat, 50):.1f}, "
              f"p99 {percentile(lat, 99):.1f}, max {lat[-1]:.1f}; the producer thread was at most "
              f"{state['behind_max'] / args.rate * 1000:.0f} ms behind its schedule")
        return len(lat) == total
    alive = job.proc.poll() is None
    tree = []
    if alive:
        try:
            tree = psutil.Process(job.proc.pid).children(recursive=True)
        except psutil.Error:
            pass
        job.proc.send_signal(signal.SIGINT)   # cancel: emrflow run cancels the job and stops the cluster
    _, err, wall, peak = job.finish(timeout=120)
    time.sleep(0.5)
    left = [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    cancelled = alive and job.proc.returncode == 130 and "the job was cancelled" in err and not left
    lat.sort()
    missing = total - len(lat)
    print(f"job running end to end after {started:.1f} s; the producer thread was at most "
          f"{state['behind_max'] / args.rate * 1000:.0f} ms behind its schedule")
    if not lat:
        print(f"no measured record came through; job stderr:\n{err[-3000:]}")
        return False
    p50, p99, worst = percentile(lat, 50), percentile(lat, 99), lat[-1]
    print(f"records measured: {len(lat):,} of {total:,} (missing {missing}, seen twice {dup}); "
          f"peak RSS of the job's tree {peak / 2**20:.0f} MiB")
    target = ""
    if not eo:
        target = f"   target p99 < 250 ms: {'met' if p99 < 250 else 'NOT met'}"
    print(f"latency ms: p50 {p50:.1f}, p99 {p99:.1f}, max {worst:.1f}{target}")
    series = [sorted(v)[len(v) // 2] for _, v in sorted(by_second.items())]
    print("  p50 per second of the run (ms): " + " ".join(f"{x:.0f}" for x in series))
    if to_sink:
        to_sink.sort()
        print(f"  of which created -> the sink's produce() (the records' CreateTime in the output topic): "
              f"p50 {percentile(to_sink, 50):.1f}, p99 {percentile(to_sink, 99):.1f} ms")
    print(f"cancel: {'clean' if cancelled else 'NOT clean'} (exit {job.proc.returncode}, "
          f"{len(tree)} processes in the tree, {len(left)} left)")
    if not cancelled:
        print(err[-3000:])
    return cancelled and missing == 0 and (dup == 0 or not eo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000, help="throughput: input records")
    ap.add_argument("--keys", type=int, default=1000, help="distinct keys")
    ap.add_argument("--rate", type=int, default=20_000, help="latency: records/s produced")
    ap.add_argument("--seconds", type=float, default=20.0, help="latency: seconds measured at --rate")
    ap.add_argument("--warmup", type=float, default=5.0, help="latency: seconds at --rate not measured first")
    ap.add_argument("--latency-parallelism", type=int, default=1, help="latency: the job's parallelism")
    ap.add_argument("--exactly-once", action="store_true", help="latency: also with the transactional sink")
    ap.add_argument("--only", choices=["throughput", "latency"])
    args = ap.parse_args()
    for name in ("records", "keys", "rate", "latency_parallelism"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.seconds <= 0 or args.warmup < 0:
        ap.error("--seconds must be > 0 and --warmup >= 0")
    import confluent_kafka
    print(f"machine: {os.cpu_count()} cores, load average {load()}, Python {sys.version.split()[0]}, "
          f"confluent-kafka {confluent_kafka.version()[0]} (librdkafka {confluent_kafka.libversion()[0]})")
    tmp = tempfile.mkdtemp(prefix="emrflow-bench-kafka-")
    broker = start_broker(os.path.join(tmp, "kafka"))
    ok = True
    try:
        print(f"Kafka broker (KRaft, single node) at {broker.bootstrap_servers}, started in "
              f"{broker.start_seconds:.1f} s")
        if args.only in (None, "throughput"):
            ok = throughput(broker, args) and ok
        if args.only in (None, "latency"):
            guarantees = [None, "at-least-once"] + (["exactly-once"] if args.exactly_once else [])
            for run, g in enumerate(guarantees):
                ok = latency(broker, args, g, run, os.path.join(tmp, "checkpoints")) and ok
    finally:
        _ADMIN.clear()   # before the broker goes: librdkafka logs each lost connection of a live client
        gc.collect()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average at the end: {load()}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "job":
        job_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "loop":
        loop_main(sys.argv[2:])
    else:
        main()
