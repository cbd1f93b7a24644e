"""Process setup of a node."""

from __future__ import annotations

import platform
import sys

import pytest

from loadbalancer import app


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="mallopt is glibc's")
def test_the_allocator_keeps_buffers_for_reuse() -> None:
    assert app.tune_allocator() is True


def test_elsewhere_the_allocator_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.sys, "platform", "darwin")
    assert app.tune_allocator() is False
