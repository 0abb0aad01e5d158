"""Stable key hashing and Flink's key-group formulas."""

from __future__ import annotations

import datetime
import enum
import json
import subprocess
import sys

import pytest

from emrflow.graph.keygroups import (
    KeyToSubtask,
    assign_key_to_subtask,
    assign_to_key_group,
    key_group_range,
    operator_index_for_key_group,
    stable_hash,
)

KEYS = ["", "a", "movie-42", "ünïcødé", 0, 1, -1, 2**40, 2**70, 1.5, (1, 2), ("a", 3, None), None,
        b"bytes", True]


def test_hash_is_stable_across_processes_and_hash_seeds():
    code = ("import json; from emrflow.graph.keygroups import stable_hash; "
            f"print(json.dumps([stable_hash(k) for k in {KEYS!r}]))")
    results = set()
    for seed in ("0", "1", "12345"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin",
                                  "PYTHONPATH": ":".join(sys.path)})
        results.add(out.stdout)
    assert len(results) == 1
    assert json.loads(results.pop()) == [stable_hash(k) for k in KEYS]


def test_equal_keys_hash_equal():
    assert stable_hash(1) == stable_hash(1.0) == stable_hash(True)
    assert stable_hash((1, "a")) == stable_hash([1, "a"])

    class Color(enum.Enum):
        RED = "red"
    assert stable_hash(Color.RED) == stable_hash("red")
    assert stable_hash(datetime.date(2020, 1, 2)) == stable_hash(datetime.date(2020, 1, 2))
    assert stable_hash("a") != stable_hash("b")


def test_unsupported_key_type_is_named():
    class Thing:
        pass
    with pytest.raises(TypeError, match="Thing has no stable hash"):
        stable_hash(Thing())


@pytest.mark.parametrize("maxp,p", [(128, 1), (128, 2), (128, 3), (128, 128), (7, 3), (32768, 5)])
def test_key_group_ranges_partition_the_key_groups(maxp, p):
    ranges = [key_group_range(maxp, p, i) for i in range(p)]
    assert [g for r in ranges for g in r] == list(range(maxp))
    for i, r in enumerate(ranges):
        assert all(operator_index_for_key_group(maxp, p, g) == i for g in r)


def test_assignment_matches_flink_formula():
    for k in KEYS:
        g = assign_to_key_group(k, 128)
        assert 0 <= g < 128
        assert assign_key_to_subtask(k, 128, 4) == g * 4 // 128


def test_memo_agrees_with_formula_and_stays_bounded():
    memo = KeyToSubtask(128, 3, limit=100)
    for i in range(1000):
        assert memo[f"k{i}"] == assign_key_to_subtask(f"k{i}", 128, 3)
        assert len(memo) <= 100


def test_keys_spread_over_subtasks():
    counts = [0, 0]
    for i in range(10_000):
        counts[assign_key_to_subtask(f"user-{i}", 128, 2)] += 1
    assert min(counts) > 4000
