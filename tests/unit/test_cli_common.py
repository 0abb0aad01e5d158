"""The CLI layer (emrflow/cli_common.py): the error funnel, ``--conf``/``-D``, the flag table.

No processes, no network: commands run in-process through click's CliRunner; files live in
``tmp_path``. Expected values are written out by hand (MiB counted here), not taken from
emrflow.
"""

from __future__ import annotations

import sys

import click
import pytest
import yaml
from click.testing import CliRunner

from emrflow.cli import main
from emrflow.cli_common import CONFIG_FLAGS, EmrflowGroup, config_options, load_config
from emrflow.errors import ClusterError, ConfigError, JobGraphError

MIB = 1024 * 1024


def toy_group() -> click.Group:
    """A group with commands that echo their configuration or raise on demand."""
    @click.group(cls=EmrflowGroup)
    def group() -> None:
        pass

    @group.command()
    @config_options("parallelism", "slots", "detached")
    def show(config) -> None:
        for key in ("parallelism.default", "taskmanager.numberOfTaskSlots", "execution.attached",
                    "rest.port"):
            click.echo(f"{key}={config.get(key)}")

    @group.command()
    @config_options("parallelism")
    def raw(config, parallelism) -> None:
        click.echo(f"raw={parallelism} config={config.get('parallelism.default')}")

    @group.command()
    @click.argument("what")
    def fail(what) -> None:
        if what == "emrflow":
            raise ClusterError("the JobManager at localhost:1 did not answer (rest.address)")
        if what == "usage":
            raise click.UsageError("missing JOB")
        raise ValueError("a bug")

    @group.group()
    def sub() -> None:
        pass

    @sub.command("fail")
    def sub_fail() -> None:
        raise ConfigError("taskmanager.numberOfTaskSlots: expected an integer >= 1, got 'x' (from -D)")

    return group


def invoke(group, *args, **kwargs):
    return CliRunner().invoke(group, list(args), **kwargs)


def values(result) -> dict[str, str]:
    assert result.exit_code == 0, result.output
    return dict(line.split("=", 1) for line in result.output.splitlines())


# ----------------------------------------------------------------------------- precedence
@pytest.fixture
def conf_files(tmp_path, monkeypatch):
    """A file in $EMRFLOW_CONF_DIR and one for --conf, each setting two keys."""
    conf_dir = tmp_path / "conf-dir"
    conf_dir.mkdir()
    (conf_dir / "emrflow-conf.yaml").write_text("parallelism.default: 5\nrest.port: 9005\n")
    other = tmp_path / "other.yaml"
    other.write_text("parallelism:\n  default: 7\ntaskmanager.numberOfTaskSlots: 3\n")
    monkeypatch.setenv("EMRFLOW_CONF_DIR", str(conf_dir))
    return str(other)


def test_conf_dir_file_is_read_without_conf(conf_files):
    v = values(invoke(toy_group(), "show"))
    assert v == {"parallelism.default": "5", "taskmanager.numberOfTaskSlots": "1", "execution.attached": "True",
                 "rest.port": "9005"}


def test_conf_replaces_the_conf_dir_file(conf_files):
    v = values(invoke(toy_group(), "show", "--conf", conf_files))
    # rest.port of $EMRFLOW_CONF_DIR's file is not read: --conf names the one file
    assert v == {"parallelism.default": "7", "taskmanager.numberOfTaskSlots": "3", "execution.attached": "True",
                 "rest.port": "8081"}


def test_d_beats_the_file_and_the_last_d_wins(conf_files):
    v = values(invoke(toy_group(), "show", "--conf", conf_files, "-D", "parallelism.default=8",
                      "-D", "taskmanager.numberOfTaskSlots=4", "-D", "parallelism.default=9"))
    assert (v["parallelism.default"], v["taskmanager.numberOfTaskSlots"]) == ("9", "4")


def test_flags_beat_d(conf_files):
    v = values(invoke(toy_group(), "show", "--conf", conf_files, "-D", "parallelism.default=8", "-p", "2",
                      "-D", "taskmanager.numberOfTaskSlots=4", "--slots", "6", "-d",
                      "-D", "execution.attached=true"))
    assert v == {"parallelism.default": "2", "taskmanager.numberOfTaskSlots": "6", "execution.attached": "False",
                 "rest.port": "8081"}


def test_a_flag_not_given_leaves_the_key_alone(conf_files):
    v = values(invoke(toy_group(), "show", "-D", "execution.attached=false"))
    assert v["execution.attached"] == "False"       # -d absent: does not set it back to true


def test_a_command_that_names_a_flag_gets_its_value_too(conf_files):
    r = invoke(toy_group(), "raw", "-p", "3")
    assert r.exit_code == 0 and r.output == "raw=3 config=3\n"
    r = invoke(toy_group(), "raw")
    assert r.exit_code == 0 and r.output == "raw=None config=5\n"


# ----------------------------------------------------------------------------- errors of --conf and -D
def test_d_without_equals_names_the_flag_and_the_value():
    r = invoke(toy_group(), "show", "-D", "parallelism.default")
    assert r.exit_code == 1
    assert r.output == "Error: -D 'parallelism.default': expected key=value, e.g. -D parallelism.default=4\n"


def test_missing_conf_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "emrflow-conf.yaml"
    r = invoke(toy_group(), "show", "--conf", str(missing))
    assert r.exit_code == 1 and r.output == f"Error: configuration file not found: {missing}\n"


def test_bad_d_value_names_the_key_and_d(monkeypatch):
    monkeypatch.delenv("EMRFLOW_CONF_DIR", raising=False)
    r = invoke(toy_group(), "show", "-D", "parallelism.default=0")
    assert r.exit_code == 1
    assert r.output == "Error: parallelism.default: expected an integer >= 1, got '0' (from -D)\n"


def test_bad_flag_value_names_the_flag(monkeypatch):
    monkeypatch.delenv("EMRFLOW_CONF_DIR", raising=False)
    with pytest.raises(ConfigError, match=r"^jobmanager\.memory\.process\.size: .* \(from -jm/--jobmanager-memory\)$"):
        load_config(None, (), [(CONFIG_FLAGS["jobmanager_memory"], "lots")])


# ----------------------------------------------------------------------------- the error funnel
def test_emrflow_error_is_one_clean_line_exit_1():
    r = invoke(toy_group(), "fail", "emrflow")
    assert r.exit_code == 1
    assert r.output == "Error: the JobManager at localhost:1 did not answer (rest.address)\n"
    assert "Traceback" not in r.output


def test_emrflow_error_in_a_sub_group_too():
    r = invoke(toy_group(), "sub", "fail")
    assert r.exit_code == 1
    assert r.output == "Error: taskmanager.numberOfTaskSlots: expected an integer >= 1, got 'x' (from -D)\n"


def test_usage_error_still_exits_2():
    r = invoke(toy_group(), "fail", "usage")
    assert r.exit_code == 2 and "Error: missing JOB" in r.output and "Usage:" in r.output


def test_unexpected_error_keeps_its_traceback():
    r = invoke(toy_group(), "fail", "bug")
    assert r.exit_code == 1 and isinstance(r.exception, ValueError) and str(r.exception) == "a bug"
    with pytest.raises(ValueError, match="a bug"):
        invoke(toy_group(), "fail", "bug", catch_exceptions=False)


def test_the_real_groups_are_funnels():
    assert isinstance(main, EmrflowGroup)
    for name in ("cluster", "taskmanager", "config", "yarn-session"):
        assert isinstance(main.commands[name], EmrflowGroup), name


def test_a_real_command_error_is_clean(tmp_path):
    missing = tmp_path / "c.yaml"
    r = invoke(main, "config", "show", "--conf", str(missing))
    assert r.exit_code == 1 and r.output == f"Error: configuration file not found: {missing}\n"


# ----------------------------------------------------------------------------- the flag table
#: argv value -> the configuration value it must give, worked out by hand per flag
SAMPLES: dict[str, tuple[list[str], object]] = {
    "parallelism": (["3"], 3),
    "target": (["yarn-per-job"], "yarn-per-job"),
    "detached": ([], False),
    "from_savepoint": (["/tmp/sp-1"], "/tmp/sp-1"),
    "allow_non_restored": ([], True),
    "yarn_slots": (["4"], 4),
    "yarn_jm": (["1024"], 1024 * MIB),          # Flink 1.x: bare number is MB
    "yarn_tm": (["2g"], 2048 * MIB),
    "yarn_name": (["nightly"], "nightly"),
    "yarn_queue": (["etl"], "etl"),
    "slots": (["5"], 5),
    "rest_port": (["0"], 0),
    "application_name": (["session a"], "session a"),
    "queue": (["small"], "small"),
    "jobmanager_memory": (["512m"], 512 * MIB),
    "taskmanager_memory": (["1g"], 1024 * MIB),
    "taskmanager_vcores": (["2"], 2),
    "app_id": (["application_1_0001"], "application_1_0001"),
}


def commands(group: click.Group, prefix: str = ""):
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


CONFIG_COMMANDS = {name: cmd for name, cmd in commands(main)
                   if any(p.name == "conf_file" for p in cmd.params)}


def test_samples_cover_the_table():
    assert set(SAMPLES) == set(CONFIG_FLAGS)


def test_every_table_flag_is_offered_somewhere():
    offered = {p.name for cmd in CONFIG_COMMANDS.values() for p in cmd.params}
    assert set(CONFIG_FLAGS) <= offered


def test_commands_with_a_config_take_conf_and_d():
    expected = {"run", "list", "cancel", "savepoint", "stop", "cluster start", "taskmanager start", "config show",
                "yarn-session start", "yarn-session stop", "yarn-session status", "yarn-session list",
                "yarn-session logs"}
    assert set(CONFIG_COMMANDS) == expected
    for name, cmd in CONFIG_COMMANDS.items():
        opts = {o for p in cmd.params for o in p.opts}
        assert {"--conf", "-D"} <= opts, name


@pytest.mark.parametrize("command", sorted(CONFIG_COMMANDS))
def test_each_flag_of_a_command_reaches_its_key(command, monkeypatch):
    """Parse the real command's argv (the flag's switches, types, checks) and load its configuration."""
    monkeypatch.delenv("EMRFLOW_CONF_DIR", raising=False)
    cmd = CONFIG_COMMANDS[command]
    declared = [p for p in cmd.params if p.name in CONFIG_FLAGS]
    required = {"run": ["job.py"], "cancel": ["0" * 32], "savepoint": ["0" * 32], "stop": ["0" * 32],
                "taskmanager start": ["--jobmanager", "localhost:6123"]}.get(command, [])
    for param in declared:
        flag = CONFIG_FLAGS[param.name]
        assert tuple(param.opts + param.secondary_opts) == flag.switches, (command, param.name)
        argv, expected = SAMPLES[param.name]
        for switch in flag.switches:
            ctx = cmd.make_context(command, [switch, *argv, *required])
            config = load_config(ctx.params["conf_file"], ctx.params["dynamic"], [(flag, ctx.params[param.name])])
            assert config.get(flag.key) == expected, (command, switch)


def test_switches_are_unique_within_each_command():
    for name, cmd in commands(main):
        opts = [o for p in cmd.params for o in p.opts + p.secondary_opts]
        assert len(opts) == len(set(opts)), name


def test_flink_memory_flag_refuses_an_empty_size():
    cmd = CONFIG_COMMANDS["run"]
    with pytest.raises(click.BadParameter, match="expected a memory size such as 1024m"):
        cmd.make_context("run", ["-yjm", " ", "job.py"])


def test_unknown_target_is_a_usage_error_naming_the_flag():
    r = invoke(main, "run", "-t", "nowhere", "job.py")
    assert r.exit_code == 2
    assert "Invalid value for -t/--target: unknown target 'nowhere'; known targets: local, remote" in r.output


# ----------------------------------------------------------------------------- library entry points
def test_run_script_restores_argv_and_path_and_needs_an_execute(tmp_path):
    from emrflow.deploy.script import run_script
    job = tmp_path / "job.py"
    seen = tmp_path / "seen.txt"
    job.write_text(f"import pathlib, sys\n"
                   f"pathlib.Path({str(seen)!r}).write_text(repr(sys.argv) + '\\n' + sys.path[0])\n")
    argv, path = list(sys.argv), list(sys.path)
    with pytest.raises(JobGraphError, match=r"job\.py did not submit a job: it never called env\.execute\(\)"):
        run_script(str(job), ["--input", "x"])
    assert seen.read_text() == f"{[str(job), '--input', 'x']!r}\n{tmp_path}"
    assert (sys.argv, sys.path) == (argv, path)


def test_create_cluster_dry_run_builds_the_request_only(tmp_path):
    from emrflow.deploy.emr import launch as emr_launch
    from emrflow.resources import resource_dir
    spec_file = f"{resource_dir('configs')}/emr-batch.yaml"
    with open(spec_file) as f:
        spec = yaml.safe_load(f)
    launch = emr_launch.create_cluster(spec_file, staging_uri="s3://bucket/staging", dry_run=True)
    assert launch.cluster_id is None
    assert launch.request["ReleaseLabel"] == spec["release_label"]
    assert launch.request["Name"] == spec["name"]


def test_add_job_step_dry_run_builds_a_valid_request_and_names_bad_arguments():
    from emrflow.deploy.emr import launch as emr_launch
    from emrflow.errors import ConfigError
    launch = emr_launch.add_job_step("j-ABC123", "s3://bucket/jobs/job.py", ["--input", "s3://b/in"], dry_run=True,
                                     parallelism=4, dynamic=["state.backend=rocksdb"])
    assert launch.step_id is None
    (step,) = launch.request["Steps"]
    assert launch.request["JobFlowId"] == "j-ABC123"
    args = step["HadoopJarStep"]["Args"]
    assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    # the job script and its own arguments come last, unchanged, after emrflow's options
    assert args[-3:] == ["s3://bucket/jobs/job.py", "--input", "s3://b/in"]
    assert "-p" in args and args[args.index("-p") + 1] == "4" and "state.backend=rocksdb" in " ".join(args)
    session = emr_launch.add_job_step("j-ABC123", yarn_session=True, taskmanagers=2, slots=3, dry_run=True)
    assert "yarn-session" in " ".join(session.request["Steps"][0]["HadoopJarStep"]["Args"])
    with pytest.raises(ConfigError, match="--s3-staging"):
        emr_launch.add_job_step("j-ABC123", "local_job.py", dry_run=True)
    with pytest.raises(ConfigError, match="no job script"):
        emr_launch.add_job_step("j-ABC123", "s3://b/j.py", yarn_session=True, dry_run=True)
