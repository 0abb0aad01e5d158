"""Apache Kafka sink (confluent-kafka, i.e. librdkafka): at-least-once or exactly-once.

Mirrors Flink's ``KafkaSink`` and its ``DeliveryGuarantee``:

- ``none``: records are handed to the producer; nothing waits for Kafka at checkpoints.
- ``at-least-once``: an idempotent producer; at every checkpoint barrier and at the end of the
  input the writer flushes and checks the delivery report of every record. A record Kafka
  did not take fails the job (:class:`~emrflow.errors.ConnectorError` naming the topic and
  the error) and is replayed after the restart; nothing is dropped silently. After a failover
  the records sent since the last completed checkpoint are sent again: duplicates, no loss.
- ``exactly-once``: Kafka transactions tied to checkpoints (Flink's two-phase commit). Records
  go into a transaction of the subtask's producer (``transactional.id`` =
  ``<transactional_id_prefix>-<subtask>``); at the barrier of checkpoint ``n`` the writer
  flushes it and adds a *checkpoint marker* to it (pre-commit), and commits it when the
  checkpoint completes (``notify_checkpoint_complete``). Consumers with
  ``isolation.level=read_committed`` see every record once.

Recovery after a failover, and what the Python client allows. Flink's Java sink resumes the
failed attempt's pre-committed transaction and commits it: it sets the producer id and epoch
of the old transaction into a new ``KafkaProducer`` by reflection. librdkafka offers no such
thing: a producer can only ``init_transactions()``, which *fences* the earlier producer of the
same ``transactional.id`` and aborts its open transaction. So this sink keeps what it cannot
resume:

1. **Write-ahead of the pending records.** The checkpoint state of a writer holds the
   serialized records (topic, key, value) of every checkpoint whose transaction is not
   committed yet; records of committed checkpoints are dropped from it.
2. **A checkpoint marker inside each transaction.** Every transaction also commits, with
   ``send_offsets_to_transaction``, the offset ``n`` (the checkpoint id) of partition 0 of the
   marker topic for a consumer group of its own, ``<transactional.id>@<job id>`` (it never
   consumes; its committed offset is only a record of which checkpoint's transaction
   committed, atomically with the records).
3. **Restore.** The new writer first fences the old producer (``init_transactions`` with the
   same ``transactional.id``: the open transaction is aborted, one being committed is
   finished), then reads the marker group's committed offset ``m`` (read_committed). A
   pending checkpoint ``n <= m`` committed before the failure and is skipped; one with
   ``n > m`` did not, and its stored records are produced again in a new transaction that
   carries marker ``n``. Either way each record of a completed checkpoint is committed once.

The guarantee: with ``exactly-once``, a ``read_committed`` consumer sees each record the job
emitted once, provided (a) the restore is from the latest completed checkpoint of the job or
its stop-with-savepoint (an older checkpoint replays records its successors committed, as in
Flink), (b) no other producer uses the same ``transactional.id`` (distinct prefixes for jobs
that run at the same time), (c) the marker group's offsets are not deleted or changed by
hand and outlive a restore (Kafka keeps an empty group's offsets ``offsets.retention.minutes``,
7 days by default), and (d) Kafka does not abort a transaction on its own: its
``transaction.timeout.ms`` (15 min by default here) must exceed the checkpoint interval plus the
longest time to a completed checkpoint. Consumers with ``read_uncommitted`` may see records of
aborted transactions. The cost: records wait for the checkpoint to become visible (end-to-end
latency ~ checkpoint interval), and the checkpoint state grows with the records of one
checkpoint interval (write-ahead; e.g. 10 k records/s of 200 bytes with 1 s checkpoints adds
about 2 MB per subtask to each checkpoint). Between a barrier and its completion the producer
holds the pre-committed transaction; the records that arrive meanwhile are kept in memory and
produced when it commits (one transaction per producer at a time).

Jobs without checkpoints (BATCH, or STREAMING without a checkpoint interval) with
``exactly-once`` write one transaction per subtask, committed when the whole job finished
(:meth:`SinkWriter.commit`); a failed job aborts it. The end-of-job commit is per subtask: if a
TaskManager dies between one subtask's commit and another's, the job fails with part of its
output committed (the file sinks' all-or-nothing commit record has no Kafka counterpart).

Example::

    from emrflow.connectors.kafka import KafkaSink
    events.sink_to(KafkaSink("clicks", bootstrap_servers="broker:9092",
                             key_serializer=lambda e: e["user"].encode(),
                             delivery_guarantee="exactly-once",
                             transactional_id_prefix="clicks-job")).uid("kafka-sink")
"""

from __future__ import annotations

import enum
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from emrflow.connectors import _kafka, _options
from emrflow.connectors.base import Sink, SinkWriter, SubtaskContext
from emrflow.errors import ConfigError, ConnectorError

log = logging.getLogger(__name__)

#: ``transaction.timeout.ms`` unless the properties set it: the broker's default
#: ``transaction.max.timeout.ms`` (librdkafka's own default, 60 s, is shorter than many
#: checkpoint intervals plus restarts).
DEFAULT_TRANSACTION_TIMEOUT_MS = 900_000
#: Attempts of a transactional call that Kafka answers with a retriable error.
_TXN_ATTEMPTS = 5


class DeliveryGuarantee(enum.Enum):
    """Flink's ``DeliveryGuarantee``: what a sink promises after failures."""

    NONE = "none"
    AT_LEAST_ONCE = "at-least-once"
    EXACTLY_ONCE = "exactly-once"

    @classmethod
    def parse(cls, value: "DeliveryGuarantee | str") -> "DeliveryGuarantee":
        """``"exactly-once"``, ``"EXACTLY_ONCE"``, ``DeliveryGuarantee.EXACTLY_ONCE`` ... to a member.

        Raises:
            ConfigError: not one of the three (the message names ``delivery_guarantee``).
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            for member in cls:
                if value.strip().lower().replace("_", "-") == member.value:
                    return member
        raise ConfigError(f"KafkaSink: unknown delivery_guarantee {value!r}; expected one of "
                          f"{', '.join(repr(m.value) for m in cls)}", key="delivery_guarantee")


def default_serializer(record: Any) -> bytes:
    """The default value serializer: ``bytes`` as they are, ``str`` as UTF-8, anything else
    as compact UTF-8 JSON (tuples become arrays)."""
    if isinstance(record, (bytes, bytearray)):
        return bytes(record)
    if isinstance(record, str):
        return record.encode("utf-8")
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _client():
    """confluent_kafka, imported on first use (an optional extra)."""
    return _kafka.client("KafkaSink")


class KafkaSink(Sink):
    """Writes records to Apache Kafka topics (Flink's ``KafkaSink``); see the module docs for the
    delivery guarantees and how exactly-once survives a failover.

    Args:
        topic: the topic every record goes to, or a function ``record -> topic name``. The
            topics must exist (a fixed topic is checked when each writer starts).
        bootstrap_servers: ``host:port[,host:port...]`` of the brokers; or set
            ``bootstrap.servers`` in ``properties``.
        key_serializer: ``record -> bytes | None``, the record's key (Kafka's default
            partitioner hashes it to pick the partition); ``None``: records without key.
        value_serializer: ``record -> bytes``; default :func:`default_serializer`.
        delivery_guarantee: ``"none"``, ``"at-least-once"`` (the default) or ``"exactly-once"``
            (or a :class:`DeliveryGuarantee`).
        transactional_id_prefix: exactly-once only: subtask ``i`` uses ``transactional.id``
            ``<prefix>-<i>``. Default ``emrflow-<job id>-<operator name>``; set your own when
            one job's output must be recovered by another job (restore from a savepoint) and
            keep it distinct between jobs that run at the same time.
        marker_topic: exactly-once only: an existing topic whose partition 0 carries the
            checkpoint markers (consumer-group offsets, no records are written to it);
            default ``topic``; required when ``topic`` is a function.
        properties: further librdkafka producer properties (``{"compression.type": "lz4",
            "linger.ms": 5}``), passed through as they are. The sink sets
            ``enable.idempotence=true`` (at-least-once, exactly-once) and
            ``transaction.timeout.ms`` (900000 ms unless given); ``transactional.id`` is
            the sink's own.
        flush_timeout_ms: how long a flush at a checkpoint or the end of the input waits for
            Kafka to acknowledge every record before the job fails, in ms.

    Raises:
        ConfigError: an option is missing or wrong; the message names it.
    """

    default_name = "Kafka Sink"

    def __init__(self, topic: str | Callable[[Any], str] | None = None, bootstrap_servers: str | None = None, *,
                 key_serializer: Callable[[Any], bytes | None] | None = None,
                 value_serializer: Callable[[Any], bytes] | None = None,
                 delivery_guarantee: DeliveryGuarantee | str = DeliveryGuarantee.AT_LEAST_ONCE,
                 transactional_id_prefix: str | None = None, marker_topic: str | None = None,
                 properties: dict | None = None, flush_timeout_ms: int = 120_000):
        if topic is None or topic == "":
            raise ConfigError("KafkaSink: topic is required: a topic name or a function record -> topic name",
                              key="topic")
        if not (isinstance(topic, str) or callable(topic)):
            raise ConfigError(f"KafkaSink: topic must be a topic name or a function record -> topic name, "
                              f"got {topic!r}", key="topic")
        owner = f"KafkaSink({topic!r})" if isinstance(topic, str) else "KafkaSink(topic=<function>)"
        props = _kafka.client_properties(owner, properties, bootstrap_servers, "producer")
        for name, fn in (("key_serializer", key_serializer), ("value_serializer", value_serializer)):
            _options.check_function(owner, name, fn, "record -> bytes")
        guarantee = DeliveryGuarantee.parse(delivery_guarantee)
        if not isinstance(flush_timeout_ms, int) or isinstance(flush_timeout_ms, bool) or flush_timeout_ms < 1:
            raise ConfigError(f"{owner}: flush_timeout_ms must be a positive int (ms), got {flush_timeout_ms!r}",
                              key="flush_timeout_ms")
        if "transactional.id" in props:
            raise ConfigError(f"{owner}: do not set transactional.id in properties; the sink sets it per "
                              "subtask (exactly-once: use transactional_id_prefix)", key="transactional.id")
        if guarantee is not DeliveryGuarantee.NONE:
            if str(props.get("enable.idempotence", "true")).lower() in ("false", "0"):
                raise ConfigError(f"{owner}: enable.idempotence=false contradicts delivery_guarantee "
                                  f"{guarantee.value!r}", key="enable.idempotence")
            props["enable.idempotence"] = True
        if guarantee is DeliveryGuarantee.EXACTLY_ONCE:
            props.setdefault("transaction.timeout.ms", DEFAULT_TRANSACTION_TIMEOUT_MS)
            if marker_topic is None:
                if not isinstance(topic, str):
                    raise ConfigError(f"{owner}: exactly-once with a topic function needs marker_topic, an "
                                      "existing topic whose partition 0 carries the checkpoint markers",
                                      key="marker_topic")
                marker_topic = topic
            if transactional_id_prefix is not None and (not isinstance(transactional_id_prefix, str)
                                                        or not transactional_id_prefix.strip()):
                raise ConfigError(f"{owner}: transactional_id_prefix must be a non-empty string, got "
                                  f"{transactional_id_prefix!r}", key="transactional_id_prefix")
        elif transactional_id_prefix is not None or marker_topic is not None:
            which = "transactional_id_prefix" if transactional_id_prefix is not None else "marker_topic"
            raise ConfigError(f"{owner}: {which} applies to delivery_guarantee 'exactly-once' only, "
                              f"not {guarantee.value!r}", key=which)
        self.topic = topic
        self.key_serializer = key_serializer
        self.value_serializer = value_serializer or default_serializer
        self.delivery_guarantee = guarantee
        self.transactional_id_prefix = transactional_id_prefix
        self.marker_topic = marker_topic
        self.properties = props
        self.flush_timeout_ms = flush_timeout_ms
        self.owner = owner

    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        """Return subtask ``ctx.subtask_index``'s writer; with exactly-once its producer fences the
        previous attempt's (``init_transactions``).

        Raises:
            ConfigError: confluent-kafka is not installed.
            ConnectorError: a fixed topic does not exist, or the brokers cannot be reached.
        """
        return KafkaWriter(self, ctx)


@dataclass
class _Pending:
    """Records of one checkpoint whose transaction is not committed yet."""

    checkpoint_id: int
    records: list                  # [(topic, key, value)], serialized
    in_transaction: bool = False   # produced into the producer's open (pre-committed) transaction


@dataclass
class _Deliveries:
    """Delivery reports since the last check."""

    failed: int = 0
    first: str = ""
    topics: set = field(default_factory=set)


class KafkaWriter(SinkWriter):
    """One subtask's writer of a :class:`KafkaSink` (see the module docs for the protocol).

    The counters are on the operator's metric group (``ctx.metric_group``; REST and Prometheus,
    see ``docs/connectors.md``).

    Attributes:
        records_written: counter ``numRecordsSend`` (Flink's): records Kafka acknowledged
            (delivery reports without error).
        records_failed: counter ``numRecordsOutErrors`` (Flink's): delivery reports with an error
            (the job fails at the next flush).
        records_recovered: counter ``numRecordsRecovered``: records of pending checkpoints
            produced again by :meth:`restore_state`.
    """

    def __init__(self, sink: KafkaSink, ctx: SubtaskContext):
        ck = _client()
        self._ck = ck
        self._sink = sink
        self._ctx = ctx
        self._guarantee = sink.delivery_guarantee
        self._eo = self._guarantee is DeliveryGuarantee.EXACTLY_ONCE
        self._checkpointing = bool(ctx.checkpointing)
        self._timeout_s = sink.flush_timeout_ms / 1000.0
        self._servers = sink.properties["bootstrap.servers"]
        self._marker_topic: str = sink.marker_topic or ""
        self._reports = _Deliveries()
        group = ctx.metric_group
        self.records_written = group.counter("numRecordsSend")
        self.records_failed = group.counter("numRecordsOutErrors")
        self.records_recovered = group.counter("numRecordsRecovered")
        self._pending: list[_Pending] = []
        self._current: list = []          # exactly-once with checkpoints: records since the last barrier
        self._current_produced = False    # ... all of them are in the open transaction
        self._in_txn = False
        self._closed = False
        conf = dict(sink.properties)
        self._tid = None
        if self._eo:
            prefix = sink.transactional_id_prefix or _default_prefix(ctx)
            self._tid = f"{prefix}-{ctx.subtask_index}"
            conf["transactional.id"] = self._tid
            self._group = f"{self._tid}@{ctx.job_id or secrets.token_hex(8)}"
            self._markers: dict[str, Any] = {}   # marker group -> Consumer (never subscribed)
        self._producer = ck.Producer(conf)
        self._check_topic()
        if self._eo:
            # fences the previous attempt's producer of this transactional.id: its open
            # transaction is aborted, one being committed is finished
            self._txn_call("init_transactions", self._producer.init_transactions, self._init_timeout_s())

    # -- helpers -------------------------------------------------------------------------
    def _init_timeout_s(self) -> float:
        return max(self._timeout_s, 60.0)

    def _resource(self, topic: str | None = None) -> str:
        return f"Kafka topic {topic or self._sink.topic!r}" if (topic or isinstance(self._sink.topic, str)) \
            else "Kafka topics of KafkaSink(topic=<function>)"

    def _check_topic(self) -> None:
        topic = self._sink.topic
        if not isinstance(topic, str):
            return
        try:
            md = self._producer.list_topics(topic, timeout=self._init_timeout_s())
        except self._ck.KafkaException as exc:
            raise ConnectorError(f"{self._resource()}: cannot reach the brokers at {self._servers}: {exc}",
                                 self._resource()) from exc
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            reason = t.error.str() if t is not None and t.error is not None else "not in the metadata"
            raise ConnectorError(f"{self._resource()} does not exist on {self._servers} ({reason}); "
                                 "create it first", self._resource())

    def _on_delivery(self, err, msg) -> None:
        if err is None:
            self.records_written.inc()
            return
        self.records_failed.inc()
        r = self._reports
        r.failed += 1
        r.topics.add(msg.topic())
        if not r.first:
            r.first = f"{err.str()} (topic {msg.topic()!r}, partition {msg.partition()})"

    def _serialize(self, records: list) -> list:
        sink, topic = self._sink, self._sink.topic
        key_of, value_of = sink.key_serializer, sink.value_serializer
        fixed = isinstance(topic, str)
        out = []
        for r in records:
            value = value_of(r)
            if value is not None and not isinstance(value, (bytes, bytearray)):
                raise TypeError(f"{sink.owner}: value_serializer returned {type(value).__name__}, expected "
                                f"bytes (record {r!r:.200})")
            key = key_of(r) if key_of is not None else None
            if key is not None and not isinstance(key, (bytes, bytearray)):
                raise TypeError(f"{sink.owner}: key_serializer returned {type(key).__name__}, expected "
                                f"bytes or None (record {r!r:.200})")
            t = topic if isinstance(topic, str) else topic(r)
            if not fixed and (not isinstance(t, str) or not t):
                raise TypeError(f"{sink.owner}: the topic function returned {t!r}, expected a topic name "
                                f"(record {r!r:.200})")
            out.append((t, key, value))
        return out

    def _produce(self, producer, records: list) -> None:
        produce, poll = producer.produce, producer.poll
        cb = self._on_delivery
        for t, key, value in records:
            while True:
                try:
                    produce(t, value, key, on_delivery=cb)
                    break
                except BufferError:  # librdkafka's queue is full: wait for deliveries (backpressure)
                    poll(0.05)
        poll(0)

    def _flush(self, producer=None) -> None:
        """Wait until Kafka acknowledged every record produced; raise if one was refused.

        Raises:
            ConnectorError: a delivery failed, or records stayed unacknowledged longer than
                ``flush_timeout_ms``.
        """
        producer = producer or self._producer
        left = producer.flush(self._timeout_s)
        r = self._reports
        if r.failed:
            self._reports = _Deliveries()
            topics = ", ".join(repr(t) for t in sorted(r.topics))
            raise ConnectorError(f"Kafka did not take {r.failed} record(s) of subtask "
                                 f"{self._ctx.subtask_index} (topics {topics}): {r.first}",
                                 self._resource(sorted(r.topics)[0]))
        if left:
            raise ConnectorError(f"{left} record(s) of subtask {self._ctx.subtask_index} not acknowledged by "
                                 f"Kafka ({self._servers}) within flush_timeout_ms={self._sink.flush_timeout_ms}",
                                 self._resource())

    def _txn_call(self, what: str, call: Callable, *args) -> None:
        """A transactional API call, retried while Kafka says the error is retriable.

        Raises:
            ConnectorError: a fatal or abortable error, or retries exhausted.
        """
        for attempt in range(1, _TXN_ATTEMPTS + 1):
            try:
                call(*args)
                return
            except self._ck.KafkaException as exc:
                err = exc.args[0] if exc.args else None
                retriable = err is not None and hasattr(err, "retriable") and err.retriable()
                if not retriable or attempt == _TXN_ATTEMPTS:
                    raise ConnectorError(f"Kafka transaction {self._tid!r} ({self._servers}): {what} failed: "
                                         f"{exc}", self._resource()) from exc
                time.sleep(0.1 * attempt)

    def _marker_consumer(self, group: str):
        c = self._markers.get(group)
        if c is None:
            c = self._ck.Consumer({"bootstrap.servers": self._servers, "group.id": group,
                                   "enable.auto.commit": False, "isolation.level": "read_committed"})
            self._markers[group] = c
        return c

    def _commit_with_marker(self, producer, checkpoint_id: int | None, group: str, marker_topic: str) -> None:
        """Flush, add the marker ``checkpoint_id`` (if any) and commit the open transaction."""
        self._flush(producer)
        if checkpoint_id is not None:
            self._add_marker(producer, checkpoint_id, group, marker_topic)
        self._txn_call("commit_transaction", producer.commit_transaction, self._timeout_s)

    def _add_marker(self, producer, checkpoint_id: int, group: str, marker_topic: str) -> None:
        tp = self._ck.TopicPartition(marker_topic, 0, checkpoint_id)
        meta = self._marker_consumer(group).consumer_group_metadata()
        self._txn_call("send_offsets_to_transaction", producer.send_offsets_to_transaction, [tp], meta,
                       self._timeout_s)

    def _begin(self) -> None:
        if not self._in_txn:
            self._txn_call("begin_transaction", self._producer.begin_transaction)
            self._in_txn = True

    # -- records -------------------------------------------------------------------------
    def write_batch(self, records: list) -> None:
        """Serialize and produce ``records`` (exactly-once: into the open transaction, or kept in
        memory while a pre-committed transaction waits for its checkpoint to complete).

        Raises:
            TypeError: a serializer or the topic function returned something else than expected.
            ConnectorError: Kafka refused a record produced earlier (at-least-once fails fast).
        """
        rows = self._serialize(records)
        if not self._eo:
            self._produce(self._producer, rows)
            if self._reports.failed:
                self._flush()
            return
        if not self._checkpointing:
            self._begin()
            self._produce(self._producer, rows)
            return
        self._current.extend(rows)
        if not self._pending:
            self._begin()
            self._produce(self._producer, rows)
            self._current_produced = True

    # -- checkpoints -----------------------------------------------------------------------
    def snapshot_state(self, checkpoint_id: int) -> Any:
        """Pre-commit at the barrier of checkpoint ``checkpoint_id``.

        At-least-once: flush and check every delivery report; no state. Exactly-once: flush the
        open transaction and add the checkpoint marker to it (it is now pending on this
        checkpoint); the state holds the records of every pending checkpoint (write-ahead).

        Raises:
            ConnectorError: a delivery failed or timed out.
        """
        if not self._eo:
            if self._guarantee is DeliveryGuarantee.AT_LEAST_ONCE:
                self._flush()
            return None
        if self._current:
            p = _Pending(checkpoint_id, self._current)
            if self._current_produced:
                self._flush()
                self._add_marker(self._producer, checkpoint_id, self._group, self._marker_topic)
                p.in_transaction = True
            self._pending.append(p)
        self._current, self._current_produced = [], False
        return {"transactional_id": self._tid, "group": self._group, "marker_topic": self._marker_topic,
                "pending": [(p.checkpoint_id, p.records) for p in self._pending]}

    def _commit_pending(self, upto: int | None) -> None:
        """Commit the transactions of pending checkpoints ``<= upto`` (all when ``None``), in order."""
        keep = []
        for p in self._pending:
            if upto is not None and p.checkpoint_id > upto:
                keep.append(p)
                continue
            if not p.in_transaction:
                self._begin()
                self._produce(self._producer, p.records)
                self._flush()
                self._add_marker(self._producer, p.checkpoint_id, self._group, self._marker_topic)
            self._txn_call("commit_transaction", self._producer.commit_transaction, self._timeout_s)
            self._in_txn = False
        self._pending = keep

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Commit the transactions of checkpoints up to ``checkpoint_id``; then open the next one
        for the records that waited meanwhile (exactly-once; otherwise nothing to do)."""
        if not self._eo or not self._checkpointing or self._closed:
            return
        self._commit_pending(checkpoint_id)
        if not self._pending and self._current and not self._current_produced:
            self._begin()
            self._produce(self._producer, self._current)
            self._current_produced = True

    def restore_state(self, states: list) -> None:
        """Commit exactly once what the restored checkpoint held pending.

        For each former subtask's state: fence its producer (``init_transactions`` with its
        ``transactional.id``), read its marker group's committed offset ``m``, and produce again,
        each in a transaction with its marker, the stored records of pending checkpoints ``> m``.

        Raises:
            ConnectorError: Kafka refused the recovery (the restore fails and is retried).
        """
        if not self._eo:
            return
        for st in states:
            if not st or not st.get("pending"):
                continue
            tid, group, marker_topic = st["transactional_id"], st["group"], st["marker_topic"]
            if tid == self._tid:
                producer = self._producer
            else:
                producer = self._ck.Producer({**self._sink.properties, "transactional.id": tid})
                self._txn_call("init_transactions", producer.init_transactions, self._init_timeout_s())
            tp = self._ck.TopicPartition(marker_topic, 0)
            try:
                got = self._marker_consumer(group).committed([tp], timeout=self._init_timeout_s())
            except self._ck.KafkaException as exc:
                raise ConnectorError(f"Kafka: cannot read the checkpoint marker of group {group!r} on "
                                     f"{marker_topic!r}: {exc}", self._resource(marker_topic)) from exc
            committed = got[0].offset if got and got[0].error is None and got[0].offset >= 0 else -1
            for cid, records in sorted(st["pending"], key=lambda x: x[0]):
                if cid <= committed:
                    continue  # its transaction committed before the failure
                self._txn_call("begin_transaction", producer.begin_transaction)
                self._produce(producer, records)
                self._commit_with_marker(producer, cid, group, marker_topic)
                self.records_recovered.inc(len(records))
                log.info("%s: recovered checkpoint %d of %s: %d records produced again (marker was %d)",
                         self._sink.owner, cid, tid, len(records), committed)
            if producer is not self._producer and hasattr(producer, "close"):
                producer.close()

    # -- end of the input ------------------------------------------------------------------
    def prepare_commit(self) -> Any:
        """Flush at the end of the input and check every delivery report (all guarantees but none).

        Raises:
            ConnectorError: a delivery failed or timed out.
        """
        if self._guarantee is not DeliveryGuarantee.NONE:
            self._flush()
        return None

    def commit(self) -> None:
        """The whole job finished: commit what is open or pending (exactly-once), then close."""
        if self._closed:
            return
        if self._eo:
            if self._checkpointing:
                self._commit_pending(None)
                if self._current and not self._current_produced:
                    self._begin()
                    self._produce(self._producer, self._current)
                self._current, self._current_produced = [], False
            if self._in_txn:
                self._flush()
                self._txn_call("commit_transaction", self._producer.commit_transaction, self._timeout_s)
                self._in_txn = False
        elif self._guarantee is DeliveryGuarantee.AT_LEAST_ONCE:
            self._flush()
        else:
            self._producer.flush(self._timeout_s)
        self._close()

    def abort(self, discard_pending: bool = True) -> None:
        """Abort the open transaction (exactly-once) and close; records of pending checkpoints stay in
        their checkpoint's state, from which a restore commits them."""
        if self._closed:
            return
        if self._eo and self._in_txn:
            try:
                self._producer.abort_transaction(5.0)
            except Exception:  # noqa: BLE001 - fenced or broker gone: the next init_transactions aborts it
                pass
        elif not self._eo:
            try:
                self._producer.purge()
            except Exception:  # noqa: BLE001 - best effort
                pass
        self._in_txn = False
        self._close()

    def _close(self) -> None:
        self._closed = True
        for c in getattr(self, "_markers", {}).values():
            try:
                c.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
        close = getattr(self._producer, "close", None)  # confluent-kafka >= 2.11; before: on garbage collection
        if close is not None:
            try:
                close()
            except Exception:  # noqa: BLE001 - best effort
                pass
        log.info("%s subtask %d: %d records acknowledged, %d recovered", self._sink.owner,
                 self._ctx.subtask_index, self.records_written.get_count(), self.records_recovered.get_count())


def _default_prefix(ctx: SubtaskContext) -> str:
    """``emrflow-<job id>-<operator name>`` (characters outside ``[A-Za-z0-9._-]`` become ``_``)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", ctx.operator_name or "sink")
    return f"emrflow-{ctx.job_id or secrets.token_hex(8)}-{name}"
