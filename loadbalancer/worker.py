"""The worker: runs jobs in executor threads under a duty-cycle throttle.

With throttle t a worker thread computes ``t * 100 ms`` and sleeps the rest
of every 100 ms window. The pause happens in the workload's checkpoints,
inside the executor thread, so the event loop never blocks on compute and a
new throttle takes effect within one window. Throttle 0 preempts the running
job: it goes back to the queue for the adaptor to hand away.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from loadbalancer.workload import Workload

WINDOW = 0.1


class Preempted(Exception):
    """The running job was taken back (throttle 0, or its session ended)."""


class Throttle:
    """The node's duty cycle, read by every worker thread at each checkpoint."""

    def __init__(self, value: float) -> None:
        self.value = value
        # Woken when the throttle changes, so a sleeping worker notices at once.
        self.changed = threading.Event()

    def set(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"throttle must be between 0 and 1, not {value}")
        self.value = value
        self.changed.set()


class DutyCycle:
    """One thread's accounting of compute and sleep inside 100 ms windows."""

    def __init__(self, throttle: Throttle, cancelled: Callable[[], bool],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.throttle = throttle
        self.cancelled = cancelled
        self.clock = clock
        self.window_start = clock()
        self.started = self.window_start
        self.slept = 0.0

    def checkpoint(self) -> None:
        if self.cancelled() or self.throttle.value == 0.0:
            raise Preempted
        throttle = self.throttle.value
        busy = self.clock() - self.window_start
        if busy >= WINDOW * throttle:
            if throttle < 1.0:
                # Sleep in proportion to what was computed, overshoot included,
                # so the duty cycle is exact however coarse the checkpoints.
                self._sleep_until(self.window_start + busy / throttle)
            self.window_start = self.clock()

    def _sleep_until(self, deadline: float) -> None:
        before = self.clock()
        self.throttle.changed.clear()
        # A raised throttle ends the pause early; the next checkpoint re-checks.
        self.throttle.changed.wait(max(0.0, deadline - before))
        self.slept += self.clock() - before

    @property
    def active(self) -> float:
        """Seconds spent computing so far: the job's cost at full speed."""
        return self.clock() - self.started - self.slept


@dataclass(frozen=True, slots=True)
class Outcome:
    job: int
    result: bytes
    seconds: float  # compute seconds at full speed


async def run_job(executor: ThreadPoolExecutor, workload: Workload, job: int, data: bytes,
                  throttle: Throttle, cancelled: Callable[[], bool]) -> Outcome:
    """Compute one job in the executor; raises Preempted if taken back."""

    def compute() -> Outcome:
        cycle = DutyCycle(throttle, cancelled)
        result = workload.run(job, data, cycle.checkpoint)
        return Outcome(job, result, cycle.active)

    return await asyncio.get_running_loop().run_in_executor(executor, compute)
