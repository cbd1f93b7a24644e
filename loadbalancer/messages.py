"""Payloads of the messages nodes exchange, and their codec.

A payload is ``codec byte | envelope``; codec 0 is raw, 1 is zstandard (used
when it saves at least an eighth). An envelope is ``!I`` meta length, the meta
as UTF-8 JSON, then the binary blobs (job data) back to back, their sizes
listed in the meta. JSON and raw bytes only: nothing that crossed the network
is unpickled or evaluated, and every field is checked before use; a bad one
raises :class:`~loadbalancer.wire.Rejected` with reason ``malformed``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import zstandard

from loadbalancer.wire import Kind, Rejected

MAX_MESSAGE = 64 * 2**20
MAX_META = 4 * 2**20
# Job data in a message: a RESULTS message, and the first JOBS of a transfer, carry about
# MESSAGE_BYTES, so the peer starts soon; while JOBS compress well the next carry
# MAX_BATCH. Not more: making or reading a message is one turn of the event loop, and
# 4 MiB of compressible jobs take about 5 ms to encode or decode (16 MiB took 13 ms).
MESSAGE_BYTES = 2**20
MAX_BATCH = 4 * MESSAGE_BYTES
RAW, ZSTD = 0, 1
_LENGTH = struct.Struct("!I")
_compressor = zstandard.ZstdCompressor(level=1)
_decompressor = zstandard.ZstdDecompressor()


def _malformed(detail: str) -> Rejected:
    return Rejected("malformed", detail)


def pack(meta: dict[str, Any], blobs: list[bytes] | None = None) -> bytes:
    blobs = blobs or []
    meta = {**meta, "sizes": [len(b) for b in blobs]}
    head = json.dumps(meta, separators=(",", ":")).encode()
    envelope = b"".join([_LENGTH.pack(len(head)), head, *blobs])
    if len(envelope) > 256:
        packed = _compressor.compress(envelope)
        if len(packed) < len(envelope) * 7 // 8:
            return bytes([ZSTD]) + packed
    return bytes([RAW]) + envelope


def unpack(payload: bytes) -> tuple[dict[str, Any], list[bytes]]:
    if not payload:
        raise _malformed("empty payload")
    codec, body = payload[0], payload[1:]
    if codec == ZSTD:
        try:
            # The frame states its size; refuse a large one before allocating it.
            if zstandard.frame_content_size(body) > MAX_MESSAGE:
                raise _malformed("zstd frame too large")
            body = _decompressor.decompress(body, max_output_size=MAX_MESSAGE)
        except zstandard.ZstdError as error:
            raise _malformed(f"zstd: {error}") from None
    elif codec != RAW:
        raise _malformed(f"codec {codec}")
    if len(body) < _LENGTH.size:
        raise _malformed("short envelope")
    (length,) = _LENGTH.unpack_from(body)
    if length > MAX_META or _LENGTH.size + length > len(body):
        raise _malformed("meta length")
    try:
        meta = json.loads(body[_LENGTH.size:_LENGTH.size + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _malformed("meta is not JSON") from None
    if not isinstance(meta, dict):
        raise _malformed("meta is not an object")
    sizes = meta.pop("sizes", None)
    if not _int_list(sizes):
        raise _malformed("sizes")
    offset = _LENGTH.size + length
    if offset + sum(sizes) != len(body):
        raise _malformed("blob sizes do not add up")
    blobs = []
    for size in sizes:
        blobs.append(body[offset:offset + size])
        offset += size
    return meta, blobs


def _int_list(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)


def _field(meta: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = meta.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _malformed(f"field {name!r}")
    return value


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    name: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Jobs:
    """Jobs moving to the peer, all of one workload; ``request`` answers a Request."""

    workload: WorkloadSpec
    jobs: list[tuple[int, bytes]]
    request: int | None = None


@dataclass(frozen=True, slots=True)
class Results:
    results: list[tuple[int, bytes]]


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


Message = Jobs | Results | Request | Refuse | Finish | Trace


def encode(message: Message) -> tuple[Kind, bytes]:
    match message:
        case Jobs(workload, jobs, request):
            meta = {"workload": {"name": workload.name, "params": workload.params},
                    "ids": [i for i, _ in jobs], "request": request}
            return Kind.JOBS, pack(meta, [d for _, d in jobs])
        case Results(results):
            return Kind.RESULTS, pack({"ids": [i for i, _ in results]}, [d for _, d in results])
        case Request(request, count):
            return Kind.REQUEST, pack({"request": request, "count": count})
        case Refuse(jobs, reason):
            return Kind.REFUSE, pack({"ids": jobs, "reason": reason})
        case Finish():
            return Kind.FINISH, pack({})
        case Trace(samples, events, stats):
            return Kind.TRACE, pack({"samples": samples, "events": events, "stats": stats})
    raise TypeError(f"not a message: {message!r}")


def job_messages(workload: WorkloadSpec, jobs: Iterable[tuple[int, bytes]],
                 request: int | None = None) -> Iterator[tuple[bytes, int]]:
    """JOBS payloads carrying ``jobs`` in order, each with its number of jobs; one empty
    message if there are none (it still answers a request). Once a message
    compresses to an eighth or less, the next carry MAX_BATCH: a message then
    costs more than its bytes, and fewer go."""
    limit, batch, size, sent = MESSAGE_BYTES, [], 0, False
    for job in jobs:
        batch.append(job)
        size += len(job[1])
        if size >= limit:
            payload = encode(Jobs(workload, batch, request))[1]
            yield payload, len(batch)
            if len(payload) * 8 <= size:
                limit = MAX_BATCH
            batch, size, sent = [], 0, True
    if batch or not sent:
        yield encode(Jobs(workload, batch, request))[1], len(batch)


def decode(kind: Kind, payload: bytes) -> Message:
    meta, blobs = unpack(payload)
    if kind is Kind.JOBS:
        spec = _field(meta, "workload", dict)
        request = meta.get("request")
        if request is not None and not isinstance(request, int):
            raise _malformed("field 'request'")
        workload = WorkloadSpec(_field(spec, "name", str), _field(spec, "params", dict))
        return Jobs(workload, _pair(meta, blobs), request)
    if kind is Kind.RESULTS:
        return Results(_pair(meta, blobs))
    if kind is Kind.REQUEST:
        return Request(_field(meta, "request", int), _field(meta, "count", int))
    if kind is Kind.REFUSE:
        ids = _field(meta, "ids", list)
        if not _int_list(ids):
            raise _malformed("field 'ids'")
        return Refuse(ids, _field(meta, "reason", str))
    if kind is Kind.FINISH:
        return Finish()
    if kind is Kind.TRACE:
        return Trace(_field(meta, "samples", list), _field(meta, "events", list),
                     _field(meta, "stats", dict))
    raise _malformed(f"kind {kind.name} carries no message")


def _pair(meta: dict[str, Any], blobs: list[bytes]) -> list[tuple[int, bytes]]:
    ids: list[int] = meta.get("ids")  # type: ignore[assignment]
    if not _int_list(ids) or len(ids) != len(blobs) or len(set(ids)) != len(ids):
        raise _malformed("field 'ids'")
    return list(zip(ids, blobs, strict=True))


def encode_state(state: dict[str, Any]) -> bytes:
    return pack(state)


def decode_state(body: bytes) -> dict[str, Any]:
    meta, blobs = unpack(body)
    if blobs:
        raise _malformed("state carries blobs")
    return meta
