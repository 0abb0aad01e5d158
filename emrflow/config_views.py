"""Frozen, typed views of the option groups the runtime reads together.

The runtime never re-reads configuration keys with its own defaults and casts: the
job's :class:`~emrflow.config.Configuration` travels with the job (in the
:class:`~emrflow.graph.jobgraph.JobGraph` to the task slots, and as the JobManager's
part of the topology), and each component takes the group it needs once, at start,
as one of these views (the shape of PyFlink's ``CheckpointConfig``). A view holds
plain attributes in the units its names say (``_ms`` milliseconds, ``_bytes`` bytes,
``records``), so reading one in a hot loop costs an attribute lookup.

Every view is built with ``View.of(config)`` from a
:class:`~emrflow.config.Configuration`; the option defaults come from
:data:`emrflow.config.OPTIONS` alone.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from emrflow.config import Configuration

__all__ = ["CheckpointConfig", "NetworkConfig", "BadRecordsConfig", "DEFAULT_CHECKPOINTS_BASE"]

#: Where checkpoints go when ``state.checkpoints.dir`` is not set (a local temporary directory;
#: fine for one host, not for a cluster).
DEFAULT_CHECKPOINTS_BASE = os.path.join(tempfile.gettempdir(), "emrflow-checkpoints")


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpointing of one job (Flink's ``CheckpointConfig``; keys ``execution.checkpointing.*``,
    ``state.checkpoints.*``, ``state.savepoints.dir``).

    Attributes:
        interval_ms: ``execution.checkpointing.interval``; 0 when periodic checkpoints are off.
        exactly_once: ``execution.checkpointing.mode`` is ``EXACTLY_ONCE`` (barriers aligned)
            rather than ``AT_LEAST_ONCE``.
        timeout_ms: ``execution.checkpointing.timeout``: a checkpoint not complete by then fails.
        max_concurrent: ``execution.checkpointing.max-concurrent-checkpoints``.
        min_pause_ms: ``execution.checkpointing.min-pause`` between the end of one checkpoint
            and the next trigger.
        num_retained: ``state.checkpoints.num-retained``: completed checkpoints kept.
        retention: ``execution.checkpointing.externalized-checkpoint-retention``
            (``NO_EXTERNALIZED_CHECKPOINTS``, ``RETAIN_ON_CANCELLATION``, ``DELETE_ON_CANCELLATION``).
        checkpoints_dir: ``state.checkpoints.dir``, else :data:`DEFAULT_CHECKPOINTS_BASE`.
        savepoints_dir: ``state.savepoints.dir``, or ``None``.
    """

    interval_ms: int
    exactly_once: bool
    timeout_ms: int
    max_concurrent: int
    min_pause_ms: int
    num_retained: int
    retention: str
    checkpoints_dir: str
    savepoints_dir: str | None

    @property
    def periodic(self) -> bool:
        """True when periodic checkpoints are on (an interval is set)."""
        return self.interval_ms > 0

    @classmethod
    def of(cls, config: Configuration) -> "CheckpointConfig":
        """Return the checkpoint options of ``config``."""
        get = config.get
        return cls(interval_ms=int(get("execution.checkpointing.interval") or 0),
                   exactly_once=get("execution.checkpointing.mode") == "EXACTLY_ONCE",
                   timeout_ms=int(get("execution.checkpointing.timeout")),
                   max_concurrent=int(get("execution.checkpointing.max-concurrent-checkpoints")),
                   min_pause_ms=int(get("execution.checkpointing.min-pause")),
                   num_retained=int(get("state.checkpoints.num-retained")),
                   retention=str(get("execution.checkpointing.externalized-checkpoint-retention")),
                   checkpoints_dir=str(get("state.checkpoints.dir") or DEFAULT_CHECKPOINTS_BASE),
                   savepoints_dir=get("state.savepoints.dir") or None)


@dataclass(frozen=True)
class NetworkConfig:
    """The data exchange between subtasks (Flink's network stack options).

    Attributes:
        buffer_timeout_ms: ``execution.buffer-timeout``: longest time a record waits in a
            partly filled output buffer; 0 flushes after every record.
        buffers_per_channel: ``taskmanager.network.memory.buffers-per-channel``: credits a
            receiver grants each input channel (credit-based flow control).
        batch_size: ``taskmanager.network.batch-size``: records per network buffer.
        shared_memory_slot_bytes: ``taskmanager.network.shared-memory.slot-size`` (bytes) when
            ``taskmanager.network.shared-memory`` is true, else 0 (TCP between slot processes).
    """

    buffer_timeout_ms: int
    buffers_per_channel: int
    batch_size: int
    shared_memory_slot_bytes: int = 0

    @classmethod
    def of(cls, config: Configuration) -> "NetworkConfig":
        """Return the network options of ``config``."""
        return cls(buffer_timeout_ms=int(config.get("execution.buffer-timeout")),
                   buffers_per_channel=int(config.get("taskmanager.network.memory.buffers-per-channel")),
                   batch_size=int(config.get("taskmanager.network.batch-size")),
                   shared_memory_slot_bytes=int(config.get("taskmanager.network.shared-memory.slot-size"))
                   if config.get("taskmanager.network.shared-memory") else 0)


@dataclass(frozen=True)
class BadRecordsConfig:
    """What a job does with input records it cannot parse (``emrflow.bad-records.*``).

    Attributes:
        fail: ``emrflow.bad-records.fail``: the first bad record fails the job.
        report_limit: ``emrflow.bad-records.report-limit``: bad records kept in full per
            subtask for the report (the rest are counted).
        max_ratio: ``emrflow.bad-records.max-ratio``: the job fails when more than this
            fraction of a source's records were bad (1.0: never).
        max_count: ``emrflow.bad-records.max-count``: the job fails when more records than
            this were bad; ``None``: no limit.
    """

    fail: bool
    report_limit: int
    max_ratio: float
    max_count: int | None

    @classmethod
    def of(cls, config: Configuration) -> "BadRecordsConfig":
        """Return the bad-record options of ``config``."""
        count = config.get("emrflow.bad-records.max-count")
        return cls(fail=bool(config.get("emrflow.bad-records.fail")),
                   report_limit=int(config.get("emrflow.bad-records.report-limit")),
                   max_ratio=float(config.get("emrflow.bad-records.max-ratio")),
                   max_count=None if count is None else int(count))
