"""How much slower the plain latest-rating loop runs per process when two copies run at once.

A reference for ``bench_foundation.py``'s p=2 / p=1: if two independent copies of the plain
Python loop (``bench_foundation.plain_latest``: ``csv.reader``, a dict of 100 k keys, the
``later`` comparison) each take about as much CPU as one alone, the machine itself does not slow
a process down when the other core is busy with the same kind of work, and extra CPU that
emrflow's two slot processes use at p=2 is the engine's.

Usage::

    python bench/bench_two_at_once.py [--input bench/data/ratings-spread.csv] [--repeat 3]

Prints, per round, the CPU seconds of one copy alone, of each of two copies started together
(forked processes), and the per-process slowdown (mean of the two / alone). Generate the input
first with ``bench_foundation.py`` (``--only latest --layouts spread``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_foundation import DATA, plain_latest  # noqa: E402 - the bench directory is not a package


def _cpu_of_one_copy(path: str, out: "multiprocessing.Queue") -> None:
    t0 = time.process_time()
    plain_latest(path)
    out.put(time.process_time() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default=os.path.join(DATA, "ratings-spread.csv"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not os.path.exists(args.input):
        raise SystemExit(f"{args.input} does not exist: run bench/bench_foundation.py --only latest "
                         "--layouts spread first")
    fork = multiprocessing.get_context("fork")
    for r in range(args.repeat):
        q = fork.Queue()
        p = fork.Process(target=_cpu_of_one_copy, args=(args.input, q))
        p.start()
        p.join()
        alone = q.get()
        procs = [fork.Process(target=_cpu_of_one_copy, args=(args.input, q)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        both = [q.get(), q.get()]
        print(f"round {r + 1}: one copy alone {alone:.2f} s CPU; two at once {both[0]:.2f} / {both[1]:.2f} s; "
              f"per-process slowdown {sum(both) / 2 / alone:.2f}")


if __name__ == "__main__":
    main()
