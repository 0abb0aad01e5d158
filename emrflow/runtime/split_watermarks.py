"""Per-split event time of a source subtask that reads a :class:`~emrflow.connectors.splits.SplitSource`.

Flink runs the watermark generator once per split (``SourceOperator`` with per-split
``WatermarkOutput``\\s) so that a fast split cannot push event time past the records of a slow
one. :class:`SplitWatermarks` is that logic without I/O or clocks (times come in as epoch ms):

* each split's watermark is ``max timestamp seen - out-of-orderness - 1`` (``MIN_WATERMARK``
  before its first record), the same formula as :class:`~emrflow.api.eventtime.WatermarkStrategy`;
* with ``with_idleness(d)`` a split without records for ``d`` is idle and does not hold event time
  back; its next record makes it active again;
* a finished split drops out;
* the subtask's watermark is the minimum over its active splits and only moves forward;
* the subtask is idle when all its splits are idle, or when it has had no split for ``d``. As in
  Flink, without ``with_idleness`` a subtask without splits is never idle: it may still be given
  one (a split assigned late, a partition discovered later), whose records would otherwise be
  late; a job with fewer splits than subtasks needs ``with_idleness`` for event time to advance
  before the input ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from emrflow.api.eventtime import MIN_WATERMARK

__all__ = ["SplitWatermarks"]


@dataclass
class _Split:
    max_ts: int = MIN_WATERMARK
    last_active_ms: int = 0
    idle: bool = False


class SplitWatermarks:
    """The watermark and idleness of one source subtask from its splits' records.

    Args:
        out_of_orderness_ms: the strategy's bound in ms; ``None`` for no watermarks (only
            idleness is tracked).
        idleness_ms: ``with_idleness`` timeout in ms, or ``None``.
        now_ms: the current time, epoch ms.
    """

    def __init__(self, out_of_orderness_ms: int | None, idleness_ms: int | None, now_ms: int):
        self.lag = out_of_orderness_ms
        self.idleness_ms = idleness_ms
        self.splits: dict[str, _Split] = {}
        #: the last watermark :meth:`advance` returned
        self.emitted = MIN_WATERMARK
        #: the subtask as a whole is idle
        self.idle = False
        self._empty_since = now_ms

    def add_split(self, split_id: str, now_ms: int) -> None:
        """A split was assigned (or restored): it holds event time back until its first records
        (or until it is idle)."""
        if split_id not in self.splits:
            self.splits[split_id] = _Split(last_active_ms=now_ms)

    def on_records(self, split_id: str, max_timestamp_ms: int, now_ms: int) -> bool:
        """Split ``split_id`` delivered records up to ``max_timestamp_ms``.

        Returns:
            True if that turned the subtask from idle to active (the caller emits the status
            before the records).
        """
        s = self.splits.get(split_id)
        if s is None:
            s = self.splits[split_id] = _Split()
        if max_timestamp_ms > s.max_ts:
            s.max_ts = max_timestamp_ms
        s.last_active_ms = now_ms
        s.idle = False
        if self.idle:
            self.idle = False
            return True
        return False

    def finish(self, split_id: str, now_ms: int) -> None:
        """Split ``split_id`` is exhausted: it no longer holds event time back."""
        if self.splits.pop(split_id, None) is not None and not self.splits:
            self._empty_since = now_ms

    def split_watermark(self, split_id: str) -> int:
        """The watermark of one split (``MIN_WATERMARK`` before records or without watermarks)."""
        s = self.splits[split_id]
        if self.lag is None or s.max_ts == MIN_WATERMARK:
            return MIN_WATERMARK
        return s.max_ts - self.lag - 1

    def advance(self, now_ms: int) -> tuple[int | None, bool | None]:
        """Apply idleness at ``now_ms`` and compute the subtask's watermark.

        Returns:
            ``(watermark, status)``: the new watermark if it advanced, else ``None``; and
            ``True``/``False`` if the subtask just turned idle/active, else ``None``.
        """
        idle_ms = self.idleness_ms
        if idle_ms is not None:
            for s in self.splits.values():
                if not s.idle and now_ms - s.last_active_ms >= idle_ms:
                    s.idle = True
        active = [sid for sid, s in self.splits.items() if not s.idle]
        if not self.splits:
            now_idle = idle_ms is not None and now_ms - self._empty_since >= idle_ms
        else:
            now_idle = not active
        status = None
        if now_idle != self.idle:
            self.idle = now_idle
            status = now_idle
        if not active or self.lag is None:
            return None, status
        low = min(self.split_watermark(sid) for sid in active)
        if low > self.emitted:
            self.emitted = low
            return low, status
        return None, status
