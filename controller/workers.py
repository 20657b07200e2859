"""The threads of the leader's work, owned in one place, and the loop every controller runs.

Controllers never start threads themselves: they hand jobs to ``Workers``. A job has a lane (what kind of
work: a spot scale-up, one node's drain and termination, a batch's records, one SGFE's scale-down) and a key;
one job per key runs at a time, each lane on a few threads of its own, so a slow drain never holds up a
scale-up. ``run_in_parallel`` is for a batch of short API calls (record writes), ``read_ahead`` for a read
started before it is needed, ``evict_in_parallel`` for a drain's evictions (``controller.effects.drain``).
No other part of the leader's work starts a thread: the lifecycle's scale-downs run on the ``sgfe`` lane.

Tests drive the same controllers with ``InlineWorkers`` (each job runs at once, in the caller's thread) or with
a stepping implementation of their own (jobs run when the test says: interleavings on purpose).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from controller.clock import Cancellation
from controller.fence import NotLeaderError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: Threads per lane (jobs of one lane beyond these wait for a thread).
LANES = {"scale-up": 4, "node": 4, "records": 1, "sgfe": 4}
#: API calls in flight at once for ``run_in_parallel`` and ``read_ahead``.
IO_THREADS = 8
#: Evictions in flight at once, over every drain (kubectl drain sends a node's all at once; one after another,
#: 50 evictions on a busy API server took seconds, each pod's grace period starting only at its own eviction).
EVICTION_THREADS = 16


class Workers(Protocol):
    def submit(self, lane: str, key: str, job: Callable[[], None]) -> bool:
        """Run ``job`` on ``lane`` unless a job of ``key`` is running; False if one is."""
        ...

    def busy(self, key: str) -> bool:
        """A job of ``key`` is queued or running."""
        ...

    def run_in_parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` on each item, several at once; the results in the items' order."""
        ...

    def read_ahead(self, fn: Callable[[], R]) -> concurrent.futures.Future[R]:
        """Start ``fn`` now; its result when it is needed."""
        ...


class ThreadWorkers:
    """The production ``Workers``: a thread pool per lane and one for API calls."""

    def __init__(
        self,
        lanes: dict[str, int] | None = None,
        io_threads: int = IO_THREADS,
        on_not_leader: Callable[[NotLeaderError], None] | None = None,
    ) -> None:
        self.on_not_leader = on_not_leader  # a job found this process deposed: stop the term's work
        self._lanes = {
            lane: concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix=lane)
            for lane, size in (lanes or LANES).items()
        }
        self._io = concurrent.futures.ThreadPoolExecutor(io_threads, thread_name_prefix="api-io")
        self._evictions = concurrent.futures.ThreadPoolExecutor(EVICTION_THREADS, thread_name_prefix="evict")
        self._running: dict[str, concurrent.futures.Future[None]] = {}
        self._lock = threading.Lock()

    def submit(self, lane: str, key: str, job: Callable[[], None]) -> bool:
        with self._lock:
            running = self._running.get(key)
            if running is not None and not running.done():
                return False
            self._running[key] = self._lanes[lane].submit(_guarded, key, job, self.on_not_leader)
            return True

    def busy(self, key: str) -> bool:
        with self._lock:
            running = self._running.get(key)
            return running is not None and not running.done()

    def run_in_parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        return list(self._io.map(fn, items))

    def read_ahead(self, fn: Callable[[], R]) -> concurrent.futures.Future[R]:
        return self._io.submit(fn)

    def evict_in_parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` on each item on the eviction threads; the results in the items' order."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        return list(self._evictions.map(fn, items))

    def shutdown(self, wait: bool = True) -> None:
        for pool in (*self._lanes.values(), self._io, self._evictions):
            pool.shutdown(wait=wait, cancel_futures=not wait)


class InlineWorkers:
    """Runs every job at once in the caller's thread (unit tests)."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, str]] = []

    def submit(self, lane: str, key: str, job: Callable[[], None]) -> bool:
        self.submitted.append((lane, key))
        _guarded(key, job)
        return True

    def busy(self, key: str) -> bool:
        return False

    def run_in_parallel(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return [fn(item) for item in items]

    def read_ahead(self, fn: Callable[[], R]) -> concurrent.futures.Future[R]:
        return completed(fn)


def completed(fn: Callable[[], R]) -> concurrent.futures.Future[R]:
    """``fn`` run now, as a finished future (its exception kept in it)."""
    future: concurrent.futures.Future[R] = concurrent.futures.Future()
    try:
        future.set_result(fn())
    except Exception as exc:  # the reader of the future sees it
        future.set_exception(exc)
    return future


def _guarded(key: str, job: Callable[[], None], on_not_leader: Callable[[NotLeaderError], None] | None = None) -> None:
    try:
        job()
    except NotLeaderError as exc:
        log.error("job %s stopped: %s", key, exc)
        if on_not_leader is not None:
            on_not_leader(exc)
    except Exception:
        log.exception("job %s failed; a later pass tries it again", key)


def run_passes(
    what: str,
    reconcile: Callable[[], float],
    wake: threading.Event,
    cancel: Cancellation,
    retry: float,
    *,
    min_gap: float = 0.0,
    monotonic: Callable[[], float] = time.monotonic,
) -> None:
    """Run ``reconcile`` (which returns the seconds until its next pass) until ``cancel`` fires or this
    process may no longer act (NotLeaderError); a failed pass is logged and retried after ``retry``.

    A wake-up less than ``min_gap`` seconds after a pass ended waits for the rest of it: a burst of watch events
    makes one pass per ``min_gap``, not one per event (each pass looks at every node), as client-go's
    workqueue coalesces the keys added while a worker is busy. A pass's own requested time is kept."""
    cancel.add_callback(wake.set)
    while not cancel.cancelled:
        try:
            delay = reconcile()
        except NotLeaderError as exc:
            log.error("stopping %s: %s", what, exc)
            return
        except Exception:
            log.exception("%s: a pass failed; retrying in %gs", what, retry)
            delay = retry
        ended = monotonic()
        woken = wake.wait(max(0.0, delay))
        wake.clear()
        rest = min(min_gap, delay) - (monotonic() - ended)
        if woken and rest > 0 and not cancel.cancelled:
            cancel.wait(rest)  # events meanwhile set ``wake`` again: the next pass sees them
