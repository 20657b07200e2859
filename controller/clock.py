"""Time sources and cancellable waiting, injectable so that tests drive timing logic without sleeping.

``Clock.monotonic()`` measures intervals (lease expiry, renew deadlines, fencing); ``Clock.now()`` gives the
wall time written into Kubernetes objects. ``Clock.sleep(seconds, cancel)`` is the only way timing code waits,
so a ``FakeClock`` can stand in for real time: sleeping on it advances it at once.

``Cancellation`` is the one-shot stop signal handed to long-running work (the leader's work, shutdown).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class Cancellation:
    """A one-shot, thread-safe cancel signal that remembers why it fired.

    ``cancel(reason)`` may be called from any thread, any number of times: the first reason wins.
    Callbacks registered with ``add_callback`` run once, in the cancelling thread (or at once if already
    cancelled); they must be quick and must not raise (an exception is logged and swallowed).
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.RLock()
        self._reason: str | None = None
        self._callbacks: list[Callable[[], object]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def reason(self) -> str | None:
        """Why it was cancelled, or None while it has not been."""
        return self._reason

    def cancel(self, reason: str) -> bool:
        """Fire the signal; return True if this call fired it, False if it had already fired."""
        with self._lock:
            if self._reason is not None:
                return False
            self._reason = reason
            callbacks, self._callbacks = self._callbacks, []
        self._event.set()
        for callback in callbacks:
            _run_callback(callback, reason)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Block (real time) until cancelled or ``timeout`` seconds pass; return True if cancelled."""
        return self._event.wait(timeout)

    def add_callback(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` when this is cancelled (immediately if it already is)."""
        with self._lock:
            if self._reason is None:
                self._callbacks.append(callback)
                return
            reason = self._reason
        _run_callback(callback, reason)

    def __repr__(self) -> str:
        state = f"cancelled: {self._reason}" if self._reason is not None else "active"
        return f"<Cancellation {state}>"


def _run_callback(callback: Callable[[], object], reason: str) -> None:
    try:
        callback()
    except Exception:
        log.exception("a cancellation callback %r raised while cancelling (%s); ignoring it", callback, reason)


class Clock(Protocol):
    """Monotonic time for intervals, aware UTC wall time for timestamps, and cancellable sleep."""

    def monotonic(self) -> float: ...

    def now(self) -> dt.datetime: ...

    def sleep(self, seconds: float, cancel: Cancellation | None = None) -> bool:
        """Wait ``seconds``, or less if ``cancel`` fires; return True if it ended because of ``cancel``."""
        ...


class SystemClock:
    """The real clock. ``monotonic`` is CLOCK_MONOTONIC, which keeps running while the process is stopped."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def sleep(self, seconds: float, cancel: Cancellation | None = None) -> bool:
        if cancel is not None:
            return cancel.wait(max(0.0, seconds))
        if seconds > 0:
            time.sleep(seconds)
        return False


class FakeClock:
    """A test clock that only moves when told to; ``sleep`` advances it at once instead of waiting.

    Thread-safe. Every requested sleep is recorded in ``slept`` (seconds), so tests can check how long code
    chose to wait without waiting.
    """

    def __init__(self, start: dt.datetime | None = None, monotonic_start: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._wall = start or dt.datetime(2025, 1, 15, 10, 0, 0, tzinfo=dt.UTC)
        if self._wall.tzinfo is None:
            raise ValueError(f"FakeClock needs an aware start time, got naive {self._wall.isoformat()}")
        self._monotonic = monotonic_start
        self.slept: list[float] = []

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def now(self) -> dt.datetime:
        with self._lock:
            return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (as if the process had been frozen that long)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (asked to advance by {seconds} s)")
        with self._lock:
            self._monotonic += seconds
            self._wall += dt.timedelta(seconds=seconds)

    def set_wall_time(self, moment: dt.datetime) -> None:
        """Step the wall clock alone (an NTP correction or a skewed host); monotonic time does not move."""
        if moment.tzinfo is None:
            raise ValueError(f"set_wall_time needs an aware datetime, got naive {moment.isoformat()}")
        with self._lock:
            self._wall = moment.astimezone(dt.UTC)

    def sleep(self, seconds: float, cancel: Cancellation | None = None) -> bool:
        if cancel is not None and cancel.cancelled:
            return True
        with self._lock:
            self.slept.append(seconds)
        self.advance(max(0.0, seconds))
        return cancel is not None and cancel.cancelled
