"""The master's batch: how many jobs, what each runs and on what input, where results go.

Three kinds of batch feed one engine (the master node):

- :class:`WorkloadBatch`: a registered workload (``vector`` by default), whose
  results are kept and checked as a whole at the end;
- :class:`MapBatch`: a function mapped over a JSON-lines file, whose results are
  written as JSON lines in input order while the run goes on;
- the Executor's batch (:mod:`loadbalancer.executor`), which grows while it runs
  and resolves a future per job.

A batch is told each job's final outcome once, after the journal has it, with
the offset of its record there, so a batch may drop the outcome from memory
and read it back when it needs it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from loadbalancer.journal import Entry, Journal
from loadbalancer.jsonlines import Inputs, Output
from loadbalancer.messages import WorkloadSpec
from loadbalancer.outcome import Failure
from loadbalancer.tasks import FunctionTask, Task, Tasks, WorkloadTask
from loadbalancer.workload import WorkloadError

FIRST_FAILURES = 5  # failed jobs the summary names


class Failures:
    """The jobs that failed for good: counted, the first few kept for the summary."""

    def __init__(self) -> None:
        self.count = 0
        self.first: list[dict[str, Any]] = []

    def add(self, job: int, failure: Failure) -> None:
        self.count += 1
        if len(self.first) < FIRST_FAILURES:
            self.first.append({"index": job, "error": failure.line()})


class Batch(Protocol):
    failures: Failures
    success: str  # what the master says when every job succeeded

    @property
    def count(self) -> int:
        """Jobs so far (numbered from 0)."""

    @property
    def closed(self) -> bool:
        """No more jobs will come: the run ends when every job has its final outcome."""

    def run(self) -> dict[str, Any]:
        """What the run is, as JSON: the journal's header, and part of the summary."""

    def task(self, job: int) -> Task: ...

    def job_data(self, job: int) -> bytes: ...

    def claim(self, job: int, here: bool) -> bool:
        """The job is about to run here (``here``) or to go to the slave; False: it is not
        to run at all."""

    def specs(self) -> list[WorkloadSpec]:
        """Every kind of job so far: what the slave is asked whether it can run."""

    def result(self, job: int, data: bytes, offset: int | None) -> None:
        """``job``'s result, journaled at ``offset`` (None: there is no journal)."""

    def failed(self, job: int, failure: Failure, attempts: int, offset: int | None) -> None:
        """``job`` failed for good after ``attempts`` attempts."""

    def recovered(self, job: int, entry: Entry, offset: int) -> bool:
        """A final outcome read back from the journal on ``--resume``; False if this
        batch finds it unusable (the job is then computed again)."""

    async def finish(self) -> str | list[int] | None:
        """Every job has its final outcome: write or check the whole. None if all is well,
        an error if not, or the jobs to compute again (a check of the whole found their
        results wrong, and they were not computed again already)."""

    def flush(self) -> None:
        """Make what was written so far visible (called every second)."""

    def attach(self, journal: Journal) -> None:
        """Where final outcomes can be read back from, by their offsets."""


class WorkloadBatch:
    """A registered workload's jobs; results kept in memory for its check of the whole."""

    def __init__(self, task: WorkloadTask) -> None:
        self._task = task
        self.results: dict[int, bytes] = {}
        self.failures = Failures()
        self._again: set[int] = set()  # jobs computed again after a failed check

    @classmethod
    def of(cls, tasks: Tasks, spec: WorkloadSpec) -> WorkloadBatch:
        """The batch of the workload ``spec`` names (one of TaskError if it cannot be made)."""
        task = tasks.get(spec)
        assert isinstance(task, WorkloadTask)  # a workload's spec never names a function
        return cls(task)

    success = "verified"
    closed = True

    @property
    def count(self) -> int:
        return self._task.workload.job_count

    def run(self) -> dict[str, Any]:
        return {"workload": {"name": self._task.spec.name, "params": self._task.spec.params}}

    def task(self, job: int) -> Task:
        return self._task

    def job_data(self, job: int) -> bytes:
        return self._task.workload.job_data(job)

    def claim(self, job: int, here: bool) -> bool:
        return True

    def specs(self) -> list[WorkloadSpec]:
        return [self._task.spec]

    def result(self, job: int, data: bytes, offset: int | None) -> None:
        self.results[job] = data

    def failed(self, job: int, failure: Failure, attempts: int, offset: int | None) -> None:
        self.failures.add(job, failure)

    def recovered(self, job: int, entry: Entry, offset: int) -> bool:
        if isinstance(entry, tuple):
            self.failed(job, entry[0], entry[1], offset)
            return True
        try:
            self._task.check_result(job, entry)
        except WorkloadError:
            return False
        self.results[job] = entry
        return True

    async def finish(self) -> str | list[int] | None:
        if self.failures.count:
            return None  # nothing whole to check; the failures are the run's news
        workload, loop = self._task.workload, asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, workload.verify, self.results)
        except WorkloadError as failure:
            wrong = await loop.run_in_executor(None, workload.wrong, self.results)
            again = [job for job in wrong if job not in self._again]
            if not again or len(again) < len(wrong):
                return str(failure)  # wrong once more after computing it again: it is wrong
            self._again.update(again)
            for job in again:
                del self.results[job]
            return again
        return None

    def flush(self) -> None:
        """Results stay in memory until the end."""

    def attach(self, journal: Journal) -> None:
        """Results stay in memory: nothing to read back."""


class MapBatch:
    """A function over the lines of a JSON-lines file; results to a JSON-lines output."""

    def __init__(self, task: FunctionTask, inputs: Inputs, output: Output) -> None:
        self._task = task
        self.inputs = inputs
        self.output = output
        self.failures = Failures()

    success = "every job succeeded"
    closed = True

    @property
    def count(self) -> int:
        return self.inputs.count

    def run(self) -> dict[str, Any]:
        return {"map": self._task.spec.params,
                "inputs": {"jobs": self.inputs.count, "sha256": self.inputs.sha256}}

    def task(self, job: int) -> Task:
        return self._task

    def job_data(self, job: int) -> bytes:
        return self.inputs.job_data(job)

    def claim(self, job: int, here: bool) -> bool:
        return True

    def specs(self) -> list[WorkloadSpec]:
        return [self._task.spec]

    def result(self, job: int, data: bytes, offset: int | None) -> None:
        self.output.put(job, data, offset)

    def failed(self, job: int, failure: Failure, attempts: int, offset: int | None) -> None:
        self.failures.add(job, failure)
        self.output.put(job, (failure, attempts), offset)

    def recovered(self, job: int, entry: Entry, offset: int) -> bool:
        if isinstance(entry, tuple):
            self.failures.add(job, entry[0])
        self.output.put(job, None, offset)
        return True

    async def finish(self) -> str | list[int] | None:
        while self.output.drain():
            await asyncio.sleep(0)
        self.output.close()
        return None

    def flush(self) -> None:
        self.output.flush()

    def attach(self, journal: Journal) -> None:
        self.output.read_back = journal.read
