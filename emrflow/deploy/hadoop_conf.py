"""Reading a Hadoop client's configuration (``$HADOOP_CONF_DIR/*-site.xml``) as Hadoop does.

Only what emrflow's YARN client needs: site files layered as Hadoop layers them
(``final`` properties), Hadoop's ``${name}``/``${env.NAME}`` substitution, the
default file system. :mod:`emrflow.deploy.yarn_logs` builds the ResourceManager's
addresses on it. Values of a site file override nothing here: emrflow reads the files the
cluster's own clients read (on EMR, ``/etc/hadoop/conf``).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from emrflow.errors import ConfigError

_MAX_SUBST = 20  # Hadoop's Configuration.MAX_SUBST
_VAR = re.compile(r"\$\{([^}$ ]+)\}")


def conf_dir(env: Mapping[str, str] | None = None) -> str | None:
    """The Hadoop configuration directory: ``$HADOOP_CONF_DIR``, else ``$YARN_CONF_DIR``, else ``None``."""
    env = os.environ if env is None else env
    return env.get("HADOOP_CONF_DIR") or env.get("YARN_CONF_DIR") or None


def parse_site(path: str, props: dict[str, str], final: set[str]) -> None:
    """Read one Hadoop site file into ``props``, raw (not substituted), as Hadoop layers them.

    A property already in ``final`` is not overridden; one marked ``<final>true</final>``
    joins it.

    Raises:
        ConfigError: the file is unreadable or not valid XML (naming file:line:column).
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        raise ConfigError(f"{path}:{line}:{col}: not valid XML ({exc}); "
                          "expected Hadoop's <configuration><property><name>…</name><value>…</value>"
                          "</property></configuration>", source=f"{path}:{line}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", source=path) from exc
    if root.tag != "configuration":
        raise ConfigError(f"{path}: the root element is <{root.tag}>; expected <configuration>", source=path)
    for prop in root.iter("property"):
        name = (prop.findtext("name") or "").strip()
        if not name or name in final:
            continue
        value = prop.findtext("value")
        if value is None:
            continue
        props[name] = value.strip()
        if (prop.findtext("final") or "").strip().lower() == "true":
            final.add(name)


def _env_var(expr: str) -> str | None:
    # ${env.NAME}, ${env.NAME:-default} (unset or empty), ${env.NAME-default} (unset)
    name = expr[len("env."):]
    for sep in (":-", "-"):
        if sep in name:
            name, default = name.split(sep, 1)
            value = os.environ.get(name)
            if value is None or (sep == ":-" and value == ""):
                return default
            return value
    return os.environ.get(name)


def conf_get(props: dict[str, str], key: str) -> str | None:
    """A property's value with ``${...}`` substituted as Hadoop's ``Configuration`` does.

    ``${name}`` takes another property's value, ``${env.NAME}`` an environment variable
    (``${env.NAME:-default}``, ``${env.NAME-default}`` give defaults). A variable that
    cannot be resolved stays as written, as in Hadoop.

    Args:
        props: raw properties (:func:`parse_site`; :func:`emrflow.deploy.yarn_logs.read_yarn_site`).
        key: the property name.

    Returns:
        The value, or ``None`` when the property is not set.

    Raises:
        ConfigError: substitutions nest deeper than Hadoop's 20 levels (a cycle).
    """
    value = props.get(key)
    if value is None:
        return None
    for _ in range(_MAX_SUBST):
        match = _VAR.search(value)
        if match is None:
            return value
        var = match.group(1)
        replacement = _env_var(var) if var.startswith("env.") else props.get(var)
        if replacement is None or "${" + var + "}" in replacement:
            return value  # unresolvable or self-referencing: left as is
        value = value[:match.start()] + replacement + value[match.end():]
    raise ConfigError(f"{props.get('__source__', 'yarn-site.xml')}: {key}: variable substitution depth "
                      f"too large ({_MAX_SUBST}), probably a cycle: {props.get(key)!r}", key=key)


def read_site(name: str, directory: str | None = None) -> dict[str, str]:
    """Read ``<directory>/<name>`` (e.g. ``core-site.xml``) into ``{property: value}``, substituted.

    A missing file reads as empty: Hadoop's defaults apply.

    Args:
        name: the site file's name.
        directory: the configuration directory; ``None`` means :func:`conf_dir`.

    Raises:
        ConfigError: the file exists but is not valid XML (names file:line:column).
    """
    directory = directory or conf_dir()
    if not directory:
        return {}
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        return {}
    props: dict[str, str] = {"__source__": path}
    parse_site(path, props, set())
    return {k: conf_get(props, k) or "" for k in props if k != "__source__"}


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
