"""Named workloads: what a job is, how it runs and how the whole is verified.

Most users map a function over their inputs (:mod:`functions`); a workload is
for the rest: inputs made on demand rather than read from a file, or a check of
the whole at the end. A job crosses the network as the name of a registered
workload, that workload's parameters and the job's data: never code. Both
nodes look the name up in their own registry, so a node runs only code its
operator installed. Users add workloads from a module of their own
(``--workload-module``) that defines a :class:`Workload` subclass decorated
with :func:`register`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from loadbalancer import fields

Checkpoint = Callable[[], None]


class WorkloadError(ValueError):
    """Unknown workload, bad parameters, or job data of the wrong shape."""


class Workload(ABC):
    name: ClassVar[str]
    # The parameter that sets the number of jobs, which ``--jobs`` sets; None: no such one.
    jobs_param: ClassVar[str | None] = None

    @classmethod
    @abstractmethod
    def from_params(cls, params: Mapping[str, Any]) -> Workload:
        """Validate parameters (raise WorkloadError naming the bad key)."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """JSON-able parameters that recreate this workload on the peer."""

    @property
    @abstractmethod
    def job_count(self) -> int: ...

    @abstractmethod
    def job_data(self, job: int) -> bytes:
        """The input of one job (master side), made when needed."""

    @abstractmethod
    def check_job(self, job: int, data: bytes) -> None:
        """Raise WorkloadError if ``data`` cannot be job ``job``'s input."""

    @abstractmethod
    def run(self, job: int, data: bytes, checkpoint: Checkpoint) -> bytes:
        """Compute one job. Call ``checkpoint`` often (every millisecond or so):
        it is where the throttle pauses and where a job can be taken back."""

    @abstractmethod
    def check_result(self, job: int, data: bytes) -> None:
        """Raise WorkloadError if ``data`` cannot be job ``job``'s result."""

    @abstractmethod
    def verify(self, results: Mapping[int, bytes]) -> None:
        """Raise WorkloadError describing the first wrong part of the whole."""

    def wrong(self, results: Mapping[int, bytes]) -> list[int]:
        """After a failed verify: the jobs whose results are wrong, if the workload can tell
        (they are computed once more: a result read back from a damaged journal, say)."""
        return []


REGISTRY: dict[str, type[Workload]] = {}


def register(cls: type[Workload]) -> type[Workload]:
    REGISTRY[cls.name] = cls
    return cls


def create(name: str, params: Mapping[str, Any]) -> Workload:
    try:
        cls = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise WorkloadError(f"unknown workload {name!r} (known: {known}; a module of yours "
                            "that registers one is named with --workload-module)") from None
    return cls.from_params(params)


def _positive_int(params: Mapping[str, Any], key: str, default: int, most: int) -> int:
    value = params.get(key, default)
    if not fields.integer(value, 1, most):
        raise WorkloadError(f"workload.{key} must be a whole number from 1 to {most}, "
                            f"not {value!r:.40}")
    return value


@register
class Vector(Workload):
    """The seed experiment: a float64 vector, each job adds a constant to its
    slice ``iterations`` times; the result must be value * (iterations + 1)."""

    name = "vector"
    jobs_param = "jobs"
    VALUE = 1.111111
    # Bounds on what a peer's JOBS may name; nothing is allocated from the parameters alone.
    MAX_ELEMENTS = 2**34
    MAX_JOBS = 10_000_000
    MAX_ITERATIONS = 10**9

    def __init__(self, elements: int, jobs: int, iterations: int) -> None:
        if jobs > elements:
            raise WorkloadError(f"workload.jobs ({jobs}) exceeds workload.elements ({elements})")
        self.elements, self.jobs, self.iterations = elements, jobs, iterations

    def _size(self, job: int) -> int:
        # np.array_split's rule: the first `elements % jobs` jobs get one more.
        base, extra = divmod(self.elements, self.jobs)
        return base + 1 if job < extra else base

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Vector:
        unknown = set(params) - {"elements", "jobs", "iterations"}
        if unknown:
            raise WorkloadError(f"workload: unknown key {sorted(unknown)[0]!r:.40}")
        return cls(_positive_int(params, "elements", 32 * 2**20, cls.MAX_ELEMENTS),
                   _positive_int(params, "jobs", 1024, cls.MAX_JOBS),
                   _positive_int(params, "iterations", 12_000, cls.MAX_ITERATIONS))

    def params(self) -> dict[str, Any]:
        return {"elements": self.elements, "jobs": self.jobs, "iterations": self.iterations}

    @property
    def job_count(self) -> int:
        return self.jobs

    def job_data(self, job: int) -> bytes:
        return np.full(self._size(job), self.VALUE).tobytes()

    def _check_size(self, job: int, data: bytes, what: str) -> None:
        if not 0 <= job < self.jobs:
            raise WorkloadError(f"job {job} out of range 0..{self.jobs - 1}")
        if len(data) != self._size(job) * 8:
            raise WorkloadError(f"{what} of job {job} has {len(data)} bytes, "
                                f"expected {self._size(job) * 8}")

    def check_job(self, job: int, data: bytes) -> None:
        self._check_size(job, data, "data")

    def check_result(self, job: int, data: bytes) -> None:
        self._check_size(job, data, "result")

    def run(self, job: int, data: bytes, checkpoint: Checkpoint) -> bytes:
        vector = np.frombuffer(data, dtype=np.float64).copy()
        for _ in range(self.iterations):
            checkpoint()
            vector += self.VALUE
        return vector.tobytes()

    def expected(self) -> float:
        # The same additions in the same order give the same rounding, so the
        # check can be exact rather than within a tolerance.
        probe = np.full(1, self.VALUE)
        for _ in range(self.iterations):
            probe += self.VALUE
        return float(probe[0])

    def wrong(self, results: Mapping[int, bytes]) -> list[int]:
        expected = self.expected()
        return [job for job, data in results.items()
                if np.any(np.frombuffer(data, dtype=np.float64) != expected)]

    def verify(self, results: Mapping[int, bytes]) -> None:
        missing = [j for j in range(self.jobs) if j not in results]
        if missing:
            raise WorkloadError(f"{len(missing)} results missing, first job {missing[0]}")
        expected = self.expected()
        offset = 0
        for job in range(self.jobs):
            values = np.frombuffer(results[job], dtype=np.float64)
            wrong = np.flatnonzero(values != expected)
            if wrong.size:
                raise WorkloadError(f"element {offset + int(wrong[0])} is "
                                    f"{values[wrong[0]]!r}, expected {expected!r}")
            offset += values.size
