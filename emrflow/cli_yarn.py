"""``emrflow yarn-session ...``: Flink's ``yarn-session.sh`` as click commands over :mod:`emrflow.deploy.yarn`."""

from __future__ import annotations

import click

from emrflow.cli_common import EmrflowGroup, config_options
from emrflow.errors import EmrflowError


@click.group("yarn-session", cls=EmrflowGroup)
def yarn_session() -> None:
    """Start, inspect and stop a long-running emrflow session on YARN (through skein)."""


@yarn_session.command("start")
@click.option("-n", "--taskmanagers", type=click.IntRange(min=0), default=1,
              help="TaskManager containers at start (Flink 1.x's -n); more are asked for when jobs need slots.")
@config_options("application_name", "queue", "slots", "jobmanager_memory", "taskmanager_memory",
                "taskmanager_vcores")
@click.option("--principal", default=None, help="Kerberos principal for skein.")
@click.option("--keytab", default=None, type=click.Path(dir_okay=False), help="Kerberos keytab for skein.")
@click.option("-d", "--detached", "detach", is_flag=True, help="Return once the session runs.")
@click.option("--dry-run", is_flag=True, help="Print the skein application spec as YAML; submit nothing.")
def start(taskmanagers, config, principal, keytab, detach, dry_run) -> None:
    """Submit a YARN application running a JobManager and TaskManagers (Flink's yarn-session.sh)."""
    from emrflow.deploy import yarn
    if dry_run:
        click.echo(yarn.build_spec(config, "session", taskmanagers=taskmanagers).to_yaml(), nl=False)
        return
    client = yarn.yarn_client(config, principal, keytab)
    app_id, rest = yarn.start_session(config, client, taskmanagers=taskmanagers)
    click.echo(f"YARN application {app_id} runs the session; REST API and dashboard at http://{rest}/")
    try:
        for line in _access(client, app_id):
            click.echo(line)
    except EmrflowError as exc:  # the session runs; only the hints are missing
        click.echo(f"Cannot tell the dashboard's other addresses: {exc}", err=True)
    if detach:
        return
    click.echo("Press Ctrl-C to stop the session.", err=True)
    try:
        report = client.wait_ended(app_id)
        click.echo(f"{app_id} ended {report.final_status}: {report.diagnostics}", err=True)
    except KeyboardInterrupt:
        client.kill(app_id)
        yarn.forget_session(app_id)
        click.echo(f"Stopped {app_id}.", err=True)


def _access(client, app_id) -> list[str]:
    """Lines naming the dashboard (web proxy, login link) and the Prometheus endpoint."""
    from emrflow.deploy import yarn_ui
    app = client.wait_running(app_id, 20, kill_on_timeout=False)
    return yarn_ui.describe(yarn_ui.session_access(client, app_id, app))


@yarn_session.command("stop")
@config_options("app_id")
def stop(config) -> None:
    """Stop the session (its jobs are cancelled) and forget it."""
    from emrflow.deploy import yarn
    app_id = yarn.session_app_id(config)
    report = yarn.stop_session(config, app_id)
    click.echo(f"Stopped YARN session {app_id} ({report.state}/{report.final_status}).")


@yarn_session.command("status")
@config_options("app_id")
def status(config) -> None:
    """Show the session's YARN state, TaskManagers and slots."""
    from emrflow.deploy import yarn
    app_id = yarn.session_app_id(config)
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


@yarn_session.command("list")
@config_options()
def list_sessions(config) -> None:
    """List running and waiting emrflow applications on YARN."""
    from emrflow.deploy import yarn
    for r in yarn.yarn_client(config).list():
        click.echo(f"{r.id}\t{r.state}\t{r.queue}\t{r.name}")


@yarn_session.command("logs")
@config_options("app_id")
@click.option("--container", "container_id", default=None, metavar="CID", help="Only this container.")
@click.option("--file", "files", multiple=True, metavar="NAME",
              help="Only this log file, e.g. application.driver.log (repeatable).")
@click.option("--tail", "tail_bytes", type=click.IntRange(min=1), default=None, metavar="BYTES",
              help="Only the last BYTES bytes of each file.")
def logs(config, container_id, files, tail_bytes) -> None:
    """Print the containers' logs: live while the application runs, aggregated after it ended.

    application.driver.log holds the JobManager, taskmanager.log a TaskManager,
    application.master.log skein's ApplicationMaster.
    """
    from emrflow.deploy import yarn, yarn_logs
    app_id = yarn.session_app_id(config)
    found = yarn_logs.application_logs(app_id, files=list(files) or None, tail_bytes=tail_bytes,
                                       container_id=container_id)
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


