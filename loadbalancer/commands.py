"""The control channel's commands (``lb status``, ``lb throttle``): a request in, its
answer out. :mod:`control` carries them over the node's Unix socket."""

from __future__ import annotations

from typing import Any, Protocol

from loadbalancer import fields
from loadbalancer.peerstate import PeerState
from loadbalancer.status import Status
from loadbalancer.worker import Throttle


class Controlled(Protocol):
    remote: PeerState | None
    throttle: Throttle

    def status(self) -> Status: ...

    def set_throttle(self, value: float) -> None: ...


def answer(node: Controlled, request: dict[str, Any]) -> dict[str, Any]:
    command = request.get("cmd")
    if command == "status":
        return {"local": node.status().as_dict(),
                "remote": None if node.remote is None else node.remote.status}
    if command == "throttle":
        value = request.get("value")
        if not fields.finite(value):
            return {"error": f"throttle must be a number, not {value!r}"}
        if not fields.number(value, 0, 1):
            return {"error": f"throttle must be between 0 and 1, not {value}"}
        node.set_throttle(float(value))
        return {"throttle": node.throttle.value}
    return {"error": f"unknown command {command!r}"}
