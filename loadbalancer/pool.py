"""Worker processes: each worker slot runs its function jobs in a child process of its own.

Processes, not threads: a user's pure-Python function holds the GIL and never calls a
checkpoint, so in threads such jobs neither run in parallel nor pause for the throttle. In
processes N workers use N cores, and the parent stops, continues and kills a child without
its cooperation. The child is :mod:`loadbalancer.jobworker`; its module docstring describes
the frames on the pipes, which it moves to fds of its own so that nothing user code prints
can corrupt them.

The throttle is a duty cycle that the parent imposes with SIGSTOP and SIGCONT: at throttle t
a child that has a call running computes t x 100 ms, is stopped for the rest of the window,
and so on. The signals need nothing from the job and cost nothing while it runs; they go to
the child's process group, so that a job's own subprocesses are throttled (and killed) too.
:class:`PauseSchedule` decides when, a pure function of the instants it is told about, driven
here by one timer and tested exactly with a fake clock. As in the thread worker's DutyCycle,
only time with a call running counts (an idle child is never stopped), each pause is in
proportion to the compute actually done and a pause that ended late or early is made up in
the next window (timers do not skew the duty cycle), and a partial window carries over to
the next batch (jobs shorter than the window are throttled too).

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
import json
import math
import mmap
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Literal

from loadbalancer.jobworker import (
    BATCH,
    CALL,
    ENV,
    FRAMES,
    OUTBOX,
    OUTCOME,
    PAGE_SIZE,
    RUNNING,
    read_failure,
)
from loadbalancer.outcome import Failure, Outcome
from loadbalancer.worker import WINDOW, Throttle

Action = Literal["stop", "continue"]
Frame = tuple[int, bool, float, float, bytes]  # job, ok, start, end, body
WORKER_DIED = "WorkerDied"
READ_CHUNK = 1 << 20  # bytes of outcome frames taken from the pipe at a time, at most
EXIT_GRACE = 1.0  # seconds a child that closed its outcome pipe gets to exit before the kill
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


@dataclass(frozen=True, slots=True)
class Call:
    """One function job for a worker process."""

    job: int
    spec: str  # the module as the operator named it (already checked by the caller)
    function: str
    args: bytes  # codec.encode_call's


def _request(calls: list[Call]) -> bytes:
    parts = [BATCH.pack(len(calls))]
    for call in calls:
        spec, function = call.spec.encode(), call.function.encode()
        parts += (CALL.pack(call.job, len(spec), len(function), len(call.args)),
                  spec, function, call.args)
    return b"".join(parts)


class _Frames:
    """Outcome frames out of the child's byte stream, as the chunks come."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        frames: list[Frame] = []
        position = 0
        with memoryview(self._buffer) as view:
            while len(view) - position >= OUTCOME.size:
                job, ok, start, end, size = OUTCOME.unpack_from(view, position)
                body = position + OUTCOME.size
                if body + size > len(view):
                    break
                frames.append((job, ok, start, end, bytes(view[body:body + size])))
                position = body + size
        del self._buffer[:position]
        return frames


@dataclass(slots=True)
class _Child:
    process: asyncio.subprocess.Process
    stdin: asyncio.StreamWriter
    stdout: asyncio.StreamReader
    page: mmap.mmap  # shared: the call running, the outcomes not written yet
    batches: int = 0  # sent to it so far

    def signal(self, number: int) -> None:
        """Signal the child's process group, so that a job's own subprocesses stop and die
        with it. By pid rather than Popen.send_signal, which polls and so may reap a dead
        child behind the back of asyncio's child watcher (that then reports status 255)."""
        if self.process.returncode is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, number)

    async def exit_status(self) -> int:
        """Its exit status once it is gone; one that closed its pipe but lives on is killed."""
        try:
            status = await asyncio.wait_for(asyncio.shield(self.process.wait()), EXIT_GRACE)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            status = await self.process.wait()
        return status

    def unwritten(self, answered: int) -> list[Frame]:
        """The outbox's frames of the calls after the first ``answered``: read it once the
        child is gone (it may have died while writing some of them)."""
        first, length = OUTBOX.unpack_from(self.page, RUNNING.size)
        return _Frames().feed(self.page[FRAMES:FRAMES + length])[max(0, answered - first):]

    async def end(self) -> None:
        self.signal(signal.SIGKILL)
        await self.exit_status()


async def _spawn(stderr: int | None) -> _Child:
    with tempfile.TemporaryFile() as file:
        file.truncate(PAGE_SIZE)
        setup = {"path": sys.path, "parent": os.getpid(), "page": file.fileno()}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadbalancer.jobworker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env={**os.environ, ENV: json.dumps(setup)}, pass_fds=(file.fileno(),),
            start_new_session=True, limit=READ_CHUNK)
        page = mmap.mmap(file.fileno(), PAGE_SIZE)
    assert process.stdin is not None and process.stdout is not None
    return _Child(process, process.stdin, process.stdout, page)


def _describe(status: int) -> str:
    if status >= 0:
        return f"exit status {status}"
    try:
        return signal.Signals(-status).name
    except ValueError:
        return f"signal {-status}"


class WorkerProcess:
    """One child process that runs function jobs, throttled from outside."""

    def __init__(self, throttle: Throttle, *, stderr: int | None = None,
                 window: float = WINDOW) -> None:
        self.throttle = throttle
        self.stderr = stderr  # the child's stderr, where user code prints; None: ours
        self._schedule = PauseSchedule(throttle.value, window)
        self._child: _Child | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._taken_back = False  # the current run was preempted, or the worker closed
        self._closed = False
        self._spawning: asyncio.Task[_Child] | None = None

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

    async def _ready(self) -> _Child | None:
        """The child to run the batch: the one there is, or a fresh one (None if the worker
        was closed while it started)."""
        child = self._child
        if child is not None and child.process.returncode is not None:  # it died while idle
            self._child = None
            await child.exit_status()
        if self._child is None:
            # One spawn at a time: a start() and a run() may both be waiting for it.
            if self._spawning is None:
                self._spawning = asyncio.ensure_future(_spawn(self.stderr))
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

    async def _batch(self, child: _Child, calls: list[Call]) -> list[Outcome] | None:
        """The outcomes of the calls; None if the child died before it started any, and had
        been running before this batch."""
        child.batches += 1
        RUNNING.pack_into(child.page, 0, -1, 0.0)
        OUTBOX.pack_into(child.page, RUNNING.size, 0, 0)
        self._event(self._started)  # first: a pause that is due now comes before the calls
        child.stdin.write(_request(calls))
        outcomes: list[Outcome] = []
        frames = _Frames()
        try:
            while len(outcomes) < len(calls):
                chunk = await child.stdout.read(READ_CHUNK)
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

    async def _lost(self, child: _Child, calls: list[Call],
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
        index, start = RUNNING.unpack_from(child.page)
        if index < 0 and child.batches > 1:
            return None
        job = calls[answered].job
        failure = Failure(WORKER_DIED, f"the worker process died ({_describe(status)}) "
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
