"""What running one job gave: its result, or the failure that is a result too.

A job that raises is not a crash of the node: its exception becomes a
:class:`Failure` (type, message, traceback text) that travels back to the
master like a result, where it is retried or recorded (DESIGN.md 6).
"""

from __future__ import annotations

import builtins
import traceback
from dataclasses import dataclass

from loadbalancer.functions import public_name

MAX_TEXT = 64 * 1024  # characters of a failure's message or traceback kept


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " [...]"


@dataclass(frozen=True, slots=True)
class Failure:
    type: str  # "ValueError" for a builtin, "module.Class" otherwise
    message: str
    traceback: str  # the job's own frames, formatted

    @classmethod
    def of(cls, error: BaseException, skip: int = 0) -> Failure:
        """The failure ``error`` describes; ``skip`` leaves out the outermost frames of its
        traceback (the worker's own, which say nothing about the job)."""
        kind = type(error)
        name = kind.__qualname__
        if kind.__module__ != "builtins" or getattr(builtins, name, None) is not kind:
            name = f"{public_name(kind.__module__)}.{name}"
        frames = traceback.StackSummary.from_list(traceback.extract_tb(error.__traceback__)[skip:])
        text = "Traceback (most recent call last):\n" + "".join(frames.format()) \
            + "".join(traceback.format_exception_only(kind, error))
        return cls(_clip(name), _clip(str(error)), _clip(text))

    def line(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


@dataclass(frozen=True, slots=True)
class Outcome:
    """One job's end on a worker: ``result`` (the workload's bytes) or ``failure``."""

    job: int
    result: bytes | None
    failure: Failure | None = None
    seconds: float = 0.0  # compute seconds at full speed
