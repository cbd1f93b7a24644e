"""What the reliable channel carries and what it tells its user: fragments, events, errors."""

from __future__ import annotations

from dataclasses import dataclass

MAX_COUNT = 65535  # fragments per message: the count travels in 16 bits
MAX_PARTS = 255  # parts of a fragment: the count travels in 8 bits
# Seqs an ack may report as "its original arrived after all", 8 bytes each: with the 64
# ranges an ack may list (16 bytes each) it stays within the default 1,400-byte datagram.
MAX_ORIGINALS = 32


@dataclass(slots=True)  # not frozen, though never changed: that would cost 5x per datagram
class Fragment:
    seq: int  # unique per channel direction, from 0, never reused
    index: int  # position in its message, from 0
    count: int  # fragments in the message, 1..65535
    kind: int  # message kind, 0..255, the same for all fragments of a message
    data: bytes | memoryview  # this fragment's slice of the payload (a view: no copy)
    part: int = 0  # which part of the fragment this datagram carries, from 0
    parts: int = 1  # the fragment was cut into this many, 1..255
    again: bool = False  # a retransmission, not the fragment's first transmission


@dataclass(frozen=True, slots=True)
class Ack:
    """What an ack tells: the seqs held, as inclusive ranges, most recent first; and
    ``originals``, seqs received again as copies proving that their first transmission
    arrived (RFC 2883's D-SACK, made exact by the ``again`` flag): a retransmission of
    one of them was spurious."""

    ranges: tuple[tuple[int, int], ...]
    originals: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A complete message arrived; delivered once per message."""

    message_id: int
    kind: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class MessageAcked:
    """The peer acknowledged every fragment of a message we sent."""

    message_id: int


Event = MessageReceived | MessageAcked


class ProtocolViolation(Exception):
    """The peer sent a fragment that cannot be right; it was dropped, nothing changed."""


class MessageTooLarge(ValueError):
    """``send`` was given a payload larger than ``max_message``."""
