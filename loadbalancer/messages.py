"""Payloads of the messages nodes exchange, and their codec.

A payload is ``codec byte | envelope``; codec 0 is raw, 1 is zstandard (used
when it saves at least an eighth). An envelope is ``!I`` meta length, the meta
as UTF-8 JSON, then the binary blobs (job data) back to back, their sizes
listed in the meta. JSON and raw bytes only: nothing that crossed the network
is unpickled or evaluated, and every field is checked before use; a bad one
raises :class:`~loadbalancer.wire.Rejected` with reason ``malformed``.

A peer holding the secret may still send anything, so the meta is bounded before
it is parsed (nesting depth, digits of a number) and while it is (no NaN, no
infinity), and each message's fields are checked for type, range and length.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import zstandard

from loadbalancer import fields
from loadbalancer.outcome import MAX_TEXT, Failure
from loadbalancer.status import Status
from loadbalancer.trace import MAX_SAMPLES
from loadbalancer.wire import Kind, Rejected

MAX_MESSAGE = 64 * 2**20
MAX_META = 4 * 2**20
# Job data in a message: a RESULTS message, and the first JOBS of a transfer, carry about
# MESSAGE_BYTES, so the peer starts soon; while JOBS compress well the next carry
# MAX_BATCH. Not more: making or reading a message is one turn of the event loop, and
# 4 MiB of compressible jobs take about 5 ms to encode or decode (16 MiB took 13 ms).
MESSAGE_BYTES = 2**20
MAX_BATCH = 4 * MESSAGE_BYTES
# And at most this many jobs or results, however small: each costs some microseconds to
# encode, decode and queue, and a message is one turn of the loop.
MESSAGE_JOBS = 4096
RAW, ZSTD = 0, 1
# Containers inside containers in a meta: ours nest 5 deep (a VERDICT's spec's params),
# and a workload's own parameters may add a few.
# Bounded before parsing, so that neither json nor what walks the result can recurse far.
MAX_DEPTH = 32
# Digits in a row in a meta's number: json writes no int up to MAX_ID and no float with
# more, and converting a longer one costs time quadratic in its length.
MAX_DIGITS = 20
MAX_SPEC = 64 * 1024  # characters of a workload spec as JSON: a name and a few parameters
_LENGTH = struct.Struct("!I")
_compressor = zstandard.ZstdCompressor(level=1)
SAMPLE = 64 * 1024  # bytes of a larger message tried first, to see whether it compresses
_decompressor = zstandard.ZstdDecompressor()
# A JSON string, or what is left of an unterminated one: it always matches, so a scan is
# linear whatever the bytes (possessive: nothing to backtrack into), 4 MiB of escapes in
# about 40 ms. Exact on valid JSON, the only kind that parses afterwards.
_STRING = re.compile(rb'(?s)"[^"\\]*+(?:\\.?[^"\\]*+)*+"?')
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


def _malformed(detail: str) -> Rejected:
    return Rejected("malformed", detail)


def pack(meta: dict[str, Any], blobs: Sequence[bytes | memoryview] | None = None) -> bytes:
    blobs = blobs or []
    meta = {**meta, "sizes": [len(b) for b in blobs]}
    head = json.dumps(meta, separators=(",", ":")).encode()
    parts = [_LENGTH.pack(len(head)), head, *blobs]
    size = sum(len(part) for part in parts)
    if size > 256 and _compresses(parts, size):
        packed = _compressor.compress(b"".join(parts))
        if len(packed) < size * 7 // 8:
            return bytes([ZSTD]) + packed
    return b"".join([bytes([RAW]), *parts])  # one copy of the blobs, not two


def _compresses(parts: Sequence[bytes | memoryview], size: int) -> bool:
    """Whether a message is worth compressing, judged by its first ``SAMPLE`` bytes when it
    is larger: a megabyte of incompressible job data costs zstd as long to refuse as all
    the rest of packing it, and data that does compress shows it from the start."""
    if size <= SAMPLE:
        return True
    sample, taken = [], 0
    for part in parts:
        sample.append(part[:SAMPLE - taken])
        taken += len(sample[-1])
        if taken >= SAMPLE:
            break
    return len(_compressor.compress(b"".join(sample))) < SAMPLE * 7 // 8


def unpack(payload: bytes) -> tuple[dict[str, Any], list[memoryview]]:
    if not payload:
        raise _malformed("empty payload")
    # Views, not copies: a JOBS message holds megabytes of job data, and a copy of
    # each job's share (an allocation of its own, page faults and all) was most of the
    # time a slave spent taking in a bootstrap, while its acks waited unread behind it;
    # a copy of the body past the codec's byte cost a tenth of it.
    view = memoryview(payload)
    codec, body = view[0], view[1:]
    if codec == ZSTD:
        try:
            # The frame states its size; refuse a large one before allocating it.
            if zstandard.frame_content_size(body) > MAX_MESSAGE:
                raise _malformed("zstd frame too large")
            body = memoryview(_decompressor.decompress(body, max_output_size=MAX_MESSAGE))
        except zstandard.ZstdError as error:
            raise _malformed(f"zstd: {error}") from None
    elif codec != RAW:
        raise _malformed(f"codec {codec}")
    if len(body) < _LENGTH.size:
        raise _malformed("short envelope")
    (length,) = _LENGTH.unpack_from(body)
    if length > MAX_META or _LENGTH.size + length > len(body):
        raise _malformed("meta length")
    meta = _parse(bytes(body[_LENGTH.size:_LENGTH.size + length]))
    if not isinstance(meta, dict):
        raise _malformed("meta is not an object")
    sizes = _ids(meta, "sizes")
    del meta["sizes"]
    offset = _LENGTH.size + length
    if offset + sum(sizes) != len(body):
        raise _malformed("blob sizes do not add up")
    blobs = []
    for size in sizes:
        blobs.append(body[offset:offset + size])
        offset += size
    return meta, blobs


def _parse(raw: bytes) -> Any:
    """The meta's JSON, refused unless its nesting and its numbers are within bounds."""
    structure = _STRING.sub(b"", raw)  # what is left is brackets, numbers and punctuation
    if b"0" * (MAX_DIGITS + 1) in structure.translate(_DIGITS):
        raise _malformed("meta holds a number too long")
    nesting = structure.translate(_BRACKETS, _NOT_BRACKETS)
    for _ in range(MAX_DEPTH):
        nesting = nesting.replace(b"[]", b"")  # the innermost containers: one level
    if nesting:
        raise _malformed(f"meta nests deeper than {MAX_DEPTH} (or does not close)")
    try:
        return json.loads(raw.decode(), parse_float=_finite, parse_constant=_constant)
    except ValueError:  # not UTF-8, or not JSON
        raise _malformed("meta is not JSON") from None


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _malformed("meta holds a number beyond a float")
    return value


def _constant(literal: str) -> float:
    raise _malformed(f"meta holds {literal}")


def _field(meta: dict[str, Any], name: str, kind: type[list[Any]] | type[dict[str, Any]],
           most: int = MESSAGE_JOBS) -> Any:
    """A list or an object of at most ``most`` items: by default as many as a message has
    jobs at most, which no list of a message but a trace's exceeds."""
    value = meta.get(name)
    if not isinstance(value, kind) or len(value) > most:
        raise _malformed(f"field {name!r}")
    return value


def _ids(meta: dict[str, Any], name: str = "ids") -> list[int]:
    ids = _field(meta, name, list)
    if not fields.integers(ids, 0, fields.MAX_ID):
        raise _malformed(f"field {name!r}")
    return ids


def _integer(meta: dict[str, Any], name: str) -> int:
    value = meta.get(name)
    if not fields.integer(value, 0, fields.MAX_ID):
        raise _malformed(f"field {name!r}")
    return value


def _text(value: object, name: str) -> str:
    if not fields.text(value, MAX_TEXT):
        raise _malformed(f"field {name!r}")
    return value


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """What runs a job: a workload's name and parameters, or for a function job
    ``function`` and the function's reference (see :mod:`functions`)."""

    name: str
    params: dict[str, Any]

    def key(self) -> str:
        return json.dumps([self.name, self.params], sort_keys=True)


@dataclass(frozen=True, slots=True)
class Jobs:
    """Jobs moving to the peer, all of one workload; ``request`` answers a Request;
    ``bootstrap``: the master's handover when a session opens, not a balancing move."""

    workload: WorkloadSpec
    jobs: Sequence[tuple[int, bytes | memoryview]]
    request: int | None = None
    bootstrap: bool = False


@dataclass(frozen=True, slots=True)
class Results:
    """Finished jobs: their results, and the jobs that failed with their failures."""

    results: Sequence[tuple[int, bytes | memoryview]]
    failures: list[tuple[int, Failure]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Request:
    request: int
    count: int


@dataclass(frozen=True, slots=True)
class Refuse:
    """Jobs a node will not run (unknown workload, bad data): they go back."""

    jobs: list[int]
    reason: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The master holds every result: send your trace and leave."""


@dataclass(frozen=True, slots=True)
class Trace:
    """The slave's trace and counters, sent when the master has finished."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Needs:
    """The master's question when a session opens (and when a run gains a new kind of
    job): can you run jobs of these? Asked before any job of them is sent."""

    specs: list[WorkloadSpec]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The slave's answer to Needs: what it can run, and why not the rest."""

    able: list[WorkloadSpec]
    unable: list[tuple[WorkloadSpec, str]]


@dataclass(frozen=True, slots=True)
class Cancel:
    """The master: do not run these jobs (their futures were cancelled)."""

    jobs: list[int]


Message = Jobs | Results | Request | Refuse | Finish | Trace | Needs | Verdict | Cancel


def _spec(spec: WorkloadSpec) -> dict[str, Any]:
    return {"name": spec.name, "params": spec.params}


def encode(message: Message) -> tuple[Kind, bytes]:
    match message:
        case Jobs(workload, jobs, request, bootstrap):
            meta = {"workload": _spec(workload), "ids": [i for i, _ in jobs], "request": request,
                    "bootstrap": bootstrap}
            return Kind.JOBS, pack(meta, [d for _, d in jobs])
        case Results(results, failures):
            failed = [[job, f.type, f.message, f.traceback] for job, f in failures]
            return Kind.RESULTS, pack({"ids": [i for i, _ in results], "failed": failed},
                                      [d for _, d in results])
        case Request(request, count):
            return Kind.REQUEST, pack({"request": request, "count": count})
        case Refuse(jobs, reason):
            return Kind.REFUSE, pack({"ids": jobs, "reason": reason})
        case Finish():
            return Kind.FINISH, pack({})
        case Trace(samples, events, stats):
            return Kind.TRACE, pack({"samples": samples, "events": events, "stats": stats})
        case Cancel(jobs):
            return Kind.CANCEL, pack({"ids": jobs})
        case Needs(specs):
            return Kind.NEEDS, pack({"specs": [_spec(spec) for spec in specs]})
        case Verdict(able, unable):
            return Kind.VERDICT, pack({"able": [_spec(spec) for spec in able],
                                       "unable": [[_spec(spec), why] for spec, why in unable]})
    raise TypeError(f"not a message: {message!r}")


def job_messages(workload: WorkloadSpec, jobs: Iterable[tuple[int, bytes | memoryview]],
                 request: int | None = None,
                 bootstrap: bool = False) -> Iterator[tuple[bytes, int]]:
    """JOBS payloads carrying ``jobs`` in order, each with its number of jobs; one empty
    message if there are none (it still answers a request). Once a message
    compresses to an eighth or less, the next carry MAX_BATCH: a message then
    costs more than its bytes, and fewer go."""
    limit, batch, size, sent = MESSAGE_BYTES, [], 0, False
    for job in jobs:
        batch.append(job)
        size += len(job[1])
        if size >= limit or len(batch) >= MESSAGE_JOBS:
            payload = encode(Jobs(workload, batch, request, bootstrap))[1]
            yield payload, len(batch)
            if len(payload) * 8 <= size:
                limit = MAX_BATCH
            batch, size, sent = [], 0, True
    if batch or not sent:
        yield encode(Jobs(workload, batch, request, bootstrap))[1], len(batch)


def decode(kind: Kind, payload: bytes) -> Message:
    meta, blobs = unpack(payload)
    if kind is Kind.JOBS:
        request = None if meta.get("request") is None else _integer(meta, "request")
        bootstrap = meta.get("bootstrap", False)
        if not isinstance(bootstrap, bool):
            raise _malformed("field 'bootstrap'")
        return Jobs(_decode_spec(meta.get("workload")), _pair(meta, blobs), request, bootstrap)
    if kind is Kind.RESULTS:
        return Results(_pair(meta, blobs), _failures(_field(meta, "failed", list)))
    if kind is Kind.REQUEST:
        return Request(_integer(meta, "request"), _integer(meta, "count"))
    if kind is Kind.REFUSE:
        return Refuse(_ids(meta), _text(meta.get("reason"), "reason"))
    if kind is Kind.FINISH:
        return Finish()
    if kind is Kind.TRACE:
        # Only bounded here: master.checked_trace keeps the records that make sense.
        return Trace(_field(meta, "samples", list, MAX_SAMPLES),
                     _field(meta, "events", list, MAX_SAMPLES),
                     _field(meta, "stats", dict, fields.MAX_NAMES))
    if kind is Kind.CANCEL:
        return Cancel(_ids(meta))
    if kind is Kind.NEEDS:
        return Needs([_decode_spec(spec) for spec in _field(meta, "specs", list)])
    if kind is Kind.VERDICT:
        unable = []
        for item in _field(meta, "unable", list):
            if not (isinstance(item, list) and len(item) == 2):
                raise _malformed("field 'unable'")
            unable.append((_decode_spec(item[0]), _text(item[1], "unable")))
        return Verdict([_decode_spec(spec) for spec in _field(meta, "able", list)], unable)
    raise _malformed(f"kind {kind.name} carries no message")


def _decode_spec(spec: object) -> WorkloadSpec:
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str)
            and isinstance(spec.get("params"), dict)):
        raise _malformed("workload spec")
    decoded = WorkloadSpec(spec["name"], spec["params"])
    # Its key names it in every table of kinds of job; a short one keeps them small.
    if len(decoded.key()) > MAX_SPEC:
        raise _malformed("workload spec too long")
    return decoded


def _failures(items: list[Any]) -> list[tuple[int, Failure]]:
    failures = []
    for item in items:
        if not (isinstance(item, list) and len(item) == 4
                and fields.integer(item[0], 0, fields.MAX_ID)
                and all(fields.text(text, MAX_TEXT + 8) for text in item[1:])):
            raise _malformed("field 'failed'")
        failures.append((item[0], Failure(item[1], item[2], item[3])))
    return failures


def _pair(meta: dict[str, Any], blobs: list[memoryview]) -> list[tuple[int, memoryview]]:
    ids = _ids(meta)
    if len(ids) != len(blobs) or len(set(ids)) != len(ids):
        raise _malformed("field 'ids'")
    return list(zip(ids, blobs, strict=True))


def encode_state(status: Status, *, sent_jobs: int, received_jobs: int,
                 session_executed: int, session_compute: float) -> bytes:
    """A STATE body: the status, and the session's transfer counters and work (which the
    peer's balancer and summary need, and people are not shown)."""
    return pack({**status.as_dict(), "sent_jobs": sent_jobs, "received_jobs": received_jobs,
                 "session_executed": session_executed, "session_compute": session_compute})


def decode_state(body: bytes) -> dict[str, Any]:
    meta, blobs = unpack(body)
    if blobs:
        raise _malformed("state carries blobs")
    return meta
