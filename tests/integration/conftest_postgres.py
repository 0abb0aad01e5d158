"""A real PostgreSQL server for the tests: one per session, from Debian's ``postgresql`` package.

Imported by the JDBC sink tests (``from conftest_postgres import postgres, pg_table``). The server
is the installed ``initdb`` and ``postgres`` (``/usr/lib/postgresql/<version>/bin``; ``.ci/run``
installs the package when they are missing), run in a temporary directory on a free loopback
port with ``max_prepared_transactions=20`` (the sink's exactly-once mode needs two-phase commit)
and no fsync. PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user
the package creates. Nothing patches the client: the tests talk to it through psycopg over TCP.

Start by hand (prints the connection string, Ctrl-C stops)::

    .venv/bin/python tests/integration/conftest_postgres.py

Without the server binaries the tests are skipped with the reason, except under CI (``CI=true``),
where they fail instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest

START_TIMEOUT_S = 30.0


def server_bin() -> str | None:
    """The newest installed PostgreSQL's ``bin`` directory, or ``None``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[-3]) if p.split("/")[-3].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


def unavailable_reason() -> str | None:
    if server_bin() is None:
        return "no PostgreSQL server: apt-get install postgresql (Debian; .ci/run does it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' user to run the server as (apt-get install postgresql)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``initdb`` + ``postgres`` in ``work_dir`` (created and owned by the server's user)."""

    def __init__(self, work_dir: str):
        self.work_dir = work_dir
        self.data = os.path.join(work_dir, "data")
        self.log_path = os.path.join(work_dir, "postgres.log")
        self.port = _free_port()
        self.dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        self.proc: subprocess.Popen | None = None
        self._as: dict = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self._as = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            os.chown(work_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(work_dir, 0o700)

    def start(self) -> None:
        """Create the cluster and start the server; returns once it accepts connections.

        Raises:
            RuntimeError: initdb failed, or the server exited or did not answer within 30 s.
        """
        import psycopg
        bin_dir = server_bin()
        env = dict(os.environ, LC_ALL="C", HOME=self.work_dir)
        init = subprocess.run([os.path.join(bin_dir, "initdb"), "-D", self.data, "-U", "postgres",
                               "--auth=trust", "-E", "UTF8", "--no-sync"], capture_output=True, text=True,
                              env=env, cwd=self.work_dir, **self._as)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed (exit {init.returncode}): {init.stderr[-2000:]}")
        log = open(self.log_path, "w")
        if self._as:
            os.chown(self.log_path, self._as["user"], self._as["group"])
        self.proc = subprocess.Popen(
            [os.path.join(bin_dir, "postgres"), "-D", self.data, "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.work_dir}",
             "-c", "max_prepared_transactions=20", "-c", "max_connections=60", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.work_dir, start_new_session=True, **self._as)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self.proc.returncode}): {self.log_tail()}")
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections in {START_TIMEOUT_S} s: "
                                       f"{self.log_tail()}") from None
                time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT: open sessions are ended), killed after 15 s; remove the files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.work_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """A running PostgreSQL for the session; yields its :class:`PostgresServer` (``.dsn``)."""
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"postgres: {reason}")
        pytest.skip(f"postgres: {reason}")
    # not under pytest's basetemp: that is private to root, and the server runs as 'postgres'
    server = PostgresServer(tempfile.mkdtemp(prefix="emrflow-pg-"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_table(postgres):
    """A new, empty table name (``t_<hex>``), dropped after the test."""
    import psycopg
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


if __name__ == "__main__":
    reason = unavailable_reason()
    if reason:
        raise SystemExit(reason)
    srv = PostgresServer(tempfile.mkdtemp(prefix="emrflow-pg-"))
    srv.start()
    print(srv.dsn, flush=True)
    try:
        srv.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
