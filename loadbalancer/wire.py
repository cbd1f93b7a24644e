"""Datagram codec: the fixed binary header, the authentication tag and the bodies.

Pure functions of bytes; no sockets, no clock. Every datagram is::

    header (32 bytes) | body (length bytes) | tag (16 bytes)

The header is ``!2sBBBBQQQH``: magic ``LB``, version, type, flags, sender role,
sender incarnation, receiver incarnation (0 while unknown), packet number,
body length. The tag is HMAC-SHA256 over header and body, truncated to 16
bytes, keyed from the shared secret. Everything a peer acts on is inside the
tag, so a node recognises its peer by the key, not by its source address.

Decoding checks the cheap things first (size, magic, version, length) and the
tag before looking at the body, so junk costs little and forged bodies are
never parsed. Every failure raises :class:`Rejected` with a short reason that
the caller counts.
"""

from __future__ import annotations

import enum
import hmac
import struct
from dataclasses import dataclass

from loadbalancer.reliable import Fragment

MAGIC = b"LB"
VERSION = 1
HEADER = struct.Struct("!2sBBBBQQQH")
FRAGMENT_HEADER = struct.Struct("!QHH")
ACK_RANGE = struct.Struct("!QQ")
TAG_SIZE = 16
OVERHEAD = HEADER.size + TAG_SIZE
# 1,400 bytes fits any Ethernet path without IP fragmentation; loopback and
# jumbo-frame links can take up to the UDP maximum.
DEFAULT_MAX_DATAGRAM = 1400
MIN_DATAGRAM = 256
MAX_DATAGRAM = 65507


class Role(enum.IntEnum):
    MASTER = 0
    SLAVE = 1

    @property
    def peer(self) -> Role:
        return Role.SLAVE if self is Role.MASTER else Role.MASTER

    def __str__(self) -> str:
        return self.name.lower()


class Kind(enum.IntEnum):
    """Datagram types. Those from JOBS up travel on the reliable channel."""

    HELLO = 1
    WELCOME = 2
    STATE = 3
    ACK = 4
    BYE = 5
    JOBS = 16
    RESULTS = 17
    REQUEST = 18
    REFUSE = 19
    FINISH = 20
    TRACE = 21

    @property
    def reliable(self) -> bool:
        return self >= Kind.JOBS


class Rejected(Exception):
    """A datagram or message that is dropped; ``reason`` is the counter's name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Header:
    kind: Kind
    role: Role
    src: int  # sender's incarnation
    dst: int  # receiver's incarnation as the sender knows it, 0 if unknown
    number: int  # packet number: unique per sender incarnation, for replay defence


@dataclass(frozen=True, slots=True)
class Datagram:
    header: Header
    fragment: Fragment | None = None  # reliable kinds
    ranges: tuple[tuple[int, int], ...] = ()  # ACK
    body: bytes = b""  # HELLO, WELCOME, STATE, BYE


def derive_key(secret: str) -> bytes:
    # A derived key rather than the secret itself, so that the same secret
    # used for something else never yields tags valid here.
    return hmac.digest(secret.encode(), b"lb datagram key v1", "sha256")


def _tag(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")[:TAG_SIZE]


def fragment_capacity(max_datagram: int) -> int:
    """Payload bytes one fragment can carry inside a datagram of this size."""
    return max_datagram - OVERHEAD - FRAGMENT_HEADER.size


def encode(key: bytes, header: Header, *, fragment: Fragment | None = None,
           ranges: tuple[tuple[int, int], ...] = (), body: bytes = b"") -> bytes:
    if header.kind.reliable:
        if fragment is None:
            raise ValueError(f"{header.kind.name} needs a fragment")
        body = FRAGMENT_HEADER.pack(fragment.seq, fragment.index, fragment.count) + fragment.data
    elif header.kind is Kind.ACK:
        body = struct.pack("!H", len(ranges)) + b"".join(ACK_RANGE.pack(*r) for r in ranges)
    head = HEADER.pack(MAGIC, VERSION, header.kind, 0, header.role, header.src, header.dst,
                       header.number, len(body))
    return head + body + _tag(key, head + body)


def decode(key: bytes, data: bytes, max_datagram: int) -> Datagram:
    """Parse and authenticate one datagram, or raise :class:`Rejected`."""
    if len(data) < OVERHEAD:
        raise Rejected("truncated", f"{len(data)} bytes")
    if len(data) > max_datagram:
        raise Rejected("oversized", f"{len(data)} bytes")
    magic, version, kind, _flags, role, src, dst, number, length = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise Rejected("bad_magic")
    if version != VERSION:
        raise Rejected("bad_version", str(version))
    if len(data) != OVERHEAD + length:
        raise Rejected("bad_length", f"header says {length}, datagram has {len(data) - OVERHEAD}")
    signed, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
    if not hmac.compare_digest(tag, _tag(key, signed)):
        raise Rejected("bad_tag")
    try:
        header = Header(Kind(kind), Role(role), src, dst, number)
    except ValueError:
        raise Rejected("bad_type", f"type {kind} role {role}") from None
    body = signed[HEADER.size:]
    if header.kind.reliable:
        return Datagram(header, fragment=_decode_fragment(header.kind, body))
    if header.kind is Kind.ACK:
        return Datagram(header, ranges=_decode_ranges(body))
    return Datagram(header, body=body)


def _decode_fragment(kind: Kind, body: bytes) -> Fragment:
    if len(body) < FRAGMENT_HEADER.size:
        raise Rejected("malformed", "short fragment header")
    seq, index, count = FRAGMENT_HEADER.unpack_from(body)
    return Fragment(seq=seq, index=index, count=count, kind=kind,
                    data=body[FRAGMENT_HEADER.size:])


def _decode_ranges(body: bytes) -> tuple[tuple[int, int], ...]:
    if len(body) < 2:
        raise Rejected("malformed", "short ack")
    (n,) = struct.unpack_from("!H", body)
    if len(body) != 2 + n * ACK_RANGE.size:
        raise Rejected("malformed", "ack length")
    ranges = tuple(ACK_RANGE.unpack_from(body, 2 + i * ACK_RANGE.size) for i in range(n))
    if any(lo > hi for lo, hi in ranges):
        raise Rejected("malformed", "ack range")
    return ranges
