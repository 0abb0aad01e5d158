"""emrflow.graph.pickling: user code keeps its file name and source lines, whatever cloudpickle does."""

from __future__ import annotations

import linecache
import os
import pickle
import shutil
import subprocess
import sys
import traceback

import cloudpickle

from emrflow.graph.pickling import dumps_job_graph

SOURCE = '''\
import math

def scale(v):
    return helper(v) * 2

def helper(v):
    return math.sqrt(v)  # raises for v < 0

class Parser:
    def parse(self, text):
        return int(text)  # raises for "x"
'''


def user_namespace(filename: str) -> dict:
    """Functions compiled from SOURCE, written to ``filename``, in a module no process can import."""
    if not filename.startswith("<"):
        os.makedirs(os.path.dirname(filename), exist_ok=True)
        with open(filename, "w") as f:
            f.write(SOURCE)
    ns = {"__name__": "emrflow_test_not_importable"}
    exec(compile(SOURCE, filename, "exec"), ns)
    return ns


def line_of(marker: str) -> tuple[int, str]:
    """1-based number and stripped text of the line of SOURCE containing ``marker``."""
    for i, line in enumerate(SOURCE.splitlines(), 1):
        if marker in line:
            return i, line.strip()
    raise AssertionError(marker)


def frames_of(exc: BaseException) -> list[tuple[str, int, str, str]]:
    return [(f.filename, f.lineno, f.name, f.line) for f in traceback.extract_tb(exc.__traceback__)]


def test_code_keeps_file_line_and_source_after_unpickling(tmp_path):
    filename = str(tmp_path / "gone" / "my_job.py")
    ns = user_namespace(filename)
    data = dumps_job_graph({"f": ns["scale"], "parser": ns["Parser"]()})
    shutil.rmtree(tmp_path / "gone")  # the text must travel in the pickle
    linecache.cache.pop(filename, None)
    loaded = pickle.loads(data)  # plain pickle is enough
    assert loaded["f"] is not ns["scale"]
    try:
        loaded["f"](-1.0)
    except ValueError as exc:
        frames = frames_of(exc)[1:]  # [0] is this test
    else:
        raise AssertionError("expected ValueError")
    assert frames == [(filename, *line_of("return helper(v)")[:1], "scale", line_of("return helper(v)")[1]),
                      (filename, *line_of("raises for v < 0")[:1], "helper", line_of("raises for v < 0")[1])]
    try:
        loaded["parser"].parse("x")
    except ValueError as exc:
        frames = frames_of(exc)[1:]
    else:
        raise AssertionError("expected ValueError")
    assert frames == [(filename, *line_of('raises for "x"')[:1], "parse", line_of('raises for "x"')[1])]
    assert loaded["f"](4.0) == 4.0


def test_another_process_shows_the_source(tmp_path):
    """A fresh interpreter (as a slot is) where the file does not exist prints the user's lines."""
    filename = str(tmp_path / "gone" / "my_job.py")
    ns = user_namespace(filename)
    (tmp_path / "job.pkl").write_bytes(dumps_job_graph(ns["scale"]))
    shutil.rmtree(tmp_path / "gone")
    script = ("import pickle, sys, traceback\n"
              "f = pickle.loads(open(sys.argv[1], 'rb').read())\n"
              "try:\n    f(-1.0)\nexcept ValueError:\n    traceback.print_exc()\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "job.pkl")], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lineno, text = line_of("raises for v < 0")
    assert f'File "{filename}", line {lineno}, in helper\n    {text}\n' in proc.stderr
    lineno, text = line_of("return helper(v)")
    assert f'File "{filename}", line {lineno}, in scale\n    {text}\n' in proc.stderr


def test_plain_cloudpickle_still_loads_what_it_made():
    """The runtime loads with cloudpickle/pickle; a payload of plain cloudpickle keeps working."""
    ns = user_namespace("<not a file>")
    assert pickle.loads(cloudpickle.dumps(ns["scale"]))(16.0) == 8.0
    assert pickle.loads(dumps_job_graph(ns["scale"]))(16.0) == 8.0
