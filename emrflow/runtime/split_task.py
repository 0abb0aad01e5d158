"""The source subtask of a :class:`~emrflow.connectors.splits.SplitSource` (Flink's ``SourceOperator``).

:func:`run_split_source` is :meth:`StreamTask._run_source` for sources whose splits come from
an enumerator in the JobManager. It adds the restored splits to the reader, starts it,
registers the reader with the JobManager (which calls the enumerator's ``add_reader``), then
loops: the task's control queue (split assignments, "no more splits", checkpoint triggers and
completion notices, in the order the JobManager sent them), cancellation, one
``reader.poll(timeout)`` with a small timeout, the records of each split to the chain, the ids
of the splits the poll returned finished to the JobManager (the enumerator's
``handle_splits_finished``), timers and buffer flushes. It ends when the reader
:meth:`~emrflow.connectors.splits.SplitReader.is_finished` (a bounded source), or when the task
is cancelled (an unbounded one). A reader's ``ctx.send_split_request()`` sends ``split_request``
to the JobManager at once, from whatever thread calls it (the enumerator's
``handle_split_request``; a request sent from ``start()``, before the registration, is kept by the
JobManager until after ``add_reader``).

The finished splits are reported on the slot's one connection to the JobManager, from the task
thread, right after the poll: every snapshot this subtask takes later is acknowledged (from the
checkpoint thread, on that same connection) after the report, and the JobManager holds the
completion of a checkpoint acknowledged after a report until the enumerator's call returned
(:mod:`emrflow.runtime.jobmanager.machine`, ``SplitsFinished``).

Event time is per split when the chain's next operator is the source's
``Timestamps/Watermarks`` (``env.from_source(source, watermark_strategy)``): see
:mod:`emrflow.runtime.split_watermarks`.

The reader's :meth:`~emrflow.connectors.splits.SplitReader.snapshot_state` (its splits with
their positions) is the source operator's state in a checkpoint; on a restore every subtask
takes the splits of all former subtasks that :func:`~emrflow.connectors.splits.split_owner`
gives it, so a job restored at another parallelism keeps every split exactly once.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import cloudpickle

from emrflow.connectors.splits import split_owner
from emrflow.runtime.network.channels import Cancelled
from emrflow.runtime.network.writers import FlushTimer

if TYPE_CHECKING:
    from emrflow.runtime.task import StreamTask

#: longest wait in one reader.poll, seconds: control messages, timers and cancellation are
#: handled between polls
POLL_TIMEOUT_S = 0.05


def run_split_source(task: "StreamTask", head: Any, node: Any) -> None:
    """Drive the split reader of ``task``'s source ``node`` until it is finished or cancelled.

    Raises:
        Cancelled: the task was cancelled.
    """
    from emrflow.runtime.operators.basic import TimestampsOperator
    nxt = head.next_operators
    stamps = nxt[0] if len(nxt) == 1 and isinstance(nxt[0], TimestampsOperator) else None
    ctx = task._subtask_context(node)
    # the records go straight to record writers (or through the timestamp assigner only):
    # they may stay columns up to the exchange
    last = head if stamps is None else stamps
    ctx.columnar = (not last.next_operators and not head.side_outputs and not last.side_outputs
                    and bool(last.output.writers)
                    and bool(task.job.config.get("taskmanager.network.columnar-exchange")))
    reader = node.function.create_split_reader(ctx)
    task._split_reader = reader
    if stamps is not None:
        stamps.enable_per_split()
        task._split_stamps = stamps
    tickers = [op for op in task.operators.values() if op.wants_ticks]
    streaming = not task.job.batch
    timer = FlushTimer(task.network.buffer_timeout_ms)
    poll_s = min(max(task.network.buffer_timeout_ms, 1) / 1000.0, POLL_TIMEOUT_S)
    cancel, control, clock = task.cancel, task.control, time.perf_counter
    head_out = head.output
    try:
        restored = task._restored_splits or []
        if restored:
            _add_splits(task, restored)
        reader.start()
        task._register_reader()
        while True:
            if not control.empty():
                task._on_control()
            if cancel.is_set():
                raise Cancelled()
            if reader.is_finished():
                break
            results = reader.poll(poll_s)
            t0 = clock()
            finished = []
            for sr in results:
                records = sr.records
                if stamps is not None:
                    if records:
                        head.records_in += len(records)
                        head_out.records_out += len(records)
                    stamps.process_split(sr.split_id, records, sr.finished)
                elif records:
                    head.process_batch(records)
                if sr.finished:
                    finished.append(sr.split_id)
            if finished:  # sent now, so before the acknowledgement of any later snapshot of this subtask
                task._report_splits_finished(finished)
            if tickers:
                task._tick(tickers)
            if results:
                task.busy_s += clock() - t0
            if streaming and timer.due():
                for w in task.writers.values():
                    w.flush()
    finally:
        reader.close()


def _add_splits(task: "StreamTask", splits: list) -> None:
    task._split_reader.add_splits(list(splits))
    if task._split_stamps is not None:
        for s in splits:
            task._split_stamps.add_split(s.split_id)


def on_split_control(task: "StreamTask", what: str, arg: Any) -> None:
    """Handle a ``("splits", pickled list)`` or ``("no_more_splits", None)`` control message."""
    if task._split_reader is None:  # not started yet: cannot happen (the reader registers first)
        raise RuntimeError(f"{task.label}: {what} before the split reader started")
    if what == "splits":
        _add_splits(task, cloudpickle.loads(arg))
    else:
        task._split_reader.notify_no_more_splits()


def snapshot_splits(reader: Any, checkpoint_id: int) -> bytes:
    """The source operator's snapshot: the reader's splits with their positions (cloudpickled,
    since splits may be classes of the user's program)."""
    return cloudpickle.dumps({"splits": list(reader.snapshot_state(checkpoint_id))})


def restored_splits(state: Any, uid: str, subtask: int, parallelism: int) -> list:
    """The splits subtask ``subtask`` of ``parallelism`` takes from a checkpoint: those of every
    former subtask that :func:`split_owner` gives it.

    Args:
        state: the task's :class:`~emrflow.runtime.checkpoint.StateReader`.
        uid: the source operator's state id.

    Raises:
        ValueError: the state is a read position of a file source of an earlier version (not splits).
    """
    found = state.all_parts(uid)
    if found is None:
        return []
    out = []
    for _old, data in found:
        snap = cloudpickle.loads(data)
        if "position" in snap and "splits" not in snap:  # a bounded file source before it had splits
            raise ValueError(f"the state of source {uid!r} is a read position of an earlier emrflow "
                             "version's file source, which cannot be turned into splits; restoring it "
                             "would read the input again: rerun the job without this checkpoint")
        for split in snap.get("splits", []):
            if split_owner(split.split_id, parallelism) == subtask:
                out.append(split)
    return out
