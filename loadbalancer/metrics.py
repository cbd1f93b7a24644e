"""Prometheus metrics of one node: its status, read at scrape time.

The collector turns one ``Node.status()`` into metric families, so a scrape,
``lb status --json`` and the dashboard all show the same numbers. Every
series carries a ``role`` label, so both nodes' series stay apart when one
Prometheus scrapes both.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from loadbalancer import __version__
from loadbalancer.addresses import Address, format_address

StatusSource = Callable[[], dict[str, Any] | None]
PHASES = ("waiting", "processing", "aggregating", "done")
PEER_STATES = ("waiting", "connected", "lost", "left")

# (metric, status key, help) for the plain numbers of a status.
GAUGES = (
    ("lb_queued_jobs", "queued", "Jobs waiting in this node's queue."),
    ("lb_running_jobs", "running", "Jobs being computed now."),
    ("lb_throttle", "throttle", "Duty cycle, from 0 (stopped) to 1 (full speed)."),
    ("lb_workers", "workers", "Jobs this node runs at once (worker processes or threads)."),
    ("lb_cpu_percent", "cpu", "CPU use of the node's process, in percent of one core."),
    ("lb_speed_jobs_per_second", "speed", "Jobs per second at the current throttle."),
    ("lb_eta_seconds", "eta", "Seconds until this node's pending jobs are done at this speed."),
    ("lb_job_seconds", "job_seconds", "Compute seconds of one job at full speed (moving average)."),
    ("lb_workload_jobs", "total", "Jobs in the whole workload (master only)."),
)
STATES = (
    ("lb_phase", "phase", "phase", PHASES, "The node's phase: 1 for the current one."),
    ("lb_peer", "peer", "state", PEER_STATES, "The peer as this node sees it: 1 for the "
     "current state."),
)
COUNTERS = (
    ("lb_jobs_executed", "executed", "Jobs this node computed."),
    ("lb_jobs_failed", "failed", "Runs of jobs that raised on this node (each may be retried)."),
    ("lb_jobs_finished", "finished",
     "Results the master holds; on the slave, results the master acknowledged."),
    ("lb_jobs_refused", "refused", "Jobs or results refused as invalid."),
    ("lb_jobs_bootstrap", "bootstrap", "Jobs handed over when a session opened: sent by the "
     "master, received by the slave (not counted in lb_jobs_moved_total)."),
    ("lb_bytes_sent", "bytes_sent", "Bytes of UDP datagrams sent."),
    ("lb_retransmits", "retransmits", "Datagrams sent again after a loss."),
    ("lb_retransmits_spurious", "spurious", "Of those, the ones whose original the peer "
     "received after all: the retransmission timer was too quick."),
    ("lb_duplicates_suppressed", "suppressed", "Duplicate datagrams or messages ignored."),
)


class NodeCollector:
    """A prometheus_client collector that asks ``status`` for the node's state at each scrape.

    ``status`` answers None until the node has started: there is nothing to report yet.
    """

    def __init__(self, status: StatusSource) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        if status is None:
            return
        role = str(status["role"])
        info = InfoMetricFamily("lb", "The node's role, policy and lb version.", labels=["role"])
        info.add_metric([role], {"policy": str(status["policy"]), "version": __version__})
        yield info
        for name, key, text in GAUGES:
            if status.get(key) is not None:  # not known yet (speed, ETA) or not here (total)
                gauge = GaugeMetricFamily(name, text, labels=["role"])
                gauge.add_metric([role], float(status[key]))
                yield gauge
        for name, key, label, known, text in STATES:
            # One series per state, 1 for the current one, so that alerts match on the label.
            current = str(status[key])
            state = GaugeMetricFamily(name, text, labels=["role", label])
            for value in dict.fromkeys((*known, current)):
                state.add_metric([role, value], float(value == current))
            yield state
        for name, key, text in COUNTERS:
            counter = CounterMetricFamily(name, text, labels=["role"])
            counter.add_metric([role], float(status[key]))
            yield counter
        moved = CounterMetricFamily("lb_jobs_moved", "Jobs handed to the peer (out) or taken "
                                    "from it (in).", labels=["role", "direction"])
        moved.add_metric([role, "out"], float(status["moved_out"]))
        moved.add_metric([role, "in"], float(status["moved_in"]))
        yield moved
        dropped = CounterMetricFamily("lb_dropped", "Datagrams or messages dropped, by reason.",
                                      labels=["role", "reason"])
        for reason, count in sorted(status["dropped"].items()):
            dropped.add_metric([role, reason], float(count))
        yield dropped


@dataclass
class MetricsServer:
    """The HTTP server of ``lb launch --metrics``, serving in a thread of its own."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def address(self) -> Address:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def serve(address: Address, status: StatusSource) -> MetricsServer:
    """Serve the node's metrics (and its process's) at http://HOST:PORT/metrics.

    Raises OSError naming the address when it cannot be bound.
    """
    registry = CollectorRegistry()
    registry.register(NodeCollector(status))
    ProcessCollector(registry=registry)  # memory, CPU seconds, open files: the usual ones
    host, port = address
    try:
        # It returns the server and its thread (prometheus-client 0.20 on): the node's end
        # can shut it down.
        server, thread = start_http_server(port, host, registry)
    except OSError as error:
        raise OSError(error.errno, f"metrics address {format_address(address)}: "
                                   f"{error.strerror}") from None
    return MetricsServer(server, thread)
