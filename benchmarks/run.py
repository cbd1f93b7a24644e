"""The benchmark harness: every scenario under every policy with real nodes, Dask on the same
work, the targets, the overheads (issue 4) and the function jobs' figures (issue 10).

    python -m benchmarks.run [--quick] [--out DIR] [--scenarios equal,hetero] [--policies ...]
                             [--repeat N] [--no-dask] [--no-overheads] [--no-functions]

Writes DIR/runs/<scenario>-<policy>.json per run (the master's summary and trace, the
throttle schedule as applied), DIR/<scenario>.png per scenario and DIR/summary.json (rows,
targets, overheads); prints the table, the targets and the overheads. Exit status 1 when a
run failed or did not verify, 0 otherwise (a missed target is a finding, not a failure).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from benchmarks import dask_peer, functions, overheads, plot, report, targets
from benchmarks.results import Row, write_json
from benchmarks.scenarios import BENCHES, POLICIES, Bench, Run, Size, calibrate, run_one

# (jobs, compute seconds of one job at full speed). Quick: 25 lb runs, 5 Dask runs and the
# overheads in under 3 minutes on 2 cores, each run a few seconds.
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
                        help="runs per scenario and policy; the table shows the median")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"),
                        help="output directory (default benchmarks/out, git-ignored)")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask peer")
    parser.add_argument("--no-overheads", action="store_true", help="skip the overheads")
    parser.add_argument("--no-functions", action="store_true",
                        help="skip the function jobs' figures")
    return parser.parse_args(argv)


def _size(args: argparse.Namespace) -> Size:
    jobs, seconds = QUICK if args.quick else FULL
    return calibrate(args.jobs or jobs, args.job_ms / 1e3 if args.job_ms else seconds)


def _median(runs: list[Run]) -> Run:
    """The run of median ratio (failed runs count as the worst)."""
    def rank(run: Run) -> float:
        return run.row.ratio if run.row.ok and run.row.ratio is not None else float("inf")

    ranked = sorted(runs, key=rank)
    return ranked[(len(ranked) - 1) // 2]


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


def run_lb(benches: list[Bench], policies: list[str], size: Size, repeat: int, out: Path,
           progress: Progress) -> dict[tuple[str, str], Run]:
    chosen: dict[tuple[str, str], Run] = {}
    for bench in benches:
        for policy in policies:
            runs = []
            for rep in range(repeat):
                began = time.monotonic()
                run = run_one(bench, policy, size)
                suffix = f"-{rep + 1}" if repeat > 1 else ""
                write_json(out / "runs" / f"{bench.name}-{policy}{suffix}.json", run.record)
                progress.line(f"{bench.name} / {policy}", run.row, time.monotonic() - began)
                runs.append(run)
            chosen[bench.name, policy] = _median(runs)
    return chosen


def run_dask(benches: list[Bench], size: Size, out: Path, progress: Progress,
             console: Console) -> list[Row]:
    if not dask_peer.available():
        console.print("[yellow]dask is not installed: no dask rows "
                      "(pip install -e '.[peers]')[/yellow]")
        return []
    rows = []
    began = time.monotonic()
    try:
        for row, record in dask_peer.run_all(benches, size):
            write_json(out / "runs" / f"{row.scenario}-dask.json", record)
            progress.line(f"{row.scenario} / dask", row, time.monotonic() - began)
            began = time.monotonic()
            rows.append(row)
    except Exception as error:  # a broken peer must not cost lb's results
        console.print(f"[red]dask failed: {type(error).__name__}: {error}[/red]")
    return rows


def plot_all(benches: list[Bench], policies: list[str], runs: dict[tuple[str, str], Run],
             out: Path) -> list[Path]:
    paths = []
    for bench in benches:
        traces = {policy: runs[bench.name, policy].record.get("trace") for policy in policies}
        path = out / f"{bench.name}.png"
        plot.plot_scenario(bench.name, traces, path)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    console = report.console()
    size = _size(args)
    benches = [BENCHES[name] for name in args.scenarios]
    console.print(f"workload: {size.jobs} jobs of {size.elements_per_job} float64 x "
                  f"{size.iterations} iterations (~{size.job_seconds * 1e3:.0f} ms each here); "
                  f"{len(benches)} scenarios x {len(args.policies)} policies"
                  f"{'' if args.no_dask else ' + dask'}")
    total = len(benches) * (len(args.policies) * args.repeat + (0 if args.no_dask else 1))
    progress = Progress(console, total)
    runs = run_lb(benches, args.policies, size, args.repeat, args.out, progress)
    rows = [run.row for run in runs.values()]
    if not args.no_dask:
        rows += run_dask(benches, size, args.out, progress, console)
    rows.sort(key=lambda row: list(BENCHES).index(row.scenario))  # stable: policies in order
    pictures = plot_all(benches, args.policies, runs, args.out)
    console.print(report.results_table(rows))
    checks = targets.check(rows)
    console.print(report.targets_table(checks))
    measures = [] if args.no_overheads else overheads.measure_all(args.quick, console.print)
    if measures:
        report.print_overheads(console, measures)
    function_jobs = [] if args.no_functions else functions.measure_all(
        args.quick, not args.no_dask, console.print)
    if function_jobs:
        report.print_overheads(console, function_jobs, title="function jobs")
    summary = {"size": asdict(size), "rows": [row.to_json() for row in rows],
               "targets": [c.to_json() for c in checks],
               "overheads": [m.to_json() for m in measures],
               "function_jobs": [m.to_json() for m in function_jobs],
               "plots": [str(p) for p in pictures]}
    write_json(args.out / "summary.json", summary)
    console.print(f"wrote {args.out}/summary.json, {len(runs)} run files in {args.out}/runs, "
                  f"plots: {', '.join(p.name for p in pictures)} "
                  f"({time.monotonic() - progress.began:.0f}s in all)")
    failed = [row for row in rows if not row.ok]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
