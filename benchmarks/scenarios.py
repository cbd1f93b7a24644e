"""The scenarios of DESIGN.md 5 and issue 12, their run sizes, and one real lb run of one.

Throttle schedules come from the simulator's scenario table (benchmarks/simulation.py), so the
simulated and the real runs are the same experiments; `lossy` adds the fault proxy. Issue 12's
cases where peers fail: `pause` (the slave's process stopped for 5 s at ~25 % and continued),
`late` (the slave to 0.2 at ~80 %), `uneven` (lognormal job costs, sigma 1), `straggler` (one
job 20 times the others, the last of the slave's share) and `tiny` (100,000 jobs of ~0.1 ms,
judged by the per-job overhead).
"""

from __future__ import annotations

import functools
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import ideal, simulation
from benchmarks.results import Extra, Row, lb_row
from loadbalancer.testing.faultproxy import Faults
from loadbalancer.testing.loopback import SLAVE_GRACE, Cluster, ClusterError
from loadbalancer.worker import DutyCycle, Throttle
from loadbalancer.workload import Vector

POLICIES = ("none", "sender", "receiver", "symmetric", "seed")
# Each way; reorder is not given a number by DESIGN.md, 0.1 holds one datagram in ten back.
LOSSY = Faults(loss=0.2, duplicate=0.1, reorder=0.1, delay=0.02, jitter=0.01)
ELEMENTS_PER_JOB = 32768  # the default workload's job size (32 Mi elements / 1024 jobs)


@dataclass(frozen=True)
class Bench:
    """A scenario as the harness runs it: a throttle schedule, faults on the link, the slave
    stopped for a while, the jobs' costs, a size of its own."""

    scenario: simulation.Scenario
    faults: Faults | None = None
    pause: tuple[float, float] | None = None  # (share of the nominal run, seconds stopped)
    spread: float = 0.0  # sigma of the jobs' lognormal cost multiplier
    straggler: int = 1  # the last job costs this many ordinary ones
    # (jobs, jobs with --quick, compute seconds of a job, float64 per job) instead of the run's
    shape: tuple[int, int, float, int] | None = None
    per_job: bool = False  # judged by the per-job overhead (the `tiny` target)

    @property
    def name(self) -> str:
        return self.scenario.name


PAUSE_SECONDS = 5.0  # longer than the heartbeat timeout (3 s): the master sees the slave lost
TINY_SHAPE = (100_000, 20_000, 0.0001, 16)  # 16 float64 a job: nothing to move but the job


def _benches() -> dict[str, Bench]:
    simulated = {s.name: s for s in simulation.SCENARIOS}
    benches = {name: Bench(simulated[name]) for name in ("equal", "hetero", "change", "drain")}
    benches["lossy"] = Bench(simulation.Scenario("lossy", (1.0, 1.0)), LOSSY)
    equal = (1.0, 1.0)
    benches["pause"] = Bench(simulation.Scenario("pause", equal), pause=(0.25, PAUSE_SECONDS))
    benches["late"] = Bench(simulation.Scenario("late", equal, ((0.80, "slave", 0.2),)))
    benches["uneven"] = Bench(simulation.Scenario("uneven", equal), spread=1.0)
    benches["straggler"] = Bench(simulation.Scenario("straggler", equal), straggler=20)
    benches["tiny"] = Bench(simulation.Scenario("tiny", equal), shape=TINY_SHAPE, per_job=True)
    return benches


BENCHES = _benches()


@dataclass(frozen=True)
class Size:
    """A vector workload: ``jobs`` jobs of ``elements_per_job`` float64 and ``iterations``
    additions, each about ``job_seconds`` compute seconds at full speed on this machine (times
    its cost multiplier, of mean 1, when ``spread`` or ``factor`` say the costs differ)."""

    jobs: int
    elements_per_job: int
    iterations: int
    job_seconds: float
    spread: float = 0.0
    seed: int = 1
    straggler: int | None = None
    factor: int = 1

    def workload(self) -> Vector:
        return Vector(self.jobs * self.elements_per_job, self.jobs, self.iterations,
                      spread=self.spread, seed=self.seed, straggler=self.straggler,
                      factor=self.factor)

    def settings(self) -> dict[str, Any]:
        """Keyword arguments of loadbalancer.local.write_config."""
        settings: dict[str, Any] = {
            "jobs": self.jobs,
            "elements_per_job": self.elements_per_job,
            "iterations": self.iterations,
        }
        workload = self.workload()
        if not workload.uniform:  # the config's workload as a whole, costs and all
            settings["workload"] = {"name": Vector.name, **workload.params()}
        return settings


@functools.cache
def calibrate(jobs: int, job_seconds: float, elements_per_job: int = ELEMENTS_PER_JOB) -> Size:
    """Pick ``iterations`` so that one job costs about ``job_seconds`` here, measured the
    way the worker measures it (through the duty cycle's checkpoints)."""
    # Long enough (about 10 ms a probe) that a cold start and the clock's steps do not
    # count: a 1 ms probe overstated the cost by up to 40 %, so runs ended before the
    # throttle changes their scenarios schedule at 80 % of the expected makespan.
    probe_iterations = 2000
    probe = Vector(elements_per_job, 1, probe_iterations)
    data = probe.job_data(0)
    best = float("inf")
    cycle = DutyCycle(Throttle(1.0))
    for attempt in range(4):  # a warm-up, then the fastest of three: the machine is shared
        cycle.begin()
        probe.run(0, data, lambda: cycle.checkpoint(lambda: False))
        seconds = cycle.end()
        if attempt:
            best = min(best, seconds)
    iterations = max(1, round(job_seconds / (best / probe_iterations)))
    return Size(jobs, elements_per_job, iterations, job_seconds)


def sized(bench: Bench, size: Size, quick: bool) -> Size:
    """The run's size as this bench runs it: its own shape, its jobs' costs."""
    if bench.shape is not None:
        jobs, quick_jobs, seconds, elements = bench.shape
        size = calibrate(quick_jobs if quick else jobs, seconds, elements)
    if bench.spread:
        size = replace(size, spread=bench.spread)
    if bench.straggler > 1:  # the last job: the tail of the master's queue goes to the slave
        size = replace(size, straggler=size.jobs - 1, factor=bench.straggler)
    return size


def schedule(bench: Bench, size: Size) -> list[ideal.ThrottleChange]:
    """(seconds after the run starts, role, throttle), the starting throttles at 0."""
    return simulation.schedule(
        bench.scenario, simulation.Setup(jobs=size.jobs, job_seconds=size.job_seconds)
    )


def run_timeout(bench: Bench, size: Size) -> float:
    """Generous: policy none may leave a slow node most of the work, and Dask spends a
    few milliseconds on every task here (5 ms in `tiny`, which has 100,000 of them)."""
    slowest = min(t for t in bench.scenario.start if t > 0)
    stopped = bench.pause[1] if bench.pause else 0.0
    return 60.0 + stopped + 3.0 * size.jobs * size.job_seconds / slowest + 0.02 * size.jobs


def pause_window(bench: Bench, size: Size) -> tuple[float, float] | None:
    """(seconds after the run starts when the slave is stopped, when it is continued)."""
    if bench.pause is None:
        return None
    share, seconds = bench.pause
    nominal = size.jobs * size.job_seconds / sum(bench.scenario.start)
    return share * nominal, share * nominal + seconds


def capacity(bench: Bench) -> float:
    """Both nodes' workers * throttle at the start (one worker each in the benchmarks)."""
    return float(sum(bench.scenario.start))


def judged(bench: Bench, size: Size, summary: dict[str, Any] | None,
           trace: dict[str, Any] | None, paused: list[tuple[float, float]]) -> Extra:
    """What the master's summary cannot know of the run: the pause, the long job, and a
    tail that counts only the nodes still working at the end."""
    if summary is None:
        return Extra()
    work = summary.get("work_s") or 0.0
    longest = ideal.longest_job(work, size.workload()) if work else 0.0
    best: float | None = None
    if paused and trace is not None:
        best = ideal.ideal_makespan(work, trace["start"], ideal.trace_steps(trace),
                                    pauses=[(1, since, until) for since, until in paused],
                                    longest=longest)
    elif longest > (summary.get("ideal_s") or 0.0):
        best = longest
    tail = None
    if trace is not None and any(ideal.capacity_at(steps, float("inf")) <= 0
                                 for steps in ideal.trace_steps(trace)):
        tail = 0.0  # one node stopped for good (drain): no other node to wait for
    return Extra(ideal=best, tail=tail, capacity=capacity(bench) if bench.per_job else None)


@dataclass
class Run:
    """One lb run: its table row and everything it wrote (the per-run JSON)."""

    row: Row
    record: dict[str, Any]


def run_one(scenario: str | Bench, policy: str, size: Size) -> Run:
    """Run the scenario under the policy with real `lb launch` processes on loopback;
    ``size`` as :func:`sized` gives it for the bench."""
    bench = BENCHES[scenario] if isinstance(scenario, str) else scenario
    changes = schedule(bench, size)
    settings: dict[str, Any] = {"policy": policy, **size.settings()}
    record: dict[str, Any] = {
        "scenario": bench.name,
        "policy": policy,
        "size": asdict(size),
        "schedule": changes,
        "pause": pause_window(bench, size),
        "faults": asdict(bench.faults) if bench.faults else None,
    }
    directory = Path(tempfile.mkdtemp(prefix="lb-bench-"))
    started = time.monotonic()
    try:
        with Cluster(directory) as pair:
            pair.configure(**settings)
            if bench.faults is not None:
                pair.add_proxy(bench.faults)
            note = _drive(pair, changes, pause_window(bench, size),
                          run_timeout(bench, size), record)
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
    extra = judged(bench, size, summary, trace, record.get("paused", []))
    record["judged"] = asdict(extra)
    return Run(lb_row(bench.name, policy, summary, note, extra), record)


Action = tuple[float, str, Callable[[], None]]  # (seconds after the join, what, do it)


def _drive(pair: Cluster, changes: list[ideal.ThrottleChange],
           pause: tuple[float, float] | None, timeout: float, record: dict[str, Any]) -> str:
    """Start both nodes, apply the throttle changes and the pause on time, wait for the end;
    a note if something went wrong."""
    starting = {role: throttle for t, role, throttle in changes if t == 0}
    later = sorted(change for change in changes if change[0] > 0)
    pair.start("slave", "--throttle", str(starting["slave"]))
    pair.wait_until_up("slave")
    # Before the master starts, so that their interpreters start while nothing is timed.
    armed = [(at, pair.arm_throttle(role, throttle)) for at, role, throttle in later]
    actions: list[Action] = [(at, command.command, command.fire) for at, command in armed]
    paused: list[tuple[float, float]] = record.setdefault("paused", [])
    if pause is not None:
        def stop() -> None:
            pair.signal("slave", signal.SIGSTOP)
            paused.append((time.time(), float("inf")))

        def cont() -> None:
            pair.signal("slave", signal.SIGCONT)
            paused[-1] = (paused[-1][0], time.time())

        actions += [(pause[0], "SIGSTOP slave", stop), (pause[1], "SIGCONT slave", cont)]
    try:
        for _, command in armed:
            command.wait_ready()
        pair.start("master", "--throttle", str(starting["master"]))
        if actions:
            record["applied"] = _apply(pair, sorted(actions, key=lambda action: action[0]))
    finally:
        for _, command in armed:
            command.cancel()
        if paused and paused[-1][1] == float("inf"):  # never leave a node stopped
            pair.signal("slave", signal.SIGCONT)
            paused[-1] = (paused[-1][0], time.time())
    codes = pair.wait(timeout, slave_grace=SLAVE_GRACE)
    record["exit_codes"] = codes
    notes = [f"{role} exited {code}: {pair.log_tail(role)[-300:]}"
             for role, code in codes.items() if code]
    return "; ".join(notes)


def _apply(pair: Cluster, actions: list[Action]) -> list[tuple[float, str]]:
    """Do each action at its time; (seconds after the join, what)."""
    # The clock starts when the slave has joined and holds its half: the run is under way.
    pair.wait_for_phase("slave", "processing")
    begun = time.monotonic()
    applied = []
    for at, what, act in actions:
        time.sleep(max(0.0, begun + at - time.monotonic()))
        act()
        applied.append((round(time.monotonic() - begun, 3), what))
    return applied
