"""Top-N movies per hour by event time, from a stream of MovieLens ratings in Kafka or Kinesis.

Reads the ratings that ``examples/replay_ratings.py`` sends (one record per rating, the value
the CSV line ``userId,movieId,rating,timestamp`` as UTF-8, timestamp in seconds) and computes,
for every hour of **event time** (the rating's own timestamp), the ``--top`` movies with the
most ratings in that hour:

1. event time = the rating's timestamp; the watermark trails the largest timestamp seen by
   ``--out-of-orderness-s`` seconds (Flink's bounded-out-of-orderness strategy, per Kafka
   partition or Kinesis shard);
2. count per movie per hour: ``key_by(movie)`` into tumbling 1-hour event-time windows,
   ``aggregate(Count())``;
3. top N per hour: the counts of one hour are keyed by the hour and collected in a second
   1-hour tumbling window (each count carries its window's ``max_timestamp()``, so it lands in
   the same hour), which sorts them by number of ratings, descending, ties broken by the
   smaller movie id, and emits ``(hour, rank, movie_id, ratings)``, ranks 1..N (fewer when the
   hour has fewer movies).

Outputs:

* ``--output DIR`` (local directory or ``s3://...``): Parquet files bucketed by the event hour,
  ``DIR/dt=YYYY-MM-DD/hour=HH/part-*.parquet`` (``DateTimeBucketAssigner``, UTC), columns
  ``hour`` (timestamp, UTC), ``rank``, ``movie_id``, ``ratings``; exactly once (files are
  published when the checkpoint that covers them completes). ``DIR`` must not hold output
  of an earlier run (``NO_OVERWRITE``).
* ``--postgres URL`` (libpq string or ``postgresql://`` URL): the same rows upserted into
  ``--table`` (created if missing, primary key ``(hour, rank)``) through ``JdbcSink``,
  exactly once (PostgreSQL two-phase commit: needs ``max_prepared_transactions`` > 0).
* ``--late-output DIR``: ratings that came later than the watermark allows (dropped from the
  counts otherwise, as in Flink), as CSV ``userId,movieId,rating,timestamp``.

Checkpoints every ``--checkpoint-interval-ms`` (default 5000). Unbounded by default (stop it
with Ctrl-C, ``emrflow cancel`` or ``emrflow stop``); ``--bounded`` reads each Kafka partition
up to its end at the start (stopping offsets = latest) and then ends, flushing every window.

    python examples/replay_ratings.py --bootstrap-servers 127.0.0.1:9092 --topic ratings --rate 2000
    emrflow run -p 2 examples/streaming_top_movies.py --bootstrap-servers 127.0.0.1:9092 \\
        --topic ratings --output out/top-movies --postgres "host=127.0.0.1 port=5432 user=postgres"

With ``--kinesis-stream NAME`` the ratings come from a Kinesis data stream instead (same record
format; ``--kinesis-start``, ``--region``, ``--endpoint-url`` for moto). Unparsable records are
bad records (skipped and reported as ``<topic>-<partition>:<offset>`` or
``<stream>/<shard>:<sequence number>``, or fatal with ``-D emrflow.bad-records.fail=true``).
Needs ``pip install 'emrflow[kafka,postgres]'``.
"""

from __future__ import annotations

import argparse
import datetime

from emrflow import Count, RuntimeExecutionMode, StreamExecutionEnvironment
from emrflow.api.eventtime import Duration, Time, WatermarkStrategy
from emrflow.api.functions import OutputTag, ProcessWindowFunction
from emrflow.api.windowing import TumblingEventTimeWindows

HOUR_MS = 3_600_000
COLUMNS = ["hour", "rank", "movie_id", "ratings"]


def parse_rating(data: bytes | str | None) -> tuple[int, int, float, int]:
    """One record's value ``userId,movieId,rating,timestamp`` -> ``(user, movie, rating, timestamp s)``.

    Raises:
        ValueError: not four comma-separated fields, or a field is not a number (the source then
            reports the record as a bad record, naming its partition/shard and offset).
    """
    if data is None:
        raise ValueError("no value (a tombstone); expected userId,movieId,rating,timestamp")
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    fields = text.strip().split(",")
    if len(fields) != 4:
        raise ValueError(f"expected 4 fields userId,movieId,rating,timestamp, got {len(fields)}: {text[:80]!r}")
    user, movie, rating, ts = fields
    return int(user), int(movie), float(rating), int(ts)


def event_time_ms(rating: tuple) -> int:
    """The rating's timestamp (seconds) in milliseconds: the event time."""
    return rating[3] * 1000


def hour_of(ms: int) -> datetime.datetime:
    """The start of an hour window (ms since the epoch) as an aware UTC datetime."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)


def top_n(counts, n: int) -> list[tuple[int, int, int]]:
    """The ``n`` best of ``(movie, ratings)`` pairs as ``(rank, movie, ratings)``, ranks from 1.

    Most ratings first; equal numbers of ratings are ordered by the smaller movie id, so the
    result does not depend on arrival order.
    """
    best = sorted(counts, key=lambda mc: (-mc[1], mc[0]))[:n]
    return [(rank, movie, ratings) for rank, (movie, ratings) in enumerate(best, start=1)]


class CountPerMovie(ProcessWindowFunction):
    """``(hour start ms, movie, ratings)`` from one movie's count in one hour."""

    def process(self, key, context, elements):
        for count in elements:
            yield (context.window().start, key, count)


class TopNPerHour(ProcessWindowFunction):
    """``(hour, rank, movie_id, ratings)`` rows of the top ``n`` movies of one hour (see :func:`top_n`)."""

    def __init__(self, n: int):
        self.n = n

    def process(self, key, context, elements):
        hour = hour_of(key)
        for rank, movie, ratings in top_n([(movie, count) for _, movie, count in elements], self.n):
            yield (hour, rank, movie, ratings)


def hour_bucket_time(row: tuple) -> datetime.datetime:
    """The event hour of an output row (its ``hour`` column), for the DateTimeBucketAssigner."""
    return row[0]


def create_table(url: str, table: str) -> None:
    """Create ``table`` (``hour, rank, movie_id, ratings``, primary key ``(hour, rank)``) if missing.

    Raises:
        SystemExit: psycopg is missing or the server cannot be reached (the message names --postgres).
    """
    try:
        import psycopg
        from psycopg import sql
    except ImportError:
        raise SystemExit("Error: --postgres needs psycopg: pip install 'emrflow[postgres]'") from None
    name = sql.Identifier(*table.split("."))
    statement = sql.SQL("CREATE TABLE IF NOT EXISTS {} (hour timestamptz NOT NULL, rank integer NOT NULL, "
                        "movie_id integer NOT NULL, ratings integer NOT NULL, PRIMARY KEY (hour, rank))")
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement.format(name))
    except psycopg.Error as exc:
        raise SystemExit(f"Error: cannot create table {table!r} (--table) in the database of --postgres: "
                         f"{str(exc).strip()}") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bootstrap-servers", help="Kafka brokers host:port[,host:port] (with --topic)")
    p.add_argument("--topic", help="Kafka topic of the ratings")
    p.add_argument("--group-id", default="streaming-top-movies",
                   help="Kafka consumer group the checkpoints' offsets are committed to, for monitoring")
    p.add_argument("--kinesis-stream", help="read this Kinesis data stream instead of Kafka")
    p.add_argument("--kinesis-start", choices=["TRIM_HORIZON", "LATEST"], default="TRIM_HORIZON",
                   help="where a Kinesis shard is first read (default TRIM_HORIZON)")
    p.add_argument("--region", default=None, help="AWS region of the Kinesis stream")
    p.add_argument("--endpoint-url", default=None, help="Kinesis endpoint (e.g. a moto server)")
    p.add_argument("--bounded", action="store_true",
                   help="Kafka only: read up to the partitions' ends at the start, then end")
    p.add_argument("--top", type=int, default=10, help="movies per hour (default 10)")
    p.add_argument("--out-of-orderness-s", type=float, default=60.0,
                   help="how far (seconds of event time) a rating may arrive behind the newest one (default 60)")
    p.add_argument("--idleness-s", type=float, default=30.0,
                   help="a partition/shard without records for this many seconds does not hold the "
                        "watermark back (default 30; 0: never idle)")
    p.add_argument("--checkpoint-interval-ms", type=int, default=5000, help="default 5000")
    p.add_argument("--output", default=None, help="Parquet output directory (local or s3://), bucketed by hour")
    p.add_argument("--postgres", default=None, metavar="URL", help="PostgreSQL connection string to upsert into")
    p.add_argument("--table", default="top_movies", help="PostgreSQL table (default top_movies)")
    p.add_argument("--late-output", default=None, help="CSV directory for ratings that came too late")
    args = p.parse_args(argv)
    if args.kinesis_stream:
        if args.topic or args.bootstrap_servers:
            p.error("give either --kinesis-stream or --topic/--bootstrap-servers, not both")
        if args.bounded:
            p.error("--bounded needs Kafka (--topic): a Kinesis stream has no end to stop at")
    elif not (args.topic and args.bootstrap_servers):
        p.error("give --topic and --bootstrap-servers (Kafka), or --kinesis-stream (Kinesis)")
    if not (args.output or args.postgres):
        p.error("give --output DIR and/or --postgres URL: the job needs somewhere to write")
    if args.top < 1:
        p.error(f"--top must be >= 1, got {args.top}")
    if args.out_of_orderness_s < 0 or args.idleness_s < 0:
        p.error("--out-of-orderness-s and --idleness-s must be >= 0 seconds")
    if args.checkpoint_interval_ms < 10:
        p.error(f"--checkpoint-interval-ms must be >= 10 ms, got {args.checkpoint_interval_ms}")
    return args


def build_source(args: argparse.Namespace):
    """The Kafka or Kinesis source of parsed ratings (see :func:`parse_rating`)."""
    if args.kinesis_stream:
        from emrflow.connectors.kinesis_source import KinesisSource
        return KinesisSource(args.kinesis_stream, start_position=args.kinesis_start, deserializer=parse_rating,
                             region=args.region, endpoint_url=args.endpoint_url)
    from emrflow.connectors.kafka_source import KafkaSource
    return KafkaSource(args.topic, args.bootstrap_servers, group_id=args.group_id, starting_offsets="earliest",
                       stopping_offsets="latest" if args.bounded else None, deserializer=parse_rating)


def build(env: StreamExecutionEnvironment, args: argparse.Namespace) -> None:
    """Add the job's dataflow to ``env``."""
    strategy = (WatermarkStrategy
                .for_bounded_out_of_orderness(Duration.of_millis(int(args.out_of_orderness_s * 1000)))
                .with_timestamp_assigner(event_time_ms))
    if args.idleness_s > 0:
        strategy = strategy.with_idleness(Duration.of_millis(int(args.idleness_s * 1000)))
    ratings = env.from_source(build_source(args), strategy, "Source: ratings").uid("ratings")
    late = OutputTag("late-ratings")
    counts = (ratings
              .key_by(lambda r: r[1])
              .window(TumblingEventTimeWindows.of(Time.hours(1)))
              .side_output_late_data(late)
              .aggregate(Count(), window_function=CountPerMovie())
              .name("ratings per movie and hour").uid("count-per-movie"))
    top = (counts
           .key_by(lambda c: c[0])
           .window(TumblingEventTimeWindows.of(Time.hours(1)))
           .process(TopNPerHour(args.top))
           .name(f"top {args.top} per hour").uid("top-n"))
    if args.output:
        import pyarrow as pa

        from emrflow.connectors.formats import DateTimeBucketAssigner, ParquetFileSink
        schema = pa.schema([("hour", pa.timestamp("ms", tz="UTC")), ("rank", pa.int32()),
                            ("movie_id", pa.int64()), ("ratings", pa.int64())])
        top.sink_to(ParquetFileSink(
            args.output, schema=schema,
            bucket_assigner=DateTimeBucketAssigner("dt=%Y-%m-%d/hour=%H", timestamp=hour_bucket_time))
        ).name("Sink: Parquet by hour").uid("parquet")
    if args.postgres:
        from emrflow.connectors.jdbc import JdbcSink

        # the rows of one hour come from the subtask that owns that hour's key: one (hour, rank)
        # row is always written by the same sink subtask, as exactly-once requires
        top.sink_to(JdbcSink(args.postgres, args.table, columns=COLUMNS, key_columns=["hour", "rank"],
                             delivery_guarantee="exactly-once")).name("Sink: PostgreSQL").uid("postgres")
    if args.late_output:
        from emrflow.connectors.files import CsvFileSink
        counts.get_side_output(late).sink_to(
            CsvFileSink(args.late_output, header=["userId", "movieId", "rating", "timestamp"])
        ).name("Sink: late ratings CSV").uid("late")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.postgres:
        create_table(args.postgres, args.table)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    env.enable_checkpointing(args.checkpoint_interval_ms)
    build(env, args)
    env.execute("streaming top movies")
    where = [w for w in (args.output and f"{args.output}/dt=*/hour=*/part-*",
                         args.postgres and f"table {args.table}") if w]
    print(f"top {args.top} movies per hour written to {' and '.join(where)}")


if __name__ == "__main__":
    main()
