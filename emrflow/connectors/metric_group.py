"""A connector's metrics: Flink's operator metric group (``SourceReaderContext.metricGroup()``).

Every source reader and sink writer gets one :class:`MetricGroup` in
:attr:`SubtaskContext.metric_group <emrflow.connectors.base.SubtaskContext.metric_group>`, the
group of its operator subtask. A connector registers counters and gauges on it (or on sub-groups)
once, when it is created, and updates them as it works::

    sent = ctx.metric_group.counter("numRecordsSend")
    sent.inc(len(batch))
    lag = ctx.metric_group.add_group("shardId", shard).gauge("millisBehindLatest", lambda: lags.get(shard))

Updating costs one attribute addition: no lock, no system call. The values are read when the
task reports its metrics to the JobManager (every half second, and when the subtask ends), on
the slot's metrics thread: a gauge's function runs there, so it must only read (a dict lookup,
an attribute). The JobManager serves them on the REST API
(``/jobs/{jobid}/vertices/{vertexid}/metrics``, ``.../subtasks/metrics``) and the Prometheus
endpoint (``flink_taskmanager_job_task_operator_<name>``).

Names follow Flink's: ``add_group(name)`` adds a plain scope component, ``add_group(key, value)``
a key-value group. For the metric ``currentOffset`` of
``add_group("KafkaSourceReader").add_group("topic", "t").add_group("partition", "0")`` the REST
id is ``KafkaSourceReader.topic.t.partition.0.currentOffset`` and the Prometheus metric is
``flink_taskmanager_job_task_operator_KafkaSourceReader_topic_partition_currentOffset`` with the
labels ``topic="t"`` and ``partition="0"``, as Flink's Prometheus reporter names them.
"""

from __future__ import annotations

import re
from typing import Any, Callable

#: One reported value: (REST id, Prometheus name suffix, ((label, value), ...), value).
Sample = tuple[str, str, tuple[tuple[str, str], ...], Any]

_PROM_INVALID = re.compile(r"[^a-zA-Z0-9_]")


class Counter:
    """A count that only the connector's thread changes (Flink's ``Counter``)."""

    __slots__ = ("_count",)

    def __init__(self) -> None:
        self._count = 0

    def inc(self, n: int = 1) -> None:
        """Add ``n`` (default 1)."""
        self._count += n

    def dec(self, n: int = 1) -> None:
        """Subtract ``n`` (default 1)."""
        self._count -= n

    def get_count(self) -> int:
        """Return the current count."""
        return self._count


class Gauge:
    """A value read when metrics are reported (Flink's ``Gauge``): set, or computed by a function."""

    __slots__ = ("_value", "_fn")

    def __init__(self, fn: Callable[[], Any] | None = None) -> None:
        self._value: Any = None
        self._fn = fn

    def set(self, value: Any) -> None:
        """Set the value (a number; ``None`` means "no value now" and is not reported)."""
        self._value = value

    def get_value(self) -> Any:
        """Return the value: the function's result if the gauge has one, else the last one set."""
        return self._fn() if self._fn is not None else self._value


class MetricGroup:
    """A named scope of counters and gauges (Flink's ``MetricGroup``; PyFlink's method names).

    Args:
        scope: the group's scope components, ``(name, value or None)`` pairs; empty for the
            operator's own group. Create sub-groups with :meth:`add_group`.
    """

    def __init__(self, scope: tuple[tuple[str, str | None], ...] = (),
                 _registry: dict[tuple, tuple[str, str, tuple, Counter | Gauge]] | None = None):
        self._scope = scope
        # shared by a group and all its sub-groups: (scope, name) -> (rest id, prom name, labels, metric)
        self._registry: dict[tuple, tuple[str, str, tuple, Counter | Gauge]] = (
            {} if _registry is None else _registry)

    def add_group(self, name: str, value: Any = None) -> MetricGroup:
        """Return the sub-group ``name``, or the key-value group ``name``/``value`` (e.g. ``("partition", 3)``).

        Raises:
            ValueError: ``name`` is empty.
        """
        if not name:
            raise ValueError("a metric group's name must not be empty")
        return MetricGroup(self._scope + ((str(name), None if value is None else str(value)),), self._registry)

    def counter(self, name: str) -> Counter:
        """Return the counter ``name`` of this group, registering it the first time."""
        return self._register(name, Counter)  # type: ignore[return-value]

    def gauge(self, name: str, fn: Callable[[], Any] | None = None) -> Gauge:
        """Return the gauge ``name`` of this group, registering it the first time.

        Args:
            name: the metric's name.
            fn: ``() -> number or None``, read when metrics are reported (on another thread: it
                must only read); without it the gauge reports what :meth:`Gauge.set` set.
                ``None`` is not reported (a finished shard's lag, say).
        """
        return self._register(name, lambda: Gauge(fn))  # type: ignore[return-value]

    def _register(self, name: str, make: Callable[[], Counter | Gauge]) -> Counter | Gauge:
        if not name:
            raise ValueError("a metric's name must not be empty")
        key = (self._scope, name)
        entry = self._registry.get(key)
        if entry is None:
            rest = ".".join([p for k, v in self._scope for p in ((k,) if v is None else (k, v))] + [name])
            prom = "_".join(_PROM_INVALID.sub("_", k) for k, _ in self._scope + ((name, None),))
            labels = tuple((_PROM_INVALID.sub("_", k), v) for k, v in self._scope if v is not None)
            entry = self._registry[key] = (rest, prom, labels, make())
        return entry[3]

    def snapshot(self) -> list[Sample]:
        """Return every metric's current value as ``(REST id, Prometheus name, labels, value)``.

        Safe to call from another thread than the one updating the metrics. Gauges whose value
        is ``None``, or whose function raised, are left out.
        """
        out: list[Sample] = []
        for rest, prom, labels, metric in list(self._registry.values()):
            if isinstance(metric, Counter):
                out.append((rest, prom, labels, metric.get_count()))
                continue
            try:
                value = metric.get_value()
            except Exception:  # noqa: BLE001 - a broken gauge must not stop the metrics report
                continue
            if value is not None:
                out.append((rest, prom, labels, value))
        return out
