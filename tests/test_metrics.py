"""`lb launch --metrics`: the node's status in the Prometheus text format."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_cli import lb, one_line_error
from test_init import invoke, one_error

from loadbalancer import control, metrics
from loadbalancer.testing.loopback import Cluster

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def scrape(address: tuple[str, int]) -> Samples:
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=5) as answer:
        return parse(answer.read().decode())


def tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


STATUS: dict[str, Any] = {
    "role": "master", "phase": "processing", "queued": 120, "running": 1, "executed": 300,
    "failed": 2, "bootstrap": 500,
    "throttle": 0.7, "workers": 2, "cpu": 63.5, "speed": 7.1, "eta": None, "job_seconds": 0.2,
    "peer": "connected", "moved_out": 40, "moved_in": 12, "retransmits": 3, "spurious": 1,
    "dropped": {"bad_tag": 2, "stale_session": 5}, "suppressed": 4, "bytes_sent": 123456,
    "refused": 1, "policy": "sender", "total": 1024, "finished": 512,
}


def collected(status: dict[str, Any] | None) -> Samples:
    registry = CollectorRegistry()
    registry.register(metrics.NodeCollector(lambda: status))
    return parse(generate_latest(registry).decode())


def test_every_status_figure_becomes_a_metric() -> None:
    samples = collected(STATUS)
    role = {"role": "master"}
    assert value(samples, "lb_info", **role, policy="sender", version="0.1.0") == 1
    for name, key in [("lb_queued_jobs", "queued"), ("lb_running_jobs", "running"),
                      ("lb_throttle", "throttle"), ("lb_workers", "workers"),
                      ("lb_cpu_percent", "cpu"), ("lb_speed_jobs_per_second", "speed"),
                      ("lb_job_seconds", "job_seconds"), ("lb_workload_jobs", "total"),
                      ("lb_jobs_executed_total", "executed"), ("lb_jobs_failed_total", "failed"),
                      ("lb_jobs_bootstrap_total", "bootstrap"),
                      ("lb_jobs_finished_total", "finished"), ("lb_jobs_refused_total", "refused"),
                      ("lb_bytes_sent_total", "bytes_sent"),
                      ("lb_retransmits_total", "retransmits"),
                      ("lb_retransmits_spurious_total", "spurious"),
                      ("lb_duplicates_suppressed_total", "suppressed")]:
        assert value(samples, name, **role) == STATUS[key], name
    assert value(samples, "lb_jobs_moved_total", **role, direction="out") == 40
    assert value(samples, "lb_jobs_moved_total", **role, direction="in") == 12
    assert value(samples, "lb_dropped_total", **role, reason="stale_session") == 5
    assert value(samples, "lb_dropped_total", **role, reason="bad_tag") == 2
    phases = {dict(labels)["phase"]: v for (name, labels), v in samples.items()
              if name == "lb_phase"}
    assert phases == {"waiting": 0, "processing": 1, "aggregating": 0, "done": 0}
    peer = {dict(labels)["state"]: v for (name, labels), v in samples.items() if name == "lb_peer"}
    assert peer == {"waiting": 0, "connected": 1, "lost": 0, "left": 0}
    # An unknown figure is left out rather than shown as a made-up number.
    assert not any(name == "lb_eta_seconds" for name, _ in samples)


def test_a_slave_has_no_workload_total_and_a_new_phase_still_shows() -> None:
    samples = collected(STATUS | {"role": "slave", "total": None, "phase": "draining"})
    assert not any(name == "lb_workload_jobs" for name, _ in samples)
    assert value(samples, "lb_phase", role="slave", phase="draining") == 1
    assert value(samples, "lb_phase", role="slave", phase="processing") == 0


def test_nothing_of_the_node_before_it_has_started() -> None:
    assert collected(None) == {}


def test_the_server_serves_and_closes() -> None:
    server = metrics.serve(("127.0.0.1", tcp_port()), lambda: STATUS)
    try:
        samples = scrape(server.address)
        assert value(samples, "lb_queued_jobs", role="master") == 120
        assert any(name == "process_resident_memory_bytes" for name, _ in samples)
    finally:
        server.close()
    with pytest.raises(OSError):
        scrape(server.address)


def test_a_taken_address_names_itself() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = taken.getsockname()
        with pytest.raises(OSError, match=f"metrics address 127.0.0.1:{address[1]}"):
            metrics.serve(address, lambda: STATUS)


@pytest.mark.parametrize(("address", "words"), [
    ("nonsense", ["--metrics", "HOST:PORT", "nonsense"]),
    ("127.0.0.1:0", ["--metrics", "port from 1 to 65535"]),
    ("127.0.0.1:http", ["--metrics", "127.0.0.1:http"]),
])
def test_bad_metrics_address_exits_2(address: str, words: list[str]) -> None:
    one_error(invoke("launch", "--role", "master", "--metrics", address), 2, *words)


def test_a_taken_metrics_port_stops_the_start(cluster: Cluster) -> None:
    cluster.configure(jobs=8, elements_per_job=16, iterations=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_error(lb("launch", "--role", "master", "--config", str(cluster.config),
                          "--metrics", f"127.0.0.1:{port}"), 1,
                       "cannot start the master", f"metrics address 127.0.0.1:{port}")


# Figures that stay put once both nodes are stopped; cpu and bytes (state messages) do not.
STILL = ("queued", "running", "executed", "throttle", "workers", "finished", "total",
         "moved_out", "moved_in", "refused", "retransmits", "spurious", "suppressed", "dropped",
         "phase",
         "peer", "job_seconds", "speed", "eta")
GAUGES = {"queued": "lb_queued_jobs", "running": "lb_running_jobs", "throttle": "lb_throttle",
          "workers": "lb_workers", "speed": "lb_speed_jobs_per_second",
          "job_seconds": "lb_job_seconds", "total": "lb_workload_jobs"}
COUNTERS = {"executed": "lb_jobs_executed_total", "finished": "lb_jobs_finished_total",
            "refused": "lb_jobs_refused_total", "retransmits": "lb_retransmits_total",
            "spurious": "lb_retransmits_spurious_total",
            "suppressed": "lb_duplicates_suppressed_total"}


def still(status: dict[str, Any]) -> dict[str, Any]:
    return {key: status[key] for key in STILL}


def ask(cluster: Cluster, role: str, **request: Any) -> dict[str, Any]:
    # Straight to the control socket: polling through `lb status` costs a process each time.
    return control.request(cluster.directory / "run" / f"{role}.sock", request)


def wait_until(cluster: Cluster, role: str, check: Callable[[dict[str, Any]], bool],
               pause: float = 0.05, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = ask(cluster, role, cmd="status")
        if check(status):
            return status
        time.sleep(pause)
    pytest.fail(f"the {role} never reached the expected state:\n{cluster.log(role)}")


def settle(cluster: Cluster, role: str) -> None:
    """Until the node's figures hold still across a state interval (0.5 s)."""
    previous: list[dict[str, Any]] = []

    def unchanged(status: dict[str, Any]) -> bool:
        now = still(status["local"])
        same = previous == [now]
        previous[:] = [now]
        return same

    wait_until(cluster, role, unchanged, pause=0.6)


def test_status_and_metrics_agree_on_a_running_node(cluster: Cluster) -> None:
    # Jobs of ~40 ms and plenty of them: the run is still going when both nodes are stopped.
    cluster.configure(policy="symmetric", jobs=256, elements_per_job=32768, iterations=4000)
    addresses = {role: ("127.0.0.1", tcp_port()) for role in ("master", "slave")}
    cluster.start("slave", "--metrics", f"127.0.0.1:{addresses['slave'][1]}")
    cluster.wait_until_up("slave")
    cluster.start("master", "--metrics", f"127.0.0.1:{addresses['master'][1]}")
    cluster.wait_until_up("master")
    wait_until(cluster, "slave", lambda s: s["local"]["executed"] >= 3)
    # The slave stopped hands its queue to the master. Once the master knows it, the master
    # is stopped too, and holds its queue: both stopped, nothing moves any more.
    ask(cluster, "slave", cmd="throttle", value=0)
    wait_until(cluster, "master", lambda s: s["remote"] is not None
               and s["remote"]["throttle"] == 0 and s["remote"]["queued"] == 0)
    ask(cluster, "master", cmd="throttle", value=0)
    settle(cluster, "master")
    settle(cluster, "slave")

    for role, address in addresses.items():
        before = cluster.status(role)  # what `lb status --json` prints
        samples = scrape(address)
        after = ask(cluster, role, cmd="status")
        assert before is not None
        status = before["local"]
        assert still(status) == still(after["local"]), "the node moved while being measured"
        assert status["executed"] > 0 and status["throttle"] == 0
        # A spurious retransmission is one of the retransmissions; the peer shows it too.
        assert 0 <= status["spurious"] <= status["retransmits"]
        assert before["remote"] is not None and "spurious" in before["remote"]
        labels = {"role": role}
        for key, name in GAUGES.items():
            if status[key] is None:
                assert not any(n == name for n, _ in samples), name
            else:
                assert value(samples, name, **labels) == status[key], name
        for key, name in COUNTERS.items():
            assert value(samples, name, **labels) == status[key], name
        assert value(samples, "lb_jobs_moved_total", **labels, direction="out") == \
            status["moved_out"]
        assert value(samples, "lb_jobs_moved_total", **labels, direction="in") == \
            status["moved_in"]
        for reason, count in status["dropped"].items():
            assert value(samples, "lb_dropped_total", **labels, reason=reason) == count
        assert value(samples, "lb_phase", **labels, phase=status["phase"]) == 1
        assert value(samples, "lb_peer", **labels, state="connected") == 1
        assert status["peer"] == "connected"
        assert before["local"]["bytes_sent"] <= value(samples, "lb_bytes_sent_total", **labels) \
            <= after["local"]["bytes_sent"]
        if role == "master":
            assert status["moved_in"] > 0  # the slave's queue came back when it stopped
            assert value(samples, "lb_workload_jobs", **labels) == 256
            assert not any(n == "lb_eta_seconds" for n, _ in samples)  # stopped with work left
