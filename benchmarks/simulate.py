"""The simulator's command line: its scenario table, one run's trace, and the parameter
sweep that chose the adaptor's defaults (the engine is benchmarks/simulation.py).

`python -m benchmarks.simulate [--jobs 1024] [--job-seconds 0.06] [--sweep]`
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace

from benchmarks.simulation import (
    DEFAULT_PARAMS,
    EXTRA_SCENARIOS,
    SCENARIOS,
    LinkModel,
    Setup,
    simulate,
)
from loadbalancer.adaptor import POLICIES, Params, Policy

SWEEP_POLICIES: tuple[Policy, ...] = ("sender", "receiver", "symmetric")
SWEEP_MIN_BATCH = (1, 4, 16)
SWEEP_HYSTERESIS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
SWEEP_SEEDS = (1, 2)


@dataclass(frozen=True)
class Score:
    params: Params
    worst: float  # worst ratio over setups, scenarios, policies and seeds
    mean: float  # mean ratio
    pingpong: float  # mean share of the jobs bounced (moved again by the balancer)
    tail: float  # mean tail, seconds

    @property
    def objective(self) -> float:
        """Worst ratio plus ping-pong share: the simulator charges no CPU or bandwidth for a
        move, real machines do, so jobs sent to and fro count as that much lost balance."""
        return self.worst + self.pingpong


def sweep_setups(setup: Setup) -> dict[str, Setup]:
    """The given setup, the same with 4 workers a node, and a slow far link."""
    return {
        "lan": setup,
        "lan-4w": replace(setup, workers=(4, 4)),
        "wan": replace(setup, link=replace(setup.link, rtt=0.05, bandwidth=1.25e6)),
    }


def table(setup: Setup, params: Params) -> list[str]:
    """Scenario x policy: ratio, tail, jobs moved each way, jobs moved twice."""
    lines = [
        f"{'scenario':<8} {'policy':<10} {'ratio':>6} {'tail s':>7} {'moved m->s/s->m':>16} "
        f"{'bounced':>7} {'copies':>6} {'copy %':>6}"
    ]
    for scenario in SCENARIOS + EXTRA_SCENARIOS:
        for policy in POLICIES:
            result = simulate(scenario, policy, params, setup)
            moved = f"{result.moved['master->slave']}/{result.moved['slave->master']}"
            lines.append(
                f"{scenario.name:<8} {policy:<10} {result.ratio:>6.3f} {result.tail:>7.2f} "
                f"{moved:>16} {result.bounced:>7} {result.copies:>6} "
                f"{100 * result.copy_share:>6.2f}"
            )
    return lines


def trace(setup: Setup, params: Params, scenario_name: str, policy_name: str) -> list[str]:
    """One run's pending jobs per node over time, as CSV (for plotting)."""
    scenarios = {scenario.name: scenario for scenario in SCENARIOS + EXTRA_SCENARIOS}
    policies: dict[str, Policy] = {policy: policy for policy in POLICIES}
    if scenario_name not in scenarios or policy_name not in policies:
        raise SystemExit(f"unknown scenario or policy: {scenario_name} {policy_name}")
    result = simulate(scenarios[scenario_name], policies[policy_name], params, setup)
    return ["time,master,slave"] + [f"{t:.2f},{m},{s}" for t, m, s in result.series]


def score(setup: Setup, params: Params) -> Score:
    results = [
        simulate(scenario, policy, params, replace(variant, seed=seed))
        for variant in sweep_setups(setup).values()
        for scenario in SCENARIOS + EXTRA_SCENARIOS
        for policy in SWEEP_POLICIES
        for seed in SWEEP_SEEDS
    ]
    ratios = [result.ratio for result in results]
    return Score(
        params,
        worst=max(ratios),
        mean=statistics.fmean(ratios),
        pingpong=statistics.fmean(result.bounced for result in results) / setup.jobs,
        tail=statistics.fmean(result.tail for result in results),
    )


def sweep(setup: Setup) -> list[Score]:
    """Every Params of the grid, best first."""
    scores = [
        score(setup, Params(min_batch=batch, hysteresis=hysteresis))
        for batch in SWEEP_MIN_BATCH
        for hysteresis in SWEEP_HYSTERESIS
    ]
    return sorted(scores, key=lambda s: (s.objective, s.mean))


def sweep_lines(scores: Sequence[Score]) -> list[str]:
    lines = [
        f"{'min_batch':>9} {'hysteresis':>10} {'worst':>6} {'mean':>6} {'ping-pong':>9} "
        f"{'tail s':>6} {'objective':>9}"
    ]
    for s in scores:
        lines.append(
            f"{s.params.min_batch:>9} {s.params.hysteresis:>10.2f} {s.worst:>6.3f} "
            f"{s.mean:>6.3f} {s.pingpong:>9.2%} {s.tail:>6.2f} {s.objective:>9.4f}"
        )
    best = scores[0].params
    lines.append(f"best: Params(min_batch={best.min_batch}, hysteresis={best.hysteresis})")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.simulate",
        description="Run the real adaptor against two modelled nodes in virtual time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=Setup.jobs, help="jobs in the workload")
    parser.add_argument(
        "--job-seconds",
        type=float,
        default=Setup.job_seconds,
        help="compute seconds of one job at full speed",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker threads per node")
    parser.add_argument(
        "--noise",
        type=float,
        default=Setup.noise,
        help="relative standard deviation of a job's compute seconds",
    )
    parser.add_argument("--rtt", type=float, default=LinkModel.rtt, help="round trip, seconds")
    parser.add_argument("--seed", type=int, default=Setup.seed, help="random seed")
    parser.add_argument("--sweep", action="store_true", help="search Params and print the best")
    parser.add_argument(
        "--trace",
        nargs=2,
        metavar=("SCENARIO", "POLICY"),
        help="print one run's pending jobs per node over time as CSV",
    )
    args = parser.parse_args(argv)
    setup = Setup(
        jobs=args.jobs,
        job_seconds=args.job_seconds,
        workers=(args.workers, args.workers),
        noise=args.noise,
        link=LinkModel(rtt=args.rtt),
        seed=args.seed,
    )
    if args.sweep:
        lines = sweep_lines(sweep(setup))
    elif args.trace:
        lines = trace(setup, DEFAULT_PARAMS, *args.trace)
    else:
        lines = table(setup, DEFAULT_PARAMS)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
