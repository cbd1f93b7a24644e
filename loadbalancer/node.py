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
import subprocess
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from loadbalancer import adaptor, control, fields, messages
from loadbalancer.addresses import format_address
from loadbalancer.config import Config
from loadbalancer.endpoint import Endpoint, path_max_datagram, resolve
from loadbalancer.jobs import JobQueue, Queued
from loadbalancer.logs import jobs
from loadbalancer.messages import Jobs, Message, Request, WorkloadSpec
from loadbalancer.monitor import Monitor
from loadbalancer.outcome import Outcome
from loadbalancer.peerstate import PeerState
from loadbalancer.pool import Call, WorkerProcess
from loadbalancer.reliable import MessageAcked, MessageReceived
from loadbalancer.session import (
    AuthenticationFailing,
    Connection,
    Event,
    NewcomerRefused,
    PeerJoined,
    PeerLost,
    StateReceived,
)
from loadbalancer.tasks import FunctionTask, Task, Tasks
from loadbalancer.trace import Recorder
from loadbalancer.wire import Keys, Kind, Rejected, Role
from loadbalancer.worker import DutyCycle, Running, Throttle, batch_size, run_jobs

log = logging.getLogger("lb")
SAMPLE_INTERVAL = 0.2
REQUEST_TIMEOUT = 2.0
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
        self.throttle = Throttle(config.throttle)
        self.queue = JobQueue()
        self.running: dict[int, Running] = {}
        # One per worker slot, for function jobs; its process starts with its first job.
        # Under the dashboard a job's prints would tear the screen: they are dropped.
        self.processes = [WorkerProcess(self.throttle,
                                        stderr=None if ui is None else subprocess.DEVNULL)
                          for _ in range(config.workers)]
        self.monitor = Monitor(config.workers)
        self.failed_runs = 0  # jobs that raised here (each may be retried)
        self.recorder = Recorder()
        self.params = adaptor.Params()
        self.phase = "waiting"
        self.remote: PeerState | None = None
        self.peer_left = False  # the peer said goodbye after the run was over
        self.remote_at = 0.0
        self.refused = 0
        # Balancing moves each way, and the bootstrap's jobs (sent by the master, received by
        # the slave) apart from them: the same numbers on the screen, in status and summary.
        self.moved_out = self.moved_in = self.bootstrapped = 0
        self._reset_session_counters()
        self._job_bytes = 0.0
        self._ready = asyncio.Event()
        self._stopped: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(config.workers, thread_name_prefix="lb-worker")
        self.loop = asyncio.get_running_loop()
        self.connection: Connection
        self.endpoint: Endpoint

    def _reset_session_counters(self) -> None:
        # Per session, so both sides' cumulative counts start together and
        # their difference is what is in flight.
        self.sent_jobs = self.received_jobs = 0
        self.requested: tuple[int, int, float] | None = None  # (id, count, when)
        self._next_request = 1
        # What this node computed before the session: its work in the session is the rest.
        self._session_base = (self.monitor.executed, self.monitor.compute_seconds)

    def session_work(self) -> dict[str, Any]:
        """Jobs computed in this session and their compute seconds: a peer that restarts
        (or a master that resumes) counts each session's work once."""
        executed, compute = self._session_base
        return {"session_executed": self.monitor.executed - executed,
                "session_compute": self.monitor.compute_seconds - compute}

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
        self.endpoint = Endpoint(self.connection, self._on_event)
        await self.endpoint.bind(local)
        self.bound()
        self._control = await control.serve(
            control.socket_path(self.config.runtime_dir, str(self.role)), self._on_control)
        self.recorder.event("throttle", throttle=self.throttle.value, workers=self.config.workers)
        coroutines: list[Coroutine[Any, Any, None]] = [
            self._sample(), self._send_state(), self._adapt_periodically()]
        if self.ui is None:  # under systemd or --no-dashboard, the log says how far it is
            coroutines.append(self._log_progress())
        coroutines += [self._work(process) for process in self.processes]
        for coroutine in coroutines:
            self.spawn(coroutine)
        if self.tasks.catalog.modules:  # function jobs to come: their processes start now
            self.prestart()
        self.say(f"{self.role} listening on {local[0]}:{local[1]}, peer at {peer[0]}:{peer[1]}")

    def prestart(self) -> None:
        """Start the worker processes now rather than with the first job."""
        for process in self.processes:
            self.spawn(process.start())

    def bound(self) -> None:
        """The node's socket is bound: the start can no longer fail on a port in use."""

    async def shutdown(self) -> None:
        self.preempt_all(requeue=False)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(process.close() for process in self.processes))
        self.connection.say_bye()
        self.endpoint.flush()
        self.endpoint.close()
        self._control.close()
        with contextlib.suppress(FileNotFoundError):
            control.socket_path(self.config.runtime_dir, str(self.role)).unlink()
        self._executor.shutdown(wait=True, cancel_futures=True)

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
    def wake(self) -> None:
        if self.queue and self.throttle.value > 0:
            self._ready.set()
        else:
            self._ready.clear()

    async def _work(self, process: WorkerProcess) -> None:
        cycle = DutyCycle(self.throttle)  # one per worker, across jobs
        while True:
            await self._ready.wait()
            runs = self._take_batch()
            self.wake()
            if not runs:
                continue
            task = runs[0].task
            try:
                if isinstance(task, FunctionTask):
                    outcomes = await process.run([
                        Call(run.job, task.module_spec, task.ref.function, run.data)
                        for run in runs])
                else:
                    outcomes = await run_jobs(self._executor, task.workload, runs, cycle)
            finally:
                for run in runs:
                    del self.running[run.job]
            ended = {outcome.job for outcome in outcomes}
            for run in reversed(runs):
                if run.job not in ended and run.requeue:
                    self.queue.push_front(run.job, run.task, run.queued_as)
            self.wake()
            self._finished(outcomes)

    def _take_batch(self) -> list[Running]:
        """Jobs from the head of the queue for one trip to a worker: of one task, as many
        as share a trip well (see batch_size)."""
        runs: list[Running] = []
        if not self.queue or self.throttle.value == 0:
            return runs
        task = self.queue.peek()
        size = batch_size(self.monitor.job_seconds, len(self.queue))
        while self.queue and len(runs) < size and self.queue.peek() is task:
            job, _, data = self.queue.pop()
            if not self.claim(job, here=True):
                continue
            run = Running(job, task, data if data is not None else self.job_data(job),
                          queued_as=data)
            runs.append(run)
            self.running[job] = run
        return runs

    def _finished(self, outcomes: list[Outcome]) -> None:
        first = self.monitor.job_seconds is None
        for outcome in outcomes:
            if outcome.failure is None:
                self.monitor.job_done(outcome.seconds)
            else:
                self.failed_runs += 1
            self.job_finished(outcome)
        if outcomes and (first or not self.queue):
            # The peer's model needs our first measured speed, and an
            # empty queue is news that should not wait for the period.
            self._state_now()
            self.adapt()

    def claim(self, job: int, here: bool) -> bool:
        """A job leaves the queue to run here (``here``) or on the peer; False if it is not
        to run at all (the Executor's job whose future was cancelled)."""
        return True

    def job_data(self, job: int) -> bytes:
        """The input of a job queued without one (the master makes it when needed)."""
        raise NotImplementedError

    def job_finished(self, outcome: Outcome) -> None:
        raise NotImplementedError

    def preempt_all(self, requeue: bool) -> None:
        for running in self.running.values():
            running.cancelled, running.requeue = True, requeue
        for process in self.processes:
            process.preempt()

    def set_throttle(self, value: float) -> None:
        old = self.throttle.value
        self.throttle.set(value)
        for process in self.processes:
            process.throttle_changed()
        self.recorder.event("throttle", throttle=value, workers=self.config.workers)
        self.say(f"throttle {old:g} -> {value:g}")
        if value == 0:
            self.preempt_all(requeue=True)  # the drain rule hands them away
        self.wake()
        self._state_now()
        self.adapt()

    # ---- events from the connection -----------------------------------------------
    def _on_event(self, event: Event) -> None:
        match event:
            case PeerJoined():
                self._reset_session_counters()
                self.remote = None
                self.recorder.event("joined")
                self.say(f"{self.role.peer} joined")
                self.peer_joined()
                self._state_now()
            case PeerLost(reason):
                self.recorder.event("lost", reason=reason)
                # A peer that says goodbye once the run is over has left, not been lost.
                self.peer_left = reason == "bye" and self.phase == "done"
                self.say(f"{self.role.peer} left" if self.peer_left
                         else f"{self.role.peer} lost ({reason})")
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
            self.received_jobs += len(message.jobs)
            if self.requested is not None and message.request == self.requested[0]:
                self.requested = None
        elif isinstance(message, Request):
            self.send_jobs(self._grant(message.count), request=message.request,
                           reason=f"it asked for {message.count}")
            return
        self.handle(message)
        self.wake()

    def sharing(self) -> bool:
        """Whether this session moves jobs at all: the slave can run some kind of ours."""
        raise NotImplementedError

    def movable(self, task: Task) -> bool:
        """Whether jobs of ``task`` may move to the peer."""
        return True

    def _grant(self, asked: int) -> int:
        """How many of the jobs the peer asked for to send. Without the asker's
        state there is nothing to weigh, and while jobs we pushed are on their
        way the asker did not count them: an empty answer closes the request
        and it asks again later."""
        if self.remote is None:
            return 0
        snapshot = self.snapshot()
        if snapshot.in_flight_to_remote:
            return 0
        return adaptor.grant(snapshot, max(0, asked), self.params)

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
            self.recorder.event("sent", jobs=len(taken))
            why = f": {reason}" if reason else ""
            self.say(f"sent {jobs(len(taken))} to the {self.role.peer}{why}")
        return self.ship(taken, request, bootstrap)

    def ship(self, jobs: list[Queued], request: int | None = None,
             bootstrap: bool = False) -> int:
        """Send these jobs to the peer (and answer ``request``, even with none); how many."""
        jobs = [entry for entry in jobs if self.claim(entry[0], here=False)]
        if not jobs and request is None:
            return 0
        self.sent_jobs += len(jobs)
        if bootstrap:
            self.bootstrapped += len(jobs)
        else:
            self.moved_out += len(jobs)
        self.jobs_sent([job for job, _, _ in jobs], bootstrap)
        self.spawn(self._transmit(jobs, request, bootstrap))
        return len(jobs)

    async def _transmit(self, jobs: list[Queued], request: int | None,
                        bootstrap: bool) -> None:
        """Encode and send jobs a message at a time, yielding in between: the
        peer starts on the first message while the rest are made, and the
        event loop stays responsive. If the session ends meanwhile, the
        master's ledger takes the jobs back."""
        groups = [(task, list(group)) for task, group in
                  itertools.groupby(jobs, key=lambda entry: entry[1])] or [(None, [])]
        for task, group in groups:
            spec = NO_JOBS if task is None else task.spec
            data = ((job, blob if blob is not None else self.job_data(job))
                    for job, _, blob in group)
            for payload, count in messages.job_messages(spec, data, request, bootstrap):
                if self.connection.send(Kind.JOBS, payload, self.loop.time()) is None:
                    return
                if count:
                    self._job_bytes = len(payload) / count
                self.endpoint.flush()
                await asyncio.sleep(0)

    def jobs_sent(self, jobs: list[int], bootstrap: bool) -> None: ...

    # ---- state manager --------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        speed = self.monitor.speed(self.throttle.value)
        pending = len(self.queue) + len(self.running)
        eta = pending / speed if speed else (0.0 if pending == 0 else None)
        return {
            "role": str(self.role), "phase": self.phase, "queued": len(self.queue),
            "running": len(self.running), "executed": self.monitor.executed,
            "failed": self.failed_runs,
            "throttle": self.throttle.value, "workers": self.config.workers,
            "cpu": self.monitor.cpu, "speed": speed, "eta": eta,
            "job_seconds": self.monitor.job_seconds,
            "peer": "connected" if self.connection.connected else
            ("waiting" if self.remote is None else "left" if self.peer_left else "lost"),
            "moved_out": self.moved_out, "moved_in": self.moved_in,
            "bootstrap": self.bootstrapped,
            "retransmits": self.connection.retransmits, "spurious": self.connection.spurious,
            "datagram": self.connection.datagram_size,
            "datagram_steps": self.connection.datagram_steps,
            "dropped": self.connection.drops(), "suppressed": self.connection.suppressed,
            "bytes_sent": self.connection.bytes_sent, "refused": self.refused,
            "policy": self.config.policy, **self.progress(),
        }

    def progress(self) -> dict[str, Any]:
        raise NotImplementedError

    def _state_now(self) -> None:
        state = {**self.status(), "sent_jobs": self.sent_jobs,
                 "received_jobs": self.received_jobs, **self.session_work()}
        self.connection.send_state(messages.encode_state(state))
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
        self.remote_at = self.loop.time()
        self.remote_updated()
        self.adapt()

    def remote_updated(self) -> None:
        """A new state of the peer is in ``self.remote``."""

    def sample(self) -> None:
        """One trace sample (and a dashboard refresh) of the node as it is now."""
        self.monitor.sample_cpu(self.loop.time())
        status = self.status()
        self.recorder.sample(pending=status["queued"] + status["running"],
                             throttle=self.throttle.value, cpu=self.monitor.cpu,
                             done=self.monitor.executed)
        if self.ui is not None:
            self.ui.update(status, None if self.remote is None else self.remote.status)

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

    # ---- adaptor ------------------------------------------------------------------------
    def snapshot(self) -> adaptor.Snapshot:
        assert self.remote is not None
        channel = self.connection.channel
        local = adaptor.NodeView(len(self.queue), len(self.running), self.throttle.value,
                                 self.config.workers, self.monitor.job_seconds)
        link = adaptor.Link(rtt=channel.srtt or 0.001,
                            bandwidth=channel.delivery_rate or 10e6,
                            job_bytes=self._job_bytes or 1024.0)
        return adaptor.Snapshot(
            local=local, remote=self.remote.view,
            remote_age=self.loop.time() - self.remote_at + link.rtt / 2,
            in_flight_to_remote=max(0, self.sent_jobs - self.remote.received_jobs),
            in_flight_from_remote=max(0, self.remote.sent_jobs - self.received_jobs),
            requested=0 if self.requested is None else self.requested[1], link=link)

    def adapt(self) -> None:
        if self.remote is None or not self.connection.connected or self.phase != "processing" \
                or not self.sharing():
            return
        if self.requested is not None and self.loop.time() - self.requested[2] > REQUEST_TIMEOUT:
            self.requested = None
        decision = adaptor.decide(self.config.policy, self.snapshot(),  # type: ignore[arg-type]
                                  self.params)
        if decision.action == "send" and decision.count > 0:
            if self.requested is not None:
                return  # we asked for work ourselves: wait for the answer before giving any
            self.send_jobs(decision.count, reason=self._words(decision))
        elif decision.action == "request" and decision.count > 0:
            request = self._next_request
            self._next_request += 1
            self.requested = (request, decision.count, self.loop.time())
            self.send(Request(request, decision.count))
            self.say(f"asked the {self.role.peer} for {jobs(decision.count)}: "
                     f"{self._words(decision)}")
        log.debug("%s adaptor: %s", self.role, decision.reason)

    def _words(self, decision: adaptor.Decision) -> str:
        return decision.why.format(peer=self.role.peer)

    async def _adapt_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.state_interval)
            self.adapt()

    # ---- control channel ------------------------------------------------------------------
    def _on_control(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("cmd")
        if command == "status":
            return {"local": self.status(),
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
