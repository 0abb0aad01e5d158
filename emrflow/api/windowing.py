"""Windows, window assigners, triggers and evictors (Flink's ``org.apache.flink.streaming.api.windowing``).

Time windows are ``[start, end)`` in ms, aligned to the epoch plus an optional
offset: a tumbling window of size ``s`` holding timestamp ``t`` starts at
``t - (t - offset) mod s``. A window's results carry the timestamp
``max_timestamp() = end - 1``. Session windows start as ``[t, t + gap)`` per record
and merge when they overlap or touch.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from emrflow.api.eventtime import to_millis


class TimeWindow(NamedTuple):
    """The window ``[start, end)`` in ms (a named tuple: cheap to create, hash and compare)."""

    start: int
    end: int

    def max_timestamp(self) -> int:
        """The largest timestamp in the window (``end - 1``)."""
        return self.end - 1

    def intersects(self, other: "TimeWindow") -> bool:
        """True if the windows overlap or touch (Flink's rule for merging sessions)."""
        return self.start <= other.end and self.end >= other.start

    def cover(self, other: "TimeWindow") -> "TimeWindow":
        """The smallest window holding both."""
        return TimeWindow(min(self.start, other.start), max(self.end, other.end))


@dataclass(frozen=True)
class GlobalWindow:
    """The single window of :class:`GlobalWindows`; it never ends on its own."""

    def max_timestamp(self) -> int:
        return 2**63 - 1


GLOBAL_WINDOW = GlobalWindow()


def window_start(timestamp: int, offset: int, size: int) -> int:
    """Start of the window of ``size`` ms (shifted by ``offset``) that holds ``timestamp``."""
    return timestamp - (timestamp - offset) % size


class WindowAssigner(ABC):
    """Assigns each record to zero or more windows."""

    is_event_time: bool = True
    is_merging: bool = False

    @abstractmethod
    def assign_windows(self, value: Any, timestamp: int, now_ms: int) -> list:
        """Return the windows of a record (``timestamp``: event time; ``now_ms``: processing time)."""

    def default_trigger(self) -> "Trigger":
        return EventTimeTrigger() if self.is_event_time else ProcessingTimeTrigger()


class _Tumbling(WindowAssigner):
    def __init__(self, size: Any, offset: Any = 0):
        self.size = to_millis(size, "size")
        self.offset = to_millis(offset, "offset") % self.size if self.size > 0 else 0
        if self.size <= 0:
            raise ValueError(f"window size must be > 0 ms, got {self.size}")

    def assign_windows(self, value, timestamp, now_ms):
        t = timestamp if self.is_event_time else now_ms
        start = window_start(t, self.offset, self.size)
        return [TimeWindow(start, start + self.size)]


class TumblingEventTimeWindows(_Tumbling):
    """Fixed-size, non-overlapping event-time windows."""

    @staticmethod
    def of(size: Any, offset: Any = 0) -> "TumblingEventTimeWindows":
        return TumblingEventTimeWindows(size, offset)


class TumblingProcessingTimeWindows(_Tumbling):
    """Fixed-size, non-overlapping processing-time windows."""

    is_event_time = False

    @staticmethod
    def of(size: Any, offset: Any = 0) -> "TumblingProcessingTimeWindows":
        return TumblingProcessingTimeWindows(size, offset)


class _Sliding(WindowAssigner):
    def __init__(self, size: Any, slide: Any, offset: Any = 0):
        self.size = to_millis(size, "size")
        self.slide = to_millis(slide, "slide")
        if self.size <= 0 or self.slide <= 0:
            raise ValueError(f"window size and slide must be > 0 ms, got {self.size} and {self.slide}")
        self.offset = to_millis(offset, "offset") % self.slide

    def assign_windows(self, value, timestamp, now_ms):
        t = timestamp if self.is_event_time else now_ms
        last = window_start(t, self.offset, self.slide)
        out = []
        start = last
        while start > t - self.size:
            out.append(TimeWindow(start, start + self.size))
            start -= self.slide
        return out


class SlidingEventTimeWindows(_Sliding):
    """Windows of ``size`` every ``slide`` (overlapping when slide < size), by event time."""

    @staticmethod
    def of(size: Any, slide: Any, offset: Any = 0) -> "SlidingEventTimeWindows":
        return SlidingEventTimeWindows(size, slide, offset)


class SlidingProcessingTimeWindows(_Sliding):
    """Sliding windows by processing time."""

    is_event_time = False

    @staticmethod
    def of(size: Any, slide: Any, offset: Any = 0) -> "SlidingProcessingTimeWindows":
        return SlidingProcessingTimeWindows(size, slide, offset)


class _Session(WindowAssigner):
    is_merging = True

    def __init__(self, gap: Any = None, extractor: Callable[[Any], int] | None = None):
        self.gap = None if gap is None else to_millis(gap, "gap")
        if self.gap is not None and self.gap <= 0:
            raise ValueError(f"session gap must be > 0 ms, got {self.gap}")
        if self.gap is None and extractor is None:
            raise ValueError("a session window needs a gap (with_gap) or a gap extractor (with_dynamic_gap)")
        self.extractor = extractor

    def assign_windows(self, value, timestamp, now_ms):
        t = timestamp if self.is_event_time else now_ms
        gap = self.gap if self.extractor is None else int(self.extractor(value))
        if gap is None or gap <= 0:
            raise ValueError(f"the dynamic session gap must be > 0 ms, got {gap} for {value!r}")
        return [TimeWindow(t, t + gap)]


class EventTimeSessionWindows(_Session):
    """Per-key sessions by event time: a session closes after ``gap`` without records."""

    @staticmethod
    def with_gap(gap: Any) -> "EventTimeSessionWindows":
        return EventTimeSessionWindows(gap)

    @staticmethod
    def with_dynamic_gap(extractor: Callable[[Any], int]) -> "EventTimeSessionWindows":
        """The gap (ms) of each record is ``extractor(record)``."""
        return EventTimeSessionWindows(None, extractor)


class ProcessingTimeSessionWindows(_Session):
    """Per-key sessions by processing time."""

    is_event_time = False

    @staticmethod
    def with_gap(gap: Any) -> "ProcessingTimeSessionWindows":
        return ProcessingTimeSessionWindows(gap)

    @staticmethod
    def with_dynamic_gap(extractor: Callable[[Any], int]) -> "ProcessingTimeSessionWindows":
        return ProcessingTimeSessionWindows(None, extractor)


class GlobalWindows(WindowAssigner):
    """One window per key that never fires by itself: pair it with a trigger (count windows)."""

    is_event_time = False  # needs no timestamps; its window never ends

    def assign_windows(self, value, timestamp, now_ms):
        return [GLOBAL_WINDOW]

    def default_trigger(self) -> "Trigger":
        return NeverTrigger()

    @staticmethod
    def create() -> "GlobalWindows":
        return GlobalWindows()


# -- triggers --------------------------------------------------------------------

class TriggerResult(enum.Enum):
    """What a trigger decides (Flink's ``TriggerResult``)."""

    CONTINUE = (False, False)
    FIRE = (True, False)
    PURGE = (False, True)
    FIRE_AND_PURGE = (True, True)

    @property
    def is_fire(self) -> bool:
        return self.value[0]

    @property
    def is_purge(self) -> bool:
        return self.value[1]


class Trigger(ABC):
    """Decides when a window's contents are emitted (Flink's ``Trigger``).

    The context ``ctx`` offers ``register_event_time_timer(ms)``,
    ``register_processing_time_timer(ms)``, ``delete_event_time_timer(ms)``,
    ``delete_processing_time_timer(ms)``, ``get_current_watermark()``,
    ``get_current_processing_time()`` and ``get_partitioned_state(descriptor)`` (state
    per key and window, e.g. a count).
    """

    @abstractmethod
    def on_element(self, element: Any, timestamp: int, window: Any, ctx: Any) -> TriggerResult:
        """Called for every record added to ``window``."""

    def on_event_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        """Called when an event-time timer of ``window`` fires."""
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
        """Called when a processing-time timer of ``window`` fires."""
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return False

    def on_merge(self, window: Any, ctx: Any) -> None:
        """Called when session windows merged into ``window``."""

    def clear(self, window: Any, ctx: Any) -> None:
        """Remove the trigger's timers and state of ``window``."""


class EventTimeTrigger(Trigger):
    """Fires when the watermark passes the window's end (and for each late record within lateness)."""

    def on_element(self, element, timestamp, window, ctx):
        if window.max_timestamp() <= ctx.get_current_watermark():
            return TriggerResult.FIRE
        ctx.register_event_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_event_time(self, time, window, ctx):
        return TriggerResult.FIRE if time == window.max_timestamp() else TriggerResult.CONTINUE

    def can_merge(self):
        return True

    def on_merge(self, window, ctx):
        if window.max_timestamp() > ctx.get_current_watermark():
            ctx.register_event_time_timer(window.max_timestamp())

    def clear(self, window, ctx):
        ctx.delete_event_time_timer(window.max_timestamp())

    @staticmethod
    def create() -> "EventTimeTrigger":
        return EventTimeTrigger()


class ProcessingTimeTrigger(Trigger):
    """Fires when the wall clock passes the window's end."""

    def on_element(self, element, timestamp, window, ctx):
        ctx.register_processing_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_processing_time(self, time, window, ctx):
        return TriggerResult.FIRE

    def can_merge(self):
        return True

    def on_merge(self, window, ctx):
        ctx.register_processing_time_timer(window.max_timestamp())

    def clear(self, window, ctx):
        ctx.delete_processing_time_timer(window.max_timestamp())

    @staticmethod
    def create() -> "ProcessingTimeTrigger":
        return ProcessingTimeTrigger()


class CountTrigger(Trigger):
    """Fires every ``count`` records of a window."""

    def __init__(self, count: int):
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self.count = count

    def on_element(self, element, timestamp, window, ctx):
        state = ctx.get_partitioned_state("__count__")
        n = (state.value() or 0) + 1
        if n >= self.count:
            state.clear()
            return TriggerResult.FIRE
        state.update(n)
        return TriggerResult.CONTINUE

    def clear(self, window, ctx):
        ctx.get_partitioned_state("__count__").clear()

    @staticmethod
    def of(count: int) -> "CountTrigger":
        return CountTrigger(count)


class PurgingTrigger(Trigger):
    """Wraps a trigger and purges the window whenever it fires."""

    def __init__(self, nested: Trigger):
        self.nested = nested

    def on_element(self, element, timestamp, window, ctx):
        return self._purging(self.nested.on_element(element, timestamp, window, ctx))

    def on_event_time(self, time, window, ctx):
        return self._purging(self.nested.on_event_time(time, window, ctx))

    def on_processing_time(self, time, window, ctx):
        return self._purging(self.nested.on_processing_time(time, window, ctx))

    def can_merge(self):
        return self.nested.can_merge()

    def on_merge(self, window, ctx):
        self.nested.on_merge(window, ctx)

    def clear(self, window, ctx):
        self.nested.clear(window, ctx)

    @staticmethod
    def _purging(r: TriggerResult) -> TriggerResult:
        return TriggerResult.FIRE_AND_PURGE if r.is_fire else r

    @staticmethod
    def of(nested: Trigger) -> "PurgingTrigger":
        return PurgingTrigger(nested)


class NeverTrigger(Trigger):
    """The trigger of :class:`GlobalWindows`: never fires."""

    def on_element(self, element, timestamp, window, ctx):
        return TriggerResult.CONTINUE


# -- evictors --------------------------------------------------------------------------

class Evictor(ABC):
    """Removes elements from a window before and/or after the window function runs.

    Elements are ``(timestamp, value)`` pairs; methods return the pairs to keep.
    """

    @abstractmethod
    def evict_before(self, elements: list, size: int, window: Any, ctx: Any) -> list:
        """Return the elements the window function sees."""

    def evict_after(self, elements: list, size: int, window: Any, ctx: Any) -> list:
        """Return the elements kept in the window after the window function ran."""
        return elements


class CountEvictor(Evictor):
    """Keeps the last ``max_count`` elements."""

    def __init__(self, max_count: int, do_evict_after: bool = False):
        self.max_count = max_count
        self.after = do_evict_after

    def evict_before(self, elements, size, window, ctx):
        return elements if self.after else elements[-self.max_count:]

    def evict_after(self, elements, size, window, ctx):
        return elements[-self.max_count:] if self.after else elements

    @staticmethod
    def of(max_count: int, do_evict_after: bool = False) -> "CountEvictor":
        return CountEvictor(max_count, do_evict_after)


class TimeEvictor(Evictor):
    """Keeps the elements whose timestamp is within ``window_size`` ms of the newest one."""

    def __init__(self, window_size: Any, do_evict_after: bool = False):
        self.size = to_millis(window_size, "window_size")
        self.after = do_evict_after

    def _evict(self, elements):
        if not elements:
            return elements
        newest = max(t for t, _ in elements)
        return [(t, v) for t, v in elements if t > newest - self.size]

    def evict_before(self, elements, size, window, ctx):
        return elements if self.after else self._evict(elements)

    def evict_after(self, elements, size, window, ctx):
        return self._evict(elements) if self.after else elements

    @staticmethod
    def of(window_size: Any, do_evict_after: bool = False) -> "TimeEvictor":
        return TimeEvictor(window_size, do_evict_after)


