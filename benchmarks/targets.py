"""Issues 4 and 12's targets, checked on the medians of each cell's runs (``--repeat``).

"Best policy" is the best of lb's balancing policies (sender, receiver, symmetric) by median
ratio: `none` is the baseline without balancing and `seed` the old system's rule, both there
to be beaten. The moves, the tail and the copies are judged for the default policy.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.results import Cell, Row, cells, median_worst
from loadbalancer.config import Config

BALANCING = ("sender", "receiver", "symmetric")
# The daemon's default, as the config declares it (its other fields have no default).
DEFAULT = str(next(f.default for f in dataclasses.fields(Config) if f.name == "policy"))
BEST_LIMITS = {"equal": 1.03, "hetero": 1.03, "change": 1.03, "drain": 1.03,
               "pause": 1.10, "late": 1.05, "uneven": 1.05, "straggler": 1.10}
NONE_HETERO_FLOOR = 1.3  # without balancing, hetero must be visibly unbalanced
MOVED_LIMITS = {"equal": 5.0, "uneven": 15.0}  # jobs moved after the bootstrap, % of the batch
MOVED_AGAIN_LIMIT = 1.0  # % of the batch moved more than once, in every scenario
TAIL_LIMIT = 0.5  # mean job times at full speed, in every scenario
COPY_LIMIT = 2.0  # % of the work spent on speculative copies
OVERHEAD_SHARE = 1 / 50  # `tiny`: lb's per-job overhead at most this share of Dask's


@dataclass(frozen=True)
class Check:
    target: str
    value: str
    status: str  # PASS, MISS or SKIP (nothing to judge: the row is missing or failed)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _cell(table: Sequence[Cell], scenario: str, policy: str) -> Cell | None:
    for cell in table:
        if cell.scenario == scenario and cell.policy == policy and cell.good:
            return cell
    return None


def _ratio(table: Sequence[Cell], scenario: str, policy: str) -> float | None:
    cell = _cell(table, scenario, policy)
    return cell.median("ratio") if cell else None


def best(table: Sequence[Cell], scenario: str) -> tuple[str, float] | None:
    """The balancing policy with the lowest median ratio in ``scenario``."""
    found = [(ratio, policy) for policy in BALANCING
             if (ratio := _ratio(table, scenario, policy)) is not None]
    if not found:
        return None
    ratio, policy = min(found)
    return policy, ratio


def _judge(target: str, value: float | None, passed: bool, shown: str = "") -> Check:
    if value is None:
        return Check(target, "no verified run", "MISS")
    return Check(target, shown or f"{value:.3f}", "PASS" if passed else "MISS")


def _versus_dask(table: Sequence[Cell], scenario: str) -> Check:
    target = f"{scenario}: best policy <= dask"
    dask = _ratio(table, scenario, "dask")
    if dask is None:
        return Check(target, "no dask run", "SKIP")
    found = best(table, scenario)
    if found is None:
        return _judge(target, None, False)
    policy, ratio = found
    return _judge(target, ratio, ratio <= dask, f"{ratio:.3f} ({policy}) vs dask {dask:.3f}")


def _overhead(table: Sequence[Cell]) -> Check:
    target = f"tiny: per-job overhead <= 1/{round(1 / OVERHEAD_SHARE)} of dask's"
    dask = _cell(table, "tiny", "dask")
    ours = [(value, cell.policy) for policy in BALANCING
            if (cell := _cell(table, "tiny", policy)) is not None
            and (value := cell.median("overhead_us")) is not None]
    if dask is None or dask.median("overhead_us") is None:
        return Check(target, "no dask run", "SKIP")
    theirs = dask.median("overhead_us")
    assert theirs is not None
    if not ours:
        return _judge(target, None, False)
    value, policy = min(ours)
    return _judge(target, value, value <= theirs * OVERHEAD_SHARE,
                  f"{value:.1f} us ({policy}) vs dask {theirs:.1f} us")


def _default(table: Sequence[Cell], scenario: str, name: str, limit: float, what: str,
             digits: int = 2) -> Check:
    target = f"{scenario}: {what} <= {limit:g} ({DEFAULT})"
    cell = _cell(table, scenario, DEFAULT)
    if cell is None:
        return _judge(target, None, False)
    value = cell.median(name)
    if value is None:
        return Check(target, "not measured", "SKIP")
    return _judge(target, value, value <= limit, median_worst(cell, name, digits))


def _copies(table: Sequence[Cell], scenarios: Sequence[str]) -> Check:
    target = f"copies: compute on speculative copies <= {COPY_LIMIT:g} % ({DEFAULT})"
    shares = [value for scenario in scenarios
              if (cell := _cell(table, scenario, DEFAULT)) is not None
              and (value := cell.worst("copy_pct")) is not None]
    if not shares:
        return Check(target, "\u2014 (no lb run of the default policy)", "SKIP")
    return _judge(target, max(shares), max(shares) <= COPY_LIMIT, f"worst {max(shares):.2f} %")


def check(rows: Iterable[Row]) -> list[Check]:
    """Every target that the rows (each run of each cell) can judge."""
    table = cells(rows)
    scenarios = list(dict.fromkeys(cell.scenario for cell in table))
    checks = []
    for scenario, limit in BEST_LIMITS.items():
        if scenario in scenarios:
            found = best(table, scenario)
            ratio = found[1] if found else None
            shown = f"{found[1]:.3f} ({found[0]})" if found else ""
            checks.append(_judge(f"{scenario}: best policy ratio <= {limit:.2f}", ratio,
                                 ratio is not None and ratio <= limit, shown))
    if "tiny" in scenarios:
        checks.append(_overhead(table))
    checks += [_versus_dask(table, scenario) for scenario in scenarios]
    if "hetero" in scenarios:
        none = _ratio(table, "hetero", "none")
        checks.append(_judge(f"hetero: none ratio >= {NONE_HETERO_FLOOR}", none,
                             none is not None and none >= NONE_HETERO_FLOOR))
    if any(cell.policy == DEFAULT for cell in table):
        checks += [_default(table, scenario, "moved_pct", limit, "jobs moved %")
                   for scenario, limit in MOVED_LIMITS.items() if scenario in scenarios]
        checks += [_default(table, scenario, "moved_again_pct", MOVED_AGAIN_LIMIT,
                            "moved more than once %") for scenario in scenarios]
        checks += [_default(table, scenario, "tail_jobs", TAIL_LIMIT, "tail in jobs")
                   for scenario in scenarios]
        checks.append(_copies(table, scenarios))
    return checks


def choice(rows: Iterable[Row]) -> list[str]:
    """The default policy is chosen on medians: per balancing policy, the mean of its median
    ratios and its worst median over the scenarios they all ran; best first."""
    table = cells(rows)
    scenarios = [scenario for scenario in dict.fromkeys(cell.scenario for cell in table)
                 if all(_ratio(table, scenario, policy) is not None for policy in BALANCING)]
    if not scenarios:
        return []
    scored = []
    for policy in BALANCING:
        medians = [_ratio(table, scenario, policy) or 0.0 for scenario in scenarios]
        scored.append((statistics.mean(medians), max(medians), policy))
    return [f"{policy}: mean of medians {mean:.3f}, worst median {worst:.3f}"
            f"{' (the default)' if policy == DEFAULT else ''}"
            for mean, worst, policy in sorted(scored)]
