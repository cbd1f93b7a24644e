"""The adaptor's decisions on scenarios written as data (as dask's test_balance does)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbalancer.adaptor import (
    POLICIES,
    Decision,
    Link,
    NodeView,
    Params,
    Policy,
    Snapshot,
    decide,
    grant,
    speed,
)
from loadbalancer.peerstate import MAX_JOB_SECONDS, MAX_JOBS, MAX_WORKERS, MIN_JOB_SECONDS

LAN = Link(rtt=0.002, bandwidth=12.5e6, job_bytes=8_000.0)
JOB = 0.06  # measured compute seconds of one job at full speed
# The model's counts on queues of any length: moves made at once, not when due.
EAGER = Params(lookahead=math.inf)


def node(
    queued: int,
    *,
    running: int = 1,
    throttle: float = 1.0,
    workers: int = 1,
    job_seconds: float | None = JOB,
) -> NodeView:
    return NodeView(queued, running, throttle, workers, job_seconds)


def snap(
    local: NodeView,
    remote: NodeView,
    *,
    age: float = 0.0,
    to_remote: int = 0,
    from_remote: int = 0,
    requested: int = 0,
) -> Snapshot:
    return Snapshot(local, remote, age, to_remote, from_remote, requested, LAN)


def equalizing(local: NodeView, remote: NodeView) -> float:
    """Jobs to move from local to remote so both drain together (transfer time ignored)."""
    r_local, r_remote = speed(local, JOB), speed(remote, JOB)
    t_local = (local.queued + local.running / 2) / r_local
    t_remote = (remote.queued + remote.running / 2) / r_remote
    return (t_local - t_remote) / (1 / r_local + 1 / r_remote)


def test_policies_in_order() -> None:
    assert POLICIES == ("none", "sender", "receiver", "symmetric", "seed")


def test_speed_is_workers_times_throttle_over_job_seconds() -> None:
    assert speed(node(0, workers=2, throttle=0.5, job_seconds=0.05), 0.1) == pytest.approx(20)
    assert speed(node(0, job_seconds=None), 0.1) == pytest.approx(10)
    assert speed(node(0, throttle=0.0), 0.1) == 0


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    ("local", "remote"),
    [
        pytest.param(node(100), node(100), id="equal queues"),
        pytest.param(node(100), node(95), id="within hysteresis"),
        pytest.param(node(0, running=0), node(0, running=0), id="both empty"),
        pytest.param(node(1), node(0), id="last job: moving it saves nothing"),
    ],
)
def test_balanced_holds(policy: Policy, local: NodeView, remote: NodeView) -> None:
    decision = decide(policy, snap(local, remote))
    assert decision == Decision("hold", 0, decision.reason)


@pytest.mark.parametrize("policy", ["none", "sender", "receiver", "symmetric"])
def test_unequal_queues_balanced_in_time_hold(policy: Policy) -> None:
    view = snap(node(100), node(30, throttle=0.3))  # 6.03 s and 6.10 s
    assert decide(policy, view).action == "hold"
    # The seed rule counts jobs, not seconds: it pushes work to the slow node.
    seed = decide("seed", view)
    assert (seed.action, seed.count) == ("send", 35)
    assert seed.why == "the queues differ by 70 jobs, more than 30"


MOVES = [
    # (policy, local, remote, action, expected count as equalizing(local, remote) or jobs)
    pytest.param("sender", node(200), node(0), "send", 100, id="overloaded sender sends half"),
    pytest.param(
        "sender", node(100, throttle=0.3), node(100), "send", 54, id="slow sender sends its excess"
    ),
    pytest.param(
        "symmetric", node(600, workers=4, running=4), node(20), "send", 104, id="4 workers"
    ),
    pytest.param("symmetric", node(200), node(0), "send", 100, id="symmetric sends"),
    pytest.param("receiver", node(0), node(200), "request", 100, id="underloaded asks"),
    pytest.param("symmetric", node(0), node(200), "request", 100, id="symmetric asks"),
    pytest.param("receiver", node(10), node(100, throttle=0.3), "request", 75, id="ask a slow one"),
]


@pytest.mark.parametrize(("policy", "local", "remote", "action", "count"), MOVES)
def test_imbalance_moves_the_equalizing_count(
    policy: Policy, local: NodeView, remote: NodeView, action: str, count: int
) -> None:
    decision = decide(policy, snap(local, remote), EAGER)
    ideal = equalizing(local, remote) if action == "send" else -equalizing(local, remote)
    assert decision.action == action
    assert abs(decision.count - ideal) <= 2
    assert abs(decision.count - count) <= 2
    assert decision.reason.startswith("T_local=")
    assert f"{action} {decision.count} (after:" in decision.reason


@pytest.mark.parametrize(
    ("policy", "local", "remote"),
    [
        pytest.param("none", node(200), node(0), id="none never balances"),
        pytest.param("sender", node(0), node(200), id="sender does not ask"),
        pytest.param("receiver", node(200), node(0), id="receiver does not push"),
    ],
)
def test_policy_decides_who_initiates(policy: Policy, local: NodeView, remote: NodeView) -> None:
    assert decide(policy, snap(local, remote)).action == "hold"


@pytest.mark.parametrize("policy", ["sender", "receiver", "symmetric"])
def test_a_move_waits_until_the_receiver_would_run_dry_soon(policy: Policy) -> None:
    """Between two busy nodes an imbalance costs nothing yet: the move is made once the
    receiver has lookahead seconds of work left, on what is known then."""
    slow, fast = node(100, throttle=0.5), node(20)  # 12.06 s against 1.23 s
    due = snap(slow, fast) if policy == "sender" else snap(fast, slow)
    action = "send" if policy == "sender" else "request"
    assert decide(policy, due).action == action
    early = replace(due, local=replace(due.local, queued=due.local.queued + 30),
                    remote=replace(due.remote, queued=due.remote.queued + 30))
    waits = decide(policy, early)  # the fast one has 3.03 s left
    assert waits.action == "hold" and "waits: the receiver is busy for 3.03s" in waits.reason
    assert decide(policy, early, EAGER).action == action


def test_the_peers_state_is_aged_by_the_work_done_since() -> None:
    # 1 s old: the peer has run 16.7 of its 100 jobs since; equalize 12.03 s against 5.03 s.
    decision = decide("sender", snap(node(200), node(100), age=1.0), EAGER)
    assert (decision.action, decision.count) == ("send", 58)


def test_slow_link_sends_fewer_so_they_land_in_time() -> None:
    """At 0.03 s a job on the wire, 50 jobs land after 1.5 s: 40 balance, 50 would not."""
    slow = Link(rtt=0.002, bandwidth=8_000 / 0.03, job_bytes=8_000.0)
    view = Snapshot(node(100), node(0, running=0), 0.0, 0, 0, 0, slow)
    decision = decide("sender", view)
    assert (decision.action, decision.count) == ("send", 40)


def test_a_slow_idle_peer_gets_its_share_despite_hysteresis() -> None:
    """Feeding a peer 5x slower saves at most a sixth of the finish time: the hysteresis
    scales with the receiver's share of the speed, or such a peer would never get work."""
    view = snap(node(200), node(0, running=0, throttle=0.2))
    decision = decide("sender", view, Params(hysteresis=0.2))
    assert (decision.action, decision.count) == ("send", 33)


def test_whole_job_waves_near_the_end() -> None:
    """3 jobs on 4 workers at throttle 0.25 take one 0.24 s wave whatever we move, unless we
    move all 3 to an idle full-speed worker (3 x 0.06 s)."""
    view = snap(node(3, running=0, workers=4, throttle=0.25), node(0, running=0))
    assert decide("sender", view).count == 3


def test_min_batch() -> None:
    view = snap(node(110), node(100))  # 5 jobs equalize
    assert decide("sender", view, replace(EAGER, min_batch=1, hysteresis=0.0)).count == 5
    assert decide("sender", view, replace(EAGER, min_batch=6, hysteresis=0.0)).action == "hold"


@pytest.mark.parametrize("policy", ["receiver", "symmetric"])
def test_no_second_request_while_one_is_pending(policy: Policy) -> None:
    assert decide(policy, snap(node(0), node(200))).action == "request"
    decision = decide(policy, snap(node(0), node(200), requested=100))
    assert decision.action == "hold"
    assert "awaiting 100 requested" in decision.reason


def test_unmeasured_node_uses_the_peers_job_seconds() -> None:
    decision = decide("sender", snap(node(200, job_seconds=None), node(0)))
    assert "T_local=12.03s" in decision.reason  # 200.5 jobs of the peer's 0.06 s
    both_unknown = decide("sender", snap(node(200, job_seconds=None), node(0, job_seconds=None)))
    assert "T_local=20.05s" in both_unknown.reason  # default_job_seconds 0.1


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize(
    ("local", "remote", "expected"),
    [
        pytest.param(node(50, throttle=0.0), node(0), Decision("send", 50, ""), id="drains"),
        pytest.param(node(50, throttle=0.0), node(500), Decision("send", 50, ""), id="even busy"),
        pytest.param(node(50, workers=0), node(0), Decision("send", 50, ""), id="no workers"),
        pytest.param(
            node(50, throttle=0.0), node(0, throttle=0.0), Decision("hold", 0, ""), id="both 0"
        ),
        pytest.param(
            node(0, throttle=0.0), node(200), Decision("hold", 0, ""), id="0 never requests"
        ),
        pytest.param(
            node(200), node(0, throttle=0.0), Decision("hold", 0, ""), id="never send to 0"
        ),
        pytest.param(
            node(200), node(0, running=0, throttle=0.0), Decision("hold", 0, ""), id="idle at 0"
        ),
    ],
)
def test_throttle_zero_under_every_policy(
    policy: Policy, local: NodeView, remote: NodeView, expected: Decision
) -> None:
    decision = decide(policy, snap(local, remote))
    assert (decision.action, decision.count) == (expected.action, expected.count)


def test_stopped_node_with_jobs_on_their_way_sends_only_what_it_holds() -> None:
    decision = decide("none", snap(node(5, throttle=0.0), node(0), from_remote=20))
    assert (decision.action, decision.count) == ("send", 5)


def test_jobs_in_flight_to_the_peer_prevent_a_second_send() -> None:
    first = decide("sender", snap(node(200), node(0)))
    assert first.action == "send"
    sent = first.count
    # Next period: the peer's state still predates the jobs' arrival.
    stale = snap(node(200 - sent), node(0), age=0.4)
    assert decide("sender", stale).action == "send"  # what happens without in-flight accounting
    assert decide("sender", replace(stale, in_flight_to_remote=sent)).action == "hold"


def test_jobs_in_flight_from_the_peer_prevent_a_request() -> None:
    stale = snap(node(0), node(100), age=0.3)
    assert decide("receiver", stale).action == "request"
    assert decide("receiver", replace(stale, in_flight_from_remote=100)).action == "hold"


def test_no_ping_pong_between_two_symmetric_nodes() -> None:
    """A pushes to B; then each decides again from views that lag the move."""
    a_first = decide("symmetric", snap(node(300), node(100)), EAGER)
    assert a_first.action == "send"
    moved = a_first.count
    views_of_b = [
        # B got the jobs, A's state predates the send.
        snap(node(100 + moved), node(300), age=0.5),
        # B did not get them yet, A's state is after the send.
        snap(node(100), node(300 - moved), age=0.2, from_remote=moved),
        # B got them and A's state is fresh.
        snap(node(100 + moved), node(300 - moved), age=0.1),
    ]
    a_fresh = node(300 - moved)
    for view in views_of_b:
        b = decide("symmetric", view, EAGER)
        assert b.action != "send", b.reason
        if b.action == "request":  # A answers from its fresh state: nothing to give
            asked_by_b = snap(a_fresh, view.local, age=view.remote_age)
            assert grant(asked_by_b, b.count) == 0
    # A again, B's state still from before the jobs landed.
    a_again = decide("symmetric", snap(a_fresh, node(100), age=0.5, to_remote=moved), EAGER)
    assert a_again.action == "hold", a_again.reason


@pytest.mark.parametrize(
    ("queues", "rates", "age"),
    [
        pytest.param((120, 100), (1.0, 1.0), 0.5, id="small gap"),
        pytest.param((100, 100), (1.0, 0.8), 0.5, id="slightly different speeds"),
        pytest.param((60, 60), (1.0, 1.0), 1.0, id="old states"),
        pytest.param((100, 30), (0.3, 1.0), 0.5, id="big gap: one side sends"),
    ],
)
def test_both_sides_never_send_at_each_other(
    queues: tuple[int, int], rates: tuple[float, float], age: float
) -> None:
    """Each side sees the other as it was `age` seconds ago (more jobs queued then)."""
    a = node(queues[0], throttle=rates[0])
    b = node(queues[1], throttle=rates[1])

    def earlier(view: NodeView) -> NodeView:
        return replace(view, queued=view.queued + round(age * speed(view, JOB)))

    a_sends = decide("symmetric", snap(a, earlier(b), age=age)).action == "send"
    b_sends = decide("symmetric", snap(b, earlier(a), age=age)).action == "send"
    assert not (a_sends and b_sends)


def test_symmetric_request_crossing_a_send_gets_nothing() -> None:
    """Both sides act on the same imbalance at once: A sends, B asks. A's grant sees the send."""
    a, b = node(100, throttle=0.3), node(30)
    sent = decide("symmetric", snap(a, b), EAGER)
    asked = decide("symmetric", snap(b, a), EAGER)
    assert (sent.action, asked.action) == ("send", "request")
    after_send = snap(replace(a, queued=a.queued - sent.count), b, age=0.3, to_remote=sent.count)
    assert grant(after_send, asked.count) == 0
    assert grant(snap(a, b, age=0.3), asked.count) > 0  # had A not sent


@pytest.mark.parametrize(
    ("local", "remote", "to_remote", "from_remote", "expected"),
    [
        pytest.param(60, 30, 0, 0, Decision("hold", 0, ""), id="difference 30 holds"),
        pytest.param(61, 30, 0, 0, Decision("send", 15, ""), id="difference 31 sends half"),
        pytest.param(61, 0, 30, 0, Decision("send", 15, ""), id="in flight to peer counts"),
        pytest.param(61, 0, 31, 0, Decision("hold", 0, ""), id="in flight makes it 30"),
        pytest.param(10, 0, 0, 30, Decision("send", 10, ""), id="sends only what it holds"),
        pytest.param(30, 61, 0, 0, Decision("hold", 0, ""), id="seed never asks"),
    ],
)
def test_seed_rule_threshold(
    local: int, remote: int, to_remote: int, from_remote: int, expected: Decision
) -> None:
    view = snap(node(local), node(remote), to_remote=to_remote, from_remote=from_remote)
    decision = decide("seed", view)
    assert (decision.action, decision.count) == (expected.action, expected.count)


@pytest.mark.parametrize(
    ("local", "remote", "expected"),
    [
        pytest.param(node(2, job_seconds=1.0), node(0, running=0, job_seconds=1.0), 1, id="fast"),
        pytest.param(node(2), node(0, running=0, throttle=0.02), 0, id="slow peer: keep it"),
        pytest.param(node(2, job_seconds=1.0), node(0, running=0), 2, id="much faster peer"),
    ],
)
def test_near_the_end_move_only_what_the_peer_finishes_first(
    local: NodeView, remote: NodeView, expected: int
) -> None:
    assert decide("sender", snap(local, remote)).count == expected


@pytest.mark.parametrize(
    ("local", "remote", "asked", "expected"),
    [
        pytest.param(node(200), node(0), 10, 10, id="no more than asked"),
        pytest.param(node(200), node(0), 500, 100, id="no more than the equalizing count"),
        pytest.param(node(10), node(200), 50, 0, id="we are lighter: giving makes us later"),
        pytest.param(node(100), node(100), 20, 0, id="balanced: nothing"),
        pytest.param(node(1), node(0, running=0, throttle=0.02), 1, 0, id="peer too slow"),
        pytest.param(node(40, throttle=0.0), node(0), 100, 40, id="stopped gives all it has"),
        pytest.param(node(200), node(0, throttle=0.0), 100, 0, id="peer stopped"),
        pytest.param(node(200), node(0), 0, 0, id="asked nothing"),
    ],
)
def test_grant(local: NodeView, remote: NodeView, asked: int, expected: int) -> None:
    assert grant(snap(local, remote), asked) == expected


def test_grant_rechecks_with_jobs_in_flight() -> None:
    """The peer asked from a stale view; 100 jobs we already sent it fill the gap."""
    assert grant(snap(node(100), node(0), to_remote=100), 50) == 0


views = st.builds(
    NodeView,
    queued=st.integers(0, 1_000),
    running=st.integers(0, 8),
    throttle=st.sampled_from([0.0, 0.1, 0.3, 1.0]),
    workers=st.integers(0, 8),
    job_seconds=st.one_of(st.none(), st.floats(0.001, 5.0)),
)


@given(views, views, st.integers(0, 2_000), st.floats(0.0, 5.0))
def test_grant_is_between_zero_and_asked_and_what_we_hold(
    local: NodeView, remote: NodeView, asked: int, age: float
) -> None:
    assert 0 <= grant(snap(local, remote, age=age), asked) <= min(asked, local.queued)


@pytest.mark.parametrize("policy", POLICIES)
@given(local=views, remote=views, age=st.floats(0.0, 5.0))
def test_decisions_are_well_formed(
    policy: Policy, local: NodeView, remote: NodeView, age: float
) -> None:
    decision = decide(policy, snap(local, remote, age=age), Params())
    assert (decision.count == 0) == (decision.action == "hold")
    if decision.action == "send":
        assert decision.count <= local.queued
        assert remote.throttle > 0 and remote.workers > 0
    if decision.action == "request":
        assert local.throttle > 0 and local.workers > 0


# Anything a STATE that passes peerstate's checks can hold, and the same for the local node.
bounded_views = st.builds(
    NodeView,
    queued=st.integers(0, MAX_JOBS),
    running=st.integers(0, MAX_JOBS),
    throttle=st.floats(0.0, 1.0),
    workers=st.integers(1, MAX_WORKERS),
    job_seconds=st.none() | st.floats(MIN_JOB_SECONDS, MAX_JOB_SECONDS),
)
bounded_snapshots = st.builds(
    Snapshot,
    local=bounded_views,
    remote=bounded_views,
    remote_age=st.floats(0.0, 1e6),
    in_flight_to_remote=st.integers(0, MAX_JOBS),
    in_flight_from_remote=st.integers(0, MAX_JOBS),
    requested=st.integers(0, MAX_JOBS),
    link=st.builds(Link, rtt=st.floats(1e-6, 60.0), bandwidth=st.floats(1.0, 1e12),
                   job_bytes=st.floats(1.0, 2.0**26)),
)


@given(bounded_snapshots, st.sampled_from(POLICIES), st.integers(0, 2**63))
@settings(max_examples=500, deadline=None)
def test_any_state_within_the_bounds_gets_a_decision_and_a_grant(
    snapshot: Snapshot, policy: Policy, asked: int
) -> None:
    decision = decide(policy, snapshot)
    most = snapshot.local.queued if decision.action == "send" else snapshot.remote.queued
    assert 0 <= decision.count <= most
    assert 0 <= grant(snapshot, asked) <= min(asked, snapshot.local.queued)
