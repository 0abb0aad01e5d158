"""emrflow: Apache Flink's DataStream model in pure Python, from a laptop to YARN and Amazon EMR.

The public API mirrors PyFlink's names::

    from emrflow import StreamExecutionEnvironment, RuntimeExecutionMode

Submodules: :mod:`emrflow.api` (what programs use), :mod:`emrflow.graph`
(JobGraph), :mod:`emrflow.runtime` (JobManager, TaskManagers, tasks),
:mod:`emrflow.connectors`, :mod:`emrflow.deploy`, :mod:`emrflow.config`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from emrflow.api.aggregates import Avg, Count, Max, Min, Sum  # noqa: E402
from emrflow.api.datastream import DataStream, DataStreamSink, KeyedStream  # noqa: E402
from emrflow.api.environment import (  # noqa: E402
    CheckpointingMode,
    JobExecutionResult,
    RuntimeExecutionMode,
    StreamExecutionEnvironment,
)
from emrflow.api.functions import (  # noqa: E402
    FilterFunction,
    FlatMapFunction,
    KeyedProcessFunction,
    KeySelector,
    MapFunction,
    ProcessFunction,
    ReduceFunction,
    RuntimeContext,
    SinkFunction,
)
from emrflow.api.state import ValueState, ValueStateDescriptor  # noqa: E402

__all__ = [
    "Avg", "Count", "Max", "Min", "Sum",
    "CheckpointingMode", "DataStream", "DataStreamSink", "KeyedStream", "JobExecutionResult",
    "RuntimeExecutionMode",
    "StreamExecutionEnvironment", "FilterFunction", "FlatMapFunction", "KeyedProcessFunction",
    "KeySelector", "MapFunction", "ProcessFunction", "ReduceFunction", "RuntimeContext",
    "SinkFunction", "ValueState", "ValueStateDescriptor", "__version__",
]
