"""The PostgreSQL sink's pure parts: gids, the recovery plan, option checks (no server)."""

from __future__ import annotations

import pytest

from emrflow.connectors.jdbc import JdbcSink, gid_prefix, make_gid, parse_gid, recovery_plan
from emrflow.errors import ConfigError

JOB = "0123456789abcdef" * 2


def test_gids_are_unique_per_job_sink_subtask_attempt_and_checkpoint():
    gids = {make_gid(gid_prefix(job, op, table), s, a, c)
            for job in (JOB, "f" * 32) for op in ("Sink: a", "Sink: b") for table in ("t", "s.t")
            for s in range(3) for a in range(3) for c in (1, 2, "end")}
    assert len(gids) == 2 * 2 * 2 * 3 * 3 * 3
    assert all(len(g) < 200 for g in gids)  # PostgreSQL's limit for a gid


def test_parse_gid_inverts_make_gid_and_ignores_foreign_gids():
    prefix = gid_prefix(JOB, "Sink: JDBC Sink", "public.t")
    g = parse_gid(make_gid(prefix, 3, 2, 17))
    assert (g.prefix, g.subtask, g.attempt, g.checkpoint) == (prefix, 3, 2, "17")
    assert parse_gid(make_gid(prefix, 0, 0, "end")).checkpoint == "end"
    for foreign in ("", "my-app-tx-1", prefix + "x-0-1", "emrflow-XYZ-12345678-0-0-1"):
        assert parse_gid(foreign) is None


def test_recovery_commits_the_restored_gids_and_rolls_back_only_this_subtasks_leftovers():
    me = gid_prefix(JOB, "Sink", "t")
    other_sink = gid_prefix(JOB, "Sink", "u")
    other_job = gid_prefix("a" * 32, "Sink", "t")
    restored = [make_gid(me, 1, 0, 4), make_gid(me, 1, 0, 5)]
    prepared = restored + [
        make_gid(me, 1, 0, 6),          # checkpoint 6 never completed: roll back
        make_gid(me, 1, 1, 7),          # a later failed attempt: roll back
        make_gid(me, 1, 2, 8),          # this attempt's own: keep
        make_gid(me, 0, 0, 6),          # another subtask's: not mine
        make_gid(other_sink, 1, 0, 6),  # another sink's
        make_gid(other_job, 1, 0, 6),   # another job's
        "somebody-elses-transaction",
    ]
    commit, rollback = recovery_plan(prepared, restored + restored[:1], me, 1, 2, attempt=2)
    assert commit == restored
    assert rollback == sorted([make_gid(me, 1, 0, 6), make_gid(me, 1, 1, 7)])


def test_recovery_at_a_lower_parallelism_takes_over_the_former_subtasks_leftovers():
    me = gid_prefix(JOB, "Sink", "t")
    prepared = [make_gid(me, s, 0, 9) for s in range(4)]
    # former subtasks 0..3 at parallelism 2: subtask 0 owns 0 and 2, subtask 1 owns 1 and 3
    assert recovery_plan(prepared, [], me, 0, 2, 1)[1] == sorted([prepared[0], prepared[2]])
    assert recovery_plan(prepared, [], me, 1, 2, 1)[1] == sorted([prepared[1], prepared[3]])


@pytest.mark.parametrize("kwargs, key, text", [
    ({"table": ""}, "table", "table must name"),
    ({"table": "a.b.c"}, "table", "'schema.table'"),
    ({"columns": []}, "columns", "non-empty list"),
    ({"columns": ["k", "k"]}, "columns", "twice"),
    ({"key_columns": ["id"]}, "key_columns", "key column(s) ['id'] of table 't' are not among columns"),
    ({"key_columns": "k"}, "key_columns", "non-empty list"),
    ({"delivery_guarantee": "twice"}, "delivery_guarantee", "'at-least-once' or 'exactly-once'"),
    ({"batch_size": 0}, "batch_size", "batch_size must be an integer >= 1"),
    ({"flush_interval_ms": -1}, "flush_interval_ms", ">= 0"),
    ({"max_retries": 1.5}, "max_retries", "integer"),
    ({"url": " "}, "url", "connection string"),
])
def test_bad_options_name_the_option(kwargs, key, text):
    args = {"url": "host=db dbname=x", "table": "t", "columns": ["k", "v"], "key_columns": ["k"], **kwargs}
    with pytest.raises(ConfigError) as info:
        JdbcSink(**args)
    assert info.value.key == key
    assert text in str(info.value)


def test_delivery_guarantee_accepts_flinks_spelling():
    sink = JdbcSink("host=db", "t", ["k"], ["k"], delivery_guarantee="EXACTLY_ONCE")
    assert sink.delivery_guarantee == "exactly-once"
