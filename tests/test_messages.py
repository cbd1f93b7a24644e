"""Message payloads: round trips, compression, and malformed input."""

from __future__ import annotations

import contextlib
import json
import random
import struct

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from loadbalancer import messages
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
from loadbalancer.wire import Kind, Rejected

SPEC = WorkloadSpec("vector", {"elements": 8, "jobs": 2, "iterations": 3})


@pytest.mark.parametrize("message", [
    Jobs(SPEC, [(0, b"\x00" * 64), (5, b"\x01" * 64)], request=3),
    Jobs(SPEC, [], request=None),
    Results([(1, b"abc"), (2, b"")]),
    Results([(1, b"abc")], [(4, Failure("ValueError", "bad input", "Traceback ...\n"))]),
    Needs([SPEC, WorkloadSpec("function", {"module": "primes", "function": "count",
                                           "fingerprint": "ab" * 32})]),
    Verdict([SPEC], [(WorkloadSpec("function", {"module": "m"}), "module 'm' is not named")]),
    Cancel([3, 9]),
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


@pytest.mark.parametrize(("kind", "meta"), [
    (Kind.RESULTS, {"ids": [], "failed": [[1, "ValueError", "x"]]}),
    (Kind.RESULTS, {"ids": [], "failed": [[1, "ValueError", "x", 5]]}),
    (Kind.RESULTS, {"ids": [], "failed": [["1", "ValueError", "x", ""]]}),
    (Kind.RESULTS, {"ids": [], "failed": [[1, "E", "x" * 70_000, ""]]}),
    (Kind.RESULTS, {"ids": []}),
    (Kind.NEEDS, {"specs": [{"name": "vector"}]}),
    (Kind.NEEDS, {"specs": ["vector"]}),
    (Kind.VERDICT, {"able": [], "unable": [[{"name": "v", "params": {}}]]}),
    (Kind.VERDICT, {"able": [], "unable": [[{"name": "v", "params": {}}, 3]]}),
])
def test_malformed_results_needs_and_verdicts(kind: Kind, meta: dict[str, object]) -> None:
    with pytest.raises(Rejected):
        messages.decode(kind, envelope({**meta, "sizes": []}))


def test_request_count_must_be_an_integer() -> None:
    with pytest.raises(Rejected):
        messages.decode(Kind.REQUEST, envelope({"request": 1, "count": True, "sizes": []}))


@given(st.binary(max_size=512), st.sampled_from(list(Kind)))
def test_random_payloads_never_crash(payload: bytes, kind: Kind) -> None:
    with contextlib.suppress(Rejected):
        messages.decode(kind, payload)


def _jobs_of(payloads: list[tuple[bytes, int]]) -> list[list[int]]:
    decoded = [messages.decode(Kind.JOBS, payload) for payload, _ in payloads]
    assert all(isinstance(m, Jobs) for m in decoded)
    return [[job for job, _ in m.jobs] for m in decoded if isinstance(m, Jobs)]


def test_job_messages_grow_while_they_compress_well() -> None:
    spec = WorkloadSpec("vector", {})
    blob = bytes(2**18)  # 256 KiB of zeros: compresses to almost nothing
    batches = list(messages.job_messages(spec, ((job, blob) for job in range(600)), request=3))
    jobs = _jobs_of(batches)
    assert [job for batch in jobs for job in batch] == list(range(600))
    assert [count for _, count in batches] == [len(batch) for batch in jobs]
    # 4 jobs make the first MiB; they compress, so the next carry MAX_BATCH (4 MiB).
    assert [len(batch) for batch in jobs][:3] == [4, 16, 16]
    requests = {getattr(messages.decode(Kind.JOBS, p), "request", None) for p, _ in batches}
    assert requests == {3}


def test_job_messages_stay_small_when_they_do_not_compress() -> None:
    spec = WorkloadSpec("vector", {})
    blobs = [random.Random(job).randbytes(2**18) for job in range(20)]
    jobs = _jobs_of(list(messages.job_messages(spec, enumerate(blobs))))
    assert [len(batch) for batch in jobs] == [4, 4, 4, 4, 4]


def test_no_jobs_is_one_empty_message_that_still_answers() -> None:
    batches = list(messages.job_messages(WorkloadSpec("vector", {}), [], request=9))
    assert [count for _, count in batches] == [0]
    message = messages.decode(Kind.JOBS, batches[0][0])
    assert isinstance(message, Jobs) and message.jobs == [] and message.request == 9
