"""Apache Kafka source (confluent-kafka, i.e. librdkafka) as a split source (Flink's ``KafkaSource``).

One split per topic partition (:class:`KafkaPartitionSplit`, ``split_id`` ``"<topic>-<partition>"``)
carrying the *next offset to read*. The split enumerator (in the JobManager) discovers the
partitions of the given topics, or of every topic whose name matches a pattern, when the job
starts and then every ``partition_discovery_interval_ms``: a partition added to a topic (or a
new topic that matches the pattern) while the job runs is picked up and read from its
earliest offset, as Flink's ``KafkaSourceEnumerator`` does. Partitions of a topic are
assigned round robin over the readers, starting at a reader that depends on the topic's
name (Flink's placement), so the partitions of one topic spread evenly.

Every reader (one per source subtask) has one ``Consumer`` with manual ``incremental_assign``
at the split's offset: no consumer-group membership, no rebalancing. It returns records
per partition, so event time is tracked per partition (a subtask's watermark is the minimum
over its partitions; ``WatermarkStrategy.with_idleness`` keeps an idle partition from
holding it back).

Start positions (``starting_offsets``), resolved by the enumerator when it discovers a
partition at the start of the job, so a checkpoint always holds a concrete offset:
``"earliest"`` (the partition's low watermark), ``"latest"`` (its high watermark: only
records produced after the start), an ``int`` timestamp in ms since the epoch (the first
record whose timestamp is at or after it, ``offsets_for_times``; the end of the partition if
none), or ``"committed"`` (the consumer group's committed offset, else ``auto.offset.reset``).

Exactly once: the offsets are part of the job's checkpoints. A reader's
:meth:`~KafkaSplitReader.snapshot_state` holds the next offset of each of its partitions; the
enumerator's state holds the partitions discovered and not yet assigned. After a failover the
job resumes at the offsets of the last completed checkpoint, so with an exactly-once sink each
record read contributes once. The consumer group's committed offsets play no part in this:
with ``commit_offsets_on_checkpoint`` (Flink's ``commit.offsets.on.checkpoint``, on by
default when a ``group_id`` is given) each reader commits its checkpointed offsets when the
checkpoint completes, only so monitoring tools see the group's lag. A failed commit is logged
and counted, it does not fail the job.

A bounded mode: ``stopping_offsets="latest"`` reads every partition that exists at the start
up to its high watermark at the start and then ends (Flink's ``setBounded(latest())``; no
partition discovery).

Records: each value is turned into a record by ``deserializer`` (default: UTF-8 text). A
value it cannot turn (it raises) is a *bad record*, handled like a bad CSV line: skipped and
reported with ``<topic>-<partition>:<offset>`` (``ctx.report_bad_record``), or fatal
(:class:`~emrflow.errors.BadRecordError`) with ``fail_on_bad_records=True`` or
``emrflow.bad-records.fail``. With ``with_metadata=True`` every record is a
:class:`KafkaRecord` (topic, partition, offset, timestamp, key, value) and a watermark
strategy reads its Kafka timestamp::

    from emrflow.api.eventtime import Duration, WatermarkStrategy
    from emrflow.connectors.kafka_source import KafkaSource

    source = KafkaSource(["ratings"], bootstrap_servers="broker:9092", group_id="top-movies",
                         starting_offsets="earliest", with_metadata=True)
    ratings = env.from_source(source, WatermarkStrategy
                              .for_bounded_out_of_orderness(Duration.of_seconds(5))
                              .with_timestamp_assigner(lambda r: r.timestamp))
"""

from __future__ import annotations

import copy
import logging
import re
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

from emrflow.connectors import _kafka, _options
from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.splits import (
    Boundedness,
    SplitEnumerator,
    SplitEnumeratorContext,
    SplitReader,
    SplitRecords,
    SplitSource,
)
from emrflow.errors import BadRecordError, ConfigError, ConnectorError

log = logging.getLogger(__name__)

__all__ = ["KafkaSource", "KafkaPartitionSplit", "KafkaRecord", "KafkaSplitEnumerator", "KafkaSplitReader",
           "utf8_deserializer", "partition_owner"]

#: Flink's default ``partition.discovery.interval.ms`` of an unbounded KafkaSource (5 minutes).
DEFAULT_DISCOVERY_INTERVAL_MS = 300_000
_START_NAMES = ("earliest", "latest", "committed")


def utf8_deserializer(value: bytes | None) -> str:
    """The default deserializer: the value as UTF-8 text.

    Raises:
        ValueError: the value is null (a tombstone) or not valid UTF-8.
    """
    if value is None:
        raise ValueError("the value is null (a tombstone); pass a deserializer that accepts None")
    return value.decode("utf-8")


class KafkaRecord(NamedTuple):
    """A record with its Kafka metadata (``KafkaSource(..., with_metadata=True)``).

    Attributes:
        topic: the topic.
        partition: the partition.
        offset: the record's offset in its partition.
        timestamp: the record's Kafka timestamp in ms since the epoch (``CreateTime`` as the
            producer set it, or ``LogAppendTime``), ``None`` if it has none.
        key: the raw key, ``None`` if the record has none.
        value: the deserialized value.
    """

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: Any


@dataclass
class KafkaPartitionSplit:
    """One topic partition and where reading stands (Flink's ``KafkaPartitionSplit``).

    Attributes:
        topic: the topic.
        partition: the partition number.
        offset: the next offset to read (>= 0).
        stopping_offset: bounded mode: the offset at which the split is finished (exclusive);
            ``None``: read forever.
    """

    topic: str
    partition: int
    offset: int
    stopping_offset: int | None = None

    @property
    def split_id(self) -> str:
        """``"<topic>-<partition>"``."""
        return f"{self.topic}-{self.partition}"

    def is_finished(self) -> bool:
        return self.stopping_offset is not None and self.offset >= self.stopping_offset


def partition_owner(topic: str, partition: int, parallelism: int) -> int:
    """The reader a partition is assigned to: round robin over the partitions of a topic,
    starting at a reader given by a stable hash (CRC-32) of the topic's name (as Flink's
    ``KafkaSourceEnumerator.getSplitOwner``, with CRC-32 in place of Java's ``hashCode``).

    Args:
        topic: the topic.
        partition: the partition number.
        parallelism: number of readers (> 0).

    Returns:
        A subtask index in ``[0, parallelism)``.
    """
    return (zlib.crc32(topic.encode("utf-8")) + partition) % parallelism


def _client():
    """confluent_kafka, imported on first use (an optional extra)."""
    return _kafka.client("KafkaSource")


class KafkaSource(SplitSource):
    """Reads Kafka topics, one split per partition (Flink's ``KafkaSource``); see the module docs.

    Args:
        topics: a topic name or a list of names; the topics must exist when the job starts.
            Give either ``topics`` or ``topic_pattern``.
        bootstrap_servers: ``host:port[,host:port...]`` of the brokers; or set
            ``bootstrap.servers`` in ``properties``.
        topic_pattern: a regular expression (``str`` or compiled) that a topic's whole name
            must match (``re.fullmatch``); topics starting with ``__`` (Kafka's internal ones)
            never match. New matching topics are found by partition discovery.
        group_id: the consumer group whose offsets are committed on checkpoints (monitoring
            only) and read by ``starting_offsets="committed"``; ``None``: no group (no commits).
        starting_offsets: ``"earliest"`` (default), ``"latest"``, ``"committed"`` (needs
            ``group_id``; a partition without a committed offset starts as
            ``auto.offset.reset`` says, default earliest), or an ``int``: a timestamp in ms
            since the epoch. Applies to the partitions found when the job starts; partitions
            found later by discovery are read from their earliest offset.
        stopping_offsets: ``None`` (unbounded, the default) or ``"latest"``: bounded, each
            partition is read up to its high watermark when the job starts.
        deserializer: ``value bytes (or None) -> record``; default :func:`utf8_deserializer`.
            If it raises, the record is a bad record (see ``fail_on_bad_records``).
        with_metadata: emit :class:`KafkaRecord` tuples (topic, partition, offset, timestamp
            in ms, key, deserialized value) rather than the deserialized values alone.
        fail_on_bad_records: ``True``: a bad record fails the job with
            :class:`~emrflow.errors.BadRecordError` naming ``<topic>-<partition>`` and the
            offset; ``False``: it is skipped and reported; ``None`` (default): as the
            ``emrflow.bad-records.fail`` option says.
        partition_discovery_interval_ms: how often the enumerator looks for new partitions
            and topics, in ms; ``0`` or less: only at the start. Default 300000 (5 min,
            Flink's). Ignored when bounded.
        commit_offsets_on_checkpoint: commit each completed checkpoint's offsets to
            ``group_id`` (Flink's ``commit.offsets.on.checkpoint``), for monitoring only.
        max_poll_records: records fetched from the consumer per poll at most (>= 1).
        request_timeout_ms: how long metadata and offset look-ups wait for the brokers before
            the job fails, in ms.
        properties: further librdkafka consumer properties (``{"isolation.level":
            "read_uncommitted", "fetch.max.bytes": 1048576}``), passed through. The source
            sets ``enable.auto.commit=false`` and assigns partitions itself; librdkafka's
            default ``isolation.level`` is ``read_committed`` (records of aborted or open
            transactions are not read). ``auto.offset.reset`` (default ``earliest``) applies
            when an offset to resume from no longer exists (deleted by retention).

    Raises:
        ConfigError: an option is missing or wrong; the message names it.
    """

    default_name = "Kafka Source"

    def __init__(self, topics: str | Sequence[str] | None = None, bootstrap_servers: str | None = None, *,
                 topic_pattern: str | re.Pattern | None = None, group_id: str | None = None,
                 starting_offsets: str | int = "earliest", stopping_offsets: str | None = None,
                 deserializer: Callable[[bytes | None], Any] | None = None, with_metadata: bool = False,
                 fail_on_bad_records: bool | None = None,
                 partition_discovery_interval_ms: int = DEFAULT_DISCOVERY_INTERVAL_MS,
                 commit_offsets_on_checkpoint: bool = True, max_poll_records: int = 500,
                 request_timeout_ms: int = 30_000, properties: dict | None = None):
        if (topics is None) == (topic_pattern is None):
            raise ConfigError("KafkaSource: give either topics (a name or a list of names) or topic_pattern "
                              "(a regular expression)", key="topics")
        if topics is not None:
            names = [topics] if isinstance(topics, str) else list(topics) if isinstance(topics, (list, tuple)) \
                else None
            if not names or not all(isinstance(t, str) and t for t in names):
                raise ConfigError(f"KafkaSource: topics must be a topic name or a non-empty list of names, "
                                  f"got {topics!r}", key="topics")
            self.topics: list[str] | None = sorted(set(names))
            self.topic_pattern: str | None = None
            owner = f"KafkaSource({self.topics[0]!r})" if len(self.topics) == 1 else f"KafkaSource({self.topics!r})"
        else:
            pattern = topic_pattern.pattern if isinstance(topic_pattern, re.Pattern) else topic_pattern
            if not isinstance(pattern, str) or not pattern:
                raise ConfigError(f"KafkaSource: topic_pattern must be a regular expression, got {topic_pattern!r}",
                                  key="topic_pattern")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"KafkaSource: topic_pattern {pattern!r} is not a valid regular expression: "
                                  f"{exc}", key="topic_pattern") from None
            self.topics, self.topic_pattern = None, pattern
            owner = f"KafkaSource(topic_pattern={pattern!r})"
        props = _kafka.client_properties(owner, properties, bootstrap_servers, "consumer")
        if "group.id" in props:
            if group_id is not None and group_id != props["group.id"]:
                raise ConfigError(f"{owner}: group_id {group_id!r} and group.id {props['group.id']!r} in "
                                  "properties differ; give one", key="group_id")
            group_id = props.pop("group.id")
        if group_id is not None and (not isinstance(group_id, str) or not group_id):
            raise ConfigError(f"{owner}: group_id must be a non-empty string or None, got {group_id!r}",
                              key="group_id")
        for key in ("enable.auto.commit", "enable.auto.offset.store"):
            if str(props.get(key, "false")).lower() not in ("false", "0"):
                raise ConfigError(f"{owner}: {key} must stay false: offsets live in checkpoints and are "
                                  "committed on checkpoint completion (commit_offsets_on_checkpoint)", key=key)
        reset = str(props.get("auto.offset.reset", "earliest")).lower()
        if reset not in ("earliest", "smallest", "beginning", "latest", "largest", "end", "error"):
            raise ConfigError(f"{owner}: auto.offset.reset must be 'earliest', 'latest' or 'error', got "
                              f"{props['auto.offset.reset']!r}", key="auto.offset.reset")
        props.setdefault("auto.offset.reset", "earliest")
        if isinstance(starting_offsets, bool) or not (
                (isinstance(starting_offsets, int) and starting_offsets >= 0)
                or (isinstance(starting_offsets, str) and starting_offsets.lower() in _START_NAMES)):
            raise ConfigError(f"{owner}: starting_offsets must be 'earliest', 'latest', 'committed' or a "
                              f"timestamp in ms since the epoch (int >= 0), got {starting_offsets!r}",
                              key="starting_offsets")
        if isinstance(starting_offsets, str):
            starting_offsets = starting_offsets.lower()
        if starting_offsets == "committed" and group_id is None:
            raise ConfigError(f"{owner}: starting_offsets='committed' needs group_id (the consumer group whose "
                              "offsets to start from)", key="group_id")
        if stopping_offsets is not None and (not isinstance(stopping_offsets, str)
                                             or stopping_offsets.lower() != "latest"):
            raise ConfigError(f"{owner}: stopping_offsets must be None (unbounded) or 'latest' (bounded: stop "
                              f"at the high watermarks at the start), got {stopping_offsets!r}",
                              key="stopping_offsets")
        _options.check_function(owner, "deserializer", deserializer, "bytes -> record")
        _options.check_optional_bool(owner, "fail_on_bad_records", fail_on_bad_records)
        for name, value, low in (("partition_discovery_interval_ms", partition_discovery_interval_ms, None),
                                 ("max_poll_records", max_poll_records, 1),
                                 ("request_timeout_ms", request_timeout_ms, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low):
                unit = "" if name == "max_poll_records" else " (ms)"
                raise ConfigError(f"{owner}: {name} must be an int{unit}"
                                  f"{'' if low is None else f' >= {low}'}, got {value!r}", key=name)
        self.bootstrap_servers = props["bootstrap.servers"]
        self.group_id = group_id
        self.starting_offsets = starting_offsets
        self.stopping_offsets = None if stopping_offsets is None else "latest"
        self.boundedness = Boundedness.CONTINUOUS_UNBOUNDED if stopping_offsets is None else Boundedness.BOUNDED
        self.deserializer = deserializer or utf8_deserializer
        self.with_metadata = bool(with_metadata)
        self.fail_on_bad_records = fail_on_bad_records
        self.partition_discovery_interval_ms = partition_discovery_interval_ms
        self.commit_offsets_on_checkpoint = bool(commit_offsets_on_checkpoint)
        self.max_poll_records = max_poll_records
        self.request_timeout_ms = request_timeout_ms
        self.properties = props
        self.owner = owner

    # -- SplitSource -----------------------------------------------------------------------
    def create_enumerator(self, ctx: SplitEnumeratorContext) -> "KafkaSplitEnumerator":
        """Return a fresh enumerator; it discovers the partitions in :meth:`~KafkaSplitEnumerator.start`."""
        return KafkaSplitEnumerator(self, ctx)

    def restore_enumerator(self, ctx: SplitEnumeratorContext, state: Any) -> "KafkaSplitEnumerator":
        """Return an enumerator continuing from its checkpointed ``state`` (partitions discovered,
        splits not yet assigned)."""
        return KafkaSplitEnumerator(self, ctx, state)

    def create_split_reader(self, ctx: SubtaskContext) -> "KafkaSplitReader":
        """Return subtask ``ctx.subtask_index``'s reader (its consumer opens in ``start``)."""
        return KafkaSplitReader(self, ctx)

    def consumer_config(self, purpose: str) -> dict:
        """The librdkafka configuration of a consumer of this source (``purpose`` names its client.id)."""
        conf = dict(self.properties)
        conf["group.id"] = self.group_id or "emrflow-kafka-source"  # librdkafka needs one; never joined
        conf["enable.auto.commit"] = False
        conf["enable.auto.offset.store"] = False
        conf.setdefault("client.id", f"emrflow-{purpose}")
        return conf


class KafkaSplitEnumerator(SplitEnumerator):
    """Discovers the partitions of a :class:`KafkaSource` and assigns them (Flink's ``KafkaSourceEnumerator``).

    State (checkpointed): the ``(topic, partition)`` pairs discovered so far and the splits not
    assigned yet. Discovery runs in :meth:`start` and then periodically in a runtime thread; a
    lock guards the state.
    """

    def __init__(self, source: KafkaSource, ctx: SplitEnumeratorContext, state: Any = None):
        self._source = source
        self._ctx = ctx
        self._lock = threading.RLock()
        self._consumer = None
        self.discovered: set[tuple[str, int]] = set()
        self.pending: dict[str, KafkaPartitionSplit] = {}   # split id -> split, not assigned yet
        self._initial_done = False
        self._signalled: set[int] = set()
        if state is not None:
            self.discovered = {(t, int(p)) for t, p in state["discovered"]}
            self.pending = {s.split_id: s for s in state["pending"]}
            self._initial_done = bool(state["initial_done"])

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Discover the partitions (the first time: resolve ``starting_offsets``); schedule discovery.

        Raises:
            ConnectorError: the brokers cannot be reached, or a named topic does not exist.
        """
        self.discover()
        interval = self._source.partition_discovery_interval_ms
        if self._source.boundedness is Boundedness.CONTINUOUS_UNBOUNDED and interval > 0:
            self._ctx.call_periodically(self.discover, interval)

    def add_reader(self, subtask: int) -> None:
        """Assign the reader its pending splits (bounded: then signal that no more come)."""
        with self._lock:
            self._signalled.discard(subtask)
            self._assign_pending()

    def add_splits_back(self, splits: list, subtask: int) -> None:
        """Splits of a failed reader come back: assign them again (to their owners)."""
        with self._lock:
            for s in splits:
                self.pending[s.split_id] = s
            self._assign_pending()

    def snapshot_state(self, checkpoint_id: int) -> dict:
        """``{"discovered": [(topic, partition)], "pending": [KafkaPartitionSplit], "initial_done": bool}``."""
        with self._lock:
            return {"discovered": sorted(self.discovered), "pending": [copy.copy(s) for s in self.pending.values()],
                    "initial_done": self._initial_done}

    def close(self) -> None:
        """Close the metadata consumer."""
        with self._lock:
            consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()

    # -- discovery -------------------------------------------------------------------------
    def discover(self) -> None:
        """Look for partitions not seen before, make splits of them and assign them.

        Partitions found by the first discovery start at ``starting_offsets``; later ones at
        their earliest offset. Runs in :meth:`start` and every ``partition_discovery_interval_ms``.

        Raises:
            ConnectorError: the brokers cannot be reached; at the first discovery also a
                named topic that does not exist.
        """
        source = self._source
        if source.boundedness is Boundedness.BOUNDED and self._initial_done:
            with self._lock:   # bounded: the partitions of the start only (a restored enumerator)
                self._assign_pending()
            return
        topics = self._list_partitions()
        with self._lock:
            new = sorted((t, p) for t, parts in topics.items() for p in parts if (t, p) not in self.discovered)
            initial = not self._initial_done
        if new:
            offsets = self._start_offsets(new, source.starting_offsets if initial else "earliest")
            stops = self._end_offsets(new) if source.boundedness is Boundedness.BOUNDED else {}
            with self._lock:
                for tp in new:
                    if tp in self.discovered:
                        continue
                    split = KafkaPartitionSplit(tp[0], tp[1], offsets[tp], stops.get(tp))
                    self.discovered.add(tp)
                    self.pending[split.split_id] = split
                log.info("%s: discovered %d partition(s): %s", source.owner, len(new),
                         ", ".join(f"{t}-{p}" for t, p in new[:20]) + (" ..." if len(new) > 20 else ""))
        with self._lock:
            self._initial_done = True
            self._assign_pending()

    def _assign_pending(self) -> None:
        """Hand pending splits to their owners that are registered (lock held)."""
        p = self._ctx.parallelism
        registered = self._ctx.registered_readers()
        assignment: dict[int, list] = {}
        for sid, split in list(self.pending.items()):
            owner = partition_owner(split.topic, split.partition, p)
            if owner in registered:
                assignment.setdefault(owner, []).append(split)
                del self.pending[sid]
        if assignment:
            self._ctx.assign_splits(assignment)
        if self._source.boundedness is Boundedness.BOUNDED and self._initial_done:
            for subtask in sorted(registered - self._signalled):
                if not any(partition_owner(s.topic, s.partition, p) == subtask for s in self.pending.values()):
                    self._ctx.signal_no_more_splits(subtask)
                    self._signalled.add(subtask)

    # -- Kafka look-ups --------------------------------------------------------------------
    def _client(self):
        if self._consumer is None:
            self._consumer = _client().Consumer(self._source.consumer_config("kafka-source-enumerator"))
        return self._consumer

    def _fail(self, what: str, exc: BaseException) -> ConnectorError:
        s = self._source
        return ConnectorError(f"{s.owner}: {what} failed on the brokers at {s.bootstrap_servers}: {exc}",
                              f"Kafka topics of {s.owner}")

    def _list_partitions(self) -> dict[str, list[int]]:
        """``{topic: [partition, ...]}`` of the source's topics (named ones that exist, or matches)."""
        source = self._source
        ck = _client()
        timeout = source.request_timeout_ms / 1000
        try:
            md = self._client().list_topics(timeout=timeout)
        except ck.KafkaException as exc:
            raise self._fail("listing the topics", exc) from exc
        out: dict[str, list[int]] = {}
        if source.topics is not None:
            missing = []
            for t in source.topics:
                meta = md.topics.get(t)
                if meta is None or meta.error is not None:
                    missing.append(t)
                    continue
                out[t] = sorted(meta.partitions)
            if missing:
                if not self._initial_done:
                    raise ConnectorError(f"{source.owner}: topic(s) {', '.join(map(repr, missing))} do not exist on "
                                         f"{source.bootstrap_servers}; create them first",
                                         f"Kafka topic {missing[0]!r}")
                log.warning("%s: topic(s) %s no longer in the metadata; their partitions are not read any more "
                            "once their records end", source.owner, missing)
        else:
            pattern = re.compile(str(source.topic_pattern))
            for t, meta in md.topics.items():
                if not t.startswith("__") and pattern.fullmatch(t) and meta.error is None:
                    out[t] = sorted(meta.partitions)
        return out

    def _watermarks(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        ck = _client()
        consumer, timeout = self._client(), self._source.request_timeout_ms / 1000
        out = {}
        for t, p in tps:
            try:
                out[(t, p)] = consumer.get_watermark_offsets(ck.TopicPartition(t, p), timeout=timeout, cached=False)
            except ck.KafkaException as exc:
                raise self._fail(f"reading the offsets of partition {t}-{p}", exc) from exc
        return out

    def _end_offsets(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: high for tp, (low, high) in self._watermarks(tps).items()}

    def _start_offsets(self, tps: list[tuple[str, int]], start: str | int) -> dict[tuple[str, int], int]:
        """The concrete next offset to read of each partition for ``start``."""
        ck = _client()
        consumer, timeout = self._client(), self._source.request_timeout_ms / 1000
        marks = self._watermarks(tps)
        reset_latest = str(self._source.properties.get("auto.offset.reset")).lower() in ("latest", "largest", "end")
        if start == "earliest":
            return {tp: low for tp, (low, high) in marks.items()}
        if start == "latest":
            return {tp: high for tp, (low, high) in marks.items()}
        if start == "committed":
            try:
                got = consumer.committed([ck.TopicPartition(t, p) for t, p in tps], timeout=timeout)
            except ck.KafkaException as exc:
                raise self._fail(f"reading group {self._source.group_id!r}'s committed offsets", exc) from exc
            out = {}
            for tp in got:
                low, high = marks[(tp.topic, tp.partition)]
                if tp.offset >= 0:
                    out[(tp.topic, tp.partition)] = min(max(tp.offset, low), high)
                else:  # no committed offset: auto.offset.reset
                    out[(tp.topic, tp.partition)] = high if reset_latest else low
            return out
        # a timestamp in ms
        try:
            got = consumer.offsets_for_times([ck.TopicPartition(t, p, int(start)) for t, p in tps], timeout=timeout)
        except ck.KafkaException as exc:
            raise self._fail(f"looking up the offsets for timestamp {start} ms", exc) from exc
        out = {}
        for tp in got:
            if tp.error is not None:
                raise self._fail(f"looking up the offset of {tp.topic}-{tp.partition} for timestamp {start} ms",
                                 tp.error)
            # -1: no record at or after the timestamp: the end of the partition
            out[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else marks[(tp.topic, tp.partition)][1]
        return out


class KafkaSplitReader(SplitReader):
    """Reads the partitions assigned to one source subtask with one ``Consumer`` (manual assignment).

    Its metrics are on the operator's metric group (``ctx.metric_group``; REST and Prometheus,
    see ``docs/connectors.md``), named as Flink's ``KafkaSourceReader`` names them.

    Attributes:
        records_read: records returned by :meth:`poll` (bad records not counted); an int.
        bad_records: counter ``numRecordsInErrors``: records the deserializer could not turn.
        commits_succeeded: counter ``KafkaSourceReader.commitsSucceeded``: offset commits on
            checkpoint completion the brokers accepted.
        commits_failed: counter ``KafkaSourceReader.commitsFailed``: offset commits that failed
            (logged; they do not fail the job).
        committed_offsets: ``{(topic, partition): offset}`` the brokers accepted last; with the
            next offset to read per partition, the gauges
            ``KafkaSourceReader.topic.<t>.partition.<p>.committedOffset`` and ``...currentOffset``.
    """

    def __init__(self, source: KafkaSource, ctx: SubtaskContext):
        self._source = source
        self._ctx = ctx
        self._consumer: Any = None
        self.splits: dict[tuple[str, int], KafkaPartitionSplit] = {}
        self._no_more = False
        self._done: list[KafkaPartitionSplit] = []       # finished, not yet reported
        self._pending_commits: dict[int, list[tuple[str, int, int]]] = {}
        fail = source.fail_on_bad_records
        self._fail_bad = bool(ctx.config.get("emrflow.bad-records.fail")) if fail is None else fail
        self.records_read = 0
        self.bad_records = ctx.metric_group.counter("numRecordsInErrors")
        self._metrics = ctx.metric_group.add_group("KafkaSourceReader")
        self.commits_succeeded = self._metrics.counter("commitsSucceeded")
        self.commits_failed = self._metrics.counter("commitsFailed")
        self.committed_offsets: dict[tuple[str, int], int] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Open the consumer and assign the splits added so far (restored ones)."""
        ck = _client()
        conf = self._source.consumer_config(f"kafka-source-{self._ctx.subtask_index}")
        if self._source.boundedness is Boundedness.BOUNDED:
            conf["enable.partition.eof"] = True   # the end offset of a partition ends a bounded split
        if self._source.commit_offsets_on_checkpoint and self._source.group_id:
            conf["on_commit"] = self._on_commit
        try:
            self._consumer = ck.Consumer(conf)
        except ck.KafkaException as exc:
            raise ConnectorError(f"{self._source.owner}: cannot create the consumer of subtask "
                                 f"{self._ctx.subtask_index}: {exc}", f"Kafka topics of {self._source.owner}") from exc
        splits = list(self.splits.values())
        self.splits = {}
        self._add(splits)

    def add_splits(self, splits: list) -> None:
        """Read these partitions too, each from the offset its split carries."""
        for s in splits:
            self._register_gauges((s.topic, s.partition))
        if self._consumer is None:
            for s in splits:
                self.splits[(s.topic, s.partition)] = copy.copy(s)
            return
        self._add([copy.copy(s) for s in splits])

    def _register_gauges(self, key: tuple[str, int]) -> None:
        group = self._metrics.add_group("topic", key[0]).add_group("partition", key[1])
        splits, committed = self.splits, self.committed_offsets
        group.gauge("currentOffset", lambda: getattr(splits.get(key), "offset", None))
        group.gauge("committedOffset", lambda: committed.get(key))

    def _add(self, splits: list[KafkaPartitionSplit]) -> None:
        ck = _client()
        assign = []
        for s in splits:
            if s.is_finished():
                self._done.append(s)
                continue
            self.splits[(s.topic, s.partition)] = s
            assign.append(ck.TopicPartition(s.topic, s.partition, s.offset))
        if assign:
            self._consumer.incremental_assign(assign)

    def notify_no_more_splits(self) -> None:
        self._no_more = True

    def is_finished(self) -> bool:
        return self._no_more and not self.splits and not self._done

    # -- reading ---------------------------------------------------------------------------
    def poll(self, timeout_s: float) -> list[SplitRecords]:
        """Consume up to ``max_poll_records`` records, waiting at most ``timeout_s``; group them per partition.

        Raises:
            BadRecordError: a record the deserializer rejected, with bad records fatal.
            ConnectorError: Kafka reported an error that is not transient (a fatal consumer
                error, a partition that does not exist, an offset out of range with
                ``auto.offset.reset=error``).
        """
        out: dict[tuple[str, int], SplitRecords] = {}
        for s in self._done:
            out[(s.topic, s.partition)] = SplitRecords(s.split_id, [], True)
        self._done = []
        if out or not self.splits:
            if not self.splits and not out and timeout_s > 0:
                # nothing assigned: wait as asked (a consumer without assignment returns at once)
                threading.Event().wait(min(timeout_s, 0.1))
            return list(out.values())
        ck = _client()
        source = self._source
        deser, meta = source.deserializer, source.with_metadata
        finished: list[KafkaPartitionSplit] = []
        msgs = self._consumer.consume(source.max_poll_records, timeout_s)
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == ck.KafkaError._PARTITION_EOF:
                    at_end = self.splits.get((m.topic(), m.partition()))
                    if at_end is not None and at_end.stopping_offset is not None:
                        if m.offset() >= 0:
                            at_end.offset = max(at_end.offset, m.offset())  # past control records at the end
                        if at_end.is_finished() and at_end not in finished:
                            finished.append(at_end)
                    continue
                self._raise_or_log(err, m)
                continue
            key = (m.topic(), m.partition())
            found = self.splits.get(key)
            if found is None:   # unassigned meanwhile
                continue
            s = found
            off = m.offset()
            if s.stopping_offset is not None and off >= s.stopping_offset:
                if s not in finished:
                    s.offset = max(s.offset, s.stopping_offset)
                    finished.append(s)
                continue
            if off < s.offset:   # already returned (should not happen with manual assignment)
                continue
            batch = out.get(key)
            if batch is None:
                batch = out[key] = SplitRecords(s.split_id)
            value = m.value()
            try:
                record = deser(value)
            except Exception as exc:  # noqa: BLE001 - any deserializer failure is a bad record
                s.offset = off + 1
                self._bad(s, off, f"cannot deserialize the value ({_describe(value)}): "
                                  f"{type(exc).__name__}: {exc}")
                if s.is_finished() and s not in finished:
                    finished.append(s)
                continue
            if meta:
                ts_type, ts = m.timestamp()
                record = KafkaRecord(m.topic(), m.partition(), off,
                                     ts if ts_type != ck.TIMESTAMP_NOT_AVAILABLE else None, m.key(), record)
            batch.records.append(record)
            s.offset = off + 1
            if s.is_finished() and s not in finished:
                finished.append(s)
        self.records_read += sum(len(b.records) for b in out.values())
        if finished:
            for s in finished:
                key = (s.topic, s.partition)
                out.setdefault(key, SplitRecords(s.split_id)).finished = True
                self.splits.pop(key, None)
            self._consumer.incremental_unassign([ck.TopicPartition(s.topic, s.partition) for s in finished])
        return [b for b in out.values() if b.records or b.finished]

    def _bad(self, split: KafkaPartitionSplit, offset: int, reason: str) -> None:
        self.bad_records.inc()
        if self._fail_bad:
            raise BadRecordError(split.split_id, offset, reason)
        self._ctx.report_bad_record(split.split_id, offset, reason)

    def _raise_or_log(self, err, msg) -> None:
        ck = _client()
        where = f"{msg.topic()}-{msg.partition()}" if msg.topic() else "the consumer"
        transient = err.retriable() or err.code() in (ck.KafkaError._TRANSPORT, ck.KafkaError._ALL_BROKERS_DOWN,
                                                      ck.KafkaError._TIMED_OUT, ck.KafkaError._RESOLVE)
        if transient and not err.fatal():
            log.warning("%s subtask %d: %s (%s); librdkafka retries", self._source.owner, self._ctx.subtask_index,
                        err.str(), where)
            return
        raise ConnectorError(f"{self._source.owner}: Kafka error reading {where} in subtask "
                             f"{self._ctx.subtask_index}: {err.str()}", f"Kafka partition {where}")

    # -- checkpoints -----------------------------------------------------------------------
    def snapshot_state(self, checkpoint_id: int) -> list[KafkaPartitionSplit]:
        """The unfinished partitions with the next offset to read after the last :meth:`poll`."""
        splits = [copy.copy(s) for s in self.splits.values()] + [copy.copy(s) for s in self._done]
        if self._source.commit_offsets_on_checkpoint and self._source.group_id:
            self._pending_commits[checkpoint_id] = [(s.topic, s.partition, s.offset) for s in splits]
        return splits

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Commit the offsets of checkpoint ``checkpoint_id`` to the consumer group (asynchronously;
        monitoring only: a failure is logged and counted in :attr:`commits_failed`)."""
        offsets = self._pending_commits.pop(checkpoint_id, None)
        for cid in [c for c in self._pending_commits if c < checkpoint_id]:
            del self._pending_commits[cid]   # subsumed by this one
        if not offsets or self._consumer is None:
            return
        ck = _client()
        try:
            self._consumer.commit(offsets=[ck.TopicPartition(t, p, o) for t, p, o in offsets], asynchronous=True)
        except ck.KafkaException as exc:
            self.commits_failed.inc()
            log.warning("%s subtask %d: committing the offsets of checkpoint %d to group %r failed: %s",
                        self._source.owner, self._ctx.subtask_index, checkpoint_id, self._source.group_id, exc)

    def _on_commit(self, err, partitions) -> None:
        if err is None and not any(tp.error for tp in partitions):
            self.commits_succeeded.inc()
            for tp in partitions:
                self.committed_offsets[(tp.topic, tp.partition)] = tp.offset
            return
        self.commits_failed.inc()
        log.warning("%s subtask %d: committing offsets to group %r failed: %s", self._source.owner,
                    self._ctx.subtask_index, self._source.group_id,
                    err if err is not None else [str(tp.error) for tp in partitions if tp.error])

    def close(self) -> None:
        """Close the consumer (it leaves no group: it never joined one)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except RuntimeError:
                pass


def _describe(value: bytes | None) -> str:
    if value is None:
        return "null"
    head = value[:40]
    return f"{len(value)} bytes, {head!r}{'...' if len(value) > 40 else ''}"
