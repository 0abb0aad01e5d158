"""What every ``emrflow`` command shares: the error funnel, ``--conf``/``-D``, and the flag table.

Three pieces keep the commands thin (each parses options, makes one library call, prints):

- :class:`EmrflowGroup`, the click group of ``emrflow`` and its sub-groups: an
  :class:`~emrflow.errors.EmrflowError` raised anywhere in a command prints as
  ``Error: <message>`` on stderr and exits 1 (click's :class:`click.ClickException`); usage
  errors exit 2 (click); any other exception keeps its traceback.
- :func:`config_options`, the one declaration of ``--conf FILE`` and ``-D KEY=VALUE``: it
  hands the command a ready :class:`~emrflow.config.Configuration` as ``config``.
- :data:`CONFIG_FLAGS`, the one table of command-line flags that set a configuration key
  (the shape of mrjob's ``options.py``): a command names the flags it offers, and
  :func:`config_options` declares them and applies their values to that key.

Precedence, lowest first: the option defaults < the configuration file (``--conf FILE``,
else ``$EMRFLOW_CONF_DIR/emrflow-conf.yaml``, else the packaged ``configs/emrflow-conf.yaml``)
< each ``-D key=value`` in order (then each ``-yD``, Flink 1.x's spelling, where offered)
< the command's flags from :data:`CONFIG_FLAGS` (``-p``, ``--slots``, ``-jm``, ...).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import click

from emrflow.errors import EmrflowError


class EmrflowGroup(click.Group):
    """A click group that turns an :class:`~emrflow.errors.EmrflowError` into a clean message.

    The error of any command below it (sub-groups included) prints as ``Error: <message>``
    on stderr, without a traceback, and the process exits 1. Other exceptions pass
    unchanged: click's usage errors (exit 2), ``SystemExit``, ``KeyboardInterrupt``, and
    unexpected errors, which keep their traceback.
    """

    #: sub-groups made with ``@group.group()`` are EmrflowGroups too
    group_class = type

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EmrflowError as exc:
            raise click.ClickException(str(exc)) from exc


# ----------------------------------------------------------------------------- the flag table
@dataclass(frozen=True)
class ConfigFlag:
    """A command-line flag that sets one configuration key.

    Attributes:
        switches: the flag's spellings, e.g. ``("-p", "--parallelism")``.
        key: the configuration key it sets, e.g. ``parallelism.default``.
        help: the help text; it names the key.
        type: click's type of the value (``None``: a string).
        metavar: the value's name in the help.
        sets: for an on/off flag (``is_flag``), the value the key gets when the flag is given;
            ``None`` for a flag that takes a value.
        convert: turns the given value into the key's value (and checks it), raising
            :class:`click.BadParameter`; ``None`` passes it as given.
    """

    switches: tuple[str, ...]
    key: str
    help: str
    type: Any = None
    metavar: str | None = None
    sets: Any = None
    convert: Callable[[Any], Any] | None = None

    @property
    def source(self) -> str:
        """Where a value came from, for configuration error messages (``-p/--parallelism``)."""
        return "/".join(self.switches)

    def option(self, name: str, **overrides: Any) -> Callable:
        """The ``click.option`` decorator of this flag, its parameter named ``name``.

        Args:
            name: the command function's parameter that receives the value.
            overrides: ``click.option`` keywords replacing this flag's (``help=``).
        """
        kwargs: dict[str, Any] = {"default": None, "help": self.help}
        if self.sets is not None:
            kwargs.update(is_flag=True, default=False)
        else:
            kwargs.update(type=self.type, metavar=self.metavar)
        if self.convert is not None:
            convert = self.convert
            kwargs["callback"] = lambda ctx, param, value: None if value is None else convert(value)
        kwargs.update(overrides)
        return click.option(*self.switches, name, **kwargs)

    def override(self, value: Any) -> dict[str, Any]:
        """``{key: value}`` for a flag given on the command line; ``{}`` for one not given."""
        if self.sets is not None:
            return {self.key: self.sets} if value else {}
        return {} if value is None else {self.key: value}


def _known_target(value: str) -> str:
    from emrflow.deploy import known_targets
    if value not in known_targets():
        raise click.BadParameter(f"unknown target {value!r}; known targets: {', '.join(known_targets())}",
                                 param_hint="-t/--target")
    return value


def _flink_memory(flag: str) -> Callable[[str], str]:
    """Flink 1.x's ``-yjm``/``-ytm``: a bare number is MB."""
    def convert(value: str) -> str:
        text = str(value).strip()
        if text.isdigit():
            return f"{text}m"
        if not text:
            raise click.BadParameter("expected a memory size such as 1024m", param_hint=flag)
        return text
    return convert


_POSITIVE = click.IntRange(min=1)

#: Every command-line flag that sets a configuration key, by the name of the parameter the
#: command function receives it as. :func:`config_options` declares the ones a command names.
CONFIG_FLAGS: dict[str, ConfigFlag] = {
    # emrflow run (Flink's `flink run` options)
    "parallelism": ConfigFlag(("-p", "--parallelism"), "parallelism.default",
                              "Default parallelism of the job (parallelism.default).", _POSITIVE),
    "target": ConfigFlag(("-t", "--target"), "execution.target",
                         "Where to run: local (default), remote, yarn-session, yarn-per-job or yarn-application "
                         "(execution.target).", convert=_known_target),
    "detached": ConfigFlag(("-d", "--detached"), "execution.attached",
                           "Submit and return without waiting (execution.attached=false).", sets=False),
    "from_savepoint": ConfigFlag(("-s", "--fromSavepoint"), "execution.savepoint.path",
                                 "Start from a savepoint, a retained checkpoint, or the newest valid checkpoint "
                                 "of a job's checkpoint directory (execution.savepoint.path).", metavar="PATH"),
    "allow_non_restored": ConfigFlag(("-n", "--allowNonRestoredState", "--allow-non-restored-state"),
                                     "execution.savepoint.ignore-unclaimed-state",
                                     "Drop savepoint state of operators the job no longer has "
                                     "(execution.savepoint.ignore-unclaimed-state).", sets=True),
    # emrflow run: Flink 1.x's YARN options
    "yarn_slots": ConfigFlag(("-ys", "--yarnslots"), "taskmanager.numberOfTaskSlots",
                             "Flink 1.x: slots per TaskManager (taskmanager.numberOfTaskSlots).", _POSITIVE),
    "yarn_jm": ConfigFlag(("-yjm", "--yarnjobManagerMemory"), "jobmanager.memory.process.size",
                          "Flink 1.x: JobManager container memory, MB unless a unit is given "
                          "(jobmanager.memory.process.size).", metavar="MEMORY", convert=_flink_memory("-yjm")),
    "yarn_tm": ConfigFlag(("-ytm", "--yarntaskManagerMemory"), "taskmanager.memory.process.size",
                          "Flink 1.x: TaskManager container memory, MB unless a unit is given "
                          "(taskmanager.memory.process.size).", metavar="MEMORY", convert=_flink_memory("-ytm")),
    "yarn_name": ConfigFlag(("-ynm", "--yarnname"), "yarn.application.name",
                            "Flink 1.x: YARN application name (yarn.application.name)."),
    "yarn_queue": ConfigFlag(("-yqu", "--yarnqueue"), "yarn.application.queue",
                             "Flink 1.x: YARN queue (yarn.application.queue)."),
    # emrflow cluster start, taskmanager start, yarn-session start
    "slots": ConfigFlag(("-s", "--slots"), "taskmanager.numberOfTaskSlots",
                        "Task slots per TaskManager (taskmanager.numberOfTaskSlots).", _POSITIVE),
    "rest_port": ConfigFlag(("--rest-port",), "rest.port",
                            "REST and dashboard port (rest.port; 0 = any free port).",
                            click.IntRange(min=0, max=65535)),
    # emrflow yarn-session (Flink's yarn-session.sh options)
    "application_name": ConfigFlag(("-nm", "--name"), "yarn.application.name",
                                   "YARN application name (yarn.application.name)."),
    "queue": ConfigFlag(("-qu", "--queue"), "yarn.application.queue", "YARN queue (yarn.application.queue)."),
    "jobmanager_memory": ConfigFlag(("-jm", "--jobmanager-memory"), "jobmanager.memory.process.size",
                                    "JobManager memory, e.g. 1024m (jobmanager.memory.process.size)."),
    "taskmanager_memory": ConfigFlag(("-tm", "--taskmanager-memory"), "taskmanager.memory.process.size",
                                     "TaskManager container memory, e.g. 4096m (taskmanager.memory.process.size)."),
    "taskmanager_vcores": ConfigFlag(("--taskmanager-vcores",), "yarn.containers.vcores",
                                     "vcores per TaskManager (yarn.containers.vcores).", _POSITIVE),
    "app_id": ConfigFlag(("--id",), "yarn.application.id",
                         "Application id (yarn.application.id; default: the recorded session)."),
}


# ----------------------------------------------------------------------------- --conf and -D
def dynamic_option(help: str = "Set a configuration option, e.g. -D parallelism.default=4; repeatable.",
                   switch: str = "-D", name: str = "dynamic") -> Callable:
    """The ``-D KEY=VALUE`` option (repeatable), declared once for every command.

    :func:`config_options` uses it; commands that forward ``-D`` strings to another
    process (EMR steps) use it alone.

    Args:
        help: the help text.
        switch: the spelling (``-yD`` for Flink 1.x's).
        name: the parameter that receives the tuple of ``KEY=VALUE`` strings.
    """
    return click.option(switch, name, multiple=True, metavar="KEY=VALUE", help=help)


def config_options(*flags: str, flink_yarn_dynamic: bool = False) -> Callable:
    """Declare ``--conf FILE``, ``-D KEY=VALUE`` and ``flags``; pass the command a ``config``.

    The decorated command function takes a ``config`` parameter, the
    :class:`~emrflow.config.Configuration` of the defaults < the file (``--conf FILE``, else
    ``$EMRFLOW_CONF_DIR/emrflow-conf.yaml``, else the packaged one) < each ``-D`` in order <
    each ``-yD`` < the flags given. It also receives any flag of ``flags`` it names as a
    parameter (as given, or as converted by the flag), for what is not configuration.

    Args:
        flags: names of :data:`CONFIG_FLAGS` entries the command offers.
        flink_yarn_dynamic: also declare Flink 1.x's ``-yD KEY=VALUE`` (applied after ``-D``).

    Raises:
        KeyError: a name not in :data:`CONFIG_FLAGS` (a programming error).

    The configuration is loaded when the command runs: a ``-D`` without ``=``, an unknown
    key, a bad value or a missing file raise :class:`~emrflow.errors.ConfigError`, which
    :class:`EmrflowGroup` prints as ``Error: <message>`` (exit 1); the message names the
    ``-D`` value, the file (``file:line``) or the flag.
    """
    table = {name: CONFIG_FLAGS[name] for name in flags}

    def decorate(f: Callable) -> Callable:
        wanted = set(inspect.signature(f).parameters)

        @functools.wraps(f)
        def command(*args: Any, conf_file: str | None = None, dynamic: tuple[str, ...] = (),
                    yarn_dynamic: tuple[str, ...] = (), **kwargs: Any) -> Any:
            values = {name: (kwargs[name] if name in wanted else kwargs.pop(name)) for name in table}
            kwargs["config"] = load_config(conf_file, (*dynamic, *yarn_dynamic),
                                           [(table[n], v) for n, v in values.items()])
            return f(*args, **kwargs)

        for name, flag in reversed(table.items()):
            command = flag.option(name)(command)
        if flink_yarn_dynamic:
            command = dynamic_option("Flink 1.x: a configuration option, as -D; repeatable.", "-yD",
                                     "yarn_dynamic")(command)
        command = dynamic_option()(command)
        return click.option("--conf", "conf_file", type=click.Path(dir_okay=False), default=None,
                            help="Configuration file (default: $EMRFLOW_CONF_DIR/emrflow-conf.yaml).")(command)
    return decorate


def load_config(conf_file: str | None, dynamic: tuple[str, ...] | list[str] = (),
                flags: list[tuple[ConfigFlag, Any]] | tuple = ()):
    """The command's :class:`~emrflow.config.Configuration`: file < ``-D`` strings < flags.

    Args:
        conf_file: ``--conf FILE``, or ``None`` for ``$EMRFLOW_CONF_DIR``'s or the packaged file.
        dynamic: ``KEY=VALUE`` strings, applied in order.
        flags: ``(flag, value as given)`` pairs; a flag not given (``None``, or ``False`` for
            an on/off flag) changes nothing.

    Raises:
        ConfigError: the file is missing or invalid, a ``-D`` has no ``=``, a key is unknown,
            or a value does not fit its key (the message says where it came from).
    """
    from emrflow.config import Configuration
    config = Configuration.load(conf_file=conf_file, dynamic=list(dynamic))
    for flag, value in flags:
        override = flag.override(value)
        if override:
            config = config.with_overrides(override, source=flag.source)
    return config
