"""Message payloads: round trips, compression, and malformed input."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from loadbalancer import messages
from loadbalancer.messages import Finish, Jobs, Refuse, Request, Results, Trace, WorkloadSpec
from loadbalancer.wire import Kind, Rejected

SPEC = WorkloadSpec("vector", {"elements": 8, "jobs": 2, "iterations": 3})


@pytest.mark.parametrize("message", [
    Jobs(SPEC, [(0, b"\x00" * 64), (5, b"\x01" * 64)], request=3),
    Jobs(SPEC, [], request=None),
    Results([(1, b"abc"), (2, b"")]),
    Request(7, 12),
    Refuse([1, 2, 3], "unknown workload"),
    Finish(),
    Trace([{"t": 1.0, "pending": 3}], [{"t": 1.0, "type": "joined"}], {"executed": 4}),
])
def test_round_trip(message: messages.Message) -> None:
    kind, payload = messages.encode(message)
    assert messages.decode(kind, payload) == message


def test_compressible_payloads_are_compressed() -> None:
    _, payload = messages.encode(Results([(0, bytes(256 * 1024))]))
    assert payload[0] == messages.ZSTD
    assert len(payload) < 2000


def test_incompressible_payloads_are_sent_raw() -> None:
    import os
    _, payload = messages.encode(Results([(0, os.urandom(4096))]))
    assert payload[0] == messages.RAW


def envelope(meta: object, blobs: bytes = b"") -> bytes:
    head = json.dumps(meta).encode()
    return bytes([messages.RAW]) + struct.pack("!I", len(head)) + head + blobs


@pytest.mark.parametrize("payload", [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x07abc", id="unknown codec"),
    pytest.param(b"\x01not zstd", id="bad zstd"),
    pytest.param(envelope([1, 2]), id="meta not an object"),
    pytest.param(bytes([0]) + struct.pack("!I", 5) + b"{", id="meta length past end"),
    pytest.param(envelope({"sizes": [3]}, b"ab"), id="blob sizes do not add up"),
    pytest.param(envelope({"sizes": [-1]}), id="negative size"),
    pytest.param(envelope({"sizes": [], "ids": [1]}), id="ids without blobs"),
    pytest.param(bytes([0]) + struct.pack("!I", 2) + b"\xff\xfe", id="not utf-8"),
])
def test_malformed_results(payload: bytes) -> None:
    with pytest.raises(Rejected) as caught:
        messages.decode(Kind.RESULTS, payload)
    assert caught.value.reason == "malformed"


def test_a_zstd_frame_claiming_a_huge_size_is_refused_before_allocating() -> None:
    # Frame header: magic, descriptor (8-byte content size, single segment), the size.
    frame = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (2**40).to_bytes(8, "little")
    assert zstandard.frame_content_size(frame) == 2**40
    with pytest.raises(Rejected) as caught:
        messages.unpack(bytes([messages.ZSTD]) + frame + bytes(16))
    assert "too large" in str(caught.value)


@pytest.mark.parametrize("meta", [
    {"workload": "vector", "ids": []},
    {"workload": {"name": 3, "params": {}}, "ids": []},
    {"workload": {"name": "vector", "params": {}}, "ids": [], "request": "x"},
])
def test_malformed_jobs(meta: dict[str, object]) -> None:
    with pytest.raises(Rejected):
        messages.decode(Kind.JOBS, envelope({**meta, "sizes": []}))


def test_request_count_must_be_an_integer() -> None:
    with pytest.raises(Rejected):
        messages.decode(Kind.REQUEST, envelope({"request": 1, "count": True, "sizes": []}))


@given(st.binary(max_size=512), st.sampled_from(list(Kind)))
def test_random_payloads_never_crash(payload: bytes, kind: Kind) -> None:
    with contextlib.suppress(Rejected):
        messages.decode(kind, payload)
