"""Channels between slot processes: TCP and shared memory, with real processes and sockets.

The producer runs in a forked child process with a real :class:`RemoteChannel`; the consumer is
this process's :class:`DataServer` and :class:`InputGate`. The reference is the list of items the
producer sends, written out here in plain Python.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import random
import signal
import socket
import struct
import threading
import time

import pyarrow as pa
import pytest

from emrflow.runtime.network.channels import (
    BROKEN,
    BYTES,
    COLUMNS,
    EVENT,
    SHM,
    DataServer,
    InputGate,
    RemoteChannel,
    host_id,
)
from emrflow.runtime.network.columns import ColumnBatch
from emrflow.runtime.network.events import END_OF_PARTITION, Watermark

SECRET = "channel-test"
SLOT_BYTES = 64 * 1024  # the smallest slot size: frames of 8-64 KiB use the ring, bigger ones the socket
shared_memory = pytest.mark.skipif(not host_id(), reason="shared-memory channels need Linux")


def _items(seed: int = 5) -> list:
    """Buffers of rows and of columns, small (socket), mid-sized (ring) and over a slot (socket),
    with watermarks in between, in a fixed random order."""
    rng = random.Random(seed)
    items = []
    for i in range(120):
        choice = rng.randrange(5)
        if choice == 0:
            items.append(("rows", [(i, j, f"k{j}") for j in range(rng.choice([3, 900, 4_000]))]))
        elif choice == 1:
            n = rng.choice([10, 2_000, 20_000])  # 20,000 int64 rows: 160 KB, over the slot
            items.append(("columns", [(i * 100_000 + j,) for j in range(n)]))
        elif choice == 2:
            items.append(("event", Watermark(i)))
        else:
            items.append(("rows", [(i, rng.random()) for _ in range(rng.choice([1, 700]))]))
    return items


def _produce(address, slot_bytes: int, items: list, transport_out) -> None:
    cancel = threading.Event()
    ch = RemoteChannel(address, SECRET, "job", 7, 0, 0, 2, cancel, slot_bytes)
    transport_out.put(ch.transport)
    for kind, value in items:
        if kind == "event":
            ch.send_event(value)
        elif kind == "columns":
            ch.send_records(ColumnBatch(pa.record_batch([pa.array([r[0] for r in value], pa.int64())],
                                                        names=["a"])))
        else:
            ch.send_records(value)
    ch.send_event(END_OF_PARTITION)
    ch.close()


def _endless(address, slot_bytes: int) -> None:
    ch = RemoteChannel(address, SECRET, "job", 7, 0, 0, 2, threading.Event(), slot_bytes)
    batch = ColumnBatch(pa.record_batch([pa.array(range(5_000), pa.int64())], names=["a"]))
    while True:
        ch.send_records(batch)


def _decode(kind: int, payload):
    if kind == BYTES:
        return "rows", pickle.loads(payload)
    if kind == COLUMNS:
        return "columns", ColumnBatch.from_bytes(payload).rows()
    assert kind == EVENT, payload
    return "event", payload


def _mapped_rings() -> int:
    with open("/proc/self/maps") as f:
        return sum("emrflow-channel" in line for line in f)


@pytest.fixture
def fork_process():
    """Start producer processes; they are killed at the end of the test, whatever its result."""
    started = []

    def start(target, *args):
        proc = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.is_alive():
            proc.kill()
        proc.join(10)


@pytest.fixture
def consumer():
    server = DataServer("127.0.0.1", SECRET)
    gate = InputGate(1, threading.Event())
    server.register("job", 7, 0, gate)
    yield server, gate
    server.close()


@pytest.mark.parametrize("transport", [pytest.param("shm", marks=shared_memory), "tcp"])
def test_every_buffer_and_event_arrives_once_in_order_and_intact_after_its_slot_is_reused(
        consumer, fork_process, transport):
    server, gate = consumer
    items = _items()
    transport_q = multiprocessing.get_context("fork").Queue()
    slot_bytes = SLOT_BYTES if transport == "shm" else 0
    producer = fork_process(_produce, server.data_address, slot_bytes, items, transport_q)
    assert transport_q.get(timeout=30) == transport
    got = []
    while True:
        item = gate.get(30)
        assert item is not None, f"nothing for 30 s after {len(got)} items"
        channel, kind, payload = item
        assert channel == 0 and kind != BROKEN, payload
        # the credit goes back before the payload is read, and the producer may meanwhile write
        # the next buffer into the ring slot this one came through: the payload must be a copy
        gate.ack(0)
        time.sleep(0.002)
        if kind == EVENT and type(payload) is type(END_OF_PARTITION):
            break
        got.append(_decode(kind, payload))
    producer.join(30)
    assert producer.exitcode == 0
    assert [k for k, _ in got] == [k for k, _ in items]
    for (kind, value), (_, want) in zip(got, items):
        if kind == "event":
            assert value.timestamp_ms == want.timestamp_ms
        else:
            assert value == want


@shared_memory
def test_a_killed_producer_breaks_the_channel_and_its_ring_is_freed(consumer, fork_process):
    server, gate = consumer
    producer = fork_process(_endless, server.data_address, SLOT_BYTES)
    for _ in range(5):
        item = gate.get(30)
        assert item is not None and item[1] == COLUMNS
        gate.ack(0)
    assert _mapped_rings() == 1
    os.kill(producer.pid, signal.SIGKILL)
    producer.join(10)
    while True:  # drain what was in flight; the channel must then report the lost producer
        item = gate.get(10)
        assert item is not None, "a killed producer left the gate waiting"
        if item[1] == BROKEN:
            break
        gate.ack(0)
    assert "lost its producer" in item[2]
    deadline = time.monotonic() + 5
    while _mapped_rings() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _mapped_rings() == 0


def _raw_shared_channel(server: DataServer, secret: str, slots: int = 2, slot_bytes: int = SLOT_BYTES):
    """Connect to ``server``'s Unix socket by hand, with a ring of ``slots`` x ``slot_bytes``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect("\0" + server.data_address[2])
    fd = os.memfd_create("test-ring")
    os.ftruncate(fd, slots * slot_bytes)
    hello = json.dumps({"secret": secret, "job_id": "job", "vertex": 7, "subtask": 0, "channel": 0,
                        "ring_slots": slots, "ring_slot_bytes": slot_bytes}).encode()
    socket.send_fds(sock, [struct.pack("!I", len(hello)) + hello], [fd])
    os.close(fd)
    return sock


@shared_memory
def test_a_reference_outside_the_ring_breaks_the_channel_with_a_message(consumer):
    server, gate = consumer
    sock = _raw_shared_channel(server, SECRET)
    sock.sendall(struct.pack("!IB", 9, SHM) + struct.pack("!IIB", 2, 100, BYTES))  # slot 2 of 0..1
    item = gate.get(10)
    assert item is not None and item[1] == BROKEN
    assert "bad shared-memory reference: slot 2" in item[2]
    sock.close()


@shared_memory
def test_a_shared_memory_channel_with_a_wrong_secret_is_closed_unread(consumer):
    server, gate = consumer
    sock = _raw_shared_channel(server, "not-the-secret")
    sock.settimeout(10)
    assert sock.recv(1) == b""  # closed by the server
    assert gate.get(0.2) is None
    sock.close()


@shared_memory
@pytest.mark.parametrize("change, transport", [
    (lambda a: a, "shm"),
    (lambda a: a[:2], "tcp"),                                        # a consumer without a Unix socket
    (lambda a: a[:3] + ["another-host"], "tcp"),                     # a consumer on another host
    (lambda a: a[:2] + ["emrflow-data-nobody", a[3]], "tcp"),        # a Unix socket nobody listens on
])
def test_shared_memory_only_when_the_consumer_is_reachable_on_this_host(consumer, change, transport):
    server, gate = consumer
    ch = RemoteChannel(change(list(server.data_address)), SECRET, "job", 7, 0, 0, 2, threading.Event(),
                       SLOT_BYTES)
    assert ch.transport == transport
    ch.send_records([(1, "a")] * 3_000)  # pickled, about 20 KB: through the ring when shm
    item = gate.get(10)
    assert item is not None and item[1] == BYTES and pickle.loads(item[2]) == [(1, "a")] * 3_000
    ch.close()


def test_shared_memory_switched_off_is_tcp(consumer):
    server, _ = consumer
    ch = RemoteChannel(server.data_address, SECRET, "job", 7, 0, 0, 2, threading.Event(), 0)
    assert ch.transport == "tcp"
    ch.close()
