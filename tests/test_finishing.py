"""The end of a run: the slave is told, even one that is part way into its session when a
short batch ends (it used to be left waiting for a master that had gone)."""

from __future__ import annotations

import asyncio

import pytest

from loadbalancer import finishing
from loadbalancer.finishing import Finishing
from loadbalancer.messages import Finish, Message


class Link:
    """A connection as the end of the run sees it: connected, or a slave joining."""

    def __init__(self, connected: bool, joining: bool) -> None:
        self.connected, self._joining = connected, joining

    def joining(self, now: float, within: float) -> bool:
        return self._joining and not self.connected


class Master:
    """What ``tell_the_slave`` uses of the master; a slave that joins is sent FINISH on
    joining and answers with its trace, as the real ones do."""

    def __init__(self, link: Link) -> None:
        self.connection = link
        self.loop = asyncio.get_running_loop()
        self.sent: list[Message] = []
        self.said: list[str] = []
        self.finishing = Finishing(self)  # type: ignore[arg-type]

    def send(self, message: Message) -> int | None:
        self.sent.append(message)
        if isinstance(message, Finish):
            self.loop.call_later(0.05, self.finishing.trace_received.set)
        return 1

    def say(self, text: str) -> None:
        self.said.append(text)

    def join_after(self, seconds: float) -> None:
        def joined() -> None:
            self.connection.connected = True
            self.send(Finish())  # Master.peer_joined in phase DONE

        self.loop.call_later(seconds, joined)


async def told(link: Link, joins_after: float | None = None) -> tuple[Master, float]:
    master = Master(link)
    if joins_after is not None:
        master.join_after(joins_after)
    began = master.loop.time()
    await master.finishing.tell_the_slave()
    return master, master.loop.time() - began


async def test_a_connected_slave_is_sent_finish_and_its_trace_awaited() -> None:
    master, _ = await told(Link(connected=True, joining=False))
    assert master.sent == [Finish()] and master.finishing.trace_received.is_set()
    assert master.said == []


async def test_with_no_slave_in_sight_the_master_does_not_wait() -> None:
    master, took = await told(Link(connected=False, joining=False))
    assert master.sent == [] and took < 0.01


async def test_a_slave_part_way_into_its_session_is_waited_for_and_told() -> None:
    master, took = await told(Link(connected=False, joining=True), joins_after=0.2)
    assert master.sent == [Finish()]  # once: as it joined
    assert master.finishing.trace_received.is_set() and master.said == []
    assert 0.2 <= took < finishing.JOINING


async def test_a_slave_that_never_completes_its_join_is_waited_for_a_bounded_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(finishing, "JOINING", 0.3)
    master, took = await told(Link(connected=False, joining=True))
    assert master.sent == [] and 0.3 <= took < 1.0


def test_a_would_be_peer_is_joining_from_our_welcome_until_its_session_opens() -> None:
    from test_session import SLAVE_ADDRESS, Pair

    pair = Pair()
    assert not pair.master.joining(pair.now, 2.0)
    hello = [d for d, _ in pair.slave.datagrams_to_send(pair.now)]
    for data in hello:
        pair.master.receive_datagram(data, SLAVE_ADDRESS, pair.now)
    assert [len(d) for d, _ in pair.master.datagrams_to_send(pair.now)]  # the WELCOME
    assert pair.master.joining(pair.now + 1.9, 2.0)
    assert not pair.master.joining(pair.now + 2.1, 2.0)  # it went quiet: nobody is joining
    pair.run(0.6)  # greetings go again, and this time arrive
    assert pair.master.connected and not pair.master.joining(pair.now, 2.0)
