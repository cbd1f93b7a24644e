"""A node's trace: samples a few times a second and events as they happen.

Times are wall-clock seconds (``time.time()``) so that the master can put
both nodes' traces on one axis; on two machines that assumes their clocks are
synchronised (NTP keeps them within milliseconds, far below the sampling
period).
"""

from __future__ import annotations

import time
from typing import Any

MAX_SAMPLES = 100_000  # a day at five samples a second: bounded however long a run takes


class Recorder:
    def __init__(self) -> None:
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def sample(self, **values: Any) -> None:
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append({"t": time.time(), **values})

    def event(self, kind: str, **values: Any) -> None:
        if len(self.events) < MAX_SAMPLES:
            self.events.append({"t": time.time(), "type": kind, **values})

    def capacity_steps(self) -> list[tuple[float, float]]:
        """(time, workers * throttle) from each throttle event on, for the ideal makespan."""
        return [(e["t"], e["workers"] * e["throttle"]) for e in self.events
                if e["type"] == "throttle"]
