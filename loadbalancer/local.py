"""Both nodes on one machine: a loopback config and node processes.

Used by ``lb demo``, the end-to-end tests and the benchmark harness, so that
they all start nodes the same way a user would.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
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
           "workload": workload, **settings}
    path = directory / "lb.json"
    path.write_text(json.dumps(raw, indent=1))
    os.chmod(path, 0o600)
    return path


def launch(config: Path, role: str, *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``lb launch`` for one role, its output going to ``log``."""
    command = [sys.executable, "-m", "loadbalancer", "launch", "--role", role,
               "--config", str(config), "--no-dashboard", *args]
    out = subprocess.DEVNULL if log is None else log.open("wb")
    try:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]
