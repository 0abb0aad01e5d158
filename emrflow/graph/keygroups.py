"""Stable key hashing and Flink's key-group assignment.

Python's ``hash()`` of ``str`` and ``bytes`` is salted per process
(``PYTHONHASHSEED``), so it cannot decide where a key's state lives in a job
that spans processes. :func:`stable_hash` gives the same 32-bit value for equal
keys in every process and run. On top of it, keys are assigned as Flink does:

* key group ``= murmur(stable_hash(key)) % max_parallelism``
  (``KeyGroupRangeAssignment.computeKeyGroupForKeyHash``);
* the subtask owning key group ``g`` is ``g * parallelism // max_parallelism``
  (``computeOperatorIndexForKeyGroup``), so every subtask owns one contiguous
  range of key groups and state can be redistributed by key group when the
  parallelism changes.
"""

from __future__ import annotations

import datetime
import enum
import struct
import zlib
from typing import Any

_MASK32 = 0xFFFFFFFF
_pack_q = struct.Struct("<q").pack
_pack_d = struct.Struct("<d").pack


def _murmur_fmix(h: int) -> int:
    """MurmurHash3's 32-bit finaliser, as Flink's ``MathUtils.murmurHash`` ends."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK32
    h ^= h >> 16
    return h


def stable_hash(key: Any) -> int:
    """Return a 32-bit hash of ``key`` that is equal in every process and run.

    Equal keys hash equally where Python calls them equal across the supported
    types (``1 == 1.0 == True`` hash alike). Supported: ``str``, ``bytes``,
    ``int``, ``float``, ``bool``, ``None``, ``tuple``/``list`` of supported values,
    ``frozenset``, ``enum.Enum`` (by value), ``datetime``/``date``/``Decimal``
    (by their canonical text).

    Args:
        key: the key a ``key_by`` selector returned.

    Returns:
        An ``int`` in ``[0, 2**32)``.

    Raises:
        TypeError: the key's type has no stable hash (objects hashed by identity).
    """
    t = type(key)
    if t is str:
        return zlib.crc32(key.encode("utf-8", "surrogatepass"))
    if t is int or t is bool:
        if -(1 << 63) <= key < (1 << 63):
            return zlib.crc32(_pack_q(key))
        return zlib.crc32(str(key).encode())
    if t is tuple or t is list:
        h = 0x345678 ^ len(key)
        for item in key:
            h = ((h * 1000003) ^ stable_hash(item)) & _MASK32
        return h
    if t is float:
        if key.is_integer() and -(1 << 63) <= key < (1 << 63):
            return zlib.crc32(_pack_q(int(key)))
        return zlib.crc32(_pack_d(key))
    if t is bytes or t is bytearray:
        return zlib.crc32(key)
    if key is None:
        return 0
    if isinstance(key, enum.Enum):
        return stable_hash(key.value)
    if isinstance(key, (frozenset, set)):
        h = 0
        for item in key:
            h ^= _murmur_fmix(stable_hash(item))
        return h
    if isinstance(key, (datetime.date, datetime.time)):
        return zlib.crc32(key.isoformat().encode())
    if isinstance(key, (str, int, float, tuple)):  # subclasses, e.g. namedtuple
        base = next(t for t in (str, int, float, tuple) if isinstance(key, t))
        return stable_hash(base(key))
    if type(key).__name__ == "Decimal":
        return zlib.crc32(str(key.normalize()).encode())
    raise TypeError(
        f"a key of type {t.__module__}.{t.__qualname__} has no stable hash; "
        "key_by must return str, bytes, int, float, bool, None, an Enum, a date/time, "
        "or a tuple of these (objects hash by identity, which differs between processes)")


def assign_to_key_group(key: Any, max_parallelism: int) -> int:
    """Return the key group of ``key``: ``murmur(stable_hash(key)) % max_parallelism``."""
    return _murmur_fmix(stable_hash(key)) % max_parallelism


def operator_index_for_key_group(max_parallelism: int, parallelism: int, key_group: int) -> int:
    """Return the subtask that owns ``key_group`` (Flink's range assignment)."""
    return key_group * parallelism // max_parallelism


def assign_key_to_subtask(key: Any, max_parallelism: int, parallelism: int) -> int:
    """Return the 0-based subtask index that processes ``key``."""
    return operator_index_for_key_group(
        max_parallelism, parallelism, assign_to_key_group(key, max_parallelism))


def key_group_range(max_parallelism: int, parallelism: int, subtask_index: int) -> range:
    """Return the key groups owned by ``subtask_index`` (a contiguous range).

    Mirrors Flink's ``computeKeyGroupRangeForOperatorIndex``.
    """
    start = (subtask_index * max_parallelism + parallelism - 1) // parallelism
    end = ((subtask_index + 1) * max_parallelism - 1) // parallelism
    return range(start, end + 1)


def subtask_table(max_parallelism: int, parallelism: int) -> list[int]:
    """Return ``t`` with ``t[murmur(h) % max_parallelism]`` the owning subtask, for fast lookup."""
    return [operator_index_for_key_group(max_parallelism, parallelism, g)
            for g in range(max_parallelism)]


class KeyToSubtask(dict):
    """A memo ``key -> subtask index`` whose misses compute Flink's assignment.

    Lookups of seen keys run at dict speed (no Python frame), which is what makes
    hash partitioning cheap for repeated keys. The memo is cleared when it holds
    more than ``limit`` keys, so memory stays bounded for high-cardinality keys.

    Args:
        max_parallelism: number of key groups.
        parallelism: number of subtasks.
        limit: most keys remembered before the memo starts over.
        targets: if given, one object per subtask (``len(targets) == parallelism``);
            a lookup then returns ``targets[subtask index]`` instead of the index
            (a record writer maps keys straight to its consumers' staging lists).
    """

    __slots__ = ("_table", "_maxp", "_limit")

    def __init__(self, max_parallelism: int, parallelism: int, limit: int = 200_000,
                 targets: list | None = None):
        super().__init__()
        table = subtask_table(max_parallelism, parallelism)
        if targets is not None:
            if len(targets) != parallelism:
                raise ValueError(f"targets has {len(targets)} entries, expected one per subtask "
                                 f"({parallelism})")
            table = [targets[i] for i in table]
        self._table = table
        self._maxp = max_parallelism
        self._limit = limit

    def __missing__(self, key):
        if len(self) >= self._limit:
            self.clear()
        target = self._table[_murmur_fmix(stable_hash(key)) % self._maxp]
        try:
            self[key] = target
        except TypeError:  # unhashable key such as a list: compute every time
            pass
        return target
