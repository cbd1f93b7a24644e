"""The round-trip estimate, and the retransmission timeout it gives (RFC 6298)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_BACKOFF_EXPONENT = 32  # keeps rto * 2**backoff finite; max_rto binds long before


@dataclass(slots=True)
class RttEstimate:
    """Smoothed round trip and its variation, from samples that time one transmission
    each; the timeout is kept within ``[min_rto, max_rto]``."""

    min_rto: float
    max_rto: float
    srtt: float | None = None  # None until the first sample
    rttvar: float = 0.0
    latest: float = 0.0  # the last sample
    rto: float = 0.0

    @classmethod
    def initial(cls, initial_rtt: float, min_rto: float, max_rto: float) -> RttEstimate:
        # Until the first sample, initial_rtt stands in for one (RFC 6298 2.2).
        estimate = cls(min_rto, max_rto, rttvar=initial_rtt / 2)
        estimate.rto = estimate._clamp(initial_rtt + 4 * estimate.rttvar)
        return estimate

    def sample(self, rtt: float) -> None:
        self.latest = rtt
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = self._clamp(self.srtt + 4 * self.rttvar)

    def hint(self, rtt: float) -> None:
        """A round trip measured outside the channel stands in until there is a sample."""
        if self.srtt is None:
            self.sample(rtt)

    def timeout(self, backoff: int) -> float:
        """The timeout of a transmission after ``backoff`` expiries in silence."""
        return min(self.rto * 2.0 ** min(backoff, MAX_BACKOFF_EXPONENT), self.max_rto)

    @property
    def loss_rtt(self) -> float:
        """The round trip the time threshold counts in: the larger of the smoothed and the
        latest, so that a sudden rise is not read as loss (RFC 9002 6.1.2); 0 before any."""
        return max(self.srtt or 0.0, self.latest)

    def _clamp(self, rto: float) -> float:
        return min(max(rto, self.min_rto), self.max_rto)
