"""lb: a two-node dynamic load balancer.

``loadbalancer.Executor`` runs functions on this process's master node and its slave
(see :mod:`loadbalancer.executor`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Executor", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the command line has no need of it.
    if name == "Executor":
        from loadbalancer.executor import Executor
        return Executor
    raise AttributeError(f"module 'loadbalancer' has no attribute {name!r}")
