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
