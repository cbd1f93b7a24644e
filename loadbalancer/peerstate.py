"""The peer's STATE, checked field by field before anything acts on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadbalancer.adaptor import NodeView
from loadbalancer.wire import Rejected

# Fields shown to people (dashboard, `lb status`) but never acted upon.
_DISPLAY = {"role": str, "phase": str, "executed": int, "failed": int, "cpu": float, "speed": float,
            "eta": float, "peer": str, "moved_out": int, "moved_in": int, "retransmits": int,
            "suppressed": int, "bytes_sent": int, "refused": int, "policy": str, "total": int,
            "finished": int, "dropped": dict, "datagram": int, "datagram_steps": int}


def _count(meta: dict[str, Any], key: str) -> int:
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Rejected("malformed", f"state field {key!r}")
    return value


def _fits(value: object, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


@dataclass(frozen=True, slots=True)
class PeerState:
    view: NodeView
    sent_jobs: int  # jobs the peer sent us in this session
    received_jobs: int  # jobs the peer received from us in this session
    status: dict[str, Any]

    @classmethod
    def parse(cls, meta: dict[str, Any]) -> PeerState:
        throttle = meta.get("throttle")
        if not _fits(throttle, float) or not 0 <= throttle <= 1:  # type: ignore[operator]
            raise Rejected("malformed", "state field 'throttle'")
        job_seconds = meta.get("job_seconds")
        if job_seconds is not None and (not _fits(job_seconds, float) or job_seconds <= 0):
            raise Rejected("malformed", "state field 'job_seconds'")
        workers = _count(meta, "workers")
        if workers < 1:
            raise Rejected("malformed", "state field 'workers'")
        view = NodeView(queued=_count(meta, "queued"), running=_count(meta, "running"),
                        throttle=float(throttle), workers=workers,  # type: ignore[arg-type]
                        job_seconds=None if job_seconds is None else float(job_seconds))
        status = {key: value if _fits(value := meta.get(key), kind) else None
                  for key, kind in _DISPLAY.items()}
        status.update(queued=view.queued, running=view.running, throttle=view.throttle,
                      workers=view.workers, job_seconds=view.job_seconds)
        return cls(view, _count(meta, "sent_jobs"), _count(meta, "received_jobs"), status)
