"""The PostgreSQL (JDBC) sink against a real PostgreSQL server (tests/integration/conftest_postgres.py).

Jobs are tests/jobs/jdbc_upsert.py run by the CLI; what the server holds afterwards is read
back with psycopg and compared with references computed here in plain Python.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from conftest_postgres import pg_table, postgres  # noqa: F401  (PostgreSQL server fixtures)

from emrflow.connectors.base import SubtaskContext
from emrflow.connectors.jdbc import JdbcSink
from emrflow.errors import ConnectorError
from tests.conftest import ROOT
from tests.integration.test_checkpoints import (
    checkpointed_run,
    kill_after_first_checkpoint,
    running,
)

pytestmark = [pytest.mark.integration]

JOB = os.path.join(ROOT, "tests", "jobs", "jdbc_upsert.py")


def latest_reference(count: int, keys: int) -> dict:
    """What tests/jobs/jdbc_upsert.py's ``--latest`` table must hold: per key, its last record."""
    want = {}
    for i in range(count):
        want[i * 7919 % keys] = (i, f"v{i}")
    return want


def query(dsn: str, statement: str) -> list:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(statement).fetchall()


def run_sql(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement)


def create_tables(dsn: str, latest: str, log: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {latest} (k integer PRIMARY KEY, n integer NOT NULL, v text)")
        conn.execute(f"CREATE TABLE {log} (id text PRIMARY KEY, i integer NOT NULL)")


@pytest.fixture
def tables(postgres, pg_table):  # noqa: F811
    latest, log = pg_table, pg_table + "_log"
    create_tables(postgres.dsn, latest, log)
    yield latest, log
    run_sql(postgres.dsn, f"DROP TABLE IF EXISTS {log}")


def run_job(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emrflow.cli", "run", "-p", "2", JOB, *args],
                          capture_output=True, text=True, timeout=timeout)


def test_bounded_job_upserts_the_last_value_of_every_key(postgres, tables):  # noqa: F811
    """No checkpoints: the at-least-once sink commits batch by batch, the exactly-once one
    prepares one transaction per subtask at the end of input and commits it after the job."""
    latest, log = tables
    count, keys = 5000, 300
    proc = run_job("--dsn", postgres.dsn, "--count", str(count), "--keys", str(keys), "--guarantee",
                   "at-least-once", "--log-guarantee", "exactly-once", "--latest", latest, "--log", log)
    assert proc.returncode == 0, proc.stderr
    got = {k: (n, v) for k, n, v in query(postgres.dsn, f"SELECT k, n, v FROM {latest}")}
    assert got == latest_reference(count, keys)
    assert sorted(i for (i,) in query(postgres.dsn, f"SELECT i FROM {log}")) == list(range(count))
    assert query(postgres.dsn, "SELECT gid FROM pg_prepared_xacts") == []


def test_exactly_once_survives_a_killed_taskmanager(postgres, tables, tmp_path):  # noqa: F811
    """A TaskManager killed mid-stream: the ``--log`` table gets a fresh random id whenever a record
    is processed, so rows the failed attempt wrote after the last completed checkpoint would stay
    as duplicates of the replayed records (at-least-once leaves hundreds here) unless rolled back."""
    latest, log = tables
    count, keys, ckdir = 6000, 300, str(tmp_path / "checkpoints")
    args = checkpointed_run(None, ckdir, "-D", "execution.checkpointing.interval=300ms")
    with running(*args, JOB, "--dsn", postgres.dsn, "--count", str(count), "--keys", str(keys),
                 "--rate", "1000", "--batch-size", "20", "--guarantee", "exactly-once",
                 "--latest", latest, "--log", log) as proc:
        stderr = kill_after_first_checkpoint(proc, ckdir, 1.0, 90, checkpoint_timeout_s=30)
    assert proc.returncode == 0, stderr
    assert stderr.count("restarting in") >= 1, stderr
    logged = sorted(i for (i,) in query(postgres.dsn, f"SELECT i FROM {log}"))
    assert len(logged) == count, f"{len(logged) - len(set(logged))} records twice, " \
                                 f"{count - len(set(logged))} lost"
    assert logged == list(range(count))
    got = {k: (n, v) for k, n, v in query(postgres.dsn, f"SELECT k, n, v FROM {latest}")}
    assert got == latest_reference(count, keys)
    assert query(postgres.dsn, "SELECT gid FROM pg_prepared_xacts") == []


def test_a_missing_table_fails_the_job_with_its_name(postgres):  # noqa: F811
    proc = run_job("--dsn", postgres.dsn, "--count", "10", "--latest", "no_such_table")
    assert proc.returncode == 1
    assert "table 'no_such_table' does not exist" in proc.stderr, proc.stderr


def writer(dsn: str, table: str, columns: list, keys: list, guarantee: str = "exactly-once", **options):
    sink = JdbcSink(dsn, table, columns, keys, delivery_guarantee=guarantee, flush_interval_ms=0, **options)
    return sink.create_writer(SubtaskContext("Sink: test", 0, 1, job_id="0123456789abcdef" * 2,
                                             checkpointing=True))


def test_wrong_columns_and_keys_are_named_when_the_writer_starts(postgres, pg_table):  # noqa: F811
    run_sql(postgres.dsn, f"CREATE TABLE {pg_table} (k integer, n integer, v text)")
    with pytest.raises(ConnectorError, match=r"column\(s\) \['nope'\] do not exist in table"):
        writer(postgres.dsn, pg_table, ["k", "nope"], ["k"])
    with pytest.raises(ConnectorError, match=r"key_columns \['k'\] are not the primary key or a unique index"):
        writer(postgres.dsn, pg_table, ["k", "n"], ["k"])


def test_a_lost_connection_is_retried_and_the_open_transaction_replayed(postgres, pg_table):  # noqa: F811
    run_sql(postgres.dsn, f"CREATE TABLE {pg_table} (k integer PRIMARY KEY, n integer)")
    w = writer(postgres.dsn, pg_table, ["k", "n"], ["k"], batch_size=10, retry_backoff_ms=10)
    w.write_batch([(k, 1) for k in range(25)])   # 20 rows into the open transaction, 5 buffered
    killed = query(postgres.dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE application_name = 'emrflow-jdbc-sink'")
    assert killed and all(ok for (ok,) in killed)
    w.write_batch([(k, 2) for k in range(20, 40)])
    state = w.snapshot_state(1)
    assert w.retries.get_count() >= 1 and w.rows_written.get_count() >= 40   # numRetries, numRecordsSend
    assert query(postgres.dsn, f"SELECT count(*) FROM {pg_table}") == [(0,)]  # prepared, not committed
    assert [g for _, g in state["pending"]] == [g for (g,) in query(postgres.dsn, "SELECT gid FROM pg_prepared_xacts")]
    w.notify_checkpoint_complete(1)
    want = {k: (1 if k < 20 else 2) for k in range(40)}
    assert dict(query(postgres.dsn, f"SELECT k, n FROM {pg_table}")) == want
    w.prepare_commit()
    w.commit()
    assert query(postgres.dsn, "SELECT gid FROM pg_prepared_xacts") == []


def test_a_key_held_by_a_prepared_transaction_waits_in_the_state_and_is_written_later(postgres, pg_table):  # noqa: F811
    """Writing a key again while its previous transaction is only prepared would wait for that
    transaction's row lock, which only this task's own next completion notice releases."""
    run_sql(postgres.dsn, f"CREATE TABLE {pg_table} (k integer PRIMARY KEY, n integer)")
    w = writer(postgres.dsn, pg_table, ["k", "n"], ["k"], lock_timeout_ms=2000)
    w.write_batch([(1, 1), (2, 1)])
    assert w.snapshot_state(1)["rows"] == []
    w.write_batch([(1, 2), (3, 2)])          # checkpoint 1 has not completed: key 1 is locked
    state = w.snapshot_state(2)
    assert state["rows"] == [(1, 2)] and len(state["pending"]) == 2
    w.notify_checkpoint_complete(2)
    assert dict(query(postgres.dsn, f"SELECT k, n FROM {pg_table}")) == {1: 1, 2: 1, 3: 2}
    w.write_batch([(4, 3)])
    w.prepare_commit()
    w.commit()
    assert dict(query(postgres.dsn, f"SELECT k, n FROM {pg_table}")) == {1: 2, 2: 1, 3: 2, 4: 3}
    assert query(postgres.dsn, "SELECT gid FROM pg_prepared_xacts") == []
