"""The error of the data codec and its JSON form, and the wording they share for refusals.

:mod:`loadbalancer.codec`, :mod:`loadbalancer.arrays` and :mod:`loadbalancer.jsonform`
raise :class:`CodecError` (which :mod:`loadbalancer.codec` exports). Inside, a check that
refuses part of a value raises :class:`_Reject` with the object at fault, and the entry point
that catches it only then looks up where in the value that object lies.
"""

from __future__ import annotations


class CodecError(ValueError):
    """A value that cannot be encoded, or bytes or JSON that do not decode to a value."""


class _Reject(Exception):
    """What is wrong (``what``) and with which object; its path is looked up only then."""

    def __init__(self, obj: object, what: str) -> None:
        super().__init__(what)
        self.obj = obj
        self.what = what


def _a(obj: object) -> str:
    name = type(obj).__name__
    return f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return _short(f"{type(exc).__name__}: {message}" if message else type(exc).__name__, 200)
