"""How a JobGraph travels to the TaskManagers: cloudpickle, with the user's code kept traceable.

cloudpickle ships the functions of the job script (``__main__``) and of the job's
own modules *by value*: their code objects travel inside the pickle. Releases 3.1
and later rename every such code object's file to ``"<dynamic-code>"``, and a
TaskManager whose working directory is not the client's (a standalone cluster, a
YARN container) could not read the user's source lines anyway. So
:func:`dumps_job_graph` pickles code objects itself: with :mod:`marshal` (the
format of ``.pyc`` files, which keeps ``co_filename``, line numbers and nested
code exactly as the client compiled them) together with the text of their source
file as the client read it. Unpickling (plain :func:`pickle.loads` is enough)
restores each code object and puts its source text into :mod:`linecache` of the
loading process, so a traceback there names the user's file as the client knew
it (the path given to ``emrflow run`` or ``python``), the line number and the
source line. Nothing depends on what cloudpickle does with ``co_filename``.

Like every pickle of code, the bytes load only in the same Python minor version
(3.11 to 3.11): a cluster runs the client's Python.
"""

from __future__ import annotations

import io
import linecache
import marshal
import os
import sys
import sysconfig
import types

import cloudpickle

_SKIP_PREFIXES = tuple({os.path.realpath(p) for p in (
    sysconfig.get_paths().get("stdlib", ""), sysconfig.get_paths().get("purelib", ""),
    sysconfig.get_paths().get("platlib", ""), sys.prefix, sys.base_prefix) if p})
_EMRFLOW_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_REGISTERED: set[str] = set()


def ship_user_modules_by_value() -> list[str]:
    """Make cloudpickle ship the job's own modules by value.

    The job script (``__main__``) is always pickled by value. Functions from other
    modules are pickled by reference, which works on a TaskManager only if the
    module is installed there. So every imported top-level module that is *not*
    installed (not under the interpreter's prefix or site-packages, and not
    emrflow itself), such as a helper module next to the job script, is
    registered to travel by value.

    Returns:
        The names of the modules registered by this call.
    """
    names = []
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if not f or name == "__main__" or "." in name or name in _REGISTERED:
            continue
        real = os.path.realpath(f)
        if real.startswith(_EMRFLOW_DIR + os.sep) or real.startswith(_SKIP_PREFIXES):
            continue
        try:
            cloudpickle.register_pickle_by_value(mod)
        except (ValueError, TypeError):
            continue
        _REGISTERED.add(name)
        names.append(name)
    return names


def dumps_job_graph(job_graph) -> bytes:
    """Pickle a JobGraph (or any object holding user code) for the TaskManagers.

    Registers the job's own modules to travel by value
    (:func:`ship_user_modules_by_value`), then pickles with cloudpickle, except
    that code objects keep their file name and carry their source text (see the
    module's docstring).

    Args:
        job_graph: the :class:`~emrflow.graph.jobgraph.JobGraph`.

    Returns:
        The pickle (protocol 5); :func:`pickle.loads` or ``cloudpickle.loads`` loads it.

    Raises:
        pickle.PicklingError: something in the job cannot be pickled.
    """
    ship_user_modules_by_value()
    buf = io.BytesIO()
    _CodeKeepingPickler(buf, protocol=5).dump(job_graph)
    return buf.getvalue()


class _CodeKeepingPickler(cloudpickle.Pickler):
    """cloudpickle's pickler, but code objects go through :func:`_reduce_code`."""

    def __init__(self, file, protocol: int = 5):
        super().__init__(file, protocol=protocol)
        self._sources: dict[str, str | None] = {}

    def reducer_override(self, obj):
        if type(obj) is types.CodeType:
            return _load_code, (marshal.dumps(obj), obj.co_filename, self._source_of(obj.co_filename))
        return super().reducer_override(obj)

    def _source_of(self, filename: str) -> str | None:
        # one str object per file: the pickle memo ships each file's text once
        if filename not in self._sources:
            lines = linecache.getlines(filename) if not filename.startswith("<") else []
            self._sources[filename] = "".join(lines) or None
        return self._sources[filename]


_remembered: dict[str, str] = {}


def _load_code(data: bytes, filename: str, source: str | None) -> types.CodeType:
    """Unpickle a code object pickled by :class:`_CodeKeepingPickler`; remember its source."""
    if source is not None and (_remembered.get(filename) is not source or filename not in linecache.cache):
        remember_source(filename, source)
        _remembered[filename] = source
    return marshal.loads(data)


def remember_source(filename: str, source: str) -> None:
    """Make ``source`` the text of ``filename`` for :mod:`linecache` (so for tracebacks).

    The entry carries no modification time, so :func:`linecache.checkcache` keeps it
    even where no file of that name exists (a TaskManager on another host or in
    another working directory).

    Args:
        filename: the file name the code objects carry (``co_filename``).
        source: the file's text.
    """
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    linecache.cache[filename] = (len(source), None, lines, filename)
