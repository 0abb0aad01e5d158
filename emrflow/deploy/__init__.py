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


def execute_job(job_graph, config, context=None):
    """Execute ``job_graph`` on the target named by ``execution.target``.

    Args:
        job_graph: the :class:`~emrflow.graph.jobgraph.JobGraph`.
        config: the job's :class:`~emrflow.config.Configuration`.
        context: the launcher's :class:`~emrflow.api.environment.ExecutionContext`, or ``None``.

    Returns:
        The :class:`~emrflow.api.environment.JobExecutionResult`.

    Raises:
        ConfigError: the target is unknown.
    """
    target = str(config.get("execution.target"))
    spec = TARGETS.get(target)
    if spec is None:
        raise ConfigError(f"unknown execution target {target!r}; known targets: "
                          f"{', '.join(known_targets())}", key="execution.target")
    if context is not None and context.dry_run and not target.startswith("yarn"):
        from emrflow.api.environment import JobExecutionResult
        print(job_graph.to_json())
        return JobExecutionResult(job_id="dry-run", job_name=job_graph.name, net_runtime_ms=0)
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)(job_graph, config, context)
