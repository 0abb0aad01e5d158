"""A small job for the output-integrity fault-injection tests: lines in, one record per line out.

Reads the text lines of ``--input``, turns line ``s`` into ``(s, len(s))`` (sleeping
``--sleep-ms`` per 100 records, so that a kill lands while records flow) and writes them
with ``--sink text`` (``TextFileSink``: ``str`` of the tuple) or ``--sink csv``
(``CsvFileSink``: ``s,len`` lines), overwriting ``--output``. The plain-Python reference
is in tests/integration/test_output_integrity.py.
"""

import argparse
import time

from emrflow import RuntimeExecutionMode, StreamExecutionEnvironment
from emrflow.connectors.files import CsvFileSink, TextFileSink, TextFileSource, WriteMode


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--sink", choices=["text", "csv"], required=True)
    p.add_argument("--sleep-ms", type=float, default=0.0)
    args = p.parse_args()
    pause = args.sleep_ms / 1000.0

    seen = [0]

    def measure(line: str) -> tuple:
        seen[0] += 1
        if pause and seen[0] % 100 == 0:
            time.sleep(pause)
        return (line, len(line))

    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(RuntimeExecutionMode.BATCH)
    sink = (TextFileSink(args.output, write_mode=WriteMode.OVERWRITE) if args.sink == "text"
            else CsvFileSink(args.output, write_mode=WriteMode.OVERWRITE))
    env.from_source(TextFileSource(args.input), source_name="lines").map(measure).sink_to(sink)
    env.execute("integrity")


if __name__ == "__main__":
    main()
