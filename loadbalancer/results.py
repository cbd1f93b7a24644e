"""The master's account of each job's outcomes, from either node: a result checked and
recorded (journal, then batch), whatever else still runs the job stopped; a failure
retried, on the other node where it can, up to ``retries`` more times, then final; a
copy's outcome counted; a duplicate or a bad result dropped.
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from typing import Protocol

from loadbalancer.batch import Batch
from loadbalancer.config import Config
from loadbalancer.copies import Copies
from loadbalancer.finishing import Finishing
from loadbalancer.jobs import JobQueue, Ledger, Parcel
from loadbalancer.journal import Journal
from loadbalancer.messages import Cancel, Message
from loadbalancer.outcome import Failure, Outcome
from loadbalancer.session import Connection
from loadbalancer.shipping import Shipper
from loadbalancer.tasks import Task
from loadbalancer.trace import Recorder
from loadbalancer.wire import Role
from loadbalancer.workload import WorkloadError

log = logging.getLogger("lb")


class Host(Protocol):
    config: Config
    batch: Batch
    ledger: Ledger
    journal: Journal | None
    copies: Copies
    queue: JobQueue
    recorder: Recorder
    connection: Connection
    shipper: Shipper
    finishing: Finishing
    loop: asyncio.AbstractEventLoop

    def movable(self, task: Task) -> bool: ...

    def stop_run(self, job: int) -> None: ...

    def send(self, message: Message) -> int | None: ...

    def wake(self) -> None: ...

    def say(self, text: str) -> None: ...


class ResultBook:
    def __init__(self, host: Host) -> None:
        self.host = host

    def record(self, outcome: Outcome, *, on: Role) -> None:
        host = self.host
        job = outcome.job
        if job not in host.ledger:
            host.connection.dropped["bad_result"] += 1
            return
        kind = "copy" if host.ledger.is_done(job) else "ok" if outcome.failure is None \
            else "failed"
        host.recorder.run(job, str(on), kind, host.ledger.moved(job))
        if on is Role.MASTER and job in host.copies:
            host.copies.finished(job, outcome.seconds,
                                 first=kind == "ok" and host.ledger.owner(job) is Role.SLAVE)
            if kind == "failed" and host.ledger.owner(job) is Role.SLAVE:
                return  # a copy that raised: the original, still running, has the say
        if host.ledger.is_done(job):
            host.ledger.duplicates += 1
            return
        if outcome.failure is not None:
            self._failed(job, outcome.failure, on)
            return
        assert outcome.result is not None
        try:
            host.batch.task(job).check_result(job, outcome.result)
        except WorkloadError:
            host.connection.dropped["bad_result"] += 1
            return
        host.ledger.record(job)
        self._settle_copies(job, on)
        offset = None if host.journal is None else host.journal.result(job, outcome.result)
        host.batch.result(job, outcome.result, offset)
        host.finishing.check_done()

    def _settle_copies(self, job: int, on: Role) -> None:
        """The job has its result from ``on``: whatever other execution remains stops."""
        host = self.host
        host.queue.remove(job)  # a copy queued here (or after a take-back) need not run
        if on is Role.SLAVE and job in host.copies:
            host.copies.beaten(job, host.loop.time())
            host.stop_run(job)
        elif on is Role.MASTER and host.ledger.owner(job) is Role.SLAVE \
                and host.connection.connected:
            host.send(Cancel([job]))  # our copy won: the slave's original stops

    def _failed(self, job: int, failure: Failure, on: Role) -> None:
        host = self.host
        attempts = host.ledger.failed(job)
        task = host.batch.task(job)
        if attempts <= host.config.retries:
            log.info("job %d failed on the %s (%s): attempt %d of %d next", job, on,
                     failure.line(), attempts + 1, host.config.retries + 1)
            if on is Role.MASTER and host.movable(task):
                # "on the other node where possible"
                host.shipper.ship([Parcel(task, array("q", [job]))])
            elif job not in host.queue:
                host.ledger.assign([job], Role.MASTER)
                host.queue.push_front(job, task, None)
                host.wake()
            return
        host.say(f"job {job} failed {attempts} times: {failure.line()}")
        host.ledger.record(job)
        host.queue.remove(job)
        offset = None if host.journal is None else host.journal.failure(job, failure, attempts)
        host.batch.failed(job, failure, attempts, offset)
        host.finishing.check_done()
