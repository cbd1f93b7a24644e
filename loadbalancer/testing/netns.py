"""Two network namespaces joined by a veth pair: a real Ethernet-like path between a master
and a slave on one machine, at the MTUs a test or a benchmark picks (root and `ip` needed).

Each node's address exists only inside its namespace, and the names are random, so two runs
at once do not collide and nothing is left in the host's own namespace; ``close`` (or leaving
the ``with`` block) deletes both namespaces, and the veth pair with them.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from types import TracebackType

ROLES = ("master", "slave")
DEVICES = {"master": "veth0", "slave": "veth1"}
IP_TIMEOUT = 10.0


class NamespaceError(RuntimeError):
    """The namespaces or the veth pair could not be made (no root, no `ip`, no veth)."""


def ip(*args: str) -> None:
    try:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=IP_TIMEOUT)
    except subprocess.CalledProcessError as error:
        raise NamespaceError(f"ip {' '.join(args)}: "
                             f"{error.stderr.decode(errors='replace').strip()}") from None
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NamespaceError(f"ip {' '.join(args)}: {error}") from None


def available() -> str | None:
    """Why namespaces cannot be made here, in words; None if they probably can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    return None


class Namespaces:
    """The master's namespace and the slave's, joined by a veth pair: the master's end at
    ``master_mtu``, the slave's at ``slave_mtu`` (the same unless given: unequal ends make
    a path that silently drops frames too big for the narrow end)."""

    def __init__(self, master_mtu: int = 1500, slave_mtu: int | None = None) -> None:
        self.mtus = {"master": master_mtu,
                     "slave": master_mtu if slave_mtu is None else slave_mtu}
        tag = f"{os.getpid() % 100000}{random.randrange(1000)}"
        self.names = {"master": f"lbm{tag}", "slave": f"lbs{tag}"}
        # A private range unlikely to be routed on the host: it never leaves the namespaces.
        net = f"10.{random.randrange(200, 250)}.{random.randrange(256)}"
        self.addresses = {"master": f"{net}.1", "slave": f"{net}.2"}
        self._made: list[str] = []
        try:
            self._make()
        except NamespaceError:
            self.close()
            raise

    def _make(self) -> None:
        for name in self.names.values():
            ip("netns", "add", name)
            self._made.append(name)
        ip("link", "add", DEVICES["master"], "netns", self.names["master"], "type", "veth",
           "peer", "name", DEVICES["slave"], "netns", self.names["slave"])
        for role in ROLES:
            ns, device = self.names[role], DEVICES[role]
            ip("-n", ns, "link", "set", device, "mtu", str(self.mtus[role]))
            ip("-n", ns, "addr", "add", f"{self.addresses[role]}/24", "dev", device)
            ip("-n", ns, "link", "set", device, "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def address(self, role: str, port: int) -> str:
        """``host:port`` of ``role``'s end, as a config names a node."""
        return f"{self.addresses[role]}:{port}"

    def prefix(self, role: str) -> list[str]:
        """What runs a command inside ``role``'s namespace."""
        return ["ip", "netns", "exec", self.names[role]]

    def close(self) -> None:
        """Delete the namespaces (the veth pair goes with them); idempotent."""
        while self._made:
            subprocess.run(["ip", "netns", "del", self._made.pop()], capture_output=True,
                           timeout=IP_TIMEOUT)

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
