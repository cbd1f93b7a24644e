"""A peer holding the secret sends every kind of message with adversarial contents: what
the receiving node does with it raises nothing but Rejected("malformed").

Each payload is a valid message of its kind with one value, anywhere in its meta, replaced
by something hostile (any JSON, huge or long numbers, NaN, deep nesting, long strings and
lists, wrong types), framed as the peer would frame it. It goes through what the node runs
on receipt: the decoder, then for STATE the checks and the adaptor, for JOBS and NEEDS the
node's tasks and the jobs' checks, for TRACE the master's checks and what the summary does
with them, for REQUEST the adaptor's grant.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from typing import Any

import pytest
from conftest import payload_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadbalancer import adaptor, measure, messages
from loadbalancer.functions import Catalog
from loadbalancer.master import checked_trace
from loadbalancer.messages import (
    Cancel,
    Finish,
    Jobs,
    Needs,
    Refuse,
    Request,
    Results,
    Trace,
    Verdict,
    WorkloadSpec,
)
from loadbalancer.outcome import Failure
from loadbalancer.peerstate import PeerState
from loadbalancer.tasks import TaskError, Tasks
from loadbalancer.wire import Kind, Rejected
from loadbalancer.workload import WorkloadError

SPEC = WorkloadSpec("vector", {"elements": 64, "jobs": 4, "iterations": 1})
FUNCTION = WorkloadSpec("function", {"module": "m", "function": "f", "fingerprint": "ab" * 32})
STATE = {"role": "slave", "phase": "processing", "queued": 40, "running": 2, "executed": 7,
         "failed": 0, "throttle": 1.0, "workers": 2, "cpu": 99.0, "speed": 10.0, "eta": 4.0,
         "job_seconds": 0.1, "peer": "connected", "moved_out": 0, "moved_in": 3,
         "retransmits": 1, "dropped": {"bad_tag": 2}, "suppressed": 0, "bytes_sent": 4096,
         "refused": 0, "policy": "symmetric", "total": None, "finished": 5, "sent_jobs": 3,
         "received_jobs": 0}
VALID: dict[Kind, bytes] = {
    **dict(messages.encode(message) for message in [
        Jobs(SPEC, [(0, bytes(128)), (1, bytes(128))], request=4),
        Results([(1, bytes(128))], [(2, Failure("ValueError", "bad", "Traceback ...\n"))]),
        Request(3, 12), Refuse([1, 2], "unknown workload"), Finish(), Cancel([3]),
        Trace([{"t": 1.7e9, "pending": 3, "throttle": 1.0, "cpu": 50.0, "done": 1}],
              [{"t": 1.7e9, "type": "throttle", "throttle": 1.0, "workers": 2},
               {"t": 1.7e9, "type": "lost", "reason": "timeout"}],
              {"executed": 4, "compute_seconds": 0.4, "dropped": {"bad_tag": 1},
               "last_done": 1.7e9}),
        Needs([SPEC, FUNCTION]), Verdict([SPEC], [(FUNCTION, "module 'm' was not given")]),
    ]),
    Kind.STATE: messages.pack(STATE),
}

_RAW = "\x00raw:"  # a string json.dumps writes as is, then replaced by a literal of our own


def raw(literal: str) -> str:
    """A JSON literal that Python's json would not write: 5,000 digits, a bare 1e999."""
    return _RAW + literal


# Numbers beyond what a field may hold, or beyond what arithmetic on it survives, drawn
# often: they are what ended nodes (the 10**400, 10**300 with 1e-320, 5,000 digits).
huge = st.sampled_from([2**40 + 1, 2**53 + 1, 2**63, 2**64, 10**300, -10**300,
                        raw("1" + "0" * 400), raw("9" * 21), raw("9" * 5_000)])
odd = st.sampled_from([-1, -0.0, 1e-320, 5e-324, 1e-9, 1e308, math.nan, math.inf, raw("1e999"),
                       raw("-1e999"), True, "x" * 70_000])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    huge, odd)


def nest(depth: int, inner: object, as_object: bool) -> str:
    """``inner`` in ``depth`` lists or objects: deeper than json.dumps goes."""
    text = inner[len(_RAW):] if isinstance(inner, str) and inner.startswith(_RAW) \
        else json.dumps(inner)
    opening, closing = ('{"a":', "}") if as_object else ("[", "]")
    return raw(opening * depth + text + closing * depth)


hostile: st.SearchStrategy[Any] = st.one_of(
    huge, odd,
    st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                 | st.dictionaries(st.text(max_size=6), children, max_size=4), max_leaves=10),
    st.builds(nest, st.integers(28, 3_000), scalars, st.booleans()),
    st.builds(lambda n, item: [item] * n, st.sampled_from([4_097, 100_001]),
              st.sampled_from([0, None, "x", {}, [1], 2**63, {"t": 1.0}])))


def replace_field(data: st.DataObject, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with one field (or a new one) replaced, at any depth, by a hostile value."""
    key = data.draw(st.sampled_from([*meta, "extra", "sizes"]))
    return {**meta, key: replace_somewhere(data, meta.get(key))}


def replace_somewhere(data: st.DataObject, value: Any) -> Any:
    if isinstance(value, dict) and value and data.draw(st.booleans()):
        return replace_field(data, value)
    if isinstance(value, list) and value and data.draw(st.booleans()):
        index = data.draw(st.integers(0, len(value) - 1))
        return [*value[:index], replace_somewhere(data, value[index]), *value[index + 1:]]
    return data.draw(hostile)


def frame(meta: dict[str, Any], blobs: list[bytes]) -> bytes:
    """The envelope as messages.pack makes it, of a meta it would not make."""
    text = json.dumps({"sizes": [len(b) for b in blobs], **meta}, separators=(",", ":"))
    text = re.sub(r'"\\u0000raw:(?:[^"\\]|\\.)*"',
                  lambda literal: json.loads(literal[0])[len(_RAW):], text)
    return payload_of(text, b"".join(blobs))


LOCAL = adaptor.NodeView(queued=10, running=1, throttle=1.0, workers=2, job_seconds=None)
LINK = adaptor.Link(rtt=0.002, bandwidth=12.5e6, job_bytes=1024.0)


def snapshot(remote: adaptor.NodeView) -> adaptor.Snapshot:
    return adaptor.Snapshot(LOCAL, remote, remote_age=0.1, in_flight_to_remote=0,
                            in_flight_from_remote=0, requested=0, link=LINK)


def use_state(body: bytes) -> None:
    """What Peering._on_state and then the balancer do with it."""
    state = PeerState.parse(messages.decode_state(body))
    json.dumps(state.status, allow_nan=False)  # `lb status --json`
    for policy in adaptor.POLICIES:
        adaptor.decide(policy, snapshot(state.view))


def run_spec(tasks: Tasks, spec: WorkloadSpec, jobs: list[tuple[int, bytes]]) -> None:
    """What the slave does with a kind of job it is sent or asked about."""
    try:
        task = tasks.get(spec)
    except TaskError:
        return
    for job, data in jobs:
        with contextlib.suppress(WorkloadError):
            task.check_job(job, data)


def use_message(kind: Kind, payload: bytes) -> None:
    """What Node._on_message and the role's handle do before anything is queued or run."""
    message = messages.decode(kind, payload)
    tasks = Tasks(Catalog())
    match message:
        case Jobs(workload, jobs):
            run_spec(tasks, workload, jobs)
        case Needs(specs):
            for spec in specs:
                run_spec(tasks, spec, [])
        case Verdict(able, unable):
            for spec in [*able, *(spec for spec, _ in unable)]:
                spec.key()  # the master's table of what the slave can run
        case Request(_, count):
            adaptor.grant(snapshot(adaptor.NodeView(5, 1, 1.0, 1, 0.1)), count)
        case Trace():
            trace = checked_trace(message)
            json.dumps([trace.samples, trace.events], allow_nan=False)  # the trace file
            steps = [(float(e["t"]), float(e["workers"]) * float(e["throttle"]))
                     for e in trace.events if e["type"] == "throttle"]
            measure.ideal_makespan(float(trace.stats.get("compute_seconds", 0.0)), 1.7e9,
                                   [steps])
            sum(int(count) for count in trace.stats.get("dropped", {}).values())


def use(kind: Kind, payload: bytes) -> None:
    if kind is Kind.STATE:
        use_state(payload)
    else:
        use_message(kind, payload)


@pytest.mark.parametrize("kind", sorted(VALID), ids=lambda kind: kind.name)
@given(st.data())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_message_with_a_hostile_value_is_used_or_refused_as_malformed(
        kind: Kind, data: st.DataObject) -> None:
    meta, blobs = messages.unpack(VALID[kind])
    try:
        use(kind, frame(replace_field(data, meta), blobs))
    except Rejected as error:
        assert error.reason == "malformed"


def test_the_valid_messages_are_used_whole() -> None:
    """The base of every fuzzed payload gets past every check: the fuzzing starts inside."""
    for kind, payload in VALID.items():
        use(kind, payload)
    assert checked_trace(messages.decode(Kind.TRACE, VALID[Kind.TRACE])) == \
        messages.decode(Kind.TRACE, VALID[Kind.TRACE])  # type: ignore[arg-type]
    assert PeerState.parse(messages.decode_state(VALID[Kind.STATE])).status["dropped"] == \
        {"bad_tag": 2}
