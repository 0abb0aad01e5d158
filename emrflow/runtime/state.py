"""Keyed state backends and the state handles user code gets (Flink's keyed state).

A backend stores, per state name, entries ``key -> value``, where the key is the
current record's key, or ``(key, namespace)`` for state scoped to a window.
Handles (``ValueState``, ``ListState``, ``MapState``, ``ReducingState``,
``AggregatingState``) read and write the entry of the backend's *current key*,
which the operator sets before user code runs.

* :class:`HashMapStateBackend`: Python objects in dicts (``state.backend.type: hashmap``).
* :class:`RocksDBStateBackend`: entries in a RocksDB database on local disk through
  rocksdict (``rocksdb``), so state can be far larger than memory. Keys are stored as
  ``key group (2 bytes) | state id (2 bytes) | pickled key``, so a key group's entries
  are contiguous, as in Flink's RocksDB backend; values are pickled.

Both regroup their entries by key group for snapshots (:meth:`KeyedStateBackend.entries_by_key_group`).
Time to live (:class:`~emrflow.api.state.StateTtlConfig`) stores ``(value, last access ms)``
and checks expiry on access.
"""

from __future__ import annotations

import pickle
import shutil
import struct
import tempfile
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator

from emrflow.api.state import (
    AggregatingState,
    AggregatingStateDescriptor,
    ListState,
    ListStateDescriptor,
    MapState,
    MapStateDescriptor,
    ReducingState,
    ReducingStateDescriptor,
    StateDescriptor,
    StateTtlConfig,
    ValueState,
    ValueStateDescriptor,
)
from emrflow.api.windowing import TimeWindow
from emrflow.graph.keygroups import assign_to_key_group

MISSING = object()
_ABSENT = object()  # not in a cache (as opposed to MISSING: known not to exist)


class KeyedStateBackend(ABC):
    """Where an operator subtask keeps keyed state.

    Attributes:
        current_key: the key user code works on (set by the operator).
        namespace: the window (or other scope) state handles refer to, or ``None``.
    """

    def __init__(self, max_parallelism: int):
        self.max_parallelism = max_parallelism
        self.current_key: Any = None
        self.namespace: Any = None
        self._handles: dict[str, Any] = {}

    # primitive operations on entries
    @abstractmethod
    def get(self, name: str, key: Any) -> Any:
        """Return the value of ``key`` in state ``name``, or :data:`MISSING`."""

    @abstractmethod
    def put(self, name: str, key: Any, value: Any) -> None:
        """Set the value of ``key`` in state ``name``."""

    @abstractmethod
    def delete(self, name: str, key: Any) -> None:
        """Remove ``key`` from state ``name`` (no error if absent)."""

    @abstractmethod
    def items(self, name: str) -> Iterator[tuple[Any, Any]]:
        """Iterate over the entries of state ``name``."""

    def close(self) -> None:
        """Release files and memory."""

    def scoped_key(self) -> Any:
        """The entry key handles use: the current key, or ``(key, namespace)``."""
        return self.current_key if self.namespace is None else (self.current_key, self.namespace)

    def entries_by_key_group(self) -> dict[int, dict[str, list]]:
        """Return ``{key group: {state name: [(key, value), ...]}}`` (for snapshots)."""
        out: dict[int, dict[str, list]] = {}
        for name in self.state_names():
            for k, v in self.items(name):
                user_key = k[0] if isinstance(k, tuple) and len(k) == 2 and name.startswith("window") else k
                g = assign_to_key_group(user_key, self.max_parallelism)
                out.setdefault(g, {}).setdefault(name, []).append((k, v))
        return out

    @abstractmethod
    def state_names(self) -> list[str]:
        """Names of the states that have entries."""

    # checkpoints
    def snapshot(self) -> Callable[[], bytes]:
        """Take a checkpoint snapshot of every entry (Flink's snapshot of keyed state).

        The synchronous part runs now, while the task is stopped at the barrier;
        the returned function is the asynchronous part, which may run in another
        thread while processing goes on and returns the snapshot as bytes: a pickled
        ``{state name: [(key, value), ...]}``, the same for every backend, so a
        snapshot of one backend restores into the other.
        """
        data = pickle.dumps({n: list(self.items(n)) for n in self.state_names()}, protocol=5)
        return lambda: data

    def restore(self, snapshots: list[bytes], key_groups: range | None) -> None:
        """Load entries from :meth:`snapshot` outputs, keeping only keys in ``key_groups``.

        Args:
            snapshots: snapshots of one or more former subtasks.
            key_groups: the key groups this subtask owns, or ``None`` for all
                (restoring at the same parallelism).
        """
        maxp = self.max_parallelism
        for raw in snapshots:
            for name, entries in pickle.loads(raw).items():
                windowed = name.startswith("window")
                for k, v in entries:
                    if key_groups is not None:
                        user_key = k[0] if windowed and type(k) is tuple and len(k) == 2 else k
                        if assign_to_key_group(user_key, maxp) not in key_groups:
                            continue
                    self.put(name, k, v)

    # handles
    def get_state(self, descriptor: StateDescriptor) -> Any:
        """Return the handle for ``descriptor`` (the same object on repeated calls).

        Raises:
            TypeError: not a state descriptor, or one name used for two kinds of state.
        """
        kinds = {ValueStateDescriptor: _Value, ListStateDescriptor: _List, MapStateDescriptor: _Map,
                 ReducingStateDescriptor: _Reducing, AggregatingStateDescriptor: _Aggregating}
        cls = kinds.get(type(descriptor))
        if cls is None:
            raise TypeError(f"expected a state descriptor, got {descriptor!r}")
        handle = self._handles.get(descriptor.name)
        if handle is None:
            handle = self._handles[descriptor.name] = cls(self, descriptor)
        elif not isinstance(handle, cls):
            raise TypeError(f"state {descriptor.name!r} is already a {type(handle).__name__[1:]} state")
        return handle


class HashMapStateBackend(KeyedStateBackend):
    """Keyed state as Python objects in memory (Flink's ``HashMapStateBackend``)."""

    def __init__(self, max_parallelism: int):
        super().__init__(max_parallelism)
        self.tables: dict[str, dict] = {}

    def table(self, name: str) -> dict:
        """The dict behind state ``name`` (operators use it directly on hot paths)."""
        t = self.tables.get(name)
        if t is None:
            t = self.tables[name] = {}
        return t

    def get(self, name, key):
        return self.table(name).get(key, MISSING)

    def put(self, name, key, value):
        self.table(name)[key] = value

    def delete(self, name, key):
        self.table(name).pop(key, None)

    def items(self, name):
        return iter(list(self.table(name).items()))

    def state_names(self):
        return [n for n, t in self.tables.items() if t]


class RocksDBStateBackend(KeyedStateBackend):
    """Keyed state in RocksDB on local disk (Flink's ``EmbeddedRocksDBStateBackend``).

    Args:
        max_parallelism: number of key groups.
        directory: where the database goes (a fresh temporary directory by default;
            removed on :meth:`close`).
        block_cache_bytes: RocksDB block cache size in bytes.
        cache_entries: entries kept as Python objects in a write-back cache in front of
            RocksDB; when it holds more, the changed ones are written in one write batch and
            the cache is emptied. Bounds memory by entry count; hot keys cost a dict lookup.
    """

    def __init__(self, max_parallelism: int, directory: str | None = None,
                 block_cache_bytes: int = 64 * 2**20, cache_entries: int = 20_000):
        super().__init__(max_parallelism)
        self.cache_entries = cache_entries
        self._cache: dict = {}
        self._dirty: set = set()
        from rocksdict import Options, Rdict
        self.directory = directory or tempfile.mkdtemp(prefix="emrflow-rocksdb-")
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.set_write_buffer_size(32 * 2**20)
        opts.set_max_write_buffer_number(2)
        try:
            from rocksdict import BlockBasedOptions, Cache
            table = BlockBasedOptions()
            table.set_block_cache(Cache(block_cache_bytes))
            opts.set_block_based_table_factory(table)
        except ImportError:
            pass
        self.db = Rdict(self.directory, opts)
        self._ids: dict[str, bytes] = {}
        self._names: dict[bytes, str] = {}
        self._pack = struct.Struct(">H").pack

    def _prefix(self, name: str, key: Any) -> bytes:
        sid = self._ids.get(name)
        if sid is None:
            sid = self._ids[name] = struct.pack(">H", len(self._ids))
            self._names[sid] = name
        user_key = key[0] if name.startswith("window") else key
        return self._pack(assign_to_key_group(user_key, self.max_parallelism)) + sid

    def _key(self, name: str, key: Any) -> bytes:
        if type(key) is tuple and len(key) == 2 and type(key[1]) is TimeWindow:
            # (key, window): a window as plain ints pickles ~10x faster than the named tuple
            encoded = pickle.dumps((key[0], tuple(key[1])), protocol=5)
        else:
            encoded = pickle.dumps(key, protocol=5)
        return self._prefix(name, key) + encoded

    def _load(self, name: str, key: Any) -> Any:
        raw = self.db.get(self._key(name, key))
        return MISSING if raw is None else pickle.loads(raw)

    def get(self, name, key):
        entry = (name, key)
        try:
            value = self._cache.get(entry, _ABSENT)
        except TypeError:  # an unhashable key: no caching
            return self._load(name, key)
        if value is _ABSENT:
            value = self._load(name, key)
            self._remember(entry, value, dirty=False)
        return value

    def put(self, name, key, value):
        try:
            self._remember((name, key), value, dirty=True)
        except TypeError:
            self.db[self._key(name, key)] = pickle.dumps(value, protocol=5)

    def delete(self, name, key):
        try:
            self._remember((name, key), MISSING, dirty=True)
        except TypeError:
            del self.db[self._key(name, key)]

    def _remember(self, entry: tuple, value: Any, dirty: bool) -> None:
        self._cache[entry] = value
        if dirty:
            self._dirty.add(entry)
        if len(self._cache) > self.cache_entries:
            self.flush()

    def flush(self) -> None:
        """Write the changed cached entries to RocksDB in one write batch and empty the cache."""
        from rocksdict import WriteBatch
        if self._dirty:
            batch = WriteBatch(raw_mode=True)
            cache = self._cache
            for entry in self._dirty:
                name, key = entry
                value = cache[entry]
                if value is MISSING:
                    batch.delete(self._key(name, key))
                else:
                    batch.put(self._key(name, key), pickle.dumps(value, protocol=5))
            self.db.write(batch)
            self._dirty.clear()
        self._cache.clear()

    def items(self, name):
        self.flush()
        sid = self._ids.get(name)
        if sid is None:
            return
        for raw_key, raw_value in self.db.items():
            if raw_key[2:4] == sid:
                key = pickle.loads(raw_key[4:])
                if name.startswith("window") and type(key) is tuple and len(key) == 2 \
                        and type(key[1]) is tuple and len(key[1]) == 2:
                    key = (key[0], TimeWindow(*key[1]))
                yield key, pickle.loads(raw_value)

    def state_names(self):
        return list(self._ids)

    def snapshot(self) -> Callable[[], bytes]:
        """Write the cache back, take a RocksDB snapshot now; read it in the asynchronous part."""
        self.flush()
        snap = self.db.snapshot()
        names = dict(self._names)

        def materialize() -> bytes:
            out: dict[str, list] = {}
            for raw_key, raw_value in snap.items():
                name = names.get(raw_key[2:4])
                if name is None:
                    continue
                key = pickle.loads(raw_key[4:])
                if name.startswith("window") and type(key) is tuple and len(key) == 2 \
                        and type(key[1]) is tuple and len(key[1]) == 2:
                    key = (key[0], TimeWindow(*key[1]))
                out.setdefault(name, []).append((key, pickle.loads(raw_value)))
            return pickle.dumps(out, protocol=5)
        return materialize

    def restore(self, snapshots: list[bytes], key_groups: range | None) -> None:
        super().restore(snapshots, key_groups)
        self.flush()

    def close(self) -> None:
        try:
            self.db.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)


def create_backend(kind: str, max_parallelism: int, directory: str | None = None) -> KeyedStateBackend:
    """Return the backend named by ``state.backend.type`` (``hashmap`` or ``rocksdb``)."""
    if kind == "rocksdb":
        return RocksDBStateBackend(max_parallelism, directory)
    if kind == "hashmap":
        return HashMapStateBackend(max_parallelism)
    raise ValueError(f"unknown state backend {kind!r}; expected hashmap or rocksdb")


# -- handles -------------------------------------------------------------------------

class _Handle:
    def __init__(self, backend: KeyedStateBackend, descriptor: StateDescriptor):
        self.backend = backend
        self.name = descriptor.name
        self.descriptor = descriptor
        ttl = descriptor.ttl_config
        self.ttl_ms = ttl.ttl_ms if ttl else None
        self.touch_on_read = bool(ttl and ttl.update_type == StateTtlConfig.UpdateType.OnReadAndWrite)
        self.hide_expired = not ttl or ttl.visibility == StateTtlConfig.StateVisibility.NeverReturnExpired

    def _read(self) -> Any:
        b = self.backend
        key = b.scoped_key()
        raw = b.get(self.name, key)
        if raw is MISSING or self.ttl_ms is None:
            return raw
        value, stamp = raw
        now = int(time.time() * 1000)
        if now - stamp >= self.ttl_ms:
            b.delete(self.name, key)
            return MISSING if self.hide_expired else value
        if self.touch_on_read:
            b.put(self.name, key, (value, now))
        return value

    def _write(self, value: Any) -> None:
        if self.ttl_ms is not None:
            value = (value, int(time.time() * 1000))
        self.backend.put(self.name, self.backend.scoped_key(), value)

    def clear(self) -> None:
        self.backend.delete(self.name, self.backend.scoped_key())


class _Value(_Handle, ValueState):
    def value(self):
        v = self._read()
        return None if v is MISSING else v

    def update(self, value):
        if value is None:
            self.clear()
        else:
            self._write(value)


class _List(_Handle, ListState):
    def get(self):
        v = self._read()
        return [] if v is MISSING else list(v)

    def add(self, value):
        v = self._read()
        self._write([value] if v is MISSING else v + [value])

    def add_all(self, values):
        v = self._read()
        self._write(list(values) if v is MISSING else v + list(values))

    def update(self, values):
        if values:
            self._write(list(values))
        else:
            self.clear()


class _Map(_Handle, MapState):
    def _dict(self) -> dict:
        v = self._read()
        return {} if v is MISSING else v

    def get(self, key):
        return self._dict().get(key)

    def put(self, key, value):
        d = dict(self._dict())
        d[key] = value
        self._write(d)

    def put_all(self, mapping):
        d = dict(self._dict())
        d.update(mapping)
        self._write(d)

    def remove(self, key):
        d = dict(self._dict())
        d.pop(key, None)
        if d:
            self._write(d)
        else:
            self.clear()

    def contains(self, key):
        return key in self._dict()

    def items(self):
        return list(self._dict().items())

    def keys(self):
        return list(self._dict().keys())

    def values(self):
        return list(self._dict().values())

    def is_empty(self):
        return not self._dict()


class _Reducing(_Handle, ReducingState):
    def __init__(self, backend, descriptor):
        super().__init__(backend, descriptor)
        fn = descriptor.reduce_function
        self._fn = fn.reduce if hasattr(fn, "reduce") else fn

    def get(self):
        v = self._read()
        return None if v is MISSING else v

    def add(self, value):
        v = self._read()
        self._write(value if v is MISSING else self._fn(v, value))


class _Aggregating(_Handle, AggregatingState):
    def __init__(self, backend, descriptor):
        super().__init__(backend, descriptor)
        self._fn = descriptor.agg_function

    def get(self):
        v = self._read()
        return None if v is MISSING else self._fn.get_result(v)

    def add(self, value):
        v = self._read()
        acc = self._fn.create_accumulator() if v is MISSING else v
        self._write(self._fn.add(value, acc))


