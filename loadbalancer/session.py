"""One node's end of the link to its peer, as a pure state machine.

Like aioquic's ``QuicConnection``: datagrams and the clock go in, datagrams,
events and the next deadline come out; no sockets, no asyncio.

Sessions. Each process (and each session after a loss) has an *incarnation*:
a number that only grows, drawn from the wall clock. A datagram names its
sender's incarnation and the receiver's incarnation as the sender knows it.
A node with no peer sends HELLO; the answer WELCOME echoes the asker's
incarnation, which proves it is fresh, so the asker accepts the new session.
The exchange also gives each side its first round-trip sample, so that a loss
of the session's first message costs a timeout sized to the link, not a guess.
Any other datagram that names our incarnation and carries a newer peer
incarnation also opens a session. A HELLO alone never changes the session. Once
a peer incarnation is lost (timeout, BYE, or a newer one replaces it) it is never
accepted again. After a timeout or BYE we take a new incarnation ourselves, so
that a peer that still believes in the old session sees a newcomer and rejoins at
once.

Who gets a WELCOME. Anyone may replay HELLOs he captured, of any earlier
incarnation, from any address, at any rate, but he cannot make new ones, and a
peer that starts (or restarts) takes an incarnation newer than any before it. So
the budget is per incarnation, not shared (:class:`Greeters`): the few newest
incarnations that said HELLO are each answered at most every ``WELCOME_GAP``, a
copy of a HELLO already seen is not answered, and a HELLO older than all of them
is not answered at all. Replays cannot spend the real peer's budget, and what
they earn is bounded by the table, not by their rate.

Datagram size. HELLO and WELCOME state the largest datagram the sender takes
(its route's MTU less headers, or its config's value); both ends send at most
the smaller, and the reliable channel steps that down if the path drops it.

Addresses. Replies go to the peer's address, which moves only when a new one
answers a challenge (:mod:`paths`).

Replay defence. Packet numbers grow per sender incarnation; a sliding window
of the last 1,024 drops copies (``duplicate``, what a network duplicates) and
anything older (``replayed``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

from loadbalancer import wire
from loadbalancer.addresses import Address
from loadbalancer.paths import PeerPath
from loadbalancer.reliable import (
    MessageAcked,
    MessageReceived,
    ProtocolViolation,
    ReliableChannel,
)
from loadbalancer.wire import Header, Kind, Rejected, Role

REPLAY_WINDOW = 1024
# Partial messages held at once: the bound on what even a keyed peer can make us hold.
MAX_REASSEMBLY = 32 * 2**20
# HELLOs are answered for this many incarnations, the newest heard, each at most every
# WELCOME_GAP (a peer says HELLO every 0.25 s): at most 40 WELCOMEs a second, and one
# for each incarnation newer than the table held when it came.
HELLO_SENDERS = 4
WELCOME_GAP = 0.1


@dataclass(frozen=True, slots=True)
class PeerJoined:
    incarnation: int


@dataclass(frozen=True, slots=True)
class PeerLost:
    reason: str  # "timeout", "bye", "restarted", "replaced"


@dataclass(frozen=True, slots=True)
class StateReceived:
    body: bytes


@dataclass(frozen=True, slots=True)
class NewcomerRefused:
    """Another peer with the secret asked to join while ours is alive (said once each)."""

    address: Address


@dataclass(frozen=True, slots=True)
class AuthenticationFailing:
    """Datagrams from the configured peer's address fail the tag (said once): the two
    nodes most likely use different secrets."""

    address: Address


Event = (PeerJoined | PeerLost | StateReceived | MessageReceived | MessageAcked
         | NewcomerRefused | AuthenticationFailing)
# Incarnations refused while a live peer held the place, remembered so each is said once.
MAX_REFUSED = 16
BAD_TAGS_SAID = 3  # datagrams from the peer's address that fail the tag before we say so


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


@dataclass(slots=True)
class _Greeter:
    highest: int  # the highest packet number of its HELLOs
    welcomed: float  # when we last answered one
    max_datagram: int  # the size its HELLOs state


class Greeters:
    """The newest incarnations that said HELLO, and whether the next HELLO is answered."""

    def __init__(self, size: int = HELLO_SENDERS) -> None:
        self.size = size
        self._known: dict[int, _Greeter] = {}

    def admit(self, incarnation: int, number: int, max_datagram: int, now: float) -> None:
        """Return if this HELLO earns a WELCOME, else raise :class:`Rejected`."""
        known = self._known.get(incarnation)
        if known is None:
            if len(self._known) >= self.size:
                oldest = min(self._known)
                if incarnation < oldest:
                    raise Rejected("old_hello", "older than every incarnation answered")
                # Evicted, it is older than the table from now on: one WELCOME at most.
                del self._known[oldest]
            self._known[incarnation] = _Greeter(number, now, max_datagram)
            return
        if number <= known.highest:
            raise Rejected("replayed", f"hello {number}")
        known.highest = number
        if now - known.welcomed < WELCOME_GAP:
            raise Rejected("rate_limited", "welcome")
        known.welcomed = now

    def max_datagram(self, incarnation: int) -> int | None:
        known = self._known.get(incarnation)
        return None if known is None else known.max_datagram


class Connection:
    def __init__(self, role: Role, keys: wire.Keys, *, peer_address: Address,
                 new_incarnation: Callable[[], int], now: float,
                 max_datagram: int = wire.DEFAULT_MAX_DATAGRAM,
                 heartbeat_timeout: float = 3.0, hello_interval: float = 0.25) -> None:
        self.role = role
        self.keys = keys
        self.path = PeerPath(peer_address)
        self.max_datagram = max_datagram  # the largest we take, as HELLO and WELCOME say
        self._greeting = wire.encode_greeting(max_datagram)
        self._greeters = Greeters()
        self.heartbeat_timeout = heartbeat_timeout
        self.hello_interval = hello_interval
        self._new_incarnation = new_incarnation
        self.incarnation = new_incarnation()
        self.peer: int | None = None
        self._floor = 0  # peer incarnations at or below this are gone for good
        self._number = 0
        self._replay = ReplayWindow()
        self._last_heard = now
        self._next_hello = now
        self._greeted_at: float | None = None  # our latest HELLO or WELCOME to a HELLO
        self._outbox: list[tuple[bytearray, Address]] = []
        self._events: collections.deque[Event] = collections.deque()
        self.channel = self._new_channel(max_datagram)  # replaced, sized, when a peer joins
        self._last_datagram: int | None = None  # the size in use when the last session ended
        self.dropped: collections.Counter[str] = collections.Counter()
        self._refused: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._configured_peer = peer_address  # where a wrong secret is worth a word
        self._said_bad_tag = False
        self._bad_tags_from_peer = 0
        self.retransmits_closed = 0  # retransmits of channels of earlier sessions
        self.spurious_closed = 0
        self.suppressed_closed = 0
        self.refused_closed = 0
        self.steps_closed = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    # ---- what the glue calls -------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.peer is not None

    @property
    def retransmits(self) -> int:
        return self.retransmits_closed + self.channel.retransmits

    @property
    def spurious(self) -> int:
        """Retransmissions whose original turned out to arrive: the timer was too quick."""
        return self.spurious_closed + self.channel.spurious

    @property
    def peer_address(self) -> Address:
        return self.path.address

    @property
    def datagram_size(self) -> int | None:
        """The largest datagram we send the peer: agreed when it joined, lower if the path
        dropped that; of the last session when there is none, None before the first."""
        if self.peer is None:
            return self._last_datagram
        return wire.datagram_size(self.channel.fragment_size)

    @property
    def datagram_steps(self) -> int:
        """Times the datagram size stepped down, in every session."""
        return self.steps_closed + self.channel.steps_down

    def drops(self) -> dict[str, int]:
        """Datagrams and fragments dropped, by reason."""
        counts = dict(self.dropped)
        refused = self.refused_closed + self.channel.refused
        if refused:
            counts["reassembly_full"] = refused
        return counts

    @property
    def suppressed(self) -> int:
        """Copies recognised and not acted on: network duplicates and retransmissions."""
        return self.suppressed_closed + self.channel.duplicates + self.dropped["duplicate"]

    def receive_datagram(self, data: bytes, address: Address, now: float) -> None:
        self.bytes_received += len(data)
        try:
            datagram = wire.decode(self.keys, data, self.max_datagram)
            self._accept(datagram, address, now)
        except Rejected as error:
            self.dropped[error.reason] += 1
            if error.reason == "bad_tag":
                self._failed_tag(address)
        except ProtocolViolation:
            self.dropped["malformed"] += 1

    def send(self, kind: Kind, payload: bytes, now: float) -> int | None:
        """Queue a reliable message; its id, or None when there is no session."""
        if self.peer is None:
            return None
        return self.channel.send(kind, payload, now)

    def send_state(self, body: bytes) -> None:
        if self.peer is not None:
            self._queue(Kind.STATE, body=body)

    def say_bye(self) -> None:
        """Leave: acknowledge what we hold at once (no delayed ack will follow), then BYE."""
        if self.peer is not None:
            while (ack := self.channel.ack_to_send(float("inf"))) is not None:
                self._queue(Kind.ACK, ranges=ack.ranges, originals=ack.originals)
            self._queue(Kind.BYE)

    def next_event(self) -> Event | None:
        if self._events:
            return self._events.popleft()
        return self.channel.next_event()

    def handle_timer(self, now: float) -> None:
        if self.peer is not None and now >= self._last_heard + self.heartbeat_timeout:
            self._lose("timeout")
        self.channel.handle_timer(now)

    def next_deadline(self) -> float | None:
        if self.peer is None:
            return self._next_hello
        deadline = self._last_heard + self.heartbeat_timeout
        channel = self.channel.next_deadline()
        return deadline if channel is None else min(deadline, channel)

    def datagrams_to_send(self, now: float) -> list[tuple[bytearray, Address]]:
        if self.peer is None and now >= self._next_hello:
            self._queue(Kind.HELLO, body=self._greeting)
            self._next_hello = now + self.hello_interval
            self._greeted_at = now
        if self.peer is not None:
            while (ack := self.channel.ack_to_send(now)) is not None:
                self._queue(Kind.ACK, ranges=ack.ranges, originals=ack.originals)
            for fragment in self.channel.fragments_to_send(now):
                self._queue(wire.KINDS[fragment.kind], fragment=fragment)
        out, self._outbox = self._outbox, []
        self.bytes_sent += sum(len(data) for data, _ in out)
        return out

    # ---- inside -----------------------------------------------------------------
    @staticmethod
    def _new_channel(max_datagram: int) -> ReliableChannel:
        smaller = [wire.fragment_capacity(size) for size in wire.STEPS if size < max_datagram]
        return ReliableChannel(max_fragment=wire.fragment_capacity(max_datagram),
                               smaller=smaller, max_reassembly=MAX_REASSEMBLY)

    def _queue(self, kind: Kind, *, address: Address | None = None, dst: int | None = None,
               **parts: object) -> None:
        if dst is None:
            dst = self.peer or 0
        header = Header(kind, self.role, self.incarnation, dst, self._number)
        self._number += 1
        data = wire.encode(self.keys, header, **parts)  # type: ignore[arg-type]
        self._outbox.append((data, address or self.path.address))

    def _accept(self, datagram: wire.Datagram, address: Address, now: float) -> None:
        header = datagram.header
        if header.role is not self.role.peer:
            raise Rejected("wrong_role")
        if header.kind is Kind.HELLO:
            self._on_hello(header, datagram.body, address, now)
            return
        if header.dst != self.incarnation:
            raise Rejected("stale_session", "addressed to an earlier incarnation")
        if header.src != self.peer:
            if header.src <= max(self._floor, self.peer or 0):
                raise Rejected("stale_session", "from an earlier peer incarnation")
            self._check_place(header.src, address, now)
            self._join(header.src, self._peer_max_datagram(datagram), now)
        self.path.heard(address, now)  # a copy too: the old path is alive
        self._replay.check(header.number)
        self._last_heard = now
        self.channel.heard(now)
        self._dispatch(datagram, address, now)
        token = self.path.challenge(address, now)
        if token is not None:
            self._queue(Kind.PATH_CHALLENGE, address=address, body=token)

    def _failed_tag(self, address: Address) -> None:
        """Said once, while no session is open: forged datagrams cost nothing else, but a
        peer whose every datagram fails is one with another secret, and both ends should
        say so instead of waiting in silence."""
        self._bad_tags_from_peer += address == self._configured_peer
        if (self.peer is None and not self._said_bad_tag
                and self._bad_tags_from_peer >= BAD_TAGS_SAID):
            self._said_bad_tag = True
            self._events.append(AuthenticationFailing(address))

    def _check_place(self, incarnation: int, address: Address, now: float) -> None:
        """A peer we still hear from keeps its place: a second slave with the same secret
        is refused (it gives up in time), where the two used to replace each other, one
        heartbeat timeout after the other, for ever. A peer that stopped (a restart) has
        been silent half a heartbeat timeout first: a live one sends state more often."""
        if self.peer is None or now - self._last_heard >= self.heartbeat_timeout / 2:
            return
        if incarnation not in self._refused:
            self._refused[incarnation] = None
            if len(self._refused) > MAX_REFUSED:
                self._refused.popitem(last=False)
            self._events.append(NewcomerRefused(address))
        raise Rejected("peer_busy", "a live peer holds the session")

    def _peer_max_datagram(self, datagram: wire.Datagram) -> int:
        """The size a joining peer takes: its WELCOME says, or the HELLO we answered did
        (when the WELCOME was lost and another datagram opens the session)."""
        if datagram.header.kind is Kind.WELCOME:
            return wire.decode_greeting(datagram.body)
        known = self._greeters.max_datagram(datagram.header.src)
        return wire.DEFAULT_MAX_DATAGRAM if known is None else known

    def _on_hello(self, header: Header, body: bytes, address: Address, now: float) -> None:
        if header.src == self.peer:
            # A HELLO sent before the session opened, arriving late, or a
            # replay: the session is there already. (A peer that lost our
            # session takes a new incarnation before it says HELLO again.)
            raise Rejected("stale_hello")
        if header.src <= self._floor:
            raise Rejected("stale_session", "hello from an earlier peer incarnation")
        self._check_place(header.src, address, now)
        self._greeters.admit(header.src, header.number, wire.decode_greeting(body), now)
        self._greeted_at = now
        # To the HELLO's source, proven or not: a peer behind a NAT is reachable only there.
        self._queue(Kind.WELCOME, address=address, dst=header.src, body=self._greeting)

    def _dispatch(self, datagram: wire.Datagram, address: Address, now: float) -> None:
        kind = datagram.header.kind
        if datagram.fragment is not None:
            self.channel.receive_fragment(datagram.fragment, now)
        elif kind is Kind.ACK:
            self.channel.receive_ack(datagram.ranges, now, datagram.originals)
        elif kind is Kind.STATE:
            self._events.append(StateReceived(datagram.body))
        elif kind is Kind.PATH_CHALLENGE:
            # Answered to the address we know: a challenge relayed from elsewhere
            # earns its relay nothing.
            self._queue(Kind.PATH_RESPONSE, body=datagram.body)
        elif kind is Kind.PATH_RESPONSE:
            self.path.answered(address, datagram.body, now)
        elif kind is Kind.BYE:
            self._lose("bye")

    def _join(self, incarnation: int, max_datagram: int, now: float) -> None:
        if self.peer is not None:
            # Keep our incarnation: the newcomer knows it, and the old peer's
            # datagrams are stale by theirs.
            self._lose("replaced", renew=False)
        self.peer = incarnation
        # Neither end sends more than the other takes.
        self.channel = self._new_channel(min(self.max_datagram, max_datagram))
        self._replay = ReplayWindow()
        self._last_heard = now
        if self._greeted_at is not None and now - self._greeted_at < self.hello_interval:
            # The answer to our latest greeting, or to an earlier one: at worst an
            # underestimate, which costs an early retransmission. Longer gaps say
            # nothing (greetings repeat that often), and the initial guess stays.
            self.channel.rtt_hint(now - self._greeted_at)
        self._greeted_at = None
        self._events.append(PeerJoined(incarnation))
        # Confirm at once: the peer may be waiting for a datagram naming it.
        self._queue(Kind.WELCOME, body=self._greeting)

    def _lose(self, reason: str, renew: bool = True) -> None:
        assert self.peer is not None
        while (event := self.channel.next_event()) is not None:
            self._events.append(event)  # what the old session delivered still counts
        self._last_datagram = self.datagram_size
        self._floor = max(self._floor, self.peer)
        self.peer = None
        self.retransmits_closed += self.channel.retransmits
        self.spurious_closed += self.channel.spurious
        self.suppressed_closed += self.channel.duplicates
        self.refused_closed += self.channel.refused
        self.steps_closed += self.channel.steps_down
        self.channel = self._new_channel(self.max_datagram)
        if renew:
            # A peer that still thinks it has our session learns otherwise
            # from our next HELLO, which names an incarnation it has not seen.
            self.incarnation = max(self._new_incarnation(), self.incarnation + 1)
            self._number = 0
        self._next_hello = 0.0
        self._events.append(PeerLost(reason))
