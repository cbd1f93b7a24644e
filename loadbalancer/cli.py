"""The ``lb`` command. It only parses, validates and forwards (as uvicorn's main
does): a bad value or config prints one line and exits 2; a runtime failure
(an unreachable node, a failed verification) exits 1."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from loadbalancer import __version__, adaptor, control, local, workload
from loadbalancer import config as configuration
from loadbalancer.app import EXIT_OK, configure_logging, run_node
from loadbalancer.config import Config, ConfigError
from loadbalancer.messages import WorkloadSpec
from loadbalancer.wire import Role

DEFAULT_CONFIG = Path("lb.json")
ROLE = click.Choice(["master", "slave"])
config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG, show_default=True, help="JSON config file.")


def _fail_usage(message: str) -> click.UsageError:
    return click.UsageError(message)


def _load(path: Path, overrides: dict[str, Any], module: str | None) -> Config:
    try:
        config = configuration.load(path)
        if module is not None:
            config = replace(config, workload_module=module)
        if config.workload_module:
            workload.load_module(config.workload_module)
        spec = config.workload
        if "jobs" in overrides:
            spec = WorkloadSpec(spec.name, {**spec.params, "jobs": overrides.pop("jobs")})
        config = replace(config, workload=spec, **overrides)
        workload.create(config.workload.name, config.workload.params)  # fail now, not mid-run
    except (ConfigError, workload.WorkloadError) as error:
        raise _fail_usage(str(error)) from None
    return config


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lb")
def main() -> None:
    """lb: share a batch of CPU work between two machines, balanced while it runs."""


@main.command()
@click.option("--role", type=ROLE, required=True, help="Which node this is.")
@config_option
@click.option("--policy", type=click.Choice(adaptor.POLICIES), help="Transfer policy.")
@click.option("--jobs", type=click.IntRange(min=1), help="Number of jobs (master).")
@click.option("--throttle", type=click.FloatRange(0, 1), help="Duty cycle from 0 to 1.")
@click.option("--workers", type=click.IntRange(1, 256), help="Worker threads.")
@click.option("--workload-module", help="Module or .py file registering workloads.")
@click.option("--trace", type=click.Path(dir_okay=False, path_type=Path),
              help="Write both nodes' traces here as JSON (master).")
@click.option("--result", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the run's summary here as JSON (master).")
@click.option("--no-dashboard", is_flag=True, help="Plain log lines instead of the live view.")
def launch(role: str, config_path: Path, policy: str | None, jobs: int | None,
           throttle: float | None, workers: int | None, workload_module: str | None,
           trace: Path | None, result: Path | None, no_dashboard: bool) -> None:
    """Run a node until the master has verified every result."""
    overrides = {k: v for k, v in (("policy", policy), ("jobs", jobs), ("throttle", throttle),
                                   ("workers", workers)) if v is not None}
    config = _load(config_path, overrides, workload_module)
    sys.exit(_run(config, Role[role.upper()], dashboard=not no_dashboard and sys.stdout.isatty(),
                  trace=trace, result=result))


def _run(config: Config, role: Role, *, dashboard: bool, trace: Path | None = None,
         result: Path | None = None) -> int:
    configure_logging()
    try:
        code, node = run_node(config, role, dashboard=dashboard, trace=trace, result=result)
    except OSError as error:
        raise click.ClickException(f"cannot start the {role}: {error}") from None
    summary = getattr(node, "summary", None)
    if summary is not None:
        _print_summary(summary, rich=dashboard)
    return code


def _print_summary(summary: dict[str, Any], *, rich: bool) -> None:
    if rich:
        from rich.console import Console

        from loadbalancer.dashboard import summary_table
        Console().print(summary_table(summary))
    else:
        click.echo(json.dumps(summary))


def _socket(config_path: Path, role: str | None) -> Path:
    runtime_dir = configuration.default_runtime_dir()
    if config_path.exists() or config_path != DEFAULT_CONFIG:
        try:
            runtime_dir = configuration.load(config_path).runtime_dir
        except ConfigError as error:
            raise _fail_usage(str(error)) from None
    if role is not None:
        return control.socket_path(runtime_dir, role)
    running = [r for r in ("master", "slave") if control.socket_path(runtime_dir, r).exists()]
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


@main.command()
@click.argument("value", type=click.FloatRange(0, 1))
@click.option("--role", type=ROLE, help="Which node (needed when both run here).")
@config_option
def throttle(value: float, role: str | None, config_path: Path) -> None:
    """Set a running node's throttle (0 = do no work, hand the queue away)."""
    answer = _ask(_socket(config_path, role), {"cmd": "throttle", "value": value})
    click.echo(f"throttle {answer['throttle']:g}")


@main.command()
@click.option("--role", type=ROLE, help="Which node (needed when both run here).")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(role: str | None, config_path: Path, as_json: bool) -> None:
    """Print a running node's state and its view of the peer."""
    answer = _ask(_socket(config_path, role), {"cmd": "status"})
    if as_json:
        click.echo(json.dumps(answer))
        return
    for side in ("local", "remote"):
        state = answer.get(side)
        if state:
            fields = " ".join(f"{k}={v}" for k, v in state.items() if k != "dropped")
            click.echo(f"{side}: {fields}")


@main.command()
@click.option("--jobs", type=click.IntRange(min=1), default=256, show_default=True,
              help="Number of jobs (each as large as the default workload's).")
@click.option("--policy", type=click.Choice(adaptor.POLICIES), default="symmetric",
              show_default=True, help="Transfer policy.")
@click.option("--slave-throttle", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="The slave's starting throttle.")
@click.option("--no-dashboard", is_flag=True, help="Plain log lines instead of the live view.")
def demo(jobs: int, policy: str, slave_throttle: float, no_dashboard: bool) -> None:
    """Run a master and a slave on loopback with a fresh secret."""
    with tempfile.TemporaryDirectory(prefix="lb-demo-") as tmp:
        path = local.write_config(Path(tmp), jobs=jobs, policy=policy)
        config = _load(path, {}, None)
        log_path = Path(tmp) / "slave.log"
        slave = local.launch(path, "slave", "--throttle", str(slave_throttle), log=log_path)
        try:
            code = _run(config, Role.MASTER, dashboard=not no_dashboard and sys.stdout.isatty())
        finally:
            try:
                slave.wait(timeout=10)
            except subprocess.TimeoutExpired:
                slave.kill()
        if code != EXIT_OK or slave.returncode != EXIT_OK:
            click.echo(f"slave exited {slave.returncode}; its log:", err=True)
            click.echo(log_path.read_text()[-4000:], err=True)
        sys.exit(code)
