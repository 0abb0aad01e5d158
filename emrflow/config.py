"""The one typed, immutable configuration object, with Flink's option names.

Every key is declared once in :data:`OPTIONS` with its type, default and
description. Values come, each overriding the one before, from the option's
default, a YAML file (``--conf FILE``, else ``$EMRFLOW_CONF_DIR/emrflow-conf.yaml``
when that variable is set; nested mappings flatten to dotted keys) and
``-D key=value`` strings. ``docs/configuration.md`` is generated from the
registry: ``python -m emrflow.config > docs/configuration.md``.

Units: durations are written ``"500 ms"``, ``"30 s"``, ``"2 min"``, ``"1 h"`` (a
bare number is milliseconds) and read back as int milliseconds; memory sizes are
written ``"512m"``, ``"1 GiB"``, ``"2g"`` (a bare number is bytes) and read back
as int bytes.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import yaml

from emrflow.errors import ConfigError
from emrflow.resources import REPO_ROOT
from emrflow.resources import find_dir as _find_resource_dir

__all__ = ["ConfigOption", "OPTIONS", "Configuration", "DEFAULT_CONF_FILE", "CONF_FILE_NAME",
           "parse_duration_ms", "parse_memory_bytes", "options_markdown"]

#: Name of the configuration file looked for in ``$EMRFLOW_CONF_DIR``.
CONF_FILE_NAME = "emrflow-conf.yaml"

#: The documented sample configuration, ``configs/emrflow-conf.yaml``, as packaged (in the
#: installed package, or the source checkout's); read when neither ``--conf`` nor
#: ``$EMRFLOW_CONF_DIR`` names a file. It sets defaults only.
DEFAULT_CONF_FILE = os.path.join(_find_resource_dir("configs") or os.path.join(REPO_ROOT, "configs"),
                                 CONF_FILE_NAME)

# Parsers, one per option type (see _PARSERS): (option, a string or typed value) -> typed
# value, or ValueError reading "expected ..., got ...".

_DURATION_UNITS = {"ms": 1, "milli": 1, "millis": 1, "millisecond": 1, "milliseconds": 1,
                   "s": 1000, "sec": 1000, "secs": 1000, "second": 1000, "seconds": 1000,
                   "m": 60_000, "min": 60_000, "mins": 60_000, "minute": 60_000, "minutes": 60_000,
                   "h": 3_600_000, "hour": 3_600_000, "hours": 3_600_000,
                   "d": 86_400_000, "day": 86_400_000, "days": 86_400_000}
_MEMORY_UNITS = {"b": 1, "bytes": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
                 "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40,
                 "tib": 2**40}
_NUMBER_UNIT = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-zA-Z]*)\s*$")
_DURATION_HINT = "a duration such as '500 ms', '30 s' or '2 min'"
_MEMORY_HINT = "a memory size such as '512m', '1 GiB' or '2g'"


def _amount(value: Any, units: dict[str, int], hint: str) -> int:
    """Parse a non-negative number with an optional unit from ``units`` (none: factor 1)."""
    if isinstance(value, bool):
        raise ValueError(f"expected {hint}, got {value!r}")
    if isinstance(value, (int, float)):
        number, factor = value, 1
    else:
        match = _NUMBER_UNIT.match(str(value))
        unit = match.group(2).lower() if match else ""
        if match is None or (unit and unit not in units):
            raise ValueError(f"expected {hint}, got {value!r}")
        text = match.group(1)
        number, factor = float(text) if "." in text else int(text), units.get(unit, 1)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"expected {hint} (not negative), got {value!r}")
    return number * factor if isinstance(number, int) else round(number * factor)


def parse_duration_ms(text: Any) -> int:
    """Parse a duration to whole milliseconds.

    Args:
        text: ``"500 ms"``, ``"30 s"``, ``"10s"``, ``"2 min"``, ``"1 h"``, ``"1 d"`` (units are
            case-insensitive, the space optional), or a bare number (string or int) of
            milliseconds.

    Returns:
        The duration in milliseconds (fractions rounded to the nearest millisecond).

    Raises:
        ValueError: ``text`` is not a non-negative duration; the message says "duration".
    """
    return _amount(text, _DURATION_UNITS, _DURATION_HINT)


def parse_memory_bytes(text: Any) -> int:
    """Parse a memory size to bytes (units are binary: ``1k`` = 1024 bytes).

    Args:
        text: ``"1024m"``, ``"512 MiB"``, ``"2g"``, ``"1 GiB"``, ``"64kb"``, or a bare number
            (string or int) of bytes.

    Returns:
        The size in bytes.

    Raises:
        ValueError: ``text`` is not a non-negative memory size; the message says "memory size".
    """
    return _amount(text, _MEMORY_UNITS, _MEMORY_HINT)


def _bounds(opt: ConfigOption) -> str:
    lo, hi = opt.min, opt.max
    if lo is not None and hi is not None:
        return f" in [{lo:g}, {hi:g}]"
    if lo is not None:
        return f" >= {lo:g}"
    return f" <= {hi:g}" if hi is not None else ""


def _number(opt: ConfigOption, value: Any, kind: type) -> Any:
    number = None
    if isinstance(value, kind) and not isinstance(value, bool) or kind is float and type(value) is int:
        number = kind(value)
    elif isinstance(value, str):
        try:
            number = kind(value.strip())
        except ValueError:
            pass
    if number is None or number != number or (opt.min is not None and number < opt.min) or \
            (opt.max is not None and number > opt.max):
        raise ValueError(f"expected {opt.expected()}, got {value!r}")
    return number


def _parse_bool(opt: ConfigOption, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return text in ("true", "yes", "on", "1")
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_str(opt: ConfigOption, value: Any) -> str:
    if isinstance(value, (dict, list, tuple, set)):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def _parse_enum(opt: ConfigOption, value: Any) -> str:
    for choice in opt.choices if isinstance(value, str) else ():
        if value.strip().lower() == choice.lower():
            return choice
    raise ValueError(f"expected {opt.expected()}, got {value!r}")


def _parse_list(opt: ConfigOption, value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (dict, list, tuple)) or v is None for v in value):
            raise ValueError(f"expected a list of strings, got {value!r}")
        return tuple(str(v) for v in value)
    if isinstance(value, dict):
        raise ValueError(f"expected {opt.expected()}, got {value!r}")
    return tuple(part.strip() for part in str(value).split(";") if part.strip())


def _memory(opt: ConfigOption, value: Any) -> int:
    size = parse_memory_bytes(value)
    if opt.min is not None and size < opt.min:
        raise ValueError(f"expected {opt.expected()}, got {value!r}")
    return size


#: The one parser of each option type: ``(option, raw value) -> typed value``.
_PARSERS: dict[str, Callable[[ConfigOption, Any], Any]] = {
    "int": lambda opt, value: _number(opt, value, int),
    "float": lambda opt, value: _number(opt, value, float),
    "bool": _parse_bool, "str": _parse_str, "enum": _parse_enum, "list": _parse_list,
    "duration": lambda opt, value: parse_duration_ms(value),
    "memory": lambda opt, value: _memory(opt, value),
}


@dataclass(frozen=True)
class ConfigOption:
    """One configuration key: its name, type, default and meaning.

    Attributes:
        key: dotted name (Flink's where Flink has the option).
        type: one of ``int``, ``float``, ``bool``, ``str``, ``duration`` (int milliseconds),
            ``memory`` (int bytes), ``enum`` or ``list`` (tuple of str).
        default: typed default (ms for durations, bytes for memory), or ``None`` for unset.
        description: what it does, with units; says "Flink option" or "emrflow-specific".
        choices: canonical spellings of an ``enum``'s values.
        min: smallest allowed value of an ``int``/``float``, or ``None``.
        max: largest allowed value of an ``int``/``float``, or ``None``.
    """

    key: str
    type: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.type not in _PARSERS:
            raise ValueError(f"option {self.key}: unknown type {self.type!r}")
        if (self.type == "enum") != bool(self.choices):
            raise ValueError(f"option {self.key}: choices are for enum options only, and required")

    def parse(self, value: Any) -> Any:
        """Convert a raw value to this option's type.

        Args:
            value: a string (from ``-D`` or YAML) or an already typed value. ``None`` or a
                blank string means "unset" and is accepted only if the default is ``None``
                (a ``list`` takes it as the empty list).

        Returns:
            The typed value (see :attr:`type`).

        Raises:
            ValueError: the value does not fit; the message reads ``expected ..., got ...``.
        """
        if self.type == "list" and value is None:
            return ()
        if value is None or (isinstance(value, str) and not value.strip() and self.type != "list"):
            if self.default is None:
                return None
            raise ValueError(f"expected {self.expected()}, got no value")
        return _PARSERS[self.type](self, value)

    def expected(self) -> str:
        """Return what a valid value looks like, e.g. ``"an integer >= 1"``."""
        return {"int": "an integer" + _bounds(self), "float": "a number" + _bounds(self),
                "bool": "true or false", "str": "a string", "duration": _DURATION_HINT,
                "memory": _MEMORY_HINT + (f" of at least {self.format(self.min)}" if self.min else ""),
                "enum": "one of " + ", ".join(self.choices),
                "list": "a list or a ';'-separated string"}[self.type]

    def format(self, value: Any) -> str:
        """Render a typed value as a user would write it (``100 ms``, ``1728m``, ``true``).

        Args:
            value: a typed value of this option, e.g. its default.

        Returns:
            Text that :meth:`parse` turns back into ``value``; ``"(unset)"`` for ``None``.
        """
        if value is None:
            return "(unset)"
        if self.type == "duration":
            for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
                if value and value % size == 0:
                    return f"{value // size} {unit}"
            return f"{value} ms"
        if self.type == "memory":
            for unit, size in (("t", 2**40), ("g", 2**30), ("m", 2**20), ("k", 2**10)):
                if value and value % size == 0:
                    return f"{value // size}{unit}"
            return str(value)
        if self.type == "bool":
            return "true" if value else "false"
        if self.type == "list":
            return ";".join(value)
        return str(value)


_S, _MIN, _MIB = 1000, 60_000, 2**20
# (key, type, default, description[, choices[, min[, max]]]): ConfigOption's fields in order.
_OPTION_ROWS: list[tuple[Any, ...]] = [
    ("parallelism.default", "int", 1,
     "Default parallelism of a job's operators; `-p` sets it (Flink option).", (), 1),
    ("pipeline.max-parallelism", "int", 128, "Number of key groups keyed state is split into, and so "
     "the upper bound of any operator's parallelism (Flink option).", (), 1, 32768),
    ("pipeline.name", "str", None, "The job's name when the program gives none (Flink option)."),
    ("pipeline.auto-watermark-interval", "duration", 200,
     "Interval of periodic watermarks; 0 emits one after every batch of records (Flink option)."),
    ("execution.runtime-mode", "enum", "STREAMING", "STREAMING emits keyed aggregates for every "
     "record, BATCH once per key at the end of input; AUTOMATIC picks BATCH when all sources are "
     "bounded (Flink option).", ("STREAMING", "BATCH", "AUTOMATIC")),
    ("execution.target", "str", "local", "Where jobs run: `local` (an embedded cluster), `remote` "
     "(a running cluster at `rest.address:rest.port`), `yarn-session`, `yarn-per-job` or "
     "`yarn-application`; `-t` sets it (Flink option)."),
    ("execution.attached", "bool", True,
     "Wait for the job to end and report its result; `-d` sets false (Flink option)."),
    ("execution.buffer-timeout", "duration", 100, "Longest time a partly filled network buffer "
     "waits before it is sent in STREAMING mode; lower means less latency, more overhead (Flink option)."),
    ("execution.batch.local-aggregation", "bool", True, "BATCH mode: pre-aggregate keyed "
     "reduce/sum/min/max per key before the network exchange (emrflow-specific)."),
    ("execution.batch.local-aggregation.max-keys", "int", 250_000, "BATCH mode: keys a producer "
     "subtask's local aggregation holds before it sends its partial results on; a full table that "
     "folded fewer than 2 records per key switches local aggregation off for that subtask "
     "(emrflow-specific).", (), 1),
    ("execution.checkpointing.interval", "duration", None,
     "Time between checkpoints; unset means no checkpoints (Flink option)."),
    ("execution.checkpointing.mode", "enum", "EXACTLY_ONCE", "Checkpointing guarantee (Flink option).",
     ("EXACTLY_ONCE", "AT_LEAST_ONCE")),
    ("execution.checkpointing.timeout", "duration", 10 * _MIN,
     "A checkpoint not complete after this long is discarded (Flink option)."),
    ("execution.checkpointing.max-concurrent-checkpoints", "int", 1,
     "Checkpoints that may be in progress at the same time (Flink option).", (), 1),
    ("execution.checkpointing.min-pause", "duration", 0, "Least time between the end of one "
     "checkpoint and the start of the next (Flink option)."),
    ("execution.checkpointing.externalized-checkpoint-retention", "enum", "NO_EXTERNALIZED_CHECKPOINTS",
     "What happens to a job's checkpoints when it ends: NO_EXTERNALIZED_CHECKPOINTS deletes them, "
     "DELETE_ON_CANCELLATION keeps them if the job failed, RETAIN_ON_CANCELLATION if it failed or "
     "was cancelled; a JobManager that dies deletes nothing (Flink option).",
     ("NO_EXTERNALIZED_CHECKPOINTS", "DELETE_ON_CANCELLATION", "RETAIN_ON_CANCELLATION")),
    ("execution.savepoint.path", "str", None, "Savepoint or retained checkpoint to start the job "
     "from; `-s` sets it (Flink option)."),
    ("execution.savepoint.ignore-unclaimed-state", "bool", False, "Start from a savepoint even if "
     "it holds state of operators the job no longer has; `--allow-non-restored-state` sets it "
     "(Flink option)."),
    ("jobmanager.execution.failover-strategy", "enum", "region", "What restarts after a task "
     "failure: `full` restarts every task, `region` only the pipelined region (connected "
     "operators) of the failed task (Flink option).", ("full", "region")),
    ("s3.endpoint", "str", None, "Endpoint URL of S3 for checkpoints, savepoints and file "
     "sources and sinks (e.g. an S3-compatible store); unset means AWS_ENDPOINT_URL_S3, "
     "AWS_ENDPOINT_URL or AWS's own (Flink option)."),
    ("s3.endpoint.region", "str", None, "AWS region of S3 requests; unset means the standard AWS "
     "chain (environment, profile, instance metadata), then the bucket's own region (Flink option)."),
    ("s3.access-key", "str", None, "S3 access key; unset means the standard AWS credential chain "
     "(environment, profile, instance role), which is what EMR nodes use (Flink option)."),
    ("s3.secret-key", "str", None, "S3 secret key, with `s3.access-key` (Flink option)."),
    ("sink.rolling-policy.file-size", "memory", 128 * _MIB, "A file sink's in-progress part file "
     "rolls when it reaches this size, with checkpoints (Flink's file sink option)."),
    ("sink.rolling-policy.rollover-interval", "duration", 30 * _MIN, "A file sink's in-progress "
     "part file rolls when it is older than this, with checkpoints (Flink's file sink option)."),
    ("taskmanager.numberOfTaskSlots", "int", 1, "Task slots per TaskManager, each one OS process; "
     "the local target starts as many as the job's parallelism needs (Flink option).", (), 1),
    ("local.number-taskmanager", "int", 1,
     "Number of TaskManagers of the embedded local cluster (Flink option).", (), 1),
    ("taskmanager.network.memory.buffers-per-channel", "int", 2, "Credits per channel: buffers a "
     "producer may have in flight to one consumer before it blocks (Flink option).", (), 1),
    ("taskmanager.network.batch-size", "int", 1024, "Records per network buffer (emrflow-specific: "
     "emrflow's buffers count records, not bytes).", (), 1),
    ("taskmanager.network.shared-memory", "bool", True, "Between slot processes on the same "
     "Linux host, move buffers through a shared-memory ring (an anonymous memory file, one slot "
     "per credit) and a Unix socket instead of TCP; buffers under 8 KiB or over "
     "`taskmanager.network.shared-memory.slot-size`, and events, go through the socket "
     "(emrflow-specific; false: TCP between all slot processes).", ()),
    ("taskmanager.network.shared-memory.slot-size", "memory", 4 * _MIB, "Bytes of one slot of a "
     "channel's shared-memory ring; a channel maps buffers-per-channel slots (emrflow-specific).",
     (), 64 * 1024),
    ("taskmanager.network.columnar-exchange", "bool", True, "Let a source that reads typed columns "
     "(the CSV source, through pyarrow) pass them to the exchange as columns when no operator but "
     "its timestamp assigner is chained after it: key groups are then computed over whole columns and buffers cross "
     "processes as Arrow IPC (emrflow-specific; false: rows, as every other source).", ()),
    ("taskmanager.memory.process.size", "memory", 1728 * _MIB,
     "Total memory of a TaskManager process, e.g. its YARN container size (Flink option)."),
    ("jobmanager.memory.process.size", "memory", 1600 * _MIB,
     "Total memory of the JobManager process, e.g. its YARN container size (Flink option)."),
    ("jobmanager.rpc.address", "str", "localhost", "Host of the JobManager's RPC endpoint (Flink option)."),
    ("jobmanager.rpc.port", "int", 6123,
     "Port of the JobManager's RPC endpoint; 0 picks any free port (Flink option).", (), 0, 65535),
    ("rest.address", "str", "localhost", "Host clients use to reach the REST API (Flink option)."),
    ("rest.port", "int", 8081,
     "Port of the REST API and dashboard; 0 picks any free port (Flink option).", (), 0, 65535),
    ("rest.bind-address", "str", "127.0.0.1", "Interface the REST server listens on (Flink option)."),
    ("rest.auth.token", "str", None, "Bearer token every REST request must carry; required to bind "
     "a non-loopback address (emrflow-specific)."),
    ("metrics.reporter.prom.port", "int", None,
     "Port of the JobManager's Prometheus endpoint; unset means none (Flink option).", (), 0, 65535),
    ("heartbeat.interval", "duration", 10 * _S, "Time between TaskManager heartbeats (Flink option)."),
    ("heartbeat.timeout", "duration", 50 * _S,
     "A TaskManager silent for longer than this is declared lost (Flink option)."),
    ("client.progress.delay", "duration", 2 * _S,
     "How long a job runs before `emrflow run` starts showing progress (emrflow-specific)."),
    ("state.backend.type", "enum", "hashmap", "Keyed state backend: `hashmap` keeps state in memory, "
     "`rocksdb` on local disk (Flink option).", ("hashmap", "rocksdb")),
    ("state.checkpoints.dir", "str", None,
     "Directory (local path or s3:// URI) for checkpoints (Flink option)."),
    ("state.savepoints.dir", "str", None, "Default directory for savepoints (Flink option)."),
    ("state.checkpoints.num-retained", "int", 1, "Completed checkpoints to keep (Flink option).", (), 1),
    ("restart-strategy.type", "enum", None, "How a failed job restarts; unset means "
     "`exponential-delay` with checkpointing and `none` without (Flink option).",
     ("none", "fixed-delay", "exponential-delay", "failure-rate")),
    ("restart-strategy.fixed-delay.attempts", "int", 1,
     "Restarts before the job is declared failed, with `fixed-delay` (Flink option).", (), 0),
    ("restart-strategy.fixed-delay.delay", "duration", 1 * _S,
     "Pause before each restart, with `fixed-delay` (Flink option)."),
    ("restart-strategy.failure-rate.max-failures-per-interval", "int", 1, "Failures allowed within "
     "`failure-rate-interval` before the job fails, with `failure-rate` (Flink option).", (), 1),
    ("restart-strategy.failure-rate.failure-rate-interval", "duration", 1 * _MIN,
     "The window failures are counted in, with `failure-rate` (Flink option)."),
    ("restart-strategy.failure-rate.delay", "duration", 1 * _S,
     "Pause before each restart, with `failure-rate` (Flink option)."),
    ("restart-strategy.exponential-delay.initial-backoff", "duration", 1 * _S,
     "First pause before a restart, with `exponential-delay` (Flink option)."),
    ("restart-strategy.exponential-delay.max-backoff", "duration", 1 * _MIN,
     "Longest pause before a restart, with `exponential-delay` (Flink option)."),
    ("restart-strategy.exponential-delay.backoff-multiplier", "float", 1.5,
     "Factor the pause grows by after each failure, with `exponential-delay` (Flink option).", (), 1.0),
    ("restart-strategy.exponential-delay.reset-backoff-threshold", "duration", 60 * _MIN,
     "A job running this long without failure starts again from the initial backoff (Flink option)."),
    ("restart-strategy.exponential-delay.jitter-factor", "float", 0.1,
     "Random share (0-1) added to or taken from each pause (Flink option).", (), 0.0, 1.0),
    ("restart-strategy.exponential-delay.attempts-before-reset-backoff", "int", 2**31 - 1,
     "Restarts allowed before the job fails, with `exponential-delay` (Flink option).", (), 0),
    ("log.dir", "str", None, "Directory for the daemons' log files (Flink option)."),
    ("python.executable", "str", None, "Interpreter for JobManager, TaskManager and slot processes; "
     "unset means the client's own (Flink option)."),
    ("yarn.application.name", "str", None, "YARN application name (Flink option)."),
    ("yarn.application.queue", "str", "default", "YARN queue to submit to (Flink option)."),
    ("yarn.containers.vcores", "int", 1, "Virtual cores per TaskManager container (Flink option).", (), 1),
    ("yarn.application.web-ui.users", "str", "*", "Users skein's web UI (the YARN application's tracking "
     "URL, with the dashboard and metrics pages) admits: `*` for every user of YARN's web UI (on a "
     "cluster without Kerberos, `dr.who`), a comma-separated list, or empty for the owner only. The "
     "dashboard behind it still needs the signed link `yarn-session start` prints; the UI never shows "
     "the cluster secret or the REST token."),
    ("yarn.application.node-label", "str", None, "YARN node label of the ApplicationMaster (JobManager) "
     "container, and of TaskManager containers unless `yarn.taskmanager.node-label` is set (Flink option)."),
    ("yarn.taskmanager.node-label", "str", None, "YARN node label of TaskManager containers; unset means "
     "`yarn.application.node-label` (Flink option)."),
    ("yarn.maximum-failed-containers", "int", 10, "TaskManager containers that may fail (exit on their "
     "own, not released by emrflow) before the YARN application fails with the last one's exit "
     "status (Flink option; Flink's default is the initial TaskManager count).", (), 0),
    ("yarn.application.start-timeout", "duration", 5 * _MIN, "How long the client waits for a submitted "
     "YARN application to run and its JobManager to answer before it kills the application and "
     "fails, naming the state it was stuck in (emrflow-specific)."),
    ("yarn.session.wait-timeout", "duration", 0, "How long `emrflow run -t yarn-session` waits for a "
     "recorded session to appear (a session step still starting it on EMR); 0 means not at all "
     "(emrflow-specific; EMR job steps for a session set 10 min)."),
    ("yarn.application.script-path", "str", None, "Set by `emrflow run -t yarn-application`: the job "
     "script's path as the user gave it, which tracebacks from the ApplicationMaster name "
     "(emrflow-specific)."),
    ("yarn.staging-directory", "str", None, "Local directory for the files of a YARN application that "
     "must outlive its submission (job graph, configuration); unset means "
     "`~/.emrflow/yarn-staging` (Flink option, there on the cluster's file system)."),
    ("yarn.tags", "list", (), "YARN application tags, a list or `;`-separated (Flink option)."),
    ("yarn.application-attempts", "int", 1, "ApplicationMaster attempts (Flink option).", (), 1),
    ("security.kerberos.login.principal", "str", None,
     "Kerberos principal skein logs in with for YARN commands (Flink option)."),
    ("security.kerberos.login.keytab", "str", None,
     "Keytab of that principal (Flink option)."),
    ("yarn.application.id", "str", None, "The YARN session `-t yarn-session` submits to; unset means "
     "the recorded one (Flink option)."),
    ("yarn.ship-files", "list", (), "Files and directories to localize in every container; they must "
     "stay in place while the application runs (Flink option)."),
    ("yarn.ship-archives", "list", (), "Archives (e.g. a packed virtual environment) to localize and "
     "unpack in every container (Flink option)."),
    ("resourcemanager.taskmanager-timeout", "duration", 30 * _S,
     "Release a TaskManager container idle for this long (Flink option)."),
    ("emrflow.bad-records.fail", "bool", False, "Make unparsable input records fatal instead of "
     "skipping and counting them (emrflow-specific)."),
    ("emrflow.bad-records.max-ratio", "float", 1.0, "The job fails, and commits no output, when more "
     "than this fraction of its input records were bad (skipped); with 1.0 only when all of them were "
     "(emrflow-specific).", (), 0.0, 1.0),
    ("emrflow.bad-records.max-count", "int", None, "The job fails, and commits no output, when more "
     "than this many input records were bad; unset: no limit by count (emrflow-specific).", (), 0),
    ("emrflow.bad-records.report-limit", "int", 10, "Bad records reported in full per subtask; the "
     "rest are only counted (emrflow-specific).", (), 0),
]
_DECLARED = [ConfigOption(*args) for args in _OPTION_ROWS]

#: Every known option, by key.
OPTIONS: dict[str, ConfigOption] = {o.key: o for o in _DECLARED}


def _unknown_key(key: str, source: str | None) -> ConfigError:
    close = difflib.get_close_matches(key, list(OPTIONS), n=1, cutoff=0.6)
    hint = (f"did you mean '{close[0]}'?" if close else
            "`emrflow config keys` or docs/configuration.md lists the known keys")
    where = f" (from {source})" if source else ""
    return ConfigError(f"unknown configuration key '{key}'{where}; {hint}", key=key, source=source)


def _validated(key: str, value: Any, source: str) -> Any:
    opt = OPTIONS.get(key)
    if opt is None:
        raise _unknown_key(key, source)
    try:
        return opt.parse(value)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc} (from {source})", key=key, source=source) from None


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and key not in OPTIONS:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Configuration:
    """An immutable set of typed option values; unset keys read as their defaults.

    Build one with :meth:`load`, :meth:`from_dict` or :meth:`with_overrides`;
    ``Configuration()`` holds only defaults. Instances are picklable, hashable and
    compare equal when the same keys are set to the same values.

    Args:
        values: dotted keys to values (strings or typed values), validated like
            :meth:`from_dict`.
        source: where ``values`` came from, for error messages.

    Raises:
        ConfigError: an unknown key or a value that does not fit its option.
    """

    __slots__ = ("_values",)
    _values: dict[str, Any]   # set once, through object.__setattr__ (instances are immutable)

    def __init__(self, values: Mapping[str, Any] | None = None, source: str = "<dict>"):
        checked = {k: _validated(k, v, source) for k, v in _flatten(values or {}).items()}
        object.__setattr__(self, "_values", checked)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Configuration is immutable; use with_overrides(...) for a changed copy")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Configuration is immutable")

    def __reduce__(self):
        return (Configuration, (self._values, "<pickle>"))

    # -- reading ----------------------------------------------------------------------
    def get(self, key: str) -> Any:
        """Return the typed value of an option.

        Args:
            key: a dotted key from :data:`OPTIONS`.

        Returns:
            The explicitly set value, else the option's default (durations in ms, memory in bytes).

        Raises:
            ConfigError: ``key`` is not a known option.
        """
        if key in self._values:
            return self._values[key]
        opt = OPTIONS.get(key)
        if opt is None:
            raise _unknown_key(key, None)
        return opt.default

    __getitem__ = get

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def is_set(self, key: str) -> bool:
        """Return whether ``key`` was set explicitly (by a file, ``-D`` or code), not defaulted."""
        return key in self._values

    def explicit(self) -> dict[str, Any]:
        """Return a new dict of the explicitly set keys and their typed values."""
        return dict(self._values)

    def to_dict(self) -> dict[str, Any]:
        """Return a new dict of every known key and its typed value, defaults included."""
        out = {k: o.default for k, o in OPTIONS.items()}
        out.update(self._values)
        return out

    def to_yaml(self) -> str:
        """Render the explicitly set keys as an ``emrflow-conf.yaml`` that :meth:`load` reads back.

        Used to hand the client's configuration (file, ``-D``) to processes started
        elsewhere, such as YARN containers. Values are written as a user would type
        them (``30 s``, ``1728m``), so the file is readable and round-trips exactly.

        Returns:
            YAML text, one dotted key a line; ``{}`` when nothing is set.
        """
        rendered: dict[str, Any] = {}
        for key, value in sorted(self._values.items()):
            opt = OPTIONS[key]
            if value is None:
                rendered[key] = None
            elif opt.type == "list":
                rendered[key] = list(value)
            else:
                rendered[key] = opt.format(value)
        return yaml.safe_dump(rendered, sort_keys=False, default_flow_style=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Configuration) and self._values == other._values

    def __hash__(self) -> int:
        return hash(frozenset(self._values.items()))

    def __repr__(self) -> str:
        return f"Configuration({dict(sorted(self._values.items()))!r})"

    # -- building ---------------------------------------------------------------------
    def with_overrides(self, mapping: Mapping[str, Any], source: str = "-D") -> "Configuration":
        """Return a copy with ``mapping``'s values validated and applied over this one's.

        Args:
            mapping: dotted keys (or nested mappings) to strings or typed values.
            source: where the values came from, for error messages (``"-D"``, ``"program"``).

        Returns:
            A new configuration; this one is unchanged.

        Raises:
            ConfigError: an unknown key or a value that does not fit its option.
        """
        return self._merged({k: _validated(k, v, source) for k, v in _flatten(mapping).items()})

    def _merged(self, checked: dict[str, Any]) -> "Configuration":
        new = object.__new__(Configuration)
        object.__setattr__(new, "_values", {**self._values, **checked})
        return new

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], source: str = "<dict>") -> "Configuration":
        """Return a configuration of ``mapping`` over the defaults.

        Args:
            mapping: dotted keys to values; nested mappings flatten to dotted keys.
            source: where the values came from, for error messages.

        Raises:
            ConfigError: an unknown key or a value that does not fit its option.
        """
        return cls(mapping, source)

    @classmethod
    def load(cls, conf_file: str | None = None, dynamic: list[str] | tuple[str, ...] = (),
             env: Mapping[str, str] | None = os.environ) -> "Configuration":
        """Load defaults < a YAML file < ``-D key=value`` strings.

        Args:
            conf_file: the YAML file to read. If ``None``, ``$EMRFLOW_CONF_DIR/emrflow-conf.yaml``
                when ``EMRFLOW_CONF_DIR`` is set (and not empty), else the packaged
                ``configs/emrflow-conf.yaml`` (:data:`DEFAULT_CONF_FILE`), else no file.
            dynamic: ``key=value`` strings (``-D`` arguments), applied in order; the value is
                everything after the first ``=``.
            env: the environment ``EMRFLOW_CONF_DIR`` is read from (``None``: ``os.environ``).

        Returns:
            The loaded configuration.

        Raises:
            ConfigError: a missing, unreadable or invalid file, a top level that is not a
                mapping, an unknown key, a value that does not fit, or a ``-D`` string without
                ``=``; the message names the key and where it came from (``file:line`` or ``-D``).
        """
        env = os.environ if env is None else env
        source = None
        if conf_file is None and env.get("EMRFLOW_CONF_DIR"):
            conf_file = os.path.join(env["EMRFLOW_CONF_DIR"], CONF_FILE_NAME)
            source = "$EMRFLOW_CONF_DIR"
        if conf_file is None and os.path.isfile(DEFAULT_CONF_FILE):
            conf_file = DEFAULT_CONF_FILE  # the packaged (or the checkout's) sample file
        config = cls()
        if conf_file is not None:
            config = config._merged(_load_yaml(str(conf_file), source))
        overrides: dict[str, Any] = {}
        for item in dynamic:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"-D {item!r}: expected key=value, e.g. -D parallelism.default=4",
                                  source="-D")
            overrides[key.strip()] = value.strip()
        return config.with_overrides(overrides, "-D") if overrides else config


def _load_yaml(path: str, found_via: str | None = None) -> dict[str, Any]:
    """Read a YAML file, flatten it and validate every value; errors carry ``path:line``."""
    via = f" (from {found_via})" if found_via else ""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}{via}", source=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}{via}: {exc}", source=path) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML in {where}: {problem}", source=where) from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        where = f"{path}:{root.start_mark.line + 1}"
        raise ConfigError(f"{where}: the top level must be a mapping of configuration keys to values",
                          source=where)
    loader = yaml.SafeLoader("")
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}

    def walk(node: yaml.MappingNode, prefix: str) -> None:
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            where = f"{path}:{line}"
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(f"{where}: a configuration key must be a string", source=where)
            key = prefix + str(key_node.value)
            if isinstance(value_node, yaml.MappingNode) and key not in OPTIONS:
                walk(value_node, key + ".")
                continue
            if key in lines:
                raise ConfigError(f"{key}: set twice in {path} (lines {lines[key]} and {line})",
                                  key=key, source=where)
            lines[key] = line
            values[key] = _validated(key, _node_value(key, value_node, loader), where)

    walk(root, "")
    return values


_NULL_TAG = "tag:yaml.org,2002:null"


def _node_value(key: str, node: yaml.Node, loader: yaml.SafeLoader) -> Any:
    """The value of a YAML node; string-like options get scalars' text as written (so
    ``queue: no`` is ``"no"``, not ``False``)."""
    opt = OPTIONS.get(key)
    raw = opt is not None and opt.type in ("str", "enum", "list")
    if raw and isinstance(node, yaml.ScalarNode) and node.tag != _NULL_TAG:
        return node.value
    if raw and isinstance(node, yaml.SequenceNode) and all(
            isinstance(n, yaml.ScalarNode) and n.tag != _NULL_TAG for n in node.value):
        return [n.value for n in node.value]
    return loader.construct_object(node, deep=True)


def options_markdown() -> str:
    """Render the registry as the Markdown document ``docs/configuration.md``.

    Returns:
        An introduction (precedence, units) and one table per key prefix (the part before
        the first dot) with each key's type, default in user units and description.
    """
    lines = [
        "# Configuration",
        "",
        "<!-- generated by `python -m emrflow.config > docs/configuration.md` "
        "(or `emrflow config docs`); do not edit -->",
        "",
        "emrflow uses Apache Flink's option names. Each key's value comes, later ones winning, from",
        "its default, a YAML file and `-D key=value` on the command line (defaults < file < `-D`).",
        "The file is `--conf FILE`, else `$EMRFLOW_CONF_DIR/emrflow-conf.yaml` when",
        "`EMRFLOW_CONF_DIR` is set, else none; `configs/emrflow-conf.yaml` is a commented example.",
        "Nested mappings flatten to dotted keys: `taskmanager: {numberOfTaskSlots: 4}` is",
        "`taskmanager.numberOfTaskSlots: 4`.",
        "",
        "Units: a duration is written `500 ms`, `30 s`, `2 min`, `1 h` or `1 d` (a bare number is",
        "milliseconds); a memory size `512m`, `512 MiB`, `1g` or `1 GiB` (binary units; a bare",
        "number is bytes). Booleans take `true`/`false`, `yes`/`no`, `1`/`0`; enums are",
        "case-insensitive; lists are YAML lists or `;`-separated strings. Unknown keys and values",
        "that do not fit are errors naming the key and where it was set (`file:line` or `-D`).",
    ]
    groups: dict[str, list[ConfigOption]] = {}
    for key in sorted(OPTIONS, key=str.lower):
        groups.setdefault(key.split(".", 1)[0], []).append(OPTIONS[key])
    for prefix, options in groups.items():
        lines += ["", f"## {prefix}", "", "| key | type | default | description |", "|---|---|---|---|"]
        for o in options:
            kind = "enum: " + " \\| ".join(o.choices) if o.type == "enum" else o.type + _bounds(o)
            default = "(unset)" if o.default is None else f"`{o.format(o.default)}`"
            if o.type == "list" and not o.default:
                default = "(empty)"
            description = o.description.replace("|", "\\|")
            lines.append(f"| `{o.key}` | {kind} | {default} | {description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(options_markdown(), end="")
