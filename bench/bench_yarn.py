"""YARN session start-up in the local stand-in (tests/yarn_standin.py): no YARN needed.

Prints (median of --repeat runs):
* the time from `emrflow yarn-session start -d` to every TaskManager slot registered,
* the time from `emrflow run -t yarn-session -d` to the job RUNNING,
and, for each, the CPU seconds the emrflow processes themselves used (client, and the
containers' processes), which is the part spent in emrflow's code rather than waiting.
On real YARN, container allocation and localization add to the first figure.

Usage::

    python bench/bench_yarn.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

JOB = '''
import time
from emrflow import StreamExecutionEnvironment
from emrflow.testing import GeneratedSource
env = StreamExecutionEnvironment.get_execution_environment()
env.from_source(GeneratedSource(10**9, batch_size=10)).map(lambda v: time.sleep(0.01) or v).add_sink(lambda v: None)
env.execute("forever")
'''


def cli(env, *args):
    return subprocess.run([sys.executable, "-m", "emrflow.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, check=True)


def once(tmp: str) -> tuple[float, float, float, float]:
    base = os.path.join(tmp, "yarn")
    os.makedirs(base)
    env = dict(os.environ, EMRFLOW_YARN_DRIVER="tests.yarn_standin:driver", STANDIN_YARN_DIR=base,
               HOME=tmp, PYTHONPATH=ROOT)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = cli(env, "yarn-session", "start", "-d", "--taskmanagers", "2", "--slots", "1").stdout
    rest = out.split("http://")[1].split("/")[0]
    (app,) = os.listdir(base)
    with open(os.path.join(base, app, "kv", "emrflow.rest.token")) as f:
        token = f.read()

    def get(path):
        req = urllib.request.Request(f"http://{rest}{path}", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req) as r:
            return json.load(r)
    while get("/overview")["slots-total"] < 2:
        time.sleep(0.01)
    start_s = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    job = os.path.join(tmp, "job.py")
    with open(job, "w") as f:
        f.write(JOB)
    t1 = time.perf_counter()
    cli(env, "run", "-d", "-t", "yarn-session", "-p", "2", job)
    while not any(j["state"] == "RUNNING" for j in get("/jobs/overview")["jobs"]):
        time.sleep(0.01)
    run_s = time.perf_counter() - t1
    cpu2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cli(env, "yarn-session", "stop")
    cpu = lambda a, b: (b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime)  # noqa: E731
    return start_s, cpu(cpu0, cpu1), run_s, cpu(cpu1, cpu2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [once(tempfile.mkdtemp(prefix="emrflow-bench-yarn-")) for _ in range(args.repeat)]
    med = [statistics.median(r[i] for r in runs) for i in range(4)]
    print(f"yarn-session start -> 2 TaskManagers registered: {med[0]:.2f} s "
          f"(client CPU {med[1]:.2f} s; the containers' own start-up runs in parallel)")
    print(f"run -t yarn-session -d -> job RUNNING: {med[2]:.2f} s (client CPU {med[3]:.2f} s)")


if __name__ == "__main__":
    main()
