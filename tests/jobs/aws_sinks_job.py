"""A streaming job for the AWS sink tests: a running count per key, to DynamoDB and/or Kinesis.

Reads ``--count`` generated records ``i`` (key ``i % --keys``) at most ``--rate`` records per
second per source subtask, keeps a count per key in keyed state and emits ``(key, n)`` for
every record. With ``--table`` every ``(key, n)`` becomes the item
``{"pk": "k<key % 37>", "sk": key // 37, "count": n, "ratio": n / 4, "tags": [...]}`` of
that DynamoDB table (a composite primary key); a correct run ends with the item of key ``k``
holding ``count = n_k`` (the number of records of ``k``), whatever the interleaving. With
``--stream`` every ``(key, n)`` goes to that Kinesis stream as JSON ``[key,n]`` with the
partition key ``"key-<key>"``: a correct run writes each ``[k,c]`` for ``c`` in ``1..n_k``,
once without failures, at least once with a failover.
"""

import argparse

from checkpointed_count import Count  # a neighbour: the running count per key, emitting (key, n)

from emrflow.api.environment import StreamExecutionEnvironment
from emrflow.connectors.dynamodb import DynamoDbSink
from emrflow.connectors.kinesis import KinesisSink
from emrflow.testing import GeneratedSource

SPREAD = 37


def item(record):
    key, n = record
    return {"pk": f"k{key % SPREAD}", "sk": key // SPREAD, "count": n, "ratio": n / 4,
            "tags": ["even" if n % 2 == 0 else "odd", str(key)]}


def partition_key(record):
    return f"key-{record[0]}"


def build(env, count, keys, rate=None, table=None, stream=None, endpoint_url=None, batch=256,
          kinesis_batch=500):
    source = GeneratedSource(count, lambda i: i % keys, batch_size=batch, rate=rate)
    counts = (env.from_source(source, source_name="numbers").uid("numbers")
              .key_by(lambda k: k)
              .process(Count()).uid("count").name("count"))
    if table:
        counts.sink_to(DynamoDbSink(table, item, endpoint_url=endpoint_url)).uid("dynamodb").name("dynamodb")
    if stream:
        counts.sink_to(KinesisSink(stream, partition_key, endpoint_url=endpoint_url,
                                   max_batch_records=kinesis_batch)).uid("kinesis").name("kinesis")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--rate", type=float, default=None, help="records/s per source subtask")
    p.add_argument("--table", default=None)
    p.add_argument("--stream", default=None)
    p.add_argument("--endpoint-url", default=None, help="else AWS_ENDPOINT_URL")
    p.add_argument("--kinesis-batch", type=int, default=500, help="records per PutRecords request")
    args = p.parse_args()
    env = StreamExecutionEnvironment.get_execution_environment()
    build(env, args.count, args.keys, args.rate, args.table, args.stream, args.endpoint_url, batch=64,
          kinesis_batch=args.kinesis_batch)
    env.execute("aws sinks")


if __name__ == "__main__":
    main()
