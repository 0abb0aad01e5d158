"""``emrflow yarn-session ...``: Flink's ``yarn-session.sh`` as click commands over :mod:`emrflow.deploy.yarn`."""

from __future__ import annotations

import os
import time

import click

from emrflow.errors import EmrflowError


def _config(dynamic, extra=None):
    from emrflow.config import Configuration
    return Configuration.load(dynamic=list(dynamic)).with_overrides(extra or {}, source="command line")


def _fail(exc: Exception):
    raise click.ClickException(str(exc)) from exc


@click.group("yarn-session")
def yarn_session() -> None:
    """Start, inspect and stop a long-running emrflow session on YARN (through skein)."""


@yarn_session.command("start")
@click.option("--name", default=None, help="YARN application name (yarn.application.name).")
@click.option("--queue", default=None, help="YARN queue (yarn.application.queue).")
@click.option("--taskmanagers", type=click.IntRange(min=0), default=1, help="TaskManager containers at start.")
@click.option("--slots", type=click.IntRange(min=1), default=None, help="Task slots per TaskManager.")
@click.option("--jobmanager-memory", default=None, help="ApplicationMaster memory, e.g. 1024m.")
@click.option("--taskmanager-memory", default=None, help="TaskManager container memory, e.g. 2048m.")
@click.option("--taskmanager-vcores", type=click.IntRange(min=1), default=None, help="vcores per TaskManager.")
@click.option("--principal", default=None, help="Kerberos principal for skein.")
@click.option("--keytab", default=None, type=click.Path(dir_okay=False), help="Kerberos keytab for skein.")
@click.option("-D", "dynamic", multiple=True, metavar="KEY=VALUE", help="Configuration option.")
@click.option("-d", "--detached", is_flag=True, help="Return once the session runs.")
@click.option("--dry-run", is_flag=True, help="Print the skein application spec as YAML; submit nothing.")
def start(name, queue, taskmanagers, slots, jobmanager_memory, taskmanager_memory, taskmanager_vcores,
          principal, keytab, dynamic, detached, dry_run) -> None:
    """Submit a YARN application running a JobManager and TaskManagers."""
    from emrflow.deploy import yarn
    args = dict(name=name, queue=queue, taskmanagers=taskmanagers, slots=slots,
                jobmanager_memory=jobmanager_memory, taskmanager_memory=taskmanager_memory,
                taskmanager_vcores=taskmanager_vcores)
    try:
        config = _config(dynamic)
        if dry_run:
            click.echo(yarn.build_spec(config, "session", **args).to_yaml(), nl=False)
            return
        driver = yarn.yarn_driver(config, principal, keytab)
        app_id, rest = yarn.start_session(config, driver, **args)
    except EmrflowError as exc:
        _fail(exc)
    click.echo(f"YARN application {app_id} runs the session; REST API and dashboard at http://{rest}/")
    if detached:
        return
    click.echo("Press Ctrl-C to stop the session.", err=True)
    try:
        while driver.report(app_id)["final_status"] in ("UNDEFINED", "FinalStatus.UNDEFINED"):
            time.sleep(2)
    except KeyboardInterrupt:
        driver.kill(app_id)
        click.echo(f"Stopped {app_id}.", err=True)


def _app_id(dynamic, app_id):
    from emrflow.deploy import yarn
    config = _config(dynamic, {"yarn.application.id": app_id} if app_id else None)
    return config, yarn.session_app_id(config)


@yarn_session.command("stop")
@click.option("--id", "app_id", default=None, help="Application id (default: the recorded session).")
@click.option("-D", "dynamic", multiple=True, metavar="KEY=VALUE")
def stop(app_id, dynamic) -> None:
    """Stop the session (its jobs are cancelled) and forget it."""
    from emrflow.deploy import yarn
    from emrflow.deploy.rest_client import RestClient
    try:
        config, app_id = _app_id(dynamic, app_id)
        driver = yarn.yarn_driver(config)
        try:
            rest, token = yarn.jobmanager_of(driver.connect(app_id), timeout_s=10)
            RestClient(rest, token, timeout_s=10).shutdown()
        except EmrflowError:
            driver.kill(app_id)
        if yarn.recorded_session() == app_id:
            os.remove(yarn.SESSION_FILE)
    except EmrflowError as exc:
        _fail(exc)
    click.echo(f"Stopped YARN session {app_id}.")


@yarn_session.command("status")
@click.option("--id", "app_id", default=None)
@click.option("-D", "dynamic", multiple=True, metavar="KEY=VALUE")
def status(app_id, dynamic) -> None:
    """Show the session's YARN state, TaskManagers and slots."""
    from emrflow.deploy import yarn
    from emrflow.deploy.rest_client import RestClient
    try:
        config, app_id = _app_id(dynamic, app_id)
        driver = yarn.yarn_driver(config)
        report = driver.report(app_id)
        click.echo(f"{app_id}: {report['state']} ({report['final_status']})")
        if report["final_status"] in ("UNDEFINED", "FinalStatus.UNDEFINED"):
            rest, token = yarn.jobmanager_of(driver.connect(app_id), timeout_s=10)
            ov = RestClient(rest, token).overview()
            click.echo(f"REST http://{rest}/ : {ov['taskmanagers']} TaskManagers, "
                       f"{ov['slots-available']}/{ov['slots-total']} slots free, {ov['jobs-running']} jobs running")
    except EmrflowError as exc:
        _fail(exc)


@yarn_session.command("list")
@click.option("-D", "dynamic", multiple=True, metavar="KEY=VALUE")
def list_sessions(dynamic) -> None:
    """List running emrflow applications on YARN."""
    from emrflow.deploy import yarn
    try:
        for r in yarn.yarn_driver(_config(dynamic)).list():
            click.echo(f"{r['id']}\t{r['state']}\t{r.get('name', '')}")
    except EmrflowError as exc:
        _fail(exc)


@yarn_session.command("logs")
@click.option("--id", "app_id", default=None)
@click.option("-D", "dynamic", multiple=True, metavar="KEY=VALUE")
def logs(app_id, dynamic) -> None:
    """Print the containers' logs (skein's application logs)."""
    from emrflow.deploy import yarn
    try:
        config, app_id = _app_id(dynamic, app_id)
        click.echo(yarn.yarn_driver(config).logs(app_id))
    except EmrflowError as exc:
        _fail(exc)


def register(main: click.Group) -> None:
    """Add the YARN commands to the ``emrflow`` group."""
    main.add_command(yarn_session)


