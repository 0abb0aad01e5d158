"""examples/streaming_top_movies.py end to end: Kafka -> top N movies per hour -> Parquet and PostgreSQL.

The first 3000 bundled MovieLens ratings in event-time order are replayed into a 2-partition
topic on the session's real Kafka broker (tests/integration/conftest_kafka.py) by
examples/replay_ratings.py; the example runs bounded at p=2 with checkpoints, to a local
Parquet directory and the session's real PostgreSQL (tests/integration/conftest_postgres.py,
exactly-once through two-phase commit). Both outputs are compared with a plain-Python top N per
hour computed here from the same ratings, read with the csv module (ties: more ratings first,
then the smaller movie id, as the example documents).
"""

from __future__ import annotations

import collections
import csv
import datetime
import glob
import os
import subprocess
import sys
import uuid

import pytest
from conftest_kafka import kafka_broker  # noqa: F401  (the session's broker)
from conftest_postgres import pg_table, postgres  # noqa: F401  (the session's PostgreSQL)

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration]

RATINGS = os.path.join(ROOT, "examples", "data", "movielens-latest-small", "ratings.csv")
JOB = os.path.join(ROOT, "examples", "streaming_top_movies.py")
REPLAY = os.path.join(ROOT, "examples", "replay_ratings.py")
COUNT, TOP = 3000, 3
UTC = datetime.timezone.utc


def first_ratings(n: int) -> list[tuple[int, int, int]]:
    """The first ``n`` ratings in event-time order (stable on equal timestamps, as the replay
    script sends them) as ``(user, movie, timestamp s)``."""
    with open(RATINGS, newline="") as f:
        rows = [(int(u), int(m), int(t)) for u, m, _, t in list(csv.reader(f))[1:]]
    return sorted(rows, key=lambda r: r[2])[:n]


def counts_per_hour(ratings) -> dict[int, collections.Counter]:
    """Ratings per movie for each UTC hour (start in s since the epoch)."""
    per_hour: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for _, movie, ts in ratings:
        per_hour[ts - ts % 3600][movie] += 1
    return per_hour


def ranked(counts: collections.Counter) -> list[tuple[int, int]]:
    """``(movie, ratings)`` by more ratings first, then the smaller movie id (the documented tie break)."""
    return sorted(counts.items(), key=lambda mc: (-mc[1], mc[0]))


def reference(per_hour: dict[int, collections.Counter], n: int) -> set[tuple[datetime.datetime, int, int, int]]:
    """``(hour, rank, movie, ratings)`` of the top ``n`` movies of each UTC hour."""
    return {(datetime.datetime.fromtimestamp(hour, UTC), rank, movie, c)
            for hour, counts in per_hour.items()
            for rank, (movie, c) in enumerate(ranked(counts)[:n], start=1)}


def test_top_movies_per_hour_from_kafka_to_parquet_and_postgres(tmp_path, kafka_broker, postgres,  # noqa: F811
                                                                pg_table):  # noqa: F811
    import psycopg
    import pyarrow.parquet as pq

    per_hour = counts_per_hour(first_ratings(COUNT))
    want = reference(per_hour, TOP)
    # the tie break decides here: some hours have a tie across the cut (N-th and N+1-th equal)
    cut_ties = sum(1 for counts in per_hour.values()
                   if len(counts) > TOP and ranked(counts)[TOP - 1][1] == ranked(counts)[TOP][1])
    assert cut_ties >= 10, f"only {cut_ties} hours with a tie at the cut: the tie break would go untested"

    topic = f"ratings-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, 2)
    replay = subprocess.run([sys.executable, REPLAY, "--bootstrap-servers", kafka_broker.bootstrap_servers,
                             "--topic", topic, "--rate", "0", "--limit", str(COUNT)],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.startswith(f"sent {COUNT} ratings"), replay.stdout

    out = tmp_path / "top"
    proc = subprocess.run([sys.executable, "-m", "emrflow.cli", "run", "-q", "-p", "2",
                           "-D", f"state.checkpoints.dir={tmp_path / 'checkpoints'}", JOB,
                           "--bootstrap-servers", kafka_broker.bootstrap_servers, "--topic", topic, "--bounded",
                           "--top", str(TOP), "--checkpoint-interval-ms", "1000", "--output", str(out),
                           "--postgres", postgres.dsn, "--table", pg_table],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr

    # Parquet, one bucket directory per event hour; every row in the bucket of its own hour
    got_parquet = []
    for part in glob.glob(str(out / "dt=*" / "hour=*" / "part-*")):
        bucket = os.path.relpath(os.path.dirname(part), out)
        for row in pq.read_table(part).to_pylist():
            assert row["hour"].strftime("dt=%Y-%m-%d/hour=%H") == bucket, (row, bucket)
            got_parquet.append((row["hour"], row["rank"], row["movie_id"], row["ratings"]))
    assert len(got_parquet) == len(set(got_parquet)), "a row written twice"
    assert set(got_parquet) == want
    assert len({h for h, *_ in want}) == len(glob.glob(str(out / "dt=*" / "hour=*")))

    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        got_pg = conn.execute(f"SELECT hour, rank, movie_id, ratings FROM {pg_table}").fetchall()
        prepared = conn.execute("SELECT gid FROM pg_prepared_xacts").fetchall()
    assert {(h.astimezone(UTC), r, m, c) for h, r, m, c in got_pg} == want
    assert len(got_pg) == len(want)
    assert not [g for (g,) in prepared if g.startswith("emrflow-")], prepared


def test_bad_arguments_name_the_flag(tmp_path):
    for args, flag in ((["--topic", "t"], "--bootstrap-servers"),
                       (["--kinesis-stream", "s", "--bounded", "--output", "o"], "--bounded"),
                       (["--topic", "t", "--bootstrap-servers", "b"], "--output"),
                       (["--topic", "t", "--bootstrap-servers", "b", "--output", "o", "--top", "0"], "--top")):
        proc = subprocess.run([sys.executable, JOB, *args], capture_output=True, text=True, timeout=60,
                              cwd=tmp_path)
        assert proc.returncode == 2 and flag in proc.stderr, (args, proc.stderr)
