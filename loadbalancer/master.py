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

import asyncio
import itertools
import logging
import time
from array import array
from typing import Any

from loadbalancer import fields, outputs, progress
from loadbalancer.balancer import Phase, Tick
from loadbalancer.batch import Batch
from loadbalancer.copies import Copies
from loadbalancer.exits import EXIT_FAILURE, EXIT_JOBS_FAILED, EXIT_OK
from loadbalancer.handover import Handover
from loadbalancer.jobs import Ledger, Parcel
from loadbalancer.journal import Journal, Recovered
from loadbalancer.logs import jobs, summary_line
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
from loadbalancer.outcome import Failure, Outcome
from loadbalancer.summary import summarise
from loadbalancer.tasks import Task, describe
from loadbalancer.trace import COUNT, SAMPLE, PeerHistory, event_flaw, sample_flaw
from loadbalancer.wire import Role
from loadbalancer.workload import WorkloadError

log = logging.getLogger("lb")
TRACE_TIMEOUT = 5.0
JOURNAL_SYNC = 1.0  # seconds of results a crash may cost


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
        self._journal_wanted = journal and not resume  # made once the sockets are bound
        if resume:
            self.journal, recovered = Journal.resume(self.config.journal, batch.run())
            batch.attach(self.journal)
            self._recover(recovered)
        else:
            if journal:
                Journal.check_free(self.config.journal)
            for job in range(batch.count):
                self.queue.push(job, batch.task(job))
        self.start = time.time()
        self.slave_trace: Trace | None = None
        self.peer_history = PeerHistory()
        self.copies = Copies()
        self._trace_received = asyncio.Event()
        self.summary: dict[str, Any] | None = None
        self.last_done: float | None = None

    def _recover(self, recovered: Recovered) -> None:
        assert self.journal is not None
        for line in recovered.damage:
            self.say(f"journal {self.config.journal}: {line}; those results are computed again")
        for job, offset in sorted(recovered.done.items()):
            if job in self.ledger and self.batch.recovered(job, self.journal.read(offset)[1],
                                                           offset):
                self.ledger.record(job)
        self.recovered = self.ledger.finished
        # Jobs the slave held go last: if it is still running, its results
        # may come back before this node reaches them.
        unfinished = [j for j in range(self.ledger.job_count) if not self.ledger.is_done(j)]
        unfinished.sort(key=lambda job: recovered.owners.get(job) is Role.SLAVE)
        for job in unfinished:
            self.queue.push(job, self.batch.task(job))

    async def startup(self) -> None:
        self.phase = Phase.PROCESSING  # before the socket opens: a slave may join at once
        self.start = time.time()
        try:
            await super().startup()
        except BaseException:
            if self._journal_wanted and self.journal is not None:
                self.journal.close(finished=True)  # a start that fails leaves nothing behind
            raise
        self.spawn(self._sync_journal())
        resumed = f", {self.recovered} finished ones recovered from the journal" \
            if self.recovered else ""
        kinds = ", ".join(describe(spec) for spec in self.batch.specs())
        self.say(f"{self.ledger.job_count} jobs of {kinds or 'work to come'}{resumed}")
        self.wake()
        self._check_done()

    def bound(self) -> None:
        if self._journal_wanted:
            # Not before: a start that fails on a port in use leaves no journal behind.
            self.journal = Journal.create(self.config.journal, self.batch.run())
            self.batch.attach(self.journal)

    async def _sync_journal(self) -> None:
        while True:
            await asyncio.sleep(JOURNAL_SYNC)
            self.batch.flush()
            if self.journal is not None:
                await self.loop.run_in_executor(None, self.journal.sync)

    async def shutdown(self) -> None:
        await super().shutdown()
        if self.journal is not None and not self.journal.closed:
            self.journal.close(finished=False)

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
        self._check_done()

    def forget(self, job: int) -> None:
        """A job that is not to run (its future was cancelled) counts as done; the slave
        drops it too if it holds it and has not started it."""
        if self.ledger.is_done(job):
            return
        if not self.queue.remove(job) and self.ledger.owner(job) is Role.SLAVE \
                and self.connection.connected:
            self.send(Cancel([job]))
        self.ledger.record(job)
        self._check_done()

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
                    self._record(Outcome(job, result), on=Role.SLAVE)
                for job, failure in failures:
                    self._record(Outcome(job, None, failure), on=Role.SLAVE)
            case Verdict():
                self.handover.on_verdict(message)
            case Refuse(jobs, reason):
                self.handover.refused(jobs, reason)
            case Trace():
                self.slave_trace = checked_trace(message)
                self._trace_received.set()

    def job_finished(self, outcome: Outcome) -> None:
        self.last_done = time.time()
        self._record(outcome, on=Role.MASTER)

    def _record(self, outcome: Outcome, *, on: Role) -> None:
        job = outcome.job
        if job not in self.ledger:
            self.connection.dropped["bad_result"] += 1
            return
        kind = "copy" if self.ledger.is_done(job) else "ok" if outcome.failure is None \
            else "failed"
        self.recorder.run(job, str(on), kind, self.ledger.moved(job))
        if on is Role.MASTER and job in self.copies:
            self.copies.finished(job, outcome.seconds,
                                 first=kind == "ok" and self.ledger.owner(job) is Role.SLAVE)
            if kind == "failed" and self.ledger.owner(job) is Role.SLAVE:
                return  # a copy that raised: the original, still running, has the say
        if self.ledger.is_done(job):
            self.ledger.duplicates += 1
            return
        if outcome.failure is not None:
            self._failed(job, outcome.failure, on)
            return
        assert outcome.result is not None
        try:
            self.batch.task(job).check_result(job, outcome.result)
        except WorkloadError:
            self.connection.dropped["bad_result"] += 1
            return
        self.ledger.record(job)
        self._settle_copies(job, on)
        offset = None if self.journal is None else self.journal.result(job, outcome.result)
        self.batch.result(job, outcome.result, offset)
        self._check_done()

    def _settle_copies(self, job: int, on: Role) -> None:
        """The job has its result from ``on``: whatever other execution remains stops."""
        self.queue.remove(job)  # a copy queued here (or after a take-back) need not run
        if on is Role.SLAVE and job in self.copies:
            if job in self.running:  # the copy's worker is free from now: the tail ends
                self.last_done = time.time()
            self.copies.beaten(job, self.loop.time())
            self.stop_run(job)
        elif on is Role.MASTER and self.ledger.owner(job) is Role.SLAVE \
                and self.connection.connected:
            self.send(Cancel([job]))  # our copy won: the slave's original stops

    def _failed(self, job: int, failure: Failure, on: Role) -> None:
        attempts = self.ledger.failed(job)
        task = self.batch.task(job)
        if attempts <= self.config.retries:
            log.info("job %d failed on the %s (%s): attempt %d of %d next", job, on,
                     failure.line(), attempts + 1, self.config.retries + 1)
            if on is Role.MASTER and self.movable(task):
                # "on the other node where possible"
                self.shipper.ship([Parcel(task, array("q", [job]))])
            elif job not in self.queue:
                self.ledger.assign([job], Role.MASTER)
                self.queue.push_front(job, task, None)
                self.wake()
            return
        self.say(f"job {job} failed {attempts} times: {failure.line()}")
        self.ledger.record(job)
        self.queue.remove(job)
        offset = None if self.journal is None else self.journal.failure(job, failure, attempts)
        self.batch.failed(job, failure, attempts, offset)
        self._check_done()

    def _check_done(self) -> None:
        if self.ledger.complete and self.batch.closed and self.phase == Phase.PROCESSING:
            self.phase = Phase.AGGREGATING
            self.spawn(self._finish())

    # ---- the end ------------------------------------------------------------------------
    async def _finish(self) -> None:
        makespan = time.time() - self.start
        self.preempt_all(requeue=False)
        self.queue.clear()
        self.say(f"every job has its outcome after {makespan:.1f}s: finishing")
        error = await self.batch.finish()
        if isinstance(error, list):
            self._again(error)
            return
        self.phase = Phase.DONE
        self.sample()
        self._state_now()  # the slave's screen shows this node done, not still processing
        if self.connection.connected:
            self.send(Finish())
            try:
                await asyncio.wait_for(self._trace_received.wait(), TRACE_TIMEOUT)
            except TimeoutError:
                self.say("the slave's trace did not arrive")
        self.sample()  # the last frame: with the slave's final state, if it came
        self.summary = summarise(self, makespan, error)
        written = outputs.write(self)
        if self.journal is not None:
            # Only once the outputs are safe is there nothing left to resume.
            journal, finished = self.journal, error is None and written
            await self.loop.run_in_executor(None, lambda: journal.close(finished=finished))
        if not written:
            self.stop(EXIT_FAILURE)
            return
        failed = self.summary["failed"]["count"]
        self.say(summary_line(self.summary))
        if error is not None:
            self.say(f"VERIFICATION FAILED: {error}")
        elif failed:
            self.say(f"{failed} of {self.ledger.job_count} jobs failed")
        else:
            self.say(self.batch.success)
        self.stop(EXIT_FAILURE if error is not None else EXIT_JOBS_FAILED if failed else EXIT_OK)

    def _again(self, jobs: list[int]) -> None:
        """The check of the whole found these jobs' results wrong: compute them again (the
        check says so again, for good, if they are wrong once more)."""
        self.say(f"the check of the whole found {len(jobs)} wrong results (first: job "
                 f"{jobs[0]}): computing them again")
        for job in jobs:
            self.ledger.reopen(job)
            self.ledger.assign([job], Role.MASTER)
            self.queue.push(job, self.batch.task(job))
        self.phase = Phase.PROCESSING
        self.wake()
        self.balance(Tick())


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
