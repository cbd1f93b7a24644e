"""Goodput of incompressible job data on real paths, beside TCP on the same path.

`python -m benchmarks.paths [--quick] [--path P ...] [--rounds N] [--out DIR]` (root for
the veth paths: without it, loopback only); also run by `python -m benchmarks.run`.

Paths: loopback, and two network namespaces joined by a veth pair at MTU 1500 and at 9000
(:mod:`loadbalancer.testing.netns`). On each, in the same run and interleaved (so a slow
spell of the machine hits both), ``ROUNDS`` times:

- lb: a real master and a real slave (`lb launch`, each in its namespace) map
  ``benchmarks/jobs.py:length`` over JOBS inputs of JOB_BYTES random bytes each. The master
  hands half of them to the slave when it joins (the bootstrap); its goodput is that half's
  job data over the time from the master's "sent" event (it starts sending) to the slave's
  last "received" event of the bootstrap (it holds all of it), both in the master's trace,
  on the one wall clock of this machine. While the bootstrap moves, nothing computes:
  both nodes start at throttle 0 with one worker and policy none (no balancing moves), so
  the transfer has the two cores to itself; once the slave holds its half, both go to
  throttle 1 and the map finishes (the output is checked).
  The figure is what a map's bootstrap costs end to end: the master reads each input back
  from the file as it sends it (JSON, then base64: a few ms a MiB), then frames, seals and
  sends it a datagram at a time; the slave takes it in and queues it.
- TCP: a stream of as many bytes from a process in the master's namespace to one in the
  slave's (benchmarks/tcpstream.py), large writes on a plain socket.

Targets (the issue on Ethernet paths): at MTU 1500, lb >= 118 MB/s of job data; at MTU 9000
and on loopback, lb >= 0.9 x the TCP stream beside it (medians of the rounds); the 256 MiB
bootstrap at MTU 1500 in <= 3 s (the full run's bootstrap is 256 MiB; --quick's is smaller
and only reported).
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import jobs, tcpstream
from benchmarks.overheads import _scratch
from benchmarks.results import Measure, write_json
from loadbalancer import local, wire
from loadbalancer.testing import netns
from loadbalancer.testing.loopback import SLAVE_GRACE, Cluster, ClusterError

JOBS_MODULE = Path(jobs.__file__)
JOB_BYTES = 2**20  # a job's data: one JOBS message each (MESSAGE_BYTES), well under 64 MiB
FULL_JOBS = 512  # a 256 MiB bootstrap
QUICK_JOBS = 128  # 64 MiB
ROUNDS = 3
QUICK_ROUNDS = 2
TCP_PORT = 7800  # the receiver's, in the slave's namespace
MB = 1e6
ETHERNET_TARGET_MB_S = 118.0
TCP_SHARE_TARGET = 0.9
BOOTSTRAP_TARGET_S = 3.0
BOOTSTRAP_TARGET_BYTES = 256 * 2**20
POLL = 0.5  # seconds between asking the slave whether it holds its half: a status costs it
# ~6 ms of its loop (profiled), so asking often would slow the transfer being measured
RUN_TIMEOUT = 600.0


@dataclass(frozen=True)
class NetPath:
    name: str
    mtu: int | None  # None: loopback, at the host's MTU

    @property
    def label(self) -> str:
        return self.name if self.mtu is None else f"{self.name} MTU {self.mtu}"

    @property
    def key(self) -> str:
        """Its name on the command line."""
        return self.name if self.mtu is None else f"{self.name}{self.mtu}"


def loopback_mtu() -> int | None:
    try:
        return int(Path("/sys/class/net/lo/mtu").read_text())
    except (OSError, ValueError):
        return None


PATHS = (NetPath("loopback", None), NetPath("veth", 1500), NetPath("veth", 9000))


class Progress:
    """A line per step, with the time since the harness began."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out, self.began = out, time.monotonic()

    def __call__(self, text: str) -> None:
        self.out(f"paths [{time.monotonic() - self.began:5.0f}s] {text}")


# ---- the inputs ------------------------------------------------------------------------------
def write_inputs(path: Path, count: int, job_bytes: int = JOB_BYTES, seed: int = 12) -> Path:
    """``count`` lines, each one call with ``job_bytes`` random bytes in their tagged JSON form
    (``codec.to_json``'s ``{"$bytes": base64}``), written as they are made."""
    rng = random.Random(seed)
    with path.open("w") as file:
        for _ in range(count):
            encoded = base64.b64encode(rng.randbytes(job_bytes)).decode("ascii")
            file.write(f'[{{"$bytes": "{encoded}"}}]\n')
    return path


# ---- lb ----------------------------------------------------------------------------------------
def lb_bootstrap(directory: Path, inputs: Path, count: int, job_bytes: int,
                 namespaces: netns.Namespaces | None, offload: bool = True) -> dict[str, Any]:
    """One map over ``inputs`` on a master and a slave (each in its namespace, if any): the
    bootstrap's bytes, seconds and MB/s from the trace, and the run's checks."""
    output = directory / "out.jsonl"
    with Cluster(directory, namespaces=namespaces) as pair:
        pair.configure(policy="none", workers=1, offload=offload)
        pair.start("slave", "--workload-module", str(JOBS_MODULE), "--throttle", "0")
        pair.wait_until_up("slave")
        pair.start("master", "--map", f"{JOBS_MODULE}:length", "--inputs", str(inputs),
                   "--output", str(output), "--throttle", "0")
        _wait_for_bootstrap(pair, count // 2)
        # The slave first: a stopped slave hands its queue back to a peer that can run.
        for role in ("slave", "master"):
            pair.set_throttle(role, 1.0)
        codes = pair.wait(timeout=RUN_TIMEOUT, slave_grace=SLAVE_GRACE)
        if codes.get("master") != 0:
            raise ClusterError(f"the map failed ({codes}): {pair.log_tail('master')}")
        trace, summary = pair.trace() or {}, pair.result() or {}
    results = [json.loads(line)["result"] for line in output.read_text().splitlines()]
    transfer = bootstrap_transfer(trace, job_bytes)
    datagram = (summary.get("datagram") or {}).get("master")
    return {**transfer, **_per_datagram(transfer, datagram),
            "verified": results == [job_bytes] * count,
            "executed": summary.get("executed"), "retransmits": summary.get("retransmits"),
            "datagram": summary.get("datagram"), "bytes_sent": summary.get("bytes_sent"),
            "makespan_s": summary.get("makespan_s")}


def _wait_for_bootstrap(pair: Cluster, jobs_due: int) -> None:
    """Until the slave says it holds the bootstrap's jobs (the figures come from the trace:
    this only says when to let the nodes compute)."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        status = pair.status("slave")
        if status is not None and status["local"]["bootstrap"] >= jobs_due:
            return
        if pair.processes["master"].poll() is not None:
            raise ClusterError(f"the master exited early: {pair.log_tail('master')}")
        time.sleep(POLL)
    raise ClusterError(f"the slave never held {jobs_due} jobs: {pair.log_tail('slave')}")


def bootstrap_transfer(trace: dict[str, Any], job_bytes: int) -> dict[str, Any]:
    """From the master's trace of both nodes: the bootstrap began at the master's first
    "sent" event and ended at the slave's last "received" event of the bootstrap."""
    nodes = trace.get("nodes", {})
    sent = [e for e in nodes.get("master", {}).get("events", []) if e["type"] == "sent"]
    received = [e for e in nodes.get("slave", {}).get("events", [])
                if e["type"] == "received" and e.get("bootstrap")]
    if not sent or not received:
        raise ClusterError("the trace has no bootstrap: no 'sent' event on the master or no "
                           "'received' one on the slave")
    jobs_moved = sum(int(e["jobs"]) for e in received)
    seconds = received[-1]["t"] - sent[0]["t"]
    data = jobs_moved * job_bytes
    return {"jobs": jobs_moved, "jobs_sent": int(sent[0]["jobs"]), "bytes": data,
            "seconds": round(seconds, 4), "MB_s": round(data / seconds / MB, 1),
            "messages": len(received)}


def _per_datagram(transfer: dict[str, Any], datagram: int | None) -> dict[str, Any]:
    """The master's time per datagram of job data: what a faster sending path must cut."""
    if not datagram:
        return {}
    datagrams = math.ceil(transfer["bytes"] / wire.fragment_capacity(datagram))
    return {"datagrams": datagrams, "us_per_datagram": round(transfer["seconds"] / datagrams
                                                             * 1e6, 2)}


# ---- TCP ------------------------------------------------------------------------------------
def tcp(total: int, namespaces: netns.Namespaces | None) -> dict[str, Any]:
    if namespaces is None:
        result = tcpstream.stream(total, "127.0.0.1", local.free_port())
    else:
        result = tcpstream.stream(total, namespaces.addresses["slave"], TCP_PORT,
                                  (namespaces.prefix("master"), namespaces.prefix("slave")))
    seconds = float(result["seconds"])
    return {"bytes": int(result["bytes"]), "seconds": round(seconds, 4),
            "MB_s": round(int(result["bytes"]) / seconds / MB, 1)}


# ---- one path, all paths ----------------------------------------------------------------------
def measure_path(path: NetPath, inputs: Path, count: int, rounds: int,
                 progress: Callable[[str], None], job_bytes: int = JOB_BYTES,
                 offload: bool = True) -> dict[str, Any]:
    """``rounds`` of lb then TCP on ``path`` (``inputs``: ``count`` jobs of ``job_bytes``);
    every run and the medians."""
    namespaces = None if path.mtu is None else netns.Namespaces(path.mtu)
    runs: dict[str, list[dict[str, Any]]] = {"lb": [], "tcp": []}
    try:
        for round_ in range(1, rounds + 1):
            with _scratch() as directory:
                lb = lb_bootstrap(directory, inputs, count, job_bytes, namespaces, offload)
            runs["lb"].append(lb)
            stream = tcp(lb["bytes"], namespaces)
            runs["tcp"].append(stream)
            progress(f"{path.label}, round {round_}/{rounds}: lb {lb['MB_s']} MB/s "
                     f"({lb['bytes'] / 2**20:.0f} MiB in {lb['seconds']:.2f}s, "
                     f"{lb.get('us_per_datagram')} µs a datagram, "
                     f"{lb['retransmits']} retransmits, datagram {lb['datagram']}), "
                     f"TCP {stream['MB_s']} MB/s")
    finally:
        if namespaces is not None:
            namespaces.close()
    lb_rate = round(statistics.median(run["MB_s"] for run in runs["lb"]), 1)
    tcp_rate = round(statistics.median(run["MB_s"] for run in runs["tcp"]), 1)
    return {"path": path.name, "mtu": path.mtu,
            "link_mtu": path.mtu if path.mtu is not None else loopback_mtu(),
            "lb_MB_s": lb_rate, "tcp_MB_s": tcp_rate,
            "ratio": round(lb_rate / tcp_rate, 3),
            "bootstrap_s": round(statistics.median(run["seconds"] for run in runs["lb"]), 3),
            "bootstrap_bytes": runs["lb"][0]["bytes"],
            "verified": all(run["verified"] for run in runs["lb"]), "runs": runs}


def goodput_measure(row: dict[str, Any]) -> Measure:
    label = NetPath(row["path"], row["mtu"]).label
    if row["mtu"] == 1500:
        target, passed = f">= {ETHERNET_TARGET_MB_S:g} MB/s", row["lb_MB_s"] >= \
            ETHERNET_TARGET_MB_S
    else:
        target, passed = f">= {TCP_SHARE_TARGET} x TCP", row["ratio"] >= TCP_SHARE_TARGET
    return Measure(f"goodput {label}", row["lb_MB_s"], "MB/s", target,
                   passed and row["verified"], row)


def bootstrap_measure(row: dict[str, Any]) -> Measure:
    label = NetPath(row["path"], row["mtu"]).label
    size = row["bootstrap_bytes"]
    judged = row["mtu"] == 1500 and size >= BOOTSTRAP_TARGET_BYTES
    return Measure(f"bootstrap of {size / 2**20:.0f} MiB, {label}", row["bootstrap_s"], "s",
                   f"<= {BOOTSTRAP_TARGET_S:g} s" if judged else "(reference)",
                   row["bootstrap_s"] <= BOOTSTRAP_TARGET_S if judged else None,
                   {"bytes": size, "MB_s": row["lb_MB_s"]})


def measure_all(quick: bool, progress: Callable[[str], None] = print,
                paths: Sequence[NetPath] = PATHS, offload: bool = True,
                rounds: int | None = None) -> list[Measure]:
    step = Progress(progress)
    why = netns.available()
    if why is not None:
        step(f"{why}: loopback only")
        paths = [path for path in paths if path.mtu is None]
    count, default_rounds = (QUICK_JOBS, QUICK_ROUNDS) if quick else (FULL_JOBS, ROUNDS)
    rounds = rounds or default_rounds
    rows = []
    with _scratch() as directory:
        step(f"writing {count} inputs of {JOB_BYTES // 1024} KiB of random bytes")
        inputs = write_inputs(directory / "in.jsonl", count)
        step(f"{inputs.stat().st_size / 2**20:.0f} MiB of inputs written; the bootstrap moves "
             f"{count // 2 * JOB_BYTES / 2**20:.0f} MiB")
        for path in paths:
            rows.append(measure_path(path, inputs, count, rounds, step, offload=offload))
    measures = [goodput_measure(row) for row in rows]
    measures += [bootstrap_measure(row) for row in rows if row["mtu"] in (None, 1500)]
    return measures


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks import report

    parser = argparse.ArgumentParser(prog="python -m benchmarks.paths",
                                     description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true",
                        help=f"a {QUICK_JOBS // 2 * JOB_BYTES // 2**20} MiB bootstrap, "
                        f"{QUICK_ROUNDS} rounds (default "
                        f"{FULL_JOBS // 2 * JOB_BYTES // 2**20} MiB, {ROUNDS} rounds)")
    parser.add_argument("--no-offload", action="store_true",
                        help="lb sends and reads one datagram a system call (the config's "
                        "offload: false), for the figure without GSO and GRO")
    parser.add_argument("--path", choices=[path.key for path in PATHS], action="append",
                        help="measure only this path (again for more than one; default all)")
    parser.add_argument("--rounds", type=int, help=f"rounds of each path (default {ROUNDS}, "
                        f"{QUICK_ROUNDS} with --quick): more for a median that holds on a "
                        "busy machine")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out"),
                        help="directory for paths.json")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    chosen = [path for path in PATHS if args.path is None or path.key in args.path]
    console = report.console()
    began = time.monotonic()
    measures = measure_all(args.quick, console.print, chosen, offload=not args.no_offload,
                           rounds=args.rounds)
    report.print_paths(console, measures)
    write_json(args.out / "paths.json", [m.to_json() for m in measures])
    console.print(f"wrote {args.out}/paths.json ({time.monotonic() - began:.0f}s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
