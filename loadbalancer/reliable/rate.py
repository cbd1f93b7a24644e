"""The delivery rate: acked payload bytes per second, of the link rather than of our traffic.

Like BBR, each transmission records how much had been delivered when it went; its ack
gives a sample over the interval between. A sample taken while we had too little to
send (app-limited) only ever raises the estimate: a stream of small messages over a
long round trip would otherwise read as a slow link (300 bytes per 50 ms rtt: 6 KB/s),
and make moving jobs look dear.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class DeliveryRate:
    bytes_acked: int = 0  # payload bytes
    rate: float | None = None  # bytes/s, smoothed; None until the first sample that counts
    delivered_time: float = 0.0  # when bytes_acked last grew, or the link went busy

    def sending(self, now: float, idle: bool) -> tuple[int, float]:
        """A transmission goes at ``now``: what it is measured from. ``idle`` says nothing
        was in flight, and an idle spell is not slow delivery."""
        if idle:
            self.delivered_time = now
        return self.bytes_acked, self.delivered_time

    def acked(self, size: int) -> None:
        self.bytes_acked += size

    def sample(self, delivered: int, delivered_time: float, app_limited: bool,
               now: float) -> None:
        """The newest transmission acked at ``now`` went with ``sending``'s answer."""
        interval = now - delivered_time
        if interval > 0:
            rate = (self.bytes_acked - delivered) / interval
            old = self.rate
            if not app_limited or (old is not None and rate > old):
                self.rate = rate if old is None else old + (rate - old) / 8
        self.delivered_time = now
