"""The TaskManager process: owns task slots on one host or YARN container.

It starts one slot process per task slot (``taskmanager.numberOfTaskSlots``),
registers with the JobManager, sends a heartbeat every ``heartbeat.interval``
with its CPU and memory use, and stops its slots when the JobManager tells it
to or goes away. Slots themselves connect to the JobManager to receive
subtasks (see :mod:`emrflow.runtime.slot`).

Run as ``python -m emrflow.runtime.taskmanager``; the secret comes from
``EMRFLOW_CLUSTER_SECRET``.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import threading
import uuid

from emrflow.runtime import rpc
from emrflow.runtime.process import die_with_parent, setup_logging, spawn

log = logging.getLogger("emrflow.taskmanager")


class TaskManager:
    """Supervises the slot processes of one TaskManager.

    Args:
        jobmanager: ``(host, port)`` of the JobManager.
        secret: cluster secret.
        num_slots: task slots to offer.
        taskmanager_id: id (default: a random one).
        host: address other slots use to reach this TaskManager's slots.
        heartbeat_interval_ms: time between heartbeats.
    """

    def __init__(self, jobmanager: tuple[str, int], secret: str, num_slots: int,
                 taskmanager_id: str | None = None, host: str = "127.0.0.1",
                 heartbeat_interval_ms: int = 10_000):
        self.jobmanager = jobmanager
        self.secret = secret
        self.num_slots = num_slots
        self.id = taskmanager_id or f"tm-{uuid.uuid4().hex[:8]}"
        self.host = host
        self.heartbeat_s = heartbeat_interval_ms / 1000.0
        self.slots: list[subprocess.Popen] = []
        self._stop = threading.Event()

    def run(self) -> None:
        """Start the slots, register and serve until shutdown; stops the slots on exit."""
        address = f"{self.jobmanager[0]}:{self.jobmanager[1]}"
        for i in range(self.num_slots):
            self.slots.append(spawn("emrflow.runtime.slot",
                                    ["--jobmanager", address, "--taskmanager-id", self.id,
                                     "--slot-index", str(i), "--host", self.host], self.secret))
        try:
            self.conn = rpc.connect(self.jobmanager, self.secret, role="taskmanager",
                                    taskmanager_id=self.id, slots=self.num_slots,
                                    host=socket.gethostname(), data_host=self.host,
                                    pid=os.getpid(), slot_pids=[p.pid for p in self.slots])
            threading.Thread(target=self._heartbeat, daemon=True, name="heartbeat").start()
            while not self._stop.is_set():
                msg_type, body = self.conn.recv()
                if msg_type == "shutdown":
                    break
        except rpc.ConnectionClosed:
            log.info("JobManager connection closed; TaskManager %s exits", self.id)
        finally:
            self._stop.set()
            self._stop_slots()

    def _heartbeat(self) -> None:
        import psutil
        me = psutil.Process()
        while not self._stop.wait(self.heartbeat_s):
            try:
                rss = me.memory_info().rss
                cpu = me.cpu_percent()
                for p in self.slots:
                    try:
                        sp = psutil.Process(p.pid)
                        rss += sp.memory_info().rss
                        cpu += sp.cpu_percent()
                    except psutil.Error:
                        pass
                self.conn.send("heartbeat", rss_bytes=rss, cpu_percent=cpu,
                               slots_alive=sum(p.poll() is None for p in self.slots))
            except rpc.ConnectionClosed:
                return

    def _stop_slots(self) -> None:
        for p in self.slots:
            if p.poll() is None:
                p.terminate()
        for p in self.slots:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main(argv: list[str] | None = None) -> None:
    """Entry point of a TaskManager process."""
    parser = argparse.ArgumentParser(prog="python -m emrflow.runtime.taskmanager")
    parser.add_argument("--jobmanager", required=True, help="HOST:PORT of the JobManager")
    parser.add_argument("--slots", type=int, default=1, help="task slots")
    parser.add_argument("--id", default=None, help="TaskManager id")
    parser.add_argument("--host", default="127.0.0.1", help="address for data connections")
    parser.add_argument("--heartbeat-interval-ms", type=int, default=10_000)
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args(argv)
    if args.die_with_parent:
        die_with_parent()
    setup_logging(f"taskmanager {args.id or ''}".strip())
    host, _, port = args.jobmanager.rpartition(":")
    TaskManager((host, int(port)), os.environ.get("EMRFLOW_CLUSTER_SECRET", ""), args.slots,
                args.id, args.host, args.heartbeat_interval_ms).run()


if __name__ == "__main__":
    main()
