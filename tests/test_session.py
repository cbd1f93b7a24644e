"""The session layer, driven with a fake clock over an in-memory link."""

from __future__ import annotations

import functools
import itertools
import random
import secrets
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbalancer import wire
from loadbalancer.greeting import HELLO_SENDERS, WELCOME_GAP, Greeters
from loadbalancer.paths import CHALLENGE_GAP
from loadbalancer.reliable import MessageAcked, MessageReceived
from loadbalancer.session import (
    AuthenticationFailing,
    Connection,
    Event,
    NewcomerRefused,
    PeerJoined,
    PeerLost,
    StateReceived,
)
from loadbalancer.sessionstate import ReplayWindow
from loadbalancer.wire import Kind, Rejected, Role

KEY = wire.Keys("the shared secret of this test")
MASTER_ADDRESS = ("10.0.0.1", 1)
SLAVE_ADDRESS = ("10.0.0.2", 2)
ATTACKER = ("10.6.6.6", 6)


def counter(start: int) -> Callable[[], int]:
    numbers = itertools.count(start)
    return lambda: next(numbers)


class Pair:
    """A master and a slave connection joined by a link that can lose datagrams, and
    drop those bigger than it carries. A datagram reaches a node only if it is sent to
    the node's address; what goes elsewhere is kept in ``elsewhere``."""

    def __init__(self, loss: float = 0.0, seed: int = 1,
                 max_datagrams: tuple[int, int] = (wire.DEFAULT_MAX_DATAGRAM,) * 2) -> None:
        self.now = 0.0
        self.random = random.Random(seed)
        self.loss = loss
        self.max_datagrams = dict(zip(Role, max_datagrams, strict=True))
        self.master = self.make(Role.MASTER, SLAVE_ADDRESS, 1000)
        self.slave = self.make(Role.SLAVE, MASTER_ADDRESS, 2000)
        self.events: dict[Role, list[Event]] = {Role.MASTER: [], Role.SLAVE: []}
        self.captured: list[tuple[Role, bytes]] = []
        self.source = {Role.MASTER: MASTER_ADDRESS, Role.SLAVE: SLAVE_ADDRESS}
        self.reaches = dict(self.source)  # the address at which each node receives
        self.carries: dict[Role, int] = {}  # the largest datagram from each that arrives
        self.elsewhere: list[tuple[tuple[str, int], bytes]] = []

    def make(self, role: Role, peer: tuple[str, int], start: int) -> Connection:
        return Connection(role, KEY, peer_address=peer, new_incarnation=counter(start),
                          now=self.now, heartbeat_timeout=3.0,
                          max_datagram=self.max_datagrams[role])

    def node(self, role: Role) -> Connection:
        return self.master if role is Role.MASTER else self.slave

    def step(self, dt: float = 0.001) -> int:
        """Advance the clock, fire timers, move every datagram once; how many moved."""
        self.now += dt
        moved = 0
        for role in (Role.MASTER, Role.SLAVE):
            sender, receiver = self.node(role), self.node(role.peer)
            sender.handle_timer(self.now)
            for data, address in sender.datagrams_to_send(self.now):
                self.captured.append((role, data))
                moved += 1
                if address != self.reaches[role.peer]:
                    self.elsewhere.append((address, data))
                elif len(data) <= self.carries.get(role, wire.MAX_DATAGRAM) \
                        and self.random.random() >= self.loss:
                    self.deliver(role, data)
            while (event := receiver.next_event()) is not None:
                self.events[role.peer].append(event)
        return moved

    def deliver(self, role: Role, data: bytes) -> None:
        """A datagram from ``role`` arrives at its peer."""
        self.node(role.peer).receive_datagram(data, self.source[role], self.now)

    def run(self, seconds: float, dt: float = 0.001) -> None:
        for _ in range(round(seconds / dt)):
            self.step(dt)


def kinds(datagrams: list[tuple[tuple[str, int], bytes]], to: tuple[str, int]) -> list[Kind]:
    return [Kind(wire.HEADER.unpack_from(data)[2]) for address, data in datagrams
            if address == to]


def test_handshake_opens_one_session_on_each_side() -> None:
    pair = Pair()
    pair.run(0.05)
    assert pair.master.peer == pair.slave.incarnation
    assert pair.slave.peer == pair.master.incarnation
    assert [type(e) for e in pair.events[Role.MASTER]] == [PeerJoined]
    assert [type(e) for e in pair.events[Role.SLAVE]] == [PeerJoined]
    # At most the HELLO that crossed the WELCOME, recognised as stale.
    for node in (pair.master, pair.slave):
        assert set(node.dropped) <= {"stale_hello"} and node.dropped["stale_hello"] <= 1


def test_the_handshake_gives_each_side_a_first_rtt_sample() -> None:
    pair = Pair()
    pair.run(0.05)  # every datagram crosses within a 1 ms step
    for node in (pair.master, pair.slave):
        assert node.channel.srtt is not None and node.channel.srtt <= 0.002
        # Not the 0.3 s guess: the link's round trip and the allowance for the peer's ack.
        assert node.channel.rto < 0.06


def test_a_greeting_answered_late_gives_no_rtt_sample() -> None:
    pair = Pair()
    [(hello, _)] = pair.slave.datagrams_to_send(0.0)
    pair.master.receive_datagram(hello, SLAVE_ADDRESS, 0.0)
    [welcome] = [data for data, _ in pair.master.datagrams_to_send(0.0)
                 if wire.decode(KEY, data, 1400).header.kind is Kind.WELCOME]
    # Longer than the HELLO interval: it may answer any of several HELLOs.
    pair.slave.receive_datagram(welcome, MASTER_ADDRESS, 0.3)
    assert pair.slave.connected and pair.slave.channel.srtt is None


def test_messages_are_delivered_once_over_a_lossy_link(fast_path: bool) -> None:
    pair = Pair(loss=0.3, seed=4)
    pair.run(1.0)
    assert pair.master.connected and pair.slave.connected
    sent = {pair.master.send(Kind.JOBS, bytes([n]) * (n * 300), pair.now): n for n in range(40)}
    # Over a 1 ms path at 30% loss each way the timeout is mostly the 50 ms allowed for
    # the peer's ack, and backed off in the silences: 8 s, where 5 s did without it.
    pair.run(10.0)
    received = [e for e in pair.events[Role.SLAVE] if isinstance(e, MessageReceived)]
    assert sorted(e.payload for e in received) == sorted(bytes([n]) * (n * 300) for n in range(40))
    acked = {e.message_id for e in pair.events[Role.MASTER] if isinstance(e, MessageAcked)}
    assert acked == set(sent)
    assert pair.master.retransmits > 0


def test_state_is_delivered_unreliably() -> None:
    pair = Pair()
    pair.run(0.05)
    pair.master.send_state(b"state")
    pair.step()
    assert StateReceived(b"state") in pair.events[Role.SLAVE]


def test_a_copied_datagram_is_a_duplicate_and_an_old_one_a_replay() -> None:
    pair = Pair()
    pair.run(0.05)
    pair.master.send_state(b"one")
    first = pair.master.datagrams_to_send(pair.now)[0][0]
    pair.slave.receive_datagram(first, MASTER_ADDRESS, pair.now)
    pair.slave.receive_datagram(first, MASTER_ADDRESS, pair.now)
    assert pair.slave.dropped["duplicate"] == 1
    for _ in range(1100):  # push the first one out of the replay window
        pair.master.send_state(b"more")
        for data, _ in pair.master.datagrams_to_send(pair.now):
            pair.slave.receive_datagram(data, MASTER_ADDRESS, pair.now)
    pair.slave.receive_datagram(first, MASTER_ADDRESS, pair.now)
    assert pair.slave.dropped["replayed"] == 1


def test_a_reflected_datagram_is_dropped() -> None:
    pair = Pair()
    pair.run(0.05)
    pair.master.send_state(b"x")
    data = pair.master.datagrams_to_send(pair.now)[0][0]
    pair.master.receive_datagram(data, SLAVE_ADDRESS, pair.now)
    assert pair.master.dropped["wrong_role"] == 1


def test_silence_loses_the_peer_and_renews_the_incarnation() -> None:
    pair = Pair()
    pair.run(0.05)
    old = pair.master.incarnation
    pair.loss = 1.0
    pair.run(3.1)
    assert PeerLost("timeout") in pair.events[Role.MASTER]
    assert pair.master.incarnation > old
    assert not pair.master.connected


def test_a_restarted_slave_at_the_same_address_replaces_the_old_one_at_once() -> None:
    pair = Pair()
    pair.run(0.05)
    pair.slave.send_state(b"from the old slave")
    stale = pair.slave.datagrams_to_send(pair.now)[0][0]
    old_incarnation = pair.master.incarnation
    pair.slave = pair.make(Role.SLAVE, MASTER_ADDRESS, 5000)  # a new process, same socket
    pair.run(0.05)
    assert pair.master.peer == 5000 and pair.slave.peer == pair.master.incarnation
    assert PeerLost("renewed") in pair.events[Role.MASTER]
    assert pair.master.incarnation > old_incarnation  # the old slave's datagrams name the old
    pair.master.receive_datagram(stale, SLAVE_ADDRESS, pair.now)
    assert pair.master.dropped["stale_session"] == 1
    assert pair.master.peer == 5000


def test_a_restarted_slave_elsewhere_replaces_the_old_one_once_that_is_silent() -> None:
    pair = Pair()
    pair.run(0.05)
    moved = ("10.0.0.3", 3)
    pair.slave = pair.make(Role.SLAVE, MASTER_ADDRESS, 5000)  # a new process, a new port
    pair.source[Role.SLAVE] = pair.reaches[Role.SLAVE] = moved
    pair.run(1.0)
    assert pair.master.peer == 2000  # the old one was heard too lately: not yet
    pair.run(1.0)  # once it has been silent half a heartbeat timeout
    assert pair.master.peer == 5000
    assert PeerLost("replaced") in pair.events[Role.MASTER]


@pytest.mark.parametrize("stopped", [Role.SLAVE, Role.MASTER])
def test_a_node_stopped_past_the_timeout_rejoins_on_its_peers_first_hello(stopped: Role) -> None:
    """SIGSTOP for longer than the heartbeat timeout: the peer drops the stopped node and
    says HELLO again; when the node wakes, its socket holds the peer's last datagrams of
    the old session and then that HELLO. It renews at once instead of working on in the
    old session (whose jobs have been taken back or given up) until its own timeout."""
    pair = Pair()
    pair.run(0.05)
    sleeper, peer = pair.node(stopped), pair.node(stopped.peer)
    for _ in range(3):
        peer.send_state(b"before the stop")
        pair.run(0.01)
    buffered: list[bytes] = []
    for _ in range(400):  # 4 s in which only the peer runs: it times out and greets again
        pair.now += 0.01
        peer.handle_timer(pair.now)
        buffered += [data for data, _ in peer.datagrams_to_send(pair.now)]
        if peer.connected:
            peer.send_state(b"alive")
    assert PeerLost("timeout") in list(iter(peer.next_event, None))
    assert Kind(wire.HEADER.unpack_from(buffered[-1])[2]) is Kind.HELLO
    sleeper.receive_datagrams(buffered, pair.source[stopped.peer], pair.now)
    pair.run(0.05)
    assert PeerLost("renewed") in pair.events[stopped]
    assert sleeper.peer == peer.incarnation and peer.peer == sleeper.incarnation


def test_a_second_live_slave_is_refused_and_said_once() -> None:
    pair = Pair()
    pair.run(0.05)
    intruder = pair.make(Role.SLAVE, MASTER_ADDRESS, 7000)  # same secret, still running
    elsewhere = ("10.0.0.9", 7700)
    for _ in range(40):  # 4 s: the real slave keeps sending state, the other says HELLO
        pair.slave.send_state(b"alive")
        pair.master.send_state(b"alive")
        pair.run(0.1)
        intruder.handle_timer(pair.now)
        for data, _ in intruder.datagrams_to_send(pair.now):
            pair.master.receive_datagram(data, elsewhere, pair.now)
    assert pair.master.peer == 2000 and intruder.peer is None
    assert kinds(pair.elsewhere, elsewhere) == []  # not even a WELCOME
    assert pair.master.dropped["peer_busy"] >= 10
    said = [e for e in pair.events[Role.MASTER] if isinstance(e, NewcomerRefused)]
    while (event := pair.master.next_event()) is not None:
        said += [event] if isinstance(event, NewcomerRefused) else []
    assert said == [NewcomerRefused(elsewhere)]


def test_every_datagram_of_the_peer_failing_its_tag_is_said_once() -> None:
    ours = Connection(Role.MASTER, KEY, peer_address=SLAVE_ADDRESS, new_incarnation=counter(1),
                      now=0.0)
    theirs = Connection(Role.SLAVE, wire.Keys(secrets.token_urlsafe(32)),
                        peer_address=MASTER_ADDRESS, new_incarnation=counter(9), now=0.0)
    for step in range(8):
        theirs.handle_timer(step * 0.3)
        for data, _ in theirs.datagrams_to_send(step * 0.3):
            ours.receive_datagram(data, SLAVE_ADDRESS, step * 0.3)
            ours.receive_datagram(data, ("10.0.0.9", 1), step * 0.3)  # not the peer's address
    events = []
    while (event := ours.next_event()) is not None:
        events.append(event)
    assert events == [AuthenticationFailing(SLAVE_ADDRESS)]
    assert ours.dropped["bad_tag"] == 16


def test_a_replayed_hello_earns_a_welcome_and_changes_nothing() -> None:
    pair = Pair()
    hello = pair.slave.datagrams_to_send(pair.now)[0][0]
    pair.run(0.05)
    peer = pair.master.peer
    pair.slave = pair.make(Role.SLAVE, MASTER_ADDRESS, 7000)  # the old process is gone
    pair.master.receive_datagram(hello, SLAVE_ADDRESS, pair.now + 1)
    assert pair.master.peer == peer
    assert pair.master.datagrams_to_send(pair.now + 1) == []  # from the current peer: ignored


def test_each_end_keeps_in_flight_no_more_than_the_peer_socket_holds() -> None:
    pair = Pair(max_datagrams=(8972, 8972))
    pair.slave.receive_buffer(64 * 1024)  # said in its HELLO and WELCOME from now on
    pair.run(0.5)
    assert pair.master.connected and pair.slave.connected
    pair.master.send(Kind.JOBS, bytes(2**20), pair.now)
    pair.master.datagrams_to_send(pair.now)
    # The last fragment may start below the window and end above it.
    assert 64 * 1024 <= pair.master.channel.bytes_in_flight < 64 * 1024 + 8972
    assert pair.master.channel.window == 64 * 1024
    assert pair.slave.channel.window > 64 * 1024  # the master said nothing: no cap


def test_welcomes_are_limited_per_incarnation_and_to_the_newest_few() -> None:
    greeters = Greeters(size=2)
    greeters.admit(30, 0, wire.Takes(1400), 0.0)
    greeters.admit(10, 0, wire.Takes(1400), 0.0)
    for incarnation, number, now, reason in [
            (30, 0, 1.0, "replayed"),  # a copy
            (30, 1, 0.05, "rate_limited"),  # new, but too soon after the last answer
            (5, 0, 1.0, "old_hello"),  # older than both the table holds
    ]:
        with pytest.raises(Rejected) as raised:
            greeters.admit(incarnation, number, wire.Takes(1400), now)
        assert raised.value.reason == reason
    greeters.admit(30, 2, wire.Takes(1472), 0.2)
    greeters.admit(20, 0, wire.Takes(1400), 0.2)  # newer than 10, which leaves for good
    with pytest.raises(Rejected, match="old_hello"):
        greeters.admit(10, 5, wire.Takes(1400), 9.0)
    assert greeters.takes(30) == wire.Takes(1400) and greeters.takes(10) is None


def captured_hellos(role: Role, incarnations: int, seconds: float) -> list[bytes]:
    """HELLOs of earlier runs, as someone listening then kept them: oldest first."""
    hellos = []
    for n in range(incarnations):
        earlier = Connection(role, KEY, peer_address=ATTACKER, new_incarnation=counter(100 + n),
                             now=0.0)
        for tick in range(round(seconds / earlier.greeting.interval)):
            hellos += [data for data, _ in earlier.datagrams_to_send(tick * 0.25)]
    return hellos


def join_time(flood: bool, rate: int = 5000, dt: float = 0.0002) -> tuple[float, Pair]:
    """How long after they start talking both ends hold the session, with captured HELLOs
    replayed to both at ``rate`` if ``flood``: from a second before, one every 0.2 ms,
    each just before the pair's own datagrams."""
    pair = Pair()
    replays = {role: itertools.cycle(captured_hellos(role.peer, 50, 10.0)) for role in Role}
    per_step = round(rate * dt) if flood else 0

    def replay() -> None:
        for role in Role:
            for _ in range(per_step):
                pair.node(role).receive_datagram(next(replays[role]), ATTACKER, pair.now)

    while pair.now < 1.0:  # the nodes listen, and say nothing yet
        replay()
        pair.now += dt
    start = pair.now
    while not (pair.master.connected and pair.slave.connected) and pair.now < start + 10.0:
        replay()
        pair.step(dt)
    return pair.now - start, pair


def test_replayed_hellos_at_5000_a_second_neither_delay_the_join_nor_earn_many_welcomes() -> None:
    usual, _ = join_time(flood=False)
    flooded, pair = join_time(flood=True)
    welcomes = kinds(pair.elsewhere, ATTACKER).count(Kind.WELCOME)
    print(f"joined after {usual * 1000:.1f} ms, {flooded * 1000:.1f} ms under the flood; "
          f"{welcomes} WELCOMEs to the replayer")
    assert pair.master.connected and pair.slave.connected
    assert flooded <= usual + 2.0
    assert flooded <= usual + 0.01  # in fact at once: the replays spend no budget of the pair's
    # Both nodes: the table's newest few, each at most every WELCOME_GAP, and one for each
    # incarnation that came newer than the table.
    assert welcomes <= 2 * (50 + HELLO_SENDERS * (1.0 + flooded) / WELCOME_GAP)
    assert pair.master.dropped["old_hello"] + pair.master.dropped["replayed"] > 0


def test_a_flood_that_outlasts_the_join_stays_bounded() -> None:
    pair = Pair()
    replays = itertools.cycle(captured_hellos(Role.SLAVE, 50, 10.0))
    for _ in range(5000):  # one second at 5,000 a second, into a session
        pair.master.receive_datagram(next(replays), ATTACKER, pair.now)
        pair.step(0.0002)
    welcomes = kinds(pair.elsewhere, ATTACKER).count(Kind.WELCOME)
    assert pair.master.connected and welcomes <= 50 + HELLO_SENDERS / WELCOME_GAP


def test_replay_window_accepts_late_but_new_numbers() -> None:
    window = ReplayWindow(size=8)
    for number in (5, 3, 4, 9):
        window.check(number)
    for number, reason in ((3, "duplicate"), (1, "replayed"), (9, "duplicate")):
        try:
            window.check(number)
        except Rejected as error:
            assert error.reason == reason
        else:
            raise AssertionError(f"{number} accepted")
    window.check(2)  # never seen and still inside the window


def test_a_far_jump_forgets_the_window_without_a_huge_shift() -> None:
    window = ReplayWindow()
    window.check(1)
    window.check(1 << 62)
    assert window.bits == 1
    try:
        window.check(1)
    except Rejected as error:
        assert error.reason == "replayed"


@functools.cache
def established() -> tuple[Pair, list[bytes]]:
    """A session, and valid datagrams of it (state, fragments) to mutate."""
    pair = Pair()
    pair.run(0.05)
    pair.slave.send_state(b"state")
    pair.slave.send(Kind.RESULTS, b"r" * 3000, pair.now)
    return pair, [d for d, _ in pair.slave.datagrams_to_send(pair.now)]


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_mutated_datagrams_never_crash_or_change_the_session(data: st.DataObject) -> None:
    pair, valid = established()
    peer, incarnation = pair.master.peer, pair.master.incarnation
    pair.master.dropped.clear()
    for _ in range(10):
        mutated = bytearray(data.draw(st.sampled_from(valid)))
        for index in data.draw(st.sets(st.integers(0, len(mutated) - 1), min_size=1,
                                       max_size=4)):
            mutated[index] ^= data.draw(st.integers(1, 255))
        pair.master.receive_datagram(bytes(mutated), SLAVE_ADDRESS, pair.now)
        pair.master.receive_datagram(data.draw(st.binary(max_size=200)), SLAVE_ADDRESS, pair.now)
    assert (pair.master.peer, pair.master.incarnation) == (peer, incarnation)
    assert sum(pair.master.dropped.values()) == 20


# ---- the datagram size -----------------------------------------------------------------
def test_the_ends_agree_on_the_smaller_datagram_size() -> None:
    pair = Pair(max_datagrams=(8972, 1472))
    pair.run(0.05)
    assert pair.master.datagram_size == pair.slave.datagram_size == 1472
    pair.master.send(Kind.JOBS, random.Random(1).randbytes(20000), pair.now)
    pair.run(0.05)
    assert max(len(data) for role, data in pair.captured if role is Role.MASTER) == 1472
    assert any(isinstance(e, MessageReceived) for e in pair.events[Role.SLAVE])
    assert pair.slave.dropped["oversized"] == 0


def test_a_path_that_drops_full_size_datagrams_is_stepped_down_to_what_it_carries() -> None:
    pair = Pair(max_datagrams=(8972, 8972))
    pair.carries[Role.MASTER] = 1500  # what the configs do not know: a narrower link
    pair.run(0.05)
    payloads = [random.Random(n).randbytes(30000) for n in range(4)]
    for payload in payloads:
        pair.master.send(Kind.JOBS, payload, pair.now)
    for _ in range(10):  # five seconds, each end's state every half second
        pair.slave.send_state(b"state")
        pair.master.send_state(b"state")
        pair.run(0.5)
    received = [e.payload for e in pair.events[Role.SLAVE] if isinstance(e, MessageReceived)]
    assert sorted(received) == sorted(payloads)
    assert pair.master.datagram_size == 1472 and pair.master.datagram_steps == 1
    assert pair.slave.datagram_size == 8972 and pair.slave.datagram_steps == 0
    assert pair.master.connected and pair.slave.connected


# ---- addresses ---------------------------------------------------------------------------
def test_a_copy_raced_from_another_address_earns_that_address_only_challenges() -> None:
    pair = Pair()
    pair.run(0.05)
    original = pair.deliver

    def race(role: Role, data: bytes) -> None:
        if role is Role.SLAVE:  # the attacker sees the slave's datagram, and is faster
            pair.master.receive_datagram(data, ATTACKER, pair.now)
        original(role, data)

    pair.deliver = race  # type: ignore[method-assign]
    for n in range(30):
        pair.slave.send(Kind.RESULTS, bytes([n]) * 3000, pair.now)
        pair.master.send(Kind.JOBS, bytes([n]) * 3000, pair.now)
        pair.slave.send_state(b"state")
        pair.run(0.1)
    to_attacker = kinds(pair.elsewhere, ATTACKER)
    print(f"{len(to_attacker)} datagrams to the attacker: {set(to_attacker)}")
    assert set(to_attacker) == {Kind.PATH_CHALLENGE}
    assert len(to_attacker) <= 3.0 / CHALLENGE_GAP + 1
    assert pair.master.peer_address == SLAVE_ADDRESS and pair.master.path.moves == 0
    assert len([e for e in pair.events[Role.SLAVE] if isinstance(e, MessageReceived)]) == 30
    assert len([e for e in pair.events[Role.MASTER] if isinstance(e, MessageReceived)]) == 30


def test_a_relayed_challenge_and_a_copied_answer_move_nothing_while_the_old_path_lives() -> None:
    pair = Pair()
    pair.run(0.05)
    pair.master.receive_datagram(pair.captured[-1][1], ATTACKER, pair.now)  # nothing new
    pair.slave.send_state(b"fresh")
    [(state, _)] = pair.slave.datagrams_to_send(pair.now)
    pair.master.receive_datagram(state, ATTACKER, pair.now)  # the copy wins the race
    [(challenge, address)] = pair.master.datagrams_to_send(pair.now)
    assert address == ATTACKER and pair.master.path.challenges == 1
    pair.master.receive_datagram(state, SLAVE_ADDRESS, pair.now)  # the original: a duplicate
    pair.slave.receive_datagram(challenge, ATTACKER, pair.now)  # relayed to the slave
    answer = [data for data, address in pair.slave.datagrams_to_send(pair.now)
              if wire.HEADER.unpack_from(data)[2] == Kind.PATH_RESPONSE]
    assert len(answer) == 1  # sent to the master's address, not back to the relay
    pair.master.receive_datagram(answer[0], ATTACKER, pair.now + 0.01)  # and copied
    assert pair.master.peer_address == SLAVE_ADDRESS and pair.master.path.refused == 1


def test_a_peer_whose_address_really_changed_is_followed_after_one_challenge() -> None:
    pair = Pair()
    pair.run(0.05)
    moved = ("192.0.2.7", 40000)
    pair.source[Role.SLAVE] = pair.reaches[Role.SLAVE] = moved  # a NAT rebinding
    pair.slave.send(Kind.RESULTS, b"r" * 5000, pair.now)
    pair.master.send(Kind.JOBS, b"j" * 5000, pair.now)
    pair.run(0.5)
    assert pair.master.peer_address == moved
    assert (pair.master.path.challenges, pair.master.path.moves) == (1, 1)
    assert {e.payload for e in pair.events[Role.SLAVE] if isinstance(e, MessageReceived)} \
        == {b"j" * 5000}
    assert {e.payload for e in pair.events[Role.MASTER] if isinstance(e, MessageReceived)} \
        == {b"r" * 5000}
    lost = kinds(pair.elsewhere, SLAVE_ADDRESS)  # sent to the old address meanwhile
    assert len(lost) == 4  # the fragments sent before the peer was heard from its new address


# ---- bursts ------------------------------------------------------------------------------
def burst_of_everything() -> tuple[Pair, list[bytes]]:
    """A session, and what a burst read may hold: fragments of two messages, a STATE among
    them, a copy, a forgery, junk, and a BYE that ends the session before the rest."""
    pair = Pair()
    pair.run(0.05)
    pair.slave.send(Kind.RESULTS, b"a" * 5000, pair.now)
    first = [d for d, _ in pair.slave.datagrams_to_send(pair.now)]
    pair.slave.send_state(b"state")
    pair.slave.send(Kind.RESULTS, b"b" * 3000, pair.now)
    second = [d for d, _ in pair.slave.datagrams_to_send(pair.now)]
    forged = bytearray(first[1])
    forged[-1] ^= 1
    pair.slave.say_bye()
    bye = [d for d, _ in pair.slave.datagrams_to_send(pair.now)]
    after = [bytes(d) for d in first[:1]]  # sent before the BYE, read after it
    burst = [*first, first[0], bytes(forged), b"junk" * 10, *second, *bye, *after]
    return pair, [bytes(d) for d in burst]


def outcome(connection: Connection) -> tuple[object, ...]:
    events = []
    while (event := connection.next_event()) is not None:
        events.append(event)
    return (events, connection.drops(), connection.peer, connection.incarnation,
            connection.suppressed, connection.bytes_received, connection.path._heard_at,
            connection.session.last_heard)


def test_a_burst_read_together_comes_to_what_its_datagrams_one_by_one_would(
        fast_path: bool) -> None:
    one_by_one, burst = burst_of_everything()
    for data in burst:
        one_by_one.master.receive_datagram(data, SLAVE_ADDRESS, one_by_one.now)
    together, same = burst_of_everything()
    assert same == burst  # the two pairs are alike, datagram for datagram
    together.master.receive_datagrams(same, SLAVE_ADDRESS, together.now)
    expected = outcome(one_by_one.master)
    assert outcome(together.master) == expected
    events, drops = expected[0], expected[1]
    assert [e.payload for e in events if isinstance(e, MessageReceived)] == [b"a" * 5000,
                                                                             b"b" * 3000]
    assert any(isinstance(e, StateReceived) for e in events)
    assert isinstance(events[-1], PeerLost)  # the BYE, and what came after it is stale
    assert drops["bad_tag"] == 1 and drops["stale_session"] == 1


def test_a_burst_of_fragments_alone_says_when_and_where_the_peer_was_heard() -> None:
    pair = Pair()
    pair.run(0.05)
    pair.slave.send(Kind.RESULTS, b"c" * 5000, pair.now)
    burst = [bytes(d) for d, _ in pair.slave.datagrams_to_send(pair.now)]
    pair.master.receive_datagrams(burst, SLAVE_ADDRESS, pair.now + 1)
    assert pair.master.path._heard_at == pair.master.session.last_heard == pair.now + 1
    assert isinstance(pair.master.next_event(), MessageReceived)
