"""The sending half of the channel: messages cut into fragments, sent within the window,
acknowledged, or declared lost and sent again.

A message becomes fragments with consecutive seqs; its id is the first. A lost fragment
goes again under the *same* seq, which the receiver uses to drop copies. It is lost when
its own timer runs out (the RTO, doubled per expiry of that fragment while the peer acks
nothing else, like QUIC's PTO: a peer that acks is there, and a loss among acks is bad
luck, not an outage), or on fast retransmit: ``PACKET_THRESHOLD`` fragments sent after it
are acked, or one that was sent more than 9/8 of a round trip after it (RFC 9002's time
rule, which catches tails too short for three). RTT samples come only from fragments sent
once (Karn's rule). The count of fragments in flight is capped at ``max_window``, which
bounds the gaps a receiver must track.

When the size steps down (:mod:`sizing`), what is unacknowledged goes again at once under
its own seqs, each fragment cut into *parts* of the new size (one datagram each,
acknowledged together as the fragment's seq), and new messages are cut to the new size.
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

PACKET_THRESHOLD = 3  # acked fragments sent after one that declare it lost
TIME_THRESHOLD = 9 / 8  # or this many round trips older than an acked one (RFC 9002)


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
    queue: deque[Fragment] = field(default_factory=deque)  # never sent, in seq order
    flight: Flight = field(default_factory=Flight)
    remaining: dict[int, int] = field(default_factory=dict)  # message id -> fragments unacked
    tx: int = 0  # the number of the next transmission
    retransmits: int = 0  # fragments sent again
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
        view = memoryview(payload)
        for index in range(count):
            data = view[index * step:(index + 1) * step]
            self.queue.append(Fragment(message_id + index, index, count, kind, data))
        self.next_seq += count
        self.remaining[message_id] = count
        return message_id

    def fragments_to_send(self, now: float) -> list[Fragment]:
        """Fragments to transmit now: retransmissions first, then new ones, up to the window."""
        out: list[Fragment] = []
        flight = self.flight
        while flight.bytes_in_flight < self.cc.window and len(flight.in_flight) < self.max_window:
            if flight.lost:
                sent = flight.lost.pop(next(iter(flight.lost)))
                sent.retransmitted = True
                self.retransmits += 1
            elif self.queue:
                sent = Sent(self.queue.popleft(), first_sent=now)
            else:
                break
            self._transmit(sent, now)
            if len(sent.fragment.data) <= self.sizing.size:
                out.append(sent.fragment)
            else:
                out.extend(self._parts(sent.fragment))
        return out

    def _parts(self, fragment: Fragment) -> list[Fragment]:
        """A fragment cut larger than the current size, as datagrams of that size."""
        size, data = self.sizing.size, fragment.data
        parts = -(-len(data) // size)
        return [Fragment(fragment.seq, fragment.index, fragment.count, fragment.kind,
                         data[part * size:(part + 1) * size], part, parts)
                for part in range(parts)]

    def _transmit(self, sent: Sent, now: float) -> None:
        idle = not self.flight.in_flight
        sent.delivered, sent.delivered_time = self.rate.sending(now, idle)
        sent.tx, self.tx = self.tx, self.tx + 1
        sent.time_sent = now
        sent.size = min(len(sent.fragment.data), self.sizing.size)
        sent.later_acked = 0
        sent.app_limited = not (self.queue or self.flight.lost)
        self.flight.take_off(sent, now + self.rtt.timeout(sent.backoff))

    def receive_ack(self, ranges: Sequence[tuple[int, int]], now: float) -> None:
        """Take the inclusive seq ranges the peer holds; unknown or old seqs are ignored."""
        acked = self.flight.acked(ranges)
        if not acked:
            return
        for sent in acked:
            self._acked(sent)
        newest = max(acked, key=lambda sent: sent.tx)
        self.rate.sample(newest.delivered, newest.delivered_time, newest.app_limited, now)
        self.last_ack_at = now
        once = [sent for sent in acked if not sent.retransmitted]  # Karn's rule
        if once:
            self.rtt.sample(now - max(once, key=lambda sent: sent.tx).time_sent)
        self._detect_lost(sorted(sent.tx for sent in acked), now)

    def _acked(self, sent: Sent) -> None:
        size = len(sent.fragment.data)
        self.rate.acked(size)
        self.sizing.acked(sent.size, sent.time_sent)
        message_id = sent.fragment.seq - sent.fragment.index
        self.remaining[message_id] -= 1
        if not self.remaining[message_id]:
            del self.remaining[message_id]
            self.events.append(MessageAcked(message_id))
        self.cc.acked(size, sent.time_sent, self.sizing.size)

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
        lost = self.flight.expired(now)
        for sent in lost:
            silent = self.last_ack_at <= sent.time_sent
            sent.backoff = sent.backoff + 1 if silent else 0
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
