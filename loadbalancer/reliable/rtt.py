"""The round-trip estimate, and the retransmission timeout it gives (RFC 6298), plus what
the peer may take to acknowledge (RFC 9002's max_ack_delay)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_BACKOFF_EXPONENT = 32  # keeps rto * 2**backoff finite; max_rto binds long before
# What the peer may take to acknowledge, on top of the path's round trip. QUIC's default
# is 25 ms; measured on loopback (lb demo, the equal benchmark), a node that has just
# joined, or shares a busy machine, took up to 56 ms to answer the session's first
# large message while its round trip was 3 ms: 50 ms is what left no spurious timeout.
MAX_ACK_DELAY = 0.05
# A timeout at least this many times the longest answer a spurious retransmission showed.
STALL_MARGIN = 1.25


@dataclass(slots=True)
class RttEstimate:
    """Smoothed round trip and its variation, from samples that time one transmission
    each; the timeout is kept within ``[min_rto, max_rto]``.

    The timeout adds ``max_ack_delay`` to RFC 6298's ``srtt + 4 rttvar``, as QUIC's probe
    timeout does: what the peer takes to answer is its own, not the path's. A node's event
    loop shares the GIL with the threads that compute jobs, and a node just joined has
    work of its own, so an ack (delayed 2 ms by design) can wait tens of milliseconds for
    its turn; samples see that delay only now and then, and a timer set from them alone
    fired while the ack was on its way: on loopback every retransmission was spurious.
    """

    min_rto: float
    max_rto: float
    max_ack_delay: float
    srtt: float | None = None  # None until the first sample
    rttvar: float = 0.0
    latest: float = 0.0  # the last sample
    rto: float = 0.0
    stall: float = 0.0  # the longest round trip a spurious retransmission showed

    @classmethod
    def initial(cls, initial_rtt: float, min_rto: float, max_rto: float,
                max_ack_delay: float) -> RttEstimate:
        # Until the first sample, initial_rtt stands in for one (RFC 6298 2.2).
        estimate = cls(min_rto, max_rto, max_ack_delay, rttvar=initial_rtt / 2)
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

    def spurious(self, rtt: float) -> None:
        """The original of a retransmission was acked after all, ``rtt`` after it was sent:
        the peer can take that long (a loaded machine, its loop waiting for the GIL). One
        sample among thousands of fast ones leaves the smoothed figures within a few dozen
        acks, and the next stall timed out again; the timeout now stays above the longest
        such answer for the session (Eifel's response, RFC 4015, kept)."""
        self.stall = max(self.stall, rtt)
        self.sample(rtt)

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
        floor = max(self.min_rto, STALL_MARGIN * self.stall)
        return min(max(rto + self.max_ack_delay, floor), self.max_rto)
