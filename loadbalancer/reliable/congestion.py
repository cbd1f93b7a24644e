"""Congestion control: how many payload bytes may be in flight.

NewReno on a window of payload bytes (RFC 9002, section 7). In slow start the window grows
by what is acked (it doubles each round trip) until the first loss; from then on, one full
fragment more per window of acked bytes. A loss halves it (never below two full fragments)
and sets the slow-start threshold there, but losses of fragments sent before the last
halving do not halve it again (at most once per round trip: QUIC's recovery period).
Without slow start a path of small datagrams took seconds to open its window: from 32
fragments of 1,440 bytes, one fragment a round trip.
The window never exceeds ``max_bytes``, what the peer's socket can hold unread (its
greeting says): a receiver slower than the path (a busy interpreter on loopback) queues
what is in flight in its socket, and past the socket's size the kernel drops it, a loss
on a clean link that the window would otherwise find again and again.
Counting bytes, not fragments, matters on lossy links with big datagrams: random loss
holds the window at its floor, and a floor of two fragments would let only two small
messages travel per round trip.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class CongestionWindow:
    window: int  # payload bytes
    max_window: int  # in full fragments
    max_bytes: float = math.inf  # the peer's socket's room, in payload bytes
    limit: int = 0  # the largest window at the current fragment size (see cap)
    acked_since_growth: int = 0  # bytes
    threshold: float = math.inf  # slow start below it: the window the last loss left
    recovery_start: float = -math.inf  # losses of fragments sent up to then are old news

    @classmethod
    def of(cls, fragments: int, fragment_size: int, max_window: int,
           max_bytes: int | None) -> CongestionWindow:
        """An initial window of ``fragments`` full ones, within the cap."""
        cc = cls(0, max_window, math.inf if max_bytes is None else max_bytes)
        cc.limit = cc.cap(fragment_size)
        cc.window = min(fragments * fragment_size, cc.limit)
        return cc

    def cap(self, fragment_size: int) -> int:
        """The largest window: ``max_window`` fragments and ``max_bytes``, but never less
        than the floor of two fragments."""
        room = self.max_window * fragment_size
        return int(max(2 * fragment_size, min(room, self.max_bytes)))

    def acked(self, size: int, fragment_size: int) -> None:
        """``size`` payload bytes were acked, all sent after ``recovery_start``."""
        if self.window < self.threshold:
            self.window = min(self.window + size, self.limit)
            return
        self.acked_since_growth += size
        if self.acked_since_growth >= self.window:
            self.window = min(self.window + fragment_size, self.limit)
            self.acked_since_growth = 0

    def lost(self, times_sent: Iterable[float], now: float, fragment_size: int) -> None:
        """Fragments sent at ``times_sent`` were declared lost at ``now``."""
        if any(time_sent > self.recovery_start for time_sent in times_sent):
            self.window = self.threshold = max(2 * fragment_size, self.window // 2)
            self.recovery_start = now
            self.acked_since_growth = 0

    def resized(self, fragment_size: int) -> None:
        """Fragments are cut to a new size: keep the floor and the cap in its terms."""
        self.limit = self.cap(fragment_size)
        self.window = min(max(self.window, 2 * fragment_size), self.limit)
