"""A node's address: HOST and PORT.

Imports nothing of the project, so that any module can name an address without a cycle:
the config reads two of them, the datagram path sends to one, the fault proxy binds four.
"""

from __future__ import annotations

Address = tuple[str, int]
