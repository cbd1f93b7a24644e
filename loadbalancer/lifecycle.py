"""A node's start-up and shutdown, and the coroutines it runs in between.

Start-up opens the session's endpoint and the control socket and starts the node's
components: the worker's slots, the samples, the state manager's periodic STATE (also
the heartbeat), the balancer's tick and, without a dashboard, the progress line.
Shutdown stops them and closes what start-up opened. The node (its ``Host``) says what
each component does; this only runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from loadbalancer import commands, control, gmac, progress
from loadbalancer.addresses import Address
from loadbalancer.balancer import Stimulus, Tick
from loadbalancer.config import Config
from loadbalancer.endpoint import Endpoint, path_max_datagram, resolve
from loadbalancer.peering import Peering
from loadbalancer.runner import Runner
from loadbalancer.session import Connection, Event
from loadbalancer.tasks import Tasks
from loadbalancer.trace import Recorder
from loadbalancer.wire import Keys, Role

log = logging.getLogger("lb")
SAMPLE_INTERVAL = 0.2


def new_incarnation() -> int:
    # Wall-clock milliseconds, so every later start has a larger one, and 20 random
    # bits below them: each incarnation has its own authentication key (see wire), and
    # the random bits keep an old key from coming back if the clock is stepped back.
    return (time.time_ns() // 1_000_000) << 20 | secrets.randbits(20)


def connect(config: Config, role: Role, peer: Address,
            on_event: Callable[[Event], None], now: float) -> tuple[Connection, Endpoint]:
    """The session with the peer at ``peer`` and the endpoint that carries it."""
    max_datagram = config.max_datagram or path_max_datagram(peer)
    log.debug("datagrams of up to %d bytes, tagged by %s", max_datagram, gmac.DESCRIPTION)
    connection = Connection(role, Keys(config.secret), peer_address=peer,
                            new_incarnation=new_incarnation, now=now,
                            max_datagram=max_datagram,
                            heartbeat_timeout=config.heartbeat_timeout)
    return connection, Endpoint(connection, on_event, offload=config.offload)


async def every(interval: float, action: Callable[[], None], *, at_once: bool = True) -> None:
    """Call ``action`` every ``interval`` seconds (the first time at once, or after one
    interval), for as long as the task runs."""
    if not at_once:
        await asyncio.sleep(interval)
    while True:
        action()
        await asyncio.sleep(interval)


class Host(commands.Controlled, Protocol):
    role: Role
    config: Config
    ui: Any
    tasks: Tasks
    runner: Runner
    recorder: Recorder
    peering: Peering
    loop: asyncio.AbstractEventLoop
    connection: Connection
    endpoint: Endpoint

    def bound(self) -> None: ...

    def sample(self) -> None: ...

    def balance(self, stimulus: Stimulus) -> None: ...

    def progress_count(self) -> int: ...

    def progress_line(self, rate: float) -> str: ...

    def prestart(self) -> None: ...

    def say(self, text: str) -> None: ...


class Lifecycle:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.stopped: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[None]] = set()
        self._control: asyncio.AbstractServer

    async def startup(self) -> None:
        host = self.host
        local = await resolve(host.config.address(host.role))
        peer = await resolve(host.config.address(host.role.peer))
        host.connection, host.endpoint = connect(host.config, host.role, peer,
                                                 host.peering.on_event, host.loop.time())
        await host.endpoint.bind(local)
        host.bound()
        self._control = await control.serve(
            control.socket_path(host.config.runtime_dir, str(host.role)),
            functools.partial(commands.answer, host))
        host.recorder.event("throttle", throttle=host.throttle.value,
                            workers=host.config.workers)
        interval = host.config.state_interval
        coroutines: list[Coroutine[Any, Any, None]] = [
            every(SAMPLE_INTERVAL, host.sample), every(interval, host.peering.send_state),
            every(interval, lambda: host.balance(Tick()), at_once=False)]
        if host.ui is None:  # under systemd or --no-dashboard, the log says how far it is
            coroutines.append(progress.report(host.config.progress_interval,
                                              host.progress_count, host.progress_line,
                                              host.say))
        coroutines += [host.runner.work(process) for process in host.runner.processes]
        for coroutine in coroutines:
            self.spawn(coroutine)
        if host.tasks.catalog.modules:  # function jobs to come: their processes start now
            host.prestart()
        host.say(f"{host.role} listening on {local[0]}:{local[1]}, peer at {peer[0]}:{peer[1]}")

    async def shutdown(self) -> None:
        host = self.host
        host.runner.preempt_all(requeue=False)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await host.runner.close()
        host.connection.say_bye()
        host.endpoint.flush()
        host.endpoint.close()
        self._control.close()
        with contextlib.suppress(FileNotFoundError):
            control.socket_path(host.config.runtime_dir, str(host.role)).unlink()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine as part of this node: cancelled when the node shuts down."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self, code: int) -> None:
        if not self.stopped.done():
            self.stopped.set_result(code)
