"""A real Apache Kafka broker for the tests: one single-node KRaft broker per session.

Imported by the Kafka tests (``from conftest_kafka import kafka_broker``). The broker is
Apache Kafka's own ``kafka.Kafka`` from Maven Central's jars (``.ci/fetch-kafka-jars`` copies
them into the ignored ``tests/kafka/target/lib``), run by the installed Java 17 as one process
that is both broker and KRaft controller (``process.roles=broker,controller``) on free
loopback ports, its log directory under pytest's temporary directory. Nothing here patches
the client: the tests talk to it through confluent-kafka over TCP.

Start by hand (the same steps, for a local try of the Kafka connectors)::

    bash .ci/fetch-kafka-jars
    .venv/bin/python tests/integration/conftest_kafka.py      # prints bootstrap.servers, Ctrl-C stops

Without the jars or Java the Kafka tests are skipped with the reason, except under CI
(``CI=true``), where they fail instead.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(ROOT, "tests", "kafka", "target", "lib")
START_TIMEOUT_S = 60.0

# Single-node settings: every internal topic with one replica and one partition (the default
# 50 partitions of __consumer_offsets take seconds to create), no rebalance delay.
SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={log_dir}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""

LOG4J2 = """\
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.err.ref = err
"""

JVM_OPTIONS = ["-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
               "-Djava.awt.headless=true"]


def unavailable_reason() -> str | None:
    """Why no broker can start here (no Java, jars not fetched), or ``None``."""
    if shutil.which("java") is None:
        return "java not found on PATH (a JDK 17: apt-get install openjdk-17-jdk-headless)"
    if not os.path.isdir(LIB) or not any(n.startswith("kafka_2.13-") for n in os.listdir(LIB)):
        return f"Kafka's jars are missing in {LIB}: run bash .ci/fetch-kafka-jars (Maven Central)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies (Linux ``PR_SET_PDEATHSIG``),
    so a killed pytest leaves no broker behind."""
    try:
        import ctypes
        import signal
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: stop() still kills it at the end of the session


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _cluster_id() -> str:
    """A random KRaft cluster id, as ``kafka-storage random-uuid`` makes (22 characters of
    URL-safe base64, not starting with '-')."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaBroker:
    """One single-node KRaft broker (broker and controller in one JVM) on free loopback ports.

    Args:
        work_dir: directory for ``server.properties``, the log directory and ``broker.log``.

    Attributes:
        bootstrap_servers: ``host:port`` of the PLAINTEXT listener, for ``bootstrap.servers``.
        start_seconds: wall time from the storage format to the first metadata answer.
    """

    def __init__(self, work_dir: str):
        self.work_dir = work_dir
        self.port, self.controller_port = _free_port(), _free_port()
        self.bootstrap_servers = f"127.0.0.1:{self.port}"
        self.start_seconds = 0.0
        self._proc: subprocess.Popen | None = None
        self._log_path = os.path.join(work_dir, "broker.log")

    def _java(self, main: str, *args: str) -> list[str]:
        log4j = os.path.join(self.work_dir, "log4j2.properties")
        return ["java", *JVM_OPTIONS, f"-Dlog4j2.configurationFile={log4j}",
                "-cp", os.path.join(LIB, "*"), main, *args]

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the broker's stdout and stderr."""
        try:
            with open(self._log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> None:
        """Format the storage (``kafka.tools.StorageTool``), start ``kafka.Kafka``, wait for metadata.

        Raises:
            RuntimeError: the format failed, the broker exited, or it gave no metadata within
                ``START_TIMEOUT_S`` seconds; the message holds the end of its log.
        """
        from confluent_kafka.admin import AdminClient

        t0 = time.monotonic()
        os.makedirs(self.work_dir, exist_ok=True)
        props = os.path.join(self.work_dir, "server.properties")
        with open(props, "w") as f:
            f.write(SERVER_PROPERTIES.format(port=self.port, controller_port=self.controller_port,
                                             log_dir=os.path.join(self.work_dir, "data")))
        with open(os.path.join(self.work_dir, "log4j2.properties"), "w") as f:
            f.write(LOG4J2)
        fmt = subprocess.run(self._java("kafka.tools.StorageTool", "format", "-t", _cluster_id(),
                                        "-c", props), capture_output=True, text=True, timeout=120)
        if fmt.returncode != 0:
            raise RuntimeError(f"kafka-storage format failed (exit {fmt.returncode}): "
                               f"{fmt.stdout[-2000:]}{fmt.stderr[-2000:]}")
        log = open(self._log_path, "wb")
        self._proc = subprocess.Popen(self._java("kafka.Kafka", props), stdout=log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        admin = None
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited with {self._proc.returncode} at start:\n"
                                   f"{self.log_tail()}")
            if admin is None and _listening(self.port):  # no client before: it logs every refusal
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
            if admin is not None:
                try:
                    if admin.list_topics(timeout=1.0).brokers:
                        break
                except Exception:  # noqa: BLE001 - KafkaException while the broker is starting
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Kafka broker gave no metadata within {START_TIMEOUT_S:.0f} s:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - t0

    def create_topic(self, name: str, partitions: int = 1) -> None:
        """Create topic ``name`` (one replica) and wait until it exists.

        Raises:
            confluent_kafka.KafkaException: the broker refused it.
        """
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
        for future in admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10).values():
            future.result(timeout=30)

    def stop(self) -> None:
        """Kill the broker process (SIGKILL; its data directory is temporary)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=30)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A running :class:`KafkaBroker` for the whole test session, killed at its end.

    Skipped with the reason when Java or the jars are missing, except under CI (``CI=true``):
    there a missing broker fails the tests.
    """
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"kafka: {reason} (.ci/run fetches the jars)")
        pytest.skip(f"kafka: {reason}")
    broker = KafkaBroker(str(tmp_path_factory.mktemp("kafka")))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


if __name__ == "__main__":  # start a broker by hand: python tests/integration/conftest_kafka.py
    import tempfile
    problem = unavailable_reason()
    if problem:
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory(prefix="emrflow-kafka-") as tmp:
        b = KafkaBroker(tmp)
        b.start()
        print(f"bootstrap.servers={b.bootstrap_servers} (started in {b.start_seconds:.1f} s; Ctrl-C stops)",
              flush=True)
        try:
            while b._proc is not None and b._proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            b.stop()
