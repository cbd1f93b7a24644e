"""UDP segmentation offload: bursts as the kernel takes them, and plain datagrams where it
refuses them."""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import socket
from typing import Any

import pytest

from loadbalancer import gso, local
from loadbalancer.endpoint import Endpoint
from loadbalancer.reliable import MessageReceived
from loadbalancer.session import Connection, Event, PeerJoined
from loadbalancer.wire import Keys, Kind, Role

A, B = ("127.0.0.1", 1), ("127.0.0.1", 2)


def shapes(datagrams: list[tuple[bytes, tuple[str, int]]]) -> list[tuple[Any, int, list[int]]]:
    return [(burst.address, burst.size, [len(d) for d in burst.datagrams])
            for burst in gso.bursts(datagrams)]


def test_a_burst_is_datagrams_of_one_size_to_one_address_the_last_perhaps_shorter() -> None:
    full, short = b"x" * 1000, b"y" * 300
    assert shapes([(full, A), (full, A), (short, A), (full, A), (full, B), (short, B)]) == [
        (A, 1000, [1000, 1000, 300]),  # a shorter one ends the burst
        (A, 1000, [1000]),
        (B, 1000, [1000, 300])]
    assert shapes([(short, A), (full, A)]) == [(A, 300, [300]), (A, 1000, [1000])]


def test_a_burst_holds_at_most_64_segments_and_64_kib() -> None:
    tiny = [(b"a" * 10, A)] * 130
    assert [len(b.datagrams) for b in gso.bursts(tiny)] == [64, 64, 2]
    big = [(b"b" * 9000, A)] * 10
    assert [len(b.datagrams) for b in gso.bursts(big)] == [7, 3]  # 7 * 9000 <= 65,507


class Counting:
    """The endpoint's offload socket, its sends counted, or refused as a device without
    checksum offload refuses them."""

    def __init__(self, sock: socket.socket, refuse: bool) -> None:
        self.sock, self.refuse, self.sends, self.closed = sock, refuse, 0, False

    def sendmsg(self, buffers: list[bytes], control: Any, flags: int, address: Any) -> int:
        self.sends += 1
        if self.refuse:
            raise OSError(errno.EIO, "Input/output error")
        return self.sock.sendmsg(buffers, control, flags, address)

    def close(self) -> None:
        self.closed = True
        self.sock.close()


async def transfer(refuse: bool, payload: bytes) -> tuple[bytes, Counting]:
    """One message from one endpoint to another on loopback, in 1,472-byte datagrams."""
    loop = asyncio.get_running_loop()
    key = Keys(secrets.token_urlsafe(32))
    ports = {Role.MASTER: local.free_port(), Role.SLAVE: local.free_port()}
    joined, received = asyncio.Event(), loop.create_future()

    def on_event(event: Event) -> None:
        if isinstance(event, PeerJoined):
            joined.set()
        elif isinstance(event, MessageReceived) and not received.done():
            received.set_result(event.payload)

    endpoints = []
    for role in (Role.MASTER, Role.SLAVE):
        connection = Connection(role, key, peer_address=("127.0.0.1", ports[role.peer]),
                                new_incarnation=lambda: 1, now=loop.time(), max_datagram=1472)
        endpoint = Endpoint(connection, on_event)
        await endpoint.bind(("127.0.0.1", ports[role]))
        endpoints.append(endpoint)
    sender = endpoints[0]
    if sender._offload is None:
        pytest.skip("no UDP segmentation offload here")
    counting = Counting(sender._offload, refuse)
    sender._offload = counting  # type: ignore[assignment]
    try:
        await asyncio.wait_for(joined.wait(), 10)
        sender.connection.send(Kind.JOBS, payload, loop.time())
        sender.flush()
        return await asyncio.wait_for(received, 20), counting
    finally:
        for endpoint in endpoints:
            endpoint.close()


def test_a_message_goes_in_bursts_each_datagram_still_its_own() -> None:
    payload = secrets.token_bytes(300_000)  # about 200 datagrams
    got, counting = asyncio.run(transfer(False, payload))
    assert got == payload
    assert 0 < counting.sends < 50  # a send carries many datagrams: not one a datagram


def test_a_refused_offload_falls_back_to_plain_datagrams_once_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    payload = secrets.token_bytes(300_000)
    with caplog.at_level(logging.DEBUG, logger="loadbalancer.endpoint"):
        got, counting = asyncio.run(transfer(True, payload))
    assert got == payload  # every datagram went, one a send
    assert counting.sends == 1 and counting.closed  # asked once, then never again
    said = [r for r in caplog.records if "offload refused" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.DEBUG
