"""A job for the Kafka sink tests: the numbers 0 .. --count-1 written to Kafka as decimal text.

Each number ``i`` becomes one Kafka record with value ``str(i)`` and key ``str(i % 7)``,
so a correct run leaves exactly ``{"0", ..., str(count - 1)}`` in the topic, each once with
exactly-once; a lost record leaves a number out, a replayed one shows it twice. With
``--topics A,B`` even numbers go to A and odd ones to B (the topic function).

``--kill-on-commit FLAG`` kills subtask 0's TaskManager (SIGKILL, the TaskManager process and
its slot) at the worst moment for an exactly-once sink, once: a checkpoint has completed and
its notice arrived, the writer holds that checkpoint's pre-committed transaction and has not
committed it yet. FLAG is created first, so the restarted job runs through.
"""

import argparse
import os
import signal

from emrflow.api.environment import RuntimeExecutionMode, StreamExecutionEnvironment
from emrflow.connectors.kafka import KafkaSink
from emrflow.testing import GeneratedSource


class KillOnCommitSink(KafkaSink):
    """A KafkaSink whose subtask 0 kills its own TaskManager before its first commit of checkpoint >= 2."""

    def __init__(self, flag: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.flag = flag

    def create_writer(self, ctx):
        writer = super().create_writer(ctx)
        flag, commit = self.flag, writer.notify_checkpoint_complete

        def notify_checkpoint_complete(checkpoint_id):
            if (ctx.subtask_index == 0 and checkpoint_id >= 2 and writer._pending
                    and not os.path.exists(flag)):
                open(flag, "w").close()
                with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
                    if b"emrflow.runtime.taskmanager" in f.read():
                        os.kill(os.getppid(), signal.SIGKILL)
                os.kill(os.getpid(), signal.SIGKILL)
            commit(checkpoint_id)

        writer.notify_checkpoint_complete = notify_checkpoint_complete
        return writer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topics", required=True, help="one topic, or two comma-separated: even,odd")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float, default=None, help="records/s per source subtask")
    p.add_argument("--guarantee", default="exactly-once")
    p.add_argument("--batch", action="store_true", help="BATCH runtime mode (no checkpoints)")
    p.add_argument("--kill-on-commit", default=None, metavar="FLAG")
    args = p.parse_args()
    topics = args.topics.split(",")
    env = StreamExecutionEnvironment.get_execution_environment()
    if args.batch:
        env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    if len(topics) == 1:
        topic, marker = topics[0], None
    else:
        even, odd = topics
        topic, marker = (lambda i: even if i % 2 == 0 else odd), even
    options = {}
    make = KafkaSink
    if args.kill_on_commit:
        make, options = KillOnCommitSink, {"flag": args.kill_on_commit}
    sink = make(topic=topic, bootstrap_servers=args.bootstrap, key_serializer=lambda i: str(i % 7).encode(),
                value_serializer=lambda i: str(i).encode(), delivery_guarantee=args.guarantee,
                marker_topic=marker if args.guarantee == "exactly-once" else None, **options)
    source = GeneratedSource(args.count, batch_size=100, rate=args.rate)
    (env.from_source(source, source_name="numbers").uid("numbers")
        .map(lambda i: i).uid("identity")
        .sink_to(sink).uid("kafka"))
    env.execute("numbers to kafka")


if __name__ == "__main__":
    main()
