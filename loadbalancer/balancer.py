"""The balancing protocol around the adaptor's policies, as a state machine without I/O.

The adaptor (:mod:`adaptor`) answers "who should move how many jobs now" from one snapshot.
Around it sit the rules that make its answers safe to act on: the session's transfer
counters (what is in flight each way), request ids and their timeout, no push while our own
request is out, no grant while jobs we pushed are on their way, and when to tell the peer
our state at once. They live here, shaped like dask's ``WorkerState`` and aioquic's
``QuicConnection``: :meth:`Balancer.handle` takes one stimulus, the node's own view and
``now``, and returns instructions; nothing here reads a clock, sends or awaits. The node
(:mod:`node`) feeds it and carries the instructions out; the simulator
(``benchmarks/simulate.py``) drives this same class in virtual time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from loadbalancer import adaptor
from loadbalancer.adaptor import Link, NodeView, Params, Policy

# A request unanswered this long is forgotten: its answer was lost with a session, or the
# peer is too busy to grant; a new decision may ask again.
REQUEST_TIMEOUT = 2.0
# The policies that run the model; the baselines (none, seed) make no copies either.
MODELLED = ("sender", "receiver", "symmetric")


class Phase(enum.StrEnum):
    """Where a node is in a run; its string is what status and STATE carry."""

    WAITING = "waiting"  # a slave without a batch
    PROCESSING = "processing"
    AGGREGATING = "aggregating"  # the master holds every result and checks the whole
    DONE = "done"


class Remote(Protocol):
    """The peer's last STATE as the balancer needs it (:class:`peerstate.PeerState`)."""

    @property
    def view(self) -> NodeView: ...

    @property
    def sent_jobs(self) -> int: ...  # jobs it sent us in this session

    @property
    def received_jobs(self) -> int: ...  # jobs it received from us in this session


@dataclass(frozen=True, slots=True)
class Local:
    """The node as it is when a stimulus arrives."""

    view: NodeView
    link: Link
    balancing: bool  # processing, and the session moves jobs at all
    copying: int | None = None  # copies of the peer's jobs under way here; None: cannot copy


# ---- stimuli ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PeerJoined:
    """A session began: both sides' counters start from zero."""


@dataclass(frozen=True, slots=True)
class PeerLost:
    """The session ended; the last state stays known (the peer shows as lost, not waiting)."""


@dataclass(frozen=True, slots=True)
class StateReceived:
    remote: Remote


@dataclass(frozen=True, slots=True)
class JobsSent:
    """``count`` jobs left this node for the peer (a move, an answer or the bootstrap)."""

    count: int


@dataclass(frozen=True, slots=True)
class JobsReceived:
    count: int
    request: int | None  # the request this JOBS answers, if any


@dataclass(frozen=True, slots=True)
class RequestReceived:
    request: int
    count: int


@dataclass(frozen=True, slots=True)
class ThrottleChanged:
    throttle: float


@dataclass(frozen=True, slots=True)
class JobsFinished:
    """Jobs ended here; ``first`` when they gave this node its first measured speed."""

    first: bool


@dataclass(frozen=True, slots=True)
class Tick:
    """The period passed: decide again on what is known."""


Stimulus = (PeerJoined | PeerLost | StateReceived | JobsSent | JobsReceived | RequestReceived
            | ThrottleChanged | JobsFinished | Tick)


# ---- instructions -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendJobs:
    """Move up to ``count`` jobs from the queue's tail to the peer; with ``request``, answer
    that request (even with none)."""

    count: int
    why: str  # in words, "{peer}" standing for the peer's role
    request: int | None = None


@dataclass(frozen=True, slots=True)
class SendRequest:
    request: int
    count: int
    why: str


@dataclass(frozen=True, slots=True)
class SendState:
    """Tell the peer our state now rather than at the next period."""


@dataclass(frozen=True, slots=True)
class RunCopies:
    """Run a copy of ``count`` of the jobs the peer is running (the first result wins)."""

    count: int
    why: str


Instruction = SendJobs | SendRequest | SendState | RunCopies


@dataclass(frozen=True, slots=True)
class _Pending:
    request: int
    count: int
    since: float


class Balancer:
    def __init__(self, policy: Policy, params: Params | None = None,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.policy = policy
        self.params = params or Params()
        self.request_timeout = request_timeout
        self.connected = False
        self.remote: Remote | None = None
        self.remote_at = 0.0
        self.last_decision: adaptor.Decision | None = None  # for the debug log
        self._session()

    def _session(self) -> None:
        # Per session, so both sides' cumulative counts start together and their
        # difference is what is in flight.
        self.sent_jobs = self.received_jobs = 0
        self.requested: _Pending | None = None
        self._next_request = 1

    def handle(self, stimulus: Stimulus, local: Local, now: float) -> list[Instruction]:
        match stimulus:
            case PeerJoined():
                self._session()
                self.connected, self.remote = True, None
                return [SendState()]
            case PeerLost():
                self.connected = False
                return []
            case StateReceived(remote):
                self.remote, self.remote_at = remote, now
            case JobsSent(count):
                # Until the peer hears our queue without them, it sees these jobs twice:
                # in our last state and on their way to it, and asks for them again.
                self.sent_jobs += count
                return [SendState()] if count else []
            case JobsReceived(count, request):
                self.received_jobs += count
                if self.requested is not None and request == self.requested.request:
                    self.requested = None
                return []
            case RequestReceived(request, count):
                return [SendJobs(self._grant(count, local, now), f"it asked for {count}",
                                 request)]
            case ThrottleChanged():
                return [SendState(), *self._adapt(local, now)]
            case JobsFinished(first):
                # The peer's model needs our first measured speed, and an empty queue is
                # news that should not wait for the period.
                if not first and local.view.queued:
                    return []
                return [SendState(), *self._adapt(local, now)]
            case Tick():
                pass
        return self._adapt(local, now)

    def snapshot(self, local: Local, now: float) -> adaptor.Snapshot:
        assert self.remote is not None
        remote = self.remote
        return adaptor.Snapshot(
            local=local.view, remote=remote.view,
            remote_age=now - self.remote_at + local.link.rtt / 2,
            in_flight_to_remote=max(0, self.sent_jobs - remote.received_jobs),
            in_flight_from_remote=max(0, remote.sent_jobs - self.received_jobs),
            requested=0 if self.requested is None else self.requested.count, link=local.link)

    def _grant(self, asked: int, local: Local, now: float) -> int:
        """How many of the jobs the peer asked for to send. Without the asker's state there
        is nothing to weigh, and while jobs we pushed are on their way the asker did not
        count them: an empty answer closes the request and it asks again later."""
        if self.remote is None or not local.balancing:
            return 0
        snapshot = self.snapshot(local, now)
        if snapshot.in_flight_to_remote:
            return 0
        self.last_decision = adaptor.grant_decision(snapshot, max(0, asked), self.params)
        return self.last_decision.count

    def _adapt(self, local: Local, now: float) -> list[Instruction]:
        if self.remote is None or not self.connected or not local.balancing:
            return []
        if self.requested is not None and now - self.requested.since > self.request_timeout:
            self.requested = None
        snapshot = self.snapshot(local, now)
        decision = adaptor.decide(self.policy, snapshot, self.params)
        if decision.action == "hold" and local.copying is not None and self.policy in MODELLED:
            copies = adaptor.copies(snapshot, local.copying, self.params)
            decision = copies if copies.action == "copy" else decision
        self.last_decision = decision
        if decision.count <= 0:
            return []
        if decision.action == "copy":
            return [RunCopies(decision.count, decision.why)]
        if decision.action == "send":
            if self.requested is not None:
                return []  # we asked for work ourselves: wait for the answer before giving any
            return [SendJobs(decision.count, decision.why)]
        if decision.action == "request":
            self.requested = _Pending(self._next_request, decision.count, now)
            self._next_request += 1
            return [SendRequest(self.requested.request, decision.count, decision.why)]
        return []
