"""Deploy targets: where the JobManager and TaskManagers run.

Targets are looked up by name (``execution.target``, ``-t``) and imported
lazily, so using one never imports another's dependencies (skein, boto3).
"""

from __future__ import annotations

import importlib

from emrflow.errors import ConfigError

#: target name -> "module:function" executing a JobGraph there
TARGETS = {
    "local": "emrflow.deploy.local:execute",
    "remote": "emrflow.deploy.rest_client:execute",
    "yarn-session": "emrflow.deploy.yarn:execute_session",
    "yarn-per-job": "emrflow.deploy.yarn:execute_per_job",
    # yarn-application runs the script in the ApplicationMaster: `emrflow run` handles it
    # before the script starts (emrflow.deploy.yarn.submit_application)
    "yarn-application": "emrflow.deploy.yarn:execute_per_job",
}


def known_targets() -> list[str]:
    """Return the names of the deploy targets this version knows."""
    return sorted(TARGETS)


def prepare_submission(job_graph, config) -> None:
    """The client's work before a job goes anywhere: file systems, restore plan, connector and storage checks.

    Configures the file systems from the job's configuration; with ``execution.savepoint.path``
    (``-s``) plans the restore (Flink's ``flink run -s``: operator state matched by ``uid``) into
    ``job_graph.restore``; checks the sources and sinks (an existing output, a missing input);
    checks that checkpoint and savepoint storage can be written.

    Args:
        job_graph: the :class:`~emrflow.graph.jobgraph.JobGraph` (its ``restore`` is set).
        config: the job's :class:`~emrflow.config.Configuration`.

    Raises:
        CheckpointError: ``execution.savepoint.path`` names no usable savepoint or checkpoint,
            or one that does not fit the job.
        InputNotFoundError, OutputExistsError: a source or sink failed its checks.
        ConfigError, StorageError: checkpoint or savepoint storage is unsupported or not writable.
    """
    from emrflow.fs import FileSystem
    file_system = FileSystem.of(config)
    savepoint = config.get("execution.savepoint.path")
    if savepoint:
        from emrflow.runtime.checkpoint import find_latest_valid, plan_restore
        meta = find_latest_valid(file_system, savepoint)
        job_graph.restore = plan_restore(
            meta, job_graph.topology(), bool(config.get("execution.savepoint.ignore-unclaimed-state")))
    job_graph.validate_connectors(sinks=not savepoint)
    if job_graph.topology().get("checkpointing"):
        base = config.get("state.checkpoints.dir")
        if base:  # the default is a local temporary directory
            file_system.check_storage(str(base), "state.checkpoints.dir")
    if config.get("state.savepoints.dir"):
        file_system.check_storage(str(config.get("state.savepoints.dir")), "state.savepoints.dir")


def execute_job(job_graph, config, context=None):
    """Prepare ``job_graph`` (:func:`prepare_submission`) and execute it on the target named by
    ``execution.target``; under a dry run print the JobGraph (or, for YARN, the application spec).

    Args:
        job_graph: the :class:`~emrflow.graph.jobgraph.JobGraph`.
        config: the job's :class:`~emrflow.config.Configuration`.
        context: the launcher's :class:`~emrflow.job.ExecutionContext`, or ``None``.

    Returns:
        The :class:`~emrflow.job.JobExecutionResult`.

    Raises:
        ConfigError: the target is unknown.
        JobExecutionError: the job failed; carries the remote traceback.
        ClusterError: the cluster could not be started or reached.
        and what :func:`prepare_submission` raises.
    """
    prepare_submission(job_graph, config)
    target = str(config.get("execution.target"))
    spec = TARGETS.get(target)
    if spec is None:
        raise ConfigError(f"unknown execution target {target!r}; known targets: "
                          f"{', '.join(known_targets())}", key="execution.target")
    if context is not None and context.dry_run and not target.startswith("yarn"):
        from emrflow.job import JobExecutionResult
        print(job_graph.to_json())
        return JobExecutionResult(job_id="dry-run", job_name=job_graph.name, net_runtime_ms=0)
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)(job_graph, config, context)
