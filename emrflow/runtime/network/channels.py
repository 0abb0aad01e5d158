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
* :class:`RemoteChannel`: a connection to the consumer's slot process; a
  buffer is one pickled frame (:func:`dumps_buffer`: one pickle of the whole
  list, never one per record), a :class:`~emrflow.runtime.network.columns.ColumnBatch`
  one Arrow IPC stream frame. Credits come back on the same connection.
  Between slot processes on one host (Linux) the connection is a Unix socket
  and buffers of at least :data:`SHM_MIN_BYTES` travel through a
  shared-memory ring instead of the socket (see :class:`RemoteChannel`);
  otherwise, or when ``taskmanager.network.shared-memory`` is false, it is TCP.

On the consumer side an :class:`InputGate` merges all channels of a subtask
into one queue; the :class:`DataServer` of the slot process accepts TCP
channels and feeds the gates.
"""

from __future__ import annotations

import functools
import hmac
import io
import json
import logging
import mmap
import os
import pickle
import queue
import secrets
import socket
import struct
import sys
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
SHM = 6        # producer -> consumer: a BYTES or COLUMNS payload lies in the shared-memory ring

_HDR = struct.Struct("!IB")
_CREDIT_FRAME = _HDR.pack(0, CREDIT)
_SHM_REF = struct.Struct("!IIB")  # ring slot, payload length (bytes), payload kind

# Payloads smaller than this go through the socket even on a shared-memory channel: below about it
# the copy into the ring and out of it costs as much as the socket (bench/bench_shm_channel.py).
SHM_MIN_BYTES = 8 * 1024

_SHARED_MEMORY = sys.platform.startswith("linux") and hasattr(os, "memfd_create") \
    and hasattr(socket, "send_fds")


@functools.lru_cache(maxsize=1)
def host_id() -> str:
    """An identifier of this host's running kernel (its boot id), the same in every process on it.

    Two slot processes with the same id may reach each other through a Unix socket and shared
    memory; ``""`` where shared-memory channels are not available (not Linux).
    """
    if not _SHARED_MEMORY:
        return ""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _hello_frame(hello: dict) -> bytes:
    """A channel's first frame: its JSON hello (secret, consumer subtask, channel), length-prefixed."""
    data = json.dumps(hello).encode()
    return struct.pack("!I", len(data)) + data


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
    """A channel to a consumer subtask in another slot process: TCP, or shared memory on one host.

    Flink's credit-based flow control and in-band events work the same on both transports: every
    buffer and event spends a credit, the consumer returns it on the same connection once it has
    processed the item, and events travel in order with the buffers.

    **Shared memory** (``shared_memory_slot_bytes`` > 0, a Linux consumer on this host whose
    address names a Unix socket): the connection is that Unix socket, and the producer creates a
    ring of ``credits`` slots of ``shared_memory_slot_bytes`` each in an anonymous memory file
    (``memfd_create``), which it hands to the consumer with the connection's hello (``SCM_RIGHTS``).
    A buffer of :data:`SHM_MIN_BYTES` to ``shared_memory_slot_bytes`` is copied into slot
    ``i % credits``, where ``i`` counts the items (buffers and events) sent on the channel, and
    only a small :data:`SHM` frame naming the slot goes through the socket; the consumer copies
    the payload out before it reads the next frame. Credits make the reuse safe: the producer
    holds a credit for item ``i`` only after ``i + 1 - credits`` items were acknowledged, and the
    consumer acknowledges an item only after it copied out every earlier one, so item
    ``i - credits``, the slot's previous user, has been copied. Smaller and larger buffers and
    all events go through the socket. The memory file has no name: it is freed when both
    processes have closed it, also when one is killed, and it is not limited by ``/dev/shm``.
    Without a reachable Unix socket (another host, another network namespace, not Linux) the
    channel is TCP.

    Args:
        address: the consumer's :attr:`DataServer.data_address`: ``(host, port)``, optionally
            followed by its Unix socket name and its :func:`host_id`.
        secret: cluster secret (checked by the server before anything else).
        job_id, vertex_id, subtask_index: which consumer subtask.
        channel_index: this channel's index in the consumer's input gate.
        credits: initial credits (``taskmanager.network.memory.buffers-per-channel``).
        cancel: the producer subtask's cancel flag.
        shared_memory_slot_bytes: bytes per ring slot (``taskmanager.network.shared-memory.slot-size``);
            0 means TCP only.

    Attributes:
        transport: ``"shm"`` or ``"tcp"``, the transport chosen.

    Raises:
        OSError: the consumer's data server cannot be reached over TCP (within 30 s).
    """

    def __init__(self, address, secret: str, job_id: str, vertex_id: int,
                 subtask_index: int, channel_index: int, credits: int, cancel: threading.Event,
                 shared_memory_slot_bytes: int = 0):
        self._credits = _Credits(credits, cancel)
        hello = {"secret": secret, "job_id": job_id, "vertex": vertex_id,
                 "subtask": subtask_index, "channel": channel_index}
        self._ring: mmap.mmap | None = None
        self._slot_bytes = shared_memory_slot_bytes
        self._ring_slots = credits
        self._seq = 0  # items (buffers and events) sent so far: the ring slot of a buffer
        self._sock = None
        if shared_memory_slot_bytes > 0 and len(address) >= 4 and address[2] and address[3] \
                and address[3] == host_id():
            self._sock = self._connect_shared(address[2], hello)
        self.transport = "shm" if self._sock is not None else "tcp"
        if self._sock is None:
            self._sock = socket.create_connection(tuple(address[:2]), timeout=30)
            self._sock.settimeout(None)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock.sendall(_hello_frame(hello))
        self._reader = threading.Thread(target=self._read_credits, daemon=True,
                                        name=f"credits-{vertex_id}.{subtask_index}.{channel_index}")
        self._reader.start()

    def _connect_shared(self, name: str, hello: dict) -> socket.socket | None:
        """Connect to the consumer's Unix socket and hand it the ring; ``None`` if unreachable."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(30)
            sock.connect("\0" + name)
            sock.settimeout(None)
        except OSError as exc:
            sock.close()
            log.debug("no shared-memory channel to %s (%s); using TCP", name, exc)
            return None
        size = self._ring_slots * self._slot_bytes
        fd = os.memfd_create("emrflow-channel", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            self._ring = mmap.mmap(fd, size)
            socket.send_fds(sock, [_hello_frame(dict(hello, ring_slots=self._ring_slots,
                                                     ring_slot_bytes=self._slot_bytes))], [fd])
        except OSError as exc:  # no memory for the ring, the consumer went away: TCP instead
            sock.close()
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            log.warning("cannot set up a shared-memory channel to %s (%s); using TCP", name, exc)
            return None
        finally:
            os.close(fd)
        return sock

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
            data, kind = records.to_buffer(), COLUMNS
        else:
            data, kind = dumps_buffer(records), BYTES
        n = len(data)
        ring = self._ring
        if ring is not None and SHM_MIN_BYTES <= n <= self._slot_bytes:
            slot = self._seq % self._ring_slots
            start = slot * self._slot_bytes
            ring[start:start + n] = data
            self._sock.sendall(_HDR.pack(_SHM_REF.size, SHM) + _SHM_REF.pack(slot, n, kind))
        else:
            self._sock.sendall(_HDR.pack(n, kind) + data)
        self._seq += 1
        return waited

    def send_event(self, event: Any) -> float:
        """Send an in-band event; returns seconds spent waiting for credit."""
        waited = self._credits.take()
        data = pickle.dumps(event, protocol=5)
        self._sock.sendall(_HDR.pack(len(data), EVENT) + data)
        self._seq += 1
        return waited

    def close(self) -> None:
        """Close the connection after everything sent was written."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._reader.join(timeout=5)
        self._sock.close()
        if self._ring is not None:
            self._ring.close()  # the consumer has its own mapping of the ring


class DataServer:
    """Accepts the input channels of the subtasks of one slot process.

    It listens on TCP and, on Linux, on a Unix socket in the abstract namespace (no file, gone
    with the process) for :class:`RemoteChannel` producers on the same host that bring a
    shared-memory ring.

    Args:
        host: interface to listen on.
        secret: cluster secret; a connection with another secret is closed unread.

    Attributes:
        address: ``(host, port)`` of the TCP listener.
        data_address: what producers need to connect, as the slot advertises it to the
            JobManager: ``[host, port, unix socket name, host id]`` (the last two ``""``
            without shared-memory channels).
    """

    def __init__(self, host: str, secret: str):
        self._secret = secret.encode()
        self._sock = socket.create_server((host, 0))
        self.address = (host, self._sock.getsockname()[1])
        self._gates: dict[tuple[str, int, int], InputGate] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._unix: socket.socket | None = None
        name, node = "", host_id()
        if node:
            name = f"emrflow-data-{os.getpid()}-{secrets.token_hex(8)}"
            unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                unix.bind("\0" + name)
                unix.listen(64)
                self._unix = unix
            except OSError as exc:
                log.info("no Unix socket for shared-memory channels (%s); TCP only", exc)
                unix.close()
                name, node = "", ""
        self.data_address = [host, self.address[1], name, node]
        log.info("data server on %s:%d (TCP)%s", host, self.address[1],
                 f" and @{name} (Unix socket, shared-memory channels)" if name else "")
        threading.Thread(target=self._accept_loop, args=(self._sock, False), daemon=True,
                         name="data-server").start()
        if self._unix is not None:
            threading.Thread(target=self._accept_loop, args=(self._unix, True), daemon=True,
                             name="data-server-shm").start()

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
        for sock in (self._sock, self._unix):
            try:
                if sock is not None:
                    sock.close()
            except OSError:
                pass

    def _accept_loop(self, listener: socket.socket, unix: bool) -> None:
        while not self._closed:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock, unix), daemon=True,
                             name="channel-in").start()

    def _read_hello(self, sock: socket.socket, unix: bool) -> tuple[dict, mmap.mmap | None]:
        """Read and check a producer's hello; on a Unix socket also map the ring it brings."""
        sock.settimeout(30)
        if unix:
            head, fds, _, _ = socket.recv_fds(sock, 4, 1)
            if len(head) < 4:
                head += recv_exact(sock, 4 - len(head))
        else:
            head, fds = recv_exact(sock, 4), []
        ring = None
        try:
            (n,) = struct.unpack("!I", head)
            if n > 4096:
                raise ValueError("oversized channel hello")
            hello = json.loads(bytes(recv_exact(sock, n)))
            if not hmac.compare_digest(str(hello.get("secret", "")).encode(), self._secret):
                raise ValueError("wrong secret")
            if unix:
                if len(fds) != 1:
                    raise ValueError("shared-memory channel without its ring")
                size = int(hello["ring_slots"]) * int(hello["ring_slot_bytes"])
                if size <= 0 or os.fstat(fds[0]).st_size < size:
                    raise ValueError("shared-memory ring smaller than announced")
                ring = mmap.mmap(fds[0], size, prot=mmap.PROT_READ)
        finally:
            for fd in fds:
                os.close(fd)
        sock.settimeout(None)
        return hello, ring

    def _serve(self, sock: socket.socket, unix: bool) -> None:
        if not unix:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            hello, ring = self._read_hello(sock, unix)
            key = (hello["job_id"], int(hello["vertex"]), int(hello["subtask"]))
            channel = int(hello["channel"])
            slots, slot_bytes = (int(hello["ring_slots"]), int(hello["ring_slot_bytes"])) if unix else (0, 0)
        except (OSError, ConnectionClosed, ValueError, KeyError, TypeError):
            sock.close()
            return
        deadline = time.monotonic() + 60
        with self._cond:
            while key not in self._gates:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    sock.close()
                    if ring is not None:
                        ring.close()
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
                if kind == SHM and ring is not None:
                    slot, length, kind = _SHM_REF.unpack(payload)
                    if slot >= slots or length > slot_bytes:
                        raise ConnectionClosed(f"bad shared-memory reference: slot {slot}, "
                                               f"{length} bytes (ring of {slots} x {slot_bytes} bytes)")
                    start = slot * slot_bytes
                    payload = ring[start:start + length]  # a copy: the slot may be reused after our ack
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
            if ring is not None:
                ring.close()
