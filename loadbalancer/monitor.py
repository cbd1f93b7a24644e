"""The hardware monitor: this process's CPU use and the node's measured speed."""

from __future__ import annotations

import psutil

CPU_MIN_INTERVAL = 0.1  # seconds
# Jobs measured before the estimate is published: until then the peer's, or
# the default, stands in, rather than one noisy early sample.
WARM_UP = 3


class Monitor:
    """Speed is learnt from measured job times: ``job_seconds`` is a moving
    average of compute seconds per job at full speed, so a throttle change
    does not pollute it; speed at the current throttle follows from it."""

    ALPHA = 0.2  # weight of the newest job: adapts within a few jobs, smooths noise

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.job_seconds: float | None = None  # published once WARM_UP jobs are done
        self._estimate: float | None = None
        self.executed = 0
        self.compute_seconds = 0.0
        self.cpu = 0.0
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only sets the reference point
        self._cpu_sampled = 0.0

    def job_done(self, seconds: float) -> None:
        self.executed += 1
        self.compute_seconds += seconds
        if self.executed == 1:
            return  # the first job warms caches and the interpreter: it overstates the cost
        self._estimate = seconds if self._estimate is None else \
            self._estimate + self.ALPHA * (seconds - self._estimate)
        if self.executed > WARM_UP:
            self.job_seconds = self._estimate

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
