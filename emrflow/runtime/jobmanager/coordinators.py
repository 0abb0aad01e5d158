"""Split enumerators in the JobManager (Flink's ``SourceCoordinator``): the I/O side.

The state machine (:mod:`.machine`) decides *when* an enumerator is reset, told of a reader, of
a reader's split request or of its region's restart, given splits back, snapshotted or closed,
and emits :class:`~.machine.ResetEnumerators`, :class:`~.machine.EnumeratorCall`,
:class:`~.machine.SnapshotEnumerators` and :class:`~.machine.CloseEnumerators`;
:class:`SourceCoordinators` performs them with user code (the
:class:`~emrflow.connectors.splits.SplitSource` unpickled from the job) and feeds back
:class:`~.machine.SplitsAssigned`, :class:`~.machine.EnumeratorsSnapshotted`,
:class:`~.machine.EnumeratorStateWritten`, :class:`~.machine.EnumeratorCallDone` (after a
``handle_splits_finished`` call, which the machine waits for before completing checkpoints, and
after a ``subtasks_reset``, which a region restart waits for) and
:class:`~.machine.EnumeratorFailed`.

Threads and locks: every enumerator has one coordinator thread (calls are queued, so the shell
never waits for user code while it holds the JobManager's lock) and one re-entrant *assignment
lock*. Every call into the enumerator, every periodic discovery call and every
``ctx.assign_splits`` holds that lock, and an assignment is handed to the state machine (which
sends it to the slot at once) before the lock is released. A checkpoint takes the locks of all
the job's enumerators, snapshots them and has the machine send the triggers *before* releasing
them; so a split is either in the enumerator's snapshot or its assignment left before the
trigger, on the same slot connection, hence before the barrier of the reader's snapshot. Lock
order: assignment lock(s), then the JobManager's lock; never the other way round.
"""

from __future__ import annotations

import logging
import threading
import traceback
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import cloudpickle

from emrflow import fs
from emrflow.connectors.splits import SplitEnumeratorContext
from emrflow.fs import FileSystem
from emrflow.runtime.jobmanager import machine as m

log = logging.getLogger("emrflow.jobmanager")


def enumerator_file_name(vertex_id: int) -> str:
    """Name of a split enumerator's state file in a checkpoint directory."""
    return f"enumerator-{vertex_id}.state"


class _Context(SplitEnumeratorContext):
    """What one enumerator of one attempt sees; dead (ignores everything) once it was reset or closed."""

    def __init__(self, coordinator: "_Coordinator", generation: int, parallelism: int, config: Any,
                 file_system: FileSystem):
        self._c = coordinator
        self._generation = generation
        self._parallelism = parallelism
        self._config = config
        self._file_system = file_system
        self._readers: set[int] = set()
        self.closed = threading.Event()

    @property
    def parallelism(self) -> int:
        return self._parallelism

    @property
    def config(self) -> Any:
        return self._config

    @property
    def file_system(self) -> FileSystem:
        return self._file_system

    def registered_readers(self) -> set[int]:
        return set(self._readers)

    def assign_splits(self, assignment: Mapping[int, Sequence[Any]]) -> None:
        c = self._c
        with c.lock:
            if self.closed.is_set():
                return
            bad = sorted(int(i) for i in assignment if int(i) not in self._readers)
            if bad:
                raise ValueError(f"assign_splits: subtask(s) {bad} of {c.name!r} have no registered reader "
                                 f"(registered: {sorted(self._readers)}); assign only to "
                                 "ctx.registered_readers()")
            for splits in assignment.values():
                for s in splits:
                    if not isinstance(getattr(s, "split_id", None), str):
                        raise TypeError(f"assign_splits: {s!r} has no str split_id")
            payload = {int(i): cloudpickle.dumps(list(splits)) for i, splits in assignment.items() if splits}
            if payload:
                c.owner.feed(m.SplitsAssigned(c.job_id, c.vertex, self._generation, payload))

    def signal_no_more_splits(self, subtask: int) -> None:
        c = self._c
        with c.lock:
            if not self.closed.is_set():
                c.owner.feed(m.SplitsAssigned(c.job_id, c.vertex, self._generation, {}, (int(subtask),)))

    def call_periodically(self, fn: Callable[[], None], interval_ms: int) -> None:
        if interval_ms <= 0:
            raise ValueError(f"call_periodically: interval_ms must be > 0, got {interval_ms}")
        c, gen, closed = self._c, self._generation, self.closed

        def loop() -> None:
            while not closed.wait(interval_ms / 1000.0):
                with c.lock:
                    if closed.is_set():
                        return
                    try:
                        fn()
                    except Exception as exc:  # noqa: BLE001 - user code: the job fails over
                        c.failed(gen, exc)
                        return

        threading.Thread(target=loop, daemon=True, name=f"enumerator-{c.name}-periodic").start()


class _Coordinator:
    """The enumerator of one SplitSource vertex of one job, across restarts."""

    def __init__(self, owner: "SourceCoordinators", job_id: str, vertex: int):
        self.owner = owner
        self.job_id = job_id
        self.vertex = vertex
        self.name = f"vertex {vertex}"
        self.uid = ""
        self.lock = threading.RLock()
        self.generation = -1
        self.enumerator: Any = None
        self.ctx: _Context | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"enumerator-{job_id[:8]}-{vertex}")

    def submit(self, generation: int, fn: Callable, *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception as exc:  # noqa: BLE001 - user code: the job fails over
                self.failed(generation, exc)
        try:
            self._executor.submit(run)
        except RuntimeError:  # closed
            pass

    def failed(self, generation: int, exc: BaseException) -> None:
        log.warning("job %s: the split enumerator of %s failed: %r", self.job_id, self.name, exc)
        self.owner.feed(m.EnumeratorFailed(self.job_id, self.vertex, generation, f"{type(exc).__name__}: {exc}",
                                           "".join(traceback.format_exception(exc))))

    def reset(self, ins: m.ResetEnumerators, uid: str) -> None:
        with self.lock:
            self._close_current()
            graph = self.owner.graph(ins.job_id, ins.job_bytes)
            v = graph.vertices[self.vertex]
            source = v.operators[v.head].function
            self.name, self.uid = v.operators[v.head].name, uid
            file_system = FileSystem.of(graph.config)
            ctx = _Context(self, ins.generation, v.parallelism, graph.config, file_system)
            restore = ins.restore or {}
            state_file = (restore.get("enumerators") or {}).get(uid)
            self.generation, self.ctx = ins.generation, ctx
            if state_file:
                state = cloudpickle.loads(file_system.read_bytes(fs.join(restore["path"], state_file)))
                self.enumerator = source.restore_enumerator(ctx, state)
                log.info("job %s: split enumerator of %r restored from %s", self.job_id, self.name, restore["path"])
            else:
                self.enumerator = source.create_enumerator(ctx)
            self.enumerator.start()

    def call(self, generation: int, method: str, arg: Any, call_id: int | None = None) -> None:
        """Call the enumerator (if still of attempt ``generation``) under the assignment lock; with
        a ``call_id``, feed :class:`~.machine.EnumeratorCallDone` afterwards whatever happened (the
        machine holds checkpoints until then; a failure is fed first, so the job fails over)."""
        try:
            with self.lock:
                if generation != self.generation or self.enumerator is None or self.ctx is None:
                    return
                if method == "subtasks_reset":  # their region restarts: no more assignments to them
                    self.ctx._readers.difference_update(int(i) for i in arg)
                elif method == "handle_splits_finished":
                    subtask, split_ids = arg
                    self.enumerator.handle_splits_finished(int(subtask), list(split_ids))
                elif method == "add_splits_back":
                    subtask, blobs = arg
                    self.enumerator.add_splits_back([s for b in blobs for s in cloudpickle.loads(b)], int(subtask))
                else:
                    if method == "add_reader":
                        self.ctx._readers.add(int(arg))
                    getattr(self.enumerator, method)(arg)
        except Exception as exc:  # noqa: BLE001 - user code: the job fails over
            self.failed(generation, exc)
        finally:
            if call_id is not None:
                self.owner.feed(m.EnumeratorCallDone(self.job_id, self.vertex, call_id))

    def close(self) -> None:
        with self.lock:
            self._close_current()
        self._executor.shutdown(wait=False)

    def _close_current(self) -> None:
        if self.ctx is not None:
            self.ctx.closed.set()
        if self.enumerator is not None:
            try:
                self.enumerator.close()
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.warning("job %s: closing the split enumerator of %s failed: %r", self.job_id, self.name, exc)
        self.enumerator, self.ctx, self.generation = None, None, -1


class SourceCoordinators:
    """The split enumerators of every job of a JobManager.

    Args:
        feed: the shell's ``_feed`` (takes the JobManager's lock; never called with it held here
            except through :meth:`perform`, which does not block).
    """

    def __init__(self, feed: Callable[[m.Event], list]):
        self.feed = feed
        self._jobs: dict[str, dict[int, _Coordinator]] = {}
        self._graphs: dict[str, Any] = {}
        self._lock = threading.Lock()

    def graph(self, job_id: str, job_bytes: bytes) -> Any:
        """The job's JobGraph, unpickled once (it holds the SplitSources)."""
        with self._lock:
            g = self._graphs.get(job_id)
        if g is None:
            g = cloudpickle.loads(job_bytes)
            with self._lock:
                self._graphs[job_id] = g
        return g

    def _coordinator(self, job_id: str, vertex: int) -> _Coordinator:
        with self._lock:
            c = self._jobs.setdefault(job_id, {}).get(vertex)
            if c is None:
                c = self._jobs[job_id][vertex] = _Coordinator(self, job_id, vertex)
            return c

    def perform(self, ins: m.Instruction) -> None:
        """Start an instruction's work (called with the JobManager's lock held: never blocks)."""
        if isinstance(ins, m.ResetEnumerators):
            for vertex, uid in ins.vertices:
                c = self._coordinator(ins.job_id, vertex)
                c.submit(ins.generation, c.reset, ins, uid)
        elif isinstance(ins, m.EnumeratorCall):
            with self._lock:
                found = self._jobs.get(ins.job_id, {}).get(ins.vertex)
            if found is not None:
                found.submit(ins.generation, found.call, ins.generation, ins.method, ins.arg, ins.call_id)
        elif isinstance(ins, m.SnapshotEnumerators):
            threading.Thread(target=self._snapshot, args=(ins,), daemon=True,
                             name=f"enumerator-snapshot-{ins.job_id[:8]}-{ins.checkpoint_id}").start()
        elif isinstance(ins, m.CloseEnumerators):
            with self._lock:
                coordinators = self._jobs.pop(ins.job_id, {})
                self._graphs.pop(ins.job_id, None)
            for c in coordinators.values():
                c.submit(-1, c.close)
        else:
            raise TypeError(f"not an enumerator instruction: {ins!r}")

    def _snapshot(self, ins: m.SnapshotEnumerators) -> None:
        """Snapshot the job's enumerators with assignments paused, let the machine send the
        triggers while still paused, then write the state files."""
        with self._lock:
            job = dict(self._jobs.get(ins.job_id, {}))
        coordinators = []
        error = None
        for vertex, gen in ins.generations:
            c = job.get(vertex)
            if c is None:
                error = f"the split enumerator of vertex {vertex} is not running"
                break
            coordinators.append((c, gen))
        states: dict[int, tuple[str, bytes]] = {}
        held = []
        sent = False
        try:
            for c, _gen in coordinators:
                c.lock.acquire()
                held.append(c)
            for c, gen in coordinators if error is None else []:
                if c.generation != gen or c.enumerator is None:
                    error = f"the split enumerator of {c.name!r} is (re)starting"
                    break
                try:
                    states[c.vertex] = (c.uid, cloudpickle.dumps(c.enumerator.snapshot_state(ins.checkpoint_id)))
                except Exception as exc:  # noqa: BLE001 - user code: the checkpoint is declined
                    error = f"{c.name!r}: snapshot_state raised {type(exc).__name__}: {exc}"
                    break
            out = self.feed(m.EnumeratorsSnapshotted(ins.job_id, ins.checkpoint_id, error))
            sent = error is None and any(isinstance(i, m.SendToSlot) and i.msg == "trigger_checkpoint"
                                         for i in out)
        finally:
            for c in reversed(held):
                c.lock.release()
        if not sent:
            return
        for vertex, (uid, data) in states.items():
            name = enumerator_file_name(vertex)
            try:
                ins.file_system.write_bytes(fs.join(ins.target, name), data)
            except Exception as exc:  # noqa: BLE001 - any storage error declines the checkpoint
                self.feed(m.EnumeratorStateWritten(ins.job_id, ins.checkpoint_id, vertex, error=repr(exc)))
                continue
            entry = {"file": name, "size": len(data), "crc32": zlib.crc32(data), "vertex": vertex,
                     "subtask": -1, "enumerator": uid, "operators": {}}
            self.feed(m.EnumeratorStateWritten(ins.job_id, ins.checkpoint_id, vertex, entry))
