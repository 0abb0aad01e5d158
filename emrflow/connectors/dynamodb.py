"""Amazon DynamoDB sink: idempotent upserts with ``BatchWriteItem`` (boto3).

Each record becomes one item, written with ``PutItem`` semantics (the whole item is
replaced), so writing a record again leaves the table as it was: a replay after a failover
(at-least-once delivery) ends with the same table as a run without failure, as long as the
records for one primary key reach the sink in the same order (key the stream by the table's
primary key before the sink, as Flink users do with its ``DynamoDbSink``).

Per subtask the writer buffers items, keeping only the *last* item per primary key (two
writes to one key in one ``BatchWriteItem`` are rejected by DynamoDB, and the last write wins
anyway), and sends them in requests of at most 25 items. Items DynamoDB reports in
``UnprocessedItems`` are sent again after an exponential backoff with jitter, up to
``max_attempts`` requests; then the job fails, naming the table and the items left, rather
than dropping them. The buffer is flushed at every checkpoint barrier (Flink's
``AsyncSinkWriter.flush`` in ``prepareCommit``) and at the end of the input.

Example (a running count per user, one item per user)::

    from emrflow.connectors.dynamodb import DynamoDbSink
    (counts.key_by(lambda r: r[0])
        .sink_to(DynamoDbSink("user-counts", lambda r: {"user": r[0], "count": r[1]})))
"""

from __future__ import annotations

import decimal
import logging
import time
from typing import Any, Callable

from emrflow.connectors import _aws, _options
from emrflow.connectors.base import SinkWriter, SubtaskContext
from emrflow.errors import ConfigError, ConnectorError

log = logging.getLogger(__name__)

#: DynamoDB's limit of items per BatchWriteItem request.
MAX_BATCH_ITEMS = 25


class DynamoDbSink(_aws.AwsSink):
    """Writes records as items of one DynamoDB table (Flink's ``DynamoDbSink``, PutItem only).

    Args:
        table_name: the table; it must exist (its key schema is read with ``DescribeTable``
            when each writer starts).
        item: ``record -> dict`` giving the item's attributes (Python values: ``str``,
            ``int``, ``float`` (stored as a DynamoDB number via ``Decimal(repr(x))``),
            ``decimal.Decimal``, ``bool``, ``None``, ``bytes``, ``list``, ``dict``, ``set``);
            default: the record itself, which must then be a ``dict``.
        batch_size: items per ``BatchWriteItem`` request, 1 to 25.
        max_attempts: requests per batch before the job fails while DynamoDB keeps items
            unprocessed (the first request counts), >= 1.
        initial_backoff_ms: wait before the first retry of unprocessed items, in ms; it
            doubles per retry (with jitter) up to ``max_backoff_ms``.
        max_backoff_ms: longest wait between retries, in ms.
        max_time_in_buffer_ms: a partial batch older than this is sent when the next
            records arrive, in ms (a partial batch is otherwise sent at the next checkpoint
            or at the end of the input).
        region: AWS region; ``None``: the standard chain (``AWS_DEFAULT_REGION``, profile).
        endpoint_url: DynamoDB endpoint; ``None``: ``AWS_ENDPOINT_URL_DYNAMODB``, else
            ``AWS_ENDPOINT_URL``, else AWS's own.

    Raises:
        ConfigError: an option is out of range (the message names it).

    Delivery: at-least-once writes of idempotent upserts; the final table is exact after a
    failover when each key's records arrive in a deterministic order. Items written before
    a failure stay in the table (DynamoDB has no transaction spanning a checkpoint).
    """

    default_name = "DynamoDB Sink"

    def __init__(self, table_name: str, item: Callable[[Any], dict] | None = None, *,
                 batch_size: int = MAX_BATCH_ITEMS, max_attempts: int = 10, initial_backoff_ms: int = 50,
                 max_backoff_ms: int = 5_000, max_time_in_buffer_ms: int = 5_000,
                 region: str | None = None, endpoint_url: str | None = None):
        if not isinstance(table_name, str) or not table_name:
            raise ConfigError(f"DynamoDbSink: table_name must be a non-empty string, got {table_name!r}",
                              key="table_name")
        owner = f"DynamoDbSink({table_name!r})"
        _options.check_function(owner, "item", item, "record -> dict")
        _aws.check_int(owner, "batch_size", batch_size, 1, MAX_BATCH_ITEMS)
        super().__init__(owner, max_attempts=max_attempts, initial_backoff_ms=initial_backoff_ms,
                         max_backoff_ms=max_backoff_ms, max_time_in_buffer_ms=max_time_in_buffer_ms,
                         region=region, endpoint_url=endpoint_url)
        self.table_name = table_name
        self.item = item
        self.batch_size = batch_size

    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        """Return subtask ``ctx.subtask_index``'s writer (reads the key schema: ``DescribeTable``).

        Raises:
            ConnectorError: the table does not exist or cannot be described.
        """
        return DynamoDbWriter(self, ctx)


def _to_attribute_value(value: Any) -> Any:
    """Python floats become Decimals (DynamoDB numbers); everything else is left to boto3."""
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_attribute_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_attribute_value(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return {_to_attribute_value(v) for v in value}
    return value


def _key_part(av: dict) -> tuple:
    """A hashable form of a key AttributeValue; numbers compare by value (``1`` == ``1.0``)."""
    (kind, value), = av.items()
    if kind == "N":
        return (kind, decimal.Decimal(value).normalize())
    return (kind, value)


def send_with_retries(send: Callable[[list], dict], table: str, requests: list, max_attempts: int,
                      backoff: _aws.Backoff, sleep: Callable[[float], None] = time.sleep) -> int:
    """Send ``requests`` (``{"PutRequest": ...}`` dicts) with ``BatchWriteItem``, again and again
    for what the response lists in ``UnprocessedItems``, with a backoff before each retry.

    Args:
        send: ``requests -> BatchWriteItem response`` (a dict as boto3 returns it).
        table: the table name (the key of ``RequestItems`` and ``UnprocessedItems``).
        requests: at most 25 write requests.
        max_attempts: requests sent at most, >= 1.
        backoff: the delays between attempts.
        sleep: how to wait (seconds).

    Returns:
        How many write requests were sent again (the sum over retries).

    Raises:
        ConnectorError: items were still unprocessed after ``max_attempts`` requests.
    """
    total = len(requests)

    def unprocessed(_sent: list, response: dict) -> list | None:
        return (response.get("UnprocessedItems") or {}).get(table) or None

    def give_up(failed: list) -> ConnectorError:
        return ConnectorError(
            f"DynamoDB table {table!r}: {len(failed)} of {total} items still unprocessed "
            f"after {max_attempts} BatchWriteItem attempts (raise max_attempts or the table's "
            "write capacity); the job fails rather than drop them", f"DynamoDB table {table!r}")

    return _aws.retry_failed(send, requests, unprocessed, max_attempts, backoff, give_up, sleep)


class DynamoDbWriter(_aws.AwsSinkWriter):
    """One subtask's writer of a :class:`DynamoDbSink` (buffer, de-duplicate, batch, retry).

    The counters are on the operator's metric group (``ctx.metric_group``; REST and Prometheus,
    see ``docs/connectors.md``) and logged (INFO) when the writer finishes.

    Attributes:
        items_written: counter ``numRecordsSend`` (Flink's): items DynamoDB accepted (after
            de-duplication).
        items_deduplicated: counter ``numRecordsDeduplicated``: items replaced in the buffer by a
            later item with the same key.
        items_retried: counter ``numRecordsOutErrors`` (Flink's): write requests sent again
            because DynamoDB left them unprocessed.
        requests: counter ``numBatchWriteItemRequests``: ``BatchWriteItem`` requests sent,
            retries included.
    """

    def __init__(self, sink: DynamoDbSink, ctx: SubtaskContext):
        from boto3.dynamodb.types import TypeSerializer
        super().__init__(sink, ctx, "dynamodb", "DYNAMODB", f"DynamoDB table {sink.table_name!r}")
        self._table = sink.table_name
        self._serializer = TypeSerializer()
        self.key_names = self._describe_key()
        self._item = sink.item
        self._pending: dict[tuple, dict] = {}  # primary key -> serialized item, oldest first
        self._oldest = 0.0
        group = ctx.metric_group
        self.items_written = group.counter("numRecordsSend")
        self.items_deduplicated = group.counter("numRecordsDeduplicated")
        self.items_retried = group.counter("numRecordsOutErrors")
        self.requests = group.counter("numBatchWriteItemRequests")

    def _describe_key(self) -> list[str]:
        table = _aws.call_existing(self._client, self._resource, "DescribeTable",
                                   lambda: self._client.describe_table(TableName=self._table)["Table"])
        return [k["AttributeName"] for k in table["KeySchema"]]

    # -- records ---------------------------------------------------------------------
    def _serialize(self, record: Any) -> tuple[tuple, dict]:
        where = self._where()
        item = record if self._item is None else self._item(record)
        if not isinstance(item, dict):
            hint = "" if self._item is not None else " (pass item=record -> dict to convert records)"
            raise ConnectorError(f"{self._resource}: {where} is a {type(item).__name__}, expected a dict of "
                                 f"attributes{hint}: {item!r:.200}", self._resource)
        missing = [k for k in self.key_names if item.get(k) is None]
        if missing:
            raise ConnectorError(f"{self._resource}: {where} lacks the key attribute {missing[0]!r} "
                                 f"(the table's key is {self.key_names}): {item!r:.200}", self._resource)
        try:
            av = {str(k): self._serializer.serialize(_to_attribute_value(v)) for k, v in item.items()}
        except (TypeError, decimal.DecimalException) as exc:
            raise ConnectorError(f"{self._resource}: {where} cannot be a DynamoDB item: {exc}: {item!r:.200}",
                                 self._resource) from None
        return tuple(_key_part(av[k]) for k in self.key_names), av

    def write_batch(self, records: list) -> None:
        """Buffer ``records`` as items (last one per key wins); send every full batch.

        Raises:
            ConnectorError: a record is no item of the table, or DynamoDB refused a batch.
        """
        pending = self._pending
        for record in records:
            key, av = self._serialize(record)
            self._index += 1
            if not pending:
                self._oldest = time.monotonic()
            if pending.pop(key, None) is not None:
                self.items_deduplicated.inc()
            pending[key] = av
            if len(pending) >= self._sink.batch_size:
                self._send_batch()
        if pending and time.monotonic() - self._oldest >= self._sink.max_time_in_buffer_ms / 1000:
            self.flush()

    def _send_batch(self) -> None:
        pending = self._pending
        keys = list(pending)[: self._sink.batch_size]
        requests = [{"PutRequest": {"Item": pending.pop(k)}} for k in keys]
        self._oldest = time.monotonic()
        self.items_retried.inc(send_with_retries(self._call, self._table, requests, self._sink.max_attempts,
                                                 self._backoff))
        self.items_written.inc(len(requests))

    def _call(self, requests: list) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError
        self.requests.inc()
        try:
            return self._client.batch_write_item(RequestItems={self._table: requests})
        except (ClientError, BotoCoreError) as exc:
            raise _aws.translate(exc, self._resource, "BatchWriteItem") from exc

    def flush(self) -> None:
        """Send every buffered item; returns when DynamoDB has accepted them all.

        Raises:
            ConnectorError: DynamoDB refused a batch or left items unprocessed ``max_attempts`` times.
        """
        while self._pending:
            self._send_batch()

    # -- checkpoints and the end of the input ---------------------------------------------
    def prepare_commit(self) -> None:
        """Flush at the end of the input."""
        self.flush()
        self._log()
        return None

    def abort(self, discard_pending: bool = True) -> None:
        """Drop the buffer (its records are replayed after a restore); written items stay."""
        self._pending.clear()
        self._log()

    def _log(self) -> None:
        log.info("%s subtask %d: %d items written, %d de-duplicated in the buffer, %d retried, %d requests",
                 self._resource, self._ctx.subtask_index, self.items_written.get_count(),
                 self.items_deduplicated.get_count(), self.items_retried.get_count(), self.requests.get_count())
