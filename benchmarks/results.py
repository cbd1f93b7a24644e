"""What one benchmark run reports, whoever ran it (lb or the Dask peer), as one table row."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    scenario: str
    policy: str  # an lb policy, or "dask"
    makespan: float | None = None  # seconds; None when the run failed
    ideal: float | None = None
    ratio: float | None = None
    tail: float | None = None
    moved: int | None = None  # jobs moved by balancing, both ways (bootstrap not counted)
    mb_sent: float | None = None
    retransmits: int | None = None
    spurious: int | None = None  # of the retransmissions, those whose original arrived
    verified: bool = False
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.verified and self.ratio is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def lb_row(scenario: str, policy: str, summary: dict[str, Any] | None, note: str = "") -> Row:
    """A row from the master's summary (``--result``); a failed run keeps only its note."""
    if summary is None:
        return Row(scenario, policy, note=note or "no result")
    moved = summary.get("moved", {})
    return Row(
        scenario,
        policy,
        makespan=summary.get("makespan_s"),
        ideal=summary.get("ideal_s"),
        ratio=summary.get("ratio"),
        tail=summary.get("tail_s"),
        moved=int(moved.get("to_slave", 0)) + int(moved.get("to_master", 0)),
        mb_sent=round(int(summary.get("bytes_sent", 0)) / 1e6, 2),
        retransmits=int(summary.get("retransmits", 0)),
        spurious=summary.get("spurious"),
        verified=bool(summary.get("verified")),
        note=note or (summary.get("error") or ""),
    )


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str))
    return path
