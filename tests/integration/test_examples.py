"""examples/ratings_per_window.py on the bundled MovieLens ratings, against plain-Python references."""

from __future__ import annotations

import csv
import datetime
import glob
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration

RATINGS = os.path.join(ROOT, "examples", "data", "movielens-latest-small", "ratings.csv")
JOB = os.path.join(ROOT, "examples", "ratings_per_window.py")


def run(*args):
    proc = subprocess.run([sys.executable, "-m", "emrflow.cli", "run", *args], capture_output=True,
                          text=True, timeout=300)  # cwd: the test's tmp_path
    assert proc.returncode == 0, proc.stderr
    return proc


def parts(directory):
    rows = []
    for p in sorted(glob.glob(os.path.join(directory, "part-*"))):
        with open(p, newline="") as f:
            rows += list(csv.reader(f))[1:]
    return rows


def ratings():
    with open(RATINGS, newline="") as f:
        return [(int(u), int(m), float(r), int(t)) for u, m, r, t in list(csv.reader(f))[1:]]


def day(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).date().isoformat()


def test_count_and_mean_per_movie_per_window(tmp_path):
    run("-p", "2", JOB, "--window-days", "30", "--output", str(tmp_path / "o"))
    size = 30 * 86_400_000
    ref = defaultdict(list)
    for _, movie, rating, ts in ratings():
        start = ts * 1000 - (ts * 1000) % size
        ref[(movie, start)].append(rating)
    expected = sorted((str(m), day(s), day(s + size), str(len(v)), str(round(sum(v) / len(v), 4)))
                      for (m, s), v in ref.items())
    got = sorted(tuple(r) for r in parts(str(tmp_path / "o")))
    assert len(got) == len(expected)
    assert [(g[0], g[1], g[2], g[3], float(g[4])) for g in got] == \
        [(e[0], e[1], e[2], e[3], float(e[4])) for e in expected]


def test_user_sessions(tmp_path):
    run("-p", "2", JOB, "--sessions", "--gap-minutes", "60", "--output", str(tmp_path / "s"))
    gap = 3600
    by_user = defaultdict(list)
    for user, _, rating, ts in ratings():
        by_user[user].append((ts, rating))
    expected = []
    for user, items in by_user.items():
        items.sort()
        start, end, vals = None, None, []
        for ts, r in items:
            if start is not None and ts <= end:
                end, vals = max(end, ts + gap), vals + [r]
            else:
                if start is not None:
                    expected.append((user, start, end, len(vals), round(sum(vals) / len(vals), 4)))
                start, end, vals = ts, ts + gap, [r]
        expected.append((user, start, end, len(vals), round(sum(vals) / len(vals), 4)))
    got = [(int(u), int(s), int(e), int(n), float(m)) for u, s, e, n, m in parts(str(tmp_path / "s"))]
    assert sorted(got) == sorted(expected)


def test_late_ratings_go_to_the_side_output(tmp_path):
    # a watermark after every batch: which ratings are late then depends on the input and the
    # batches, not on how much of the file the sources read in the first 200 ms
    run("-p", "2", "-D", "pipeline.auto-watermark-interval=0", JOB, "--out-of-orderness-days", "30",
        "--late-output", str(tmp_path / "late"), "--output", str(tmp_path / "o"))
    late = parts(str(tmp_path / "late"))
    counted = sum(int(r[3]) for r in parts(str(tmp_path / "o")))
    assert late, "a 30-day bound on this file must leave late ratings"
    assert counted + len(late) == len(ratings())
