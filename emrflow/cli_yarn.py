"""``emrflow yarn-session ...``: Flink's ``yarn-session.sh`` as click commands over :mod:`emrflow.deploy.yarn`."""

from __future__ import annotations

import click

from emrflow.errors import EmrflowError


def _config(dynamic, extra=None, conf_file=None):
    from emrflow.config import Configuration
    return Configuration.load(conf_file, dynamic=list(dynamic)).with_overrides(extra or {}, source="command line")


def _fail(exc: Exception):
    raise click.ClickException(str(exc)) from exc


def _conf_options(f):
    f = click.option("-D", "dynamic", multiple=True, metavar="KEY=VALUE",
                     help="Configuration option, repeatable (Flink's -D).")(f)
    return click.option("--conf", "conf_file", type=click.Path(dir_okay=False), default=None,
                        help="Configuration file (default $EMRFLOW_CONF_DIR/emrflow-conf.yaml).")(f)


@click.group("yarn-session")
def yarn_session() -> None:
    """Start, inspect and stop a long-running emrflow session on YARN (through skein)."""


@yarn_session.command("start")
@click.option("-nm", "--name", default=None, help="YARN application name (yarn.application.name).")
@click.option("-qu", "--queue", default=None, help="YARN queue (yarn.application.queue).")
@click.option("-n", "--taskmanagers", type=click.IntRange(min=0), default=1,
              help="TaskManager containers at start (Flink 1.x's -n); more are asked for when jobs need slots.")
@click.option("-s", "--slots", type=click.IntRange(min=1), default=None,
              help="Task slots per TaskManager (taskmanager.numberOfTaskSlots).")
@click.option("-jm", "--jobmanager-memory", default=None,
              help="JobManager memory, e.g. 1024m (jobmanager.memory.process.size).")
@click.option("-tm", "--taskmanager-memory", default=None,
              help="TaskManager container memory, e.g. 4096m (taskmanager.memory.process.size).")
@click.option("--taskmanager-vcores", type=click.IntRange(min=1), default=None,
              help="vcores per TaskManager (yarn.containers.vcores).")
@click.option("--principal", default=None, help="Kerberos principal for skein.")
@click.option("--keytab", default=None, type=click.Path(dir_okay=False), help="Kerberos keytab for skein.")
@_conf_options
@click.option("-d", "--detached", is_flag=True, help="Return once the session runs.")
@click.option("--dry-run", is_flag=True, help="Print the skein application spec as YAML; submit nothing.")
def start(name, queue, taskmanagers, slots, jobmanager_memory, taskmanager_memory, taskmanager_vcores,
          principal, keytab, conf_file, dynamic, detached, dry_run) -> None:
    """Submit a YARN application running a JobManager and TaskManagers (Flink's yarn-session.sh)."""
    from emrflow.deploy import yarn
    args = dict(name=name, queue=queue, taskmanagers=taskmanagers, slots=slots,
                jobmanager_memory=jobmanager_memory, taskmanager_memory=taskmanager_memory,
                taskmanager_vcores=taskmanager_vcores)
    try:
        config = _config(dynamic, conf_file=conf_file)
        if dry_run:
            click.echo(yarn.build_spec(config, "session", **args).to_yaml(), nl=False)
            return
        client = yarn.yarn_client(config, principal, keytab)
        app_id, rest = yarn.start_session(config, client, **args)
    except EmrflowError as exc:
        _fail(exc)
    click.echo(f"YARN application {app_id} runs the session; REST API and dashboard at http://{rest}/")
    try:
        for line in _access(client, app_id):
            click.echo(line)
    except EmrflowError as exc:  # the session runs; only the hints are missing
        click.echo(f"Cannot tell the dashboard's other addresses: {exc}", err=True)
    if detached:
        return
    click.echo("Press Ctrl-C to stop the session.", err=True)
    try:
        report = client.wait_ended(app_id)
        click.echo(f"{app_id} ended {report.final_status}: {report.diagnostics}", err=True)
    except KeyboardInterrupt:
        client.kill(app_id)
        yarn.forget_session(app_id)
        click.echo(f"Stopped {app_id}.", err=True)
    except EmrflowError as exc:
        _fail(exc)


def _access(client, app_id) -> list[str]:
    """Lines naming the dashboard (web proxy, login link) and the Prometheus endpoint."""
    from emrflow.deploy import yarn_ui
    app = client.wait_running(app_id, 20, kill_on_timeout=False)
    return yarn_ui.describe(yarn_ui.session_access(client, app_id, app))


def _app_id(dynamic, app_id, conf_file=None):
    from emrflow.deploy import yarn
    config = _config(dynamic, {"yarn.application.id": app_id} if app_id else None, conf_file)
    return config, yarn.session_app_id(config)


@yarn_session.command("stop")
@click.option("--id", "app_id", default=None, help="Application id (default: the recorded session).")
@_conf_options
def stop(app_id, conf_file, dynamic) -> None:
    """Stop the session (its jobs are cancelled) and forget it."""
    from emrflow.deploy import yarn
    try:
        config, app_id = _app_id(dynamic, app_id, conf_file)
        report = yarn.stop_session(config, app_id)
    except EmrflowError as exc:
        _fail(exc)
    click.echo(f"Stopped YARN session {app_id} ({report.state}/{report.final_status}).")


@yarn_session.command("status")
@click.option("--id", "app_id", default=None, help="Application id (default: the recorded session).")
@_conf_options
def status(app_id, conf_file, dynamic) -> None:
    """Show the session's YARN state, TaskManagers and slots."""
    from emrflow.deploy import yarn
    try:
        config, app_id = _app_id(dynamic, app_id, conf_file)
        client = yarn.yarn_client(config)
        report = client.report(app_id)
        click.echo(f"{app_id}: {report.state} ({report.final_status}) in queue {report.queue}")
        if report.diagnostics:
            click.echo(f"diagnostics: {report.diagnostics}")
        if report.state == "RUNNING":
            rest = yarn.session_rest(config, client, app_id, timeout_s=20)
            ov = rest.overview()
            click.echo(f"REST {rest.base}/ : {ov['taskmanagers']} TaskManagers, "
                       f"{ov['slots-available']}/{ov['slots-total']} slots free, {ov['jobs-running']} jobs running")
            for line in _access(client, app_id):
                click.echo(line)
    except EmrflowError as exc:
        _fail(exc)


@yarn_session.command("list")
@_conf_options
def list_sessions(conf_file, dynamic) -> None:
    """List running and waiting emrflow applications on YARN."""
    from emrflow.deploy import yarn
    try:
        for r in yarn.yarn_client(_config(dynamic, conf_file=conf_file)).list():
            click.echo(f"{r.id}\t{r.state}\t{r.queue}\t{r.name}")
    except EmrflowError as exc:
        _fail(exc)


@yarn_session.command("logs")
@click.option("--id", "app_id", default=None, help="Application id (default: the recorded session).")
@click.option("--container", "container_id", default=None, metavar="CID", help="Only this container.")
@click.option("--file", "files", multiple=True, metavar="NAME",
              help="Only this log file, e.g. application.driver.log (repeatable).")
@click.option("--tail", "tail_bytes", type=click.IntRange(min=1), default=None, metavar="BYTES",
              help="Only the last BYTES bytes of each file.")
@_conf_options
def logs(app_id, container_id, files, tail_bytes, conf_file, dynamic) -> None:
    """Print the containers' logs: live while the application runs, aggregated after it ended.

    application.driver.log holds the JobManager, taskmanager.log a TaskManager,
    application.master.log skein's ApplicationMaster.
    """
    from emrflow.deploy import yarn_logs
    try:
        _, app_id = _app_id(dynamic, app_id, conf_file)
        found = yarn_logs.application_logs(app_id, files=list(files) or None, tail_bytes=tail_bytes,
                                           container_id=container_id)
    except EmrflowError as exc:
        _fail(exc)
    shown = found if files else [f for f in found if not f.quiet]
    for f in shown:
        what = f" - {f.role}" if f.role else ""
        part = f" (last {len(f.text.encode())} of {f.size} bytes)" if tail_bytes and f.size > tail_bytes else ""
        click.echo(f"==> {f.container_id} on {f.node}: {f.file_name}{part}{what} <==")
        click.echo(f.text, nl=not f.text.endswith("\n"))
    where = "aggregated, through `yarn logs`" if found and found[0].aggregated else "live, from the NodeManagers"
    quiet = sorted({f.file_name for f in found} - {f.file_name for f in shown})
    more = f"; also there (--file NAME): {', '.join(quiet)}" if quiet else ""
    click.echo(f"{len(shown)} log files of {app_id}, {where}{more}.", err=True)


def register(main: click.Group) -> None:
    """Add the YARN commands to the ``emrflow`` group."""
    main.add_command(yarn_session)


