"""The datagram codec: round trips, and every rejection with its reason."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadbalancer import gmac, wire
from loadbalancer.reliable import MAX_ORIGINALS, Fragment
from loadbalancer.wire import Header, Kind, Rejected, Role

KEY = wire.Keys("a secret of some length")
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
    data = wire.encode(KEY, header, fragment=fragment)
    assert wire.decode(KEY, data, 1400) == wire.Datagram(header, fragment=fragment)
    fragment_of_a_view = dataclasses.replace(fragment, data=memoryview(b"y" + b"x" * 100)[1:])
    data = wire.encode(KEY, header, fragment=fragment_of_a_view)
    assert wire.decode(KEY, data, 1400).fragment == fragment
    part = Fragment(seq=9, index=0, count=1, kind=Kind.JOBS, data=b"p" * 50, part=2, parts=3)
    data = wire.encode(KEY, header, fragment=part)
    assert wire.decode(KEY, data, 1400).fragment == part
    ranges = ((10, 20), (1, 5))
    ack = wire.encode(KEY, Header(Kind.ACK, Role.SLAVE, 1, 2, 6), ranges=ranges)
    assert wire.decode(KEY, ack, 1400).ranges == ranges


def test_hello_and_welcome_state_the_datagram_size_and_buffer_their_sender_takes() -> None:
    takes = wire.Takes(8972, 4 * 2**20)
    hello = wire.encode(KEY, Header(Kind.HELLO, Role.SLAVE, 1, 0, 0),
                        body=wire.encode_greeting(takes))
    assert wire.decode_greeting(wire.decode(KEY, hello, 1400).body) == takes
    assert wire.decode_greeting(wire.encode_greeting(wire.Takes(1472))).receive_buffer == 0
    for size in (wire.MIN_DATAGRAM - 1, wire.MAX_DATAGRAM + 1):
        with pytest.raises(Rejected, match="malformed"):
            wire.decode_greeting(wire.encode_greeting(wire.Takes(size)))


@pytest.mark.parametrize(("kind", "body"), [
    (Kind.HELLO, b""), (Kind.WELCOME, b"\x05\xdc!"), (Kind.BYE, b"x"),
    (Kind.PATH_CHALLENGE, bytes(7)), (Kind.PATH_RESPONSE, bytes(9)),
])
def test_a_body_of_the_wrong_size_is_malformed(kind: Kind, body: bytes) -> None:
    assert reason(sealed(kind, 0, body)) == "malformed"


def test_a_full_fragment_fits_the_datagram() -> None:
    capacity = wire.fragment_capacity(1400)
    fragment = Fragment(seq=0, index=0, count=1, kind=Kind.JOBS, data=bytes(capacity))
    data = wire.encode(KEY, Header(Kind.JOBS, Role.MASTER, 1, 2, 0), fragment=fragment)
    assert len(data) == 1400


def reason(data: bytes | bytearray, key: wire.Keys = KEY, limit: int = 1400) -> str:
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
    assert reason(good, key=wire.Keys("another secret!!")) == "bad_tag"
    flipped = bytearray(good)
    flipped[wire.HEADER.size] ^= 1  # one bit of the body
    assert reason(bytes(flipped)) == "bad_tag"


def sealed(kind: int, role: int, body: bytes, flags: int = 0) -> bytearray:
    """A datagram the key holder made, whatever its type and role."""
    data = bytearray(wire.OVERHEAD + len(body))
    wire.HEADER.pack_into(data, 0, wire.MAGIC, wire.VERSION, kind, flags, role, 1, 2, 3,
                          len(body))
    data[wire.HEADER.size:-wire.TAG_SIZE] = body
    KEY.sign(role, 1, 3, data, len(data) - wire.TAG_SIZE)
    return data


def test_unknown_type_or_role_is_rejected_even_when_sealed() -> None:
    assert reason(sealed(9, 0, b"")) == "bad_type"
    assert reason(sealed(99, 0, b"")) == "bad_type"
    assert reason(sealed(Kind.STATE, 7, b"")) == "bad_type"


def test_malformed_ack_is_rejected_after_the_tag() -> None:
    body = struct.pack("!H", 2) + wire.ACK_RANGE.pack(1, 2)  # says two ranges, holds one
    assert reason(sealed(Kind.ACK, 0, body)) == "malformed"
    ranges = struct.pack("!H", 1) + wire.ACK_RANGE.pack(1, 2)
    assert reason(sealed(Kind.ACK, 0, ranges)) == "malformed"  # no count of originals
    too_many = MAX_ORIGINALS + 1
    body = ranges + struct.pack("!H", too_many) + bytes(8 * too_many)
    assert reason(sealed(Kind.ACK, 0, body)) == "malformed"  # bounded, even when it fits
    assert reason(sealed(Kind.ACK, 0, ranges + struct.pack("!H", 1) + bytes(7))) == "malformed"


def test_retransmissions_are_flagged_and_acks_name_late_originals() -> None:
    header = Header(Kind.RESULTS, Role.MASTER, 1, 2, 7)
    again = Fragment(seq=4, index=0, count=1, kind=Kind.RESULTS, data=b"r", again=True)
    data = wire.encode(KEY, header, fragment=again)
    assert wire.HEADER.unpack_from(data)[3] == wire.FLAG_AGAIN
    assert wire.decode(KEY, data, 1400).fragment == again
    originals = tuple(range(MAX_ORIGINALS))
    ranges = tuple((n, n) for n in range(200, 72, -2))  # as many as an ack lists: 64
    ack = wire.encode(KEY, Header(Kind.ACK, Role.SLAVE, 1, 2, 8), ranges=ranges,
                      originals=originals)
    assert len(ack) <= wire.DEFAULT_MAX_DATAGRAM  # the largest ack fits any path
    assert wire.decode(KEY, ack, 1400)[2:4] == (ranges, originals)
    with pytest.raises(ValueError):
        wire.encode(KEY, Header(Kind.ACK, Role.SLAVE, 1, 2, 9), originals=(*originals, 99))


@pytest.mark.parametrize(("kind", "flags"), [(Kind.ACK, wire.FLAG_AGAIN),
                                             (Kind.STATE, wire.FLAG_AGAIN), (Kind.JOBS, 2)])
def test_a_flag_a_kind_does_not_take_is_malformed(kind: Kind, flags: int) -> None:
    body = (wire.FRAGMENT_HEADER.pack(0, 0, 1, 0, 1) if kind is Kind.JOBS
            else struct.pack("!HH", 0, 0) if kind is Kind.ACK else b"")
    assert reason(sealed(kind, 0, body, flags)) == "malformed"


def test_each_sender_incarnation_has_its_own_key() -> None:
    data = wire.encode(KEY, HEADER, body=b"same")
    other = wire.encode(KEY, HEADER._replace(src=8), body=b"same")
    assert data[-wire.TAG_SIZE:] != other[-wire.TAG_SIZE:]
    # A datagram moved to another incarnation's name does not authenticate.
    moved = bytearray(data)
    wire.HEADER.pack_into(moved, 0, wire.MAGIC, wire.VERSION, Kind.STATE, 0, Role.MASTER,
                          8, 9, 3, 4)
    assert reason(bytes(moved)) == "bad_tag"


def test_a_forged_datagram_does_not_evict_known_keys() -> None:
    keys = wire.Keys("a secret of some length")
    genuine = wire.encode(keys, HEADER, body=b"x")
    forger = wire.Keys("not the secret")
    for src in range(100, 100 + 2 * wire.MAX_CIPHERS):
        with pytest.raises(Rejected):
            wire.decode(keys, wire.encode(forger, HEADER._replace(src=src), body=b"x"), 1400)
    assert keys._ciphers.keys() == {(Role.MASTER, 7)}
    assert wire.decode(keys, genuine, 1400).body == b"x"


@given(st.binary(max_size=2000))
def test_random_bytes_are_rejected_never_crash(data: bytes) -> None:
    with pytest.raises(Rejected):
        wire.decode(KEY, data, 1400)


# ---- the fragment fast path ----------------------------------------------------------------
compiled_only = pytest.mark.skipif(not gmac.COMPILED, reason="the compiled tag is not built")
SENDER = (Role.SLAVE, 1, 2)  # the session's peer: role, its incarnation, ours
fragments = st.builds(
    Fragment, seq=st.integers(0, 2**64 - 1), index=st.integers(0, 2**16 - 1),
    count=st.integers(1, 2**16 - 1), kind=st.sampled_from(sorted(wire.RELIABLE)),
    data=st.binary(max_size=1400), part=st.integers(0, 254), parts=st.integers(1, 255),
    again=st.booleans())


@compiled_only
@settings(max_examples=200, deadline=None)
@given(batch=st.lists(fragments, max_size=5), number=st.integers(0, 2**63))
def test_the_fast_path_seals_what_encode_fragment_makes(batch: list[Fragment],
                                                        number: int) -> None:
    role, src, dst = SENDER
    sealed = wire.seal_fragments(KEY, role, src, dst, number, batch)
    assert sealed == [wire.encode_fragment(KEY, Header(Kind(f.kind), role, src, dst, number + i),
                                           f) for i, f in enumerate(batch)]


def test_the_fast_path_opens_only_genuine_fragments_of_the_session(fast_path: bool) -> None:
    role, src, dst = SENDER
    fragment = Fragment(seq=2**40, index=1, count=3, kind=Kind.RESULTS, data=b"x" * 100,
                        part=1, parts=2, again=True)
    genuine = wire.seal_fragments(KEY, role, src, dst, 77, [fragment])[0]
    KEY.verify(role, src, 0, wire.encode(KEY, Header(Kind.STATE, role, src, dst, 0)),
               wire.HEADER.size)  # the session's peer has proven genuine: its key is kept
    forged, resized, flagged = bytearray(genuine), bytearray(genuine), bytearray(genuine)
    forged[60] ^= 1
    resized[31] += 1  # the body's length
    flagged[4] = 0x02
    others = [
        forged, resized, flagged, genuine[:-1], genuine + b"!",
        wire.seal_fragments(KEY, role, src, dst + 1, 78, [fragment])[0],  # to someone else
        wire.seal_fragments(KEY, role.peer, src, dst, 79, [fragment])[0],  # the wrong role
        wire.encode(KEY, Header(Kind.ACK, role, src, dst, 80), ranges=((0, 1),)),
        wire.encode(KEY, Header(Kind.STATE, role, src, dst, 81), body=bytes(100)),
        b"junk" * 40,
    ]
    opened = wire.open_fragments(KEY, [genuine, *others, memoryview(genuine)], 1400, role,
                                 src, dst)
    assert opened == [(77, fragment), *[None] * len(others), (77, fragment)]
    assert isinstance(opened[0][1].data, memoryview)  # a view of the datagram, not a copy
    assert opened[0][1].kind is Kind.RESULTS  # the enum, as decode gives it
    assert wire.open_fragments(KEY, [genuine], len(genuine) - 1, role, src, dst) == [None]
    unknown = wire.seal_fragments(KEY, role, src + 1, dst, 1, [fragment])  # never proven
    assert wire.open_fragments(wire.Keys("a secret of some length"), unknown, 1400, role,
                               src + 1, dst) == [None]


SIZE = wire.FRAGMENT_DATAGRAM.size + 100 + wire.TAG_SIZE


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.dictionaries(st.integers(0, SIZE - 1), st.integers(1, 255), min_size=1,
                             max_size=3), cut=st.integers(0, SIZE - 1))
def test_a_changed_or_cut_fragment_never_opens(fast_path: bool, flips: dict[int, int],
                                               cut: int) -> None:
    role, src, dst = SENDER
    fragment = Fragment(seq=5, index=0, count=1, kind=Kind.JOBS, data=bytes(range(100)))
    genuine = wire.seal_fragments(KEY, role, src, dst, 3, [fragment])[0]
    KEY.verify(role, src, 0, wire.encode(KEY, Header(Kind.STATE, role, src, dst, 0)),
               wire.HEADER.size)
    changed = bytearray(genuine)
    for at, mask in flips.items():
        changed[at] ^= mask
    assert wire.open_fragments(KEY, [changed, genuine[:cut]], 1400, role, src, dst) == [None] * 2


@compiled_only
def test_the_compiled_path_refuses_what_cannot_be_a_fragment() -> None:
    role, src, dst = SENDER
    for bad in (Fragment(0, 2**16, 1, Kind.JOBS, b""), Fragment(0, 0, 1, 256, b""),
                Fragment(0, 0, 1, Kind.JOBS, bytes(2**16))):
        with pytest.raises(ValueError):
            wire.seal_fragments(KEY, role, src, dst, 0, [bad])
    with pytest.raises(AttributeError):
        wire.seal_fragments(KEY, role, src, dst, 0, [object()])  # type: ignore[list-item]
