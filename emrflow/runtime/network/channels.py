"""Channels between subtasks: in-process and TCP, both with credit-based flow control.

A producer subtask writes *buffers* (lists of records) and events into one
channel per consumer subtask. Every channel starts with ``credits`` credits
(``taskmanager.network.memory.buffers-per-channel``); sending a buffer or an
event spends one, and the consumer returns one when it has *processed* a
buffer. A producer without credit blocks, so a slow consumer slows its
producers (backpressure) and at most ``credits`` buffers per channel are in
flight, whatever the speeds (Flink's credit-based flow control).

* :class:`LocalChannel`: producer and consumer in the same slot process; the
  list object itself is handed over (no serialisation).
* :class:`RemoteChannel`: a TCP connection to the consumer's slot process; a
  buffer is one pickled frame (:func:`dumps_buffer`: one pickle of the whole
  list, never one per record), a :class:`~emrflow.runtime.network.columns.ColumnBatch`
  one Arrow IPC stream frame. Credits come back on the same connection.

On the consumer side an :class:`InputGate` merges all channels of a subtask
into one queue; the :class:`DataServer` of the slot process accepts TCP
channels and feeds the gates.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import pickle
import queue
import socket
import struct
import threading
import time
from typing import Any, Callable

from emrflow.runtime.network.columns import ColumnBatch
from emrflow.runtime.rpc import ConnectionClosed, recv_exact

log = logging.getLogger(__name__)

# kinds of gate queue entries and of frames on a TCP channel
RECORDS = 0    # a list of records (local channels)
BYTES = 1      # a pickled list of records (TCP channels)
EVENT = 2      # an in-band event object
CREDIT = 3     # consumer -> producer: credits returned (TCP only)
BROKEN = 4     # the channel failed; payload is the reason (gate entries only)
COLUMNS = 5    # a ColumnBatch as an Arrow IPC stream (TCP channels)

_HDR = struct.Struct("!IB")
_CREDIT_FRAME = _HDR.pack(0, CREDIT)


def dumps_buffer(records: list) -> bytes:
    """Pickle one buffer of records (protocol 5) for a TCP channel; ``pickle.loads`` reads it.

    The pickler runs in fast mode (no memo): records are values, so objects shared
    between records need not stay shared on the other side (each record arrives
    as if serialised on its own, as in Flink), and skipping the memo makes
    pickling a buffer of tuples about a quarter cheaper. A buffer whose
    objects refer to themselves (which fast mode refuses) is pickled the usual way.

    Args:
        records: the buffer.

    Returns:
        The pickle.
    """
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=5)
    pickler.fast = True
    try:
        pickler.dump(records)
    except (ValueError, RecursionError):  # a cyclic object: fast mode cannot pickle it
        return pickle.dumps(records, protocol=5)
    return out.getvalue()


class Cancelled(Exception):
    """The subtask was cancelled while it waited on a channel."""


class InputGate:
    """The merged input channels of one consumer subtask.

    Args:
        num_channels: number of producer channels feeding the subtask.
        cancel: set when the subtask is cancelled; waits end with :class:`Cancelled`.
    """

    def __init__(self, num_channels: int, cancel: threading.Event):
        self.num_channels = num_channels
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self._credit_return: list[Callable[[], None] | None] = [None] * num_channels
        self._cancel = cancel

    def attach(self, channel_index: int, credit_return: Callable[[], None]) -> None:
        """Register how credits of channel ``channel_index`` go back to its producer."""
        self._credit_return[channel_index] = credit_return

    def get(self, timeout_s: float) -> tuple[int, int, Any] | None:
        """Return the next ``(channel, kind, payload)``, or ``None`` after ``timeout_s`` seconds.

        Raises:
            Cancelled: the subtask was cancelled.
        """
        try:
            return self.queue.get(timeout=timeout_s)
        except queue.Empty:
            if self._cancel.is_set():
                raise Cancelled() from None
            return None

    def ack(self, channel_index: int) -> None:
        """Return one credit to the producer of ``channel_index`` (a buffer was processed)."""
        ret = self._credit_return[channel_index]
        if ret is not None:
            ret()


class _Credits:
    """A credit counter a producer blocks on; wakes up on cancellation."""

    def __init__(self, credits: int, cancel: threading.Event):
        self._sem = threading.Semaphore(credits)
        self._cancel = cancel

    def take(self) -> float:
        """Take one credit, blocking while there is none; returns seconds spent waiting."""
        if self._sem.acquire(blocking=False):
            return 0.0
        start = time.perf_counter()
        while not self._sem.acquire(timeout=0.2):
            if self._cancel.is_set():
                raise Cancelled()
        return time.perf_counter() - start

    def give(self, n: int = 1) -> None:
        self._sem.release(n)


class LocalChannel:
    """A channel to a consumer subtask in the same process (no serialisation)."""

    def __init__(self, gate: InputGate, channel_index: int, credits: int, cancel: threading.Event):
        self._gate = gate
        self._index = channel_index
        self._credits = _Credits(credits, cancel)
        gate.attach(channel_index, self._credits.give)

    def send_records(self, records: list) -> float:
        """Send a buffer; returns seconds spent waiting for credit (back-pressured time)."""
        waited = self._credits.take()
        self._gate.queue.put((self._index, RECORDS, records))
        return waited

    def send_event(self, event: Any) -> float:
        """Send an in-band event; returns seconds spent waiting for credit."""
        waited = self._credits.take()
        self._gate.queue.put((self._index, EVENT, event))
        return waited

    def close(self) -> None:
        """Nothing to release for an in-process channel."""


class RemoteChannel:
    """A TCP channel to a consumer subtask in another slot process.

    Args:
        address: ``(host, port)`` of the consumer's :class:`DataServer`.
        secret: cluster secret (checked by the server before anything else).
        job_id, vertex_id, subtask_index: which consumer subtask.
        channel_index: this channel's index in the consumer's input gate.
        credits: initial credits.
        cancel: the producer subtask's cancel flag.
    """

    def __init__(self, address: tuple[str, int], secret: str, job_id: str, vertex_id: int,
                 subtask_index: int, channel_index: int, credits: int, cancel: threading.Event):
        self._credits = _Credits(credits, cancel)
        self._sock = socket.create_connection(address, timeout=30)
        self._sock.settimeout(None)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = json.dumps({"secret": secret, "job_id": job_id, "vertex": vertex_id,
                            "subtask": subtask_index, "channel": channel_index}).encode()
        self._sock.sendall(struct.pack("!I", len(hello)) + hello)
        self._reader = threading.Thread(target=self._read_credits, daemon=True,
                                        name=f"credits-{vertex_id}.{subtask_index}.{channel_index}")
        self._reader.start()

    def _read_credits(self) -> None:
        try:
            while True:
                n, kind = _HDR.unpack(recv_exact(self._sock, _HDR.size))
                if kind == CREDIT:
                    self._credits.give(1)
        except (OSError, ConnectionClosed):
            # connection closed: either we closed it, or the consumer went away and the
            # job is being failed by the JobManager; a blocked producer sees cancel
            return

    def send_records(self, records: list) -> float:
        """Serialise and send a buffer (a list, pickled; a column batch, as Arrow IPC); returns
        seconds spent waiting for credit."""
        waited = self._credits.take()
        if type(records) is ColumnBatch:
            data, kind = records.to_bytes(), COLUMNS
        else:
            data, kind = dumps_buffer(records), BYTES
        self._sock.sendall(_HDR.pack(len(data), kind) + data)
        return waited

    def send_event(self, event: Any) -> float:
        """Send an in-band event; returns seconds spent waiting for credit."""
        waited = self._credits.take()
        data = pickle.dumps(event, protocol=5)
        self._sock.sendall(_HDR.pack(len(data), EVENT) + data)
        return waited

    def close(self) -> None:
        """Close the connection after everything sent was written."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._reader.join(timeout=5)
        self._sock.close()


class DataServer:
    """Accepts TCP channels for the subtasks of one slot process.

    Args:
        host: interface to listen on.
        secret: cluster secret; a connection with another secret is closed unread.
    """

    def __init__(self, host: str, secret: str):
        self._secret = secret.encode()
        self._sock = socket.create_server((host, 0))
        self.address = (host, self._sock.getsockname()[1])
        self._gates: dict[tuple[str, int, int], InputGate] = {}
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True, name="data-server").start()

    def register(self, job_id: str, vertex_id: int, subtask_index: int, gate: InputGate) -> None:
        """Make ``gate`` reachable for producers of that consumer subtask."""
        with self._cond:
            self._gates[(job_id, vertex_id, subtask_index)] = gate
            self._cond.notify_all()

    def unregister(self, job_id: str, vertex_id: int, subtask_index: int) -> None:
        """Forget the gate of one consumer subtask (it was cancelled and will be deployed again)."""
        with self._cond:
            self._gates.pop((job_id, vertex_id, subtask_index), None)

    def unregister_job(self, job_id: str) -> None:
        """Forget the gates of ``job_id``."""
        with self._cond:
            for k in [k for k in self._gates if k[0] == job_id]:
                del self._gates[k]

    def close(self) -> None:
        """Stop accepting channels."""
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                sock, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True, name="channel-in").start()

    def _serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.settimeout(30)
            (n,) = struct.unpack("!I", recv_exact(sock, 4))
            if n > 4096:
                raise ValueError("oversized channel hello")
            hello = json.loads(bytes(recv_exact(sock, n)))
            if not hmac.compare_digest(str(hello.get("secret", "")).encode(), self._secret):
                raise ValueError("wrong secret")
            key = (hello["job_id"], int(hello["vertex"]), int(hello["subtask"]))
            channel = int(hello["channel"])
            sock.settimeout(None)
        except (OSError, ConnectionClosed, ValueError, KeyError, TypeError):
            sock.close()
            return
        deadline = time.monotonic() + 60
        with self._cond:
            while key not in self._gates:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    sock.close()
                    return
                self._cond.wait(left)
            gate = self._gates[key]
        send_lock = threading.Lock()

        def give_credit() -> None:
            try:
                with send_lock:
                    sock.sendall(_CREDIT_FRAME)
            except OSError:
                pass  # producer gone: it ended or failed; nothing to return credit to

        gate.attach(channel, give_credit)
        put = gate.queue.put
        ended = False
        try:
            while True:
                n, kind = _HDR.unpack(recv_exact(sock, _HDR.size))
                payload = recv_exact(sock, n)
                if kind == EVENT:
                    ev = pickle.loads(payload)
                    ended = type(ev).__name__ == "EndOfPartition"
                    put((channel, EVENT, ev))
                elif kind == COLUMNS:
                    put((channel, COLUMNS, payload))
                else:
                    put((channel, BYTES, payload))
        except (OSError, ConnectionClosed) as exc:
            if not ended:
                put((channel, BROKEN, f"input channel {channel} lost its producer: {exc}"))
        finally:
            sock.close()
