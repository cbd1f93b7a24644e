"""Congestion control: how many payload bytes may be in flight.

NewReno on a window of payload bytes (RFC 9002, section 7). In slow start the window grows
by what is acked (it doubles each round trip) until the first loss; from then on, one full
fragment more per window of acked bytes. A loss halves it (never below two full fragments)
and sets the slow-start threshold there, but losses of fragments sent before the last
halving do not halve it again (at most once per round trip: QUIC's recovery period).
Without slow start a path of small datagrams took seconds to open its window: from 32
fragments of 1,440 bytes, one fragment a round trip.
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
    acked_since_growth: int = 0  # bytes
    threshold: float = math.inf  # slow start below it: the window the last loss left
    recovery_start: float = -math.inf  # losses of fragments sent up to then are old news

    def acked(self, size: int, time_sent: float, fragment_size: int) -> None:
        if time_sent <= self.recovery_start:
            return
        cap = self.max_window * fragment_size
        if self.window < self.threshold:
            self.window = min(self.window + size, cap)
            return
        self.acked_since_growth += size
        if self.acked_since_growth >= self.window:
            self.window = min(self.window + fragment_size, cap)
            self.acked_since_growth = 0

    def lost(self, times_sent: Iterable[float], now: float, fragment_size: int) -> None:
        """Fragments sent at ``times_sent`` were declared lost at ``now``."""
        if any(time_sent > self.recovery_start for time_sent in times_sent):
            self.window = self.threshold = max(2 * fragment_size, self.window // 2)
            self.recovery_start = now
            self.acked_since_growth = 0

    def resized(self, fragment_size: int) -> None:
        """Fragments are cut to a new size: keep the floor and the cap in its terms."""
        self.window = min(max(self.window, 2 * fragment_size), self.max_window * fragment_size)
