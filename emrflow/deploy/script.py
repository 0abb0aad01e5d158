"""Running a job script as ``emrflow run`` does, from Python.

A job script builds its dataflow and calls ``env.execute()``; :func:`run_script` runs it as
its own ``__main__`` with a :class:`~emrflow.config.Configuration` (the command line's
``-p``, ``-t``, ``-D``, ``--conf``) that every environment it creates picks up, and returns
the results of the jobs it executed.
"""

from __future__ import annotations

import os
import runpy
import sys
import time
from typing import Callable, Sequence

from emrflow.config import Configuration
from emrflow.errors import JobGraphError


def run_script(script: str, args: Sequence[str] = (), config: Configuration | None = None, *,
               dry_run: bool = False, on_progress: Callable[[dict], None] | None = None,
               on_submitted: Callable[[str, str], None] | None = None) -> list:
    """Run the job script ``script`` as ``__main__`` with ``args`` as its ``sys.argv[1:]``.

    While it runs, ``sys.argv`` is ``[script, *args]``, the script's directory comes first on
    ``sys.path`` (so it imports its neighbours), and every
    :class:`~emrflow.api.environment.StreamExecutionEnvironment` it creates uses ``config``;
    all three are restored afterwards, also when it raises. The job's target is
    ``execution.target`` (``local`` starts an embedded cluster and stops it at the end).

    Args:
        script: path of the ``.py`` file.
        args: the script's own arguments.
        config: the configuration (default: :meth:`Configuration.load`, the file only).
        dry_run: print what would be submitted (the JobGraph, or the YARN application spec)
            and stop the script at its first ``execute()``, running nothing.
        on_progress: called about once a second with a job status ``dict`` while a job runs.
        on_submitted: called with ``(job_id, job_name)`` once a job is accepted.

    Returns:
        The :class:`~emrflow.job.JobExecutionResult` of every ``execute()`` call,
        in order (under ``dry_run``, the first one's placeholder).

    Raises:
        JobGraphError: the script ended without calling ``env.execute()``.
        JobExecutionError: a job failed or was cancelled.
        EmrflowError: another error emrflow raised (configuration, input, cluster).
        KeyboardInterrupt: interrupted; the job was cancelled and its cluster stopped.
        Exception: whatever the script itself raised (a ``SyntaxError`` too).
    """
    from emrflow.job import (
        DryRunComplete,
        ExecutionContext,
        reset_execution_context,
        set_execution_context,
    )
    ctx = ExecutionContext(config=config if config is not None else Configuration.load(),
                           on_progress=on_progress, on_submitted=on_submitted, dry_run=dry_run)
    token = set_execution_context(ctx)
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    except DryRunComplete:
        pass
    finally:
        sys.argv, sys.path[:] = old_argv, old_path
        reset_execution_context(token)
    if not ctx.results:
        raise JobGraphError(f"{script} did not submit a job: it never called env.execute() "
                            "(as Flink says: the program didn't contain a job)")
    return ctx.results


def wait_for_session(config: Configuration, notify: Callable[[str], None] | None = None) -> str | None:
    """For ``-t yarn-session`` without ``yarn.application.id``: wait for a recorded session.

    On EMR with step concurrency > 1, a job step may start while the session step is still
    starting the session; with ``yarn.session.wait-timeout`` set (EMR job steps for
    ``-t yarn-session`` set it) the job waits for the record (``~/.emrflow/yarn-session.json``)
    that long, polling every second. If none appears, the submission fails as without
    waiting ("no YARN session ..."). By default (0) it does not wait.

    Args:
        config: the configuration (``yarn.application.id``, ``yarn.session.wait-timeout``).
        notify: called with a line to show the user (that it waits, which session it found).

    Returns:
        The recorded session's application id, or ``None`` (none recorded, or
        ``yarn.application.id`` set).
    """
    from emrflow.deploy import yarn
    if config.get("yarn.application.id"):
        return None
    notify = notify or (lambda line: None)
    app_id = yarn.recorded_session()
    timeout_s = int(config.get("yarn.session.wait-timeout")) / 1000
    if app_id is None and timeout_s > 0:
        notify(f"No YARN session recorded yet: waiting up to {timeout_s:.0f} s "
               "(yarn.session.wait-timeout) for one to start")
        deadline = time.monotonic() + timeout_s
        while app_id is None and time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            app_id = yarn.recorded_session()
    if app_id is not None:
        notify(f"Submitting to YARN session {app_id}")
    return app_id
