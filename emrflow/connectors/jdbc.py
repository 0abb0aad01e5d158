"""A PostgreSQL sink (Flink's JDBC sink): batched upserts, at-least-once or exactly-once.

:class:`JdbcSink` writes records into one PostgreSQL table with
``INSERT ... ON CONFLICT (key columns) DO UPDATE``, through psycopg 3 (install the
``postgres`` extra: ``pip install 'emrflow[postgres]'``).

Delivery guarantees (Flink's ``DeliveryGuarantee``):

* ``at-least-once``: every flush (``batch_size`` records, ``flush_interval_ms``, a checkpoint
  barrier, the end of input) is one committed transaction. After a failover the records since
  the last completed checkpoint are written again; as upserts by key they only overwrite rows
  with the same values, so the table ends as if each record had been written once.
* ``exactly-once``: PostgreSQL's two-phase commit, as Flink's ``TwoPhaseCommitSinkFunction``.
  Each subtask writes the records of one checkpoint interval in one transaction,
  ``PREPARE TRANSACTION '<gid>'`` at the checkpoint barrier (:meth:`_JdbcWriter.snapshot_state`
  returns the gids), ``COMMIT PREPARED`` when the checkpoint completes. After a failover the
  restored writer commits the gids of the restored checkpoint and rolls back this job's other
  prepared transactions of its subtask (see :func:`recovery_plan`). Needs
  ``max_prepared_transactions`` > 0 on the server (checked when the writer starts).

The gid of a prepared transaction is ``emrflow-<job id>-<sink id>-<subtask>-<attempt>-<checkpoint>``
(:func:`make_gid`), unique per job, sink, subtask, attempt and checkpoint (``end`` for the
transaction prepared at the end of input).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from emrflow.connectors.base import Sink, SinkWriter, SubtaskContext
from emrflow.errors import ConfigError, ConnectorError

log = logging.getLogger(__name__)

AT_LEAST_ONCE = "at-least-once"
EXACTLY_ONCE = "exactly-once"
#: PostgreSQL takes at most 65,535 bind parameters in one statement.
MAX_PARAMETERS = 65_535
#: SQLSTATEs after which the transaction is gone but a new connection may succeed:
#: admin/crash shutdown, cannot connect now, serialization failure, deadlock.
_RETRIABLE_STATES = {"57P01", "57P02", "57P03", "40001", "40P01"}
_GID = re.compile(r"^emrflow-(?P<job>[0-9a-z]+)-(?P<sink>[0-9a-f]{8})-(?P<subtask>\d+)-(?P<attempt>\d+)"
                  r"-(?P<checkpoint>\d+|end)$")


# -- the gid and recovery logic (pure) -------------------------------------------------------------

@dataclass(frozen=True)
class Gid:
    """The parts of a prepared transaction's gid written by :class:`JdbcSink`."""

    prefix: str       #: ``emrflow-<job>-<sink>-``: the same for every subtask of one sink in one job
    subtask: int
    attempt: int
    checkpoint: str   #: the checkpoint id, or ``"end"``


def gid_prefix(job_id: str, operator_name: str, table: str) -> str:
    """Return the gid prefix shared by one sink's subtasks in one job.

    Args:
        job_id: the job's id (hex); ``""`` becomes ``"nojob"``.
        operator_name: the sink operator's name.
        table: the target table, as given to :class:`JdbcSink`.
    """
    sink = hashlib.sha1(f"{operator_name}\0{table}".encode()).hexdigest()[:8]
    return f"emrflow-{(job_id or 'nojob').lower()}-{sink}-"


def make_gid(prefix: str, subtask: int, attempt: int, checkpoint: int | str) -> str:
    """Return the gid of the transaction ``subtask`` (restart ``attempt``) prepares at ``checkpoint``."""
    return f"{prefix}{subtask}-{attempt}-{checkpoint}"


def parse_gid(gid: str) -> Gid | None:
    """Split a gid made by :func:`make_gid`; ``None`` for any other gid."""
    m = _GID.match(gid)
    if m is None:
        return None
    return Gid(f"emrflow-{m['job']}-{m['sink']}-", int(m["subtask"]), int(m["attempt"]), m["checkpoint"])


def recovery_plan(prepared: Iterable[str], restored: Iterable[str], prefix: str, subtask: int,
                  parallelism: int, attempt: int) -> tuple[list[str], list[str]]:
    """Decide what a restarted subtask commits and rolls back (Flink's ``recoverAndCommit``/``recoverAndAbort``).

    Args:
        prepared: gids of the prepared transactions the server holds (``pg_prepared_xacts``).
        restored: gids the restored checkpoint holds pending for this subtask; their checkpoint
            completed, so they are committed (a gid no longer prepared was already committed).
        prefix: this sink's gid prefix in this job (:func:`gid_prefix`).
        subtask: this subtask's index.
        parallelism: the sink's current parallelism: a former subtask ``s`` belongs to
            ``s % parallelism``, as its state does.
        attempt: this writer's restart attempt; its own gids are never rolled back.

    Returns:
        ``(commit, rollback)``: gids to ``COMMIT PREPARED`` (the restored ones, in order, once each)
        and gids to ``ROLLBACK PREPARED`` (this sink's prepared transactions of this subtask's
        share, from other attempts, not in the restored state: their checkpoint never completed).
    """
    commit = list(dict.fromkeys(restored))
    keep = set(commit)
    rollback = []
    for gid in prepared:
        g = parse_gid(gid)
        if (g is not None and g.prefix == prefix and gid not in keep and g.attempt != attempt
                and g.subtask % parallelism == subtask):
            rollback.append(gid)
    return commit, sorted(rollback)


# -- the sink ---------------------------------------------------------------------------------------

def _guarantee(value: str) -> str:
    norm = str(value).strip().lower().replace("_", "-")
    if norm not in (AT_LEAST_ONCE, EXACTLY_ONCE):
        raise ConfigError(f"JdbcSink: delivery_guarantee must be 'at-least-once' or 'exactly-once', "
                          f"got {value!r}", key="delivery_guarantee")
    return norm


def _positive_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"JdbcSink: {name} must be an integer >= {minimum}, got {value!r}", key=name)
    return value


class JdbcSink(Sink):
    """Upserts records into a PostgreSQL table (Flink's ``JdbcSink``), at-least-once or exactly-once.

    Each record becomes one row: a tuple (or list) with one value per column of ``columns``, in
    that order, or a dict with exactly those keys. Rows are written in batches as
    ``INSERT INTO table (columns) VALUES ... ON CONFLICT (key_columns) DO UPDATE SET`` the other
    columns (``DO NOTHING`` if every column is a key column). Within a batch only the last record
    of each key is written (an ``ON CONFLICT`` statement cannot touch a row twice).

    Example::

        from emrflow.connectors.jdbc import JdbcSink
        (ratings.key_by(lambda r: (r[0], r[1]))
            .sink_to(JdbcSink("postgresql://emr@db:5432/movies", "latest_rating",
                              columns=["user_id", "movie_id", "rating"],
                              key_columns=["user_id", "movie_id"],
                              delivery_guarantee="exactly-once")))

    The table must exist and have a primary key or a unique index on exactly ``key_columns``.
    With exactly-once, records with the same key must reach the same sink subtask (``key_by`` on
    the key columns before the sink, or parallelism 1): two subtasks' transactions on one row
    would wait on each other's prepared transaction (``lock_timeout_ms`` then fails the job).

    Args:
        url: libpq connection string, ``"host=db dbname=movies user=emr"`` or
            ``"postgresql://emr@db:5432/movies"``; a password may come from ``PGPASSWORD`` or
            ``~/.pgpass`` on the TaskManagers.
        table: target table, optionally ``schema.table``; names are quoted, so exact case.
        columns: the table's columns the records fill, in record order.
        key_columns: the columns of the table's primary key or unique index (a subset of ``columns``).
        delivery_guarantee: ``"at-least-once"`` (default) or ``"exactly-once"`` (``_`` and case accepted).
        batch_size: records per flush and at most rows per ``INSERT`` statement (default 500).
        flush_interval_ms: at-least-once: buffered records are written at most this many
            milliseconds after the first of them arrived, also when no more records come
            (default 1000; 0: only by ``batch_size``, checkpoints and end of input). Exactly-once
            writes become visible at checkpoint completion whatever this says.
        max_retries: times a flush is retried after a lost connection (``psycopg.OperationalError``
            with the connection closed, or a deadlock / serialization failure) before the task
            fails (default 3).
        retry_backoff_ms: wait before the first retry, doubled at each following one, at most 10 s
            (default 200).
        lock_timeout_ms: PostgreSQL ``lock_timeout`` of the sink's sessions: a write waiting longer
            for a row lock fails the task with a message (default 60,000; 0: wait forever).
        connect_timeout_s: libpq ``connect_timeout`` unless the connection string sets it (default 10).

    Raises:
        ConfigError: an option is missing or wrong (the message names it).
    """

    default_name = "JDBC Sink"

    def __init__(self, url: str, table: str, columns: Sequence[str], key_columns: Sequence[str],
                 delivery_guarantee: str = AT_LEAST_ONCE, batch_size: int = 500,
                 flush_interval_ms: int = 1000, max_retries: int = 3, retry_backoff_ms: int = 200,
                 lock_timeout_ms: int = 60_000, connect_timeout_s: int = 10):
        if not isinstance(url, str) or not url.strip():
            raise ConfigError(f"JdbcSink: url must be a libpq connection string or postgresql:// URL, "
                              f"got {url!r}", key="url")
        if not isinstance(table, str) or not table.strip():
            raise ConfigError(f"JdbcSink: table must name the target table, got {table!r}", key="table")
        parts = table.split(".")
        if len(parts) > 2 or not all(parts):
            raise ConfigError(f"JdbcSink: table must be 'table' or 'schema.table', got {table!r}", key="table")
        if isinstance(columns, str) or not columns or not all(isinstance(c, str) and c for c in columns):
            raise ConfigError(f"JdbcSink: columns must be a non-empty list of column names, got {columns!r}",
                              key="columns")
        if len(set(columns)) != len(columns):
            raise ConfigError(f"JdbcSink: columns names a column twice: {list(columns)}", key="columns")
        if isinstance(key_columns, str) or not key_columns:
            raise ConfigError(f"JdbcSink: key_columns must be a non-empty list of column names, "
                              f"got {key_columns!r}", key="key_columns")
        unknown = [k for k in key_columns if k not in columns]
        if unknown:
            raise ConfigError(f"JdbcSink: key column(s) {unknown} of table {table!r} are not among "
                              f"columns {list(columns)}", key="key_columns")
        self.url = url
        self.table = table
        self.columns = list(columns)
        self.key_columns = list(key_columns)
        self.delivery_guarantee = _guarantee(delivery_guarantee)
        self.batch_size = _positive_int("batch_size", batch_size, 1)
        self.flush_interval_ms = _positive_int("flush_interval_ms", flush_interval_ms, 0)
        self.max_retries = _positive_int("max_retries", max_retries, 0)
        self.retry_backoff_ms = _positive_int("retry_backoff_ms", retry_backoff_ms, 0)
        self.lock_timeout_ms = _positive_int("lock_timeout_ms", lock_timeout_ms, 0)
        self.connect_timeout_s = _positive_int("connect_timeout_s", connect_timeout_s, 1)

    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        """Connect and check the table (see :class:`_JdbcWriter`).

        Raises:
            ConnectorError: psycopg is missing, the server cannot be reached, the table or a column
                does not exist, the key columns are not unique, or exactly-once finds
                ``max_prepared_transactions = 0``.
        """
        return _JdbcWriter(self, ctx)


def _import_psycopg():
    try:
        import psycopg
        from psycopg import sql  # noqa: F401
    except ImportError as exc:
        raise ConnectorError("JdbcSink needs psycopg 3 on the TaskManagers: pip install "
                             "'emrflow[postgres]' (or 'psycopg[binary]')", "psycopg") from exc
    return psycopg


class _JdbcWriter(SinkWriter):
    """One subtask's rows: buffered by key (last wins), upserted in batches, committed per mode.

    Rows wait in :attr:`_buffer` (key -> row). At-least-once flushes them in one committed
    transaction. Exactly-once moves them into the open transaction (:attr:`_txn`, kept to replay
    it on a new connection), except rows whose key a prepared, not yet committed transaction of
    this writer holds: those would wait for its row lock, which only this task's next
    checkpoint-complete notice releases; they stay buffered, and in the checkpoint state, until it
    is committed. Prepared and committed transactions are handled on a second connection
    (``COMMIT PREPARED`` cannot run inside the open transaction).
    """

    def __init__(self, sink: JdbcSink, ctx: SubtaskContext):
        self._psycopg = _import_psycopg()
        from psycopg import sql
        self._sql = sql
        self._sink, self._ctx = sink, ctx
        self._exactly = sink.delivery_guarantee == EXACTLY_ONCE
        self._resource = f"PostgreSQL table {sink.table!r}"
        self._target = self._describe_target()
        self._ident = sql.Identifier(*sink.table.split("."))
        self._key_idx = [sink.columns.index(k) for k in sink.key_columns]
        self._rows_per_statement = max(1, min(sink.batch_size, MAX_PARAMETERS // len(sink.columns)))
        self._statements: dict[int, str] = {}
        self._prefix = gid_prefix(ctx.job_id, ctx.operator_name, sink.table)
        self._lock = threading.RLock()
        self._conn: Any = None       # the writing session (psycopg.Connection)
        self._admin: Any = None      # COMMIT/ROLLBACK PREPARED, pg_prepared_xacts (exactly-once)
        self._txn_open = False       # the writing session is inside BEGIN (exactly-once)
        self._buffer: dict[tuple, tuple] = {}
        self._txn: dict[tuple, tuple] = {}
        self._pending: list[tuple[int, str, frozenset]] = []  # (checkpoint, gid, keys) prepared
        self._final: list[str] = []  # prepared at the end of input, committed by commit()
        self._first_buffered = 0.0
        self._recovered = not self._exactly
        self._error: BaseException | None = None
        self._stop = threading.Event()
        #: counter ``numRecordsSend`` (Flink's): rows upserted (into the open transaction with exactly-once)
        self.rows_written = ctx.metric_group.counter("numRecordsSend")
        #: counter ``numRetries``: statements run again after a lost connection
        self.retries = ctx.metric_group.counter("numRetries")
        try:
            self._connection()       # fail at start: unreachable server, missing table, ...
            self._check_target()
        except BaseException:
            self._close()
            raise
        self._timer: threading.Thread | None = None
        if not self._exactly and sink.flush_interval_ms > 0:
            self._timer = threading.Thread(target=self._flush_periodically, daemon=True,
                                           name=f"jdbc-flush-{ctx.subtask_index}")
            self._timer.start()

    # -- connections ----------------------------------------------------------------------------
    def _describe_target(self) -> str:
        try:
            d = self._psycopg.conninfo.conninfo_to_dict(self._sink.url)
        except self._psycopg.ProgrammingError as exc:
            raise ConfigError(f"JdbcSink: url is not a valid libpq connection string: {exc}",
                              key="url") from exc
        return f"{d.get('host') or 'localhost'}:{d.get('port') or 5432}/{d.get('dbname') or d.get('user') or ''}"

    def _connect(self):
        sink = self._sink
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in self._psycopg.conninfo.conninfo_to_dict(sink.url):
            kwargs["connect_timeout"] = sink.connect_timeout_s
        conn = self._psycopg.connect(sink.url, application_name="emrflow-jdbc-sink", **kwargs)
        conn.execute(f"SET lock_timeout = {int(sink.lock_timeout_ms)}")
        return conn

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn, self._txn_open = None, False
            self._conn = self._retrying("connect", lambda: self._connect(), reconnect=False)
        return self._conn

    def _admin_connection(self):
        if self._admin is None or self._admin.closed:
            self._admin = self._retrying("connect", lambda: self._connect(), reconnect=False)
        return self._admin

    def _drop(self, which: str) -> None:
        conn = getattr(self, which)
        setattr(self, which, None)
        if which == "_conn":
            self._txn_open = False
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may not close cleanly
                pass

    def _lost(self, exc: BaseException, conn) -> bool:
        """True if ``exc`` lost the connection or its transaction, so a new one may succeed."""
        if not isinstance(exc, self._psycopg.OperationalError):
            return False
        if conn is None or conn.closed or conn.broken:
            return True
        state = getattr(exc, "sqlstate", None)
        return state is None or state.startswith("08") or state in _RETRIABLE_STATES

    def _retrying(self, what: str, fn, reconnect: bool = True, admin: bool = False):
        """Run ``fn()``; after a lost connection drop it, wait (exponential backoff) and run it again."""
        sink = self._sink
        which = "_admin" if admin else "_conn"
        for attempt in range(sink.max_retries + 1):
            try:
                return fn()
            except self._psycopg.Error as exc:
                conn = getattr(self, which) if reconnect else None
                if not self._lost(exc, conn) or attempt == sink.max_retries:
                    raise self._failure(what, exc) from exc
                delay = min(sink.retry_backoff_ms * (2 ** attempt), 10_000) / 1000.0
                log.warning("JdbcSink %s: %s failed (%s); retry %d of %d in %.1f s", self._target,
                            what, str(exc).strip() or type(exc).__name__, attempt + 1, sink.max_retries, delay)
                self.retries.inc()
                if reconnect:
                    self._drop(which)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _failure(self, what: str, exc: BaseException) -> ConnectorError:
        msg = str(exc).strip() or type(exc).__name__
        hint = ""
        if getattr(exc, "sqlstate", None) == "55P03":
            hint = (f" (waited lock_timeout_ms={self._sink.lock_timeout_ms} for a row lock: with "
                    "exactly-once, key_by the stream on the key columns before the sink so one subtask "
                    "writes each key, and check for prepared transactions left in pg_prepared_xacts)")
        elif isinstance(exc, self._psycopg.OperationalError):
            hint = f" (after {self._sink.max_retries} retries)"
        return ConnectorError(f"JdbcSink: {what} on {self._target}, table {self._sink.table!r} "
                              f"failed: {msg}{hint}", self._resource)

    # -- start checks -------------------------------------------------------------------------------
    def _check_target(self) -> None:
        sink, conn = self._sink, self._conn
        name = self._ident.as_string(conn)
        oid = conn.execute("SELECT to_regclass(%s)::oid", (name,)).fetchone()[0]
        if oid is None:
            raise ConnectorError(f"JdbcSink: table {sink.table!r} does not exist in database {self._target} "
                                 "(create it first, with a primary key on the key columns)", self._resource)
        types = dict(conn.execute(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (oid,)).fetchall())
        have = list(types)
        missing = [c for c in sink.columns if c not in have]
        if missing:
            raise ConnectorError(f"JdbcSink: column(s) {missing} do not exist in table {sink.table!r} "
                                 f"({self._target}); its columns are {have}", self._resource)
        # each value cast to its column's type: a multi-row VALUES list otherwise types a column of
        # untyped parameters (Python str) as text, which an integer or date column refuses
        self._types = [types[c] for c in sink.columns]
        uniques = [set(r[0]) for r in conn.execute(
            "SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL GROUP BY i.indexrelid", (oid,))]
        if set(sink.key_columns) not in uniques:
            raise ConnectorError(
                f"JdbcSink: key_columns {sink.key_columns} are not the primary key or a unique index of "
                f"table {sink.table!r} ({self._target}); ON CONFLICT needs one, e.g. ALTER TABLE "
                f"{sink.table} ADD PRIMARY KEY ({', '.join(sink.key_columns)})", self._resource)
        if self._exactly:
            n = int(conn.execute("SHOW max_prepared_transactions").fetchone()[0])
            if n <= 0:
                raise ConnectorError(
                    f"JdbcSink: delivery_guarantee 'exactly-once' needs PostgreSQL's two-phase commit, "
                    f"but max_prepared_transactions = 0 on {self._target}; set it in postgresql.conf to "
                    "at least the sink's parallelism times 2 (and restart the server), or use "
                    "'at-least-once'", self._resource)

    # -- rows -------------------------------------------------------------------------------------
    def _row(self, record: Any) -> tuple:
        cols = self._sink.columns
        if isinstance(record, dict):
            if record.keys() != set(cols):
                missing = [c for c in cols if c not in record]
                extra = [k for k in record if k not in cols]
                raise ConnectorError(f"JdbcSink: a record for table {self._sink.table!r} must have exactly "
                                     f"the keys {cols}; missing {missing}, extra {extra}: {record!r}"[:500],
                                     self._resource)
            return tuple(record[c] for c in cols)
        if isinstance(record, (tuple, list)) and len(record) == len(cols):
            return tuple(record)
        raise ConnectorError(f"JdbcSink: a record for table {self._sink.table!r} must be a tuple of "
                             f"{len(cols)} values {cols} or a dict with those keys, got {record!r}"[:500],
                             self._resource)

    def _statement(self, n: int) -> str:
        q = self._statements.get(n)
        if q is None:
            sql, sink = self._sql, self._sink
            one = sql.SQL("({})").format(sql.SQL(", ").join(
                sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(t)) for t in self._types))
            others = [c for c in sink.columns if c not in sink.key_columns]
            if others:
                action = sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
                    sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in others))
            else:
                action = sql.SQL("DO NOTHING")
            q = sql.SQL("INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) {}").format(
                self._ident, sql.SQL(", ").join(map(sql.Identifier, sink.columns)),
                sql.SQL(", ").join([one] * n), sql.SQL(", ").join(map(sql.Identifier, sink.key_columns)),
                action).as_string(self._conn)
            self._statements[n] = q
        return q

    def _upsert(self, rows: list[tuple]) -> None:
        """Upsert ``rows`` (distinct keys) on the writing session, in statements of at most
        ``batch_size`` rows."""
        conn, step = self._conn, self._rows_per_statement
        for i in range(0, len(rows), step):
            chunk = rows[i:i + step]
            conn.execute(self._statement(len(chunk)), [v for row in chunk for v in row])

    # -- writing --------------------------------------------------------------------------------------
    def write_batch(self, records: list) -> None:
        with self._lock:
            self._raise_background_error()
            self._ensure_recovered()
            if not self._buffer:
                self._first_buffered = time.monotonic()
            buf, key_idx, row_of = self._buffer, self._key_idx, self._row
            for record in records:
                row = row_of(record)
                key = tuple(row[i] for i in key_idx)
                buf.pop(key, None)  # re-insert: the dict keeps the order of each key's last record
                buf[key] = row
            if len(buf) >= self._sink.batch_size:
                self._flush()

    def _flush(self) -> None:
        if self._exactly:
            self._flush_into_transaction()
        else:
            self._upsert_buffer()

    def _upsert_buffer(self) -> None:
        """Upsert the buffered rows in a transaction of their own (with retries); empty the buffer."""
        if self._buffer:
            rows = list(self._buffer.values())

            def write():
                self._connection()
                with self._conn.transaction():
                    self._upsert(rows)
            self._retrying(f"upserting {len(rows)} rows", write)
            self.rows_written.inc(len(rows))
            self._buffer.clear()

    def _flush_periodically(self) -> None:
        interval_s = self._sink.flush_interval_ms / 1000.0
        while not self._stop.wait(min(interval_s, 0.1)):
            with self._lock:
                if (self._buffer and self._error is None
                        and time.monotonic() - self._first_buffered >= interval_s):
                    try:
                        self._flush()
                    except BaseException as exc:  # noqa: BLE001 - raised in the task's thread
                        self._error = exc

    def _raise_background_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _blocked_keys(self) -> set:
        return set().union(*(keys for _, _, keys in self._pending)) if self._pending else set()

    def _begin(self) -> None:
        """Open the transaction on the writing session; on a new session replay what the lost one held."""
        self._connection()
        if not self._txn_open:
            self._conn.execute("BEGIN")
            self._txn_open = True
            if self._txn:
                self._upsert(list(self._txn.values()))

    def _flush_into_transaction(self) -> None:
        blocked = self._blocked_keys()
        movable = {k: r for k, r in self._buffer.items() if k not in blocked}
        if not movable:
            return

        def write():
            self._begin()
            self._upsert(list(movable.values()))
        self._retrying(f"upserting {len(movable)} rows", write)
        self.rows_written.inc(len(movable))
        for k, r in movable.items():
            self._txn.pop(k, None)
            self._txn[k] = r
            del self._buffer[k]

    def _prepare(self, checkpoint: int | str) -> str | None:
        """Flush and ``PREPARE TRANSACTION``; returns the gid, or ``None`` if nothing was written."""
        self._flush_into_transaction()
        if not self._txn:
            return None
        gid = make_gid(self._prefix, self._ctx.subtask_index, self._ctx.attempt, checkpoint)
        statement = self._sql.SQL("PREPARE TRANSACTION {}").format(self._sql.Literal(gid))

        def prepare():
            if self._txn_open or not self._is_prepared(gid):  # a lost PREPARE may have succeeded
                self._begin()
                self._conn.execute(statement)
        self._retrying(f"PREPARE TRANSACTION '{gid}'", prepare)
        self._txn_open = False
        return gid

    def _is_prepared(self, gid: str) -> bool:
        return self._retrying("reading pg_prepared_xacts", lambda: self._admin_connection().execute(
            "SELECT 1 FROM pg_prepared_xacts WHERE gid = %s", (gid,)).fetchone() is not None, admin=True)

    def _finish_prepared(self, gid: str, commit: bool) -> None:
        """``COMMIT PREPARED`` or ``ROLLBACK PREPARED`` ``gid``; a gid no longer prepared is done already."""
        verb = "COMMIT PREPARED" if commit else "ROLLBACK PREPARED"
        statement = self._sql.SQL(verb + " {}").format(self._sql.Literal(gid))

        def run():
            try:
                self._admin_connection().execute(statement)
            except self._psycopg.errors.UndefinedObject:
                pass  # finished before (a retry, a restore after the commit, another attempt)
        self._retrying(f"{verb} '{gid}'", run, admin=True)

    # -- recovery ---------------------------------------------------------------------------------
    def _prepared_gids(self) -> list[str]:
        return self._retrying("reading pg_prepared_xacts", lambda: [r[0] for r in self._admin_connection().execute(
            "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE %s",
            (self._prefix + "%",))], admin=True)

    def _recover(self, restored: list[str]) -> None:
        ctx = self._ctx
        commit, rollback = recovery_plan(self._prepared_gids(), restored, self._prefix, ctx.subtask_index,
                                         ctx.parallelism, ctx.attempt)
        for gid in commit:
            self._finish_prepared(gid, commit=True)
        for gid in rollback:
            log.info("JdbcSink %s: rolling back %s, prepared by a failed attempt", self._target, gid)
            self._finish_prepared(gid, commit=False)
        self._recovered = True

    def _ensure_recovered(self) -> None:
        """Without a restore: roll back what earlier attempts of this subtask prepared (no checkpoint
        of this job completed, or the restore would have said what to commit)."""
        if not self._recovered:
            self._recover([])

    # -- the two-phase commit (see SinkWriter) ----------------------------------------------------------
    def snapshot_state(self, checkpoint_id: int) -> dict | None:
        """At the barrier: at-least-once flushes and commits; exactly-once prepares the open transaction.

        Returns:
            ``None`` (at-least-once) or ``{"subtask", "pending": [[checkpoint, gid], ...], "rows": [...]}``:
            the prepared transactions to commit when the checkpoint completes, and the rows still
            waiting for a pending transaction's commit.
        """
        with self._lock:
            self._raise_background_error()
            self._ensure_recovered()
            if not self._exactly:
                self._flush()
                return None
            gid = self._prepare(checkpoint_id)
            if gid is not None:
                self._pending.append((checkpoint_id, gid, frozenset(self._txn)))
                self._txn = {}
            return {"subtask": self._ctx.subtask_index,
                    "pending": [[cid, g] for cid, g, _ in self._pending],
                    "rows": list(self._buffer.values())}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Commit the transactions prepared at checkpoints up to ``checkpoint_id`` (idempotent)."""
        with self._lock:
            done = [p for p in self._pending if p[0] <= checkpoint_id]
            for _, gid, _ in done:
                self._finish_prepared(gid, commit=True)
            self._pending = [p for p in self._pending if p[0] > checkpoint_id]

    def restore_state(self, states: list) -> None:
        """Commit the restored checkpoint's prepared transactions, roll back the other ones this
        subtask's share left behind, and buffer the rows the checkpoint held."""
        with self._lock:
            if not self._exactly:
                return
            restored = [gid for st in states if st for _, gid in st.get("pending", [])]
            self._recover(restored)
            for st in states:
                for row in (st or {}).get("rows", []):
                    row = tuple(row)
                    self._buffer[tuple(row[i] for i in self._key_idx)] = row

    def prepare_commit(self) -> Any:
        """End of input: at-least-once flushes and commits; exactly-once prepares the last transaction.

        Returns:
            ``None``, or for exactly-once ``{"kind": "emrflow.jdbc", "gids": [...]}``: what
            :meth:`commit` commits.
        """
        with self._lock:
            self._stop.set()
            self._raise_background_error()
            self._ensure_recovered()
            if not self._exactly:
                self._flush()
                return None
            gid = self._prepare("end")
            if gid is not None:
                self._final.append(gid)
                self._txn = {}
            return {"kind": "emrflow.jdbc", "gids": [g for _, g, _ in self._pending] + self._final}

    def commit(self) -> None:
        """The whole job finished: commit every prepared transaction, then write the rows that were
        waiting for them (exactly-once); at-least-once has nothing left to do."""
        with self._lock:
            self._stop.set()
            if self._exactly:
                for gid in [g for _, g, _ in self._pending] + self._final:
                    self._finish_prepared(gid, commit=True)
                self._pending, self._final = [], []
                self._upsert_buffer()
            self._close()

    def abort(self, discard_pending: bool = True) -> None:
        """Roll back the open transaction; with ``discard_pending`` also the prepared ones (a failover
        passes ``False``: a checkpoint holding them may have completed, the restore decides)."""
        self._stop.set()
        with self._lock:
            self._buffer.clear()
            self._txn = {}
            self._drop("_conn")  # the server rolls back the open transaction
            if discard_pending and self._exactly:
                for gid in [g for _, g, _ in self._pending] + self._final:
                    try:
                        self._finish_prepared(gid, commit=False)
                    except ConnectorError as exc:
                        log.warning("JdbcSink %s: cannot roll back %s: %s", self._target, gid, exc)
                self._pending, self._final = [], []
            self._close()

    def _close(self) -> None:
        self._drop("_conn")
        self._drop("_admin")
