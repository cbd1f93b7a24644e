"""The peer's STATE: what the adaptor uses is bounded, what people see is checked."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ISSUE_STATES

from loadbalancer import messages
from loadbalancer.adaptor import POLICIES, Link, NodeView, Snapshot, decide, grant
from loadbalancer.peerstate import MAX_ELAPSED, MAX_JOB_SECONDS, MAX_JOBS, MAX_WORKERS, PeerState
from loadbalancer.wire import Rejected

STATE = {"throttle": 1.0, "job_seconds": 0.1, "workers": 2, "queued": 30, "running": 2,
         "sent_jobs": 5, "received_jobs": 4}
# Not measured yet: the model takes the peer's job time, as a master does before its first.
LOCAL = NodeView(queued=100, running=1, throttle=1.0, workers=2, job_seconds=None)


def acted_upon(body: bytes) -> PeerState:
    """What a node does with a STATE: check it, then run the adaptor on it."""
    state = PeerState.parse(messages.decode_state(body))
    snapshot = Snapshot(LOCAL, state.view, 0.1, 0, 0, 0, Link(0.002, 12.5e6, 1024.0))
    for policy in POLICIES:
        decide(policy, snapshot)
    grant(snapshot, 50)
    return state


@pytest.mark.parametrize("body", ISSUE_STATES.values(), ids=ISSUE_STATES.keys())
def test_the_issue_s_states_are_malformed_not_a_crash(body: bytes) -> None:
    with pytest.raises(Rejected) as caught:
        acted_upon(body)
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("change", [
    {"queued": MAX_JOBS + 1}, {"running": -1}, {"sent_jobs": 2**53}, {"received_jobs": 1.0},
    {"workers": 0}, {"workers": MAX_WORKERS + 1}, {"workers": True},
    {"throttle": 1.5}, {"throttle": -0.0001}, {"throttle": "1"},
    {"job_seconds": 0}, {"job_seconds": 1e-10}, {"job_seconds": MAX_JOB_SECONDS * 2},
    {"running_elapsed": -1e-9}, {"running_elapsed": MAX_ELAPSED * 2},
    {"running_elapsed": float("nan")}, {"running_elapsed": True},
], ids=str)
def test_a_number_the_adaptor_uses_out_of_bounds_is_malformed(change: dict[str, Any]) -> None:
    with pytest.raises(Rejected) as caught:
        acted_upon(messages.pack({**STATE, **change}))
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("change", [
    {"queued": MAX_JOBS, "running": MAX_JOBS, "workers": MAX_WORKERS, "job_seconds": 1e-9},
    {"queued": MAX_JOBS, "workers": 1, "job_seconds": MAX_JOB_SECONDS, "throttle": 5e-324},
    # Slower than a job in eleven days: stopped. Its finish time was infinite, inf - inf NaN.
    {"queued": 0, "running": 40, "throttle": 1e-308, "workers": 1, "job_seconds": None},
    {"queued": 1, "running": MAX_JOBS, "job_seconds": 1e-9, "running_elapsed": MAX_ELAPSED},
    {"queued": 2, "running": 1, "job_seconds": MAX_JOB_SECONDS, "throttle": 5e-324,
     "running_elapsed": 0.0},
], ids=str)
def test_the_adaptor_runs_on_the_bounds_edges(change: dict[str, Any]) -> None:
    assert acted_upon(messages.pack({**STATE, **change})).view.queued == \
        change["queued"]


def test_what_people_see_is_kept_only_when_well_formed() -> None:
    shown = {"phase": "x" * 201, "peer": "connected", "cpu": 1e300, "speed": 3, "eta": -1.0,
             "executed": True, "finished": 7, "total": None,
             "dropped": {"bad_tag": 2, "malformed": "many", "y" * 201: 1}}
    status = PeerState.parse(messages.decode_state(messages.pack(
        {**STATE, **shown}))).status
    assert {key: status[key] for key in shown} == {
        "phase": None, "peer": "connected", "cpu": None, "speed": 3, "eta": None,
        "executed": None, "finished": 7, "total": None, "dropped": {"bad_tag": 2}}
    assert status["queued"] == 30 and status["job_seconds"] == 0.1


def test_a_nodes_own_status_crosses_the_wire_and_parses_as_it_was() -> None:
    from loadbalancer.status import Status
    status = Status(role="slave", phase="processing", queued=3, running=1,
                    running_elapsed=0.125, executed=9, failed=0, throttle=0.5, workers=2,
                    cpu=50.0, speed=4.0, eta=1.0,
                    job_seconds=0.25, job_error=0.1, peer="connected", moved_out=1,
                    moved_in=2, bootstrap=5, retransmits=0, spurious=0, datagram=1472,
                    datagram_steps=0,
                    dropped={}, suppressed=0, bytes_sent=100, refused=0, policy="symmetric",
                    total=None, finished=7)
    body = messages.encode_state(status, sent_jobs=1, received_jobs=7, session_executed=9,
                                 session_compute=2.5)
    peer = PeerState.parse(messages.decode_state(body))
    assert (peer.view.queued, peer.view.running, peer.view.workers, peer.view.job_error,
            peer.view.running_elapsed) == (3, 1, 2, 0.1, 0.125)
    assert (peer.sent_jobs, peer.received_jobs) == (1, 7)
    assert {key: peer.status[key] for key in ("executed", "bootstrap", "finished", "datagram")} \
        == {"executed": 9, "bootstrap": 5, "finished": 7, "datagram": 1472}
