"""Packaged files (emrflow.resources), templates by name, and the wheel emrflow stages itself as.

No processes, no network: the installed distribution is a directory laid out as pip lays a
wheel out, written here under tmp_path.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import os
import pathlib
import zipfile

import pytest

from emrflow import resources
from emrflow.deploy import emr
from emrflow.deploy.wheel import check_wheel_name, wheel_digest, wheel_from_installed
from emrflow.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --------------------------------------------------------------------------- packaged files

def test_pyproject_lists_every_package_and_maps_the_top_level_directories():
    tomllib = pytest.importorskip("tomllib")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        st = tomllib.load(f)["tool"]["setuptools"]
    on_disk = {os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(ROOT, "emrflow"))
               if "__init__.py" in files}
    listed = set(st["packages"])
    assert on_disk == {p for p in listed if not p.startswith("emrflow._data.")}
    assert st["package-dir"] == {f"emrflow._data.{k}": k for k in resources.KINDS}
    assert {p for p in listed if p.startswith("emrflow._data.")} == set(st["package-dir"])


@pytest.mark.parametrize("kind", resources.KINDS)
def test_checkout_resources_are_the_top_level_directories(kind):
    assert os.path.samefile(resources.resource_dir(kind), os.path.join(ROOT, kind))


def test_resource_file_and_its_errors():
    assert os.path.samefile(resources.resource_file("bootstrap", "install-emrflow.sh"),
                            os.path.join(ROOT, "bootstrap", "install-emrflow.sh"))
    with pytest.raises(FileNotFoundError, match=r"bootstrap/nope\.sh is missing: .*nope\.sh does not exist"):
        resources.resource_file("bootstrap", "nope.sh")
    with pytest.raises(ValueError, match="expected one of bootstrap, configs, steps, examples"):
        resources.find_dir("bin")


def test_templates_by_name():
    expected = sorted(f[:-5] for f in os.listdir(os.path.join(ROOT, "configs"))
                      if f.startswith("emr-") and f.endswith(".yaml"))
    assert list(resources.cluster_templates()) == expected == ["emr-batch", "emr-streaming"]
    batch = os.path.join(ROOT, "configs", "emr-batch.yaml")
    for name in ("emr-batch", "emr-batch.yaml", "batch"):
        assert os.path.samefile(resources.cluster_template(name), batch)
    assert resources.cluster_template("emrflow-conf") is None and resources.cluster_template("nope") is None


def test_cluster_spec_by_name_path_or_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert os.path.samefile(emr.resolve_cluster_spec("emr-streaming"),
                            os.path.join(ROOT, "configs", "emr-streaming.yaml"))
    assert emr.load_cluster_spec("emr-batch").get("name") == "emrflow-batch"
    (tmp_path / "emr-batch").write_text("name: mine\n")              # an existing file wins
    assert emr.resolve_cluster_spec("emr-batch") == "emr-batch"
    with pytest.raises(ConfigError) as info:
        emr.resolve_cluster_spec("configs/emr-nope.yaml")
    assert str(info.value) == ("--config: cluster spec not found: configs/emr-nope.yaml (no such file); "
                               "packaged templates: emr-batch, emr-streaming, e.g. --config emr-batch")
    with pytest.raises(ConfigError, match="no such file, and no packaged template of that name"):
        emr.resolve_cluster_spec("emr-nope")


# --------------------------------------------------------------------------- staging keys

def test_wheel_names():
    assert check_wheel_name("s3://b/x/emrflow-0.1.0-py3-none-any.whl")
    assert check_wheel_name("/tmp/emrflow-0.1.0-1-py3-none-any.whl")
    for bad in ("emrflow.whl", "emrflow-0.1.0.whl", "emrflow-0.1.0-py3-none-any.zip"):
        with pytest.raises(ConfigError, match="NAME-VERSION-PYTHON-ABI-PLATFORM.whl"):
            check_wheel_name(bad)


def test_wheel_key_is_content_addressed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d, content in ((a, b"one build"), (b, b"another build")):
        d.mkdir()
        (d / "emrflow-0.1.0-py3-none-any.whl").write_bytes(content)
    staging = emr.Staging("s3://bkt/stage/")
    uri = staging.add_wheel(str(a / "emrflow-0.1.0-py3-none-any.whl"))
    digest = hashlib.sha256(b"one build").hexdigest()[:16]
    assert uri == staging.wheel_uri == f"s3://bkt/stage/wheels/{digest}/emrflow-0.1.0-py3-none-any.whl"
    assert wheel_digest(str(a / "emrflow-0.1.0-py3-none-any.whl")) == digest
    other = emr.Staging("s3://bkt/stage").add_wheel(str(b / "emrflow-0.1.0-py3-none-any.whl"))
    assert other != uri and other.endswith("/emrflow-0.1.0-py3-none-any.whl")
    assert staging.uploads == [(str(a / "emrflow-0.1.0-py3-none-any.whl"), uri)]


def test_missing_files_are_refused_when_planned_and_before_uploading(tmp_path):
    staging = emr.Staging("s3://bkt/stage")
    with pytest.raises(ConfigError, match=r"bootstrap script not found: .*gone\.sh \(nothing was uploaded\)"):
        staging.add(str(tmp_path / "gone.sh"), "bootstrap", "gone.sh", what="bootstrap script")
    with pytest.raises(ConfigError, match="wheel not found"):
        staging.add_wheel(str(tmp_path / "emrflow-0.1.0-py3-none-any.whl"))
    f = tmp_path / "job.py"
    f.write_text("pass\n")
    staging.add_job(str(f))
    staging.check()
    f.unlink()
    with pytest.raises(ConfigError, match=r"files? to stage not found: .*job\.py \(nothing was uploaded\)"):
        staging.check()


def test_packaged_bootstrap_scripts_are_planned(tmp_path):
    spec = emr.load_cluster_spec("emr-batch")
    staging = emr.Staging("s3://bkt/stage", wheel_uri="s3://bkt/w/emrflow-0.1.0-py3-none-any.whl")
    emr.build_run_job_flow_request(spec, staging)
    assert [(os.path.basename(local), uri) for local, uri in staging.uploads] == [
        ("install-emrflow.sh", "s3://bkt/stage/bootstrap/install-emrflow.sh"),
        ("write-emrflow-conf.sh", "s3://bkt/stage/bootstrap/write-emrflow-conf.sh")]
    empty = tmp_path / "bootstrap"
    empty.mkdir()
    with pytest.raises(ConfigError, match="bootstrap script not found: .*install-emrflow.sh"):
        emr.build_run_job_flow_request(spec, emr.Staging("s3://bkt/s", wheel_uri="x"), bootstrap_dir=str(empty))


# --------------------------------------------------------------------------- a wheel from an install

def _record_line(rel: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{rel},sha256={digest},{len(data)}"


def _installed(site: pathlib.Path) -> importlib.metadata.Distribution:
    """A site-packages directory holding 'demo 1.2' as pip installs a wheel, with what pip adds."""
    files = {
        "demo/__init__.py": b"VERSION = '1.2'\n",
        "demo/_data/bootstrap/run.sh": b"#!/bin/sh\necho hi\n",
        "demo/__pycache__/__init__.cpython-311.pyc": b"bytecode",
        "demo-1.2.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.2\n",
        "demo-1.2.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: x\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "demo-1.2.dist-info/entry_points.txt": b"[console_scripts]\ndemo = demo:main\n",
        "demo-1.2.dist-info/INSTALLER": b"pip\n",
        "demo-1.2.dist-info/REQUESTED": b"",
        "demo-1.2.dist-info/direct_url.json": b'{"url": "file:///x.whl"}',
    }
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    (site / "demo/_data/bootstrap/run.sh").chmod(0o755)
    record = [_record_line(rel, data) for rel, data in files.items()]
    record += ["../../../bin/demo,sha256=abc,12", "demo-1.2.dist-info/RECORD,,"]
    (site / "demo-1.2.dist-info/RECORD").write_text("\n".join(record) + "\n")
    return importlib.metadata.PathDistribution(site / "demo-1.2.dist-info")


def test_wheel_from_installed_is_a_valid_reproducible_wheel(tmp_path):
    dist = _installed(tmp_path / "site")
    path = wheel_from_installed(dist, str(tmp_path / "out1"))
    assert os.path.basename(path) == "demo-1.2-py3-none-any.whl"
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert names == ["demo/__init__.py", "demo/_data/bootstrap/run.sh", "demo-1.2.dist-info/METADATA",
                         "demo-1.2.dist-info/WHEEL", "demo-1.2.dist-info/entry_points.txt",
                         "demo-1.2.dist-info/RECORD"]                 # no byte code, installer files, scripts
        rows = list(csv.reader(io.StringIO(zf.read("demo-1.2.dist-info/RECORD").decode())))
        assert [r[0] for r in rows] == names and rows[-1] == ["demo-1.2.dist-info/RECORD", "", ""]
        for rel, digest, size in rows[:-1]:                       # every hash and size is right
            assert _record_line(rel, zf.read(rel)) == f"{rel},{digest},{size}"
        assert zf.read("demo/_data/bootstrap/run.sh") == b"#!/bin/sh\necho hi\n"
        assert (zf.getinfo("demo/_data/bootstrap/run.sh").external_attr >> 16) & 0o777 == 0o755
    again = wheel_from_installed(dist, str(tmp_path / "out2"))
    with open(path, "rb") as a, open(again, "rb") as b:
        assert a.read() == b.read()                               # same install, same bytes, same key


def test_wheel_from_installed_refuses_a_damaged_install(tmp_path):
    dist = _installed(tmp_path / "site")
    os.remove(tmp_path / "site" / "demo" / "_data" / "bootstrap" / "run.sh")
    with pytest.raises(ConfigError, match=r"the installed emrflow is incomplete: .*run\.sh: No such file"):
        wheel_from_installed(dist, str(tmp_path / "out"))
    wheel_file = tmp_path / "site" / "demo-1.2.dist-info" / "WHEEL"
    wheel_file.write_text(wheel_file.read_text().replace("Root-Is-Purelib: true", "Root-Is-Purelib: false"))
    with pytest.raises(ConfigError, match="not a pure-Python install"):
        wheel_from_installed(dist, str(tmp_path / "out"))
