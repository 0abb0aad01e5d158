"""RocksDB state larger than memory: write ~4 GiB of keyed state and watch the process tree's RSS.

A keyed job stores a 1 KiB value per key for 4.2 M keys (about 4.3 GB of state) in
``ValueState`` with ``-D state.backend.type=rocksdb``, then reads a sample back. The
script prints the size of the RocksDB directories on disk at their largest (sampled),
the records/s, and the peak RSS of the whole process tree (client, JobManager,
TaskManager, slot processes), sampled every 20 ms.

Usage::

    python bench/bench_rocksdb_state.py [--keys N] [--value-bytes B] [--parallelism P]

Target (issue 3): state of at least 4 GiB with the process tree's peak RSS under 1.5 GiB.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_foundation import ROOT, TreeRss  # noqa: E402

JOB = '''
import os, sys
from emrflow import StreamExecutionEnvironment, KeyedProcessFunction, ValueStateDescriptor
from emrflow.testing import GeneratedSource

N, SIZE = int(sys.argv[1]), int(sys.argv[2])

class Store(KeyedProcessFunction):
    def open(self, ctx):
        self.state = ctx.get_state(ValueStateDescriptor("blob"))
        self.n = 0
    def process_element(self, value, ctx):
        old = self.state.value()
        self.state.update(os.urandom(SIZE))    # incompressible, so the disk size is honest
        self.n += 1
        if old is not None:
            yield "duplicate key"

env = StreamExecutionEnvironment.get_execution_environment()
env.from_source(GeneratedSource(N, batch_size=2048)).key_by(lambda i: i).process(Store()) \\
    .add_sink(lambda r: None)
env.execute("rocksdb state")
'''


def dir_size(paths: list[str]) -> int:
    total = 0
    for p in paths:
        for root, _, files in os.walk(p):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(root, f))
                except OSError:
                    pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=4_200_000)
    parser.add_argument("--value-bytes", type=int, default=1024)
    parser.add_argument("--parallelism", type=int, default=1)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="emrflow-bench-rocks-")
    job = os.path.join(tmp, "job.py")
    with open(job, "w") as f:
        f.write(JOB)
    env = dict(os.environ, TMPDIR=tmp)  # the backend's database directories go here
    cmd = [sys.executable, "-m", "emrflow.cli", "run", "-p", str(args.parallelism), "-D",
           "state.backend.type=rocksdb", job, str(args.keys), str(args.value_bytes)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    rss = TreeRss(proc.pid)
    biggest = [0]
    stop = threading.Event()

    def watch_disk() -> None:
        while not stop.wait(1.0):
            biggest[0] = max(biggest[0], dir_size(glob.glob(os.path.join(tmp, "emrflow-rocksdb-*"))))
    watcher = threading.Thread(target=watch_disk, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    peak = rss.stop()
    if proc.returncode != 0:
        raise SystemExit(err)
    m = re.search(r"Job Runtime: (\d+) ms", err)
    job_s = int(m.group(1)) / 1000 if m else wall
    print(f"{args.keys:,} keys x {args.value_bytes} B at p={args.parallelism}: "
          f"state on disk at most {biggest[0] / 2**30:.2f} GiB, "
          f"{args.keys / job_s / 1e3:.0f} k records/s (job {job_s:.0f} s, wall {wall:.0f} s), "
          f"peak RSS of the process tree {peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
