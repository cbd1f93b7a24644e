"""What lb costs besides the work itself (issue 4, item 5).

`python -m benchmarks.overheads [--quick] [--out DIR]`; also run by `python -m benchmarks.run`.

(a) local path: a master alone (no slave: it computes everything) on 20,000 tiny jobs
    (one element, one iteration); makespan / jobs is the queue -> worker -> result cost.
(b) transfer goodput: two `session.Connection`s through `endpoint.Endpoint`s on loopback in
    this process (authenticated and reliable), moving the JOBS messages a node would send,
    beside a plain asyncio TCP stream moving the same payload bytes in the same event loop;
    best of five interleaved rounds each. Goodput counts job data bytes (before
    compression) per second. The target row: random float64 (incompressible, so bytes are
    what costs) in the datagrams lb picks on loopback (65,507 bytes). For reference: 1,400-byte
    datagrams (what an Ethernet path takes: the CPU cost per datagram shows), and the
    vector's own data, which compresses a thousandfold, so a transfer is a few small
    messages and its time is a round trip or two, not bandwidth.
(c) event-loop lag: a master node running in this process at throttle 1.0, and beside it a
    10 ms `asyncio.sleep` loop; the p99 of how late it wakes.
(d) idle CPU: a slave connected to a master, both at throttle 0 and policy none with a few
    jobs, so nobody computes: the slave's CPU % over 10 s (psutil).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psutil

from benchmarks.results import Measure, write_json
from benchmarks.scenarios import calibrate
from loadbalancer import app, config, local, messages
from loadbalancer.batch import WorkloadBatch
from loadbalancer.endpoint import Endpoint, path_max_datagram
from loadbalancer.functions import Catalog
from loadbalancer.lifecycle import new_incarnation
from loadbalancer.master import Master
from loadbalancer.messages import WorkloadSpec
from loadbalancer.reliable import MessageReceived
from loadbalancer.session import Connection, Event, PeerJoined
from loadbalancer.tasks import Tasks
from loadbalancer.testing.loopback import Cluster
from loadbalancer.wire import Keys, Kind, Role
from loadbalancer.workload import Vector

LOCAL_JOBS = 20_000
JOB_ELEMENTS = 32_768  # the default workload's job: 256 KiB of float64
ETHERNET_DATAGRAM = 1400
ROUNDS = 5
LAG_PERIOD = 0.01
IDLE_SECONDS = 10.0
T = TypeVar("T")


@contextmanager
def _scratch() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="lb-overheads-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    # uvloop when installed, as the nodes run.
    with asyncio.Runner(loop_factory=app.loop_factory()) as runner:
        return runner.run(coroutine)


# ---- (a) the local path ------------------------------------------------------------------
def local_path(jobs: int = LOCAL_JOBS) -> Measure:
    with _scratch() as directory, Cluster(directory) as pair:
        pair.configure(jobs=jobs, elements_per_job=1, iterations=1)
        pair.start("master")
        codes = pair.wait(timeout=300)
        summary = pair.result() or {}
    makespan = float(summary.get("makespan_s") or "nan")
    per_job = makespan / jobs * 1e6
    return Measure("local path per job", round(per_job, 1), "µs", "<= 100 µs",
                   per_job <= 100, {"jobs": jobs, "makespan_s": makespan,
                                    "verified": summary.get("verified"), "exit": codes})


# ---- (b) transfer goodput ----------------------------------------------------------------
@dataclass(frozen=True)
class Load:
    """Encoded JOBS messages carrying ``jobs`` jobs of ``job_bytes`` each."""

    name: str
    payloads: list[bytes]
    jobs: int
    job_bytes: int

    @property
    def data_bytes(self) -> int:
        return self.jobs * self.job_bytes


def make_load(name: str, jobs: int, blob: Callable[[int], bytes]) -> Load:
    """The messages a node sends to move these jobs."""
    spec = WorkloadSpec("vector", {"elements": jobs * JOB_ELEMENTS, "jobs": jobs})
    batches = messages.job_messages(spec, ((job, blob(job)) for job in range(jobs)))
    return Load(name, [payload for payload, _ in batches], jobs, JOB_ELEMENTS * 8)


def loads(jobs: int) -> list[Load]:
    """Random floats, and the vector's data in 16 times the quantity: it compresses about
    a thousandfold, so as many jobs would be over before a timer could see them."""
    rng = np.random.default_rng(4)
    vector = Vector(16 * jobs * JOB_ELEMENTS, 16 * jobs, 1)
    return [make_load("random float64", jobs, lambda _: rng.random(JOB_ELEMENTS).tobytes()),
            make_load("vector data", 16 * jobs, vector.job_data)]


class _Link:
    """Two connected lb endpoints on loopback; counts what the receiving one delivers."""

    def __init__(self, max_datagram: int) -> None:
        self.max_datagram = max_datagram
        self.joined = 0
        self.received = 0
        self.expected = 0
        self.all_joined = asyncio.Event()
        self.all_received = asyncio.Event()

    def _on_event(self, event: Event) -> None:
        if isinstance(event, PeerJoined):
            self.joined += 1
            if self.joined == 2:
                self.all_joined.set()
        elif isinstance(event, MessageReceived):
            self.received += 1
            if self.received == self.expected:
                self.all_received.set()

    async def open(self) -> tuple[Endpoint, Endpoint]:
        loop = asyncio.get_running_loop()
        key = Keys(secrets.token_urlsafe(32))
        ports = {Role.MASTER: local.free_port(), Role.SLAVE: local.free_port()}
        endpoints = []
        for role in (Role.MASTER, Role.SLAVE):
            connection = Connection(role, key, peer_address=("127.0.0.1", ports[role.peer]),
                                    new_incarnation=new_incarnation, now=loop.time(),
                                    max_datagram=self.max_datagram)
            endpoint = Endpoint(connection, self._on_event)
            await endpoint.bind(("127.0.0.1", ports[role]))
            endpoints.append(endpoint)
        await asyncio.wait_for(self.all_joined.wait(), 10)
        return endpoints[0], endpoints[1]


async def lb_transfer(load: Load, max_datagram: int) -> dict[str, Any]:
    link = _Link(max_datagram)
    sender, receiver = await link.open()
    link.expected = len(load.payloads)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for payload in load.payloads:
        sender.connection.send(Kind.JOBS, payload, loop.time())
    sender.flush()
    await asyncio.wait_for(link.all_received.wait(), 120)
    seconds = loop.time() - began
    retransmits = sender.connection.retransmits
    sender.close()
    receiver.close()
    return {"seconds": seconds, "retransmits": retransmits,
            "wire_bytes": sender.connection.bytes_sent}


async def tcp_transfer(load: Load) -> dict[str, Any]:
    total = sum(len(p) for p in load.payloads)
    finished: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def drain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = 0
        while got < total:
            chunk = await reader.read(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        finished.set_result(time.perf_counter())
        writer.close()

    server = await asyncio.start_server(drain, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.perf_counter()
    for payload in load.payloads:
        writer.write(payload)
        await writer.drain()
    seconds = await asyncio.wait_for(finished, 120) - began
    writer.close()
    server.close()
    return {"seconds": seconds, "wire_bytes": total}


def _rates(load: Load, seconds: float) -> dict[str, float]:
    return {"MB_s": round(load.data_bytes / seconds / 1e6, 1),
            "jobs_s": round(load.jobs / seconds, 1)}


def goodput(jobs: int) -> list[Measure]:
    app.tune_allocator()  # as a node does when it starts
    loopback = path_max_datagram(("127.0.0.1", 9))
    measures = []
    for load in loads(jobs):
        ways: list[str | int] = ["tcp", loopback, ETHERNET_DATAGRAM]
        timings: dict[str | int, list[dict[str, Any]]] = {way: [] for way in ways}
        for _ in range(ROUNDS):  # interleaved, so a slow spell of the machine hits all alike
            for way, runs in timings.items():
                transfer = tcp_transfer(load) if way == "tcp" else lb_transfer(load, int(way))
                runs.append(_run(transfer))
        tcp = _best(timings.pop("tcp"))
        for size, runs in timings.items():
            result = _best(runs)
            share = tcp["seconds"] / result["seconds"]
            lb_rates, tcp_rates = _rates(load, result["seconds"]), _rates(load, tcp["seconds"])
            judged = size == loopback and load.name == "random float64"
            measures.append(Measure(
                f"goodput {load.name}, {size} B datagrams", lb_rates["MB_s"], "MB/s",
                ">= 0.5 x TCP" if judged else "(reference)", share >= 0.5 if judged else None,
                {"lb": {**lb_rates, **result}, "tcp": {**tcp_rates, **tcp},
                 "share_of_tcp": round(share, 3), "jobs": load.jobs,
                 "messages": len(load.payloads)}))
    return measures


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda run: float(run["seconds"]))


# ---- (c) event-loop lag --------------------------------------------------------------------
async def _lag_run(path: Path) -> list[float]:
    loop = asyncio.get_running_loop()
    settings = config.load(path)
    tasks = Tasks(Catalog())
    node = Master(settings, tasks=tasks, batch=WorkloadBatch.of(tasks, settings.workload))
    late: list[float] = []

    async def probe() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_PERIOD)
            late.append(loop.time() - before - LAG_PERIOD)

    task = asyncio.create_task(probe())
    try:
        await node.run()
    finally:
        task.cancel()
    return late


def loop_lag(seconds: float) -> Measure:
    size = calibrate(jobs=max(8, round(seconds / 0.04)), job_seconds=0.04)
    with _scratch() as directory:
        path = local.write_config(directory, throttle=1.0, **size.settings())
        late = _run(_lag_run(path))
    p99 = float(np.percentile(late, 99)) * 1e3
    return Measure("event-loop lag p99 (10 ms timer)", round(p99, 2), "ms", "<= 20 ms",
                   p99 <= 20, {"samples": len(late), "max_ms": round(max(late) * 1e3, 2),
                               "median_ms": round(statistics.median(late) * 1e3, 3),
                               "jobs": size.jobs, "iterations": size.iterations})


# ---- (d) idle CPU ----------------------------------------------------------------------------
def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def idle_cpu(seconds: float = IDLE_SECONDS) -> Measure:
    with _scratch() as directory, Cluster(directory) as pair:
        pair.configure(policy="none", jobs=8, elements_per_job=1024, iterations=1000)
        pair.start_both("--throttle", "0.0", master_args=["--throttle", "0.0"])
        pair.wait_for_phase("slave", "processing")  # connected and holding its half
        time.sleep(1.0)  # let the join's bursts settle
        nodes = {role: psutil.Process(p.pid) for role, p in pair.processes.items()}
        before = {role: _cpu_seconds(p) for role, p in nodes.items()}
        time.sleep(seconds)
        percent = {role: round((_cpu_seconds(p) - before[role]) / seconds * 100, 2)
                   for role, p in nodes.items()}
    return Measure("idle CPU of a connected slave", percent["slave"], "%", "< 1 %",
                   percent["slave"] < 1.0, {"percent": percent, "seconds": seconds})


# ---- all -------------------------------------------------------------------------------------
def measure_all(quick: bool, progress: Callable[[str], None] = print) -> list[Measure]:
    results: list[Measure] = []
    steps: Sequence[tuple[str, Callable[[], Measure | list[Measure]]]] = (
        ("local path", local_path),
        ("goodput", lambda: goodput(64 if quick else 256)),
        ("event-loop lag", lambda: loop_lag(2.0 if quick else 10.0)),
        ("idle CPU", idle_cpu),
    )
    for name, step in steps:
        began = time.monotonic()
        outcome = step()
        results += outcome if isinstance(outcome, list) else [outcome]
        progress(f"overheads: {name} measured in {time.monotonic() - began:.1f}s")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks import report

    parser = argparse.ArgumentParser(prog="python -m benchmarks.overheads",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="smaller transfers, shorter lag run")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"),
                        help="directory for overheads.json")
    args = parser.parse_args(argv)
    console = report.console()
    measures = measure_all(args.quick, console.print)
    report.print_overheads(console, measures)
    write_json(args.out / "overheads.json", [m.to_json() for m in measures])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
