"""What one benchmark run reports, whoever ran it (lb or the Dask peer), as one table row; and
a cell of the table, the runs of one scenario under one policy (``--repeat``)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    scenario: str
    policy: str  # an lb policy, or "dask"
    makespan: float | None = None  # seconds; None when the run failed
    ideal: float | None = None
    ratio: float | None = None
    tail: float | None = None  # seconds from the first working node running dry to the end
    moved: int | None = None  # jobs moved by balancing, both ways (bootstrap not counted)
    mb_sent: float | None = None
    retransmits: int | None = None
    spurious: int | None = None  # of the retransmissions, those whose original arrived
    verified: bool = False
    note: str = ""
    jobs: int | None = None
    moved_pct: float | None = None  # moved as % of the batch
    moved_again_pct: float | None = None  # % of the batch moved more than once
    tail_jobs: float | None = None  # the tail in mean job times at full speed
    copy_pct: float | None = None  # compute on speculative copies, % of the work; None: none
    overhead_us: float | None = None  # worker time per job beyond its compute (`tiny`)

    @property
    def ok(self) -> bool:
        return self.verified and self.ratio is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Extra:
    """What the harness knows of a run beyond the master's summary."""

    ideal: float | None = None  # the scenario's own ideal (a pause, a long job), if it has one
    tail: float | None = None  # seconds, as the harness reads the trace
    capacity: float | None = None  # summed workers * throttle at the start (for overhead_us)


def _share(part: float | int | None, whole: float | int | None) -> float | None:
    if part is None or not whole:
        return None
    return round(100.0 * part / whole, 2)


def lb_row(scenario: str, policy: str, summary: dict[str, Any] | None, note: str = "",
           extra: Extra = Extra()) -> Row:
    """A row from the master's summary (``--result``); a failed run keeps only its note."""
    if summary is None:
        return Row(scenario, policy, note=note or "no result")
    moved = summary.get("moved", {})
    count = int(moved.get("to_slave", 0)) + int(moved.get("to_master", 0))
    jobs = summary.get("jobs")
    makespan = summary.get("makespan_s")
    ideal = extra.ideal if extra.ideal is not None else summary.get("ideal_s")
    ratio = summary.get("ratio") if extra.ideal is None or not makespan or not ideal \
        else round(makespan / ideal, 3)
    tail = extra.tail if extra.tail is not None else summary.get("tail_s")
    work = summary.get("work_s")
    again = summary.get("moved_again")
    return Row(
        scenario,
        policy,
        makespan=makespan,
        ideal=round(ideal, 3) if ideal is not None else None,
        ratio=ratio,
        tail=tail,
        moved=count,
        mb_sent=round(int(summary.get("bytes_sent", 0)) / 1e6, 2),
        retransmits=int(summary.get("retransmits", 0)),
        spurious=summary.get("spurious"),
        verified=bool(summary.get("verified")),
        note=note or (summary.get("error") or ""),
        jobs=jobs,
        moved_pct=_share(count, jobs),
        moved_again_pct=_share(again, jobs),
        tail_jobs=tail_in_jobs(tail, work, jobs),
        # The compute the master's copies took, won or lost (a lb summary's "copies").
        copy_pct=_share(dict(summary.get("copies") or {}).get("seconds"), work),
        overhead_us=overhead_us(makespan, ideal, extra.capacity, jobs),
    )


def tail_in_jobs(tail: float | None, work: float | None, jobs: int | None) -> float | None:
    """The tail in units of the mean job's compute time at full speed."""
    if tail is None or not work or not jobs:
        return None
    return round(tail / (work / jobs), 2)


def overhead_us(makespan: float | None, ideal: float | None, capacity: float | None,
                jobs: int | None) -> float | None:
    """Worker time lost per job: what the makespan has beyond the ideal, times the workers it
    kept waiting, shared over the jobs (for jobs so small that this is all that counts)."""
    if makespan is None or ideal is None or not capacity or not jobs:
        return None
    return round(max(0.0, makespan - ideal) * capacity / jobs * 1e6, 1)


# The columns a cell shows as "median (worst)"; larger is worse for each.
MEASURES = ("ratio", "moved_pct", "moved_again_pct", "tail_jobs", "copy_pct", "overhead_us")


@dataclass(frozen=True)
class Cell:
    """The runs of one scenario under one policy (or on Dask)."""

    runs: tuple[Row, ...]

    @property
    def scenario(self) -> str:
        return self.runs[0].scenario

    @property
    def policy(self) -> str:
        return self.runs[0].policy

    @property
    def good(self) -> list[Row]:
        return [row for row in self.runs if row.ok]

    @property
    def failed(self) -> int:
        return len(self.runs) - len(self.good)

    def values(self, name: str) -> list[float]:
        return [value for row in self.good if (value := getattr(row, name)) is not None]

    def median(self, name: str) -> float | None:
        values = self.values(name)
        return round(statistics.median(values), 4) if values else None

    def worst(self, name: str) -> float | None:
        values = self.values(name)
        return max(values) if values else None

    @property
    def chosen(self) -> Row:
        """The run of median ratio (failed runs count as the worst): its plot, its figures."""
        ranked = sorted(self.runs, key=lambda row: row.ratio if row.ok and row.ratio
                        is not None else float("inf"))
        return ranked[(len(ranked) - 1) // 2]

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "policy": self.policy, "runs": len(self.runs),
                "failed": self.failed,
                **{f"{name}_median": self.median(name) for name in MEASURES},
                **{f"{name}_worst": self.worst(name) for name in MEASURES}}


def cells(rows: Iterable[Row]) -> list[Cell]:
    """Rows grouped by (scenario, policy), in the order each first appears."""
    grouped: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        grouped.setdefault((row.scenario, row.policy), []).append(row)
    return [Cell(tuple(runs)) for runs in grouped.values()]


def median_worst(cell: Cell, name: str, digits: int) -> str:
    """``median (worst)`` of one measure over the cell's verified runs; the median alone for
    one run; "—" when no run has it."""
    median, worst = cell.median(name), cell.worst(name)
    if median is None or worst is None:
        return "\u2014"
    if len(cell.values(name)) == 1:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} ({worst:.{digits}f})"


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))
    return path


# A figure of the overheads, function jobs or paths measures, against its target.
@dataclass(frozen=True)
class Measure:
    name: str
    value: float
    unit: str
    target: str
    passed: bool | None  # None: a reference figure, no target
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "INFO" if self.passed is None else "PASS" if self.passed else "MISS"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}
