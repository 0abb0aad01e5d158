"""CPU seconds of every process and thread of one command's process tree (e.g. ``emrflow run``).

Samples the tree every 50 ms with psutil and keeps each process's and each thread's last
reading, so the figures are those just before the process or thread ended (within 50 ms).
Threads with less than 0.05 s of CPU are left out. Use it to see which slot process and which
task thread took the CPU.

Usage::

    python bench/tree_cpu.py -- python -m emrflow.cli run -p 2 examples/latest_rating.py \\
        --input bench/data/ratings-spread.csv --output /tmp/out --overwrite

Prints the command's wall seconds, the engine's ``Job Runtime`` when the command printed
one, then ``pid user-s sys-s command`` per process and ``tid user-s sys-s name`` per busy
thread (task threads carry their task's name and subtask, e.g. ``Source: rat 1/2``; see
``emrflow.runtime.process.set_os_thread_name``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time

import psutil


def main() -> None:
    cmd = sys.argv[1:]
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise SystemExit(__doc__)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    root = psutil.Process(proc.pid)
    procs: dict[int, tuple[str, float, float]] = {}
    threads: dict[tuple[int, int], tuple[float, float, str]] = {}
    stderr_chunks: list[str] = []

    def drain() -> None:
        stderr_chunks.append(proc.stderr.read())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
        except psutil.Error:
            break
        for p in tree:
            try:
                with p.oneshot():
                    cpu = p.cpu_times()
                    name = " ".join(p.cmdline()[1:4])[-60:] or procs.get(p.pid, ("",))[0]
                    procs[p.pid] = (name, cpu.user, cpu.system)
                    for t in p.threads():
                        try:
                            with open(f"/proc/{p.pid}/task/{t.id}/comm") as f:
                                comm = f.read().strip()
                        except OSError:
                            comm = threads.get((p.pid, t.id), (0, 0, "?"))[2]
                        threads[(p.pid, t.id)] = (t.user_time, t.system_time, comm)
            except psutil.Error:
                pass
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    reader.join(timeout=5)
    m = re.search(r"Job Runtime: (\d+) ms", "".join(stderr_chunks))
    print(f"wall {wall:.2f} s" + (f", job runtime {int(m.group(1)) / 1000:.2f} s" if m else "")
          + f", exit {proc.returncode}")
    total_u = total_s = 0.0
    for pid, (name, user, system) in sorted(procs.items()):
        total_u += user
        total_s += system
        print(f"{pid:8d} user {user:7.2f} sys {system:6.2f}  {name}")
        for (tpid, tid), (tu, ts, comm) in sorted(threads.items()):
            if tpid == pid and tu + ts >= 0.05 and tid != pid:
                print(f"         tid {tid:8d} user {tu:7.2f} sys {ts:6.2f}  {comm}")
    print(f"total user {total_u:.2f} s, sys {total_s:.2f} s")


if __name__ == "__main__":
    main()
