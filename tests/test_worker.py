"""The duty cycle, with a fake clock: compute t of every 100 ms window."""

from __future__ import annotations

import threading

import pytest

from loadbalancer.worker import WINDOW, DutyCycle, Preempted, Throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeThrottle(Throttle):
    """Sleeps advance the fake clock instead of waiting."""

    def __init__(self, value: float, clock: FakeClock) -> None:
        super().__init__(value)
        self.clock = clock
        self.changed = self  # type: ignore[assignment]

    def clear(self) -> None: ...

    def wait(self, seconds: float) -> bool:
        self.clock.now += seconds
        return False


def compute(cycle: DutyCycle, clock: FakeClock, seconds: float, step: float = 0.001) -> None:
    for _ in range(round(seconds / step)):
        cycle.checkpoint()
        clock.now += step


@pytest.mark.parametrize("value", [1.0, 0.7, 0.3, 0.05])
def test_throttle_is_the_share_of_wall_time_spent_computing(value: float) -> None:
    clock = FakeClock()
    throttle = FakeThrottle(value, clock)
    cycle = DutyCycle(throttle, lambda: False, clock)
    compute(cycle, clock, 2.0)
    assert cycle.active == pytest.approx(2.0, abs=0.01)
    assert 2.0 / clock.now == pytest.approx(value, rel=0.05)


def test_throttle_zero_preempts() -> None:
    clock = FakeClock()
    throttle = FakeThrottle(1.0, clock)
    cycle = DutyCycle(throttle, lambda: False, clock)
    cycle.checkpoint()
    throttle.value = 0.0
    with pytest.raises(Preempted):
        cycle.checkpoint()


def test_cancellation_preempts() -> None:
    clock = FakeClock()
    flag = {"cancelled": False}
    cycle = DutyCycle(FakeThrottle(1.0, clock), lambda: flag["cancelled"], clock)
    cycle.checkpoint()
    flag["cancelled"] = True
    with pytest.raises(Preempted):
        cycle.checkpoint()


def test_a_raised_throttle_ends_the_pause_early() -> None:
    throttle = Throttle(0.01)
    cycle = DutyCycle(throttle, lambda: False)
    cycle.window_start -= WINDOW * 0.5  # budget spent: the next checkpoint sleeps
    timer = threading.Timer(0.01, throttle.set, (1.0,))
    timer.start()
    cycle.checkpoint()
    timer.join()
    assert cycle.slept < WINDOW * 0.4


def test_out_of_range_throttle_is_refused() -> None:
    throttle = Throttle(0.5)
    with pytest.raises(ValueError):
        throttle.set(1.5)
    assert throttle.value == 0.5
