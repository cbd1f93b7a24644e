"""A node's address: HOST and PORT, as a pair and as the text of a config or a flag.

Imports nothing of the project, so that any module can name an address without a cycle:
the config reads two of them, the datagram path sends to one, the fault proxy binds four.
"""

from __future__ import annotations

Address = tuple[str, int]


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: object, key: str, *, lowest_port: int = 1) -> Address:
    """The address ``text`` writes as HOST:PORT (an IPv6 host in brackets); ValueError naming
    ``key`` if it is not one. Port 0 (``lowest_port=0``) is for binding: any free port."""
    if not isinstance(text, str) or ":" not in text:
        raise ValueError(f"{key} must be HOST:PORT, not {text!r}")
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not lowest_port <= int(port) < 65536:
        raise ValueError(f"{key} must be HOST:PORT with a port from {lowest_port} to 65535, "
                         f"not {text!r}")
    return host, int(port)
