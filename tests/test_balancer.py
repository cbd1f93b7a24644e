"""The balancer's rules, driven as data: stimuli, the node's view and a fake clock in,
instructions out. No sockets, no event loop."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from loadbalancer.adaptor import Link, NodeView
from loadbalancer.balancer import (
    REQUEST_TIMEOUT,
    Balancer,
    Instruction,
    JobsFinished,
    JobsReceived,
    JobsSent,
    Local,
    PeerJoined,
    PeerLost,
    RequestReceived,
    RunCopies,
    SendJobs,
    SendRequest,
    SendState,
    StateReceived,
    Stimulus,
    ThrottleChanged,
    Tick,
)

LINK = Link(rtt=0.001, bandwidth=1e9, job_bytes=100.0)


@dataclass(frozen=True)
class Peer:
    view: NodeView
    sent_jobs: int = 0
    received_jobs: int = 0


def node(queued: int = 0, running: int = 0, throttle: float = 1.0,
         balancing: bool = True) -> Local:
    return Local(NodeView(queued, running, throttle, 1, 0.1), LINK, balancing)


def peer(queued: int = 0, running: int = 0, throttle: float = 1.0, sent: int = 0,
         received: int = 0, elapsed: float | None = None) -> StateReceived:
    view = NodeView(queued, running, throttle, 1, 0.1, running_elapsed=elapsed)
    return StateReceived(Peer(view, sent, received))


# What an instruction looks like in a scenario: "state", ("jobs", count, request) with
# count "some" for any positive number, ("request", id, "some").
Shape = str | tuple[str, int | str, int | None] | tuple[str, int, int | str]


def shape(instruction: Instruction, expected: Shape) -> Shape:
    match instruction:
        case SendState():
            return "state"
        case SendJobs(count, _, request):
            some = isinstance(expected, tuple) and expected[1] == "some" and count > 0
            return ("jobs", "some" if some else count, request)
        case SendRequest(request, count, _):
            some = isinstance(expected, tuple) and expected[2] == "some" and count > 0
            return ("request", request, "some" if some else count)
    raise AssertionError(instruction)


Step = tuple[float, Stimulus, Local, list[Shape]]
JOINED: list[Step] = [(0.0, PeerJoined(), node(), ["state"])]
BUSY_HERE_IDLE_THERE: list[Step] = [*JOINED, (0.1, peer(), node(queued=100),
                                              [("jobs", "some", None)])]
ASKED: list[Step] = [*JOINED, (0.1, peer(queued=100), node(), [("request", 1, "some")])]

SCENARIOS: dict[str, list[Step]] = {
    "nothing before the peer's first state": [
        *JOINED, (0.1, Tick(), node(queued=100), []),
        (0.2, RequestReceived(7, 10), node(queued=100), [("jobs", 0, 7)])],
    "a busy node pushes to an idle peer": BUSY_HERE_IDLE_THERE,
    "an idle node asks a busy peer": ASKED,
    "no push while our own request is out": [
        *ASKED, (0.2, peer(queued=0), node(queued=100), []),
        (0.3, Tick(), node(queued=100), [])],
    "the answer closes the request": [
        *ASKED, (0.2, JobsReceived(40, 1), node(queued=40), []),
        (0.3, peer(queued=0), node(queued=100), [("jobs", "some", None)])],
    "a JOBS answering another request leaves ours open": [
        *ASKED, (0.2, JobsReceived(5, None), node(queued=5), []),
        (0.3, peer(queued=0), node(queued=100), [])],
    "an unanswered request is forgotten after the timeout": [
        *ASKED, (0.1 + REQUEST_TIMEOUT / 2, Tick(), node(), []),
        (0.2 + REQUEST_TIMEOUT, Tick(), node(), [("request", 2, "some")])],
    "no grant while jobs we pushed are on their way": [
        *JOINED, (0.1, peer(queued=0), node(queued=100, balancing=False), []),
        (0.2, JobsSent(30), node(queued=70), ["state"]),
        (0.3, RequestReceived(1, 20), node(queued=70), [("jobs", 0, 1)])],
    "a grant once the peer counted what we pushed": [
        *JOINED, (0.1, peer(queued=0), node(queued=100, balancing=False), []),
        (0.2, JobsSent(30), node(queued=70), ["state"]),
        (0.3, peer(queued=0, received=30), node(queued=70, balancing=False), []),
        (0.4, RequestReceived(1, 20), node(queued=70), [("jobs", 20, 1)])],
    "a node that is not balancing neither moves nor grants": [
        *JOINED, (0.1, peer(), node(queued=100, balancing=False), []),
        (0.2, RequestReceived(1, 20), node(queued=100, balancing=False), [("jobs", 0, 1)])],
    "a lost peer is sent nothing": [
        *JOINED, (0.1, PeerLost(), node(queued=100), []),
        (0.2, Tick(), node(queued=100), [])],
    "a new session starts its counters over": [
        *JOINED, (0.1, JobsSent(30), node(), ["state"]), (0.2, PeerJoined(), node(), ["state"]),
        (0.3, peer(queued=0, received=0), node(queued=0, balancing=False), []),
        (0.4, RequestReceived(1, 20), node(queued=70), [("jobs", 20, 1)])],
    "a finished job with work queued waits for the period": [
        *JOINED, (0.1, peer(queued=10), node(queued=10), []),
        (0.2, JobsFinished(first=False), node(queued=9), [])],
    "the first measured speed and an empty queue are told at once": [
        *JOINED, (0.1, JobsFinished(first=True), node(queued=9), ["state"]),
        (0.2, JobsFinished(first=False), node(queued=0), ["state"])],
    "a throttle change is told at once, and rebalanced on": [
        *JOINED, (0.1, peer(queued=10), node(queued=10), []),
        (0.2, ThrottleChanged(0.5), node(queued=10, throttle=0.5),
         ["state", ("jobs", "some", None)])],
    "a stopped node hands its whole queue away": [
        *JOINED, (0.1, peer(queued=10), node(queued=10), []),
        (0.2, ThrottleChanged(0.0), node(queued=10, throttle=0.0),
         ["state", ("jobs", 10, None)])],
    "a stopped peer is never sent work": [
        *JOINED, (0.1, peer(queued=0, throttle=0.0), node(queued=100), [])],
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario(name: str) -> None:
    balancer = Balancer("symmetric")
    for number, (now, stimulus, local, expected) in enumerate(SCENARIOS[name]):
        got = balancer.handle(stimulus, local, now)
        assert len(got) == len(expected), (number, stimulus, got)
        shapes = [shape(instruction, want)
                  for instruction, want in zip(got, expected, strict=True)]
        assert shapes == expected, (number, stimulus, got)


def test_an_empty_grant_says_why_in_numbers() -> None:
    """An empty answer is silent on both sides otherwise: the debug log is all there is."""
    balancer = Balancer("symmetric")
    balancer.handle(PeerJoined(), node(), 0.0)
    balancer.handle(peer(queued=10), node(queued=11), 0.1)
    [answer] = balancer.handle(RequestReceived(1, 5), node(queued=11), 0.1)
    assert answer == SendJobs(0, "it asked for 5", 1)
    assert balancer.last_decision is not None
    reason = balancer.last_decision.reason
    assert "asked for 5: grant 0 (moving " in reason and "B a job" in reason, reason


def test_counters_are_the_sessions_transfers() -> None:
    balancer = Balancer("symmetric")
    balancer.handle(PeerJoined(), node(), 0.0)
    balancer.handle(JobsSent(12), node(), 0.1)
    balancer.handle(JobsReceived(5, None), node(), 0.2)
    assert (balancer.sent_jobs, balancer.received_jobs) == (12, 5)
    balancer.handle(peer(sent=9, received=7), node(), 0.3)
    snapshot = balancer.snapshot(node(), 0.5)
    assert (snapshot.in_flight_to_remote, snapshot.in_flight_from_remote) == (5, 4)
    # The peer's state is aged from its arrival, plus half a round trip of travel.
    assert snapshot.remote_age == pytest.approx(0.2 + LINK.rtt / 2)


@pytest.mark.parametrize("policy, action", [("sender", SendJobs), ("receiver", None),
                                            ("none", None)])
def test_the_policy_decides_who_initiates(policy: str, action: type | None) -> None:
    balancer = Balancer(policy)  # type: ignore[arg-type]
    balancer.handle(PeerJoined(), node(), 0.0)
    got = balancer.handle(peer(), node(queued=100), 0.1)
    assert [type(instruction) for instruction in got] == ([action] if action else [])


def test_requests_are_numbered_per_session() -> None:
    balancer = Balancer("receiver")
    balancer.handle(PeerJoined(), node(), 0.0)
    first = balancer.handle(peer(queued=100), node(), 0.1)
    balancer.handle(PeerJoined(), node(), 0.2)
    again = balancer.handle(peer(queued=100), node(), 0.3)
    assert [i.request for i in first + again if isinstance(i, SendRequest)] == [1, 1]


def copier(queued: int = 0, running: int = 0, copying: int = 0, workers: int = 1) -> Local:
    return Local(NodeView(queued, running, 1.0, workers, 0.1), LINK, True, copying)


COPY_SCENARIOS: dict[str, tuple[StateReceived, Local, int]] = {
    # The slave's last job runs at throttle 0.1: a second there, a tenth of one here.
    "an idle master copies a slow slave's last job": (peer(running=1, throttle=0.1),
                                                      copier(), 1),
    "not while its own queue has work": (peer(running=1, throttle=0.1), copier(queued=1), 0),
    "not while the slave still has jobs to move": (peer(queued=3, running=1, throttle=0.1),
                                                  copier(), 0),
    "not when the slave's job ends sooner than a copy": (peer(running=1), copier(), 0),
    "not a job already copied": (peer(running=1, throttle=0.1),
                                 copier(running=1, copying=1, workers=2), 0),
    "one copy for each idle worker": (peer(running=3, throttle=0.1), copier(workers=2), 2),
    # At throttle 0.25 the slave's job takes 0.4 s, a copy here 0.1 s: it depends on how far
    # the slave's job has got, not on a guess of half-way.
    "a job the slave has just begun": (peer(running=1, throttle=0.25, elapsed=0.01),
                                       copier(), 1),
    "not a job the slave is about to end": (peer(running=1, throttle=0.25, elapsed=0.35),
                                            copier(), 0),
    "not a job that ran past its expected time": (peer(running=1, throttle=0.25, elapsed=2.0),
                                                  copier(), 0),
}


@pytest.mark.parametrize("name", COPY_SCENARIOS)
def test_copies_of_the_tail(name: str) -> None:
    state, local, count = COPY_SCENARIOS[name]
    balancer = Balancer("symmetric")
    balancer.handle(PeerJoined(), local, 0.0)
    got = balancer.handle(state, local, 0.1)
    assert [(type(i), i.count) for i in got if isinstance(i, RunCopies)] == \
        ([(RunCopies, count)] if count else [])


@pytest.mark.parametrize(("later", "copies"), [(0.05, [RunCopies]), (0.15, [])])
def test_a_copy_counts_the_time_since_the_slaves_state(later: float, copies: list[type]) -> None:
    balancer = Balancer("symmetric")
    balancer.handle(PeerJoined(), copier(), 0.0)
    # Its job had 0.2 s left when sampled: ample for a 0.1 s copy 0.05 s later, too little
    # 0.15 s later.
    state = peer(running=1, throttle=0.25, elapsed=0.2)
    assert balancer.handle(state, copier(running=1), 0.0) == []
    assert [type(i) for i in balancer.handle(Tick(), copier(), later)] == copies


def test_a_quiet_slave_is_copied_from_even_at_full_speed() -> None:
    balancer = Balancer("symmetric")
    balancer.handle(PeerJoined(), copier(), 0.0)
    assert balancer.handle(peer(running=1), copier(), 0.1) == []
    # No state for longer than stale_state: paused or hung, its job may never end.
    got = balancer.handle(Tick(), copier(), 0.1 + 2.5)
    assert [type(instruction) for instruction in got] == [RunCopies]


def test_the_baselines_make_no_copies() -> None:
    for policy in ("none", "seed"):
        balancer = Balancer(policy)  # type: ignore[arg-type]
        balancer.handle(PeerJoined(), copier(), 0.0)
        assert balancer.handle(peer(running=1, throttle=0.1), copier(), 0.1) == []


def test_a_slave_never_copies() -> None:
    balancer = Balancer("symmetric")
    balancer.handle(PeerJoined(), node(), 0.0)
    assert balancer.handle(peer(running=1, throttle=0.1), node(), 0.1) == []
