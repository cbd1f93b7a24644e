"""What runs a job: a registered workload (in threads) or a user's function (in processes).

A job travels with a :class:`~loadbalancer.messages.WorkloadSpec`; each node turns
the spec into a :class:`Task` of its own, from the workloads it has registered and
the modules its operator named, or says in one line why it cannot. The spec never
makes a node import anything: a function spec is looked up in the node's
:class:`~loadbalancer.functions.Catalog`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from loadbalancer.functions import Catalog, FunctionError, FunctionRef
from loadbalancer.messages import WorkloadSpec
from loadbalancer.workload import Workload, WorkloadError, create

FUNCTION = "function"  # the spec name of function jobs; a workload cannot take it
MAX_JOB_BYTES = 64 * 2**20  # a function job's input, as the messages carry at most
TASKS_KEPT = 32  # distinct specs a node keeps ready: a peer cannot grow this without bound
# What Tasks.get raises: the one line says what is missing here and how to fix it.
TaskError = (WorkloadError, FunctionError)


@dataclass(frozen=True, slots=True)
class WorkloadTask:
    """Jobs of a registered workload, computed in the node's threads."""

    spec: WorkloadSpec
    workload: Workload

    in_process = False

    def check_job(self, job: int, data: bytes | memoryview) -> None:
        self.workload.check_job(job, data)

    def check_result(self, job: int, data: bytes) -> None:
        self.workload.check_result(job, data)


@dataclass(frozen=True, slots=True)
class FunctionTask:
    """Calls of a user's function, computed in worker processes."""

    spec: WorkloadSpec
    ref: FunctionRef
    module_spec: str  # what a worker process imports: what this node's operator named

    in_process = True

    def check_job(self, job: int, data: bytes | memoryview) -> None:
        # The input is decoded in the worker process, where a bad one fails only its job.
        if len(data) > MAX_JOB_BYTES:
            raise WorkloadError(f"input of job {job} has {len(data)} bytes")

    def check_result(self, job: int, data: bytes) -> None:
        """Results are decoded where they are used (the output, a future)."""


Task = WorkloadTask | FunctionTask


def function_spec(ref: FunctionRef) -> WorkloadSpec:
    return WorkloadSpec(FUNCTION, {"module": ref.module, "function": ref.function,
                                   "fingerprint": ref.fingerprint})


def describe(spec: WorkloadSpec) -> str:
    """How people name a kind of job: ``module:function``, or the workload's name."""
    if spec.name == FUNCTION:
        return f"{spec.params.get('module')}:{spec.params.get('function')}"
    return f"workload {spec.name!r}"


def _ref(params: dict[str, Any]) -> FunctionRef:
    fields = [params.get(key) for key in ("module", "function", "fingerprint")]
    if set(params) != {"module", "function", "fingerprint"} or not all(
            isinstance(value, str) and 0 < len(value) <= 200 for value in fields):
        raise FunctionError(f"not a function reference: {params!r:.200}")
    return FunctionRef(*fields)  # type: ignore[arg-type]


class Tasks:
    """A node's tasks by spec, made on first use from what the node itself has."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._kept: collections.OrderedDict[str, Task] = collections.OrderedDict()

    def get(self, spec: WorkloadSpec) -> Task:
        """The task for ``spec``, or one of TaskError."""
        key = spec.key()
        task = self._kept.get(key)
        if task is None:
            task = self._make(spec)
            self._kept[key] = task
            if len(self._kept) > TASKS_KEPT:
                self._kept.popitem(last=False)
        else:
            self._kept.move_to_end(key)
        return task

    def _make(self, spec: WorkloadSpec) -> Task:
        if spec.name != FUNCTION:
            return WorkloadTask(spec, create(spec.name, spec.params))
        ref = _ref(spec.params)
        return FunctionTask(spec, ref, self.catalog.resolve(ref).spec)

    def function(self, ref: FunctionRef) -> FunctionTask:
        task = self.get(function_spec(ref))
        assert isinstance(task, FunctionTask)
        return task
