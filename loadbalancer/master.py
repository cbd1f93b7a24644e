"""The master: holds the workload and the ledger, and decides when it is done.

It starts computing at once and hands half of its queue to the slave when a
session opens. When a session ends it takes back every unfinished job the
slave held or had in flight. When the ledger holds every result it verifies
the whole, gathers the slave's trace, writes the summary and both nodes leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any

from loadbalancer import measure
from loadbalancer.jobs import Ledger
from loadbalancer.journal import Journal, Recovered
from loadbalancer.messages import Finish, Jobs, Message, Refuse, Results, Trace
from loadbalancer.node import Node
from loadbalancer.wire import Role
from loadbalancer.workload import WorkloadError, create

TRACE_TIMEOUT = 5.0
JOURNAL_SYNC = 1.0  # seconds of results a crash may cost


class Master(Node):
    role = Role.MASTER

    def __init__(self, *args: Any, resume: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        spec = self.config.workload
        self.workload = create(spec.name, spec.params)
        self.ledger = Ledger(self.workload.job_count)
        self.recovered = 0
        if resume:
            self.journal, recovered = Journal.resume(self.config.journal, self.workload_spec())
            self._recover(recovered)
        else:
            self.journal = Journal.create(self.config.journal, self.workload_spec())
            for job in range(self.workload.job_count):
                self.queue.push(job)
        self.bootstrapped = 0
        self.start = time.time()
        self.slave_trace: Trace | None = None
        self._trace_received = asyncio.Event()
        self.summary: dict[str, Any] | None = None
        self.last_done: float | None = None

    def _recover(self, recovered: Recovered) -> None:
        assert self.workload is not None
        for job, result in recovered.results.items():
            with contextlib.suppress(WorkloadError):
                self.workload.check_result(job, result)
                self.ledger.record(job, result)
        self.recovered = len(self.ledger.results)
        # Jobs the slave held go last: if it is still running, its results
        # may come back before this node reaches them.
        unfinished = [j for j in range(self.ledger.job_count) if j not in self.ledger.results]
        unfinished.sort(key=lambda job: recovered.owners.get(job) is Role.SLAVE)
        for job in unfinished:
            self.queue.push(job)

    async def startup(self) -> None:
        self.phase = "processing"  # before the socket opens: a slave may join at once
        self.start = time.time()
        await super().startup()
        self.spawn(self._sync_journal())
        resumed = f", {self.recovered} finished ones recovered from the journal" \
            if self.recovered else ""
        self.say(f"{self.ledger.job_count} jobs of workload {self.workload_spec().name}{resumed}")
        self.wake()
        if self.ledger.complete:
            self.phase = "aggregating"
            self.spawn(self._finish())

    async def _sync_journal(self) -> None:
        while True:
            await asyncio.sleep(JOURNAL_SYNC)
            await self.loop.run_in_executor(None, self.journal.sync)

    async def shutdown(self) -> None:
        await super().shutdown()
        if not self.journal.closed:
            self.journal.close(finished=False)

    def progress(self) -> dict[str, Any]:
        return {"total": self.ledger.job_count, "finished": len(self.ledger.results)}

    # ---- sessions -------------------------------------------------------------------
    def peer_joined(self) -> None:
        if self.phase == "processing":
            # Nothing is known of the new slave's speed yet: half, then the adaptor corrects.
            self.bootstrapped += self.send_jobs(len(self.queue) // 2, reason="bootstrap")
        elif self.phase == "done":
            self.send(Finish())

    def peer_lost(self, reason: str) -> None:
        if self.phase == "processing":  # afterwards every result is held: nothing to take back
            self._take_back(self.ledger.unfinished(Role.SLAVE), f"{reason}: took back")

    def _take_back(self, jobs: list[int], why: str) -> None:
        jobs = [job for job in jobs if job not in self.queue and job not in self.ledger.results]
        self.ledger.assign(jobs, Role.MASTER)
        self.journal.owners(jobs, Role.MASTER)
        for job in jobs:
            self.queue.push(job)  # data made again from the workload
        if jobs:
            self.say(f"{why} {len(jobs)} jobs")
        self.wake()

    def jobs_sent(self, jobs: list[int]) -> None:
        self.ledger.assign(jobs, Role.SLAVE)
        self.journal.owners(jobs, Role.SLAVE)

    # ---- messages ---------------------------------------------------------------------
    def handle(self, message: Message) -> None:
        match message:
            case Jobs():
                self._accept_jobs(message)
            case Results(results):
                for job, result in results:
                    self._record(job, result, from_slave=True)
            case Refuse(jobs, reason):
                self.refused += len(jobs)
                valid = [job for job in jobs if 0 <= job < self.ledger.job_count]
                self._take_back(valid, f"slave refused ({reason}):")
            case Trace():
                self.slave_trace = checked_trace(message)
                self._trace_received.set()

    def _accept_jobs(self, message: Jobs) -> None:
        assert self.workload is not None
        if message.workload != self.workload_spec():
            self.connection.dropped["wrong_workload"] += 1
            self._take_back([j for j, _ in message.jobs if 0 <= j < self.ledger.job_count],
                            "slave sent jobs of another workload; took back")
            return
        for job, data in message.jobs:
            if not 0 <= job < self.ledger.job_count or job in self.queue:
                continue
            if job in self.ledger.results:
                continue
            try:
                self.workload.check_job(job, data)
            except WorkloadError:
                self.refused += 1
                self.queue.push(job)  # our own copy of its input is the authority
            else:
                self.queue.push(job, data)
            self.ledger.assign([job], Role.MASTER)
            self.journal.owners([job], Role.MASTER)
            self.moved_in += 1

    def job_finished(self, job: int, result: bytes) -> None:
        self.last_done = time.time()
        self._record(job, result, from_slave=False)

    def _record(self, job: int, result: bytes, *, from_slave: bool) -> None:
        assert self.workload is not None
        if not 0 <= job < self.ledger.job_count:
            self.connection.dropped["bad_result"] += 1
            return
        try:
            self.workload.check_result(job, result)
        except WorkloadError:
            self.connection.dropped["bad_result"] += 1
            return
        if self.ledger.record(job, result):
            self.journal.result(job, result)
        if self.ledger.complete and self.phase == "processing":
            self.phase = "aggregating"
            self.spawn(self._finish())

    # ---- the end ------------------------------------------------------------------------
    async def _finish(self) -> None:
        assert self.workload is not None
        makespan = time.time() - self.start
        self.preempt_all(requeue=False)
        self.queue.clear()
        self.say(f"every result held after {makespan:.1f}s: verifying")
        try:
            await self.loop.run_in_executor(None, self.workload.verify, self.ledger.results)
            error = None
        except WorkloadError as failure:
            error = str(failure)
        self.phase = "done"
        self.sample()
        await self.loop.run_in_executor(None, lambda: self.journal.close(finished=error is None))
        if self.connection.connected:
            self.send(Finish())
            try:
                await asyncio.wait_for(self._trace_received.wait(), TRACE_TIMEOUT)
            except TimeoutError:
                self.say("the slave's trace did not arrive")
        self.summary = self._summarise(makespan, error)
        self._write_outputs()
        self.say("verified" if error is None else f"VERIFICATION FAILED: {error}")
        self.stop(0 if error is None else 1)

    def _summarise(self, makespan: float, error: str | None) -> dict[str, Any]:
        stats = self.slave_trace.stats if self.slave_trace else {}
        executed = {"master": self.monitor.executed, "slave": int(stats.get("executed", 0))}
        compute = self.monitor.compute_seconds + float(stats.get("compute_seconds", 0.0))
        runs = executed["master"] + executed["slave"]
        work = compute / runs * self.ledger.job_count if runs else 0.0
        ideal = measure.ideal_makespan(work, self.start, self._capacity())
        dropped = self.connection.drops()
        for reason, count in dict(stats.get("dropped", {})).items():
            dropped[reason] = dropped.get(reason, 0) + int(count)
        ends = [t for t in (self.last_done, stats.get("last_done")) if isinstance(t, float)]
        return {
            "verified": error is None, "error": error, "jobs": self.ledger.job_count,
            "makespan_s": round(makespan, 3), "ideal_s": round(ideal, 3),
            "ratio": round(makespan / ideal, 3) if ideal > 0 else None,
            "tail_s": round(max(ends) - min(ends), 3) if len(ends) == 2 else None,
            "executed": executed,
            "moved": {"to_slave": self.moved_out - self.bootstrapped,
                      "to_master": self.moved_in},
            "bootstrap": self.bootstrapped,
            "retransmits": self.connection.retransmits + int(stats.get("retransmits", 0)),
            "duplicates_suppressed": self.connection.suppressed + self.ledger.duplicates
            + int(stats.get("suppressed", 0)),
            "dropped": dropped, "refused": self.refused + int(stats.get("refused", 0)),
            "bytes_sent": self.connection.bytes_sent + int(stats.get("bytes_sent", 0)),
            "policy": self.config.policy, "workload": self.workload_spec().params,
            "recovered": self.recovered,
        }

    def _capacity(self) -> list[list[tuple[float, float]]]:
        master = self.recorder.capacity_steps()
        if self.slave_trace is None:
            return [master]
        events = self.slave_trace.events
        steps = [(float(e["t"]), float(e["workers"]) * float(e["throttle"]))
                 for e in events if e.get("type") == "throttle"]
        joined = [float(e["t"]) for e in events if e.get("type") == "joined"]
        if joined and steps:
            # The slave adds capacity only from the moment it joined.
            before = [cap for t, cap in steps if t <= joined[0]]
            steps = [(joined[0], before[-1] if before else 0.0)] + \
                [(t, cap) for t, cap in steps if t > joined[0]]
        return [master, steps]

    def _write_outputs(self) -> None:
        if self.result_path is not None and self.summary is not None:
            _write_json(self.result_path, self.summary)
        if self.trace_path is not None:
            nodes = {"master": {"samples": self.recorder.samples, "events": self.recorder.events}}
            if self.slave_trace is not None:
                nodes["slave"] = {"samples": self.slave_trace.samples,
                                  "events": self.slave_trace.events}
            _write_json(self.trace_path, {"start": self.start, "policy": self.config.policy,
                                          "summary": self.summary, "nodes": nodes})


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def checked_trace(trace: Trace) -> Trace:
    """The slave's trace with what the summary and the plots rely on checked:
    records lacking a number they need are left out, counters must be numbers."""
    samples = [s for s in trace.samples if isinstance(s, dict)
               and all(_number(s.get(key)) for key in ("t", "pending", "throttle", "done"))]
    events = [e for e in trace.events if isinstance(e, dict) and _number(e.get("t"))
              and isinstance(e.get("type"), str)
              and (e["type"] != "throttle" or (_number(e.get("throttle"))
                                               and _number(e.get("workers"))))]
    stats: dict[str, Any] = {k: v for k, v in trace.stats.items() if _number(v)}
    dropped = trace.stats.get("dropped")
    if isinstance(dropped, dict):
        stats["dropped"] = {str(k): int(v) for k, v in dropped.items() if _number(v)}
    return Trace(samples, events, stats)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
