"""The datagram size, end to end: two nodes in network namespaces joined by a veth pair
whose ends have different MTUs, so the kernel drops frames too big for the slave's end
before lb sees them, and nothing says so."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_map import JOBS, read_output, write_inputs

from loadbalancer.testing import netns
from loadbalancer.testing.loopback import Cluster, ClusterError

RUN_TIMEOUT = 40.0
JOB_COUNT = 64
JOB_BYTES = 16 * 1024  # random: each job's data is incompressible, so JOBS go full-size


@pytest.fixture
def namespaces() -> Iterator[netns.Namespaces]:
    """The master's end at MTU 9000, the slave's at 1500."""
    why = netns.available()
    if why is not None:
        pytest.skip(why)
    try:
        made = netns.Namespaces(master_mtu=9000, slave_mtu=1500)
    except netns.NamespaceError as error:
        pytest.skip(f"cannot make network namespaces and a veth pair here: {error}")
    with made:
        yield made


@pytest.mark.parametrize("max_datagram", [
    pytest.param("auto", id="each node takes its route's MTU: they agree on the smaller"),
    pytest.param(8972, id="both configured for jumbo frames: the black hole is found"),
])
def test_a_run_across_unequal_mtus_finishes_at_a_size_the_path_carries(
        namespaces: netns.Namespaces, tmp_path: Path, max_datagram: int | str) -> None:
    rng = random.Random(8)
    blobs = [rng.randbytes(JOB_BYTES) for _ in range(JOB_COUNT)]
    inputs = write_inputs(tmp_path / "in.jsonl", [[blob, 0.05] for blob in blobs])
    output = tmp_path / "out.jsonl"
    with Cluster(tmp_path, namespaces=namespaces) as pair:
        # A veth pair lets a GSO burst past its MTU check whole (it is cut into datagrams
        # of the segment size only at the socket), so the frames a real link would drop
        # arrive: the black hole is only one with a datagram a send.
        pair.configure(max_datagram=max_datagram, offload=max_datagram == "auto")
        pair.start("slave", "--workload-module", str(JOBS))
        pair.wait_until_up("slave")
        started = time.monotonic()
        pair.start("master", "--map", f"{JOBS}:digest", "--inputs", str(inputs),
                   "--output", str(output))
        try:
            codes = pair.wait(timeout=RUN_TIMEOUT)
        except ClusterError as error:
            pytest.fail(f"the run did not finish in {RUN_TIMEOUT:.0f}s: {error}\n"
                        f"{pair.log('master')}\n{pair.log('slave')}")
        duration = time.monotonic() - started
        assert codes == {"master": 0, "slave": 0}, pair.log("master")
    assert [line["result"] for line in read_output(output)] == [
        hashlib.sha256(blob).hexdigest() for blob in blobs]
    summary = json.loads((tmp_path / "result.json").read_text())
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
