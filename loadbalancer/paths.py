"""Where datagrams to the peer go, and how a new address earns them.

A peer is recognised by its key, not its address, but which address replies go to is
another matter: anyone who sees one of the peer's datagrams can send a copy of it from an
address of his own, and the copy that wins the race is as authentic as the original (which
then arrives as a duplicate). A node that sent its replies wherever the latest datagram
came from would hand them to him. So, like QUIC's path validation (RFC 9000, 8.2 and
9.3), a datagram from a new address moves nothing: the node challenges that address with
a fresh random token, keeps replying to the old one, and moves only when the answer
(authenticated, echoing the token) comes back from the address challenged, and only if
the old address went quiet after the challenge. A NAT that gave the peer a new port leaves
the old one silent; a copier does not, since the peer goes on sending from it, and a
copier who relays the challenge to the peer can copy its answer too, but cannot silence
the peer.

Pure: no sockets; the clock is an argument, the tokens come from ``os.urandom``.
"""

from __future__ import annotations

import math
import os

from loadbalancer import wire
from loadbalancer.addresses import Address

# At most one challenge per this many seconds, whatever the addresses: all an address that
# is not the peer's can get out of us. Answers come a round trip later.
CHALLENGE_GAP = 0.2
KEPT_CHALLENGES = 4  # tokens still answerable: an answer may come after the next challenge


class PeerPath:
    def __init__(self, address: Address) -> None:
        self.address = address  # where datagrams to the peer go
        self._heard_at = -math.inf  # when a datagram of the peer last came from it
        self._challenges: dict[bytes, tuple[Address, float]] = {}  # token -> (address, when)
        self._challenged_at = -math.inf
        self.challenges = 0  # challenges sent
        self.moves = 0  # times the address moved
        self.refused = 0  # answers that moved nothing: stale, misdirected, or the old path alive

    def heard(self, address: Address, now: float) -> None:
        """A datagram of the peer's (authenticated, maybe a duplicate) came from ``address``."""
        if address == self.address:
            self._heard_at = now

    def challenge(self, address: Address, now: float) -> bytes | None:
        """The token to challenge ``address`` with, if it is time for a challenge."""
        if address == self.address or now - self._challenged_at < CHALLENGE_GAP:
            return None
        if len(self._challenges) >= KEPT_CHALLENGES:
            del self._challenges[next(iter(self._challenges))]  # the oldest
        token = os.urandom(wire.TOKEN_SIZE)
        self._challenges[token] = (address, now)
        self._challenged_at = now
        self.challenges += 1
        return token

    def answered(self, address: Address, token: bytes, now: float) -> None:
        """An answer echoing ``token`` came from ``address``: the path moves there if that
        is where the token went and the old address has been quiet since."""
        challenged = self._challenges.pop(token, None)
        if challenged is None or challenged[0] != address or self._heard_at >= challenged[1]:
            self.refused += 1
            return
        self.address, self._heard_at = address, now
        self._challenges.clear()
        self.moves += 1
