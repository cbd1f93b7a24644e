"""Text from the peer reaches the log and the terminal escaped: it cannot forge a line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from loadbalancer import messages, wire
from loadbalancer.addresses import parse_address
from loadbalancer.dashboard import STATUS_ROWS
from loadbalancer.endpoint import Endpoint
from loadbalancer.messages import Jobs, Needs, Refuse, Verdict
from loadbalancer.reliable import MessageReceived
from loadbalancer.session import Connection, Event
from loadbalancer.testing.loopback import Cluster
from loadbalancer.wire import Kind, Role

# A line break, then what a forged log line would look like, and a terminal's clear-screen.
EVIL = "no room\n12:00:00.000 INFO master: verified\x1b[2J"
ESCAPED = "no room\\n12:00:00.000 INFO master: verified\\x1b[2J"


class FakeSlave:
    """A slave of our own, holding the secret, that says it can run the master's jobs, then
    refuses every job with EVIL and tells the master its phase is EVIL."""

    def __init__(self, settings: dict[str, object]) -> None:
        self.settings = settings
        self.events: asyncio.Queue[Event] = asyncio.Queue()

    async def open(self) -> Endpoint:
        loop = asyncio.get_running_loop()
        connection = Connection(
            Role.SLAVE, wire.Keys(str(self.settings["secret"])),
            peer_address=parse_address(self.settings["master"], "master"),
            new_incarnation=lambda: 10**15, now=loop.time())
        endpoint = Endpoint(connection, self.events.put_nowait)
        await endpoint.bind(parse_address(self.settings["slave"], "slave"))
        return endpoint

    async def refuse_jobs(self, endpoint: Endpoint) -> None:
        loop = asyncio.get_running_loop()
        while True:
            event = await asyncio.wait_for(self.events.get(), 20)
            if isinstance(event, MessageReceived) and event.kind is Kind.NEEDS:
                needs = messages.decode(Kind.NEEDS, event.payload)
                assert isinstance(needs, Needs)
                kind, payload = messages.encode(Verdict(needs.specs, []))
                endpoint.connection.send(kind, payload, loop.time())
                endpoint.flush()
            if isinstance(event, MessageReceived) and event.kind is Kind.JOBS:
                jobs = messages.decode(Kind.JOBS, event.payload)
                assert isinstance(jobs, Jobs)
                kind, payload = messages.encode(Refuse([job for job, _ in jobs.jobs], EVIL))
                endpoint.connection.send(kind, payload, loop.time())
                endpoint.flush()
                return

    @staticmethod
    def send_state(endpoint: Endpoint) -> None:
        # Throttle 0: the master (at 0 too) keeps its queue instead of handing it over again.
        endpoint.connection.send_state(messages.pack({
            "phase": EVIL, "peer": EVIL, "queued": 0, "running": 0, "throttle": 0.0,
            "workers": 1, "job_seconds": None, "sent_jobs": 0, "received_jobs": 0}))
        endpoint.flush()


async def wait_for(check: object, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"never saw {what}")
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_a_peer_s_reason_and_status_are_escaped_in_the_log_and_lb_status(
        cluster: Cluster, fmt: str) -> None:
    cluster.configure(jobs=16, elements_per_job=16, iterations=1)
    cluster.start("master", "--throttle", "0", "--log-format", fmt)
    await asyncio.to_thread(cluster.wait_until_up, "master")
    fake = FakeSlave(cluster.settings)
    endpoint = await fake.open()
    try:
        await fake.refuse_jobs(endpoint)
        await wait_for(lambda: "slave refused" in cluster.log("master"), "the refusal logged")
        fake.send_state(endpoint)
        status = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "loadbalancer", "status", "--role", "master",
                             "--config", str(cluster.config)],
            capture_output=True, text=True, timeout=30, env={**os.environ, "COLUMNS": "200"})
    finally:
        endpoint.close()
        cluster.stop()
    log = cluster.log("master")
    assert "\x1b" not in log
    lines = log.splitlines()
    refusals = [line for line in lines if "slave refused" in line]
    assert len(refusals) == 1 and refusals[0].rstrip('"}').endswith(" jobs")
    if fmt == "json":
        assert all(json.loads(line) for line in lines)  # every line is one whole object
        refusal = json.loads(refusals[0])["message"]
        assert refusal.startswith(f"master: slave refused ({ESCAPED}): ")
    else:
        assert f"INFO master: slave refused ({ESCAPED}): " in refusals[0]
        assert not any(line.startswith("12:00:00.000") for line in lines)
    assert status.returncode == 0, status.stderr
    assert "\x1b" not in status.stdout
    rows = {line.split("  ")[0]: line for line in status.stdout.splitlines()}
    # The header and a row a figure, whatever the peer said.
    assert len(status.stdout.splitlines()) == 1 + len(STATUS_ROWS)
    assert ESCAPED in rows["phase"] and ESCAPED in rows["peer"]  # the peer said
