"""A Prometheus endpoint for the JobManager, with Flink's metric names.

Started when ``metrics.reporter.prom.port`` is set. Metrics are read from the
JobManager's state at scrape time (a custom collector), named as Flink's
Prometheus reporter names them:

* ``flink_taskmanager_job_task_operator_numRecordsIn`` / ``..._numRecordsOut``
  (counters per job, task, operator and subtask), ``..._numLateRecordsDropped`` and ``..._numRecordsInPerSecond`` /
  ``..._numRecordsOutPerSecond``;
* ``flink_taskmanager_job_task_busyTimeMsPerSecond``,
  ``flink_taskmanager_job_task_backPressuredTimeMsPerSecond`` and
  ``flink_taskmanager_job_task_operator_currentInputWatermark``;
* ``flink_jobmanager_numRegisteredTaskManagers``, ``flink_jobmanager_taskSlotsTotal``,
  ``flink_jobmanager_taskSlotsAvailable``, ``flink_jobmanager_numRunningJobs``;
* ``flink_taskmanager_Status_ProcessTree_RssBytes`` and ``..._CpuPercent`` per TaskManager;
* ``flink_taskmanager_job_task_operator_<name>``: what a source reader or sink writer registered on
  its metric group (:mod:`emrflow.connectors.metric_group`), with the operator's labels plus one
  label per key-value group (``..._KafkaSourceReader_topic_partition_currentOffset{topic=,partition=}``).
"""

from __future__ import annotations


def _collector(jm):
    from prometheus_client.core import GaugeMetricFamily

    class JobManagerCollector:
        def collect(self):
            op_labels = ["job_id", "job_name", "task_name", "operator_name", "subtask_index"]
            rin = GaugeMetricFamily("flink_taskmanager_job_task_operator_numRecordsIn",
                                    "Records an operator subtask received", labels=op_labels)
            rout = GaugeMetricFamily("flink_taskmanager_job_task_operator_numRecordsOut",
                                     "Records an operator subtask emitted", labels=op_labels)
            rin_s = GaugeMetricFamily("flink_taskmanager_job_task_operator_numRecordsInPerSecond",
                                      "Records received per second", labels=op_labels)
            rout_s = GaugeMetricFamily("flink_taskmanager_job_task_operator_numRecordsOutPerSecond",
                                       "Records emitted per second", labels=op_labels)
            task_labels = ["job_id", "job_name", "task_name", "subtask_index"]
            busy = GaugeMetricFamily("flink_taskmanager_job_task_busyTimeMsPerSecond",
                                     "Milliseconds per second a subtask was busy", labels=task_labels)
            bp = GaugeMetricFamily("flink_taskmanager_job_task_backPressuredTimeMsPerSecond",
                                   "Milliseconds per second a subtask waited for credit",
                                   labels=task_labels)
            late = GaugeMetricFamily("flink_taskmanager_job_task_operator_numLateRecordsDropped",
                                     "Records an event-time window operator dropped as late",
                                     labels=op_labels)
            wm = GaugeMetricFamily("flink_taskmanager_job_task_operator_currentInputWatermark",
                                   "The subtask's input watermark (ms; Long.MIN_VALUE before the first)",
                                   labels=task_labels)
            # a connector metric named like one of the runtime's (numRecordsIn...) is left out
            connector: dict[str, GaugeMetricFamily | None] = {f.name: None for f in (rin, rout, rin_s, rout_s, late)}
            overview = jm.query.overview()
            for job in jm.query.jobs():
                for v in job.topology["vertices"]:
                    for i in range(v["parallelism"]):
                        m = job.metrics.get((v["id"], i), {})
                        r = job.rates.get((v["id"], i), {})
                        for o in v["operators"]:
                            labels = [job.id, job.name, v["name"], o["name"], str(i)]
                            a, b = m.get("operators", {}).get(o["id"], (0, 0))
                            ra, rb = r.get("operators", {}).get(o["id"], (0.0, 0.0))
                            rin.add_metric(labels, a)
                            late.add_metric(labels, m.get("late", {}).get(o["id"], 0))
                            rout.add_metric(labels, b)
                            rin_s.add_metric(labels, ra)
                            rout_s.add_metric(labels, rb)
                            _add_connector_metrics(connector, op_labels, labels,
                                                   m.get("connector", {}).get(o["id"], ()))
                        tl = [job.id, job.name, v["name"], str(i)]
                        busy.add_metric(tl, r.get("busy_ms_per_s", 0.0))
                        wm.add_metric(tl, m.get("watermark", -(2**63)))
                        bp.add_metric(tl, r.get("backpressured_ms_per_s", 0.0))
            tms = GaugeMetricFamily("flink_jobmanager_numRegisteredTaskManagers",
                                    "Registered TaskManagers", value=overview.taskmanagers)
            total = GaugeMetricFamily("flink_jobmanager_taskSlotsTotal", "Task slots",
                                      value=overview.slots_total)
            free = GaugeMetricFamily("flink_jobmanager_taskSlotsAvailable", "Free task slots",
                                     value=overview.slots_available)
            running = GaugeMetricFamily(
                "flink_jobmanager_numRunningJobs", "Jobs not yet ended",
                value=overview.jobs_running)
            rss = GaugeMetricFamily("flink_taskmanager_Status_ProcessTree_RssBytes",
                                    "Resident memory of a TaskManager and its slot processes",
                                    labels=["tm_id"])
            cpu = GaugeMetricFamily("flink_taskmanager_Status_ProcessTree_CpuPercent",
                                    "CPU use of a TaskManager and its slot processes",
                                    labels=["tm_id"])
            for tm in jm.query.taskmanagers():
                rss.add_metric([tm.id], tm.rss_bytes)
                cpu.add_metric([tm.id], tm.cpu_percent)
            yield from (rin, rout, rin_s, rout_s, late, busy, bp, wm, tms, total, free, running, rss, cpu)
            yield from (f for f in connector.values() if f is not None)

    return JobManagerCollector()


def _add_connector_metrics(families: dict, op_labels: list[str], labels: list[str], samples) -> None:
    """Add a connector's metric group samples (REST id, name, labels, value) to ``families`` by name."""
    from prometheus_client.core import GaugeMetricFamily
    for _rest, prom, extra, value in samples:
        if not isinstance(value, (int, float)):
            continue  # Prometheus takes numbers only (Flink's reporter skips other gauges too)
        name = f"flink_taskmanager_job_task_operator_{prom}"
        if name not in families:
            families[name] = GaugeMetricFamily(
                name, f"Connector metric {prom} (emrflow.connectors.metric_group)",
                labels=op_labels + [k for k, _ in extra])
        family = families[name]
        if family is not None:  # None: one of the runtime's own names
            family.add_metric(labels + [v for _, v in extra], value)


def start_prometheus_endpoint(jm, port: int, host: str = "127.0.0.1") -> int:
    """Serve ``/metrics`` for Prometheus on ``host:port`` (0 = any free port); returns the port."""
    from prometheus_client import start_http_server
    from prometheus_client.registry import CollectorRegistry
    registry = CollectorRegistry()
    registry.register(_collector(jm))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server.server_address[1]
