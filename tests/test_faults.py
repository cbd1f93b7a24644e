"""Nothing lost: runs over a bad network, with hostile datagrams, verify."""

from __future__ import annotations

import pytest

from loadbalancer.testing.faultproxy import Faults
from loadbalancer.testing.loopback import Cluster

SMALL = {"jobs": 256, "elements_per_job": 8192, "iterations": 3000}
BAD_NETWORK = Faults(loss=0.2, duplicate=0.1, reorder=0.1, delay=0.02, jitter=0.01)


@pytest.mark.parametrize("policy", ["none", "sender", "receiver", "symmetric"])
def test_every_policy_verifies_over_a_bad_network(cluster: Cluster, policy: str) -> None:
    cluster.configure(policy=policy, **SMALL)
    cluster.add_proxy(BAD_NETWORK, seed=7)
    cluster.start_both()
    assert cluster.wait() == {"slave": 0, "master": 0}, cluster.log("master")
    result = cluster.result()
    stats = cluster.stop_proxy()
    assert result["verified"] is True
    # The proxy really did its damage, both ways.
    for direction in ("to_slave", "to_master"):
        assert stats[direction]["dropped"] > 0
        assert stats[direction]["duplicated"] > 0
    assert result["retransmits"] > 0
    assert result["duplicates_suppressed"] > 0
    executed = result["executed"]["master"] + result["executed"]["slave"]
    assert executed >= 256
