"""What the master keeps of the slave across sessions."""

from __future__ import annotations

import pytest

from loadbalancer import measure
from loadbalancer.trace import PeerHistory


def test_every_session_counts_and_adds_capacity_only_while_it_lasts() -> None:
    history = PeerHistory()
    history.sample(0.5)  # no session: nothing to draw
    history.joined(1.0)
    history.state(1.1, pending=40, throttle=1.0, workers=2, executed=0, compute=0.0)
    history.sample(1.2)
    history.state(2.0, pending=30, throttle=0.5, workers=2, executed=10, compute=1.0)
    history.delivered(12)  # it died before its next state said so
    history.lost(3.0)
    history.joined(4.0)
    history.state(4.1, pending=20, throttle=0.5, workers=2, executed=5, compute=0.4)
    assert [s.executed for s in history.sessions] == [12, 5]
    assert history.executed == 17 and history.compute == 1.4
    assert history.capacity_steps() == [(1.1, 2.0), (2.0, 1.0), (3.0, 0.0), (4.1, 1.0)]
    assert [(s["t"], s["pending"], s["session"]) for s in history.samples] == [
        (1.2, 40, 1), (3.0, 30, 1), (3.0, 0, 1)]
    assert [e["type"] for e in history.events] == ["joined", "throttle", "throttle", "lost",
                                                   "joined", "throttle"]
    # With the master at 1.0 from 0: 1.1 s alone, then 2.7 in 0.9 s at 3, then 0.6 s at 2.
    assert measure.ideal_makespan(5.0, 0.0, [[(0.0, 1.0)], history.capacity_steps()]) == \
        pytest.approx(2.6)
    # 9 s of work: 3.8 by 2.0, 5.8 by 3.0, 6.9 by 4.1 alone, then at 2: 4.1 + 1.05.
    assert measure.ideal_makespan(9.0, 0.0, [[(0.0, 1.0)], history.capacity_steps()]) == \
        pytest.approx(5.15)
