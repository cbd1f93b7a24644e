"""The benchmark harness: every scenario under every policy with real nodes, Dask on the same
work, the targets, the overheads (issue 4), the function jobs' figures (issue 10) and the
goodput on real paths beside TCP (benchmarks/paths.py).

    python -m benchmarks.run [--quick] [--out DIR] [--scenarios equal,hetero] [--policies ...]
                             [--repeat N] [--no-dask] [--no-overheads] [--no-functions]
                             [--no-paths]

Writes DIR/runs/<scenario>-<policy>[-<n>].json per run (the master's summary and trace, the
throttle schedule and the pause as applied), DIR/<scenario>.png per scenario (the median runs)
and DIR/summary.json (every run's row, each cell's medians and worsts, targets, the policy
choice, overheads); prints the table (median and worst of each cell's runs), the targets (on
the medians), the policies ranked on their medians and the overheads. Exit status 1 when a
run failed or did not verify, 0 otherwise (a missed target is a finding, not a failure).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks import dask_peer, functions, overheads, paths, plot, report, targets
from benchmarks.results import Cell, Row, cells, write_json
from benchmarks.scenarios import BENCHES, POLICIES, Bench, Run, Size, calibrate, run_one, sized

# (jobs, compute seconds of one job at full speed), for the scenarios without a size of their
# own (`tiny` has one). Quick: each lb run a few seconds (pause: 5 s more).
QUICK = (200, 0.015)
FULL = (1024, 0.04)


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown[0]!r} "
                                         f"(known: {', '.join(known)})")
    return names


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run",
                                     description="lb's benchmark harness (issue 4)")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK[0]} jobs of ~{QUICK[1] * 1e3:.0f} ms (under 3 minutes); "
                        f"default {FULL[0]} jobs of ~{FULL[1] * 1e3:.0f} ms")
    parser.add_argument("--jobs", type=int, help="number of jobs (overrides the size)")
    parser.add_argument("--job-ms", type=float, help="compute ms of one job at full speed")
    parser.add_argument("--scenarios", type=lambda t: _names(t, list(BENCHES), "scenario"),
                        default=list(BENCHES), help="comma-separated (default: all)")
    parser.add_argument("--policies", type=lambda t: _names(t, POLICIES, "policy"),
                        default=list(POLICIES), help="comma-separated (default: all)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per scenario and policy (and on Dask); the table shows "
                        "the median and the worst, the targets judge the medians")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"),
                        help="output directory (default benchmarks/out, git-ignored)")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask peer")
    parser.add_argument("--no-overheads", action="store_true", help="skip the overheads")
    parser.add_argument("--no-functions", action="store_true",
                        help="skip the function jobs' figures")
    parser.add_argument("--no-paths", action="store_true",
                        help="skip the goodput on loopback and veth paths (root for veth)")
    return parser.parse_args(argv)


def _size(args: argparse.Namespace) -> Size:
    jobs, seconds = QUICK if args.quick else FULL
    return calibrate(args.jobs or jobs, args.job_ms / 1e3 if args.job_ms else seconds)


def _median(runs: list[Run]) -> Run:
    """The run of median ratio (failed runs count as the worst), as the table chooses it."""
    chosen = Cell(tuple(run.row for run in runs)).chosen
    return next(run for run in runs if run.row is chosen)


class Progress:
    """One line per run: where we are, what it gave, how long it took."""

    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total, self.done = console, total, 0
        self.began = time.monotonic()

    def line(self, what: str, row: Row, seconds: float) -> None:
        self.done += 1
        result = f"ratio {row.ratio:.3f}" if row.ok else f"[red]FAILED[/red] {row.note[:120]}"
        elapsed = time.monotonic() - self.began
        self.console.print(f"[{self.done:2}/{self.total}] {what:<24} {result:<14} "
                           f"{seconds:5.1f}s  (total {elapsed:4.0f}s)")


def run_lb(benches: list[tuple[Bench, Size]], policies: list[str], repeat: int, out: Path,
           progress: Progress) -> dict[tuple[str, str], list[Run]]:
    every: dict[tuple[str, str], list[Run]] = {}
    for bench, size in benches:
        for policy in policies:
            runs = every.setdefault((bench.name, policy), [])
            for rep in range(repeat):
                began = time.monotonic()
                run = run_one(bench, policy, size)
                suffix = f"-{rep + 1}" if repeat > 1 else ""
                write_json(out / "runs" / f"{bench.name}-{policy}{suffix}.json", run.record)
                progress.line(f"{bench.name} / {policy}", run.row, time.monotonic() - began)
                runs.append(run)
    return every


def run_dask(benches: list[tuple[Bench, Size]], repeat: int, out: Path, progress: Progress,
             console: Console) -> list[Row]:
    if not dask_peer.available():
        console.print("[yellow]dask is not installed: no dask rows "
                      "(pip install -e '.[peers]')[/yellow]")
        return []
    rows = []
    began = time.monotonic()
    try:
        counts: dict[str, int] = {}
        for row, record in dask_peer.run_all(benches, repeat):
            counts[row.scenario] = counts.get(row.scenario, 0) + 1
            suffix = f"-{counts[row.scenario]}" if repeat > 1 else ""
            write_json(out / "runs" / f"{row.scenario}-dask{suffix}.json", record)
            progress.line(f"{row.scenario} / dask", row, time.monotonic() - began)
            began = time.monotonic()
            rows.append(row)
    except Exception as error:  # a broken peer must not cost lb's results
        console.print(f"[red]dask failed: {type(error).__name__}: {error}[/red]")
    return rows


def plot_all(benches: list[Bench], policies: list[str], runs: dict[tuple[str, str], list[Run]],
             out: Path) -> list[Path]:
    """A PNG per scenario, a panel per policy: its median run."""
    paths = []
    for bench in benches:
        traces = {policy: _judged(_median(runs[bench.name, policy])) for policy in policies}
        path = out / f"{bench.name}.png"
        plot.plot_scenario(bench.name, traces, path)
        paths.append(path)
    return paths


def _judged(run: Run) -> dict[str, Any] | None:
    """The run's trace with the ideal and the ratio the table has (a pause, a long job: not
    the master's), so the panel's title and its "ideal end" line say what the row says; and
    when the slave was stopped, for the panel to shade."""
    trace = run.record.get("trace")
    if trace is None or run.row.ideal is None:
        return trace
    summary = {**(trace.get("summary") or {}), "ideal_s": run.row.ideal, "ratio": run.row.ratio}
    return {**trace, "summary": summary, "paused": run.record.get("paused", [])}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    console = report.console()
    size = _size(args)
    benches = [BENCHES[name] for name in args.scenarios]
    sizes = [(bench, sized(bench, size, args.quick)) for bench in benches]
    console.print(f"workload: {size.jobs} jobs of {size.elements_per_job} float64 x "
                  f"{size.iterations} iterations (~{size.job_seconds * 1e3:.0f} ms each here); "
                  f"{len(benches)} scenarios x {len(args.policies)} policies"
                  f"{'' if args.no_dask else ' + dask'}, {args.repeat} run(s) each")
    for bench, own in sizes:
        if own.jobs != size.jobs:
            console.print(f"  {bench.name}: {own.jobs} jobs of {own.elements_per_job} float64 x "
                          f"{own.iterations} iterations (~{own.job_seconds * 1e3:.1f} ms each)")
    total = len(benches) * args.repeat * (len(args.policies) + (0 if args.no_dask else 1))
    progress = Progress(console, total)
    runs = run_lb(sizes, args.policies, args.repeat, args.out, progress)
    rows = [run.row for cell in runs.values() for run in cell]
    if not args.no_dask:
        rows += run_dask(sizes, args.repeat, args.out, progress, console)
    rows.sort(key=lambda row: list(BENCHES).index(row.scenario))  # stable: policies in order
    pictures = plot_all(benches, args.policies, runs, args.out)
    console.print(report.results_table(rows))
    checks = targets.check(rows)
    console.print(report.targets_table(checks))
    ranked = targets.choice(rows)
    if ranked:
        console.print("policies on their medians, best first: " + "; ".join(ranked))
    measures = [] if args.no_overheads else overheads.measure_all(args.quick, console.print)
    if measures:
        report.print_overheads(console, measures)
    function_jobs = [] if args.no_functions else functions.measure_all(
        args.quick, not args.no_dask, console.print)
    if function_jobs:
        report.print_overheads(console, function_jobs, title="function jobs")
    path_measures = [] if args.no_paths else paths.measure_all(args.quick, console.print)
    if path_measures:
        report.print_paths(console, path_measures)
    summary = {"size": asdict(size),
               "sizes": {bench.name: asdict(own) for bench, own in sizes},
               "repeat": args.repeat, "rows": [row.to_json() for row in rows],
               "cells": [cell.to_json() for cell in cells(rows)],
               "targets": [c.to_json() for c in checks], "policy_choice": ranked,
               "overheads": [m.to_json() for m in measures],
               "function_jobs": [m.to_json() for m in function_jobs],
               "paths": [m.to_json() for m in path_measures],
               "plots": [str(p) for p in pictures]}
    write_json(args.out / "summary.json", summary)
    console.print(f"wrote {args.out}/summary.json, {len(rows)} run files in {args.out}/runs, "
                  f"plots: {', '.join(p.name for p in pictures)} "
                  f"({time.monotonic() - progress.began:.0f}s in all)")
    failed = [row for row in rows if not row.ok]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
