"""A real p=2 job in the embedded cluster: its two slot processes exchange buffers through
shared memory (their memory maps show the channel rings), or over TCP when switched off, with the
same result as a plain-Python reference either way."""

from __future__ import annotations

import threading
import time
from collections import Counter

import psutil
import pytest

from emrflow import StreamExecutionEnvironment
from emrflow.config import Configuration
from emrflow.runtime.network.channels import host_id
from emrflow.testing import GeneratedSource

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not host_id(), reason="shared-memory channels need Linux")]


def _rings_per_slot() -> list[int]:
    """For each slot process under this one: how many shared-memory channel rings it maps."""
    counts = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "emrflow.runtime.slot" not in " ".join(proc.cmdline()):
                continue
            counts.append(sum("emrflow-channel" in m.path for m in proc.memory_maps(grouped=False)))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return counts


@pytest.mark.parametrize("shared_memory", [True, False])
def test_slot_processes_exchange_through_shared_memory_unless_switched_off(shared_memory):
    n = 60_000
    make = lambda i: (f"key-{i % 97}", i, "padding-" * 4)  # noqa: E731 - 1,024 of them pickle to ~60 KB
    env = StreamExecutionEnvironment.get_execution_environment(
        Configuration({"taskmanager.network.shared-memory": shared_memory}))
    env.set_parallelism(2)
    seen: list[list[int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            counts = _rings_per_slot()
            if len(counts) == 2:
                seen.append(counts)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        got = (env.from_source(GeneratedSource(n, make, batch_size=1_000, rate=50_000))  # ~0.6 s
               .key_by(lambda r: r[0]).map(lambda r: (r[0], r[1])).execute_and_collect())
    finally:
        done.set()
        watcher.join(5)
    assert Counter(got) == Counter((f"key-{i % 97}", i) for i in range(n))
    assert seen, "never saw the job's two slot processes"
    if shared_memory:
        # each slot sends to the other one: one ring it made, one it was handed
        assert max(min(c) for c in seen) >= 2
    else:
        assert max(max(c) for c in seen) == 0
