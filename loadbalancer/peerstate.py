"""The peer's STATE, checked field by field before anything acts on it.

The bounds of the numbers the adaptor uses are the domain on which the adaptor's
arithmetic is finite (tests/test_adaptor.py drives it over all of it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadbalancer import fields
from loadbalancer.adaptor import NodeView
from loadbalancer.wire import Rejected

MAX_JOBS = 2**40  # jobs queued, running or moved in a session: far beyond any run
MAX_WORKERS = 4096
# A job's compute seconds at full speed: from a nanosecond to eleven days.
MIN_JOB_SECONDS, MAX_JOB_SECONDS = 1e-9, 1e6
# The relative standard error of that figure: beyond a hundredfold it says nothing more.
MAX_JOB_ERROR = 100.0
# How long running jobs have run: a paused node's may have run for years.
MAX_ELAPSED = 1e9


def _name(value: object) -> bool:
    return fields.text(value, fields.MAX_NAME)


def _count(value: object) -> bool:
    return fields.integer(value, 0, fields.MAX_COUNT)


def _amount(value: object) -> bool:
    return fields.number(value, 0, fields.MAX_COUNT)


# Fields shown to people (dashboard, `lb status`) and counted in the summary, but never
# acted upon; None when not valid.
_DISPLAY: dict[str, Callable[[object], bool]] = {
    "role": _name, "phase": _name, "executed": _count, "failed": _count, "cpu": _amount,
    "speed": _amount, "eta": _amount, "peer": _name, "moved_out": _count, "moved_in": _count,
    "retransmits": _count, "spurious": _count, "suppressed": _count, "bytes_sent": _count,
    "refused": _count, "policy": _name, "total": _count, "finished": _count,
    "session_executed": _count, "session_compute": _amount, "datagram": _count,
    "datagram_steps": _count, "bootstrap": _count}


def _number(meta: dict[str, Any], key: str, low: float, high: float,
            default: float | None = None) -> float:
    """A number field, within bounds; ``default`` stands in for one that is absent."""
    value = meta.get(key, default)
    if not fields.number(value, low, high):
        raise Rejected("malformed", f"state field {key!r}")
    return value


def _jobs(meta: dict[str, Any], key: str) -> int:
    value = meta.get(key)
    if not fields.integer(value, 0, MAX_JOBS):
        raise Rejected("malformed", f"state field {key!r}")
    return value


@dataclass(frozen=True, slots=True)
class PeerState:
    view: NodeView
    sent_jobs: int  # jobs the peer sent us in this session
    received_jobs: int  # jobs the peer received from us in this session
    status: dict[str, Any]

    @classmethod
    def parse(cls, meta: dict[str, Any]) -> PeerState:
        workers = meta.get("workers")
        if not fields.integer(workers, 1, MAX_WORKERS):
            raise Rejected("malformed", "state field 'workers'")
        job_seconds = None if meta.get("job_seconds") is None else \
            float(_number(meta, "job_seconds", MIN_JOB_SECONDS, MAX_JOB_SECONDS))
        elapsed = None if meta.get("running_elapsed") is None else \
            float(_number(meta, "running_elapsed", 0, MAX_ELAPSED))
        view = NodeView(queued=_jobs(meta, "queued"), running=_jobs(meta, "running"),
                        throttle=float(_number(meta, "throttle", 0, 1)), workers=workers,
                        job_seconds=job_seconds,
                        job_error=float(_number(meta, "job_error", 0, MAX_JOB_ERROR, 0.0)),
                        running_elapsed=elapsed)
        status = {key: value if valid(value := meta.get(key)) else None
                  for key, valid in _DISPLAY.items()}
        status.update(dropped=fields.counters(meta.get("dropped")), queued=view.queued,
                      running=view.running, throttle=view.throttle, workers=view.workers,
                      job_seconds=view.job_seconds, job_error=view.job_error,
                      running_elapsed=view.running_elapsed)
        return cls(view, _jobs(meta, "sent_jobs"), _jobs(meta, "received_jobs"), status)
