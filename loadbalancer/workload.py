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

import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
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
    def check_job(self, job: int, data: bytes | memoryview) -> None:
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
    return _whole(params, key, default, 1, most)


def _bounded(params: Mapping[str, Any], key: str, default: float, low: float,
             high: float) -> float:
    value = params.get(key, default)
    if not fields.number(value, low, high):
        raise WorkloadError(f"workload.{key} must be a number from {low:g} to {high:g}, "
                            f"not {value!r:.40}")
    return float(value)


def _whole(params: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = params.get(key, default)
    if not fields.integer(value, low, high):
        raise WorkloadError(f"workload.{key} must be a whole number from {low} to {high}, "
                            f"not {value!r:.40}")
    return value


def _normal(seed: int, job: int) -> float:
    """A standard normal draw that is a function of (seed, job) alone: both nodes and the
    check of the whole get the same one without drawing every job's (a map of millions), and
    with no dependence on a library's generator, whose streams may change between versions."""
    digest = hashlib.blake2b(f"{seed}:{job}".encode(), digest_size=16).digest()
    high, low = int.from_bytes(digest[:8], "big"), int.from_bytes(digest[8:], "big")
    u1 = (high + 1) / 2**64  # (0, 1]: log is finite
    u2 = low / 2**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@register
class Vector(Workload):
    """The seed experiment: a float64 vector, each job adds a constant to its
    slice ``iterations`` times; the result must be value * (iterations + 1).

    Jobs may differ in cost (the benchmarks' `uneven` and `straggler`): with ``spread`` > 0
    job j does ``iterations`` times a lognormal multiplier of mean 1 and sigma ``spread``,
    drawn from (``seed``, j); job ``straggler`` does ``factor`` times its share. Without these
    parameters every job costs the same and the parameters are the three they always were."""

    name = "vector"
    jobs_param = "jobs"
    VALUE = 1.111111
    # Bounds on what a peer's JOBS may name; nothing is allocated from the parameters alone.
    MAX_ELEMENTS = 2**34
    MAX_JOBS = 10_000_000
    MAX_ITERATIONS = 10**9
    MAX_SPREAD = 3.0  # sigma of the cost multiplier's logarithm
    MAX_SEED = 2**32 - 1
    MAX_FACTOR = 1000
    # A multiplier is clipped to this range either way: bounded work per job whatever the draw.
    MULTIPLIER_RANGE = (1 / 64, 64.0)

    def __init__(self, elements: int, jobs: int, iterations: int, *, spread: float = 0.0,
                 seed: int = 0, straggler: int | None = None, factor: int = 1) -> None:
        if jobs > elements:
            raise WorkloadError(f"workload.jobs ({jobs}) exceeds workload.elements ({elements})")
        if straggler is not None and not 0 <= straggler < jobs:
            raise WorkloadError(f"workload.straggler ({straggler}) is not a job of 0.."
                                f"{jobs - 1}")
        self.elements, self.jobs, self.iterations = elements, jobs, iterations
        self.spread, self.seed, self.straggler, self.factor = spread, seed, straggler, factor
        self._expected: dict[int, float] = {}

    def _size(self, job: int) -> int:
        # np.array_split's rule: the first `elements % jobs` jobs get one more.
        base, extra = divmod(self.elements, self.jobs)
        return base + 1 if job < extra else base

    @property
    def uniform(self) -> bool:
        return self.spread == 0.0 and (self.straggler is None or self.factor == 1)

    def multiplier(self, job: int) -> float:
        """Job ``job``'s cost over an ordinary job's: 1 unless the costs are uneven."""
        value = 1.0
        if self.spread > 0.0:
            # Mean 1: exp(sigma z - sigma^2 / 2) for a standard normal z.
            value = math.exp(self.spread * _normal(self.seed, job) - self.spread ** 2 / 2)
            low, high = self.MULTIPLIER_RANGE
            value = min(high, max(low, value))
        if job == self.straggler:
            value *= self.factor
        return value

    def job_iterations(self, job: int) -> int:
        if self.uniform:
            return self.iterations
        scaled = round(self.iterations * self.multiplier(job))
        return min(self.MAX_ITERATIONS, max(1, scaled))

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Vector:
        unknown = set(params) - {"elements", "jobs", "iterations", "spread", "seed",
                                 "straggler", "factor"}
        if unknown:
            raise WorkloadError(f"workload: unknown key {sorted(unknown)[0]!r:.40}")
        elements = _positive_int(params, "elements", 32 * 2**20, cls.MAX_ELEMENTS)
        jobs = _positive_int(params, "jobs", 1024, cls.MAX_JOBS)
        iterations = _positive_int(params, "iterations", 12_000, cls.MAX_ITERATIONS)
        straggler = params.get("straggler")
        if straggler is not None:
            straggler = _whole(params, "straggler", 0, 0, jobs - 1)
        return cls(elements, jobs, iterations,
                   spread=_bounded(params, "spread", 0.0, 0.0, cls.MAX_SPREAD),
                   seed=_whole(params, "seed", 0, 0, cls.MAX_SEED),
                   straggler=straggler,
                   factor=_whole(params, "factor", 1, 1, cls.MAX_FACTOR))

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"elements": self.elements, "jobs": self.jobs,
                                  "iterations": self.iterations}
        # Only what differs from the default: the usual parameters stay the usual three.
        if self.spread:
            params.update(spread=self.spread, seed=self.seed)
        if self.straggler is not None:
            params.update(straggler=self.straggler, factor=self.factor)
        return params

    @property
    def job_count(self) -> int:
        return self.jobs

    def job_data(self, job: int) -> bytes:
        return np.full(self._size(job), self.VALUE).tobytes()

    def _check_size(self, job: int, data: bytes | memoryview, what: str) -> None:
        if not 0 <= job < self.jobs:
            raise WorkloadError(f"job {job} out of range 0..{self.jobs - 1}")
        if len(data) != self._size(job) * 8:
            raise WorkloadError(f"{what} of job {job} has {len(data)} bytes, "
                                f"expected {self._size(job) * 8}")

    def check_job(self, job: int, data: bytes | memoryview) -> None:
        self._check_size(job, data, "data")

    def check_result(self, job: int, data: bytes) -> None:
        self._check_size(job, data, "result")

    def run(self, job: int, data: bytes, checkpoint: Checkpoint) -> bytes:
        vector = np.frombuffer(data, dtype=np.float64).copy()
        for _ in range(self.job_iterations(job)):
            checkpoint()
            vector += self.VALUE
        return vector.tobytes()

    def expected(self, job: int | None = None) -> float:
        """What every element of job ``job``'s result is (of any job's, if costs are even)."""
        iterations = self.iterations if job is None else self.job_iterations(job)
        if iterations not in self._expected:
            self._expect([iterations])
        return self._expected[iterations]

    def _expect(self, counts: list[int]) -> None:
        # The same additions in the same order give the same rounding, so the check can be
        # exact rather than within a tolerance; Python's float addition is numpy's float64
        # addition (IEEE 754 doubles), and one pass serves every count up to the largest.
        wanted = sorted(set(counts) - set(self._expected))
        value, done = self.VALUE, 0
        for count in wanted:
            for _ in range(count - done):
                value += self.VALUE
            done = count
            self._expected[count] = value

    def _expect_all(self, jobs: Iterable[int]) -> None:
        self._expect([self.job_iterations(job) for job in jobs])

    def wrong(self, results: Mapping[int, bytes]) -> list[int]:
        self._expect_all(results)
        return [job for job, data in results.items()
                if np.any(np.frombuffer(data, dtype=np.float64) != self.expected(job))]

    def verify(self, results: Mapping[int, bytes]) -> None:
        missing = [j for j in range(self.jobs) if j not in results]
        if missing:
            raise WorkloadError(f"{len(missing)} results missing, first job {missing[0]}")
        self._expect_all(range(self.jobs) if not self.uniform else ())
        offset = 0
        for job in range(self.jobs):
            expected = self.expected(job)
            values = np.frombuffer(results[job], dtype=np.float64)
            wrong = np.flatnonzero(values != expected)
            if wrong.size:
                raise WorkloadError(f"element {offset + int(wrong[0])} is "
                                    f"{values[wrong[0]]!r}, expected {expected!r}")
            offset += values.size
