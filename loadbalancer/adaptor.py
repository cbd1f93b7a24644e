"""Transfer policies: who moves how many jobs, as pure functions of a snapshot (DESIGN.md 4).

Nothing here reads a clock or touches the network: the state manager builds a `Snapshot`
every period and acts on the returned `Decision`; the transfer manager calls `grant` when
the peer's REQUEST arrives. The simulator (benchmarks/simulate.py) runs this same code.

Model: node i drains r_i = w_i * t_i / c_i jobs/s and runs dry after
T_i = (queued_i + in-flight-to-i + running_i * left_i) / r_i, where left_i is the share of a job
its running ones still need (from how long they have run; half a job when not told), but
no sooner than its queue's last
wave of whole jobs (ceil(queued_i / w_i) * c_i / t_i); the peer's T less the state's age.
Moving k jobs from i to j gives T_i' = T_i(queued_i - k) and
T_j' = max(T_j(queued_j + k), arrival + ceil(k / w_j) * c_j / t_j): the receiver cannot finish
the moved work before one whole job after it lands, which is what stops near-the-end moves to
a slow or far peer. The best k equalizes T_i' and T_j'. A node makes the move when it saves
more than what noise could fake (see `_margin`: `confidence` standard errors of the gap
between T_i and T_j, from the measured spread and drift of both job-time estimates, and the
hysteresis share of max(T_i, T_j), both scaled by the receiver's share of the speed) plus
half its cost (transfer + rtt + state age), dask stealing's halved margin, and k >= min_batch;
and not before the receiver would run dry within `lookahead` seconds of the jobs landing
(until then both stay busy, and a later decision sees truer speeds).

Defaults from `python -m benchmarks.simulate --sweep`, the real Balancer and JobTimes in
virtual time (its table is in the README's Balancing section).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeGuard

Policy = Literal["none", "sender", "receiver", "symmetric", "seed"]
POLICIES: tuple[Policy, ...] = ("none", "sender", "receiver", "symmetric", "seed")
Action = Literal["hold", "send", "request", "copy"]

# A running job of unknown progress is on average half done: it counts for half a job.
RUNNING_SHARE = 0.5
# What a job that has run past its expected time still counts for: it ends any moment now,
# as far as the mean can tell (a long job's copy would be as long, so none is made).
OVERRUN_SHARE = 0.05
# Jobs/s below which a node counts as stopped: one job in eleven days. A positive rate
# however small (a throttle of 1e-300) made finish times infinite, and inf - inf is NaN;
# from this rate up, with peerstate's bounds on the rest, every time the model takes is finite.
MIN_RATE = 1e-6
# The relative error of a job time a node has not measured itself (the peer's, or the
# default, stands in): another machine's figure may be off by half. Until a node has
# measured, only a move that would pay at that error is made (feeding an idle node is).
BORROWED_ERROR = 0.5


@dataclass(frozen=True, slots=True)
class NodeView:
    queued: int  # jobs waiting in the queue (not running)
    running: int  # jobs being computed now
    throttle: float  # duty cycle 0..1
    workers: int  # worker threads
    job_seconds: float | None  # EWMA of one job's compute seconds at throttle 1; None: unmeasured
    job_error: float = 0.0  # relative standard error of job_seconds (monitor.JobTimes.error)
    # Mean wall seconds the running jobs have run; None: unknown (each counts as half done).
    running_elapsed: float | None = None


@dataclass(frozen=True, slots=True)
class Link:
    rtt: float  # seconds, smoothed
    bandwidth: float  # bytes/s, measured or a default
    job_bytes: float  # mean bytes on the wire per job, after compression


@dataclass(frozen=True, slots=True)
class Snapshot:
    local: NodeView
    remote: NodeView
    remote_age: float  # seconds since the peer sampled `remote`
    in_flight_to_remote: int  # jobs we sent that `remote` does not reflect yet
    in_flight_from_remote: int  # jobs the peer sent that we have not received yet
    requested: int  # jobs we asked for and got no answer for yet
    link: Link


@dataclass(frozen=True, slots=True)
class Params:
    # Smallest move worth a message; larger batches only lengthened the tail (module doc).
    min_batch: int = 1
    # Share of the predicted finish time a move must save (scaled by the receiver's share of
    # the speed, see `_margin`), on top of the noise term: the model's own error (whole
    # jobs, the running ones' remainder, a state's age).
    hysteresis: float = 0.05
    # Standard errors of the predicted gap between the finish times that a move must clear:
    # at 2 the measured noise in the job-time estimates alone moves a job one time in 40.
    confidence: float = 2.0
    # The seed system's rule: move when queue lengths differ by more than this.
    seed_threshold: int = 30
    # Compute seconds of one job when neither node has measured one yet.
    default_job_seconds: float = 0.1
    # A peer state older than this says the peer may have stopped (paused, hung): its
    # running jobs are then no nearer their end than when they began.
    stale_state: float = 2.0
    # A move waits until the receiver would run dry within this many seconds (beyond the
    # move's own delivery): while both nodes stay busy an imbalance costs nothing yet, and
    # a later decision (three state periods later at the default) sees truer speeds. Early
    # moves on young estimates were most of the churn between nodes of one speed.
    lookahead: float = 1.5


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    count: int  # jobs to send or request, 0 for hold
    reason: str  # the numbers that led to the decision (the debug log)
    # The same in words, for people, "{peer}" standing for the peer's role: "the {peer}
    # would finish 1.6s after this node; both about 11.0s then".
    why: str = ""


@dataclass(frozen=True, slots=True)
class _Side:
    """One node as the model sees it."""

    pending: float  # jobs of work left: queued, arriving, and the running ones' remainder
    queued: int  # whole jobs waiting: queued and arriving
    movable: int  # queued jobs that could be taken from the tail now
    rate: float  # jobs/s
    workers: int
    job_time: float  # wall seconds one worker needs for one job at the current throttle
    age: float  # seconds the view is old
    error: float  # relative standard error of the job time it is predicted with
    running_left: float  # wall seconds the running jobs still need, on average, when sampled

    def finish(self, delta: int = 0) -> float:
        """Seconds from now until it runs dry with `delta` jobs more (or fewer)."""
        if self.rate <= 0:
            return math.inf
        fluid = (self.pending + delta) / self.rate
        # Near the end whole jobs matter: 5 jobs on 4 workers take two job times, not 1.25.
        waves = math.ceil(max(self.queued + delta, 0) / self.workers) * self.job_time
        # The peer kept working while its state travelled: age its prediction to now.
        return max(fluid, waves, self.age) - self.age

    @property
    def drain(self) -> float:
        return self.finish()


@dataclass(frozen=True, slots=True)
class _Move:
    count: int
    dst_share: float  # the receiver's share of the pair's speed
    src_before: float
    dst_before: float
    src_after: float
    dst_after: float
    gap_error: float  # standard error of src_before - dst_before, seconds

    @property
    def before(self) -> float:
        return max(self.src_before, self.dst_before)

    @property
    def gain(self) -> float:
        return self.before - max(self.src_after, self.dst_after)


def _known(seconds: float | None) -> TypeGuard[float]:
    return seconds is not None and seconds > 0


def _seconds(node: NodeView, fallback: float) -> float:
    return node.job_seconds if _known(node.job_seconds) else fallback


def speed(node: NodeView, default_job_seconds: float) -> float:
    """Jobs per second the node drains at its current throttle."""
    return node.workers * node.throttle / _seconds(node, default_job_seconds)


def _side(node: NodeView, peer: NodeView, arriving: int, age: float, params: Params) -> _Side:
    # Both nodes run the same jobs: the peer's measurement beats a guess.
    seconds = _seconds(node, _seconds(peer, params.default_job_seconds))
    error = node.job_error if _known(node.job_seconds) else BORROWED_ERROR
    rate = speed(node, seconds)
    if rate < MIN_RATE:
        rate = 0.0
    job_time = seconds / node.throttle if rate > 0 else math.inf
    queued = node.queued + arriving
    share = _running_share(node.running_elapsed, job_time)
    pending = queued + share * node.running
    return _Side(pending, queued, node.queued, rate, node.workers, job_time, age, error,
                 share * job_time)


def _running_share(elapsed: float | None, job_time: float) -> float:
    """The share of a job the running ones still need: from how long they have run when
    the node says (a job sampled as it starts is not half done, and a copy of it pays off
    for much longer than one sampled near its end), or half when it does not."""
    if elapsed is None or not math.isfinite(job_time):
        return RUNNING_SHARE
    return max(OVERRUN_SHARE, 1.0 - elapsed / job_time)


def _sides(snap: Snapshot, params: Params) -> tuple[_Side, _Side]:
    local = _side(snap.local, snap.remote, snap.in_flight_from_remote, 0.0, params)
    remote = _side(snap.remote, snap.local, snap.in_flight_to_remote, snap.remote_age, params)
    return local, remote


def _evaluate(src: _Side, dst: _Side, count: int, latency: float, per_job: float) -> _Move:
    dst_after = dst.finish(count)
    if count > 0:
        landed = latency + count * per_job
        dst_after = max(dst_after, landed + math.ceil(count / dst.workers) * dst.job_time)
    share = dst.rate / (src.rate + dst.rate)
    gap_error = math.hypot(src.drain * src.error, dst.drain * dst.error)
    return _Move(count, share, src.drain, dst.drain, src.finish(-count), dst_after, gap_error)


def _best_move(src: _Side, dst: _Side, latency: float, link: Link) -> _Move:
    """The count where the sender's falling finish meets the receiver's rising one."""
    per_job = link.job_bytes / link.bandwidth
    inverse = 1 / src.rate + 1 / dst.rate
    behind_queue = (src.drain - dst.drain) / inverse  # receiver busy when the jobs land
    behind_transfer = (src.drain - latency) / (inverse + per_job)  # receiver idle until then
    estimate = max(0, min(src.movable, math.floor(min(behind_queue, behind_transfer))))
    # Whole-job waves shift the best count by up to a wave either way.
    wave = max(src.workers, dst.workers)
    counts = range(max(0, estimate - wave), min(src.movable, estimate + wave) + 1)
    moves = [_evaluate(src, dst, k, latency, per_job) for k in counts]
    return max(moves, key=lambda move: (move.gain, -move.count))


def _delivery(move: _Move, link: Link) -> float:
    """Seconds from deciding a move to its jobs landing: a request's round trip and the
    transfer."""
    return link.rtt + move.count * link.job_bytes / link.bandwidth


def _half_cost(move: _Move, snap: Snapshot) -> float:
    """Half of what a move costs: transfer, rtt and the state's age (dask's halved margin).

    The gain already counts the delivery delay and a whole job at the receiver, so a positive
    gain means the receiver finishes the moved jobs before the sender would (near-end rule).
    """
    link = snap.link
    return (move.count * link.job_bytes / link.bandwidth + link.rtt + snap.remote_age) / 2


def _margin(move: _Move, snap: Snapshot, params: Params) -> float:
    """What a move must save to be made: what noise could fake, plus half its cost.

    Equalizing two finish times gains their gap times the receiver's share of the pair's
    speed, so an error in the gap fakes a gain that much smaller: the margin is that share of
    `confidence` standard errors of the gap (from the job-time estimates' measured spread)
    and of the hysteresis (x2: equal nodes use it as is). A plain fraction of T would never
    feed a peer slower than h / (1 - h) of us.
    """
    noise = params.confidence * move.gap_error + 2 * params.hysteresis * move.before
    return move.dst_share * noise + _half_cost(move, snap)


def _push(snap: Snapshot, local: _Side, remote: _Side) -> _Move | None:
    """The best send, when we would run dry last."""
    if local.drain <= remote.drain:
        return None
    return _best_move(local, remote, snap.link.rtt / 2, snap.link)


def _pull(snap: Snapshot, local: _Side, remote: _Side) -> _Move | None:
    """The best request, when the peer would run dry last and no request is pending."""
    if snap.requested > 0 or remote.drain <= local.drain:
        return None
    # A REQUEST crosses the link before the jobs do: a whole rtt before they land.
    return _best_move(remote, local, snap.link.rtt, snap.link)


def _drain_rule(snap: Snapshot, local: _Side, remote: _Side) -> Decision | None:
    """Under every policy: a stopped node hands its queue away and is never sent work."""
    if local.rate == 0 and remote.rate == 0:
        return Decision("hold", 0, "both nodes stopped")
    if local.rate == 0:
        queued = snap.local.queued
        if queued == 0:
            return Decision("hold", 0, "stopped, nothing queued")
        return Decision("send", queued, f"stopped: send all {queued}",
                        "this node is stopped (throttle 0)")
    if remote.rate == 0:
        return Decision("hold", 0, "peer stopped: it drains to us, never send to it")
    return None


def _seed(snap: Snapshot, params: Params) -> Decision:
    """The seed system: send half the queue difference when it exceeds the threshold."""
    mine = snap.local.queued + snap.in_flight_from_remote
    theirs = snap.remote.queued + snap.in_flight_to_remote
    queues = f"queues {mine}/{theirs}"
    if mine - theirs <= params.seed_threshold:
        return Decision("hold", 0, f"{queues}: within {params.seed_threshold}")
    count = min((mine - theirs) // 2, snap.local.queued)
    return Decision("send", count, f"{queues}: send {count}",
                    f"the queues differ by {mine - theirs} jobs, more than "
                    f"{params.seed_threshold}")


def _balance(
    policy: Policy, snap: Snapshot, params: Params, local: _Side, remote: _Side
) -> Decision:
    """The model's decision for the initiating policies (and hold for `none`)."""
    candidates: list[tuple[Action, _Move | None]] = []
    if policy in ("sender", "symmetric"):
        candidates.append(("send", _push(snap, local, remote)))
    if policy in ("receiver", "symmetric"):
        candidates.append(("request", _pull(snap, local, remote)))
    notes: list[str] = [policy]
    for action, move in candidates:
        if move is None or move.count == 0:
            continue
        due = params.lookahead + _delivery(move, snap.link)
        if move.dst_before > due:
            notes.append(f"{action} {move.count} waits: the receiver is busy for "
                         f"{move.dst_before:.2f}s, >{due:.2f}s")
            continue
        margin = _margin(move, snap, params)
        if move.count >= params.min_batch and move.gain > margin:
            after = (move.src_after, move.dst_after)
            mine, theirs = after if action == "send" else after[::-1]
            reason = f"{action} {move.count} (after: {mine:.2f}s/{theirs:.2f}s)"
            late = move.src_before - move.dst_before
            why = (f"this node would finish {late:.1f}s after the {{peer}}" if action == "send"
                   else f"the {{peer}} would finish {late:.1f}s after this node")
            return Decision(action, move.count, reason, f"{why}; both about {theirs:.1f}s then"
                            if action == "request" else f"{why}; both about {mine:.1f}s then")
        notes.append(
            f"{action} {move.count} would save {move.gain:.2f}s,"
            f" needs >{margin:.2f}s and >={params.min_batch} jobs"
        )
    if snap.requested > 0 and policy in ("receiver", "symmetric"):
        notes.append(f"awaiting {snap.requested} requested")
    return Decision("hold", 0, f"hold ({'; '.join(notes)})")


def decide(policy: Policy, snap: Snapshot, params: Params = Params()) -> Decision:
    """What this node does now about the balance with its peer."""
    local, remote = _sides(snap, params)
    decision = _drain_rule(snap, local, remote)
    if decision is None and policy == "seed":
        decision = _seed(snap, params)
    if decision is None:
        decision = _balance(policy, snap, params, local, remote)
    head = f"T_local={local.drain:.2f}s T_remote={remote.drain:.2f}s"
    return Decision(decision.action, decision.count, f"{head}: {decision.reason}",
                    decision.why)


def copies(snap: Snapshot, copying: int, params: Params = Params()) -> Decision:
    """How many of the peer's running jobs to run a copy of here (speculative execution of
    the tail, as MapReduce's backup tasks), ``copying`` being those already copied.

    Only once no real work is left to move (our queue and the peer's empty, nothing in
    flight), on idle workers, and only when a copy started now ends sooner than the peer's
    job is expected to: what its job time at its throttle leaves of the job after the time
    it had run when its state was sampled, or never if it stopped or its state has gone
    stale.
    """
    local, remote = _sides(snap, params)
    idle = snap.local.workers - snap.local.running - snap.local.queued
    candidates = snap.remote.running - copying
    if idle <= 0 or candidates <= 0 or snap.remote.queued or snap.in_flight_to_remote \
            or snap.in_flight_from_remote or local.rate == 0:
        return Decision("hold", 0, "no copies: work to move, or no idle worker")
    stale = snap.remote_age > params.stale_state or remote.rate == 0
    remaining = math.inf if stale else remote.running_left - snap.remote_age
    if local.job_time >= remaining:
        return Decision("hold", 0, f"no copies: the peer's jobs end in {remaining:.2f}s, "
                        f"a copy here takes {local.job_time:.2f}s")
    count = min(idle, candidates)
    peer_end = "has gone quiet" if stale else f"would end its last jobs in {remaining:.1f}s"
    return Decision("copy", count, f"copy {count} (here {local.job_time:.3f}s)",
                    f"the {{peer}} {peer_end}; a copy here takes {local.job_time:.2f}s")


def grant(snap: Snapshot, asked: int, params: Params = Params()) -> int:
    """How many of the `asked` jobs to send the requesting peer, re-checked on fresh local state.

    Never more than the equalizing count, and nothing unless, on our fresher view (jobs we
    sent since the peer's state count), the move still pays for itself. The requester already
    applied the hysteresis; applying it twice refused the last few jobs and grew the tail.
    """
    return grant_decision(snap, asked, params).count


def grant_decision(snap: Snapshot, asked: int, params: Params = Params()) -> Decision:
    """:func:`grant` with the numbers behind it, for the debug log: an empty answer to a
    request is otherwise silent on both sides."""
    local, remote = _sides(snap, params)
    head = f"T_local={local.drain:.2f}s T_remote={remote.drain:.2f}s: asked for {asked}"
    if asked <= 0 or remote.rate == 0:
        return Decision("hold", 0, f"{head}: grant none (the asker is stopped)")
    if local.rate == 0:
        count = min(asked, snap.local.queued)
        return Decision("send", count, f"{head}: grant {count} (stopped here)")
    move = _best_move(local, remote, snap.link.rtt / 2, snap.link)
    cost = _half_cost(move, snap)
    count = min(asked, move.count) if move.gain > cost else 0
    return Decision("send" if count else "hold", count,
                    f"{head}: grant {count} (moving {move.count} saves {move.gain:.2f}s, "
                    f"half its cost {cost:.2f}s at {snap.link.bandwidth / 1e3:.0f} kB/s, "
                    f"{snap.link.job_bytes:.0f} B a job)")
