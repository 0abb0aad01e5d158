"""StreamExecutionEnvironment: where a program's sources come from and where it is executed.

Mirrors Flink's (PyFlink's) ``StreamExecutionEnvironment``. The environment
collects transformations; :meth:`StreamExecutionEnvironment.execute` turns them
into a JobGraph and hands it to the deploy target named by ``execution.target``
(``local`` by default: an embedded cluster of real processes).
"""

from __future__ import annotations

import enum
from typing import Any, Iterable

from emrflow.api import transformations as T
from emrflow.api.datastream import DataStream
from emrflow.api.transformations import Transformation
from emrflow.config import Configuration
from emrflow.errors import JobGraphError
from emrflow.job import (  # noqa: F401  (the job types' former home; emrflow.job is theirs now)
    DryRunComplete,
    ExecutionContext,
    JobExecutionResult,
    OperatorMetrics,
    current_execution_context,
    reset_execution_context,
    set_execution_context,
)


class CheckpointingMode(enum.Enum):
    """The guarantee checkpoints give (Flink's ``CheckpointingMode``).

    ``EXACTLY_ONCE`` aligns checkpoint barriers at tasks with several inputs, so every
    record is reflected in the state exactly once after a restore; ``AT_LEAST_ONCE``
    does not align (less latency while a checkpoint runs), so records after a barrier
    on one input may be in the snapshot and replayed after a restore.
    """

    EXACTLY_ONCE = "EXACTLY_ONCE"
    AT_LEAST_ONCE = "AT_LEAST_ONCE"


class RuntimeExecutionMode(enum.Enum):
    """How a job runs (Flink's ``RuntimeExecutionMode``).

    STREAMING: keyed aggregations emit an updated result for every record.
    BATCH: all sources must be bounded; keyed aggregations emit one final result
    per key when the input ends. AUTOMATIC: BATCH if every source is bounded
    (always the case for this issue's sources), else STREAMING.
    """

    STREAMING = "STREAMING"
    BATCH = "BATCH"
    AUTOMATIC = "AUTOMATIC"


class _SplitSourceStream(DataStream):
    """``from_source(split_source, watermark_strategy)``: the stream after the per-split
    Timestamps/Watermarks operator, whose ``uid`` and parallelism are the source's (Flink generates
    split watermarks inside the source operator, so ``.uid()`` names the source's state)."""

    def __init__(self, env: "StreamExecutionEnvironment", t: Transformation, source_t: Transformation):
        super().__init__(env, t)
        self._source = DataStream(env, source_t)

    def uid(self, uid: str) -> "DataStream":
        self._source.uid(uid)
        return self

    def set_parallelism(self, parallelism: int) -> "DataStream":
        self._source.set_parallelism(parallelism)  # the Timestamps operator stays chained to it
        return super().set_parallelism(parallelism)


class StreamExecutionEnvironment:
    """The context a streaming or batch program is built and executed in.

    Create it with :meth:`get_execution_environment`. Settings made in code
    (``set_parallelism``) override the configuration, which in turn comes from
    ``emrflow-conf.yaml`` and ``-D``/``-p`` on the command line.
    """

    def __init__(self, configuration: Configuration | None = None):
        ctx = current_execution_context()
        base = ctx.config if ctx is not None else Configuration.load()
        if configuration is not None:
            base = base.with_overrides(configuration.explicit(), source="configuration argument")
        self._config = base
        self._context = ctx
        self._transformations: list[Transformation] = []
        self._uids: dict[str, Transformation] = {}
        self._parallelism: int | None = None
        self._max_parallelism: int | None = None
        self._runtime_mode: RuntimeExecutionMode | None = None
        self._checkpointing: dict[str, Any] = {}

    @staticmethod
    def get_execution_environment(configuration: Configuration | None = None) -> "StreamExecutionEnvironment":
        """Return a new environment for the program.

        Args:
            configuration: optional settings that override the loaded configuration.
        """
        return StreamExecutionEnvironment(configuration)

    # -- settings -----------------------------------------------------------------
    def get_config(self) -> Configuration:
        """Return the effective configuration, including settings made in code."""
        overrides: dict[str, Any] = {}
        if self._parallelism is not None:
            overrides["parallelism.default"] = self._parallelism
        if self._max_parallelism is not None:
            overrides["pipeline.max-parallelism"] = self._max_parallelism
        if self._runtime_mode is not None:
            overrides["execution.runtime-mode"] = self._runtime_mode.value
        overrides.update(self._checkpointing)
        return self._config.with_overrides(overrides, source="program") if overrides else self._config

    def enable_checkpointing(self, interval: int,
                             mode: CheckpointingMode = CheckpointingMode.EXACTLY_ONCE) -> "StreamExecutionEnvironment":
        """Take a checkpoint every ``interval`` ms (Flink's ``enableCheckpointing``); returns self.

        Sets ``execution.checkpointing.interval`` and ``execution.checkpointing.mode``.
        Checkpoints apply to STREAMING execution; where they go is ``state.checkpoints.dir``
        (a local path or s3:// URI), and a failed job restarts from the latest one
        following ``restart-strategy.type`` (``exponential-delay`` unless set).

        Args:
            interval: milliseconds between the starts of two checkpoints (>= 10).
            mode: :class:`CheckpointingMode`.

        Raises:
            ValueError: ``interval`` below 10 ms. TypeError: ``mode`` is not a CheckpointingMode.
        """
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 10:
            raise ValueError(f"checkpoint interval must be an int of at least 10 ms, got {interval!r}")
        if not isinstance(mode, CheckpointingMode):
            raise TypeError(f"enable_checkpointing expects a CheckpointingMode, got {mode!r}")
        self._checkpointing = {"execution.checkpointing.interval": interval,
                               "execution.checkpointing.mode": mode.value}
        return self

    def set_parallelism(self, parallelism: int) -> "StreamExecutionEnvironment":
        """Set the default parallelism of the job's operators; returns self."""
        if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
            raise ValueError(f"parallelism must be an int >= 1, got {parallelism!r}")
        self._parallelism = parallelism
        return self

    def get_parallelism(self) -> int:
        """Return the default parallelism (``parallelism.default`` unless set in code)."""
        return self._parallelism or int(self._config.get("parallelism.default"))

    def set_max_parallelism(self, max_parallelism: int) -> "StreamExecutionEnvironment":
        """Set the job's max parallelism, the number of key groups (default 128); returns self."""
        if not isinstance(max_parallelism, int) or not 1 <= max_parallelism <= 32768:
            raise ValueError(f"max parallelism must be an int in [1, 32768], got {max_parallelism!r}")
        self._max_parallelism = max_parallelism
        return self

    def get_max_parallelism(self) -> int:
        """Return the max parallelism (``pipeline.max-parallelism`` unless set in code)."""
        return self._max_parallelism or int(self._config.get("pipeline.max-parallelism"))

    def set_runtime_mode(self, execution_mode: RuntimeExecutionMode) -> "StreamExecutionEnvironment":
        """Choose STREAMING or BATCH execution (see :class:`RuntimeExecutionMode`); returns self."""
        if not isinstance(execution_mode, RuntimeExecutionMode):
            raise TypeError(f"set_runtime_mode expects a RuntimeExecutionMode, got {execution_mode!r}")
        self._runtime_mode = execution_mode
        return self

    def get_runtime_mode(self) -> RuntimeExecutionMode:
        """Return the runtime mode in effect (AUTOMATIC resolves to BATCH for bounded sources)."""
        mode = self._runtime_mode or RuntimeExecutionMode(self._config.get("execution.runtime-mode"))
        return RuntimeExecutionMode.BATCH if mode is RuntimeExecutionMode.AUTOMATIC else mode

    # -- sources -----------------------------------------------------------------
    def from_source(self, source, watermark_strategy=None, source_name: str | None = None) -> DataStream:
        """Create a stream from a :class:`~emrflow.connectors.base.Source`.

        Args:
            source: the source.
            watermark_strategy: a :class:`~emrflow.api.eventtime.WatermarkStrategy` to give
                records event timestamps right at the source, or ``None``.
            source_name: operator name; default ``"Source: <source's name>"``.
        """
        from emrflow.connectors.base import Source
        if not isinstance(source, Source):
            raise TypeError(f"from_source expects an emrflow Source, got {source!r}")
        t = Transformation(kind=T.SOURCE, name=source_name or f"Source: {source.default_name}",
                           function=source)
        if source.max_parallelism == 1:
            t.parallelism = 1
        self._add(t)
        stream = DataStream(self, t)
        if watermark_strategy is not None:
            stream = stream.assign_timestamps_and_watermarks(watermark_strategy)
            stream._t.parallelism = t.parallelism
            from emrflow.connectors.splits import SplitSource
            if isinstance(source, SplitSource):  # watermarks per split, inside the source (as Flink)
                stream = _SplitSourceStream(self, stream._t, t)
        return stream

    def from_collection(self, collection: Iterable[Any], type_info: Any = None) -> DataStream:
        """Create a stream of the elements of ``collection`` (a non-parallel source)."""
        from emrflow.connectors.collection import CollectionSource
        return self.from_source(CollectionSource(collection))

    def read_text_file(self, file_path: str, charset_name: str = "UTF-8") -> DataStream:
        """Create a stream of the lines of a file or of every file in a directory.

        The files are split by byte ranges among the source's subtasks.
        """
        from emrflow.connectors.files import TextFileSource
        return self.from_source(TextFileSource(file_path, encoding=charset_name))

    def read_csv(self, file_path: str, delimiter: str = ",", header: bool = False,
                 names: list[str] | None = None, types: list[Any] | None = None,
                 fail_on_bad_records: bool | None = None) -> DataStream:
        """Create a stream of tuples from CSV file(s); see :class:`~emrflow.connectors.files.CsvSource`.

        Args:
            file_path: a file or a directory of files.
            delimiter: field separator, one character (``"^"`` for the
                ``Movie^User^Rating^Timestamp`` format).
            header: the first line of each file is a header and is skipped.
            names: field names, used in error messages.
            types: converters per field (``int``, ``float``, ``str``...).
            fail_on_bad_records: make unparsable lines fatal (default: the
                ``emrflow.bad-records.fail`` option; otherwise they are skipped,
                counted and reported with file and line).
        """
        from emrflow.connectors.files import CsvSource
        return self.from_source(CsvSource(file_path, delimiter=delimiter, header=header, names=names,
                                          types=types, fail_on_bad_records=fail_on_bad_records))

    def read_json_lines(self, file_path: str, fail_on_bad_records: bool | None = None) -> DataStream:
        """Create a stream of dicts from JSON lines file(s), one JSON object per line.

        See :class:`~emrflow.connectors.formats.JsonLinesSource`: split by byte range like
        :meth:`read_text_file`; a line that is not a JSON object is skipped, counted and
        reported as ``file:line: reason`` (or fatal, as with :meth:`read_csv`).

        Args:
            file_path: a file or a directory of files, local or ``s3://``.
            fail_on_bad_records: make bad lines fatal (default: ``emrflow.bad-records.fail``).
        """
        from emrflow.connectors.formats import JsonLinesSource
        return self.from_source(JsonLinesSource(file_path, fail_on_bad_records=fail_on_bad_records))

    def read_parquet(self, file_path: str, columns: list[str] | None = None,
                     record_type: str = "dict") -> DataStream:
        """Create a stream of records from Parquet file(s), split among subtasks by row group.

        See :class:`~emrflow.connectors.formats.ParquetSource`.

        Args:
            file_path: a Parquet file or a directory of them, local or ``s3://``.
            columns: the columns to read (default all).
            record_type: ``"dict"`` (``{column: value}``) or ``"tuple"`` (column order).
        """
        from emrflow.connectors.formats import ParquetSource
        return self.from_source(ParquetSource(file_path, columns=columns, record_type=record_type))

    # -- execution -----------------------------------------------------------------
    def _add(self, t: Transformation) -> None:
        self._transformations.append(t)

    def _register_uid(self, uid: str, t: Transformation) -> None:
        if not isinstance(uid, str) or not uid:
            raise ValueError(f"uid must be a non-empty str, got {uid!r}")
        other = self._uids.get(uid)
        if other is not None and other is not t:
            raise JobGraphError(f"uid {uid!r} is used by two operators: {other.name!r} and {t.name!r}")
        self._uids[uid] = t

    def get_job_graph(self, job_name: str | None = None):
        """Return the :class:`~emrflow.graph.jobgraph.JobGraph` that ``execute`` would submit."""
        from emrflow.graph.jobgraph import build_job_graph
        config = self.get_config()
        name = job_name or config.get("pipeline.name") or "emrflow job"
        return build_job_graph(self._transformations, config, name,
                               batch=self.get_runtime_mode() is RuntimeExecutionMode.BATCH)

    def get_execution_plan(self) -> str:
        """Return the JobGraph as JSON (vertices, chained operators, edges), like Flink's plan."""
        return self.get_job_graph().to_json()

    def execute(self, job_name: str | None = None) -> JobExecutionResult:
        """Run the program and wait for it (attached), or submit it (detached, ``-d``).

        Args:
            job_name: the job's name (default: ``pipeline.name`` or ``"emrflow job"``).

        Returns:
            The :class:`JobExecutionResult`. In detached mode its ``net_runtime_ms`` is 0.

        Raises:
            JobGraphError: the program's dataflow is not valid.
            InputNotFoundError, OutputExistsError: a source or sink failed its checks.
            JobExecutionError: the job failed; carries the remote traceback.
            ClusterError: the cluster could not be started or reached.
            CheckpointError: ``execution.savepoint.path`` (``-s``) names no usable
                savepoint or checkpoint, or one that does not fit the job.

        With ``execution.savepoint.path`` the job starts from that savepoint or retained
        checkpoint (or the newest valid checkpoint of a job's checkpoint directory),
        matching operator state by ``uid`` (Flink's ``flink run -s``).
        """
        from emrflow.deploy import execute_job
        job_graph = self.get_job_graph(job_name)
        try:
            result = execute_job(job_graph, self.get_config(), self._context)
            if self._context is not None:
                self._context.results.append(result)
                if self._context.dry_run:
                    raise DryRunComplete(job_graph.name)
            return result
        finally:
            self._transformations.clear()
            self._uids.clear()
