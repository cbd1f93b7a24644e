"""A master and a slave on loopback for a test or a benchmark, optionally through the fault proxy.

Through the proxy the two nodes need different configs (same secret, same runtime directory):
the master's names the proxy's front as "slave", the slave's names the proxy's back as "master".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from loadbalancer import local


def start_proxy(config: Path, *fault_args: str,
                log: Path | None = None) -> tuple[subprocess.Popen[bytes], dict[str, Path]]:
    """Put the fault proxy between the nodes of ``config``.

    Returns the proxy process and a config per role: the master's names the
    proxy's front as the slave, the slave's names its back as the master.
    """
    raw = json.loads(config.read_text())
    front, back = f"127.0.0.1:{local.free_port()}", f"127.0.0.1:{local.free_port()}"
    command = [sys.executable, "-m", "loadbalancer.testing.faultproxy", "--front", front,
               "--back", back, "--master", raw["master"], "--slave", raw["slave"], *fault_args]
    proxy = subprocess.Popen(command, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL if log is None else log.open("wb"))
    assert proxy.stdout is not None
    ready = proxy.stdout.readline().decode()
    if not ready.startswith("ready"):
        proxy.kill()
        raise RuntimeError(f"the fault proxy did not start: {ready!r}")
    configs = {}
    for role, peer, via in (("master", "slave", front), ("slave", "master", back)):
        path = config.with_name(f"lb-{role}.json")
        path.write_text(json.dumps({**raw, peer: via}, indent=1))
        os.chmod(path, 0o600)
        configs[role] = path
    return proxy, configs
