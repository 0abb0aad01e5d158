"""Amazon Kinesis Data Streams source (boto3) as a split source (Flink's ``KinesisStreamsSource``).

One split per shard (:class:`KinesisShardSplit`, ``split_id`` = the shard id) carrying the
sequence number of the last record read, the start position and the shard's parents.

**Enumerator** (:class:`KinesisShardEnumerator`, in the JobManager): lists the stream's shards
(``ListShards``, every page) when the job starts and then every ``shard_discovery_interval_ms``.
It respects resharding: a shard whose parents (``ParentShardId``, ``AdjacentParentShardId``)
are still being read is held back and assigned only after every parent was *finished*, i.e.
a reader read the closed parent to its end (``GetRecords`` answered no ``NextShardIterator``)
and reported it (:meth:`~emrflow.connectors.splits.SplitEnumerator.handle_splits_finished`). So
the records of one partition key are read in order across a split or a merge. A parent no
longer listed (older than the stream's retention) does not hold its children back. Shards are
assigned to the subtask with the fewest unfinished shards (ties: the lowest index), only once
that subtask's reader is registered.

**Start positions** (``start_position``), applied to the shards of the first listing:
``"TRIM_HORIZON"`` (the oldest record kept), ``"LATEST"`` (records that arrive after the job
started: resolved once, by the enumerator, to ``AT_TIMESTAMP`` of its start time, so a restore
before the first record of a shard was read does not skip what arrived meanwhile; the clocks of
this machine and of Kinesis are assumed to agree) and ``"AT_TIMESTAMP"`` (``start_timestamp_ms``,
ms since the epoch: the first record whose ``ApproximateArrivalTimestamp`` is at or after it).
Shards created later (children of a resharding) are read from ``TRIM_HORIZON``: everything in
them is new. A shard already read from continues ``AFTER_SEQUENCE_NUMBER`` of its last record.

**Reader** (:class:`KinesisShardReader`, one per source subtask): a ``GetRecords`` loop per
shard, at most one call per shard every ``get_records_interval_ms`` (Kinesis allows 5 per
second per shard), up to ``max_records_per_get`` records per call; ``MillisBehindLatest`` is
kept per shard (:attr:`KinesisShardReader.millis_behind_latest`, the metric
``shardId.<shard>.millisBehindLatest``). An expired shard iterator
(``ExpiredIteratorException``, after 5 minutes) is replaced by a new one ``AFTER_SEQUENCE_NUMBER``
of the last record read (``iterators_renewed``). Throttling (``ProvisionedThroughputExceededException``,
``LimitExceededException``) backs off that shard alone, exponentially with jitter from
``initial_backoff_ms`` to ``max_backoff_ms``, without limit (it is Kinesis's backpressure),
counted in the metric ``numThrottledRequests`` (and the wait in ``backoffTimeMs``); other
transient failures (``InternalFailure``, HTTP 5xx, connection errors) are retried the same way
up to ``max_attempts`` times in a row, then the job fails naming the stream and shard. botocore's own
retries are off for the reader's client so that one throttled shard does not stall the others.

**Checkpoints** (exactly once with an exactly-once sink): :meth:`KinesisShardReader.snapshot_state`
holds each shard's last sequence number after the records the last ``poll`` returned; the
enumerator's state holds the shards discovered, those waiting for their parents, those assigned
and those known finished. A shard read to its end stays in the reader's state as a *finished
marker* until a checkpoint that the enumerator's own state covers has completed; a reader
restored with a marker reports the shard finished again, so a restore never leaves a child
waiting for a parent nobody reads.

**Records**: each record's data is turned into a record by ``deserializer`` (default: UTF-8
JSON, the :class:`~emrflow.connectors.kinesis.KinesisSink`'s default format). Data it cannot
turn (it raises) is a *bad record*, handled like a bad CSV line: skipped and reported as
``<stream>/<shard id>:<sequence number>: <reason>`` (``ctx.report_bad_record``), or fatal
(:class:`~emrflow.errors.BadRecordError`) with ``fail_on_bad_records=True`` or the
``emrflow.bad-records.fail`` option. With ``with_metadata=True`` every record is a
:class:`KinesisRecord` (value, partition key, sequence number, shard id, stream,
``ApproximateArrivalTimestamp`` in ms), so a watermark strategy can use the arrival time as
event time::

    from emrflow.api.eventtime import Duration, WatermarkStrategy
    from emrflow.connectors.kinesis_source import KinesisSource

    source = KinesisSource("clicks", start_position="TRIM_HORIZON", with_metadata=True)
    clicks = env.from_source(source, WatermarkStrategy
                             .for_bounded_out_of_orderness(Duration.of_seconds(5))
                             .with_timestamp_assigner(lambda r: r.arrival_timestamp_ms)
                             .with_idleness(Duration.of_minutes(1)))

(Records are per shard, so the subtask's watermark is the minimum over its shards and an idle
shard does not hold it back once ``with_idleness`` marks it idle.)

Not done: enhanced fan-out (``SubscribeToShard``), reading several streams in one source,
``AT_SEQUENCE_NUMBER`` as a start position.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from emrflow.connectors import _aws, _options
from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.splits import (
    Boundedness,
    SplitEnumerator,
    SplitEnumeratorContext,
    SplitReader,
    SplitRecords,
    SplitSource,
    split_owner,
)
from emrflow.errors import BadRecordError, ConfigError, ConnectorError

log = logging.getLogger(__name__)

__all__ = ["KinesisSource", "KinesisShardSplit", "KinesisRecord", "KinesisShardEnumerator",
           "KinesisShardReader", "json_deserializer"]

START_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
#: Error codes that mean "slow down": retried without limit, per shard, with a backoff.
THROTTLING_CODES = frozenset({"ProvisionedThroughputExceededException", "LimitExceededException",
                              "ThrottlingException"})
#: Error codes (and HTTP >= 500) retried up to ``max_attempts`` times in a row.
TRANSIENT_CODES = frozenset({"InternalFailure", "InternalFailureException", "ServiceUnavailable",
                             "ServiceUnavailableException", "KMSThrottlingException"})
#: Flink's default ``source.shard.discovery.interval`` (10 s).
DEFAULT_DISCOVERY_INTERVAL_MS = 10_000
_SESSION: Any = None
_SESSION_LOCK = threading.Lock()


def json_deserializer(data: bytes) -> Any:
    """The default deserializer: UTF-8 JSON (what :func:`emrflow.connectors.kinesis.json_serializer` writes)."""
    return json.loads(data.decode("utf-8"))


class KinesisRecord(NamedTuple):
    """A record with its Kinesis metadata (``with_metadata=True``).

    Attributes:
        value: what the deserializer made of the data.
        partition_key: the record's partition key.
        sequence_number: its sequence number (a decimal string, unique within the shard).
        shard_id: the shard it was read from.
        stream: the stream's name.
        arrival_timestamp_ms: ``ApproximateArrivalTimestamp`` in ms since the epoch (when
            Kinesis accepted it); use it as event time with a timestamp assigner.
    """

    value: Any
    partition_key: str
    sequence_number: str
    shard_id: str
    stream: str
    arrival_timestamp_ms: int


@dataclass
class KinesisShardSplit:
    """One shard and where reading stands (Flink's ``KinesisShardSplit``).

    Attributes:
        split_id: the shard id (``shardId-000000000003``).
        stream_name: the stream.
        start_position: ``"TRIM_HORIZON"`` or ``"AT_TIMESTAMP"`` (``LATEST`` is resolved to the
            latter by the enumerator), used until a record was read.
        start_timestamp_ms: the ``AT_TIMESTAMP`` position in ms since the epoch, else ``None``.
        sequence_number: the sequence number of the last record read (returned by a poll,
            bad records included), ``None`` before the first; reading continues after it.
        parent_shard_ids: the shard's parents (none, one after a split, two after a merge).
        finished: a marker: the shard was read to its end (kept in a reader's state until the
            enumerator's checkpoints know it, see the module docs).
    """

    split_id: str
    stream_name: str
    start_position: str = "TRIM_HORIZON"
    start_timestamp_ms: int | None = None
    sequence_number: str | None = None
    parent_shard_ids: tuple[str, ...] = ()
    finished: bool = False


class KinesisSource(SplitSource):
    """Reads one Kinesis data stream, unbounded (Flink's ``KinesisStreamsSource``); see the module docs.

    Args:
        stream_name: the stream; it must exist (the job fails at start naming it otherwise).
        start_position: ``"TRIM_HORIZON"``, ``"LATEST"`` (default, as Flink) or ``"AT_TIMESTAMP"``.
        start_timestamp_ms: for ``AT_TIMESTAMP``: ms since the epoch (required then, not allowed
            otherwise).
        deserializer: ``bytes -> record``; default :func:`json_deserializer`. If it raises, the
            record is a bad record (see ``fail_on_bad_records``).
        with_metadata: emit :class:`KinesisRecord` (value plus partition key, sequence number,
            shard, stream, arrival time) instead of the value alone.
        fail_on_bad_records: ``True``: a bad record fails the job with
            :class:`~emrflow.errors.BadRecordError`; ``False``: it is skipped and reported;
            ``None`` (default): as the ``emrflow.bad-records.fail`` option says.
        shard_discovery_interval_ms: how often the enumerator lists the shards, in ms, >= 100.
        get_records_interval_ms: least time between two ``GetRecords`` calls on one shard, in
            ms (default 200: Kinesis's 5 calls per second per shard).
        max_records_per_get: ``Limit`` of a ``GetRecords`` call, 1 to 10,000.
        list_shards_page_size: ``MaxResults`` of a ``ListShards`` call, 1 to 10,000.
        max_attempts: calls per request in a row that fail transiently (not throttling) before the
            job fails, >= 1.
        initial_backoff_ms: wait after the first throttled or failed call on a shard, in ms; it
            doubles per further failure (with jitter) up to ``max_backoff_ms``.
        max_backoff_ms: longest wait, in ms.
        region: AWS region; ``None``: the standard chain (``AWS_DEFAULT_REGION``, profile).
        endpoint_url: Kinesis endpoint; ``None``: ``AWS_ENDPOINT_URL_KINESIS``, else
            ``AWS_ENDPOINT_URL``, else AWS's own.

    Raises:
        ConfigError: an option is out of range or inconsistent (the message names it).
    """

    default_name = "Kinesis Source"
    boundedness = Boundedness.CONTINUOUS_UNBOUNDED

    def __init__(self, stream_name: str, *, start_position: str = "LATEST", start_timestamp_ms: int | None = None,
                 deserializer: Callable[[bytes], Any] | None = None, with_metadata: bool = False,
                 fail_on_bad_records: bool | None = None,
                 shard_discovery_interval_ms: int = DEFAULT_DISCOVERY_INTERVAL_MS,
                 get_records_interval_ms: int = 200, max_records_per_get: int = 10_000,
                 list_shards_page_size: int = 1000, max_attempts: int = 10, initial_backoff_ms: int = 100,
                 max_backoff_ms: int = 10_000, region: str | None = None, endpoint_url: str | None = None):
        if not isinstance(stream_name, str) or not stream_name:
            raise ConfigError(f"KinesisSource: stream_name must be a non-empty string, got {stream_name!r}",
                              key="stream_name")
        owner = self.owner = f"KinesisSource({stream_name!r})"
        if start_position not in START_POSITIONS:
            raise ConfigError(f"{owner}: start_position must be one of {', '.join(START_POSITIONS)}, got "
                              f"{start_position!r}", key="start_position")
        if start_position == "AT_TIMESTAMP":
            _aws.check_int(owner, "start_timestamp_ms", start_timestamp_ms, 0)
        elif start_timestamp_ms is not None:
            raise ConfigError(f"{owner}: start_timestamp_ms is only used with start_position='AT_TIMESTAMP', "
                              f"got start_position={start_position!r}", key="start_timestamp_ms")
        _options.check_function(owner, "deserializer", deserializer, "bytes -> record")
        _options.check_optional_bool(owner, "fail_on_bad_records", fail_on_bad_records)
        _aws.check_int(owner, "shard_discovery_interval_ms", shard_discovery_interval_ms, 100)
        _aws.check_int(owner, "get_records_interval_ms", get_records_interval_ms, 0)
        _aws.check_int(owner, "max_records_per_get", max_records_per_get, 1, 10_000)
        _aws.check_int(owner, "list_shards_page_size", list_shards_page_size, 1, 10_000)
        _aws.check_retry_options(owner, max_attempts, initial_backoff_ms, max_backoff_ms)
        self.stream_name = stream_name
        self.start_position = start_position
        self.start_timestamp_ms = start_timestamp_ms
        self.deserializer = deserializer or json_deserializer
        self.with_metadata = bool(with_metadata)
        self.fail_on_bad_records = fail_on_bad_records
        self.shard_discovery_interval_ms = shard_discovery_interval_ms
        self.get_records_interval_ms = get_records_interval_ms
        self.max_records_per_get = max_records_per_get
        self.list_shards_page_size = list_shards_page_size
        self.max_attempts = max_attempts
        self.initial_backoff_ms = initial_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.region = region
        self.endpoint_url = endpoint_url

    @property
    def resource(self) -> str:
        """The stream, for messages."""
        return f"Kinesis stream {self.stream_name!r}"

    def client(self, max_attempts: int = _aws.CLIENT_MAX_ATTEMPTS) -> Any:
        """A boto3 Kinesis client for this source's region and endpoint (from one boto3 session per process)."""
        with _SESSION_LOCK:   # boto3 sessions are not thread-safe; clients are
            global _SESSION
            if _SESSION is None:
                import boto3
                _SESSION = boto3.session.Session()
            return _aws.make_client("kinesis", "KINESIS", self.region, self.endpoint_url, self.owner,
                                    max_attempts=max_attempts, session=_SESSION)

    def create_enumerator(self, ctx: SplitEnumeratorContext) -> "KinesisShardEnumerator":
        """A fresh enumerator (resolves ``LATEST`` to now when it starts)."""
        return KinesisShardEnumerator(self, ctx)

    def restore_enumerator(self, ctx: SplitEnumeratorContext, state: Any) -> "KinesisShardEnumerator":
        """An enumerator continuing from :meth:`KinesisShardEnumerator.snapshot_state`'s ``state``."""
        return KinesisShardEnumerator(self, ctx, state)

    def create_split_reader(self, ctx: SubtaskContext) -> "KinesisShardReader":
        """The reader of subtask ``ctx.subtask_index``."""
        return KinesisShardReader(self, ctx)


class KinesisShardEnumerator(SplitEnumerator):
    """Discovers the shards of a :class:`KinesisSource` and assigns them, parents first.

    State (checkpointed, :meth:`snapshot_state`): the resolved start timestamp, whether the
    first listing happened, every shard seen with its parents, the splits not assigned yet
    (waiting for a reader or for their parents), the shards assigned and not known finished
    (with their subtask) and the shards known finished. A lock guards it: discovery runs in a
    runtime thread.
    """

    def __init__(self, source: KinesisSource, ctx: SplitEnumeratorContext, state: dict | None = None):
        self._source = source
        self._ctx = ctx
        self._lock = threading.RLock()
        self._client = None
        self.start_timestamp_ms: int | None = None
        self.initial_done = False
        self.known: dict[str, tuple[str, ...]] = {}       # shard id -> parent shard ids
        self.pending: dict[str, KinesisShardSplit] = {}    # not assigned yet
        self.targets: dict[str, int] = {}                 # pending split -> subtask chosen for it
        self.assigned: dict[str, int] = {}                # assigned, not known finished -> subtask
        self.finished: set[str] = set()
        if state is not None:
            self.start_timestamp_ms = state["start_timestamp_ms"]
            self.initial_done = bool(state["initial_done"])
            self.known = {k: tuple(v) for k, v in state["known"].items()}
            self.pending = {s.split_id: s for s in state["pending"]}
            self.finished = set(state["finished"])
            # restored reader states go to split_owner(id, p) (the runtime's rule): count the load so
            self.assigned = {sid: split_owner(sid, ctx.parallelism) for sid in state["assigned"]}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """List the shards (the first time: resolve the start position) and schedule discovery.

        Raises:
            ConnectorError: the stream does not exist or cannot be listed.
        """
        with self._lock:
            if self.start_timestamp_ms is None:
                s = self._source
                self.start_timestamp_ms = (int(time.time() * 1000) if s.start_position == "LATEST"
                                           else s.start_timestamp_ms)
        self.discover()
        self._ctx.call_periodically(self.discover, self._source.shard_discovery_interval_ms)

    def add_reader(self, subtask: int) -> None:
        """Hand the reader the splits waiting for it."""
        with self._lock:
            self._assign_ready()

    def handle_splits_finished(self, subtask: int, split_ids: list[str]) -> None:
        """Record finished shards (idempotent) and assign children whose parents are all finished now."""
        with self._lock:
            for sid in split_ids:
                self.finished.add(sid)
                self.assigned.pop(sid, None)
                self.pending.pop(sid, None)
                self.targets.pop(sid, None)
            self._assign_ready()

    def add_splits_back(self, splits: list, subtask: int) -> None:
        """Splits of a failed reader come back: assign them again (a finished marker counts as finished)."""
        with self._lock:
            for s in splits:
                self.assigned.pop(s.split_id, None)
                if s.finished:
                    self.finished.add(s.split_id)
                elif s.split_id not in self.finished:
                    self.pending[s.split_id] = s
            self._assign_ready()

    def snapshot_state(self, checkpoint_id: int) -> dict:
        """``{"start_timestamp_ms", "initial_done", "known": {id: parents}, "pending": [split],
        "assigned": [id], "finished": [id]}``."""
        with self._lock:
            return {"start_timestamp_ms": self.start_timestamp_ms, "initial_done": self.initial_done,
                    "known": dict(self.known), "pending": [copy.copy(s) for s in self.pending.values()],
                    "assigned": sorted(self.assigned), "finished": sorted(self.finished)}

    def close(self) -> None:
        """Drop the client."""
        self._client = None

    # -- discovery -------------------------------------------------------------------------
    def list_shards(self) -> list[dict]:
        """Every shard of the stream (``ListShards``, all pages).

        Raises:
            ConnectorError: the stream does not exist or the call failed (botocore's retries spent).
        """
        s = self._source
        if self._client is None:
            self._client = s.client()
        client = self._client

        def pages() -> list[dict]:
            shards: list[dict] = []
            kwargs: dict[str, Any] = {"StreamName": s.stream_name}
            while True:
                page = client.list_shards(MaxResults=s.list_shards_page_size, **kwargs)
                shards.extend(page.get("Shards") or [])
                token = page.get("NextToken")
                if not token:
                    return shards
                kwargs = {"NextToken": token}   # ListShards rejects StreamName with NextToken

        return _aws.call_existing(client, s.resource, "ListShards", pages,
                                  hint="create it first or fix stream_name")

    def discover(self) -> None:
        """List the shards; make splits of new ones; assign those whose parents are finished.

        Runs in :meth:`start` and every ``shard_discovery_interval_ms``. Shards of the first
        listing start at the source's start position, later ones at ``TRIM_HORIZON``.

        Raises:
            ConnectorError: as :meth:`list_shards`.
        """
        shards = self.list_shards()
        s = self._source
        with self._lock:
            initial = not self.initial_done
            new = []
            for shard in shards:
                sid = shard["ShardId"]
                if sid in self.known:
                    continue
                parents = tuple(p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p)
                self.known[sid] = parents
                if initial and s.start_position != "TRIM_HORIZON":
                    split = KinesisShardSplit(sid, s.stream_name, "AT_TIMESTAMP", self.start_timestamp_ms,
                                              parent_shard_ids=parents)
                else:
                    split = KinesisShardSplit(sid, s.stream_name, "TRIM_HORIZON", parent_shard_ids=parents)
                self.pending[sid] = split
                new.append(sid)
            # shards past the stream's retention are no longer listed: forget the finished ones
            listed = {shard["ShardId"] for shard in shards}
            for sid in [sid for sid in self.finished if sid not in listed]:
                self.finished.discard(sid)
                self.known.pop(sid, None)
            self.initial_done = True
            if new:
                log.info("%s: discovered %d shard(s): %s", s.owner, len(new),
                         ", ".join(new[:20]) + (" ..." if len(new) > 20 else ""))
            self._assign_ready()

    def _ready(self, split: KinesisShardSplit) -> bool:
        """All parents finished (or no longer listed: expired)."""
        return all(p in self.finished or p not in self.known for p in split.parent_shard_ids)

    def _assign_ready(self) -> None:
        """Choose a subtask for each pending split whose parents are finished (the least loaded);
        hand over those whose subtask is registered (lock held)."""
        p = self._ctx.parallelism
        registered = self._ctx.registered_readers()
        load = [0] * p
        for sub in list(self.assigned.values()) + list(self.targets.values()):
            if 0 <= sub < p:
                load[sub] += 1
        assignment: dict[int, list] = {}
        for sid in sorted(self.pending):
            split = self.pending[sid]
            if not self._ready(split):
                continue
            target = self.targets.get(sid)
            if target is None or target >= p:
                target = min(range(p), key=lambda i: (load[i], i))
                load[target] += 1
                self.targets[sid] = target
            if target in registered:
                assignment.setdefault(target, []).append(split)
        for target, splits in assignment.items():
            for split in splits:
                del self.pending[split.split_id]
                del self.targets[split.split_id]
                self.assigned[split.split_id] = target
        if assignment:
            log.info("%s: assigning %s", self._source.owner,
                     "; ".join(f"subtask {t}: {', '.join(x.split_id for x in v)}"
                               for t, v in sorted(assignment.items())))
            self._ctx.assign_splits(assignment)


class _Shard:
    """A reader's view of one shard: its split (position), iterator and pacing."""

    __slots__ = ("split", "iterator", "next_at", "failures", "transient")

    def __init__(self, split: KinesisShardSplit):
        self.split = split
        self.iterator: str | None = None
        self.next_at = 0.0
        self.failures = 0     # consecutive throttled or failed calls (backoff exponent)
        self.transient = 0    # consecutive non-throttling failures (bounded by max_attempts)


class KinesisShardReader(SplitReader):
    """One subtask's reader of a :class:`KinesisSource`: a ``GetRecords`` loop per shard.

    Its metrics are on the operator's metric group (``ctx.metric_group``; REST and Prometheus,
    see ``docs/connectors.md``); the counters are also attributes, and are logged (INFO) when
    the reader closes.

    Attributes:
        records_read: records returned by :meth:`poll` (bad records not counted); an int.
        bad_records: counter ``numRecordsInErrors``: records the deserializer could not turn.
        get_records_calls: counter ``numGetRecordsRequests``: ``GetRecords`` calls made (failed
            ones included).
        throttled: counter ``numThrottledRequests``: ``GetRecords`` or ``GetShardIterator`` calls
            answered ``ProvisionedThroughputExceededException`` or ``LimitExceededException``
            (each followed by a backoff of that shard).
        backoff_ms: counter ``backoffTimeMs``: milliseconds of backoff scheduled after throttled
            or failed calls (summed over shards, which back off independently).
        transient_errors: counter ``numTransientErrors``: calls that failed otherwise and were retried.
        iterators_renewed: counter ``numIteratorsRenewed``: expired shard iterators replaced
            (``ExpiredIteratorException``).
        millis_behind_latest: per shard, ``MillisBehindLatest`` of its last ``GetRecords``; the
            gauge ``shardId.<shard>.millisBehindLatest`` (Flink's name), gone once the shard is finished.
    """

    def __init__(self, source: KinesisSource, ctx: SubtaskContext):
        self._source = source
        self._ctx = ctx
        self._client = None
        self._shards: dict[str, _Shard] = {}
        # finished shard id -> [marker split, first checkpoint id snapshotted after finishing or None]
        self._markers: dict[str, list] = {}
        self._report: list[str] = []          # restored markers to report finished again
        self._no_more = False
        self._backoff = _aws.Backoff(source.initial_backoff_ms, source.max_backoff_ms)
        fail = source.fail_on_bad_records
        self._fail_bad = bool(ctx.config.get("emrflow.bad-records.fail")) if fail is None else fail
        concurrent = ctx.config.get("execution.checkpointing.max-concurrent-checkpoints")
        self._max_concurrent = int(concurrent) if concurrent else 1
        self.records_read = 0
        group = self._metrics = ctx.metric_group
        self.bad_records = group.counter("numRecordsInErrors")
        self.get_records_calls = group.counter("numGetRecordsRequests")
        self.throttled = group.counter("numThrottledRequests")
        self.backoff_ms = group.counter("backoffTimeMs")
        self.transient_errors = group.counter("numTransientErrors")
        self.iterators_renewed = group.counter("numIteratorsRenewed")
        self.millis_behind_latest: dict[str, int] = {}

    # -- splits --------------------------------------------------------------------------
    def start(self) -> None:
        """Create the client (botocore retries off: throttling is handled per shard)."""
        if self._client is None:
            self._client = self._source.client(max_attempts=0)

    def add_splits(self, splits: list) -> None:
        """Read these shards too; a finished marker (from a restored state) is reported finished again."""
        for split in splits:
            split = copy.copy(split)
            if split.finished:
                self._markers[split.split_id] = [split, None]
                self._report.append(split.split_id)
            else:
                self._shards[split.split_id] = _Shard(split)
                self._register_lag(split.split_id)

    def _register_lag(self, shard_id: str) -> None:
        lags = self.millis_behind_latest
        self._metrics.add_group("shardId", shard_id).gauge("millisBehindLatest", lambda: lags.get(shard_id))

    def notify_no_more_splits(self) -> None:
        self._no_more = True

    def is_finished(self) -> bool:
        return self._no_more and not self._shards and not self._report

    @property
    def shard_ids(self) -> list[str]:
        """The shards being read (not finished)."""
        return sorted(self._shards)

    # -- reading -------------------------------------------------------------------------
    def poll(self, timeout_s: float) -> list[SplitRecords]:
        """One ``GetRecords`` on every shard that is due; wait (at most ``timeout_s``) if none is.

        Returns:
            Records per shard, a shard read to its end with ``finished=True``; ``[]`` if
            nothing arrived in time.

        Raises:
            ConnectorError: a shard kept failing (``max_attempts``), the stream or a shard
                was deleted, or access was denied.
            BadRecordError: a record the deserializer rejected, with bad records fatal.
        """
        self.start()
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            out = [SplitRecords(sid, [], finished=True) for sid in self._report]
            self._report = []
            now = time.monotonic()
            for shard in sorted(self._shards.values(), key=lambda x: x.next_at):
                if shard.next_at <= now:
                    batch = self._fetch(shard)
                    if batch is not None and (batch.records or batch.finished):
                        out.append(batch)
            if out:
                return out
            now = time.monotonic()
            if now >= deadline:
                return []
            wake = min((x.next_at for x in self._shards.values()), default=deadline)
            time.sleep(max(0.0, min(wake, deadline) - now) + 0.0005)

    def _fetch(self, shard: _Shard) -> SplitRecords | None:
        from botocore.exceptions import BotoCoreError, ClientError
        s = self._source
        split = shard.split
        try:
            if shard.iterator is None:
                shard.iterator = self._iterator(split)
            self.get_records_calls.inc()
            resp = self._client.get_records(ShardIterator=shard.iterator, Limit=s.max_records_per_get)
        except ClientError as exc:
            code = _aws.error_code(exc)
            if code == "ExpiredIteratorException":
                self.iterators_renewed.inc()
                shard.iterator = None          # re-get AFTER_SEQUENCE_NUMBER of the last record read
                shard.next_at = 0.0
                return None
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            if code in THROTTLING_CODES:
                self.throttled.inc()
                self._back_off(shard)
                return None
            if code in TRANSIENT_CODES or status >= 500:
                self._transient(shard, exc)
                return None
            if code == "ResourceNotFoundException":
                raise ConnectorError(f"{s.resource}: shard {split.split_id} or the stream no longer exists: "
                                     f"{exc}", s.resource) from None
            raise _aws.translate(exc, f"{s.resource} shard {split.split_id}", "GetRecords") from exc
        except BotoCoreError as exc:           # connection refused/reset, timeouts
            self._transient(shard, exc)
            return None
        shard.failures = shard.transient = 0
        records = resp.get("Records") or []
        if "MillisBehindLatest" in resp:
            self.millis_behind_latest[split.split_id] = int(resp["MillisBehindLatest"])
        out = SplitRecords(split.split_id, self._convert(split, records))
        if records:
            split.sequence_number = records[-1]["SequenceNumber"]
        shard.iterator = resp.get("NextShardIterator")
        if shard.iterator is None:             # a closed shard read to its end
            out.finished = True
            del self._shards[split.split_id]
            self.millis_behind_latest.pop(split.split_id, None)
            marker = copy.copy(split)
            marker.finished = True
            self._markers[split.split_id] = [marker, None]
        else:
            shard.next_at = time.monotonic() + s.get_records_interval_ms / 1000
        return out

    def _iterator(self, split: KinesisShardSplit) -> str:
        kwargs: dict[str, Any] = {"StreamName": split.stream_name, "ShardId": split.split_id}
        if split.sequence_number is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                          StartingSequenceNumber=split.sequence_number)
        elif split.start_position == "AT_TIMESTAMP":
            kwargs.update(ShardIteratorType="AT_TIMESTAMP",
                          Timestamp=datetime.datetime.fromtimestamp(split.start_timestamp_ms / 1000,
                                                                    datetime.timezone.utc))
        else:
            kwargs.update(ShardIteratorType="TRIM_HORIZON")
        return self._client.get_shard_iterator(**kwargs)["ShardIterator"]

    def _back_off(self, shard: _Shard) -> None:
        shard.failures += 1
        delay_s = self._backoff.delay_s(shard.failures)
        self.backoff_ms.inc(round(delay_s * 1000))
        shard.next_at = time.monotonic() + delay_s

    def _transient(self, shard: _Shard, exc: BaseException) -> None:
        s = self._source
        shard.transient += 1
        self.transient_errors.inc()
        if shard.transient >= s.max_attempts:
            raise ConnectorError(f"{s.resource} shard {shard.split.split_id}: GetRecords failed {shard.transient} "
                                 f"times in a row (max_attempts={s.max_attempts}): {exc}", s.resource) from exc
        log.warning("%s shard %s: %s; retrying", s.resource, shard.split.split_id, exc)
        self._back_off(shard)

    def _convert(self, split: KinesisShardSplit, records: list[dict]) -> list:
        s = self._source
        out = []
        for r in records:
            try:
                value = s.deserializer(r["Data"])
            except Exception as exc:  # noqa: BLE001 - any failure of user code makes a bad record
                self._bad(split, r["SequenceNumber"], f"cannot deserialize the record's data "
                          f"({len(r['Data'])} bytes, {bytes(r['Data'][:40])!r}): {type(exc).__name__}: {exc}")
                continue
            if s.with_metadata:
                ts = r.get("ApproximateArrivalTimestamp")
                ms = int(ts.timestamp() * 1000) if isinstance(ts, datetime.datetime) else int((ts or 0) * 1000)
                value = KinesisRecord(value, r.get("PartitionKey", ""), r["SequenceNumber"], split.split_id,
                                      split.stream_name, ms)
            out.append(value)
        self.records_read += len(out)
        return out

    def _bad(self, split: KinesisShardSplit, sequence_number: str, reason: str) -> None:
        self.bad_records.inc()
        where = f"{split.stream_name}/{split.split_id}"
        if self._fail_bad:
            raise BadRecordError(where, int(sequence_number), reason)
        self._ctx.report_bad_record(where, int(sequence_number), reason)

    # -- checkpoints -----------------------------------------------------------------------
    def snapshot_state(self, checkpoint_id: int) -> list:
        """The unfinished shards with the sequence number of the last record returned, plus the
        finished markers not yet covered by the enumerator's checkpoints."""
        out = [copy.copy(x.split) for x in self._shards.values()]
        for entry in self._markers.values():
            if entry[1] is None:
                entry[1] = checkpoint_id
            out.append(copy.copy(entry[0]))
        return out

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Drop the finished markers that every later checkpoint's enumerator state covers.

        A marker first snapshotted in checkpoint ``c`` is dropped once checkpoint
        ``c + max-concurrent-checkpoints`` completed: the finish was reported before ``c``
        completed (the runtime's ordering), so every checkpoint triggered after ``c`` completed
        (all from ``c + max-concurrent-checkpoints`` on, one spare for a savepoint) has it in the
        enumerator's state, and every earlier one has the marker in this reader's state.
        """
        for sid in [sid for sid, (_, first) in self._markers.items()
                    if first is not None and checkpoint_id >= first + self._max_concurrent]:
            del self._markers[sid]

    def close(self) -> None:
        """Log the counters; drop the client."""
        self._client = None
        log.info("%s subtask %d: %d records read, %d bad, %d GetRecords calls, %d throttled (%d ms backoff), "
                 "%d transient errors, %d iterators renewed", self._source.resource, self._ctx.subtask_index,
                 self.records_read, self.bad_records.get_count(), self.get_records_calls.get_count(),
                 self.throttled.get_count(), self.backoff_ms.get_count(), self.transient_errors.get_count(),
                 self.iterators_renewed.get_count())
