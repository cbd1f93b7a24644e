"""A module that fails at import, for tests/test_pool.py."""

from __future__ import annotations


def helper() -> None:
    raise RuntimeError("this module is broken")


helper()
