"""The job queue and the master's ledger."""

from __future__ import annotations

from typing import Any

from loadbalancer.jobs import JobQueue, Ledger, Parcel, Queued
from loadbalancer.messages import WorkloadSpec
from loadbalancer.tasks import WorkloadTask
from loadbalancer.wire import Role
from loadbalancer.workload import create

A = WorkloadTask(WorkloadSpec("vector", {"elements": 8, "jobs": 8}), create("vector", {
    "elements": 8, "jobs": 8}))
B = WorkloadTask(WorkloadSpec("vector", {"elements": 16, "jobs": 8}), create("vector", {
    "elements": 16, "jobs": 8}))


def entries(parcels: list[Parcel]) -> list[Queued]:
    return [(job, parcel.task, parcel.input(job)) for parcel in parcels for job in parcel.jobs]


def test_queue_runs_from_the_head_and_gives_from_the_tail() -> None:
    queue = JobQueue()
    for job in range(6):
        queue.push(job, A)
    assert queue.pop() == (0, A, None)
    assert [job for job, _, _ in entries(queue.take_tail(2, lambda task: True))] == [4, 5]
    queue.push_front(0, A, b"data")
    assert queue.ids() == [0, 1, 2, 3]
    assert entries(queue.take_tail(10, lambda task: True)) == [
        (0, A, b"data"), (1, A, None), (2, A, None), (3, A, None)]
    assert len(queue) == 0


def test_only_jobs_the_peer_can_run_are_given() -> None:
    queue = JobQueue()
    for job in range(6):
        queue.push(job, A if job % 2 else B)
    taken = queue.take_tail(2, lambda task: task is A)
    assert [(job, task) for job, task, _ in entries(taken)] == [(3, A), (5, A)]
    assert len(taken) == 1  # one parcel of one task, though the jobs were not neighbours
    assert queue.ids() == [0, 1, 2, 4]
    assert queue.peek() is B
    assert queue.remove(2) and not queue.remove(2)
    assert queue.ids() == [0, 1, 4]


def test_an_outcome_counts_once_however_often_it_arrives() -> None:
    ledger = Ledger(3)
    assert ledger.record(1)
    assert not ledger.record(1)  # a late copy from a dead session
    assert ledger.is_done(1) and not ledger.is_done(0)
    assert ledger.duplicates == 1
    assert not ledger.complete
    ledger.record(0)
    ledger.record(2)
    assert ledger.complete and ledger.finished == 3


def test_the_ledger_grows_and_counts_failed_attempts() -> None:
    ledger = Ledger()
    assert ledger.complete
    assert ledger.add(2) == range(0, 2)
    assert ledger.add(3) == range(2, 5)
    assert ledger.job_count == 5 and 4 in ledger and 5 not in ledger and -1 not in ledger
    assert [ledger.failed(3), ledger.failed(3)] == [1, 2]
    ledger.record(3)
    assert ledger.failed_attempts == {}  # final: nothing more to count
    assert ledger.owner(4) is Role.MASTER


def test_unfinished_jobs_of_a_node_are_what_is_taken_back() -> None:
    ledger = Ledger(5)
    ledger.assign([1, 2, 3], Role.SLAVE)
    ledger.record(2)
    assert list(ledger.unfinished(Role.SLAVE)) == [1, 3]
    assert list(ledger.unfinished(Role.MASTER)) == [0, 4]


def test_the_ledger_counts_each_jobs_moves() -> None:
    ledger = Ledger(4)
    ledger.mark_moved([1, 2])
    ledger.mark_moved([2])  # there and back again
    assert [ledger.moves(job) for job in range(4)] == [0, 1, 2, 0]
    assert ledger.moved(1) and not ledger.moved(0)
    assert ledger.moved_again == 1
    ledger.mark_moved([3] * 300)
    assert ledger.moves(3) == 255 and ledger.moved_again == 2  # saturates, a byte a job


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


def test_a_slave_trace_s_numbers_out_of_bounds_are_left_out() -> None:
    from loadbalancer.master import checked_trace
    from loadbalancer.messages import Trace
    good = {"t": 1.7e9, "pending": 3, "throttle": 1.0, "done": 0}
    trace = Trace(
        samples=[good, {**good, "pending": 2**60}, {**good, "throttle": 2.0},
                 {**good, "t": -5.0}],
        events=[{"t": 1.7e9, "type": "throttle", "throttle": 0.5, "workers": 10**19},
                {"t": 1.7e9, "type": "throttle", "throttle": -1, "workers": 2},
                {"t": 1.7e9, "type": "x" * 201}, {"t": 1e300, "type": "joined"}],
        stats={"executed": 10**19, "compute_seconds": -1.0, "bytes_sent": 8,
               "dropped": {"bad_tag": 10**19, "stale_session": 1}})
    checked = checked_trace(trace)
    assert checked.samples == [good]
    assert checked.events == []
    assert checked.stats == {"bytes_sent": 8, "dropped": {"stale_session": 1}}
    many = Trace([], [], {"dropped": {str(n): n for n in range(65)}})  # more than a node counts
    assert checked_trace(many).stats == {"dropped": {}}


def test_the_queue_behaves_as_an_ordered_dict_under_any_sequence_of_operations() -> None:
    """Runs, lazy removal and rebuilding are an implementation; the order is the contract."""
    import collections
    import random

    rng = random.Random(7)
    for _ in range(200):
        queue, model = JobQueue(), collections.OrderedDict[int, tuple[Any, bytes | None]]()
        for _ in range(60):
            job, task = rng.randrange(20), rng.choice((A, B))
            data = rng.choice((None, bytes([job])))
            match rng.randrange(6):
                case 0 | 1:
                    queue.push(job, task, data)
                    model[job] = (model[job][0], data) if job in model else (task, data)
                case 2:
                    queue.push_front(job, task, data)
                    model.pop(job, None)
                    model[job] = (task, data)
                    model.move_to_end(job, last=False)
                case 3:
                    assert queue.remove(job) == (model.pop(job, None) is not None)
                case 4 if model:
                    head, (task, data) = model.popitem(last=False)
                    assert queue.peek() is task
                    assert queue.pop() == (head, task, data)
                case 5:
                    count = rng.randrange(4)
                    wanted = [j for j in reversed(model) if model[j][0] is A][:count]
                    assert entries(queue.take_tail(count, lambda t: t is A)) == [
                        (j, *model.pop(j)) for j in reversed(wanted)]
            assert queue.ids() == list(model) and len(queue) == len(model)
            assert all((job in queue) == (job in model) for job in range(20))


def test_a_million_queued_jobs_of_one_task_are_one_run() -> None:
    queue = JobQueue()
    for job in range(1_000_000):
        queue.push(job, A)
    queue.remove(10)
    assert len(queue._runs) == 1 and len(queue) == 999_999
    assert [job for job, _, _ in entries(queue.take_tail(3, lambda task: True))] == [
        999_997, 999_998, 999_999]
    assert [queue.pop()[0] for _ in range(11)] == [*range(10), 11]
