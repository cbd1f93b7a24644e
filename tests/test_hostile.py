"""Hostile datagrams: dropped and counted by reason, no effect on the result."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import itertools
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ISSUE_STATES, payload_of

from loadbalancer import messages, wire
from loadbalancer.addresses import Address, parse_address
from loadbalancer.endpoint import Endpoint
from loadbalancer.greeting import HELLO_SENDERS, WELCOME_GAP
from loadbalancer.messages import Finish, Jobs, Needs, Refuse, Trace, Verdict, WorkloadSpec
from loadbalancer.paths import CHALLENGE_GAP
from loadbalancer.reliable import MessageReceived
from loadbalancer.session import Connection, Event, PeerJoined
from loadbalancer.testing.loopback import Cluster
from loadbalancer.wire import Kind, Role

SPEC = WorkloadSpec("vector", {"elements": 64, "jobs": 4, "iterations": 1})


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    return sock


class Tap:
    """A transparent relay between the nodes that keeps a copy of what passes. It can
    also move its port towards the master (``rebind``, as a NAT does), and let an attacker
    who sees the slave's datagrams race a copy of each to the master (``race``)."""

    def __init__(self, master: Address, slave: Address) -> None:
        self.front = udp_socket()  # the master's "slave"
        self.back = udp_socket()  # the slave's "master"
        self.attacker = udp_socket()
        self.master, self.slave = master, slave
        self.to_slave: list[bytes] = []
        self.to_master: list[bytes] = []
        self.at_attacker: collections.Counter[Kind] = collections.Counter()
        self.racing = False
        self.rebound: socket.socket | None = None  # the new front, once asked for
        self.via_rebound = 0  # datagrams from the master that came to the new front
        self._stop = False
        self._thread = threading.Thread(target=self._relay, daemon=True)
        self._thread.start()

    def rebind(self) -> None:
        self.rebound = udp_socket()

    def _relay(self) -> None:
        with selectors.DefaultSelector() as selector:
            for sock in (self.front, self.back, self.attacker):
                selector.register(sock, selectors.EVENT_READ)
            while not self._stop:
                if self.rebound is not None and self.rebound is not self.front:
                    selector.unregister(self.front)
                    self.front.close()
                    self.front = self.rebound
                    selector.register(self.front, selectors.EVENT_READ)
                for key, _ in selector.select(timeout=0.01):
                    data = key.fileobj.recv(70000)  # type: ignore[union-attr]
                    if key.fileobj is self.attacker:
                        self.at_attacker[Kind(data[3])] += 1
                    elif key.fileobj is self.front:
                        self.via_rebound += self.front is self.rebound
                        self.to_slave.append(data)
                        self.back.sendto(data, self.slave)
                    else:
                        self.to_master.append(data)
                        if self.racing:
                            self.attacker.sendto(data, self.master)
                        self.front.sendto(data, self.master)

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        for sock in (self.front, self.back, self.attacker):
            sock.close()


@pytest.fixture
def tapped(cluster: Cluster) -> Iterator[tuple[Cluster, Tap]]:
    # Ethernet-sized, so that a datagram can be oversized and still leave the sender.
    cluster.configure(policy="symmetric", jobs=256, elements_per_job=32768, iterations=2000,
                      max_datagram=1400)
    settings = cluster.settings
    tap = Tap(parse_address(settings["master"], "master"),
              parse_address(settings["slave"], "slave"))
    cluster.route(tap.front.getsockname(), tap.back.getsockname())
    yield cluster, tap
    tap.close()


def hostile(key_of_another: bytes, valid: bytes) -> dict[str, list[bytes]]:
    """Kinds of junk, each named by the reason it must be counted under."""
    header = wire.Header(Kind.STATE, Role.MASTER, 1, 2, 3)
    forged = wire.encode(key_of_another, header, body=b"x" * 40)
    randoms = []
    while len(randoms) < 20:
        junk = os.urandom(100)
        if junk[:2] != wire.MAGIC:
            randoms.append(junk)
    return {
        "bad_tag": [forged] * 20,
        "truncated": [valid[:20]] * 20,
        "oversized": [valid + bytes(2000)] * 20,
        "bad_version": [valid[:2] + b"\x63" + valid[3:]] * 20,
        "bad_magic": randoms,
    }


def test_a_flood_of_junk_and_replays_is_counted_and_changes_nothing(
        tapped: tuple[Cluster, Tap]) -> None:
    cluster, tap = tapped
    cluster.start_both()
    cluster.wait_for("master", lambda s: s["local"]["finished"] >= 20)
    settings = cluster.settings
    kinds = hostile(wire.Keys("not the secret at all"), tap.to_slave[-1])
    replay_to_slave, replay_to_master = list(tap.to_slave), list(tap.to_master)
    targets = {"master": parse_address(settings["master"], "master"),
               "slave": parse_address(settings["slave"], "slave")}
    flood = [(data, target) for datagrams in kinds.values() for data in datagrams
             for target in targets.values()]
    flood += [(data, targets["slave"]) for data in replay_to_slave]
    flood += [(data, targets["master"]) for data in replay_to_master]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for data, target in flood:
            sock.sendto(data, target)
            time.sleep(0.0005)  # paced, so that the kernel's socket buffer does not drop any
    assert cluster.wait() == {"slave": 0, "master": 0}, cluster.log("master")
    result = cluster.result()
    assert result["verified"] is True
    dropped = result["dropped"]
    for reason, datagrams in kinds.items():
        assert dropped[reason] == 2 * len(datagrams), (reason, dropped)
    replay_reasons = ("duplicate", "replayed", "stale_session", "stale_hello")
    assert sum(dropped.get(r, 0) for r in replay_reasons) >= \
        len(replay_to_slave) + len(replay_to_master)


def test_a_copy_raced_from_another_address_gets_no_replies_beyond_challenges(
        tapped: tuple[Cluster, Tap]) -> None:
    cluster, tap = tapped
    cluster.start_both()
    cluster.wait_for("master", lambda s: s["local"]["finished"] >= 20)
    tap.racing = True
    started = time.monotonic()
    assert cluster.wait() == {"slave": 0, "master": 0}, cluster.log("master")
    seconds = time.monotonic() - started
    print(f"{sum(tap.at_attacker.values())} datagrams to the attacker in {seconds:.1f}s: "
          f"{dict(tap.at_attacker)}")
    assert cluster.result()["verified"] is True
    assert set(tap.at_attacker) <= {Kind.PATH_CHALLENGE}
    assert tap.at_attacker[Kind.PATH_CHALLENGE] <= seconds / CHALLENGE_GAP + 1


def test_a_peer_whose_port_changes_mid_run_is_followed(tapped: tuple[Cluster, Tap]) -> None:
    cluster, tap = tapped
    cluster.start_both()
    cluster.wait_for("master", lambda s: s["local"]["finished"] >= 20)
    tap.rebind()
    assert cluster.wait() == {"slave": 0, "master": 0}, cluster.log("master")
    assert cluster.result()["verified"] is True
    assert tap.via_rebound > 0  # the master moved to the new port


class FakePeer:
    """A node of our own in ``role``, holding the secret, to send a real one what no node
    would."""

    def __init__(self, settings: dict[str, object], role: Role = Role.MASTER) -> None:
        self.settings = settings
        self.role = role
        self.events: asyncio.Queue[Event] = asyncio.Queue()

    async def open(self) -> Endpoint:
        loop = asyncio.get_running_loop()
        other = str(self.role.peer)
        connection = Connection(
            self.role, wire.Keys(str(self.settings["secret"])),
            peer_address=parse_address(self.settings[other], other),
            new_incarnation=lambda: 10**15, now=loop.time())
        endpoint = Endpoint(connection, self.events.put_nowait)
        await endpoint.bind(parse_address(self.settings[str(self.role)],
                                                        str(self.role)))
        return endpoint

    async def next_event(self, wanted: Callable[[Event], bool]) -> Event:
        # Within 10 s in all: the real node's STATE keeps coming meanwhile.
        async with asyncio.timeout(10):
            while not wanted(event := await self.events.get()):
                pass
        return event

    async def joined(self) -> None:
        await self.next_event(lambda event: isinstance(event, PeerJoined))

    async def next_message(self, kind: Kind) -> messages.Message:
        event = await self.next_event(
            lambda event: isinstance(event, MessageReceived) and event.kind == kind)
        assert isinstance(event, MessageReceived)
        return messages.decode(kind, event.payload)


def send(endpoint: Endpoint, kind: Kind, payload: bytes) -> None:
    endpoint.connection.send(kind, payload, asyncio.get_running_loop().time())
    endpoint.flush()


async def heartbeat(endpoint: Endpoint) -> None:
    """A STATE twice a second, as a node sends, so that the real node keeps the session; at
    throttle 0 on both sides the adaptor holds, whatever it weighs."""
    state = messages.pack({"queued": 0, "running": 0, "throttle": 0.0, "workers": 1,
                                   "job_seconds": None, "sent_jobs": 0, "received_jobs": 0})
    while True:
        endpoint.connection.send_state(state)
        endpoint.flush()
        await asyncio.sleep(0.5)


def send_states(endpoint: Endpoint, bodies: Iterable[bytes]) -> None:
    for body in bodies:
        endpoint.connection.send_state(body)
        endpoint.flush()


def malformed(status: dict[str, Any]) -> int:
    return int(status["local"]["dropped"].get("malformed", 0))


async def test_jobs_of_an_unknown_workload_or_wrong_size_are_refused(cluster: Cluster) -> None:
    cluster.configure(jobs=4, elements_per_job=16, iterations=1)
    cluster.start("slave")
    await asyncio.to_thread(cluster.wait_until_up, "slave")
    fake = FakePeer(cluster.settings)
    endpoint = await fake.open()
    try:
        await fake.joined()
        cases = [Jobs(WorkloadSpec("matrix", {}), [(0, b"")]),
                 Jobs(WorkloadSpec("vector", {"elements": 64, "jobs": 4, "iterations": 1}),
                      [(1, b"\x00" * 8)])]
        replies = []
        for jobs in cases:
            send(endpoint, *messages.encode(jobs))
            replies.append(await fake.next_message(Kind.REFUSE))
        assert isinstance(replies[0], Refuse) and replies[0].jobs == [0]
        assert "unknown workload 'matrix'" in replies[0].reason
        assert isinstance(replies[1], Refuse) and replies[1].jobs == [1]
        assert "expected 128" in replies[1].reason
        status = await asyncio.to_thread(cluster.status, "slave")
        assert status is not None and status["local"]["refused"] == 2
        assert status["local"]["queued"] == 0
    finally:
        endpoint.close()


async def test_a_slave_holding_the_secret_cannot_crash_the_master(cluster: Cluster) -> None:
    """The issue's STATEs, then a TRACE nested too deep and one whose numbers are out of
    bounds: each is dropped (the first five as malformed) and the master finishes its run."""
    cluster.configure(jobs=8, elements_per_job=16, iterations=1)
    cluster.start("master", "--throttle", "0")  # it waits for us
    await asyncio.to_thread(cluster.wait_until_up, "master")
    fake = FakePeer(cluster.settings, Role.SLAVE)
    endpoint = await fake.open()
    beat = asyncio.create_task(heartbeat(endpoint))
    try:
        needs = await fake.next_message(Kind.NEEDS)
        assert isinstance(needs, Needs)
        send(endpoint, *messages.encode(Verdict(needs.specs, [])))  # the master shares now
        bootstrap = await fake.next_message(Kind.JOBS)
        assert isinstance(bootstrap, Jobs) and len(bootstrap.jobs) == 4
        send_states(endpoint, ISSUE_STATES.values())
        await asyncio.to_thread(cluster.wait_for, "master", lambda s: malformed(s) == 4)
        send(endpoint, *messages.encode(Refuse([job for job, _ in bootstrap.jobs], "no")))
        assert (await asyncio.to_thread(cluster.lb, "throttle", "1", "--role", "master",
                                        "--config", str(cluster.config))).returncode == 0
        await fake.next_message(Kind.FINISH)
        send(endpoint, Kind.TRACE,
             payload_of('{"sizes":[],"events":[],"stats":{},"samples":' + "[" * 3000 + "]" * 3000
                      + "}"))
        send(endpoint, *messages.encode(Trace(
            [{"t": 1.7e9, "pending": 2**60, "throttle": 1.0, "done": 0}],
            [{"t": 1.7e9, "type": "throttle", "throttle": 1.0, "workers": 10**19}],
            {"executed": 10**19, "compute_seconds": 1e300, "dropped": {"malformed": 10**19}})))
        codes = await asyncio.to_thread(cluster.wait)
    finally:
        beat.cancel()
        endpoint.close()
    assert codes == {"master": 0}, cluster.log("master")
    result = cluster.result()
    assert result["verified"] is True and result["dropped"]["malformed"] == 5
    assert result["executed"] == {"master": 8, "slave": 0}
    assert result["refused"] == 4


async def test_a_master_holding_the_secret_cannot_crash_the_slave(cluster: Cluster) -> None:
    """The issue's STATEs, jobs of a workload beyond its bounds and a spec beyond the
    envelope's: refused or dropped, and the slave leaves when told to."""
    cluster.configure(jobs=4, elements_per_job=16, iterations=1)
    cluster.start("slave")
    await asyncio.to_thread(cluster.wait_until_up, "slave")
    fake = FakePeer(cluster.settings, Role.MASTER)
    endpoint = await fake.open()
    beat = asyncio.create_task(heartbeat(endpoint))
    try:
        await fake.joined()
        send(endpoint, *messages.encode(Needs([SPEC])))
        assert await fake.next_message(Kind.VERDICT) == Verdict([SPEC], [])  # it shares now
        send_states(endpoint, ISSUE_STATES.values())
        huge = WorkloadSpec("vector", {"elements": 10**9, "jobs": 10**9, "iterations": 1})
        send(endpoint, *messages.encode(Jobs(huge, [(0, bytes(8))])))
        refusal = await fake.next_message(Kind.REFUSE)
        assert isinstance(refusal, Refuse) and refusal.jobs == [0]
        assert "workload.jobs must be a whole number from 1 to 10000000" in refusal.reason
        send(endpoint, Kind.JOBS, payload_of(
            '{"sizes":[8],"ids":[1],"workload":{"name":"vector","params":{"elements":1'
            + "0" * 400 + "}}}", bytes(8)))
        status = await asyncio.to_thread(cluster.wait_for, "slave", lambda s: malformed(s) == 5)
        assert status["local"]["refused"] == 1 and status["local"]["queued"] == 0
        send(endpoint, *messages.encode(Finish()))
        assert isinstance(await fake.next_message(Kind.TRACE), Trace)
        codes = await asyncio.to_thread(cluster.wait)
    finally:
        beat.cancel()
        endpoint.close()
    assert codes == {"slave": 0}, cluster.log("slave")


class Replayer:
    """Replays HELLOs of earlier runs to each node's port from a socket of its own, at
    ``rate`` a second each, and counts what comes back to it by type."""

    def __init__(self, hellos: dict[Address, list[bytes]], rate: int = 5000) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.hellos, self.rate = hellos, rate
        self.sent = 0
        self.received: collections.Counter[Kind] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        replays = {target: itertools.cycle(hellos) for target, hellos in self.hellos.items()}
        start = time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            while self.sent < due:
                for target, replay in replays.items():
                    with contextlib.suppress(BlockingIOError):
                        self.sock.sendto(next(replay), target)
                self.sent += 1
            with contextlib.suppress(BlockingIOError):
                while True:
                    self.received[Kind(self.sock.recv(70000)[3])] += 1
            time.sleep(0.0002)  # smooth, as a real flood is: no gaps for a HELLO to slip in

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def captured_hellos(secret: str, role: Role, incarnations: int = 50) -> list[bytes]:
    """What a listener kept of earlier runs: 10 s of HELLOs of each of 50 incarnations,
    the newest an hour old."""
    hour_ago = (time.time_ns() // 1_000_000 - 3_600_000) << 20
    hellos = []
    for n in range(incarnations):
        earlier = Connection(role, wire.Keys(secret), peer_address=("127.0.0.1", 9),
                             new_incarnation=lambda n=n: hour_ago - ((incarnations - n) << 20),
                             now=0.0)
        for tick in range(40):
            hellos += [data for data, _ in earlier.datagrams_to_send(tick * 0.25)]
    return hellos


def join_seconds(cluster: Cluster, flood: bool) -> tuple[float, Replayer | None]:
    """From the master's start until it says the slave joined; the replayer if ``flood``."""
    cluster.configure(**SMALL_RUN)
    settings = cluster.settings
    addresses = {role: parse_address(settings[role], role)
                 for role in ("master", "slave")}
    replayer = None
    cluster.start("slave")
    cluster.wait_until_up("slave")
    if flood:  # to both nodes: each answers the other's HELLO, so the pair joins either way
        replayer = Replayer({addresses[str(role)]: captured_hellos(settings["secret"], role.peer)
                             for role in Role})
        time.sleep(1.0)  # the flood is on before the master starts
    cluster.start("master")
    cluster.wait_for("master", lambda s: s["local"]["peer"] == "connected", timeout=10)
    stamps = {}
    for line in cluster.log("master").splitlines():
        for event, marker in (("listening", "master listening on"), ("joined", "slave joined")):
            if marker in line and event not in stamps:
                clock = datetime.datetime.strptime(line.split()[0], "%H:%M:%S.%f")
                stamps[event] = clock.timestamp()
    return stamps["joined"] - stamps["listening"], replayer


SMALL_RUN = {"jobs": 256, "elements_per_job": 8192, "iterations": 3000}


def test_replayed_hellos_at_5000_a_second_do_not_keep_a_fresh_pair_from_joining(
        tmp_path: Path) -> None:
    quiet = Cluster(tmp_path / "quiet")
    try:
        usual, _ = join_seconds(quiet, flood=False)
    finally:
        quiet.stop()
    flooded = Cluster(tmp_path / "flooded")
    replayer = None
    try:
        joined, replayer = join_seconds(flooded, flood=True)
        assert replayer is not None
        assert flooded.wait() == {"slave": 0, "master": 0}, flooded.log("master")
    finally:
        if replayer is not None:
            replayer.close()
        flooded.stop()
    welcomes, seconds = replayer.received[Kind.WELCOME], replayer.sent / replayer.rate
    print(f"joined {usual * 1000:.0f} ms after the master started, {joined * 1000:.0f} ms under "
          f"{replayer.sent} replays to each node; {welcomes} WELCOMEs to the replayer "
          f"in {seconds:.1f} s")
    assert joined <= usual + 2.0
    assert set(replayer.received) <= {Kind.WELCOME}
    # Per node: one for each incarnation newer than the table, then the table's newest
    # few at most every WELCOME_GAP.
    assert welcomes <= 2 * (50 + HELLO_SENDERS * seconds / WELCOME_GAP)
    assert flooded.result()["dropped"].get("old_hello", 0) > 0
