"""Ratings as an event-time stream: count and mean rating per movie per tumbling window,
or per-user viewing sessions.

MovieLens ratings (``userId,movieId,rating,timestamp``, timestamps in seconds) become
an event-time stream whose watermark trails the largest timestamp seen by
``--out-of-orderness-days``. Ratings older than the watermark allows are late.

* default: per movie and tumbling window of ``--window-days`` days, the number of
  ratings and their mean; CSV ``movieId,windowStart,windowEnd,count,meanRating``
  (window bounds as ISO dates, UTC);
* ``--sessions --gap-minutes N``: per user, a viewing session closes after N minutes
  without a rating; CSV ``userId,sessionStart,sessionEnd,ratings,meanRating``
  (bounds in epoch seconds, end exclusive: last rating + gap).

``--late-output DIR`` writes the ratings that arrived too late for their window
(instead of dropping them).

    emrflow run -p 2 examples/ratings_per_window.py --window-days 30 --output out/per-window
    emrflow run examples/ratings_per_window.py --sessions --gap-minutes 60 --output out/sessions
"""

from __future__ import annotations

import argparse
import datetime
import os

from emrflow import StreamExecutionEnvironment
from emrflow.api.eventtime import Duration, Time, WatermarkStrategy
from emrflow.api.functions import AggregateFunction, OutputTag, ProcessWindowFunction
from emrflow.api.windowing import EventTimeSessionWindows, TumblingEventTimeWindows
from emrflow.connectors.files import CsvFileSink, CsvSource, WriteMode

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INPUT = os.path.join(HERE, "data", "movielens-latest-small", "ratings.csv")
DAY_MS = 86_400_000


class CountAndSum(AggregateFunction):
    """Accumulates (number of ratings, sum of ratings)."""

    def create_accumulator(self):
        return (0, 0.0)

    def add(self, value, acc):
        return (acc[0] + 1, acc[1] + value[2])

    def get_result(self, acc):
        return acc

    def merge(self, a, b):
        return (a[0] + b[0], a[1] + b[1])


def _day(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).date().isoformat()


class MovieWindow(ProcessWindowFunction):
    """(movieId, window start, window end, count, mean) from the window's (count, sum)."""

    def process(self, key, context, elements):
        (count, total) = list(elements)[0]
        w = context.window()
        yield (key, _day(w.start), _day(w.end), count, round(total / count, 4))


class UserSession(ProcessWindowFunction):
    """(userId, session start s, session end s, ratings, mean) from the session's (count, sum)."""

    def process(self, key, context, elements):
        (count, total) = list(elements)[0]
        w = context.window()
        yield (key, w.start // 1000, w.end // 1000, count, round(total / count, 4))


def event_time_ms(record: tuple) -> int:
    """The rating's timestamp (seconds) in milliseconds."""
    return record[3] * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default=DEFAULT_INPUT)
    parser.add_argument("--output", default=os.path.join("out", "ratings-per-window"))
    parser.add_argument("--window-days", type=int, default=30, help="tumbling window size in days")
    parser.add_argument("--sessions", action="store_true", help="per-user session windows instead")
    parser.add_argument("--gap-minutes", type=int, default=60, help="session gap in minutes")
    parser.add_argument("--out-of-orderness-days", type=float, default=10_000,
                        help="how far behind the newest rating a rating may arrive (days)")
    parser.add_argument("--late-output", default=None, help="directory for late ratings")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    mode = WriteMode.OVERWRITE if args.overwrite else WriteMode.NO_OVERWRITE

    env = StreamExecutionEnvironment.get_execution_environment()
    strategy = (WatermarkStrategy
                .for_bounded_out_of_orderness(Duration.of_millis(int(args.out_of_orderness_days * DAY_MS)))
                .with_timestamp_assigner(event_time_ms))
    ratings = env.from_source(
        CsvSource(args.input, header=True, names=["userId", "movieId", "rating", "timestamp"],
                  types=[int, int, float, int]), strategy, source_name="Source: ratings")
    late = OutputTag("late-ratings")
    if args.sessions:
        windowed = ratings.key_by(lambda r: r[0]).window(
            EventTimeSessionWindows.with_gap(Time.minutes(args.gap_minutes)))
        header = ["userId", "sessionStart", "sessionEnd", "ratings", "meanRating"]
        window_function = UserSession()
    else:
        windowed = ratings.key_by(lambda r: r[1]).window(
            TumblingEventTimeWindows.of(Time.days(args.window_days)))
        header = ["movieId", "windowStart", "windowEnd", "count", "meanRating"]
        window_function = MovieWindow()
    results = windowed.side_output_late_data(late).aggregate(CountAndSum(), window_function=window_function)
    results.sink_to(CsvFileSink(args.output, header=header, write_mode=mode)).name("Sink: windows CSV")
    if args.late_output:
        results.get_side_output(late).sink_to(
            CsvFileSink(args.late_output, header=["userId", "movieId", "rating", "timestamp"], write_mode=mode)
        ).name("Sink: late ratings CSV")
    env.execute("ratings per window" if not args.sessions else "rating sessions")
    print(f"results written to {args.output}/part-*")


if __name__ == "__main__":
    main()
