"""``lb init``: a config with a fresh secret, written so that only its owner can read it."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from loadbalancer.addresses import Address, format_address

# Both on this machine: a config that works as written, to try lb before the second machine.
DEFAULT_MASTER = "127.0.0.1:7700"
DEFAULT_SLAVE = "127.0.0.1:7701"


def new_config(master: Address, slave: Address) -> dict[str, Any]:
    """The keys both machines must share; everything else keeps its default."""
    return {"master": format_address(master), "slave": format_address(slave),
            "secret": secrets.token_urlsafe(32), "policy": "symmetric",
            "workload": {"name": "vector"}}


def write_private(path: Path, text: str, *, force: bool) -> None:
    """Write ``text`` to a file born with mode 0600: the secret is never readable by others,
    not even for a moment. Without ``force`` an existing file raises FileExistsError."""
    if not force:
        # O_EXCL: refusing to overwrite and creating are one step, so no race between them.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        return
    # An existing file keeps its mode when truncated, so write a new one and rename it over.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _host(address: Address) -> str:
    host = address[0]
    return f"[{host}]" if ":" in host else host  # scp's spelling of an IPv6 address


def instructions(path: Path, master: Address, slave: Address) -> str:
    """What to do with the new file, for the person who ran ``lb init``."""
    lines = [f"wrote {path} (mode 0600) with a fresh secret: master {format_address(master)}, "
             f"slave {format_address(slave)}"]
    launch = f"lb launch --config {path} --role"
    if master[0] == slave[0]:
        return "\n".join([
            *lines,
            f"Both nodes run on {master[0]}. For two machines: lb init --master HOST:PORT "
            "--slave HOST:PORT --force",
            "Start them (either first):", f"  {launch} slave", f"  {launch} master"])
    ports = (f"UDP port {master[1]} in on both machines (e.g. ufw allow {master[1]}/udp)"
             if master[1] == slave[1] else
             f"UDP port {master[1]} in on {master[0]} and UDP port {slave[1]} in on {slave[0]}")
    return "\n".join([
        *lines,
        "Both machines need this same file, and it holds the secret: copy it over ssh,",
        f"e.g. from the master:  scp {path} {_host(slave)}:",
        f"The firewalls must let {ports}.",
        "Then start each node (either first):",
        f"  {launch} slave     # on {slave[0]}",
        f"  {launch} master    # on {master[0]}"])
