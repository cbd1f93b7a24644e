"""UDP segmentation and receive offloads: bursts as the kernel takes and hands them over,
and plain datagrams where it has or refuses neither."""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from loadbalancer import gso, local, udpsocket
from loadbalancer.addresses import Address
from loadbalancer.endpoint import Endpoint
from loadbalancer.reliable import MessageReceived
from loadbalancer.session import Connection, Event, PeerJoined
from loadbalancer.udpsocket import UdpSocket
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


def test_a_burst_read_is_cut_into_its_datagrams_the_last_perhaps_shorter() -> None:
    burst = b"a" * 1000 + b"b" * 1000 + b"c" * 300
    assert [bytes(d) for d in gso.segments(burst, 1000)] == [b"a" * 1000, b"b" * 1000,
                                                            b"c" * 300]
    assert all(isinstance(d, memoryview) for d in gso.segments(burst, 1000))  # no copies
    assert gso.segments(burst, None) == [burst]  # a read without GRO is one datagram
    assert gso.segments(b"x" * 500, 1000) == [b"x" * 500]


def test_the_segment_size_is_read_from_the_ancillary_data_only_when_stated() -> None:
    stated = [(gso.SOL_UDP, gso.UDP_GRO, gso.GRO_SIZE.pack(1472))]
    assert gso.segment_size(stated) == 1472
    assert gso.segment_size([]) is None
    assert gso.segment_size([(gso.SOL_UDP, gso.UDP_GRO, b"")]) is None  # cut short
    assert gso.segment_size([(gso.SOL_UDP, gso.UDP_GRO, gso.GRO_SIZE.pack(0))]) is None
    assert gso.segment_size([(0, gso.UDP_GRO, gso.GRO_SIZE.pack(1472))]) is None


class Counting:
    """A UdpSocket's socket, its GSO sends counted, or refused as a device without checksum
    offload refuses them; everything else goes to the socket."""

    def __init__(self, sock: socket.socket, refuse: bool) -> None:
        self.sock, self.refuse, self.sends, self.closed = sock, refuse, 0, False

    def sendmsg(self, buffers: list[bytes], control: Any, flags: int, address: Any) -> int:
        self.sends += 1
        if self.refuse:
            raise OSError(errno.EIO, "Input/output error")
        return self.sock.sendmsg(buffers, control, flags, address)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@dataclass
class Transfer:
    payload: bytes  # as it arrived
    sender: UdpSocket
    receiver: UdpSocket
    gso_sends: int  # sendmsg calls with a burst
    reads: int  # bursts or datagrams the receiver read
    datagrams: int  # datagrams the receiver read


async def transfer(payload: bytes, *, refuse: bool = False, offload: bool = True,
                   gro: bool = True) -> Transfer:
    """One message from one endpoint to another on loopback, in 1,472-byte datagrams;
    ``gro`` False: the receiver reads a datagram at a time though it could take bursts."""
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
        endpoint = Endpoint(connection, on_event, offload=offload)
        await endpoint.bind(("127.0.0.1", ports[role]))
        endpoints.append(endpoint)
    sender, receiver = (endpoint.socket for endpoint in endpoints)
    assert sender is not None and receiver is not None
    if offload and not (sender.gso and receiver.gro):
        pytest.skip("no UDP segmentation or receive offload here")
    if not gro:
        receiver._sock.setsockopt(socket.IPPROTO_UDP, gso.UDP_GRO, 0)
    counting = Counting(sender._sock, refuse)
    sender._sock = counting  # type: ignore[assignment]
    reads: list[int] = []
    deliver = receiver._on_datagrams

    def counted(datagrams: Sequence[gso.Segment], address: Address) -> None:
        reads.append(len(datagrams))
        deliver(datagrams, address)

    receiver._on_datagrams = counted
    try:
        await asyncio.wait_for(joined.wait(), 10)
        reads.clear()
        endpoints[0].connection.send(Kind.JOBS, payload, loop.time())
        endpoints[0].flush()
        got = await asyncio.wait_for(received, 20)
        return Transfer(got, sender, receiver, counting.sends, len(reads), sum(reads))
    finally:
        for endpoint in endpoints:
            endpoint.close()


PAYLOAD = secrets.token_bytes(300_000)  # about 210 datagrams of 1,472 bytes


def test_a_message_goes_and_arrives_in_bursts_each_datagram_still_its_own() -> None:
    done = asyncio.run(transfer(PAYLOAD))
    assert done.payload == PAYLOAD
    assert 0 < done.gso_sends < 50  # a send carries many datagrams: not one a datagram
    assert done.datagrams >= 205  # every fragment, and the ones that went again
    assert done.reads < done.datagrams / 4  # loopback hands a GSO burst over whole


def test_a_receiver_without_gro_reads_a_burst_as_the_kernel_cut_it() -> None:
    done = asyncio.run(transfer(PAYLOAD, gro=False))
    assert done.payload == PAYLOAD
    assert done.reads == done.datagrams  # one datagram a read


def test_without_offload_every_datagram_is_a_system_call_of_its_own() -> None:
    done = asyncio.run(transfer(PAYLOAD, offload=False))
    assert done.payload == PAYLOAD
    assert not (done.sender.gso or done.receiver.gro)
    assert done.gso_sends == 0 and done.reads == done.datagrams


def test_a_refused_offload_falls_back_to_plain_datagrams_once_and_says_so(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="loadbalancer.udpsocket"):
        done = asyncio.run(transfer(PAYLOAD, refuse=True))
    assert done.payload == PAYLOAD  # every datagram went, one a send
    assert done.gso_sends == 1 and not done.sender.gso  # asked once, then never again
    said = [r for r in caplog.records if "offload refused" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.DEBUG


def test_the_socket_states_the_buffer_the_kernel_granted_and_says_when_it_is_short(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    async def bound() -> int:
        sock = await UdpSocket.bind(("127.0.0.1", 0), lambda datagrams, address: None)
        try:
            return sock.receive_buffer
        finally:
            sock.close()

    granted = asyncio.run(bound())
    assert 0 < granted <= udpsocket.RECEIVE_BUFFER
    # More than any system grants: the kernel caps it, and the node says so.
    monkeypatch.setattr(udpsocket, "RECEIVE_BUFFER", 2**30)
    with caplog.at_level(logging.INFO, logger="loadbalancer.udpsocket"):
        capped = asyncio.run(bound())
    assert capped < 2**30
    said = [r.getMessage() for r in caplog.records if "receive buffer" in r.getMessage()]
    assert len(said) == 1 and "rmem_max" in said[0]
