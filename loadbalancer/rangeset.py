"""A set of integers kept as a short sorted list of disjoint inclusive ranges.

The reliable channel's receiver records every fragment sequence number it holds
here, as aioquic does with its ``RangeSet``: the same structure answers "is this
a duplicate?" and "what do I acknowledge?". Received numbers are mostly
contiguous, so a handful of ranges describes millions of them.

The number of ranges is bounded. Each gap in the received sequence costs one
range, and a peer (buggy or hostile) could open as many gaps as it likes. When
the bound is reached a value that would start a new isolated range is refused;
values that extend or join existing ranges are still taken. Forgetting old
ranges instead would let duplicates through, which is the one thing this set
exists to prevent.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator


def _lo(r: tuple[int, int]) -> int:
    return r[0]


class RangeSet:
    """Disjoint, non-adjacent inclusive ranges ``(lo, hi)``, sorted ascending."""

    def __init__(self, max_ranges: int) -> None:
        if max_ranges < 1:
            raise ValueError("max_ranges must be at least 1")
        self.max_ranges = max_ranges
        self._ranges: list[tuple[int, int]] = []

    def add(self, value: int) -> bool:
        """Add ``value``; False (and no change) if refused by the bound on ranges."""
        ranges = self._ranges
        if ranges and ranges[-1][1] == value - 1:  # the next in order: most values are
            ranges[-1] = (ranges[-1][0], value)
            return True
        i = bisect_right(ranges, value, key=_lo)  # ranges[:i] start at or below value
        joins_left = i > 0 and ranges[i - 1][1] >= value - 1
        if joins_left and ranges[i - 1][1] >= value:
            return True  # already present
        joins_right = i < len(ranges) and ranges[i][0] == value + 1
        if joins_left and joins_right:
            ranges[i - 1] = (ranges[i - 1][0], ranges[i][1])
            del ranges[i]
        elif joins_left:
            ranges[i - 1] = (ranges[i - 1][0], value)
        elif joins_right:
            ranges[i] = (value, ranges[i][1])
        elif len(ranges) >= self.max_ranges:
            return False
        else:
            ranges.insert(i, (value, value))
        return True

    def find(self, value: int) -> tuple[int, int] | None:
        """The range holding ``value``, or None."""
        if not self._ranges or value > self._ranges[-1][1]:  # news: most values are
            return None
        i = bisect_right(self._ranges, value, key=_lo)
        if i > 0 and self._ranges[i - 1][1] >= value:
            return self._ranges[i - 1]
        return None

    def intersects(self, lo: int, hi: int) -> bool:
        """Whether any value in ``[lo, hi]`` is in the set."""
        i = bisect_right(self._ranges, hi, key=_lo)
        return i > 0 and self._ranges[i - 1][1] >= lo

    def first_missing(self) -> int:
        """The smallest non-negative integer not in the set."""
        first = self.find(0)
        return 0 if first is None else first[1] + 1

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.find(value) is not None

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Ranges most recent (highest) first, the order acknowledgements use."""
        return reversed(self._ranges)

    def __len__(self) -> int:
        """The number of ranges (not of values)."""
        return len(self._ranges)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeSet):
            return NotImplemented
        return self._ranges == other._ranges and self.max_ranges == other.max_ranges

    def __repr__(self) -> str:
        return f"RangeSet({self._ranges!r}, max_ranges={self.max_ranges})"
