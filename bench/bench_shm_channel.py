"""The engine's exchange between two slot processes: TCP against shared memory, by frame size.

Issue 16 asks for shared memory instead of TCP between the slot processes of one TaskManager
"where it is faster". This runs the engine's own channel classes in two real processes (forked):
a producer with a :class:`~emrflow.runtime.network.channels.RemoteChannel` and a consumer with a
:class:`~emrflow.runtime.network.channels.DataServer` and an ``InputGate``, the consumer parsing
each buffer as a slot process does (``ColumnBatch.from_bytes``, one column's sum, so the frame is
really touched) and returning the credit after it. The channel runs twice per frame size:

* **tcp**: ``taskmanager.network.shared-memory: false`` (``shared_memory_slot_bytes=0``);
* **shm**: the default, a Unix socket plus the shared-memory ring. Buffers under
  ``SHM_MIN_BYTES`` still go through the socket, so for those sizes this measures the Unix socket.

Frames are ``COLUMNS`` frames (Arrow IPC) of the ratings' four columns plus the timestamp; 11,500
rows, about 460 KB, is what a p=2 source of the 30-day window job sends per frame. Prints per
size and transport: wall seconds, MB/s, CPU of producer and consumer, CPU microseconds per frame
(median over rounds), and the CPU a p=2 slot of the window job saves (``--job-frames`` frames).

Usage::

    python bench/bench_shm_channel.py [--frames 2000] [--rows 100,1000,11500,50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emrflow.runtime.network.channels import COLUMNS, EVENT, SHM_MIN_BYTES, DataServer, InputGate, RemoteChannel
from emrflow.runtime.network.columns import TIMESTAMP_FIELD, ColumnBatch

SECRET = "bench"


def make_batch(rows: int) -> ColumnBatch:
    """A timestamped batch of (user, movie, rating, ts) rows."""
    rng = np.random.default_rng(1)
    cols = [pa.array(rng.integers(1, 600, rows)), pa.array(rng.integers(1, 190_000, rows)),
            pa.array(rng.integers(1, 11, rows) / 2), pa.array(rng.integers(8 * 10**8, 17 * 10**8, rows)),
            pa.array(rng.integers(8 * 10**11, 17 * 10**11, rows))]
    return ColumnBatch(pa.record_batch(cols, names=["userId", "movieId", "rating", "timestamp", TIMESTAMP_FIELD]))


def _consumer(frames: int, address_out, result_out) -> None:
    cancel = threading.Event()
    server = DataServer("127.0.0.1", SECRET)
    gate = InputGate(1, cancel)
    server.register("job", 1, 0, gate)
    address_out.put(server.data_address)
    c0 = time.process_time()
    total = 0
    got = 0
    while got < frames:
        item = gate.get(30)
        if item is None:
            raise SystemExit("consumer: no frame for 30 s")
        _, kind, payload = item
        if kind == COLUMNS:
            total += int(pc.sum(ColumnBatch.from_bytes(payload).record_batch.column(1)).as_py())
            got += 1
        elif kind != EVENT:
            raise SystemExit(f"consumer: unexpected frame kind {kind}")
        gate.ack(0)
    result_out.put((time.process_time() - c0, total))
    server.close()


def run(batch: ColumnBatch, frames: int, slot_bytes: int) -> tuple[float, float, float, str]:
    """Move ``frames`` copies of ``batch``; returns wall s, producer CPU s, consumer CPU s, transport."""
    fork = multiprocessing.get_context("fork")
    addr_q, res_q = fork.Queue(), fork.Queue()
    consumer = fork.Process(target=_consumer, args=(frames, addr_q, res_q))
    consumer.start()
    address = addr_q.get(timeout=30)
    cancel = threading.Event()
    t0 = time.perf_counter()
    c0 = time.process_time()
    channel = RemoteChannel(address, SECRET, "job", 1, 0, 0, 2, cancel, slot_bytes)
    for _ in range(frames):
        channel.send_records(batch)
    consumer_cpu, total = res_q.get(timeout=300)
    wall = time.perf_counter() - t0
    producer_cpu = time.process_time() - c0
    channel.close()
    consumer.join()
    expected = int(pc.sum(batch.record_batch.column(1)).as_py()) * frames
    if total != expected:
        raise SystemExit(f"{channel.transport}: consumer summed {total}, expected {expected}")
    return wall, producer_cpu, consumer_cpu, channel.transport


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2000, help="frames per run")
    parser.add_argument("--rows", default="100,1000,11500,50000", help="rows per frame, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slot-bytes", type=int, default=4 << 20,
                        help="taskmanager.network.shared-memory.slot-size of the shm runs")
    parser.add_argument("--job-frames", type=int, default=109,
                        help="frames one p=2 slot sends to the other in the window job (5 M rows / 2 "
                             "sources / 2 consumers / 11,500 rows per frame)")
    args = parser.parse_args()
    print(f"SHM_MIN_BYTES = {SHM_MIN_BYTES}: smaller frames go through the socket on either transport")
    print("| rows | frame KB | tcp us CPU / frame | shm us CPU / frame | shm transport | tcp MB/s | shm MB/s |")
    print("|---|---|---|---|---|---|---|")
    lines = []
    for rows in (int(r) for r in args.rows.split(",")):
        batch = make_batch(rows)
        size = len(batch.to_buffer())
        us: dict[str, list[float]] = {"tcp": [], "shm": []}
        mbs: dict[str, list[float]] = {"tcp": [], "shm": []}
        used = ""
        for _ in range(args.repeat):
            for name, slot_bytes in (("tcp", 0), ("shm", args.slot_bytes)):
                wall, prod, cons, transport = run(batch, args.frames, slot_bytes)
                us[name].append((prod + cons) / args.frames * 1e6)
                mbs[name].append(size * args.frames / 1e6 / wall)
                if name == "shm":
                    ring = SHM_MIN_BYTES <= size <= args.slot_bytes
                    used = transport + (" (ring)" if ring else " (socket only)")
        tcp, shm = statistics.median(us["tcp"]), statistics.median(us["shm"])
        print(f"| {rows:,} | {size / 1e3:.1f} | {tcp:.0f} | {shm:.0f} | {used} | "
              f"{statistics.median(mbs['tcp']):.0f} | {statistics.median(mbs['shm']):.0f} |", flush=True)
        if rows == 11_500:
            lines.append(f"window job, {args.job_frames} frames of {size / 1e3:.0f} KB per p=2 slot: "
                         f"shared memory saves {(tcp - shm) * args.job_frames / 1e3:.0f} ms of CPU per slot")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
