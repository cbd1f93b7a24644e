"""A node's trace: samples a few times a second and events as they happen.

Times are wall-clock seconds (``time.time()``) so that the master can put
both nodes' traces on one axis; on two machines that assumes their clocks are
synchronised (NTP keeps them within milliseconds, far below the sampling
period).

A trace that comes from elsewhere (the slave's TRACE message, a file given to ``lb report``)
is read with :func:`sample_flaw` and :func:`event_flaw`, which say what the records lack of
what its readers take from them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loadbalancer import fields
from loadbalancer.peerstate import MAX_WORKERS

RUN_FIELDS = ("t", "job", "node", "kind", "moved")
MAX_SAMPLES = 100_000  # a day at five samples a second: bounded however long a run takes

Bounds = Mapping[str, tuple[float, float]]
# The numbers that the summary and the plots take from a record, and their bounds.
TIME = (0, fields.MAX_COUNT)
COUNT = (0, fields.MAX_COUNT)
SAMPLE: Bounds = {"t": TIME, "pending": COUNT}
EVENT: Bounds = {"t": TIME}
THROTTLE_EVENT: Bounds = {"t": TIME, "throttle": (0, 1), "workers": (1, MAX_WORKERS)}


def sample_flaw(sample: object, needs: Bounds = SAMPLE) -> str | None:
    """What makes ``sample`` unfit for the readers of a trace, in words; None if nothing."""
    if not isinstance(sample, dict):
        return "must be an object"
    return _numbers_flaw(sample, needs)


def event_flaw(event: object) -> str | None:
    """What makes ``event`` unfit for the readers of a trace, in words; None if nothing."""
    if not isinstance(event, dict):
        return "must be an object"
    if not fields.text(event.get("type"), fields.MAX_NAME):
        return "has no type"
    if event["type"] != "throttle":
        return _numbers_flaw(event, EVENT)
    flaw = _numbers_flaw(event, THROTTLE_EVENT)
    return None if flaw is None else f"is a throttle event that {flaw}"


def _numbers_flaw(record: dict[str, Any], needs: Bounds) -> str | None:
    for key, (low, high) in needs.items():
        value = record.get(key)
        if not fields.finite(value):
            return f"has no number {key!r}"
        if not fields.number(value, low, high):
            return f"has {key!r} out of {low} to {high}: {value!r:.40}"
    return None


class Recorder:
    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        # Where and when each job ended (the master's record of both nodes): every job of
        # a run up to MAX_SAMPLES, then every second one, every fourth... (a long map's
        # timeline thins out evenly rather than stopping).
        self._runs: list[tuple[float, int, str, str, bool]] = []  # a tuple costs a third of a dict
        self._stride = 1
        self._seen = 0

    def sample(self, **values: Any) -> None:
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append({"t": time.time(), **values})

    def event(self, kind: str, **values: Any) -> None:
        if len(self.events) < MAX_SAMPLES:
            self.events.append({"t": time.time(), "type": kind, **values})

    def run(self, job: int, node: str, kind: str, moved: bool) -> None:
        """A job's outcome came: ``kind`` "ok", "failed" (to be retried, or for good) or
        "copy" (it had one already); ``moved``: it moved between the nodes after the start."""
        self._seen += 1
        if self._seen % self._stride:
            return
        self._runs.append((time.time(), job, node, kind, moved))
        if len(self._runs) >= MAX_SAMPLES:
            self._runs = self._runs[::2]
            self._stride *= 2

    @property
    def runs(self) -> list[dict[str, Any]]:
        """The job runs as the trace file has them."""
        return [dict(zip(RUN_FIELDS, run, strict=True)) for run in self._runs]

    def capacity_steps(self) -> list[tuple[float, float]]:
        """(time, workers * throttle) from each throttle event on, for the ideal makespan."""
        return [(e["t"], e["workers"] * e["throttle"]) for e in self.events
                if e["type"] == "throttle"]


@dataclass
class _Session:
    reported: int = 0  # the peer's jobs computed in this session, at its latest state
    compute: float = 0.0  # and their compute seconds
    delivered: int = 0  # outcomes it sent: more than it reported, if it died soon after

    @property
    def executed(self) -> int:
        return max(self.reported, self.delivered)


class PeerHistory:
    """What the master saw of the slave, session after session: a slave process that dies
    takes its own trace with it, so the summary's counts, the ideal makespan's capacity and
    the plot of every session come from here (the last slave's own trace, where it has one,
    is finer and wins for the time it covers). Times are wall clock, passed in."""

    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.sessions: list[_Session] = []
        self._capacity: float | None = None  # workers * throttle now; None: no session
        self._pending = 0

    def joined(self, now: float) -> None:
        self.sessions.append(_Session())
        self._event(now, "joined")

    def state(self, now: float, *, pending: int, throttle: float, workers: int,
              executed: int, compute: float) -> None:
        """The peer's latest state (its session's counts so far)."""
        if not self.sessions:
            return
        session = self.sessions[-1]
        session.reported, session.compute = executed, compute
        self._pending = pending
        if self._capacity != workers * throttle:
            self._capacity = workers * throttle
            self._event(now, "throttle", throttle=throttle, workers=workers)

    def delivered(self, outcomes: int) -> None:
        if self.sessions:
            self.sessions[-1].delivered += outcomes

    def sample(self, now: float) -> None:
        """A point of the peer's line, while there is a session."""
        if self._capacity is not None and len(self.samples) < MAX_SAMPLES:
            self.samples.append({"t": now, "pending": self._pending, "done": self.executed,
                                 "session": len(self.sessions)})

    def lost(self, now: float) -> None:
        if self._capacity is not None:
            self.sample(now)
            self._pending = 0  # the master took its jobs back: the line ends at 0
            self.sample(now)
            self._capacity = None
            self._event(now, "lost")

    def _event(self, now: float, kind: str, **values: Any) -> None:
        if len(self.events) < MAX_SAMPLES:
            self.events.append({"t": now, "type": kind, **values})

    @property
    def executed(self) -> int:
        return sum(session.executed for session in self.sessions)

    @property
    def compute(self) -> float:
        return sum(session.compute for session in self.sessions)

    def work(self, own: Mapping[str, Any]) -> tuple[int, float]:
        """Jobs the slave computed in this run, in every session, and their compute
        seconds: the sessions as the master saw them, the last one as the slave's own
        counters ``own`` (from its trace, where it sent one) say."""
        executed, compute = self.executed, self.compute
        if self.sessions and "executed" in own:
            last = self.sessions[-1]
            executed += int(own["executed"]) - last.executed
            compute += float(own.get("compute_seconds", 0.0)) - last.compute
        return executed, compute

    def timeline(self, samples: list[dict[str, Any]], events: list[dict[str, Any]],
                 ) -> dict[str, list[dict[str, Any]]]:
        """The slave's line in every session: its own records where it sent them (finer),
        and before them what the master saw of it (sessions of slaves that died)."""
        # The slave's own record starts when its process did (with its first throttle event).
        since = min((r["t"] for r in [*samples, *events]), default=math.inf)
        return {"samples": [s for s in self.samples if s["t"] < since] + samples,
                "events": [e for e in self.events if e["t"] < since] + events}

    def capacity_steps(self) -> list[tuple[float, float]]:
        """(time, workers * throttle) of the peer: only while a session was open."""
        steps = []
        for event in self.events:
            if event["type"] == "throttle":
                steps.append((event["t"], event["workers"] * event["throttle"]))
            elif event["type"] == "lost":
                steps.append((event["t"], 0.0))
        return steps
