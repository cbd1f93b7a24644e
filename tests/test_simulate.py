"""The virtual-time simulator: its bookkeeping, and the adaptor's targets (DESIGN.md 5)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadbalancer.adaptor import POLICIES, Policy

# `benchmarks` is not part of the installed package; `python -m pytest` finds it from the
# working directory, plain `pytest` needs the repository root on the path (pyproject's
# `pythonpath = ["."]` under [tool.pytest.ini_options] would make this unnecessary).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.simulate import main
from benchmarks.simulation import SCENARIOS, Scenario, Setup, from_changes, schedule, simulate

SMALL = Setup(jobs=128)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


@pytest.mark.parametrize(
    ("work", "changes", "expected"),
    [
        pytest.param(10.0, [(0.0, "master", 1.0), (0.0, "slave", 1.0)], 5.0, id="constant"),
        pytest.param(
            10.0,
            [(0.0, "master", 1.0), (0.0, "slave", 1.0), (2.0, "slave", 0.0)],
            8.0,
            id="slave stops at 2 s: 4 done, 6 left at 1/s",
        ),
        pytest.param(
            10.0,
            [(0.0, "master", 0.0), (0.0, "slave", 0.0), (3.0, "master", 0.5)],
            23.0,
            id="nobody works until 3 s",
        ),
        pytest.param(1.0, [(0.0, "master", 0.0), (0.0, "slave", 0.0)], float("inf"), id="never"),
    ],
)
def test_ideal_makespan_integrates_capacity(
    work: float, changes: list[tuple[float, str, float]], expected: float
) -> None:
    assert from_changes(work, changes, {"master": 1, "slave": 1}) == pytest.approx(expected)


def test_schedule_places_changes_on_the_nominal_run() -> None:
    # 1024 jobs of 0.06 s on two full-speed workers: a nominal run of 30.72 s.
    assert schedule(BY_NAME["change"], Setup()) == [
        (0.0, "master", 1.0),
        (0.0, "slave", 1.0),
        (pytest.approx(7.68), "slave", 0.2),
    ]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_every_job_runs_exactly_once(scenario: Scenario, policy: Policy) -> None:
    result = simulate(scenario, policy, setup=SMALL)
    assert sum(result.executed.values()) == SMALL.jobs
    assert result.series[0] == (0.0, SMALL.jobs // 2, SMALL.jobs // 2)  # bootstrap: half each
    assert result.ratio > 0.95  # the only slack: a stopped worker finishes its running job


def test_runs_are_deterministic() -> None:
    first = simulate(BY_NAME["hetero"], "symmetric", setup=SMALL)
    assert simulate(BY_NAME["hetero"], "symmetric", setup=SMALL) == first


def test_hetero_symmetric_balances_and_none_does_not() -> None:
    symmetric = simulate(BY_NAME["hetero"], "symmetric")
    none = simulate(BY_NAME["hetero"], "none")
    assert symmetric.ratio <= 1.10
    assert none.ratio >= 1.3
    assert symmetric.moved["slave->master"] > 0
    assert none.moved == {"master->slave": 0, "slave->master": 0}


@pytest.mark.parametrize(
    ("scenario", "target"),
    [
        pytest.param(BY_NAME["equal"], 1.05, id="equal"),
        pytest.param(BY_NAME["hetero"], 1.05, id="hetero"),
        pytest.param(BY_NAME["change"], 1.10, id="change"),
        pytest.param(BY_NAME["drain"], 1.10, id="drain"),
    ],
)
@pytest.mark.parametrize("policy", ["sender", "receiver", "symmetric"])
def test_balancing_policies_meet_the_targets(
    scenario: Scenario, target: float, policy: Policy
) -> None:
    assert simulate(scenario, policy).ratio <= target


def test_drain_hands_the_stopped_nodes_queue_over() -> None:
    result = simulate(BY_NAME["drain"], "none")
    assert result.moved["slave->master"] > 0
    assert result.tail == 0.0  # only one node can work at the end: nobody waits


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_symmetric_does_not_bounce_jobs(scenario: Scenario) -> None:
    result = simulate(scenario, "symmetric")
    assert result.bounced <= 0.03 * Setup().jobs  # without hysteresis: about 25 %


@pytest.mark.parametrize("seed", [1, 3])
def test_a_slave_slowed_in_its_last_job_is_copied_and_the_copy_wins(seed: int) -> None:
    # At 97 % the slave drops to 0.05: its running job would take twenty times longer.
    slowed = Scenario("slowed", (1.0, 1.0), ((0.97, "slave", 0.05),))
    result = simulate(slowed, "symmetric", setup=Setup(jobs=128, seed=seed))
    assert result.copies == 1 and result.tail == 0.0  # the slave stopped when the copy won
    assert result.ratio <= 1.011 and result.copy_share < 0.01
    assert sum(result.executed.values()) == 128  # the stopped original is not a result


def test_cli_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--jobs", "64"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["scenario", "policy", "ratio"]
    assert any(line.split()[:2] == ["hetero", "symmetric"] for line in lines)


def test_cli_traces_one_run(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--jobs", "64", "--trace", "drain", "none"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["time,master,slave", "0.00,32,32"]
    assert lines[-1].endswith(",0")  # the stopped slave ends with nothing pending
