"""Clocks for the capacity simulator: the system clock, and a manual one tests advance by hand."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Tells the simulator what time it is (timezone-aware UTC)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The real wall clock, in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to, so tests can step through pending and retry times without sleeping."""

    def __init__(self, start: datetime | None = None) -> None:
        if start is not None and start.tzinfo is None:
            raise ValueError(f"ManualClock start {start.isoformat()} has no timezone; pass a UTC-aware datetime")
        self._now = start or datetime(2025, 1, 15, 10, 0, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward by `seconds` (>= 0) and return the new time."""
        if seconds < 0:
            raise ValueError(f"ManualClock cannot go backwards (asked to advance by {seconds} s)")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now
