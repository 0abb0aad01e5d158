"""Keyed state descriptors and handles, as in Flink's ``org.apache.flink.api.common.state``.

A descriptor names a piece of keyed state; ``RuntimeContext.get_state``
turns it into a handle whose value is scoped to the key of the record being
processed. State lives in the subtask's state backend and is organised by key
group, so it can be redistributed when the parallelism changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from typing import Any


class StateDescriptor:
    """Names a piece of keyed state.

    Args:
        name: unique name of the state within its operator.
        type_info: optional type hint (kept for PyFlink compatibility; unused).
    """

    def __init__(self, name: str, type_info: Any = None):
        if not isinstance(name, str) or not name:
            raise ValueError(f"state name must be a non-empty str, got {name!r}")
        self.name = name
        self.type_info = type_info

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ValueStateDescriptor(StateDescriptor):
    """Describes a :class:`ValueState`: one value per key."""


class ValueState(ABC):
    """One value per key (Flink's ``ValueState``)."""

    @abstractmethod
    def value(self) -> Any:
        """Return the current key's value, or ``None`` if it has none."""

    @abstractmethod
    def update(self, value: Any) -> None:
        """Set the current key's value."""

    @abstractmethod
    def clear(self) -> None:
        """Remove the current key's value."""
