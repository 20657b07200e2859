"""Time sources, injectable so that tests drive token expiry, backoff and readiness without sleeping."""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time for intervals and wall time for the timestamps written on the Node."""

    def monotonic(self) -> float: ...

    def now(self) -> dt.datetime: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)


class ManualClock:
    """A clock that only moves when told to; ``sleep`` advances it, so it can stand in for time.sleep."""

    def __init__(self, start: dt.datetime | None = None, monotonic_start: float = 1000.0) -> None:
        self._wall = start or dt.datetime(2025, 1, 15, 10, 0, 0, tzinfo=dt.UTC)
        self._monotonic = monotonic_start
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self._monotonic

    def now(self) -> dt.datetime:
        return self._wall

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (asked to advance by {seconds} s)")
        self._monotonic += seconds
        self._wall += dt.timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(max(0.0, seconds))
