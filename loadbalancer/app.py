"""Running one node: the event loop (uvloop when installed), signals, the UI, the metrics."""

from __future__ import annotations

import asyncio
import ctypes
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadbalancer.addresses import Address, format_address
from loadbalancer.config import Config
from loadbalancer.exits import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_TERMINATED
from loadbalancer.node import Node
from loadbalancer.tasks import Tasks
from loadbalancer.wire import Role

if TYPE_CHECKING:  # prometheus_client is imported only when metrics are asked for
    from loadbalancer.batch import Batch
    from loadbalancer.metrics import StatusSource

STOP_SIGNALS = {signal.SIGINT: (EXIT_INTERRUPTED, "interrupted (Ctrl-C): stopping"),
                signal.SIGTERM: (EXIT_TERMINATED, "stopped by SIGTERM")}
SCRAPE_TIMEOUT = 5.0  # a node whose loop cannot answer this fast fails the scrape, not hangs it
# glibc's mallopt parameters (<malloc.h>) and what the node sets them to.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 16 * 2**20
TRIM_THRESHOLD = 64 * 2**20


def tune_allocator() -> bool:
    """Keep freed datagram and message buffers for reuse; True if the allocator took it.

    A transfer allocates and frees a 64 KB buffer per datagram and one per message,
    at a thousand or more a second. glibc's defaults map large blocks fresh and hand
    freed ones back, so every buffer paid its page faults again: 60% of a 64 KB
    datagram's cost (see benchmarks/overheads.py). Fixed thresholds keep blocks up to
    16 MiB on the heap and return free memory to the system only beyond 64 MiB."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a libc without it
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def _status_source(node: Node, loop: asyncio.AbstractEventLoop) -> StatusSource:
    """node.status() for the scrape thread: it must not read the node's state while the
    event loop changes it, so the loop itself answers."""
    async def current() -> dict[str, Any] | None:
        # startup() makes the connection the status reports on; a scrape may come first.
        return node.status().as_dict() if hasattr(node, "connection") else None

    def status() -> dict[str, Any] | None:
        return asyncio.run_coroutine_threadsafe(current(), loop).result(SCRAPE_TIMEOUT)

    return status


async def _serve(config: Config, role: Role, ui: Any, metrics_address: Address | None,
                 **options: Any) -> tuple[int, Node]:
    from loadbalancer.master import Master
    from loadbalancer.slave import Slave
    node: Node = (Master(config, ui=ui, **options) if role is Role.MASTER
                  else Slave(config, ui=ui, **options))
    loop = asyncio.get_running_loop()

    def crash(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A bug in a callback must end the node, not leave it half-updated.
        loop.default_exception_handler(context)
        node.stop(EXIT_FAILURE)

    def stop(code: int, why: str) -> None:
        node.say(why)  # in the log, or in the dashboard's last frame, which stays on screen
        node.stop(code)

    loop.set_exception_handler(crash)
    for signum, (code, why) in STOP_SIGNALS.items():
        loop.add_signal_handler(signum, stop, code, why)
    if metrics_address is None:
        return await node.run(), node
    from loadbalancer import metrics
    # Bound before the node's own sockets, so a taken metrics port fails the start at once.
    server = metrics.serve(metrics_address, _status_source(node, loop))
    node.say(f"metrics at http://{format_address(server.address)}/metrics")
    try:
        return await node.run(), node
    finally:
        await loop.run_in_executor(None, server.close)  # its thread polls: up to 0.5 s


def run_node(config: Config, role: Role, *, tasks: Tasks, batch: Batch | None = None,
             dashboard: bool, trace: Path | None = None, result: Path | None = None,
             resume: bool = False, metrics_address: Address | None = None,
             log_messages: bool = False) -> tuple[int, Node]:
    """Run a node to its end; the exit code and the node (for its summary).
    ``tasks``: what the node can run. ``batch``, ``trace``, ``result`` and ``resume``
    concern the master only. ``metrics_address``: serve Prometheus metrics there.
    ``log_messages``: with the dashboard on, log its messages too (the node logs them
    itself only when it has none), for a log file."""
    tune_allocator()
    options: dict[str, Any] = {"tasks": tasks}
    if role is Role.MASTER:
        options |= {"batch": batch, "trace_path": trace, "result_path": result,
                    "resume": resume}
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        if not dashboard:
            return runner.run(_serve(config, role, None, metrics_address, **options))
        from loadbalancer.dashboard import Dashboard
        from loadbalancer.logs import LoggedMessages
        screen = Dashboard(str(role), policy=config.policy)
        ui = LoggedMessages(screen) if log_messages else screen
        with screen:
            return runner.run(_serve(config, role, ui, metrics_address, **options))
