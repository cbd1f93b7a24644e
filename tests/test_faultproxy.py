"""Tests for the UDP fault proxy: the pure FaultModel first, then the real proxy on 127.0.0.1."""

import asyncio
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from loadbalancer.addresses import Address
from loadbalancer.testing.faultproxy import FaultModel, Faults, Proxy, start_proxy

REPO = Path(__file__).resolve().parent.parent
LOCAL = ("127.0.0.1", 0)
READY = re.compile(r"ready front=127\.0\.0\.1:(\d+) back=127\.0\.0\.1:(\d+)")


def decide_many(faults: Faults, count: int, gap: float = 0.0, seed: int = 1) -> list[list[float]]:
    model = FaultModel(faults, seed)
    return [model.decide(100, i * gap) for i in range(count)]


# --- FaultModel -------------------------------------------------------------------------------


def test_no_faults_delivers_one_copy_at_once() -> None:
    model = FaultModel(Faults(), seed=1)
    assert [model.decide(100, now) for now in (0.0, 0.5, 2.0)] == [[0.0], [0.5], [2.0]]
    assert (model.stats.received, model.stats.dropped, model.stats.duplicated) == (3, 0, 0)


def test_loss_drops_the_requested_fraction() -> None:
    model = FaultModel(Faults(loss=0.2), seed=7)
    decisions = [model.decide(100, 0.0) for _ in range(10_000)]
    dropped = sum(not times for times in decisions)
    # Five standard deviations of a binomial(10000, 0.2) fraction is 0.02.
    assert abs(dropped / 10_000 - 0.2) < 0.02
    assert model.stats.dropped == dropped
    assert all(times == [0.0] for times in decisions if times)


@pytest.mark.parametrize(("loss", "delivered"), [(0.0, 1000), (1.0, 0)])
def test_loss_extremes_are_exact(loss: float, delivered: int) -> None:
    assert sum(map(len, decide_many(Faults(loss=loss), 1000))) == delivered


def test_duplicate_yields_two_independently_delayed_copies() -> None:
    model = FaultModel(Faults(duplicate=1.0, delay=0.05, jitter=0.02), seed=3)
    decisions = [model.decide(100, 0.0) for _ in range(100)]
    assert all(len(times) == 2 for times in decisions)
    assert sum(first != second for first, second in decisions) == 100
    assert model.stats.duplicated == 100


def test_duplicate_probability_is_respected() -> None:
    decisions = decide_many(Faults(duplicate=0.3), 10_000, seed=5)
    assert abs(sum(len(times) == 2 for times in decisions) / 10_000 - 0.3) < 0.025


def test_jitter_stays_within_bounds_and_uses_them() -> None:
    times = [t for (t,) in decide_many(Faults(delay=0.05, jitter=0.02), 5000)]
    assert 0.03 - 1e-12 <= min(times) < 0.031
    assert 0.069 < max(times) <= 0.07 + 1e-12


def test_jitter_never_delivers_before_arrival() -> None:
    decisions = decide_many(Faults(delay=0.001, jitter=0.01), 1000, gap=0.001)
    assert all(times[0] >= i * 0.001 for i, times in enumerate(decisions))


def test_reorder_lets_a_later_datagram_arrive_earlier() -> None:
    faults = Faults(reorder=0.3, reorder_delay=0.05, delay=0.01)
    model = FaultModel(faults, seed=11)
    arrivals = [model.decide(100, i * 0.001)[0] for i in range(200)]
    held = [t for i, t in enumerate(arrivals) if t > i * 0.001 + 0.01 + 1e-9]
    assert model.stats.reordered == len(held) > 0
    assert arrivals != sorted(arrivals)


def test_without_reorder_arrivals_keep_their_order() -> None:
    arrivals = [times[0] for times in decide_many(Faults(delay=0.01), 200, gap=0.001)]
    assert arrivals == sorted(arrivals)


def test_token_bucket_spaces_datagrams_exactly() -> None:
    # 256 bytes at 1024 bytes/s take 0.25 s each: binary fractions, so equality is exact.
    model = FaultModel(Faults(rate=1024), seed=1)
    assert [model.decide(256, 0.0) for _ in range(4)] == [[0.0], [0.25], [0.5], [0.75]]
    assert model.decide(256, 10.0) == [10.0], "an idle link must not stay backlogged"


def test_token_bucket_drops_what_does_not_fit_the_queue() -> None:
    model = FaultModel(Faults(rate=1024, queue=512), seed=1)
    assert [model.decide(256, 0.0) for _ in range(4)] == [[0.0], [0.25], [], []]
    assert model.decide(256, 0.5) == [0.5]
    assert model.stats.dropped == 2


def test_delay_is_added_after_the_rate_cap() -> None:
    model = FaultModel(Faults(rate=1024, delay=0.125), seed=1)
    assert [model.decide(256, 0.0) for _ in range(2)] == [[0.125], [0.375]]


def test_same_seed_gives_the_same_decisions() -> None:
    faults = Faults(loss=0.1, duplicate=0.1, reorder=0.1, delay=0.01, jitter=0.005)
    first = decide_many(faults, 500, gap=0.001, seed=42)
    assert decide_many(faults, 500, gap=0.001, seed=42) == first
    assert decide_many(faults, 500, gap=0.001, seed=43) != first


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("loss", 1.5),
        ("duplicate", -0.1),
        ("reorder", math.nan),
        ("delay", -1.0),
        ("rate", math.inf),
    ],
)
def test_faults_reject_out_of_range_settings(setting: str, value: float) -> None:
    with pytest.raises(ValueError, match=setting):
        Faults(**{setting: value})


# --- the proxy on real sockets ------------------------------------------------------------------


class Peer(asyncio.DatagramProtocol):
    """Stands in for the master or the slave."""

    transport: asyncio.DatagramTransport

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, Address]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.inbox.put_nowait((data, addr))

    @property
    def address(self) -> Address:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, payloads: list[bytes], to: Address) -> None:
        for payload in payloads:
            self.transport.sendto(payload, to)

    async def receive(self, count: int) -> list[tuple[bytes, Address]]:
        return [await asyncio.wait_for(self.inbox.get(), timeout=2.0) for _ in range(count)]

    async def receive_nothing_for(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        assert self.inbox.empty()


async def open_peer() -> Peer:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(Peer, local_addr=LOCAL)
    peer.transport = transport
    return peer


@pytest.fixture
async def peers() -> AsyncIterator[tuple[Peer, Peer]]:
    # An exception in a proxy callback is only logged by the loop; collect it to fail the test.
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
    master, slave = await open_peer(), await open_peer()
    yield master, slave
    master.transport.close()
    slave.transport.close()
    await asyncio.sleep(0)
    assert errors == []


@asynccontextmanager
async def proxy_between(master: Peer, slave: Peer, **faults: Faults) -> AsyncIterator[Proxy]:
    proxy = await start_proxy(LOCAL, LOCAL, master.address, slave.address, seed=1, **faults)
    try:
        yield proxy
    finally:
        proxy.close()


def payloads(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(count)]


async def test_without_faults_everything_is_forwarded_in_order_both_ways(
    peers: tuple[Peer, Peer],
) -> None:
    master, slave = peers
    async with proxy_between(master, slave) as proxy:
        master.send(payloads("m", 100), proxy.front_address)
        slave.send(payloads("s", 100), proxy.back_address)
        # Each node sees the other at the proxy, so its replies go back through it.
        assert await slave.receive(100) == [(p, proxy.back_address) for p in payloads("m", 100)]
        assert await master.receive(100) == [(p, proxy.front_address) for p in payloads("s", 100)]
    for stats in proxy.stats.values():
        assert (stats.received, stats.forwarded, stats.dropped) == (100, 100, 0)


async def test_full_loss_forwards_nothing_in_that_direction_only(peers: tuple[Peer, Peer]) -> None:
    master, slave = peers
    async with proxy_between(master, slave, to_slave=Faults(loss=1.0)) as proxy:
        master.send(payloads("m", 50), proxy.front_address)
        slave.send(payloads("s", 5), proxy.back_address)
        assert [data for data, _ in await master.receive(5)] == payloads("s", 5)
        await slave.receive_nothing_for(0.2)
    to_slave = proxy.stats["to_slave"]
    assert (to_slave.received, to_slave.forwarded, to_slave.dropped) == (50, 0, 50)


async def test_delay_adds_at_least_the_delay(peers: tuple[Peer, Peer]) -> None:
    master, slave = peers
    loop = asyncio.get_running_loop()
    async with proxy_between(master, slave, to_slave=Faults(delay=0.15)) as proxy:
        started = loop.time()
        master.send([b"late"], proxy.front_address)
        await slave.receive(1)
        assert loop.time() - started >= 0.15
        started = loop.time()
        slave.send([b"prompt"], proxy.back_address)
        await master.receive(1)
        assert loop.time() - started < 0.15, "the other direction must not be delayed"


async def test_duplicate_delivers_every_datagram_twice(peers: tuple[Peer, Peer]) -> None:
    master, slave = peers
    async with proxy_between(master, slave, to_slave=Faults(duplicate=1.0, jitter=0.01)) as proxy:
        master.send(payloads("m", 10), proxy.front_address)
        received = sorted(data for data, _ in await slave.receive(20))
        await slave.receive_nothing_for(0.05)
    assert received == sorted(payloads("m", 10) * 2)
    assert proxy.stats["to_slave"].duplicated == 10


async def test_rate_cap_spreads_datagrams_over_time(peers: tuple[Peer, Peer]) -> None:
    master, slave = peers
    loop = asyncio.get_running_loop()
    async with proxy_between(master, slave, to_slave=Faults(rate=20_000)) as proxy:
        started = loop.time()
        master.send([bytes(1000)] * 5, proxy.front_address)
        await slave.receive(5)
        # The first datagram leaves at once, each later one 1000 / 20000 s after the previous one.
        assert loop.time() - started >= 0.2


async def test_close_discards_datagrams_in_flight(peers: tuple[Peer, Peer]) -> None:
    master, slave = peers
    async with proxy_between(master, slave, to_slave=Faults(delay=0.05)) as proxy:
        master.send([b"doomed"], proxy.front_address)
        await asyncio.sleep(0.01)
    await slave.receive_nothing_for(0.1)
    assert (proxy.stats["to_slave"].received, proxy.stats["to_slave"].forwarded) == (1, 0)


# --- the command line ---------------------------------------------------------------------------


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "loadbalancer.testing.faultproxy", *args]


# Without PYTHONUNBUFFERED, as a harness may run it: the ready line must be flushed explicitly.
BUFFERED = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_cli_reports_ready_then_counters_on_signal(
    peers: tuple[Peer, Peer], signum: signal.Signals
) -> None:
    master, slave = peers
    args = ["--front", "127.0.0.1:0", "--back", "127.0.0.1:0", "--duplicate", "1"]
    (master_host, master_port), (slave_host, slave_port) = master.address, slave.address
    args += ["--master", f"{master_host}:{master_port}", "--slave", f"{slave_host}:{slave_port}"]
    args += ["--to-master", "duplicate=0", "--seed", "9"]
    process = await asyncio.create_subprocess_exec(
        *cli(*args), cwd=REPO, env=BUFFERED, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        ready = (await asyncio.wait_for(process.stdout.readline(), timeout=5.0)).decode()
        match = READY.fullmatch(ready.strip())
        assert match, ready
        front, back = ("127.0.0.1", int(match[1])), ("127.0.0.1", int(match[2]))
        master.send(payloads("m", 3), front)
        slave.send(payloads("s", 2), back)
        assert len(await slave.receive(6)) == 6
        assert len(await master.receive(2)) == 2
        process.send_signal(signum)
        assert await asyncio.wait_for(process.wait(), timeout=5.0) == 0
        counters = json.loads((await process.stdout.read()).decode())
        assert await process.stderr.read() == b""
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert counters["to_slave"] == {
        "received": 3,
        "forwarded": 6,
        "dropped": 0,
        "duplicated": 3,
        "reordered": 0,
    }
    assert counters["to_master"] == {
        "received": 2,
        "forwarded": 2,
        "dropped": 0,
        "duplicated": 0,
        "reordered": 0,
    }


VALID = {
    "--front": "127.0.0.1:0",
    "--back": "127.0.0.1:0",
    "--master": "127.0.0.1:40001",
    "--slave": "127.0.0.1:40002",
}


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--loss", "1.5", "loss"),
        ("--delay", "soon", "--delay"),
        ("--to-slave", "speed=3", "speed"),
        ("--to-master", "loss=x", "loss"),
        ("--front", "localhost:0", "--front"),
        ("--slave", "127.0.0.1:0", "--slave"),
        ("--master", None, "--master"),
    ],
)
def test_cli_bad_argument_exits_2_with_one_line(option: str, value: str | None, named: str) -> None:
    options = {**VALID, option: value}
    args = [part for key, val in options.items() if val is not None for part in (key, val)]
    result = subprocess.run(
        cli(*args), cwd=REPO, env=BUFFERED, capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
