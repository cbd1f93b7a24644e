"""Shared fixtures: two real `lb launch` processes on loopback."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadbalancer import gmac, messages
from loadbalancer.testing.loopback import Cluster


@pytest.fixture(params=[False, pytest.param(True, marks=pytest.mark.skipif(
    not gmac.COMPILED, reason="the compiled tag is not built"))], ids=["pure", "compiled"])
def fast_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Each way through the codec's fragment fast path (wire): the compiled one where it
    is built, and the pure-Python one it falls back to."""
    monkeypatch.setattr(gmac, "COMPILED", request.param)
    return bool(request.param)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    # Status by `lb status --json` in a process of its own: what the tests watch is what a
    # user sees.
    with Cluster(tmp_path, cli_status=True) as running:
        yield running


def payload_of(meta: str, blobs: bytes = b"") -> bytes:
    """A raw message payload around a meta written as JSON text, which may hold what
    json.dumps would not write (5,000 digits, nesting deeper than it goes)."""
    head = meta.encode()
    return bytes([messages.RAW]) + struct.pack("!I", len(head)) + head + blobs


_STATE = ('"throttle":1.0,"job_seconds":null,"workers":1,"queued":0,"running":0,'
          '"sent_jobs":0,"received_jobs":0')

# The STATE payloads of the issue "Nothing a peer, a neighbour or a typo does takes lb down"
# (item 4): from a peer holding the secret, each ended a master with exit 1.
ISSUE_STATES = {
    "nested 3,000 deep": payload_of(f'{{"sizes":[],{_STATE},"phase":{"[" * 3000}{"]" * 3000}}}'),
    "5,000 digits": payload_of(f'{{"sizes":[],{_STATE},"executed":{"9" * 5000}}}'),
    "queued = 10**400": payload_of(f'{{"sizes":[],{_STATE},"queued":1{"0" * 400}}}'),
    "workers = 10**300, job_seconds = 1e-320": payload_of(
        f'{{"sizes":[],{_STATE},"workers":1{"0" * 300},"job_seconds":1e-320}}'),
}
