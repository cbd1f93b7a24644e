"""The run's summary: what the master counted, and what the slave's trace said it
counted, as the one dict the master prints, writes with --result and puts in the trace.
A pure function of those counts: it reads them and changes nothing."""

from __future__ import annotations

from typing import Any, Protocol

from loadbalancer import measure
from loadbalancer.batch import Batch
from loadbalancer.config import Config
from loadbalancer.copies import Copies
from loadbalancer.jobs import Ledger
from loadbalancer.messages import Trace
from loadbalancer.monitor import Monitor
from loadbalancer.session import Connection
from loadbalancer.status import Counts
from loadbalancer.trace import PeerHistory, Recorder


class Counted(Counts, Protocol):
    """The master, as far as the summary reads it."""

    config: Config
    batch: Batch
    ledger: Ledger
    copies: Copies
    monitor: Monitor
    recorder: Recorder
    peer_history: PeerHistory
    connection: Connection
    slave_trace: Trace | None
    start: float
    last_done: float | None
    recovered: int


def summarise(master: Counted, makespan: float, error: str | None) -> dict[str, Any]:
    stats = master.slave_trace.stats if master.slave_trace else {}
    slave_executed, slave_compute = master.peer_history.work(stats)
    executed = {"master": master.monitor.executed, "slave": slave_executed}
    compute = master.monitor.compute_seconds + slave_compute
    runs = executed["master"] + executed["slave"]
    # The ideal does each job of this run once: not what the journal held (a resumed
    # run), nor results a slave brought from an earlier session, nor a job run twice
    # because a session died with its result.
    jobs = min(runs, master.ledger.finished - master.recovered)
    work = compute / runs * jobs if runs else 0.0
    ideal = measure.ideal_makespan(work, master.start, [master.recorder.capacity_steps(),
                                                        master.peer_history.capacity_steps()])
    dropped = master.connection.drops()
    for reason, count in dict(stats.get("dropped", {})).items():
        dropped[reason] = dropped.get(reason, 0) + int(count)
    ends = [t for t in (master.last_done, stats.get("last_done")) if isinstance(t, float)]
    return {
        "verified": error is None and not master.batch.failures.count, "error": error,
        "jobs": master.ledger.job_count,
        "makespan_s": round(makespan, 3), "ideal_s": round(ideal, 3),
        "ratio": round(makespan / ideal, 3) if ideal > 0 else None,
        "tail_s": round(max(ends) - min(ends), 3) if len(ends) == 2 else None,
        "executed": executed,
        "failed": {"count": master.batch.failures.count, "first": master.batch.failures.first,
                   "attempts_failed": master.failed_runs + int(stats.get("failed", 0))},
        "moved": {"to_slave": master.moved_out, "to_master": master.moved_in},
        "moved_again": master.ledger.moved_again,
        "copies": master.copies.summary(),
        "bootstrap": master.bootstrapped,
        "work_s": round(work, 3),  # the ideal's compute seconds at full speed
        "retransmits": master.connection.retransmits + int(stats.get("retransmits", 0)),
        "spurious": master.connection.spurious + int(stats.get("spurious", 0)),
        "datagram": {"master": master.connection.datagram_size,
                     "slave": stats.get("datagram")},
        "datagram_steps": master.connection.datagram_steps
        + int(stats.get("datagram_steps", 0)),
        "duplicates_suppressed": master.connection.suppressed + master.ledger.duplicates
        + int(stats.get("suppressed", 0)),
        "dropped": dropped, "refused": master.refused + int(stats.get("refused", 0)),
        "bytes_sent": master.connection.bytes_sent + int(stats.get("bytes_sent", 0)),
        "policy": master.config.policy, **master.batch.run(),
        "recovered": master.recovered,
    }
