"""The options and values the ``lb`` commands share, and the checks that turn a bad one
into a usage error (one line, exit 2) before anything starts."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from loadbalancer import config as configuration
from loadbalancer import logs, workload
from loadbalancer.addresses import Address, parse_address
from loadbalancer.batch import Batch, MapBatch, WorkloadBatch
from loadbalancer.config import Config, ConfigError
from loadbalancer.functions import Catalog
from loadbalancer.jsonlines import InputError, Inputs, Output
from loadbalancer.messages import WorkloadSpec
from loadbalancer.tasks import TaskError, Tasks
from loadbalancer.wire import Role

DEFAULT_CONFIG = Path("lb.json")
ROLE = click.Choice(["master", "slave"])
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG, show_default=True, help="JSON config file.")


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


def configure_logs(role: Role, level: str, fmt: str, file: Path | None, *,
                   dashboard: bool) -> logs.LogSettings:
    settings = logs.LogSettings(level, fmt, file)
    try:
        logs.configure(str(role), settings, dashboard=dashboard)
    except OSError as error:
        raise fail_usage(f"cannot open the log file {file}: {error.strerror}") from None
    return settings


def fail_usage(message: str) -> click.UsageError:
    return click.UsageError(message)


def load_config(path: Path, overrides: dict[str, Any], modules: tuple[str, ...] = (),
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
        raise fail_usage(str(error)) from None
    return config, tasks


def _with_jobs(spec: WorkloadSpec, jobs: int) -> WorkloadSpec:
    kind = workload.REGISTRY.get(spec.name)
    if kind is None or kind.jobs_param is None:
        raise ConfigError(f"--jobs does not apply to workload {spec.name!r}: it decides its "
                          "own jobs")
    return WorkloadSpec(spec.name, {**spec.params, kind.jobs_param: jobs})


def check_writable(flag: str, path: Path | None) -> None:
    """Now, not after an hour's run: the file written at the end can be written."""
    if path is None:
        return
    folder = path.parent
    if not folder.is_dir():
        raise fail_usage(f"{flag} {path}: there is no folder {folder}")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(
            path, os.W_OK)):
        raise fail_usage(f"{flag} {path}: not writable by this user")


def master_batch(config: Config, tasks: Tasks, target: str | None, inputs: str | None,
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
        raise fail_usage(str(error)) from None


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
