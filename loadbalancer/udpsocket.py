"""A UDP socket on the event loop, read and written by lb rather than by an asyncio transport.

asyncio's datagram transports (uvloop's too) neither send with ancillary data nor pass
it up, and both of Linux's UDP offloads live there: a send with ``UDP_SEGMENT`` carries a
burst of datagrams that the kernel cuts apart (GSO), and a socket with ``UDP_GRO`` is
handed a burst that stayed whole on its way (loopback and veth deliver a GSO burst as it
was sent) or that the receiving device coalesced, with the segment size beside it. Taking
a burst in one ``recvmsg`` and one turn of Python, rather than a call and a callback a
datagram, is most of what a receiving node saves. Each segment is still a whole lb
datagram with its own tag, so a lost or forged one costs that datagram, not the burst.

Where an offload is missing (not Linux, a kernel before 4.18 or 5.0) or refused (``EIO``
from a device without checksum offload), the socket says so once, at debug level, and
sends or reads one datagram a call from then on. When the socket is full, what could not
go waits in order and goes when it is writable again, as a transport would buffer it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import sys
from collections.abc import Callable, Iterable, Sequence

from loadbalancer import gso
from loadbalancer.addresses import Address

RECEIVE_BUFFER = 4 * 2**20  # room for bursts of fragments; the kernel caps it at rmem_max
READ_SIZE = 65535  # the largest UDP payload, and the largest burst GRO hands over
# Datagrams read before the loop's other work (our acks first) gets its turn back: as
# many as libuv reads a turn. Reading on while bursts keep coming held acks back for
# thousands of datagrams, and the peer's window and timers with them.
DATAGRAMS_PER_TURN = 32
Received = Callable[[Sequence[gso.Segment], Address], None]

log = logging.getLogger(__name__)


class UdpSocket:
    """A bound non-blocking UDP socket: ``send`` what the connection returns; every
    datagram read goes to ``on_datagrams`` with its source, a burst at a time."""

    def __init__(self, sock: socket.socket, on_datagrams: Received, *, offload: bool) -> None:
        self.loop = asyncio.get_running_loop()
        self._sock = sock
        sock.setblocking(False)
        self.receive_buffer = _receive_buffer(sock)
        self.gso = offload and _offers(sock, gso.UDP_SEGMENT, "segmentation")
        self.gro = offload and _enable_gro(sock)
        self._ancillary = socket.CMSG_SPACE(gso.GRO_SIZE.size) if self.gro else 0
        self._on_datagrams = on_datagrams
        # Read into one buffer and copied out at the size read, as libuv does, rather
        # than a new 64 KiB object a read, shrunk after.
        self._buffer = bytearray(READ_SIZE)
        self._view = memoryview(self._buffer)
        self._backlog: collections.deque[gso.Burst] = collections.deque()
        self.closed = False
        self.loop.add_reader(sock.fileno(), self._readable)

    @classmethod
    async def bind(cls, local: Address, on_datagrams: Received, *,
                   offload: bool = True) -> UdpSocket:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(local[0], local[1], type=socket.SOCK_DGRAM,
                                       flags=socket.AI_PASSIVE)
        if not infos:
            raise OSError(f"cannot resolve {local[0]}")
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.bind(address)
            return cls(sock, on_datagrams, offload=offload)
        except BaseException:
            sock.close()
            raise

    # ---- sending ------------------------------------------------------------------
    def send(self, datagrams: Iterable[tuple[gso.Datagram, Address]]) -> None:
        """Send in order, in bursts where the offload allows; what the socket cannot take
        now waits, and later datagrams wait behind it rather than overtaking it."""
        if self.closed:
            return
        for burst in gso.bursts(datagrams):
            if self._backlog or not self._sent(burst):
                self._wait(burst)

    def _sent(self, burst: gso.Burst) -> bool:
        """Send ``burst``; False, with what did not go left in it, if the socket is full."""
        if self.gso and len(burst.datagrams) > 1:
            try:
                self._sock.sendmsg(burst.datagrams, burst.control(), 0, burst.address)
                return True
            except BlockingIOError:
                return False
            except OSError as error:
                if error.errno not in gso.REFUSED:
                    return True  # as a datagram lost on the way would be: the channel resends
                log.debug("UDP segmentation offload refused (%s): one datagram a send from "
                          "now", error.strerror)
                self.gso = False
        while burst.datagrams:
            try:
                self._sock.sendto(burst.datagrams[0], burst.address)
            except BlockingIOError:
                return False
            except OSError:
                pass  # lost on the way, as far as the channel can tell
            burst.drop_first()
        return True

    def _wait(self, burst: gso.Burst) -> None:
        if not self._backlog:
            self.loop.add_writer(self._sock.fileno(), self._writable)
        self._backlog.append(burst)

    def _writable(self) -> None:
        while self._backlog:
            if not self._sent(self._backlog[0]):
                return
            self._backlog.popleft()
        self.loop.remove_writer(self._sock.fileno())

    # ---- receiving ----------------------------------------------------------------
    def _readable(self) -> None:
        taken = 0
        while taken < DATAGRAMS_PER_TURN:
            try:
                size, ancillary, _, source = self._sock.recvmsg_into([self._buffer],
                                                                     self._ancillary)
                data = bytes(self._view[:size])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an error queued on the socket (ICMP): the channel covers it
                taken += 1
                continue
            datagrams = gso.segments(data, gso.segment_size(ancillary) if ancillary else None)
            taken += len(datagrams)
            self._on_datagrams(datagrams, (str(source[0]), int(source[1])))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self._sock.fileno())
        if self._backlog:
            self.loop.remove_writer(self._sock.fileno())
            self._backlog.clear()
        self._sock.close()


def _receive_buffer(sock: socket.socket) -> int:
    """Ask for RECEIVE_BUFFER; the payload bytes the socket holds unread, as the peer is
    told. Linux doubles what it grants to cover its own books per datagram, and reports
    the doubled figure, so half of it is payload."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    size = granted // 2 if sys.platform.startswith("linux") else granted
    if size < RECEIVE_BUFFER:
        log.info("the socket's receive buffer is %d KiB, not the %d KiB asked for (the "
                 "system caps it: net.core.rmem_max on Linux); the peer sends less at a "
                 "time, so transfers are slower", size // 1024, RECEIVE_BUFFER // 1024)
    return size


def _offers(sock: socket.socket, option: int, name: str) -> bool:
    """Whether the kernel knows the UDP ``option`` (EOPNOTSUPP or ENOPROTOOPT where not)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.getsockopt(socket.IPPROTO_UDP, option)
    except OSError as error:
        log.debug("no UDP %s offload (%s): one datagram a call", name, error.strerror)
        return False
    return True


def _enable_gro(sock: socket.socket) -> bool:
    if not _offers(sock, gso.UDP_GRO, "receive"):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_UDP, gso.UDP_GRO, 1)
    except OSError as error:
        log.debug("UDP receive offload refused (%s): one datagram a read", error.strerror)
        return False
    return True
