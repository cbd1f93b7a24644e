"""The reliable channel, driven in virtual time over an in-memory lossy link."""

from __future__ import annotations

import copy
import dataclasses
import heapq
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbalancer.reliable import (
    MAX_COUNT,
    MAX_ORIGINALS,
    Ack,
    Fragment,
    MessageAcked,
    MessageReceived,
    MessageTooLarge,
    ProtocolViolation,
    ReliableChannel,
)


class Link:
    """Two channels joined by a network that drops, duplicates, delays and reorders.

    Everything runs in virtual time from ``now = 0.0``: each step jumps to the
    next arrival or channel deadline.
    """

    def __init__(self, *, rng: random.Random | None = None, loss: float = 0.0,
                 dup: float = 0.0, delay: float = 0.01, jitter: float = 0.0,
                 drop: Callable[[], bool] | None = None, carries: int | None = None,
                 heartbeat: float | None = None, **settings: Any) -> None:
        self.rng = rng or random.Random(0)
        self.carries = carries  # fragments with more data vanish: an MTU black hole
        # Every so often each end hears of the other (a state message, in a session).
        self.heartbeat = heartbeat
        self._next_beat = 0.0 if heartbeat else None
        self.loss, self.dup, self.delay, self.jitter = loss, dup, delay, jitter
        self.drop = drop or (lambda: self.rng.random() < self.loss)
        self.channels = (ReliableChannel(**settings), ReliableChannel(**settings))
        self.events: tuple[list[Any], list[Any]] = ([], [])
        self.now = 0.0
        self.wire: list[tuple[float, int, int, Fragment | Ack]] = []
        self._order = 0

    def send(self, side: int, kind: int, payload: bytes) -> int:
        message_id = self.channels[side].send(kind, payload, self.now)
        self.flush()
        return message_id

    def _emit(self, dest: int, item: Fragment | Ack) -> None:
        if self.carries is not None and isinstance(item, Fragment) \
                and len(item.data) > self.carries:
            return
        if self.drop():
            return
        for _ in range(2 if self.rng.random() < self.dup else 1):
            arrival = self.now + self.delay + self.rng.random() * self.jitter
            heapq.heappush(self.wire, (arrival, self._order, dest, item))
            self._order += 1

    def flush(self) -> None:
        for side, channel in enumerate(self.channels):
            ack = channel.ack_to_send(self.now)
            if ack is not None:
                self._emit(1 - side, ack)
            fragments = channel.fragments_to_send(self.now)
            assert not fragments or channel.in_flight <= channel.window
            for fragment in fragments:
                self._emit(1 - side, fragment)
            while (event := channel.next_event()) is not None:
                self.events[side].append(event)

    def step(self) -> bool:
        times = [channel.next_deadline() for channel in self.channels]
        times.append(self.wire[0][0] if self.wire else None)
        pending = [t for t in times if t is not None]
        if not pending:
            return False
        if self._next_beat is not None:
            pending.append(self._next_beat)
        self.now = max(self.now, min(pending))
        if self.heartbeat and self._next_beat is not None and self._next_beat <= self.now:
            for channel in self.channels:
                channel.heard(self.now)
            self._next_beat = self.now + self.heartbeat
        while self.wire and self.wire[0][0] <= self.now:
            _, _, dest, item = heapq.heappop(self.wire)
            if isinstance(item, Fragment):
                self.channels[dest].receive_fragment(item, self.now)
            else:
                self.channels[dest].receive_ack(item.ranges, self.now, item.originals)
        for channel in self.channels:
            channel.handle_timer(self.now)
        self.flush()
        return True

    def run(self, max_steps: int = 200_000) -> None:
        for _ in range(max_steps):
            if not self.step():
                assert all(channel.idle for channel in self.channels)
                return
        raise AssertionError("the link never went quiet")


def check_exactly_once(link: Link, sent: dict[int, tuple[int, bytes]], side: int = 0) -> None:
    received = [e for e in link.events[1 - side] if isinstance(e, MessageReceived)]
    acked = [e.message_id for e in link.events[side] if isinstance(e, MessageAcked)]
    assert sorted(e.message_id for e in received) == sorted(sent)
    assert {e.message_id: (e.kind, e.payload) for e in received} == sent
    assert sorted(acked) == sorted(sent)
    assert link.channels[side].unacked_messages == 0


def deliver(channel: ReliableChannel, fragments: list[Fragment], now: float) -> list[bool]:
    return [channel.receive_fragment(fragment, now) for fragment in fragments]


def ranges(channel: ReliableChannel, now: float) -> list[tuple[int, int]] | None:
    """The ranges of the ack due by ``now``, if one is."""
    ack = channel.ack_to_send(now)
    return None if ack is None else list(ack.ranges)


def events(channel: ReliableChannel) -> Iterator[MessageReceived | MessageAcked]:
    while (event := channel.next_event()) is not None:
        yield event


# ---- sender: timers, estimates, windows -------------------------------------------
def test_first_rto_deadline_and_backoff() -> None:
    # RFC 6298's arithmetic alone: no allowance for the peer's ack delay.
    ch = ReliableChannel(max_fragment=100, initial_rtt=0.25, max_ack_delay=0)
    # rto = 0.25 + 4 * 0.125
    ch.send(7, b"hello", 0.0)
    assert ch.next_deadline() is None  # nothing goes out before fragments_to_send
    [first] = ch.fragments_to_send(0.0)
    assert first == Fragment(seq=0, index=0, count=1, kind=7, data=b"hello")
    assert ch.rto == 0.75 and ch.next_deadline() == 0.75
    ch.handle_timer(0.74)
    assert ch.fragments_to_send(0.74) == [] and ch.in_flight == 1
    ch.handle_timer(0.75)
    assert ch.in_flight == 0 and ch.window == 16 * 100  # a loss halves the window
    resent = dataclasses.replace(first, again=True)
    assert ch.fragments_to_send(0.75) == [resent]  # the same seq again, flagged
    assert ch.retransmits == 1 and ch.next_deadline() == 0.75 + 1.5
    ch.handle_timer(2.25)
    assert ch.fragments_to_send(2.25) == [resent]
    assert ch.next_deadline() == 2.25 + 2.0  # 3.0 clamped to max_rto
    ch.receive_ack([(0, 0)], 2.5)
    assert ch.srtt is None and ch.rto == 0.75  # Karn: no sample from a retransmission
    assert list(events(ch)) == [MessageAcked(0)]
    assert ch.next_deadline() is None and ch.idle and ch.bytes_acked == 5


def test_rtt_estimate_and_rto() -> None:
    ch = ReliableChannel(max_fragment=10, max_ack_delay=0)
    assert ch.rto == pytest.approx(0.3) and ch.srtt is None
    ch.send(1, b"a", 0.0)
    ch.send(1, b"b", 0.0)
    assert len(ch.fragments_to_send(0.0)) == 2
    ch.receive_ack([(0, 0)], 0.0625)
    assert ch.srtt == 0.0625 and ch.rto == 0.0625 + 4 * 0.03125
    ch.receive_ack([(1, 1), (0, 0)], 0.125)
    # rttvar = 3/4 * 0.03125 + 1/4 * |0.0625 - 0.125|, srtt = 7/8 * 0.0625 + 1/8 * 0.125
    assert ch.srtt == 0.0703125 and ch.rto == 0.0703125 + 4 * 0.0390625
    ch.send(1, b"c", 1.0)
    ch.fragments_to_send(1.0)
    assert ch.next_deadline() == 1.0 + 0.2265625


def test_a_timer_set_before_the_estimate_grew_runs_to_the_new_timeout() -> None:
    ch = ReliableChannel(max_fragment=10, max_ack_delay=0)
    ch.send(1, b"a", 0.0)
    ch.fragments_to_send(0.0)
    ch.receive_ack([(0, 0)], 0.01)  # rto 0.01 + 4 * 0.005
    ch.send(1, b"b", 0.1)
    ch.send(1, b"c", 0.1)
    ch.fragments_to_send(0.1)
    assert ch.next_deadline() == pytest.approx(0.13)
    ch.receive_ack([(2, 2)], 0.125)  # a slower round trip: the timeout grows
    assert ch.rto == pytest.approx(0.011875 + 4 * 0.0075)
    ch.handle_timer(0.13)  # seq 1's timer, set at the old timeout: not lost yet
    assert ch.fragments_to_send(0.13) == [] and ch.in_flight == 1
    assert ch.next_deadline() == pytest.approx(0.1 + ch.rto)
    ch.handle_timer(0.1 + ch.rto)
    assert [f.seq for f in ch.fragments_to_send(0.15)] == [1] and ch.retransmits == 1


def test_rto_is_clamped_to_min_rto() -> None:
    ch = ReliableChannel(max_fragment=10, min_rto=0.05, max_ack_delay=0)
    ch.send(1, b"a", 0.0)
    ch.fragments_to_send(0.0)
    ch.receive_ack([(0, 0)], 0.001)
    assert ch.rto == 0.05


def test_fast_retransmit_after_three_later_acks() -> None:
    ch = ReliableChannel(max_fragment=10)
    for i in range(5):
        ch.send(1, bytes([i]), 0.0)
    sent = ch.fragments_to_send(0.0)
    assert [f.seq for f in sent] == [0, 1, 2, 3, 4]
    ch.receive_ack([(1, 1)], 0.01)
    ch.receive_ack([(1, 2)], 0.02)
    assert ch.fragments_to_send(0.02) == [] and ch.retransmits == 0  # two are not enough
    ch.receive_ack([(1, 3)], 0.03)
    assert ch.window == (32 * 10 + 3) // 2  # slow start grew it by the three bytes acked
    assert ch.fragments_to_send(0.03) == [dataclasses.replace(sent[0], again=True)]  # RTO 0.3
    assert ch.retransmits == 1
    assert list(events(ch)) == [MessageAcked(1), MessageAcked(2), MessageAcked(3)]
    ch.receive_ack([(0, 4)], 0.04)
    assert sorted(events(ch), key=lambda e: e.message_id) == [MessageAcked(0), MessageAcked(4)]
    assert ch.idle


def test_window_bounds_in_flight() -> None:
    ch = ReliableChannel(max_fragment=10, initial_window=4, max_window=5)
    for i in range(20):
        ch.send(1, bytes([i]) * 10, 0.0)  # full fragments: the window counts bytes
    assert [f.seq for f in ch.fragments_to_send(0.0)] == [0, 1, 2, 3]
    assert ch.in_flight == 4 and ch.fragments_to_send(0.0) == []
    ch.receive_ack([(0, 1)], 0.01)
    assert ch.window == 5 * 10  # slow start, capped at max_window
    assert [f.seq for f in ch.fragments_to_send(0.01)] == [4, 5, 6]
    assert ch.in_flight == 5
    ch.receive_ack([(0, 8)], 0.03)
    assert ch.window == 5 * 10


def test_window_stays_within_what_the_peer_socket_holds() -> None:
    ch = ReliableChannel(max_fragment=10, initial_window=4, max_window=64, max_in_flight=55)
    for i in range(40):
        ch.send(1, bytes([i]) * 10, 0.0)
    assert len(ch.fragments_to_send(0.0)) == 4
    for now in (0.01, 0.02, 0.03):  # slow start would take it to 32 fragments
        ch.receive_ack([(0, ch.in_flight + ch.bytes_acked // 10 - 1)], now)
        ch.fragments_to_send(now)
        assert ch.window == 55 and ch.bytes_in_flight <= 55 + 10
    assert ch.retransmits == 0
    # Never below the floor of two fragments, whatever the peer says.
    assert ReliableChannel(max_fragment=10, max_in_flight=3).window == 20


def test_window_doubles_until_a_loss_then_grows_by_one_per_window() -> None:
    ch = ReliableChannel(max_fragment=10, initial_window=4, max_window=64)
    for i in range(100):
        ch.send(1, bytes([i]) * 10, 0.0)
    assert len(ch.fragments_to_send(0.0)) == 4
    ch.receive_ack([(0, 3)], 0.01)  # a round trip's acks: the window doubles
    assert ch.window == 8 * 10
    assert [f.seq for f in ch.fragments_to_send(0.01)] == list(range(4, 12))
    ch.receive_ack([(0, 4), (6, 11)], 0.02)  # 5 is lost: seven acked, then halved
    assert ch.window == (8 * 10 + 7 * 10) // 2 == 75
    sent = ch.fragments_to_send(0.021)  # sent after the loss: they count for growth
    assert sent[0].seq == 5 and len(sent) == 8  # the copy first, then new ones
    ch.receive_ack([(0, 19)], 0.03)  # eight acked: one window's worth, one fragment more
    assert ch.window == 75 + 10


def test_window_halves_once_per_round_trip_never_below_two() -> None:
    ch = ReliableChannel(max_fragment=10, initial_window=8)
    for i in range(40):
        ch.send(1, bytes([i]) * 10, 0.0)
    ch.fragments_to_send(0.0)  # seqs 0..7
    ch.receive_ack([(3, 7)], 0.05)  # 0, 1 and 2 lost together: one congestion event
    assert ch.window == (8 * 10 + 5 * 10) // 2  # after slow start took the five acked
    assert [f.seq for f in ch.fragments_to_send(0.05)] == [0, 1, 2, 8, 9, 10, 11]
    ch.handle_timer(10.0)  # all time out; they were sent at the reduction
    assert ch.window == 65
    assert [f.seq for f in ch.fragments_to_send(10.0)] == [0, 1, 2, 8, 9, 10, 11]
    for now in (20.0, 30.0, 40.0):
        ch.handle_timer(now)  # each round was sent after the previous reduction
        ch.fragments_to_send(now)
    assert ch.window == 2 * 10


def test_window_floor_lets_small_messages_through() -> None:
    # At the floor of two full fragments, small messages still travel many at a time.
    ch = ReliableChannel(max_fragment=1000, initial_window=2, max_window=6)
    for i in range(10):
        ch.send(1, bytes([i]) * 100, 0.0)
    assert [f.seq for f in ch.fragments_to_send(0.0)] == [0, 1, 2, 3, 4, 5]  # max_window
    assert ch.bytes_in_flight == 600 and ch.window == 2000
    ch.receive_ack([(0, 5)], 0.01)
    assert ch.bytes_in_flight == 0 and len(ch.fragments_to_send(0.01)) == 4


def test_time_threshold_declares_a_tail_fragment_lost() -> None:
    ch = ReliableChannel(max_fragment=10)
    ch.send(1, bytes(20), 0.0)  # two fragments: too few later ones for the packet rule
    ch.fragments_to_send(0.0)
    ch.receive_ack([(1, 1)], 0.1)  # seq 1 acked, rtt 0.1; seq 0 was sent as early
    assert ch.fragments_to_send(0.1) == []  # not 9/8 of a round trip older yet
    ch.send(1, b"x", 0.2)
    ch.fragments_to_send(0.2)
    ch.receive_ack([(1, 2)], 0.3)  # seq 0 is now 0.3 old against an rtt of 0.1
    assert [f.seq for f in ch.fragments_to_send(0.3)] == [0]
    assert ch.retransmits == 1 and ch.rto > 0.1  # well before its own timer


def test_backoff_only_while_the_peer_is_silent() -> None:
    ch = ReliableChannel(max_fragment=10, initial_rtt=0.25, max_ack_delay=0)  # rto 0.75
    for i in range(3):
        ch.send(1, bytes([i]), 0.0)
    ch.fragments_to_send(0.0)
    ch.handle_timer(0.75)  # all three time out in silence: backed off
    assert [f.seq for f in ch.fragments_to_send(0.75)] == [0, 1, 2]
    assert ch.next_deadline() == 0.75 + 1.5
    ch.receive_ack([(1, 1)], 0.8)  # the peer is there (a retransmission: no rtt sample)
    ch.handle_timer(2.25)  # 0 and 2 were lost again, but not to silence
    assert sorted(f.seq for f in ch.fragments_to_send(2.25)) == [0, 2]
    assert ch.rto == 0.75 and ch.next_deadline() == 2.25 + 0.75


# ---- spurious retransmissions ----------------------------------------------------------
def timed_out_once(**settings: Any) -> tuple[ReliableChannel, ReliableChannel, Fragment,
                                             Fragment]:
    """Channel a sent one fragment; its timer ran out (at 0.35 s) and it went again at
    0.36 s."""
    a, b = ReliableChannel(max_fragment=10, **settings), ReliableChannel(max_fragment=10)
    a.send(1, b"x", 0.0)
    [original] = a.fragments_to_send(0.0)
    assert a.next_deadline() == pytest.approx(0.35)  # 0.3 as RFC 6298 says, and 50 ms
    a.handle_timer(0.36)
    [copy_] = a.fragments_to_send(0.36)
    assert (copy_.seq, copy_.again, original.again) == (0, True, False)
    assert a.retransmits == 1 and a.spurious == 0
    return a, b, original, copy_


def send_ack(b: ReliableChannel, a: ReliableChannel, now: float) -> Ack:
    ack = b.ack_to_send(now)
    assert ack is not None
    a.receive_ack(ack.ranges, now, ack.originals)
    return ack


def test_an_ack_delayed_past_the_timer_makes_its_retransmission_spurious() -> None:
    a, b, original, copy_ = timed_out_once()
    assert b.receive_fragment(original, 0.38)  # the peer was slow, the original got there
    assert send_ack(b, a, 0.4) == Ack(((0, 0),))
    assert a.spurious == 0 and a.srtt is None  # Karn: who knows which copy that answered
    assert not b.receive_fragment(copy_, 0.41)  # the copy comes second
    assert send_ack(b, a, 0.42) == Ack(((0, 0),), originals=(0,))
    assert a.spurious == 1 and a.retransmits == 1
    # The seq was acked before the news came: that ack answered the original, 0.4 s on.
    assert a.srtt == pytest.approx(0.4) and a.rto > 0.4
    assert b.ack_to_send(0.43) is None and a.spurious == 1 and a.idle


def test_after_a_spurious_timeout_the_timer_stays_above_the_stall_it_showed() -> None:
    a, b, original, copy_ = timed_out_once()
    assert b.receive_fragment(original, 0.38)
    send_ack(b, a, 0.4)
    assert not b.receive_fragment(copy_, 0.41)
    send_ack(b, a, 0.42)  # the original took 0.4 s to answer
    now = 1.0
    for i in range(200):  # then a long run of 3 ms round trips (the ack waits 2 ms)
        a.send(1, bytes([i]), now)
        [fragment] = a.fragments_to_send(now)
        b.receive_fragment(fragment, now + 0.0005)
        send_ack(b, a, now + 0.003)
        now += 0.01
    assert a.srtt == pytest.approx(0.003, rel=0.1)
    # Smoothing alone would be back near 53 ms, and the next such stall time out again.
    assert a.rto == pytest.approx(1.25 * 0.4)


def test_both_copies_held_unacked_are_told_in_two_acks() -> None:
    a, b, original, copy_ = timed_out_once()
    # The peer's loop was stalled: it reads both copies in one turn, before any ack.
    assert deliver(b, [original, copy_], 0.5) == [True, False]
    assert send_ack(b, a, 0.5) == Ack(((0, 0),))  # first the ack, without the news
    assert b.next_deadline() == 0.5  # the news at once, in an ack of its own
    assert send_ack(b, a, 0.5) == Ack(((0, 0),), originals=(0,))
    assert b.ack_to_send(0.5) is None
    assert a.spurious == 1 and a.srtt == pytest.approx(0.5)


def test_a_lost_ack_counts_as_spurious_but_gives_no_sample() -> None:
    a, b, original, copy_ = timed_out_once()
    assert b.receive_fragment(original, 0.01)
    assert b.ack_to_send(0.02) is not None  # lost on the way
    assert not b.receive_fragment(copy_, 0.36)
    assert send_ack(b, a, 0.37) == Ack(((0, 0),), originals=(0,))
    # The original arrived, so the copy was not needed; but its answer was lost, and its
    # delay (the timeout and a round trip) would feed the timer its own length.
    assert a.spurious == 1 and a.srtt is None


def test_a_real_loss_is_not_spurious_nor_is_a_copy_of_the_retransmission() -> None:
    a, b, _lost, copy_ = timed_out_once()
    assert b.receive_fragment(copy_, 0.36)  # the original never arrives
    assert send_ack(b, a, 0.37) == Ack(((0, 0),))
    assert not b.receive_fragment(copy_, 0.38)  # the network duplicated the copy
    assert send_ack(b, a, 0.39) == Ack(((0, 0),))  # a copy of the kept one: no news
    assert a.retransmits == 1 and a.spurious == 0


def test_a_late_original_after_its_retransmission_is_news() -> None:
    a, b, original, copy_ = timed_out_once()
    assert b.receive_fragment(copy_, 0.36)
    send_ack(b, a, 0.37)
    assert not b.receive_fragment(original, 0.45)  # it was only slow (reordered, delayed)
    assert send_ack(b, a, 0.46).originals == (0,)
    assert a.spurious == 1


def test_the_ack_of_a_fragment_sent_again_declares_nothing_lost() -> None:
    ch = ReliableChannel(max_fragment=10)
    ch.send(1, b"a", 0.0)
    ch.fragments_to_send(0.0)
    ch.receive_ack([(0, 0)], 0.01)  # srtt 0.01: rto 0.01 + 4 * 0.005 + 0.05
    for i in range(3):
        ch.send(1, bytes([i]), 0.1 if i == 0 else 0.15)
        ch.fragments_to_send(0.1 if i == 0 else 0.15)
    ch.handle_timer(0.18)  # seq 1 times out, and goes again after 2 and 3 went
    assert [f.seq for f in ch.fragments_to_send(0.18)] == [1]
    # Its ack answers the original (late): it says nothing of 2 and 3, which the time
    # rule would have declared lost had it been the copy's, 30 ms after they went.
    ch.receive_ack([(1, 1)], 0.2)
    assert ch.fragments_to_send(0.2) == [] and ch.retransmits == 1 and ch.in_flight == 2


def test_news_of_originals_is_bounded_and_never_counts_what_went_once() -> None:
    a, b = ReliableChannel(max_fragment=10), ReliableChannel(max_fragment=10)
    for i in range(MAX_ORIGINALS + 8):
        a.send(1, bytes([i]), 0.0)
    sent = a.fragments_to_send(0.0)
    deliver(b, sent, 0.01)
    send_ack(b, a, 0.01)
    deliver(b, sent, 0.02)  # the network copied every one: originals all, sent once
    ack = send_ack(b, a, 0.02)
    assert ack.originals == tuple(range(MAX_ORIGINALS))  # the rest is dropped, not held
    assert b.ack_to_send(0.03) is None
    assert a.retransmits == 0 and a.spurious == 0


def test_ack_of_unknown_seqs_is_ignored() -> None:
    ch = ReliableChannel(max_fragment=10)
    ch.send(1, b"abc", 0.0)
    ch.send(1, b"def", 0.0)
    ch.fragments_to_send(0.0)
    ch.receive_ack([(5, 900), (-3, -1)], 0.01)
    assert ch.in_flight == 2 and ch.bytes_acked == 0 and ch.srtt is None


def test_delivery_rate_counts_the_link_not_our_lulls() -> None:
    ch = ReliableChannel(max_fragment=100, initial_window=2)
    assert ch.delivery_rate is None
    for _ in range(4):
        ch.send(1, bytes(100), 0.0)
    assert len(ch.fragments_to_send(0.0)) == 2  # the window holds two back: the link limits
    ch.receive_ack([(0, 1)], 0.125)
    assert ch.bytes_acked == 200 and ch.delivery_rate == 1600.0
    ch.fragments_to_send(0.125)
    ch.receive_ack([(0, 3)], 0.5)  # the last went with nothing behind it: app-limited, slower
    assert ch.delivery_rate == 1600.0
    ch.send(1, bytes(100), 1.0)
    ch.fragments_to_send(1.0)  # the idle spell before does not count either way
    ch.receive_ack([(0, 4)], 1.01)  # app-limited but faster: the link can do at least that
    assert ch.delivery_rate == pytest.approx(1600.0 + (10000.0 - 1600.0) / 8)
    fresh = ReliableChannel(max_fragment=100)
    fresh.send(1, bytes(100), 0.0)
    fresh.fragments_to_send(0.0)
    fresh.receive_ack([(0, 0)], 0.05)
    assert fresh.delivery_rate is None and fresh.srtt == 0.05  # one small message says little


def test_a_trickle_that_loses_fragments_is_not_taken_for_a_slow_link() -> None:
    """Two small messages, both lost and sent again in one burst: the window never held
    anything back, so their acks say nothing about the link (judged per fragment, the
    first copy went while the other waited to go again, and measured 400 bytes a second)."""
    ch = ReliableChannel(max_fragment=100, initial_rtt=0.05, min_rto=0.05)
    ch.send(1, bytes(20), 0.0)
    ch.send(1, bytes(20), 0.0)
    assert len(ch.fragments_to_send(0.0)) == 2
    ch.handle_timer(1.0)
    assert len(ch.fragments_to_send(1.0)) == 2  # both again, together
    ch.receive_ack([(0, 0)], 1.05)
    ch.receive_ack([(0, 1)], 1.06)
    assert ch.bytes_acked == 40 and ch.delivery_rate is None


def test_fragmentation_and_limits() -> None:
    ch = ReliableChannel(max_fragment=10, max_message=25)
    with pytest.raises(MessageTooLarge):
        ch.send(1, bytes(26), 0.0)
    with pytest.raises(ValueError):
        ch.send(256, b"", 0.0)
    assert ch.send(3, bytes(range(25)), 0.0) == 0
    assert ch.send(4, b"", 0.0) == 3
    assert ch.fragments_to_send(0.0) == [
        Fragment(0, 0, 3, 3, bytes(range(10))),
        Fragment(1, 1, 3, 3, bytes(range(10, 20))),
        Fragment(2, 2, 3, 3, bytes(range(20, 25))),
        Fragment(3, 0, 1, 4, b""),
    ]
    assert ch.unacked_messages == 2
    # The fragment count travels in 16 bits, which caps the message size.
    assert ReliableChannel(max_fragment=196).max_message == MAX_COUNT * 196


# ---- receiver: acks, duplicates, violations, budget ----------------------------------
def test_delayed_ack_and_ack_every() -> None:
    ch = ReliableChannel(max_fragment=10)
    assert ch.receive_fragment(Fragment(0, 0, 1, 1, b"a"), 1.0)
    assert ch.ack_to_send(1.0) is None and ch.next_deadline() == 1.0 + 0.002
    assert ranges(ch, 1.0 + 0.002) == [(0, 0)]
    assert ch.ack_to_send(5.0) is None and ch.idle
    for seq in range(1, 8):
        ch.receive_fragment(Fragment(seq, 0, 1, 1, b"a"), 6.0)
    assert ch.ack_to_send(6.0) is None
    ch.receive_fragment(Fragment(8, 0, 1, 1, b"a"), 6.0)  # the eighth since the last ack
    assert ranges(ch, 6.0) == [(0, 8)]


def test_out_of_order_and_duplicates_are_acked_at_once() -> None:
    ch = ReliableChannel(max_fragment=10)
    assert ch.receive_fragment(Fragment(1, 0, 1, 1, b"b"), 0.0)
    assert ranges(ch, 0.0) == [(1, 1)]
    assert ch.receive_fragment(Fragment(0, 0, 1, 1, b"a"), 0.5)
    assert ranges(ch, 0.5) == [(0, 1)]
    assert not ch.receive_fragment(Fragment(0, 0, 1, 1, b"a"), 1.0)
    assert ch.duplicates == 1 and ranges(ch, 1.0) == [(0, 1)]
    assert [e.payload for e in events(ch) if isinstance(e, MessageReceived)] == [b"b", b"a"]


def test_ack_lists_recent_ranges_and_reacks_old_duplicates() -> None:
    ch = ReliableChannel(max_fragment=10, max_ack_ranges=4)
    for seq in range(0, 141, 2):
        ch.receive_fragment(Fragment(seq, 0, 1, 1, b""), 0.0)
    assert ranges(ch, 0.0) == [(140, 140), (138, 138), (136, 136), (134, 134)]
    ch.receive_fragment(Fragment(2, 0, 1, 1, b""), 1.0)  # its ack was lost long ago
    assert ranges(ch, 1.0) == [(140, 140), (138, 138), (136, 136), (2, 2)]


def test_messages_complete_in_any_order() -> None:
    ch = ReliableChannel(max_fragment=2)
    got = deliver(ch, [Fragment(1, 1, 2, 5, b"cd"), Fragment(2, 0, 1, 6, b"x"),
                       Fragment(0, 0, 2, 5, b"ab")], 0.0)
    assert got == [True, True, True]
    assert list(events(ch)) == [MessageReceived(2, 6, b"x"), MessageReceived(0, 5, b"abcd")]


@pytest.mark.parametrize("bad", [
    pytest.param(Fragment(9, 0, 0, 1, b""), id="count 0"),
    pytest.param(Fragment(9, 2, 2, 1, b""), id="index >= count"),
    pytest.param(Fragment(1, 2, 3, 1, b""), id="seq below index"),
    pytest.param(Fragment(20, 0, 4, 1, b""), id="count too large for max_message"),
    pytest.param(Fragment(9, 0, 1, 256, b""), id="kind not a byte"),
    pytest.param(Fragment(9, 0, 1, 1, bytes(11)), id="fragment too large"),
    pytest.param(Fragment(1, 1, 3, 2, b""), id="kind disagrees"),
    pytest.param(Fragment(1, 1, 2, 1, b""), id="count disagrees"),
    pytest.param(Fragment(1, 1, 3, 1, bytes(10)), id="total too large"),
    pytest.param(Fragment(4, 1, 2, 1, b""), id="overlaps a received message"),
])
def test_protocol_violation_leaves_state_unchanged(bad: Fragment) -> None:
    ch = ReliableChannel(max_fragment=10, max_message=25)
    held = [Fragment(0, 0, 3, 1, bytes(10)), Fragment(2, 2, 3, 1, bytes(10)),
            Fragment(3, 0, 1, 1, b"z")]
    assert deliver(ch, held, 0.0) == [True, True, True]
    before = copy.deepcopy(vars(ch))
    with pytest.raises(ProtocolViolation):
        ch.receive_fragment(bad, 1.0)
    assert vars(ch) == before


def test_reassembly_budget_refuses_and_sender_recovers() -> None:
    settings: dict[str, Any] = {"max_fragment": 10, "max_reassembly": 25, "max_ack_delay": 0}
    a, b = ReliableChannel(**settings), ReliableChannel(**settings)
    a.send(1, bytes(range(30)), 0.0)  # seqs 0..2
    a.send(2, bytes(range(30, 60)), 0.0)  # seqs 3..5
    sent = a.fragments_to_send(0.0)
    assert deliver(b, sent[1:3], 0.01) == [True, True]  # 20 bytes buffered
    assert deliver(b, sent[3:6], 0.01) == [False, False, False]  # would pass 25
    assert b.refused == 3 and b.duplicates == 0
    ack = ranges(b, 0.01)
    assert ack == [(1, 2)]  # refused fragments are not acked
    a.receive_ack(ack, 0.02)
    assert b.receive_fragment(sent[0], 0.03)  # completes message 0, frees the buffer
    a.receive_ack(ranges(b, 0.03) or [], 0.04)
    assert [type(e) for e in events(a)] == [MessageAcked]
    deadline = a.next_deadline() or 0.0
    assert deadline == pytest.approx(0.3)  # the refused ones time out
    a.handle_timer(deadline)
    again = a.fragments_to_send(deadline)
    assert again == [dataclasses.replace(f, again=True) for f in sent[3:6]]
    assert a.retransmits == 3
    assert deliver(b, again, 0.31) == [True, True, True]
    assert [e for e in events(b)] == [MessageReceived(0, 1, bytes(range(30))),
                                      MessageReceived(3, 2, bytes(range(30, 60)))]


def test_message_holding_the_lowest_gap_is_never_refused() -> None:
    ch = ReliableChannel(max_fragment=10, max_reassembly=15)
    fragments = [Fragment(i, i, 5, 1, bytes([i]) * 10) for i in range(5)]
    # Over budget from the second fragment on, yet nothing else could ever free it.
    assert deliver(ch, fragments[:0:-1], 0.0) == [True] * 4
    assert not ch.receive_fragment(Fragment(6, 1, 2, 1, b"later"), 0.0)  # not the head
    assert ch.receive_fragment(fragments[0], 0.0)
    assert list(events(ch)) == [MessageReceived(0, 1, b"".join(f.data for f in fragments))]


def test_too_many_gaps_are_refused_not_forgotten() -> None:
    ch = ReliableChannel(max_fragment=10, initial_window=1, max_window=1)  # 4 ranges
    assert deliver(ch, [Fragment(s, 0, 1, 1, b"") for s in (0, 2, 4, 6, 8)], 0.0) == [
        True, True, True, True, False]
    assert ch.refused == 1
    assert ch.receive_fragment(Fragment(7, 0, 1, 1, b""), 0.0)  # joins a range
    assert ranges(ch, 0.0) == [(6, 7), (4, 4), (2, 2), (0, 0)]
    assert not ch.receive_fragment(Fragment(0, 0, 1, 1, b""), 0.0)  # still a duplicate


# ---- both ends over a bad network ---------------------------------------------------
def test_lossy_duplicating_reordering_link_delivers_each_message_once() -> None:
    rng = random.Random(20240601)
    link = Link(rng=rng, loss=0.2, dup=0.1, delay=0.005, jitter=0.02,
                max_fragment=64, initial_window=16)
    sent: tuple[dict[int, tuple[int, bytes]], dict[int, tuple[int, bytes]]] = ({}, {})
    for i in range(300):
        side = int(i % 3 == 0)  # traffic both ways; side 0 sends two thirds
        payload = rng.randbytes(rng.choice([0, 1, 63, 64, 65, rng.randrange(330)]))
        kind = rng.randrange(256)
        sent[side][link.send(side, kind, payload)] = (kind, payload)
        if i % 20 == 0:
            for _ in range(30):
                link.step()
    link.run()
    check_exactly_once(link, sent[0], side=0)
    check_exactly_once(link, sent[1], side=1)
    a, b = link.channels
    assert a.retransmits > 0 and b.duplicates > 0
    # Lost acks make some retransmissions needless, and the network's copies of them
    # are never taken for news of an original.
    assert 0 < a.spurious < a.retransmits
    assert a.bytes_acked == sum(len(p) for _, p in sent[0].values())
    assert a.srtt is not None and 0.005 <= a.srtt < 0.1
    assert a.delivery_rate is not None and a.delivery_rate > 0


def test_head_exemption_lets_a_tiny_budget_finish_under_loss() -> None:
    rng = random.Random(7)
    link = Link(rng=rng, loss=0.2, jitter=0.03, max_fragment=16, max_reassembly=40)
    sent = {}
    for size in (200, 0, 90, 300, 17, 160):
        payload = rng.randbytes(size)
        sent[link.send(0, 9, payload)] = (9, payload)
    link.run()
    check_exactly_once(link, sent)
    assert link.channels[1].refused > 0


@settings(max_examples=60, deadline=None)
@given(drops=st.lists(st.booleans(), max_size=150),
       sizes=st.lists(st.integers(0, 130), min_size=1, max_size=12),
       seed=st.integers(0, 2**32 - 1))
def test_any_loss_pattern_delivers_exactly_once(drops: list[bool], sizes: list[int],
                                                seed: int) -> None:
    pattern = iter(drops)
    link = Link(rng=random.Random(seed), drop=lambda: next(pattern, False), jitter=0.01,
                max_fragment=32, initial_window=4, max_reassembly=64)
    sent = {}
    for size in sizes:
        payload = bytes((i * 7 + size) % 256 for i in range(size))
        sent[link.send(0, size % 256, payload)] = (size % 256, payload)
    link.run()
    check_exactly_once(link, sent)


# ---- the datagram size: black holes, parts ---------------------------------------------
def test_a_full_size_fragment_lost_three_times_while_the_peer_is_heard_steps_down() -> None:
    # rto 0.3 until a sample
    ch = ReliableChannel(max_fragment=1000, smaller=(500,), max_ack_delay=0)
    ch.send(1, bytes(range(250)) * 8, 0.0)  # two full fragments
    assert [f.seq for f in ch.fragments_to_send(0.0)] == [0, 1]
    for heard, expiry in ((0.1, 0.3), (0.5, 0.9)):
        ch.heard(heard)  # a state message, say: small datagrams arrive
        now = ch.next_deadline() or 0.0
        assert now == pytest.approx(expiry)  # backed off: the peer acks nothing
        ch.handle_timer(now)
        assert [f.parts for f in ch.fragments_to_send(now)] == [1, 1]
    assert ch.fragment_size == 1000 and ch.steps_down == 0
    now = ch.next_deadline() or 0.0
    ch.handle_timer(now)  # the third loss in a row, the peer heard since the first send
    assert now == pytest.approx(2.1) and ch.fragment_size == 500 and ch.steps_down == 1
    parts = ch.fragments_to_send(2.1)
    assert [(f.seq, f.part, f.parts, len(f.data)) for f in parts] == [
        (0, 0, 2, 500), (0, 1, 2, 500), (1, 0, 2, 500), (1, 1, 2, 500)]
    assert ch.next_deadline() == pytest.approx(2.1 + 0.3)  # no backoff: the hole was silent
    ch.receive_ack([(0, 1)], 2.2)
    assert ch.bytes_acked == 2000 and list(events(ch)) == [MessageAcked(0)]
    ch.send(2, bytes(1200), 2.2)  # new messages are cut to the new size
    assert [len(f.data) for f in ch.fragments_to_send(2.2)] == [500, 500, 200]


def test_losses_do_not_step_down_a_peer_that_is_not_heard_or_a_size_that_works() -> None:
    silent = ReliableChannel(max_fragment=1000, smaller=(500,))
    silent.send(1, bytes(1000), 0.0)
    now = 0.0
    for _ in range(8):  # a peer that is gone: nothing says small datagrams arrive
        silent.fragments_to_send(now)
        now = silent.next_deadline() or now
        silent.handle_timer(now)
    assert silent.fragment_size == 1000 and silent.retransmits == 7
    working = ReliableChannel(max_fragment=1000, smaller=(500,))
    working.send(1, bytes(3000), 0.0)
    working.fragments_to_send(0.0)
    working.receive_ack([(2, 2)], 0.05)  # a full-size fragment sent after seq 0 arrived
    for _ in range(8):
        now = working.next_deadline() or now
        working.handle_timer(now)
        working.heard(now)
        working.fragments_to_send(now)
    assert working.fragment_size == 1000 and working.retransmits >= 8


def test_a_black_hole_is_found_and_every_message_still_arrives_once() -> None:
    rng = random.Random(3)
    link = Link(rng=rng, carries=400, heartbeat=0.5, max_fragment=1000, smaller=(600, 300),
                jitter=0.005)
    sent: tuple[dict[int, tuple[int, bytes]], dict[int, tuple[int, bytes]]] = ({}, {})
    for i in range(60):
        side = int(i % 4 == 0)  # the other side's small messages come back too
        payload = rng.randbytes(rng.randrange(200) if side or i % 3 == 0 else
                                rng.randrange(1000, 6000))
        sent[side][link.send(side, 5, payload)] = (5, payload)
    link.run()
    check_exactly_once(link, sent[0], side=0)
    check_exactly_once(link, sent[1], side=1)
    sender = link.channels[0]
    assert sender.steps_down == 2 and sender.fragment_size == 300
    # 5.0 s before the timer allowed 50 ms for the peer's ack: each of the losses in a
    # row that find a hole waits that much longer.
    assert link.now < 7.0


def test_random_loss_does_not_step_down() -> None:
    for seed in range(5):
        rng = random.Random(seed)
        link = Link(rng=rng, loss=0.2, dup=0.05, jitter=0.01, max_fragment=200,
                    smaller=(100,))
        sent = {}
        for _ in range(150):  # full fragments and lone ones: the case most like a hole
            payload = rng.randbytes(rng.choice([200, 200, 150, 1000, 3000]))
            sent[link.send(0, 1, payload)] = (1, payload)
            for _ in range(rng.randrange(30)):
                link.step()
        link.run()
        check_exactly_once(link, sent)
        assert link.channels[0].steps_down == 0, seed


def parts_of(seq: int, data: bytes, size: int, count: int = 1, index: int = 0) -> list[Fragment]:
    n = -(-len(data) // size)
    return [Fragment(seq, index, count, 1, data[p * size:(p + 1) * size], p, n)
            for p in range(n)]


def test_parts_assemble_in_any_order_and_a_finer_cut_replaces_a_coarser_one() -> None:
    ch = ReliableChannel(max_fragment=1000, smaller=(500, 250))
    data = bytes(range(200)) * 5
    coarse, fine = parts_of(0, data, 500), parts_of(0, data, 250)
    assert deliver(ch, [coarse[1], coarse[1]], 0.0) == [True, False]
    assert ch.duplicates == 1 and ch.ack_to_send(1.0) is None  # no seq is complete
    assert deliver(ch, [fine[3], coarse[0], fine[0], fine[2]], 0.0) == [True, False, True, True]
    assert list(events(ch)) == []
    assert ch.receive_fragment(fine[1], 0.0)
    assert list(events(ch)) == [MessageReceived(0, 1, data)]
    assert ranges(ch, 1.0) == [(0, 0)]
    assert not ch.receive_fragment(coarse[0], 1.0)  # the seq is in: a duplicate
    whole = ReliableChannel(max_fragment=1000, smaller=(500,))
    assert whole.receive_fragment(coarse[0], 0.0)
    assert whole.receive_fragment(Fragment(0, 0, 1, 1, data), 0.0)  # it came whole after all
    assert whole._buffered == 0 and list(events(whole)) == [MessageReceived(0, 1, data)]


@pytest.mark.parametrize("bad", [
    pytest.param(Fragment(5, 0, 1, 1, bytes(100), 0, 2), id="a part short of the smallest size"),
    pytest.param(Fragment(5, 0, 1, 1, b"", 1, 2), id="an empty last part"),
    pytest.param(Fragment(5, 0, 1, 1, bytes(250), 0, 5), id="more parts than can be"),
    pytest.param(Fragment(5, 0, 1, 1, bytes(250), 2, 2), id="part >= parts"),
    pytest.param(Fragment(4, 0, 1, 2, bytes(250), 1, 3), id="kind disagrees with its parts"),
    pytest.param(Fragment(4, 0, 1, 1, bytes(1000), 1, 3), id="parts beyond max_fragment"),
])
def test_a_bad_part_is_a_violation_and_changes_nothing(bad: Fragment) -> None:
    ch = ReliableChannel(max_fragment=1000, smaller=(250,))
    assert ch.receive_fragment(Fragment(4, 0, 1, 1, bytes(250), 0, 3), 0.0)
    before = copy.deepcopy(vars(ch))
    with pytest.raises(ProtocolViolation):
        ch.receive_fragment(bad, 1.0)
    assert vars(ch) == before


def test_unsent_counts_the_bytes_not_yet_sent_once() -> None:
    # What a producer waits on: fragments are made as the window lets them go.
    ch = ReliableChannel(max_fragment=10, initial_window=2)
    ch.send(1, b"a" * 25, 0.0)
    ch.send(1, b"b" * 5, 0.0)
    assert ch.unsent == 30
    sent = ch.fragments_to_send(0.0)
    assert [(f.seq, f.index, f.count, bytes(f.data)) for f in sent] == [
        (0, 0, 3, b"a" * 10), (1, 1, 3, b"a" * 10)]
    assert ch.unsent == 10
    ch.receive_ack([(0, 1)], 0.01)
    assert [(f.seq, bytes(f.data)) for f in ch.fragments_to_send(0.01)] == [
        (2, b"a" * 5), (3, b"b" * 5)]
    assert ch.unsent == 0
