"""Waiting for something another process or thread does (real time, with a generous limit)."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``condition`` until it is truthy; AssertionError naming ``what`` if ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(interval)
