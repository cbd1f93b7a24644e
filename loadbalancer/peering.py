"""A node's side of the session with its peer: the connection's events, the STATE each
way (the state manager: it is also the heartbeat), and the balancer, fed by both and by
what happens here, its instructions carried out.

The balancer decides (:mod:`balancer`, a pure state machine); this is the glue around
it. What master and slave do about an event is the node's (its ``Host``'s) hooks.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from loadbalancer import balancer, messages
from loadbalancer.addresses import format_address
from loadbalancer.balancer import (
    Balancer,
    Instruction,
    JobsReceived,
    Local,
    Phase,
    RequestReceived,
    RunCopies,
    SendJobs,
    SendRequest,
    SendState,
    Stimulus,
)
from loadbalancer.endpoint import Endpoint
from loadbalancer.logs import jobs
from loadbalancer.messages import Jobs, Message, Request
from loadbalancer.peerstate import PeerState
from loadbalancer.reliable import MessageAcked, MessageReceived
from loadbalancer.session import (
    AuthenticationFailing,
    Connection,
    Event,
    NewcomerRefused,
    PeerJoined,
    PeerLost,
    StateReceived,
)
from loadbalancer.shipping import Shipper
from loadbalancer.status import Status
from loadbalancer.trace import Recorder
from loadbalancer.wire import Kind, Rejected, Role

log = logging.getLogger("lb")


class Host(Protocol):
    role: Role
    phase: Phase
    remote: PeerState | None
    peer_left: bool
    recorder: Recorder
    connection: Connection
    endpoint: Endpoint
    loop: asyncio.AbstractEventLoop
    shipper: Shipper

    def local(self) -> Local: ...

    def status(self) -> Status: ...

    def session_began(self) -> None: ...

    def session_work(self) -> tuple[int, float]: ...

    def peer_joined(self) -> None: ...

    def peer_lost(self, reason: str) -> None: ...

    def handle(self, message: Message) -> None: ...

    def message_acked(self, message_id: int) -> None: ...

    def remote_updated(self) -> None: ...

    def run_copies(self, count: int, why: str) -> None: ...

    def send(self, message: Message) -> int | None: ...

    def wake(self) -> None: ...

    def say(self, text: str) -> None: ...


# How a lost session reads in the log where its reason's name says too little.
LOST = {"renewed": "it had given this session up: starting over"}


class Peering:
    def __init__(self, host: Host, policy: str) -> None:
        self.host = host
        self.balancer = Balancer(policy)  # type: ignore[arg-type]

    def on_event(self, event: Event) -> None:
        host = self.host
        match event:
            case PeerJoined():
                host.session_began()
                host.remote = None
                # The balancer's counters start over before the bootstrap counts in them.
                instructions = self.balancer.handle(balancer.PeerJoined(), host.local(),
                                                    host.loop.time())
                host.recorder.event("joined")
                host.say(f"{host.role.peer} joined")
                host.peer_joined()
                self._carry_out(instructions)
            case PeerLost(reason):
                host.recorder.event("lost", reason=reason)
                # A peer that says goodbye once the run is over has left, not been lost.
                host.peer_left = reason == "bye" and host.phase == Phase.DONE
                host.say(f"{host.role.peer} left" if host.peer_left
                         else f"{host.role.peer} lost ({LOST.get(reason, reason)})")
                self.balance(balancer.PeerLost())
                host.peer_lost(reason)
            case NewcomerRefused(address):
                host.say(f"another {host.role.peer} at {format_address(address)} asked to join "
                         f"while this one is connected: refused (two {host.role.peer}s with "
                         "one config?)")
            case AuthenticationFailing(address):
                host.say(f"datagrams from {format_address(address)} fail authentication: do "
                         "both nodes use the same secret?")
            case StateReceived(body):
                self._on_state(body)
            case MessageReceived(_, kind, payload):
                self._on_message(Kind(kind), payload)
            case MessageAcked(message_id):
                host.message_acked(message_id)

    def _on_message(self, kind: Kind, payload: bytes) -> None:
        try:
            message = messages.decode(kind, payload)
        except Rejected as error:
            self.host.connection.dropped[error.reason] += 1
            return
        if isinstance(message, Jobs):
            self.host.shipper.carried(len(payload), len(message.jobs))
            self.balance(JobsReceived(len(message.jobs), message.request))
        elif isinstance(message, Request):
            self.balance(RequestReceived(message.request, message.count))
            return
        self.host.handle(message)
        self.host.wake()

    def send_state(self) -> None:
        host = self.host
        executed, compute = host.session_work()
        host.connection.send_state(messages.encode_state(
            host.status(), sent_jobs=self.balancer.sent_jobs,
            received_jobs=self.balancer.received_jobs, session_executed=executed,
            session_compute=compute))
        host.endpoint.flush()

    def _on_state(self, body: bytes) -> None:
        host = self.host
        try:
            host.remote = PeerState.parse(messages.decode_state(body))
        except Rejected as error:
            host.connection.dropped[error.reason] += 1
            return
        host.remote_updated()
        self.balance(balancer.StateReceived(host.remote))

    def balance(self, stimulus: Stimulus) -> None:
        """Tell the balancer what happened and carry out what it says."""
        decided = self.balancer.last_decision
        self._carry_out(self.balancer.handle(stimulus, self.host.local(),
                                             self.host.loop.time()))
        decision = self.balancer.last_decision
        if decision is not None and decision is not decided:
            log.debug("%s adaptor: %s", self.host.role, decision.reason)

    def _carry_out(self, instructions: list[Instruction]) -> None:
        host = self.host
        for instruction in instructions:
            match instruction:
                case SendState():
                    self.send_state()
                case SendJobs(count, why, request):
                    host.shipper.send_jobs(count, request=request, reason=self._words(why))
                case SendRequest(request, count, why):
                    host.send(Request(request, count))
                    host.say(f"asked the {host.role.peer} for {jobs(count)}: "
                             f"{self._words(why)}")
                case RunCopies(count, why):
                    host.run_copies(count, self._words(why))

    def _words(self, why: str) -> str:
        return why.format(peer=self.host.role.peer)
