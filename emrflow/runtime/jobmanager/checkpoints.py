"""The checkpoint coordinator of one job (Flink's ``CheckpointCoordinator``), without I/O.

It numbers and tracks checkpoints and savepoints: which subtasks still have to acknowledge
one, when a periodic one is due, which ones timed out, the metadata of a complete one and
which retained checkpoints a completion pushes out. Writing ``_metadata``, telling slots and
deleting directories are the JobManager's (:mod:`.machine` asks for them as instructions).
Times are the caller's monotonic seconds.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from emrflow import fs
from emrflow.config_views import CheckpointConfig
from emrflow.runtime import checkpoint as chk
from emrflow.runtime.jobmanager.states import JobStatus

#: externalized-checkpoint-retention -> the terminal job states whose checkpoints are kept
_KEEP_ON = {"NO_EXTERNALIZED_CHECKPOINTS": (), "DELETE_ON_CANCELLATION": (JobStatus.FAILED,),
            "RETAIN_ON_CANCELLATION": (JobStatus.FAILED, JobStatus.CANCELED)}


@dataclass
class PendingCheckpoint:
    """A checkpoint triggered and not yet complete (Flink's ``PendingCheckpoint``)."""

    id: int
    target: str
    savepoint: bool
    started: float
    waiting: set
    entries: list = field(default_factory=list)
    metadata: dict | None = None   # its _metadata, once every subtask acknowledged
    trigger_ms: int = 0            # epoch ms of the trigger (the barrier's timestamp)


class CheckpointCoordinator:
    """Triggers checkpoints of one job, collects acknowledgements, completes them (Flink's).

    A checkpoint completes when every subtask acknowledged it; then its ``_metadata`` is
    written (last, so an incomplete checkpoint is never used), sinks are told (the second
    phase of their commit), and checkpoints beyond ``state.checkpoints.num-retained`` are
    deleted.

    Args:
        job_id: the job's id (hex).
        config: the job's checkpoint options.
        now: the current monotonic time, seconds.
    """

    def __init__(self, job_id: str, config: CheckpointConfig, now: float = 0.0):
        self.job_id = job_id
        self.config = config
        self.interval_s = config.interval_ms / 1000.0
        self.timeout_s = config.timeout_ms / 1000.0
        self.max_concurrent = config.max_concurrent
        self.min_pause_s = config.min_pause_ms / 1000.0
        self.retained = config.num_retained
        self.retention = config.retention
        self.savepoint_dir: str | None = config.savepoints_dir
        self.job_dir = fs.join(config.checkpoints_dir, job_id)
        self.next_id = 1
        self.pending: dict[int, PendingCheckpoint] = {}
        self.completing: dict[int, PendingCheckpoint] = {}  # acknowledged, metadata being written
        self.completed: list[dict] = []   # metadata of retained checkpoints, oldest first
        self.last_end = 0.0
        self.last_trigger = now
        self.stats = {"completed": 0, "failed": 0}

    def due(self, now: float) -> bool:
        """True if a periodic checkpoint should be triggered now."""
        periodic = [p for p in self.pending.values() if not p.savepoint]
        return (self.interval_s > 0 and len(periodic) < self.max_concurrent
                and now - self.last_trigger >= self.interval_s and now - self.last_end >= self.min_pause_s)

    def start(self, tasks: list, now: float, savepoint_dir: str | None = None) -> PendingCheckpoint:
        """Create a pending checkpoint (or savepoint into ``savepoint_dir``) waiting for ``tasks``."""
        cid = self.next_id
        self.next_id += 1
        if savepoint_dir is not None:
            target = fs.join(savepoint_dir, f"savepoint-{self.job_id[:6]}-{secrets.token_hex(6)}")
        else:
            target = fs.join(self.job_dir, f"chk-{cid}")
        p = PendingCheckpoint(cid, target, savepoint_dir is not None, now, set(tasks))
        self.pending[cid] = p
        if savepoint_dir is None:
            self.last_trigger = p.started
        return p

    def hold(self, checkpoint_id: int, keys: set) -> None:
        """Make a pending checkpoint also wait for ``keys`` (each released by an
        :meth:`acknowledge` with ``entry=None``), e.g. enumerator calls that must return first."""
        p = self.pending.get(checkpoint_id)
        if p is not None:
            p.waiting |= set(keys)

    def acknowledge(self, checkpoint_id: int, task: tuple, entry: dict | None
                    ) -> PendingCheckpoint | None:
        """Record one subtask's acknowledgement (or, ``entry=None``, the release of a
        :meth:`hold`); returns the checkpoint once nothing is waited for any more (it then waits in
        :attr:`completing` for its metadata), else ``None``."""
        p = self.pending.get(checkpoint_id)
        if p is None:
            return None
        p.waiting.discard(task)
        if entry is not None:
            p.entries.append(entry)
        if p.waiting:
            return None
        del self.pending[checkpoint_id]
        self.completing[checkpoint_id] = p
        return p

    def abort(self, checkpoint_id: int, now: float) -> PendingCheckpoint | None:
        """Drop a pending (or completing) checkpoint and count it failed; ``None`` if unknown."""
        p = self.pending.pop(checkpoint_id, None) or self.completing.pop(checkpoint_id, None)
        if p is None:
            return None
        self.stats["failed"] += 1
        self.last_end = now
        return p

    def expired(self, now: float) -> list[PendingCheckpoint]:
        """The pending checkpoints older than ``execution.checkpointing.timeout``."""
        return [p for p in self.pending.values() if now - p.started > self.timeout_s]

    def metadata(self, p: PendingCheckpoint, job_name: str, attempt: int, now: float,
                 wall_ms: int) -> dict:
        """The ``_metadata`` content of a fully acknowledged checkpoint."""
        return {"format": chk.FORMAT_VERSION, "job_id": self.job_id, "job_name": job_name,
                "checkpoint_id": p.id, "kind": "savepoint" if p.savepoint else "checkpoint",
                "attempt": attempt, "timestamp_ms": wall_ms,
                "duration_ms": int((now - p.started) * 1000),
                "size_bytes": sum(e["size"] for e in p.entries),
                "tasks": sorted(p.entries, key=lambda e: (e["vertex"], e["subtask"]))}

    def complete(self, checkpoint_id: int, meta: dict, now: float) -> list[str]:
        """Retain a checkpoint whose metadata was written; returns the directories of the
        checkpoints beyond ``state.checkpoints.num-retained`` (to delete)."""
        self.completing.pop(checkpoint_id, None)
        drop = []
        self.completed.append(meta)
        regular = [m for m in self.completed if m["kind"] == "checkpoint"]
        while len(regular) > self.retained:
            old = regular.pop(0)
            self.completed.remove(old)
            drop.append(old["path"])
        self.stats["completed"] += 1
        self.last_end = now
        return drop

    def discard_completed(self, path: str) -> None:
        """Forget a retained checkpoint found corrupt."""
        self.completed = [m for m in self.completed if m["path"] != path]

    def keeps_on(self, state: str) -> bool:
        """Whether the job's checkpoints stay when it ends in ``state`` (the retention setting)."""
        return state in _KEEP_ON.get(self.retention, ())

    def latest(self) -> dict | None:
        """Metadata of the newest completed checkpoint or savepoint, or ``None``."""
        return self.completed[-1] if self.completed else None

    def latest_savepoint(self) -> dict | None:
        """Metadata of the newest completed savepoint still retained, or ``None``."""
        return next((m for m in reversed(self.completed) if m["kind"] == "savepoint"), None)
