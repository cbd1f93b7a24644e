"""Running one node: the event loop (uvloop when installed), signals, the UI."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadbalancer.config import Config
from loadbalancer.node import Node
from loadbalancer.wire import Role

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(message)s", datefmt="%H:%M:%S")


async def _serve(config: Config, role: Role, ui: Any, **paths: Path | None) -> tuple[int, Node]:
    from loadbalancer.master import Master
    from loadbalancer.slave import Slave
    node: Node = (Master if role is Role.MASTER else Slave)(config, ui=ui, **paths)
    loop = asyncio.get_running_loop()

    def crash(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A bug in a callback must end the node, not leave it half-updated.
        loop.default_exception_handler(context)
        node.stop(EXIT_FAILURE)

    loop.set_exception_handler(crash)
    for signum, code in ((signal.SIGINT, EXIT_INTERRUPTED), (signal.SIGTERM, EXIT_FAILURE)):
        loop.add_signal_handler(signum, node.stop, code)
    return await node.run(), node


def run_node(config: Config, role: Role, *, dashboard: bool,
             trace: Path | None = None, result: Path | None = None) -> tuple[int, Node]:
    """Run a node to its end; the exit code and the node (for its summary)."""
    ui = None
    if dashboard:
        from loadbalancer.dashboard import Dashboard
        ui = Dashboard(str(role), policy=config.policy)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        if ui is None:
            return runner.run(_serve(config, role, None, trace_path=trace, result_path=result))
        with ui:
            return runner.run(_serve(config, role, ui, trace_path=trace, result_path=result))
