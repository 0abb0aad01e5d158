"""Step log retrieval and failure diagnosis for Amazon EMR.

EMR copies every step's logs to the cluster's log URI, under
``<log-uri>/<cluster-id>/steps/<step-id>/`` as ``stderr.gz``, ``stdout.gz``,
``syslog.gz`` and ``controller.gz`` (about every five minutes, and once more
when the step ends), and the YARN containers' logs under
``<log-uri>/<cluster-id>/containers/<application-id>/<container-id>/stderr.gz``
(and ``stdout.gz``): there is the user's traceback when a task failed in a
TaskManager. The step's own output names its YARN application
(``submitted with JobID application_...``). This module finds those files,
decompresses them and picks what a user needs to see: the last Python traceback
of a container's or the step's ``stderr``, or else the last lines; and it says
which logs are not there yet. :func:`step_logs` reads them from S3.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from emrflow.deploy.emr.source import split_s3_uri
from emrflow.deploy.emr.staging import aws_errors

if TYPE_CHECKING:
    from emrflow.deploy.emr.staging import EmrSession

#: log files of a step, in the order they are searched for a diagnosis
STEP_LOG_FILES = ("stderr", "syslog", "stdout", "controller")

#: lines of a log tail shown when no traceback is found
TAIL_LINES = 25

#: most lines of a traceback shown (its end is kept)
MAX_TRACEBACK_LINES = 60

_TRACEBACK_START = "Traceback (most recent call last):"
# lines command-runner.jar and EMR's step runner add after the program's own output
_RUNNER_NOISE = re.compile(r"^(Command exiting with ret|\d{4}-\d\d-\d\d[T ][\d:.,]+Z? ?(INFO|WARN)\b)")


@dataclass
class StepLogs:
    """What was found of a step's logs at the log URI.

    Attributes:
        prefix: ``s3://bucket/.../<cluster-id>/steps/<step-id>/``, where the files are.
        files: log name (``stderr``...) to its decompressed text.
        missing: log names not found (yet) at ``prefix``.
    """

    prefix: str
    files: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    #: container log URI (``.../containers/<app>/<container>/stderr.gz``) to its text
    containers: dict[str, str] = field(default_factory=dict)
    #: container log prefixes of the step's YARN applications that hold no logs yet
    containers_missing: list[str] = field(default_factory=list)

    def applications(self) -> list[str]:
        """YARN application ids the step's logs name (``application_<cluster ts>_<n>``), in order."""
        return application_ids("\n".join(self.files.values()))

    def complete(self) -> bool:
        """True when the step's stderr and the logs of every YARN application it names are there."""
        return "stderr" in self.files and not self.containers_missing

    def diagnosis(self) -> str:
        """Return the relevant part of the logs: the last traceback of stderr, else tails.

        Returns:
            Text to show under the failure message; a note saying where logs will
            appear if none were found.
        """
        notes = [f"no YARN container logs at {p} yet (EMR copies them to S3 about every 5 minutes; "
                 "look again later)" for p in self.containers_missing]
        text = self._found()
        return "\n".join([text, *notes]) if text else "\n".join(
            [f"no step logs at {self.prefix} yet (EMR copies them to S3 about every "
             "5 minutes and when the step ends; look again later)", *notes])

    def _found(self) -> str:
        for uri in sorted(self.containers, reverse=True):      # the newest container first
            tb = last_traceback(self.containers[uri])
            if tb:
                return f"last traceback in the YARN container log {uri}:\n{tb}"
        stderr = self.files.get("stderr", "")
        tb = last_traceback(stderr)
        if tb:
            return f"last traceback in {self.prefix}stderr.gz:\n{tb}"
        for name in ("stderr", "syslog", "stdout"):
            text = self.files.get(name, "").strip()
            if text:
                return f"last lines of {self.prefix}{name}.gz:\n{tail(text)}"
        return ""


def step_log_prefix(log_uri: str, cluster_id: str, step_id: str) -> str:
    """Return the S3 prefix of a step's logs.

    Args:
        log_uri: the cluster's log URI (``s3://bucket/path/`` or ``s3n://...``).
        cluster_id: ``j-...``.
        step_id: ``s-...``.

    Returns:
        ``s3://bucket/path/<cluster-id>/steps/<step-id>/``.
    """
    base = re.sub(r"^s3n://", "s3://", log_uri).rstrip("/")
    return f"{base}/{cluster_id}/steps/{step_id}/"


_APPLICATION_ID = re.compile(r"\bapplication_\d+_\d+\b")


def application_ids(text: str) -> list[str]:
    """Return the YARN application ids in ``text``, each once, in order of appearance."""
    return list(dict.fromkeys(_APPLICATION_ID.findall(text)))


def container_log_prefix(log_uri: str, cluster_id: str, app_id: str) -> str:
    """Return ``s3://bucket/path/<cluster-id>/containers/<application-id>/``, where EMR puts the logs
    of a YARN application's containers (one ``container_...`` directory each)."""
    base = re.sub(r"^s3n://", "s3://", log_uri).rstrip("/")
    return f"{base}/{cluster_id}/containers/{app_id}/"


def decode_log(data: bytes) -> str:
    """Decompress (when gzip'd) and decode a log file's bytes (UTF-8, invalid bytes replaced)."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def last_traceback(text: str) -> str:
    """Return the last Python traceback in ``text`` (with its exception line), or "".

    Lines that command-runner.jar appends after the program's own output are
    dropped; a traceback longer than :data:`MAX_TRACEBACK_LINES` keeps its end.
    """
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == _TRACEBACK_START]
    if not starts:
        return ""
    block = lines[starts[-1]:]
    # the traceback ends with the first unindented line after the header (the exception);
    # keep what follows only while it continues that message
    end = len(block)
    for i in range(1, len(block)):
        if block[i] and not block[i][0].isspace():
            end = i + 1
            while end < len(block) and block[end].strip() and not _RUNNER_NOISE.match(block[end]):
                end += 1
            break
    block = block[:end]
    if len(block) > MAX_TRACEBACK_LINES:
        block = [block[0], "  ..."] + block[-(MAX_TRACEBACK_LINES - 2):]
    return "\n".join(block)


def tail(text: str, n: int = TAIL_LINES) -> str:
    """Return the last ``n`` non-noise lines of ``text``."""
    lines = [line for line in text.rstrip().splitlines() if not _RUNNER_NOISE.match(line)]
    return "\n".join(lines[-n:])


def step_logs(session: EmrSession, log_uri: str, cluster_id: str, step_id: str) -> StepLogs:
    """Fetch a step's log files from the cluster's log URI.

    Args:
        session: the AWS session.
        log_uri: the cluster's ``LogUri``.
        cluster_id: ``j-...``.
        step_id: ``s-...``.

    Returns:
        :class:`StepLogs` with the decompressed text of the files found (``stderr.gz`` or
        ``stderr``, and so on) and the names of those missing; and the ``stderr``/``stdout`` of
        the containers of every YARN application the step's logs name, under
        ``<log-uri>/<cluster-id>/containers/<application-id>/`` (or the prefixes without any yet).

    Raises:
        ClusterError: an S3 error other than a missing key.
    """
    prefix = step_log_prefix(log_uri, cluster_id, step_id)
    logs = StepLogs(prefix)
    for name in STEP_LOG_FILES:
        data = session.read(prefix + name + ".gz")
        if data is None:
            data = session.read(prefix + name)
        if data is None:
            logs.missing.append(name)
        else:
            logs.files[name] = decode_log(data)
    for app_id in logs.applications():
        app_prefix = container_log_prefix(log_uri, cluster_id, app_id)
        bucket, key = split_s3_uri(app_prefix)
        with aws_errors(f"listing {app_prefix}"):
            pages = session.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
        wanted = [k for k in keys if k.rsplit("/", 1)[-1] in ("stderr", "stderr.gz", "stdout", "stdout.gz")]
        if not wanted:
            logs.containers_missing.append(app_prefix)
        for k in sorted(wanted):
            data = session.read(f"s3://{bucket}/{k}")
            if data is not None:
                logs.containers[f"s3://{bucket}/{k}"] = decode_log(data)
    return logs
