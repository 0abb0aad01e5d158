"""The latest rating of every (movie, user) pair: emrflow's main example job.

Reads rating records, groups them by (movie, user), keeps the record with the
greatest timestamp (on equal timestamps, the higher rating, so the result does
not depend on arrival order) and writes CSV part files with the header
``movieId,userId,rating,timestamp``, one line per (movie, user).

Input formats (``--format``):

* ``movielens`` (default): MovieLens CSV with the header line
  ``userId,movieId,rating,timestamp``;
* ``seed``: the ``Movie^User^Rating^Timestamp`` records of the seed article,
  ``^``-separated, no header; ids are text (``m1^u1^4.0^2000``), numbers are ids too.

Run it on the bundled MovieLens ratings (``examples/data/movielens-latest-small``)::

    emrflow run -p 2 examples/latest_rating.py --output out/latest-rating --overwrite

Unparsable lines are skipped, counted and reported with file and line
(``--fail-on-bad-records`` makes them fatal).
"""

from __future__ import annotations

import argparse
import os

from emrflow import RuntimeExecutionMode, StreamExecutionEnvironment
from emrflow.connectors.files import CsvFileSink, CsvSource, WriteMode

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INPUT = os.path.join(HERE, "data", "movielens-latest-small", "ratings.csv")
HEADER = ["movieId", "userId", "rating", "timestamp"]


def later(a: tuple, b: tuple) -> tuple:
    """Of two records (rating at index 2, timestamp at 3), the later one, then the higher rating."""
    if b[3] > a[3] or (b[3] == a[3] and b[2] > a[2]):
        return b
    return a


def movielens_output(r: tuple) -> tuple:
    """(userId, movieId, rating, timestamp) -> (movieId, userId, rating text, timestamp)."""
    return (r[1], r[0], format(r[2], "g"), r[3])


def seed_output(r: tuple) -> tuple:
    """(movieId, userId, rating, timestamp) with the rating as MovieLens writes it (3.0 -> "3")."""
    return (r[0], r[1], format(r[2], "g"), r[3])


def build(env: StreamExecutionEnvironment, input_path: str, output: str, fmt: str,
          overwrite: bool, fail_on_bad_records: bool) -> None:
    """Add the job's dataflow to ``env``."""
    if fmt == "movielens":
        source = CsvSource(input_path, delimiter=",", header=True,
                           names=["userId", "movieId", "rating", "timestamp"],
                           types=[int, int, float, int], fail_on_bad_records=fail_on_bad_records or None)
        key, to_output = (1, 0), movielens_output   # records stay (user, movie, ...) until the end
    else:
        source = CsvSource(input_path, delimiter="^", header=False,  # ids as given: m1, u1 or 42
                           names=["movieId", "userId", "rating", "timestamp"],
                           types=[str, str, float, int], fail_on_bad_records=fail_on_bad_records or None)
        key, to_output = (0, 1), seed_output
    (env.from_source(source, source_name="Source: ratings")
        .key_by(key)
        .reduce(later).name("latest per (movie, user)")
        .map(to_output)
        .sink_to(CsvFileSink(output, header=HEADER,
                             write_mode=WriteMode.OVERWRITE if overwrite else WriteMode.NO_OVERWRITE))
        .name("Sink: latest ratings CSV"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default=DEFAULT_INPUT, help="ratings file or directory")
    parser.add_argument("--output", default=os.path.join("out", "latest-rating"),
                        help="output directory for the part files")
    parser.add_argument("--format", choices=["movielens", "seed"], default="movielens")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--fail-on-bad-records", action="store_true",
                        help="fail the job on the first unparsable line")
    args = parser.parse_args(argv)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    build(env, args.input, args.output, args.format, args.overwrite, args.fail_on_bad_records)
    env.execute("latest rating")
    print(f"latest ratings written to {args.output}/part-*")


if __name__ == "__main__":
    main()
