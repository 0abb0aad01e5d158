"""Word count: how often every word occurs in a text.

Words are maximal runs of the ASCII letters ``a-z`` after lower-casing. The
output is CSV part files with the header ``word,count``.

    emrflow run -p 2 examples/word_count.py --input ../shared/data/shakespeare/t8.shakespeare.txt \\
        --output out/word-count --overwrite

Shakespeare's text is not bundled (its Project Gutenberg edition restricts
redistribution); without ``--input`` the job reads
``../shared/data/shakespeare/t8.shakespeare.txt`` next to the repository if it
is there.
"""

from __future__ import annotations

import argparse
import os
import re

from emrflow import RuntimeExecutionMode, StreamExecutionEnvironment
from emrflow.connectors.files import CsvFileSink, WriteMode

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INPUT = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "shakespeare",
                                              "t8.shakespeare.txt"))
_WORD = re.compile(r"[a-z]+")


def tokenize(line: str) -> list[tuple[str, int]]:
    """``(word, 1)`` for every word of a line: runs of a-z after lower-casing."""
    return [(w, 1) for w in _WORD.findall(line.lower())]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default=DEFAULT_INPUT, help="text file or directory")
    parser.add_argument("--output", default=os.path.join("out", "word-count"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--streaming", action="store_true",
                        help="STREAMING mode: emit every updated count, not only final ones")
    args = parser.parse_args(argv)
    env = StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING if args.streaming
                         else RuntimeExecutionMode.BATCH)
    (env.read_text_file(args.input)
        .flat_map(tokenize).name("tokenize")
        .key_by(0)
        .sum(1)
        .sink_to(CsvFileSink(args.output, header=["word", "count"],
                             write_mode=WriteMode.OVERWRITE if args.overwrite else WriteMode.NO_OVERWRITE)))
    env.execute("word count")
    print(f"word counts written to {args.output}/part-*")


if __name__ == "__main__":
    main()
