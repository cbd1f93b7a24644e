"""The master's side of what the slave holds, session by session: which kinds of job it
said it can run (NEEDS, VERDICT), the bootstrap's half of the queue, and the jobs that
change hands: sent, taken back when the session ends or the slave refuses them, given
back by the slave's balancing. The ledger and the journal say who holds each job.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from typing import Protocol

from loadbalancer.balancer import Phase, Stimulus, Tick
from loadbalancer.batch import Batch
from loadbalancer.jobs import JobQueue, Ledger
from loadbalancer.journal import Journal
from loadbalancer.messages import Jobs, Message, Needs, Verdict, WorkloadSpec
from loadbalancer.session import Connection
from loadbalancer.shipping import Shipper
from loadbalancer.tasks import Task, describe
from loadbalancer.wire import Role
from loadbalancer.worker import Running
from loadbalancer.workload import WorkloadError


class Host(Protocol):
    phase: Phase
    batch: Batch
    ledger: Ledger
    journal: Journal | None
    queue: JobQueue
    running: dict[int, Running]
    connection: Connection
    shipper: Shipper
    refused: int
    moved_in: int

    def send(self, message: Message) -> int | None: ...

    def balance(self, stimulus: Stimulus) -> None: ...

    def wake(self) -> None: ...

    def say(self, text: str) -> None: ...


class Handover:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.peer_able: dict[str, bool] = {}  # spec key -> the slave's verdict, this session
        self._asked: set[str] = set()  # spec keys asked about, this session
        self._bootstrap_due = False  # a session opened and has not had its half yet

    def joined(self) -> None:
        self.peer_able = {}
        self._asked = set()
        self._bootstrap_due = True

    def lost(self) -> None:
        self.peer_able = {}

    def ask(self, specs: Iterable[WorkloadSpec]) -> None:
        """Ask the slave whether it can run these kinds of job (each once a session);
        their jobs stay here until it says it can, and the bootstrap waits for that."""
        if not self.host.connection.connected:
            return
        new = [spec for spec in specs if spec.key() not in self._asked]
        if new:
            self._asked.update(spec.key() for spec in new)
            self.host.send(Needs(new))

    def sharing(self) -> bool:
        return any(self.peer_able.values())

    def movable(self, task: Task) -> bool:
        return self.peer_able.get(task.spec.key(), False)

    def on_verdict(self, verdict: Verdict) -> None:
        host = self.host
        newly = False
        for spec in verdict.able:
            newly = newly or not self.peer_able.get(spec.key(), False)
            self.peer_able[spec.key()] = True
        for spec, why in verdict.unable:
            if self.peer_able.setdefault(spec.key(), False):
                continue  # it said it can before; a contradiction changes nothing
            host.say(f"the slave cannot run {describe(spec)}: {why}; carrying on without it")
        if newly and host.phase == Phase.PROCESSING and self._bootstrap_due:
            # Nothing is known of the new slave's speed yet: half, then the adaptor corrects.
            self._bootstrap_due = False
            host.shipper.send_jobs(len(host.queue) // 2,
                                   reason="half of the queue, to start with", bootstrap=True)
        host.balance(Tick())

    def refused(self, jobs: list[int], reason: str) -> None:
        self.host.refused += len(jobs)
        for spec_key in self.peer_able:
            self.peer_able[spec_key] = False  # it said it could: trust it no more
        self.take_back([job for job in jobs if job in self.host.ledger],
                       f"slave refused ({reason}):")

    def take_back(self, jobs: Iterable[int], why: str) -> None:
        host = self.host
        jobs = [job for job in jobs if job not in host.queue and not host.ledger.is_done(job)]
        self._own(jobs, Role.MASTER)
        for job in jobs:
            if job not in host.running:  # a copy running here is the job now
                host.queue.push(job, host.batch.task(job))  # input made again from the batch
        if jobs:
            host.say(f"{why} {len(jobs)} jobs")
        host.wake()

    def sent(self, jobs: array[int], bootstrap: bool) -> None:
        if not bootstrap:
            self.host.ledger.mark_moved(jobs)
        self._own(jobs, Role.SLAVE)

    def accept(self, message: Jobs) -> None:
        """Jobs the slave gave back."""
        host = self.host
        for job, data in message.jobs:
            if job not in host.ledger or job in host.queue or host.ledger.is_done(job):
                continue
            task = host.batch.task(job)
            if message.workload != task.spec:
                host.connection.dropped["wrong_workload"] += 1
                self.take_back([job], "slave sent a job as another kind; took back")
                continue
            try:
                task.check_job(job, data)
            except WorkloadError:
                host.refused += 1
                host.queue.push(job, task)  # our own copy of its input is the authority
            else:
                host.queue.push(job, task, data)
            self._own([job], Role.MASTER)
            host.moved_in += 1
            host.ledger.mark_moved([job])

    def _own(self, jobs: Sequence[int], role: Role) -> None:
        """``role`` holds these jobs now: the ledger says so, and the journal, for a
        resumed master to know whose results may still come."""
        self.host.ledger.assign(jobs, role)
        if self.host.journal is not None:
            self.host.journal.owners(jobs, role)
