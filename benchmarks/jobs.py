"""The functions the function-job benchmarks map, on lb and on Dask alike."""

from __future__ import annotations

import time


def ident(x: int) -> int:
    """A job that is all overhead."""
    return x


def spin(seconds: float) -> list[float]:
    """Pure Python for ``seconds`` of CPU time, calling nothing back: only a pause from
    outside throttles it. Its wall and CPU seconds, measured inside."""
    wall, cpu = time.perf_counter(), time.process_time()
    end = cpu + seconds
    count = 0
    while time.process_time() < end:
        count += 1
    return [time.perf_counter() - wall, time.process_time() - cpu]


def length(blob: bytes) -> int:
    """Job data in, a few bytes out: a map whose cost is moving its inputs (the paths)."""
    return len(blob)
