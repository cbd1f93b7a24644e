"""The fault proxy (:mod:`loadbalancer.testing.faultproxy`) in a process of its own, as
:class:`loadbalancer.testing.loopback.Cluster` puts it between the nodes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

from loadbalancer import local
from loadbalancer.addresses import format_address
from loadbalancer.testing.faultproxy import Faults


def proxy_flags(faults: Faults) -> list[str]:
    """The proxy's command-line flags for ``faults`` (both directions), defaults left out."""
    flags: list[str] = []
    for field in dataclasses.fields(Faults):
        value = getattr(faults, field.name)
        if value != field.default:
            flags += [f"--{field.name.replace('_', '-')}", repr(value)]
    return flags


class ProxyProcess:
    """The proxy between the master at ``master`` and the slave at ``slave`` (HOST:PORT), with
    ``faults`` each way: the master is to send to ``front``, the slave to ``back``."""

    def __init__(self, faults: Faults, master: str, slave: str, seed: int | None = None) -> None:
        self.front, self.back = ("127.0.0.1", local.free_port()), ("127.0.0.1", local.free_port())
        self.stats: dict[str, Any] | None = None  # its counters, once it stopped
        seeded = [] if seed is None else ["--seed", str(seed)]
        command = [sys.executable, "-m", "loadbalancer.testing.faultproxy",
                   "--front", format_address(self.front), "--back", format_address(self.back),
                   "--master", master, "--slave", slave, *proxy_flags(faults), *seeded]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)

    def refusal(self) -> str | None:
        """None once the proxy relays; else the line it printed instead (it is killed)."""
        assert self.process.stdout is not None
        ready = self.process.stdout.readline().decode()
        if ready.startswith("ready"):
            return None
        self.process.kill()
        return ready

    def stop(self) -> dict[str, Any] | None:
        """Stop it, if it runs; its per-direction counters (SIGTERM makes it print them), None
        if it printed none."""
        if self.process.returncode is not None:
            return self.stats
        self.process.terminate()
        try:
            out, _ = self.process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            return None
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("{"):
                self.stats = json.loads(line)
        return self.stats
