"""Where the files emrflow ships beside its code are: bootstrap scripts, templates, examples.

The repository keeps them at its top, ``bootstrap/``, ``configs/``, ``steps/`` and
``examples/``, their one copy; the wheel carries them as package data under
``emrflow/_data/<kind>/`` (``pyproject.toml`` maps the directories into the package). This
module finds them in the installed package (:mod:`importlib.resources`), else, when emrflow
runs from a source checkout (an editable install), in the checkout.

``emrflow resources [KIND]`` prints these directories.
"""

from __future__ import annotations

import os
from importlib import resources as _resources

from emrflow.errors import ResourceNotFoundError

__all__ = ["KINDS", "REPO_ROOT", "find_dir", "resource_dir", "resource_file", "cluster_templates",
           "cluster_template"]

#: the kinds of packaged files, each a directory at the repository's top
KINDS = ("bootstrap", "configs", "steps", "examples")
#: the source checkout emrflow runs from, if it does (the directory holding ``pyproject.toml``)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: cluster spec templates in ``configs/`` are named ``emr-<name>.yaml``
TEMPLATE_PREFIX = "emr-"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")


def find_dir(kind: str) -> str | None:
    """Return the directory of the packaged files of ``kind``, or ``None`` when there is none.

    Args:
        kind: ``bootstrap``, ``configs``, ``steps`` or ``examples``.

    Returns:
        ``<site-packages>/emrflow/_data/<kind>`` in an installed package, else
        ``<checkout>/<kind>`` when emrflow runs from a source checkout, else ``None``.

    Raises:
        ValueError: an unknown ``kind``.
    """
    _check_kind(kind)
    packaged = _resources.files("emrflow") / "_data" / kind
    if packaged.is_dir():
        return os.fspath(packaged)              # type: ignore[call-overload]  # a pathlib.Path
    checkout = os.path.join(REPO_ROOT, kind)
    if os.path.isfile(os.path.join(REPO_ROOT, "pyproject.toml")) and os.path.isdir(checkout):
        return checkout
    return None


def resource_dir(kind: str) -> str:
    """Return the directory of the packaged files of ``kind`` (see :func:`find_dir`).

    Args:
        kind: ``bootstrap``, ``configs``, ``steps`` or ``examples``.

    Returns:
        The directory's path.

    Raises:
        ResourceNotFoundError: neither the installed package nor a checkout has it.
    """
    found = find_dir(kind)
    if found is None:
        where = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_data", kind)
        raise ResourceNotFoundError(f"emrflow's {kind}/ files are missing from this install "
                                    f"(looked in {where}); reinstall emrflow", where)
    return found


def resource_file(kind: str, name: str) -> str:
    """Return the path of the packaged file ``<kind>/<name>``.

    Args:
        kind: ``bootstrap``, ``configs``, ``steps`` or ``examples``.
        name: the file's name inside it (``install-emrflow.sh``).

    Returns:
        The file's path.

    Raises:
        ResourceNotFoundError: the file is not there (a broken install), naming where it
            was looked for.
    """
    path = os.path.join(resource_dir(kind), name)
    if not os.path.isfile(path):
        raise ResourceNotFoundError(f"emrflow's {kind}/{name} is missing: {path} does not exist; "
                                    "reinstall emrflow", path)
    return path


def cluster_templates() -> dict[str, str]:
    """Return the packaged EMR cluster spec templates (``configs/emr-*.yaml``).

    Returns:
        Template name (the file name without ``.yaml``, e.g. ``emr-batch``) to its path,
        sorted by name; empty when there are no packaged files.
    """
    found = find_dir("configs")
    if found is None:
        return {}
    return {f[:-len(".yaml")]: os.path.join(found, f) for f in sorted(os.listdir(found))
            if f.startswith(TEMPLATE_PREFIX) and f.endswith(".yaml")}


def cluster_template(name: str) -> str | None:
    """Return the path of the packaged cluster spec template ``name``, or ``None``.

    Args:
        name: ``emr-batch``, ``emr-batch.yaml`` or ``batch`` (the ``emr-`` prefix may be left out).

    Returns:
        The template's path, or ``None`` when no template has that name.
    """
    templates = cluster_templates()
    base = name[:-len(".yaml")] if name.endswith(".yaml") else name
    return templates.get(base) or templates.get(TEMPLATE_PREFIX + base)
