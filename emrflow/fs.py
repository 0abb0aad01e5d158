"""File systems behind checkpoints, savepoints, file sources and file sinks.

A location is a local path (or ``file://`` URI) or an ``s3://bucket/key`` URI.
S3 goes through pyarrow's :class:`pyarrow.fs.S3FileSystem`, which takes the
standard AWS credential chain (environment, profile, instance role); the
endpoint comes from the ``s3.endpoint`` option (Flink's name), else
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (as the AWS CLI and boto3 read
them), so tests and S3-compatible stores work unchanged.
This mirrors Flink's ``FileSystem`` abstraction with its ``s3://`` scheme.

A :class:`FileSystem` carries one job's S3 options; it is built from the job's
configuration (:meth:`FileSystem.of`) wherever the job's files are touched and
handed down, so no process-wide setting decides which endpoint a job talks to.

S3 has no rename: :meth:`FileSystem.move` copies and deletes, so a commit that moves a
file is atomic per object (readers never see half an object), not per directory.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
from dataclasses import dataclass
from typing import IO, Any

from emrflow.errors import ConfigError

# pyarrow is imported only for s3:// locations: it costs about 40 MB of memory per process


def is_s3(uri: str) -> bool:
    """True if ``uri`` is an ``s3://``, ``s3a://``, ``s3n://`` or ``s3p://`` URI (Hadoop's and
    Flink's spellings of S3; all go to the same S3 file system)."""
    return uri.startswith(("s3://", "s3a://", "s3n://", "s3p://"))


def _split_s3(uri: str) -> str:
    rest = uri.split("://", 1)[1]
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise ConfigError(f"bad S3 URI {uri!r}: expected s3://bucket/key")
    return rest.rstrip("/")


@functools.lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str, access_key: str | None = None, secret_key: str | None = None):
    import pyarrow.fs as pafs
    kwargs: dict = {"region": region}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if access_key and secret_key:
        kwargs.update(access_key=access_key, secret_key=secret_key)
    return pafs.S3FileSystem(**kwargs)


#: region used when neither the AWS configuration nor the bucket tells one (S3's own default)
FALLBACK_REGION = "us-east-1"


def _configured_region() -> str | None:
    """The region of the standard AWS chain: ``AWS_REGION``/``AWS_DEFAULT_REGION``, the profile
    (``AWS_PROFILE``, ``~/.aws/config``), then EC2 instance metadata (an EMR node, a YARN
    container on it); ``None`` when none of them tells one."""
    env = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return env or _profile_or_instance_region(os.environ.get("AWS_PROFILE"),
                                              os.environ.get("AWS_CONFIG_FILE"))


@functools.lru_cache(maxsize=4)
def _profile_or_instance_region(profile: str | None, config_file: str | None) -> str | None:
    import botocore.session
    from botocore.exceptions import BotoCoreError
    try:
        region = botocore.session.get_session().get_config_variable("region")
    except BotoCoreError:               # a broken profile: the bucket's region may still do
        region = None
    if region:
        return region
    from botocore.utils import InstanceMetadataRegionFetcher
    try:                                # AWS_EC2_METADATA_DISABLED=true skips it (botocore's switch)
        return InstanceMetadataRegionFetcher(timeout=1, num_attempts=1).retrieve_region()
    except Exception:                   # noqa: BLE001 - no metadata service: not on EC2
        return None


@functools.lru_cache(maxsize=64)
def bucket_region(bucket: str, endpoint: str | None = None) -> str | None:
    """Return the region a bucket lives in, from S3 HeadBucket's ``x-amz-bucket-region`` header.

    S3 sends the header with every answer to HeadBucket, also a 301 (wrong region) or 403
    (no access to the bucket), so this works from any region and without ListBucket rights.

    Args:
        bucket: the bucket's name.
        endpoint: S3 endpoint URL, or ``None`` for AWS's.

    Returns:
        The region, or ``None`` when S3 does not say (no such bucket, no network).
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError
    client = boto3.session.Session().client(
        "s3", region_name=FALLBACK_REGION, endpoint_url=endpoint,
        config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=10))
    try:
        headers = client.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPHeaders"]
    except ClientError as exc:
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    except BotoCoreError:
        return None
    finally:
        client.close()
    return headers.get("x-amz-bucket-region") or None


def _local(uri: str) -> str:
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if "://" in uri:
        raise ConfigError(f"unsupported file system in {uri!r}: expected a local path, file:// or s3://")
    return os.path.abspath(uri)


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` (URIs) or the OS separator (local paths)."""
    if "://" in base:
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return os.path.join(base, *parts)


@dataclass(frozen=True)
class S3Options:
    """A job's S3 options (Flink's names); unset ones fall back to the standard AWS chain.

    Attributes:
        endpoint: ``s3.endpoint``, an endpoint URL such as ``http://127.0.0.1:5000``; else
            ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` from the environment, else AWS's.
        region: ``s3.endpoint.region``; else the AWS chain's region, else the bucket's own.
        access_key: ``s3.access-key``; used only together with ``secret_key``.
        secret_key: ``s3.secret-key``.
    """

    endpoint: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = None

    @classmethod
    def of(cls, config: Any) -> "S3Options":
        """Read the ``s3.*`` options of a :class:`~emrflow.config.Configuration` (``None``: none set)."""
        if config is None:
            return cls()
        values = [config.get(k) for k in ("s3.endpoint", "s3.endpoint.region", "s3.access-key",
                                           "s3.secret-key")]
        return cls(*(str(v) if v else None for v in values))


class FileSystem:
    """Local paths and ``s3://`` URIs, seen with one job's S3 options (Flink's ``FileSystem``).

    Every process that touches a job's files (the client checking locations, the JobManager
    writing checkpoint metadata and finishing commits, the task slots reading inputs and
    writing outputs and state) builds one from the job's configuration with :meth:`of`; two
    jobs of one session cluster with different ``s3.endpoint`` values each keep their own.
    Instances are immutable, cheap and picklable.

    Args:
        s3: the S3 options; ``None`` means the environment and the standard AWS chain only.
    """

    __slots__ = ("s3",)

    def __init__(self, s3: S3Options | None = None):
        self.s3 = s3 or S3Options()

    @classmethod
    def of(cls, config: Any) -> "FileSystem":
        """Return the file system of a job's :class:`~emrflow.config.Configuration` (its ``s3.*`` keys)."""
        return cls(S3Options.of(config))

    def __reduce__(self):
        return (FileSystem, (self.s3,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FileSystem) and other.s3 == self.s3

    def __hash__(self) -> int:
        return hash(self.s3)

    def __repr__(self) -> str:
        return f"FileSystem(endpoint={self.s3.endpoint!r}, region={self.s3.region!r})"

    # -- S3 ----------------------------------------------------------------------------
    def endpoint(self) -> str | None:
        """The S3 endpoint URL in use: ``s3.endpoint``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``."""
        return (self.s3.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))

    def s3_region(self, bucket: str | None = None) -> str:
        """Return the region S3 requests for ``bucket`` go to.

        ``s3.endpoint.region``, then the standard AWS resolution (environment, profile,
        instance metadata), then the bucket's own region (:func:`bucket_region`), then
        :data:`FALLBACK_REGION`. YARN containers do not inherit ``AWS_REGION``, so on an EMR
        node the instance metadata or the bucket tells the region.

        Args:
            bucket: the bucket to be accessed, or ``None``.

        Returns:
            A region name such as ``eu-west-1``.
        """
        region = self.s3.region or _configured_region()
        if not region and bucket:
            region = bucket_region(bucket, self.endpoint())
        return region or FALLBACK_REGION

    def s3_filesystem(self, bucket: str | None = None):
        """Return pyarrow's S3 file system for ``bucket`` (endpoint, region and keys as above;
        without ``s3.access-key``/``s3.secret-key`` the standard AWS credential chain)."""
        return _s3(self.endpoint(), self.s3_region(bucket), self.s3.access_key, self.s3.secret_key)

    def resolve(self, uri: str):
        """Return ``(pyarrow filesystem, path)`` for an ``s3://`` URI, or ``(None, path)`` for a local one.

        Raises:
            ConfigError: an unsupported scheme (the message names it) or a bucket-less S3 URI.
        """
        if is_s3(uri):
            path = _split_s3(uri)
            return self.s3_filesystem(path.split("/", 1)[0]), path
        return None, _local(uri)

    def _info(self, uri: str):
        """``(pyarrow.fs module, filesystem, path, FileInfo)`` of an ``s3://`` URI."""
        import pyarrow.fs as pafs
        fs, path = self.resolve(uri)
        return pafs, fs, path, fs.get_file_info(path)

    # -- queries -------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        """True if a file or directory is at ``uri``."""
        if not is_s3(uri):
            return os.path.exists(_local(uri))
        pafs, _, _, info = self._info(uri)
        return info.type != pafs.FileType.NotFound

    def is_file(self, uri: str) -> bool:
        """True if a file (S3: an object) is at ``uri``."""
        if not is_s3(uri):
            return os.path.isfile(_local(uri))
        pafs, _, _, info = self._info(uri)
        return info.type == pafs.FileType.File

    def size(self, uri: str) -> int:
        """Size of the file at ``uri`` in bytes.

        Raises:
            FileNotFoundError: nothing is there.
        """
        if not is_s3(uri):
            return os.path.getsize(_local(uri))
        pafs, _, _, info = self._info(uri)
        if info.type != pafs.FileType.File:
            raise FileNotFoundError(uri)
        return int(info.size)

    def _entries(self, uri: str) -> tuple:
        import pyarrow.fs as pafs
        fs, path = self.resolve(uri)
        return pafs, fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))

    def listdir(self, uri: str) -> list[str]:
        """Names (not paths) of the entries directly under ``uri``, sorted; empty if it does not exist."""
        if not is_s3(uri):
            path = _local(uri)
            return sorted(os.listdir(path)) if os.path.isdir(path) else []
        _, infos = self._entries(uri)
        return sorted(i.base_name for i in infos)

    def list_files(self, uri: str) -> list[str]:
        """URIs of the regular files directly under ``uri``, sorted by name."""
        if not is_s3(uri):
            return [join(uri, n) for n in self.listdir(uri) if os.path.isfile(os.path.join(_local(uri), n))]
        pafs, infos = self._entries(uri)
        return [join(uri, i.base_name) for i in sorted(infos, key=lambda i: i.base_name)
                if i.type == pafs.FileType.File]

    # -- reading and writing -------------------------------------------------------------
    def makedirs(self, uri: str) -> None:
        """Create the directory ``uri`` and its parents (nothing to do on S3)."""
        if not is_s3(uri):
            os.makedirs(_local(uri), exist_ok=True)

    def open_input(self, uri: str) -> IO[bytes]:
        """Open ``uri`` for random-access binary reading (seek, read, readline)."""
        if not is_s3(uri):
            return open(_local(uri), "rb")
        fs, path = self.resolve(uri)
        return io.BufferedReader(fs.open_input_file(path), 1 << 20)

    def open_output(self, uri: str) -> IO[bytes]:
        """Open ``uri`` for binary writing (creates parent directories of local paths)."""
        if not is_s3(uri):
            path = _local(uri)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            return open(path, "wb")
        fs, path = self.resolve(uri)
        return fs.open_output_stream(path)

    def read_bytes(self, uri: str) -> bytes:
        """Return the whole content of ``uri``."""
        with self.open_input(uri) as f:
            return f.read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write ``data`` to ``uri``; on local disk through a temporary file and a rename (atomic)."""
        if is_s3(uri):
            with self.open_output(uri) as f:
                f.write(data)
            return
        path = _local(uri)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def move(self, src: str, dst: str) -> None:
        """Move a file (S3: copy then delete)."""
        if not is_s3(src):
            os.replace(_local(src), _local(dst))
            return
        fs, s = self.resolve(src)
        _, d = self.resolve(dst)
        fs.copy_file(s, d)
        fs.delete_file(s)

    def delete(self, uri: str) -> None:
        """Delete a file, or a directory with everything under it; nothing if absent."""
        if not is_s3(uri):
            path = _local(uri)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.remove(path)
            return
        pafs, fs, path, info = self._info(uri)
        if info.type == pafs.FileType.File:
            fs.delete_file(path)
        else:  # a "directory", or nothing: an S3 prefix exists only through its keys
            fs.delete_dir_contents(path, missing_dir_ok=True)

    def check_storage(self, uri: str, key: str) -> None:
        """Check, before a job runs, that a location can hold its files: a supported scheme, reachable
        and writable (a probe file is written and deleted).

        ``s3a://``, ``s3n://`` and ``s3p://`` are accepted as S3; ``hdfs://`` and other schemes are
        refused by name (emrflow's processes write through pyarrow's local and S3 file systems only).

        Args:
            uri: a local path, ``file://`` or S3 URI.
            key: the configuration key the location came from (named in the message).

        Raises:
            ConfigError: an unsupported scheme, or the location cannot be written (the message says
                why, in one line).
        """
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
        if scheme and scheme != "file" and not is_s3(uri):
            hint = (" (HDFS is not supported: use s3://bucket/path on EMR, or a directory every host "
                    "shares)" if scheme in ("hdfs", "viewfs") else "")
            raise ConfigError(f"{key}={uri}: unsupported file system {scheme}://; expected a local path, "
                              f"file://, s3://, s3a://, s3n:// or s3p://{hint}", key=key)
        probe = join(uri, f"_emrflow-write-probe-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            self.write_bytes(probe, b"")
            self.delete(probe)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - pyarrow raises OSError (and others) with long texts
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            endpoint = self.endpoint()
            where = f" (S3 endpoint {endpoint})" if is_s3(uri) and endpoint else ""
            raise ConfigError(f"{key}={uri}: cannot write there{where}: {first[:300]}", key=key) from None
