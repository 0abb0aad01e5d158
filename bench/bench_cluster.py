"""Standalone cluster vs embedded cluster, and remote submission latency.

* Word count over the 60 MB text of bench_foundation.py at parallelism 2: on a standalone
  cluster of two TaskManagers with one slot each (``emrflow run -m``) versus the embedded
  local cluster (``emrflow run``). Target (issue 5): within 10 %.
* The time from ``emrflow run -t remote -d`` to the job RUNNING (polled over REST every
  10 ms), median of 5. Target: under 1 s.

Usage::

    python bench/bench_cluster.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_foundation import ROOT, make_words  # noqa: E402

SLOW = '''
import time
from emrflow import StreamExecutionEnvironment
from emrflow.testing import GeneratedSource
env = StreamExecutionEnvironment.get_execution_environment()
env.from_source(GeneratedSource(10**9, batch_size=10)).map(lambda v: time.sleep(0.01) or v).add_sink(lambda v: None)
env.execute("forever")
'''


def emrflow(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, check=True)


def runtime(stderr: str) -> float:
    return int(re.search(r"Job Runtime: (\d+) ms", stderr).group(1)) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    words = make_words()
    work = tempfile.mkdtemp(prefix="emrflow-bench-cluster-")
    env = dict(os.environ, EMRFLOW_CLUSTER_DIR=os.path.join(work, "cluster"))
    emrflow("cluster", "start", "--taskmanagers", "2", "--slots", "1", "--rest-port", "0",
            "-D", "jobmanager.rpc.port=0", env=env)
    with open(os.path.join(work, "cluster", "cluster.json")) as f:
        rest = "%s:%s" % tuple(json.load(f)["rest_address"])
    try:
        local, standalone = [], []
        for i in range(args.repeat):
            local.append(runtime(emrflow("run", "-p", "2", "examples/word_count.py", "--input", words,
                                         "--output", os.path.join(work, f"l{i}"), env=env).stderr))
            standalone.append(runtime(emrflow("run", "-m", rest, "-p", "2", "examples/word_count.py",
                                              "--input", words, "--output", os.path.join(work, f"s{i}"),
                                              env=env).stderr))
        lo, st = statistics.median(local), statistics.median(standalone)
        print(f"word count p=2, job runtime (median of {args.repeat}): embedded {lo:.2f} s, "
              f"standalone 2 TaskManagers x 1 slot {st:.2f} s, ratio {st / lo:.2f} (target <= 1.10)")
        job = os.path.join(work, "slow.py")
        with open(job, "w") as f:
            f.write(SLOW)
        latencies = []
        for _ in range(5):
            t0 = time.perf_counter()
            job_id = emrflow("run", "-d", "-m", rest, job, env=env).stdout.split()[-1]
            while json.load(urllib.request.urlopen(f"http://{rest}/jobs/{job_id}"))["state"] != "RUNNING":
                time.sleep(0.01)
            latencies.append(time.perf_counter() - t0)
            emrflow("cancel", "-m", rest, job_id, env=env)
            while json.load(urllib.request.urlopen(f"http://{rest}/jobs/{job_id}"))["state"] != "CANCELED":
                time.sleep(0.05)
        print(f"emrflow run -t remote -d -> RUNNING: median {statistics.median(latencies):.2f} s "
              f"(min {min(latencies):.2f}, max {max(latencies):.2f}; target < 1 s)")
    finally:
        emrflow("cluster", "stop", env=env)


if __name__ == "__main__":
    main()
