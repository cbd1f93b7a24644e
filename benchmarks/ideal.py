"""The ideal makespan as the benchmarks judge a run: one function for the real runs, the Dask
peer and the simulator's throttle schedules (issue 12, item 2), on top of the master's own
(loadbalancer.measure.ideal_makespan, which the daemon needs without the benchmarks).

What the benchmarks add to the master's ideal: a node stopped from outside (`pause`: no
capacity while it is stopped, which the master cannot see from throttles), and a job that
cannot be split (`straggler`: no schedule ends before its longest job has run whole).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loadbalancer import measure
from loadbalancer.workload import Vector

Steps = Sequence[tuple[float, float]]  # (time, capacity from then on), sorted by time
Pause = tuple[int, float, float]  # (index of the node, stopped at, continued at)
ThrottleChange = tuple[float, str, float]  # (time, role, throttle), as benchmarks.simulate


def ideal_makespan(work: float, start: float, nodes: Sequence[Steps], *,
                   pauses: Sequence[Pause] = (), longest: float = 0.0) -> float:
    """Seconds from ``start`` until ``work`` compute seconds fit under the nodes' summed
    capacity, each node's capacity 0 while it is paused; never less than ``longest``, the
    compute seconds of the longest job (at full speed: the scenarios that have one run at 1)."""
    shaped = [_paused(steps, [(since, until) for node, since, until in pauses if node == index])
              for index, steps in enumerate(nodes)]
    return max(measure.ideal_makespan(work, start, shaped), longest)


def from_changes(work: float, changes: Sequence[ThrottleChange],
                 workers: Mapping[str, int]) -> float:
    """The same from a throttle schedule starting at 0, the simulator's form."""
    nodes = [[(at, workers[role] * throttle) for at, who, throttle in sorted(changes)
              if who == role] for role in workers]
    return ideal_makespan(work, 0.0, nodes)


def capacity_at(steps: Steps, moment: float) -> float:
    """A node's capacity at ``moment``: its last step at or before it, 0 before the first."""
    current = 0.0
    for at, capacity in sorted(steps):
        if at > moment:
            break
        current = capacity
    return current


def _paused(steps: Steps, windows: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    shaped = sorted(steps)
    for since, until in windows:
        after = capacity_at(shaped, until)  # what it has when it continues, changes included
        shaped = [step for step in shaped if not since <= step[0] <= until]
        shaped = sorted([*shaped, (since, 0.0), (until, after)])
    return shaped


def trace_steps(trace: Mapping[str, Any]) -> list[list[tuple[float, float]]]:
    """The master's and the slave's capacity steps from a run's trace, as the master's ideal
    counts them: the master's own throttles, the slave's from its first join on."""
    nodes = trace.get("nodes") or {}
    master = nodes.get("master") or {}
    slave = nodes.get("slave") or {}

    def throttles(node: Mapping[str, Any]) -> list[tuple[float, float]]:
        return [(e["t"], e["workers"] * e["throttle"]) for e in node.get("events", ())
                if e.get("type") == "throttle"]

    joins = [e["t"] for e in master.get("events", ()) if e.get("type") == "joined"]
    slave_steps: list[tuple[float, float]] = []
    if joins:
        own = throttles(slave)
        slave_steps = [(joins[0], capacity_at(own, joins[0]))]
        slave_steps += [step for step in own if step[0] > joins[0]]
    return [throttles(master), slave_steps]


def longest_job(work: float, workload: Vector) -> float:
    """Compute seconds of the run's longest job: ``work`` shared out as the jobs' iterations."""
    if workload.uniform:
        return work / workload.job_count
    iterations = [workload.job_iterations(job) for job in range(workload.job_count)]
    return work * max(iterations) / sum(iterations)
