"""The per-session bookkeeping of :class:`loadbalancer.session.Connection`: which peer
incarnation holds the session, its reliable channel and replay window, the incarnations gone
for good, and what the channels of ended sessions counted.

Replay defence. Packet numbers grow per sender incarnation; a sliding window
of the last 1,024 drops copies (``duplicate``, what a network duplicates) and
anything older (``replayed``).
"""

from __future__ import annotations

from loadbalancer import wire
from loadbalancer.reliable import Event as ChannelEvent
from loadbalancer.reliable import ReliableChannel
from loadbalancer.wire import Rejected

REPLAY_WINDOW = 1024
# Partial messages held at once: the bound on what even a keyed peer can make us hold.
MAX_REASSEMBLY = 32 * 2**20


class ReplayWindow:
    """Which packet numbers of one sender incarnation were already seen."""

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self.size = size
        self._mask = (1 << size) - 1
        self.highest = -1
        self.bits = 0  # bit i set: packet highest - i was seen

    def check(self, number: int) -> None:
        if number > self.highest:
            shift = number - self.highest
            # A jump past the window forgets it whole, without a huge shift.
            kept = self.bits << shift if shift < self.size else 0
            self.bits = (kept | 1) & self._mask
            self.highest = number
            return
        offset = self.highest - number
        if offset >= self.size:
            raise Rejected("replayed", f"packet {number}")
        if self.bits >> offset & 1:
            raise Rejected("duplicate", f"packet {number}")
        self.bits |= 1 << offset


def _new_channel(max_datagram: int, peer_buffer: int = 0) -> ReliableChannel:
    smaller = [wire.fragment_capacity(size) for size in wire.STEPS if size < max_datagram]
    return ReliableChannel(max_fragment=wire.fragment_capacity(max_datagram),
                           smaller=smaller, max_reassembly=MAX_REASSEMBLY,
                           max_in_flight=peer_buffer or None)


class SessionState:
    """The session with one peer incarnation at a time (none between sessions); the counts
    span every session."""

    def __init__(self, max_datagram: int, heartbeat_timeout: float, now: float) -> None:
        self.max_datagram = max_datagram  # the largest we take
        self.heartbeat_timeout = heartbeat_timeout
        self.peer: int | None = None
        self.floor = 0  # peer incarnations at or below this are gone for good
        self.replay = ReplayWindow()
        self.last_heard = now
        self.channel = _new_channel(max_datagram)  # replaced, sized, when a peer joins
        self._last_datagram: int | None = None  # the size in use when the last session ended
        self._retransmits = 0  # of the channels of earlier sessions, as the four below
        self._spurious = 0
        self._duplicates = 0
        self._refused = 0
        self._steps = 0

    def is_gone(self, incarnation: int) -> bool:
        """An incarnation of the peer now or of an earlier one: it cannot open a session."""
        return incarnation <= max(self.floor, self.peer or 0)

    @property
    def expires(self) -> float:
        """When the session times out unless the peer is heard."""
        return self.last_heard + self.heartbeat_timeout

    def silent(self, now: float) -> bool:
        """The peer has not been heard for half a heartbeat timeout: a live one sends state
        more often."""
        return now - self.last_heard >= self.heartbeat_timeout / 2

    def open(self, incarnation: int, takes: wire.Takes, now: float) -> None:
        """A session with ``incarnation``, which takes what its greeting said."""
        self.peer = incarnation
        # Neither end sends more than the other takes.
        self.channel = _new_channel(min(self.max_datagram, takes.max_datagram),
                                    takes.receive_buffer)
        self.replay = ReplayWindow()
        self.last_heard = now

    def heard(self, number: int, now: float) -> None:
        """Datagram ``number`` of the peer came: raise :class:`Rejected` if it is a copy."""
        self.admit(number)
        self.heard_at(now)

    def admit(self, number: int) -> None:
        """Raise :class:`Rejected` if the peer's datagram ``number`` is a copy."""
        self.replay.check(number)

    def heard_at(self, now: float) -> None:
        """Datagrams of the peer that were no copies came at ``now``."""
        self.last_heard = now
        self.channel.heard(now)

    def close(self) -> list[ChannelEvent]:
        """End the session; what its channel delivered and was not taken yet still counts."""
        assert self.peer is not None
        delivered: list[ChannelEvent] = []
        while (event := self.channel.next_event()) is not None:
            delivered.append(event)
        self._last_datagram = self.datagram_size
        self.floor = max(self.floor, self.peer)
        self.peer = None
        self._retransmits += self.channel.retransmits
        self._spurious += self.channel.spurious
        self._duplicates += self.channel.duplicates
        self._refused += self.channel.refused
        self._steps += self.channel.steps_down
        self.channel = _new_channel(self.max_datagram)
        return delivered

    @property
    def datagram_size(self) -> int | None:
        """The largest datagram we send the peer: agreed when it joined, lower if the path
        dropped that; of the last session when there is none, None before the first."""
        if self.peer is None:
            return self._last_datagram
        return wire.datagram_size(self.channel.fragment_size)

    @property
    def retransmits(self) -> int:
        return self._retransmits + self.channel.retransmits

    @property
    def spurious(self) -> int:
        """Retransmissions whose original turned out to arrive: the timer was too quick."""
        return self._spurious + self.channel.spurious

    @property
    def duplicates(self) -> int:
        """Copies of fragments the channels recognised and did not act on."""
        return self._duplicates + self.channel.duplicates

    @property
    def refused(self) -> int:
        """Fragments dropped because reassembly was full."""
        return self._refused + self.channel.refused

    @property
    def steps_down(self) -> int:
        """Times the datagram size stepped down, in every session."""
        return self._steps + self.channel.steps_down
