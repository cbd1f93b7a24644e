"""Virtual-time simulation of two lb nodes running the real balancer (DESIGN.md 5).

Event-driven: nothing sleeps, a 1024-job run takes milliseconds, so policies and their
parameters can be swept. What is modelled:
- each node has `workers` threads; a job computes at full speed for its own compute seconds
  (job_seconds with optional noise), then the worker rests so that its duty cycle equals the
  throttle (rest = compute * (1 - t) / t). A throttle change reschedules resting workers; at
  throttle 0 a worker finishes its job and then stops (a running computation is not preempted);
- each node has the real `Balancer` (loadbalancer/balancer.py), fed the stimuli a real node
  feeds it (state received, jobs sent, received and finished, request received, throttle
  changed, the period's tick), and the simulator carries out its instructions;
- every state_interval each node sends its state (queue, running, throttle, measured job
  seconds, jobs sent and received so far), delivered rtt/2 later, and ticks its balancer;
- JOBS (taken from the queue's tail) arrive rtt/2 after the link has carried their bytes; the
  link carries one batch at a time per direction; a REQUEST reaches the peer rtt/2 later and
  is answered with a JOBS batch (possibly empty).
The bootstrap gives the slave half the jobs at time 0.

`python -m benchmarks.simulate [--jobs 1024] [--job-seconds 0.06] [--sweep]`
"""

from __future__ import annotations

import argparse
import functools
import heapq
import itertools
import math
import random
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from benchmarks.ideal import ThrottleChange, from_changes
from loadbalancer.adaptor import POLICIES, Link, NodeView, Params, Policy
from loadbalancer.balancer import (
    Balancer,
    Instruction,
    JobsFinished,
    JobsReceived,
    JobsSent,
    Local,
    PeerJoined,
    RequestReceived,
    SendJobs,
    SendRequest,
    SendState,
    StateReceived,
    Stimulus,
    ThrottleChanged,
    Tick,
)
from loadbalancer.monitor import JobTimes

ROLES = ("master", "slave")
SAMPLE_INTERVAL = 0.25  # seconds between points of the pending-jobs time series
GIVE_UP_FACTOR = 20.0  # a run longer than this many ideal makespans is reported as failed

DEFAULT_PARAMS = Params()



@dataclass(frozen=True)
class LinkModel:
    rtt: float = 0.002  # a LAN
    bandwidth: float = 12.5e6  # 100 Mbit/s
    job_bytes: float = 8_000.0  # about 1,000 incompressible float64 per job


@dataclass(frozen=True)
class Setup:
    jobs: int = 1024
    job_seconds: float = 0.06  # compute seconds of one job at throttle 1
    workers: tuple[int, int] = (1, 1)  # master, slave
    noise: float = 0.1  # relative standard deviation of a job's compute seconds
    state_interval: float = 0.5
    link: LinkModel = LinkModel()
    seed: int = 1


@dataclass(frozen=True)
class Scenario:
    name: str
    start: tuple[float, float]  # master, slave throttles at time 0
    # (fraction of the nominal run at the starting throttles, role, new throttle)
    changes: tuple[tuple[float, str, float], ...] = ()


SCENARIOS = (
    Scenario("equal", (1.0, 1.0)),
    Scenario("hetero", (1.0, 0.3)),
    Scenario("change", (1.0, 1.0), ((0.25, "slave", 0.2),)),
    Scenario("drain", (1.0, 1.0), ((0.30, "slave", 0.0),)),
)
# Not in DESIGN.md 5, they keep the sweep honest: two slightly different machines (a large
# hysteresis leaves them unbalanced), and a slave that starts stopped and comes back slow (it
# must be fed work from the master, a move that saves only a fifth of the finish time).
EXTRA_SCENARIOS = (
    Scenario("mild", (1.0, 0.75)),
    Scenario("resume", (1.0, 0.0), ((0.25, "slave", 0.25),)),
)


@dataclass(frozen=True)
class Result:
    makespan: float
    ideal: float
    tail: float  # from the first working node running dry to the last job done
    moved: dict[str, int]  # "master->slave" and "slave->master"
    bounced: int  # balancing moves of jobs a balancing move had already carried (ping-pong)
    executed: dict[str, int]
    series: list[tuple[float, int, int]]  # (time, pending on master, pending on slave)

    @property
    def ratio(self) -> float:
        return self.makespan / self.ideal


def schedule(scenario: Scenario, setup: Setup) -> list[ThrottleChange]:
    """Absolute throttle changes, the starting throttles included at time 0."""
    capacity = sum(w * t for w, t in zip(setup.workers, scenario.start, strict=True))
    nominal = setup.jobs * setup.job_seconds / capacity
    start = [(0.0, role, t) for role, t in zip(ROLES, scenario.start, strict=True)]
    return start + [(share * nominal, role, t) for share, role, t in scenario.changes]


@dataclass(frozen=True)
class _State:
    """A STATE message: the sender's view plus its transfer counters."""

    view: NodeView
    sent_jobs: int
    received_jobs: int


@dataclass
class _Node:
    role: str
    workers: int
    balancer: Balancer
    throttle: float = 0.0
    queue: deque[int] = field(default_factory=deque)  # job ids
    busy: int = 0
    idle: set[int] = field(default_factory=set)
    resting: dict[int, tuple[float, float]] = field(default_factory=dict)  # from, compute s
    tokens: list[int] = field(default_factory=list)  # bumped to cancel a scheduled wake
    job_times: JobTimes = field(default_factory=JobTimes)  # the real node's estimator
    done: int = 0
    last_done: float = 0.0

    def __post_init__(self) -> None:
        self.idle = set(range(self.workers))
        self.tokens = [0] * self.workers

    def view(self) -> NodeView:
        times = self.job_times
        return NodeView(len(self.queue), self.busy, self.throttle, self.workers, times.mean,
                        times.error)


class Simulation:
    """One run: two nodes, one policy, one set of parameters, one throttle schedule."""

    def __init__(
        self, setup: Setup, policy: Policy, params: Params, changes: Sequence[ThrottleChange]
    ) -> None:
        self.setup, self.policy, self.params = setup, policy, params
        self.changes = list(changes)
        self.rng = random.Random(setup.seed)
        self.now = 0.0
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.order = itertools.count()
        self.nodes = {role: _Node(role, w, Balancer(policy, params))
                      for role, w in zip(ROLES, setup.workers, strict=True)}
        link = setup.link
        self.link = Link(link.rtt, link.bandwidth, link.job_bytes)
        self.link_free = {role: 0.0 for role in ROLES}  # when the link from `role` is free
        self.moved = {f"{a}->{b}": 0 for a, b in (ROLES, ROLES[::-1])}
        self.job_seconds: list[float] = []  # by job id
        self.carried: list[int] = []  # balancing moves so far, by job id
        self.bounced = 0
        self.series: list[tuple[float, int, int]] = []
        self.finished = 0
        self.work = 0.0

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self.events, (when, next(self.order), action))

    def peer(self, node: _Node) -> _Node:
        return self.nodes[ROLES[1 - ROLES.index(node.role)]]

    # --- workers -------------------------------------------------------------------------
    def start_job(self, node: _Node, worker: int) -> None:
        if node.throttle <= 0 or not node.queue:
            node.idle.add(worker)
            return
        seconds = self.job_seconds[node.queue.popleft()]
        node.busy += 1
        self.at(self.now + seconds, lambda: self.job_done(node, worker, seconds))

    def job_done(self, node: _Node, worker: int, seconds: float) -> None:
        node.busy -= 1
        node.done += 1
        node.last_done = self.now
        self.finished += 1
        first = node.job_times.mean is None
        node.job_times.add(seconds)
        node.resting[worker] = (self.now, seconds)
        self.schedule_wake(node, worker)
        self.balance(node, JobsFinished(first and node.job_times.mean is not None))

    def schedule_wake(self, node: _Node, worker: int) -> None:
        """Wake a resting worker once its duty cycle allows, under the current throttle."""
        node.tokens[worker] += 1
        if node.throttle <= 0:
            return
        since, seconds = node.resting[worker]
        wake = max(self.now, since + seconds * (1 - node.throttle) / node.throttle)
        token = node.tokens[worker]
        self.at(wake, lambda: self.wake(node, worker, token))

    def wake(self, node: _Node, worker: int, token: int) -> None:
        if node.tokens[worker] == token:
            del node.resting[worker]
            self.start_job(node, worker)

    def feed(self, node: _Node) -> None:
        for worker in sorted(node.idle):
            node.idle.discard(worker)
            self.start_job(node, worker)

    def set_throttle(self, node: _Node, throttle: float) -> None:
        node.throttle = throttle
        for worker in list(node.resting):
            self.schedule_wake(node, worker)
        self.feed(node)
        self.balance(node, ThrottleChanged(throttle))

    # --- messages ------------------------------------------------------------------------
    def balance(self, node: _Node, stimulus: Stimulus) -> None:
        local = Local(node.view(), self.link, balancing=True)
        self.carry_out(node, node.balancer.handle(stimulus, local, self.now))

    def carry_out(self, node: _Node, instructions: list[Instruction]) -> None:
        peer = self.peer(node)
        for instruction in instructions:
            match instruction:
                case SendState():
                    self.send_state(node)
                case SendJobs(count, _, request):
                    self.transmit(node, count, request)
                case SendRequest(request, count, _):
                    self.at(self.now + self.setup.link.rtt / 2, functools.partial(
                        self.balance, peer, RequestReceived(request, count)))

    def send_state(self, node: _Node) -> None:
        state = _State(node.view(), node.balancer.sent_jobs, node.balancer.received_jobs)
        peer = self.peer(node)
        self.at(self.now + self.setup.link.rtt / 2,
                lambda: self.balance(peer, StateReceived(state)))

    def tick(self, node: _Node) -> None:
        self.send_state(node)
        self.balance(node, Tick())
        self.at(self.now + self.setup.state_interval, lambda: self.tick(node))

    def transmit(self, node: _Node, count: int, request: int | None) -> None:
        """Send `count` jobs from the tail of the queue; the link carries one batch at a time."""
        jobs = [node.queue.pop() for _ in range(min(count, len(node.queue)))]
        if node.throttle > 0:  # a stopped node draining is not balancing
            self.bounced += sum(1 for job in jobs if self.carried[job])
            for job in jobs:
                self.carried[job] += 1
        link = self.setup.link
        start = max(self.now, self.link_free[node.role])
        self.link_free[node.role] = start + len(jobs) * link.job_bytes / link.bandwidth
        self.balance(node, JobsSent(len(jobs)))
        peer = self.peer(node)
        self.moved[f"{node.role}->{peer.role}"] += len(jobs)
        arrival = self.link_free[node.role] + link.rtt / 2
        self.at(arrival, lambda: self.on_jobs(peer, jobs[::-1], request))

    def on_jobs(self, node: _Node, jobs: list[int], request: int | None) -> None:
        node.queue.extend(jobs)
        self.feed(node)
        self.balance(node, JobsReceived(len(jobs), request))

    def sample(self) -> None:
        pending = [len(n.queue) + n.busy for n in self.nodes.values()]
        self.series.append((self.now, pending[0], pending[1]))
        self.at(self.now + SAMPLE_INTERVAL, self.sample)

    # --- run -----------------------------------------------------------------------------
    def bootstrap(self) -> None:
        setup = self.setup
        self.job_seconds = [
            setup.job_seconds * max(0.1, self.rng.gauss(1.0, setup.noise))
            for _ in range(setup.jobs)
        ]
        self.carried = [0] * setup.jobs
        self.work = sum(self.job_seconds)
        half = setup.jobs // 2
        self.nodes["master"].queue.extend(range(setup.jobs - half))
        self.nodes["slave"].queue.extend(range(setup.jobs - half, setup.jobs))
        for node in self.nodes.values():
            self.balance(node, PeerJoined())
        for when, role, throttle in self.changes:
            node = self.nodes[role]
            self.at(when, functools.partial(self.set_throttle, node, throttle))
        self.at(0.0, lambda: self.tick(self.nodes["master"]))
        offset = self.rng.uniform(0, setup.state_interval)  # the nodes' clocks are not aligned
        self.at(offset, lambda: self.tick(self.nodes["slave"]))
        self.at(0.0, self.sample)

    def run(self) -> Result:
        self.bootstrap()
        workers = {n.role: n.workers for n in self.nodes.values()}
        ideal = from_changes(self.work, self.changes, workers)
        while self.events and self.finished < self.setup.jobs:
            when, _, action = heapq.heappop(self.events)
            if when > GIVE_UP_FACTOR * ideal:
                return self.result(math.inf, ideal)
            self.now = when
            action()
        return self.result(self.now, ideal)

    def result(self, makespan: float, ideal: float) -> Result:
        working = [n.last_done for n in self.nodes.values() if n.throttle > 0]
        # With one node stopped for good, nobody waits on the other: no tail.
        tail = makespan - min(working) if len(working) == len(ROLES) else 0.0
        executed = {n.role: n.done for n in self.nodes.values()}
        moved = dict(self.moved)
        return Result(makespan, ideal, tail, moved, self.bounced, executed, self.series)


def simulate(
    scenario: Scenario, policy: Policy, params: Params = DEFAULT_PARAMS, setup: Setup = Setup()
) -> Result:
    return Simulation(setup, policy, params, schedule(scenario, setup)).run()


# --- CLI ---------------------------------------------------------------------------------
SWEEP_POLICIES: tuple[Policy, ...] = ("sender", "receiver", "symmetric")
SWEEP_MIN_BATCH = (1, 4, 16)
SWEEP_HYSTERESIS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
SWEEP_SEEDS = (1, 2)


@dataclass(frozen=True)
class Score:
    params: Params
    worst: float  # worst ratio over setups, scenarios, policies and seeds
    mean: float  # mean ratio
    pingpong: float  # mean share of the jobs bounced (moved again by the balancer)
    tail: float  # mean tail, seconds

    @property
    def objective(self) -> float:
        """Worst ratio plus ping-pong share: the simulator charges no CPU or bandwidth for a
        move, real machines do, so jobs sent to and fro count as that much lost balance."""
        return self.worst + self.pingpong


def sweep_setups(setup: Setup) -> dict[str, Setup]:
    """The given setup, the same with 4 workers a node, and a slow far link."""
    return {
        "lan": setup,
        "lan-4w": replace(setup, workers=(4, 4)),
        "wan": replace(setup, link=replace(setup.link, rtt=0.05, bandwidth=1.25e6)),
    }


def table(setup: Setup, params: Params) -> list[str]:
    """Scenario x policy: ratio, tail, jobs moved each way, jobs moved twice."""
    lines = [
        f"{'scenario':<8} {'policy':<10} {'ratio':>6} {'tail s':>7} {'moved m->s/s->m':>16} "
        f"{'bounced':>7}"
    ]
    for scenario in SCENARIOS + EXTRA_SCENARIOS:
        for policy in POLICIES:
            result = simulate(scenario, policy, params, setup)
            moved = f"{result.moved['master->slave']}/{result.moved['slave->master']}"
            lines.append(
                f"{scenario.name:<8} {policy:<10} {result.ratio:>6.3f} {result.tail:>7.2f} "
                f"{moved:>16} {result.bounced:>7}"
            )
    return lines


def trace(setup: Setup, params: Params, scenario_name: str, policy_name: str) -> list[str]:
    """One run's pending jobs per node over time, as CSV (for plotting)."""
    scenarios = {scenario.name: scenario for scenario in SCENARIOS + EXTRA_SCENARIOS}
    policies: dict[str, Policy] = {policy: policy for policy in POLICIES}
    if scenario_name not in scenarios or policy_name not in policies:
        raise SystemExit(f"unknown scenario or policy: {scenario_name} {policy_name}")
    result = simulate(scenarios[scenario_name], policies[policy_name], params, setup)
    return ["time,master,slave"] + [f"{t:.2f},{m},{s}" for t, m, s in result.series]


def score(setup: Setup, params: Params) -> Score:
    results = [
        simulate(scenario, policy, params, replace(variant, seed=seed))
        for variant in sweep_setups(setup).values()
        for scenario in SCENARIOS + EXTRA_SCENARIOS
        for policy in SWEEP_POLICIES
        for seed in SWEEP_SEEDS
    ]
    ratios = [result.ratio for result in results]
    return Score(
        params,
        worst=max(ratios),
        mean=statistics.fmean(ratios),
        pingpong=statistics.fmean(result.bounced for result in results) / setup.jobs,
        tail=statistics.fmean(result.tail for result in results),
    )


def sweep(setup: Setup) -> list[Score]:
    """Every Params of the grid, best first."""
    scores = [
        score(setup, Params(min_batch=batch, hysteresis=hysteresis))
        for batch in SWEEP_MIN_BATCH
        for hysteresis in SWEEP_HYSTERESIS
    ]
    return sorted(scores, key=lambda s: (s.objective, s.mean))


def sweep_lines(scores: Sequence[Score]) -> list[str]:
    lines = [
        f"{'min_batch':>9} {'hysteresis':>10} {'worst':>6} {'mean':>6} {'ping-pong':>9} "
        f"{'tail s':>6} {'objective':>9}"
    ]
    for s in scores:
        lines.append(
            f"{s.params.min_batch:>9} {s.params.hysteresis:>10.2f} {s.worst:>6.3f} "
            f"{s.mean:>6.3f} {s.pingpong:>9.2%} {s.tail:>6.2f} {s.objective:>9.4f}"
        )
    best = scores[0].params
    lines.append(f"best: Params(min_batch={best.min_batch}, hysteresis={best.hysteresis})")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.simulate",
        description="Run the real adaptor against two modelled nodes in virtual time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--jobs", type=int, default=Setup.jobs, help="jobs in the workload")
    parser.add_argument(
        "--job-seconds",
        type=float,
        default=Setup.job_seconds,
        help="compute seconds of one job at full speed",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker threads per node")
    parser.add_argument(
        "--noise",
        type=float,
        default=Setup.noise,
        help="relative standard deviation of a job's compute seconds",
    )
    parser.add_argument("--rtt", type=float, default=LinkModel.rtt, help="round trip, seconds")
    parser.add_argument("--seed", type=int, default=Setup.seed, help="random seed")
    parser.add_argument("--sweep", action="store_true", help="search Params and print the best")
    parser.add_argument(
        "--trace",
        nargs=2,
        metavar=("SCENARIO", "POLICY"),
        help="print one run's pending jobs per node over time as CSV",
    )
    args = parser.parse_args(argv)
    setup = Setup(
        jobs=args.jobs,
        job_seconds=args.job_seconds,
        workers=(args.workers, args.workers),
        noise=args.noise,
        link=LinkModel(rtt=args.rtt),
        seed=args.seed,
    )
    if args.sweep:
        lines = sweep_lines(sweep(setup))
    elif args.trace:
        lines = trace(setup, DEFAULT_PARAMS, *args.trace)
    else:
        lines = table(setup, DEFAULT_PARAMS)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
