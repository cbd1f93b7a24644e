"""One end of a reliable channel: the sender and the receiver, and what they share."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from loadbalancer.rangeset import RangeSet
from loadbalancer.reliable.congestion import CongestionWindow
from loadbalancer.reliable.fragment import MAX_COUNT, Ack, Event, Fragment, ProtocolViolation
from loadbalancer.reliable.rate import DeliveryRate
from loadbalancer.reliable.receiver import AckState, Receiver
from loadbalancer.reliable.rtt import MAX_ACK_DELAY, RttEstimate
from loadbalancer.reliable.sender import Sender
from loadbalancer.reliable.sizing import FragmentSize


class ReliableChannel:
    """One end of a channel; both ends are alike. Public attributes are read-only."""

    def __init__(self, *, max_fragment: int, smaller: Sequence[int] = (),
                 max_message: int = 64 * 2**20,
                 max_reassembly: int = 128 * 2**20, initial_rtt: float = 0.1,
                 min_rto: float = 0.01, max_rto: float = 2.0, max_ack_delay: float = MAX_ACK_DELAY,
                 initial_window: int = 32, max_window: int = 1024,
                 max_in_flight: int | None = None,
                 ack_delay: float = 0.002, ack_every: int = 8, max_ack_ranges: int = 64) -> None:
        if (max_fragment < 1 or not 0 < min_rto <= max_rto or not 1 <= initial_window <= max_window
                or not 0 <= max_ack_delay <= max_rto
                or (max_in_flight is not None and max_in_flight < 1)):
            raise ValueError("bad reliable channel settings")
        self._sizing = FragmentSize.of(max_fragment, smaller)
        # Capped so that every message fits the 16-bit fragment count.
        self.max_message = min(max_message, MAX_COUNT * max_fragment)
        self._rtt = RttEstimate.initial(initial_rtt, min_rto, max_rto, max_ack_delay)
        self._cc = CongestionWindow.of(initial_window, max_fragment, max_window, max_in_flight)
        self._rate = DeliveryRate()
        self._events: deque[Event] = deque()
        self._sender = Sender(self._rtt, self._cc, self._rate, self._sizing, self._events,
                              self.max_message, max_window)
        # A peer that stepped down cuts messages into more, smaller fragments.
        max_count = min(MAX_COUNT, max(1, -(-self.max_message // self._sizing.smallest)))
        self._receiver = Receiver(
            AckState(ack_delay, ack_every, max_ack_ranges), self._events, max_fragment,
            self.max_message, max_reassembly, max_count, min_part=self._sizing.smallest,
            max_parts=self._sizing.max_parts, received=RangeSet(max_ranges=4 * max_window),
            max_pieces=4 * max_window)

    # ---- sending ----------------------------------------------------------------
    def send(self, kind: int, payload: bytes, now: float) -> int:
        """Queue a message and return its id. ``now`` is unused: nothing goes out
        until ``fragments_to_send``."""
        return self._sender.send(kind, payload)

    def fragments_to_send(self, now: float) -> list[Fragment]:
        """Fragments to transmit now: retransmissions first, then new ones, up to the window."""
        return self._sender.fragments_to_send(now)

    def receive_ack(self, ranges: Sequence[tuple[int, int]], now: float,
                    originals: Sequence[int] = ()) -> None:
        """Take the inclusive seq ranges the peer holds, and the seqs whose first
        transmission it says arrived (an :class:`Ack`'s two parts); unknown or old seqs
        are ignored."""
        self._sizing.heard(now)
        self._sender.receive_ack(ranges, now, originals)

    def handle_timer(self, now: float) -> None:
        """Declare lost every fragment whose retransmission timer ran out by ``now``."""
        self._sender.handle_timer(now)

    def heard(self, now: float) -> None:
        """Something came from the peer (a state message, say): small datagrams get through."""
        self._sizing.heard(now)

    def rtt_hint(self, rtt: float) -> None:
        """A round trip measured outside the channel (the handshake); it stands in
        for a sample until the channel has one of its own."""
        self._rtt.hint(rtt)

    # ---- receiving --------------------------------------------------------------
    def receive_fragment(self, fragment: Fragment, now: float) -> bool:
        """True if the fragment was new and kept, False if a duplicate or refused.

        Raises ProtocolViolation, having changed nothing, if it cannot be right.
        """
        kept = self._receiver.receive(fragment, now)
        self._sizing.heard(now)
        return kept

    def receive_fragments(self, fragments: Iterable[Fragment], now: float) -> int:
        """Fragments that came together, each as :meth:`receive_fragment` takes it; the
        number that could not be right (each dropped, having changed nothing)."""
        violations = 0
        receive = self._receiver.receive
        for fragment in fragments:
            try:
                receive(fragment, now)
            except ProtocolViolation:
                violations += 1
        self._sizing.heard(now)
        return violations

    def ack_to_send(self, now: float) -> Ack | None:
        """The ack to send, if one is due by ``now``; call again until None (news held
        back for the ack after a first one goes at once)."""
        return self._receiver.ack_to_send(now)

    # ---- timer and events ---------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When ``handle_timer`` or ``ack_to_send`` next has work; None if never."""
        deadlines = [t for t in (self._receiver.acks.ack_at, self._sender.flight.next_timer())
                     if t is not None]
        return min(deadlines, default=None)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # ---- state, read-only ---------------------------------------------------------
    @property
    def max_fragment(self) -> int:
        """The most either end sends in one fragment."""
        return self._sizing.max_fragment

    @property
    def fragment_size(self) -> int:
        """What this end cuts to now."""
        return self._sizing.size

    @property
    def steps_down(self) -> int:
        return self._sizing.steps_down

    @property
    def min_rto(self) -> float:
        return self._rtt.min_rto

    @property
    def srtt(self) -> float | None:
        """The smoothed round trip; None until the first sample."""
        return self._rtt.srtt

    @property
    def rto(self) -> float:
        return self._rtt.rto

    @property
    def window(self) -> int:
        """The congestion window, in payload bytes."""
        return self._cc.window

    @property
    def bytes_in_flight(self) -> int:
        return self._sender.flight.bytes_in_flight

    @property
    def bytes_acked(self) -> int:
        return self._rate.bytes_acked

    @property
    def delivery_rate(self) -> float | None:
        """Acked payload bytes/s of the link, smoothed; None until measured."""
        return self._rate.rate

    @property
    def retransmits(self) -> int:
        """Fragments sent again."""
        return self._sender.retransmits

    @property
    def spurious(self) -> int:
        """Retransmissions whose original the peer showed was acknowledged after all."""
        return self._sender.spurious

    @property
    def duplicates(self) -> int:
        """Fragments received again and suppressed."""
        return self._receiver.duplicates

    @property
    def refused(self) -> int:
        """Fragments neither kept nor acked: no budget or no range left."""
        return self._receiver.refused

    @property
    def _buffered(self) -> int:
        """Payload bytes held for reassembly (tests look)."""
        return self._receiver.buffered

    @property
    def unsent(self) -> int:
        """Bytes of queued messages not yet sent once."""
        return self._sender.unsent

    @property
    def in_flight(self) -> int:
        """Fragments sent and neither acked nor declared lost."""
        return len(self._sender.flight.in_flight)

    @property
    def unacked_messages(self) -> int:
        """Messages sent (or queued) and not fully acked."""
        return len(self._sender.remaining)

    @property
    def idle(self) -> bool:
        """Nothing queued, nothing in flight or awaiting retransmission, no ack owed."""
        return self._sender.idle and self._receiver.acks.ack_at is None
