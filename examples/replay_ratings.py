"""Replay the bundled MovieLens ratings into a Kafka topic at a given rate (a stream for the examples).

Each rating of ``ratings.csv`` (``userId,movieId,rating,timestamp``, timestamp in seconds)
becomes one Kafka record:

* value: the CSV line ``userId,movieId,rating,timestamp`` as UTF-8 (as in the file);
* key: the movie id (so one movie's ratings stay in one partition, in order);
* Kafka timestamp (``CreateTime``): the rating's timestamp in ms, i.e. the event time. A
  ``KafkaSource(..., with_metadata=True)`` job reads it as ``record.timestamp``.

Ratings are sent in event-time order (``--order time``, the default; the file is ordered by
movie) or in file order, paced to ``--rate`` records per second (0: as fast as the broker
takes them). The topic must exist (create it with the partitions you want first).

Run it against the local test broker (``python tests/integration/conftest_kafka.py`` prints
its address)::

    python examples/replay_ratings.py --bootstrap-servers 127.0.0.1:9092 --topic ratings --rate 2000

It prints one summary line (records sent, seconds, achieved rate) on stdout; errors go to
stderr with exit status 1. Needs ``pip install 'emrflow[kafka]'``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INPUT = os.path.join(HERE, "data", "movielens-latest-small", "ratings.csv")


def read_ratings(path: str, order: str) -> list[tuple[str, str, str, int]]:
    """The ratings of ``path`` as ``(userId, movieId, rating, timestamp s)``, in ``order`` ("time" or "file").

    Raises:
        ValueError: a line has not four fields or a timestamp that is not an integer
            (the message names ``path:line``).
    """
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["userId", "movieId", "rating", "timestamp"]:
            raise ValueError(f"{path}:1: expected the header userId,movieId,rating,timestamp, got {header!r}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                user, movie, rating, ts = row
                out.append((user, movie, rating, int(ts)))
            except ValueError:
                raise ValueError(f"{path}:{line}: expected userId,movieId,rating,timestamp (an integer "
                                 f"timestamp in seconds), got {row!r}") from None
    if order == "time":
        out.sort(key=lambda r: r[3])   # stable: equal timestamps keep the file's order
    return out


def replay(ratings, producer, topic: str, rate: float, clock=time.monotonic, sleep=time.sleep) -> int:
    """Produce ``ratings`` to ``topic`` at ``rate`` records/s (0: unpaced); return how many were sent.

    The pace is kept against the start time (record ``i`` is sent no earlier than
    ``i / rate`` s after the first), so a slow moment is caught up rather than lost.
    """
    start = clock()
    sent = 0
    for user, movie, rating, ts in ratings:
        if rate > 0:
            due = start + sent / rate
            wait = due - clock()
            if wait > 0:
                producer.poll(0)   # serve delivery reports while waiting
                sleep(wait)
        value = f"{user},{movie},{rating},{ts}".encode()
        while True:
            try:
                producer.produce(topic, value, movie.encode(), timestamp=ts * 1000)
                break
            except BufferError:   # librdkafka's queue is full: let deliveries drain
                producer.poll(0.05)
        sent += 1
    return sent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Replay MovieLens ratings into Kafka at a given rate, "
                                            "event time = the rating's timestamp.")
    p.add_argument("--bootstrap-servers", required=True, help="host:port[,host:port] of the brokers")
    p.add_argument("--topic", required=True, help="the topic (must exist)")
    p.add_argument("--rate", type=float, default=1000.0,
                   help="records per second (default 1000; 0: as fast as possible)")
    p.add_argument("--input", default=DEFAULT_INPUT, help="MovieLens ratings.csv (default: the bundled one)")
    p.add_argument("--limit", type=int, default=None, help="send only the first N ratings (in --order)")
    p.add_argument("--order", choices=["time", "file"], default="time",
                   help="event-time order (default) or the file's order")
    args = p.parse_args(argv)
    if args.rate < 0:
        p.error(f"--rate must be >= 0 records/s, got {args.rate}")
    if args.limit is not None and args.limit < 0:
        p.error(f"--limit must be >= 0, got {args.limit}")
    try:
        from confluent_kafka import KafkaException, Producer
    except ImportError:
        print("Error: replay_ratings.py needs confluent-kafka: pip install 'emrflow[kafka]'", file=sys.stderr)
        return 1
    try:
        ratings = read_ratings(args.input, args.order)
    except (OSError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    if args.limit is not None:
        ratings = ratings[:args.limit]
    failed: list[str] = []

    def on_delivery(err, msg):
        if err is not None and len(failed) < 5:
            failed.append(err.str())

    producer = Producer({"bootstrap.servers": args.bootstrap_servers, "linger.ms": 5, "enable.idempotence": True,
                         "on_delivery": on_delivery})
    try:
        md = producer.list_topics(args.topic, timeout=15)
    except KafkaException as exc:
        print(f"Error: cannot reach the brokers at {args.bootstrap_servers} (--bootstrap-servers): {exc}",
              file=sys.stderr)
        return 1
    t = md.topics.get(args.topic)
    if t is None or t.error is not None:
        print(f"Error: topic {args.topic!r} (--topic) does not exist on {args.bootstrap_servers}; create it first",
              file=sys.stderr)
        return 1
    t0 = time.monotonic()
    sent = replay(ratings, producer, args.topic, args.rate)
    left = producer.flush(60)
    seconds = time.monotonic() - t0
    if failed or left:
        print(f"Error: {len(failed) or left} record(s) not delivered to {args.topic!r}: "
              f"{'; '.join(failed) or 'flush timed out'}", file=sys.stderr)
        return 1
    print(f"sent {sent} ratings to {args.topic!r} in {seconds:.2f} s ({sent / max(seconds, 1e-9):.0f} records/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
