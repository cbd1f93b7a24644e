"""The files of a run of two nodes in one directory: the config (one per role when something
relays between them), the nodes' logs, the master's summary and trace.
:class:`loadbalancer.testing.loopback.Cluster` starts the nodes on them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from loadbalancer.addresses import Address, format_address

LOG_TAIL = 2000  # characters of a node's log that an error carries


class RunDirectory:
    """The files of a run in ``directory``."""

    config: Path  # the config both nodes share, once written

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.configs: dict[str, Path] = {}  # per role: through a proxy they differ

    @property
    def settings(self) -> dict[str, Any]:
        return dict(json.loads(self.config.read_text()))

    def route(self, front: Address, back: Address) -> None:
        """A config per role: the master sends to the slave at ``front``, the slave to the
        master at ``back``, where something (the proxy, a test's tap) relays to the node."""
        settings = self.settings
        for role, peer, via in (("master", "slave", front), ("slave", "master", back)):
            path = self.directory / f"lb-{role}.json"
            path.write_text(json.dumps({**settings, peer: format_address(via)}, indent=1))
            os.chmod(path, 0o600)
            self.configs[role] = path

    @property
    def result_path(self) -> Path:
        return self.directory / "result.json"

    @property
    def trace_path(self) -> Path:
        return self.directory / "trace.json"

    def log_path(self, role: str) -> Path:
        return self.directory / f"{role}.log"

    def log(self, role: str) -> str:
        path = self.log_path(role)
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, role: str) -> str:
        return self.log(role)[-LOG_TAIL:]

    def result(self) -> dict[str, Any] | None:
        """The master's summary; None if it wrote none."""
        return _read_json(self.result_path)

    def trace(self) -> dict[str, Any] | None:
        """The master's trace of both nodes; None if it wrote none."""
        return _read_json(self.trace_path)


def _read_json(path: Path) -> dict[str, Any] | None:
    return dict(json.loads(path.read_text())) if path.exists() else None
