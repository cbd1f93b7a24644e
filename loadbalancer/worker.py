"""The worker: runs jobs in executor threads under a duty-cycle throttle.

With throttle t a worker thread computes ``t * 100 ms`` and sleeps the rest
of every 100 ms window. The pause happens in the workload's checkpoints,
inside the executor thread, so the event loop never blocks on compute and a
new throttle takes effect within one window. Throttle 0 preempts the running
job: it goes back to the queue for the adaptor to hand away.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from loadbalancer.jobs import Input
from loadbalancer.outcome import Failure, Outcome
from loadbalancer.tasks import Task
from loadbalancer.workload import Workload

WINDOW = 0.1
PAUSE_SLICE = 0.05  # seconds a pause sleeps before it looks whether its job was taken away
BATCH_SECONDS = 0.002
MAX_BATCH = 64


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
    """One worker's accounting of compute and sleep.

    It counts compute time (between checkpoints, while a job runs) rather
    than wall time, and lives as long as the worker: a job shorter than the
    window is throttled like a long one, and time spent waiting for work is
    not mistaken for compute. Each time ``throttle * 100 ms`` of compute is
    done it sleeps in proportion, overshoot included, so the duty cycle is
    exact however coarse the checkpoints.
    """

    def __init__(self, throttle: Throttle,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.throttle = throttle
        self.clock = clock
        self.computed = 0.0  # compute seconds since the last pause
        self.job_seconds = 0.0  # compute seconds of the current job
        self._last = clock()

    def begin(self) -> None:
        """A job starts: the time since the last checkpoint was not compute."""
        self._last = self.clock()
        self.job_seconds = 0.0

    def _count(self) -> None:
        now = self.clock()
        self.computed += now - self._last
        self.job_seconds += now - self._last
        self._last = now

    def checkpoint(self, cancelled: Callable[[], bool]) -> None:
        throttle = self.throttle.value  # read once: another thread may change it
        if cancelled() or throttle == 0.0:
            raise Preempted
        self._count()
        if self.computed >= WINDOW * throttle:
            if throttle < 1.0:
                self._pause(self.computed * (1.0 - throttle) / throttle, cancelled)
            self.computed = 0.0
            self._last = self.clock()

    def end(self) -> float:
        """The job is done: its compute seconds, its cost at full speed."""
        self._count()
        return self.job_seconds

    def _pause(self, seconds: float, cancelled: Callable[[], bool]) -> None:
        self.throttle.changed.clear()
        # A raised throttle ends the pause early; the next checkpoint re-checks. So does a
        # job taken away (its result came from elsewhere), within a slice: at a low throttle
        # one pause can last seconds.
        end = self.clock() + seconds
        while (left := end - self.clock()) > 0 and not cancelled():
            if self.throttle.changed.wait(min(left, PAUSE_SLICE)):
                return


@dataclass(slots=True)
class Running:
    """A job handed to a worker."""

    job: int
    task: Task
    data: Input
    queued_as: Input | None  # what goes back in the queue if it is preempted
    cancelled: bool = False  # taken back: throttle 0 or the session it came with ended
    requeue: bool = True  # on preemption, put it back in the queue
    started: float | None = None  # time.monotonic() when its compute began; None: not yet

    def is_cancelled(self) -> bool:
        return self.cancelled


def batch_size(job_seconds: float | None, queued: int) -> int:
    """How many jobs go to the executor in one trip: a trip costs tens of
    microseconds, so tiny jobs share one, up to about BATCH_SECONDS of work."""
    if not job_seconds:
        return 1
    return max(1, min(queued, MAX_BATCH, int(BATCH_SECONDS / job_seconds)))


async def run_jobs(executor: ThreadPoolExecutor, workload: Workload, runs: list[Running],
                   cycle: DutyCycle) -> list[Outcome]:
    """Compute jobs in turn in the executor, until one is preempted; the
    outcomes of those that ended. A job that raises ends with its failure."""

    def compute() -> list[Outcome]:
        outcomes = []
        for run in runs:
            run.started = time.monotonic()
            cycle.begin()
            try:
                # Bytes, as a workload is promised; the copy out of the message it
                # came in is made here, at the job's start, not all at its arrival.
                result = workload.run(run.job, bytes(run.data),
                                      functools.partial(cycle.checkpoint, run.is_cancelled))
            except Preempted:
                break
            except Exception as error:  # the workload's bug fails its job, not the node
                outcomes.append(Outcome(run.job, None, Failure.of(error, skip=1), cycle.end()))
                continue
            outcomes.append(Outcome(run.job, result, None, cycle.end()))
        return outcomes

    return await asyncio.get_running_loop().run_in_executor(executor, compute)
