"""``lb launch`` and ``lb demo``: the commands that run a node (the demo, both on loopback)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from loadbalancer import adaptor, control, local
from loadbalancer.addresses import Address
from loadbalancer.app import run_node
from loadbalancer.batch import Batch, MapBatch
from loadbalancer.clioptions import (
    ADDRESS,
    ROLE,
    THROTTLE,
    check_writable,
    config_option,
    configure_logs,
    fail_usage,
    job_options,
    load_config,
    log_options,
    master_batch,
)
from loadbalancer.config import Config
from loadbalancer.exits import EXIT_INTERRUPTED, EXIT_JOBS_FAILED, EXIT_OK
from loadbalancer.functions import split_target
from loadbalancer.journal import JournalError
from loadbalancer.jsonlines import STDOUT
from loadbalancer.tasks import Tasks
from loadbalancer.wire import Role

DEMO_JOBS = 256


@click.command()
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
                raise fail_usage(f"{flag} is for the master (a slave runs what it is sent)")
    if target is not None and jobs is not None:
        raise fail_usage("--jobs does not apply to --map: the inputs decide the jobs")
    overrides = {k: v for k, v in (("policy", policy), ("throttle", throttle),
                                   ("workers", workers), ("retries", retries)) if v is not None}
    config, tasks = load_config(config_path, overrides, modules, jobs)
    node_role = Role[role.upper()]
    for flag, path in (("--result", result), ("--trace", trace)):
        check_writable(flag, path)
    batch = master_batch(config, tasks, target, inputs, output) if role == "master" else None
    dashboard = not no_dashboard and sys.stdout.isatty()
    configure_logs(node_role, log_level, log_format, log_file, dashboard=dashboard)
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
        raise fail_usage(str(error)) from None
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


@click.command()
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
        raise fail_usage("--jobs does not apply to --map: the inputs decide the jobs")
    if target is not None:
        modules = (*modules, split_target(target)[0])
    overrides = {k: v for k, v in (("workers", workers), ("retries", retries))
                 if v is not None}
    dashboard = not no_dashboard and sys.stdout.isatty()
    settings = configure_logs(Role.MASTER, log_level, log_format, log_file, dashboard=dashboard)
    with tempfile.TemporaryDirectory(prefix="lb-demo-") as tmp:
        path = local.write_config(Path(tmp), jobs=jobs or DEMO_JOBS, policy=policy,
                                  iterations=iterations)
        config, tasks = load_config(path, overrides, modules)
        batch = master_batch(config, tasks, target, inputs, output)
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
