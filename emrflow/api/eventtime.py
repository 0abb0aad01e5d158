"""Event time: durations, timestamp assigners and watermark strategies (Flink's ``WatermarkStrategy``).

A watermark ``W`` says that no record with a timestamp ``<= W`` is expected any
more. A strategy assigns each record its event timestamp (ms) and emits
watermarks periodically (``pipeline.auto-watermark-interval``):

* ``for_monotonous_timestamps()``: ``W = max timestamp seen - 1``;
* ``for_bounded_out_of_orderness(d)``: ``W = max timestamp seen - d - 1``;
* ``no_watermarks()``: timestamps only.

``with_idleness(d)`` marks a source subtask idle when it had no record for ``d``,
so downstream tasks stop waiting for its watermark. Bounded inputs end with the
final watermark (``MAX_WATERMARK``), so every event-time window fires.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

#: The watermark that ends event time (Flink's ``Watermark.MAX_WATERMARK``, Long.MAX_VALUE).
MAX_WATERMARK = 2**63 - 1
#: The watermark before any was seen (Flink's ``Long.MIN_VALUE``).
MIN_WATERMARK = -(2**63)


@dataclass(frozen=True)
class Duration:
    """A length of time in milliseconds (PyFlink's ``Duration``)."""

    millis: int

    @staticmethod
    def of_millis(n: int) -> "Duration":
        return Duration(int(n))

    @staticmethod
    def of_seconds(n: float) -> "Duration":
        return Duration(int(n * 1000))

    @staticmethod
    def of_minutes(n: float) -> "Duration":
        return Duration(int(n * 60_000))

    @staticmethod
    def of_hours(n: float) -> "Duration":
        return Duration(int(n * 3_600_000))

    @staticmethod
    def of_days(n: float) -> "Duration":
        return Duration(int(n * 86_400_000))

    def to_milliseconds(self) -> int:
        return self.millis


class Time(Duration):
    """Window sizes (PyFlink's ``Time``): ``Time.seconds(10)`` is 10,000 ms."""

    @staticmethod
    def milliseconds(n: int) -> "Time":
        return Time(int(n))

    @staticmethod
    def seconds(n: float) -> "Time":
        return Time(int(n * 1000))

    @staticmethod
    def minutes(n: float) -> "Time":
        return Time(int(n * 60_000))

    @staticmethod
    def hours(n: float) -> "Time":
        return Time(int(n * 3_600_000))

    @staticmethod
    def days(n: float) -> "Time":
        return Time(int(n * 86_400_000))


def to_millis(value: Any, what: str = "duration") -> int:
    """Return ``value`` (a :class:`Duration`/``Time`` or an int of ms) as int milliseconds."""
    if isinstance(value, Duration):
        return value.millis
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"{what} must be a Duration, Time or int milliseconds, got {value!r}")


class TimestampAssigner(ABC):
    """Extracts a record's event timestamp in ms (Flink's ``TimestampAssigner``)."""

    @abstractmethod
    def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
        """Return the timestamp (ms) of ``value``; ``record_timestamp`` is its previous one or MIN."""


class WatermarkStrategy:
    """How timestamps and watermarks are generated; build one with the static methods."""

    def __init__(self, out_of_orderness_ms: int | None, assigner: Any = None, idleness_ms: int | None = None):
        self.out_of_orderness_ms = out_of_orderness_ms  # None: no watermarks
        self.assigner = assigner
        self.idleness_ms = idleness_ms

    @staticmethod
    def for_monotonous_timestamps() -> "WatermarkStrategy":
        """Timestamps ascend; the watermark trails the largest by 1 ms."""
        return WatermarkStrategy(0)

    @staticmethod
    def for_bounded_out_of_orderness(max_out_of_orderness: Duration | int) -> "WatermarkStrategy":
        """Records arrive at most ``max_out_of_orderness`` late."""
        ms = to_millis(max_out_of_orderness, "max_out_of_orderness")
        if ms < 0:
            raise ValueError(f"max_out_of_orderness must be >= 0 ms, got {ms}")
        return WatermarkStrategy(ms)

    @staticmethod
    def no_watermarks() -> "WatermarkStrategy":
        """Assign timestamps but never advance event time."""
        return WatermarkStrategy(None)

    def with_timestamp_assigner(self, assigner: TimestampAssigner | Callable[..., int]) -> "WatermarkStrategy":
        """Use ``assigner`` (a :class:`TimestampAssigner` or ``f(value) -> ms`` /
        ``f(value, record_timestamp) -> ms``) for timestamps."""
        if not (isinstance(assigner, TimestampAssigner) or callable(assigner)):
            raise TypeError(f"with_timestamp_assigner expects a TimestampAssigner or callable, got {assigner!r}")
        return WatermarkStrategy(self.out_of_orderness_ms, assigner, self.idleness_ms)

    def with_idleness(self, idle_timeout: Duration | int) -> "WatermarkStrategy":
        """Mark a source subtask idle after ``idle_timeout`` without records."""
        return WatermarkStrategy(self.out_of_orderness_ms, self.assigner, to_millis(idle_timeout, "idle_timeout"))

    def timestamp_function(self) -> Callable[[Any], int]:
        """Return ``value -> timestamp ms`` for this strategy's assigner.

        Raises:
            JobGraphError: no assigner was given.
        """
        a = self.assigner
        if a is None:
            from emrflow.errors import JobGraphError
            raise JobGraphError("the watermark strategy has no timestamp assigner: add "
                                ".with_timestamp_assigner(...)")
        if isinstance(a, TimestampAssigner):
            extract = a.extract_timestamp
            return lambda v: extract(v, MIN_WATERMARK)
        try:
            import inspect
            n = len([p for p in inspect.signature(a).parameters.values()
                     if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
        except (TypeError, ValueError):
            n = 1
        if n < 2:
            return a
        fn = a
        return lambda v: fn(v, MIN_WATERMARK)
