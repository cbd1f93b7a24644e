"""The peer's STATE: what the adaptor uses is bounded, what people see is checked."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ISSUE_STATES

from loadbalancer import messages
from loadbalancer.adaptor import POLICIES, Link, NodeView, Snapshot, decide, grant
from loadbalancer.peerstate import MAX_JOB_SECONDS, MAX_JOBS, MAX_WORKERS, PeerState
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
], ids=str)
def test_a_number_the_adaptor_uses_out_of_bounds_is_malformed(change: dict[str, Any]) -> None:
    with pytest.raises(Rejected) as caught:
        acted_upon(messages.encode_state({**STATE, **change}))
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("change", [
    {"queued": MAX_JOBS, "running": MAX_JOBS, "workers": MAX_WORKERS, "job_seconds": 1e-9},
    {"queued": MAX_JOBS, "workers": 1, "job_seconds": MAX_JOB_SECONDS, "throttle": 5e-324},
    # Slower than a job in eleven days: stopped. Its finish time was infinite, inf - inf NaN.
    {"queued": 0, "running": 40, "throttle": 1e-308, "workers": 1, "job_seconds": None},
], ids=str)
def test_the_adaptor_runs_on_the_bounds_edges(change: dict[str, Any]) -> None:
    assert acted_upon(messages.encode_state({**STATE, **change})).view.queued == \
        change["queued"]


def test_what_people_see_is_kept_only_when_well_formed() -> None:
    shown = {"phase": "x" * 201, "peer": "connected", "cpu": 1e300, "speed": 3, "eta": -1.0,
             "executed": True, "finished": 7, "total": None,
             "dropped": {"bad_tag": 2, "malformed": "many", "y" * 201: 1}}
    status = PeerState.parse(messages.decode_state(messages.encode_state(
        {**STATE, **shown}))).status
    assert {key: status[key] for key in shown} == {
        "phase": None, "peer": "connected", "cpu": None, "speed": 3, "eta": None,
        "executed": None, "finished": 7, "total": None, "dropped": {"bad_tag": 2}}
    assert status["queued"] == 30 and status["job_seconds"] == 0.1
