"""UDP fault-injecting proxy between the master and the slave.

This machine's kernel has no netem, so tests and benchmarks put this proxy between the two nodes
to get loss, duplication, reordering, delay with jitter and a bandwidth cap, per direction.

    master --> front ~~to_slave~~> back --> slave
    master <-- front <~to_master~~ back <-- slave

The fate of each datagram is decided by `FaultModel.decide`, which does no I/O and takes the clock
as an argument, so the statistics can be tested without sockets or sleeps.
"""

import asyncio
import dataclasses
import ipaddress
import json
import math
import random
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import click

from loadbalancer.addresses import Address, parse_address
from loadbalancer.app import loop_factory

_PROBABILITIES = ("loss", "duplicate", "reorder")


def _setting(default: float, help_text: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Faults:
    """Fault settings for one direction; each is also a CLI option, so help lives here."""

    loss: float = _setting(0.0, "Probability of dropping a datagram.")
    duplicate: float = _setting(0.0, "Probability of also sending an independently delayed copy.")
    # Later datagrams overtake a held one only if they come within reorder_delay of it.
    reorder: float = _setting(0.0, "Probability of holding a datagram back by reorder_delay.")
    reorder_delay: float = _setting(0.01, "Seconds a reordered datagram is held back.")
    delay: float = _setting(0.0, "Seconds added to every datagram.")
    jitter: float = _setting(0.0, "Uniform +/- seconds around delay.")
    rate: float = _setting(0.0, "Bandwidth cap in bytes/s, 0 = unlimited.")
    queue: float = _setting(65536.0, "Bytes that may wait for the rate cap before tail drop.")

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _PROBABILITIES and not 0.0 <= value <= 1.0:
                raise ValueError(f"{field.name} must be a probability in 0..1, got {value}")
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{field.name} must be a finite number >= 0, got {value}")


NO_FAULTS = Faults()


@dataclass
class Stats:
    """Counters for one direction. Once nothing is in flight,
    forwarded + dropped == received + duplicated."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0


class FaultModel:
    """Decides what happens to each datagram of one direction; pure apart from its own state."""

    def __init__(self, faults: Faults, seed: int | None = None) -> None:
        self.faults = faults
        self.stats = Stats()
        self._rng = random.Random(seed)
        self._link_free_at = float("-inf")

    def decide(self, size: int, now: float) -> list[float]:
        """Return the delivery time of each copy to send (none = dropped)."""
        self.stats.received += 1
        if self._chance(self.faults.loss):
            self.stats.dropped += 1
            return []
        copies = 1
        if self._chance(self.faults.duplicate):
            self.stats.duplicated += 1
            copies = 2
        times = []
        for _ in range(copies):
            departure = self._shape(size, now)
            if departure is None:
                self.stats.dropped += 1
            else:
                times.append(departure + self._latency())
        return times

    def _chance(self, probability: float) -> bool:
        return self._rng.random() < probability

    def _shape(self, size: int, now: float) -> float | None:
        """Rate cap: a token bucket with no burst allowance, so each datagram occupies the link
        for size/rate seconds and waits for those ahead of it; tail drop when the wait is too long.
        """
        rate = self.faults.rate
        if rate == 0.0:
            return now
        start = max(now, self._link_free_at)
        backlog = (start - now) * rate
        if backlog + size > self.faults.queue:
            return None
        self._link_free_at = start + size / rate
        return start

    def _latency(self) -> float:
        faults = self.faults
        latency = max(0.0, faults.delay + self._rng.uniform(-faults.jitter, faults.jitter))
        if self._chance(faults.reorder):
            self.stats.reordered += 1
            latency += faults.reorder_delay
        return latency


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.relay: Callable[[bytes], None] | None = None

    def datagram_received(self, data: bytes, addr: Address) -> None:
        # Nothing is wired until both sockets are bound; what arrives before that is lost, as on a
        # link that is not up yet.
        if self.relay is not None:
            self.relay(data)


class _Link:
    """One direction: asks the model when each copy is due and sends it out then."""

    def __init__(self, model: FaultModel, out: asyncio.DatagramTransport, dest: Address) -> None:
        self._model = model
        self._out = out
        self._dest = dest

    def relay(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for when in self._model.decide(len(data), now):
            # Undelayed datagrams go out at once to keep their order; equal deadlines might not.
            if when <= now:
                self._send(data)
            else:
                loop.call_at(when, self._send, data)

    def _send(self, data: bytes) -> None:
        # Datagrams still in flight when the proxy closes are lost, as on a link going down.
        if self._out.is_closing():
            return
        self._out.sendto(data, self._dest)
        self._model.stats.forwarded += 1


class Proxy:
    """A running proxy; build it with `start_proxy`. `stats` is live, keyed by direction."""

    def __init__(
        self,
        front: asyncio.DatagramTransport,
        back: asyncio.DatagramTransport,
        stats: dict[str, Stats],
    ) -> None:
        self.front_address = _sockname(front)
        self.back_address = _sockname(back)
        self.stats = stats
        self._transports = (front, back)

    def close(self) -> None:
        for transport in self._transports:
            transport.close()


def _sockname(transport: asyncio.DatagramTransport) -> Address:
    host, port = transport.get_extra_info("sockname")[:2]
    return host, port


async def start_proxy(
    front: Address,
    back: Address,
    master: Address,
    slave: Address,
    to_slave: Faults = NO_FAULTS,
    to_master: Faults = NO_FAULTS,
    seed: int | None = None,
) -> Proxy:
    """Bind front and back (port 0 picks a free port) and start forwarding."""
    loop = asyncio.get_running_loop()
    front_transport, front_socket = await loop.create_datagram_endpoint(_Socket, local_addr=front)
    try:
        back_transport, back_socket = await loop.create_datagram_endpoint(_Socket, local_addr=back)
    except OSError:
        front_transport.close()
        raise
    # One seed drives both directions, yet each gets its own stream so that traffic in one
    # direction does not change the decisions of the other.
    rng = random.Random(seed)
    to_slave_model = FaultModel(to_slave, rng.getrandbits(64))
    to_master_model = FaultModel(to_master, rng.getrandbits(64))
    front_socket.relay = _Link(to_slave_model, back_transport, slave).relay
    back_socket.relay = _Link(to_master_model, front_transport, master).relay
    stats = {"to_slave": to_slave_model.stats, "to_master": to_master_model.stats}
    return Proxy(front_transport, back_transport, stats)


def _address_option(name: str, min_port: int, help_text: str) -> Callable[[Any], Any]:
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> Address:
        try:
            host, port = parse_address(value, "the address", lowest_port=min_port)
            # An IP literal, so that sending a datagram never waits on a name lookup.
            ipaddress.ip_address(host)
        except ValueError as error:
            raise click.BadParameter(f"expected IP:PORT ({error})") from None
        return host, port

    return click.option(
        f"--{name}", required=True, callback=parse, metavar="IP:PORT", help=help_text
    )


def _parse_overrides(ctx: click.Context, param: click.Parameter, value: str) -> dict[str, float]:
    keys = {field.name for field in dataclasses.fields(Faults)}
    overrides = {}
    for item in filter(None, value.split(",")):
        key, _, number = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in keys:
            raise click.BadParameter(f"unknown setting {key!r} (known: {', '.join(sorted(keys))})")
        try:
            overrides[key] = float(number)
        except ValueError:
            raise click.BadParameter(f"{key} needs a number, got {number!r}") from None
    return overrides


def _fault_options(command: Callable[..., None]) -> Callable[..., None]:
    # click lists options in the reverse of the order they are applied.
    for field in reversed(dataclasses.fields(Faults)):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata["help"]
        command = click.option(flag, type=float, default=field.default, help=help_text)(command)
    return command


def _overrides_option(name: str) -> Callable[[Any], Any]:
    return click.option(
        f"--{name}",
        default="",
        callback=_parse_overrides,
        metavar="KEY=VALUE,...",
        help="Settings for this direction only, e.g. loss=0.2,delay=0.02.",
    )


@click.command(help="UDP proxy injecting loss, duplication, reordering, delay and a rate cap.")
@_address_option("front", 0, "Bind here; the master sends here as if to the slave.")
@_address_option("back", 0, "Bind here; the slave sends here as if to the master.")
@_address_option("master", 1, "The master's real address.")
@_address_option("slave", 1, "The slave's real address.")
@_fault_options
@_overrides_option("to-slave")
@_overrides_option("to-master")
@click.option("--seed", type=int, default=None, help="Seed for reproducible faults.")
def _command(
    front: Address,
    back: Address,
    master: Address,
    slave: Address,
    to_slave: dict[str, float],
    to_master: dict[str, float],
    seed: int | None,
    **faults: float,
) -> None:
    try:
        both = Faults(**faults)
        to_slave_faults = dataclasses.replace(both, **to_slave)
        to_master_faults = dataclasses.replace(both, **to_master)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    starting = start_proxy(front, back, master, slave, to_slave_faults, to_master_faults, seed)
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            stats = runner.run(_serve(starting))
    except OSError as exc:
        # uvloop names the address and keeps the reason in __cause__; asyncio gives the reason.
        reason = ": ".join(str(error) for error in (exc, exc.__cause__) if error is not None)
        raise click.ClickException(f"cannot start: {reason}") from None
    print(json.dumps({name: dataclasses.asdict(s) for name, s in stats.items()}), flush=True)


async def _serve(starting: Coroutine[Any, Any, Proxy]) -> dict[str, Stats]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Installed before the ready line so that a signal sent right after reading it is not lost.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    proxy = await starting
    (front_host, front_port), (back_host, back_port) = proxy.front_address, proxy.back_address
    print(f"ready front={front_host}:{front_port} back={back_host}:{back_port}", flush=True)
    await stop.wait()
    proxy.close()
    return proxy.stats


def main(argv: Sequence[str] | None = None) -> None:
    try:
        _command.main(args=argv, prog_name="faultproxy", standalone_mode=False)
    except click.ClickException as exc:
        # One line, so a harness can show the reason without click's usage banner.
        message = " ".join(exc.format_message().split())
        print(f"faultproxy: {message}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
