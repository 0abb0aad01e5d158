"""The one typed configuration object, with Flink's option names.

Values come, each overriding the one before, from the option's default, a YAML
file (``--conf FILE`` or ``$EMRFLOW_CONF_DIR/emrflow-conf.yaml``; nested mappings
flatten to dotted keys) and ``-D key=value`` strings. Every key is declared once
in :data:`OPTIONS` with its type, default and description; ``docs/configuration.md``
is generated from it (``emrflow config docs``).

Units: durations are written ``"500 ms"``, ``"30 s"``, ``"2 min"``, ``"1 h"`` (a bare
number is milliseconds) and read back as int milliseconds; memory sizes are
written ``"512m"``, ``"1 GiB"``, ``"2g"`` (a bare number is bytes) and read back as
int bytes.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from emrflow.errors import ConfigError


@dataclass(frozen=True)
class ConfigOption:
    """One configuration key.

    Attributes:
        key: dotted name (Flink's where Flink has the option).
        type: ``int``, ``float``, ``bool``, ``str``, ``duration`` (ms), ``memory`` (bytes),
            ``enum`` or ``list``.
        default: typed default, or ``None`` (unset).
        description: what it does, with units.
        choices: allowed values of an ``enum``.
        min: smallest allowed value of an ``int``/``float``.
        max: largest allowed value of an ``int``/``float``.
    """

    key: str
    type: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None


def _o(key, type_, default, description, choices=(), min=None, max=None) -> ConfigOption:
    return ConfigOption(key, type_, default, description, tuple(choices), min, max)


_DECLARED = [
    _o("parallelism.default", "int", 1, "Default parallelism of a job's operators (Flink option; `-p`).", min=1),
    _o("pipeline.max-parallelism", "int", 128,
       "Max parallelism: the number of key groups keyed state is split into; the upper bound of "
       "any operator's parallelism (Flink option).", min=1, max=32768),
    _o("pipeline.name", "str", None, "The job's name when the program gives none (Flink option)."),
    _o("execution.runtime-mode", "enum", "STREAMING",
       "STREAMING emits keyed aggregates for every record; BATCH once per key at the end of "
       "input; AUTOMATIC picks BATCH for bounded sources (Flink option).",
       choices=("STREAMING", "BATCH", "AUTOMATIC")),
    _o("execution.target", "str", "local",
       "Where jobs run: `local` (embedded cluster, default) or `remote` (a running cluster at "
       "`rest.address:rest.port`, `-m`) (Flink option; `-t`)."),
    _o("execution.attached", "bool", True, "Wait for the job to end (Flink option; `-d` sets false)."),
    _o("execution.buffer-timeout", "duration", 100,
       "Longest time a partly filled network buffer waits before it is sent, in STREAMING mode "
       "(Flink option)."),
    _o("execution.batch.local-aggregation", "bool", True,
       "BATCH mode: pre-aggregate keyed reduce/sum/min/max per key before the network exchange "
       "(emrflow-specific)."),
    _o("taskmanager.numberOfTaskSlots", "int", 1,
       "Task slots per TaskManager; each slot is one OS process (Flink option). The local target "
       "starts at least as many as the job's parallelism needs.", min=1),
    _o("local.number-taskmanager", "int", 1, "TaskManagers of the embedded local cluster (Flink option).", min=1),
    _o("taskmanager.network.memory.buffers-per-channel", "int", 2,
       "Credits per channel: buffers a producer may have in flight to one consumer before it "
       "blocks (Flink option).", min=1),
    _o("taskmanager.network.batch-size", "int", 1024,
       "Records per network buffer (emrflow-specific: buffers count records, not bytes).", min=1),
    _o("jobmanager.rpc.address", "str", "localhost", "Host of the JobManager's RPC endpoint (Flink option)."),
    _o("jobmanager.rpc.port", "int", 6123, "Port of the JobManager's RPC endpoint; 0 = any free port (Flink option).",
       min=0, max=65535),
    _o("rest.address", "str", "localhost", "Host clients use for the REST API (Flink option)."),
    _o("rest.port", "int", 8081, "Port of the REST API and dashboard (Flink option).", min=0, max=65535),
    _o("rest.bind-address", "str", "127.0.0.1", "Interface the REST server listens on (Flink option)."),
    _o("rest.auth.token", "str", None,
       "Bearer token every REST request must carry; required to bind a non-loopback address "
       "(emrflow-specific)."),
    _o("metrics.reporter.prom.port", "int", None,
       "Port of the JobManager's Prometheus endpoint; unset = none (Flink option).", min=0, max=65535),
    _o("heartbeat.interval", "duration", 10_000, "Time between TaskManager heartbeats (Flink option)."),
    _o("heartbeat.timeout", "duration", 50_000,
       "A TaskManager silent for longer is declared lost (Flink option)."),
    _o("client.progress.delay", "duration", 2_000,
       "How long a job runs before `emrflow run` shows progress (emrflow-specific)."),
    _o("pipeline.auto-watermark-interval", "duration", 200,
       "Interval of periodic watermarks; 0 emits one after every batch of records (Flink option)."),
    _o("state.backend.type", "enum", "hashmap", "Keyed state backend (Flink option).",
       choices=("hashmap", "rocksdb")),
    _o("state.checkpoints.dir", "str", None, "Directory (local path or s3:// URI) for checkpoints (Flink option)."),
    _o("state.savepoints.dir", "str", None, "Default directory for savepoints (Flink option)."),
    _o("state.checkpoints.num-retained", "int", 1, "Completed checkpoints to keep (Flink option).", min=1),
    _o("execution.checkpointing.interval", "duration", None,
       "Time between checkpoints; unset = no checkpoints (Flink option)."),
    _o("execution.checkpointing.mode", "enum", "EXACTLY_ONCE", "Checkpointing guarantee (Flink option).",
       choices=("EXACTLY_ONCE", "AT_LEAST_ONCE")),
    _o("execution.checkpointing.timeout", "duration", 600_000,
       "A checkpoint not complete after this long is discarded (Flink option)."),
    _o("restart-strategy.type", "enum", "none", "How failed jobs restart (Flink option).",
       choices=("none", "fixed-delay", "exponential-delay", "failure-rate")),
    _o("restart-strategy.fixed-delay.attempts", "int", 1, "Restarts before the job fails (Flink option).", min=0),
    _o("restart-strategy.fixed-delay.delay", "duration", 1_000, "Pause before a restart (Flink option)."),
    _o("jobmanager.memory.process.size", "memory", 1600 * 2**20, "Memory of the JobManager process (Flink option)."),
    _o("taskmanager.memory.process.size", "memory", 1728 * 2**20, "Memory of a TaskManager (Flink option)."),
    _o("log.dir", "str", None, "Directory for daemon logs (Flink option)."),
    _o("python.executable", "str", None,
       "Interpreter for JobManager, TaskManager and slot processes; default: the client's (Flink option)."),
    _o("yarn.application.name", "str", None, "YARN application name (Flink option)."),
    _o("yarn.application.queue", "str", "default", "YARN queue (Flink option)."),
    _o("yarn.containers.vcores", "int", 1, "Virtual cores per TaskManager container (Flink option).", min=1),
    _o("yarn.application.node-label", "str", None, "YARN node label for all containers (Flink option)."),
    _o("yarn.tags", "list", (), "YARN application tags, `;`-separated (Flink option)."),
    _o("yarn.application-attempts", "int", 1, "ApplicationMaster attempts (Flink option).", min=1),
    _o("yarn.application.id", "str", None,
       "The YARN session to submit to with `-t yarn-session` (Flink option; default: the recorded one)."),
    _o("yarn.ship-files", "list", (), "Files and directories to localize in every container (Flink option)."),
    _o("yarn.ship-archives", "list", (),
       "Archives (a packed virtual environment) to localize and unpack in every container (Flink option)."),
    _o("resourcemanager.taskmanager-timeout", "duration", 30_000,
       "Release a TaskManager container idle for this long (Flink option)."),
    _o("emrflow.bad-records.fail", "bool", False,
       "Make unparsable input records fatal instead of skipping and counting them (emrflow-specific)."),
    _o("emrflow.bad-records.report-limit", "int", 10,
       "Bad records reported in full per subtask; the rest are counted (emrflow-specific).", min=0),
]

#: The project's default configuration file (present in a source checkout).
DEFAULT_CONF_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                 "configs", "emrflow-conf.yaml")

#: Every known option by key.
OPTIONS: dict[str, ConfigOption] = {o.key: o for o in _DECLARED}

_DURATION_UNITS = {"ms": 1, "milli": 1, "millis": 1, "milliseconds": 1, "s": 1000, "sec": 1000,
                   "secs": 1000, "second": 1000, "seconds": 1000, "min": 60_000, "mins": 60_000,
                   "minute": 60_000, "minutes": 60_000, "m": 60_000, "h": 3_600_000,
                   "hour": 3_600_000, "hours": 3_600_000, "d": 86_400_000, "day": 86_400_000,
                   "days": 86_400_000}
_MEMORY_UNITS = {"": 1, "b": 1, "bytes": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20,
                 "mb": 2**20, "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40,
                 "tb": 2**40, "tib": 2**40}
_NUM_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration_ms(text: Any) -> int:
    """Parse ``"500 ms"``, ``"30 s"``, ``"2 min"``, ``"1 h"`` or a bare number (ms) to int milliseconds.

    Raises:
        ValueError: not a duration.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a duration such as '30 s', got {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"expected a non-negative duration, got {text!r}")
        return int(text)
    m = _NUM_UNIT.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or (unit and unit not in _DURATION_UNITS):
        raise ValueError(f"expected a duration such as '500 ms', '30 s' or '2 min', got {text!r}")
    return int(float(m.group(1)) * _DURATION_UNITS.get(unit, 1))


def parse_memory_bytes(text: Any) -> int:
    """Parse ``"512m"``, ``"1 GiB"``, ``"2g"`` or a bare number (bytes) to int bytes.

    Raises:
        ValueError: not a memory size.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a memory size such as '1 GiB', got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"expected a non-negative memory size, got {text!r}")
        return text
    m = _NUM_UNIT.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _MEMORY_UNITS:
        raise ValueError(f"expected a memory size such as '512m', '1 GiB' or '2g', got {text!r}")
    return int(float(m.group(1)) * _MEMORY_UNITS[unit])


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_number(opt: ConfigOption, value: Any, kind: type) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}")
    try:
        if kind is int:
            number = value if isinstance(value, int) else int(str(value).strip())
        else:
            number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected {'an integer' if kind is int else 'a number'}"
                         f"{_bounds(opt)}, got {value!r}") from None
    if (opt.min is not None and number < opt.min) or (opt.max is not None and number > opt.max):
        raise ValueError(f"expected {'an integer' if kind is int else 'a number'}{_bounds(opt)}, "
                         f"got {value!r}")
    return number


def _bounds(opt: ConfigOption) -> str:
    lo = f"{opt.min:g}" if opt.min is not None else None
    hi = f"{opt.max:g}" if opt.max is not None else None
    if lo and hi:
        return f" in [{lo}, {hi}]"
    if lo:
        return f" >= {lo}"
    if hi:
        return f" <= {hi}"
    return ""


def _parse(opt: ConfigOption, value: Any) -> Any:
    """Return ``value`` converted to ``opt``'s type; raises ValueError with the expectation."""
    if value is None:
        return None
    t = opt.type
    if t == "int":
        return _parse_number(opt, value, int)
    if t == "float":
        return _parse_number(opt, value, float)
    if t == "bool":
        return _parse_bool(value)
    if t == "str":
        if isinstance(value, (dict, list)):
            raise ValueError(f"expected a string, got {value!r}")
        return str(value)
    if t == "duration":
        return parse_duration_ms(value)
    if t == "memory":
        return parse_memory_bytes(value)
    if t == "enum":
        for choice in opt.choices:
            if str(value).strip().lower() == choice.lower():
                return choice
        raise ValueError(f"expected one of {', '.join(opt.choices)}, got {value!r}")
    if t == "list":
        if isinstance(value, (list, tuple)):
            return tuple(str(v) for v in value)
        return tuple(p.strip() for p in str(value).split(";") if p.strip())
    raise ValueError(f"unknown option type {t!r}")


def _unknown_key_message(key: str, source: str) -> str:
    close = difflib.get_close_matches(key, list(OPTIONS), n=1, cutoff=0.6)
    hint = (f"; did you mean '{close[0]}'?" if close else
            "; `emrflow config keys` and docs/configuration.md list the known keys")
    return f"unknown configuration key '{key}' (from {source}){hint}"


class Configuration:
    """An immutable set of typed option values (defaults filled in on read).

    Create it with :meth:`load`, :meth:`from_dict` or :meth:`with_overrides`.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, Any] | None = None):
        object.__setattr__(self, "_values", dict(values or {}))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Configuration is immutable; use with_overrides(...)")

    def __reduce__(self):
        return (Configuration, (self._values,))

    # -- reading ---------------------------------------------------------------------
    def get(self, key: str) -> Any:
        """Return the typed value of ``key`` (its default if not set).

        Raises:
            ConfigError: ``key`` is not a known option.
        """
        if key in self._values:
            return self._values[key]
        opt = OPTIONS.get(key)
        if opt is None:
            raise ConfigError(_unknown_key_message(key, "code"), key=key)
        return opt.default

    __getitem__ = get

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def is_set(self, key: str) -> bool:
        """True if ``key`` was set explicitly (not only defaulted)."""
        return key in self._values

    def explicit(self) -> dict[str, Any]:
        """Return the explicitly set keys and their typed values."""
        return dict(self._values)

    def to_dict(self) -> dict[str, Any]:
        """Return every known key's typed value, defaults included."""
        out = {k: o.default for k, o in OPTIONS.items()}
        out.update(self._values)
        return out

    def __repr__(self) -> str:
        return f"Configuration({self._values!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Configuration) and self._values == other._values

    # -- building ---------------------------------------------------------------------
    def with_overrides(self, mapping: Mapping[str, Any], source: str = "-D") -> "Configuration":
        """Return a copy with ``mapping``'s values (strings or typed) validated and applied.

        Raises:
            ConfigError: an unknown key or an ill-typed value, naming ``source``.
        """
        values = dict(self._values)
        for key, value in mapping.items():
            values[key] = _validated(key, value, source)
        return Configuration(values)

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], source: str = "<dict>") -> "Configuration":
        """Return a configuration of ``mapping`` (nested mappings flatten to dotted keys)."""
        return cls().with_overrides(_flatten(mapping), source)

    @classmethod
    def load(cls, conf_file: str | None = None, dynamic: list[str] | tuple[str, ...] = (),
             env: Mapping[str, str] | None = None) -> "Configuration":
        """Load defaults < YAML file < ``-D key=value`` strings.

        Args:
            conf_file: a YAML file; if ``None``, ``$EMRFLOW_CONF_DIR/emrflow-conf.yaml``
                when ``EMRFLOW_CONF_DIR`` is set, else the project's
                ``configs/emrflow-conf.yaml`` when running from a checkout, else no file.
            dynamic: ``key=value`` strings, applied in order.
            env: environment to read ``EMRFLOW_CONF_DIR`` from (default ``os.environ``).

        Raises:
            ConfigError: a missing or invalid file, an unknown key, an ill-typed value or a
                ``-D`` without ``=``; the message names the key and where it came from.
        """
        env = os.environ if env is None else env
        if conf_file is None and env.get("EMRFLOW_CONF_DIR"):
            conf_file = os.path.join(env["EMRFLOW_CONF_DIR"], "emrflow-conf.yaml")
        if conf_file is None and os.path.isfile(DEFAULT_CONF_FILE):
            conf_file = DEFAULT_CONF_FILE
        config = cls()
        if conf_file is not None:
            config = cls(_load_yaml(conf_file))
        overrides: dict[str, Any] = {}
        for item in dynamic:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"-D expects key=value, got {item!r}", source="-D")
            overrides[key.strip()] = value.strip()
        return config.with_overrides(overrides, "-D") if overrides else config


def _validated(key: str, value: Any, source: str) -> Any:
    opt = OPTIONS.get(key)
    if opt is None:
        raise ConfigError(_unknown_key_message(key, source), key=key, source=source)
    try:
        return _parse(opt, value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc} (from {source})", key=key, source=source) from None


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and f"{key}" not in OPTIONS:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _load_yaml(path: str) -> dict[str, Any]:
    """Read, flatten and validate a YAML file; errors carry ``path:line``."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}", source=path) from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}", source=path) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise ConfigError(f"invalid YAML in {where}: {getattr(exc, 'problem', exc)}",
                          source=where) from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}:{root.start_mark.line + 1}: the top level must be a mapping of "
                          "configuration keys", source=path)
    values: dict[str, Any] = {}

    def walk(node: yaml.MappingNode, prefix: str) -> None:
        for key_node, value_node in node.value:
            key = prefix + str(key_node.value)
            where = f"{path}:{key_node.start_mark.line + 1}"
            if isinstance(value_node, yaml.MappingNode) and key not in OPTIONS:
                walk(value_node, key + ".")
                continue
            value = yaml.SafeLoader(text).construct_document(value_node) \
                if not isinstance(value_node, yaml.ScalarNode) else _scalar(value_node)
            values[key] = _validated(key, value, where)

    walk(root, "")
    return values


def _scalar(node: yaml.ScalarNode) -> Any:
    loader = yaml.SafeLoader("")
    return loader.construct_object(node, deep=True)


def options_markdown() -> str:
    """Render every option as the Markdown of ``docs/configuration.md``."""
    lines = [
        "# Configuration",
        "",
        "<!-- generated by `emrflow config docs > docs/configuration.md`; do not edit -->",
        "",
        "Each key is read, later ones winning, from its default, the YAML file (`--conf FILE` or",
        "`$EMRFLOW_CONF_DIR/emrflow-conf.yaml`; nested mappings flatten to dotted keys) and `-D",
        "key=value` on the command line. Durations take units (`500 ms`, `30 s`, `2 min`; a bare",
        "number is milliseconds); memory sizes too (`512m`, `1 GiB`; a bare number is bytes).",
        "Unknown keys and ill-typed values are errors that name the key and where it was set.",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    for key in sorted(OPTIONS):
        o = OPTIONS[key]
        t = o.type if o.type != "enum" else "enum: " + " \\| ".join(o.choices)
        lines.append(f"| `{key}` | {t} | {_render_default(o)} | {o.description} |")
    return "\n".join(lines) + "\n"


def _render_default(o: ConfigOption) -> str:
    if o.default is None:
        return "(unset)"
    if o.type == "duration":
        ms = o.default
        for unit, size in (("h", 3_600_000), ("min", 60_000), ("s", 1000)):
            if ms and ms % size == 0:
                return f"`{ms // size} {unit}`"
        return f"`{ms} ms`"
    if o.type == "memory":
        return f"`{o.default // 2**20}m`"
    if o.type == "bool":
        return "`true`" if o.default else "`false`"
    return f"`{o.default}`"


if __name__ == "__main__":
    print(options_markdown(), end="")
