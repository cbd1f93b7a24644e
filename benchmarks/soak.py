"""Soak: many lossy runs in a row, then a node's memory under a datagram flood.

    python -m benchmarks.soak [--runs 20] [--flood-seconds 60]

Part one runs master and slave through the fault proxy (20% loss, 10%
duplication, reordering, 20 +/- 10 ms delay each way), once per policy in
turn, and closes with ``runs: N, verified: N, lost: 0, duplicated: 0``.
A job is *lost* if the master never held its result, *duplicated* if its
result was counted twice; the exact check of every element catches either.

Part two measures a slave's resident memory (RSS) before, during and after a
flood of datagrams: junk and forged tags from anyone, and, from a peer that
holds the secret, fragments of messages that never complete. Receive queues,
reassembly buffers and replay windows are bounded, so RSS must level off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil

from loadbalancer import wire
from loadbalancer.addresses import Address, parse_address
from loadbalancer.endpoint import Endpoint
from loadbalancer.lifecycle import new_incarnation
from loadbalancer.reliable import Fragment
from loadbalancer.session import Connection, PeerJoined
from loadbalancer.testing.faultproxy import Faults
from loadbalancer.testing.loopback import Cluster
from loadbalancer.wire import Header, Kind, Role

POLICIES = ("symmetric", "sender", "receiver", "none")
BAD_NETWORK = Faults(loss=0.2, duplicate=0.1, reorder=0.1, delay=0.02, jitter=0.01)
RUN = {"jobs": 128, "elements_per_job": 8192, "iterations": 2000}


def lossy_run(directory: Path, policy: str, seed: int) -> dict[str, object]:
    with Cluster(directory) as pair:
        pair.configure(policy=policy, **RUN)
        pair.add_proxy(BAD_NETWORK, seed)
        pair.start_both()  # both at throttle 1, the config's
        codes = pair.wait(timeout=300, slave_grace=60)
        result = pair.result()
    if codes != {"master": 0, "slave": 0} or result is None:
        return {"verified": False, "jobs": RUN["jobs"], "error": f"exit codes {codes}"}
    return result


def soak_runs(runs: int) -> bool:
    verified = lost = duplicated = suppressed = retransmits = 0
    with tempfile.TemporaryDirectory(prefix="lb-soak-") as tmp:
        for n in range(runs):
            policy = POLICIES[n % len(POLICIES)]
            result = lossy_run(Path(tmp) / f"run{n}", policy, seed=n)
            ok = result.get("verified") is True
            verified += ok
            # Verification checks every element exactly: a missing result or
            # one added twice would fail it.
            lost += 0 if ok else int(result.get("jobs", 0))  # type: ignore[call-overload]
            duplicated += 0 if ok else 1
            suppressed += int(result.get("duplicates_suppressed", 0))  # type: ignore[call-overload]
            retransmits += int(result.get("retransmits", 0))  # type: ignore[call-overload]
            print(f"run {n + 1}/{runs} {policy:9} verified={ok} "
                  f"ratio={result.get('ratio')} retransmits={result.get('retransmits')} "
                  f"suppressed={result.get('duplicates_suppressed')}", flush=True)
    print(f"runs: {runs}, verified: {verified}, lost: {lost}, duplicated: {duplicated} "
          f"(retransmits {retransmits}, duplicates suppressed {suppressed})")
    return verified == runs


def rss_mib(pid: int) -> float:
    return float(psutil.Process(pid).memory_info().rss) / 2**20


async def keyed_flood(settings: dict[str, object], seconds: float) -> int:
    """Open a session with the slave as a fake master, then send fragments of
    messages that never complete, each message a new one."""
    loop = asyncio.get_running_loop()
    key = wire.Keys(str(settings["secret"]))
    joined = asyncio.Event()
    connection = Connection(Role.MASTER, key, new_incarnation=new_incarnation,
                            peer_address=parse_address(settings["slave"], "slave"),
                            now=loop.time())
    endpoint = Endpoint(connection, lambda e: joined.set() if isinstance(e, PeerJoined) else None)
    await endpoint.bind(parse_address(settings["master"], "master"))
    await asyncio.wait_for(joined.wait(), 10)
    # Packet numbers far above the connection's own; the fragments, being
    # authenticated, are also what keeps the session alive at the slave.
    sent, seq, number = 0, 0, 1 << 40
    capacity = wire.fragment_capacity(wire.DEFAULT_MAX_DATAGRAM)
    deadline = time.monotonic() + seconds
    ours, theirs, address = connection.incarnation, connection.peer, connection.peer_address
    assert endpoint.socket is not None and theirs is not None
    while time.monotonic() < deadline:
        for _ in range(200):
            header = Header(Kind.JOBS, Role.MASTER, ours, theirs, number)
            fragment = Fragment(seq=seq, index=0, count=1000, kind=Kind.JOBS,
                                data=os.urandom(capacity))
            endpoint.socket.send([(wire.encode(key, header, fragment=fragment), address)])
            seq, number, sent = seq + 1000, number + 1, sent + 1
        await asyncio.sleep(0.005)
    endpoint.close()
    return sent


def junk_flood(address: Address, seconds: float) -> int:
    forged_key = wire.Keys("not the secret")
    sent = 0
    deadline = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        while time.monotonic() < deadline:
            for n in range(200):
                header = Header(Kind.JOBS, Role.MASTER, 1, 2, sent)
                data = wire.encode(forged_key, header, fragment=Fragment(
                    seq=n, index=0, count=1000, kind=Kind.JOBS, data=bytes(1300))) \
                    if n % 2 else os.urandom(1400)
                sock.sendto(data, address)
                sent += 1
            time.sleep(0.002)
    return sent


def flood(seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="lb-flood-") as tmp, Cluster(Path(tmp)) as cluster:
        cluster.configure(jobs=4, elements_per_job=16, iterations=1)
        settings = cluster.settings
        slave = cluster.start("slave")
        cluster.wait_until_up("slave")
        time.sleep(1.0)
        before = rss_mib(slave.pid)
        address = parse_address(settings["slave"], "slave")
        junk = junk_flood(address, seconds / 2)
        middle = rss_mib(slave.pid)
        keyed = asyncio.run(keyed_flood(settings, seconds / 2))
        after = rss_mib(slave.pid)
        status = cluster.status("slave")
        if slave.poll() is not None or status is None:
            sys.exit(f"the slave died under the flood:\n{cluster.log('slave')}")
        dropped = status["local"]["dropped"]
    print(f"flood: {junk} junk datagrams then {keyed} keyed never-completing fragments "
          f"over {seconds:.0f}s")
    print(f"slave RSS: before {before:.1f} MiB, after junk {middle:.1f} MiB, "
          f"after keyed fragments {after:.1f} MiB")
    print(f"slave dropped: {dropped}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--flood-seconds", type=float, default=60.0)
    args = parser.parse_args()
    ok = soak_runs(args.runs) if args.runs else True
    if args.flood_seconds > 0:
        flood(args.flood_seconds)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
