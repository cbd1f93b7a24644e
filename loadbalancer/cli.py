"""The ``lb`` command. It only parses, validates and forwards (as uvicorn's main
does): a bad value or config prints one line and exits 2; a runtime failure
(an unreachable node, a failed verification) exits 1."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from loadbalancer import __version__, adaptor, control, local, logs, newconfig, workload
from loadbalancer import config as configuration
from loadbalancer.addresses import Address, parse_address
from loadbalancer.app import run_node
from loadbalancer.batch import Batch, MapBatch, WorkloadBatch
from loadbalancer.config import Config, ConfigError
from loadbalancer.exits import EXIT_INTERRUPTED, EXIT_JOBS_FAILED, EXIT_OK
from loadbalancer.functions import Catalog, split_target
from loadbalancer.journal import JournalError
from loadbalancer.jsonlines import STDOUT, InputError, Inputs, Output
from loadbalancer.messages import WorkloadSpec
from loadbalancer.report import KINDS as REPORT_KINDS
from loadbalancer.tasks import TaskError, Tasks
from loadbalancer.wire import Role

DEFAULT_CONFIG = Path("lb.json")
ROLE = click.Choice(["master", "slave"])
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG, show_default=True, help="JSON config file.")
SHELLS = ("bash", "zsh", "fish")
DEMO_JOBS = 256
EPILOG = """\b
Shell completion (bash, zsh or fish), e.g. in ~/.bashrc:
  eval "$(lb completion --shell bash)"
or for fish:  lb completion --shell fish > ~/.config/fish/completions/lb.fish"""


class AddressType(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """HOST:PORT, checked as the config checks its addresses."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Address:
        if isinstance(value, tuple):  # click may hand back a value it converted already
            return value
        try:
            return parse_address(value, "the address")
        except ValueError as error:
            self.fail(str(error), param, ctx)


ADDRESS = AddressType()


class ThrottleType(click.FloatRange):
    """A duty cycle from 0 to 1. click's FloatRange lets "nan" through (no comparison with NaN
    holds, so none fails), and a NaN throttle would crash the node later."""

    def __init__(self) -> None:
        super().__init__(0, 1)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value} is not in the range 0<=x<=1.", param, ctx)
        return number


THROTTLE = ThrottleType()


def log_options(command: Callable[..., None]) -> Callable[..., None]:
    """--log-level, --log-format and --log-file, for the commands that run a node."""
    for option in reversed((
            click.option("--log-level", type=click.Choice(list(logs.LEVELS)), default="info",
                         show_default=True, help="debug also shows every transfer decision."),
            click.option("--log-format", type=click.Choice(logs.FORMATS), default="text",
                         show_default=True,
                         help="text for people; json: one object per line, for machines."),
            click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
                         help="Also append the log to this file (with the dashboard too)."))):
        command = option(command)
    return command


def _configure_logs(role: Role, level: str, fmt: str, file: Path | None, *,
                    dashboard: bool) -> logs.LogSettings:
    settings = logs.LogSettings(level, fmt, file)
    try:
        logs.configure(str(role), settings, dashboard=dashboard)
    except OSError as error:
        raise _fail_usage(f"cannot open the log file {file}: {error.strerror}") from None
    return settings


def _fail_usage(message: str) -> click.UsageError:
    return click.UsageError(message)


def _load(path: Path, overrides: dict[str, Any], modules: tuple[str, ...] = (),
          jobs: int | None = None) -> tuple[Config, Tasks]:
    """The config with the flags applied, and what this node can run: every module its
    operator named is imported now, so that a broken one is one line before anything starts."""
    try:
        config = configuration.load(path)
        config = replace(config, workload_modules=config.workload_modules + modules, **overrides)
        catalog = Catalog()
        for module in config.workload_modules:
            catalog.add(module)
        if jobs is not None:
            config = replace(config, workload=_with_jobs(config.workload, jobs))
        tasks = Tasks(catalog)
    except (ConfigError, *TaskError) as error:
        raise _fail_usage(str(error)) from None
    return config, tasks


def _with_jobs(spec: WorkloadSpec, jobs: int) -> WorkloadSpec:
    kind = workload.REGISTRY.get(spec.name)
    if kind is None or kind.jobs_param is None:
        raise ConfigError(f"--jobs does not apply to workload {spec.name!r}: it decides its "
                          "own jobs")
    return WorkloadSpec(spec.name, {**spec.params, kind.jobs_param: jobs})


def _check_writable(flag: str, path: Path | None) -> None:
    """Now, not after an hour's run: the file written at the end can be written."""
    if path is None:
        return
    folder = path.parent
    if not folder.is_dir():
        raise _fail_usage(f"{flag} {path}: there is no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(
            path, os.W_OK)):
        raise _fail_usage(f"{flag} {path}: not writable by this user")


def _batch(config: Config, tasks: Tasks, target: str | None, inputs: str | None,
           output: str) -> Batch:
    """The master's batch: the function over the inputs (--map), or the config's workload."""
    try:
        if target is None:
            return WorkloadBatch.of(tasks, config.workload)
        if inputs is None:
            raise ConfigError("--map needs --inputs FILE (JSON lines, - for standard input)")
        task = tasks.function(tasks.catalog.ref(target))
        return MapBatch(task, Inputs.open(inputs), Output.open(output))
    except (ConfigError, InputError, *TaskError) as error:
        raise _fail_usage(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(__version__, prog_name="lb")
def cli() -> None:
    """lb: share a batch of CPU work between two machines, balanced while it runs."""


def main() -> None:
    """The console script: click's own handling, except that an error is one
    line (``Error: …``) rather than the usage block, as a script can grep."""
    try:
        code = cli.main(standalone_mode=False)
    except click.ClickException as error:
        click.echo(f"Error: {error.format_message()}", err=True)
        sys.exit(error.exit_code)
    except click.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def job_options(command: Callable[..., None]) -> Callable[..., None]:
    """What runs and where results go: for `launch` and `demo`."""
    for option in reversed((
            click.option("--map", "target", metavar="MODULE:FUNCTION",
                         help="Master: run this function once per line of --inputs "
                              "(MODULE: a dotted name or a .py path)."),
            click.option("--inputs", metavar="FILE",
                         help="With --map: one job a line, JSON (- for standard input).  "
                              "An array is the positional arguments, an object the keyword "
                              "arguments, any other value the one argument."),
            click.option("--output", metavar="FILE", default="-", show_default=True,
                         help="With --map: the results, one JSON line a job in input order "
                              "(- for standard output)."),
            click.option("--workload-module", "modules", metavar="MODULE", multiple=True,
                         help="A module (dotted name or .py path) whose functions and "
                              "workloads this node may run; repeatable."),
            click.option("--retries", type=click.IntRange(0, configuration.MAX_RETRIES),
                         help="Master: runs more of a job that raised, on the other node "
                              "where possible, before it fails for good.  [default: 2]"))):
        command = option(command)
    return command


@cli.command()
@click.option("--role", type=ROLE, required=True, help="Which node this is.")
@config_option
@click.option("--policy", type=click.Choice(adaptor.POLICIES), help="Transfer policy.")
@click.option("--jobs", type=click.IntRange(min=1),
              help="Master: the number of jobs, for a workload that takes one (vector).")
@click.option("--throttle", type=THROTTLE, help="Duty cycle from 0 to 1.")
@click.option("--workers", type=click.IntRange(1, 256),
              help="Jobs run at once: worker processes for functions, threads for workloads.")
@job_options
@click.option("--trace", type=click.Path(dir_okay=False, path_type=Path),
              help="Write both nodes' traces here as JSON (master).")
@click.option("--result", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the run's summary here as JSON (master).")
@click.option("--resume", is_flag=True,
              help="Master: continue the run in the journal after a crash.")
@click.option("--no-dashboard", is_flag=True, help="Plain log lines instead of the live view.")
@click.option("--metrics", "metrics_address", type=ADDRESS,
              help="Serve Prometheus metrics at http://HOST:PORT/metrics.")
@log_options
def launch(role: str, config_path: Path, policy: str | None, jobs: int | None,
           throttle: float | None, workers: int | None, target: str | None,
           inputs: str | None, output: str, modules: tuple[str, ...], retries: int | None,
           trace: Path | None, result: Path | None, resume: bool, no_dashboard: bool,
           metrics_address: Address | None, log_level: str, log_format: str,
           log_file: Path | None) -> None:
    """Run a node until the master has every job's outcome."""
    if role != "master":
        for flag, value in (("--resume", resume), ("--map", target), ("--inputs", inputs)):
            if value:
                raise _fail_usage(f"{flag} is for the master (a slave runs what it is sent)")
    if target is not None and jobs is not None:
        raise _fail_usage("--jobs does not apply to --map: the inputs decide the jobs")
    overrides = {k: v for k, v in (("policy", policy), ("throttle", throttle),
                                   ("workers", workers), ("retries", retries)) if v is not None}
    config, tasks = _load(config_path, overrides, modules, jobs)
    node_role = Role[role.upper()]
    for flag, path in (("--result", result), ("--trace", trace)):
        _check_writable(flag, path)
    batch = _batch(config, tasks, target, inputs, output) if role == "master" else None
    dashboard = not no_dashboard and sys.stdout.isatty()
    _configure_logs(node_role, log_level, log_format, log_file, dashboard=dashboard)
    sys.exit(_run(config, node_role, tasks, batch, dashboard=dashboard, trace=trace,
                  result=result, resume=resume, metrics_address=metrics_address,
                  log_messages=log_file is not None))


def _run(config: Config, role: Role, tasks: Tasks, batch: Batch | None, *, dashboard: bool,
         trace: Path | None = None, result: Path | None = None, resume: bool = False,
         metrics_address: Address | None = None, log_messages: bool = False) -> int:
    try:
        code, node = run_node(config, role, tasks=tasks, batch=batch, dashboard=dashboard,
                              trace=trace, result=result, resume=resume,
                              metrics_address=metrics_address, log_messages=log_messages)
    except JournalError as error:
        raise _fail_usage(str(error)) from None
    except (OSError, control.ControlError) as error:
        raise click.ClickException(f"cannot start the {role}: {error}") from None
    summary = getattr(node, "summary", None)
    if summary is not None:
        # Results on standard output keep it to themselves: the summary goes to stderr.
        to_stderr = isinstance(batch, MapBatch) and batch.output.name == STDOUT
        _print_summary(summary, rich=dashboard and not to_stderr, err=to_stderr)
    return code


def _print_summary(summary: dict[str, Any], *, rich: bool, err: bool) -> None:
    if rich:
        from rich.console import Console

        from loadbalancer.dashboard import summary_table
        Console().print(summary_table(summary))
    else:
        click.echo(json.dumps(summary), err=err)


def _socket(config_path: Path, role: str | None) -> Path:
    runtime_dir = configuration.default_runtime_dir()
    if config_path.exists() or config_path != DEFAULT_CONFIG:
        try:
            runtime_dir = configuration.load(config_path).runtime_dir
        except ConfigError as error:
            raise _fail_usage(str(error)) from None
    if role is not None:
        return control.socket_path(runtime_dir, role)
    try:
        running = control.listening(runtime_dir, ("master", "slave"))
    except control.ControlError as error:
        raise click.ClickException(str(error)) from None
    if len(running) != 1:
        raise click.ClickException(
            "both nodes run here: say which with --role" if running
            else f"no node is running (nothing in {runtime_dir})")
    return control.socket_path(runtime_dir, running[0])


def _ask(path: Path, message: dict[str, Any]) -> dict[str, Any]:
    try:
        return control.request(path, message)
    except control.ControlError as error:
        raise click.ClickException(str(error)) from None


@cli.command(short_help="Set a running node's throttle, from 0 to 1.")
@click.argument("value", type=THROTTLE)
@click.option("--role", type=ROLE, help="Which node (needed when both run here).")
@config_option
def throttle(value: float, role: str | None, config_path: Path) -> None:
    """Set a running node's throttle (0 = do no work, hand the queue away)."""
    answer = _ask(_socket(config_path, role), {"cmd": "throttle", "value": value})
    click.echo(f"throttle {answer['throttle']:g}")


@cli.command()
@click.option("--role", type=ROLE, help="Which node (needed when both run here).")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(role: str | None, config_path: Path, as_json: bool) -> None:
    """Print a running node's state and its view of the peer."""
    answer = _ask(_socket(config_path, role), {"cmd": "status"})
    if as_json:
        click.echo(json.dumps(answer))
        return
    from rich.console import Console

    from loadbalancer.dashboard import status_table
    # The remote side is what the peer said of itself: the table makes every string printable.
    Console(highlight=False).print(status_table(answer["local"], answer.get("remote")))


@cli.command()
@click.option("--jobs", type=click.IntRange(min=1),
              help="Number of vector jobs (each as large as the default workload's).  "
                   f"[default: {DEMO_JOBS}]")
@click.option("--policy", type=click.Choice(adaptor.POLICIES), default="symmetric",
              show_default=True, help="Transfer policy.")
@click.option("--slave-throttle", type=THROTTLE, default=1.0, show_default=True,
              help="The slave's starting throttle.")
@click.option("--workers", type=click.IntRange(1, 256), help="Jobs each node runs at once.")
@job_options
@click.option("--no-dashboard", is_flag=True, help="Plain log lines instead of the live view.")
# Tiny jobs for the tests that watch the demo; a person wants jobs that take a while.
@click.option("--iterations", type=click.IntRange(min=1), hidden=True)
@log_options
def demo(jobs: int | None, policy: str, slave_throttle: float, workers: int | None,
         target: str | None, inputs: str | None, output: str, modules: tuple[str, ...],
         retries: int | None, no_dashboard: bool, iterations: int | None, log_level: str,
         log_format: str, log_file: Path | None) -> None:
    """Run a master and a slave on loopback with a fresh secret.

    Without --map they share the built-in vector workload; with --map, your function over
    your inputs (the slave is given the function's module).  The log options apply to both
    nodes (with --log-file both append to the one file; the json format's role field tells
    them apart)."""
    if target is not None and jobs is not None:
        raise _fail_usage("--jobs does not apply to --map: the inputs decide the jobs")
    if target is not None:
        modules = (*modules, split_target(target)[0])
    overrides = {k: v for k, v in (("workers", workers), ("retries", retries))
                 if v is not None}
    dashboard = not no_dashboard and sys.stdout.isatty()
    settings = _configure_logs(Role.MASTER, log_level, log_format, log_file, dashboard=dashboard)
    with tempfile.TemporaryDirectory(prefix="lb-demo-") as tmp:
        path = local.write_config(Path(tmp), jobs=jobs or DEMO_JOBS, policy=policy,
                                  iterations=iterations)
        config, tasks = _load(path, overrides, modules)
        batch = _batch(config, tasks, target, inputs, output)
        log_path = Path(tmp) / "slave.log"
        slave_args = ["--throttle", str(slave_throttle), *settings.args()]
        for module in modules:
            slave_args += ["--workload-module", module]
        if workers is not None:
            slave_args += ["--workers", str(workers)]
        slave = local.launch(path, "slave", *slave_args, log=log_path)
        try:
            # The master only once the slave listens: a short run would otherwise be over
            # before the slave joined, and the slave would wait for a master that has gone.
            local.wait_until_listening(path, "slave", slave)
        except RuntimeError as error:
            slave.kill()
            raise click.ClickException(f"{error}: {log_path.read_text()[-2000:]}") from None
        try:
            code = _run(config, Role.MASTER, tasks, batch, dashboard=dashboard,
                        log_messages=log_file is not None)
        finally:
            try:
                slave.wait(timeout=10)
            except subprocess.TimeoutExpired:
                slave.kill()
        # Ctrl-C stops both (the slave is in the terminal's process group): no news there.
        if code not in (EXIT_OK, EXIT_JOBS_FAILED, EXIT_INTERRUPTED) or \
                slave.returncode not in (EXIT_OK, EXIT_INTERRUPTED):
            click.echo(f"slave exited {slave.returncode}; its log:", err=True)
            click.echo(log_path.read_text()[-4000:], err=True)
        sys.exit(code)


@cli.command()
@click.option("--master", type=ADDRESS, default=newconfig.DEFAULT_MASTER, show_default=True,
              help="The master's HOST:PORT (the address it binds and the slave sends to).")
@click.option("--slave", type=ADDRESS, default=newconfig.DEFAULT_SLAVE, show_default=True,
              help="The slave's HOST:PORT.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_CONFIG, show_default=True, help="The config file to write.")
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
def init(master: Address, slave: Address, output: Path, force: bool) -> None:
    """Write a new config with a fresh secret.

    The file is created with mode 0600; both machines need a copy of it."""
    if master == slave:
        raise _fail_usage("--master and --slave must differ: each node binds its own address")
    text = json.dumps(newconfig.new_config(master, slave), indent=2) + "\n"
    try:
        newconfig.write_private(output, text, force=force)
    except FileExistsError:
        raise click.ClickException(f"{output} exists: pass --force to replace it") from None
    except OSError as error:
        raise click.ClickException(f"cannot write {output}: {error.strerror}") from None
    click.echo(newconfig.instructions(output, master, slave))


def _login_shell() -> str | None:
    """The shell $SHELL names, if it is one of SHELLS."""
    name = Path(os.environ.get("SHELL", "")).name
    return name if name in SHELLS else None


@cli.command()
@click.option("--shell", type=click.Choice(SHELLS), default=_login_shell,
              help="Your shell.  [default: the one $SHELL names]")
def completion(shell: str | None) -> None:
    """Print the shell completion script.

    The same script as _LB_COMPLETE=SHELL_source lb prints, e.g. eval "$(lb completion)"
    in ~/.bashrc."""
    if shell is None:
        raise _fail_usage(f"$SHELL is {os.environ.get('SHELL', 'not set')!r}: say which with "
                          f"--shell ({', '.join(SHELLS)})")
    from click.shell_completion import get_completion_class
    script = get_completion_class(shell)
    assert script is not None  # click has a class for each of SHELLS
    click.echo(script(cli, {}, "lb", "_LB_COMPLETE").source(), nl=False)


@cli.command()
@click.argument("trace_path", metavar="TRACE", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="The image; its extension picks the format (png, svg, pdf...).  "
                   "[default: TRACE with .png]")
@click.option("--kind", type=click.Choice(REPORT_KINDS), default="load",
              show_default=True,
              help="load: pending jobs and jobs/s per node; timeline: where each job ended, "
                   "moves and copies marked.")
def report(trace_path: Path, output: Path | None, kind: str) -> None:
    """Plot a finished run's trace.

    TRACE is the master's --trace file; the plot shows each node's pending jobs over time,
    with its throttle changes marked."""
    from loadbalancer import report as reporting
    output = output or trace_path.with_suffix(".png")
    try:
        reporting.write_report(reporting.load_trace(trace_path), output, kind)
    except reporting.ReportError as error:
        raise _fail_usage(str(error)) from None
    except reporting.PlotUnavailable as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write {output}: {error.strerror}") from None
    click.echo(f"wrote {output}")
