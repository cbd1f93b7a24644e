"""Reliable, message-oriented channel over an unreliable datagram service.

A pure state machine shaped like aioquic's ``QuicConnection``: no sockets, no
asyncio, the clock is an argument. After anything arrives (``receive_fragment``,
``receive_ack``) or ``next_deadline()`` passes (``handle_timer``), the glue sends
``ack_to_send(now)`` and ``fragments_to_send(now)``, drains ``next_event()`` and
re-arms its one timer at ``next_deadline()``.

Sender. A message becomes fragments with consecutive seqs; its id is the first.
A lost fragment goes again under the *same* seq, which the receiver uses to
drop copies. It is lost when its own timer runs out (RFC 6298 RTO, doubled per
expiry of that fragment while the peer acks nothing else, like QUIC's PTO: a
peer that acks is there, and a loss among acks is bad luck, not an outage), or
on fast retransmit: ``PACKET_THRESHOLD`` fragments sent after it are acked, or
one that was sent more than 9/8 of a round trip after it (RFC 9002's time rule,
which catches tails too short for three). RTT samples come only from fragments
sent once (Karn's rule) and include the peer's ack delay.

Congestion control is AIMD on a window of payload bytes in flight: one full
fragment more per window of acked bytes, halved (never below two full fragments)
on loss, but not again for losses of fragments sent before the last halving (at
most once per round trip, like QUIC's recovery period). Counting bytes, not
fragments, matters on lossy links with big datagrams: random loss holds the
window at its floor, and a floor of two fragments would let only two small
messages travel per round trip. The count of fragments in flight is capped too,
at ``max_window``, which bounds the gaps a receiver must track.

Datagram size. Fragments are cut to ``fragment_size``, at most ``max_fragment`` (what
the peer agreed to take). A path can drop datagrams of that size silently (an MTU black
hole: a smaller MTU somewhere that nobody reports), so, like packetization-layer path MTU
discovery (RFC 8899), the sender watches its full-size fragments: when one is lost
``BLACK_HOLE_LOSSES`` times in a row while the peer is heard (its acks or anything the
glue reports through ``heard``) and no full-size fragment sent since it first went has
been acknowledged, the size steps down to the next of ``smaller``. What is unacknowledged
then goes again at once under its own seqs, each fragment cut into *parts* of the new size
(one datagram each, acknowledged together as the fragment's seq), and new messages are cut
to the new size. A size that has carried a full fragment needs ``PROVEN_LOSSES`` in a row:
it worked, so a few losses are much more likely bad luck than a new route. Random loss
does not step down: full-size fragments sent later keep being acknowledged.

Receiver. One ``RangeSet`` of received seqs serves duplicate suppression and
acks. Incomplete messages hold at most ``max_reassembly`` bytes; a fragment
beyond that is refused (neither kept nor acked, so it comes again), except for
the message holding the lowest missing seq: it always completes, so the buffer
cannot fill with messages that all wait for refused fragments. Complete
messages are delivered at once, in any order, each exactly once. The parts of a fragment
are held until all are in (a finer cut of it replaces a coarser one) and count towards the
same budget.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, islice

from loadbalancer.rangeset import RangeSet

MAX_COUNT = 65535  # fragments per message: the count travels in 16 bits
PACKET_THRESHOLD = 3  # acked fragments sent after one that declare it lost
TIME_THRESHOLD = 9 / 8  # or this many round trips older than an acked one (RFC 9002)
MAX_BACKOFF_EXPONENT = 32  # keeps rto * 2**backoff finite; max_rto binds long before
MAX_PARTS = 255  # parts of a fragment: the count travels in 8 bits
BLACK_HOLE_LOSSES = 3  # losses in a row of one full-size fragment that step the size down
PROVEN_LOSSES = 6  # the same, once a full-size fragment has been acknowledged


@dataclass(slots=True)  # not frozen, though never changed: that would cost 5x per datagram
class Fragment:
    seq: int  # unique per channel direction, from 0, never reused
    index: int  # position in its message, from 0
    count: int  # fragments in the message, 1..65535
    kind: int  # message kind, 0..255, the same for all fragments of a message
    data: bytes | memoryview  # this fragment's slice of the payload (a view: no copy)
    part: int = 0  # which part of the fragment this datagram carries, from 0
    parts: int = 1  # the fragment was cut into this many, 1..255


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


@dataclass(slots=True)
class _Sent:
    """One of our fragments, sent at least once and not acked yet."""

    fragment: Fragment
    first_sent: float  # when it first went (again from a step down of the size)
    tx: int = 0  # number of its latest transmission; orders sends like a QUIC packet number
    time_sent: float = 0.0
    size: int = 0  # payload bytes of the largest datagram of its latest transmission
    losses: int = 0  # times declared lost since first_sent
    retransmitted: bool = False
    backoff: int = 0  # RTO expiries in silence: its timeout is rto * 2**backoff
    later_acked: int = 0  # fragments sent after this transmission and acked since
    delivered: int = 0  # bytes_acked at send time, for the delivery rate
    delivered_time: float = 0.0
    app_limited: bool = False  # nothing else was waiting to go when it went


@dataclass(slots=True)
class _Partial:
    """A message being reassembled."""

    kind: int
    count: int
    parts: dict[int, bytes | memoryview] = field(default_factory=dict)
    size: int = 0


@dataclass(slots=True)
class _Pieces:
    """The parts of one fragment that travelled in several datagrams."""

    first: Fragment  # the first part that came: seq, index, count, kind and parts
    parts: dict[int, bytes | memoryview] = field(default_factory=dict)
    size: int = 0


class ReliableChannel:
    """One end of a channel; both ends are alike. Public attributes are read-only."""

    def __init__(self, *, max_fragment: int, smaller: Sequence[int] = (),
                 max_message: int = 64 * 2**20,
                 max_reassembly: int = 128 * 2**20, initial_rtt: float = 0.1,
                 min_rto: float = 0.01, max_rto: float = 2.0,
                 initial_window: int = 32, max_window: int = 1024,
                 ack_delay: float = 0.002, ack_every: int = 8, max_ack_ranges: int = 64) -> None:
        if max_fragment < 1 or not 0 < min_rto <= max_rto or not 1 <= initial_window <= max_window:
            raise ValueError("bad reliable channel settings")
        self.max_fragment = max_fragment  # the most either end sends in one fragment
        self.fragment_size = max_fragment  # what this end cuts to now
        # The sizes to step down to, largest first; the peer cuts to the same ones.
        self._smaller = sorted({size for size in smaller if 0 < size < max_fragment},
                               reverse=True)
        smallest = self._smaller[-1] if self._smaller else max_fragment
        self._min_part = smallest
        self._max_parts = -(-max_fragment // smallest)
        if self._max_parts > MAX_PARTS:
            raise ValueError(f"fragments of {max_fragment} bytes need too many parts of "
                             f"{smallest}")
        self.steps_down = 0
        self._proven_at = -math.inf  # latest send time of a full-size fragment acked
        self._heard_at = -math.inf  # when the peer was last heard from
        # Capped so that every message fits the 16-bit fragment count.
        self.max_message = min(max_message, MAX_COUNT * max_fragment)
        self.max_reassembly = max_reassembly
        self.min_rto, self.max_rto = min_rto, max_rto
        self.max_window = max_window  # in full fragments; also caps fragments in flight
        self.ack_delay, self.ack_every, self.max_ack_ranges = ack_delay, ack_every, max_ack_ranges
        # A peer that stepped down cuts messages into more, smaller fragments.
        self._max_count = min(MAX_COUNT, max(1, -(-self.max_message // smallest)))
        # sender
        self._next_seq = 0  # what send() assigns next
        self._sent_upto = 0  # every seq below was transmitted at least once
        self._floor = 0  # every seq below is acked
        self._queue: deque[Fragment] = deque()  # never sent, in seq order
        self._in_flight: dict[int, _Sent] = {}  # by seq, oldest transmission first
        self.bytes_in_flight = 0  # payload bytes of _in_flight
        self._lost: dict[int, _Sent] = {}  # to send again, oldest loss first
        self._timers: list[tuple[float, int, int]] = []  # heap of (deadline, tx, seq); stale ok
        self._remaining: dict[int, int] = {}  # message id -> fragments not acked
        self._tx = 0
        self.retransmits = 0  # fragments sent again
        self.srtt: float | None = None  # None until the first sample
        self._latest_rtt = 0.0
        # Until the first sample, initial_rtt stands in for one (RFC 6298 2.2).
        self._rttvar = initial_rtt / 2
        self.rto = self._clamp(initial_rtt + 4 * self._rttvar)
        self.window = initial_window * max_fragment  # congestion window, payload bytes
        self._acked_since_growth = 0  # bytes
        self._recovery_start = -math.inf  # losses of fragments sent up to then are old news
        self.bytes_acked = 0  # payload bytes
        self._delivered_time = 0.0
        self._last_ack_at = -math.inf  # when an ack last took something out of flight
        # Acked payload bytes/s, smoothed, of the link rather than of our traffic: like
        # BBR, a sample taken while we had too little to send only ever raises it. A
        # stream of small messages over a long round trip would otherwise read as a slow
        # link (300 bytes per 50 ms rtt: 6 KB/s), and make moving jobs look dear.
        self.delivery_rate: float | None = None
        # receiver; an honest peer leaves at most about a window of gaps
        self._received = RangeSet(max_ranges=4 * max_window)
        self._largest_received = -1
        self._partials: dict[int, _Partial] = {}
        self._pieces: dict[int, _Pieces] = {}  # by seq: fragments not all of whose parts came
        self._buffered = 0  # payload bytes held in _partials and _pieces
        self._ack_at: float | None = None
        self._unacked_received = 0  # fragments taken since the last ack
        self._oldest_duplicate: int | None = None  # since the last ack
        self.duplicates = 0  # fragments received again and suppressed
        self.refused = 0  # fragments neither kept nor acked: no budget or no range left
        self._events: deque[Event] = deque()

    # ---- sending ----------------------------------------------------------------
    def send(self, kind: int, payload: bytes, now: float) -> int:
        """Queue a message and return its id. ``now`` is unused: nothing goes out
        until ``fragments_to_send``."""
        if not 0 <= kind <= 255:
            raise ValueError(f"message kind {kind} is not a byte")
        if len(payload) > self.max_message:
            raise MessageTooLarge(f"{len(payload)} bytes, at most {self.max_message}")
        # Past 65535 fragments of the current size a message is cut coarser, and its
        # fragments travel in parts; max_message keeps that within max_fragment.
        message_id = self._next_seq
        step = max(self.fragment_size, -(-len(payload) // MAX_COUNT))
        count = max(1, -(-len(payload) // step))  # an empty message is one empty fragment
        view = memoryview(payload)
        for index in range(count):
            data = view[index * step:(index + 1) * step]
            self._queue.append(Fragment(message_id + index, index, count, kind, data))
        self._next_seq += count
        self._remaining[message_id] = count
        return message_id

    def fragments_to_send(self, now: float) -> list[Fragment]:
        """Fragments to transmit now: retransmissions first, then new ones, up to the window."""
        out: list[Fragment] = []
        while self.bytes_in_flight < self.window and len(self._in_flight) < self.max_window:
            if self._lost:
                sent = self._lost.pop(next(iter(self._lost)))
                sent.retransmitted = True
                self.retransmits += 1
            elif self._queue:
                sent = _Sent(self._queue.popleft(), first_sent=now)
                self._sent_upto = sent.fragment.seq + 1
            else:
                break
            self._transmit(sent, now)
            if len(sent.fragment.data) <= self.fragment_size:
                out.append(sent.fragment)
            else:
                out.extend(self._parts(sent.fragment))
        return out

    def _parts(self, fragment: Fragment) -> list[Fragment]:
        """A fragment cut larger than the current size, as datagrams of that size."""
        size, data = self.fragment_size, fragment.data
        parts = -(-len(data) // size)
        return [Fragment(fragment.seq, fragment.index, fragment.count, fragment.kind,
                         data[part * size:(part + 1) * size], part, parts)
                for part in range(parts)]

    def _transmit(self, sent: _Sent, now: float) -> None:
        if not self._in_flight:
            self._delivered_time = now  # an idle spell is not slow delivery
        sent.tx, self._tx = self._tx, self._tx + 1
        sent.time_sent = now
        sent.size = min(len(sent.fragment.data), self.fragment_size)
        sent.later_acked = 0
        sent.delivered, sent.delivered_time = self.bytes_acked, self._delivered_time
        sent.app_limited = not (self._queue or self._lost)
        self._in_flight[sent.fragment.seq] = sent
        self.bytes_in_flight += len(sent.fragment.data)
        timeout = min(self.rto * 2 ** min(sent.backoff, MAX_BACKOFF_EXPONENT), self.max_rto)
        heapq.heappush(self._timers, (now + timeout, sent.tx, sent.fragment.seq))
        if len(self._timers) > 2 * len(self._in_flight) + 64:
            # Acked fragments leave their timers behind; drop them in bulk.
            self._timers = [entry for entry in self._timers if self._armed(entry)]
            heapq.heapify(self._timers)

    def _armed(self, entry: tuple[float, int, int]) -> bool:
        sent = self._in_flight.get(entry[2])
        return sent is not None and sent.tx == entry[1]

    def receive_ack(self, ranges: Sequence[tuple[int, int]], now: float) -> None:
        """Take the inclusive seq ranges the peer holds; unknown or old seqs are ignored."""
        self._heard_at = now
        acked: list[_Sent] = []
        for lo, hi in ranges:
            for seq in self._outstanding(lo, hi):
                acked.append(self._land(seq) if seq in self._in_flight else self._lost.pop(seq))
        if not acked:
            return
        for sent in acked:
            self._acked(sent)
        newest = max(acked, key=lambda sent: sent.tx)
        interval = now - newest.delivered_time
        if interval > 0:
            rate = (self.bytes_acked - newest.delivered) / interval
            old = self.delivery_rate
            if not newest.app_limited or (old is not None and rate > old):
                self.delivery_rate = rate if old is None else old + (rate - old) / 8
        self._delivered_time = self._last_ack_at = now
        once = [sent for sent in acked if not sent.retransmitted]  # Karn's rule
        if once:
            self._rtt_sample(now - max(once, key=lambda sent: sent.tx).time_sent)
        self._detect_lost(sorted(sent.tx for sent in acked), now)
        while self._floor < self._sent_upto and not self._holds(self._floor):
            self._floor += 1

    def _land(self, seq: int) -> _Sent:
        """Take a fragment out of flight: acked, or declared lost."""
        sent = self._in_flight.pop(seq)
        self.bytes_in_flight -= len(sent.fragment.data)
        return sent

    def _holds(self, seq: int) -> bool:
        return seq in self._in_flight or seq in self._lost

    def _outstanding(self, lo: int, hi: int) -> list[int]:
        """Unacked sent seqs in [lo, hi], by whichever is shorter to walk."""
        lo, hi = max(lo, self._floor), min(hi, self._sent_upto - 1)
        if hi < lo:
            return []
        if hi - lo < len(self._in_flight) + len(self._lost):
            return [seq for seq in range(lo, hi + 1) if self._holds(seq)]
        return [seq for seq in chain(self._in_flight, self._lost) if lo <= seq <= hi]

    def _acked(self, sent: _Sent) -> None:
        self.bytes_acked += len(sent.fragment.data)
        if sent.size >= self.fragment_size:
            self._proven_at = max(self._proven_at, sent.time_sent)
        message_id = sent.fragment.seq - sent.fragment.index
        self._remaining[message_id] -= 1
        if not self._remaining[message_id]:
            del self._remaining[message_id]
            self._events.append(MessageAcked(message_id))
        if sent.time_sent > self._recovery_start:
            self._acked_since_growth += len(sent.fragment.data)
            if self._acked_since_growth >= self.window:
                self.window = min(self.window + self.fragment_size,
                                  self.max_window * self.fragment_size)
                self._acked_since_growth = 0

    def heard(self, now: float) -> None:
        """Something came from the peer (a state message, say): small datagrams get through."""
        self._heard_at = now

    def rtt_hint(self, rtt: float) -> None:
        """A round trip measured outside the channel (the handshake); it stands in
        for a sample until the channel has one of its own."""
        if self.srtt is None:
            self._rtt_sample(rtt)

    def _rtt_sample(self, rtt: float) -> None:
        self._latest_rtt = rtt
        if self.srtt is None:
            self.srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = self._clamp(self.srtt + 4 * self._rttvar)

    def _clamp(self, rto: float) -> float:
        return min(max(rto, self.min_rto), self.max_rto)

    def _detect_lost(self, acked_tx: list[int], now: float) -> None:
        """Fast retransmit of fragments sent before the newest acked one."""
        lost: list[_Sent] = []
        rtt = max(self.srtt or 0.0, self._latest_rtt)
        sent_before = now - TIME_THRESHOLD * rtt if rtt else -math.inf
        for sent in self._in_flight.values():  # oldest transmission first
            if sent.tx > acked_tx[-1]:
                break
            # Each visit adds at least one, so a fragment is visited at most three times.
            sent.later_acked += len(acked_tx) - bisect_right(acked_tx, sent.tx)
            if sent.later_acked >= PACKET_THRESHOLD or sent.time_sent < sent_before:
                lost.append(sent)
        for sent in lost:
            self._land(sent.fragment.seq)
        self._declare_lost(lost, now)

    def handle_timer(self, now: float) -> None:
        """Declare lost every fragment whose retransmission timer ran out by ``now``."""
        lost: list[_Sent] = []
        while self._timers and self._timers[0][0] <= now:
            entry = heapq.heappop(self._timers)
            if self._armed(entry):
                sent = self._land(entry[2])
                silent = self._last_ack_at <= sent.time_sent
                sent.backoff = sent.backoff + 1 if silent else 0
                lost.append(sent)
        self._declare_lost(lost, now)

    def _declare_lost(self, lost: list[_Sent], now: float) -> None:
        for sent in lost:
            sent.losses += 1
            self._lost[sent.fragment.seq] = sent
        if any(sent.time_sent > self._recovery_start for sent in lost):
            self.window = max(2 * self.fragment_size, self.window // 2)
            self._recovery_start = now
            self._acked_since_growth = 0
        if self._smaller and any(self._black_holed(sent) for sent in lost):
            self._step_down(now)

    def _black_holed(self, sent: _Sent) -> bool:
        """Whether this loss says the path drops datagrams of the current size."""
        needed = BLACK_HOLE_LOSSES if self._proven_at == -math.inf else PROVEN_LOSSES
        return (sent.size > self._smaller[0] and sent.losses >= needed
                and self._proven_at < sent.first_sent < self._heard_at)

    def _step_down(self, now: float) -> None:
        self.fragment_size = self._smaller.pop(0)
        self.steps_down += 1
        # What is in flight at the old size went into the same hole: it goes again now,
        # cut to the new size, rather than each after its timer. Its silence was the
        # hole's, not the peer's: no backoff, and the count of losses starts again.
        for seq in [seq for seq, sent in self._in_flight.items()
                    if sent.size > self.fragment_size]:
            self._lost[seq] = self._land(seq)
        for sent in self._lost.values():
            sent.first_sent, sent.losses, sent.backoff = now, 0, 0
        self.window = min(max(self.window, 2 * self.fragment_size),
                          self.max_window * self.fragment_size)

    # ---- receiving --------------------------------------------------------------
    def receive_fragment(self, fragment: Fragment, now: float) -> bool:
        """True if the fragment was new and kept, False if a duplicate or refused.

        Raises ProtocolViolation, having changed nothing, if it cannot be right.
        """
        f, message_id = fragment, fragment.seq - fragment.index
        if not 0 <= f.index < f.count <= self._max_count or message_id < 0:
            raise ProtocolViolation(f"fragment {f.index} of {f.count} at seq {f.seq}")
        if not 0 <= f.kind <= 255 or len(f.data) > self.max_fragment:
            raise ProtocolViolation(f"kind {f.kind}, {len(f.data)} bytes at seq {f.seq}")
        if not 0 <= f.part < f.parts <= self._max_parts:
            raise ProtocolViolation(f"part {f.part} of {f.parts} at seq {f.seq}")
        if f.seq in self._received:
            # A copy, or a retransmission because our ack was lost: ack at once,
            # and include this seq even if its range is too old to be listed.
            self.duplicates += 1
            self._heard_at = now
            if self._oldest_duplicate is None or f.seq < self._oldest_duplicate:
                self._oldest_duplicate = f.seq
            self._ack_by(now)
            return False
        partial = self._partials.get(message_id)
        if partial is None:
            # Seqs of a message are all held or none are until its first fragment
            # is kept, and its partial lives until the last one is.
            if self._received.intersects(message_id, message_id + f.count - 1):
                raise ProtocolViolation(f"seq {f.seq} overlaps a message already received")
        elif (partial.kind, partial.count) != (f.kind, f.count):
            raise ProtocolViolation(f"seq {f.seq} disagrees with message {message_id}")
        held, size = (0, 0) if partial is None else (len(partial.parts), partial.size)
        pieces = self._pieces.get(f.seq)
        whole = len(f.data) if f.parts == 1 else self._check_part(f, pieces)
        if size + whole > self.max_message:
            raise ProtocolViolation(f"message {message_id} exceeds {self.max_message} bytes")
        self._heard_at = now
        if f.parts > 1:
            kept, assembled = self._take_part(f, pieces, message_id)
            if assembled is None:
                return kept
            f = assembled
        elif pieces is not None:  # the whole fragment came after all: its parts are moot
            self._drop_pieces(f.seq)
        completes = held + 1 == f.count  # then nothing stays buffered
        over_budget = self._buffered + len(f.data) > self.max_reassembly
        if ((over_budget and not completes and not self._is_head(message_id, f.count))
                or not self._received.add(f.seq)):
            self.refused += 1
            return False
        if partial is None:
            partial = self._partials[message_id] = _Partial(f.kind, f.count)
        partial.parts[f.index] = f.data
        partial.size += len(f.data)
        self._buffered += len(f.data)
        if len(partial.parts) == f.count:
            del self._partials[message_id]
            self._buffered -= partial.size
            payload = b"".join(partial.parts[i] for i in range(f.count))
            self._events.append(MessageReceived(message_id, f.kind, payload))
        self._unacked_received += 1
        in_order = f.seq == self._largest_received + 1
        self._largest_received = max(self._largest_received, f.seq)
        # A gap is news the sender acts on (fast retransmit): tell it at once.
        urgent = not in_order or self._unacked_received >= self.ack_every
        self._ack_by(now if urgent else now + self.ack_delay)
        return True

    def _check_part(self, f: Fragment, pieces: _Pieces | None) -> int:
        """Raise ProtocolViolation unless the part can be right; the size of its whole
        fragment if it completes it, else 0."""
        last = f.part == f.parts - 1
        if not f.data or (not last and len(f.data) < self._min_part):
            raise ProtocolViolation(f"part {f.part} of {f.parts}: {len(f.data)} bytes")
        if pieces is None or f.parts != pieces.first.parts:
            return 0  # alone, or of another cut: it completes nothing
        first = pieces.first
        if (first.index, first.count, first.kind) != (f.index, f.count, f.kind):
            raise ProtocolViolation(f"part of seq {f.seq} disagrees with its others")
        if f.part in pieces.parts:
            return 0
        if pieces.size + len(f.data) > self.max_fragment:
            raise ProtocolViolation(f"parts of seq {f.seq} exceed {self.max_fragment} bytes")
        return pieces.size + len(f.data) if len(pieces.parts) + 1 == f.parts else 0

    def _take_part(self, f: Fragment, pieces: _Pieces | None,
                   message_id: int) -> tuple[bool, Fragment | None]:
        """Keep a part if it is news and within budget (the first), and once every part
        is in, return the whole fragment (the second)."""
        if pieces is not None and f.parts < pieces.first.parts:
            return False, None  # of a coarser cut, sent before the finer one we hold
        if pieces is not None and f.parts == pieces.first.parts and f.part in pieces.parts:
            self.duplicates += 1
            return False, None
        over_budget = self._buffered + len(f.data) > self.max_reassembly
        if (over_budget and not self._is_head(message_id, f.count)) or (
                pieces is None and len(self._pieces) >= 4 * self.max_window):
            self.refused += 1
            return False, None
        if pieces is not None and f.parts > pieces.first.parts:
            self._drop_pieces(f.seq)  # a finer cut replaces the coarser one
            pieces = None
        if pieces is None:
            pieces = self._pieces[f.seq] = _Pieces(f)
        pieces.parts[f.part] = f.data
        pieces.size += len(f.data)
        self._buffered += len(f.data)
        if len(pieces.parts) < f.parts:
            return True, None
        self._drop_pieces(f.seq)
        data = b"".join(pieces.parts[part] for part in range(f.parts))
        return True, Fragment(f.seq, f.index, f.count, f.kind, data)

    def _drop_pieces(self, seq: int) -> None:
        self._buffered -= self._pieces.pop(seq).size

    def _is_head(self, message_id: int, count: int) -> bool:
        """Whether the message holds the lowest seq not received yet."""
        return message_id <= self._received.first_missing() < message_id + count

    def _ack_by(self, deadline: float) -> None:
        self._ack_at = deadline if self._ack_at is None else min(self._ack_at, deadline)

    def ack_to_send(self, now: float) -> list[tuple[int, int]] | None:
        """The ranges to acknowledge, most recent first, if an ack is due by ``now``."""
        if self._ack_at is None or now < self._ack_at:
            return None
        ranges = list(islice(self._received, self.max_ack_ranges))
        old = self._oldest_duplicate
        if old is not None and old < ranges[-1][0] and (found := self._received.find(old)):
            ranges[-1] = found  # still older than all the others, so the order holds
        self._ack_at, self._unacked_received, self._oldest_duplicate = None, 0, None
        return ranges

    # ---- timer and events ---------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When ``handle_timer`` or ``ack_to_send`` next has work; None if never."""
        while self._timers and not self._armed(self._timers[0]):
            heapq.heappop(self._timers)
        deadlines = [t for t in (self._ack_at, self._timers[0][0] if self._timers else None)
                     if t is not None]
        return min(deadlines, default=None)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # ---- derived state ------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        """Fragments sent and neither acked nor declared lost."""
        return len(self._in_flight)

    @property
    def unacked_messages(self) -> int:
        """Messages sent (or queued) and not fully acked."""
        return len(self._remaining)

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing in flight or awaiting retransmission, no ack owed."""
        return not (self._queue or self._in_flight or self._lost or self._ack_at is not None)
