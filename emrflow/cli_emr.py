"""``emrflow create-cluster / add-step / run-transient / ...``: Amazon EMR commands over :mod:`emrflow.deploy.emr`.

Every input is validated before the first AWS call; errors print as
``Error: <message>`` and exit 1 (through :class:`~emrflow.cli_common.EmrflowGroup`). Progress
goes to stderr, results to stdout.
"""

from __future__ import annotations

import json
import sys
import time

import click

from emrflow.cli_common import CONFIG_FLAGS, dynamic_option


def _progress(line: str) -> None:
    click.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True)


def _aws_options(f):
    f = click.option("--endpoint-url", default=None, envvar="AWS_ENDPOINT_URL",
                     help="AWS endpoint (default $AWS_ENDPOINT_URL).")(f)
    f = click.option("--region", default=None, help="AWS region (default: the profile's or $AWS_DEFAULT_REGION).")(f)
    f = click.option("--profile", default=None, help="AWS profile (default: the standard credential chain).")(f)
    return f


def _session(profile, region, endpoint_url):
    from emrflow.deploy.emr import EmrSession
    return EmrSession(profile, region, endpoint_url)


def _spec_options(f):
    for opt in reversed([
        click.option("--config", "config_file", required=True, type=click.Path(dir_okay=False),
                     help="Cluster spec: a YAML file (configs/emr-batch.yaml) or a packaged "
                          "template's name (emr-batch, emr-streaming; `emrflow resources configs`)."),
        click.option("--name", default=None, help="Cluster name."),
        click.option("--release-label", default=None, help="EMR release label, e.g. emr-7.1.0."),
        click.option("--instance-type", default=None, help="EC2 instance type of every instance group."),
        click.option("--core-instance-count", type=int, default=None,
                     help="Instances in the CORE group (0: one-node cluster)."),
        click.option("--log-uri", default=None, help="S3 URI for the cluster's logs."),
        click.option("--s3-staging", "staging_uri", default=None,
                     help="S3 URI for the wheel, bootstrap scripts and job scripts."),
        click.option("--wheel", default=None,
                     help="emrflow for the nodes: a built wheel (path or s3:// URI), or `index` for "
                          "this version from the package index; default: this emrflow, staged under "
                          "wheels/<sha256>/ (the installed package repacked, or a checkout built)."),
    ]):
        f = opt(f)
    return f


def _load_spec(config_file, name, release_label, instance_type, core_instance_count, log_uri, staging_uri):
    from emrflow.deploy.emr import load_cluster_spec
    return load_cluster_spec(config_file, name=name, release_label=release_label,
                             instance_type=instance_type, core_instance_count=core_instance_count,
                             log_uri=log_uri, staging_uri=staging_uri)


def _job_args(job_args: tuple[str, ...], command: str) -> list[str]:
    """The job's own arguments: everything after JOB, as Flink passes everything after the JAR.

    emrflow's options go before JOB. An emrflow option that makes a difference between
    calling AWS or not, ``--dry-run``, given after JOB is refused rather than silently handed
    to the job (which would mean a real call): the job gets it only after a ``--``, which is
    dropped (``JOB --input x -- --dry-run`` gives the job ``--input x --dry-run``).

    Raises:
        click.UsageError: ``--dry-run`` among the job's arguments before any ``--``.
    """
    args = list(job_args)
    sep = args.index("--") if "--" in args else len(args)
    if "--dry-run" in args[:sep]:
        raise click.UsageError(
            f"--dry-run after JOB would go to the job, and `emrflow {command}` would call AWS: "
            f"put emrflow's --dry-run before JOB (emrflow {command} --dry-run ... JOB), or, if it is the "
            f"job's own option, after `--` (JOB ... -- --dry-run)")
    return args[:sep] + args[sep + 1:]


#: --log-wait default: a bit more than the 5 minutes between EMR's copies of logs to S3
LOG_WAIT_S = 330

_log_wait_option = click.option(
    "--log-wait", "log_wait", type=click.FloatRange(min=0), default=LOG_WAIT_S, show_default=True,
    help="On failure, seconds to wait for the step's and its YARN containers' logs to reach S3 "
         "(EMR copies them about every 5 minutes); 0 looks once.")


def _table(rows: list[list], headers: list[str]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def _ts(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if hasattr(value, "strftime") else (str(value) if value else "-")


@click.command("create-cluster")
@_spec_options
@click.option("--dry-run", is_flag=True, help="Print the RunJobFlow request and the aws CLI line; call nothing.")
@click.option("--wait", is_flag=True, help="Return once the cluster is WAITING (ready for steps).")
@click.option("--timeout", type=click.IntRange(min=1), default=3600, help="--wait limit, seconds.")
@click.option("--poll", type=click.FloatRange(min=0.01), default=30.0, help="Seconds between polls.")
@_aws_options
def create_cluster(config_file, name, release_label, instance_type, core_instance_count, log_uri,
                   staging_uri, wheel, dry_run, wait, timeout, poll, profile, region, endpoint_url) -> None:
    """Create an EMR cluster from a cluster spec (RunJobFlow); print its id.

    Validates the spec, makes the wheel of this emrflow (unless --wheel), checks every local
    file, uploads the wheel (under a content-addressed key) and the bootstrap scripts under
    the staging URI, then calls RunJobFlow, like `aws emr create-cluster`. --dry-run prints
    the request as JSON and the equivalent aws CLI line, and builds and uploads nothing.
    """
    from emrflow.deploy import emr
    from emrflow.deploy.emr import launch as emr_launch
    spec = _load_spec(config_file, name, release_label, instance_type, core_instance_count,
                      log_uri, staging_uri)
    with _session(profile, region, endpoint_url) as session:
        launch = emr_launch.create_cluster(spec, session, staging_uri=staging_uri, wheel=wheel, dry_run=dry_run,
                                           progress=_progress)
        if launch.cluster_id is None:
            click.echo(json.dumps(launch.request, indent=2))
            click.echo(emr.aws_cli_command(launch.request, profile=profile, region=region,
                                           endpoint_url=endpoint_url))
            return
        click.echo(launch.cluster_id)
        if wait:
            emr.wait_for_cluster(session, launch.cluster_id, timeout_s=timeout, poll_s=poll, progress=_progress)


@click.command("add-step", context_settings={"allow_interspersed_args": False})
@click.option("--cluster-id", required=True, help="The cluster, j-....")
@click.option("--name", default=None, help="Step name (default: emrflow <script>).")
@click.option("--action-on-failure", type=click.Choice(["CONTINUE", "CANCEL_AND_WAIT", "TERMINATE_CLUSTER"]),
              default="CONTINUE", show_default=True)
@click.option("--s3-staging", "staging_uri", default=None, help="S3 URI the job script is uploaded under.")
@CONFIG_FLAGS["parallelism"].option("parallelism", help="Job parallelism (the step's -p, parallelism.default).")
@dynamic_option("emrflow configuration of the step's `emrflow run`; repeatable.")
@click.option("-t", "--target", type=click.Choice(["yarn-per-job", "yarn-session", "yarn-application"]),
              default="yarn-per-job", show_default=True,
              help="emrflow run -t on the cluster; yarn-session needs an earlier --yarn-session step.")
@click.option("--yarn-session", is_flag=True, help="Add a step starting a detached YARN session instead of a job.")
@click.option("--taskmanagers", type=click.IntRange(min=0), default=1, help="--yarn-session: TaskManagers.")
@click.option("--slots", type=click.IntRange(min=1), default=None, help="--yarn-session: slots per TaskManager.")
@click.option("--dry-run", is_flag=True,
              help="Print the AddJobFlowSteps request and the aws CLI line (steps/*.json shape); "
                   "upload and call nothing.")
@click.option("--wait", is_flag=True, help="Follow the step to its end; diagnose a failure from its logs.")
@click.option("--timeout", type=click.IntRange(min=1), default=86400, help="--wait limit, seconds.")
@click.option("--poll", type=click.FloatRange(min=0.01), default=15.0, help="Seconds between polls.")
@_log_wait_option
@_aws_options
@click.argument("job", required=False)
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED)
def add_step(cluster_id, name, action_on_failure, staging_uri, parallelism, dynamic, target, yarn_session,
             taskmanagers, slots, dry_run, wait, timeout, poll, log_wait, profile, region, endpoint_url, job,
             job_args) -> None:
    """Add a step running JOB (local path or s3:// URI) with `emrflow run -t TARGET`; print its id.

    EMR's AddJobFlowSteps with a command-runner.jar step, like `aws emr add-steps`
    (templates: steps/). A local JOB is uploaded under --s3-staging first; JOB_ARGS
    follow JOB unchanged, except that --dry-run there is refused (emrflow's options go
    before JOB; the job's own --dry-run goes after `--`, which is dropped).
    --yarn-session adds a step starting a detached YARN session instead. With --wait,
    a failed step exits 1 with the tail of its logs (and of its YARN containers' logs).
    """
    from emrflow.deploy import emr
    from emrflow.deploy.emr import launch
    emr.check_cluster_id(cluster_id)
    if yarn_session and job:
        raise click.UsageError("--yarn-session takes no JOB")
    if not yarn_session and not job:
        raise click.UsageError("missing JOB (or --yarn-session)")
    if not yarn_session and not job.startswith("s3://") and not staging_uri:
        raise click.UsageError("--s3-staging s3://bucket/prefix is needed to upload a local JOB")
    args = [] if yarn_session else _job_args(job_args, "add-step")
    session = None if dry_run else _session(profile, region, endpoint_url)
    try:
        result = launch.add_job_step(
            cluster_id, job, args, session, staging_uri=staging_uri, name=name, parallelism=parallelism,
            dynamic=dynamic, action_on_failure=action_on_failure, target=target, yarn_session=yarn_session,
            taskmanagers=taskmanagers, slots=slots, dry_run=dry_run, wait=False, progress=_progress)
        if dry_run:
            click.echo(json.dumps(result.request, indent=2))
            click.echo(emr.aws_cli_add_steps_command(cluster_id, result.request["Steps"], profile=profile,
                                                     region=region, endpoint_url=endpoint_url))
            return
        click.echo(result.step_id)
        if wait:
            emr.wait_for_step(session, cluster_id, result.step_id, timeout_s=timeout, poll_s=poll,
                              progress=_progress, log_wait_s=log_wait)
            _progress(f"step {result.step_id} COMPLETED")
    finally:
        if session is not None:
            session.close()


@click.command("run-transient", context_settings={"allow_interspersed_args": False})
@_spec_options
@click.option("--step-name", default=None, help="Step name (default: emrflow <script>).")
@CONFIG_FLAGS["parallelism"].option("parallelism", help="Job parallelism (the step's -p, parallelism.default).")
@dynamic_option("emrflow configuration of the step's `emrflow run`; repeatable.")
@click.option("--timeout", type=click.IntRange(min=1), default=86400, help="Seconds to follow the job.")
@click.option("--poll", type=click.FloatRange(min=0.01), default=30.0, help="Seconds between polls.")
@_log_wait_option
@_aws_options
@click.argument("job")
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED)
def run_transient(config_file, name, release_label, instance_type, core_instance_count, log_uri,
                  staging_uri, wheel, step_name, parallelism, dynamic, timeout, poll, log_wait, profile, region,
                  endpoint_url, job, job_args) -> None:
    """Run JOB on a new cluster that terminates after it; exit with the job's status.

    RunJobFlow with the job as the only step (ActionOnFailure TERMINATE_CLUSTER, or
    CONTINUE when the spec's step_concurrency_level > 1, as EMR demands) and
    KeepJobFlowAliveWhenNoSteps false, then follows the step; prints the cluster id, and
    where the logs are. A failed step exits 1 with the tail of its logs. Ctrl-C asks
    whether to terminate the cluster and exits 130.
    """
    from emrflow.deploy.emr import launch
    args = _job_args(job_args, "run-transient")
    spec = _load_spec(config_file, name, release_label, instance_type, core_instance_count,
                      log_uri, staging_uri)
    created: list[str] = []
    with _session(profile, region, endpoint_url) as session:
        try:
            cluster_id, step_id = launch.run_transient_job(
                spec, job, args, session, staging_uri=staging_uri, wheel=wheel, step_name=step_name,
                parallelism=parallelism, dynamic=dynamic, timeout_s=timeout, poll_s=poll, log_wait_s=log_wait,
                progress=_progress, on_created=created.append)
        except KeyboardInterrupt:
            _interrupted(session, created)
        logs = spec.get("log_uri")
        _progress(f"step {step_id} COMPLETED on cluster {cluster_id}" +
                  (f"; logs: {logs.rstrip('/')}/{cluster_id}/" if logs else ""))
        click.echo(cluster_id)


def _interrupted(session, created: list[str]) -> None:
    """Ctrl-C in run-transient: ask whether to terminate the cluster, then exit 130."""
    from emrflow.deploy import emr
    if created:
        cluster_id = created[0]
        try:
            terminate = click.confirm(f"\nInterrupted. Terminate cluster {cluster_id}?", default=True,
                                      err=True)
        except click.Abort:          # no answer (stdin closed, or a second Ctrl-C)
            terminate = False
        if terminate:
            emr.terminate_cluster(session, cluster_id)
            click.echo(f"Terminating {cluster_id}.", err=True)
        else:
            click.echo(f"Cluster {cluster_id} goes on and ends after its step; "
                       f"`emrflow terminate-cluster {cluster_id}` ends it now.", err=True)
    else:
        click.echo("\nInterrupted before the cluster was created.", err=True)
    sys.exit(130)


@click.command("list-clusters")
@click.option("--active", is_flag=True, help="Only STARTING, BOOTSTRAPPING, RUNNING, WAITING, TERMINATING.")
@_aws_options
def list_clusters(active, profile, region, endpoint_url) -> None:
    """List EMR clusters (ListClusters): id, name, state, creation time."""
    from emrflow.deploy import emr
    with _session(profile, region, endpoint_url) as session:
        clusters = emr.list_clusters(session, active)
    _table([[c["Id"], c["Name"], c["Status"]["State"],
             _ts(c["Status"].get("Timeline", {}).get("CreationDateTime"))] for c in clusters],
           ["ID", "NAME", "STATE", "CREATED"])


@click.command("describe-cluster")
@click.argument("cluster_id")
@_aws_options
def describe_cluster(cluster_id, profile, region, endpoint_url) -> None:
    """Show a cluster (DescribeCluster): state, release label, applications, log URI, steps, tags."""
    from emrflow.deploy import emr
    emr.check_cluster_id(cluster_id)
    with _session(profile, region, endpoint_url) as session:
        c = emr.describe_cluster(session, cluster_id)
        steps = emr.list_steps(session, cluster_id)
    status = c["Status"]
    reason = status.get("StateChangeReason", {}).get("Message", "")
    _table([["Id", c["Id"]], ["Name", c["Name"]], ["State", status["State"] + (f" ({reason})" if reason else "")],
            ["Release label", c.get("ReleaseLabel", "-")],
            ["Applications", ", ".join(a["Name"] for a in c.get("Applications", []))],
            ["Log URI", c.get("LogUri", "-")], ["Master DNS", c.get("MasterPublicDnsName", "-")],
            ["Keep alive", not c.get("AutoTerminate", False)], ["Steps", len(steps)],
            ["Tags", ", ".join(f"{t['Key']}={t['Value']}" for t in c.get("Tags", []))]],
           ["FIELD", "VALUE"])


@click.command("list-steps")
@click.argument("cluster_id")
@_aws_options
def list_steps(cluster_id, profile, region, endpoint_url) -> None:
    """List a cluster's steps (ListSteps), oldest first: id, name, state, action on failure."""
    from emrflow.deploy import emr
    emr.check_cluster_id(cluster_id)
    with _session(profile, region, endpoint_url) as session:
        steps = emr.list_steps(session, cluster_id)
    _table([[i, s["Id"], s["Name"], s["Status"]["State"], s.get("ActionOnFailure", "-"),
             _ts(s["Status"].get("Timeline", {}).get("CreationDateTime"))]
            for i, s in enumerate(steps, 1)], ["#", "ID", "NAME", "STATE", "ON FAILURE", "CREATED"])


@click.command("cancel-step")
@click.argument("cluster_id")
@click.argument("step_id")
@_aws_options
def cancel_step(cluster_id, step_id, profile, region, endpoint_url) -> None:
    """Cancel a pending or running step (CancelSteps); print EMR's answer."""
    from emrflow.deploy import emr
    emr.check_cluster_id(cluster_id)
    emr.check_step_id(step_id)
    with _session(profile, region, endpoint_url) as session:
        info = emr.cancel_step(session, cluster_id, step_id)
    click.echo(f"step {step_id}: {info.get('Status', 'SUBMITTED')} {info.get('Reason', '')}".rstrip())


@click.command("terminate-cluster")
@click.argument("cluster_id")
@_aws_options
def terminate_cluster(cluster_id, profile, region, endpoint_url) -> None:
    """Terminate a cluster (TerminateJobFlows); its running steps are cancelled."""
    from emrflow.deploy import emr
    emr.check_cluster_id(cluster_id)
    with _session(profile, region, endpoint_url) as session:
        emr.terminate_cluster(session, cluster_id)
    click.echo(f"Terminating {cluster_id}.")


COMMANDS = (create_cluster, add_step, run_transient, list_clusters, describe_cluster, list_steps,
            cancel_step, terminate_cluster)


def register(main_group: click.Group) -> None:
    """Add the EMR commands to the ``emrflow`` click group (idempotent).

    Args:
        main_group: the group (``emrflow.cli.main``).
    """
    for cmd in COMMANDS:
        if cmd.name not in main_group.commands:
            main_group.add_command(cmd)
