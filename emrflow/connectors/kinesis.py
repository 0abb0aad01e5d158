"""Amazon Kinesis Data Streams sink: ``PutRecords`` batches with partial-failure retries (boto3).

Mirrors Flink's ``KinesisStreamsSink`` (an ``AsyncSinkWriter``): each subtask serializes
its records, packs them into ``PutRecords`` requests of at most 500 records and 5 MiB
(data plus partition keys, as Kinesis counts them), and sends up to
``max_in_flight_requests`` requests at once from background threads. When a request
succeeds only in part (``FailedRecordCount`` > 0), exactly the entries whose result carries
an ``ErrorCode`` (``ProvisionedThroughputExceededException``, ``InternalFailure``) are sent
again after an exponential backoff with jitter, up to ``max_attempts`` requests; then the
job fails, naming the stream and how many records failed, rather than dropping them.

Backpressure: the bytes of requests sent but not yet acknowledged are bounded by
``max_buffered_bytes``; when the bound is reached :meth:`KinesisWriter.write_batch` blocks
until a request finishes, which slows the task and, through credit-based flow control, the
job's sources. Nothing is buffered without bound.

Delivery: at-least-once. Every record before a checkpoint barrier is acknowledged by
Kinesis before the checkpoint is taken (the writer flushes at the barrier) and at the end
of the input; records sent after the last completed checkpoint are sent again after a
failover, so a reader may see duplicates, never a loss. Order within a partition key is
not kept when requests run in parallel or records are retried (as with Flink's sink).

Example::

    from emrflow.connectors.kinesis import KinesisSink
    events.sink_to(KinesisSink("clicks", partition_key=lambda e: e["user"]))
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import threading
import time
from typing import Any, Callable

from emrflow.connectors import _aws, _options
from emrflow.connectors.base import SinkWriter, SubtaskContext
from emrflow.errors import ConfigError, ConnectorError

log = logging.getLogger(__name__)

#: Kinesis's limits of one PutRecords request and of one record (data + partition key).
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 << 20
MAX_RECORD_BYTES = 1 << 20
#: Kinesis's longest partition key, in Unicode characters.
MAX_PARTITION_KEY_CHARS = 256
THROTTLED = "ProvisionedThroughputExceededException"


def json_serializer(record: Any) -> bytes:
    """The default serializer: compact UTF-8 JSON (tuples become arrays)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class KinesisSink(_aws.AwsSink):
    """Writes records to one Kinesis data stream (Flink's ``KinesisStreamsSink``).

    Args:
        stream_name: the stream; it must exist (checked with ``DescribeStreamSummary`` when
            each writer starts).
        partition_key: ``record -> str``, 1 to 256 characters; Kinesis hashes it (MD5) to
            pick the shard.
        serializer: ``record -> bytes``, the record's data; default :func:`json_serializer`.
        max_batch_records: records per ``PutRecords`` request, 1 to 500.
        max_batch_bytes: bytes (data plus partition keys) per request, up to 5 MiB.
        max_buffered_bytes: bytes of requests in flight (sent, not yet acknowledged) at
            most; a writer that would exceed it blocks. Default 16 MiB. A single request
            larger than the bound is sent alone.
        max_in_flight_requests: concurrent ``PutRecords`` requests per writer, >= 1.
        max_attempts: requests per record before the job fails while Kinesis keeps
            rejecting it (the first request counts), >= 1.
        initial_backoff_ms: wait before the first retry of failed records, in ms; it doubles
            per retry (with jitter) up to ``max_backoff_ms``.
        max_backoff_ms: longest wait between retries, in ms.
        max_time_in_buffer_ms: a partial request older than this is sent when the next
            records arrive, in ms (otherwise at the next checkpoint or the end of the input).
        region: AWS region; ``None``: the standard chain (``AWS_DEFAULT_REGION``, profile).
        endpoint_url: Kinesis endpoint; ``None``: ``AWS_ENDPOINT_URL_KINESIS``, else
            ``AWS_ENDPOINT_URL``, else AWS's own.

    Raises:
        ConfigError: an option is out of range (the message names it).
    """

    default_name = "Kinesis Sink"

    def __init__(self, stream_name: str, partition_key: Callable[[Any], str],
                 serializer: Callable[[Any], bytes] | None = None, *,
                 max_batch_records: int = MAX_BATCH_RECORDS, max_batch_bytes: int = MAX_BATCH_BYTES,
                 max_buffered_bytes: int = 16 << 20, max_in_flight_requests: int = 4,
                 max_attempts: int = 10, initial_backoff_ms: int = 100, max_backoff_ms: int = 10_000,
                 max_time_in_buffer_ms: int = 5_000, region: str | None = None,
                 endpoint_url: str | None = None):
        if not isinstance(stream_name, str) or not stream_name:
            raise ConfigError(f"KinesisSink: stream_name must be a non-empty string, got {stream_name!r}",
                              key="stream_name")
        owner = f"KinesisSink({stream_name!r})"
        _options.check_function(owner, "partition_key", partition_key, "record -> str", required=True)
        _options.check_function(owner, "serializer", serializer, "record -> bytes")
        _aws.check_int(owner, "max_batch_records", max_batch_records, 1, MAX_BATCH_RECORDS)
        _aws.check_int(owner, "max_batch_bytes", max_batch_bytes, 1, MAX_BATCH_BYTES)
        _aws.check_int(owner, "max_buffered_bytes", max_buffered_bytes, 1)
        _aws.check_int(owner, "max_in_flight_requests", max_in_flight_requests, 1)
        super().__init__(owner, max_attempts=max_attempts, initial_backoff_ms=initial_backoff_ms,
                         max_backoff_ms=max_backoff_ms, max_time_in_buffer_ms=max_time_in_buffer_ms,
                         region=region, endpoint_url=endpoint_url)
        self.stream_name = stream_name
        self.partition_key = partition_key
        self.serializer = serializer or json_serializer
        self.max_batch_records = max_batch_records
        self.max_batch_bytes = max_batch_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self.max_in_flight_requests = max_in_flight_requests

    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        """Return subtask ``ctx.subtask_index``'s writer (checks the stream: ``DescribeStreamSummary``).

        Raises:
            ConnectorError: the stream does not exist or cannot be described.
        """
        return KinesisWriter(self, ctx)


def failed_entries(entries: list[dict], response: dict) -> tuple[list[dict], collections.Counter]:
    """The entries of a ``PutRecords`` request that Kinesis did not write, and their error codes.

    Args:
        entries: the request's ``Records`` (``{"Data": ..., "PartitionKey": ...}``), in order.
        response: its response; ``Records`` holds one result per entry, in the same order,
            with ``ErrorCode`` and ``ErrorMessage`` for an entry that failed.

    Returns:
        ``(failed entries in request order, Counter of error codes)``.

    Raises:
        ConnectorError: the response does not hold one result per entry.
    """
    results = response.get("Records") or []
    if len(results) != len(entries):
        raise ConnectorError(f"PutRecords answered {len(results)} results for {len(entries)} records",
                             "Kinesis")
    failed = [e for e, r in zip(entries, results) if r.get("ErrorCode")]
    return failed, collections.Counter(r["ErrorCode"] for r in results if r.get("ErrorCode"))


def put_with_retries(put: Callable[[list], dict], stream: str, entries: list[dict], max_attempts: int,
                     backoff: _aws.Backoff, sleep: Callable[[float], None] = time.sleep) -> tuple[int, int]:
    """Send ``entries`` with ``PutRecords``, then only the failed ones again, with a backoff.

    Args:
        put: ``entries -> PutRecords response`` (a dict as boto3 returns it).
        stream: the stream's name, for messages.
        entries: at most 500 records of at most 5 MiB together.
        max_attempts: requests sent at most, >= 1.
        backoff: the delays between attempts.
        sleep: how to wait (seconds).

    Returns:
        ``(records sent again, records rejected with ProvisionedThroughputExceededException)``.

    Raises:
        ConnectorError: records still failed after ``max_attempts`` requests.
    """
    total = len(entries)
    throttled = 0
    codes: collections.Counter = collections.Counter()  # of the last response

    def failures(sent: list[dict], response: dict) -> list[dict] | None:
        nonlocal throttled, codes
        if not response.get("FailedRecordCount"):
            return None
        failed, codes = failed_entries(sent, response)
        throttled += codes.get(THROTTLED, 0)
        return failed

    def give_up(failed: list[dict]) -> ConnectorError:
        detail = ", ".join(f"{code} x{n}" for code, n in sorted(codes.items()))
        return ConnectorError(
            f"Kinesis stream {stream!r}: {len(failed)} of {total} records still failed after {max_attempts} "
            f"PutRecords attempts ({detail}); raise max_attempts or the stream's shard count; the job "
            "fails rather than drop them", f"Kinesis stream {stream!r}")

    retried = _aws.retry_failed(put, entries, failures, max_attempts, backoff, give_up, sleep)
    return retried, throttled


class KinesisWriter(_aws.AwsSinkWriter):
    """One subtask's writer of a :class:`KinesisSink`.

    The counters are on the operator's metric group (``ctx.metric_group``; REST and Prometheus,
    see ``docs/connectors.md``) and logged (INFO) when the writer finishes.

    Attributes:
        records_written: counter ``numRecordsSend`` (Flink's): records Kinesis acknowledged.
        bytes_written: counter ``numBytesSend`` (Flink's): their bytes, data plus partition key.
        records_retried: counter ``numRecordsOutErrors`` (Flink's): failed entries of a partial
            failure, each sent again.
        records_throttled: counter ``numThrottledRecords``: of those, the ones rejected with
            ``ProvisionedThroughputExceededException``.
        requests: counter ``numPutRecordsRequests``: ``PutRecords`` requests sent, retries included.
        peak_in_flight_bytes: the most bytes in flight at once (<= ``max_buffered_bytes``
            unless one request alone is larger); an int.
    """

    def __init__(self, sink: KinesisSink, ctx: SubtaskContext):
        super().__init__(sink, ctx, "kinesis", "KINESIS", f"Kinesis stream {sink.stream_name!r}")
        self._stream = sink.stream_name
        self._check_stream()
        self._batch_cap = min(sink.max_batch_bytes, sink.max_buffered_bytes)
        self._batch: list[dict] = []
        self._batch_bytes = 0
        self._oldest = 0.0
        self._pool = concurrent.futures.ThreadPoolExecutor(sink.max_in_flight_requests,
                                                           thread_name_prefix="kinesis-sink")
        self._cond = threading.Condition()
        self._in_flight_bytes = 0
        self._futures: list[concurrent.futures.Future] = []
        self._error: BaseException | None = None
        group = ctx.metric_group
        self.records_written = group.counter("numRecordsSend")
        self.bytes_written = group.counter("numBytesSend")
        self.records_retried = group.counter("numRecordsOutErrors")
        self.records_throttled = group.counter("numThrottledRecords")
        self.requests = group.counter("numPutRecordsRequests")
        self.peak_in_flight_bytes = 0

    def _check_stream(self) -> None:
        _aws.call_existing(self._client, self._resource, "DescribeStreamSummary",
                           lambda: self._client.describe_stream_summary(StreamName=self._stream))

    # -- records -------------------------------------------------------------------------
    def _entry(self, record: Any) -> tuple[dict, int]:
        where = self._where()
        data = self._sink.serializer(record)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ConnectorError(f"{self._resource}: the serializer gave a {type(data).__name__} for {where}, "
                                 "expected bytes", self._resource)
        key = self._sink.partition_key(record)
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_PARTITION_KEY_CHARS:
            raise ConnectorError(f"{self._resource}: the partition key of {where} must be a string of 1 to "
                                 f"{MAX_PARTITION_KEY_CHARS} characters, got {key!r:.300}", self._resource)
        size = len(data) + len(key.encode("utf-8"))
        if size > MAX_RECORD_BYTES:
            raise ConnectorError(f"{self._resource}: {where} is {size} bytes (data plus partition key), above "
                                 f"Kinesis's limit of {MAX_RECORD_BYTES} bytes (1 MiB) per record",
                                 self._resource)
        return {"Data": bytes(data), "PartitionKey": key}, size

    def write_batch(self, records: list) -> None:
        """Serialize ``records`` into requests; send each full one (blocks while the in-flight bound is reached).

        Raises:
            ConnectorError: a record is too large or its partition key invalid, or an earlier
                request failed for good.
        """
        self._raise_failure()
        sink = self._sink
        for record in records:
            entry, size = self._entry(record)
            self._index += 1
            if self._batch and (len(self._batch) >= sink.max_batch_records
                                or self._batch_bytes + size > self._batch_cap):
                self._submit()
            if not self._batch:
                self._oldest = time.monotonic()
            self._batch.append(entry)
            self._batch_bytes += size
        if self._batch and (len(self._batch) >= sink.max_batch_records
                            or time.monotonic() - self._oldest >= sink.max_time_in_buffer_ms / 1000):
            self._submit()

    def _submit(self) -> None:
        entries, nbytes = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        with self._cond:
            # backpressure: wait while the request would push the bytes in flight over the bound
            while (self._error is None and self._in_flight_bytes
                   and self._in_flight_bytes + nbytes > self._sink.max_buffered_bytes):
                self._cond.wait(1.0)
            self._raise_failure()
            self._in_flight_bytes += nbytes
            self.peak_in_flight_bytes = max(self.peak_in_flight_bytes, self._in_flight_bytes)
        self._futures = [f for f in self._futures if not f.done()]
        self._futures.append(self._pool.submit(self._send, entries, nbytes))

    def _send(self, entries: list[dict], nbytes: int) -> None:
        try:
            retried, throttled = put_with_retries(self._put, self._stream, entries, self._sink.max_attempts,
                                                  self._backoff)
            with self._cond:
                self.records_written.inc(len(entries))
                self.bytes_written.inc(nbytes)
                self.records_retried.inc(retried)
                self.records_throttled.inc(throttled)
        except BaseException as exc:  # noqa: BLE001 - handed to the task thread
            with self._cond:
                if self._error is None:
                    self._error = exc
        finally:
            with self._cond:
                self._in_flight_bytes -= nbytes
                self._cond.notify_all()

    def _put(self, entries: list[dict]) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError
        with self._cond:
            self.requests.inc()
        try:
            return self._client.put_records(StreamName=self._stream, Records=entries)
        except (ClientError, BotoCoreError) as exc:
            raise _aws.translate(exc, self._resource, "PutRecords") from exc

    def _raise_failure(self) -> None:
        if self._error is not None:
            exc = self._error
            raise exc

    def flush(self) -> None:
        """Send the partial request and wait until Kinesis acknowledged every record.

        Raises:
            ConnectorError: a request failed for good.
        """
        self._raise_failure()
        if self._batch:
            self._submit()
        concurrent.futures.wait(self._futures)
        self._futures = []
        self._raise_failure()

    # -- checkpoints and the end of the input ---------------------------------------------
    def prepare_commit(self) -> None:
        """Flush at the end of the input."""
        self.flush()
        return None

    def commit(self) -> None:
        """Nothing to publish (records are visible once acknowledged); stop the sender threads."""
        self._close()

    def abort(self, discard_pending: bool = True) -> None:
        """Drop unsent records (replayed after a restore) and stop; records sent stay in the stream."""
        self._batch, self._batch_bytes = [], 0
        self._close()

    def _close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        log.info("%s subtask %d: %d records written, %d retried, %d throttled, %d requests",
                 self._resource, self._ctx.subtask_index, self.records_written.get_count(),
                 self.records_retried.get_count(), self.records_throttled.get_count(), self.requests.get_count())
