"""Checks of connector options: each raises :class:`~emrflow.errors.ConfigError` naming the
connector (``owner``) and the option (its ``key``), with what was expected and what was given."""

from __future__ import annotations

from typing import Any

from emrflow.errors import ConfigError


def check_int(owner: str, name: str, value: Any, low: int, high: int | None = None) -> None:
    """Raise :class:`ConfigError` unless ``low <= value (<= high)`` and ``value`` is an int."""
    if (not isinstance(value, int) or isinstance(value, bool) or value < low
            or (high is not None and value > high)):
        expected = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise ConfigError(f"{owner}: {name} must be {expected}, got {value!r}", key=name)


def check_function(owner: str, name: str, value: Any, signature: str, required: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is callable (or, when not ``required``, ``None``).

    Args:
        owner: the connector, for the message (``"KafkaSource('clicks')"``).
        name: the option.
        value: what was given.
        signature: what the function maps, for the message (``"bytes -> record"``).
        required: whether ``None`` is refused too.
    """
    if (required or value is not None) and not callable(value):
        raise ConfigError(f"{owner}: {name} must be a function {signature}, got {value!r}", key=name)


def check_optional_bool(owner: str, name: str, value: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` is ``True``, ``False`` or ``None``."""
    if value not in (None, True, False):
        raise ConfigError(f"{owner}: {name} must be True, False or None, got {value!r}", key=name)
