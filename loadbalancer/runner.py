"""The node's worker: its queue, and the slots that run it (threads for workloads, one
process per slot for function jobs) under the duty-cycle throttle.

It knows nothing of the peer or the network. The node (its ``Host``) says which queued
jobs may run (``claim``), makes a job's input when it was queued without one, and hears
of every trip's outcomes.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from loadbalancer.jobs import JobQueue
from loadbalancer.monitor import Monitor
from loadbalancer.outcome import Outcome
from loadbalancer.pool import Call, WorkerProcess
from loadbalancer.tasks import FunctionTask
from loadbalancer.worker import DutyCycle, Running, Throttle, batch_size, run_jobs


class Host(Protocol):
    def claim(self, job: int, here: bool) -> bool: ...

    def job_data(self, job: int) -> bytes: ...

    def jobs_done(self, outcomes: list[Outcome], first: bool) -> None: ...


class Runner:
    def __init__(self, host: Host, workers: int, throttle: float, *, quiet: bool) -> None:
        self.host = host
        self.throttle = Throttle(throttle)
        self.queue = JobQueue()
        self.running: dict[int, Running] = {}
        self._process_of: dict[int, WorkerProcess] = {}  # running function jobs' processes
        # One per worker slot, for function jobs; its process starts with its first job.
        # Under the dashboard a job's prints would tear the screen: ``quiet`` drops them.
        self.processes = [WorkerProcess(self.throttle,
                                        stderr=subprocess.DEVNULL if quiet else None)
                          for _ in range(workers)]
        self.monitor = Monitor(workers)
        self.failed_runs = 0  # jobs that raised here (each may be retried)
        self._ready = asyncio.Event()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="lb-worker")

    def wake(self) -> None:
        if self.queue and self.throttle.value > 0:
            self._ready.set()
        else:
            self._ready.clear()

    async def work(self, process: WorkerProcess) -> None:
        """One worker slot, for as long as the node runs."""
        cycle = DutyCycle(self.throttle)  # one per worker, across jobs
        while True:
            await self._ready.wait()
            runs = self._take_batch()
            self.wake()
            if not runs:
                continue
            task = runs[0].task
            try:
                if isinstance(task, FunctionTask):
                    # A process reports no start of its own: the trip's stands for each job.
                    started = time.monotonic()
                    for run in runs:
                        run.started = started
                    self._process_of.update((run.job, process) for run in runs)
                    outcomes = await process.run([
                        Call(run.job, task.module_spec, task.ref.function, run.data)
                        for run in runs])
                else:
                    outcomes = await run_jobs(self._executor, task.workload, runs, cycle)
            finally:
                for run in runs:
                    del self.running[run.job]
                    self._process_of.pop(run.job, None)
            ended = {outcome.job for outcome in outcomes}
            for run in reversed(runs):
                if run.job not in ended and run.requeue:
                    self.queue.push_front(run.job, run.task, run.queued_as)
            self.wake()
            self._finished(outcomes)

    def _take_batch(self) -> list[Running]:
        """Jobs from the head of the queue for one trip to a worker: of one task, as many
        as share a trip well (see batch_size)."""
        runs: list[Running] = []
        if not self.queue or self.throttle.value == 0:
            return runs
        task = self.queue.peek()
        size = batch_size(self.monitor.job_seconds, len(self.queue))
        while self.queue and len(runs) < size and self.queue.peek() is task:
            job, _, data = self.queue.pop()
            if not self.host.claim(job, here=True):
                continue
            run = Running(job, task, data if data is not None else self.host.job_data(job),
                          queued_as=data)
            runs.append(run)
            self.running[job] = run
        return runs

    def _finished(self, outcomes: list[Outcome]) -> None:
        first = self.monitor.job_seconds is None
        for outcome in outcomes:
            if outcome.failure is None:
                self.monitor.job_done(outcome.seconds)
            else:
                self.failed_runs += 1
        self.host.jobs_done(outcomes, first and self.monitor.job_seconds is not None)

    def running_elapsed(self) -> float | None:
        """Mean wall seconds the running jobs have run (those not begun count none);
        None when nothing runs."""
        if not self.running:
            return None
        now = time.monotonic()
        return sum(now - run.started for run in self.running.values()
                   if run.started is not None) / len(self.running)

    def stop_run(self, job: int) -> None:
        """Stop a job running here for good (its result came from elsewhere): a thread's
        job at its next checkpoint, a process's at once (the others on that trip go back
        to the queue)."""
        run = self.running.get(job)
        if run is None:
            return
        run.cancelled, run.requeue = True, False
        process = self._process_of.get(job)
        if process is not None:
            process.preempt()

    def preempt_all(self, requeue: bool) -> None:
        for running in self.running.values():
            running.cancelled, running.requeue = True, requeue
        for process in self.processes:
            process.preempt()

    def set_throttle(self, value: float) -> None:
        self.throttle.set(value)
        for process in self.processes:
            process.throttle_changed()
        if value == 0:
            self.preempt_all(requeue=True)  # the drain rule hands them away
        self.wake()

    async def close(self) -> None:
        self.preempt_all(requeue=False)
        await asyncio.gather(*(process.close() for process in self.processes))
        self._executor.shutdown(wait=True, cancel_futures=True)
