"""Worker processes: each worker slot runs its function jobs in a child process of its own.

Processes, not threads: a user's pure-Python function holds the GIL and never calls a
checkpoint, so in threads such jobs neither run in parallel nor pause for the throttle. In
processes N workers use N cores, and the parent stops, continues and kills a child without
its cooperation. The child is :mod:`loadbalancer.jobworker`; its module docstring describes
the frames on the pipes, which it moves to fds of its own so that nothing user code prints
can corrupt them. :mod:`loadbalancer.childprocess` is the parent's handle on one.

The throttle is a duty cycle that the parent imposes with SIGSTOP and SIGCONT, on the
child's process group (:mod:`loadbalancer.pauses` says when).

A call's active time (``Outcome.seconds``, its cost at full speed, which the node's model
needs) is measured in the parent: the child reports when the call started and ended on the
system-wide monotonic clock, and the parent, which knows exactly when it stopped and
continued the child, subtracts the time stopped in between. The child cannot tell.

Preemption is SIGKILL: a job has nothing to unwind, and the next run starts a fresh child.
A child that dies on its own fails only the call it was running, which a page of memory
shared with the child names. Reads are asyncio stream reads, never blocking, so the loop
stays responsive while a child is stopped in the middle of writing a large result.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from loadbalancer.childprocess import ChildProcess, Frame, Frames, describe, spawn
from loadbalancer.jobworker import BATCH, CALL, read_failure
from loadbalancer.outcome import Failure, Outcome
from loadbalancer.pauses import PauseSchedule
from loadbalancer.worker import WINDOW, Throttle

WORKER_DIED = "WorkerDied"


@dataclass(frozen=True, slots=True)
class Call:
    """One function job for a worker process."""

    job: int
    spec: str  # the module as the operator named it (already checked by the caller)
    function: str
    args: bytes | memoryview  # codec.encode_call's, or a view of the message it came in


def _request(calls: list[Call]) -> bytes:
    parts: list[bytes | memoryview] = [BATCH.pack(len(calls))]
    for call in calls:
        spec, function = call.spec.encode(), call.function.encode()
        parts += (CALL.pack(call.job, len(spec), len(function), len(call.args)),
                  spec, function, call.args)
    return b"".join(parts)


class WorkerProcess:
    """One child process that runs function jobs, throttled from outside."""

    def __init__(self, throttle: Throttle, *, stderr: int | None = None,
                 window: float = WINDOW) -> None:
        self.throttle = throttle
        self.stderr = stderr  # the child's stderr, where user code prints; None: ours
        self._schedule = PauseSchedule(throttle.value, window)
        self._child: ChildProcess | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._taken_back = False  # the current run was preempted, or the worker closed
        self._closed = False
        self._spawning: asyncio.Task[ChildProcess] | None = None

    @property
    def pid(self) -> int | None:
        """The child's, while there is one."""
        return None if self._child is None else self._child.process.pid

    @property
    def stopped(self) -> bool:
        """The child is stopped by the duty cycle."""
        return self._schedule.stopped

    async def run(self, calls: list[Call]) -> list[Outcome]:
        """Run the calls in turn; the outcomes, in order, of those that ended.

        All of them, unless the run was preempted (then those that ended before) or the
        child died (then those that ended before and a WorkerDied failure of the call it was
        running). The calls not answered did not happen, as far as the caller knows: it
        requeues them.
        """
        if self._closed:
            raise RuntimeError("this worker process is closed")
        if self._running:
            raise RuntimeError("a worker process runs one batch at a time")
        if not calls:
            return []
        self._running, self._taken_back = True, False
        try:
            while True:
                child = await self._ready()
                if child is None or self._taken_back:
                    return []
                outcomes = await self._batch(child, calls)
                if outcomes is not None:
                    return outcomes
                # It had died before the batch came (a fresh child never does that): the
                # first call is not to blame, and a fresh child runs the batch.
        finally:
            self._running = False

    async def start(self) -> None:
        """Start the child now, if there is none, so that the first job does not wait for
        an interpreter to start and import."""
        if not self._closed:
            await self._ready()

    def preempt(self) -> None:
        """Stop the running call at once: the child is killed, ``run`` returns what ended
        before, and the next ``run`` starts a fresh child."""
        if self._running:
            self._taken_back = True
            if self._child is not None:
                self._child.signal(signal.SIGKILL)

    def throttle_changed(self) -> None:
        """Apply ``throttle.value`` now (on the event loop): a raise to 1 continues a
        stopped child at once, any change replans the current window."""
        self._event(functools.partial(self._schedule.changed, self.throttle.value))

    async def close(self) -> None:
        """End the child; a run in progress returns as if preempted."""
        self._closed = True
        self.preempt()
        if self._timer is not None:
            self._timer.cancel()
        child, self._child = self._child, None
        if child is None and self._spawning is not None:
            # A start whose waiter was cancelled (the node shut down) still makes a child.
            child = await self._spawning
        if child is not None:
            await child.end()

    async def _ready(self) -> ChildProcess | None:
        """The child to run the batch: the one there is, or a fresh one (None if the worker
        was closed while it started)."""
        child = self._child
        if child is not None and child.process.returncode is not None:  # it died while idle
            self._child = None
            await child.exit_status()
        if self._child is None:
            # One spawn at a time: a start() and a run() may both be waiting for it.
            if self._spawning is None:
                self._spawning = asyncio.ensure_future(spawn(self.stderr))
            spawning = self._spawning
            try:
                child = await asyncio.shield(spawning)
            finally:
                if self._spawning is spawning and spawning.done():
                    self._spawning = None
            if self._closed:
                await child.end()
                return None
            self._child = child
        return self._child

    async def _batch(self, child: ChildProcess, calls: list[Call]) -> list[Outcome] | None:
        """The outcomes of the calls; None if the child died before it started any, and had
        been running before this batch."""
        child.begin_batch()
        self._event(self._started)  # first: a pause that is due now comes before the calls
        child.stdin.write(_request(calls))
        outcomes: list[Outcome] = []
        frames = Frames()
        try:
            while len(outcomes) < len(calls):
                chunk = await child.read()
                if not chunk:
                    lost = await self._lost(child, calls, len(outcomes))
                    return None if lost is None else outcomes + lost
                outcomes += map(self._outcome, frames.feed(chunk))
        except BaseException:  # cancelled: the child is somewhere in the batch, drop it
            child.signal(signal.SIGKILL)
            if self._child is child:
                self._child = None
            raise
        finally:
            self._event(self._schedule.ended)
        return outcomes

    def _started(self, now: float) -> None:
        if self.throttle.value != self._schedule.throttle:  # in case nobody told us
            self._schedule.changed(self.throttle.value, now)
        self._schedule.started(now)

    def _outcome(self, frame: Frame) -> Outcome:
        job, ok, start, end, body = frame
        seconds = self._schedule.active(start, end)
        if ok:
            return Outcome(job, body, None, seconds)
        return Outcome(job, None, read_failure(body), seconds)

    async def _lost(self, child: ChildProcess, calls: list[Call],
                    answered: int) -> list[Outcome] | None:
        """The pipe closed before the batch ended: the run was preempted, or the child died.
        The outcomes it had not written yet are in its outbox; the next call, if there is one,
        was running (or about to)."""
        now = time.monotonic()
        status = await child.exit_status()
        if self._child is child:
            self._child = None
        outcomes = [self._outcome(frame) for frame in child.unwritten(answered)]
        answered += len(outcomes)
        if self._taken_back or answered == len(calls):
            return outcomes
        index, start = child.running()
        if index < 0 and child.batches > 1:
            return None
        job = calls[answered].job
        failure = Failure(WORKER_DIED, f"the worker process died ({describe(status)}) "
                          f"while running job {job}", "")
        seconds = self._schedule.active(start, now) if index == answered else 0.0
        return [*outcomes, Outcome(job, None, failure, seconds)]

    def _event(self, event: Callable[[float], None]) -> None:
        now = time.monotonic()
        event(now)
        self._apply(now)

    def _apply(self, now: float) -> None:
        """Send the signal the schedule says is due, and set the timer for the next one."""
        action = self._schedule.due(now)
        if action is not None and self._child is not None:
            self._child.signal(signal.SIGSTOP if action == "stop" else signal.SIGCONT)
        if self._timer is not None:
            self._timer.cancel()
        deadline = self._schedule.next_deadline()
        self._timer = None if deadline is None else asyncio.get_running_loop().call_later(
            max(0.0, deadline - now), self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._apply(time.monotonic())
