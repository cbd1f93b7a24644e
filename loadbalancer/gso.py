"""Datagrams to send, grouped for UDP segmentation offload (GSO).

With Linux's ``UDP_SEGMENT`` one ``sendmsg`` carries up to 64 datagrams of one size to
one address (the last may be shorter), and the kernel, or the network card, cuts them
apart: one system call and one pass down the network stack for a burst instead of one a
datagram. Each segment is still a whole lb datagram, authenticated on its own, so a lost
or forged segment costs that one datagram, not the burst. The grouping here is pure; the
endpoint does the sending and falls back to one datagram a call where the offload is
missing or refused.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from loadbalancer.addresses import Address

UDP_SEGMENT = 103  # <linux/udp.h>; Python's socket module has no name for it
MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
# A GSO send is one UDP datagram until it is cut, so the whole burst is bounded as one.
MAX_BURST_BYTES = 65507
Datagram = bytes | bytearray

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
        """The ancillary data that tells the kernel where to cut (SOL_UDP is 17)."""
        return [(17, UDP_SEGMENT, struct.pack("=H", self.size))]


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
