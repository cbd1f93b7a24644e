"""Checks of values read from outside: the fields of the peer's messages and STATE, the
config's settings, a control request, a trace file.

JSON gives ``True`` where a number is expected, and a number of any size. Each check here
refuses bools and takes only what lies within explicit bounds, so that arithmetic on an
accepted value can neither overflow nor divide by zero. A comparison with NaN is false, so
NaN lies within no bounds.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

MAX_ID = 2**63 - 1  # a job's or a request's id: a signed 64-bit integer in any language
MAX_COUNT = 2**53  # a counter (jobs done, bytes sent) or a time: exact as a float
MAX_NAME = 200  # characters of a name: a phase, a drop reason, a module
MAX_NAMES = 64  # names in a table of counters such as ``dropped``


def number(value: object, low: float, high: float) -> TypeGuard[float]:
    """An int or a float from ``low`` to ``high``."""
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and low <= value <= high


def finite(value: object) -> TypeGuard[float]:
    """An int of any size or a finite float: a number, whatever bounds it is held to next."""
    return number(value, -math.inf, math.inf) and value not in (-math.inf, math.inf)


def integer(value: object, low: int, high: int) -> TypeGuard[int]:
    return isinstance(value, int) and number(value, low, high)


def integers(values: list[Any], low: int, high: int) -> TypeGuard[list[int]]:
    """Whether each of ``values`` is an int from ``low`` to ``high``: :func:`integer` for the
    thousands of ids in a message, in C rather than a call each. (From JSON an int is a plain
    int, so ``type is int`` refuses exactly the bools.)"""
    return set(map(type, values)) <= {int} and (
        not values or (low <= min(values) and max(values) <= high))


def text(value: object, most: int) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) <= most


def counters(value: object) -> dict[str, int]:
    """The well-formed entries of a table of counts by name, as a node's ``dropped``: none if
    it is not a table, or holds more names than any node counts."""
    if not isinstance(value, dict) or len(value) > MAX_NAMES:
        return {}
    return {name: count for name, count in value.items()
            if text(name, MAX_NAME) and integer(count, 0, MAX_COUNT)}
