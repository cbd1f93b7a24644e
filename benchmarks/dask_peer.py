"""The same work on Dask distributed: the peer lb is compared with (issue 4, item 3).

Two worker processes of one thread each (LocalCluster), the first labelled "master", the
second "slave". Every job is one task doing what loadbalancer.workload.Vector does (make the
slice, add 1.111111 `iterations` times) under the duty-cycle throttle of the worker it runs
on, read from the same throttle schedule the lb run follows (benchmarks.scenarios.schedule,
in wall-clock time since submission). Dask decides placement itself: its scheduler queues
root tasks and hands them to workers as threads free up, and steals between workers.

Pause: the slave worker's process is stopped with SIGSTOP and continued with SIGCONT, as lb's
slave is (Dask issue 7742: a paused worker's tasks are not rebalanced after it resumes).

Throttle 0 (drain): Dask cannot move a running task, so the stopped worker pauses itself
(Dask's state for a worker that must get no tasks), hands back the tasks queued on it, and
its running task raises `Reschedule` at its next checkpoint to be run again elsewhere.

The ideal makespan is computed as lb's master computes it: compute seconds measured inside
the tasks (at full speed, sleeps excluded), per finished job, times the number of jobs,
spread over the throttle schedule (and the pause) by benchmarks.ideal.ideal_makespan.

Needs the optional extra `peers` (`pip install -e '.[peers]'`); `available()` says whether
it is installed.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from benchmarks import ideal
from benchmarks.results import Row, overhead_us, tail_in_jobs
from benchmarks.scenarios import Bench, Size, capacity, pause_window, run_timeout, schedule
from loadbalancer.worker import DutyCycle, Preempted, Throttle
from loadbalancer.workload import Vector

ROLES = ("master", "slave")
Steps = list[tuple[float, float]]  # (wall-clock time, throttle from then on)


def available() -> bool:
    return importlib.util.find_spec("distributed") is not None


class _Worker:
    """This worker process's throttle, following the schedule of the bench being run, and
    its duty cycle, kept across tasks as lb's worker keeps it across jobs."""

    throttle = Throttle(1.0)
    cycle = DutyCycle(throttle)
    steps: tuple[tuple[float, float], ...] = ()
    worker: Any = None  # the distributed.Worker of this process

    @classmethod
    def follow(cls, worker: Any, steps: Steps) -> None:
        """Set the throttle the schedule gives now, and a thread for the changes to come."""
        key = tuple(sorted(steps))
        if key == cls.steps:
            return
        cls.steps, cls.worker = key, worker
        now = time.time()
        current = [throttle for at, throttle in key if at <= now] or [key[0][1]]
        cls.set(current[-1])
        later = [step for step in key if step[0] > now]
        threading.Thread(target=cls._apply, args=(key, later), daemon=True).start()

    @classmethod
    def _apply(cls, key: tuple[tuple[float, float], ...], later: Steps) -> None:
        for at, throttle in later:
            time.sleep(max(0.0, at - time.time()))
            if cls.steps != key:
                return  # the next bench has begun
            cls.set(throttle)

    @classmethod
    def set(cls, throttle: float) -> None:
        """Throttle 0 also stops the worker the Dask way (see `_stop`), before the running
        task notices and asks to be rescheduled, so the scheduler does not send it back."""
        if throttle == 0.0:
            stopped = threading.Event()
            cls.worker.loop.add_callback(_stop, cls.worker, stopped)
            stopped.wait(5)
        cls.throttle.set(throttle)

    @classmethod
    def reset(cls) -> None:
        cls.steps = ()
        cls.throttle.set(1.0)


def _stop(worker: Any, stopped: threading.Event | None = None) -> None:
    """On the worker's event loop: pause it (Dask's state for a worker that must get no
    tasks, as under memory pressure) and hand back the tasks queued on it but not started,
    again every 50 ms while stopped for any the scheduler sent before it knew; without both
    the scheduler keeps sending a rescheduled task straight back to it."""
    from distributed.core import Status

    if stopped is not None:
        worker.status = Status.paused
        stopped.set()
    elif worker.status != Status.paused:
        return  # resumed: the next scenario has begun
    for task in list(worker.state.tasks.values()):
        if task.state in ("ready", "constrained"):
            worker.batched_send({"op": "reschedule", "key": task.key,
                                 "stimulus_id": f"lb-bench-stop-{time.time()}"})
    worker.loop.call_later(0.05, _stop, worker)


def _resume(dask_worker: Any) -> None:
    """Between scenarios (run by Client.run on the worker's event loop): running, at 1.0."""
    from distributed.core import Status

    _Worker.reset()
    if dask_worker.status == Status.paused:
        dask_worker.status = Status.running


Params = tuple[tuple[str, Any], ...]  # the workload's parameters, hashable


@functools.cache
def _workload(params: Params) -> Vector:
    return Vector.from_params(dict(params))


@dataclass(frozen=True)
class Done:
    job: int
    result: bytes
    seconds: float  # compute seconds at full speed
    end: float  # wall clock
    role: str
    began: float = 0.0  # wall clock


def run_job(job: int, params: Params, roles: dict[str, str],
            steps: dict[str, Steps]) -> Done:
    """One task: job ``job`` of the vector workload under this worker's throttle."""
    from distributed import Reschedule, get_worker

    worker = get_worker()
    role = roles[worker.address]
    _Worker.follow(worker, steps[role])
    workload = _workload(params)
    data = workload.job_data(job)
    cycle = _Worker.cycle
    began = time.time()
    cycle.begin()
    try:
        result = workload.run(job, data, lambda: cycle.checkpoint(lambda: False))
    except Preempted:  # stopped: this worker is paused already, so it goes elsewhere
        raise Reschedule() from None
    return Done(job, result, cycle.end(), time.time(), role, began)


@contextmanager
def cluster() -> Iterator[Any]:
    """A Dask client on two single-threaded worker processes, warmed up."""
    import dask
    from distributed import Client, LocalCluster

    # Dask's statistical profiler samples every thread's stack every 10 ms, holding the GIL:
    # it made these jobs up to a third slower here. It is instrumentation, not scheduling: off
    # (lb has none). The memory monitor un-pauses a paused worker whose memory is low, which
    # would undo a stopped worker's pause (_Worker.set): memory pausing off too (these jobs
    # hold a few MB). The nannies pass this config on to the worker processes.
    quiet = dask.config.set({"distributed.worker.profile.enabled": False,
                             "distributed.worker.memory.pause": False})
    with quiet, LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                             dashboard_address=None, silence_logs=logging.ERROR) as local, \
            Client(local) as client:
        # Import numpy and this module in the workers before anything is timed.
        client.run(_workload, (("elements", 1), ("jobs", 1), ("iterations", 1)))
        yield client


def worker_roles(client: Any) -> dict[str, str]:
    client.wait_for_workers(len(ROLES), timeout=60)  # a nanny may be restarting one
    addresses = sorted(client.scheduler_info()["workers"])
    return dict(zip(addresses, ROLES, strict=True))


def run_bench(client: Any, bench: Bench, size: Size) -> tuple[Row, dict[str, Any]]:
    """Run one scenario's workload and throttles on Dask; its row and its record."""
    from distributed import as_completed

    workload = size.workload()
    params = tuple(sorted(workload.params().items()))
    changes = schedule(bench, size)
    start = time.time() + 0.05  # the schedule's origin, a moment ahead of the first task
    steps = {role: [(start + at, throttle) for at, who, throttle in changes if who == role]
             for role in ROLES}
    roles = worker_roles(client)
    pids: dict[str, int] = client.run(os.getpid)
    slave_pid = next(pids[address] for address, role in roles.items() if role == "slave")
    paused: list[tuple[float, float]] = []
    window = pause_window(bench, size)
    stopper = None
    if window is not None:
        stopper = threading.Thread(target=_pause, args=(slave_pid, start + window[0],
                                                        start + window[1], paused), daemon=True)
        stopper.start()
    futures = client.map(run_job, range(size.jobs), params=params, roles=roles, steps=steps,
                         pure=False)
    record: dict[str, Any] = {"scenario": bench.name, "policy": "dask", "steps": steps,
                              "paused": paused}
    try:
        done: list[Done] = [result for _, result in as_completed(
            futures, with_results=True, timeout=run_timeout(bench, size))]
    except TimeoutError:
        client.cancel(futures)
        return Row(bench.name, "dask", note="timed out"), record
    finally:
        if stopper is not None:
            stopper.join()  # continued, whatever happened: the next bench needs the worker
    makespan = time.time() - start
    record.update(makespan_s=makespan,
                  executed={role: sum(d.role == role for d in done) for role in ROLES})
    return _row(bench, workload, done, makespan, start, steps, paused), record


def _pause(pid: int, stop_at: float, continue_at: float,
           paused: list[tuple[float, float]]) -> None:
    """Stop the worker process ``pid`` from ``stop_at`` to ``continue_at`` (wall clock)."""
    time.sleep(max(0.0, stop_at - time.time()))
    os.kill(pid, signal.SIGSTOP)
    stopped = time.time()
    try:
        time.sleep(max(0.0, continue_at - time.time()))
    finally:
        os.kill(pid, signal.SIGCONT)
        paused.append((stopped, time.time()))


def _work(workload: Vector, done: Sequence[Done],
          paused: Sequence[tuple[float, float]]) -> float:
    """Compute seconds at full speed of every job, from the mean of the measured ones per
    unit of cost, as lb's master counts them. A task that ran across a pause is left out: the
    clock it measures its compute on went on while its process was stopped."""
    def stopped(d: Done) -> bool:
        return d.role == "slave" and any(d.began < b and d.end > a for a, b in paused)

    kept = [d for d in done if not stopped(d)] or list(done)
    units = sum(workload.job_iterations(d.job) for d in kept)
    total = sum(workload.job_iterations(job) for job in range(workload.job_count))
    return sum(d.seconds for d in kept) / units * total


def _row(bench: Bench, workload: Vector, done: Sequence[Done], makespan: float, start: float,
         steps: dict[str, Steps], paused: Sequence[tuple[float, float]]) -> Row:
    work = _work(workload, done, paused)
    best = ideal.ideal_makespan(work, start, [steps[role] for role in ROLES],
                                pauses=[(ROLES.index("slave"), a, b) for a, b in paused],
                                longest=ideal.longest_job(work, workload))
    try:
        workload.verify({d.job: d.result for d in done})
        verified, note = True, ""
    except ValueError as error:
        verified, note = False, str(error)
    ends = [max((d.end for d in done if d.role == role), default=start) for role in ROLES]
    # A node stopped for good (drain) is no node to wait for: the tail is the working one's.
    working = [end for end, role in zip(ends, ROLES, strict=True)
               if ideal.capacity_at(steps[role], float("inf")) > 0]
    tail = round(max(ends) - min(working), 3) if len(working) == len(ROLES) else 0.0
    if bench.faults is not None:
        note = note or "no faults: Dask's TCP cannot go through the UDP proxy"
    return Row(bench.name, "dask", makespan=round(makespan, 3), ideal=round(best, 3),
               ratio=round(makespan / best, 3), tail=tail, verified=verified, note=note,
               jobs=workload.job_count, tail_jobs=tail_in_jobs(tail, work, workload.job_count),
               overhead_us=overhead_us(makespan, best, capacity(bench), workload.job_count)
               if bench.per_job else None)


def run_all(benches: Sequence[tuple[Bench, Size]],
            repeat: int = 1) -> Iterator[tuple[Row, dict[str, Any]]]:
    """Each scenario, at its size, ``repeat`` times in turn on one cluster, yielded as soon as
    it is done."""
    with cluster() as client:
        for bench, size in benches:
            for _ in range(repeat):
                yield run_bench(client, bench, size)
                client.run(_resume)
