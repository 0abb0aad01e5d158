"""Restart strategies: whether and when a failed job restarts (Flink's ``RestartBackoffTimeStrategy``).

Chosen by ``restart-strategy.type`` with Flink's option names:

* ``none``: the first failure fails the job.
* ``fixed-delay``: up to ``restart-strategy.fixed-delay.attempts`` restarts, each after
  ``restart-strategy.fixed-delay.delay``.
* ``failure-rate``: restart after ``restart-strategy.failure-rate.delay`` unless more than
  ``max-failures-per-interval`` failures fell within ``failure-rate-interval``.
* ``exponential-delay``: pauses grow from ``initial-backoff`` by ``backoff-multiplier`` up to
  ``max-backoff``, with ``jitter-factor`` randomness; a run longer than
  ``reset-backoff-threshold`` resets them; at most ``attempts-before-reset-backoff`` restarts.

Unset, the type is ``exponential-delay`` when checkpointing is enabled and ``none`` otherwise,
as in Flink.
"""

from __future__ import annotations

import random
import time
from collections import deque
from typing import Any, Callable

from emrflow.config import Configuration


class RestartStrategy:
    """Decides, failure by failure, whether to restart and after how long.

    Args:
        config: the job's configuration (``restart-strategy.*``; durations in ms).
        clock: seconds, monotonic (tests may pass their own).
    """

    def __init__(self, config: Configuration, clock: Callable[[], float] = time.monotonic):
        kind = config.get("restart-strategy.type")
        if kind is None:
            kind = "exponential-delay" if config.get("execution.checkpointing.interval") else "none"
        self.kind = kind
        self._c = config
        self._clock = clock
        self.failures = 0
        self._times: deque[float] = deque()
        self._backoff_ms: float | None = None
        self._last_failure: float | None = None

    def _get(self, key: str) -> Any:
        return self._c.get(key)

    def on_failure(self) -> float | None:
        """Record a failure; return the pause before restarting in seconds, or ``None``: fail the job."""
        now = self._clock()
        self.failures += 1
        if self.kind == "none":
            return None
        if self.kind == "fixed-delay":
            if self.failures > int(self._get("restart-strategy.fixed-delay.attempts")):
                return None
            return int(self._get("restart-strategy.fixed-delay.delay")) / 1000.0
        if self.kind == "failure-rate":
            interval = int(self._get("restart-strategy.failure-rate.failure-rate-interval")) / 1000.0
            self._times.append(now)
            while self._times and self._times[0] < now - interval:
                self._times.popleft()
            if len(self._times) > int(self._get("restart-strategy.failure-rate.max-failures-per-interval")):
                return None
            return int(self._get("restart-strategy.failure-rate.delay")) / 1000.0
        # exponential-delay
        p = "restart-strategy.exponential-delay."
        initial = int(self._get(p + "initial-backoff"))
        reset = int(self._get(p + "reset-backoff-threshold")) / 1000.0
        if self._last_failure is not None and now - self._last_failure >= reset:
            self._backoff_ms, self.failures = None, 1
        self._last_failure = now
        if self.failures > int(self._get(p + "attempts-before-reset-backoff")):
            return None
        if self._backoff_ms is None:
            self._backoff_ms = float(initial)
        else:
            self._backoff_ms = min(self._backoff_ms * float(self._get(p + "backoff-multiplier")),
                                   float(self._get(p + "max-backoff")))
        jitter = float(self._get(p + "jitter-factor"))
        pause = self._backoff_ms * (1 + random.uniform(-jitter, jitter))
        return max(0.0, pause) / 1000.0

    def describe(self) -> str:
        """A short description for messages (``fixed-delay, 3 failures``)."""
        return f"{self.kind}, {self.failures} failure{'s' if self.failures != 1 else ''}"
