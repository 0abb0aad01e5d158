"""Moving exchange frames between two slot processes: TCP on the loopback vs shared memory.

Issue 16 asks for shared memory instead of TCP between the slot processes of one TaskManager
"where it is faster". This measures how much faster it could be, on the frames the engine sends:
``COLUMNS`` frames, Arrow IPC streams of a ``ColumnBatch`` (by default 11,500 rows of the
ratings' four columns plus the timestamp, about 460 KB: what a p=2 source of the 30-day window
job sends per frame).

Two real processes (forked), one producer and one consumer, move ``--frames`` frames:

* **tcp**: a TCP connection on 127.0.0.1, one 8-byte length and the frame per message
  (``sendall``), the consumer reading into a buffer (``recv_into``), as
  ``emrflow.runtime.network.channels`` does;
* **shm**: a ``multiprocessing.shared_memory`` ring of ``--slots`` frame-sized slots; the producer
  copies a frame into a free slot and writes the slot's number and length to a pipe, the
  consumer reads the pipe and returns the slot on another pipe once done (credit-based: the
  producer waits for a free slot). This is the cheapest a shared-memory channel can be: it still
  needs one copy into the ring and two small writes per frame to wake the other side.

In both the consumer parses the frame with ``ColumnBatch.from_bytes`` (zero-copy over the
buffer) and reads one column's sum, so the frame is really touched. Prints per transport: wall
seconds, MB/s, CPU seconds of producer and consumer, and CPU microseconds per frame; then the
CPU a job would save: (tcp - shm) per frame × the frames a p=2 slot sends in the window job.

Usage::

    python bench/bench_shm_channel.py [--frames 2000] [--rows 11500] [--slots 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import struct
import time
from multiprocessing import shared_memory

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from emrflow.runtime.network.columns import TIMESTAMP_FIELD, ColumnBatch

LEN = struct.Struct("<Q")


def make_frame(rows: int) -> bytes:
    """One COLUMNS frame: a timestamped batch of (user, movie, rating, ts) rows as Arrow IPC."""
    rng = np.random.default_rng(1)
    cols = [pa.array(rng.integers(1, 600, rows)), pa.array(rng.integers(1, 190_000, rows)),
            pa.array(rng.integers(1, 11, rows) / 2), pa.array(rng.integers(8 * 10**8, 17 * 10**8, rows)),
            pa.array(rng.integers(8 * 10**11, 17 * 10**11, rows))]
    rb = pa.record_batch(cols, names=["userId", "movieId", "rating", "timestamp", TIMESTAMP_FIELD])
    return ColumnBatch(rb).to_bytes()


def _touch(buf) -> int:
    batch = ColumnBatch.from_bytes(buf)
    return int(pc.sum(batch.record_batch.column(1)).as_py())


# -- TCP ------------------------------------------------------------------------------------------
def _tcp_consumer(port: int, frames: int, size: int, out) -> None:
    c0 = time.process_time()
    s = socket.create_connection(("127.0.0.1", port))
    buf = bytearray(size)
    view = memoryview(buf)
    head = bytearray(LEN.size)
    for _ in range(frames):
        got = 0
        while got < LEN.size:
            got += s.recv_into(memoryview(head)[got:])
        (n,) = LEN.unpack(head)
        got = 0
        while got < n:
            got += s.recv_into(view[got:n])
        _touch(view[:n])
    s.close()
    out.put(time.process_time() - c0)


def run_tcp(frame: bytes, frames: int) -> tuple[float, float, float]:
    fork = multiprocessing.get_context("fork")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    q = fork.Queue()
    consumer = fork.Process(target=_tcp_consumer, args=(srv.getsockname()[1], frames, len(frame), q))
    t0 = time.perf_counter()
    c0 = time.process_time()
    consumer.start()
    conn, _ = srv.accept()
    head = LEN.pack(len(frame))
    for _ in range(frames):
        conn.sendall(head)
        conn.sendall(frame)
    consumer.join()
    wall = time.perf_counter() - t0
    producer_cpu = time.process_time() - c0
    conn.close()
    srv.close()
    return wall, producer_cpu, q.get()


# -- shared memory ring -----------------------------------------------------------------------------
def _shm_consumer(name: str, frames: int, size: int, ready_r: int, free_w: int, out) -> None:
    c0 = time.process_time()
    shm = shared_memory.SharedMemory(name=name)
    ready = os.fdopen(ready_r, "rb", buffering=0)
    msg = bytearray(16)
    for _ in range(frames):
        got = 0
        while got < 16:
            got += ready.readinto(memoryview(msg)[got:])
        slot, n = struct.unpack("<QQ", msg)
        _touch(shm.buf[slot * size: slot * size + n])
        os.write(free_w, struct.pack("<Q", slot))  # the slot is free again (a credit)
    shm.close()
    out.put(time.process_time() - c0)


def run_shm(frame: bytes, frames: int, slots: int) -> tuple[float, float, float]:
    fork = multiprocessing.get_context("fork")
    size = len(frame)
    shm = shared_memory.SharedMemory(create=True, size=size * slots)
    ready_r, ready_w = os.pipe()
    free_r, free_w = os.pipe()
    q = fork.Queue()
    consumer = fork.Process(target=_shm_consumer, args=(shm.name, frames, size, ready_r, free_w, q))
    t0 = time.perf_counter()
    c0 = time.process_time()
    consumer.start()
    free = list(range(slots))
    freed = os.fdopen(free_r, "rb", buffering=0)
    data = memoryview(frame)
    for _ in range(frames):
        if not free:
            free.append(struct.unpack("<Q", freed.read(8))[0])
        slot = free.pop()
        shm.buf[slot * size: slot * size + size] = data
        os.write(ready_w, struct.pack("<QQ", slot, size))
    consumer.join()
    wall = time.perf_counter() - t0
    producer_cpu = time.process_time() - c0
    shm.close()
    shm.unlink()
    for fd in (ready_w, free_w):
        os.close(fd)
    return wall, producer_cpu, q.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=11_500, help="rows per frame")
    parser.add_argument("--slots", type=int, default=4, help="frames the shared-memory ring holds")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--job-frames", type=int, default=109,
                        help="frames one p=2 slot sends to the other in the window job (5 M rows / 2 "
                             "sources / 2 consumers / 11,500 rows per frame)")
    args = parser.parse_args()
    frame = make_frame(args.rows)
    mb = len(frame) * args.frames / 1e6
    print(f"{args.frames} frames of {len(frame) / 1e3:.0f} KB ({args.rows} rows), {mb:.0f} MB per run")
    per_frame: dict[str, list[float]] = {"tcp": [], "shm": []}
    for r in range(args.repeat):
        for name, run in (("tcp", lambda: run_tcp(frame, args.frames)),
                          ("shm", lambda: run_shm(frame, args.frames, args.slots))):
            wall, prod, cons = run()
            us = (prod + cons) / args.frames * 1e6
            per_frame[name].append(us)
            print(f"round {r + 1} {name}: wall {wall:.2f} s, {mb / wall:.0f} MB/s, CPU producer {prod:.2f} s "
                  f"+ consumer {cons:.2f} s = {us:.0f} us per frame")
    tcp, shm = (statistics.median(per_frame[name]) for name in ("tcp", "shm"))
    saved = (tcp - shm) * args.job_frames / 1e6
    print(f"median CPU per frame: tcp {tcp:.0f} us, shm {shm:.0f} us; shared memory would save "
          f"{saved * 1000:.0f} ms of CPU per slot in the window job ({args.job_frames} frames)")


if __name__ == "__main__":
    main()
