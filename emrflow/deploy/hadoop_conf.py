"""Reading a Hadoop client's configuration (``$HADOOP_CONF_DIR/*-site.xml``) as Hadoop does.

Only what emrflow's YARN client needs: a site file's properties with Hadoop's
``${name}`` substitution, the default file system, the ResourceManager's web
address. Values of a site file override nothing here: emrflow reads the files the
cluster's own clients read (on EMR, ``/etc/hadoop/conf``).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from emrflow.errors import ClusterError

_VAR = re.compile(r"\$\{([^}$\s]+)\}")


def conf_dir(env: Mapping[str, str] | None = None) -> str | None:
    """The Hadoop configuration directory: ``$HADOOP_CONF_DIR``, else ``$YARN_CONF_DIR``, else ``None``."""
    env = os.environ if env is None else env
    return env.get("HADOOP_CONF_DIR") or env.get("YARN_CONF_DIR") or None


def read_site(name: str, directory: str | None = None) -> dict[str, str]:
    """Read ``<directory>/<name>`` (e.g. ``yarn-site.xml``) into ``{property: value}``.

    ``${other.property}`` references are substituted from the same file (and from the
    process environment for ``${env.NAME}``), up to 20 levels, as Hadoop's
    ``Configuration`` does. A missing file reads as empty: Hadoop's defaults apply.

    Args:
        name: the site file's name.
        directory: the configuration directory; ``None`` means :func:`conf_dir`.

    Returns:
        The properties, substituted.

    Raises:
        ClusterError: the file exists but is not valid XML (names the file).
    """
    directory = directory or conf_dir()
    if not directory:
        return {}
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        return {}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ClusterError(f"{path}: not a valid Hadoop configuration file: {exc}") from exc
    props: dict[str, str] = {}
    for prop in root.iter("property"):
        key, value = prop.findtext("name"), prop.findtext("value")
        if key:
            props[key.strip()] = (value or "").strip()

    def substitute(value: str, depth: int = 0) -> str:
        if depth > 20:
            return value

        def one(match: re.Match) -> str:
            ref = match.group(1)
            if ref.startswith("env."):
                return os.environ.get(ref[4:], match.group(0))
            return substitute(props[ref], depth + 1) if ref in props else match.group(0)
        return _VAR.sub(one, value)
    return {k: substitute(v) for k, v in props.items()}


def default_fs(directory: str | None = None) -> str:
    """``fs.defaultFS`` of ``core-site.xml`` (Hadoop's default ``file:///`` when unset)."""
    return read_site("core-site.xml", directory).get("fs.defaultFS") or "file:///"


def default_fs_is_local(directory: str | None = None) -> bool:
    """Whether YARN localizes files in place from the client's disk (``file:`` default file system).

    With HDFS (EMR) skein uploads every local file at submission; with ``file:///`` it
    does not, and a container started later (a TaskManager added by scaling, a second
    ApplicationMaster attempt) reads the client's file then, so it must still exist.
    """
    return default_fs(directory).startswith("file:")


def resource_manager_web_address(directory: str | None = None) -> str:
    """``host:port`` of the ResourceManager's web UI and REST API (``yarn.resourcemanager.webapp.address``)."""
    site = read_site("yarn-site.xml", directory)
    address = site.get("yarn.resourcemanager.webapp.address")
    if address and "${" not in address:
        return address
    return f"{site.get('yarn.resourcemanager.hostname') or '0.0.0.0'}:8088"
