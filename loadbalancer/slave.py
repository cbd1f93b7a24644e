"""The slave: runs what the master hands it and delivers every result.

A result stays held until the master acknowledges the message carrying it;
results not acknowledged when a session ends are sent again in the next one,
and the master counts each job once however often its result arrives. When a
session ends the slave drops its queue: the master takes those jobs back.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from loadbalancer.balancer import Phase, Tick
from loadbalancer.exits import EXIT_FAILURE
from loadbalancer.messages import (
    MESSAGE_BYTES,
    MESSAGE_JOBS,
    Cancel,
    Finish,
    Jobs,
    Message,
    Needs,
    Refuse,
    Results,
    Trace,
    Verdict,
    WorkloadSpec,
)
from loadbalancer.node import Node
from loadbalancer.outcome import Outcome
from loadbalancer.tasks import TaskError, describe
from loadbalancer.wire import Role
from loadbalancer.workload import WorkloadError

RESULT_DELAY = 0.02  # gather results this long, so a burst of small jobs shares a message
LEAVE_TIMEOUT = 5.0


class Slave(Node):
    role = Role.SLAVE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: dict[int, Outcome] = {}  # outcomes the master has not acknowledged
        self.unsent: collections.deque[int] = collections.deque()
        self.in_flight: dict[int, list[int]] = {}  # message id -> jobs whose results it carries
        self.delivered = 0
        self.able = False  # this session's master asked for something we can run
        self._said: set[str] = set()  # what we could not run, said once a session
        self._alone_since: float | None = None  # no master since then
        self._flush_handle: asyncio.TimerHandle | None = None
        self._trace_message: int | None = None
        self._trace_acked = asyncio.Event()

    def progress(self) -> tuple[int | None, int | None]:
        return None, self.delivered

    async def startup(self) -> None:
        await super().startup()
        self._alone_since = self.loop.time()
        self.spawn(self._give_up_alone())

    async def _give_up_alone(self) -> None:
        """A master that never comes (or never comes back) ends the slave, in words, after
        master_timeout, rather than leaving it waiting for ever."""
        limit = self.config.master_timeout
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            if self._alone_since is not None and self.loop.time() - self._alone_since > limit:
                self.say(f"no master for {limit:g}s (is it running, with this config's "
                         "secret and address, and no other slave?): giving up")
                self.stop(EXIT_FAILURE)
                return

    def peer_joined(self) -> None:
        self._alone_since = None
        self.phase = Phase.PROCESSING
        self.able = False
        self._said.clear()
        self.unsent = collections.deque(self.held)
        self._flush_results()

    def sharing(self) -> bool:
        return self.able

    def peer_lost(self, reason: str) -> None:
        self._alone_since = self.loop.time()
        if self.phase == Phase.DONE:
            # The master leaves only once it holds our trace or has given up on it.
            self._trace_acked.set()
            return
        self.phase = Phase.WAITING
        self.queue.clear()
        self.preempt_all(requeue=False)
        self.in_flight.clear()
        self.wake()

    def job_finished(self, outcome: Outcome) -> None:
        self.held[outcome.job] = outcome
        self.unsent.append(outcome.job)
        if _size(outcome) * len(self.unsent) >= MESSAGE_BYTES or \
                len(self.unsent) >= MESSAGE_JOBS:
            self._flush_results()  # a full message's worth: no reason to wait
        elif self._flush_handle is None:
            self._flush_handle = self.loop.call_later(RESULT_DELAY, self._flush_results)

    def _flush_results(self) -> None:
        self._flush_handle = None
        if not self.connection.connected:
            return
        while self.unsent:
            batch: list[int] = []
            size = 0
            while self.unsent and len(batch) < MESSAGE_JOBS and (
                    not batch or size + _size(self.held[self.unsent[0]]) <= MESSAGE_BYTES):
                job = self.unsent.popleft()
                batch.append(job)
                size += _size(self.held[job])
            outcomes = [self.held[job] for job in batch]
            message_id = self.send(Results(
                [(o.job, o.result) for o in outcomes if o.result is not None],
                [(o.job, o.failure) for o in outcomes if o.failure is not None]))
            if message_id is not None:
                self.in_flight[message_id] = batch

    def message_acked(self, message_id: int) -> None:
        for job in self.in_flight.pop(message_id, []):
            if self.held.pop(job, None) is not None:
                self.delivered += 1
        if message_id == self._trace_message:
            self._trace_acked.set()

    def handle(self, message: Message) -> None:
        if isinstance(message, Jobs):
            self._accept_jobs(message)
        elif isinstance(message, Needs):
            self._answer(message)
        elif isinstance(message, Cancel):
            for job in message.jobs:
                self.queue.remove(job)
                self.stop_run(job)
        elif isinstance(message, Finish) and self.phase != Phase.DONE:
            self.spawn(self._leave())

    def _answer(self, needs: Needs) -> None:
        """Say which of the master's kinds of job we can run, and once why not the rest."""
        able, unable = [], []
        for spec in needs.specs:
            try:
                self.tasks.get(spec)
            except TaskError as error:
                unable.append((spec, str(error)))
                self._say_once(spec, f"cannot run the master's {describe(spec)}: {error}")
            else:
                able.append(spec)
        self.able = self.able or bool(able)
        self.send(Verdict(able, unable))
        self.balance(Tick())

    def _say_once(self, spec: WorkloadSpec, text: str) -> None:
        if spec.key() not in self._said:
            self._said.add(spec.key())
            self.say(text)

    def _accept_jobs(self, message: Jobs) -> None:
        if not message.jobs:
            return  # an answer to our request, with nothing in it
        try:
            task = self.tasks.get(message.workload)
        except TaskError as error:
            self._refuse([job for job, _ in message.jobs], str(error))
            self._say_once(message.workload,
                           f"refused jobs of {describe(message.workload)}: {error}")
            return
        bad = []
        for job, data in message.jobs:
            try:
                task.check_job(job, data)
            except WorkloadError as error:
                bad.append(job)
                reason = str(error)
                continue
            self.queue.push(job, task, data)
        # When each message of jobs arrived: where a transfer ends (the harness's goodput).
        self.recorder.event("received", jobs=len(message.jobs), bootstrap=message.bootstrap)
        if message.bootstrap:
            self.bootstrapped += len(message.jobs) - len(bad)
        else:
            self.moved_in += len(message.jobs) - len(bad)
        if bad:
            self._refuse(bad, reason)

    def _refuse(self, jobs: list[int], reason: str) -> None:
        self.refused += len(jobs)
        self.send(Refuse(jobs, reason))

    async def _leave(self) -> None:
        self.phase = Phase.DONE
        self.sample()
        self.peering.send_state()  # the master's screen shows this node done, not still processing
        executed, compute = self.session_work()
        stats = {"executed": executed, "failed": self.failed_runs, "compute_seconds": compute,
                 "retransmits": self.connection.retransmits,
                 "spurious": self.connection.spurious,
                 "datagram": self.connection.datagram_size,
                 "datagram_steps": self.connection.datagram_steps,
                 "dropped": self.connection.drops(),
                 "suppressed": self.connection.suppressed, "bytes_sent": self.connection.bytes_sent,
                 "last_done": self.last_done, "refused": self.refused}
        self._trace_message = self.send(Trace(self.recorder.samples, self.recorder.events, stats))
        try:
            await asyncio.wait_for(self._trace_acked.wait(), LEAVE_TIMEOUT)
        except TimeoutError:
            self.say("master did not acknowledge the trace")
        self.say("master has every result: leaving")
        self.stop(0)


def _size(outcome: Outcome) -> int:
    """Bytes an outcome takes in a RESULTS message, roughly."""
    if outcome.result is not None:
        return len(outcome.result)
    assert outcome.failure is not None
    return len(outcome.failure.traceback) + len(outcome.failure.message) + 64
