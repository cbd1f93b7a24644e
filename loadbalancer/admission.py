"""Which datagrams get as far as :class:`loadbalancer.session.Connection`'s session: the
role, the incarnations, a second peer refused while ours is alive, and the refusals worth
a word (said once each)."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

from loadbalancer.addresses import Address
from loadbalancer.greeting import Greeting
from loadbalancer.paths import PeerPath
from loadbalancer.sessionstate import SessionState
from loadbalancer.wire import Header, Kind, Rejected, Role


@dataclass(frozen=True, slots=True)
class NewcomerRefused:
    """Another peer with the secret asked to join while ours is alive (said once each)."""

    address: Address


@dataclass(frozen=True, slots=True)
class AuthenticationFailing:
    """Datagrams from the configured peer's address fail the tag (said once): the two
    nodes most likely use different secrets."""

    address: Address


Notice = NewcomerRefused | AuthenticationFailing  # what admission has to say
# Incarnations refused while a live peer held the place, remembered so each is said once.
MAX_REFUSED = 16
BAD_TAGS_SAID = 3  # datagrams from the peer's address that fail the tag before we say so


class Admission:
    """Which datagrams get as far as the session, and the refusals worth a word (said once)."""

    def __init__(self, role: Role, path: PeerPath, session: SessionState,
                 greeting: Greeting, say: Callable[[Notice], None]) -> None:
        self.role = role
        self.path = path
        self.session = session
        self.greeting = greeting
        self._say = say
        self._refused: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._configured_peer = path.address  # where a wrong secret is worth a word
        self._said_bad_tag = False
        self._bad_tags_from_peer = 0

    def check(self, header: Header, body: bytes, address: Address, now: float,
              incarnation: int) -> bool:
        """Return if the datagram, to our ``incarnation``, is to be handled (a HELLO: it
        earns a WELCOME), else raise :class:`Rejected`; True if it is a HELLO that says
        the peer has dropped our session (:meth:`_renewed`)."""
        if header.role is not self.role.peer:
            raise Rejected("wrong_role")
        if header.kind is Kind.HELLO:
            return self._check_hello(header, body, address, now)
        if header.dst != incarnation:
            raise Rejected("stale_session", "addressed to an earlier incarnation")
        if header.src != self.session.peer:
            if self.session.is_gone(header.src):
                raise Rejected("stale_session", "from an earlier peer incarnation")
            self._check_place(header.src, address, now)
        return False

    def failed_tag(self, address: Address) -> None:
        """Said once, while no session is open: forged datagrams cost nothing else, but a
        peer whose every datagram fails is one with another secret, and both ends should
        say so instead of waiting in silence."""
        self._bad_tags_from_peer += address == self._configured_peer
        if (self.session.peer is None and not self._said_bad_tag
                and self._bad_tags_from_peer >= BAD_TAGS_SAID):
            self._said_bad_tag = True
            self._say(AuthenticationFailing(address))

    def _check_hello(self, header: Header, body: bytes, address: Address, now: float) -> bool:
        if header.src == self.session.peer:
            # A HELLO sent before the session opened, arriving late, or a
            # replay: the session is there already. (A peer that lost our
            # session takes a new incarnation before it says HELLO again.)
            raise Rejected("stale_hello")
        if header.src <= self.session.floor:
            raise Rejected("stale_session", "hello from an earlier peer incarnation")
        renewed = self._renewed(header.src, address)
        if not renewed:
            self._check_place(header.src, address, now)
        self.greeting.admit(header, body, now)
        return renewed

    def _renewed(self, incarnation: int, address: Address) -> bool:
        """A HELLO from a newer incarnation than our live peer's, from the address that
        peer uses: one address is one socket, so it is our peer, which has dropped our
        session (it timed out while this process was stopped, or it restarted) and says
        so. Waiting for our own timeout instead kept a node that had been stopped for
        longer than it working for three more seconds on jobs its peer had taken back.
        A replay cannot fake it: the incarnation is one the peer has taken since."""
        peer = self.session.peer
        return peer is not None and incarnation > peer and address == self.path.address

    def _check_place(self, incarnation: int, address: Address, now: float) -> None:
        """A peer we still hear from keeps its place: a second slave with the same secret
        is refused (it gives up in time), where the two used to replace each other, one
        heartbeat timeout after the other, for ever. A peer that stopped (a restart) has
        been silent first."""
        if self.session.peer is None or self.session.silent(now):
            return
        if incarnation not in self._refused:
            self._refused[incarnation] = None
            if len(self._refused) > MAX_REFUSED:
                self._refused.popitem(last=False)
            self._say(NewcomerRefused(address))
        raise Rejected("peer_busy", "a live peer holds the session")
