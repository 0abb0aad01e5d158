"""Sinks that call code instead of writing files: ``print()`` and ``add_sink(fn)``."""

from __future__ import annotations

import sys
from typing import Any

from emrflow.api.functions import Function, RuntimeContext, SinkFunction
from emrflow.connectors.base import Sink, SinkWriter, SubtaskContext


class _PrintWriter(SinkWriter):
    def __init__(self, prefix: str):
        self._prefix = prefix

    def write_batch(self, records: list) -> None:
        p = self._prefix
        sys.stdout.write("".join(f"{p}{r}\n" for r in records))

    def prepare_commit(self) -> Any:
        sys.stdout.flush()
        return None


class PrintSink(Sink):
    """Prints ``str(record)`` lines on the TaskManager's standard output (Flink's ``PrintSink``).

    Lines start with ``<identifier>:`` if an identifier is given and with
    ``<subtask index + 1>> `` when the sink's parallelism is above 1, as in Flink.
    In the ``local`` target the TaskManagers share the client's standard output.

    Args:
        sink_identifier: optional prefix that tells several print sinks apart.
    """

    default_name = "Print to Std. Out"

    def __init__(self, sink_identifier: str | None = None):
        self.sink_identifier = sink_identifier

    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        prefix = f"{self.sink_identifier}:" if self.sink_identifier else ""
        if ctx.parallelism > 1:
            prefix += f"{ctx.subtask_index + 1}> "
        elif prefix:
            prefix += " "
        return _PrintWriter(prefix)


class _FunctionWriter(SinkWriter):
    def __init__(self, fn: Any, ctx: SubtaskContext):
        self._fn = fn
        if isinstance(fn, SinkFunction):
            fn.open(RuntimeContext(ctx.operator_name, ctx.subtask_index, ctx.parallelism,
                                   int(ctx.config.get("pipeline.max-parallelism")),
                                   ctx.attempt, ctx.config))
            self._call = fn.invoke
        else:
            self._call = fn

    def write_batch(self, records: list) -> None:
        call = self._call
        for r in records:
            call(r)

    def prepare_commit(self) -> Any:
        if isinstance(self._fn, Function):
            self._fn.close()
        return None

    def abort(self) -> None:
        if isinstance(self._fn, Function):
            self._fn.close()


class FunctionSink(Sink):
    """Calls a :class:`SinkFunction` (or a plain callable) for every record.

    What the function does is outside emrflow's commit protocol, so its effects
    are at-least-once, as with Flink's ``SinkFunction``.
    """

    default_name = "Unnamed"

    def __init__(self, fn: Any):
        self.fn = fn

    def create_writer(self, ctx: SubtaskContext) -> SinkWriter:
        return _FunctionWriter(self.fn, ctx)
