"""The ``lb`` command. It only parses, validates and forwards (as uvicorn's main
does): a bad value or config prints one line and exits 2; a runtime failure
(an unreachable node, a failed verification) exits 1.

Here the group and the commands that need no node; :mod:`loadbalancer.clinodes` has those
that run one, :mod:`loadbalancer.clicontrol` those that ask a running one, and
:mod:`loadbalancer.clioptions` the options they share."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from loadbalancer import __version__, newconfig
from loadbalancer.addresses import Address
from loadbalancer.clicontrol import status, throttle
from loadbalancer.clinodes import demo, launch
from loadbalancer.clioptions import ADDRESS, DEFAULT_CONFIG, fail_usage
from loadbalancer.exits import EXIT_INTERRUPTED, EXIT_OK
from loadbalancer.report import KINDS as REPORT_KINDS

SHELLS = ("bash", "zsh", "fish")
EPILOG = """\b
Shell completion (bash, zsh or fish), e.g. in ~/.bashrc:
  eval "$(lb completion --shell bash)"
or for fish:  lb completion --shell fish > ~/.config/fish/completions/lb.fish"""


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


for command in (launch, demo, throttle, status):
    cli.add_command(command)


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
        raise fail_usage("--master and --slave must differ: each node binds its own address")
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
        raise fail_usage(f"$SHELL is {os.environ.get('SHELL', 'not set')!r}: say which with "
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
        raise fail_usage(str(error)) from None
    except reporting.PlotUnavailable as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write {output}: {error.strerror}") from None
    click.echo(f"wrote {output}")
