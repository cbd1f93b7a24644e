"""The end of the master's run: once every job has its outcome and the batch is closed,
the batch finishes (writes or checks the whole); results the check finds wrong are
computed again, else the master gathers the slave's trace, writes the summary and the
outputs, closes the journal for good and stops with the run's exit code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Protocol

from loadbalancer import outputs
from loadbalancer.balancer import Phase, Stimulus, Tick
from loadbalancer.exits import EXIT_FAILURE, EXIT_JOBS_FAILED, EXIT_OK
from loadbalancer.jobs import JobQueue
from loadbalancer.journal import Journal
from loadbalancer.logs import summary_line
from loadbalancer.messages import Finish, Message
from loadbalancer.peering import Peering
from loadbalancer.summary import summarise
from loadbalancer.wire import Role

TRACE_TIMEOUT = 5.0
# A slave whose HELLO the master answered this lately may be part way into its session
# when a short batch ends: the master waits this long at most for it to join and hear
# FINISH, rather than leave it waiting for a master that has gone.
JOINING = 2.0
JOIN_POLL = 0.02


class Host(outputs.Finished, Protocol):
    phase: Phase
    queue: JobQueue
    journal: Journal | None
    peering: Peering
    loop: asyncio.AbstractEventLoop

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None: ...

    def preempt_all(self, requeue: bool) -> None: ...

    def sample(self) -> None: ...

    def send(self, message: Message) -> int | None: ...

    def balance(self, stimulus: Stimulus) -> None: ...

    def wake(self) -> None: ...

    def stop(self, code: int) -> None: ...


class Finishing:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.trace_received = asyncio.Event()  # the slave's trace came (master.slave_trace)

    def check_done(self) -> None:
        host = self.host
        if host.ledger.complete and host.batch.closed and host.phase == Phase.PROCESSING:
            host.phase = Phase.AGGREGATING
            host.spawn(self._finish())

    async def _finish(self) -> None:
        host = self.host
        makespan = time.time() - host.start
        host.preempt_all(requeue=False)
        host.queue.clear()
        host.say(f"every job has its outcome after {makespan:.1f}s: finishing")
        error = await host.batch.finish()
        if isinstance(error, list):
            self._again(error)
            return
        host.phase = Phase.DONE
        host.sample()
        host.peering.send_state()  # the slave's screen shows this node done, not still processing
        await self.tell_the_slave()
        host.sample()  # the last frame: with the slave's final state, if it came
        host.summary = summarise(host, makespan, error)
        written = outputs.write(host)
        if host.journal is not None:
            # Only once the outputs are safe is there nothing left to resume.
            journal, finished = host.journal, error is None and written
            await host.loop.run_in_executor(None, lambda: journal.close(finished=finished))
        if not written:
            host.stop(EXIT_FAILURE)
            return
        failed = host.summary["failed"]["count"]
        host.say(summary_line(host.summary))
        if error is not None:
            host.say(f"VERIFICATION FAILED: {error}")
        elif failed:
            host.say(f"{failed} of {host.ledger.job_count} jobs failed")
        else:
            host.say(host.batch.success)
        host.stop(EXIT_FAILURE if error is not None else EXIT_JOBS_FAILED if failed else EXIT_OK)

    async def tell_the_slave(self) -> None:
        """FINISH to the slave, then its trace, if a slave is there or joining."""
        host = self.host
        if host.connection.connected:
            host.send(Finish())
        else:
            # One that joins now is sent FINISH as it joins (the master's peer_joined).
            deadline = host.loop.time() + JOINING
            while (host.connection.joining(host.loop.time(), JOINING)
                   and host.loop.time() < deadline):
                await asyncio.sleep(JOIN_POLL)
        if host.connection.connected:
            try:
                await asyncio.wait_for(self.trace_received.wait(), TRACE_TIMEOUT)
            except TimeoutError:
                host.say("the slave's trace did not arrive")

    def _again(self, jobs: list[int]) -> None:
        """The check of the whole found these jobs' results wrong: compute them again (the
        check says so again, for good, if they are wrong once more)."""
        host = self.host
        host.say(f"the check of the whole found {len(jobs)} wrong results (first: job "
                 f"{jobs[0]}): computing them again")
        for job in jobs:
            host.ledger.reopen(job)
            host.ledger.assign([job], Role.MASTER)
            host.queue.push(job, host.batch.task(job))
        host.phase = Phase.PROCESSING
        host.wake()
        host.balance(Tick())
