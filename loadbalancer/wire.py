"""Datagram codec: the fixed binary header, the authentication tag and the bodies.

Pure functions of bytes; no sockets, no clock. Every datagram is::

    header (32 bytes) | body (length bytes) | tag (16 bytes)

The header is ``!2sBBBBQQQH``: magic ``LB``, version, type, flags, sender role,
sender incarnation, receiver incarnation (0 while unknown), packet number,
body length. The tag is AES-128-GMAC (GCM with the whole datagram as
associated data) over header and body. Everything a peer acts on is inside the
tag, so a node recognises its peer by the key, not by its source address.
Bodies travel in the clear: the secret stops anyone injecting work or
commands, not reading them.

Why GMAC: with AES-NI it tags a 64 KB datagram in a quarter of the time
HMAC-SHA256 takes, and per-datagram cost is what bounds transfer speed.
GMAC must never see one nonce twice under one key, so every sender
incarnation has its own key, derived from the secret with its role and
incarnation, and the nonce is the packet number, which an incarnation never
reuses. Incarnations carry random low bits (``lifecycle.new_incarnation``), so even
a clock stepped back does not bring an old key back in practice.

Decoding checks the cheap things first (size, magic, version, length) and the
tag before looking at the body, so junk costs little and forged bodies are
never parsed. Every failure raises :class:`Rejected` with a short reason that
the caller counts.

Fragments, nearly every datagram, also have a fast path a burst at a time
(:func:`seal_fragments`, :func:`open_fragments`): compiled in ``_gmac.c`` where it
was built, and in Python here, which is its reference.
"""

from __future__ import annotations

import enum
import hmac
import struct
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, cast

from loadbalancer import gmac
from loadbalancer.gmac import KEY_SIZE, TAG_SIZE, Gmac, Tagger
from loadbalancer.gmac import Bytes as Bytes  # what callers know as wire.Bytes
from loadbalancer.reliable import MAX_ORIGINALS, Fragment

MAGIC = b"LB"
VERSION = 6  # 5: the AGAIN flag and the ack's originals; 6: the greeting's receive buffer
HEADER = struct.Struct("!2sBBBBQQQH")
# seq, index and count in its message, and which part of the fragment this datagram
# carries: a fragment cut before the datagram size stepped down goes in several parts.
FRAGMENT_HEADER = struct.Struct("!QHHBB")
NO_FRAGMENT = FRAGMENT_HEADER.unpack(bytes(FRAGMENT_HEADER.size))  # its fields, all 0
# Both at once: most datagrams are fragments, and one unpack costs half of two.
FRAGMENT_DATAGRAM = struct.Struct(HEADER.format + FRAGMENT_HEADER.format[1:])
# HELLO and WELCOME: the largest datagram the sender takes, and the payload bytes its socket
# can hold unread (0: it does not say), which bounds what its peer keeps in flight to it.
GREETING = struct.Struct("!HI")
TOKEN_SIZE = 8  # PATH_CHALLENGE and PATH_RESPONSE: the challenge's random token
ACK_RANGE = struct.Struct("!QQ")
ACK_COUNT = struct.Struct("!H")  # ranges, then originals
ACK_ORIGINAL = struct.Struct("!Q")  # a seq whose first transmission arrived after all
FLAG_AGAIN = 0x01  # a reliable kind's fragment sent again: the sender's retransmission
SENDER = struct.Struct("!BQ")  # what a sender's key is derived from: role, incarnation
MAX_CIPHERS = 8  # sender keys kept: ours, the peer's, a few of sessions coming or going
OVERHEAD = HEADER.size + TAG_SIZE
# 1,400 bytes fits any Ethernet path without IP fragmentation; loopback and
# jumbo-frame links can take up to the UDP maximum.
DEFAULT_MAX_DATAGRAM = 1400
MIN_DATAGRAM = 256
MAX_DATAGRAM = 65507
# Where a path that drops datagrams of the agreed size is tried next, largest first: the
# UDP payload of a jumbo frame, of Ethernet (IPv4), of Ethernet under IPv6 or PPPoE, of
# IPv6's minimum MTU, and of IPv4's minimum reassembly size, which every path carries.
STEPS = (8972, 1472, 1452, 1232, 548)


class Role(enum.IntEnum):
    MASTER = 0
    SLAVE = 1

    @property
    def peer(self) -> Role:
        return Role.SLAVE if self is Role.MASTER else Role.MASTER

    def __str__(self) -> str:
        return ("master", "slave")[self]  # constants: a million job records share two strings


class Kind(enum.IntEnum):
    """Datagram types. Those from JOBS up travel on the reliable channel."""

    HELLO = 1
    WELCOME = 2
    STATE = 3
    ACK = 4
    BYE = 5
    PATH_CHALLENGE = 6
    PATH_RESPONSE = 7
    JOBS = 16
    RESULTS = 17
    REQUEST = 18
    REFUSE = 19
    FINISH = 20
    TRACE = 21
    NEEDS = 22
    VERDICT = 23
    CANCEL = 24


# Kinds on the reliable channel; a set rather than a property, as every datagram asks.
RELIABLE = frozenset(kind for kind in Kind if kind >= Kind.JOBS)
# Bodies of a fixed size; STATE's is free (its JSON is checked above this layer).
BODY_SIZES = {Kind.HELLO: GREETING.size, Kind.WELCOME: GREETING.size, Kind.BYE: 0,
              Kind.PATH_CHALLENGE: TOKEN_SIZE, Kind.PATH_RESPONSE: TOKEN_SIZE}


class Rejected(Exception):
    """A datagram or message that is dropped; ``reason`` is the counter's name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


KINDS = {kind.value: kind for kind in Kind}
_ROLES = {role.value: role for role in Role}


class Header(NamedTuple):
    kind: Kind
    role: Role
    src: int  # sender's incarnation
    dst: int  # receiver's incarnation as the sender knows it, 0 if unknown
    number: int  # packet number: unique per sender incarnation; replay defence, nonce


class Datagram(NamedTuple):
    header: Header
    fragment: Fragment | None = None  # reliable kinds
    ranges: tuple[tuple[int, int], ...] = ()  # ACK
    originals: tuple[int, ...] = ()  # ACK
    body: bytes = b""  # HELLO, WELCOME, STATE, BYE, PATH_CHALLENGE, PATH_RESPONSE


class Keys:
    """The GMAC keys of one shared secret: one per sender (role, incarnation)."""

    def __init__(self, secret: str) -> None:
        # A derived root rather than the secret itself, so that the same secret
        # used for something else never yields keys valid here.
        self._root = hmac.digest(secret.encode(), b"lb datagram keys v2", "sha256")
        self._ciphers: dict[tuple[int, int], Tagger] = {}
        # The sender of the last genuine datagram, and its key: nearly every datagram
        # comes from the same peer incarnation as the one before. (Still right if that
        # key has left the dict: keys are a function of the sender.)
        self._last: tuple[int, int, Tagger | None] = (-1, -1, None)

    def sign(self, role: int, incarnation: int, number: int, out: bytearray, end: int) -> None:
        """Write the tag of ``out[:end]`` into ``out[end:]``."""
        self.cipher(role, incarnation).sign(number, out, end)

    def cipher(self, role: int, incarnation: int) -> Tagger:
        """The key of a sender, ours: derived the first time, then kept."""
        cipher = self._ciphers.get((role, incarnation))
        if cipher is None:
            cipher = self._keep(role, incarnation, self._derive(role, incarnation))
        return cipher

    def known(self, role: int, incarnation: int) -> Tagger | None:
        """The key of a sender that has proven genuine, if it is still kept."""
        return self._ciphers.get((role, incarnation))

    def verify(self, role: int, incarnation: int, number: int, data: Bytes, end: int) -> None:
        """Raise :class:`Rejected` ``bad_tag`` unless ``data[end:]`` is the tag of
        ``data[:end]``. A key derived for a datagram is kept only if the datagram proves
        genuine, so junk cannot evict real keys."""
        last_role, last_incarnation, known = self._last
        if role != last_role or incarnation != last_incarnation:
            known = self.known(role, incarnation)
        cipher = known or self._derive(role, incarnation)
        if not cipher.verify(number, data, end):
            raise Rejected("bad_tag")
        if known is None:
            self._keep(role, incarnation, cipher)
        self._last = (role, incarnation, cipher)

    def _derive(self, role: int, incarnation: int) -> Tagger:
        material = hmac.digest(self._root, SENDER.pack(role, incarnation), "sha256")
        return Gmac(material[:KEY_SIZE])

    def _keep(self, role: int, incarnation: int, cipher: Tagger) -> Tagger:
        if len(self._ciphers) >= MAX_CIPHERS:
            del self._ciphers[next(iter(self._ciphers))]  # the oldest
        self._ciphers[role, incarnation] = cipher
        return cipher


def fragment_capacity(max_datagram: int) -> int:
    """Payload bytes one fragment can carry inside a datagram of this size."""
    return max_datagram - OVERHEAD - FRAGMENT_HEADER.size


def datagram_size(capacity: int) -> int:
    """The datagram that carries a fragment of ``capacity`` bytes: the inverse of the above."""
    return capacity + OVERHEAD + FRAGMENT_HEADER.size


class Takes(NamedTuple):
    """What a greeting states about its sender."""

    max_datagram: int
    receive_buffer: int = 0  # payload bytes; 0 when unknown


def encode_greeting(takes: Takes) -> bytes:
    return GREETING.pack(*takes)


def decode_greeting(body: bytes) -> Takes:
    """What a HELLO or WELCOME states, or :class:`Rejected`."""
    size, buffer = GREETING.unpack(body)  # its length was checked by decode
    if not MIN_DATAGRAM <= size <= MAX_DATAGRAM:
        raise Rejected("malformed", f"datagram size {size}")
    return Takes(size, buffer)


def encode(keys: Keys, header: Header, *, fragment: Fragment | None = None,
           ranges: tuple[tuple[int, int], ...] = (), originals: tuple[int, ...] = (),
           body: Bytes = b"") -> bytearray:
    kind, role, src, dst, number = header
    if kind in RELIABLE:
        if fragment is None:
            raise ValueError(f"{kind.name} needs a fragment")
        return encode_fragment(keys, header, fragment)
    if kind is Kind.ACK:
        if len(originals) > MAX_ORIGINALS:
            raise ValueError(f"{len(originals)} originals, at most {MAX_ORIGINALS}")
        body = b"".join([ACK_COUNT.pack(len(ranges)), *(ACK_RANGE.pack(*r) for r in ranges),
                         ACK_COUNT.pack(len(originals)),
                         *(ACK_ORIGINAL.pack(seq) for seq in originals)])
    end = HEADER.size + len(body)
    out = bytearray(end + TAG_SIZE)
    HEADER.pack_into(out, 0, MAGIC, VERSION, kind, 0, role, src, dst, number, len(body))
    out[HEADER.size:end] = body
    keys.sign(role, src, number, out, end)
    return out


def encode_fragment(keys: Keys, header: Header, fragment: Fragment) -> bytearray:
    """Most datagrams: a reliable kind's, both headers packed at once, and the one copy of
    the data on the way out."""
    kind, role, src, dst, number = header
    data = fragment.data
    end = FRAGMENT_DATAGRAM.size + len(data)
    out = bytearray(end + TAG_SIZE)
    FRAGMENT_DATAGRAM.pack_into(out, 0, MAGIC, VERSION, kind,
                                FLAG_AGAIN if fragment.again else 0, role, src, dst, number,
                                end - HEADER.size, fragment.seq, fragment.index,
                                fragment.count, fragment.part, fragment.parts)
    out[FRAGMENT_DATAGRAM.size:end] = data
    keys.sign(role, src, number, out, end)
    return out


PREFIX = MAGIC + bytes([VERSION])  # a datagram's first three bytes
# By a datagram's kind byte: the Kind if a fragment may have it, else None.
FRAGMENT_KINDS = tuple(KINDS.get(kind) if kind in RELIABLE else None for kind in range(256))
# A fragment datagram that :func:`open_fragments` takes, as (packet number, fragment).
Opened = tuple[int, Fragment] | None


class FragmentPath(Protocol):
    """What the compiled tag adds: both functions below in one call a burst."""

    def seal_fragments(self, fragments: Sequence[Fragment], prefix: bytes, role: int,
                       src: int, dst: int, number: int) -> list[bytearray]: ...

    def open_fragments(self, datagrams: Sequence[Bytes], max_datagram: int, prefix: bytes,
                       role: int, src: int, dst: int, kinds: tuple[Kind | None, ...],
                       make: Callable[..., Fragment]) -> list[Opened]: ...


def seal_fragments(keys: Keys, role: Role, src: int, dst: int, number: int,
                   fragments: Sequence[Fragment]) -> list[bytearray]:
    """Each fragment's datagram from (``role``, ``src``) to ``dst``, as
    :func:`encode_fragment` makes it, under packet numbers from ``number`` on."""
    cipher = keys.cipher(role, src)
    if gmac.COMPILED:
        return cast(FragmentPath, cipher).seal_fragments(fragments, PREFIX, role, src, dst,
                                                         number)
    return [encode_fragment(keys, Header(KINDS[fragment.kind], role, src, dst, number + i),
                            fragment) for i, fragment in enumerate(fragments)]


def open_fragments(keys: Keys, datagrams: Sequence[Bytes], max_datagram: int, role: Role,
                   src: int, dst: int) -> list[Opened]:
    """The fast path of :func:`decode`, for the datagrams of an open session: for each, its
    number and fragment if it is a genuine fragment from (``role``, ``src``), a sender
    proven before, to ``dst``; None for any other, which :func:`decode` is to take (and
    reject, with the reason, if it must). A forged datagram among them costs its own
    check, not the others'."""
    cipher = keys.known(role, src)
    if cipher is None:
        return [None] * len(datagrams)
    if gmac.COMPILED:
        return cast(FragmentPath, cipher).open_fragments(
            datagrams, max_datagram, PREFIX, role, src, dst, FRAGMENT_KINDS, Fragment)
    return [_open_fragment(cipher, data, max_datagram, (role, src, dst)) for data in datagrams]


def _open_fragment(cipher: Tagger, data: Bytes, max_datagram: int,
                   sender: tuple[int, int, int]) -> Opened:
    try:
        (kind, flags, role, src, dst, number, length,
         seq, index, count, part, parts) = _fields(data, max_datagram)
    except Rejected:
        return None
    known, end = FRAGMENT_KINDS[kind], len(data) - TAG_SIZE
    if (known is None or length < FRAGMENT_HEADER.size or flags & ~FLAG_AGAIN
            or (role, src, dst) != sender or not cipher.verify(number, data, end)):
        return None
    payload = memoryview(data)[FRAGMENT_DATAGRAM.size:end]
    return number, Fragment(seq, index, count, known, payload, part, parts, bool(flags))


def _fields(data: Bytes, max_datagram: int) -> tuple[int, ...]:
    """The headers' fields after magic and version (those of a fragment's header 0 if the
    datagram is too short for one), once the cheap checks pass (size, magic, version,
    length), else :class:`Rejected`: what is read before the tag is checked."""
    size = len(data)
    if size < OVERHEAD:
        raise Rejected("truncated", f"{size} bytes")
    if size > max_datagram:
        raise Rejected("oversized", f"{size} bytes")
    if size >= FRAGMENT_DATAGRAM.size:
        magic, version, *fields = FRAGMENT_DATAGRAM.unpack_from(data)
    else:  # too short for a fragment: its kind, if reliable, is refused by the caller
        magic, version, *fields = HEADER.unpack_from(data)
        fields += NO_FRAGMENT
    if magic != MAGIC:
        raise Rejected("bad_magic")
    if version != VERSION:
        raise Rejected("bad_version", str(version))
    length = fields[6]  # after kind, flags, role, src, dst and number
    if size != OVERHEAD + length:
        raise Rejected("bad_length", f"header says {length}, datagram has {size - OVERHEAD}")
    return tuple(fields)


def decode(keys: Keys, data: Bytes, max_datagram: int) -> Datagram:
    """Parse and authenticate one datagram, or raise :class:`Rejected`. A fragment's
    data is a view into ``data``, not a copy."""
    (kind, flags, role, src, dst, number, length,
     seq, index, count, part, parts) = _fields(data, max_datagram)
    end = len(data) - TAG_SIZE
    keys.verify(role, src, number, data, end)
    view = memoryview(data)
    known_kind, known_role = KINDS.get(kind), _ROLES.get(role)
    if known_kind is None or known_role is None:
        raise Rejected("bad_type", f"type {kind} role {role}")
    header = Header(known_kind, known_role, src, dst, number)
    if flags & ~FLAG_AGAIN or (flags and known_kind not in RELIABLE):
        raise Rejected("malformed", f"flags {flags:#04x} on {known_kind.name}")
    if known_kind in RELIABLE:
        if length < FRAGMENT_HEADER.size:
            raise Rejected("malformed", "short fragment header")
        payload = view[FRAGMENT_DATAGRAM.size:end]
        return Datagram(header, Fragment(seq, index, count, known_kind, payload, part, parts,
                                         bool(flags)))
    if known_kind is Kind.ACK:
        ranges, originals = _decode_ack(view[HEADER.size:end])
        return Datagram(header, ranges=ranges, originals=originals)
    expected = BODY_SIZES.get(known_kind)
    if expected is not None and length != expected:
        raise Rejected("malformed", f"{known_kind.name} body of {length} bytes")
    return Datagram(header, body=bytes(view[HEADER.size:end]))


def _decode_ack(body: memoryview) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
    """An ACK's body: its ranges, then at most MAX_ORIGINALS seqs of originals."""
    if len(body) < 2 * ACK_COUNT.size:
        raise Rejected("malformed", "short ack")
    (n,) = ACK_COUNT.unpack_from(body)
    after_ranges = ACK_COUNT.size + n * ACK_RANGE.size
    if len(body) < after_ranges + ACK_COUNT.size:
        raise Rejected("malformed", "ack length")
    (m,) = ACK_COUNT.unpack_from(body, after_ranges)
    start = after_ranges + ACK_COUNT.size
    if m > MAX_ORIGINALS or len(body) != start + m * ACK_ORIGINAL.size:
        raise Rejected("malformed", "ack length")
    ranges = tuple(ACK_RANGE.unpack_from(body, ACK_COUNT.size + i * ACK_RANGE.size)
                   for i in range(n))
    if any(lo > hi for lo, hi in ranges):
        raise Rejected("malformed", "ack range")
    originals = tuple(ACK_ORIGINAL.unpack_from(body, start + i * ACK_ORIGINAL.size)[0]
                      for i in range(m))
    return ranges, originals
