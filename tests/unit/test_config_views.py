"""Typed configuration down to the runtime: the frozen views and the per-job file system."""

from __future__ import annotations

import pickle

import pytest

from emrflow.config import OPTIONS, Configuration
from emrflow.config_views import DEFAULT_CHECKPOINTS_BASE, BadRecordsConfig, CheckpointConfig, NetworkConfig
from emrflow.fs import FileSystem, S3Options
from emrflow.runtime.jobmanager import machine as m
from tests.unit.test_jobmanager_machine import Driver


def test_views_take_the_option_defaults_from_the_registry():
    network = NetworkConfig.of(Configuration())
    assert (network.buffer_timeout_ms, network.buffers_per_channel, network.batch_size) == (
        OPTIONS["execution.buffer-timeout"].default,
        OPTIONS["taskmanager.network.memory.buffers-per-channel"].default,
        OPTIONS["taskmanager.network.batch-size"].default)
    checkpoints = CheckpointConfig.of(Configuration())
    assert not checkpoints.periodic and checkpoints.interval_ms == 0
    assert checkpoints.exactly_once is (OPTIONS["execution.checkpointing.mode"].default == "EXACTLY_ONCE")
    assert checkpoints.timeout_ms == OPTIONS["execution.checkpointing.timeout"].default
    assert checkpoints.checkpoints_dir == DEFAULT_CHECKPOINTS_BASE and checkpoints.savepoints_dir is None
    bad = BadRecordsConfig.of(Configuration())
    assert (bad.fail, bad.report_limit, bad.max_ratio, bad.max_count) == (
        OPTIONS["emrflow.bad-records.fail"].default, OPTIONS["emrflow.bad-records.report-limit"].default,
        OPTIONS["emrflow.bad-records.max-ratio"].default, OPTIONS["emrflow.bad-records.max-count"].default)


def test_views_read_values_as_the_user_wrote_them_in_their_units():
    config = Configuration.from_dict({
        "execution.buffer-timeout": "2 s", "taskmanager.network.batch-size": "64",
        "execution.checkpointing.interval": "1 min", "execution.checkpointing.mode": "AT_LEAST_ONCE",
        "execution.checkpointing.min-pause": "250 ms", "state.checkpoints.dir": "s3://b/ck",
        "emrflow.bad-records.max-count": "7"}, source="-D")
    assert NetworkConfig.of(config).buffer_timeout_ms == 2000
    assert NetworkConfig.of(config).batch_size == 64
    ck = CheckpointConfig.of(config)
    assert (ck.interval_ms, ck.periodic, ck.exactly_once, ck.min_pause_ms, ck.checkpoints_dir) == (
        60_000, True, False, 250, "s3://b/ck")
    assert BadRecordsConfig.of(config).max_count == 7
    with pytest.raises(AttributeError):
        ck.interval_ms = 1  # frozen


def test_each_job_has_its_own_file_system_and_none_is_process_wide(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    a = FileSystem.of(Configuration.from_dict({"s3.endpoint": "http://127.0.0.1:1111",
                                               "s3.endpoint.region": "eu-west-1"}))
    b = FileSystem.of(Configuration.from_dict({"s3.endpoint": "http://127.0.0.1:2222"}))
    # building b did not change a (the old fs.configure made the last job win)
    assert a.endpoint() == "http://127.0.0.1:1111" and b.endpoint() == "http://127.0.0.1:2222"
    assert a.s3_region("any-bucket") == "eu-west-1"
    assert FileSystem().endpoint() is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:3333")
    assert FileSystem().endpoint() == "http://127.0.0.1:3333"    # the environment, when the job sets none
    assert a.endpoint() == "http://127.0.0.1:1111"                # the job's own option wins
    assert pickle.loads(pickle.dumps(a)) == a and a != b
    assert S3Options.of(None) == S3Options()


def _topology(job_id, endpoint):
    return {"job_id": job_id, "name": job_id, "batch": False, "checkpointing": True, "restore": None,
            "config": {"execution.checkpointing.interval": 1000, "state.checkpoints.dir": "/chk",
                       "s3.endpoint": endpoint},
            "vertices": [{"id": 0, "name": "v0", "parallelism": 1, "max_parallelism": 128,
                          "operators": [{"id": 0, "name": "op", "uid": "", "kind": "map"}]}],
            "edges": []}


def test_the_jobmanager_does_each_jobs_io_with_that_jobs_file_system():
    d = Driver(slots=2)
    d.feed(m.SubmitJob(_topology("job-a", "http://127.0.0.1:1111"), b""))
    d.feed(m.SubmitJob(_topology("job-b", "http://127.0.0.1:2222"), b""))
    out = []
    for job_id, slot in (("job-a", "tm1/0"), ("job-b", "tm1/1")):
        d.feed(m.CancelJob(job_id))
        out += d.all_tasks("CANCELED", job_id=job_id)
        out += d.acks(job_id=job_id, slots=(slot,))
    removals = {r.path: r.file_system.endpoint() for r in out if isinstance(r, m.RemoveCheckpoint)}
    assert removals == {"/chk/job-a": "http://127.0.0.1:1111", "/chk/job-b": "http://127.0.0.1:2222"}
