"""Foundation benchmark: word count and latest rating at parallelism 1 and 2 vs a plain Python loop.

Prints, per job: input records, records/s of the plain single-process loop,
records/s and wall seconds of ``emrflow run`` at parallelism 1 and 2 (the
engine's own job runtime and the whole command), and the peak RSS of the whole
process tree (client, JobManager, TaskManagers, slot processes), sampled every
20 ms with psutil.

Data is generated under ``bench/data`` (not committed):

* ``words.txt``: Shakespeare's text repeated to about 60 MB (about 10 M words);
* ``ratings.csv``: about 5 M MovieLens-format rows, every (user, movie) pair of
  the bundled ratings re-rated about 50 times at random later timestamps.

Usage::

    python bench/bench_foundation.py [--only wordcount|latest] [--repeat N]

Targets (issue 2): p=1 at least half the plain loop's records/s; p=2 at least
1.7 times p=1; peak RSS under 1 GiB.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "bench", "data")
SHAKESPEARE = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "shakespeare",
                                            "t8.shakespeare.txt"))
RATINGS = os.path.join(ROOT, "examples", "data", "movielens-latest-small", "ratings.csv")


def make_words(target_bytes: int = 60_000_000) -> str:
    path = os.path.join(DATA, "words.txt")
    if os.path.exists(path) and os.path.getsize(path) >= target_bytes:
        return path
    os.makedirs(DATA, exist_ok=True)
    with open(SHAKESPEARE, "rb") as f:
        text = f.read()
    with open(path + ".tmp", "wb") as out:
        written = 0
        while written < target_bytes:
            out.write(text)
            written += len(text)
    os.replace(path + ".tmp", path)
    return path


def make_ratings(per_pair: int = 50) -> str:
    path = os.path.join(DATA, "ratings.csv")
    if os.path.exists(path):
        return path
    os.makedirs(DATA, exist_ok=True)
    rng = random.Random(42)
    with open(RATINGS, newline="") as f:
        rows = list(csv.reader(f))[1:]
    with open(path + ".tmp", "w") as out:
        out.write("userId,movieId,rating,timestamp\n")
        for user, movie, rating, ts in rows:
            ts = int(ts)
            lines = [f"{user},{movie},{rating},{ts}\n"]
            for _ in range(per_pair - 1):
                lines.append(f"{user},{movie},{rng.randint(1, 10) / 2:g},{ts + rng.randint(1, 10**8)}\n")
            out.write("".join(lines))
    os.replace(path + ".tmp", path)
    return path


def plain_word_count(path: str) -> tuple[int, float]:
    word = re.compile(r"[a-z]+")
    t0 = time.perf_counter()
    counts: dict[str, int] = {}
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            for w in word.findall(line.lower()):
                counts[w] = counts.get(w, 0) + 1
                n += 1
    return n, time.perf_counter() - t0


def plain_latest(path: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    latest: dict[tuple[int, int], tuple] = {}
    n = 0
    with open(path, newline="") as f:
        reader = csv.reader(f)
        next(reader)
        for user, movie, rating, ts in reader:
            rec = (int(movie), int(user), float(rating), int(ts))
            key = (rec[0], rec[1])
            old = latest.get(key)
            if old is None or (rec[3], rec[2]) > (old[3], old[2]):
                latest[key] = rec
            n += 1
    return n, time.perf_counter() - t0


class TreeRss:
    """Samples the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int, interval_s: float = 0.02):
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(interval_s,), daemon=True)
        self._t.start()

    def _run(self, interval_s: float) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root] + self.root.children(recursive=True)
            except psutil.Error:
                return
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(interval_s)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.peak


def run_emrflow(job: str, parallelism: int, args: list[str]) -> tuple[float, float, int]:
    """Run ``emrflow run``; return (job runtime s, wall s, peak tree RSS bytes)."""
    out = tempfile.mkdtemp(prefix="emrflow-bench-")
    cmd = [sys.executable, "-m", "emrflow.cli", "run", "-p", str(parallelism), job, *args,
           "--output", os.path.join(out, "o")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    rss = TreeRss(proc.pid)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    peak = rss.stop()
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"emrflow failed ({proc.returncode}):\n{stderr}")
    m = re.search(r"Job Runtime: (\d+) ms", stderr)
    return (int(m.group(1)) / 1000 if m else wall), wall, peak


def bench(name: str, job: str, args: list[str], plain, path: str, repeat: int) -> None:
    n, plain_s = min((plain(path) for _ in range(repeat)), key=lambda r: r[1])
    plain_rate = n / plain_s
    print(f"\n== {name}: {n:,} records ({os.path.getsize(path) / 1e6:.0f} MB)")
    print(f"plain loop      : {plain_rate / 1e6:6.2f} M rec/s  ({plain_s:.2f} s)")
    rates = {}
    for p in (1, 2):
        job_s, wall, peak = min((run_emrflow(job, p, args) for _ in range(repeat)), key=lambda r: r[0])
        rates[p] = (n / job_s, n / wall)
        print(f"emrflow p={p}     : {n / job_s / 1e6:6.2f} M rec/s job, {n / wall / 1e6:6.2f} M rec/s wall "
              f"(job {job_s:.2f} s, wall {wall:.2f} s), peak RSS {peak / 2**20:.0f} MiB")
    print(f"p=1 / plain     : {rates[1][0] / plain_rate:.2f} job, {rates[1][1] / plain_rate:.2f} wall"
          "   (target >= 0.5)")
    print(f"p=2 / p=1       : {rates[2][0] / rates[1][0]:.2f} job, {rates[2][1] / rates[1][1]:.2f} wall"
          "   (target >= 1.7)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["wordcount", "latest"])
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure; the best is shown")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    if args.only in (None, "wordcount"):
        words = make_words()
        bench("word count", "examples/word_count.py", ["--input", words], plain_word_count,
              words, args.repeat)
    if args.only in (None, "latest"):
        ratings = make_ratings()
        bench("latest rating", "examples/latest_rating.py", ["--input", ratings], plain_latest,
              ratings, args.repeat)


if __name__ == "__main__":
    main()
