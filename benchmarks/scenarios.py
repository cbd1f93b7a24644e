"""The scenarios of DESIGN.md 5, their run sizes, and one real lb run of a scenario.

Throttle schedules come from the simulator's scenario table (benchmarks/simulate.py), so the
simulated and the real runs are the same experiments; `lossy` adds the fault proxy.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import simulate
from benchmarks.results import Row, lb_row
from loadbalancer.testing.faultproxy import Faults
from loadbalancer.testing.loopback import SLAVE_GRACE, Armed, Cluster, ClusterError
from loadbalancer.worker import DutyCycle, Throttle
from loadbalancer.workload import Vector

POLICIES = ("none", "sender", "receiver", "symmetric", "seed")
# Each way; reorder is not given a number by DESIGN.md, 0.1 holds one datagram in ten back.
LOSSY = Faults(loss=0.2, duplicate=0.1, reorder=0.1, delay=0.02, jitter=0.01)
ELEMENTS_PER_JOB = 32768  # the default workload's job size (32 Mi elements / 1024 jobs)


@dataclass(frozen=True)
class Bench:
    """A scenario as the harness runs it: a throttle schedule, and faults on the link."""

    scenario: simulate.Scenario
    faults: Faults | None = None

    @property
    def name(self) -> str:
        return self.scenario.name


def _benches() -> dict[str, Bench]:
    simulated = {s.name: s for s in simulate.SCENARIOS}
    benches = {name: Bench(simulated[name]) for name in ("equal", "hetero", "change", "drain")}
    benches["lossy"] = Bench(simulate.Scenario("lossy", (1.0, 1.0)), LOSSY)
    return benches


BENCHES = _benches()


@dataclass(frozen=True)
class Size:
    """A vector workload: ``jobs`` jobs of ``elements_per_job`` float64 and ``iterations``
    additions, each about ``job_seconds`` compute seconds at full speed on this machine."""

    jobs: int
    elements_per_job: int
    iterations: int
    job_seconds: float

    def workload(self) -> Vector:
        return Vector(self.jobs * self.elements_per_job, self.jobs, self.iterations)

    def settings(self) -> dict[str, Any]:
        """Keyword arguments of loadbalancer.local.write_config."""
        return {
            "jobs": self.jobs,
            "elements_per_job": self.elements_per_job,
            "iterations": self.iterations,
        }


def calibrate(jobs: int, job_seconds: float, elements_per_job: int = ELEMENTS_PER_JOB) -> Size:
    """Pick ``iterations`` so that one job costs about ``job_seconds`` here, measured the
    way the worker measures it (through the duty cycle's checkpoints)."""
    probe_iterations = 200
    probe = Vector(elements_per_job, 1, probe_iterations)
    data = probe.job_data(0)
    best = float("inf")
    cycle = DutyCycle(Throttle(1.0))
    for _ in range(3):  # the fastest of three: the machine is shared and noisy
        cycle.begin()
        probe.run(0, data, lambda: cycle.checkpoint(lambda: False))
        best = min(best, cycle.end())
    iterations = max(1, round(job_seconds / (best / probe_iterations)))
    return Size(jobs, elements_per_job, iterations, job_seconds)


def schedule(bench: Bench, size: Size) -> list[simulate.ThrottleChange]:
    """(seconds after the run starts, role, throttle), the starting throttles at 0."""
    return simulate.schedule(
        bench.scenario, simulate.Setup(jobs=size.jobs, job_seconds=size.job_seconds)
    )


def run_timeout(bench: Bench, size: Size) -> float:
    """Generous: policy none may leave a slow node most of the work."""
    slowest = min(t for t in bench.scenario.start if t > 0)
    return 60.0 + 3.0 * size.jobs * size.job_seconds / slowest


@dataclass
class Run:
    """One lb run: its table row and everything it wrote (the per-run JSON)."""

    row: Row
    record: dict[str, Any]


def run_one(scenario: str | Bench, policy: str, size: Size) -> Run:
    """Run the scenario under the policy with real `lb launch` processes on loopback."""
    bench = BENCHES[scenario] if isinstance(scenario, str) else scenario
    changes = schedule(bench, size)
    settings: dict[str, Any] = {"policy": policy, **size.settings()}
    record: dict[str, Any] = {
        "scenario": bench.name,
        "policy": policy,
        "size": asdict(size),
        "schedule": changes,
        "faults": asdict(bench.faults) if bench.faults else None,
    }
    directory = Path(tempfile.mkdtemp(prefix="lb-bench-"))
    started = time.monotonic()
    try:
        with Cluster(directory) as pair:
            pair.configure(**settings)
            if bench.faults is not None:
                pair.add_proxy(bench.faults)
            note = _drive(pair, changes, run_timeout(bench, size), record)
            # The nodes' own account (each move with its reason): what explains a ratio.
            record["logs"] = {role: pair.log(role)
                              for role in pair.processes if pair.log_path(role).exists()}
        record["proxy"] = pair.proxy_stats  # known once the proxy has stopped
        summary = pair.result()
        trace = pair.trace()
    except ClusterError as error:
        note, summary, trace = str(error), None, None
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    record.update(
        wall_s=round(time.monotonic() - started, 2), result=summary, trace=trace, note=note
    )
    return Run(lb_row(bench.name, policy, summary, note), record)


def _drive(pair: Cluster, changes: list[simulate.ThrottleChange], timeout: float,
           record: dict[str, Any]) -> str:
    """Start both nodes, apply the throttle changes on time, wait for the end; a note if
    something went wrong."""
    starting = {role: throttle for t, role, throttle in changes if t == 0}
    later = sorted(change for change in changes if change[0] > 0)
    pair.start("slave", "--throttle", str(starting["slave"]))
    pair.wait_until_up("slave")
    # Before the master starts, so that their interpreters start while nothing is timed.
    armed = [(at, pair.arm_throttle(role, throttle)) for at, role, throttle in later]
    try:
        for _, command in armed:
            command.wait_ready()
        pair.start("master", "--throttle", str(starting["master"]))
        if armed:
            record["applied"] = _apply(pair, armed)
    finally:
        for _, command in armed:
            command.cancel()
    codes = pair.wait(timeout, slave_grace=SLAVE_GRACE)
    record["exit_codes"] = codes
    notes = [f"{role} exited {code}: {pair.log_tail(role)[-300:]}"
             for role, code in codes.items() if code]
    return "; ".join(notes)


def _apply(pair: Cluster, armed: list[tuple[float, Armed]]) -> list[tuple[float, str]]:
    """Fire each armed `lb throttle` at its time; (seconds after the join, command)."""
    # The clock starts when the slave has joined and holds its half: the run is under way.
    pair.wait_for_phase("slave", "processing")
    begun = time.monotonic()
    applied = []
    for at, command in armed:
        time.sleep(max(0.0, begun + at - time.monotonic()))
        command.fire()
        applied.append((round(time.monotonic() - begun, 3), command.command))
    return applied

