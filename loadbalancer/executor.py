"""``loadbalancer.Executor``: the master in your process, each job a future.

A :class:`concurrent.futures.Executor`, as ``mpi4py.futures.MPIPoolExecutor`` is
for MPI: the master node runs on a thread of its own with its own event loop,
computes in its own worker processes, and balances with the usual slave
(``lb launch --role slave``) exactly as ``lb launch --role master`` does. Its
futures are real :class:`concurrent.futures.Future` objects, so ``wait``,
``as_completed``, ``add_done_callback``, ``asyncio.wrap_future`` and progress
bars work unchanged; ``result()`` raises the job's exception, of its own type
where this process knows it, with the remote traceback as its ``__cause__``
(as ``ProcessPoolExecutor`` does).

A job is a plain top-level function of a module (or of your script: guard its
top level with ``if __name__ == "__main__":``, as for ``multiprocessing``),
called on data (see :mod:`loadbalancer.codec`). Jobs may be submitted while
others run. There is no journal: a future dies with the process that holds it.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

from loadbalancer import codec
from loadbalancer import config as configuration
from loadbalancer.app import loop_factory
from loadbalancer.batch import Failures
from loadbalancer.config import Config
from loadbalancer.functions import Catalog
from loadbalancer.journal import Entry, Journal
from loadbalancer.messages import WorkloadSpec
from loadbalancer.outcome import Failure
from loadbalancer.tasks import FunctionTask, Task, Tasks

START_TIMEOUT = 30.0


class JobFailed(Exception):
    """A job raised an exception of a type this process does not know."""


class RemoteTraceback(Exception):
    """The traceback of a job's exception where it was raised (its ``__cause__``)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


def rebuild(failure: Failure, attempts: int, catalog: Catalog) -> Exception:
    """The exception a failed job's future raises: of the job's own type when it is a
    builtin or comes from a module this process already has, else :class:`JobFailed`.
    Nothing is imported and no constructor runs on the peer's say-so."""
    kind = _known_type(failure.type, catalog)
    error: Exception = JobFailed(failure.line())
    if kind is not None:
        try:
            error = kind.__new__(kind)
            error.args = (failure.message,)
        except Exception:  # a type that cannot be made without its constructor
            error = JobFailed(failure.line())
    error.__cause__ = RemoteTraceback(failure.traceback)
    error.add_note(f"lb: the job failed {attempts} time{'s' * (attempts != 1)}; "
                   "the traceback above is where it was raised")
    return error


def _known_type(name: str, catalog: Catalog) -> type[Exception] | None:
    found: object = None
    if "." not in name:
        found = getattr(builtins, name, None)
    for module_name, module in catalog.modules.items():
        if name.startswith(module_name + "."):
            found = module.module
            for part in name[len(module_name) + 1:].split("."):
                found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, Exception):
        return found
    return None


class CallBatch:
    """The Executor's batch: jobs as they are submitted, each with its future."""

    success = "every job succeeded"

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.failures = Failures()
        self.closed = False
        self._tasks: list[Task] = []
        self._inputs: list[bytes | None] = []  # dropped once the job has its outcome
        self.futures: list[futures.Future[Any]] = []
        self._specs: dict[str, WorkloadSpec] = {}

    @property
    def count(self) -> int:
        return len(self._tasks)

    def add(self, task: Task, data: bytes, future: futures.Future[Any]) -> int:
        self._tasks.append(task)
        self._inputs.append(data)
        self.futures.append(future)
        self._specs.setdefault(task.spec.key(), task.spec)
        return len(self._tasks) - 1

    def run(self) -> dict[str, Any]:
        return {"executor": sorted(self._specs)}

    def task(self, job: int) -> Task:
        return self._tasks[job]

    def job_data(self, job: int) -> bytes:
        data = self._inputs[job]
        assert data is not None, f"job {job} has its outcome: nothing runs it again"
        return data

    def specs(self) -> list[WorkloadSpec]:
        return list(self._specs.values())

    def claim(self, job: int, here: bool) -> bool:
        """A job that runs here is running; one sent to the slave stays pending, and can be
        cancelled, until its outcome comes back: we cannot know when the slave starts it."""
        future = self.futures[job]
        if not here:
            return not future.cancelled()
        return future.running() or future.set_running_or_notify_cancel()

    def _ended(self, job: int) -> futures.Future[Any] | None:
        """The job's future, now running, to be resolved; None if it was cancelled."""
        self._inputs[job] = None
        future = self.futures[job]
        if future.running() or future.set_running_or_notify_cancel():
            return future
        return None

    def result(self, job: int, data: bytes, offset: int | None) -> None:
        future = self._ended(job)
        if future is None:
            return
        try:
            future.set_result(codec.decode(data))
        except codec.CodecError as error:
            future.set_exception(error)

    def failed(self, job: int, failure: Failure, attempts: int, offset: int | None) -> None:
        self.failures.add(job, failure)
        future = self._ended(job)
        if future is not None:
            future.set_exception(rebuild(failure, attempts, self.catalog))

    def recovered(self, job: int, entry: Entry, offset: int) -> bool:
        raise AssertionError("an Executor keeps no journal to recover from")

    async def finish(self) -> str | list[int] | None:
        return None

    def flush(self) -> None:
        """Futures are resolved as outcomes arrive."""

    def attach(self, journal: Journal) -> None:
        raise AssertionError("an Executor keeps no journal")

    def abandon(self, why: str) -> None:
        """The node stopped before these jobs ended: their futures say so."""
        for future in self.futures:
            if not future.done() and (future.running() or future.set_running_or_notify_cancel()):
                future.set_exception(RuntimeError(why))


class Executor(futures.Executor):
    """Run functions on this process's master node and its slave; see the module doc.

    ``config``: the nodes' config file (or a :class:`~loadbalancer.config.Config`), the
    same one the slave runs with. ``workers``, ``throttle``, ``policy`` and ``retries``
    override it for this master."""

    def __init__(self, config: str | Path | Config = "lb.json", *, workers: int | None = None,
                 throttle: float | None = None, policy: str | None = None,
                 retries: int | None = None) -> None:
        if not isinstance(config, Config):
            config = configuration.load(Path(config))
        self.config = configuration.override(config, workers=workers, throttle=throttle,
                                             policy=policy, retries=retries)
        self._tasks = Tasks(Catalog())
        self._batch = CallBatch(self._tasks.catalog)
        self._lock = threading.Lock()
        self._shutdown = False
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.summary: dict[str, Any] | None = None  # the run's summary, after shutdown
        self._thread = threading.Thread(target=self._main, name="lb-master", daemon=True)
        self._thread.start()
        if not self._started.wait(START_TIMEOUT) or self._error is not None:
            raise RuntimeError(f"the lb master did not start: {self._error}") from self._error

    # ---- the caller's side ----------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` as a job; its future. Raises at once (TypeError)
        when ``fn`` is not a plain top-level function or the arguments are not data."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit after shutdown")
            try:
                task = self._tasks.function(self._tasks.catalog.ref_of(fn))
                data = codec.encode_call(args, kwargs)
            except (ValueError, codec.CodecError) as error:
                raise TypeError(f"cannot run {fn!r} as an lb job: {error}") from None
            future: futures.Future[Any] = futures.Future()
            self._loop.call_soon_threadsafe(self._add, task, data, future)
            return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            first = not self._shutdown
            self._shutdown = True
            if cancel_futures:
                for future in list(self._batch.futures):
                    future.cancel()
            if first and self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._close)
        if wait:
            self._thread.join()

    # ---- the node's thread ----------------------------------------------------------
    def _main(self) -> None:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(self._serve())

    async def _serve(self) -> None:
        from loadbalancer.master import Master
        self._loop = asyncio.get_running_loop()
        try:
            self._master = Master(self.config, tasks=self._tasks, batch=self._batch,
                                  journal=False)
            await self._master.startup()
            self._master.prestart()
        except BaseException as error:
            self._error = error
            self._started.set()
            return
        self._started.set()
        try:
            await self._master.serve()
        finally:
            self.summary = self._master.summary
            self._batch.abandon("the lb master stopped before this job ended")
            with self._lock:
                self._shutdown = True

    def _add(self, task: FunctionTask, data: bytes, future: futures.Future[Any]) -> None:
        job = self._batch.add(task, data, future)

        def cancelled(done: futures.Future[Any]) -> None:
            # Called in the thread that cancels (the caller's): the node forgets the job.
            if done.cancelled():
                self._loop.call_soon_threadsafe(self._master.forget, job)

        future.add_done_callback(cancelled)
        self._master.grow()

    def _close(self) -> None:
        self._batch.closed = True
        self._master.grow()
