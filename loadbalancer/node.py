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
import itertools
import logging
import secrets
import time
from array import array
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from loadbalancer import adaptor, balancer, control, fields, messages
from loadbalancer.addresses import format_address
from loadbalancer.balancer import (
    Balancer,
    Instruction,
    JobsFinished,
    JobsReceived,
    JobsSent,
    Local,
    Phase,
    RequestReceived,
    RunCopies,
    SendJobs,
    SendRequest,
    SendState,
    Stimulus,
    ThrottleChanged,
    Tick,
)
from loadbalancer.config import Config
from loadbalancer.endpoint import Endpoint, path_max_datagram, resolve
from loadbalancer.jobs import Parcel
from loadbalancer.logs import jobs
from loadbalancer.messages import Jobs, Message, Request, WorkloadSpec
from loadbalancer.outcome import Outcome
from loadbalancer.peerstate import PeerState
from loadbalancer.reliable import MessageAcked, MessageReceived
from loadbalancer.runner import Runner
from loadbalancer.session import (
    AuthenticationFailing,
    Connection,
    Event,
    NewcomerRefused,
    PeerJoined,
    PeerLost,
    StateReceived,
)
from loadbalancer.status import Status
from loadbalancer.tasks import Task, Tasks
from loadbalancer.trace import Recorder
from loadbalancer.wire import Keys, Kind, Rejected, Role

log = logging.getLogger("lb")
SAMPLE_INTERVAL = 0.2
NO_JOBS = WorkloadSpec("", {})  # the spec of a JOBS message that carries none (an answer)


def new_incarnation() -> int:
    # Wall-clock milliseconds, so every later start has a larger one, and 20 random
    # bits below them: each incarnation has its own authentication key (see wire), and
    # the random bits keep an old key from coming back if the clock is stepped back.
    return (time.time_ns() // 1_000_000) << 20 | secrets.randbits(20)


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
        self.balancer = Balancer(config.policy)  # type: ignore[arg-type]
        self.phase = Phase.WAITING
        self.remote: PeerState | None = None
        self.peer_left = False  # the peer said goodbye after the run was over
        self.refused = 0
        # Balancing moves each way, and the bootstrap's jobs (sent by the master, received by
        # the slave) apart from them: the same numbers on the screen, in status and summary.
        self.moved_out = self.moved_in = self.bootstrapped = 0
        self._reset_session_counters()
        self._job_bytes = 0.0
        self._stopped: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self.loop = asyncio.get_running_loop()
        self.connection: Connection
        self.endpoint: Endpoint

    def _reset_session_counters(self) -> None:
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
        max_datagram = self.config.max_datagram or path_max_datagram(peer)
        log.debug("datagrams of up to %d bytes", max_datagram)
        self.connection = Connection(self.role, Keys(self.config.secret),
                                     peer_address=peer, new_incarnation=new_incarnation,
                                     now=self.loop.time(), max_datagram=max_datagram,
                                     heartbeat_timeout=self.config.heartbeat_timeout)
        self.endpoint = Endpoint(self.connection, self._on_event, offload=self.config.offload)
        await self.endpoint.bind(local)
        self.bound()
        self._control = await control.serve(
            control.socket_path(self.config.runtime_dir, str(self.role)), self._on_control)
        self.recorder.event("throttle", throttle=self.throttle.value, workers=self.config.workers)
        coroutines: list[Coroutine[Any, Any, None]] = [
            self._sample(), self._send_state(), self._adapt_periodically()]
        if self.ui is None:  # under systemd or --no-dashboard, the log says how far it is
            coroutines.append(self._log_progress())
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

    # ---- events from the connection -----------------------------------------------
    def _on_event(self, event: Event) -> None:
        match event:
            case PeerJoined():
                self._reset_session_counters()
                self.remote = None
                # The balancer's counters start over before the bootstrap counts in them.
                instructions = self.balancer.handle(balancer.PeerJoined(), self.local(),
                                                    self.loop.time())
                self.recorder.event("joined")
                self.say(f"{self.role.peer} joined")
                self.peer_joined()
                self._carry_out(instructions)
            case PeerLost(reason):
                self.recorder.event("lost", reason=reason)
                # A peer that says goodbye once the run is over has left, not been lost.
                self.peer_left = reason == "bye" and self.phase == Phase.DONE
                self.say(f"{self.role.peer} left" if self.peer_left
                         else f"{self.role.peer} lost ({reason})")
                self.balance(balancer.PeerLost())
                self.peer_lost(reason)
            case NewcomerRefused(address):
                self.say(f"another {self.role.peer} at {format_address(address)} asked to join "
                         f"while this one is connected: refused (two {self.role.peer}s with "
                         "one config?)")
            case AuthenticationFailing(address):
                self.say(f"datagrams from {format_address(address)} fail authentication: do "
                         "both nodes use the same secret?")
            case StateReceived(body):
                self._on_state(body)
            case MessageReceived(_, kind, payload):
                self._on_message(Kind(kind), payload)
            case MessageAcked(message_id):
                self.message_acked(message_id)

    def _on_message(self, kind: Kind, payload: bytes) -> None:
        try:
            message = messages.decode(kind, payload)
        except Rejected as error:
            self.connection.dropped[error.reason] += 1
            return
        if isinstance(message, Jobs):
            self.balance(JobsReceived(len(message.jobs), message.request))
        elif isinstance(message, Request):
            self.balance(RequestReceived(message.request, message.count))
            return
        self.handle(message)
        self.wake()

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

    def send_jobs(self, count: int, *, request: int | None = None, reason: str = "",
                  bootstrap: bool = False) -> int:
        """Move up to ``count`` jobs from the tail of the queue to the peer."""
        if not self.connection.connected:
            return 0
        taken = self.queue.take_tail(count, self.movable)
        self.wake()
        if taken:
            moving = sum(len(parcel.jobs) for parcel in taken)
            self.recorder.event("sent", jobs=moving)
            why = f": {reason}" if reason else ""
            self.say(f"sent {jobs(moving)} to the {self.role.peer}{why}")
        return self.ship(taken, request, bootstrap)

    def ship(self, parcels: list[Parcel], request: int | None = None,
             bootstrap: bool = False) -> int:
        """Send these jobs to the peer (and answer ``request``, even with none); how many."""
        parcels = [claimed for claimed in (self._claimed(parcel) for parcel in parcels)
                   if claimed.jobs]
        if not parcels and request is None:
            return 0
        count = sum(len(parcel.jobs) for parcel in parcels)
        self.balance(JobsSent(count))
        if bootstrap:
            self.bootstrapped += count
        else:
            self.moved_out += count
        self.jobs_sent(array("q", itertools.chain.from_iterable(
            parcel.jobs for parcel in parcels)), bootstrap)
        self.spawn(self._transmit(parcels, request, bootstrap))
        return count

    def _claimed(self, parcel: Parcel) -> Parcel:
        jobs = array("q", (job for job in parcel.jobs if self.claim(job, here=False)))
        return parcel if len(jobs) == len(parcel.jobs) else Parcel(parcel.task, jobs,
                                                                   parcel.data)

    async def _transmit(self, parcels: list[Parcel], request: int | None,
                        bootstrap: bool) -> None:
        """Encode and send jobs a message at a time, yielding in between: the
        peer starts on the first message while the rest are made, and the
        event loop stays responsive. If the session ends meanwhile, the
        master's ledger takes the jobs back."""
        sending: list[Parcel | None] = [*parcels] or [None]  # None: an empty answer
        for parcel in sending:
            spec = NO_JOBS if parcel is None else parcel.task.spec
            data = () if parcel is None else (
                (job, held if (held := parcel.input(job)) is not None else self.job_data(job))
                for job in parcel.jobs)
            for payload, count in messages.job_messages(spec, data, request, bootstrap):
                if self.connection.send(Kind.JOBS, payload, self.loop.time()) is None:
                    return
                if count:
                    self._job_bytes = len(payload) / count
                self.endpoint.flush()
                await asyncio.sleep(0)

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
        executed, compute = self.session_work()
        self.connection.send_state(messages.encode_state(
            self.status(), sent_jobs=self.balancer.sent_jobs,
            received_jobs=self.balancer.received_jobs, session_executed=executed,
            session_compute=compute))
        self.endpoint.flush()

    async def _send_state(self) -> None:
        while True:
            self._state_now()
            await asyncio.sleep(self.config.state_interval)

    def _on_state(self, body: bytes) -> None:
        try:
            self.remote = PeerState.parse(messages.decode_state(body))
        except Rejected as error:
            self.connection.dropped[error.reason] += 1
            return
        self.remote_updated()
        self.balance(balancer.StateReceived(self.remote))

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

    async def _log_progress(self) -> None:
        interval = self.config.progress_interval
        done = self.progress_count()
        while True:
            await asyncio.sleep(interval)
            now = self.progress_count()
            self.say(self.progress_line((now - done) / interval))
            done = now

    def progress_count(self) -> int:
        """Jobs done so far, as the progress line counts them."""
        return self.monitor.executed

    def progress_line(self, rate: float) -> str:
        return (f"progress: {self.monitor.executed} jobs done here ({rate:.1f}/s), "
                f"{len(self.queue)} queued, {len(self.running)} running")

    async def _sample(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL)

    # ---- balancer ------------------------------------------------------------------------
    def local(self) -> Local:
        """This node as the balancer weighs it now."""
        channel = self.connection.channel
        view = adaptor.NodeView(len(self.queue), len(self.running), self.throttle.value,
                                self.config.workers, self.monitor.job_seconds,
                                self.monitor.job_times.error, self.runner.running_elapsed())
        link = adaptor.Link(rtt=channel.srtt or 0.001,
                            bandwidth=channel.delivery_rate or 10e6,
                            job_bytes=self._job_bytes or 1024.0)
        return Local(view, link, self.phase == Phase.PROCESSING and self.sharing(),
                     self.copying())

    def copying(self) -> int | None:
        """Copies of the peer's jobs under way here; None if this node makes none."""
        return None

    def run_copies(self, count: int, why: str) -> None:
        """Queue copies of ``count`` of the jobs the peer is running."""

    def balance(self, stimulus: Stimulus) -> None:
        """Tell the balancer what happened and carry out what it says."""
        decided = self.balancer.last_decision
        self._carry_out(self.balancer.handle(stimulus, self.local(), self.loop.time()))
        decision = self.balancer.last_decision
        if decision is not None and decision is not decided:
            log.debug("%s adaptor: %s", self.role, decision.reason)

    def _carry_out(self, instructions: list[Instruction]) -> None:
        for instruction in instructions:
            match instruction:
                case SendState():
                    self._state_now()
                case SendJobs(count, why, request):
                    self.send_jobs(count, request=request, reason=self._words(why))
                case SendRequest(request, count, why):
                    self.send(Request(request, count))
                    self.say(f"asked the {self.role.peer} for {jobs(count)}: "
                             f"{self._words(why)}")
                case RunCopies(count, why):
                    self.run_copies(count, self._words(why))

    def _words(self, why: str) -> str:
        return why.format(peer=self.role.peer)

    async def _adapt_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.state_interval)
            self.balance(Tick())

    # ---- control channel ------------------------------------------------------------------
    def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("cmd")
        if command == "status":
            return {"local": self.status().as_dict(),
                    "remote": None if self.remote is None else self.remote.status}
        if command == "throttle":
            value = request.get("value")
            if not fields.finite(value):
                return {"error": f"throttle must be a number, not {value!r}"}
            if not fields.number(value, 0, 1):
                return {"error": f"throttle must be between 0 and 1, not {value}"}
            self.set_throttle(float(value))
            return {"throttle": self.throttle.value}
        return {"error": f"unknown command {command!r}"}
