"""Configuration: type parsers, precedence, file loading, error messages, generated docs.

No processes, no network: files live in ``tmp_path`` and the environment is passed
to :meth:`Configuration.load` through its ``env`` parameter.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re

import pytest

from emrflow.config import (
    DEFAULT_CONF_FILE,
    OPTIONS,
    ConfigOption,
    Configuration,
    options_markdown,
    parse_duration_ms,
    parse_memory_bytes,
)
from emrflow.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NO_ENV: dict = {}


def write(tmp_path, text: str, name: str = "conf.yaml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def parse(key: str, value):
    return OPTIONS[key].parse(value)


# -- parsers ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,ms", [
    ("500 ms", 500), ("30 s", 30_000), ("2 min", 120_000), ("1 h", 3_600_000), ("10s", 10_000),
    ("1 d", 86_400_000), ("2m", 120_000), ("1.5 s", 1500), ("  3 SEC ", 3000), ("0", 0),
    (250, 250), ("250", 250)])
def test_duration_parses_to_milliseconds(text, ms):
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("bad", ["fast", "10 parsecs", "-5 s", "s", "", "1 2 s", True, -1, None,
                                 float("nan")])
def test_bad_durations_are_value_errors(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration_ms(bad)


@pytest.mark.parametrize("text,n", [
    ("1024m", 1024 * 2**20), ("1 GiB", 2**30), ("512 MiB", 512 * 2**20), ("2g", 2 * 2**30),
    ("1048576", 2**20), (4096, 4096), ("64kb", 64 * 1024), ("1.5g", 3 * 2**29), ("10 b", 10),
    ("1t", 2**40)])
def test_memory_parses_to_bytes(text, n):
    assert parse_memory_bytes(text) == n


@pytest.mark.parametrize("bad", ["lots", "1 parsec", "-1g", "g", "", True, -5, None])
def test_bad_memory_sizes_are_value_errors(bad):
    with pytest.raises(ValueError, match="memory size"):
        parse_memory_bytes(bad)


@pytest.mark.parametrize("value,expected", [
    (True, True), (False, False), ("true", True), ("FALSE", False), ("Yes", True), ("no", False),
    ("1", True), ("0", False), (1, True), (0, False), (" on ", True), ("off", False)])
def test_bool(value, expected):
    assert parse("execution.attached", value) is expected


@pytest.mark.parametrize("bad", ["maybe", "2", 2, 1.0, [True]])
def test_bad_bool(bad):
    with pytest.raises(ValueError, match="expected true or false"):
        parse("execution.attached", bad)


def test_int_and_bounds():
    assert parse("parallelism.default", "4") == 4
    assert parse("parallelism.default", " 12 ") == 12
    assert parse("parallelism.default", 3) == 3
    assert parse("pipeline.max-parallelism", 32768) == 32768
    assert parse("jobmanager.rpc.port", 0) == 0
    for bad in ("four", "2.5", 2.0, True, "0", 0, [1]):
        with pytest.raises(ValueError, match=r"expected an integer >= 1, got"):
            parse("parallelism.default", bad)
    with pytest.raises(ValueError, match=r"expected an integer in \[1, 32768\], got 40000"):
        parse("pipeline.max-parallelism", 40000)


def test_float_parser():
    opt = ConfigOption("x.ratio", "float", 0.5, "A ratio.", min=0, max=1)
    assert opt.parse("0.25") == 0.25 and opt.parse(1) == 1.0 and isinstance(opt.parse(1), float)
    for bad in ("half", "1.5", True, "nan"):
        with pytest.raises(ValueError, match=r"expected a number in \[0, 1\]"):
            opt.parse(bad)


def test_str_parser():
    assert parse("rest.address", "example.org") == "example.org"
    assert parse("yarn.application.queue", 42) == "42"
    with pytest.raises(ValueError, match="expected a string"):
        parse("rest.address", {"a": 1})


def test_enum_is_case_insensitive_and_canonical():
    assert parse("execution.runtime-mode", "batch") == "BATCH"
    assert parse("execution.runtime-mode", " Automatic ") == "AUTOMATIC"
    assert parse("state.backend.type", "RocksDB") == "rocksdb"
    assert parse("restart-strategy.type", "FIXED-DELAY") == "fixed-delay"
    with pytest.raises(ValueError, match=r"expected one of hashmap, rocksdb, got 'leveldb'"):
        parse("state.backend.type", "leveldb")
    with pytest.raises(ValueError, match="expected one of"):
        parse("execution.runtime-mode", 1)


def test_list_parser():
    assert parse("yarn.tags", "a; b ;;c") == ("a", "b", "c")
    assert parse("yarn.tags", ["a", 1]) == ("a", "1")
    assert parse("yarn.tags", ("x",)) == ("x",)
    assert parse("yarn.tags", "") == () and parse("yarn.tags", None) == ()
    with pytest.raises(ValueError, match="expected a list"):
        parse("yarn.tags", {"a": 1})
    with pytest.raises(ValueError, match="expected a list of strings"):
        parse("yarn.tags", [["nested"]])


def test_duration_and_memory_options_use_the_public_parsers():
    assert parse("heartbeat.timeout", "1 min") == 60_000
    assert parse("heartbeat.timeout", 1500) == 1500
    assert parse("taskmanager.memory.process.size", "2g") == 2 * 2**30
    with pytest.raises(ValueError, match="duration"):
        parse("heartbeat.timeout", "soon")


def test_a_memory_option_with_a_minimum_refuses_less():
    assert parse("taskmanager.network.shared-memory.slot-size", "64k") == 64 * 1024
    assert parse("taskmanager.network.shared-memory.slot-size", "8m") == 8 * 2**20
    with pytest.raises(ValueError, match="of at least 64k, got '63k'"):
        parse("taskmanager.network.shared-memory.slot-size", "63k")


def test_no_value_is_unset_only_where_the_default_is_unset():
    assert parse("pipeline.name", None) is None
    assert parse("execution.checkpointing.interval", "") is None
    with pytest.raises(ValueError, match=r"expected an integer >= 1, got no value"):
        parse("parallelism.default", "")
    with pytest.raises(ValueError, match="got no value"):
        parse("rest.address", None)


def test_every_default_is_typed_and_formats_back_to_itself():
    for key, opt in OPTIONS.items():
        assert opt.key == key
        assert opt.description.strip().endswith("."), key
        if opt.default is not None:
            assert opt.parse(opt.default) == opt.default, key
            assert opt.parse(opt.format(opt.default)) == opt.default, key
    assert OPTIONS["execution.buffer-timeout"].format(100) == "100 ms"
    assert OPTIONS["heartbeat.timeout"].format(50_000) == "50 s"
    assert OPTIONS["taskmanager.memory.process.size"].format(1728 * 2**20) == "1728m"


def test_option_declarations_are_checked():
    with pytest.raises(ValueError, match="unknown type"):
        ConfigOption("x", "complex", None, "X.")
    with pytest.raises(ValueError, match="choices"):
        ConfigOption("x", "enum", None, "X.")


def test_required_keys_and_defaults():
    expected = {
        "parallelism.default": 1, "pipeline.max-parallelism": 128, "pipeline.name": None,
        "execution.runtime-mode": "STREAMING", "execution.target": "local", "execution.attached": True,
        "execution.buffer-timeout": 100, "taskmanager.numberOfTaskSlots": 1,
        "local.number-taskmanager": 1, "taskmanager.network.memory.buffers-per-channel": 2,
        "taskmanager.network.batch-size": 1024, "jobmanager.rpc.address": "localhost",
        "jobmanager.rpc.port": 6123, "rest.address": "localhost", "rest.port": 8081,
        "rest.bind-address": "127.0.0.1", "heartbeat.interval": 10_000, "heartbeat.timeout": 50_000,
        "client.progress.delay": 2000, "pipeline.auto-watermark-interval": 200,
        "state.backend.type": "hashmap", "state.checkpoints.dir": None, "state.savepoints.dir": None,
        "state.checkpoints.num-retained": 1, "execution.checkpointing.interval": None,
        "execution.checkpointing.mode": "EXACTLY_ONCE", "execution.checkpointing.timeout": 600_000,
        "restart-strategy.type": None, "restart-strategy.fixed-delay.attempts": 1,
        "restart-strategy.fixed-delay.delay": 1000, "jobmanager.memory.process.size": 1600 * 2**20,
        "taskmanager.memory.process.size": 1728 * 2**20, "log.dir": None, "python.executable": None,
        "yarn.application.name": None, "yarn.application.queue": "default",
        "yarn.containers.vcores": 1, "emrflow.bad-records.fail": False,
        "emrflow.bad-records.report-limit": 10,
    }
    c = Configuration()
    for key, value in expected.items():
        assert c.get(key) == value, key
    assert c.to_dict().keys() == OPTIONS.keys()
    assert c.explicit() == {} and not c.is_set("parallelism.default")


# -- precedence and files --------------------------------------------------------------

def test_precedence_defaults_then_file_then_dynamic(tmp_path):
    f = write(tmp_path, "parallelism.default: 3\nrest.port: 9000\n"
                        "execution:\n  runtime-mode: batch\n")
    c = Configuration.load(conf_file=f, dynamic=["parallelism.default=5", "rest.port = 9001 ",
                                                 "parallelism.default=6"], env=NO_ENV)
    assert c.get("parallelism.default") == 6                # -D wins over the file; last -D wins
    assert c.get("rest.port") == 9001
    assert c.get("execution.runtime-mode") == "BATCH"       # from the file
    assert c.get("heartbeat.interval") == 10_000            # default
    assert c.is_set("rest.port") and "rest.port" in c
    assert not c.is_set("heartbeat.interval") and "heartbeat.interval" not in c
    assert c.explicit() == {"parallelism.default": 6, "rest.port": 9001, "execution.runtime-mode": "BATCH"}
    assert c.to_dict()["heartbeat.interval"] == 10_000 and c.to_dict()["rest.port"] == 9001


def test_dynamic_value_may_contain_equals():
    c = Configuration.load(dynamic=["pipeline.name=a=b"], env=NO_ENV)
    assert c.get("pipeline.name") == "a=b"


def test_nested_yaml_flattens_to_dotted_keys(tmp_path):
    nested = write(tmp_path, "taskmanager:\n  numberOfTaskSlots: 4\n  network:\n    memory:\n"
                             "      buffers-per-channel: 3\nstate: {backend: {type: rocksdb}}\n", "n.yaml")
    dotted = write(tmp_path, "taskmanager.numberOfTaskSlots: 4\n"
                             "taskmanager.network.memory.buffers-per-channel: 3\n"
                             "state.backend.type: rocksdb\n", "d.yaml")
    a = Configuration.load(conf_file=nested, env=NO_ENV)
    b = Configuration.load(conf_file=dotted, env=NO_ENV)
    assert a == b
    assert a.get("taskmanager.numberOfTaskSlots") == 4
    assert a.get("taskmanager.network.memory.buffers-per-channel") == 3
    assert a.get("state.backend.type") == "rocksdb"


def test_yaml_values_of_each_type(tmp_path):
    f = write(tmp_path, "execution.attached: no\nyarn.application.queue: no\nheartbeat.timeout: 2 min\n"
                        "execution.buffer-timeout: 5\ntaskmanager.memory.process.size: 1 GiB\n"
                        "yarn.tags: [a, b]\nyarn.ship-files: x.py;y.py\npipeline.name: 2024\n"
                        "state.checkpoints.dir: ~\n")
    c = Configuration.load(conf_file=f, env=NO_ENV)
    assert c.get("execution.attached") is False                # YAML boolean
    assert c.get("yarn.application.queue") == "no"             # strings are taken as written
    assert c.get("heartbeat.timeout") == 120_000
    assert c.get("execution.buffer-timeout") == 5
    assert c.get("taskmanager.memory.process.size") == 2**30
    assert c.get("yarn.tags") == ("a", "b")
    assert c.get("yarn.ship-files") == ("x.py", "y.py")
    assert c.get("pipeline.name") == "2024"
    assert c.get("state.checkpoints.dir") is None


def test_from_dict_and_with_overrides():
    c = Configuration.from_dict({"parallelism.default": "2", "rest": {"port": 9999}})
    assert c.get("parallelism.default") == 2 and c.get("rest.port") == 9999
    d = c.with_overrides({"parallelism.default": 4, "heartbeat.timeout": "1 min"}, source="program")
    assert d.get("parallelism.default") == 4 and d.get("heartbeat.timeout") == 60_000
    assert d.get("rest.port") == 9999 and c.get("parallelism.default") == 2
    with pytest.raises(ConfigError, match=r"\(from program\)") as info:
        c.with_overrides({"parallelism.default": "x"}, source="program")
    assert info.value.key == "parallelism.default" and info.value.source == "program"
    with pytest.raises(ConfigError, match=r"\(from <dict>\)"):
        Configuration.from_dict({"rest.port": "http"})
    assert Configuration({"rest.port": "1"}) == Configuration.from_dict({"rest.port": 1})


# -- errors ----------------------------------------------------------------------------

def test_unknown_key_suggests_the_closest_one():
    with pytest.raises(ConfigError, match=re.escape(
            "unknown configuration key 'paralellism.default' (from -D); "
            "did you mean 'parallelism.default'?")) as info:
        Configuration.load(dynamic=["paralellism.default=2"], env=NO_ENV)
    assert info.value.key == "paralellism.default" and info.value.source == "-D"


def test_unknown_key_without_a_close_match_says_how_to_list_keys(tmp_path):
    with pytest.raises(ConfigError, match="`emrflow config keys` or docs/configuration.md"):
        Configuration.load(dynamic=["zzz=1"], env=NO_ENV)
    f = write(tmp_path, "rest:\n  port: 1\n  prot: 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"'rest.prot' (from {f}:3); did you mean 'rest.port'?")):
        Configuration.load(conf_file=f, env=NO_ENV)
    with pytest.raises(ConfigError, match="unknown configuration key 'nope'"):
        Configuration().get("nope")


def test_bad_value_names_key_expectation_value_and_file_line(tmp_path):
    f = write(tmp_path, "# comment\nparallelism.default: 2\ntaskmanager:\n  numberOfTaskSlots: four\n")
    with pytest.raises(ConfigError) as info:
        Configuration.load(conf_file=f, env=NO_ENV)
    assert str(info.value) == f"taskmanager.numberOfTaskSlots: expected an integer >= 1, got 'four' (from {f}:4)"
    assert info.value.key == "taskmanager.numberOfTaskSlots" and info.value.source == f"{f}:4"


def test_bad_value_from_dynamic():
    with pytest.raises(ConfigError, match=re.escape(
            "parallelism.default: expected an integer >= 1, got '0' (from -D)")):
        Configuration.load(dynamic=["parallelism.default=0"], env=NO_ENV)
    with pytest.raises(ConfigError, match=re.escape(
            "state.backend.type: expected one of hashmap, rocksdb, got 'leveldb' (from -D)")):
        Configuration.load(dynamic=["state.backend.type=leveldb"], env=NO_ENV)
    with pytest.raises(ConfigError, match="heartbeat.timeout: expected a duration"):
        Configuration.load(dynamic=["heartbeat.timeout=5 parsecs"], env=NO_ENV)


@pytest.mark.parametrize("item", ["parallelism.default", "=4", ""])
def test_dynamic_without_equals(item):
    with pytest.raises(ConfigError, match="expected key=value") as info:
        Configuration.load(dynamic=[item], env=NO_ENV)
    assert info.value.source == "-D"


def test_missing_conf_file_names_the_path(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=re.escape(f"configuration file not found: {missing}")):
        Configuration.load(conf_file=missing, env=NO_ENV)


def test_invalid_yaml_names_file_and_line(tmp_path):
    bad = write(tmp_path, "parallelism.default: 1\nrest:\n  port: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"invalid YAML in {re.escape(bad)}:\d+: "):
        Configuration.load(conf_file=bad, env=NO_ENV)
    tabs = write(tmp_path, "rest:\n\tport: 1\n", "tabs.yaml")
    with pytest.raises(ConfigError, match=rf"invalid YAML in {re.escape(tabs)}:2"):
        Configuration.load(conf_file=tabs, env=NO_ENV)


@pytest.mark.parametrize("text", ["- 1\n- 2\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        Configuration.load(conf_file=write(tmp_path, text), env=NO_ENV)


def test_empty_file_is_defaults(tmp_path):
    assert Configuration.load(conf_file=write(tmp_path, "# nothing\n"), env=NO_ENV) == Configuration()


def test_key_set_twice_in_a_file(tmp_path):
    f = write(tmp_path, "rest.port: 1\nrest:\n  port: 2\n")
    with pytest.raises(ConfigError, match=re.escape(f"rest.port: set twice in {f} (lines 1 and 3)")):
        Configuration.load(conf_file=f, env=NO_ENV)


def test_mapping_value_for_an_option(tmp_path):
    f = write(tmp_path, "rest.port:\n  a: 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"rest.port: expected an integer in [0, 65535], "
                                                    f"got {{'a': 1}} (from {f}:1)")):
        Configuration.load(conf_file=f, env=NO_ENV)


# -- EMRFLOW_CONF_DIR ------------------------------------------------------------------

def test_conf_dir_from_environment(tmp_path):
    (tmp_path / "emrflow-conf.yaml").write_text("parallelism.default: 7\n")
    c = Configuration.load(env={"EMRFLOW_CONF_DIR": str(tmp_path)})
    assert c.get("parallelism.default") == 7


def test_conf_dir_without_the_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"not found: .*emrflow-conf.yaml \(from \$EMRFLOW_CONF_DIR\)"):
        Configuration.load(env={"EMRFLOW_CONF_DIR": str(tmp_path)})


def test_explicit_file_wins_over_conf_dir(tmp_path):
    (tmp_path / "emrflow-conf.yaml").write_text("parallelism.default: 7\n")
    f = write(tmp_path, "parallelism.default: 8\n", "other.yaml")
    assert Configuration.load(conf_file=f, env={"EMRFLOW_CONF_DIR": str(tmp_path)}).get(
        "parallelism.default") == 8


def test_checkout_file_without_conf_dir():
    """Without --conf or EMRFLOW_CONF_DIR a source checkout reads configs/emrflow-conf.yaml,
    which sets defaults only: the effective values are the defaults."""
    for env in (NO_ENV, {"EMRFLOW_CONF_DIR": ""}):
        loaded = Configuration.load(env=env)
        assert loaded.explicit() == Configuration.load(conf_file=DEFAULT_CONF_FILE, env=NO_ENV).explicit()
        assert loaded.to_dict() == Configuration().to_dict()


# -- the object ------------------------------------------------------------------------

def test_immutable():
    c = Configuration.load(dynamic=["parallelism.default=2"], env=NO_ENV)
    with pytest.raises(AttributeError):
        c.foo = 1
    with pytest.raises(AttributeError):
        c._values = {}
    with pytest.raises(AttributeError):
        del c._values
    c.explicit()["parallelism.default"] = 99
    c.to_dict()["parallelism.default"] = 99
    assert c.get("parallelism.default") == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        OPTIONS["parallelism.default"].default = 5


def test_pickle_round_trip_equality_and_hash():
    c = Configuration.load(dynamic=["parallelism.default=2", "yarn.tags=a;b", "heartbeat.timeout=1 min"],
                           env=NO_ENV)
    back = pickle.loads(pickle.dumps(c))
    assert back == c and hash(back) == hash(c)
    assert back.explicit() == c.explicit() and back.get("yarn.tags") == ("a", "b")
    assert c != Configuration() and c != c.explicit()


def test_getitem_and_repr():
    c = Configuration.from_dict({"rest.port": 1234})
    assert c["rest.port"] == 1234 and c["rest.address"] == "localhost"
    assert repr(c) == "Configuration({'rest.port': 1234})"


# -- the packaged file and the docs ----------------------------------------------------

def test_packaged_conf_file_loads_and_sets_only_defaults():
    path = os.path.join(ROOT, "configs", "emrflow-conf.yaml")
    assert os.path.samefile(path, DEFAULT_CONF_FILE)
    c = Configuration.load(conf_file=path, env=NO_ENV)
    for key in ("parallelism.default", "taskmanager.numberOfTaskSlots", "execution.runtime-mode",
                "taskmanager.network.memory.buffers-per-channel", "heartbeat.interval",
                "heartbeat.timeout", "rest.port", "state.backend.type"):
        assert c.is_set(key), f"configs/emrflow-conf.yaml should set {key}"
    for key, value in c.explicit().items():
        assert value == OPTIONS[key].default, f"{key} in configs/emrflow-conf.yaml differs from its default"


def test_packaged_conf_file_commented_examples_are_valid(tmp_path):
    """Uncommenting the commented-out keys of the example file gives a valid file."""
    with open(DEFAULT_CONF_FILE, encoding="utf-8") as f:
        lines = [re.sub(r"^(\s*)# ?(\s*[a-z][\w.-]*:)", r"\1\2", line) for line in f]
    c = Configuration.load(conf_file=write(tmp_path, "".join(lines)), env=NO_ENV)
    assert c.is_set("python.executable") and c.is_set("taskmanager.memory.process.size")


def test_docs_are_current():
    with open(os.path.join(ROOT, "docs", "configuration.md"), encoding="utf-8") as f:
        assert f.read() == options_markdown(), (
            "docs/configuration.md is stale: regenerate it with "
            "`.venv/bin/python -m emrflow.config > docs/configuration.md`")


def test_docs_list_every_key_with_its_default_in_user_units():
    text = options_markdown()
    for key in OPTIONS:
        assert f"| `{key}` |" in text, key
    assert "| `execution.buffer-timeout` | duration | `100 ms` |" in text
    assert "| `taskmanager.memory.process.size` | memory | `1728m` |" in text
    assert "defaults < file < `-D`" in text
