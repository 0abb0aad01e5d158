"""Credit-based flow control: a slow consumer bounds the memory of a fast producer."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.integration

JOB = '''
import sys, time
from emrflow import StreamExecutionEnvironment, RuntimeExecutionMode
from emrflow.testing import GeneratedSource

RECORD = 20_000  # bytes per record

def slow_sink(value):
    time.sleep(0.0005)

env = StreamExecutionEnvironment.get_execution_environment()
env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
# 2 producers -> 2 consumers: half of the channels cross TCP between slot processes
(env.from_source(GeneratedSource(12_000, lambda i: "x" * RECORD, batch_size=16))
    .rebalance()
    .add_sink(slow_sink))
env.execute("backpressure")
'''


def peak_tree_rss(cmd: list[str], env: dict) -> tuple[int, int]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # cwd: tmp_path
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            break
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        peak = max(peak, total)
        time.sleep(0.02)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait() == 0, err
    return peak, proc.returncode


def test_slow_consumer_bounds_memory(tmp_path):
    job = tmp_path / "bp.py"
    job.write_text(JOB)
    base = [sys.executable, "-m", "emrflow.cli", "run", "-q", "-p", "2",
            "-D", "taskmanager.network.batch-size=16"]
    env = dict(os.environ)
    bounded, _ = peak_tree_rss(base + ["-D", "taskmanager.network.memory.buffers-per-channel=2",
                                       str(job)], env)
    print(f"bounded peak RSS {bounded / 2**20:.0f} MiB")
    # control: practically unlimited credits, so the producers run ahead of the sink
    unbounded, _ = peak_tree_rss(base + ["-D", "taskmanager.network.memory.buffers-per-channel=100000",
                                         str(job)], env)
    mib = 2 ** 20
    print(f"unbounded peak RSS {unbounded / mib:.0f} MiB")
    # 240 MB of records flow through the job; with credits only a few buffers are in flight
    assert bounded < 250 * mib, f"peak RSS {bounded / mib:.0f} MiB with 2 credits per channel"
    assert unbounded > bounded + 100 * mib, (
        f"control run should buffer far more: {unbounded / mib:.0f} vs {bounded / mib:.0f} MiB")
