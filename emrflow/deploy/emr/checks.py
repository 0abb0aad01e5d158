"""What Amazon EMR itself checks, checked before the first AWS call; Flink's classifications for emrflow.

:mod:`emrflow.deploy.emr.spec` validates a spec's shape and :mod:`emrflow.deploy.emr.requests`
builds the requests; this module holds the rules EMR applies that a spec can break although it
looks right:

- release labels the bootstrap action can serve (EMR 7: Amazon Linux 2023, ``dnf``,
  Python >= 3.10 installable; :func:`check_release_label`);
- classification ``Properties`` are strings for EMR: YAML's ``4`` and ``false`` become
  ``"4"`` and ``"false"`` (:func:`emr_properties`);
- ``ActionOnFailure`` with ``StepConcurrencyLevel`` > 1: only ``CONTINUE``
  (:func:`check_action_on_failure`);
- every request against botocore's own model of the operation
  (:func:`validate_request`), as botocore would before sending it;
- a spec's ``flink-conf`` classification configures emrflow (its keys are Flink's) and
  ``flink-log4j``'s ``rootLogger.level`` sets emrflow's log level
  (:func:`emrflow_configuration`).
"""

from __future__ import annotations

import functools
import logging
import re
from typing import TYPE_CHECKING, Any, Callable, Sequence

from emrflow.errors import ConfigError

if TYPE_CHECKING:
    from emrflow.deploy.emr.spec import Classification

log = logging.getLogger(__name__)

#: the oldest EMR major release the bootstrap action serves (Amazon Linux 2023, dnf, python3.11)
MIN_RELEASE_MAJOR = 7

#: Flink keys with another name in emrflow (Flink's older names), to emrflow's key
FLINK_RENAMED = {
    "state.backend": "state.backend.type",
    "restart-strategy": "restart-strategy.type",
    "state.checkpoint-storage": None,           # emrflow picks the storage from state.checkpoints.dir
    "execution.checkpointing.dir": "state.checkpoints.dir",
    "execution.checkpointing.savepoint-dir": "state.savepoints.dir",
    "execution.checkpointing.num-retained": "state.checkpoints.num-retained",
    "state.backend.incremental": None,
    "yarn.appmaster.vcores": None,
}
#: values of Flink's older ``state.backend`` and what emrflow's ``state.backend.type`` calls them
_FLINK_BACKENDS = {"jobmanager": "hashmap", "filesystem": "hashmap", "hashmap": "hashmap",
                   "rocksdb": "rocksdb"}
#: log levels emrflow knows (Python's, and log4j's names for them)
_LOG_LEVELS = {"TRACE": "DEBUG", "DEBUG": "DEBUG", "INFO": "INFO", "WARN": "WARNING",
               "WARNING": "WARNING", "ERROR": "ERROR", "FATAL": "CRITICAL", "CRITICAL": "CRITICAL",
               "OFF": "CRITICAL"}


def check_release_label(label: str, where: str) -> str:
    """Refuse release labels the bootstrap action cannot serve.

    ``bootstrap/install-emrflow.sh`` needs Python >= 3.10, which EMR 7 (Amazon Linux 2023)
    installs with ``dnf install python3.11``; EMR 6 and 5 run Amazon Linux 2 (``yum``,
    Python 3.7).

    Args:
        label: ``emr-X.Y.Z`` (its shape already checked).
        where: where it was set (``file:line`` or ``--release-label``).

    Returns:
        ``label``.

    Raises:
        ConfigError: an EMR release older than 7, naming ``release_label`` and where it was set.
    """
    m = re.match(r"^emr-(\d+)\.", label)
    major = int(m.group(1)) if m else MIN_RELEASE_MAJOR
    if major < MIN_RELEASE_MAJOR:
        raise ConfigError(
            f"{where}: release_label: expected emr-{MIN_RELEASE_MAJOR}.x.y or later (emrflow's bootstrap "
            f"action needs Amazon Linux 2023 with dnf and Python >= 3.10), got {label!r}: EMR "
            f"{major} runs Amazon Linux 2 with Python 3.7; use e.g. emr-7.1.0",
            key="release_label", source=where)
    return label


def emr_property_value(value: Any) -> str:
    """Return a classification property's value as EMR takes it: a string.

    ``True``/``False`` become ``"true"``/``"false"`` (Hadoop's and Flink's spelling, not
    Python's), numbers their decimal text, strings stay.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def emr_properties(classifications: Sequence[Classification]) -> list[dict]:
    """Return configuration classifications in EMR's shape with every property value a string
    (recursively).

    Args:
        classifications: validated classifications (:class:`~emrflow.deploy.emr.spec.Classification`),
            whose property values are scalars.

    Returns:
        ``[{"Classification", "Properties"?, "Configurations"?}]``, each key present when the spec
        gave it.
    """
    out = []
    for cl in classifications:
        c: dict[str, Any] = {"Classification": cl.classification}
        if cl.properties is not None:
            c["Properties"] = {str(k): emr_property_value(v) for k, v in cl.properties.items()}
        if cl.configurations is not None:
            c["Configurations"] = emr_properties(cl.configurations)
        out.append(c)
    return out


def check_action_on_failure(action: str, concurrency: int, where: str) -> str:
    """Refuse an ``ActionOnFailure`` EMR rejects for a cluster running steps concurrently.

    With ``StepConcurrencyLevel`` > 1 EMR accepts only ``CONTINUE`` (and rejects
    ``CANCEL_AND_WAIT`` and ``TERMINATE_CLUSTER``, for steps given at creation or added later).

    Args:
        action: CONTINUE, CANCEL_AND_WAIT or TERMINATE_CLUSTER.
        concurrency: the cluster's step concurrency level (1 when unset).
        where: where ``action`` was set, for the message.

    Returns:
        ``action``.

    Raises:
        ConfigError: ``action`` is not CONTINUE while ``concurrency`` > 1.
    """
    if concurrency > 1 and action != "CONTINUE":
        raise ConfigError(f"{where}: action_on_failure: expected CONTINUE (EMR allows only CONTINUE "
                          f"when step_concurrency_level is {concurrency} > 1), got {action!r}",
                          key="action_on_failure", source=where)
    return action


def transient_action_on_failure(concurrency: int) -> str:
    """The ``ActionOnFailure`` of a transient cluster's job step: ``TERMINATE_CLUSTER`` when steps
    run one at a time, else ``CONTINUE`` (the only one EMR accepts then; the cluster still ends
    after its last step, as KeepJobFlowAliveWhenNoSteps is false)."""
    return "TERMINATE_CLUSTER" if concurrency <= 1 else "CONTINUE"


@functools.lru_cache(maxsize=4)
def _service_model(service: str):
    import botocore.session
    return botocore.session.get_session().get_service_model(service)


def validate_request(operation: str, params: dict, service: str = "emr") -> dict:
    """Check a request against botocore's model of ``operation``, as botocore does before sending.

    Args:
        operation: the operation's name, such as ``RunJobFlow`` or ``AddJobFlowSteps``.
        params: the request (the keyword arguments of the boto3 call).
        service: the AWS service (``emr``).

    Returns:
        ``params``.

    Raises:
        ConfigError: every problem botocore finds (a missing required field, a wrong type, an
            unknown field, a value out of range), naming the field.
    """
    from botocore.validate import ParamValidator
    shape = _service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise ConfigError(f"the {operation} request would be refused: {report.generate_report()}",
                          source=operation)
    return params


def _flink_value(key: str, value: Any) -> Any:
    if key == "state.backend.type":
        text = str(value).strip().lower()
        return _FLINK_BACKENDS.get(text, text)
    return value


def log_level(value: Any, where: str) -> str:
    """Return a log level as emrflow's logging takes it (``INFO``, ``WARNING``...), from a Python or
    log4j name (``WARN``, ``TRACE``...).

    Raises:
        ConfigError: an unknown level, naming where it was set.
    """
    level = str(value).strip().upper()
    if level not in _LOG_LEVELS:
        raise ConfigError(f"{where}: expected a log level ({', '.join(_LOG_LEVELS)}), got {value!r}",
                          source=where)
    return _LOG_LEVELS[level]


def emrflow_configuration(classifications: Sequence[Classification], where: Callable[[tuple], str],
                          warn: Callable[[str], None] = log.warning) -> tuple[dict, dict, list[str]]:
    """Collect emrflow's configuration from a spec's classifications.

    ``flink-conf`` (Flink's keys) is taken first, then ``emrflow-conf`` on top (emrflow's
    own classification wins). A ``flink-conf`` key emrflow has (same name, or Flink's older
    name in :data:`FLINK_RENAMED`) is mapped; a key emrflow has no use for (JVM options,
    high availability, Flink's memory model...) is reported through ``warn`` by name, and
    left out: it is valid Flink, so the same classification can configure Flink too, but
    emrflow does not act on it. ``flink-log4j``'s ``rootLogger.level`` (log4j 2) or
    ``log4j.rootLogger`` (log4j 1) becomes ``root.level`` of ``emrflow-log`` unless that sets
    one itself.

    Args:
        classifications: the spec's ``configurations``
            (:class:`~emrflow.deploy.emr.spec.Classification`).
        where: gives ``file:line`` of a path inside ``configurations``, such as ``(2,
            "Properties", "state.backend")``.
        warn: receives one message per unused Flink key.

    Returns:
        ``(emrflow-conf mapping, emrflow-log mapping, unused flink-conf keys)``.

    Raises:
        ConfigError: a value that does not fit its emrflow option, or an unknown log level,
            naming the key and its ``file:line``.
    """
    from emrflow.config import OPTIONS, Configuration
    conf: dict[str, Any] = {}
    logging_conf: dict[str, Any] = {}
    unused: list[str] = []
    by_name = {cl.classification: (i, cl) for i, cl in enumerate(classifications)}
    if "flink-conf" in by_name:
        i, cl = by_name["flink-conf"]
        for k, v in (cl.properties or {}).items():
            k = str(k)
            target = FLINK_RENAMED.get(k, k) if k in FLINK_RENAMED else (k if k in OPTIONS else None)
            at = where((i, "Properties", k))
            if target is None:
                unused.append(k)
                warn(f"{at}: flink-conf: {k} has no emrflow equivalent and is not used by emrflow "
                     "(`emrflow config keys` lists what emrflow takes)")
                continue
            value = _flink_value(target, v)
            try:
                Configuration.from_dict({target: value}, source=at)
            except ConfigError as exc:
                raise ConfigError(f"{at}: flink-conf: {k}: {exc}", key=k, source=at) from None
            conf[target] = value
    if "flink-log4j" in by_name:
        i, cl = by_name["flink-log4j"]
        props = {str(k): v for k, v in (cl.properties or {}).items()}
        key = "rootLogger.level" if "rootLogger.level" in props else (
            "log4j.rootLogger" if "log4j.rootLogger" in props else None)
        if key is not None:
            raw = str(props[key]).split(",")[0]           # log4j 1: "INFO, console"
            logging_conf["root.level"] = log_level(raw, where((i, "Properties", key)) + f": flink-log4j: {key}")
    if "emrflow-conf" in by_name:
        conf.update({str(k): v for k, v in (by_name["emrflow-conf"][1].properties or {}).items()})
    if "emrflow-log" in by_name:
        i, cl = by_name["emrflow-log"]
        for k, v in (cl.properties or {}).items():
            logging_conf[str(k)] = log_level(v, where((i, "Properties", str(k))) + f": emrflow-log: {k}") \
                if str(k) == "root.level" else v
    return conf, logging_conf, unused
