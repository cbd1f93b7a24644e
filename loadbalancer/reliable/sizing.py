"""The size fragments are cut to, stepped down when the path drops it (an MTU black hole).

Fragments are cut to ``size``, at most ``max_fragment`` (what the peer agreed to take). A
path can drop datagrams of that size silently (a smaller MTU somewhere that nobody
reports), so, like packetization-layer path MTU discovery (RFC 8899), the sender watches
its full-size fragments: when one is lost ``BLACK_HOLE_LOSSES`` times in a row while the
peer is heard (its acks, its fragments, or anything the glue reports) and no full-size
fragment sent since it first went has been acknowledged, the size steps down to the next
of ``smaller``. A size that has carried a full fragment needs ``PROVEN_LOSSES`` in a row:
it worked, so a few losses are much more likely bad luck than a new route. Random loss
does not step down: full-size fragments sent later keep being acknowledged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from loadbalancer.reliable.fragment import MAX_PARTS

BLACK_HOLE_LOSSES = 3  # losses in a row of one full-size fragment that step the size down
PROVEN_LOSSES = 6  # the same, once a full-size fragment has been acknowledged


@dataclass(slots=True)
class FragmentSize:
    max_fragment: int  # the most either end sends in one fragment
    smaller: list[int]  # the sizes to step down to, largest first; the peer cuts to the same
    size: int  # what this end cuts to now
    smallest: int  # the least either end may ever cut to, so the least a part may hold
    steps_down: int = 0
    proven_at: float = -math.inf  # latest send time of a full-size fragment acked
    heard_at: float = -math.inf  # when the peer was last heard from

    @classmethod
    def of(cls, max_fragment: int, smaller: Sequence[int]) -> FragmentSize:
        steps = sorted({size for size in smaller if 0 < size < max_fragment}, reverse=True)
        sizing = cls(max_fragment, steps, max_fragment, steps[-1] if steps else max_fragment)
        if sizing.max_parts > MAX_PARTS:
            raise ValueError(f"fragments of {max_fragment} bytes need too many parts of "
                             f"{sizing.smallest}")
        return sizing

    @property
    def max_parts(self) -> int:
        """The most parts a fragment can travel in."""
        return -(-self.max_fragment // self.smallest)

    def heard(self, now: float) -> None:
        self.heard_at = now

    def proven(self, time_sent: float) -> None:
        """A transmission sent at ``time_sent`` in datagrams of the current size (or
        larger) was acknowledged: the path carries that size."""
        self.proven_at = max(self.proven_at, time_sent)

    def black_holed(self, size: int, losses: int, first_sent: float) -> bool:
        """Whether a loss (the ``losses``-th in a row of a fragment that first went at
        ``first_sent``, in datagrams of ``size``) says the path drops the current size."""
        if not self.smaller:
            return False
        needed = BLACK_HOLE_LOSSES if self.proven_at == -math.inf else PROVEN_LOSSES
        return (size > self.smaller[0] and losses >= needed
                and self.proven_at < first_sent < self.heard_at)

    def step_down(self) -> None:
        self.size = self.smaller.pop(0)
        self.steps_down += 1
