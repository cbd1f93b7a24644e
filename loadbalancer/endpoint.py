"""Asyncio glue between a UDP socket and the pure :class:`Connection`.

It feeds the connection datagrams and ``loop.time()``, sends what it returns,
and keeps a single timer armed at the connection's next deadline, as aioquic's
asyncio protocol does. Events are handed to one callback, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, cast

from loadbalancer import gso, wire
from loadbalancer.addresses import Address
from loadbalancer.session import Connection, Event

RECEIVE_BUFFER = 4 * 2**20
# The connection's timer is handled this long after it comes due. uvloop (libuv) runs
# due timers before it reads the sockets, so a loop that was held up (a busy machine,
# the GIL) would declare a fragment lost while the ack that saves it waits unread; a
# millisecond later the sockets have been read. (asyncio's own loop reads them first.)
TIMER_GRACE = 0.001
# Linux's getsockopt names for a connected socket's path MTU (<linux/in.h>, <linux/in6.h>).
IP_MTU, IPV6_MTU = 14, 24

log = logging.getLogger(__name__)


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


class Endpoint(asyncio.DatagramProtocol):
    def __init__(self, connection: Connection, on_event: Callable[[Event], None], *,
                 offload: bool = True) -> None:
        self.connection = connection
        self.on_event = on_event
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_pending = False
        # The transport's socket, for the sends it cannot make: a burst of datagrams in one
        # GSO sendmsg (asyncio's transports have no sendmsg). None: one datagram a send.
        self._offload: socket.socket | None = None
        self._offload_wanted = offload

    async def bind(self, local: Address) -> None:
        transport, _ = await self.loop.create_datagram_endpoint(lambda: self, local_addr=local)
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            # Room for a burst of fragments: the kernel caps this at rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        if self._offload_wanted:
            self._offload = offload_socket(sock.fileno())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.flush()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        self.connection.receive_datagram(data, (str(addr[0]), int(addr[1])), self.loop.time())
        # A burst of datagrams read in one turn of the loop is answered once:
        # one ack for many fragments, one timer re-arm.
        if not self._flush_pending:
            self._flush_pending = True
            self.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_pending = False
        self.flush()

    def error_received(self, exc: Exception) -> None:
        """ICMP port unreachable while the peer is down: HELLO and retransmission cover it."""

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
        """Send what the connection has to send; False once the transport is closed."""
        if self.transport is None or self.transport.is_closing():
            return False
        datagrams = self.connection.datagrams_to_send(self.loop.time())
        if self._offload is None:
            for data, address in datagrams:
                self.transport.sendto(data, address)
            return True
        for burst in gso.bursts(datagrams):
            # Behind datagrams the transport queued, a burst would overtake them.
            if len(burst.datagrams) == 1 or self._queued() or not self._send_burst(burst):
                for datagram in burst.datagrams:
                    self.transport.sendto(datagram, burst.address)
        return True

    def _queued(self) -> int:
        """Bytes the transport holds until the socket takes them (both loops' datagram
        transports have the method; the stubs give it only to stream transports)."""
        return int(cast(asyncio.WriteTransport, self.transport).get_write_buffer_size())

    def _send_burst(self, burst: gso.Burst) -> bool:
        """One GSO send of the burst; False if it is to go a datagram at a time."""
        assert self._offload is not None
        try:
            self._offload.sendmsg(burst.datagrams, burst.control(), 0, burst.address)
        except BlockingIOError:
            return False  # the transport queues them until the socket takes more
        except OSError as error:
            if error.errno not in gso.REFUSED:
                return True  # as a datagram lost on the way would be: the channel resends
            log.debug("UDP segmentation offload refused (%s): one datagram a send from now",
                      error.strerror)
            self._offload.close()
            self._offload = None
            return False
        return True

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
        if self._offload is not None:
            self._offload.close()  # a duplicate of the transport's descriptor
            self._offload = None
        if self.transport is not None:
            self.transport.close()


def offload_socket(fd: int) -> socket.socket | None:
    """A socket of our own on a duplicate of ``fd``, for GSO sends; None (said once, at
    debug level) where the system has no UDP segmentation offload."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        own = socket.socket(fileno=os.dup(fd))
    except OSError:
        return None
    try:
        own.getsockopt(socket.IPPROTO_UDP, gso.UDP_SEGMENT)  # EOPNOTSUPP/ENOPROTOOPT before 4.18
    except OSError as error:
        own.close()
        log.debug("no UDP segmentation offload (%s): one datagram a send", error.strerror)
        return None
    own.setblocking(False)
    return own
