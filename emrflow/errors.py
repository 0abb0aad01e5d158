"""Exceptions raised by emrflow.

Every error a user can fix derives from :class:`EmrflowError`; the CLI turns it
into ``Error: <message>`` and exit status 1. Subclasses are grouped by what the
user has to change, and keep the facts they report as attributes.
"""

from __future__ import annotations


class EmrflowError(Exception):
    """Base class of all errors emrflow raises on purpose."""


class ConfigError(EmrflowError, ValueError):
    """A configuration key or value is wrong.

    Attributes:
        key: the configuration key concerned, or ``None``.
        source: where the value came from (``"file.yaml:12"``, ``"-D"``), or ``None``.
    """

    def __init__(self, message: str, key: str | None = None, source: str | None = None):
        super().__init__(message)
        self.key = key
        self.source = source


class JobGraphError(EmrflowError, ValueError):
    """The user's dataflow cannot be turned into a runnable JobGraph."""


class InputNotFoundError(EmrflowError, FileNotFoundError):
    """A source's input path does not exist (raised before the job starts).

    Attributes:
        path: the path that was not found.
    """

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


class OutputExistsError(EmrflowError, FileExistsError):
    """A sink's output directory exists and the write mode is NO_OVERWRITE.

    Attributes:
        path: the existing output path.
    """

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


class OutputCorruptError(EmrflowError, OSError):
    """An output directory holds a commit record that cannot be finished (a file it lists is gone,
    or the record is unreadable): the output there may be incomplete.

    Attributes:
        path: the commit record.
    """

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


class StorageError(EmrflowError, OSError):
    """A file system (local or S3) could not be reached or used; the message is one line.

    Attributes:
        path: the location concerned.
    """

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


class BadRecordError(EmrflowError, ValueError):
    """An input record could not be parsed and bad records are fatal.

    Attributes:
        path: file the record came from.
        line: 1-based line number in that file.
        reason: what was wrong with it.
    """

    def __init__(self, path: str, line: int, reason: str):
        super().__init__(f"{path}:{line}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


class ClusterError(EmrflowError, RuntimeError):
    """The cluster (JobManager, TaskManagers) could not be started or reached."""


class JobExecutionError(EmrflowError, RuntimeError):
    """A job failed or was cancelled.

    Attributes:
        job_id: hex id of the job.
        job_name: the job's name.
        operator: name of the operator whose subtask failed first, or ``None``.
        subtask_index: 0-based index of that subtask, or ``None``.
        parallelism: parallelism of that operator, or ``None``.
        remote_traceback: the formatted traceback from the failing process.
    """

    def __init__(self, message: str, *, job_id: str = "", job_name: str = "",
                 operator: str | None = None, subtask_index: int | None = None,
                 parallelism: int | None = None, remote_traceback: str = ""):
        super().__init__(message)
        self.job_id = job_id
        self.job_name = job_name
        self.operator = operator
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n" + self.remote_traceback.rstrip()
        return text


class ResourceNotFoundError(EmrflowError, FileNotFoundError):
    """A file emrflow ships (bootstrap script, template, example) is missing from its install.

    Attributes:
        path: where it was looked for.
    """

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


class ConnectorError(EmrflowError, RuntimeError):
    """An external system a connector writes to or reads from refused the work: a table or
    stream that does not exist, a record it cannot take, retries exhausted.

    Attributes:
        resource: what was concerned, as the service names it (``"DynamoDB table 'orders'"``).
    """

    def __init__(self, message: str, resource: str):
        super().__init__(message)
        self.resource = resource
