"""The columnar exchange in real jobs: a CSV source whose typed columns go straight to a keyed
exchange (no operator chained in between, or only its timestamp assigner), at parallelism 1 to
3, against plain-Python references, with ``taskmanager.network.columnar-exchange`` on and off
(and, at parallelism 2, with the slot processes' shared-memory channels switched off: TCP).

The input mixes runs that pyarrow parses (they cross the exchange as Arrow columns) with
runs it refuses (bad lines, a quoted field: parsed line by line and sent as rows), so one
channel carries both kinds and the consumer must still see each key's records in order.
"""

from __future__ import annotations

import collections
import random

import pytest

from emrflow import RuntimeExecutionMode, StreamExecutionEnvironment
from emrflow.api.eventtime import Duration, Time, WatermarkStrategy
from emrflow.api.functions import AggregateFunction, OutputTag, ProcessWindowFunction
from emrflow.api.windowing import TumblingEventTimeWindows
from emrflow.config import Configuration
from emrflow.connectors.files import CsvSource
from emrflow.testing import CollectSink

pytestmark = pytest.mark.integration


def _write_input(path, n: int = 40_000, seed: int = 3) -> tuple[list[tuple], set[int]]:
    """A MovieLens-shaped CSV (header, userId,movieId,rating,timestamp) with bad lines and a
    quoted field in places; returns the good records in file order and the bad line numbers."""
    rng = random.Random(seed)
    lines, good, bad = ["userId,movieId,rating,timestamp"], [], set()
    for i in range(n):
        line_no = len(lines) + 1
        if i % 9_000 == 4_321:
            lines.append(f"{i},x{i},3.0,{i}")           # not an int: the run falls back to rows
            bad.add(line_no)
            continue
        if i % 13_000 == 777:
            lines.append(f'"{i % 50}",{i % 7},2.5,{i}')  # a quote: the run is parsed line by line
            good.append((i % 50, i % 7, 2.5, i))
            continue
        user, movie = rng.randrange(300), rng.randrange(2_000)
        record = (user, movie, rng.randrange(1, 11) / 2, rng.randrange(10**9))
        lines.append(",".join(map(str, record)))
        good.append(record)
    path.write_text("\n".join(lines) + "\n")
    return good, bad


def _env(parallelism: int, columnar: bool, mode: RuntimeExecutionMode, **config) -> StreamExecutionEnvironment:
    env = StreamExecutionEnvironment.get_execution_environment(
        Configuration({"taskmanager.network.columnar-exchange": columnar, **config}))
    env.set_parallelism(parallelism)
    env.set_runtime_mode(mode)
    return env


def _source(path) -> CsvSource:
    return CsvSource(str(path), header=True, names=["userId", "movieId", "rating", "timestamp"],
                     types=[int, int, float, int])


def later(a: tuple, b: tuple) -> tuple:
    return b if (b[3], b[2]) > (a[3], a[2]) else a


@pytest.mark.parametrize("parallelism, shared_memory", [(1, True), (2, True), (3, True), (2, False)])
@pytest.mark.parametrize("columnar", [True, False])
def test_batch_reduce_by_composite_key_equals_the_reference(tmp_path, parallelism, columnar, shared_memory):
    path = tmp_path / "ratings.csv"
    good, _bad = _write_input(path)
    env = _env(parallelism, columnar, RuntimeExecutionMode.BATCH,
               **{"taskmanager.network.shared-memory": shared_memory})
    got = (env.from_source(_source(path), source_name="ratings")
           .key_by((1, 0)).reduce(later).execute_and_collect())
    expected: dict = {}
    for r in good:
        k = (r[1], r[0])
        expected[k] = later(expected[k], r) if k in expected else r
    assert sorted(got) == sorted(expected.values())
    assert all(type(r) is tuple and type(r[0]) is int and type(r[2]) is float for r in got)


def _write_spread(path, keys: int, copies: int, seed: int) -> list[tuple]:
    """Every (movie, user) pair once per ``keys`` lines, ``copies`` times: no key repeats nearby."""
    rng = random.Random(seed)
    pairs = [(rng.randrange(100_000), rng.randrange(50_000)) for _ in range(keys)]
    rows = [(u, m, rng.randrange(1, 11) / 2, rng.randrange(10**9)) for _ in range(copies) for (u, m) in pairs]
    path.write_text("userId,movieId,rating,timestamp\n" + "".join(f"{u},{m},{r},{t}\n" for u, m, r, t in rows))
    return rows


@pytest.mark.parametrize("max_keys, folded", [(250_000, True), (2_000, False)])
def test_local_aggregation_folds_keys_far_apart_or_steps_aside(tmp_path, max_keys, folded):
    """p=2 BATCH reduce over keys that recur only every 20 000 lines: a table that holds them
    all folds each producer's records to one per key; one too small for them switches itself
    off after its first fill. Either way the result is the plain-Python one."""
    from emrflow.testing import CollectSink

    path = tmp_path / "ratings.csv"
    rows = _write_spread(path, keys=20_000, copies=3, seed=21)
    env = _env(2, True, RuntimeExecutionMode.BATCH, **{"execution.batch.local-aggregation.max-keys": max_keys})
    out = tmp_path / "out"
    out.mkdir()
    sink = CollectSink(str(out))
    env.from_source(_source(path), source_name="ratings").key_by((1, 0)).reduce(later).name("latest") \
        .sink_to(sink)
    result = env.execute("spread keys")
    expected: dict = {}
    for r in rows:
        k = (r[1], r[0])
        expected[k] = later(expected[k], r) if k in expected else r
    assert sorted(sink.records()) == sorted(expected.values())
    into_reduce = {o.name: o for o in result.operators}["latest"].records_in
    keys = len(expected)
    if folded:
        assert keys <= into_reduce <= 2 * keys  # one partial per key and producer subtask at most
    else:
        assert into_reduce > 0.9 * len(rows)  # at most the first fill of each producer folded


@pytest.mark.parametrize("columnar", [True, False])
def test_streaming_running_sums_per_key_arrive_in_file_order(tmp_path, columnar):
    """One source subtask, two reduce subtasks: every key's running sum must go through exactly
    the values a sequential fold over the file gives, in that order."""
    path = tmp_path / "ratings.csv"
    good, _bad = _write_input(path, n=30_000, seed=5)
    env = _env(2, columnar, RuntimeExecutionMode.STREAMING)
    got = (env.from_source(_source(path), source_name="ratings").set_parallelism(1)
           .key_by(1).reduce(lambda a, b: (b[0], b[1], a[2] + b[2], b[3])).execute_and_collect())
    per_key_got: dict = collections.defaultdict(list)
    for r in got:
        per_key_got[r[1]].append((r[2], r[3]))
    per_key_expected: dict = collections.defaultdict(list)
    total: dict = {}
    for r in good:
        total[r[1]] = total.get(r[1], 0.0) + r[2]
        per_key_expected[r[1]].append((total[r[1]], r[3]))
    assert per_key_got == per_key_expected


class _CountAndSum(AggregateFunction):
    def create_accumulator(self):
        return (0, 0.0)

    def add(self, value, acc):
        return (acc[0] + 1, acc[1] + value[2])

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


class _PerWindow(ProcessWindowFunction):
    def process(self, key, context, elements):
        (count, total) = list(elements)[0]
        yield (key, context.window().start, count, total)


def _seconds_to_ms(record):
    return record[3] * 1000


MS = 1000


def _called_to_ms(record):  # a call and a global: not column arithmetic, called per record
    return int(record[3]) * MS


@pytest.mark.parametrize("lag_days", [400, 20_000])
@pytest.mark.parametrize("assigner", [_seconds_to_ms, _called_to_ms])
@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("columnar", [True, False])
def test_event_time_windows_over_columns_equal_the_reference(tmp_path, columnar, parallelism, assigner,
                                                             lag_days):
    """A timestamp assigner chained after the CSV source, ``key_by(lambda r: r[1])`` and 30-day
    tumbling windows with a user's AggregateFunction, records in random time order (over 31
    years). With an out-of-orderness of 400 days many are late: the late ones come out of the
    side output, and the windows hold exactly the others (a plain-Python reference over the good
    records minus the late ones). With 20,000 days none is late, and the column batches are
    folded without rows of (timestamp, record) pairs."""
    path = tmp_path / "ratings.csv"
    good, _bad = _write_input(path, n=40_000, seed=11)
    # a watermark after every batch (about 5,000 records), so most records after the first batch are late
    env = _env(parallelism, columnar, RuntimeExecutionMode.STREAMING, **{"pipeline.auto-watermark-interval": 0})
    strategy = (WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_days(lag_days))
                .with_timestamp_assigner(assigner))
    late_tag = OutputTag("late")
    windows = (env.from_source(_source(path), strategy, source_name="ratings")
               .key_by(lambda r: r[1]).window(TumblingEventTimeWindows.of(Time.days(30)))
               .side_output_late_data(late_tag).aggregate(_CountAndSum(), window_function=_PerWindow()))
    (tmp_path / "late").mkdir()
    late_sink = CollectSink(str(tmp_path / "late"))
    windows.get_side_output(late_tag).sink_to(late_sink)
    got_windows = windows.execute_and_collect()
    got_late = late_sink.records()
    assert bool(got_late) == (lag_days < 10_000)
    remaining = collections.Counter(good)
    remaining.subtract(collections.Counter(got_late))
    assert min(remaining.values()) >= 0, "a late record that is not in the input"
    size = 30 * 86_400_000
    expected: dict = {}
    for r, times in remaining.items():
        for _ in range(times):
            k = (r[1], r[3] * 1000 - r[3] * 1000 % size)
            c, s = expected.get(k, (0, 0.0))
            expected[k] = (c + 1, s + r[2])
    assert {(k, w): c for k, w, c, _s in got_windows} == {k: c for k, (c, _s) in expected.items()}
    assert all(abs(s - expected[(k, w)][1]) < 1e-6 for k, w, _c, s in got_windows)
