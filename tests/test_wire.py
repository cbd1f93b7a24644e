"""The datagram codec: round trips, and every rejection with its reason."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadbalancer import wire
from loadbalancer.reliable import Fragment
from loadbalancer.wire import Header, Kind, Rejected, Role

KEY = wire.derive_key("a secret of some length")
HEADER = Header(Kind.STATE, Role.MASTER, src=7, dst=9, number=3)


def test_state_round_trip() -> None:
    data = wire.encode(KEY, HEADER, body=b"hello")
    assert len(data) == wire.OVERHEAD + 5
    datagram = wire.decode(KEY, data, wire.DEFAULT_MAX_DATAGRAM)
    assert datagram.header == HEADER
    assert datagram.body == b"hello"


def test_fragment_and_ack_round_trip() -> None:
    fragment = Fragment(seq=2**40, index=1, count=3, kind=Kind.JOBS, data=b"x" * 100)
    header = Header(Kind.JOBS, Role.SLAVE, 1, 2, 5)
    assert wire.decode(KEY, wire.encode(KEY, header, fragment=fragment), 1400).fragment == fragment
    ranges = ((10, 20), (1, 5))
    ack = wire.encode(KEY, Header(Kind.ACK, Role.SLAVE, 1, 2, 6), ranges=ranges)
    assert wire.decode(KEY, ack, 1400).ranges == ranges


def test_a_full_fragment_fits_the_datagram() -> None:
    capacity = wire.fragment_capacity(1400)
    fragment = Fragment(seq=0, index=0, count=1, kind=Kind.JOBS, data=bytes(capacity))
    data = wire.encode(KEY, Header(Kind.JOBS, Role.MASTER, 1, 2, 0), fragment=fragment)
    assert len(data) == 1400


def reason(data: bytes, key: bytes = KEY, limit: int = 1400) -> str:
    with pytest.raises(Rejected) as caught:
        wire.decode(key, data, limit)
    return caught.value.reason


def test_rejections_name_their_reason() -> None:
    good = wire.encode(KEY, HEADER, body=b"hello")
    assert reason(good[:20]) == "truncated"
    assert reason(good, limit=40) == "oversized"
    assert reason(b"XX" + good[2:]) == "bad_magic"
    assert reason(good[:2] + b"\x09" + good[3:]) == "bad_version"
    assert reason(good + b"!") == "bad_length"
    assert reason(good, key=wire.derive_key("another secret!!")) == "bad_tag"
    flipped = bytearray(good)
    flipped[wire.HEADER.size] ^= 1  # one bit of the body
    assert reason(bytes(flipped)) == "bad_tag"


def test_unknown_type_is_rejected_even_when_signed() -> None:
    head = wire.HEADER.pack(wire.MAGIC, wire.VERSION, 99, 0, 0, 1, 2, 3, 0)
    data = head + wire._tag(KEY, head)
    assert reason(data) == "bad_type"


def test_malformed_ack_is_rejected_after_the_tag() -> None:
    body = struct.pack("!H", 2) + wire.ACK_RANGE.pack(1, 2)  # says two ranges, holds one
    head = wire.HEADER.pack(wire.MAGIC, wire.VERSION, Kind.ACK, 0, 0, 1, 2, 3, len(body))
    assert reason(head + body + wire._tag(KEY, head + body)) == "malformed"


@given(st.binary(max_size=2000))
def test_random_bytes_are_rejected_never_crash(data: bytes) -> None:
    with pytest.raises(Rejected):
        wire.decode(KEY, data, 1400)
