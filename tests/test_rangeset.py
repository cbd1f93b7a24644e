from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from loadbalancer.rangeset import RangeSet


def test_add_merges_with_neighbours() -> None:
    s = RangeSet(max_ranges=10)
    for value in (5, 7, 3):
        assert s.add(value)
    assert list(s) == [(7, 7), (5, 5), (3, 3)]
    assert s.add(6)  # joins both sides
    assert list(s) == [(5, 7), (3, 3)]
    assert s.add(4)
    assert list(s) == [(3, 7)]
    assert s.add(2) and s.add(8)  # extends either end
    assert list(s) == [(2, 8)]
    assert s.add(5)  # already present: no change
    assert list(s) == [(2, 8)]
    assert len(s) == 1


def test_contains_find_intersects() -> None:
    s = RangeSet(max_ranges=10)
    for value in (0, 1, 2, 10, 11, 20):
        s.add(value)
    assert [v for v in range(25) if v in s] == [0, 1, 2, 10, 11, 20]
    assert "1" not in s
    assert s.find(11) == (10, 11)
    assert s.find(12) is None
    assert s.intersects(3, 9) is False
    assert s.intersects(3, 10) is True
    assert s.intersects(11, 19) is True
    assert s.intersects(21, 30) is False
    assert s.intersects(-5, -1) is False


def test_iteration_is_most_recent_first() -> None:
    s = RangeSet(max_ranges=10)
    for value in (9, 1, 5, 0):
        s.add(value)
    assert list(s) == [(9, 9), (5, 5), (0, 1)]


def test_first_missing() -> None:
    s = RangeSet(max_ranges=10)
    assert s.first_missing() == 0
    s.add(1)
    assert s.first_missing() == 0
    s.add(0)
    s.add(2)
    assert s.first_missing() == 3


def test_bound_refuses_new_isolated_values_but_not_extensions() -> None:
    s = RangeSet(max_ranges=2)
    assert s.add(0) and s.add(10)
    assert not s.add(5)  # would be a third range
    assert 5 not in s
    assert list(s) == [(10, 10), (0, 0)]
    assert s.add(11) and s.add(1)  # extensions are fine
    assert s.add(9)
    assert list(s) == [(9, 11), (0, 1)]
    for value in range(2, 9):  # closing the gap merges down to one range
        assert s.add(value)
    assert list(s) == [(0, 11)]
    assert s.add(20)  # and frees room for a new one


def test_equality() -> None:
    a, b = RangeSet(max_ranges=4), RangeSet(max_ranges=4)
    a.add(1)
    assert a != b
    b.add(1)
    assert a == b


@given(st.lists(st.integers(0, 60), max_size=200), st.integers(1, 6))
def test_matches_a_plain_set(values: list[int], bound: int) -> None:
    s = RangeSet(max_ranges=bound)
    model: set[int] = set()
    for value in values:
        before = list(s)
        if s.add(value):
            model.add(value)
        else:
            assert value not in model and list(s) == before
            assert len(s) == bound
    ranges = sorted(s)
    assert {v for lo, hi in ranges for v in range(lo, hi + 1)} == model
    assert list(s) == ranges[::-1]
    assert len(ranges) <= bound
    for (_, hi), (lo, _) in pairwise(ranges):
        assert hi + 1 < lo  # disjoint and never adjacent: merged as soon as possible
    assert all(lo <= hi for lo, hi in ranges)
