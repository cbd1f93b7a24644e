"""The slave: runs what the master hands it and delivers every result.

A result stays held until the master acknowledges the message carrying it;
results not acknowledged when a session ends are sent again in the next one,
and the master counts each job once however often its result arrives. When a
session ends the slave drops its queue: the master takes those jobs back.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from loadbalancer.messages import (
    MESSAGE_BYTES,
    Finish,
    Jobs,
    Message,
    Refuse,
    Results,
    Trace,
    WorkloadSpec,
)
from loadbalancer.node import Node
from loadbalancer.wire import Role
from loadbalancer.workload import Workload, WorkloadError, create

RESULT_DELAY = 0.02  # gather results this long, so a burst of small jobs shares a message
LEAVE_TIMEOUT = 5.0


class Slave(Node):
    role = Role.SLAVE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held: dict[int, bytes] = {}  # results the master has not acknowledged
        self.unsent: list[int] = []
        self.in_flight: dict[int, list[int]] = {}  # message id -> jobs whose results it carries
        self.delivered = 0
        self._workloads: dict[str, Workload] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._trace_message: int | None = None
        self._trace_acked = asyncio.Event()
        self.last_done: float | None = None

    def progress(self) -> dict[str, Any]:
        return {"total": None, "finished": self.delivered}

    def peer_joined(self) -> None:
        self.phase = "processing"
        self.unsent = list(self.held)
        self._flush_results()

    def peer_lost(self, reason: str) -> None:
        if self.phase == "done":
            # The master leaves only once it holds our trace or has given up on it.
            self._trace_acked.set()
            return
        self.phase = "waiting"
        self.queue.clear()
        self.preempt_all(requeue=False)
        self.in_flight.clear()
        self.wake()

    def job_finished(self, job: int, result: bytes) -> None:
        self.last_done = time.time()
        self.held[job] = result
        self.unsent.append(job)
        if len(result) * len(self.unsent) >= MESSAGE_BYTES:
            self._flush_results()  # a full message's worth: no reason to wait
        elif self._flush_handle is None:
            self._flush_handle = self.loop.call_later(RESULT_DELAY, self._flush_results)

    def _flush_results(self) -> None:
        self._flush_handle = None
        if not self.connection.connected:
            return
        while self.unsent:
            batch: list[int] = []
            size = 0
            while self.unsent and (not batch or size + len(self.held[self.unsent[0]])
                                   <= MESSAGE_BYTES):
                job = self.unsent.pop(0)
                batch.append(job)
                size += len(self.held[job])
            message_id = self.send(Results([(job, self.held[job]) for job in batch]))
            if message_id is not None:
                self.in_flight[message_id] = batch

    def message_acked(self, message_id: int) -> None:
        for job in self.in_flight.pop(message_id, []):
            if self.held.pop(job, None) is not None:
                self.delivered += 1
        if message_id == self._trace_message:
            self._trace_acked.set()

    def handle(self, message: Message) -> None:
        if isinstance(message, Jobs):
            self._accept_jobs(message)
        elif isinstance(message, Finish) and self.phase != "done":
            self.spawn(self._leave())

    def _accept_jobs(self, message: Jobs) -> None:
        try:
            workload = self._workload(message.workload)
        except WorkloadError as error:
            self._refuse([job for job, _ in message.jobs], str(error))
            return
        bad = []
        for job, data in message.jobs:
            try:
                workload.check_job(job, data)
            except WorkloadError as error:
                bad.append(job)
                reason = str(error)
                continue
            self.queue.push(job, data)
        self.workload = workload
        self.moved_in += len(message.jobs) - len(bad)
        if bad:
            self._refuse(bad, reason)

    def _refuse(self, jobs: list[int], reason: str) -> None:
        self.refused += len(jobs)
        self.say(f"refused {len(jobs)} jobs: {reason}")
        self.send(Refuse(jobs, reason))

    def _workload(self, spec: WorkloadSpec) -> Workload:
        key = json.dumps([spec.name, spec.params], sort_keys=True)
        if key not in self._workloads:
            self._workloads[key] = create(spec.name, spec.params)
        return self._workloads[key]

    async def _leave(self) -> None:
        self.phase = "done"
        self.sample()
        stats = {"executed": self.monitor.executed, "compute_seconds": self.monitor.compute_seconds,
                 "retransmits": self.connection.retransmits,
                 "dropped": self.connection.drops(),
                 "suppressed": self.connection.suppressed, "bytes_sent": self.connection.bytes_sent,
                 "last_done": self.last_done, "refused": self.refused}
        self._trace_message = self.send(Trace(self.recorder.samples, self.recorder.events, stats))
        try:
            await asyncio.wait_for(self._trace_acked.wait(), LEAVE_TIMEOUT)
        except TimeoutError:
            self.say("master did not acknowledge the trace")
        self.say("master has every result: leaving")
        self.stop(0)
