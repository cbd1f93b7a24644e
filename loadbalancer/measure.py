"""How a run is judged: the ideal makespan, the balance ratio and the tail.

The ideal makespan is the shortest time in which the nodes' capacity could
have done all the work: total compute seconds at full speed, spread over the
sum of ``workers * throttle`` of the nodes present, integrated over time as
throttles change. No schedule beats it; the ratio makespan / ideal says how
far a run was from it.
"""

from __future__ import annotations

from collections.abc import Sequence

Steps = Sequence[tuple[float, float]]  # (time, capacity from then on), sorted by time


def ideal_makespan(work: float, start: float, nodes: Sequence[Steps]) -> float:
    """Seconds from ``start`` until ``work`` compute seconds fit under the
    summed capacity curve. Before a node's first step its capacity is 0."""
    if work <= 0:  # nothing ran (an Executor whose every job was cancelled): no time at all
        return 0.0
    times = sorted({t for steps in nodes for t, _ in steps if t > start} | {start})
    done, previous = 0.0, start
    for index, moment in enumerate(times):
        if index:
            done += _capacity(nodes, previous) * (moment - previous)
            if done >= work:
                overshoot = done - work
                return moment - overshoot / _capacity(nodes, previous) - start
        previous = moment
    capacity = _capacity(nodes, previous)
    if capacity <= 0:
        return float("inf")
    return previous + (work - done) / capacity - start


def _capacity(nodes: Sequence[Steps], moment: float) -> float:
    total = 0.0
    for steps in nodes:
        current = 0.0
        for t, capacity in steps:
            if t > moment:
                break
            current = capacity
        total += current
    return total
