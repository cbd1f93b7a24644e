"""The master's journal over a run's life: checked free (or resumed, its finished results
recovered and the rest queued) when the master is made, created once the sockets are
bound, synced every second, closed when the master stops. The end of the run closes it
for good (:mod:`finishing`) once the outputs are safe.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from loadbalancer.batch import Batch
from loadbalancer.config import Config
from loadbalancer.jobs import JobQueue, Ledger
from loadbalancer.journal import Journal, Recovered
from loadbalancer.wire import Role

JOURNAL_SYNC = 1.0  # seconds of results a crash may cost


class Host(Protocol):
    config: Config
    batch: Batch
    ledger: Ledger
    queue: JobQueue
    journal: Journal | None
    recovered: int
    loop: asyncio.AbstractEventLoop

    def say(self, text: str) -> None: ...


class Journaling:
    def __init__(self, host: Host, *, journal: bool, resume: bool) -> None:
        """Resume the journal (``resume``) or check it can be made (``journal``), and queue
        every job that has no outcome yet."""
        self.host = host
        self._wanted = journal and not resume  # made once the sockets are bound
        batch = host.batch
        if resume:
            host.journal, recovered = Journal.resume(host.config.journal, batch.run())
            batch.attach(host.journal)
            self._recover(recovered)
        else:
            if journal:
                Journal.check_free(host.config.journal)
            for job in range(batch.count):
                host.queue.push(job, batch.task(job))

    def _recover(self, recovered: Recovered) -> None:
        host = self.host
        assert host.journal is not None
        for line in recovered.damage:
            host.say(f"journal {host.config.journal}: {line}; those results are computed again")
        for job, offset in sorted(recovered.done.items()):
            if job in host.ledger and host.batch.recovered(job, host.journal.read(offset)[1],
                                                           offset):
                host.ledger.record(job)
        host.recovered = host.ledger.finished
        # Jobs the slave held go last: if it is still running, its results
        # may come back before this node reaches them.
        unfinished = [j for j in range(host.ledger.job_count) if not host.ledger.is_done(j)]
        unfinished.sort(key=lambda job: recovered.owners.get(job) is Role.SLAVE)
        for job in unfinished:
            host.queue.push(job, host.batch.task(job))

    def bound(self) -> None:
        if self._wanted:
            # Not before: a start that fails on a port in use leaves no journal behind.
            host = self.host
            host.journal = journal = Journal.create(host.config.journal, host.batch.run())
            host.batch.attach(journal)

    def start_failed(self) -> None:
        if self._wanted and self.host.journal is not None:
            self.host.journal.close(finished=True)  # a start that fails leaves nothing behind

    async def sync(self) -> None:
        host = self.host
        while True:
            await asyncio.sleep(JOURNAL_SYNC)
            host.batch.flush()
            if host.journal is not None:
                await host.loop.run_in_executor(None, host.journal.sync)

    def shutdown(self) -> None:
        if self.host.journal is not None and not self.host.journal.closed:
            self.host.journal.close(finished=False)
