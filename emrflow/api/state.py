"""Keyed state descriptors and handles, as in Flink's ``org.apache.flink.api.common.state``.

A descriptor names a piece of keyed state; ``RuntimeContext.get_state``
turns it into a handle whose value is scoped to the key of the record being
processed. State lives in the subtask's state backend and is organised by key
group, so it can be redistributed when the parallelism changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class StateTtlConfig:
    """Time to live of keyed state (Flink's ``StateTtlConfig``; processing time).

    Build with ``StateTtlConfig.new_builder(Time.seconds(10)).set_update_type(...)
    .set_state_visibility(...).build()`` and pass it to
    ``descriptor.enable_time_to_live(config)``. An entry expires ``ttl`` ms after it was
    last written (``OnCreateAndWrite``) or last read or written (``OnReadAndWrite``);
    ``NeverReturnExpired`` hides expired entries, ``ReturnExpiredIfNotCleanedUp``
    returns them until they are cleaned up (on access).
    """

    class UpdateType:
        Disabled = "Disabled"
        OnCreateAndWrite = "OnCreateAndWrite"
        OnReadAndWrite = "OnReadAndWrite"

    class StateVisibility:
        NeverReturnExpired = "NeverReturnExpired"
        ReturnExpiredIfNotCleanedUp = "ReturnExpiredIfNotCleanedUp"

    def __init__(self, ttl_ms: int, update_type: str, visibility: str):
        self.ttl_ms = ttl_ms
        self.update_type = update_type
        self.visibility = visibility

    class Builder:
        def __init__(self, ttl: Any):
            from emrflow.api.eventtime import to_millis
            self._ttl = to_millis(ttl, "ttl")
            if self._ttl <= 0:
                raise ValueError(f"ttl must be > 0 ms, got {self._ttl}")
            self._update = StateTtlConfig.UpdateType.OnCreateAndWrite
            self._visibility = StateTtlConfig.StateVisibility.NeverReturnExpired

        def set_update_type(self, update_type: str) -> "StateTtlConfig.Builder":
            self._update = update_type
            return self

        def update_ttl_on_create_and_write(self) -> "StateTtlConfig.Builder":
            return self.set_update_type(StateTtlConfig.UpdateType.OnCreateAndWrite)

        def update_ttl_on_read_and_write(self) -> "StateTtlConfig.Builder":
            return self.set_update_type(StateTtlConfig.UpdateType.OnReadAndWrite)

        def set_state_visibility(self, visibility: str) -> "StateTtlConfig.Builder":
            self._visibility = visibility
            return self

        def never_return_expired(self) -> "StateTtlConfig.Builder":
            return self.set_state_visibility(StateTtlConfig.StateVisibility.NeverReturnExpired)

        def return_expired_if_not_cleaned_up(self) -> "StateTtlConfig.Builder":
            return self.set_state_visibility(StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp)

        def build(self) -> "StateTtlConfig":
            return StateTtlConfig(self._ttl, self._update, self._visibility)

    @staticmethod
    def new_builder(ttl: Any) -> "StateTtlConfig.Builder":
        return StateTtlConfig.Builder(ttl)


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
        self.ttl_config: StateTtlConfig | None = None

    def enable_time_to_live(self, ttl_config: StateTtlConfig) -> None:
        """Expire entries of this state as ``ttl_config`` says."""
        if not isinstance(ttl_config, StateTtlConfig):
            raise TypeError(f"enable_time_to_live expects a StateTtlConfig, got {ttl_config!r}")
        self.ttl_config = ttl_config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class ValueStateDescriptor(StateDescriptor):
    """Describes a :class:`ValueState`: one value per key."""


class ListStateDescriptor(StateDescriptor):
    """Describes a :class:`ListState`: a list per key."""


class MapStateDescriptor(StateDescriptor):
    """Describes a :class:`MapState`: a dict per key."""

    def __init__(self, name: str, key_type_info: Any = None, value_type_info: Any = None):
        super().__init__(name, (key_type_info, value_type_info))


class ReducingStateDescriptor(StateDescriptor):
    """Describes a :class:`ReducingState`: values combined with ``reduce_function`` per key."""

    def __init__(self, name: str, reduce_function: Any, type_info: Any = None):
        super().__init__(name, type_info)
        self.reduce_function = reduce_function


class AggregatingStateDescriptor(StateDescriptor):
    """Describes an :class:`AggregatingState` with an ``AggregateFunction`` per key."""

    def __init__(self, name: str, agg_function: Any, state_type_info: Any = None):
        super().__init__(name, state_type_info)
        self.agg_function = agg_function


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


class ListState(ABC):
    """A list per key (Flink's ``ListState``)."""

    @abstractmethod
    def get(self) -> list:
        """Return the current key's list (empty if none)."""

    @abstractmethod
    def add(self, value: Any) -> None:
        """Append ``value``."""

    @abstractmethod
    def add_all(self, values: list) -> None:
        """Append every value."""

    @abstractmethod
    def update(self, values: list) -> None:
        """Replace the list."""

    @abstractmethod
    def clear(self) -> None:
        """Remove the current key's list."""


class MapState(ABC):
    """A dict per key (Flink's ``MapState``)."""

    @abstractmethod
    def get(self, key: Any) -> Any:
        """Return the value of ``key`` or ``None``."""

    @abstractmethod
    def put(self, key: Any, value: Any) -> None:
        """Set the value of ``key`` in the current key's map."""

    @abstractmethod
    def put_all(self, mapping: dict) -> None:
        """Set every entry of ``mapping``."""

    @abstractmethod
    def remove(self, key: Any) -> None:
        """Remove ``key`` (no error if absent)."""

    @abstractmethod
    def contains(self, key: Any) -> bool:
        """True if ``key`` is in the current key's map."""

    @abstractmethod
    def items(self) -> list:
        """Return the ``(key, value)`` pairs."""

    @abstractmethod
    def keys(self) -> list:
        """Return the keys."""

    @abstractmethod
    def values(self) -> list:
        """Return the values."""

    @abstractmethod
    def is_empty(self) -> bool:
        """True if the current key's map has no entry."""

    @abstractmethod
    def clear(self) -> None:
        """Remove the current key's map."""


class ReducingState(ABC):
    """One value per key, combined on ``add`` with the descriptor's reduce function."""

    @abstractmethod
    def get(self) -> Any:
        """Return the current key's reduced value, or ``None``."""

    @abstractmethod
    def add(self, value: Any) -> None:
        """Combine ``value`` into the current key's value with the reduce function."""

    @abstractmethod
    def clear(self) -> None:
        """Remove the current key's value."""


class AggregatingState(ABC):
    """An accumulator per key; ``get`` returns the aggregate function's result."""

    @abstractmethod
    def get(self) -> Any:
        """Return ``get_result`` of the current key's accumulator, or ``None``."""

    @abstractmethod
    def add(self, value: Any) -> None:
        """Add ``value`` to the current key's accumulator."""

    @abstractmethod
    def clear(self) -> None:
        """Remove the current key's accumulator."""
