"""skein_security: skein's client credentials on a machine that has none, without skein's warning.

Runs in subprocesses with ``SKEIN_CONFIG`` pointing at a temporary directory (skein reads it
at import) and warnings turned into errors, as the CLI would meet them on a fresh EMR node.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("skein")

_SCRIPT = """
import skein
from emrflow.deploy.yarn import skein_security
assert isinstance(skein_security(), skein.Security)
"""


def _run(config_dir) -> subprocess.CompletedProcess:
    env = dict(os.environ, SKEIN_CONFIG=str(config_dir))
    return subprocess.run([sys.executable, "-W", "error", "-c", _SCRIPT], env=env,
                          capture_output=True, text=True, timeout=60)


def _files(config_dir) -> dict[str, bytes]:
    return {name: (config_dir / name).read_bytes() for name in sorted(os.listdir(config_dir))}


def test_new_credentials_are_written_once_then_loaded_without_a_warning(tmp_path):
    config_dir = tmp_path / "skein"
    first = _run(config_dir)
    assert first.returncode == 0, first.stderr  # -W error: skein's UserWarning would fail it
    written = _files(config_dir)
    assert {"skein.crt", "skein.pem"} <= set(written)
    assert written["skein.crt"].startswith(b"-----BEGIN CERTIFICATE-----")
    second = _run(config_dir)
    assert second.returncode == 0, second.stderr
    assert _files(config_dir) == written  # loaded, not minted again


def test_existing_credentials_are_used_and_left_alone(tmp_path):
    import skein
    config_dir = tmp_path / "skein"
    skein.Security.new_credentials().to_directory(str(config_dir))
    before = _files(config_dir)
    out = _run(config_dir)
    assert out.returncode == 0, out.stderr
    assert _files(config_dir) == before
