"""Errors of JobManager requests (they replace the error strings replies used to be)."""

from __future__ import annotations

from emrflow.errors import EmrflowError


class JobManagerError(EmrflowError, RuntimeError):
    """A client request to the JobManager was refused; the message says why (it is sent to
    remote clients as the ``error`` reply)."""


class JobNotFound(JobManagerError, LookupError):
    """No job with that id.

    Attributes:
        job_id: the id asked for.
    """

    def __init__(self, job_id: str):
        super().__init__(f"no job with id {job_id}")
        self.job_id = job_id


class JobAlreadySubmitted(JobManagerError):
    """A job with that id was submitted before.

    Attributes:
        job_id: the job's id.
    """

    def __init__(self, job_id: str):
        super().__init__(f"job {job_id} was already submitted")
        self.job_id = job_id


class SavepointError(JobManagerError):
    """A savepoint (or stop-with-savepoint) could not be taken or did not complete."""
