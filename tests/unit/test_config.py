"""Configuration: types, precedence, error messages, generated docs."""

from __future__ import annotations

import os
import pickle

import pytest

from emrflow.config import (
    DEFAULT_CONF_FILE, OPTIONS, Configuration, options_markdown, parse_duration_ms,
    parse_memory_bytes)
from emrflow.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NO_ENV: dict = {}


@pytest.mark.parametrize("text,ms", [("500 ms", 500), ("30 s", 30_000), ("2 min", 120_000),
                                     ("1 h", 3_600_000), ("10s", 10_000), (250, 250), ("250", 250)])
def test_durations(text, ms):
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["fast", "10 parsecs", "-5 s", True, ""])
def test_bad_durations(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(bad)


@pytest.mark.parametrize("text,n", [("1024m", 1024 * 2**20), ("1 GiB", 2**30), ("512 MiB", 512 * 2**20),
                                    ("2g", 2 * 2**30), ("1048576", 2**20), (4096, 4096)])
def test_memory(text, n):
    assert parse_memory_bytes(text) == n


@pytest.mark.parametrize("bad", ["lots", "1 parsec", True])
def test_bad_memory(bad):
    with pytest.raises(ValueError, match="memory size"):
        parse_memory_bytes(bad)


def test_defaults_and_types():
    c = Configuration()
    assert c.get("parallelism.default") == 1
    assert c.get("heartbeat.timeout") == 50_000
    assert c.get("taskmanager.memory.process.size") == 1728 * 2**20
    assert c["execution.runtime-mode"] == "STREAMING"
    assert not c.is_set("parallelism.default")


def test_precedence_defaults_file_then_dynamic(tmp_path):
    f = tmp_path / "conf.yaml"
    f.write_text("parallelism.default: 3\ntaskmanager:\n  numberOfTaskSlots: 4\n"
                 "execution:\n  runtime-mode: batch\n")
    c = Configuration.load(conf_file=str(f), dynamic=["parallelism.default=5"], env=NO_ENV)
    assert c.get("parallelism.default") == 5          # -D wins over the file
    assert c.get("taskmanager.numberOfTaskSlots") == 4  # nested keys flatten
    assert c.get("execution.runtime-mode") == "BATCH"   # enums are case-insensitive
    assert c.get("heartbeat.interval") == 10_000        # default


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"unknown configuration key 'paralellism.default' \(from -D\); "
                                          r"did you mean 'parallelism.default'\?") as info:
        Configuration.load(dynamic=["paralellism.default=2"], env=NO_ENV)
    assert info.value.key == "paralellism.default"
    with pytest.raises(ConfigError, match="emrflow config keys"):
        Configuration.load(dynamic=["zzz=1"], env=NO_ENV)


def test_bad_value_names_key_file_and_line(tmp_path):
    f = tmp_path / "conf.yaml"
    f.write_text("# comment\nparallelism.default: 2\ntaskmanager:\n  numberOfTaskSlots: four\n")
    with pytest.raises(ConfigError) as info:
        Configuration.load(conf_file=str(f), env=NO_ENV)
    msg = str(info.value)
    assert "taskmanager.numberOfTaskSlots" in msg and "integer >= 1" in msg and "'four'" in msg
    assert f"{f}:4" in msg


def test_bad_value_from_dynamic_and_bounds():
    with pytest.raises(ConfigError, match=r"parallelism.default: expected an integer >= 1, got '0' \(from -D\)"):
        Configuration.load(dynamic=["parallelism.default=0"], env=NO_ENV)
    with pytest.raises(ConfigError, match="one of hashmap, rocksdb"):
        Configuration.load(dynamic=["state.backend.type=leveldb"], env=NO_ENV)


def test_dynamic_without_equals():
    with pytest.raises(ConfigError, match="-D expects key=value"):
        Configuration.load(dynamic=["parallelism.default"], env=NO_ENV)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="configuration file not found"):
        Configuration.load(conf_file=str(tmp_path / "nope.yaml"), env=NO_ENV)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"invalid YAML in {bad}:\d+"):
        Configuration.load(conf_file=str(bad), env=NO_ENV)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        Configuration.load(conf_file=str(lst), env=NO_ENV)


def test_conf_dir_from_environment(tmp_path):
    (tmp_path / "emrflow-conf.yaml").write_text("parallelism.default: 7\n")
    c = Configuration.load(env={"EMRFLOW_CONF_DIR": str(tmp_path)})
    assert c.get("parallelism.default") == 7
    with pytest.raises(ConfigError, match="not found"):
        Configuration.load(env={"EMRFLOW_CONF_DIR": str(tmp_path / "missing")})


def test_immutable_and_picklable():
    c = Configuration.load(dynamic=["parallelism.default=2"], env=NO_ENV)
    with pytest.raises(AttributeError):
        c.foo = 1
    c2 = c.with_overrides({"parallelism.default": 4})
    assert c.get("parallelism.default") == 2 and c2.get("parallelism.default") == 4
    assert pickle.loads(pickle.dumps(c2)) == c2


def test_packaged_default_file_loads_and_matches_defaults():
    assert os.path.isfile(DEFAULT_CONF_FILE)
    c = Configuration.load(conf_file=DEFAULT_CONF_FILE, env=NO_ENV)
    for key, value in c.explicit().items():
        assert value == OPTIONS[key].default, f"{key} in configs/emrflow-conf.yaml differs from its default"


def test_docs_are_current():
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
        assert f.read() == options_markdown(), \
            "docs/configuration.md is stale: regenerate with `emrflow config docs > docs/configuration.md`"
