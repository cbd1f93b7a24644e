"""Both nodes on one machine: a loopback config and node processes.

Used by ``lb demo`` and by :mod:`loadbalancer.testing.loopback` (the tests and the
benchmark harness), so that they all start nodes the same way a user would.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(directory: Path, *, jobs: int = 256, elements_per_job: int = 32768,
                 iterations: int | None = None, **settings: Any) -> Path:
    """A loopback config with a fresh secret and free ports, mode 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    workload: dict[str, Any] = {"name": "vector", "elements": jobs * elements_per_job,
                                "jobs": jobs}
    if iterations is not None:
        workload["iterations"] = iterations
    raw = {"master": f"127.0.0.1:{free_port()}", "slave": f"127.0.0.1:{free_port()}",
           "secret": secrets.token_urlsafe(32), "runtime_dir": str(directory / "run"),
           "journal": str(directory / "master.journal"),
           "workload": workload, **settings}
    path = directory / "lb.json"
    path.write_text(json.dumps(raw, indent=1))
    os.chmod(path, 0o600)
    return path


def launch(config: Path, role: str, *args: str, log: Path | None = None,
           prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start ``lb launch`` for one role, its output going to ``log``; ``prefix`` runs it
    elsewhere (``ip netns exec NAME``: in a network namespace of a test's)."""
    command = [*prefix, sys.executable, "-m", "loadbalancer", "launch", "--role", role,
               "--config", str(config), "--no-dashboard", *args]
    out = subprocess.DEVNULL if log is None else log.open("wb")
    try:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


def wait_until_listening(config: Path, role: str, process: subprocess.Popen[bytes],
                         timeout: float = 30.0) -> None:
    """Until the node of ``role`` started on ``config`` has opened its control
    socket (so its UDP socket is bound); RuntimeError if it exits or takes too long."""
    runtime_dir = Path(json.loads(config.read_text())["runtime_dir"])
    sock = runtime_dir / f"{role}.sock"
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if process.poll() is not None:
            raise RuntimeError(f"the {role} exited with {process.returncode} before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {role} was not listening after {timeout:.0f}s")
        time.sleep(0.02)
