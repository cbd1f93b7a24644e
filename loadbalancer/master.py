"""The master: holds the batch and the ledger, and decides when it is done.

It starts computing at once. When a session opens it asks the slave whether it
can run the batch's kinds of job (module, function and the fingerprint of its
source, or the workload) and, once the slave says it can, hands it half of its
queue; a slave that cannot is told so once and the master carries on alone.
When a session ends it takes back every unfinished job the slave held or had
in flight. A job that fails runs again, on the other node where it can, up to
``retries`` more times; then its failure is its final outcome. Every final
outcome goes to the journal and then to the batch (the output, a future, the
kept results). When every job has one, the batch finishes (writes or checks the
whole), the master gathers the slave's trace, writes the summary and both
nodes leave.
"""

from __future__ import annotations

import itertools
import time
from array import array
from typing import Any

from loadbalancer import fields, progress
from loadbalancer.balancer import Phase, Tick
from loadbalancer.batch import Batch
from loadbalancer.copies import Copies
from loadbalancer.finishing import Finishing
from loadbalancer.handover import Handover
from loadbalancer.jobs import Ledger
from loadbalancer.journal import Journal
from loadbalancer.journaling import Journaling
from loadbalancer.logs import jobs
from loadbalancer.messages import (
    Cancel,
    Finish,
    Jobs,
    Message,
    Refuse,
    Results,
    Trace,
    Verdict,
)
from loadbalancer.node import Node
from loadbalancer.outcome import Outcome
from loadbalancer.results import ResultBook
from loadbalancer.tasks import Task, describe
from loadbalancer.trace import COUNT, SAMPLE, PeerHistory, event_flaw, sample_flaw
from loadbalancer.wire import Role


class Master(Node):
    role = Role.MASTER

    def __init__(self, *args: Any, batch: Batch, journal: bool = True, resume: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch = batch
        self.ledger = Ledger(batch.count)
        self.handover = Handover(self)
        self.recovered = 0
        self.journal: Journal | None = None
        self.journaling = Journaling(self, journal=journal, resume=resume)
        self.start = time.time()
        self.slave_trace: Trace | None = None
        self.peer_history = PeerHistory()
        self.copies = Copies()
        self.results = ResultBook(self)
        self.finishing = Finishing(self)
        self.summary: dict[str, Any] | None = None

    async def startup(self) -> None:
        self.phase = Phase.PROCESSING  # before the socket opens: a slave may join at once
        self.start = time.time()
        try:
            await super().startup()
        except BaseException:
            self.journaling.start_failed()
            raise
        self.spawn(self.journaling.sync())
        resumed = f", {self.recovered} finished ones recovered from the journal" \
            if self.recovered else ""
        kinds = ", ".join(describe(spec) for spec in self.batch.specs())
        self.say(f"{self.ledger.job_count} jobs of {kinds or 'work to come'}{resumed}")
        self.wake()
        self.finishing.check_done()

    def bound(self) -> None:
        self.journaling.bound()

    async def shutdown(self) -> None:
        await super().shutdown()
        self.journaling.shutdown()

    def progress(self) -> tuple[int | None, int | None]:
        return self.ledger.job_count, self.ledger.finished

    def progress_count(self) -> int:
        return self.ledger.finished

    def progress_line(self, rate: float) -> str:
        slave = self.remote.view.queued if self.remote and self.connection.connected else None
        return progress.master_line(self.ledger.finished, self.ledger.job_count, rate,
                                    len(self.queue), slave)

    def job_data(self, job: int) -> bytes:
        return self.batch.job_data(job)

    def claim(self, job: int, here: bool) -> bool:
        if job in self.copies:  # the original was claimed when it went to the slave
            if here:
                self.copies.start(job, self.loop.time())
            return here  # a copy never goes to the slave, which runs the original
        return self.batch.claim(job, here)

    def copying(self) -> int | None:
        return len(self.copies)

    def run_copies(self, count: int, why: str) -> None:
        outstanding = list(itertools.islice(
            (job for job in self.ledger.unfinished(Role.SLAVE) if job not in self.copies
             and job not in self.queue and job not in self.running), count))
        for job in outstanding:
            self.copies.add(job)
            self.queue.push_front(job, self.batch.task(job), None)
        if outstanding:
            self.say(f"copying {jobs(len(outstanding))} the slave is running: {why}")
            self.wake()

    def grow(self) -> None:
        """The batch has new jobs, or has closed (the Executor's)."""
        new = range(self.ledger.job_count, self.batch.count)
        self.ledger.add(len(new))
        for job in new:
            self.queue.push(job, self.batch.task(job))
        self.handover.ask({self.batch.task(job).spec.key(): self.batch.task(job).spec
                  for job in new}.values())
        self.wake()
        self.balance(Tick())
        self.finishing.check_done()

    def forget(self, job: int) -> None:
        """A job that is not to run (its future was cancelled) counts as done; the slave
        drops it too if it holds it and has not started it."""
        if self.ledger.is_done(job):
            return
        if not self.queue.remove(job) and self.ledger.owner(job) is Role.SLAVE \
                and self.connection.connected:
            self.send(Cancel([job]))
        self.ledger.record(job)
        self.finishing.check_done()

    # ---- sessions -------------------------------------------------------------------
    def peer_joined(self) -> None:
        self.peer_history.joined(time.time())
        self.handover.joined()
        if self.phase == Phase.PROCESSING:
            self.handover.ask(self.batch.specs())
        elif self.phase == Phase.DONE:
            self.send(Finish())

    def sharing(self) -> bool:
        return self.handover.sharing()

    def remote_updated(self) -> None:
        assert self.remote is not None
        view, status = self.remote.view, self.remote.status
        self.peer_history.state(time.time(), pending=view.queued + view.running,
                                throttle=view.throttle, workers=view.workers,
                                executed=status.get("session_executed") or 0,
                                compute=status.get("session_compute") or 0.0)

    def sample(self) -> None:
        super().sample()
        self.peer_history.sample(time.time())

    def movable(self, task: Task) -> bool:
        return self.handover.movable(task)

    def peer_lost(self, reason: str) -> None:
        self.peer_history.lost(time.time())
        self.handover.lost()
        if self.phase == Phase.PROCESSING:  # afterwards every result is held: nothing to take back
            self.handover.take_back(self.ledger.unfinished(Role.SLAVE), f"{reason}: took back")

    def jobs_sent(self, jobs: array[int], bootstrap: bool) -> None:
        self.handover.sent(jobs, bootstrap)

    # ---- messages ---------------------------------------------------------------------
    def handle(self, message: Message) -> None:
        match message:
            case Jobs():
                self.handover.accept(message)
            case Results(results, failures):
                self.peer_history.delivered(len(results) + len(failures))
                for job, result in results:
                    # Kept, so a copy: a view would hold the whole message.
                    self.results.record(Outcome(job, bytes(result)), on=Role.SLAVE)
                for job, failure in failures:
                    self.results.record(Outcome(job, None, failure), on=Role.SLAVE)
            case Verdict():
                self.handover.on_verdict(message)
            case Refuse(jobs, reason):
                self.handover.refused(jobs, reason)
            case Trace():
                self.slave_trace = checked_trace(message)
                self.finishing.trace_received.set()

    def job_finished(self, outcome: Outcome) -> None:
        self.results.record(outcome, on=Role.MASTER)


# The slave's own samples carry its throttle and its jobs done, besides what every sample has.
_SLAVE_SAMPLE = {**SAMPLE, "throttle": (0, 1), "done": COUNT}


def checked_trace(trace: Trace) -> Trace:
    """The slave's trace with what the summary and the plots rely on checked:
    records lacking a number they need, or with one out of bounds, are left out;
    counters must be numbers within bounds."""
    samples = [s for s in trace.samples if sample_flaw(s, _SLAVE_SAMPLE) is None]
    events = [e for e in trace.events if event_flaw(e) is None]
    stats: dict[str, Any] = {k: v for k, v in trace.stats.items()
                             if fields.number(v, 0, fields.MAX_COUNT)}
    if "dropped" in trace.stats:
        stats["dropped"] = fields.counters(trace.stats["dropped"])
    return Trace(samples, events, stats)
