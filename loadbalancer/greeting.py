"""Our side of HELLO and WELCOME, for :class:`loadbalancer.session.Connection`.

Who gets a WELCOME. Anyone may replay HELLOs he captured, of any earlier
incarnation, from any address, at any rate, but he cannot make new ones, and a
peer that starts (or restarts) takes an incarnation newer than any before it. So
the budget is per incarnation, not shared (:class:`Greeters`): the few newest
incarnations that said HELLO are each answered at most every ``WELCOME_GAP``, a
copy of a HELLO already seen is not answered, and a HELLO older than all of them
is not answered at all. Replays cannot spend the real peer's budget, and what
they earn is bounded by the table, not by their rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadbalancer import wire
from loadbalancer.wire import Header, Kind, Rejected

# HELLOs are answered for this many incarnations, the newest heard, each at most every
# WELCOME_GAP (a peer says HELLO every 0.25 s): at most 40 WELCOMEs a second, and one
# for each incarnation newer than the table held when it came.
HELLO_SENDERS = 4
WELCOME_GAP = 0.1


@dataclass(slots=True)
class _Greeter:
    highest: int  # the highest packet number of its HELLOs
    welcomed: float  # when we last answered one
    takes: wire.Takes  # what its HELLOs state


class Greeters:
    """The newest incarnations that said HELLO, and whether the next HELLO is answered."""

    def __init__(self, size: int = HELLO_SENDERS) -> None:
        self.size = size
        self._known: dict[int, _Greeter] = {}

    def admit(self, incarnation: int, number: int, takes: wire.Takes, now: float) -> None:
        """Return if this HELLO earns a WELCOME, else raise :class:`Rejected`."""
        known = self._known.get(incarnation)
        if known is None:
            if len(self._known) >= self.size:
                oldest = min(self._known)
                if incarnation < oldest:
                    raise Rejected("old_hello", "older than every incarnation answered")
                # Evicted, it is older than the table from now on: one WELCOME at most.
                del self._known[oldest]
            self._known[incarnation] = _Greeter(number, now, takes)
            return
        if number <= known.highest:
            raise Rejected("replayed", f"hello {number}")
        known.highest = number
        if now - known.welcomed < WELCOME_GAP:
            raise Rejected("rate_limited", "welcome")
        known.welcomed = now

    def takes(self, incarnation: int) -> wire.Takes | None:
        known = self._known.get(incarnation)
        return None if known is None else known.takes


class Greeting:
    """When we say HELLO, which HELLOs we answer, the sizes both state, and the round trip
    from our latest greeting to the answer that opens a session."""

    def __init__(self, max_datagram: int, interval: float, now: float) -> None:
        self.takes = wire.Takes(max_datagram)
        self.body = wire.encode_greeting(self.takes)  # what our HELLO and WELCOME state
        self.interval = interval
        self.next_hello = now
        self._greeters = Greeters()
        self._greeted_at: float | None = None  # our latest HELLO or WELCOME to a HELLO
        self.welcomed_at: float | None = None  # our latest WELCOME to a would-be peer's HELLO

    def hello_due(self, now: float) -> bool:
        """Whether to say HELLO now; if so, the next is due an interval later."""
        if now < self.next_hello:
            return False
        self.next_hello = now + self.interval
        self._greeted_at = now
        return True

    def receive_buffer(self, size: int) -> None:
        """Our socket holds ``size`` payload bytes unread: say so from now on."""
        self.takes = self.takes._replace(receive_buffer=size)
        self.body = wire.encode_greeting(self.takes)

    def hello_again(self) -> None:
        """The session is lost: say HELLO at once."""
        self.next_hello = 0.0

    def admit(self, header: Header, body: bytes, now: float) -> None:
        """Return if this HELLO earns a WELCOME, else raise :class:`Rejected`."""
        self._greeters.admit(header.src, header.number, wire.decode_greeting(body), now)
        self._greeted_at = self.welcomed_at = now

    def peer_takes(self, datagram: wire.Datagram) -> wire.Takes:
        """What a joining peer takes: its WELCOME says, or the HELLO we answered did
        (when the WELCOME was lost and another datagram opens the session)."""
        if datagram.header.kind is Kind.WELCOME:
            return wire.decode_greeting(datagram.body)
        known = self._greeters.takes(datagram.header.src)
        return wire.Takes(wire.DEFAULT_MAX_DATAGRAM) if known is None else known

    def round_trip(self, now: float) -> float | None:
        """The round trip a session that opens now measures, if any; said once."""
        greeted_at, self._greeted_at = self._greeted_at, None
        if greeted_at is not None and now - greeted_at < self.interval:
            # The answer to our latest greeting, or to an earlier one: at worst an
            # underestimate, which costs an early retransmission. Longer gaps say
            # nothing (greetings repeat that often), and the initial guess stays.
            return now - greeted_at
        return None
