"""Shared fixtures: two real `lb launch` processes on loopback."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from loadbalancer import local, messages
from loadbalancer.testing import loopback

RUN_TIMEOUT = 60


@dataclass
class Cluster:
    """A loopback config in a temporary directory and the nodes started on it."""

    directory: Path
    config: Path = field(init=False)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    configs: dict[str, Path] = field(default_factory=dict)  # per role, when they differ
    proxy: subprocess.Popen[bytes] | None = None

    def configure(self, **settings: Any) -> Path:
        self.config = local.write_config(self.directory, **settings)
        self.configs = {"master": self.config, "slave": self.config}
        return self.config

    def add_proxy(self, *fault_args: str) -> None:
        """Route both directions through the fault proxy."""
        self.proxy, self.configs = loopback.start_proxy(self.config, *fault_args)

    def proxy_stats(self) -> dict[str, Any]:
        """Stop the proxy and return its counters."""
        assert self.proxy is not None and self.proxy.stdout is not None
        self.proxy.terminate()
        out, _ = self.proxy.communicate(timeout=10)
        return dict(json.loads(out.decode().strip().splitlines()[-1]))

    @property
    def settings(self) -> dict[str, Any]:
        return dict(json.loads(self.config.read_text()))

    def start(self, role: str, *args: str) -> subprocess.Popen[bytes]:
        extra = list(args)
        if role == "master":
            extra += ["--result", str(self.directory / "result.json"),
                      "--trace", str(self.directory / "trace.json")]
        process = local.launch(self.configs[role], role, *extra,
                               log=self.directory / f"{role}.log")
        self.processes[role] = process
        return process

    def start_both(self, *slave_args: str) -> None:
        """The slave first, and the master once the slave listens."""
        self.start("slave", *slave_args)
        self.wait_until_up("slave")
        self.start("master")

    def wait_until_up(self, role: str, timeout: float = 30) -> None:
        try:
            local.wait_until_listening(self.configs[role], role, self.processes[role], timeout)
        except RuntimeError as error:
            pytest.fail(f"{error}:\n{self.log(role)}")

    def wait(self, timeout: float = RUN_TIMEOUT) -> dict[str, int]:
        codes = {}
        for role, process in self.processes.items():
            try:
                codes[role] = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                pytest.fail(f"{role} did not finish in {timeout}s:\n{self.log(role)}")
        return codes

    def log(self, role: str) -> str:
        path = self.directory / f"{role}.log"
        return path.read_text() if path.exists() else ""

    def result(self) -> dict[str, Any]:
        return dict(json.loads((self.directory / "result.json").read_text()))

    def trace(self) -> dict[str, Any]:
        return dict(json.loads((self.directory / "trace.json").read_text()))

    def lb(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "loadbalancer", *args],
                              capture_output=True, text=True, timeout=30)

    def status(self, role: str) -> dict[str, Any] | None:
        answer = self.lb("status", "--role", role, "--config", str(self.config), "--json")
        return json.loads(answer.stdout) if answer.returncode == 0 else None

    def wait_for(self, role: str, check: Callable[[dict[str, Any]], bool],
                 timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(role)
            if status is not None and check(status):
                return status
            time.sleep(0.1)
        pytest.fail(f"{role} never reached the expected state:\n{self.log(role)}")

    def stop(self) -> None:
        for process in [*self.processes.values(), *([self.proxy] if self.proxy else [])]:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path)
    yield running
    running.stop()


def payload_of(meta: str, blobs: bytes = b"") -> bytes:
    """A raw message payload around a meta written as JSON text, which may hold what
    json.dumps would not write (5,000 digits, nesting deeper than it goes)."""
    head = meta.encode()
    return bytes([messages.RAW]) + struct.pack("!I", len(head)) + head + blobs


_STATE = ('"throttle":1.0,"job_seconds":null,"workers":1,"queued":0,"running":0,'
          '"sent_jobs":0,"received_jobs":0')

# The STATE payloads of the issue "Nothing a peer, a neighbour or a typo does takes lb down"
# (item 4): from a peer holding the secret, each ended a master with exit 1.
ISSUE_STATES = {
    "nested 3,000 deep": payload_of(f'{{"sizes":[],{_STATE},"phase":{"[" * 3000}{"]" * 3000}}}'),
    "5,000 digits": payload_of(f'{{"sizes":[],{_STATE},"executed":{"9" * 5000}}}'),
    "queued = 10**400": payload_of(f'{{"sizes":[],{_STATE},"queued":1{"0" * 400}}}'),
    "workers = 10**300, job_seconds = 1e-320": payload_of(
        f'{{"sizes":[],{_STATE},"workers":1{"0" * 300},"job_seconds":1e-320}}'),
}
