"""A node: the components of one role, as coroutines of one event loop.

The lifecycle is ``startup -> main loop -> shutdown`` as in uvicorn's server.
The components are the worker (:mod:`worker`), the hardware monitor
(:mod:`monitor`), the state manager (periodic STATE, which is also the
heartbeat), the transfer manager (JOBS, RESULTS, REQUEST over the reliable
channel) and the adaptor (:mod:`adaptor`). What differs between master and
slave lives in :mod:`master` and :mod:`slave`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from array import array
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from loadbalancer import adaptor, commands, control, messages, progress
from loadbalancer.addresses import Address
from loadbalancer.balancer import JobsFinished, Local, Phase, Stimulus, ThrottleChanged, Tick
from loadbalancer.config import Config
from loadbalancer.endpoint import Endpoint, path_max_datagram, resolve
from loadbalancer.messages import Message
from loadbalancer.outcome import Outcome
from loadbalancer.peering import Peering
from loadbalancer.peerstate import PeerState
from loadbalancer.runner import Runner
from loadbalancer.session import Connection, Event
from loadbalancer.shipping import Shipper
from loadbalancer.status import Status
from loadbalancer.tasks import Task, Tasks
from loadbalancer.trace import Recorder
from loadbalancer.wire import Keys, Role

log = logging.getLogger("lb")
SAMPLE_INTERVAL = 0.2


def new_incarnation() -> int:
    # Wall-clock milliseconds, so every later start has a larger one, and 20 random
    # bits below them: each incarnation has its own authentication key (see wire), and
    # the random bits keep an old key from coming back if the clock is stepped back.
    return (time.time_ns() // 1_000_000) << 20 | secrets.randbits(20)


def connect(config: Config, role: Role, peer: Address,
            on_event: Callable[[Event], None], now: float) -> tuple[Connection, Endpoint]:
    """The session with the peer at ``peer`` and the endpoint that carries it."""
    max_datagram = config.max_datagram or path_max_datagram(peer)
    log.debug("datagrams of up to %d bytes", max_datagram)
    connection = Connection(role, Keys(config.secret), peer_address=peer,
                            new_incarnation=new_incarnation, now=now,
                            max_datagram=max_datagram,
                            heartbeat_timeout=config.heartbeat_timeout)
    return connection, Endpoint(connection, on_event, offload=config.offload)


async def every(interval: float, action: Callable[[], None], *, at_once: bool = True) -> None:
    """Call ``action`` every ``interval`` seconds (the first time at once, or after one
    interval), for as long as the task runs."""
    if not at_once:
        await asyncio.sleep(interval)
    while True:
        action()
        await asyncio.sleep(interval)


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
        self._stopped: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
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
            return await self._stopped
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        local = await resolve(self.config.address(self.role))
        peer = await resolve(self.config.address(self.role.peer))
        self.connection, self.endpoint = connect(self.config, self.role, peer,
                                                 self.peering.on_event, self.loop.time())
        await self.endpoint.bind(local)
        self.bound()
        self._control = await control.serve(
            control.socket_path(self.config.runtime_dir, str(self.role)),
            functools.partial(commands.answer, self))
        self.recorder.event("throttle", throttle=self.throttle.value, workers=self.config.workers)
        interval = self.config.state_interval
        coroutines: list[Coroutine[Any, Any, None]] = [
            every(SAMPLE_INTERVAL, self.sample), every(interval, self._state_now),
            every(interval, lambda: self.balance(Tick()), at_once=False)]
        if self.ui is None:  # under systemd or --no-dashboard, the log says how far it is
            coroutines.append(progress.report(self.config.progress_interval,
                                              self.progress_count, self.progress_line,
                                              self.say))
        coroutines += [self.runner.work(process) for process in self.runner.processes]
        for coroutine in coroutines:
            self.spawn(coroutine)
        if self.tasks.catalog.modules:  # function jobs to come: their processes start now
            self.prestart()
        self.say(f"{self.role} listening on {local[0]}:{local[1]}, peer at {peer[0]}:{peer[1]}")

    def prestart(self) -> None:
        """Start the worker processes now rather than with the first job."""
        for process in self.runner.processes:
            self.spawn(process.start())

    def bound(self) -> None:
        """The node's socket is bound: the start can no longer fail on a port in use."""

    async def shutdown(self) -> None:
        self.runner.preempt_all(requeue=False)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.runner.close()
        self.connection.say_bye()
        self.endpoint.flush()
        self.endpoint.close()
        self._control.close()
        with contextlib.suppress(FileNotFoundError):
            control.socket_path(self.config.runtime_dir, str(self.role)).unlink()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine as part of this node: cancelled when the node shuts down."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self, code: int) -> None:
        if not self._stopped.done():
            self._stopped.set_result(code)

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
        speed = self.monitor.speed(self.throttle.value)
        pending = len(self.queue) + len(self.running)
        eta = pending / speed if speed else (0.0 if pending == 0 else None)
        connection = self.connection
        total, finished = self.progress()
        return Status(
            role=str(self.role), phase=self.phase, queued=len(self.queue),
            running=len(self.running), running_elapsed=self.runner.running_elapsed(),
            executed=self.monitor.executed,
            failed=self.failed_runs, throttle=self.throttle.value,
            workers=self.config.workers, cpu=self.monitor.cpu, speed=speed, eta=eta,
            job_seconds=self.monitor.job_seconds, job_error=self.monitor.job_times.error,
            peer="connected" if connection.connected else
            ("waiting" if self.remote is None else "left" if self.peer_left else "lost"),
            moved_out=self.moved_out, moved_in=self.moved_in, bootstrap=self.bootstrapped,
            retransmits=connection.retransmits, spurious=connection.spurious,
            datagram=connection.datagram_size,
            datagram_steps=connection.datagram_steps, dropped=connection.drops(),
            suppressed=connection.suppressed, bytes_sent=connection.bytes_sent,
            refused=self.refused, policy=self.config.policy, total=total, finished=finished)

    def progress(self) -> tuple[int | None, int | None]:
        """The status's (total, finished)."""
        raise NotImplementedError

    def _state_now(self) -> None:
        self.peering.send_state()

    def remote_updated(self) -> None:
        """A new state of the peer is in ``self.remote``."""

    def sample(self) -> None:
        """One trace sample (and a dashboard refresh) of the node as it is now."""
        self.monitor.sample_cpu(self.loop.time())
        status = self.status()
        self.recorder.sample(pending=status.queued + status.running,
                             throttle=self.throttle.value, cpu=self.monitor.cpu,
                             done=self.monitor.executed)
        if self.ui is not None:
            self.ui.update(status.as_dict(),
                           None if self.remote is None else self.remote.status)

    def progress_count(self) -> int:
        """Jobs done so far, as the progress line counts them."""
        return self.monitor.executed

    def progress_line(self, rate: float) -> str:
        return progress.node_line(self.monitor.executed, len(self.queue), len(self.running),
                                  rate)

    # ---- balancer ------------------------------------------------------------------------
    def local(self) -> Local:
        """This node as the balancer weighs it now."""
        channel = self.connection.channel
        view = adaptor.NodeView(len(self.queue), len(self.running), self.throttle.value,
                                self.config.workers, self.monitor.job_seconds,
                                self.monitor.job_times.error, self.runner.running_elapsed())
        link = adaptor.Link(rtt=channel.srtt or 0.001,
                            bandwidth=channel.delivery_rate or 10e6,
                            job_bytes=self.shipper.job_bytes or 1024.0)
        return Local(view, link, self.phase == Phase.PROCESSING and self.sharing(),
                     self.copying())

    def copying(self) -> int | None:
        """Copies of the peer's jobs under way here; None if this node makes none."""
        return None

    def run_copies(self, count: int, why: str) -> None:
        """Queue copies of ``count`` of the jobs the peer is running."""

    def balance(self, stimulus: Stimulus) -> None:
        """Tell the balancer what happened and carry out what it says."""
        self.peering.balance(stimulus)
