"""File systems behind checkpoints, savepoints, file sources and file sinks.

A location is a local path (or ``file://`` URI) or an ``s3://bucket/key`` URI.
S3 goes through pyarrow's :class:`pyarrow.fs.S3FileSystem`, which takes the
standard AWS credential chain (environment, profile, instance role); the
endpoint comes from the ``s3.endpoint`` option (Flink's name), else
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (as the AWS CLI and boto3 read
them), so tests and S3-compatible stores work unchanged.
This mirrors Flink's ``FileSystem`` abstraction with its ``s3://`` scheme.

S3 has no rename: :func:`move` copies and deletes, so a commit that moves a
file is atomic per object (readers never see half an object), not per directory.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
from typing import IO

from emrflow.errors import ConfigError

# pyarrow is imported only for s3:// locations: it costs about 40 MB of memory per process


def is_s3(uri: str) -> bool:
    """True if ``uri`` is an ``s3://``, ``s3a://`` or ``s3n://`` URI."""
    return uri.startswith(("s3://", "s3a://", "s3n://"))


def _split_s3(uri: str) -> str:
    rest = uri.split("://", 1)[1]
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise ConfigError(f"bad S3 URI {uri!r}: expected s3://bucket/key")
    return rest.rstrip("/")


@functools.lru_cache(maxsize=8)
def _s3(endpoint: str | None, region: str | None):
    import pyarrow.fs as pafs
    kwargs: dict = {"region": region or "us-east-1"}
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    return pafs.S3FileSystem(**kwargs)


_OPTIONS: dict[str, str | None] = {"endpoint": None}


def configure(config) -> None:
    """Take ``s3.endpoint`` from a job's configuration (a mapping); it wins over the environment."""
    endpoint = config.get("s3.endpoint") if config is not None else None
    if endpoint:
        _OPTIONS["endpoint"] = str(endpoint)


def s3_filesystem():
    """Return the S3 file system: endpoint from ``s3.endpoint``, ``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL``; region from ``AWS_REGION``/``AWS_DEFAULT_REGION``; credentials from
    the standard AWS chain."""
    endpoint = (_OPTIONS["endpoint"] or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"))
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return _s3(endpoint, region)


def _local(uri: str) -> str:
    if uri.startswith("file://"):
        return uri[len("file://"):]
    if "://" in uri:
        raise ConfigError(f"unsupported file system in {uri!r}: expected a local path, file:// or s3://")
    return os.path.abspath(uri)


def resolve(uri: str):
    """Return ``(pyarrow filesystem, path)`` for an ``s3://`` URI, or ``(None, path)`` for a local one.

    Raises:
        ConfigError: an unsupported scheme (the message names it) or a bucket-less S3 URI.
    """
    if is_s3(uri):
        return s3_filesystem(), _split_s3(uri)
    return None, _local(uri)


def join(base: str, *parts: str) -> str:
    """Join path parts with ``/`` (URIs) or the OS separator (local paths)."""
    if "://" in base:
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return os.path.join(base, *parts)


def _info(uri: str):
    """``(pyarrow.fs module, filesystem, path, FileInfo)`` of an ``s3://`` URI."""
    import pyarrow.fs as pafs
    fs, path = resolve(uri)
    return pafs, fs, path, fs.get_file_info(path)


def exists(uri: str) -> bool:
    """True if a file or directory is at ``uri``."""
    if not is_s3(uri):
        return os.path.exists(_local(uri))
    pafs, _, _, info = _info(uri)
    return info.type != pafs.FileType.NotFound


def is_file(uri: str) -> bool:
    """True if a file (S3: an object) is at ``uri``."""
    if not is_s3(uri):
        return os.path.isfile(_local(uri))
    pafs, _, _, info = _info(uri)
    return info.type == pafs.FileType.File


def size(uri: str) -> int:
    """Size of the file at ``uri`` in bytes.

    Raises:
        FileNotFoundError: nothing is there.
    """
    if not is_s3(uri):
        return os.path.getsize(_local(uri))
    pafs, _, _, info = _info(uri)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(uri)
    return int(info.size)


def makedirs(uri: str) -> None:
    """Create the directory ``uri`` and its parents (nothing to do on S3)."""
    if not is_s3(uri):
        os.makedirs(_local(uri), exist_ok=True)


def _entries(uri: str) -> tuple:
    import pyarrow.fs as pafs
    fs, path = resolve(uri)
    return pafs, fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))


def listdir(uri: str) -> list[str]:
    """Names (not paths) of the entries directly under ``uri``, sorted; empty if it does not exist."""
    if not is_s3(uri):
        path = _local(uri)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    _, infos = _entries(uri)
    return sorted(i.base_name for i in infos)


def list_files(uri: str) -> list[str]:
    """URIs of the regular files directly under ``uri``, sorted by name."""
    if not is_s3(uri):
        return [join(uri, n) for n in listdir(uri) if os.path.isfile(os.path.join(_local(uri), n))]
    pafs, infos = _entries(uri)
    return [join(uri, i.base_name) for i in sorted(infos, key=lambda i: i.base_name)
            if i.type == pafs.FileType.File]


def open_input(uri: str) -> IO[bytes]:
    """Open ``uri`` for random-access binary reading (seek, read, readline)."""
    if not is_s3(uri):
        return open(_local(uri), "rb")
    fs, path = resolve(uri)
    return io.BufferedReader(fs.open_input_file(path), 1 << 20)


def open_output(uri: str) -> IO[bytes]:
    """Open ``uri`` for binary writing (creates parent directories of local paths)."""
    if not is_s3(uri):
        path = _local(uri)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        return open(path, "wb")
    fs, path = resolve(uri)
    return fs.open_output_stream(path)


def read_bytes(uri: str) -> bytes:
    """Return the whole content of ``uri``."""
    with open_input(uri) as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri``; on local disk through a temporary file and a rename (atomic)."""
    if is_s3(uri):
        with open_output(uri) as f:
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


def move(src: str, dst: str) -> None:
    """Move a file (S3: copy then delete)."""
    if not is_s3(src):
        os.replace(_local(src), _local(dst))
        return
    fs, s = resolve(src)
    _, d = resolve(dst)
    fs.copy_file(s, d)
    fs.delete_file(s)


def delete(uri: str) -> None:
    """Delete a file, or a directory with everything under it; nothing if absent."""
    if not is_s3(uri):
        path = _local(uri)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
        return
    pafs, fs, path, info = _info(uri)
    if info.type == pafs.FileType.File:
        fs.delete_file(path)
    else:  # a "directory", or nothing: an S3 prefix exists only through its keys
        fs.delete_dir_contents(path, missing_dir_ok=True)
