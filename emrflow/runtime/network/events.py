"""Control events that travel in-band with the records, in order.

A channel delivers records and events in the order they were sent, so a
consumer sees an event only after every record its producer emitted before it
(Flink's ``AbstractEvent`` travelling through result partitions).
"""

from __future__ import annotations

from dataclasses import dataclass


class EndOfPartition:
    """The producer subtask has emitted its last record on this channel."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self):
        return (EndOfPartition, ())

    def __repr__(self) -> str:
        return "EndOfPartition"


END_OF_PARTITION = EndOfPartition()


@dataclass(frozen=True)
class Watermark:
    """Event time has reached ``timestamp_ms`` on this channel (no older records follow)."""

    timestamp_ms: int


@dataclass(frozen=True)
class CheckpointBarrier:
    """Separates the records before checkpoint ``checkpoint_id`` from those after it.

    ``target`` is the directory (local path or s3:// URI) the subtasks write their
    state to; ``savepoint`` tells a savepoint from a checkpoint (Flink's
    ``CheckpointOptions``).
    """

    checkpoint_id: int
    timestamp_ms: int
    target: str = ""
    savepoint: bool = False


@dataclass(frozen=True)
class WatermarkStatus:
    """The producer went idle (no watermarks for a while) or became active again.

    Idle channels are left out when a task takes the minimum watermark over its
    inputs (Flink's ``WatermarkStatus``).
    """

    idle: bool
