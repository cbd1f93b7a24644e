"""The progress line a node logs every ``progress_interval`` when no dashboard shows
how far it is (under systemd, or with --no-dashboard)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from loadbalancer.logs import duration


async def report(interval: float, count: Callable[[], int], line: Callable[[float], str],
                 say: Callable[[str], None]) -> None:
    """Say ``line`` of the rate of ``count`` every ``interval`` seconds, for ever."""
    done = count()
    while True:
        await asyncio.sleep(interval)
        now = count()
        say(line((now - done) / interval))
        done = now


def node_line(executed: int, queued: int, running: int, rate: float) -> str:
    """A node's own work: ``rate`` is its jobs a second since the last line."""
    return (f"progress: {executed} jobs done here ({rate:.1f}/s), "
            f"{queued} queued, {running} running")


def master_line(done: int, total: int, rate: float, queued: int, slave: int | None) -> str:
    """The batch's: ``rate`` is its outcomes a second since the last line, ``slave`` the
    connected slave's queue (None without one)."""
    left = f", about {duration((total - done) / rate)} left" if rate > 0 else ""
    there = f", the slave {slave}" if slave is not None else ", no slave"
    return (f"progress: {done} of {total} jobs done ({done / total:.0%}), "
            f"{rate:.1f} jobs/s{left}; queued: here {queued}{there}"
            if total else "progress: no jobs yet")
