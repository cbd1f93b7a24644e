"""The receiving half of the channel: reassembly, duplicate suppression, acknowledgements.

One ``RangeSet`` of received seqs serves duplicate suppression and acks. Incomplete
messages hold at most ``max_reassembly`` bytes; a fragment beyond that is refused
(neither kept nor acked, so it comes again), except for the message holding the lowest
missing seq: it always completes, so the buffer cannot fill with messages that all wait
for refused fragments. Complete messages are delivered at once, in any order, each exactly
once. The parts of a fragment are held until all are in (a finer cut of it replaces a
coarser one) and count towards the same budget.

Spurious retransmissions. A seq names a fragment, not a transmission, so an ack cannot
tell the sender which copy arrived. Each retransmission carries the ``again`` flag, and
the receiver reports a seq in the ack's ``originals`` when a copy proves that the
fragment's first transmission arrived: a copy without the flag (the original, late), or
a copy with it while the copy kept was the original. The seqs whose kept copy was a
retransmission are remembered (at most ``MAX_RESENT_KEPT``, the oldest forgotten): a
flagged copy of one of those is a network duplicate or another retransmission, not news
of the original, so a duplicating network cannot pass for a spurious retransmission.
When both copies came before any ack listed the seq (this end was too slow to answer,
not the ack lost), the report waits for the ack after the one that lists it, sent at
once: the sender sees the seq acked first and learns how long the original's answer
took (:mod:`sender`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from itertools import islice

from loadbalancer.rangeset import RangeSet
from loadbalancer.reliable.fragment import (
    MAX_ORIGINALS,
    Ack,
    Event,
    Fragment,
    MessageReceived,
    ProtocolViolation,
)

MAX_RESENT_KEPT = 1024  # seqs whose kept copy was a retransmission: 16 windows of them
MAX_FRESH = 1024  # seqs kept since the last ack that are remembered as such


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


@dataclass(slots=True)
class AckState:
    """When the next ack is due, and what it lists. An ack waits up to ``ack_delay`` for
    more to acknowledge, unless ``ack_every`` fragments came or the news is urgent."""

    ack_delay: float
    ack_every: int
    max_ack_ranges: int
    ack_at: float | None = None
    unacked: int = 0  # fragments taken since the last ack
    oldest_duplicate: int | None = None  # since the last ack
    originals: dict[int, None] = field(default_factory=dict)  # to report, in order
    later: dict[int, None] = field(default_factory=dict)  # to report in the ack after next
    fresh: set[int] = field(default_factory=set)  # kept since the last ack, most of them

    def original(self, seq: int) -> None:
        """A copy proved that seq's first transmission arrived: tell the sender. Past
        MAX_ORIGINALS waiting, the news is dropped: the count is an undercount, never
        an overcount."""
        pending = self.later if seq in self.fresh else self.originals
        if len(pending) < MAX_ORIGINALS:
            pending[seq] = None

    def received(self, seq: int, now: float, urgent: bool) -> None:
        """A new fragment was kept."""
        self.unacked += 1
        if len(self.fresh) < MAX_FRESH:  # one forgotten is reported at once: no sample
            self.fresh.add(seq)
        self._by(now if urgent or self.unacked >= self.ack_every else now + self.ack_delay)

    def duplicate(self, seq: int, now: float) -> None:
        """A copy, or a retransmission because our ack was lost: ack at once, and include
        this seq even if its range is too old to be listed."""
        if self.oldest_duplicate is None or seq < self.oldest_duplicate:
            self.oldest_duplicate = seq
        self._by(now)

    def _by(self, deadline: float) -> None:
        self.ack_at = deadline if self.ack_at is None else min(self.ack_at, deadline)

    def to_send(self, now: float, received: RangeSet) -> Ack | None:
        """The ranges to acknowledge, most recent first, if an ack is due by ``now``."""
        if self.ack_at is None or now < self.ack_at:
            return None
        ranges = list(islice(received, self.max_ack_ranges))
        old = self.oldest_duplicate
        if old is not None and old < ranges[-1][0] and (found := received.find(old)):
            ranges[-1] = found  # still older than all the others, so the order holds
        originals = tuple(self.originals)
        self.ack_at, self.unacked, self.oldest_duplicate = None, 0, None
        self.fresh.clear()
        self.originals, self.later = self.later, {}
        if self.originals:
            self.ack_at = now  # the next ack, at once
        return Ack(tuple(ranges), originals)


@dataclass(slots=True)
class Receiver:
    acks: AckState
    events: deque[Event]  # shared with the sender: the channel's
    max_fragment: int
    max_message: int
    max_reassembly: int
    max_count: int  # fragments a message of the peer's may have
    min_part: int  # bytes of a part that is not its fragment's last
    max_parts: int
    received: RangeSet  # an honest peer leaves at most about a window of gaps
    max_pieces: int  # fragments held in parts at once: as many as the ranges
    largest_received: int = -1
    partials: dict[int, _Partial] = field(default_factory=dict)
    pieces: dict[int, _Pieces] = field(default_factory=dict)  # by seq: not all parts came
    buffered: int = 0  # payload bytes held in partials and pieces
    duplicates: int = 0  # fragments received again and suppressed
    refused: int = 0  # fragments neither kept nor acked: no budget or no range left
    resent_kept: dict[int, None] = field(default_factory=dict)  # oldest first
    forgotten_upto: int = -1  # seqs at or below it may have left resent_kept

    def receive(self, fragment: Fragment, now: float) -> bool:
        """True if the fragment was new and kept, False if a duplicate or refused.

        Raises ProtocolViolation, having changed nothing, if it cannot be right.
        """
        f, seq, size = fragment, fragment.seq, len(fragment.data)
        message_id = seq - f.index
        if not 0 <= f.index < f.count <= self.max_count or message_id < 0:
            raise ProtocolViolation(f"fragment {f.index} of {f.count} at seq {seq}")
        if not 0 <= f.kind <= 255 or size > self.max_fragment:
            raise ProtocolViolation(f"kind {f.kind}, {size} bytes at seq {seq}")
        if not 0 <= f.part < f.parts <= self.max_parts:
            raise ProtocolViolation(f"part {f.part} of {f.parts} at seq {seq}")
        received = self.received
        if received.find(seq) is not None:
            self.duplicates += 1
            if not f.again or (seq not in self.resent_kept and seq > self.forgotten_upto):
                self.acks.original(seq)
            self.acks.duplicate(seq, now)
            return False
        partial = self.partials.get(message_id)
        if partial is None:
            # Seqs of a message are all held or none are until its first fragment
            # is kept, and its partial lives until the last one is.
            if received.intersects(message_id, message_id + f.count - 1):
                raise ProtocolViolation(f"seq {seq} overlaps a message already received")
        elif (partial.kind, partial.count) != (f.kind, f.count):
            raise ProtocolViolation(f"seq {seq} disagrees with message {message_id}")
        held, message_size = (0, 0) if partial is None else (len(partial.parts), partial.size)
        pieces = self.pieces.get(seq)
        whole = size if f.parts == 1 else self._check_part(f, pieces)
        if message_size + whole > self.max_message:
            raise ProtocolViolation(f"message {message_id} exceeds {self.max_message} bytes")
        if f.parts > 1:
            kept, assembled = self._take_part(f, pieces, message_id)
            if assembled is None:
                return kept
            f, size = assembled, len(assembled.data)
        elif pieces is not None:  # the whole fragment came after all: its parts are moot
            self._drop_pieces(seq)
        completes = held + 1 == f.count  # then nothing stays buffered
        over_budget = self.buffered + size > self.max_reassembly
        if ((over_budget and not completes and not self._is_head(message_id, f.count))
                or not received.add(seq)):
            self.refused += 1
            return False
        if f.again:
            self._kept_resent(seq)
        if partial is None:
            partial = self.partials[message_id] = _Partial(f.kind, f.count)
        partial.parts[f.index] = f.data
        partial.size += size
        self.buffered += size
        if len(partial.parts) == f.count:
            del self.partials[message_id]
            self.buffered -= partial.size
            payload = b"".join(partial.parts[i] for i in range(f.count))
            self.events.append(MessageReceived(message_id, f.kind, payload))
        in_order = seq == self.largest_received + 1
        if seq > self.largest_received:
            self.largest_received = seq
        # A gap is news the sender acts on (fast retransmit): tell it at once.
        self.acks.received(seq, now, urgent=not in_order)
        return True

    def _kept_resent(self, seq: int) -> None:
        self.resent_kept[seq] = None
        if len(self.resent_kept) > MAX_RESENT_KEPT:
            oldest = next(iter(self.resent_kept))
            del self.resent_kept[oldest]
            self.forgotten_upto = max(self.forgotten_upto, oldest)

    def _check_part(self, f: Fragment, pieces: _Pieces | None) -> int:
        """Raise ProtocolViolation unless the part can be right; the size of its whole
        fragment if it completes it, else 0."""
        last = f.part == f.parts - 1
        if not f.data or (not last and len(f.data) < self.min_part):
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
        over_budget = self.buffered + len(f.data) > self.max_reassembly
        if (over_budget and not self._is_head(message_id, f.count)) or (
                pieces is None and len(self.pieces) >= self.max_pieces):
            self.refused += 1
            return False, None
        if pieces is not None and f.parts > pieces.first.parts:
            self._drop_pieces(f.seq)  # a finer cut replaces the coarser one
            pieces = None
        if pieces is None:
            pieces = self.pieces[f.seq] = _Pieces(f)
        pieces.parts[f.part] = f.data
        pieces.size += len(f.data)
        self.buffered += len(f.data)
        if len(pieces.parts) < f.parts:
            return True, None
        self._drop_pieces(f.seq)
        data = b"".join(pieces.parts[part] for part in range(f.parts))
        # Parts are always a retransmission: the original went whole, at the old size.
        return True, Fragment(f.seq, f.index, f.count, f.kind, data, again=True)

    def _drop_pieces(self, seq: int) -> None:
        self.buffered -= self.pieces.pop(seq).size

    def _is_head(self, message_id: int, count: int) -> bool:
        """Whether the message holds the lowest seq not received yet."""
        return message_id <= self.received.first_missing() < message_id + count

    def ack_to_send(self, now: float) -> Ack | None:
        return self.acks.to_send(now, self.received)
