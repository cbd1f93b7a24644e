"""The hardware monitor: this process's CPU use and the node's measured speed."""

from __future__ import annotations

import math

import psutil

CPU_MIN_INTERVAL = 0.1  # seconds
# Jobs measured before the estimate is published: until then the peer's, or
# the default, stands in, rather than one noisy early sample.
WARM_UP = 3


class JobTimes:
    """A job's compute seconds at full speed, learnt from measured jobs: an exponentially
    weighted mean and variance (West's incremental form), so the balancer knows both how
    long a job takes and how sure that figure is.

    The first job is left out (it warms caches and the interpreter: it overstates the cost),
    and the mean is published once ``warm_up`` more are in, rather than one noisy sample.
    A second, faster average tells a drift from noise: while the two disagree (the node's own
    transfers slowed its first jobs, or its machine got busier) the figure is not sure yet.
    """

    ALPHA = 0.05  # weight of the newest job in the mean: about 40 jobs' memory
    FAST = 0.3  # the same for the average that follows a drift within a few jobs

    def __init__(self, warm_up: int = WARM_UP) -> None:
        self.warm_up = warm_up
        self.measured = 0
        self._mean: float | None = None
        self._fast = 0.0
        self._variance = 0.0

    def add(self, seconds: float) -> None:
        self.measured += 1
        if self.measured == 1:
            return
        if self._mean is None:
            self._mean = self._fast = seconds
            return
        delta = seconds - self._mean
        self._mean += self.ALPHA * delta
        self._variance = (1 - self.ALPHA) * (self._variance + self.ALPHA * delta * delta)
        self._fast += self.FAST * (seconds - self._fast)

    @property
    def mean(self) -> float | None:
        return self._mean if self.measured > self.warm_up else None

    @property
    def error(self) -> float:
        """The relative standard error of ``mean``: one job's relative spread over the
        square root of the jobs the average effectively holds (fewer early on), and the
        drift the fast average sees."""
        if self._mean is None or self._mean <= 0:
            return 0.0
        spread = math.sqrt(self._variance) / self._mean
        effective = min(self.measured - 1, (2 - self.ALPHA) / self.ALPHA)
        drift = abs(self._fast - self._mean) / self._mean
        return math.hypot(spread / math.sqrt(effective), drift)


class Monitor:
    """Speed is learnt from measured job times (:class:`JobTimes`) at full speed, so a
    throttle change does not pollute it; speed at the current throttle follows from it."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.job_times = JobTimes()
        self.executed = 0
        self.compute_seconds = 0.0
        self.cpu = 0.0
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only sets the reference point
        self._cpu_sampled = 0.0

    def job_done(self, seconds: float) -> None:
        self.executed += 1
        self.compute_seconds += seconds
        self.job_times.add(seconds)

    @property
    def job_seconds(self) -> float | None:
        return self.job_times.mean

    def sample_cpu(self, now: float) -> float:
        # Over a very short interval the figure is noise (hundreds of percent).
        if now - self._cpu_sampled >= CPU_MIN_INTERVAL:
            self.cpu = self._process.cpu_percent(None)
            self._cpu_sampled = now
        return self.cpu

    def speed(self, throttle: float) -> float | None:
        """Jobs per second at this throttle, once a job has been measured."""
        if self.job_seconds is None or self.job_seconds <= 0:
            return None
        return self.workers * throttle / self.job_seconds
