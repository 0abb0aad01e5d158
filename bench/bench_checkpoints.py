"""Checkpoint benchmark: throughput cost of checkpoints, their duration and size, recovery time.

1. Overhead: the foundation's keyed-sum job (word count, ``examples/word_count.py
   --streaming``: a running sum per word, every update written by the file sink)
   over ``bench/data/words.txt`` (about 10.5 M words, made by bench_foundation.py)
   at parallelism 2, without checkpoints and with ``execution.checkpointing.interval=1s``.
   Prints words/s (from the job's own runtime and from the command's wall time),
   the overhead, and the completed checkpoints' duration and size (read from their
   ``_metadata`` while the job runs).
2. Recovery: a standalone cluster with three one-slot TaskManagers runs the
   checkpointed count job (tests/jobs/checkpointed_count.py) at parallelism 2; one
   busy TaskManager is killed with SIGKILL and the REST API is polled every 20 ms
   until the job runs again with records flowing into its keyed operator. Prints the
   seconds from the kill to that moment (metrics arrive every 0.5 s, so the figure
   can be up to 0.5 s late), with ``restart-strategy.fixed-delay.delay=100ms``.

Usage::

    python bench/bench_checkpoints.py [--repeat N] [--only overhead|recovery]

Targets (issue 4): overhead under 15 %; recovery under 5 s locally.
"""

from __future__ import annotations

import argparse
import glob
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

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)

from bench_foundation import make_words  # noqa: E402


def emrflow(*args: str, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, **kw)


def watch_checkpoints(directory: str, stop: threading.Event, seen: dict) -> None:
    """Collect the ``_metadata`` of every completed checkpoint before retention deletes it."""
    while not stop.wait(0.05):
        for m in glob.glob(os.path.join(directory, "*", "chk-*", "_metadata")):
            if m not in seen:
                try:
                    with open(m) as f:
                        seen[m] = json.load(f)
                except (OSError, ValueError):
                    pass


def word_count(words: str, n_words: int, checkpoints: bool) -> dict:
    out = tempfile.mkdtemp(prefix="emrflow-bench-out-")
    ckdir = tempfile.mkdtemp(prefix="emrflow-bench-chk-")
    args = ["run", "-p", "2"]
    if checkpoints:
        args += ["-D", "execution.checkpointing.interval=1s", "-D", f"state.checkpoints.dir={ckdir}",
                 "-D", "state.checkpoints.num-retained=1000"]
    seen: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=watch_checkpoints, args=(ckdir, stop, seen), daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    r = emrflow(*args, "examples/word_count.py", "--streaming", "--input", words,
                "--output", os.path.join(out, "wc"))
    wall = time.perf_counter() - t0
    stop.set()
    watcher.join()
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(ckdir, ignore_errors=True)
    if r.returncode != 0:
        raise SystemExit(f"word count failed:\n{r.stderr[-3000:]}")
    job_ms = wall * 1000
    m = re.search(r"Job Runtime: (\d+) ms", r.stdout + r.stderr)
    if m:
        job_ms = int(m.group(1))
    metas = list(seen.values())
    return {"wall_s": wall, "job_s": job_ms / 1000, "rate_job": n_words / (job_ms / 1000),
            "rate_wall": n_words / wall, "checkpoints": len(metas),
            "duration_ms": [m["duration_ms"] for m in metas], "size_bytes": [m["size_bytes"] for m in metas]}


def overhead(repeat: int) -> None:
    words = make_words()
    with open(words, encoding="utf-8", errors="replace") as f:
        n_words = sum(len(line.split()) for line in f)
    print(f"word count --streaming at p=2 over {words} ({n_words:,} words); best of {repeat}")
    best = {}
    for ck in [False, True] * repeat:
        res = word_count(words, n_words, ck)
        key = "with" if ck else "without"
        print(f"  {key:7} checkpoints: job {res['job_s']:.2f} s ({res['rate_job'] / 1e6:.2f} M words/s), "
              f"wall {res['wall_s']:.2f} s, {res['checkpoints']} checkpoints", flush=True)
        if key not in best or res["job_s"] < best[key]["job_s"]:
            best[key] = res
    a, b = best["without"], best["with"]
    print(f"overhead (job runtime): {100 * (b['job_s'] / a['job_s'] - 1):.1f} %; "
          f"(wall): {100 * (b['wall_s'] / a['wall_s'] - 1):.1f} %")
    if b["duration_ms"]:
        d, sz = sorted(b["duration_ms"]), sorted(b["size_bytes"])
        print(f"checkpoints: {len(d)}; duration median {d[len(d) // 2]} ms, max {d[-1]} ms; "
              f"size median {sz[len(sz) // 2] / 1e6:.2f} MB, max {sz[-1] / 1e6:.2f} MB")


def recovery(repeat: int) -> None:
    from emrflow.deploy.rest_client import RestClient
    results = []
    for _ in range(repeat):
        work = tempfile.mkdtemp(prefix="emrflow-bench-cluster-")
        env = dict(os.environ, EMRFLOW_CLUSTER_DIR=work)
        r = emrflow("cluster", "start", "--taskmanagers", "3", "--slots", "1", "--rest-port", "0", env=env)
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        try:
            info = json.load(open(os.path.join(work, "cluster.json")))
            rest = RestClient(f"127.0.0.1:{info['rest_address'][1]}")
            r = emrflow("run", "-t", "remote", "-d", "-p", "2", "-D", "execution.checkpointing.interval=1s",
                        "-D", f"state.checkpoints.dir={os.path.join(work, 'chk')}",
                        "-D", "restart-strategy.type=fixed-delay", "-D", "restart-strategy.fixed-delay.delay=100ms",
                        "tests/jobs/checkpointed_count.py", "--count", "3000000", "--rate", "100000",
                        "--output", os.path.join(work, "out"), env=env)
            job_id = re.search(r"JobID (\w+)", r.stdout + r.stderr).group(1)
            time.sleep(4.0)
            st = rest.status(job_id)
            busy = {tm for tm in info["taskmanager_pids"]}
            victims = [p for p in busy if any(c for c in psutil.Process(p).children())
                       and psutil.Process(p).is_running()]
            # a busy TaskManager: its slot process uses CPU
            victim = max(victims, key=lambda p: sum(c.cpu_percent(0.2) for c in psutil.Process(p).children()))
            t_kill = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            while True:
                st = rest.status(job_id)
                counted = sum(o["records_in"] for v in st.get("vertices", []) for o in v["operators"]
                              if o["name"] == "count")
                if st["state"] == "RUNNING" and st.get("restarts", 0) >= 1 and counted > 0:
                    break
                if st["state"] in ("FAILED", "CANCELED", "FINISHED"):
                    raise SystemExit(f"job ended {st['state']}: {st.get('failure')}")
                time.sleep(0.02)
            took = time.perf_counter() - t_kill
            results.append(took)
            print(f"  recovery: {took:.2f} s from SIGKILL to records flowing again", flush=True)
            rest.cancel(job_id)
        finally:
            emrflow("cluster", "stop", env=env)
            shutil.rmtree(work, ignore_errors=True)
    print(f"recovery time: best {min(results):.2f} s, worst {max(results):.2f} s over {len(results)} kills")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--only", choices=["overhead", "recovery"], default=None)
    args = p.parse_args()
    if args.only in (None, "overhead"):
        overhead(args.repeat)
    if args.only in (None, "recovery"):
        recovery(max(args.repeat, 1))


if __name__ == "__main__":
    main()
