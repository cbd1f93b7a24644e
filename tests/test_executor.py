"""loadbalancer.Executor: the master in this process, the slave a real `lb launch`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import loadbalancer
from loadbalancer.functions import import_spec
from loadbalancer.testing.loopback import Cluster

JOBS = Path(__file__).with_name("mapjobs.py")
jobs: Any = import_spec(str(JOBS))


@pytest.fixture
def executor(cluster: Cluster) -> Iterator[loadbalancer.Executor]:
    cluster.configure(policy="symmetric")
    cluster.start("slave", "--workload-module", str(JOBS))
    cluster.wait_until_up("slave")
    with loadbalancer.Executor(cluster.config) as running:
        yield running
    assert cluster.wait() == {"slave": 0}


def test_futures_are_the_standard_ones(executor: loadbalancer.Executor) -> None:
    futures = [executor.submit(jobs.square, i) for i in range(50)]
    assert all(isinstance(f, concurrent.futures.Future) for f in futures)
    _, pending = concurrent.futures.wait(futures, timeout=30)
    assert not pending
    assert [f.result() for f in futures] == [i * i for i in range(50)]
    assert sorted(f.result() for f in concurrent.futures.as_completed(
        [executor.submit(jobs.square, i) for i in range(20)], timeout=30)) == sorted(
        i * i for i in range(20))
    assert list(executor.map(jobs.square, range(10), timeout=30)) == [i * i for i in range(10)]


def test_callbacks_asyncio_and_submits_while_running(executor: loadbalancer.Executor) -> None:
    seen: list[int] = []
    called = threading.Event()

    def callback(future: concurrent.futures.Future[Any]) -> None:
        seen.append(future.result())
        called.set()

    executor.submit(jobs.square, 12).add_done_callback(callback)
    assert called.wait(30) and seen == [144]

    async def gather() -> list[float]:
        return await asyncio.gather(*(asyncio.wrap_future(executor.submit(jobs.spin, 0.02))
                                      for _ in range(30)))

    assert asyncio.run(gather()) == [0.02] * 30
    slow = [executor.submit(jobs.spin, 0.05) for _ in range(40)]
    time.sleep(0.5)
    more = [executor.submit(jobs.square, i) for i in range(40)]  # while the first ones run
    assert [f.result(timeout=60) for f in more] == [i * i for i in range(40)]
    assert all(f.result(timeout=60) == 0.05 for f in slow)


def test_an_exception_is_raised_again_with_the_remote_traceback(
        executor: loadbalancer.Executor) -> None:
    future = executor.submit(jobs.fail_on_seven, 7)
    with pytest.raises(ValueError, match="seven is not allowed") as caught:
        future.result(timeout=60)
    assert "in fail_on_seven" in str(caught.value.__cause__)
    assert any("3 times" in note for note in caught.value.__notes__)
    assert executor.submit(jobs.fail_on_seven, 6).result(timeout=30) == 36
    with pytest.raises(TypeError, match="cannot run"):
        executor.submit(lambda: 1)
    with pytest.raises(TypeError, match="cannot encode a set"):
        executor.submit(jobs.square, {1, 2})


def test_cancel_works_for_jobs_not_yet_started(executor: loadbalancer.Executor) -> None:
    futures = [executor.submit(jobs.spin, 0.2) for _ in range(30)]
    time.sleep(0.3)
    last = futures[-1]
    assert last.cancel() and last.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        last.result()
    assert all(f.result(timeout=60) == 0.2 for f in futures[:-1] if not f.cancelled())


def test_shutdown_can_cancel_what_has_not_started(cluster: Cluster) -> None:
    cluster.configure(policy="symmetric")
    cluster.start("slave", "--workload-module", str(JOBS))
    cluster.wait_until_up("slave")
    executor = loadbalancer.Executor(cluster.config)
    futures = [executor.submit(jobs.spin, 0.1) for _ in range(100)]
    time.sleep(0.5)
    executor.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    cancelled = sum(f.cancelled() for f in futures)
    assert 20 < cancelled < 100
    assert all(f.result() == 0.1 for f in futures if not f.cancelled())
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(jobs.square, 1)
    assert cluster.wait() == {"slave": 0}
    assert executor.summary is not None and executor.summary["failed"]["count"] == 0
