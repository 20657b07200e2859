"""The leader's threads in one place: the pass loop's coalescing of wake-ups, and the lanes."""

from __future__ import annotations

import threading

from controller.clock import Cancellation
from controller.workers import InlineWorkers, ThreadWorkers, run_passes


class RecordedCancellation(Cancellation):
    """Records the gaps the loop waits for instead of waiting (no real sleep in a unit test)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(round(timeout or 0.0, 6))
        return self.cancelled


def run(passes: list[float], woken: bool, min_gap: float) -> tuple[int, list[float]]:
    """Run the loop for len(passes) passes, each returning the next delay; an event wakes it after each pass if
    ``woken``. The clock moves 0.01 s per reading."""
    now = [0.0]
    cancel = RecordedCancellation()
    wake = threading.Event()
    done = [0]

    def monotonic() -> float:
        now[0] += 0.01
        return now[0]

    def reconcile() -> float:
        done[0] += 1
        if done[0] == len(passes):
            cancel.cancel("test over")
        if woken:
            wake.set()  # a watch event arrived during the pass
        return passes[done[0] - 1]

    run_passes("test", reconcile, wake, cancel, retry=1.0, min_gap=min_gap, monotonic=monotonic)
    return done[0], cancel.waits


def test_a_wake_up_right_after_a_pass_waits_for_the_rest_of_the_gap() -> None:
    count, waits = run([30.0, 30.0, 30.0], woken=True, min_gap=0.05)

    assert count == 3
    assert waits == [0.04, 0.04], "the gap less the 0.01 s that passed between the pass's end and the wake-up"


def test_no_gap_without_a_wake_up_and_never_beyond_the_passes_own_time() -> None:
    assert run([0.0, 0.0], woken=False, min_gap=0.05)[1] == [], "a pass that asks for the next at once gets it"
    assert run([0.03, 0.03], woken=True, min_gap=0.05)[1] == [0.02], "the requested 0.03 s is kept, not 0.05"
    assert run([30.0, 30.0], woken=True, min_gap=0.0)[1] == [], "no gap asked: every wake-up is a pass"


def test_scale_downs_and_evictions_run_on_the_workers_threads() -> None:
    workers = ThreadWorkers(lanes={"sgfe": 1})
    names: list[str] = []
    ran = threading.Event()

    def job() -> None:
        names.append(threading.current_thread().name)
        ran.set()

    assert workers.submit("sgfe", "scale-down/uid-1", job)
    assert ran.wait(5.0)
    evicting = workers.evict_in_parallel(lambda item: (item, threading.current_thread().name), ["a", "b", "c"])
    workers.shutdown()

    assert names[0].startswith("sgfe")
    assert [item for item, _ in evicting] == ["a", "b", "c"], "results in the items' order"
    assert all(thread.startswith("evict") for _, thread in evicting)


def test_inline_workers_run_each_job_at_once() -> None:
    workers = InlineWorkers()
    ran: list[str] = []

    workers.submit("sgfe", "scale-down/uid-1", lambda: ran.append("job"))

    assert ran == ["job"] and workers.submitted == [("sgfe", "scale-down/uid-1")]
