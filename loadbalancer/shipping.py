"""The transfer manager's outgoing half: jobs leave this node's queue for the peer.

Jobs go as parcels (a task's jobs, with or without their inputs), each made into
JOBS messages one at a time over the reliable channel. The node (its ``Host``) says
which jobs may move and which may leave at all, makes an input it does not hold,
and hears which jobs left.
"""

from __future__ import annotations

import asyncio
import itertools
from array import array
from collections.abc import Coroutine
from typing import Any, Protocol

from loadbalancer import messages
from loadbalancer.balancer import JobsSent, Stimulus
from loadbalancer.endpoint import Endpoint
from loadbalancer.jobs import JobQueue, Parcel
from loadbalancer.logs import jobs
from loadbalancer.messages import WorkloadSpec
from loadbalancer.session import Connection
from loadbalancer.tasks import Task
from loadbalancer.trace import Recorder
from loadbalancer.wire import Kind, Role

# The next JOBS message is made once the ones before it are this near to gone: enough queued
# that the window never waits on encoding, and no more (a batch encoded at once would hold
# a second copy of all its data, and touch that much fresh memory, before the first leaves).
UNSENT_BYTES = 2 * messages.MESSAGE_BYTES
NO_JOBS = WorkloadSpec("", {})  # the spec of a JOBS message that carries none (an answer)


class Host(Protocol):
    role: Role
    queue: JobQueue
    recorder: Recorder
    connection: Connection
    endpoint: Endpoint
    loop: asyncio.AbstractEventLoop
    moved_out: int
    bootstrapped: int

    def movable(self, task: Task) -> bool: ...

    def claim(self, job: int, here: bool) -> bool: ...

    def job_data(self, job: int) -> bytes: ...

    def jobs_sent(self, jobs: array[int], bootstrap: bool) -> None: ...

    def balance(self, stimulus: Stimulus) -> None: ...

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None: ...

    def wake(self) -> None: ...

    def say(self, text: str) -> None: ...


class Shipper:
    def __init__(self, host: Host) -> None:
        self.host = host
        # A job's share of the last JOBS message either way: the adaptor's cost. Both
        # nodes carry the same jobs, so a slave that has only received prices its first
        # move with what the bootstrap cost, not a guess (1 KiB for jobs of a few hundred
        # bytes made its moves look a second dearer on a slow link).
        self.job_bytes = 0.0

    def carried(self, size: int, count: int) -> None:
        """A JOBS message of ``size`` bytes with ``count`` jobs went or came."""
        if count:
            self.job_bytes = size / count

    def send_jobs(self, count: int, *, request: int | None = None, reason: str = "",
                  bootstrap: bool = False) -> int:
        """Move up to ``count`` jobs from the tail of the queue to the peer."""
        host = self.host
        if not host.connection.connected:
            return 0
        taken = host.queue.take_tail(count, host.movable)
        host.wake()
        if taken:
            moving = sum(len(parcel.jobs) for parcel in taken)
            host.recorder.event("sent", jobs=moving)
            why = f": {reason}" if reason else ""
            host.say(f"sent {jobs(moving)} to the {host.role.peer}{why}")
        return self.ship(taken, request, bootstrap)

    def ship(self, parcels: list[Parcel], request: int | None = None,
             bootstrap: bool = False) -> int:
        """Send these jobs to the peer (and answer ``request``, even with none); how many."""
        host = self.host
        parcels = [claimed for claimed in (self._claimed(parcel) for parcel in parcels)
                   if claimed.jobs]
        if not parcels and request is None:
            return 0
        count = sum(len(parcel.jobs) for parcel in parcels)
        host.balance(JobsSent(count))
        if bootstrap:
            host.bootstrapped += count
        else:
            host.moved_out += count
        host.jobs_sent(array("q", itertools.chain.from_iterable(
            parcel.jobs for parcel in parcels)), bootstrap)
        host.spawn(self._transmit(parcels, request, bootstrap))
        return count

    def _claimed(self, parcel: Parcel) -> Parcel:
        jobs = array("q", (job for job in parcel.jobs if self.host.claim(job, here=False)))
        return parcel if len(jobs) == len(parcel.jobs) else Parcel(parcel.task, jobs,
                                                                   parcel.data)

    async def _transmit(self, parcels: list[Parcel], request: int | None,
                        bootstrap: bool) -> None:
        """Encode and send jobs a message at a time, yielding in between: the
        peer starts on the first message while the rest are made, and the
        event loop stays responsive. If the session ends meanwhile, the
        master's ledger takes the jobs back."""
        host = self.host
        sending: list[Parcel | None] = [*parcels] or [None]  # None: an empty answer
        for parcel in sending:
            spec = NO_JOBS if parcel is None else parcel.task.spec
            data = () if parcel is None else (
                (job, held if (held := parcel.input(job)) is not None else host.job_data(job))
                for job in parcel.jobs)
            for payload, count in messages.job_messages(spec, data, request, bootstrap):
                if host.connection.send(Kind.JOBS, payload, host.loop.time()) is None:
                    return
                self.carried(len(payload), count)
                host.endpoint.flush()
                await asyncio.sleep(0)
                await host.endpoint.drained(UNSENT_BYTES)
