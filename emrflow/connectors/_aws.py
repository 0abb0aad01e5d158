"""What the AWS connectors share: a boto3 client per writer, retry pacing, error translation,
the sinks' common options (:class:`AwsSink`) and writer setup (:class:`AwsSinkWriter`).

The botocore client retries whole requests that fail with a throttling or server error
(its ``standard`` retry mode); the sinks themselves retry the entries a *successful*
request reports as not written (DynamoDB's ``UnprocessedItems``, Kinesis's per-record
``ErrorCode``), since botocore does not.
"""

from __future__ import annotations

import os
import random
import time
from abc import abstractmethod
from typing import Any, Callable, TypeVar

from emrflow.connectors._options import check_int
from emrflow.connectors.base import Sink, SinkWriter, SubtaskContext
from emrflow.errors import ConfigError, ConnectorError

T = TypeVar("T")

#: botocore's own retries of a whole request (throttling, 5xx, connection errors) after the first
#: attempt: botocore's ``Config(retries={"max_attempts": n})`` counts retries, so 5 means at most
#: 6 requests (the ``AWS_MAX_ATTEMPTS`` variable and ``total_max_attempts`` count the first one too).
CLIENT_MAX_ATTEMPTS = 5


def endpoint_for(service_env: str, endpoint_url: str | None) -> str | None:
    """The endpoint URL to use: ``endpoint_url``, else ``AWS_ENDPOINT_URL_<SERVICE>``, else
    ``AWS_ENDPOINT_URL``, else ``None`` (AWS's own), as the AWS CLI reads them.

    Args:
        service_env: the service's suffix of the environment variable (``"DYNAMODB"``, ``"KINESIS"``).
        endpoint_url: the sink's explicit option, or ``None``.
    """
    return (endpoint_url or os.environ.get(f"AWS_ENDPOINT_URL_{service_env}")
            or os.environ.get("AWS_ENDPOINT_URL") or None)


def make_client(service: str, service_env: str, region: str | None, endpoint_url: str | None,
                owner: str, max_attempts: int = CLIENT_MAX_ATTEMPTS, session: Any = None) -> Any:
    """A boto3 client for ``service`` with botocore's ``standard`` retries.

    Args:
        service: boto3's service name (``"dynamodb"``, ``"kinesis"``).
        service_env: suffix of the service's endpoint environment variable.
        region: AWS region, or ``None`` for the standard chain (``AWS_DEFAULT_REGION``, profile).
        endpoint_url: explicit endpoint, or ``None`` (see :func:`endpoint_for`).
        owner: the sink, for messages (``"DynamoDbSink('orders')"``).
        max_attempts: botocore's ``max_attempts`` (retries after the first attempt; 0: none, as
            the Kinesis source's reader wants: it retries throttled reads per shard itself).
        session: a ``boto3.session.Session`` to create the client from (one reused by many
            clients saves loading the service model each time); ``None``: a new one.

    Raises:
        ConfigError: no region is configured anywhere.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError
    config = Config(retries={"mode": "standard", "max_attempts": max_attempts},
                    connect_timeout=10, read_timeout=60)
    try:
        return (session or boto3.session.Session()).client(service, region_name=region,
                                              endpoint_url=endpoint_for(service_env, endpoint_url),
                                              config=config)
    except NoRegionError:
        raise ConfigError(f"{owner}: no AWS region; pass region=... or set AWS_DEFAULT_REGION",
                          key="region") from None


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for other exceptions)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def translate(exc: BaseException, resource: str, action: str) -> ConnectorError:
    """A one-line :class:`ConnectorError` for a failed AWS call (botocore's own retries are spent).

    Args:
        exc: what boto3 raised.
        resource: the table or stream (``"DynamoDB table 'orders'"``).
        action: the API call (``"BatchWriteItem"``).
    """
    code = error_code(exc)
    if code == "ResourceNotFoundException":
        return ConnectorError(f"{resource} does not exist (or was deleted): {action} failed: {exc}", resource)
    return ConnectorError(f"{resource}: {action} failed: {exc}", resource)


def call_existing(client: Any, resource: str, action: str, call: Callable[[], T],
                  hint: str = "create it first") -> T:
    """Run ``call``, requests on ``client`` about ``resource`` that find out whether it exists
    (``DescribeTable``, ``ListShards`` ...), and translate their failures.

    Args:
        client: the boto3 client ``call`` uses (its region and endpoint go into the message).
        resource: the table or stream (``"Kinesis stream 'clicks'"``).
        action: the API call, for messages (``"DescribeStreamSummary"``).
        call: the requests; what it returns is returned.
        hint: what the message of a missing resource advises.

    Raises:
        ConnectorError: ``resource`` does not exist (naming region, endpoint and ``hint``), or
            the call failed otherwise (see :func:`translate`).
    """
    from botocore.exceptions import BotoCoreError, ClientError
    try:
        return call()
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            raise ConnectorError(f"{resource} does not exist in region {client.meta.region_name} "
                                 f"(endpoint {client.meta.endpoint_url}); {hint}", resource) from None
        raise translate(exc, resource, action) from exc
    except BotoCoreError as exc:
        raise translate(exc, resource, action) from exc


class Backoff:
    """Exponential backoff with jitter (AWS's "equal jitter"): before retry ``n`` (1, 2, ...) wait
    between half and all of ``min(max_ms, initial_ms * 2 ** (n - 1))`` milliseconds.

    Args:
        initial_ms: the first delay in milliseconds.
        max_ms: the largest delay in milliseconds.
        rng: random source (seedable in tests).
    """

    def __init__(self, initial_ms: int, max_ms: int, rng: random.Random | None = None):
        self.initial_ms, self.max_ms = initial_ms, max_ms
        self._rng = rng or random.Random()

    def delay_s(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        cap = min(self.max_ms, self.initial_ms * 2 ** min(retry - 1, 30))
        return (cap / 2 + self._rng.uniform(0, cap / 2)) / 1000.0


def check_retry_options(owner: str, max_attempts: int, initial_backoff_ms: int, max_backoff_ms: int) -> None:
    """Raise :class:`ConfigError` naming the option when a retry option is out of range."""
    check_int(owner, "max_attempts", max_attempts, 1)
    check_int(owner, "initial_backoff_ms", initial_backoff_ms, 0)
    check_int(owner, "max_backoff_ms", max_backoff_ms, initial_backoff_ms)



def retry_failed(send: Callable[[list], T], entries: list, failures: Callable[[list, T], list | None],
                 max_attempts: int, backoff: Backoff, give_up: Callable[[list], Exception],
                 sleep: Callable[[float], None] = time.sleep) -> int:
    """Send ``entries`` in one request, then again only the entries its response reports as not
    written, with a backoff before each retry (botocore retries only whole requests).

    Args:
        send: ``entries -> response`` (one request).
        entries: what to write.
        failures: ``(entries sent, response) -> entries to send again``; ``None`` when the
            response reports every entry written.
        max_attempts: requests sent at most, >= 1.
        backoff: the delays between attempts.
        give_up: ``entries still failed -> exception`` raised after ``max_attempts`` requests.
        sleep: how to wait (seconds).

    Returns:
        How many entries were sent again (the sum over retries).

    Raises:
        Exception: what ``give_up`` returns, when entries still failed after ``max_attempts`` requests.
    """
    retried = 0
    attempt = 1
    while True:
        failed = failures(entries, send(entries))
        if failed is None:
            return retried
        if attempt >= max_attempts:
            raise give_up(failed)
        retried += len(failed)
        sleep(backoff.delay_s(attempt))
        entries = failed
        attempt += 1


class AwsSink(Sink):
    """The options every AWS sink shares (as Flink's ``AsyncSinkBase`` and its AWS sinks): retries
    of entries a request did not write, the age of a partial batch, the region and endpoint.

    Args:
        owner: the sink, for messages (``"KinesisSink('clicks')"``).
        max_attempts: requests per entry before the job fails while AWS keeps rejecting it
            (the first request counts), >= 1.
        initial_backoff_ms: wait before the first retry, in ms; it doubles per retry (with
            jitter) up to ``max_backoff_ms``.
        max_backoff_ms: longest wait between retries, in ms.
        max_time_in_buffer_ms: a partial batch older than this is sent when the next records
            arrive, in ms.
        region: AWS region; ``None``: the standard chain (``AWS_DEFAULT_REGION``, profile).
        endpoint_url: the service's endpoint; ``None``: ``AWS_ENDPOINT_URL_<SERVICE>``, else
            ``AWS_ENDPOINT_URL``, else AWS's own.

    Raises:
        ConfigError: an option is out of range (the message names it).
    """

    def __init__(self, owner: str, *, max_attempts: int, initial_backoff_ms: int, max_backoff_ms: int,
                 max_time_in_buffer_ms: int, region: str | None, endpoint_url: str | None):
        check_retry_options(owner, max_attempts, initial_backoff_ms, max_backoff_ms)
        check_int(owner, "max_time_in_buffer_ms", max_time_in_buffer_ms, 0)
        self.owner = owner
        self.max_attempts = max_attempts
        self.initial_backoff_ms = initial_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.max_time_in_buffer_ms = max_time_in_buffer_ms
        self.region = region
        self.endpoint_url = endpoint_url


class AwsSinkWriter(SinkWriter):
    """What the writers of an :class:`AwsSink` share: the client, the retry backoff, the count
    of records seen (for messages) and a flush at every checkpoint barrier.

    Args:
        sink: the sink.
        ctx: the subtask.
        service: boto3's service name (``"kinesis"``).
        service_env: suffix of the service's endpoint environment variable (``"KINESIS"``).
        resource: the table or stream, for messages (``"Kinesis stream 'clicks'"``).

    Raises:
        ConfigError: no region is configured anywhere.
    """

    def __init__(self, sink: AwsSink, ctx: SubtaskContext, service: str, service_env: str, resource: str):
        self._sink = sink
        self._ctx = ctx
        self._resource = resource
        self._client = make_client(service, service_env, sink.region, sink.endpoint_url, sink.owner)
        self._backoff = Backoff(sink.initial_backoff_ms, sink.max_backoff_ms)
        self._index = 0  # records seen by this writer, for messages

    def _where(self) -> str:
        """The record being written, for messages."""
        return f"record {self._index} of subtask {self._ctx.subtask_index}"

    @abstractmethod
    def flush(self) -> None:
        """Send every buffered record; return when AWS has written them all."""

    def snapshot_state(self, checkpoint_id: int) -> None:
        """Flush at the barrier: every record before it is written when the checkpoint completes."""
        self.flush()
        return None
