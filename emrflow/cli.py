"""The ``emrflow`` command line: parse options, make one library call, print the result.

Errors that the user can fix (:class:`~emrflow.errors.EmrflowError`) print as
``Error: <message>`` and exit 1; usage errors exit 2 (click); anything else
keeps its traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import click

from emrflow import __version__
from emrflow.cli_common import EmrflowGroup, config_options
from emrflow.errors import EmrflowError
from emrflow.runtime.jobmanager.states import TERMINAL, ExecutionState


class _Progress:
    """Shows a running job's progress on stderr: a live line on a terminal, plain lines otherwise."""

    def __init__(self, delay_ms: int, quiet: bool):
        self.delay_s = delay_ms / 1000.0
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.started = time.monotonic()
        self.last_plain = 0.0
        self._live = None

    def submitted(self, job_id: str, job_name: str) -> None:
        self.started = time.monotonic()
        if not self.quiet:
            click.echo(f"Job '{job_name}' submitted with JobID {job_id}", err=True)

    @staticmethod
    def summary(status: dict) -> str:
        vertices = status.get("vertices", [])
        rin = sum(v["operators"][0]["records_in"] for v in vertices
                  if v["operators"] and not v.get("is_source"))
        rout = sum(v["operators"][0]["records_out"] for v in vertices
                   if v["operators"] and v.get("is_source"))
        done = sum(s == ExecutionState.FINISHED for v in vertices for s in v["subtask_states"])
        total = sum(len(v["subtask_states"]) for v in vertices)
        return (f"{status['state']}  {status['duration_ms'] / 1000:6.1f} s  "
                f"source records {rout:,}  records into operators {rin:,}  "
                f"subtasks finished {done}/{total}")

    def update(self, status: dict) -> None:
        if self.quiet or time.monotonic() - self.started < self.delay_s:
            return
        line = self.summary(status)
        if self.tty:
            if self._live is None:
                from rich.console import Console
                from rich.live import Live
                self._live = Live(console=Console(stderr=True), refresh_per_second=4, transient=True)
                self._live.start()
            self._live.update(line)
        elif time.monotonic() - self.last_plain >= 5.0:
            self.last_plain = time.monotonic()
            click.echo(line, err=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def _print_result(result) -> None:
    click.echo(f"Job '{result.job_name}' ({result.job_id}) finished.", err=True)
    click.echo(f"Job Runtime: {result.net_runtime_ms} ms", err=True)
    for op in result.operators:
        late = f", late records dropped (numLateRecordsDropped) {op.late_records_dropped:,}" \
            if op.late_records_dropped else ""
        click.echo(f"  {op.name} (parallelism {op.parallelism}): "
                   f"records in {op.records_in:,}, out {op.records_out:,}{late}", err=True)
    _warn_late(result)
    if result.bad_records:
        click.echo(f"Skipped {result.bad_records:,} bad input records:", err=True)
        for s in result.bad_record_samples:
            click.echo(f"  {s}", err=True)
        if result.bad_records > len(result.bad_record_samples):
            click.echo(f"  ... and {result.bad_records - len(result.bad_record_samples):,} more",
                       err=True)


def _warn_late(result) -> None:
    """Warn (also under ``-q``) that event-time windows dropped late records."""
    if result.late_records_dropped:
        total = sum(op.records_in for op in result.operators[:1]) or None
        of = f" of {total:,} read" if total else ""
        click.echo(f"Warning: {result.late_records_dropped:,} records{of} arrived after the watermark had "
                   f"passed their window (numLateRecordsDropped) and were dropped; raise the "
                   f"watermark's out-of-orderness bound or the window's allowed lateness, or send them "
                   f"to a side output (side_output_late_data)", err=True)


@click.group(cls=EmrflowGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="emrflow")
def main() -> None:
    """emrflow: Flink-style dataflow jobs in pure Python, locally, on YARN and on Amazon EMR."""


@main.command(context_settings={"ignore_unknown_options": False, "allow_interspersed_args": False})
@config_options("parallelism", "target", "detached", "from_savepoint", "allow_non_restored", "yarn_slots",
                "yarn_jm", "yarn_tm", "yarn_name", "yarn_queue", flink_yarn_dynamic=True)
@click.option("-m", "--jobmanager", default=None, metavar="HOST:PORT",
              help="REST address of a running cluster; implies -t remote.")
@click.option("-q", "--quiet", is_flag=True, help="No progress or summary on stderr.")
@click.option("--dry-run", is_flag=True,
              help="Print what would be submitted (the YARN application spec, else the JobGraph); run nothing.")
@click.option("--py-files", "py_files", multiple=True, type=click.Path(dir_okay=False),
              help="Python modules to ship with the job to YARN (yarn-application); repeatable.")
@click.option("-yn", "--yarncontainer", "yarn_containers", type=click.IntRange(min=1), default=None,
              help="Flink 1.x: TaskManager containers; deprecated in Flink, accepted and ignored "
                   "(TaskManagers start as the job's slots need).")
@click.option("-c", "--class", "entry_class", default=None, metavar="CLASS",
              help="Flink's entry class of a JAR: refused, a Python job has none (JOB is the script).")
@click.argument("job", type=click.Path(dir_okay=False))
@click.argument("job_args", nargs=-1, type=click.UNPROCESSED)
def run(config, target, detached, jobmanager, quiet, dry_run, py_files, yarn_containers, entry_class, job,
        job_args) -> None:
    """Run JOB (a Python script) with JOB_ARGS as its sys.argv[1:].

    Options go before JOB; everything after JOB belongs to the job. JOB may be an
    s3://bucket/key.py URI (what EMR steps run): it is downloaded for the run.
    Flink 1.x's YARN options work too: `-m yarn-cluster` is `-t yarn-per-job`, and
    -ys, -yjm, -ytm, -ynm, -yqu, -yD set the configuration keys their help names.
    """
    from emrflow.deploy.script import run_script, wait_for_session

    if entry_class is not None:
        raise click.UsageError(
            f"-c/--class {entry_class}: a Python job has no entry class; JOB is the script that "
            f"calls env.execute(), e.g. `emrflow run -m yarn-cluster my_job.py` (a module's "
            f"`if __name__ == \"__main__\":` block is its entry point)")
    if jobmanager == "yarn-cluster":            # Flink 1.x: flink run -m yarn-cluster
        if target not in (None, "yarn-per-job"):
            raise click.UsageError(f"-m yarn-cluster means -t yarn-per-job, not -t {target}")
        config = config.with_overrides({"execution.target": "yarn-per-job"}, source="-m yarn-cluster")
    elif jobmanager is not None:
        address = _rest_address_options(jobmanager)
        if target is None:
            address["execution.target"] = "remote"
        config = config.with_overrides(address, source="-m/--jobmanager")
    elif target == "remote":
        from emrflow.deploy.standalone import ClusterInfo, default_workdir
        if os.path.exists(os.path.join(default_workdir(), "cluster.json")):
            config = config.with_overrides(_rest_address_options(ClusterInfo.load(default_workdir()).rest),
                                           source="the cluster's cluster.json")
    if yarn_containers is not None:
        click.echo(f"Note: -yn {yarn_containers} is deprecated in Flink and ignored here: TaskManager containers "
                   "start as the job's slots need (parallelism / -ys)", err=True)
    if job.startswith("s3://"):
        job = _fetch_s3_job(job)
    if not os.path.isfile(job):
        raise click.BadParameter(f"job script not found: {job}", param_hint="JOB")
    _check_python_script(job)
    if config.get("execution.target") == "yarn-application":
        _run_yarn_application(config, job, list(job_args), list(py_files), detached, quiet, dry_run)
        return
    if config.get("execution.target") == "yarn-session" and not dry_run:
        wait_for_session(config, None if quiet else lambda line: click.echo(line, err=True))
    progress = _Progress(int(config.get("client.progress.delay")), quiet)
    old_sigterm = _sigterm_as_interrupt()
    try:
        results = run_script(job, job_args, config, dry_run=dry_run, on_progress=progress.update,
                             on_submitted=progress.submitted)
    except EmrflowError:
        raise                                   # EmrflowGroup prints it: Error: <message>, exit 1
    except KeyboardInterrupt:
        progress.close()
        click.echo("Interrupted: the job was cancelled and the cluster stopped.", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the user's own error: their frames only
        progress.close()
        click.echo(_user_traceback(exc, job), err=True, nl=False)
        sys.exit(1)
    finally:
        progress.close()
        if old_sigterm is not None:
            signal.signal(signal.SIGTERM, old_sigterm)
    for r in results:
        if dry_run:
            continue
        if detached:
            click.echo(f"Job has been submitted with JobID {r.job_id}")
        elif not quiet:
            _print_result(r)
        else:
            _warn_late(r)


def _check_python_script(job: str) -> None:
    """Refuse a JOB that is not a Python script (a Flink ``.jar``, a zip, a binary) by name."""
    with open(job, "rb") as f:
        head = f.read(4)
    if job.lower().endswith(".jar") or head.startswith((b"PK\x03\x04", b"\x7fELF")):
        raise click.BadParameter(
            f"{job} is {'a Java archive' if job.lower().endswith('.jar') else 'not a Python script'}: "
            "emrflow runs Python jobs, JOB is the .py script that calls env.execute() "
            "(a Flink job's jar runs with Flink's own `flink run`)", param_hint="JOB")


def _user_traceback(exc: BaseException, job: str) -> str:
    """The traceback of an error the job script raised, without the launcher's frames (click,
    runpy, this module): it starts at the script's first frame. A SyntaxError is its
    ``file:line``, the line and the caret only."""
    import traceback
    te = traceback.TracebackException.from_exception(exc)
    if isinstance(exc, SyntaxError):
        return "".join(te.format_exception_only())
    frames = list(te.stack)
    script = os.path.abspath(job)
    first = next((i for i, f in enumerate(frames) if os.path.abspath(f.filename) == script), 0)
    frames = frames[first:]
    te.stack = traceback.StackSummary.from_list(frames)
    return "".join(te.format())


def _sigterm_as_interrupt():
    """Make SIGTERM behave as Ctrl-C while a job runs; return the previous handler (None if not set).

    EMR's CancelSteps (``SEND_INTERRUPT``) and YARN stop a step's or container's process with
    SIGTERM: through the Ctrl-C path the job is cancelled, an attached ``yarn-per-job`` YARN
    application is killed, the embedded cluster is stopped, and ``emrflow run`` exits 130.
    """
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    return signal.signal(signal.SIGTERM, interrupt)


def _fetch_s3_job(uri: str) -> str:
    """Download an ``s3://`` job script (what an EMR step runs) into a temporary directory.

    The directory lives as long as the command; the AWS session follows the standard
    credential chain, ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL``.
    """
    import tempfile

    from emrflow.deploy.emr import fetch_job_script
    tmp = click.get_current_context().with_resource(tempfile.TemporaryDirectory(prefix="emrflow-job-"))
    return fetch_job_script(uri, tmp)           # an error's message names the URI


def _run_yarn_application(config, job, job_args, py_files, detached, quiet, dry_run=False) -> None:
    """``-t yarn-application``: the script runs in the ApplicationMaster, not here."""
    from emrflow.deploy import yarn
    app_id, status, diagnostics = yarn.submit_application(config, job, job_args, py_files, dry_run=dry_run)
    if dry_run:
        return
    if detached:
        click.echo(f"Submitted YARN application {app_id}")
        return
    if not quiet:
        click.echo(f"YARN application {app_id} ended {status}: {diagnostics}", err=True)
    if status != "SUCCEEDED":
        sys.exit(1)


def _rest_address_options(address: str) -> dict:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {address!r}", param_hint="-m/--jobmanager")
    return {"rest.address": host, "rest.port": int(port)}


def _rest_client(jobmanager: str | None, workdir: str | None, config):
    """A REST client for -m, else for the standalone cluster recorded in the workdir."""
    from emrflow.deploy.rest_client import RestClient
    from emrflow.deploy.standalone import ClusterInfo, default_workdir
    token = config.get("rest.auth.token")
    if jobmanager is not None:
        _rest_address_options(jobmanager)
        return RestClient(jobmanager, token)
    wd = workdir or default_workdir()
    if os.path.exists(os.path.join(wd, "cluster.json")):
        return RestClient(ClusterInfo.load(wd).rest, token)
    return RestClient(f"{config.get('rest.address')}:{config.get('rest.port')}", token)


_jobmanager_option = click.option("-m", "--jobmanager", default=None, metavar="HOST:PORT",
                                  help="REST address (default: the cluster in --workdir).")
_workdir_option = click.option("--workdir", default=None, type=click.Path(file_okay=False),
                               help="Cluster working directory (default $EMRFLOW_CLUSTER_DIR "
                                    "or ~/.emrflow/cluster).")


@main.command("list")
@_jobmanager_option
@_workdir_option
@click.option("-a", "--all", "show_all", is_flag=True, help="Also list ended jobs.")
@config_options()
def list_jobs(jobmanager, workdir, show_all, config) -> None:
    """List the jobs of a cluster (running ones unless --all)."""
    jobs = _rest_client(jobmanager, workdir, config).list_jobs()
    shown = [j for j in jobs if show_all or j["state"] not in TERMINAL]
    if not shown:
        click.echo("No jobs." if show_all else "No running jobs.", err=True)
    for j in shown:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["start-time"] / 1000))
        click.echo(f"{start} : {j['jid']} : {j['name']} ({j['state']})")


@main.command()
@click.argument("job_id")
@_jobmanager_option
@_workdir_option
@config_options()
def cancel(job_id, jobmanager, workdir, config) -> None:
    """Cancel the job JOB_ID (its sinks abort; no partial output stays visible)."""
    _rest_client(jobmanager, workdir, config).cancel(job_id)
    click.echo(f"Cancelled job {job_id}.")


@main.command()
@click.argument("job_id")
@click.argument("target_directory", required=False)
@_jobmanager_option
@_workdir_option
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds to wait for the savepoint.")
@config_options()
def savepoint(job_id, target_directory, jobmanager, workdir, timeout_s, config) -> None:
    """Take a savepoint of the running job JOB_ID into TARGET_DIRECTORY (default state.savepoints.dir).

    Prints the savepoint's path, which `emrflow run -s PATH` starts a job from.
    """
    path = _rest_client(jobmanager, workdir, config).savepoint(job_id, target_directory, timeout_s=timeout_s)
    click.echo(f"Savepoint completed. Path: {path}")


@main.command()
@click.argument("job_id")
@click.option("-p", "--savepointPath", "--savepoint-path", "savepoint_path", default=None,
              metavar="DIR", help="Directory of the final savepoint (default state.savepoints.dir).")
@_jobmanager_option
@_workdir_option
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds to wait for the savepoint.")
@config_options()
def stop(job_id, savepoint_path, jobmanager, workdir, timeout_s, config) -> None:
    """Stop the job JOB_ID with a final savepoint (Flink's stop-with-savepoint); it ends FINISHED."""
    path = _rest_client(jobmanager, workdir, config).savepoint(job_id, savepoint_path, stop=True,
                                                               timeout_s=timeout_s)
    click.echo(f"Savepoint completed. Path: {path}")
    click.echo(f"Stopped job {job_id}.")


@main.group()
def cluster() -> None:
    """Start and stop a standalone cluster on this host."""


@cluster.command("start")
@click.option("--taskmanagers", type=click.IntRange(min=1), default=1, help="TaskManager processes.")
@_workdir_option
@config_options("slots", "rest_port")
def cluster_start(taskmanagers, workdir, config) -> None:
    """Start a JobManager and TaskManagers in the background; print the REST address."""
    from emrflow.deploy.standalone import start_cluster
    info = start_cluster(config, workdir, taskmanagers)
    click.echo(f"Cluster started: REST API and dashboard at http://{info.rest}/ , "
               f"JobManager RPC at {info.rpc}, working directory {info.workdir}")


@cluster.command("stop")
@_workdir_option
def cluster_stop(workdir) -> None:
    """Stop the cluster started from the working directory; leave no process behind."""
    from emrflow.deploy.standalone import stop_cluster
    pids = stop_cluster(workdir)
    click.echo(f"Cluster stopped ({len(pids)} processes).")


@main.group()
def taskmanager() -> None:
    """Add TaskManagers to a running cluster."""


@taskmanager.command("start")
@click.option("--jobmanager", required=True, metavar="HOST:PORT", help="The JobManager's RPC address.")
@_workdir_option
@config_options("slots")
def taskmanager_start(jobmanager, workdir, config) -> None:
    """Start a TaskManager in the background that registers with --jobmanager.

    The cluster secret comes from $EMRFLOW_CLUSTER_SECRET, or from the working
    directory's cluster.json when run on the JobManager's host.
    """
    from emrflow.deploy.standalone import ClusterInfo, default_workdir, start_taskmanager
    secret = os.environ.get("EMRFLOW_CLUSTER_SECRET")
    if not secret:
        secret = ClusterInfo.load(workdir or default_workdir()).secret
    pid = start_taskmanager(config, jobmanager, secret, int(config.get("taskmanager.numberOfTaskSlots")), workdir)
    click.echo(f"TaskManager started (pid {pid}).")


@main.group()
def config() -> None:
    """Inspect configuration options."""


@config.command("keys")
def config_keys() -> None:
    """List every configuration key with its type and default."""
    from emrflow.config import OPTIONS
    for key in sorted(OPTIONS):
        o = OPTIONS[key]
        click.echo(f"{key}\t{o.type}\t{o.default!r}")


@config.command("docs")
def config_docs() -> None:
    """Print docs/configuration.md (every key's type, default and meaning) as Markdown."""
    from emrflow.config import options_markdown
    click.echo(options_markdown(), nl=False)


@config.command("show")
@config_options()
def config_show(config) -> None:
    """Print the effective configuration (file and -D applied) as YAML."""
    import yaml
    click.echo(yaml.safe_dump(config.to_dict(), sort_keys=True), nl=False)


@main.command("resources")
@click.argument("kind", required=False, type=click.Choice(["bootstrap", "configs", "steps", "examples"]))
def resources_command(kind) -> None:
    """Print where emrflow's packaged files are (in the installed package, or the checkout).

    KIND: bootstrap (EMR bootstrap actions), configs (emrflow-conf.yaml and the EMR cluster
    templates), steps (EMR step templates) or examples (example jobs and the MovieLens
    ratings). With KIND, prints its directory alone, e.g.
    `emrflow run -p 2 "$(emrflow resources examples)/latest_rating.py" --output out/latest-rating`.
    """
    from emrflow import resources
    if kind:
        click.echo(resources.resource_dir(kind))
        return
    for k in resources.KINDS:
        click.echo(f"{k}\t{resources.find_dir(k) or '(missing)'}")


from emrflow import cli_emr, cli_yarn  # noqa: E402  (command modules register themselves on the group)

cli_yarn.register(main)
cli_emr.register(main)

if __name__ == "__main__":
    main()
