"""The duty cycle, with a fake clock: a worker computes t of its time."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest

from loadbalancer.messages import WorkloadSpec
from loadbalancer.tasks import WorkloadTask
from loadbalancer.worker import (
    WINDOW,
    DutyCycle,
    Preempted,
    Running,
    Throttle,
    batch_size,
    run_jobs,
)
from loadbalancer.workload import Checkpoint, Vector, Workload, create


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeThrottle(Throttle):
    """Pauses advance the fake clock instead of waiting."""

    def __init__(self, value: float, clock: FakeClock) -> None:
        super().__init__(value)
        self.clock = clock
        self.changed = self  # type: ignore[assignment]
        self.paused = 0.0

    def clear(self) -> None: ...

    def wait(self, seconds: float) -> bool:
        self.clock.now += seconds
        self.paused += seconds
        return False


def never() -> bool:
    return False


def job(cycle: DutyCycle, clock: FakeClock, seconds: float, step: float = 0.001) -> float:
    """One job of ``seconds`` compute, with a checkpoint every ``step``."""
    cycle.begin()
    for _ in range(round(seconds / step)):
        cycle.checkpoint(never)
        clock.now += step
    return cycle.end()


@pytest.mark.parametrize("value", [1.0, 0.7, 0.3, 0.05])
def test_throttle_is_the_share_of_wall_time_spent_computing(value: float) -> None:
    clock = FakeClock()
    cycle = DutyCycle(FakeThrottle(value, clock), clock)
    assert job(cycle, clock, 2.0) == pytest.approx(2.0)
    assert 2.0 / clock.now == pytest.approx(value, rel=0.02)


def test_jobs_shorter_than_the_window_are_throttled_too() -> None:
    clock = FakeClock()
    throttle = FakeThrottle(0.3, clock)
    cycle = DutyCycle(throttle, clock)
    computed = sum(job(cycle, clock, 0.005) for _ in range(400))  # 5 ms jobs, 2 s of compute
    assert computed == pytest.approx(2.0)
    assert 2.0 / clock.now == pytest.approx(0.3, rel=0.02)


def test_waiting_for_work_is_not_counted_as_compute() -> None:
    clock = FakeClock()
    throttle = FakeThrottle(0.5, clock)
    cycle = DutyCycle(throttle, clock)
    job(cycle, clock, 0.02)
    clock.now += 10.0  # idle: no job
    assert job(cycle, clock, 0.02) == pytest.approx(0.02)
    assert throttle.paused == 0.0  # 40 ms of compute: under the 50 ms budget


def test_throttle_zero_preempts() -> None:
    clock = FakeClock()
    throttle = FakeThrottle(1.0, clock)
    cycle = DutyCycle(throttle, clock)
    cycle.checkpoint(never)
    throttle.value = 0.0
    with pytest.raises(Preempted):
        cycle.checkpoint(never)


def test_cancellation_preempts() -> None:
    clock = FakeClock()
    cycle = DutyCycle(FakeThrottle(1.0, clock), clock)
    with pytest.raises(Preempted):
        cycle.checkpoint(lambda: True)


def test_a_raised_throttle_ends_the_pause_early() -> None:
    throttle = Throttle(0.01)
    cycle = DutyCycle(throttle)
    cycle.computed = WINDOW  # a window's compute done: the next checkpoint pauses ~10 s
    timer = threading.Timer(0.01, throttle.set, (1.0,))
    timer.start()
    before = cycle.clock()
    cycle.checkpoint(never)
    timer.join()
    assert cycle.clock() - before < 1.0


def test_out_of_range_throttle_is_refused() -> None:
    throttle = Throttle(0.5)
    with pytest.raises(ValueError):
        throttle.set(1.5)
    assert throttle.value == 0.5


@pytest.mark.parametrize(("job_seconds", "queued", "size"), [
    (None, 100, 1),  # nothing measured yet: one at a time
    (0.5, 100, 1),  # long jobs: one trip each
    (0.0001, 100, 20),  # 2 ms worth of tiny jobs share a trip
    (0.000001, 1000, 64),  # capped
    (0.0001, 3, 3),  # never more than is queued
])
def test_batch_size(job_seconds: float | None, queued: int, size: int) -> None:
    assert batch_size(job_seconds, queued) == size


def _vector_runs() -> tuple[Workload, list[Running]]:
    spec = WorkloadSpec("vector", {"elements": 12, "jobs": 3, "iterations": 2})
    task = WorkloadTask(spec, create(spec.name, spec.params))
    return task.workload, [Running(j, task, task.workload.job_data(j), queued_as=None)
                           for j in range(3)]


async def test_a_batch_stops_at_the_preempted_job() -> None:
    vector, runs = _vector_runs()
    runs[1].cancelled = True
    with ThreadPoolExecutor(1) as executor:
        outcomes = await run_jobs(executor, vector, runs, DutyCycle(Throttle(1.0)))
    assert [o.job for o in outcomes] == [0]
    assert outcomes[0].result is not None and outcomes[0].failure is None
    vector.check_result(0, outcomes[0].result)


class Broken(Vector):
    def run(self, job: int, data: bytes, checkpoint: Checkpoint) -> bytes:
        if job == 1:
            raise ZeroDivisionError("job 1 divides by zero")
        return super().run(job, data, checkpoint)


async def test_a_job_that_raises_fails_alone_and_the_batch_goes_on() -> None:
    _, runs = _vector_runs()
    broken = Broken(12, 3, 2)
    with ThreadPoolExecutor(1) as executor:
        outcomes = await run_jobs(executor, broken, runs, DutyCycle(Throttle(1.0)))
    assert [o.job for o in outcomes] == [0, 1, 2]
    failure = outcomes[1].failure
    assert failure is not None and outcomes[1].result is None
    assert failure.line() == "ZeroDivisionError: job 1 divides by zero"
    assert "in run" in failure.traceback and "compute" not in failure.traceback
    assert outcomes[2].result is not None


class Typed(Vector):
    """Records the type of every input it is given."""

    seen: ClassVar[list[type]] = []

    def run(self, job: int, data: bytes, checkpoint: Checkpoint) -> bytes:
        self.seen.append(type(data))
        return super().run(job, data, checkpoint)


async def test_a_workload_is_given_bytes_when_its_input_is_a_view_of_a_message() -> None:
    _, runs = _vector_runs()
    for run in runs:
        run.data = memoryview(bytes(run.data))  # as a decoded JOBS message holds it
    typed = Typed(12, 3, 2)
    with ThreadPoolExecutor(1) as executor:
        outcomes = await run_jobs(executor, typed, runs, DutyCycle(Throttle(1.0)))
    assert typed.seen == [bytes, bytes, bytes]
    for outcome in outcomes:
        assert outcome.result is not None
        typed.check_result(outcome.job, outcome.result)
