"""The ideal makespan against hand-computed cases."""

from __future__ import annotations

import pytest

from loadbalancer.measure import ideal_makespan


def test_two_equal_nodes_halve_the_work() -> None:
    assert ideal_makespan(10.0, 0.0, [[(0.0, 1.0)], [(0.0, 1.0)]]) == pytest.approx(5.0)


def test_a_throttle_change_is_integrated() -> None:
    # 1.0 + 1.0 for 2 s (4 units), then 1.0 + 0.2: 6 more units take 5 s.
    nodes = [[(0.0, 1.0)], [(0.0, 1.0), (2.0, 0.2)]]
    assert ideal_makespan(10.0, 0.0, nodes) == pytest.approx(7.0)


def test_a_late_node_counts_from_when_it_joined() -> None:
    nodes = [[(100.0, 1.0)], [(101.0, 1.0)]]
    assert ideal_makespan(3.0, 100.0, nodes) == pytest.approx(2.0)


def test_no_capacity_means_no_finish() -> None:
    assert ideal_makespan(1.0, 0.0, [[(0.0, 0.0)]]) == float("inf")


def test_no_work_takes_no_time_even_where_a_node_starts_stopped() -> None:
    # An Executor shut down with every job cancelled: no compute, and the first node's
    # capacity 0 until its throttle event (this divided by zero and killed the master).
    assert ideal_makespan(0.0, 0.0, [[(0.0, 0.0), (1.0, 1.0)]]) == 0.0
    assert ideal_makespan(0.0, 0.0, [[(0.5, 1.0)]]) == 0.0
