"""Window benchmark: tumbling-window count per key, 5 M events, 100 k keys, both state backends,
three key layouts, the built-in ``Count()`` or a user's ``AggregateFunction``.

Events are generated inside the job (no file I/O): event ``i`` has timestamp ``i * 2`` ms, so
5 M events span ~2.8 hours of event time; windows are 5 minutes. Its key depends on the layout
(``--layouts``):

* ``stride``: ``(i * 7919) % 100_000``: every key once per 100 k events (a key's events spread
  over the input, about 78 k keys per window);
* ``adjacent``: ``(i // 50) % 100_000``: runs of 50 events of one key (flatters the engine);
* ``zipf``: drawn from a Zipf distribution (exponent 1.1) over the 100 k keys by a hash of ``i``
  (deterministic, random order; a few keys are most of the events).

``--functions`` picks the aggregate: ``count``, the built-in ``Count()`` (the window fast path:
the operator is named ``Window(aggregate Count(), fast path)``), and/or ``user``, a user's
``AggregateFunction`` that counts (its ``add`` is called per event). Each run is
``emrflow run -p P bench/out/window_job.py`` as a subprocess; the figures are events/s (on the
job runtime and on the whole command), p=2 / p=1, and the peak RSS of the process tree.

Usage::

    python bench/bench_windows.py [--events N] [--backends hashmap,rocksdb]
                                  [--layouts stride,adjacent,zipf] [--functions count,user]

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
import bisect
import sys
from emrflow import StreamExecutionEnvironment, RuntimeExecutionMode
from emrflow.api.eventtime import WatermarkStrategy, Duration, Time
from emrflow.api.aggregates import Count
from emrflow.api.functions import AggregateFunction
from emrflow.api.windowing import TumblingEventTimeWindows
from emrflow.testing import GeneratedSource

KEYS = 100_000
n, layout, function = int(sys.argv[1]), sys.argv[2], sys.argv[3]
weights = [1 / (k + 1) ** 1.1 for k in range(KEYS)]
total, acc, cdf = sum(weights), 0.0, []
for w in weights:
    acc += w
    cdf.append(acc / total)


def stride(i):
    return ((i * 7919) % KEYS, i * 2)


def adjacent(i):
    return ((i // 50) % KEYS, i * 2)


def zipf(i):
    u = ((i * 2654435761 + 12345) % 4294967296) / 4294967296
    return (min(bisect.bisect_left(cdf, u), KEYS - 1), i * 2)


class CountEvents(AggregateFunction):
    def create_accumulator(self):
        return 0

    def add(self, value, acc):
        return acc + 1

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return a + b


make = {"stride": stride, "adjacent": adjacent, "zipf": zipf}[layout]
env = StreamExecutionEnvironment.get_execution_environment()
ws = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(lambda e: e[1])
(env.from_source(GeneratedSource(n, make, batch_size=1024), ws)
    .key_by(lambda e: e[0])
    .window(TumblingEventTimeWindows.of(Time.minutes(5)))
    .aggregate(Count() if function == "count" else CountEvents())
    .add_sink(lambda r: None))
env.execute("window count")
'''


def run(parallelism: int, backend: str, events: int, layout: str = "stride",
        function: str = "count") -> tuple[float, float, int]:
    job = os.path.join(ROOT, "bench", "out", "window_job.py")
    os.makedirs(os.path.dirname(job), exist_ok=True)
    with open(job, "w") as f:
        f.write(JOB)
    cmd = [sys.executable, "-m", "emrflow.cli", "run", "-p", str(parallelism), "-D",
           f"state.backend.type={backend}", job, str(events), layout, function]
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
    parser.add_argument("--layouts", default="stride,zipf", help="stride, adjacent, zipf")
    parser.add_argument("--functions", default="count,user", help="count (built-in), user (AggregateFunction)")
    args = parser.parse_args()
    print(f"{args.events:,} events, 100k keys, 5-minute tumbling windows (count)")
    rows = []
    for backend in args.backends.split(","):
        for layout in args.layouts.split(","):
            for function in args.functions.split(","):
                times = []
                for p in (1, 2):
                    job_s, wall, peak = run(p, backend, args.events, layout, function)
                    times.append(job_s)
                    print(f"{backend:8s} {layout:8s} {function:5s} p={p}: {args.events / job_s / 1e6:5.2f} M "
                          f"events/s job, {args.events / wall / 1e6:5.2f} M events/s wall (job {job_s:.1f} s, "
                          f"wall {wall:.1f} s), peak RSS {peak / 2**20:.0f} MiB")
                rows.append((backend, layout, function, times[0], times[1], peak))
    print("\n| backend | layout | aggregate | p=1 job s | p=2 job s | p=2 / p=1 | peak RSS MiB (p=2) |")
    print("|---|---|---|---|---|---|---|")
    for backend, layout, function, t1, t2, peak in rows:
        print(f"| {backend} | {layout} | {function} | {t1:.2f} | {t2:.2f} | {t1 / t2:.2f} | {peak / 2**20:.0f} |")


if __name__ == "__main__":
    main()
