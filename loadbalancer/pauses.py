"""When to stop and continue a worker process of :mod:`loadbalancer.pool`.

The throttle is a duty cycle that the parent imposes with SIGSTOP and SIGCONT: at throttle t
a child that has a call running computes t x 100 ms, is stopped for the rest of the window,
and so on. The signals need nothing from the job and cost nothing while it runs; they go to
the child's process group, so that a job's own subprocesses are throttled (and killed) too.
:class:`PauseSchedule` decides when, a pure function of the instants it is told about, driven
by one timer of the worker process's and tested exactly with a fake clock. As in the thread
worker's DutyCycle, only time with a call running counts (an idle child is never stopped), each
pause is in proportion to the compute actually done and a pause that ended late or early is
made up in the next window (timers do not skew the duty cycle), and a partial window carries
over to the next batch (jobs shorter than the window are throttled too).
"""

from __future__ import annotations

import math
from typing import Literal

from loadbalancer.worker import WINDOW

Action = Literal["stop", "continue"]
EARLY = 0.001  # a timer may fire this much early (uvloop's count whole milliseconds)


class PauseSchedule:
    """When to stop and continue a worker process so that, while a call runs, it computes
    ``throttle`` of the time.

    Pure: each method takes the instant it is told about. Call :meth:`due` after every
    event and at :meth:`next_deadline`; it says which signal to send at that instant.
    """

    def __init__(self, throttle: float, window: float = WINDOW) -> None:
        self.throttle = throttle
        self.window = window
        self.running = False  # a batch is in the child, so a call runs
        self.stopped = False  # "stop" was due and "continue" not yet
        self._since = 0.0  # the instant the counts below are up to
        self._computed = 0.0  # compute in the current window (less a late pause's credit)
        self._owed: float | None = None  # the pause that ends the window, once it is due
        self._served = 0.0  # of that pause
        self._pauses: list[list[float]] = []  # [stop, continue] in the current batch

    def started(self, now: float) -> None:
        self._count(now)
        self.running = True
        self._pauses = self._pauses[-1:] if self.stopped else []

    def ended(self, now: float) -> None:
        self._count(now)
        self.running = False

    def changed(self, throttle: float, now: float) -> None:
        """A new throttle replans the current window: its compute so far owes another pause."""
        self._count(now)
        self.throttle = throttle
        if self._owed is not None:
            self._owed = self._pause(self._computed)
            self._served = min(self._served, self._owed)  # no credit for the old throttle's

    def due(self, now: float) -> Action | None:
        """The signal to send now, if any."""
        self._count(now)
        if self._owed is not None and self._served >= self._owed - EARLY:  # the window is over
            # A continue that came late (early) paused too long (short): the next window
            # computes that much more (less).
            late = self._served - self._owed
            credit = late * self.throttle / (1.0 - self.throttle) if self.throttle < 1.0 else 0.0
            self._owed, self._served, self._computed = None, 0.0, -credit
        if self._owed is None and self.running and self._computed >= self._allowance() - EARLY:
            self._owed, self._served = self._pause(self._computed), 0.0
        stop = self.running and self._owed is not None
        if stop == self.stopped:
            return None
        self.stopped = stop
        if stop:
            self._pauses.append([now, math.inf])
            return "stop"
        self._pauses[-1][1] = now
        return "continue"

    def next_deadline(self) -> float | None:
        """When :meth:`due` has something to say next; None: not before the next event."""
        if not self.running:
            return None
        if self._owed is None:
            remaining = self._allowance() - self._computed
        elif self.stopped:
            remaining = self._owed - self._served
        else:
            remaining = 0.0
        return None if remaining == math.inf else self._since + remaining

    def paused(self, start: float, end: float) -> float:
        """How long the child was stopped between ``start`` and ``end`` (in this batch)."""
        return sum(max(0.0, min(end, until) - max(start, since)) for since, until in self._pauses)

    def active(self, start: float, end: float) -> float:
        """The time between ``start`` and ``end`` that the child was not stopped."""
        return end - start if not self._pauses else max(0.0, end - start - self.paused(start, end))

    def _allowance(self) -> float:
        return math.inf if self.throttle >= 1.0 else self.throttle * self.window

    def _pause(self, computed: float) -> float:
        if self.throttle <= 0.0:
            return math.inf  # until the throttle changes
        return computed * (1.0 - self.throttle) / self.throttle

    def _count(self, now: float) -> None:
        elapsed = max(0.0, now - self._since)
        if self.stopped:
            self._served += elapsed
        elif self.running and self.throttle < 1.0:  # at full speed no window is kept
            self._computed += elapsed
        self._since = now
