"""Asyncio glue between a UDP socket and the pure :class:`Connection`.

It feeds the connection datagrams and ``loop.time()``, sends what it returns,
and keeps a single timer armed at the connection's next deadline, as aioquic's
asyncio protocol does. Events are handed to one callback, in order.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable, Sequence

from loadbalancer import gso, wire
from loadbalancer.addresses import Address
from loadbalancer.session import Connection, Event
from loadbalancer.udpsocket import UdpSocket

# The connection's timer is handled this long after it comes due. uvloop (libuv) runs
# due timers before it reads the sockets, so a loop that was held up (a busy machine,
# the GIL) would declare a fragment lost while the ack that saves it waits unread; a
# millisecond later the sockets have been read. (asyncio's own loop reads them first.)
TIMER_GRACE = 0.001
# Linux's getsockopt names for a connected socket's path MTU (<linux/in.h>, <linux/in6.h>).
IP_MTU, IPV6_MTU = 14, 24


async def resolve(address: Address) -> Address:
    """One numeric address for HOST:PORT, so sends need no lookup."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(address[0], address[1], type=socket.SOCK_DGRAM)
    if not infos:
        raise OSError(f"cannot resolve {address[0]}")
    host, port = infos[0][4][:2]
    return str(host), int(port)


def path_max_datagram(peer: Address) -> int:
    """The largest datagram the route to ``peer`` carries without IP fragmentation: its
    MTU less the IP and UDP headers, so loopback gets 65,507 bytes and Ethernet 1,472.
    Where the system does not say (not Linux), the size that is safe on any Ethernet."""
    if not sys.platform.startswith("linux"):
        return wire.DEFAULT_MAX_DATAGRAM
    v6 = ":" in peer[0]
    family, level, option = ((socket.AF_INET6, socket.IPPROTO_IPV6, IPV6_MTU) if v6
                             else (socket.AF_INET, socket.IPPROTO_IP, IP_MTU))
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(peer)  # picks the route; sends nothing
            mtu = probe.getsockopt(level, option)
    except OSError:
        return wire.DEFAULT_MAX_DATAGRAM
    headers = 48 if v6 else 28
    return max(wire.MIN_DATAGRAM, min(mtu - headers, wire.MAX_DATAGRAM))


class Endpoint:
    def __init__(self, connection: Connection, on_event: Callable[[Event], None], *,
                 offload: bool = True) -> None:
        self.connection = connection
        self.on_event = on_event
        self.loop = asyncio.get_running_loop()
        self.socket: UdpSocket | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_pending = False
        self._producers: list[asyncio.Future[None]] = []  # waiting in drained()
        self._offload = offload  # bursts of datagrams in one system call, both ways

    async def bind(self, local: Address) -> None:
        self.socket = await UdpSocket.bind(local, self._received, offload=self._offload)
        self.connection.receive_buffer(self.socket.receive_buffer)  # before our first HELLO
        self.flush()

    def _received(self, datagrams: Sequence[gso.Segment], address: Address) -> None:
        self.connection.receive_datagrams(datagrams, address, self.loop.time())
        # What is read in one turn of the loop is answered once: one ack for many
        # fragments, one timer re-arm.
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_pending = False
        self.flush()

    def flush(self) -> None:
        """Send pending datagrams, deliver pending events, send what they queued, re-arm
        the timer."""
        # What is owed goes first: acting on a message (the master's books, a slave's new
        # jobs) can take a while, and an ack held behind that is one the peer's timer
        # does not wait for.
        self._send()
        while (event := self.connection.next_event()) is not None:
            self.on_event(event)
        if self._send():
            self._arm()

    def _send(self) -> bool:
        """Send what the connection has to send; False once the socket is closed."""
        if self.socket is None or self.socket.closed:
            return False
        self.socket.send(self.connection.datagrams_to_send(self.loop.time()))
        self._wake_producers()
        return True

    async def drained(self, below: int) -> None:
        """Wait until fewer than ``below`` bytes of queued messages are unsent, or the
        session or the socket is gone: a producer of large messages makes them as they
        leave, so a node holds a window of copies, not a whole batch's."""
        while (self.connection.connected and self.connection.channel.unsent >= below
               and self.socket is not None and not self.socket.closed):
            waiter = self.loop.create_future()
            self._producers.append(waiter)
            await waiter

    def _wake_producers(self) -> None:
        waiting, self._producers = self._producers, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(None)

    def _arm(self) -> None:
        deadline = self.connection.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self.loop.call_at(deadline, self._fire)

    def _fire(self) -> None:
        # _timer_at stays: a flush meanwhile that finds the same deadline keeps this timer.
        self._timer = self.loop.call_later(TIMER_GRACE, self._expire)

    def _expire(self) -> None:
        self._timer = self._timer_at = None
        self.connection.handle_timer(self.loop.time())
        self.flush()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.socket is not None:
            self.socket.close()
        self._wake_producers()
