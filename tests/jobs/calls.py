"""User functions for tests/test_pool.py, run in worker processes (imported by path)."""

from __future__ import annotations

import os
import signal
import sys
import time


def ident(x: object) -> object:
    return x


def add(a: int, b: int = 0) -> int:
    return a + b


def fail(message: str) -> None:
    raise ValueError(message)


def leave(code: int) -> None:
    sys.exit(code)


def interrupt() -> None:
    raise KeyboardInterrupt


def die(code: int) -> None:
    os._exit(code)


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def spin(milliseconds: int) -> int:
    """Pure-Python compute that never calls back: that much of this process's CPU time."""
    end = time.process_time() + milliseconds / 1000
    while time.process_time() < end:
        pass
    return milliseconds


def forever() -> None:
    while True:
        pass


def blob(size: int) -> bytes:
    return b"\xab" * size


def chatty(x: int) -> int:
    print("hello from a job", x)
    print("more", file=sys.stdout, flush=True)
    os.write(1, b"and from the fd\n")
    return x


def unencodable() -> set[int]:
    return {1, 2}
