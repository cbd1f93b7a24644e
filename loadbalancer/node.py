"""A node: the components of one role, as coroutines of one event loop.

The lifecycle is ``startup -> main loop -> shutdown`` as in uvicorn's server
(:mod:`lifecycle`); what the node reads off itself is :mod:`readings`.
The components are the worker (:mod:`worker`), the hardware monitor
(:mod:`monitor`), the state manager (periodic STATE, which is also the
heartbeat), the transfer manager (JOBS, RESULTS, REQUEST over the reliable
channel) and the adaptor (:mod:`adaptor`). What differs between master and
slave lives in :mod:`master` and :mod:`slave`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from array import array
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from loadbalancer import messages, progress, readings
from loadbalancer.balancer import JobsFinished, Local, Phase, Stimulus, ThrottleChanged
from loadbalancer.config import Config
from loadbalancer.endpoint import Endpoint
from loadbalancer.lifecycle import Lifecycle
from loadbalancer.messages import Message
from loadbalancer.outcome import Outcome
from loadbalancer.peering import Peering
from loadbalancer.peerstate import PeerState
from loadbalancer.runner import Runner
from loadbalancer.session import Connection
from loadbalancer.shipping import Shipper
from loadbalancer.status import Status
from loadbalancer.tasks import Task, Tasks
from loadbalancer.trace import Recorder
from loadbalancer.wire import Role

log = logging.getLogger("lb")


class Node:
    role: Role

    def __init__(self, config: Config, *, tasks: Tasks, trace_path: Path | None = None,
                 result_path: Path | None = None, ui: Any = None) -> None:
        self.config = config
        self.trace_path = trace_path
        self.result_path = result_path
        self.ui = ui
        self.tasks = tasks
        self.runner = Runner(self, config.workers, config.throttle, quiet=ui is not None)
        self.queue, self.running = self.runner.queue, self.runner.running
        self.monitor, self.throttle = self.runner.monitor, self.runner.throttle
        self.recorder = Recorder()
        # When a job last left a worker here (ended, or stopped because the other execution
        # won): the end of this node's part of the run, for the tail.
        self.last_done: float | None = None
        self.phase = Phase.WAITING
        self.remote: PeerState | None = None
        self.peer_left = False  # the peer said goodbye after the run was over
        self.refused = 0
        # Balancing moves each way, and the bootstrap's jobs (sent by the master, received by
        # the slave) apart from them: the same numbers on the screen, in status and summary.
        self.moved_out = self.moved_in = self.bootstrapped = 0
        self.session_began()
        self.shipper = Shipper(self)
        self.peering = Peering(self, config.policy)
        self.lifecycle = Lifecycle(self)
        self.loop = asyncio.get_running_loop()
        self.connection: Connection
        self.endpoint: Endpoint

    def session_began(self) -> None:
        # What this node computed before the session: its work in the session is the rest.
        self._session_base = (self.monitor.executed, self.monitor.compute_seconds)

    def session_work(self) -> tuple[int, float]:
        """Jobs computed in this session and their compute seconds: a peer that restarts
        (or a master that resumes) counts each session's work once."""
        executed, compute = self._session_base
        return self.monitor.executed - executed, self.monitor.compute_seconds - compute

    # ---- lifecycle ---------------------------------------------------------------
    async def run(self) -> int:
        await self.startup()
        return await self.serve()

    async def serve(self) -> int:
        """After startup: until the node stops; its exit code."""
        try:
            return await self.lifecycle.stopped
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        await self.lifecycle.startup()

    def prestart(self) -> None:
        """Start the worker processes now rather than with the first job."""
        for process in self.runner.processes:
            self.spawn(process.start())

    def bound(self) -> None:
        """The node's socket is bound: the start can no longer fail on a port in use."""

    async def shutdown(self) -> None:
        await self.lifecycle.shutdown()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine as part of this node: cancelled when the node shuts down."""
        self.lifecycle.spawn(coroutine)

    def stop(self, code: int) -> None:
        self.lifecycle.stop(code)

    def say(self, text: str) -> None:
        if self.ui is not None:
            self.ui.message(text, time.time())
        else:
            log.info("%s: %s", self.role, text)

    # ---- worker ------------------------------------------------------------------
    @property
    def failed_runs(self) -> int:
        return self.runner.failed_runs

    def wake(self) -> None:
        self.runner.wake()

    def jobs_done(self, outcomes: list[Outcome], first: bool) -> None:
        if outcomes:
            self.last_done = time.time()
        for outcome in outcomes:
            self.job_finished(outcome)
        if outcomes:
            self.balance(JobsFinished(first))

    def claim(self, job: int, here: bool) -> bool:
        """A job leaves the queue to run here (``here``) or on the peer; False if it is not
        to run at all (the Executor's job whose future was cancelled)."""
        return True

    def job_data(self, job: int) -> bytes:
        """The input of a job queued without one (the master makes it when needed)."""
        raise NotImplementedError

    def job_finished(self, outcome: Outcome) -> None:
        raise NotImplementedError

    def stop_run(self, job: int) -> None:
        if job in self.running:  # its worker is free from now
            self.last_done = time.time()
        self.runner.stop_run(job)

    def preempt_all(self, requeue: bool) -> None:
        self.runner.preempt_all(requeue)

    def set_throttle(self, value: float) -> None:
        old = self.throttle.value
        self.runner.set_throttle(value)
        self.recorder.event("throttle", throttle=value, workers=self.config.workers)
        self.say(f"throttle {old:g} -> {value:g}")
        self.balance(ThrottleChanged(value))

    # ---- hooks of the session --------------------------------------------------------
    def sharing(self) -> bool:
        """Whether this session moves jobs at all: the slave can run some kind of ours."""
        raise NotImplementedError

    def movable(self, task: Task) -> bool:
        """Whether jobs of ``task`` may move to the peer."""
        return True

    def handle(self, message: Message) -> None:
        raise NotImplementedError

    def peer_joined(self) -> None: ...

    def peer_lost(self, reason: str) -> None: ...

    def message_acked(self, message_id: int) -> None: ...

    # ---- transfers -----------------------------------------------------------------
    def send(self, message: Message) -> int | None:
        kind, payload = messages.encode(message)
        message_id = self.connection.send(kind, payload, self.loop.time())
        self.endpoint.flush()
        return message_id

    def jobs_sent(self, jobs: array[int], bootstrap: bool) -> None: ...

    # ---- state manager --------------------------------------------------------------
    def status(self) -> Status:
        return readings.status(self)

    def progress(self) -> tuple[int | None, int | None]:
        """The status's (total, finished)."""
        raise NotImplementedError

    def remote_updated(self) -> None:
        """A new state of the peer is in ``self.remote``."""

    def sample(self) -> None:
        """One trace sample (and a dashboard refresh) of the node as it is now."""
        readings.sample(self)

    def progress_count(self) -> int:
        """Jobs done so far, as the progress line counts them."""
        return self.monitor.executed

    def progress_line(self, rate: float) -> str:
        return progress.node_line(self.monitor.executed, len(self.queue), len(self.running),
                                  rate)

    # ---- balancer ------------------------------------------------------------------------
    def local(self) -> Local:
        """This node as the balancer weighs it now."""
        return readings.local(self)

    def copying(self) -> int | None:
        """Copies of the peer's jobs under way here; None if this node makes none."""
        return None

    def run_copies(self, count: int, why: str) -> None:
        """Queue copies of ``count`` of the jobs the peer is running."""

    def balance(self, stimulus: Stimulus) -> None:
        """Tell the balancer what happened and carry out what it says."""
        self.peering.balance(stimulus)
