"""The master's copies of jobs the slave is running (speculative execution of the tail).

Bookkeeping only: which jobs have a copy queued or running here, when each started, and
what the copies cost. The first result of a job wins (the ledger sees to that); the other
execution is stopped, and its compute counts nowhere but in ``seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Copies:
    started: dict[int, float | None] = field(default_factory=dict)  # job: when, None: queued
    made: int = 0  # copies queued in the run
    won: int = 0  # copies whose result came first
    seconds: float = 0.0  # compute the copies took here, won or lost

    def __contains__(self, job: object) -> bool:
        return job in self.started

    def __len__(self) -> int:
        return len(self.started)

    def add(self, job: int) -> None:
        self.started[job] = None
        self.made += 1

    def start(self, job: int, now: float) -> None:
        self.started[job] = now

    def finished(self, job: int, seconds: float, *, first: bool) -> None:
        """The copy here ended after ``seconds`` of compute, before the original if
        ``first``."""
        self.started.pop(job, None)
        self.seconds += seconds
        self.won += first

    def beaten(self, job: int, now: float) -> None:
        """The original's result came first: the copy is dropped or stopped at ``now``."""
        started = self.started.pop(job, None)
        if started is not None:
            self.seconds += now - started

    def summary(self) -> dict[str, float]:
        return {"made": self.made, "won": self.won, "seconds": round(self.seconds, 3)}
