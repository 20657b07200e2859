"""Which recommendations share one SetDesiredCapacity call: a queue per spot ASG, closed by a debounce.

A queue closes once no recommendation has arrived for a quiet period, so a lone recommendation waits only
``window``, but never later than ``max_delay`` after its first arrival, so a steady stream is cut into calls
that far apart. EC2 recommends rebalancing to a whole capacity pool at once and each node's nodewatch sees
it at its next poll: such a burst reaches the controller spread over one nodewatch poll interval (2 s).
With ``max_delay`` at that interval a burst of any size costs one or two calls per ASG.

The quiet period is one ``window`` while a queue holds one recommendation and ``BURST_QUIET_WINDOWS``
windows once a second one has come: a burst has begun, and its arrivals are uneven (an API server or watch
that lags for a moment, the controller's own pass): the benchmark's bursts showed gaps of 140-250 ms between
Node events with arrivals every few milliseconds on either side, and a fixed 100 ms closed the first call after
8 of 250 recommendations. A queue also closes as soon as it holds ``max_size`` nodes (the size one intent
record can list).

A burst whose first arrivals come alone or in a small clump closes its first call early, on quiet (that is
what keeps a lone recommendation fast); the rest of the burst then queues behind it. Counted from its own
first arrival, that second queue would close ``max_delay`` later, before a burst that the API server stretched
past one poll interval has ended: a third call (the benchmark's bursts of 500, arriving over 2.3-3.6 s, took
3 or 4). So a queue that opens within ``max_delay`` of the first arrival of a burst whose first queue closed
early belongs to that burst and may stay open until twice ``max_delay`` after the burst's first arrival: it
still closes on quiet, so it costs no time unless arrivals keep coming, and nothing waits longer than twice
``max_delay``.

Pure bookkeeping on an injected monotonic time: ``controller.replacement`` owns the AWS calls.
"""

from __future__ import annotations

import dataclasses

from controller.capacity.groups import Pair

BURST_QUIET_WINDOWS = 3.0  # the quiet period of a queue of two or more, in windows


@dataclasses.dataclass(frozen=True)
class Queued:
    """A recommended node waiting for its spot scale-up."""

    node: str
    trigger: str  # "rebalance" | "interruption"
    pair: Pair
    seen: float  # monotonic time it was queued
    notice: str = ""  # the notice's identity (controller.replacement.decisions.Notice)
    previous: str = ""  # the outcome of an earlier replacement of this node, if any


class BatchQueues:
    def __init__(self, window: float, max_delay: float, max_size: int = 1000) -> None:
        if window < 0 or max_delay < window:
            raise ValueError(f"batch window {window} s must be >= 0 and at most the maximum delay {max_delay} s")
        if max_size < 1:
            raise ValueError(f"batch max size {max_size} must be at least 1")
        self.window = window
        self.max_delay = max_delay
        self.max_size = max_size
        self._queues: dict[str, dict[str, Queued]] = {}
        self._not_before: dict[str, float] = {}  # asg -> no retry before (after an AWS error)
        self._bursts: dict[str, float] = {}  # asg -> first arrival of a burst whose first queue closed early
        self._refresh_held: set[str] = set()  # ASGs whose queue waits for an instance refresh (not an AWS error)

    def add(self, asg: str, item: Queued) -> bool:
        """Queue ``item`` for ``asg``; False if its node is queued already (first arrival kept)."""
        queue = self._queues.setdefault(asg, {})
        if item.node in queue:
            return False
        queue[item.node] = item
        if item.trigger == "interruption" and asg in self._refresh_held:
            # an interruption never waits for a refresh: the queue closes as if nothing waited
            self._refresh_held.discard(asg)
            self._not_before.pop(asg, None)
        return True

    def waiting(self) -> list[str]:
        """The ASGs with a queue, in name order."""
        return sorted(asg for asg, queue in self._queues.items() if queue)

    def queued(self) -> set[str]:
        """Every queued node's name."""
        return {name for queue in self._queues.values() for name in queue}

    def due_at(self, asg: str) -> float | None:
        """When ``asg``'s queue closes (None if empty)."""
        queue = self._queues.get(asg)
        if not queue:
            return None
        first = min(item.seen for item in queue.values())
        if len(queue) >= self.max_size:
            closes = first
        else:
            last = max(item.seen for item in queue.values())
            closes = min(last + self.quiet_period(len(queue)), self._latest_close(asg, first))
        return max(closes, self._not_before.get(asg, closes))

    def _latest_close(self, asg: str, first: float) -> float:
        """The maximum delay's end for a queue of ``asg`` whose first arrival was at ``first``."""
        burst = self._burst_of(asg, first)
        if burst is not None:
            return burst + 2 * self.max_delay  # the rest of a burst whose first call closed early
        return first + self.max_delay

    def _burst_of(self, asg: str, first: float) -> float | None:
        """The first arrival of the burst that a queue of ``asg`` first arrived at ``first`` belongs to, if any."""
        burst = self._bursts.get(asg)
        return burst if burst is not None and burst <= first < burst + self.max_delay else None

    def quiet_period(self, queued: int) -> float:
        """How long a queue of ``queued`` recommendations stays open with no arrival (see the module's text)."""
        return self.window if queued <= 1 else self.window * BURST_QUIET_WINDOWS

    def due(self, now: float) -> list[str]:
        """The ASGs whose queue closes at or before ``now``, in name order."""
        return sorted(asg for asg in self._queues if (at := self.due_at(asg)) is not None and at <= now)

    def next_due(self) -> float | None:
        """The earliest closing time of any queue (None if nothing is queued)."""
        times = [at for asg in self._queues if (at := self.due_at(asg)) is not None]
        return min(times) if times else None

    def take(self, asg: str) -> list[Queued]:
        """Close ``asg``'s queue: up to ``max_size`` nodes, first arrivals first (the rest stay queued)."""
        queue = self._queues.get(asg, {})
        if queue:
            self._note_burst(asg, queue)
        taken = sorted(queue.values(), key=lambda item: (item.seen, item.node))[: self.max_size]
        for item in taken:
            del queue[item.node]
        if not queue:
            self._queues.pop(asg, None)
        self._not_before.pop(asg, None)
        self._refresh_held.discard(asg)
        return sorted(taken, key=lambda item: item.node)

    def _note_burst(self, asg: str, queue: dict[str, Queued]) -> None:
        """Remember a burst's first arrival when ``asg``'s queue closes before its maximum delay."""
        first = min(item.seen for item in queue.values())
        if self._burst_of(asg, first) is not None:
            return  # a later queue of the same burst: the burst keeps its first arrival
        self._bursts.pop(asg, None)
        due = self.due_at(asg)
        if due is not None and due < first + self.max_delay:
            self._bursts[asg] = first

    def put_back(self, asg: str, items: list[Queued], retry_at: float, refresh_held: bool = False) -> None:
        """Re-queue ``items`` (their scale-up could not be made, or, ``refresh_held``, waits for an instance
        refresh) and close again no sooner than ``retry_at``, or as soon as an interruption arrives if
        ``refresh_held``."""
        queue = self._queues.setdefault(asg, {})
        for item in items:
            queue.setdefault(item.node, item)
        self._not_before[asg] = retry_at
        if refresh_held:
            self._refresh_held.add(asg)
        else:
            self._refresh_held.discard(asg)
