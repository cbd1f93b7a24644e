"""The local job queue and the master's ledger of who owns which job.

The master is the authority on every job: the ledger records which node
holds it and whether it has its final outcome, so however often a job is run
or a result is delivered, it counts once.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable

from loadbalancer.tasks import Task
from loadbalancer.wire import Role

Queued = tuple[int, Task, bytes | None]  # a job, its task, its input if held


class JobQueue:
    """Jobs waiting on this node, head first, each with its task and its input; the input
    is None where the master can make it when needed (its own jobs)."""

    def __init__(self) -> None:
        self._jobs: collections.OrderedDict[int, tuple[Task, bytes | None]] = \
            collections.OrderedDict()
        # One shared (task, None) entry per task: a million queued jobs of one task cost a
        # pointer each, not a tuple each.
        self._bare: dict[int, tuple[Task, None]] = {}

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job: object) -> bool:
        return job in self._jobs

    def ids(self) -> list[int]:
        return list(self._jobs)

    def _entry(self, task: Task, data: bytes | None) -> tuple[Task, bytes | None]:
        if data is not None:
            return task, data
        return self._bare.setdefault(id(task), (task, None))

    def push(self, job: int, task: Task, data: bytes | None = None) -> None:
        self._jobs[job] = self._entry(task, data)

    def push_front(self, job: int, task: Task, data: bytes | None) -> None:
        self.push(job, task, data)
        self._jobs.move_to_end(job, last=False)

    def pop(self) -> Queued:
        job, (task, data) = self._jobs.popitem(last=False)
        return job, task, data

    def peek(self) -> Task:
        """The task of the job at the head."""
        return next(iter(self._jobs.values()))[0]

    def remove(self, job: int) -> bool:
        return self._jobs.pop(job, None) is not None

    def take_tail(self, count: int, movable: Callable[[Task], bool]) -> list[Queued]:
        """Up to ``count`` jobs whose task is ``movable``, from the tail: the ones this node
        would reach last."""
        taken: list[Queued] = []
        for job in reversed(self._jobs):
            if len(taken) == count:
                break
            task, data = self._jobs[job]
            if movable(task):
                taken.append((job, task, data))
        for job, _, _ in taken:
            del self._jobs[job]
        taken.reverse()
        return taken

    def clear(self) -> None:
        self._jobs.clear()


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

    def unfinished(self, role: Role) -> list[int]:
        return [j for j in range(self.job_count)
                if self._owner[j] == role and not self._done[j]]
