"""Reliable, message-oriented channel over an unreliable datagram service.

A pure state machine shaped like aioquic's ``QuicConnection``: no sockets, no
asyncio, the clock is an argument. After anything arrives (``receive_fragment``,
``receive_ack``) or ``next_deadline()`` passes (``handle_timer``), the glue sends
``ack_to_send(now)`` (until None) and ``fragments_to_send(now)``, drains ``next_event()`` and
re-arms its one timer at ``next_deadline()``.

:class:`ReliableChannel` (:mod:`.channel`) composes one part per job, as aioquic's
recovery splits loss detection, the RTT and congestion control:

- :mod:`.sender`: messages into fragments, transmission, acks, loss detection;
- :mod:`.receiver`: reassembly, duplicate suppression, when and what to acknowledge;
- :mod:`.rtt`: the round-trip estimate and the retransmission timeout;
- :mod:`.congestion`: the congestion window;
- :mod:`.rate`: the delivery rate, for the balancer's price of a move;
- :mod:`.sizing`: the fragment size, and black-hole detection that steps it down;
- :mod:`.fragment`: what travels and what is told: fragments, events, errors.
"""

from loadbalancer.reliable.channel import ReliableChannel
from loadbalancer.reliable.fragment import (
    MAX_COUNT,
    MAX_ORIGINALS,
    Ack,
    Event,
    Fragment,
    MessageAcked,
    MessageReceived,
    MessageTooLarge,
    ProtocolViolation,
)

__all__ = ["MAX_COUNT", "MAX_ORIGINALS", "Ack", "Event", "Fragment", "MessageAcked",
           "MessageReceived", "MessageTooLarge", "ProtocolViolation", "ReliableChannel"]
