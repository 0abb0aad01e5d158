"""A pull-based split source (readers ask for splits), for the split-request and add_splits_back tests.

:class:`PullSource` cuts ``range(--count)`` into splits of ``--split-size`` numbers. Its readers
call ``ctx.send_split_request()`` whenever they have no split (at start, and after finishing
one); its enumerator answers every request with one split, or with "no more splits" when none
is left (Flink's ``FileSource`` works this way). With ``--fail-region``, subtask 0 of the first
attempt raises as soon as it gets a split after the first completed checkpoint: its pipelined
region restarts (a second, independent pipeline makes the job two regions), and the splits
assigned since the last completed checkpoint go back to the enumerator (``add_splits_back``,
announced on the JobManager's stderr and by creating the file ``--marker``). A TaskManager
killed later restarts the whole job.

Every number ``i`` has key ``i % --keys``; the job keeps a count per key in keyed state and writes
one line ``key,count`` per record with the exactly-once file sink, so a correct run writes
exactly ``k,1 .. k,n_k`` per key. The second pipeline (``--side-output``) counts
``--side-count`` generated numbers the same way.
"""

import argparse
import copy
import os
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from checkpointed_count import Count  # noqa: E402

from emrflow.api.environment import StreamExecutionEnvironment  # noqa: E402
from emrflow.connectors.files import CsvFileSink  # noqa: E402
from emrflow.connectors.splits import (  # noqa: E402
    Boundedness,
    SplitEnumerator,
    SplitReader,
    SplitRecords,
    SplitSource,
)
from emrflow.testing import GeneratedSource  # noqa: E402

RECORDS_PER_POLL = 50


@dataclass
class RangeSplit:
    split_id: str
    next: int   # the next number to read
    end: int


class PullEnumerator(SplitEnumerator):
    """One split per request, from a list of pending splits."""

    def __init__(self, ctx, pending, marker):
        self.ctx, self.pending, self.marker = ctx, pending, marker

    def handle_split_request(self, subtask):
        if self.pending:
            self.ctx.assign_splits({subtask: [self.pending.pop(0)]})
        else:
            self.ctx.signal_no_more_splits(subtask)

    def add_splits_back(self, splits, subtask):
        print(f"add_splits_back: {len(splits)} split(s) of subtask {subtask}", file=sys.stderr, flush=True)
        self.pending[:0] = splits
        if self.marker:
            open(self.marker, "a").close()

    def snapshot_state(self, checkpoint_id):
        return [copy.copy(s) for s in self.pending]


class PullReader(SplitReader):
    """Reads its one split at a time, at most ``rate`` records/s (0: no limit); asks when it has none."""

    def __init__(self, ctx, fail, rate):
        self.ctx, self.fail = ctx, fail and ctx.subtask_index == 0 and ctx.attempt == 0
        self.rate, self.n, self.t0 = rate, 0, 0.0
        self.splits: dict[str, RangeSplit] = {}
        self.no_more = self.asked = self.checkpointed = False

    def start(self):
        self.t0 = time.monotonic()
        self._ask()

    def _ask(self):
        if not self.splits and not self.asked and not self.no_more:
            self.asked = True
            self.ctx.send_split_request()

    def add_splits(self, splits):
        if self.fail and self.checkpointed:
            raise RuntimeError("failing once after the first checkpoint, as asked")
        self.splits.update((s.split_id, s) for s in splits)
        self.asked = False

    def notify_no_more_splits(self):
        self.no_more = True

    def poll(self, timeout_s):
        if not self.splits:
            self._ask()
            return []
        ahead = self.n / self.rate - (time.monotonic() - self.t0) if self.rate else 0
        if ahead > 0:
            time.sleep(min(ahead, timeout_s))
            if ahead > timeout_s:
                return []
        split = next(iter(self.splits.values()))
        stop = min(split.end, split.next + RECORDS_PER_POLL)
        records = list(range(split.next, stop))
        split.next = stop
        self.n += len(records)
        if stop == split.end:
            del self.splits[split.split_id]
            self._ask()
        return [SplitRecords(split.split_id, records, finished=stop == split.end)]

    def is_finished(self):
        return self.no_more and not self.splits

    def snapshot_state(self, checkpoint_id):
        return [copy.copy(s) for s in self.splits.values()]

    def notify_checkpoint_complete(self, checkpoint_id):
        self.checkpointed = True


class PullSource(SplitSource):
    boundedness = Boundedness.BOUNDED

    def __init__(self, count, split_size, fail=False, marker=None, rate=0):
        self.count, self.split_size, self.fail, self.marker, self.rate = count, split_size, fail, marker, rate

    def create_enumerator(self, ctx):
        return PullEnumerator(ctx, [RangeSplit(f"range-{a}", a, min(a + self.split_size, self.count))
                                    for a in range(0, self.count, self.split_size)], self.marker)

    def restore_enumerator(self, ctx, state):
        return PullEnumerator(ctx, list(state), self.marker)

    def create_split_reader(self, ctx):
        return PullReader(ctx, self.fail, self.rate)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--output", required=True)
    p.add_argument("--count", type=int, default=6000)
    p.add_argument("--split-size", type=int, default=100)
    p.add_argument("--keys", type=int, default=20)
    p.add_argument("--rate", type=float, default=0, help="records/s per subtask at most (0: no limit)")
    p.add_argument("--fail-region", action="store_true", help="fail subtask 0 once, after the first checkpoint")
    p.add_argument("--marker", default=None, help="created when splits come back (add_splits_back)")
    p.add_argument("--side-output", default=None, help="a second pipeline (region) writes here")
    p.add_argument("--side-count", type=int, default=200)
    p.add_argument("--side-rate", type=float, default=50, help="records/s per subtask of the second pipeline")
    args = p.parse_args()
    env = StreamExecutionEnvironment.get_execution_environment()
    keys = args.keys

    def count_per_key(numbers, name, output):
        """``key,count`` per number (key ``i % keys``) into ``output``, exactly once."""
        (numbers.uid(name)
            .key_by(lambda i: i % keys)
            .process(Count()).uid(f"{name}-count").name(f"{name}-count")
            .sink_to(CsvFileSink(output)).uid(f"{name}-sink"))
    source = PullSource(args.count, args.split_size, args.fail_region, args.marker, args.rate)
    count_per_key(env.from_source(source, source_name="pull"), "pull", args.output)
    if args.side_output:
        side = GeneratedSource(args.side_count, batch_size=10, rate=args.side_rate)
        count_per_key(env.from_source(side, source_name="side"), "side", args.side_output)
    env.execute("pull count")


if __name__ == "__main__":
    main()
