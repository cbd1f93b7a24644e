"""One node's status: what its dashboard, its metrics, ``lb status`` and the peer (in
STATE) are shown, as one typed object. ``messages.encode_state`` puts it on the wire;
``peerstate`` checks what a peer sent field by field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Status:
    role: str
    phase: str  # balancer.Phase
    queued: int
    running: int
    running_elapsed: float | None  # mean wall seconds the running jobs have run; None: none
    executed: int  # jobs computed here
    failed: int  # runs here that raised
    throttle: float
    workers: int
    cpu: float  # percent of one core, this process
    speed: float | None  # jobs/s at this throttle; None until measured
    eta: float | None  # seconds until this node runs dry at that speed
    job_seconds: float | None  # one job's compute at full speed (monitor.JobTimes)
    job_error: float  # its relative standard error
    peer: str  # waiting, connected, lost or left
    moved_out: int  # balancing moves, each way
    moved_in: int
    bootstrap: int  # the bootstrap's jobs, sent (master) or received (slave)
    retransmits: int
    spurious: int  # retransmissions whose original was acknowledged after all
    datagram: int | None  # the datagram size in use; None before the first session
    datagram_steps: int  # times the size stepped down
    dropped: dict[str, int]  # datagrams and messages dropped, by reason
    suppressed: int  # duplicates the reliable channel suppressed
    bytes_sent: int
    refused: int  # jobs refused (by the peer, or here)
    policy: str
    total: int | None = None  # the master's: jobs in the batch so far
    finished: int | None = None  # jobs with their outcome (master), results delivered (slave)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Counts(Protocol):
    """The counts of a node's jobs that its status shows and the master's summary adds up."""

    moved_out: int
    moved_in: int
    bootstrapped: int
    refused: int

    @property
    def failed_runs(self) -> int: ...
