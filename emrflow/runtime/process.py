"""Helpers shared by the JobManager, TaskManager and slot processes."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def die_with_parent() -> None:
    """Ask Linux to send SIGKILL to this process when its parent dies.

    So a client, JobManager or TaskManager killed with SIGKILL leaves no orphaned
    child behind. On other platforms this does nothing. SIGINT is ignored: a
    Ctrl-C in the terminal reaches the client, which stops the cluster in order.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except OSError:
            return
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def set_os_thread_name(name: str) -> bool:
    """Give the calling thread ``name`` in the operating system (Linux ``prctl(PR_SET_NAME)``).

    Python keeps thread names to itself; the OS name is what ``top -H``, ``ps -L``,
    ``perf``, ``/proc/<pid>/task/<tid>/comm`` and ``bench/tree_cpu.py`` show, so per-thread CPU
    of a slot process can be told apart by task. Linux keeps at most 15 bytes; a longer
    ``name`` keeps its first bytes (cut on a character boundary).

    Args:
        name: the name, e.g. ``"Source 1/2"``.

    Returns:
        ``True`` if the name was set; ``False`` on other platforms or if ``prctl`` failed.
    """
    if not sys.platform.startswith("linux"):
        return False
    raw = name.encode("utf-8")[:15].decode("utf-8", "ignore").encode("utf-8")
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return libc.prctl(_PR_SET_NAME, ctypes.c_char_p(raw), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def setup_logging(role: str) -> None:
    """Log to stderr at ``$EMRFLOW_LOG_LEVEL`` (default WARNING) with the process role."""
    level = os.environ.get("EMRFLOW_LOG_LEVEL", "WARNING").upper()
    logging.basicConfig(level=getattr(logging, level, logging.WARNING), stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [{role}] %(name)s: %(message)s")


def spawn(module: str, args: list[str], secret: str, python: str | None = None,
          new_session: bool = False, pass_fds: tuple[int, ...] = (),
          stdout=None, stderr=None, extra_env: dict | None = None) -> subprocess.Popen:
    """Start ``python -m module args...`` with the cluster secret in its environment.

    Args:
        module: module to run (``emrflow.runtime.jobmanager``...).
        args: its arguments (never the secret).
        secret: the cluster secret, passed as ``EMRFLOW_CLUSTER_SECRET``.
        python: interpreter (``python.executable``); default: this one.
        new_session: start in a new session so terminal signals skip it.
        pass_fds: file descriptors to inherit (a listening socket).
        stdout, stderr: as for :class:`subprocess.Popen` (default: inherit).
        extra_env: further environment variables (tokens).
    """
    env = dict(os.environ, **(extra_env or {}))
    env["EMRFLOW_CLUSTER_SECRET"] = secret
    # the job's modules are shipped by value; the interpreter finds emrflow itself
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in [pkg_root, env.get("PYTHONPATH", "")] if p)
    return subprocess.Popen([python or sys.executable, "-m", module, *args], env=env,
                            start_new_session=new_session, pass_fds=pass_fds,
                            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr)
