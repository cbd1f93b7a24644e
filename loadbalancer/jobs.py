"""The local job queue and the master's ledger of who owns which job.

The master is the authority on every job: the ledger records which node
holds it and keeps the first result that arrives for it, so however often a
job is run or a result is delivered, it counts once.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from loadbalancer.wire import Role


class JobQueue:
    """Jobs waiting on this node, head first; data is None where the workload
    can make it on demand (the master's own jobs)."""

    def __init__(self) -> None:
        self._jobs: collections.OrderedDict[int, bytes | None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job: object) -> bool:
        return job in self._jobs

    def ids(self) -> list[int]:
        return list(self._jobs)

    def push(self, job: int, data: bytes | None = None) -> None:
        self._jobs[job] = data

    def push_front(self, job: int, data: bytes | None) -> None:
        self._jobs[job] = data
        self._jobs.move_to_end(job, last=False)

    def pop(self) -> tuple[int, bytes | None]:
        return self._jobs.popitem(last=False)

    def take_tail(self, count: int) -> list[tuple[int, bytes | None]]:
        """Up to ``count`` jobs from the tail: the ones this node would reach last."""
        taken = [self._jobs.popitem(last=True) for _ in range(min(count, len(self._jobs)))]
        taken.reverse()
        return taken

    def clear(self) -> None:
        self._jobs.clear()


class Ledger:
    def __init__(self, job_count: int) -> None:
        self.job_count = job_count
        self.owner = [Role.MASTER] * job_count
        self.results: dict[int, bytes] = {}
        self.duplicates = 0  # results that arrived again and were not counted

    @property
    def complete(self) -> bool:
        return len(self.results) == self.job_count

    def assign(self, jobs: Iterable[int], role: Role) -> None:
        for job in jobs:
            self.owner[job] = role

    def record(self, job: int, result: bytes) -> bool:
        """Keep the first result of a job; False if it was already held."""
        if job in self.results:
            self.duplicates += 1
            return False
        self.results[job] = result
        return True

    def unfinished(self, role: Role) -> list[int]:
        return [j for j in range(self.job_count)
                if self.owner[j] is role and j not in self.results]
