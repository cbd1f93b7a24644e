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
incarnation also opens a session. A HELLO alone never changes the session, but
for one from a newer incarnation at the live peer's own address: that peer has
dropped the session, and so do we (:meth:`Admission._renewed`). Once
a peer incarnation is lost (timeout, BYE, or a newer one replaces it) it is never
accepted again. After a timeout or BYE we take a new incarnation ourselves, so
that a peer that still believes in the old session sees a newcomer and rejoins at
once.

Who gets a WELCOME: :mod:`loadbalancer.greeting`; which datagrams reach the session at all:
:mod:`loadbalancer.admission`.

Datagram size. HELLO and WELCOME state the largest datagram the sender takes
(its route's MTU less headers, or its config's value); both ends send at most
the smaller, and the reliable channel steps that down if the path drops it.

Addresses. Replies go to the peer's address, which moves only when a new one
answers a challenge (:mod:`paths`).

Replay defence, and what a session keeps: :mod:`loadbalancer.sessionstate`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loadbalancer import wire
from loadbalancer.addresses import Address
from loadbalancer.admission import Admission
from loadbalancer.admission import AuthenticationFailing as AuthenticationFailing  # events
from loadbalancer.admission import NewcomerRefused as NewcomerRefused
from loadbalancer.greeting import Greeting
from loadbalancer.paths import PeerPath
from loadbalancer.reliable import (
    Fragment,
    MessageAcked,
    MessageReceived,
    ProtocolViolation,
    ReliableChannel,
)
from loadbalancer.sessionstate import SessionState
from loadbalancer.wire import Header, Kind, Rejected, Role


@dataclass(frozen=True, slots=True)
class PeerJoined:
    incarnation: int


@dataclass(frozen=True, slots=True)
class PeerLost:
    reason: str  # "timeout", "bye", "replaced", "renewed" (the peer dropped our session)


@dataclass(frozen=True, slots=True)
class StateReceived:
    body: bytes


Event = (PeerJoined | PeerLost | StateReceived | MessageReceived | MessageAcked
         | NewcomerRefused | AuthenticationFailing)
class Connection:
    def __init__(self, role: Role, keys: wire.Keys, *, peer_address: Address,
                 new_incarnation: Callable[[], int], now: float,
                 max_datagram: int = wire.DEFAULT_MAX_DATAGRAM,
                 heartbeat_timeout: float = 3.0, hello_interval: float = 0.25) -> None:
        self.role = role
        self._peer_role = role.peer
        self.keys = keys
        self.path = PeerPath(peer_address)
        self.max_datagram = max_datagram  # the largest we take, as HELLO and WELCOME say
        self.greeting = Greeting(max_datagram, hello_interval, now)
        self.session = SessionState(max_datagram, heartbeat_timeout, now)
        self._new_incarnation = new_incarnation
        self.incarnation = new_incarnation()
        self._number = 0
        self._outbox: list[tuple[bytearray, Address]] = []
        self._events: collections.deque[Event] = collections.deque()
        self.dropped: collections.Counter[str] = collections.Counter()
        self._admission = Admission(role, self.path, self.session, self.greeting,
                                    self._events.append)
        self.bytes_sent = 0
        self.bytes_received = 0

    # ---- what the glue calls -------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.session.peer is not None

    @property
    def peer(self) -> int | None:
        """The peer's incarnation while a session is open."""
        return self.session.peer

    def receive_buffer(self, size: int) -> None:
        """Our socket holds ``size`` payload bytes unread: the peer keeps no more than that
        in flight to us, so a clean path loses nothing to our socket's overflow."""
        self.greeting.receive_buffer(size)

    def joining(self, now: float, within: float) -> bool:
        """Whether a would-be peer is part way into a session: no session is open, and we
        answered its HELLO ``within`` seconds before ``now``."""
        welcomed = self.greeting.welcomed_at
        return self.peer is None and welcomed is not None and now - welcomed <= within

    @property
    def channel(self) -> ReliableChannel:
        return self.session.channel

    @property
    def retransmits(self) -> int:
        return self.session.retransmits

    @property
    def spurious(self) -> int:
        """Retransmissions whose original turned out to arrive: the timer was too quick."""
        return self.session.spurious

    @property
    def peer_address(self) -> Address:
        return self.path.address

    @property
    def datagram_size(self) -> int | None:
        """The largest datagram we send the peer (see :class:`SessionState`)."""
        return self.session.datagram_size

    @property
    def datagram_steps(self) -> int:
        """Times the datagram size stepped down, in every session."""
        return self.session.steps_down

    def drops(self) -> dict[str, int]:
        """Datagrams and fragments dropped, by reason."""
        counts = dict(self.dropped)
        refused = self.session.refused
        if refused:
            counts["reassembly_full"] = refused
        return counts

    @property
    def suppressed(self) -> int:
        """Copies recognised and not acted on: network duplicates and retransmissions."""
        return self.session.duplicates + self.dropped["duplicate"]

    def receive_datagram(self, data: wire.Bytes, address: Address, now: float) -> None:
        self.receive_datagrams((data,), address, now)

    def receive_datagrams(self, datagrams: Sequence[wire.Bytes], address: Address,
                          now: float) -> None:
        """Datagrams read together from ``address`` (a burst). Each is decoded and
        authenticated on its own and dropped on its own; the fragments of the open
        session among them go to the channel together, in order, which spares each the
        steps that are the same for all of them (where they came from, when)."""
        self.bytes_received += sum(map(len, datagrams))
        fragments: list[Fragment] = []
        done = 0
        while done < len(datagrams):
            done += self._receive_run(datagrams[done:], address, now, fragments)
        self._take(fragments, now)

    def _receive_run(self, datagrams: Sequence[wire.Bytes], address: Address, now: float,
                     fragments: list[Fragment]) -> int:
        """Take datagrams of a burst until one changes the session (a BYE, a join), which
        the fast path of those after it must know; how many were taken."""
        fast = self._open(datagrams, address)
        if fast.count(None) < len(fast):
            self.path.heard(address, now)  # copies too: the old path is alive
        session = (self.session.peer, self.incarnation)
        for taken, (data, opened) in enumerate(zip(datagrams, fast, strict=True), 1):
            try:
                if opened is not None:
                    self.session.admit(opened[0])
                    fragments.append(opened[1])
                    continue
                datagram = wire.decode(self.keys, data, self.max_datagram)
                self._take(fragments, now)  # what came before it goes first
                self._accept(datagram, address, now)
            except Rejected as error:
                self.dropped[error.reason] += 1
                if error.reason == "bad_tag":
                    self._admission.failed_tag(address)
            except ProtocolViolation:
                self.dropped["malformed"] += 1
            if (self.session.peer, self.incarnation) != session:
                return taken
        return len(datagrams)

    def _open(self, datagrams: Sequence[wire.Bytes], address: Address) -> list[wire.Opened]:
        """The open session's fragments from the peer's known address, found by the
        codec's fast path: what :meth:`_accept` would pass without a word, join or
        challenge. Everything else takes the way through :meth:`_accept`."""
        peer = self.session.peer
        if peer is None or address != self.path.address:
            return [None] * len(datagrams)
        return wire.open_fragments(self.keys, datagrams, self.max_datagram, self._peer_role,
                                   peer, self.incarnation)

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
            self._queue_acks(float("inf"))
            self._queue(Kind.BYE)

    def next_event(self) -> Event | None:
        if self._events:
            return self._events.popleft()
        return self.channel.next_event()

    def handle_timer(self, now: float) -> None:
        if self.peer is not None and now >= self.session.expires:
            self._lose("timeout")
        self.channel.handle_timer(now)

    def next_deadline(self) -> float | None:
        if self.peer is None:
            return self.greeting.next_hello
        deadline = self.session.expires
        channel = self.channel.next_deadline()
        return deadline if channel is None else min(deadline, channel)

    def datagrams_to_send(self, now: float) -> list[tuple[bytearray, Address]]:
        if self.peer is None and self.greeting.hello_due(now):
            self._queue(Kind.HELLO, body=self.greeting.body)
        if self.peer is not None:
            self._queue_acks(now)
            self._queue_fragments(self.channel.fragments_to_send(now))
        out, self._outbox = self._outbox, []
        self.bytes_sent += sum(len(data) for data, _ in out)
        return out

    # ---- inside -----------------------------------------------------------------
    def _queue(self, kind: Kind, *, address: Address | None = None, dst: int | None = None,
               **parts: object) -> None:
        if dst is None:
            dst = self.peer or 0
        header = Header(kind, self.role, self.incarnation, dst, self._number)
        self._number += 1
        data = wire.encode(self.keys, header, **parts)  # type: ignore[arg-type]
        self._outbox.append((data, address or self.path.address))

    def _queue_fragments(self, fragments: list[Fragment]) -> None:
        """Nearly every datagram: to the peer, through the codec's fragment fast path."""
        address = self.path.address
        sealed = wire.seal_fragments(self.keys, self.role, self.incarnation, self.peer or 0,
                                     self._number, fragments)
        self._number += len(sealed)
        self._outbox.extend((data, address) for data in sealed)

    def _queue_acks(self, now: float) -> None:
        while (ack := self.channel.ack_to_send(now)) is not None:
            self._queue(Kind.ACK, ranges=ack.ranges, originals=ack.originals)

    def _take(self, fragments: list[Fragment], now: float) -> None:
        """The session's fragments of a burst, admitted one by one, to the channel."""
        if fragments:
            self.session.heard_at(now)
            if violations := self.channel.receive_fragments(fragments, now):
                self.dropped["malformed"] += violations
            fragments.clear()

    def _accept(self, datagram: wire.Datagram, address: Address, now: float) -> None:
        header = datagram.header
        renewed = self._admission.check(header, datagram.body, address, now, self.incarnation)
        if renewed:
            self._lose("renewed")  # and our WELCOME names an incarnation it has not lost
        if header.kind is Kind.HELLO:
            # To the HELLO's source, proven or not: a peer behind a NAT is reachable only there.
            self._queue(Kind.WELCOME, address=address, dst=header.src, body=self.greeting.body)
            return
        if header.src != self.peer:
            self._join(header.src, self.greeting.peer_takes(datagram), now)
        self.path.heard(address, now)  # a copy too: the old path is alive
        self.session.heard(header.number, now)
        self._dispatch(datagram, address, now)
        token = self.path.challenge(address, now)
        if token is not None:
            self._queue(Kind.PATH_CHALLENGE, address=address, body=token)

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

    def _join(self, incarnation: int, takes: wire.Takes, now: float) -> None:
        if self.peer is not None:
            # Keep our incarnation: the newcomer knows it, and the old peer's
            # datagrams are stale by theirs.
            self._lose("replaced", renew=False)
        self.session.open(incarnation, takes, now)
        round_trip = self.greeting.round_trip(now)
        if round_trip is not None:
            self.channel.rtt_hint(round_trip)
        self._events.append(PeerJoined(incarnation))
        # Confirm at once: the peer may be waiting for a datagram naming it.
        self._queue(Kind.WELCOME, body=self.greeting.body)

    def _lose(self, reason: str, renew: bool = True) -> None:
        self._events.extend(self.session.close())  # what the old session delivered still counts
        if renew:
            # A peer that still thinks it has our session learns otherwise
            # from our next HELLO, which names an incarnation it has not seen.
            self.incarnation = max(self._new_incarnation(), self.incarnation + 1)
            self._number = 0
        self.greeting.hello_again()
        self._events.append(PeerLost(reason))
