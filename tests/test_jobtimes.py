"""How sure the node is of its job time, and the balancer holding still while it is not."""

from __future__ import annotations

import math
import random

import pytest

from loadbalancer.adaptor import Link, NodeView, Params, Snapshot, decide
from loadbalancer.monitor import JobTimes


def fed(times: list[float]) -> JobTimes:
    estimate = JobTimes()
    for seconds in times:
        estimate.add(seconds)
    return estimate


def test_the_first_job_is_left_out_and_the_mean_waits_for_the_warm_up() -> None:
    assert fed([9.0, 1.0, 1.0]).mean is None
    assert fed([9.0, 1.0, 1.0, 1.0]).mean == pytest.approx(1.0)


def test_steady_jobs_are_sure_and_noisy_ones_less_so() -> None:
    rng = random.Random(1)
    assert fed([1.0] * 100).error == 0.0
    noisy = fed([rng.gauss(1.0, 0.2) for _ in range(2000)])
    # One job's spread of 20 % over the ~39 jobs the average holds, give or take the draw.
    assert 0.02 < noisy.error < 0.06


def test_a_drift_makes_the_figure_unsure_until_the_mean_catches_up() -> None:
    settled = fed([1.0] * 200)
    for _ in range(5):
        settled.add(2.0)
    assert settled.error > 0.3
    for _ in range(300):
        settled.add(2.0)
    assert settled.error < 0.01


def snapshot(error: float) -> Snapshot:
    # The slave looks 20 % slower than us on equal queues: worth a move only if we are sure.
    local = NodeView(100, 1, 1.0, 1, 0.1, error)
    remote = NodeView(100, 1, 1.0, 1, 0.12, error)
    return Snapshot(local, remote, 0.0, 0, 0, 0, Link(0.001, 1e9, 100.0))


def test_noise_moves_nothing_and_a_sure_difference_moves() -> None:
    eager = Params(lookahead=math.inf)  # on these long queues a move would otherwise wait
    assert decide("symmetric", snapshot(0.0), eager).action == "request"
    assert decide("symmetric", snapshot(0.2), eager).action == "hold"
