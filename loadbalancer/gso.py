"""Datagrams in bursts, for Linux's UDP segmentation and receive offloads (GSO, GRO).

With ``UDP_SEGMENT`` one ``sendmsg`` carries up to 64 datagrams of one size to one
address (the last may be shorter), and the kernel, or the network card, cuts them apart:
one system call and one pass down the network stack for a burst instead of one a
datagram. With ``UDP_GRO`` a read may return such a burst whole, the segment size in its
ancillary data. Each segment is still a whole lb datagram, authenticated on its own, so a
lost or forged segment costs that one datagram, not the burst. What is here is pure: the
grouping of datagrams to send and the cutting of a burst read; :mod:`udpsocket` does the
system calls and falls back to one datagram a call where an offload is missing or refused.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from loadbalancer.addresses import Address

UDP_SEGMENT = 103  # <linux/udp.h>; Python's socket module has names for neither
UDP_GRO = 104
SOL_UDP = 17
GRO_SIZE = struct.Struct("=i")  # the segment size of a burst read, an int in native order
MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
# A GSO send is one UDP datagram until it is cut, so the whole burst is bounded as one.
MAX_BURST_BYTES = 65507
Datagram = bytes | bytearray
Segment = bytes | memoryview  # one datagram of a burst read: a view, not a copy

# What a kernel or device without the offload answers: the send is refused, not lost.
REFUSED = frozenset({errno.EIO, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT})


@dataclass(slots=True)
class Burst:
    """Datagrams for one address, every one ``size`` bytes but perhaps the last."""

    address: Address
    size: int
    datagrams: list[Datagram] = field(default_factory=list)
    total: int = 0

    def takes(self, data: Datagram, address: Address) -> bool:
        return (address == self.address and len(data) <= self.size
                and len(self.datagrams[-1]) == self.size  # only the last may be shorter
                and len(self.datagrams) < MAX_SEGMENTS
                and self.total + len(data) <= MAX_BURST_BYTES)

    def add(self, data: Datagram) -> None:
        self.datagrams.append(data)
        self.total += len(data)

    def control(self) -> list[tuple[int, int, bytes]]:
        """The ancillary data that tells the kernel where to cut."""
        return [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", self.size))]

    def drop_first(self) -> None:
        """The first datagram went on its own."""
        self.total -= len(self.datagrams.pop(0))


def bursts(datagrams: Iterable[tuple[Datagram, Address]]) -> Iterator[Burst]:
    """``datagrams`` in order, consecutive ones grouped into bursts as GSO can send them."""
    current: Burst | None = None
    for data, address in datagrams:
        if current is not None and current.takes(data, address):
            current.add(data)
            continue
        if current is not None:
            yield current
        current = Burst(address, len(data))
        current.add(data)
    if current is not None:
        yield current


def segment_size(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The segment size a GRO read states in its ancillary data; None if it states none."""
    for level, kind, data in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= GRO_SIZE.size:
            size: int = GRO_SIZE.unpack_from(data)[0]
            return size if size > 0 else None
    return None


def segments(data: bytes, size: int | None) -> list[Segment]:
    """The datagrams of a burst read, every one ``size`` bytes but perhaps the last."""
    if size is None or size >= len(data):
        return [data]
    view = memoryview(data)
    return [view[start:start + size] for start in range(0, len(data), size)]
