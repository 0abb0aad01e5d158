"""Window benchmark: tumbling-window count per key, 5 M events, 100 k keys, both state backends.

Events are generated inside the job (no file I/O): event ``i`` has key
``(i * 7919) % 100_000`` and timestamp ``i * 2`` ms, so 5 M events span ~2.8 hours of
event time; windows are 5 minutes (about 78 k keys each), counted by the built-in
``Count()`` (the window fast path: the operator is named ``Window(aggregate Count(), fast path)``). Each run is
``emrflow run -p P bench/window_job.py`` as a subprocess; the figures are events/s
(on the job runtime and on the whole command) and the peak RSS of the process tree.

Usage::

    python bench/bench_windows.py [--events N] [--backends hashmap,rocksdb]

Target (issue 3): hashmap at p=1 at least half the foundation's keyed-sum speed
(word count p=1 in bench_foundation.py), rocksdb at least a quarter of it.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_foundation import ROOT, TreeRss  # noqa: E402

JOB = '''
import sys
from emrflow import StreamExecutionEnvironment, RuntimeExecutionMode
from emrflow.api.eventtime import WatermarkStrategy, Duration, Time
from emrflow.api.aggregates import Count
from emrflow.api.windowing import TumblingEventTimeWindows
from emrflow.testing import GeneratedSource

def make(i):
    return ((i * 7919) % 100_000, i * 2)

n = int(sys.argv[1])
env = StreamExecutionEnvironment.get_execution_environment()
ws = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e[1])
(env.from_source(GeneratedSource(n, make, batch_size=1024), ws)
    .key_by(lambda e: e[0])
    .window(TumblingEventTimeWindows.of(Time.minutes(5)))
    .aggregate(Count())
    .add_sink(lambda r: None))
env.execute("window count")
'''


def run(parallelism: int, backend: str, events: int) -> tuple[float, float, int]:
    job = os.path.join(ROOT, "bench", "out", "window_job.py")
    os.makedirs(os.path.dirname(job), exist_ok=True)
    with open(job, "w") as f:
        f.write(JOB)
    cmd = [sys.executable, "-m", "emrflow.cli", "run", "-p", str(parallelism), "-D",
           f"state.backend.type={backend}", job, str(events)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    rss = TreeRss(proc.pid)
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    peak = rss.stop()
    if proc.returncode != 0:
        raise SystemExit(err)
    m = re.search(r"Job Runtime: (\d+) ms", err)
    return int(m.group(1)) / 1000, wall, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--backends", default="hashmap,rocksdb")
    args = parser.parse_args()
    print(f"{args.events:,} events, 100k keys, 5-minute tumbling windows (count)")
    for backend in args.backends.split(","):
        for p in (1, 2):
            job_s, wall, peak = run(p, backend, args.events)
            print(f"{backend:8s} p={p}: {args.events / job_s / 1e6:5.2f} M events/s job, "
                  f"{args.events / wall / 1e6:5.2f} M events/s wall (job {job_s:.1f} s, wall {wall:.1f} s), "
                  f"peak RSS {peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
