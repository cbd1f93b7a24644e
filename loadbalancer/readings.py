"""What a node reads off itself: its status (the STATE it sends, the control channel's
answer, the metrics), a trace sample with the dashboard's frame, and the node as the
balancer weighs it. It reads and changes nothing but the samples.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from loadbalancer import adaptor
from loadbalancer.balancer import Local, Phase
from loadbalancer.config import Config
from loadbalancer.jobs import JobQueue
from loadbalancer.monitor import Monitor
from loadbalancer.peerstate import PeerState
from loadbalancer.runner import Runner
from loadbalancer.session import Connection
from loadbalancer.shipping import Shipper
from loadbalancer.status import Counts, Status
from loadbalancer.trace import Recorder
from loadbalancer.wire import Role
from loadbalancer.worker import Running, Throttle


class Read(Counts, Protocol):
    """A node, as far as its readings look at it."""

    role: Role
    phase: Phase
    config: Config
    ui: Any
    runner: Runner
    queue: JobQueue
    running: dict[int, Running]
    monitor: Monitor
    throttle: Throttle
    recorder: Recorder
    shipper: Shipper
    connection: Connection
    loop: asyncio.AbstractEventLoop
    remote: PeerState | None
    peer_left: bool

    def status(self) -> Status: ...

    def progress(self) -> tuple[int | None, int | None]: ...

    def sharing(self) -> bool: ...

    def copying(self) -> int | None: ...


def status(node: Read) -> Status:
    speed = node.monitor.speed(node.throttle.value)
    pending = len(node.queue) + len(node.running)
    eta = pending / speed if speed else (0.0 if pending == 0 else None)
    connection = node.connection
    total, finished = node.progress()
    return Status(
        role=str(node.role), phase=node.phase, queued=len(node.queue),
        running=len(node.running), running_elapsed=node.runner.running_elapsed(),
        executed=node.monitor.executed,
        failed=node.failed_runs, throttle=node.throttle.value,
        workers=node.config.workers, cpu=node.monitor.cpu, speed=speed, eta=eta,
        job_seconds=node.monitor.job_seconds, job_error=node.monitor.job_times.error,
        peer="connected" if connection.connected else
        ("waiting" if node.remote is None else "left" if node.peer_left else "lost"),
        moved_out=node.moved_out, moved_in=node.moved_in, bootstrap=node.bootstrapped,
        retransmits=connection.retransmits, spurious=connection.spurious,
        datagram=connection.datagram_size,
        datagram_steps=connection.datagram_steps, dropped=connection.drops(),
        suppressed=connection.suppressed, bytes_sent=connection.bytes_sent,
        refused=node.refused, policy=node.config.policy, total=total, finished=finished)


def sample(node: Read) -> None:
    """One trace sample (and a dashboard refresh) of the node as it is now."""
    node.monitor.sample_cpu(node.loop.time())
    status = node.status()
    node.recorder.sample(pending=status.queued + status.running,
                         throttle=node.throttle.value, cpu=node.monitor.cpu,
                         done=node.monitor.executed)
    if node.ui is not None:
        node.ui.update(status.as_dict(),
                       None if node.remote is None else node.remote.status)


def local(node: Read) -> Local:
    """The node as the balancer weighs it now."""
    channel = node.connection.channel
    view = adaptor.NodeView(len(node.queue), len(node.running), node.throttle.value,
                            node.config.workers, node.monitor.job_seconds,
                            node.monitor.job_times.error, node.runner.running_elapsed())
    link = adaptor.Link(rtt=channel.srtt or 0.001,
                        bandwidth=channel.delivery_rate or 10e6,
                        job_bytes=node.shipper.job_bytes or 1024.0)
    return Local(view, link, node.phase == Phase.PROCESSING and node.sharing(),
                 node.copying())
