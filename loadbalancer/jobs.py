"""The local job queue and the master's ledger of who owns which job.

The master is the authority on every job: the ledger records which node
holds it and whether it has its final outcome, so however often a job is run
or a result is delivered, it counts once.
"""

from __future__ import annotations

import collections
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from loadbalancer.tasks import Task
from loadbalancer.wire import Role

# A job's input as it came: a view into the message that brought it (copying each
# job's share out of a bootstrap was most of a slave's work taking it in).
Input = bytes | memoryview
Queued = tuple[int, Task, Input | None]  # a job, its task, its input if held


@dataclass(slots=True)
class Parcel:
    """Jobs of one task leaving this node together, in queue order: their numbers packed
    eight bytes each (a bootstrap hands over half of a map of millions), and the inputs
    this node holds for them by number (the rest the master makes when they are sent)."""

    task: Task
    jobs: array[int] = field(default_factory=lambda: array("q"))
    data: dict[int, Input] = field(default_factory=dict)

    def input(self, job: int) -> Input | None:
        return self.data.get(job)


class _Run:
    """Consecutive job numbers ``start..stop-1`` of one task, in queue order."""

    __slots__ = ("start", "stop", "task")

    def __init__(self, start: int, stop: int, task: Task) -> None:
        self.start, self.stop, self.task = start, stop, task


class JobQueue:
    """Jobs waiting on this node, head first, each with its task and its input; the input
    is None where the master can make it when needed (its own jobs).

    The order is kept as runs of consecutive job numbers of one task, so a million queued
    jobs of a map cost a few runs and a dict entry each, not a linked-list node each. A
    removed job stays inside its run and is skipped when reached; before such a job is
    queued again the runs are rebuilt without the removed ones, so no job is ever covered
    twice. A run emptied behind one whose task could not move stays until it is reached:
    an empty run is skipped like a removed job."""

    def __init__(self) -> None:
        self._runs: collections.deque[_Run] = collections.deque()
        self._held: dict[int, Input | None] = {}  # the queued jobs and their inputs
        self._removed: set[int] = set()  # removed jobs still inside a run

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, job: object) -> bool:
        return job in self._held

    def ids(self) -> list[int]:
        return [job for run in self._runs for job in range(run.start, run.stop)
                if job in self._held]

    def push(self, job: int, task: Task, data: Input | None = None) -> None:
        if self._admit(job, data):
            return
        last = self._runs[-1] if self._runs else None
        if last is not None and last.task is task and last.stop == job:
            last.stop += 1
        else:
            self._runs.append(_Run(job, job + 1, task))

    def push_front(self, job: int, task: Task, data: Input | None) -> None:
        self.remove(job)
        self._admit(job, data)
        first = self._runs[0] if self._runs else None
        if first is not None and first.task is task and first.start == job + 1:
            first.start -= 1
        else:
            self._runs.appendleft(_Run(job, job + 1, task))

    def _admit(self, job: int, data: Input | None) -> bool:
        """Hold ``job``'s input; whether it was queued already (it keeps its place)."""
        queued = job in self._held
        if job in self._removed:  # only then would two runs cover it
            self._compact()
        self._held[job] = data
        return queued

    def pop(self) -> Queued:
        run = self._head()
        job = run.start
        run.start += 1
        if run.start == run.stop:
            self._runs.popleft()
        return job, run.task, self._held.pop(job)

    def peek(self) -> Task:
        """The task of the job at the head."""
        return self._head().task

    def _head(self) -> _Run:
        """The first run, its removed jobs at the front skipped (IndexError if empty)."""
        while True:
            run = self._runs[0]
            while run.start < run.stop and run.start not in self._held:
                self._removed.discard(run.start)
                run.start += 1
            if run.start < run.stop:
                return run
            self._runs.popleft()

    def remove(self, job: int) -> bool:
        """Drop a queued job; False if it was not queued."""
        if job not in self._held:
            return False
        del self._held[job]
        self._removed.add(job)
        return True

    def take_tail(self, count: int, movable: Callable[[Task], bool]) -> list[Parcel]:
        """Up to ``count`` jobs whose task is ``movable``, from the tail (the ones this node
        would reach last), as parcels in queue order."""
        parcels: list[Parcel] = []
        taken = 0
        for run in reversed(self._runs):
            if taken == count:
                break
            if not movable(run.task):
                continue
            if not parcels or parcels[-1].task is not run.task:
                parcels.append(Parcel(run.task))
            parcel = parcels[-1]
            while run.stop > run.start and taken < count:
                run.stop -= 1
                if run.stop not in self._held:
                    self._removed.discard(run.stop)
                    continue
                data = self._held.pop(run.stop)
                parcel.jobs.append(run.stop)
                if data is not None:
                    parcel.data[run.stop] = data
                taken += 1
        while self._runs and self._runs[-1].start == self._runs[-1].stop:
            self._runs.pop()
        for parcel in parcels:
            parcel.jobs.reverse()
        parcels.reverse()
        return [parcel for parcel in parcels if parcel.jobs]

    def clear(self) -> None:
        self._runs.clear()
        self._held.clear()
        self._removed.clear()

    def _compact(self) -> None:
        """The runs without their removed jobs."""
        runs: collections.deque[_Run] = collections.deque()
        for run in self._runs:
            start = None
            for job in range(run.start, run.stop):
                if job in self._held and start is None:
                    start = job
                elif job not in self._held and start is not None:
                    runs.append(_Run(start, job, run.task))
                    start = None
            if start is not None:
                runs.append(_Run(start, run.stop, run.task))
        self._runs = runs
        self._removed.clear()


class Ledger:
    """Every job of the run by number: who holds it, whether it is done, how often it
    failed. Compact (a byte a job for each) so that a map over millions of inputs fits,
    and growing, since an Executor's jobs keep coming."""

    def __init__(self, count: int = 0) -> None:
        self.job_count = 0
        self._owner = bytearray()
        self._done = bytearray()
        # Times each moved between the nodes after the bootstrap (the plot's crosses; the
        # benchmarks' share moved more than once), saturating at 255.
        self._moved = bytearray()
        self.finished = 0
        self.failed_attempts: dict[int, int] = {}  # failed attempts of jobs not yet final
        self.duplicates = 0  # outcomes that arrived again and were not counted
        self.add(count)

    def add(self, count: int) -> range:
        """``count`` new jobs, held by the master; their numbers."""
        jobs = range(self.job_count, self.job_count + count)
        self._owner.extend(bytes([Role.MASTER]) * count)
        self._done.extend(bytes(count))
        self._moved.extend(bytes(count))
        self.job_count += count
        return jobs

    def __contains__(self, job: object) -> bool:
        return isinstance(job, int) and 0 <= job < self.job_count

    @property
    def complete(self) -> bool:
        return self.finished == self.job_count

    def is_done(self, job: int) -> bool:
        return bool(self._done[job])

    def owner(self, job: int) -> Role:
        return Role(self._owner[job])

    def mark_moved(self, jobs: Iterable[int]) -> None:
        moved = self._moved
        for job in jobs:
            if moved[job] < 255:
                moved[job] += 1

    def moved(self, job: int) -> bool:
        return bool(self._moved[job])

    def moves(self, job: int) -> int:
        return self._moved[job]

    @property
    def moved_again(self) -> int:
        """Jobs moved more than once: the bouncing a balancer's margin is there to stop."""
        return len(self._moved) - self._moved.count(0) - self._moved.count(1)

    def assign(self, jobs: Iterable[int], role: Role) -> None:
        for job in jobs:
            self._owner[job] = role

    def record(self, job: int) -> bool:
        """The job has its final outcome; False if it already had one."""
        if self._done[job]:
            self.duplicates += 1
            return False
        self._done[job] = 1
        self.finished += 1
        self.failed_attempts.pop(job, None)
        return True

    def reopen(self, job: int) -> None:
        """A final outcome found wrong: the job is to run again."""
        if self._done[job]:
            self._done[job] = 0
            self.finished -= 1

    def failed(self, job: int) -> int:
        """One more failed attempt of a job; how many it has had."""
        attempts = self.failed_attempts.get(job, 0) + 1
        self.failed_attempts[job] = attempts
        return attempts

    def unfinished(self, role: Role) -> Iterator[int]:
        """The jobs ``role`` holds that have no final outcome, in order."""
        owner, done = self._owner, self._done
        return (job for job in range(self.job_count) if owner[job] == role and not done[job])
