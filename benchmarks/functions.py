"""What function jobs cost and how they balance, beside Dask on the same work (issue 10).

    python -m benchmarks.functions [--quick] [--out DIR] [--no-dask]

Also run by `python -m benchmarks.run`. Every lb figure comes from two real `lb launch`
processes on loopback mapping a function of benchmarks/jobs.py over a JSON-lines file, as a
user runs them; Dask's from a LocalCluster of two one-thread worker processes running the
same function with `Client.map`, in the same run.

(a) per-job overhead: 100,000 jobs that return their argument across both nodes; the
    makespan / jobs, beside Dask's makespan / tasks for 10,000 tasks (its cost per task is
    flat in the count, and 100,000 would take minutes). Target: lb <= 50 µs, a small share
    of Dask's.
(b) a pure-Python CPU-bound map: 200 jobs of ~20 ms that never call back (`spin`), as
    makespan / ideal, where the ideal spreads the compute seconds measured inside the jobs
    over the two workers. Target: no worse than Dask's ratio.
(c) the throttle on pure-Python jobs: a master alone at throttle 0.5 runs 20 jobs of 0.2 s
    of CPU; each job's wall time / CPU time, measured inside, should be 1 / 0.5 = 2.0 within
    5 % (the median over the jobs).
(d) the master's peak memory (VmHWM) on a map of 1,000,000 tiny jobs across both nodes.
    Target: under 400 MiB.
(e) `--workers 2` on pure Python: a master alone runs 120 jobs of 0.05 s with one worker
    process, then with two (6 s of work); the second should take about half the time on two cores
    (target: at least 1.8 times the throughput).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from benchmarks import dask_peer, jobs
from benchmarks.overheads import _scratch
from benchmarks.results import Measure, write_json
from loadbalancer.testing.loopback import SLAVE_GRACE, Cluster

JOBS_MODULE = Path(jobs.__file__)
TINY_JOBS = 100_000
DASK_TINY_TASKS = 10_000
CPU_JOBS, CPU_SECONDS = 200, 0.02
THROTTLE, THROTTLE_JOBS, THROTTLE_SECONDS = 0.5, 20, 0.2
MEMORY_JOBS = 1_000_000
SCALING_JOBS, SCALING_SECONDS = 120, 0.05
RUN_TIMEOUT = 900.0


def write_inputs(path: Path, calls: Iterator[object]) -> Path:
    with path.open("w") as file:
        for call in calls:
            file.write(json.dumps(call) + "\n")
    return path


def run_map(function: str, calls: Iterator[object], *, slave: bool = True,
            master_args: Sequence[str] = (), watch: Callable[[int], None] | None = None,
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One map on real nodes: the master's summary and the output lines."""
    with _scratch() as directory, Cluster(directory) as pair:
        pair.configure()
        inputs = write_inputs(directory / "in.jsonl", calls)
        output = directory / "out.jsonl"
        if slave:
            pair.start("slave", "--workload-module", str(JOBS_MODULE))
            pair.wait_until_up("slave")
        pair.start("master", "--map", f"{JOBS_MODULE}:{function}", "--inputs", str(inputs),
                   "--output", str(output), *master_args)
        if watch is not None:
            watch(pair.processes["master"].pid)
        codes = pair.wait(timeout=RUN_TIMEOUT, slave_grace=SLAVE_GRACE)
        summary = pair.result() or {}
        if codes.get("master") != 0:
            raise RuntimeError(f"the map failed ({codes}): {pair.log_tail('master')}")
        lines = [json.loads(line) for line in output.read_text().splitlines()]
    return summary, lines


@contextmanager
def dask_client() -> Iterator[Any]:
    if not dask_peer.available():
        yield None
        return
    with dask_peer.cluster() as client:
        client.run(lambda: __import__("benchmarks.jobs"))
        yield client


def _dask_map(client: Any, function: Callable[..., Any], args: Sequence[Any]) -> tuple[
        float, list[Any]]:
    began = time.perf_counter()
    results = client.gather(client.map(function, args, pure=False))
    return time.perf_counter() - began, list(results)


# ---- (a) per-job overhead ------------------------------------------------------------------
def tiny(client: Any, count: int) -> Measure:
    summary, lines = run_map("ident", iter([[i] for i in range(count)]))
    assert [line["result"] for line in lines] == list(range(count))
    per_job = summary["makespan_s"] / count * 1e6
    details: dict[str, Any] = {"jobs": count, "makespan_s": summary["makespan_s"],
                               "executed": summary["executed"], "moved": summary["moved"],
                               "bootstrap": summary["bootstrap"]}
    passed = per_job <= 50
    if client is not None:
        tasks = DASK_TINY_TASKS if count >= DASK_TINY_TASKS else count
        seconds, results = _dask_map(client, jobs.ident, range(tasks))
        assert results == list(range(tasks))
        dask_us = seconds / tasks * 1e6
        details |= {"dask_us_per_task": round(dask_us, 1), "dask_tasks": tasks,
                    "lb_share_of_dask": round(per_job / dask_us, 4)}
    return Measure("function jobs: per-job overhead, both nodes", round(per_job, 1), "µs",
                   "<= 50 µs", passed, details)


# ---- (b) a pure-Python CPU-bound map -------------------------------------------------------
def cpu_map(client: Any, count: int, seconds: float) -> Measure:
    summary, lines = run_map("spin", iter([[seconds]] * count))
    assert len(lines) == count and all("result" in line for line in lines)
    ratio = float(summary["ratio"])
    details: dict[str, Any] = {"jobs": count, "job_s": seconds, "lb_makespan_s":
                               summary["makespan_s"], "lb_ideal_s": summary["ideal_s"],
                               "executed": summary["executed"], "moved": summary["moved"]}
    passed: bool | None = None
    if client is not None:
        wall, results = _dask_map(client, jobs.spin, [seconds] * count)
        ideal = sum(inside for inside, _ in results) / 2  # two one-thread workers
        dask_ratio = wall / ideal
        details |= {"dask_ratio": round(dask_ratio, 3), "dask_makespan_s": round(wall, 3),
                    "dask_ideal_s": round(ideal, 3)}
        passed = ratio <= dask_ratio
    return Measure("function jobs: pure-Python map, makespan / ideal", round(ratio, 3), "x",
                   "<= dask", passed, details)


# ---- (c) the throttle on pure-Python jobs --------------------------------------------------
def throttle(count: int, seconds: float) -> Measure:
    _, lines = run_map("spin", iter([[seconds]] * count), slave=False,
                       master_args=("--throttle", str(THROTTLE)))
    ratios = [wall / cpu for wall, cpu in (line["result"] for line in lines)]
    median = statistics.median(ratios)
    expected = 1 / THROTTLE
    return Measure(f"function jobs: wall / compute at throttle {THROTTLE}", round(median, 3),
                   "x", f"{expected:.1f} ± 5 %", abs(median / expected - 1) <= 0.05,
                   {"jobs": count, "job_cpu_s": seconds, "min": round(min(ratios), 3),
                    "max": round(max(ratios), 3)})


# ---- (d) the master's memory ----------------------------------------------------------------
def memory(count: int) -> Measure:
    peaks: list[int] = []

    def watch(pid: int) -> None:
        import threading

        def sample() -> None:
            try:
                process = psutil.Process(pid)
                while process.is_running():
                    status = Path(f"/proc/{pid}/status").read_text()
                    peak = next(line for line in status.splitlines() if line.startswith("VmHWM"))
                    peaks.append(int(peak.split()[1]) * 1024)
                    time.sleep(0.2)
            except (psutil.Error, OSError, StopIteration):
                return

        threading.Thread(target=sample, daemon=True).start()

    summary, lines = run_map("ident", iter([[i] for i in range(count)]), watch=watch)
    assert len(lines) == count
    peak_mib = max(peaks) / 2**20
    return Measure(f"function jobs: master's peak memory, {count:,} tiny jobs",
                   round(peak_mib, 1), "MiB", "< 400 MiB", peak_mib < 400,
                   {"jobs": count, "makespan_s": summary["makespan_s"],
                    "bytes_per_job": round(max(peaks) / count)})


# ---- (e) workers scale pure Python ------------------------------------------------------------
def scaling(count: int, seconds: float) -> Measure:
    makespans = {}
    for workers in (1, 2):
        summary, _ = run_map("spin", iter([[seconds]] * count), slave=False,
                             master_args=("--workers", str(workers)))
        makespans[workers] = float(summary["makespan_s"])
    speedup = makespans[1] / makespans[2]
    return Measure("function jobs: throughput of 2 worker processes over 1", round(speedup, 2),
                   "x", ">= 1.8 x", speedup >= 1.8,
                   {"jobs": count, "job_cpu_s": seconds, "makespan_s": makespans})


# ---- all -------------------------------------------------------------------------------------
def measure_all(quick: bool, use_dask: bool = True,
                progress: Callable[[str], None] = print) -> list[Measure]:
    scale = 10 if quick else 1
    results: list[Measure] = []
    with dask_client() if use_dask else _no_client() as client:
        steps: Sequence[tuple[str, Callable[[], Measure]]] = (
            ("per-job overhead", lambda: tiny(client, TINY_JOBS // scale)),
            ("pure-Python map", lambda: cpu_map(client, CPU_JOBS // (2 if quick else 1),
                                                CPU_SECONDS)),
            ("throttle", lambda: throttle(THROTTLE_JOBS // (2 if quick else 1),
                                          THROTTLE_SECONDS)),
            ("memory", lambda: memory(MEMORY_JOBS // scale)),
            ("workers", lambda: scaling(SCALING_JOBS, SCALING_SECONDS)),
        )
        for name, step in steps:
            began = time.monotonic()
            results.append(step())
            progress(f"function jobs: {name} measured in {time.monotonic() - began:.1f}s")
    return results


@contextmanager
def _no_client() -> Iterator[None]:
    yield None


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks import report

    parser = argparse.ArgumentParser(prog="python -m benchmarks.functions",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="a tenth of the jobs")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask figures")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"),
                        help="directory for functions.json")
    args = parser.parse_args(argv)
    console = report.console()
    measures = measure_all(args.quick, not args.no_dask, console.print)
    report.print_overheads(console, measures, title="function jobs")
    write_json(args.out / "functions.json", [m.to_json() for m in measures])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
