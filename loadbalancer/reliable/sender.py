"""The sending half of the channel: messages cut into fragments, sent within the window,
acknowledged, or declared lost and sent again.

A message becomes fragments with consecutive seqs; its id is the first. A lost fragment
goes again under the *same* seq, which the receiver uses to drop copies. It is lost when
its own timer runs out (the RTO, doubled per expiry of that fragment while the peer acks
nothing else, like QUIC's PTO: a peer that acks is there, and a loss among acks is bad
luck, not an outage; a timer set before the estimate grew runs to the timeout as it is
now), or on fast retransmit: ``PACKET_THRESHOLD`` fragments sent after it
are acked, or one that was sent more than 9/8 of a round trip after it (RFC 9002's time
rule, which catches tails too short for three). RTT samples, and the acks that declare
others lost, come only from fragments sent once (Karn's rule). The count of fragments in
flight is capped at ``max_window``, which bounds the gaps a receiver must track.

When the size steps down (:mod:`sizing`), what is unacknowledged goes again at once under
its own seqs, each fragment cut into *parts* of the new size (one datagram each,
acknowledged together as the fragment's seq), and new messages are cut to the new size.

A retransmission goes with the ``again`` flag, and an ack may name seqs whose original
transmission arrived after all (:mod:`receiver`): each retransmission of those was
*spurious*. The sender remembers the retransmitted fragments acked lately (at most
``MAX_RESENT_ACKED``) to match that news, which comes with the ack of the copy that came
second. Like Eifel's response to a spurious timeout (RFC 4015), the news also adapts the
timer, when the seq was acked by an earlier ack than the one with the news: that ack
answered the original (the copy had not reached the peer, or the peer held both unacked
and said so later, :mod:`receiver`), so its delay since the original is a round trip
this peer really took, and it is sampled. Karn's rule hides exactly these from the
estimate otherwise: a peer stalled longer than the timeout (its loop waiting for the GIL,
a loaded machine) gives no sample but a retransmission. When the first ack of the seq is
the one with the news, the original's own ack may have been lost: its delay would be the
timeout's and a round trip, and sampling it would feed the timer its own length, so
nothing is sampled.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from loadbalancer.reliable.congestion import CongestionWindow
from loadbalancer.reliable.flight import Flight, Sent
from loadbalancer.reliable.fragment import (
    MAX_COUNT,
    Event,
    Fragment,
    MessageAcked,
    MessageTooLarge,
)
from loadbalancer.reliable.rate import DeliveryRate
from loadbalancer.reliable.rtt import RttEstimate
from loadbalancer.reliable.sizing import FragmentSize

MAX_RESENT_ACKED = 1024  # retransmitted fragments acked, kept to match news of originals
PACKET_THRESHOLD = 3  # acked fragments sent after one that declare it lost
TIME_THRESHOLD = 9 / 8  # or this many round trips older than an acked one (RFC 9002)


@dataclass(slots=True)
class Unsent:
    """A message's fragments not yet sent, made one at a time as the window lets them go:
    a message queued costs no more than its payload until then."""
    message_id: int  # the first fragment's seq
    count: int
    kind: int
    view: memoryview
    step: int
    index: int = 0  # the next fragment's

    def take(self) -> Fragment:
        index, start = self.index, self.index * self.step
        self.index += 1
        return Fragment(self.message_id + index, index, self.count, self.kind,
                        self.view[start:start + self.step])


@dataclass(slots=True)
class Sender:
    rtt: RttEstimate
    cc: CongestionWindow
    rate: DeliveryRate
    sizing: FragmentSize
    events: deque[Event]  # shared with the receiver: the channel's
    max_message: int
    max_window: int  # fragments in flight at most
    next_seq: int = 0  # what send() assigns next
    queue: deque[Unsent] = field(default_factory=deque)  # messages never (fully) sent
    unsent: int = 0  # the bytes of the queue: what a producer waits on
    flight: Flight = field(default_factory=Flight)
    remaining: dict[int, int] = field(default_factory=dict)  # message id -> fragments unacked
    tx: int = 0  # the number of the next transmission
    retransmits: int = 0  # fragments sent again
    spurious: int = 0  # of those, the ones whose original was acknowledged after all
    # Fragments sent again and acked since, by seq, oldest first: their retransmissions,
    # the round trip to sample if the original arrived after a timeout, and which ack
    # acked them.
    resent_acked: dict[int, tuple[int, float | None, int]] = field(default_factory=dict)
    acks: int = 0  # acks received
    last_ack_at: float = -math.inf  # when an ack last took something out of flight

    def send(self, kind: int, payload: bytes) -> int:
        """Queue a message and return its id."""
        if not 0 <= kind <= 255:
            raise ValueError(f"message kind {kind} is not a byte")
        if len(payload) > self.max_message:
            raise MessageTooLarge(f"{len(payload)} bytes, at most {self.max_message}")
        # Past 65535 fragments of the current size a message is cut coarser, and its
        # fragments travel in parts; max_message keeps that within max_fragment.
        message_id = self.next_seq
        step = max(self.sizing.size, -(-len(payload) // MAX_COUNT))
        count = max(1, -(-len(payload) // step))  # an empty message is one empty fragment
        self.queue.append(Unsent(message_id, count, kind, memoryview(payload), step))
        self.unsent += len(payload)
        self.next_seq += count
        self.remaining[message_id] = count
        return message_id

    def fragments_to_send(self, now: float) -> list[Fragment]:
        """Fragments to transmit now: retransmissions first, then new ones, up to the window."""
        out: list[Fragment] = []
        flight = self.flight
        # What every transmission of this call shares: the delivery rate's mark (taken with
        # the first, which may find the link idle) and the timeouts, by backoff.
        delivered: tuple[int, float] | None = None
        timeouts: dict[int, float] = {}
        sent_now: list[Sent] = []
        while flight.bytes_in_flight < self.cc.window and len(flight.in_flight) < self.max_window:
            if flight.lost:
                sent = flight.lost.pop(next(iter(flight.lost)))
                sent.resent += 1
                self.retransmits += 1
            elif self.queue:
                sent = Sent(self._next_new(), first_sent=now, original_sent=now)
            else:
                break
            if delivered is None:
                delivered = self.rate.sending(now, not flight.in_flight)
            timeout = timeouts.get(sent.backoff)
            if timeout is None:
                timeout = timeouts[sent.backoff] = self.rtt.timeout(sent.backoff)
            self._transmit(sent, now, delivered, timeout)
            sent_now.append(sent)
            fragment = sent.fragment
            if len(fragment.data) > self.sizing.size:
                out.extend(self._parts(fragment))
            elif sent.resent:
                # A copy, flagged: the original may still be on its way to the receiver.
                out.append(Fragment(fragment.seq, fragment.index, fragment.count,
                                    fragment.kind, fragment.data, again=True))
            else:
                out.append(fragment)
        # Limited by the link only if the window stopped us with more to send (BBR's
        # rule). Judged per fragment, the first of any burst and every one sent while
        # another waited to go again counted: on a lossy link a trickle of small
        # messages then measured 5 KB/s, and moving jobs looked a second dearer than it was.
        app_limited = not (self.queue or flight.lost)
        for sent in sent_now:
            sent.app_limited = app_limited
        return out

    def _next_new(self) -> Fragment:
        unsent = self.queue[0]
        fragment = unsent.take()
        if unsent.index == unsent.count:
            self.queue.popleft()
        self.unsent -= len(fragment.data)
        return fragment

    def _parts(self, fragment: Fragment) -> list[Fragment]:
        """A fragment cut larger than the current size, as datagrams of that size; it
        went whole before, so these are retransmissions."""
        size, data = self.sizing.size, fragment.data
        parts = -(-len(data) // size)
        return [Fragment(fragment.seq, fragment.index, fragment.count, fragment.kind,
                         data[part * size:(part + 1) * size], part, parts, again=True)
                for part in range(parts)]

    def _transmit(self, sent: Sent, now: float, delivered: tuple[int, float],
                  timeout: float) -> None:
        sent.delivered, sent.delivered_time = delivered
        sent.tx, self.tx = self.tx, self.tx + 1
        sent.time_sent = now
        sent.size = min(len(sent.fragment.data), self.sizing.size)
        sent.later_acked = 0
        self.flight.take_off(sent, now + timeout)

    def receive_ack(self, ranges: Sequence[tuple[int, int]], now: float,
                    originals: Sequence[int] = ()) -> None:
        """Take the inclusive seq ranges the peer holds, and the seqs whose originals it
        says arrived; unknown or old seqs are ignored."""
        self.acks += 1
        acked = self.flight.acked(ranges)
        self._acked(acked)
        for sent in acked:
            if sent.resent:
                rtt = now - sent.original_sent if sent.timed_out else None
                self._remember(sent.fragment.seq, (sent.resent, rtt, self.acks))
        for seq in originals:
            resent, rtt, by = self.resent_acked.pop(seq, (0, None, self.acks))
            self.spurious += resent
            if rtt is not None and by < self.acks:
                self.rtt.spurious(rtt)
        if not acked:
            return
        newest = max(acked, key=lambda sent: sent.tx)
        self.rate.sample(newest.delivered, newest.delivered_time, newest.app_limited, now)
        self.last_ack_at = now
        once = [sent for sent in acked if not sent.resent]  # Karn's rule
        if once:
            self.rtt.sample(now - max(once, key=lambda sent: sent.tx).time_sent)
            # Karn's rule for loss detection too: the ack of a fragment sent again may
            # answer its original, sent before the fragments it would declare lost.
            self._detect_lost(sorted(sent.tx for sent in once), now)

    def _remember(self, seq: int, resent: tuple[int, float | None, int]) -> None:
        self.resent_acked[seq] = resent
        if len(self.resent_acked) > MAX_RESENT_ACKED:
            del self.resent_acked[next(iter(self.resent_acked))]

    def _acked(self, acked: list[Sent]) -> None:
        """The books of an ack's fragments, added up: one step each for the rate, the
        size's proof and the window, rather than one a fragment."""
        total = counted = 0
        proven = -math.inf
        recovery, size_now = self.cc.recovery_start, self.sizing.size
        remaining, events = self.remaining, self.events
        for sent in acked:
            fragment = sent.fragment
            size = len(fragment.data)
            total += size
            if sent.time_sent > recovery:  # sent before the last halving: old news
                counted += size
            if sent.size >= size_now and sent.time_sent > proven:  # it went at full size
                proven = sent.time_sent
            message_id = fragment.seq - fragment.index
            left = remaining[message_id] - 1
            if left:
                remaining[message_id] = left
            else:
                del remaining[message_id]
                events.append(MessageAcked(message_id))
        self.rate.acked(total)
        if proven > -math.inf:
            self.sizing.proven(proven)
        if counted:
            self.cc.acked(counted, size_now)

    def _detect_lost(self, acked_tx: list[int], now: float) -> None:
        """Fast retransmit of fragments sent before the newest acked one."""
        lost: list[Sent] = []
        rtt = self.rtt.loss_rtt
        sent_before = now - TIME_THRESHOLD * rtt if rtt else -math.inf
        for sent in self.flight.in_flight.values():  # oldest transmission first
            if sent.tx > acked_tx[-1]:
                break
            # Each visit adds at least one, so a fragment is visited at most three times.
            sent.later_acked += len(acked_tx) - bisect_right(acked_tx, sent.tx)
            if sent.later_acked >= PACKET_THRESHOLD or sent.time_sent < sent_before:
                lost.append(sent)
        for sent in lost:
            self.flight.land(sent.fragment.seq)
        self._declare_lost(lost, now)

    def handle_timer(self, now: float) -> None:
        """Declare lost every fragment whose retransmission timer ran out by ``now``."""
        lost = self.flight.expired(
            now, lambda sent: sent.time_sent + self.rtt.timeout(sent.backoff))
        for sent in lost:
            silent = self.last_ack_at <= sent.time_sent
            sent.backoff = sent.backoff + 1 if silent else 0
            sent.timed_out = True
        self._declare_lost(lost, now)

    def _declare_lost(self, lost: list[Sent], now: float) -> None:
        for sent in lost:
            sent.losses += 1
            self.flight.lost[sent.fragment.seq] = sent
        self.cc.lost((sent.time_sent for sent in lost), now, self.sizing.size)
        if any(self.sizing.black_holed(sent.size, sent.losses, sent.first_sent)
               for sent in lost):
            self._step_down(now)

    def _step_down(self, now: float) -> None:
        self.sizing.step_down()
        # What is in flight at the old size went into the same hole: it goes again now,
        # cut to the new size, rather than each after its timer. Its silence was the
        # hole's, not the peer's: no backoff, and the count of losses starts again.
        flight = self.flight
        for seq in [seq for seq, sent in flight.in_flight.items()
                    if sent.size > self.sizing.size]:
            flight.lost[seq] = flight.land(seq)
        for sent in flight.lost.values():
            sent.first_sent, sent.losses, sent.backoff = now, 0, 0
        self.cc.resized(self.sizing.size)

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing in flight or awaiting retransmission."""
        return not self.queue and self.flight.empty
