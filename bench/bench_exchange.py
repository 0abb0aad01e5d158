"""Exchange micro-benchmark: what hash partitioning and buffer pickling cost per record, and why
the same code costs several times more inside a running job than on a freshly built list.

Runs in one process, no cluster. For 1 M records shaped like the ratings job's
``(userId, movieId, rating, timestamp)`` with 100 k distinct ``(movieId, userId)`` keys spread
over the input, it prints CPU nanoseconds per record (``time.thread_time``, best of
``--repeat`` passes) of:

* ``HashWriter.write_batch`` into two consumers whose channels drop the buffers (key
  extraction, the key -> consumer memo, staging);
* ``dumps_buffer`` of 1024-record buffers (the TCP channel's serialisation) and
  ``pickle.loads`` of them (the consumer's side);

each over two lists holding *the same record objects*: once in the order they were allocated
(neighbouring records are neighbours in memory) and once in a shuffled order (each record
somewhere else in the heap). Inside a job the second case is the normal one: records are
allocated from the free lists that earlier batches and the keyed state left behind, so a
buffer's records are scattered over the heap.

It then prints the same figures for the columnar exchange
(:mod:`emrflow.runtime.network.columns`), on the same records as ``ColumnBatch`` es of
``--column-batch`` rows (23,000: what one 512 KiB run of the ratings CSV holds): key groups of
the ``(movieId, userId)`` columns (``KeyColumns.subtasks``), the Arrow split into two consumers,
Arrow IPC out and in, and making the row tuples at the consumer (``ColumnBatch.rows``).

Usage::

    python bench/bench_exchange.py [--records N] [--keys K] [--repeat R] [--column-batch ROWS]

Measured with it (issue 16), 2-core VM, Python 3.11, 1 M records: see ``bench/profiles/README.md``.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emrflow.runtime.network.channels import dumps_buffer  # noqa: E402
from emrflow.runtime.network.writers import HashWriter  # noqa: E402


class _Drop:
    """A channel that takes buffers and drops them (only the writer's own work is timed)."""

    def send_records(self, records: list) -> float:
        return 0.0

    def send_event(self, event) -> float:
        return 0.0


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        c0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - c0)
    return best


def measure(rows: list, batch: int, repeat: int) -> list[float]:
    """CPU ns per record of hash partitioning, ``dumps_buffer`` and ``pickle.loads`` over ``rows``."""
    batches = [rows[i:i + batch] for i in range(0, len(rows), batch)]
    writer = HashWriter([_Drop(), _Drop()], batch, lambda r: (r[1], r[0]), 128)
    pickled = [dumps_buffer(b) for b in batches]

    def partition() -> None:
        for b in batches:
            writer.write_batch(b)

    def dumps() -> None:
        for b in batches:
            dumps_buffer(b)

    def loads() -> None:
        for data in pickled:
            pickle.loads(data)

    return [_best(f, repeat) * 1e9 / len(rows) for f in (partition, dumps, loads)]


def measure_columns(records: list, rows_per_batch: int, repeat: int) -> list[float]:
    """CPU ns per record of the columnar exchange's steps over ``records`` as column batches."""
    import pyarrow as pa

    from emrflow.runtime.network.columns import ColumnBatch, KeyColumns
    batches = []
    for i in range(0, len(records), rows_per_batch):
        cols = list(zip(*records[i:i + rows_per_batch]))
        batches.append(ColumnBatch(pa.record_batch(
            [pa.array(cols[0], pa.int64()), pa.array(cols[1], pa.int64()),
             pa.array(cols[2], pa.float64()), pa.array(cols[3], pa.int64())],
            names=["userId", "movieId", "rating", "timestamp"])))
    keys = KeyColumns((1, 0), True, 128, 2)
    subtasks = [keys.subtasks(b) for b in batches]
    parts = [b.split(s, 2) for b, s in zip(batches, subtasks)]
    wire = [p.to_bytes() for ps in parts for p in ps if p is not None]

    def key_groups() -> None:
        for b in batches:
            keys.subtasks(b)

    def split() -> None:
        for b, s in zip(batches, subtasks):
            b.split(s, 2)

    def ipc_out() -> None:
        for ps in parts:
            for p in ps:
                if p is not None:
                    p.to_bytes()

    def ipc_in() -> None:
        for data in wire:
            ColumnBatch.from_bytes(data)

    def rows() -> None:
        for b in batches:
            b.rows()

    return [_best(f, repeat) * 1e9 / len(records) for f in (key_groups, split, ipc_out, ipc_in, rows)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=100_000, help="distinct (movie, user) keys")
    parser.add_argument("--batch", type=int, default=1024, help="records per batch and buffer")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--column-batch", type=int, default=23_000, help="rows per column batch")
    args = parser.parse_args()
    rng = random.Random(16)
    pairs = [(rng.randrange(1, 200_000), rng.randrange(1, 700)) for _ in range(args.keys)]
    # user, movie, rating, timestamp; the key (movie, user) repeats once every `keys` records
    records = [(u, m, rng.randrange(1, 11) / 2, 800_000_000 + rng.randrange(10**9))
               for i in range(args.records) for m, u in (pairs[i % args.keys],)]
    scattered = records[:]
    rng.shuffle(scattered)
    gc.collect()
    gc.freeze()
    n, b = args.records, args.batch
    print(f"{n:,} records, {args.keys:,} keys, {b}-record batches, best of {args.repeat}; "
          "CPU ns per record")
    print(f"{'layout in memory':28s} {'hash partition':>15s} {'dumps_buffer':>13s} {'pickle.loads':>13s}")
    for name, rows in (("allocation order", records), ("shuffled (as inside a job)", scattered)):
        figures = measure(rows, b, args.repeat)
        print(f"{name:28s} {figures[0]:15.0f} {figures[1]:13.0f} {figures[2]:13.0f}")
    figures = measure_columns(records, args.column_batch, args.repeat)
    print(f"\ncolumnar exchange, {args.column_batch:,}-row column batches; CPU ns per record")
    print(f"{'key groups':>11s} {'split':>7s} {'IPC out':>8s} {'IPC in':>7s} {'rows':>6s}")
    print(f"{figures[0]:11.1f} {figures[1]:7.1f} {figures[2]:8.1f} {figures[3]:7.1f} {figures[4]:6.1f}")

if __name__ == "__main__":
    main()
