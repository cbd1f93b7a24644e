"""The console side of the harness: the results table, the targets and the overheads (rich)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from benchmarks.results import Row
from benchmarks.targets import Check

if TYPE_CHECKING:
    from benchmarks.overheads import Measure

STYLES = {"PASS": "bold green", "MISS": "bold red", "SKIP": "yellow", "INFO": "dim"}


def console() -> Console:
    # Wide enough that the table never wraps when the output goes to a file or a pipe.
    return Console(width=160, highlight=False)


def _number(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def results_table(rows: Sequence[Row]) -> Table:
    table = Table(title="lb vs ideal (ratio = makespan / ideal; one run, side by side)")
    for name in ("scenario", "policy"):
        table.add_column(name)
    for name in ("makespan s", "ideal s", "ratio", "tail s", "jobs moved", "MB sent",
                 "retransmits"):
        table.add_column(name, justify="right")
    table.add_column("note", max_width=48)
    previous = None
    for row in rows:
        if previous is not None and row.scenario != previous:
            table.add_section()
        previous = row.scenario
        ratio = _number(row.ratio, 3) if row.ok else "[red]failed[/red]"
        table.add_row(row.scenario, row.policy, _number(row.makespan), _number(row.ideal),
                      ratio, _number(row.tail), _number(row.moved), _number(row.mb_sent),
                      _number(row.retransmits) + ("" if row.spurious is None
                                                  else f" ({row.spurious} spurious)"),
                      row.note)
    return table


def targets_table(checks: Sequence[Check]) -> Table:
    table = Table(title="targets (best policy = best of sender, receiver, symmetric)")
    table.add_column("target")
    table.add_column("measured")
    table.add_column("", justify="center")
    for check in checks:
        style = STYLES[check.status]
        table.add_row(check.target, check.value, f"[{style}]{check.status}[/{style}]")
    return table


def print_overheads(out: Console, measures: Sequence[Measure], title: str = "overheads") -> None:
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target")
    table.add_column("", justify="center")
    table.add_column("details", max_width=70)
    for measure in measures:
        style = STYLES[measure.status]
        table.add_row(measure.name, f"{measure.value:g} {measure.unit}", measure.target,
                      f"[{style}]{measure.status}[/{style}]", _details(measure))
    out.print(table)


def _details(measure: Measure) -> str:
    details = measure.details
    if "share_of_tcp" in details:
        lb, tcp = details["lb"], details["tcp"]
        return (f"lb {lb['MB_s']} MB/s {lb['jobs_s']} jobs/s, {lb['retransmits']} retransmits; "
                f"TCP {tcp['MB_s']} MB/s {tcp['jobs_s']} jobs/s; lb = "
                f"{details['share_of_tcp']:.2f} x TCP")
    return ", ".join(f"{k} {v}" for k, v in details.items())
