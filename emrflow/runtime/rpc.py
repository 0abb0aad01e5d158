"""Control messages between client, JobManager, TaskManagers and slot processes.

A connection carries length-prefixed frames (4-byte big-endian length, then a
pickled ``(type, body)`` tuple with ``body`` a dict). The first frame a
connecting side sends is a JSON hello ``{"type": "hello", "secret": ..., "role": ...}``; the
accepting side closes connections whose secret does not match the cluster's
(compared in constant time) before reading anything else. User code never
travels unpickled here: a JobGraph is an opaque ``bytes`` field that only the
slot processes unpickle.
"""

from __future__ import annotations

import hmac
import json
import pickle
import socket
import struct
import threading
from typing import Any

from emrflow.errors import ClusterError

_LEN = struct.Struct("!I")
#: Largest control frame accepted (a JobGraph with its shipped code), in bytes.
MAX_FRAME_BYTES = 512 * 1024 * 1024


class ConnectionClosed(ClusterError):
    """The peer closed the connection (or it broke)."""


def recv_exact(sock: socket.socket, n: int) -> bytearray:
    """Read exactly ``n`` bytes from ``sock``.

    Raises:
        ConnectionClosed: the peer closed the connection first.
    """
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionClosed("connection closed by peer")
        got += k
    return buf


class Connection:
    """A framed, thread-safe-for-sending control connection.

    Args:
        sock: a connected TCP socket.
        peer: a description of the other side for messages.
    """

    def __init__(self, sock: socket.socket, peer: str = "?"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.peer = peer
        self._send_lock = threading.Lock()
        self._closed = False

    def send(self, msg_type: str, **body: Any) -> None:
        """Send one message.

        Raises:
            ConnectionClosed: the connection is broken.
        """
        data = pickle.dumps((msg_type, body), protocol=5)
        try:
            with self._send_lock:
                self.sock.sendall(_LEN.pack(len(data)) + data)
        except OSError as exc:
            raise ConnectionClosed(f"cannot send to {self.peer}: {exc}") from exc

    def recv(self) -> tuple[str, dict]:
        """Receive one message as ``(type, body)``.

        Raises:
            ConnectionClosed: the peer closed the connection, or sent an oversized frame.
        """
        try:
            (n,) = _LEN.unpack(recv_exact(self.sock, 4))
            if n > MAX_FRAME_BYTES:
                raise ConnectionClosed(f"{self.peer} sent a frame of {n} bytes "
                                       f"(limit {MAX_FRAME_BYTES}); closing")
            msg = pickle.loads(recv_exact(self.sock, n))
        except OSError as exc:
            raise ConnectionClosed(f"connection to {self.peer} broke: {exc}") from exc
        if not (isinstance(msg, tuple) and len(msg) == 2 and isinstance(msg[0], str)
                and isinstance(msg[1], dict)):
            raise ConnectionClosed(f"{self.peer} sent a malformed message")
        return msg

    def request(self, msg_type: str, **body: Any) -> dict:
        """Send a message and wait for the reply (for connections used by one thread).

        Raises:
            ClusterError: the reply is an ``error`` message.
        """
        self.send(msg_type, **body)
        rtype, rbody = self.recv()
        if rtype == "error":
            raise ClusterError(rbody.get("message", "request failed"))
        return rbody

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if not self._closed:
            self._closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()


def connect(address: tuple[str, int], secret: str, role: str, timeout_s: float = 10.0,
            **hello: Any) -> Connection:
    """Open an authenticated connection to a JobManager.

    Args:
        address: ``(host, port)``.
        secret: the cluster secret.
        role: ``client``, ``taskmanager`` or ``slot``.
        timeout_s: connect timeout in seconds.
        **hello: further fields of the hello message.

    Raises:
        ClusterError: the JobManager cannot be reached.
    """
    try:
        sock = socket.create_connection(address, timeout=timeout_s)
    except OSError as exc:
        raise ClusterError(f"cannot reach the JobManager at {address[0]}:{address[1]}: {exc}") from exc
    sock.settimeout(None)
    conn = Connection(sock, f"JobManager {address[0]}:{address[1]}")
    data = json.dumps({"type": "hello", "secret": secret, "role": role, **hello}).encode()
    try:
        sock.sendall(_LEN.pack(len(data)) + data)
    except OSError as exc:
        raise ClusterError(f"cannot talk to the JobManager at {address[0]}:{address[1]}: {exc}") from exc
    return conn


def check_hello(conn: Connection, secret: str, timeout_s: float = 10.0) -> dict | None:
    """Read and check the hello of a freshly accepted connection.

    Returns:
        The hello body, or ``None`` if the peer is not authorised (the connection
        is then closed).
    """
    conn.sock.settimeout(timeout_s)
    try:
        (n,) = _LEN.unpack(recv_exact(conn.sock, 4))
        if n > 64 * 1024:
            conn.close()
            return None
        # JSON, never pickle, before the peer is authenticated
        body = json.loads(bytes(recv_exact(conn.sock, n)))
    except (OSError, ValueError, ConnectionClosed):
        conn.close()
        return None
    conn.sock.settimeout(None)
    if not isinstance(body, dict) or body.get("type") != "hello" or not hmac.compare_digest(
            str(body.get("secret", "")).encode(), secret.encode()):
        conn.close()
        return None
    return body
