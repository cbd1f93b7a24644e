"""The job queue and the master's ledger."""

from __future__ import annotations

from loadbalancer.jobs import JobQueue, Ledger
from loadbalancer.wire import Role


def test_queue_runs_from_the_head_and_gives_from_the_tail() -> None:
    queue = JobQueue()
    for job in range(6):
        queue.push(job)
    assert queue.pop() == (0, None)
    assert [job for job, _ in queue.take_tail(2)] == [4, 5]
    queue.push_front(0, b"data")
    assert queue.ids() == [0, 1, 2, 3]
    assert queue.take_tail(10) == [(0, b"data"), (1, None), (2, None), (3, None)]
    assert len(queue) == 0


def test_a_result_counts_once_however_often_it_arrives() -> None:
    ledger = Ledger(3)
    assert ledger.record(1, b"first")
    assert not ledger.record(1, b"late copy from a dead session")
    assert ledger.results[1] == b"first"
    assert ledger.duplicates == 1
    assert not ledger.complete


def test_unfinished_jobs_of_a_node_are_what_is_taken_back() -> None:
    ledger = Ledger(5)
    ledger.assign([1, 2, 3], Role.SLAVE)
    ledger.record(2, b"done")
    assert ledger.unfinished(Role.SLAVE) == [1, 3]
    assert ledger.unfinished(Role.MASTER) == [0, 4]


def test_a_malformed_slave_trace_is_cleaned_not_trusted() -> None:
    from loadbalancer.master import checked_trace
    from loadbalancer.messages import Trace
    trace = Trace(
        samples=[{"t": 1.0, "pending": 3, "throttle": 1.0, "done": 0}, {"t": "soon"}, 7],
        events=[{"t": 1.0, "type": "throttle", "throttle": 0.5, "workers": 1},
                {"t": 2.0, "type": "throttle", "throttle": "fast"}, {"type": "joined"}],
        stats={"executed": 4, "retransmits": "many", "last_done": None,
               "dropped": {"bad_tag": 2, "x": "y"}, "compute_seconds": float("nan")})
    checked = checked_trace(trace)
    assert checked.samples == [trace.samples[0]]
    assert checked.events == [trace.events[0]]
    assert checked.stats == {"executed": 4, "dropped": {"bad_tag": 2}}
