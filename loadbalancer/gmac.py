"""The datagrams' tag: AES-128-GMAC (GCM with no plaintext, the datagram as associated data).

Two implementations of one interface. ``loadbalancer._gmac`` is compiled at install time
where a C compiler and OpenSSL's headers are present, and keeps each key's cipher
contexts between datagrams; :class:`PureGmac`, through the ``cryptography`` package,
sets a context up for every call, which costs 1 to 2 µs a datagram, the largest single
step of a datagram's way through either end. Both give the same tags (a test holds them
to it); ``Gmac`` is the compiled one unless it is missing or ``LB_PURE_PYTHON`` is set in
the environment, which the tests use to run the fallback.

The nonce is the packet number, zero-padded to GCM's 96 bits: one key must never see a
number twice, which :mod:`loadbalancer.wire` ensures by a key per sender incarnation.
"""

from __future__ import annotations

import os
import struct
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_SIZE = 16
TAG_SIZE = 16
NONCE = struct.Struct("!4xQ")

Bytes = bytes | bytearray | memoryview


class Tagger(Protocol):
    def __init__(self, key: bytes) -> None:
        """A 16-byte key."""

    def sign(self, number: int, buffer: bytearray | memoryview, end: int) -> None:
        """Write the tag of ``buffer[:end]`` into ``buffer[end:end + 16]``."""

    def verify(self, number: int, data: Bytes, end: int) -> bool:
        """Whether ``data[end:end + 16]`` is the tag of ``data[:end]``."""


class PureGmac:
    """The reference and the fallback."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a GMAC key is {KEY_SIZE} bytes, not {len(key)}")
        self._aead = AESGCM(key)

    def sign(self, number: int, buffer: bytearray | memoryview, end: int) -> None:
        view = memoryview(buffer)
        _check(view, end)
        self._aead.encrypt_into(NONCE.pack(number), b"", view[:end], view[end:end + TAG_SIZE])

    def verify(self, number: int, data: Bytes, end: int) -> bool:
        view = memoryview(data)
        _check(view, end)
        try:
            self._aead.decrypt(NONCE.pack(number), view[end:end + TAG_SIZE], view[:end])
        except InvalidTag:
            return False
        return True


def _check(view: memoryview, end: int) -> None:
    if not 0 <= end <= len(view) - TAG_SIZE:
        raise ValueError(f"no {TAG_SIZE}-byte tag at {end} of {len(view)} bytes")


def _chosen() -> tuple[type[Tagger], str]:
    """The implementation to use, and what it is, in words for the log."""
    if os.environ.get("LB_PURE_PYTHON"):
        return PureGmac, "pure Python (LB_PURE_PYTHON is set)"
    try:
        from loadbalancer._gmac import Gmac as Compiled
    except ImportError as error:
        return PureGmac, f"pure Python (the compiled tag was not built at install: {error})"
    return Compiled, "the compiled tag"


Gmac, DESCRIPTION = _chosen()
COMPILED = Gmac is not PureGmac  # and with it the codec's fragment fast path (wire)
