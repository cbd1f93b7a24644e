"""Issue 4's targets, checked from one run's rows.

"Best policy" is the best of lb's balancing policies (sender, receiver, symmetric): `none`
is the baseline without balancing and `seed` the old system's rule, both there to be beaten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.results import Row

BALANCING = ("sender", "receiver", "symmetric")
BEST_LIMITS = {"equal": 1.05, "hetero": 1.05, "change": 1.10, "drain": 1.10}
NONE_HETERO_FLOOR = 1.3  # without balancing, hetero must be visibly unbalanced


@dataclass(frozen=True)
class Check:
    target: str
    value: str
    status: str  # PASS, MISS or SKIP (nothing to judge: the row is missing or failed)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(rows: Sequence[Row], scenario: str, policy: str) -> float | None:
    for row in rows:
        if row.scenario == scenario and row.policy == policy and row.ok:
            return row.ratio
    return None


def best(rows: Sequence[Row], scenario: str) -> tuple[str, float] | None:
    """The balancing policy with the lowest ratio in ``scenario``."""
    found = [(ratio, policy) for policy in BALANCING
             if (ratio := _ratio(rows, scenario, policy)) is not None]
    if not found:
        return None
    ratio, policy = min(found)
    return policy, ratio


def _judge(target: str, value: float | None, passed: bool, shown: str = "") -> Check:
    if value is None:
        return Check(target, "no verified run", "MISS")
    return Check(target, shown or f"{value:.3f}", "PASS" if passed else "MISS")


def _versus_dask(rows: Sequence[Row], scenario: str) -> Check:
    target = f"{scenario}: best policy <= dask"
    dask = _ratio(rows, scenario, "dask")
    if dask is None:
        return Check(target, "no dask run", "SKIP")
    found = best(rows, scenario)
    if found is None:
        return _judge(target, None, False)
    policy, ratio = found
    return _judge(target, ratio, ratio <= dask, f"{ratio:.3f} ({policy}) vs dask {dask:.3f}")


def check(rows: Sequence[Row]) -> list[Check]:
    scenarios = list(dict.fromkeys(row.scenario for row in rows))
    checks = []
    for scenario, limit in BEST_LIMITS.items():
        if scenario in scenarios:
            found = best(rows, scenario)
            ratio = found[1] if found else None
            shown = f"{found[1]:.3f} ({found[0]})" if found else ""
            checks.append(_judge(f"{scenario}: best policy ratio <= {limit:.2f}", ratio,
                                 ratio is not None and ratio <= limit, shown))
    checks += [_versus_dask(rows, scenario) for scenario in scenarios]
    if "hetero" in scenarios:
        none = _ratio(rows, "hetero", "none")
        checks.append(_judge(f"hetero: none ratio >= {NONE_HETERO_FLOOR}", none,
                             none is not None and none >= NONE_HETERO_FLOOR))
    return checks
