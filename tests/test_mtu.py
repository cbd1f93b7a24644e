"""The datagram size, end to end: two nodes in network namespaces joined by a veth pair
whose ends have different MTUs, so the kernel drops frames too big for the slave's end
before lb sees them, and nothing says so."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_map import JOBS, read_output, write_inputs

from loadbalancer import local

PORT = 7700
RUN_TIMEOUT = 40.0
JOB_COUNT = 64
JOB_BYTES = 16 * 1024  # random: each job's data is incompressible, so JOBS go full-size


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Namespaces:
    """Two namespaces joined by a veth pair: the master's end at MTU 9000, the slave's at
    1500. Their addresses exist only inside them."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}{random.randrange(100)}"
        self.names = {"master": f"lbm{tag}", "slave": f"lbs{tag}"}
        net = f"10.{random.randrange(200, 250)}.{random.randrange(256)}"
        self.addresses = {"master": f"{net}.1", "slave": f"{net}.2"}
        mtus = {"master": "9000", "slave": "1500"}
        for name in self.names.values():
            ip("netns", "add", name)
        ip("link", "add", "veth0", "netns", self.names["master"], "type", "veth",
           "peer", "name", "veth1", "netns", self.names["slave"])
        for role, device in (("master", "veth0"), ("slave", "veth1")):
            ns = self.names[role]
            ip("-n", ns, "link", "set", device, "mtu", mtus[role])
            ip("-n", ns, "addr", "add", f"{self.addresses[role]}/24", "dev", device)
            ip("-n", ns, "link", "set", device, "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def close(self) -> None:
        for name in self.names.values():
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    try:
        made = Namespaces()
    except (OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"cannot make network namespaces and a veth pair here: {error}")
    yield made
    made.close()


def launch(namespaces: Namespaces, config: Path, role: str, *args: str,
           log: Path) -> subprocess.Popen[bytes]:
    command = ["ip", "netns", "exec", namespaces.names[role], sys.executable, "-m",
               "loadbalancer", "launch", "--role", role, "--config", str(config),
               "--no-dashboard", *args]
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("max_datagram", [
    pytest.param("auto", id="each node takes its route's MTU: they agree on the smaller"),
    pytest.param(8972, id="both configured for jumbo frames: the black hole is found"),
])
def test_a_run_across_unequal_mtus_finishes_at_a_size_the_path_carries(
        namespaces: Namespaces, tmp_path: Path, max_datagram: int | str) -> None:
    config = local.write_config(tmp_path, max_datagram=max_datagram)
    raw = json.loads(config.read_text())
    raw.update(master=f"{namespaces.addresses['master']}:{PORT}",
               slave=f"{namespaces.addresses['slave']}:{PORT}")
    config.write_text(json.dumps(raw))
    rng = random.Random(8)
    blobs = [rng.randbytes(JOB_BYTES) for _ in range(JOB_COUNT)]
    inputs = write_inputs(tmp_path / "in.jsonl", [[blob, 0.05] for blob in blobs])
    output, result = tmp_path / "out.jsonl", tmp_path / "result.json"
    logs = {role: tmp_path / f"{role}.log" for role in ("master", "slave")}
    processes = {"slave": launch(namespaces, config, "slave", "--workload-module", str(JOBS),
                                 log=logs["slave"])}
    try:
        local.wait_until_listening(config, "slave", processes["slave"])
        started = time.monotonic()
        processes["master"] = launch(
            namespaces, config, "master", "--map", f"{JOBS}:digest", "--inputs", str(inputs),
            "--output", str(output), "--result", str(result), log=logs["master"])
        codes = {}
        for role, process in processes.items():
            try:
                codes[role] = process.wait(timeout=max(1.0, started + RUN_TIMEOUT
                                                       - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"the run did not finish in {RUN_TIMEOUT:.0f}s:\n"
                            f"{logs['master'].read_text()}\n{logs['slave'].read_text()}")
        duration = time.monotonic() - started
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    assert codes == {"slave": 0, "master": 0}, logs["master"].read_text()
    assert [line["result"] for line in read_output(output)] == [
        hashlib.sha256(blob).hexdigest() for blob in blobs]
    summary = json.loads(result.read_text())
    print(f"finished in {duration:.1f}s: datagram {summary['datagram']}, "
          f"steps down {summary['datagram_steps']}, executed {summary['executed']}")
    assert summary["executed"]["slave"] > 0  # the slave's jobs crossed the narrow end
    assert duration < 15.0  # about 2.3 s here; the master alone would take 3.2 s
    assert summary["datagram"]["master"] <= 1472
    if max_datagram == "auto":
        assert summary["datagram"] == {"master": 1472, "slave": 1472}
        assert summary["datagram_steps"] == 0
    else:
        assert summary["datagram_steps"] >= 1
