"""``lb throttle`` and ``lb status``: the commands that ask a running node over its control
socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from loadbalancer import config as configuration
from loadbalancer import control
from loadbalancer.clioptions import DEFAULT_CONFIG, ROLE, THROTTLE, config_option, fail_usage
from loadbalancer.config import ConfigError


def _socket(config_path: Path, role: str | None) -> Path:
    runtime_dir = configuration.default_runtime_dir()
    if config_path.exists() or config_path != DEFAULT_CONFIG:
        try:
            runtime_dir = configuration.load(config_path).runtime_dir
        except ConfigError as error:
            raise fail_usage(str(error)) from None
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


@click.command(short_help="Set a running node's throttle, from 0 to 1.")
@click.argument("value", type=THROTTLE)
@click.option("--role", type=ROLE, help="Which node (needed when both run here).")
@config_option
def throttle(value: float, role: str | None, config_path: Path) -> None:
    """Set a running node's throttle (0 = do no work, hand the queue away)."""
    answer = _ask(_socket(config_path, role), {"cmd": "throttle", "value": value})
    click.echo(f"throttle {answer['throttle']:g}")


@click.command()
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
