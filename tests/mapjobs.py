"""Functions the end-to-end tests map over their inputs (named by path on both nodes)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np


def transform(i: int, blob: bytes, grid: np.ndarray, scale: float = 1.0) -> dict[str, object]:
    """Arrays, bytes, numpy scalars and nesting, all the way back."""
    return {"i": i, "reversed": blob[::-1], "grid": grid * scale, "sum": grid.sum(),
            "rows": [row for row in grid], "flag": np.bool_(i % 2), "empty": b""}


def fail_on_seven(i: int) -> int:
    if i == 7:
        raise ValueError(f"seven is not allowed (pid {os.getpid()})")
    time.sleep(0.01)
    return i * i


def die_once(i: int, marker: str) -> int:
    """The first time for i == 3, the worker process dies; the retry finds the marker."""
    path = Path(marker)
    if i == 3 and not path.exists():
        path.write_text("died")
        os._exit(7)
    return i + 100


def spin(seconds: float) -> float:
    """Pure Python that never calls back: only the worker process's pauses throttle it."""
    end = time.process_time() + seconds
    count = 0
    while time.process_time() < end:
        count += 1
    return seconds


def square(x: int) -> int:
    return x * x


def digest(blob: bytes, seconds: float) -> str:
    """Random bytes in, their hash out: job data no compression can shrink."""
    time.sleep(seconds)
    return hashlib.sha256(blob).hexdigest()
