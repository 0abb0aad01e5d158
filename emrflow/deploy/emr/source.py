"""Where a cluster spec's values were set, and the checks that say so.

:func:`load_yaml_with_marks` reads a YAML file with the line of every value (:class:`SourceMap`);
an :class:`Origin` is one spec object's place in it (its key path, and the command-line options
that overrode parts of the spec), and its checks raise :class:`~emrflow.errors.ConfigError`
naming the key path, ``file:line`` (or the option), what was expected and what was found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, NoReturn

import yaml

from emrflow.errors import ConfigError

S3_URI_RE = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/.*)?$")


# --------------------------------------------------------------------------- YAML with line marks

@dataclass
class SourceMap:
    """Where each value of a YAML document came from.

    Attributes:
        file: the YAML file's path.
        lines: path of keys/indexes (a tuple) to the 1-based line of that value.
    """

    file: str
    lines: dict[tuple, int] = field(default_factory=dict)

    def where(self, path: tuple) -> str:
        """Return ``file:line`` of ``path``, or of its closest ancestor that has a line."""
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        line = self.lines.get(p)
        return f"{self.file}:{line}" if line else self.file


def _mark_nodes(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (str(key.value),)
            lines[sub] = key.start_mark.line + 1
            _mark_nodes(value, sub, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _mark_nodes(item, path + (i,), lines)


def load_yaml_with_marks(path: str) -> tuple[Any, SourceMap]:
    """Load a YAML file and record the line of every value.

    Args:
        path: the YAML file.

    Returns:
        ``(data, source_map)``.

    Raises:
        ConfigError: the file is missing or is not valid YAML (with its line).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read cluster config {path}: {exc.strerror}", source=path) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}",
                          source=where) from None
    smap = SourceMap(path)
    if node is not None:
        smap.lines[()] = node.start_mark.line + 1
        _mark_nodes(node, (), smap.lines)
    return data, smap


# --------------------------------------------------------------------------- where a value was set

@dataclass(frozen=True)
class Origin:
    """Where the values of one spec object were set, and the checks that name that place.

    Attributes:
        source: the YAML file's line marks.
        overrides: key path prefix (``("release_label",)``, ``("instance_groups", 1)``) to the
            command-line option that set it (``--release-label``).
        path: the object's own key path in the spec (``("instance_groups", 0)``); every key
            given to the methods below is relative to it.
    """

    source: SourceMap
    overrides: Mapping[tuple, str] = field(default_factory=dict)
    path: tuple = ()

    @classmethod
    def of(cls, where: Origin | str) -> Origin:
        """Return ``where`` itself, or an origin in the file named ``where`` (no line marks)."""
        return where if isinstance(where, Origin) else cls(SourceMap(str(where)))

    def child(self, *keys: str | int) -> Origin:
        """Return the origin of the value at ``keys`` below this one."""
        return replace(self, path=self.path + keys)

    def where(self, *keys: str | int) -> str:
        """Return where ``keys`` was set: the command-line option, else ``file:line``."""
        path = self.path + keys
        for key in (path[:1], path[:2]):
            if key in self.overrides:
                return f"{self.overrides[key]} (overriding {self.source.where(path)})"
        return self.source.where(path)

    def fail(self, keys: tuple, expected: str, got: Any) -> NoReturn:
        """Raise a ConfigError naming the key path, where it was set, what was expected and got."""
        path = self.path + keys
        name = ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")
        where = self.where(*keys)
        raise ConfigError(f"{where}: {name or 'cluster config'}: expected {expected}, got {got!r}",
                          key=name, source=where)

    def keys(self, value: Any, keys: tuple, allowed: set, what: str) -> dict:
        """Check that ``value`` is a mapping with only ``allowed`` keys (``what`` it should be)."""
        if not isinstance(value, dict):
            self.fail(keys, f"a mapping ({what})", value)
        for k in value:
            if k not in allowed:
                self.fail(keys + (str(k),), f"one of the keys {', '.join(sorted(allowed))}",
                          f"unknown key {k}")
        return value

    def string(self, value: Any, keys: tuple, pattern: re.Pattern | None = None,
               expected: str = "a non-empty string") -> str:
        """Check a non-empty string, matching ``pattern`` when given."""
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            self.fail(keys, expected, value)
        return value

    def integer(self, value: Any, keys: tuple, minimum: int, maximum: int | None = None) -> int:
        """Check an integer (not a boolean) in ``minimum..maximum``."""
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum and (
            maximum is None or value <= maximum)
        if not ok:
            bound = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
            self.fail(keys, bound, value)
        return value

    def boolean(self, value: Any, keys: tuple) -> bool:
        """Check ``true`` or ``false``."""
        if not isinstance(value, bool):
            self.fail(keys, "true or false", value)
        return value

    def s3(self, value: Any, keys: tuple, key_required: bool = False) -> str:
        """Check an S3 URI (:func:`check_s3_uri`)."""
        return check_s3_uri(value, self.where(*keys), ".".join(map(str, self.path + keys)), key_required)

    def str_list(self, value: Any, keys: tuple) -> list:
        """Check a list of non-empty strings."""
        if not isinstance(value, list):
            self.fail(keys, "a list of strings", value)
        for i, v in enumerate(value):
            self.string(v, keys + (i,))
        return value

    def text_args(self, value: Any, keys: tuple) -> tuple[str, ...]:
        """Check arguments: a list of values whose text is non-empty; return that text."""
        args = [str(a) for a in value] if isinstance(value, list) else value
        return tuple(self.str_list(args, keys))


def check_s3_uri(value: Any, where: str, name: str, key_required: bool = False) -> str:
    """Check an S3 URI ``s3://bucket/key``.

    Args:
        value: the URI.
        where: where it was set (``file:line`` or an option), for the message.
        name: the field's name, for the message.
        key_required: an object key (not only a bucket or prefix) is needed.

    Returns:
        ``value``.

    Raises:
        ConfigError: not an S3 URI, a bad bucket name, or no key when one is needed.
    """
    m = S3_URI_RE.match(value) if isinstance(value, str) else None
    if not m or (key_required and len((m.group(2) or "/").strip("/")) == 0):
        expected = "s3://bucket/key" if key_required else "s3://bucket[/prefix]"
        raise ConfigError(f"{where}: {name}: expected an S3 URI {expected}, got {value!r}",
                          key=name, source=where)
    return value


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split an S3 URI.

    Args:
        uri: ``s3://bucket[/key]``.

    Returns:
        ``(bucket, key)``, the key without its leading slash ("" for a bare bucket).

    Raises:
        ConfigError: ``uri`` is not an S3 URI.
    """
    m = S3_URI_RE.match(uri)
    if not m:
        raise ConfigError(f"expected an S3 URI s3://bucket/key, got {uri!r}")
    return m.group(1), (m.group(2) or "/")[1:]
