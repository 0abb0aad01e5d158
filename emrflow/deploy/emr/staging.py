"""S3 staging and the AWS session: what a cluster needs in S3, and the one boto3 boundary.

A :class:`Staging` plans the uploads a cluster needs under the staging prefix: the emrflow
wheel (content-addressed), the bootstrap scripts, job scripts; :func:`plan_staging` decides the
prefix and which emrflow the nodes install. :class:`EmrSession` holds the boto3 EMR and S3
clients; every botocore error is translated at one boundary (:func:`aws_errors`) into
:class:`~emrflow.errors.ClusterError` carrying the AWS error code.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from emrflow import resources
from emrflow.deploy.emr.source import check_s3_uri, split_s3_uri
from emrflow.deploy.emr.spec import ClusterSpec
from emrflow.deploy.wheel import check_wheel_name, self_wheel, wheel_digest
from emrflow.errors import ClusterError, ConfigError

#: the source checkout emrflow runs from, if it does
REPO_ROOT = resources.REPO_ROOT
#: the bootstrap scripts install-emrflow.sh and write-emrflow-conf.sh: in the installed package
#: (emrflow/_data/bootstrap), else in the source checkout; None when neither has them
BOOTSTRAP_DIR = resources.find_dir("bootstrap")
#: ``--wheel index``: the nodes install this emrflow version from the package index
WHEEL_FROM_INDEX = "index"
#: what a dry run shows for the digest of a wheel it does not build
DIGEST_PLACEHOLDER = "<sha256>"
#: an AWS region name (``--region``)
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


@dataclass
class Staging:
    """What a cluster needs in S3 and where it goes.

    Every local file is checked when its upload is planned, and all of them again just before
    the first upload (:meth:`check`), so a missing file stops everything before S3 holds any
    of them.

    Attributes:
        uri: the staging prefix, ``s3://bucket/prefix``.
        uploads: ``(local path, s3 uri)`` pairs to upload before RunJobFlow.
        wheel_uri: what the bootstrap action installs: the emrflow wheel's S3 URI, or the
            requirement ``emrflow==X.Y.Z`` (installed from the package index, ``--wheel index``).
    """

    uri: str
    uploads: list[tuple[str, str]] = field(default_factory=list)
    wheel_uri: str = ""

    def child(self, *parts: str) -> str:
        """Return ``<uri>/<parts...>``."""
        return "/".join([self.uri.rstrip("/"), *parts])

    def add(self, local: str, *parts: str, what: str = "file") -> str:
        """Plan the upload of ``local`` to ``<uri>/<parts...>``; return that URI.

        Args:
            local: the local file.
            *parts: the key's parts below the staging prefix.
            what: what the file is (``bootstrap script``), for the error message.

        Raises:
            ConfigError: ``local`` is not a file.
        """
        if not os.path.isfile(local):
            raise ConfigError(f"{what} not found: {local} (nothing was uploaded)", source=local)
        uri = self.child(*parts)
        if (local, uri) not in self.uploads:
            self.uploads.append((local, uri))
        return uri

    def add_wheel(self, wheel: str, where: str = "--wheel") -> str:
        """Plan a wheel's upload under a content-addressed key and make it the one installed.

        Args:
            wheel: the local wheel file.
            where: where it came from (``--wheel``), for error messages.

        Returns:
            Its S3 URI, ``<uri>/wheels/<first 16 hex digits of its SHA-256>/<file name>``: the
            same build always has the same key, a different build never does, so nodes added
            later install exactly this build. The file name stays as it is, so pip takes it.

        Raises:
            ConfigError: not a file, or not named like a wheel.
        """
        check_wheel_name(wheel, where)
        if not os.path.isfile(wheel):
            raise ConfigError(f"{where}: wheel not found: {wheel}", source=where)
        self.wheel_uri = self.add(wheel, "wheels", wheel_digest(wheel), os.path.basename(wheel),
                                  what="wheel")
        return self.wheel_uri

    def check(self) -> None:
        """Check that every planned local file still exists.

        Raises:
            ConfigError: naming every missing file (nothing was uploaded).
        """
        missing = [local for local, _ in self.uploads if not os.path.isfile(local)]
        if missing:
            raise ConfigError(f"file{'s' if len(missing) > 1 else ''} to stage not found: "
                              f"{', '.join(missing)} (nothing was uploaded)", source=missing[0])

    def add_job(self, job: str) -> str:
        """Plan a job script's upload under ``jobs/<content hash>/``.

        Args:
            job: a local script, or an ``s3://`` URI (kept as it is, nothing uploaded).

        Returns:
            The script's S3 URI, ``<uri>/jobs/<first 12 hex digits of its SHA-256>/<name>``.

        Raises:
            ConfigError: the local script does not exist, or a malformed S3 URI.
        """
        if job.startswith("s3://"):
            return check_s3_uri(job, "JOB", "job script", key_required=True)
        if not os.path.isfile(job):
            raise ConfigError(f"job script not found: {job}", source="JOB")
        with open(job, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        return self.add(job, "jobs", digest, os.path.basename(job), what="job script")



def expected_wheel_name() -> str:
    """Return the file name ``pip wheel`` gives this version's wheel (``emrflow-X.Y.Z-py3-none-any.whl``)."""
    from emrflow import __version__
    return f"emrflow-{__version__}-py3-none-any.whl"


def plan_staging(spec: ClusterSpec, staging_uri: str | None, wheel: str | None, work_dir: str | None,
                 dry_run: bool = False) -> Staging:
    """Decide the staging prefix and the emrflow the nodes install.

    emrflow stages itself (:func:`emrflow.deploy.wheel.self_wheel`): an installed emrflow is
    repacked into a wheel, a source checkout built with pip; ``wheel`` (``--wheel``, or the
    spec's ``wheel``) overrides that with a built wheel (a local file or an ``s3://`` URI), or
    with ``index``: the nodes install ``emrflow==<this version>`` from the package index (their
    pip's, e.g. a mirror in ``/etc/pip.conf``). A local wheel goes under a content-addressed
    key, ``wheels/<sha256 prefix>/<file name>``.

    Args:
        spec: the cluster spec (its ``staging_uri`` and ``wheel`` are the defaults).
        staging_uri: ``--s3-staging``, overriding the spec.
        wheel: ``--wheel``: a built wheel (path or s3:// URI) or ``index``, overriding the
            spec, or ``None`` to stage this emrflow.
        work_dir: directory for the wheel made here (a temporary one when ``None``).
        dry_run: build nothing: the key of a wheel made here shows ``<sha256>`` for its digest.

    Returns:
        The :class:`Staging` plan: prefix, wheel URI and the uploads planned so far.

    Raises:
        ConfigError: no staging URI, a bad or missing wheel, or the wheel could not be made.
    """
    uri = staging_uri or spec.staging_uri
    if not uri:
        raise ConfigError(f"{spec.where(('staging_uri',))}: staging_uri: expected an S3 URI "
                          "s3://bucket[/prefix] (or --s3-staging) for the wheel, bootstrap scripts "
                          "and jobs, got nothing", key="staging_uri", source=spec.source.file)
    check_s3_uri(uri, "--s3-staging" if staging_uri else spec.where(("staging_uri",)), "staging_uri")
    staging = Staging(uri)
    where = "--wheel" if wheel else spec.where(("wheel",))
    wheel = wheel or spec.wheel
    if wheel == WHEEL_FROM_INDEX:
        from emrflow import __version__
        staging.wheel_uri = f"emrflow=={__version__}"
    elif wheel and wheel.startswith("s3://"):
        staging.wheel_uri = check_wheel_name(check_s3_uri(wheel, where, "wheel", key_required=True), where)
    elif wheel:
        if not (os.path.isfile(wheel) and wheel.endswith(".whl")):
            raise ConfigError(f"{where}: expected a .whl file, an s3:// URI or {WHEEL_FROM_INDEX}, "
                              f"got {wheel!r}" + ("" if os.path.exists(wheel) else " (no such file)"),
                              source=where)
        staging.add_wheel(wheel, where)
    elif dry_run:
        staging.wheel_uri = staging.child("wheels", DIGEST_PLACEHOLDER, expected_wheel_name())
    else:
        staging.add_wheel(self_wheel(work_dir or tempfile.mkdtemp(prefix="emrflow-wheel-")), "the staged emrflow")
    return staging



@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Translate botocore errors raised inside into :class:`ClusterError` (the one boundary).

    Args:
        action: what was being done (``"RunJobFlow"``), for the message.

    boto3's S3 transfer manager (``upload_file``/``download_file``) wraps the
    ClientError of a failed upload in ``boto3.exceptions.S3UploadFailedError``;
    the ClientError it wraps (its ``__context__``) gives the AWS code.

    Raises:
        ClusterError: with ``code`` (the AWS error code, such as ``NoSuchBucket``, or the
            botocore/boto3 class name) and the AWS message.
    """
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    def translated(exc: BaseException) -> ClusterError:
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code, msg = err.get("Code", "Unknown"), err.get("Message", str(exc))
        else:
            code, msg = type(exc).__name__, str(exc)
        error = ClusterError(f"{action} failed: {code}: {msg}")
        error.code = code
        return error

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translated(exc) from None
    except Boto3Error as exc:
        cause = exc.__cause__ or exc.__context__
        raise translated(cause if isinstance(cause, ClientError) else exc) from None


class EmrSession:
    """boto3 EMR and S3 clients with adaptive retries; a context manager that closes them.

    Args:
        profile: AWS profile (``--profile``), else the standard credential chain.
        region: AWS region (``--region``), else the profile's or ``AWS_DEFAULT_REGION``.
        endpoint_url: endpoint for both services (``--endpoint-url``), else ``AWS_ENDPOINT_URL``.

    Raises:
        ConfigError: a malformed region or endpoint URL (checked before any AWS call).
    """

    def __init__(self, profile: str | None = None, region: str | None = None,
                 endpoint_url: str | None = None):
        if region is not None and not REGION_RE.match(region):
            raise ConfigError(f"--region: expected an AWS region such as us-east-1, got {region!r}",
                              source="--region")
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        if endpoint_url is not None and not re.match(r"^https?://[^\s/]+", endpoint_url):
            raise ConfigError(f"--endpoint-url: expected http(s)://host[:port], got {endpoint_url!r}",
                              source="--endpoint-url")
        self.profile, self.region, self.endpoint_url = profile, region, endpoint_url
        self._clients: dict[str, Any] = {}

    def client(self, service: str):
        """Return the (cached) boto3 client of ``service`` (``emr`` or ``s3``)."""
        if service not in self._clients:
            import boto3
            from botocore.config import Config
            with aws_errors("creating the AWS session"):
                session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
                self._clients[service] = session.client(
                    service, endpoint_url=self.endpoint_url,
                    config=Config(retries={"mode": "adaptive", "max_attempts": 10}))
        return self._clients[service]

    @property
    def emr(self):
        """The EMR client."""
        return self.client("emr")

    @property
    def s3(self):
        """The S3 client."""
        return self.client("s3")

    def close(self) -> None:
        """Close every client's connections."""
        for c in self._clients.values():
            c.close()
        self._clients.clear()

    def __enter__(self) -> "EmrSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- S3
    def upload(self, local: str, uri: str) -> None:
        """Upload a local file to the S3 object ``uri`` (PutObject, multipart when large).

        Args:
            local: the local file.
            uri: ``s3://bucket/key``.

        Raises:
            ConfigError: ``uri`` is not an S3 URI.
            ClusterError: S3 refused, with the AWS code (``NoSuchBucket``, ``AccessDenied``...).
        """
        bucket, key = split_s3_uri(uri)
        with aws_errors(f"uploading {local} to {uri}"):
            self.s3.upload_file(local, bucket, key)

    def upload_all(self, staging: Staging, log: Callable[[str], None] = lambda s: None) -> None:
        """Upload every file ``staging`` plans, in order.

        Args:
            staging: the plan.
            log: receives a line per upload.

        Raises:
            ConfigError: a planned file is missing (checked for all before the first upload).
            ClusterError: an upload failed (the AWS code).
        """
        staging.check()
        for local, uri in staging.uploads:
            log(f"uploading {local} -> {uri}")
            self.upload(local, uri)

    def read(self, uri: str) -> bytes | None:
        """Read an S3 object (GetObject).

        Args:
            uri: ``s3://bucket/key``.

        Returns:
            Its bytes, or ``None`` when there is no such key.

        Raises:
            ClusterError: any other S3 error (a missing bucket, access denied...).
        """
        from botocore.exceptions import ClientError
        bucket, key = split_s3_uri(uri)
        with aws_errors(f"reading {uri}"):
            try:
                obj = self.s3.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            with contextlib.closing(obj["Body"]) as body:
                return body.read()


def fetch_job_script(uri: str, dest_dir: str, session: EmrSession | None = None) -> str:
    """Download a job script from S3 (``emrflow run s3://bucket/job.py``).

    Args:
        uri: ``s3://bucket/key/job.py``.
        dest_dir: local directory to put it in (created if missing).
        session: the AWS session to use, else one from the standard chain and ``AWS_ENDPOINT_URL``.

    Returns:
        The local path, ``dest_dir/<file name>``.

    Raises:
        ConfigError: ``uri`` is not an S3 object URI.
        ClusterError: S3 refused (the AWS error code and message), or the object is missing.
    """
    bucket, key = split_s3_uri(check_s3_uri(uri, "JOB", "job script", key_required=True))
    os.makedirs(dest_dir, exist_ok=True)
    local = os.path.join(dest_dir, os.path.basename(key))
    own = session is None
    session = session or EmrSession()
    try:
        with aws_errors(f"downloading the job script {uri}"):
            session.s3.download_file(bucket, key, local)
    finally:
        if own:
            session.close()
    return local


def upload_directory(session: EmrSession, local_dir: str, uri: str) -> list[str]:
    """Upload every file below ``local_dir`` to ``uri/<relative path>``.

    Args:
        session: the AWS session.
        local_dir: the directory.
        uri: the S3 prefix, ``s3://bucket/prefix``.

    Returns:
        The URIs written, in upload order.

    Raises:
        ConfigError: ``uri`` is not an S3 URI.
        ClusterError: an upload failed.
    """
    check_s3_uri(uri, "output", "output URI")
    out = []
    for root, _, files in os.walk(local_dir):
        for f in sorted(files):
            path = os.path.join(root, f)
            rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
            dest = f"{uri.rstrip('/')}/{rel}"
            session.upload(path, dest)
            out.append(dest)
    return out
