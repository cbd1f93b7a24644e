"""The datagrams' tag: the compiled GMAC and its pure-Python fallback give the same tags,
refuse the same forgeries, and two nodes that use one each work together."""

from __future__ import annotations

import importlib
import os
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadbalancer import gmac
from loadbalancer.gmac import TAG_SIZE, PureGmac, Tagger
from loadbalancer.testing.loopback import Cluster

try:
    from loadbalancer._gmac import Gmac as CompiledGmac
except ImportError:  # no compiler or no OpenSSL headers where this was installed
    CompiledGmac = None

compiled_only = pytest.mark.skipif(CompiledGmac is None, reason="the compiled tag is not built")
IMPLEMENTATIONS = [PureGmac, pytest.param(CompiledGmac, marks=compiled_only, id="compiled")]


@pytest.mark.skipif(not Path("/usr/include/openssl/evp.h").exists()
                    or not (shutil.which("cc") or shutil.which("gcc")),
                    reason="no OpenSSL headers or no C compiler: the fallback is all there is")
def test_where_it_can_be_built_the_compiled_tag_is_built() -> None:
    # `pip install` goes on without the extension if it fails to build: this is what says so
    # on a machine where it should have been built.
    assert CompiledGmac is not None


@compiled_only
@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), number=st.integers(0, 2**64 - 1),
       signed=st.binary(max_size=3000))
def test_both_give_the_same_tag_and_take_each_others(key: bytes, number: int,
                                                    signed: bytes) -> None:
    tags = []
    for kind in (PureGmac, CompiledGmac):
        out = bytearray(signed + bytes(TAG_SIZE))
        kind(key).sign(number, out, len(signed))
        tags.append(bytes(out))
    assert tags[0] == tags[1]
    assert PureGmac(key).verify(number, tags[1], len(signed))
    assert CompiledGmac(key).verify(number, tags[0], len(signed))


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_any_changed_bit_key_or_number_is_refused(kind: type[Tagger]) -> None:
    key, data = os.urandom(16), bytearray(os.urandom(200) + bytes(TAG_SIZE))
    kind(key).sign(7, data, 200)
    assert kind(key).verify(7, memoryview(data), 200)
    for i in range(0, len(data), 13):
        forged = bytearray(data)
        forged[i] ^= 0x10
        assert not kind(key).verify(7, forged, 200)
    assert not kind(key).verify(8, data, 200)
    assert not kind(os.urandom(16)).verify(7, data, 200)
    assert not kind(key).verify(7, data[:-1] + b"\0", 199)  # a tag moved is no tag


@pytest.mark.parametrize("kind", IMPLEMENTATIONS)
def test_a_bad_key_or_a_tag_beyond_the_buffer_is_an_error(kind: type[Tagger]) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        kind(b"short")
    tagger = kind(bytes(16))
    for end in (-1, 185, 10**6):
        with pytest.raises(ValueError, match="tag"):
            tagger.verify(1, bytes(200), end)
        with pytest.raises(ValueError, match="tag"):
            tagger.sign(1, bytearray(200), end)
    # Programming errors, not inputs (numbers come from unpacking 64 unsigned bits): an
    # error of each implementation's own kind, never a tag.
    with pytest.raises((TypeError, BufferError)):
        tagger.sign(1, b"immutable" * 10, 10)  # type: ignore[arg-type]
    with pytest.raises((OverflowError, struct.error)):
        tagger.verify(-1, bytes(200), 100)


def test_lb_pure_python_chooses_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LB_PURE_PYTHON", "1")
    try:
        assert importlib.reload(gmac).Gmac is gmac.PureGmac
        assert "LB_PURE_PYTHON" in gmac.DESCRIPTION
    finally:
        monkeypatch.delenv("LB_PURE_PYTHON")
        importlib.reload(gmac)


@compiled_only
def test_a_node_with_each_tag_runs_a_batch_together(cluster: Cluster,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cluster.configure(policy="symmetric", jobs=128, elements_per_job=8192, iterations=3000)
    cluster.start("slave", "--log-level", "debug")
    cluster.wait_until_up("slave")
    monkeypatch.setenv("LB_PURE_PYTHON", "1")
    cluster.start("master", "--log-level", "debug")
    assert cluster.wait() == {"slave": 0, "master": 0}, cluster.log_tail("master")
    result = cluster.result()
    assert result["verified"] is True and result["executed"]["slave"] > 0
    assert "tagged by pure Python (LB_PURE_PYTHON is set)" in cluster.log("master")
    assert "tagged by the compiled tag" in cluster.log("slave")
    assert all(node.get("bad_tag", 0) == 0 for node in result["dropped"].values())
