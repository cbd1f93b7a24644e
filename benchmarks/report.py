"""The console side of the harness: the results table, the targets and the overheads (rich)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from benchmarks.results import Measure, Row, cells, median_worst
from benchmarks.targets import Check

STYLES = {"PASS": "bold green", "MISS": "bold red", "SKIP": "yellow", "INFO": "dim"}


def console() -> Console:
    # Wide enough that the table never wraps when the output goes to a file or a pipe.
    return Console(width=160, highlight=False)


def _number(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def results_table(rows: Sequence[Row]) -> Table:
    """One line per scenario and policy: the median (worst) of its runs for the ratio, the
    moves, the tail, the copies and the per-job overhead; the median run's other figures."""
    table_cells = cells(rows)
    runs = max((len(cell.runs) for cell in table_cells), default=1)
    spread = f"median (worst) of {runs} runs" if runs > 1 else "one run"
    table = Table(title=f"lb vs ideal (ratio = makespan / ideal; {spread}, side by side)")
    for name in ("scenario", "policy"):
        table.add_column(name)
    for name in ("ratio", "makespan s", "ideal s", "moved %", "moved >1 %", "tail jobs",
                 "copies %", "us/job", "MB sent", "retransmits"):
        table.add_column(name, justify="right")
    table.add_column("note", max_width=32)
    previous = None
    for cell in table_cells:
        if previous is not None and cell.scenario != previous:
            table.add_section()
        previous = cell.scenario
        row = cell.chosen
        ratio = median_worst(cell, "ratio", 3) if cell.good else "[red]failed[/red]"
        if cell.good and cell.failed:
            ratio += f" [red]{cell.failed} failed[/red]"
        notes = [r.note for r in cell.runs if r.note]
        table.add_row(cell.scenario, cell.policy, ratio, _number(row.makespan),
                      _number(row.ideal), median_worst(cell, "moved_pct", 1),
                      median_worst(cell, "moved_again_pct", 1),
                      median_worst(cell, "tail_jobs", 2), median_worst(cell, "copy_pct", 1),
                      median_worst(cell, "overhead_us", 1), _number(row.mb_sent),
                      _number(row.retransmits) + ("" if row.spurious is None
                                                  else f" ({row.spurious} spurious)"),
                      notes[0] if notes else "")
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


def print_paths(out: Console, measures: Sequence[Measure]) -> None:
    """The goodput per path (lb beside TCP, medians of the rounds) and the bootstraps."""
    table = Table(title="goodput of incompressible job data, two processes (medians)")
    for name, justify in (("path", "left"), ("MTU", "right"), ("lb MB/s", "right"),
                          ("TCP MB/s", "right"), ("ratio", "right"), ("target", "left"),
                          ("", "center")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    bootstraps = []
    for measure in measures:
        if "tcp_MB_s" not in measure.details:
            bootstraps.append(measure)
            continue
        row, style = measure.details, STYLES[measure.status]
        table.add_row(row["path"], str(row["link_mtu"] or "-"), f"{row['lb_MB_s']:g}",
                      f"{row['tcp_MB_s']:g}", f"{row['ratio']:.3f}", measure.target,
                      f"[{style}]{measure.status}[/{style}]")
    out.print(table)
    if bootstraps:
        print_overheads(out, bootstraps, title="bootstrap")
