"""Our fragments sent and not acknowledged yet, and their retransmission timers.

A fragment is *in flight* from a transmission until it is acked or declared lost; a lost
one waits in ``lost`` until it goes again. Each transmission arms one timer; a timer whose
transmission was acked or superseded is left in the heap to go stale, and dropped when it
comes up or when stale ones pile up.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain

from loadbalancer.reliable.fragment import Fragment


@dataclass(slots=True)
class Sent:
    """One of our fragments, sent at least once and not acked yet."""

    fragment: Fragment
    first_sent: float  # when it first went (again from a step down of the size)
    original_sent: float  # when it first went, ever: the copy an ack's "originals" speak of
    tx: int = 0  # number of its latest transmission; orders sends like a QUIC packet number
    time_sent: float = 0.0
    size: int = 0  # payload bytes of the largest datagram of its latest transmission
    losses: int = 0  # times declared lost since first_sent
    resent: int = 0  # times it was sent again
    timed_out: bool = False  # its timer ran out at least once (not only fast retransmit)
    backoff: int = 0  # RTO expiries in silence: its timeout is rto * 2**backoff
    later_acked: int = 0  # fragments sent after this transmission and acked since
    delivered: int = 0  # bytes acked at send time, for the delivery rate
    delivered_time: float = 0.0
    app_limited: bool = False  # its burst sent all there was before the window closed


@dataclass(slots=True)
class Flight:
    sent_upto: int = 0  # every seq below was transmitted at least once
    floor: int = 0  # every seq below is acked
    in_flight: dict[int, Sent] = field(default_factory=dict)  # by seq, oldest tx first
    bytes_in_flight: int = 0  # payload bytes of in_flight
    lost: dict[int, Sent] = field(default_factory=dict)  # to send again, oldest loss first
    timers: list[tuple[float, int, int]] = field(default_factory=list)  # (deadline, tx, seq)

    def take_off(self, sent: Sent, deadline: float) -> None:
        """``sent`` was just transmitted; its timer runs out at ``deadline``."""
        self.sent_upto = max(self.sent_upto, sent.fragment.seq + 1)
        self.in_flight[sent.fragment.seq] = sent
        self.bytes_in_flight += len(sent.fragment.data)
        heapq.heappush(self.timers, (deadline, sent.tx, sent.fragment.seq))
        if len(self.timers) > 2 * len(self.in_flight) + 64:
            # Acked fragments leave their timers behind; drop them in bulk.
            self.timers = [entry for entry in self.timers if self._armed(entry)]
            heapq.heapify(self.timers)

    def land(self, seq: int) -> Sent:
        """Take a fragment out of flight: acked, or declared lost."""
        sent = self.in_flight.pop(seq)
        self.bytes_in_flight -= len(sent.fragment.data)
        return sent

    def acked(self, ranges: Sequence[tuple[int, int]]) -> list[Sent]:
        """Take out what the inclusive seq ranges acknowledge, in flight or lost."""
        acked = [self.land(seq) if seq in self.in_flight else self.lost.pop(seq)
                 for lo, hi in ranges for seq in self._outstanding(lo, hi)]
        while self.floor < self.sent_upto and not self._holds(self.floor):
            self.floor += 1
        return acked

    def expired(self, now: float, deadline: Callable[[Sent], float]) -> list[Sent]:
        """Take out of flight what was in flight when its timer ran out by ``now``, and
        is still late by ``deadline`` (the timeout as estimated now): a timer set before
        the estimate grew is set again instead, as QUIC recomputes its loss timer."""
        out: list[Sent] = []
        later: list[tuple[float, int, int]] = []
        while self.timers and self.timers[0][0] <= now:
            entry = heapq.heappop(self.timers)
            if not self._armed(entry):
                continue
            sent = self.in_flight[entry[2]]
            if (due := deadline(sent)) > now:
                later.append((due, entry[1], entry[2]))
            else:
                out.append(self.land(entry[2]))
        for entry in later:
            heapq.heappush(self.timers, entry)
        return out

    def next_timer(self) -> float | None:
        while self.timers and not self._armed(self.timers[0]):
            heapq.heappop(self.timers)
        return self.timers[0][0] if self.timers else None

    def _armed(self, entry: tuple[float, int, int]) -> bool:
        sent = self.in_flight.get(entry[2])
        return sent is not None and sent.tx == entry[1]

    def _holds(self, seq: int) -> bool:
        return seq in self.in_flight or seq in self.lost

    def _outstanding(self, lo: int, hi: int) -> list[int]:
        """Unacked sent seqs in [lo, hi], by whichever is shorter to walk."""
        lo, hi = max(lo, self.floor), min(hi, self.sent_upto - 1)
        if hi < lo:
            return []
        if hi - lo < len(self.in_flight) + len(self.lost):
            return [seq for seq in range(lo, hi + 1) if self._holds(seq)]
        return [seq for seq in chain(self.in_flight, self.lost) if lo <= seq <= hi]

    @property
    def empty(self) -> bool:
        return not (self.in_flight or self.lost)
