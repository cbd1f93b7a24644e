"""Message payloads: round trips, compression, and malformed input."""

from __future__ import annotations

import contextlib
import json
import random
import struct
import time

import pytest
import zstandard
from conftest import payload_of
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


def test_a_large_message_is_judged_by_its_start_whether_it_compresses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Trying a megabyte of incompressible data cost as long as the rest of packing it.
    tried: list[int] = []
    compress = messages._compressor.compress

    class Watched:
        def compress(self, data: bytes) -> bytes:
            tried.append(len(data))
            return compress(data)

    monkeypatch.setattr(messages, "_compressor", Watched())
    noise = random.randbytes(2**20)
    _, payload = messages.encode(Results([(0, noise)]))
    assert payload[0] == messages.RAW and tried == [messages.SAMPLE]  # the sample only
    assert messages.decode(Kind.RESULTS, payload) == Results([(0, noise)])
    tried.clear()
    _, payload = messages.encode(Results([(0, bytes(2**20))]))
    assert payload[0] == messages.ZSTD and tried[0] == messages.SAMPLE and len(tried) == 2
    tried.clear()
    _, payload = messages.encode(Results([(0, noise[:2**16] + bytes(2**20))]))
    assert payload[0] == messages.RAW  # the price: compressible data after a noisy start


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


def test_decoded_job_inputs_are_views_of_the_message_not_copies() -> None:
    # Copying each job's share out of a large message was most of a slave's time
    # taking in a bootstrap, and the acks of what arrived meanwhile waited behind it.
    inputs = [(job, random.randbytes(200_000)) for job in range(4)]
    payload = messages.encode(Jobs(SPEC, inputs))[1]
    decoded = messages.decode(Kind.JOBS, payload)
    assert isinstance(decoded, Jobs)
    views = [data for _, data in decoded.jobs]
    assert all(isinstance(view, memoryview) for view in views)
    assert all(view.obj is payload for view in views)  # the message's own buffer
    assert [(job, bytes(view)) for job, view in decoded.jobs] == inputs


def test_no_jobs_is_one_empty_message_that_still_answers() -> None:
    batches = list(messages.job_messages(WorkloadSpec("vector", {}), [], request=9))
    assert [count for _, count in batches] == [0]
    message = messages.decode(Kind.JOBS, batches[0][0])
    assert isinstance(message, Jobs) and message.jobs == [] and message.request == 9


DEEPEST = '{"sizes":[],"x":' + "[" * 31 + "]" * 31 + "}"  # the meta and 31 lists: 32


@pytest.mark.parametrize("text", [
    pytest.param('{"sizes":[],"x":' + "[" * 3000 + "]" * 3000 + "}", id="nested 3,000 deep"),
    pytest.param(DEEPEST.replace("[]", "[{}]"), id="one level too deep"),
    pytest.param('{"sizes":[],"x":' + "]" * 40 + "[" * 40 + "}", id="brackets that never nest"),
    pytest.param('{"sizes":[],"x":' + "9" * 5000 + "}", id="5,000 digits"),
    pytest.param('{"sizes":[],"x":-' + "1" * 21 + "}", id="21 digits"),
    pytest.param('{"sizes":[],"x":0.' + "1" * 21 + "}", id="a fraction of 21 digits"),
    pytest.param('{"sizes":[],"x":NaN}', id="NaN"),
    pytest.param('{"sizes":[],"x":-Infinity}', id="-Infinity"),
    pytest.param('{"sizes":[],"x":1e999}', id="beyond a float"),
    pytest.param('{"sizes":[],"x":"' + '\\"' * 100_000, id="a string that never ends"),
])
def test_a_meta_beyond_the_bounds_is_malformed(text: str) -> None:
    with pytest.raises(Rejected) as caught:
        messages.unpack(payload_of(text))
    assert caught.value.reason == "malformed"


@pytest.mark.parametrize("text", [
    pytest.param(DEEPEST, id="32 deep"),
    pytest.param('{"sizes":[],"x":"' + "[" * 3000 + '\\"{"}', id="brackets in a string"),
    pytest.param('{"sizes":[],"x":"' + "9" * 5000 + '"}', id="digits in a string"),
    pytest.param('{"sizes":[],"x":[-99999999999999999999,1.2345678901234567e-308,5e-324]}',
                 id="20 digits, the longest floats"),
])
def test_a_meta_within_the_bounds_is_parsed(text: str) -> None:
    assert messages.unpack(payload_of(text)) == ({"x": json.loads(text)["x"]}, [])


def test_a_meta_not_in_utf_8_is_malformed() -> None:
    # json.loads would read UTF-16, where a quote's byte can hide inside another character.
    head = json.dumps({"sizes": [], "x": [[1]]}).encode("utf-16")
    with pytest.raises(Rejected, match="not JSON"):
        messages.unpack(bytes([messages.RAW]) + struct.pack("!I", len(head)) + head)


def test_the_scan_is_linear_in_the_worst_bytes() -> None:
    # Unterminated escaped quotes: a string pattern that could fail tried again at each quote
    # (quadratic: seconds for 40 KB); the envelope's bound is 4 MiB.
    text = '{"sizes":[],"x":"' + '\\"' * (messages.MAX_META // 2 - 16)
    started = time.perf_counter()
    with pytest.raises(Rejected):
        messages.unpack(payload_of(text))
    assert time.perf_counter() - started < 2.0


TOO_LONG = "x" * (messages.MAX_TEXT + 1)


@pytest.mark.parametrize(("kind", "meta"), [
    pytest.param(Kind.CANCEL, {"ids": [2**63]}, id="an id beyond 2**63 - 1"),
    pytest.param(Kind.CANCEL, {"ids": [0] * (messages.MESSAGE_JOBS + 1)}, id="too many ids"),
    pytest.param(Kind.REQUEST, {"request": 1, "count": -1}, id="a negative count"),
    pytest.param(Kind.REQUEST, {"request": 2**64, "count": 1}, id="a request id beyond"),
    pytest.param(Kind.JOBS, {"workload": {"name": "v", "params": {}}, "ids": [], "request": -2},
                 id="a negative request"),
    pytest.param(Kind.JOBS, {"workload": {"name": "v", "params": {"p": TOO_LONG}}, "ids": []},
                 id="a workload spec too long"),
    pytest.param(Kind.REFUSE, {"ids": [1], "reason": TOO_LONG}, id="a reason too long"),
    pytest.param(Kind.VERDICT, {"able": [], "unable": [[{"name": "v", "params": {}}, TOO_LONG]]},
                 id="a verdict too long"),
    pytest.param(Kind.NEEDS, {"specs": [{"name": "v", "params": {}}] * 4097}, id="many specs"),
    pytest.param(Kind.TRACE, {"samples": [{}] * 100_001, "events": [], "stats": {}},
                 id="more samples than a node keeps"),
    pytest.param(Kind.TRACE, {"samples": [], "events": [], "stats": {str(n): n for n in range(65)}},
                 id="more stats than a node sends"),
])
def test_a_field_beyond_its_bounds_is_malformed(kind: Kind, meta: dict[str, object]) -> None:
    with pytest.raises(Rejected) as caught:
        messages.decode(kind, envelope({**meta, "sizes": []}))
    assert caught.value.reason == "malformed"
