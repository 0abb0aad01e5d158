"""emrflow stages itself: the wheel an EMR cluster installs, made from what runs here.

As mrjob stages its own installed package, :func:`self_wheel` gives the wheel of the
emrflow that is running:

* installed from a wheel or an index (not editable): the installed distribution repacked
  as a wheel from the files its ``RECORD`` lists (:func:`wheel_from_installed`): byte for
  byte the same for the same install, so its content-addressed S3 key is stable;
* running from a source checkout (an editable install): ``pip wheel --no-deps`` of a copy
  of the checkout (:func:`build_wheel`; the copy keeps ``build/`` out of the working tree).

:func:`wheel_digest` and :data:`WHEEL_NAME_RE` serve the content-addressed S3 keys,
``<staging>/wheels/<first 16 hex digits of the wheel's SHA-256>/<wheel file name>``.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

from emrflow.errors import ConfigError
from emrflow.resources import REPO_ROOT

__all__ = ["WHEEL_NAME_RE", "check_wheel_name", "wheel_digest", "installed_distribution",
           "wheel_from_installed", "build_wheel", "self_wheel"]

#: a wheel file name (PEP 427): name-version[-build]-python-abi-platform.whl
WHEEL_NAME_RE = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)"
                           r"(-(?P<build>\d[A-Za-z0-9_.]*))?-(?P<python>[A-Za-z0-9_.]+)"
                           r"-(?P<abi>[A-Za-z0-9_.]+)-(?P<platform>[A-Za-z0-9_.]+)\.whl$")
#: hex digits of the SHA-256 in a wheel's S3 key
DIGEST_HEX_DIGITS = 16
#: zip entry time of a repacked wheel (the earliest a zip can hold), so equal content gives equal bytes
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
#: SOURCE_DATE_EPOCH for pip wheel: 1980-01-01, the same fixed time
_SOURCE_DATE_EPOCH = "315532800"
#: dist-info files an installer writes, not part of the wheel
_INSTALLER_FILES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}
#: what a copy of the checkout leaves out before pip wheel builds from it: at its top ...
_NOT_SOURCE_TOP = {".git", ".venv", "venv", "build", "dist", ".pytest_cache", "out", "tmp", ".ci", "bench",
                   "tests", "docs"}
#: ... and anywhere
_NOT_SOURCE_ANYWHERE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def check_wheel_name(path: str, where: str = "--wheel") -> str:
    """Check that ``path`` names a wheel file pip can install (``emrflow-X.Y.Z-py3-none-any.whl``).

    Args:
        path: the wheel's path or URI.
        where: where it came from, for the message.

    Returns:
        ``path``.

    Raises:
        ConfigError: the file name is not ``NAME-VERSION-PYTHON-ABI-PLATFORM.whl``.
    """
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not WHEEL_NAME_RE.match(name):
        raise ConfigError(f"{where}: expected a wheel file named NAME-VERSION-PYTHON-ABI-PLATFORM.whl "
                          f"(such as emrflow-0.1.0-py3-none-any.whl), got {name!r}", source=where)
    return path


def wheel_digest(path: str) -> str:
    """Return the first :data:`DIGEST_HEX_DIGITS` hex digits of the SHA-256 of a file.

    Args:
        path: the file.

    Returns:
        Lower-case hex digits: the content-addressed part of the wheel's S3 key.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:DIGEST_HEX_DIGITS]


def installed_distribution() -> importlib.metadata.Distribution | None:
    """Return the installed, non-editable distribution the running emrflow package comes from.

    Returns:
        The distribution (a ``.dist-info`` with a ``RECORD``, as installers write it) whose
        ``RECORD`` lists the running ``emrflow/__init__.py``, or ``None`` (an editable install,
        or emrflow imported from a checkout on ``sys.path``).
    """
    import emrflow
    running = os.path.realpath(emrflow.__file__)
    for dist in importlib.metadata.distributions(name="emrflow"):
        if dist.read_text("RECORD") is None:        # an .egg-info (a checkout's), not an install
            continue
        for f in dist.files or ():
            if f.name == "__init__.py" and f.parent.as_posix() == "emrflow" \
                    and os.path.realpath(str(dist.locate_file(f))) == running:
                return dist
    return None


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel_tag(wheel_text: str) -> str:
    """``python-abi-platform`` of a WHEEL file (several ``Tag:`` lines compressed with dots)."""
    tags = [line.split(":", 1)[1].strip() for line in wheel_text.splitlines() if line.startswith("Tag:")]
    if not tags:
        raise ConfigError("the installed emrflow's WHEEL file has no Tag line; pass --wheel PATH")
    parts = list(zip(*(t.split("-") for t in tags)))
    return "-".join(".".join(dict.fromkeys(p)) for p in parts)


def wheel_from_installed(dist: importlib.metadata.Distribution, out_dir: str) -> str:
    """Repack an installed distribution as a wheel (what pip installed, back into a wheel).

    Takes every file its ``RECORD`` lists inside the install directory, but not byte code
    (``__pycache__``), files outside it (console scripts, which pip writes again from
    ``entry_points.txt``) and the installer's own (``INSTALLER``, ``REQUESTED``,
    ``direct_url.json``); writes a fresh ``RECORD`` of SHA-256 hashes and sizes. Entries are
    sorted, the ``.dist-info`` directory last, and dated 1980-01-01, so the same install
    always gives the same bytes.

    Args:
        dist: the distribution (:func:`installed_distribution`); must be pure Python
            (``Root-Is-Purelib: true``).
        out_dir: directory the wheel is written to.

    Returns:
        The wheel's path, ``out_dir/<name>-<version>-<tag>.whl`` with the tag of its WHEEL file.

    Raises:
        ConfigError: the distribution is not pure Python, has no ``RECORD`` or a file it
            lists is missing (a damaged install: reinstall emrflow or pass ``--wheel``).
    """
    wheel_text = dist.read_text("WHEEL") or ""
    if "root-is-purelib: true" not in wheel_text.lower():
        raise ConfigError("the installed emrflow is not a pure-Python install (Root-Is-Purelib); "
                          "pass a built wheel with --wheel PATH")
    if not dist.files:
        raise ConfigError("the installed emrflow has no RECORD, so its files are unknown; "
                          "pass a built wheel with --wheel PATH")
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    version = dist.version
    info_dir = f"{name}-{version}.dist-info"
    entries: dict[str, tuple[bytes, int]] = {}
    for f in dist.files:
        rel = f.as_posix()
        parts = rel.split("/")
        if rel.startswith("/") or ".." in parts or "__pycache__" in parts or rel.endswith(".pyc"):
            continue
        if parts[0].endswith(".dist-info"):
            if len(parts) == 2 and parts[1] in _INSTALLER_FILES:
                continue
            parts[0] = info_dir
        path = str(dist.locate_file(f))
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            mode = 0o755 if os.stat(path).st_mode & 0o111 else 0o644
        except OSError as exc:
            raise ConfigError(f"the installed emrflow is incomplete: {path}: {exc.strerror}; "
                              "reinstall emrflow or pass a built wheel with --wheel PATH") from None
        entries["/".join(parts)] = (data, mode)
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    ordered = sorted(entries, key=lambda p: (p.startswith(info_dir + "/"), p))
    for p in ordered:
        writer.writerow([p, _record_hash(entries[p][0]), len(entries[p][0])])
    writer.writerow([f"{info_dir}/RECORD", "", ""])
    entries[f"{info_dir}/RECORD"] = (record.getvalue().encode(), 0o644)
    ordered.append(f"{info_dir}/RECORD")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"{name}-{version}-{_wheel_tag(wheel_text)}.whl")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in ordered:
            data, mode = entries[p]
            info = zipfile.ZipInfo(p, _ZIP_EPOCH)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return out


def build_wheel(out_dir: str, project_dir: str = REPO_ROOT) -> str:
    """Build the emrflow wheel of a source tree with ``pip wheel --no-deps``.

    The tree is copied to a temporary directory first (without ``.git``, virtual
    environments, ``build/``, tests, docs), so the build writes nothing into it and no stale
    ``build/`` output gets into the wheel; ``SOURCE_DATE_EPOCH`` fixes the zip entries' times.

    Args:
        out_dir: directory the wheel is written to.
        project_dir: the emrflow source tree (holding ``pyproject.toml``).

    Returns:
        The wheel's path.

    Raises:
        ConfigError: no source tree there (pass a prebuilt wheel instead) or pip failed.
    """
    if not os.path.isfile(os.path.join(project_dir, "pyproject.toml")):
        raise ConfigError(f"cannot build the emrflow wheel: no pyproject.toml in {project_dir}; "
                          "pass a built wheel with --wheel PATH or s3://...", source="--wheel")
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="emrflow-src-") as tmp:
        src = os.path.join(tmp, "emrflow")
        top = os.path.abspath(project_dir)

        def ignore(directory: str, names: list[str]) -> set[str]:
            skip = set(_NOT_SOURCE_ANYWHERE(directory, names))
            return skip | (_NOT_SOURCE_TOP & set(names) if os.path.abspath(directory) == top else set())
        shutil.copytree(project_dir, src, ignore=ignore)
        env = dict(os.environ, SOURCE_DATE_EPOCH=_SOURCE_DATE_EPOCH)
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out_dir, src],
                              capture_output=True, text=True, timeout=600, env=env, cwd=tmp)
    wheels = sorted(f for f in os.listdir(out_dir) if f.startswith("emrflow-") and f.endswith(".whl"))
    if proc.returncode != 0 or not wheels:
        raise ConfigError("building the emrflow wheel failed (pip wheel --no-deps, exit "
                          f"{proc.returncode}):\n{proc.stderr[-2000:]}", source="--wheel")
    return os.path.join(out_dir, wheels[-1])


def self_wheel(out_dir: str) -> str:
    """Return a wheel of the running emrflow (see the module's description).

    Args:
        out_dir: directory the wheel is written to.

    Returns:
        The wheel's path.

    Raises:
        ConfigError: emrflow runs neither from an installed distribution nor from a source
            checkout, or the build failed; the message suggests ``--wheel``.
    """
    dist = installed_distribution()
    if dist is not None:
        return wheel_from_installed(dist, out_dir)
    if os.path.isfile(os.path.join(REPO_ROOT, "pyproject.toml")):
        return build_wheel(out_dir, REPO_ROOT)
    raise ConfigError("cannot stage emrflow: it runs neither from an installed distribution nor from "
                      f"a source checkout ({REPO_ROOT}); pass a built wheel with --wheel PATH or "
                      "s3://..., or --wheel index to install it from the package index",
                      source="--wheel")
