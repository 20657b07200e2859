"""``LeaseElector.run``: the leader's work in its own thread, cancelled on loss or stop, then exit or release.

The elector's loop runs in the test's thread on a fake clock that advances when slept on; only the leader's
work runs in a real thread, and it ends as soon as its token is cancelled.
"""

from __future__ import annotations

import threading

import pytest

from controller.adapters.election import InMemoryLeaseStore
from controller.clock import Cancellation, FakeClock
from controller.fence import NotLeaderError
from tests.unit.controller.election_helpers import CONFIG, START, ExitRecorder, held_by, holder_of, make_elector

#: Bound on waiting for the work thread (it ends within microseconds); only there so a bug cannot hang the run.
THREAD_GUARD = 30.0


class RecordingWork:
    """The leader's work: waits for its token, then notes what it saw."""

    def __init__(self) -> None:
        self.token: Cancellation | None = None
        self.finished = threading.Event()

    def __call__(self, token: Cancellation) -> None:
        self.token = token
        token.wait()
        self.finished.set()


def test_renew_failing_until_the_deadline_cancels_the_work_before_exiting(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    work = RecordingWork()
    fence_after_loss: list[bool] = []
    exits_seen_work_stopped: list[bool] = []

    def exit_process(reason: str) -> None:
        exits_seen_work_stopped.append(work.finished.wait(THREAD_GUARD))
        exits.reasons.append(reason)

    def on_stopped_leading() -> None:
        try:
            a.ensure_leader()
        except NotLeaderError:
            fence_after_loss.append(False)
        else:
            fence_after_loss.append(True)

    exits = ExitRecorder()
    a = make_elector(
        store,
        clock,
        "a",
        exit_process=exit_process,
        on_started_leading=store.fail_calls,
        on_stopped_leading=on_stopped_leading,
    )
    acquired_at = clock.monotonic()

    a.run(work, Cancellation())

    assert len(exits.reasons) == 1
    assert "no renew succeeded within the 10s renew deadline" in exits.reasons[0]
    assert exits_seen_work_stopped == [True]  # the work was told to stop before the exit was asked for
    assert work.token is not None
    assert work.token.reason == exits.reasons[0]
    assert fence_after_loss == [False]
    assert not a.is_leader
    # Gave up one retry period plus the renew deadline after acquiring: before any standby could take over.
    assert clock.monotonic() == pytest.approx(acquired_at + CONFIG.retry_period + CONFIG.renew_deadline)
    assert clock.monotonic() < acquired_at + CONFIG.lease_duration


def test_a_renew_call_started_near_the_deadline_is_cut_to_the_time_left(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    a = make_elector(store, clock, "a", on_started_leading=store.fail_calls)
    calls_before_outage = 2  # the get and create that acquired the lease

    a.run(RecordingWork(), Cancellation())

    renew_timeouts = [timeout for _, timeout in store.calls[calls_before_outage:]]
    assert max(renew_timeouts) == CONFIG.call_timeout
    assert renew_timeouts[-1] == pytest.approx(2.0)  # the last attempt, 8 s into the 10 s deadline: 2 s were left


def test_another_holder_taking_the_lease_ends_the_leadership_at_the_next_renew(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    def intrude() -> None:
        current = store.current()
        assert current is not None
        store.update(held_by("intruder", clock.now(), transitions=1), current.resource_version, timeout=1)

    exits = ExitRecorder()
    a = make_elector(store, clock, "a", exit_process=exits, on_started_leading=intrude)
    acquired_at = clock.monotonic()

    a.run(RecordingWork(), Cancellation())

    assert len(exits.reasons) == 1
    assert "held by 'intruder'" in exits.reasons[0]
    assert clock.monotonic() == pytest.approx(acquired_at + CONFIG.retry_period)  # no waiting for the deadline
    assert holder_of(store) == "intruder"


def test_stop_ends_the_work_first_then_releases_the_lease_to_a_standby(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    stop = Cancellation()
    holder_when_work_ended: list[str | None] = []
    stopped_leading: list[str | None] = []

    def work(token: Cancellation) -> None:
        stop.cancel("SIGTERM")  # the signal arrives while the leader works
        token.wait()
        holder_when_work_ended.append(holder_of(store))

    exits = ExitRecorder()
    a = make_elector(
        store, clock, "a", exit_process=exits, on_stopped_leading=lambda: stopped_leading.append(holder_of(store))
    )
    b = make_elector(store, clock, "b")

    a.run(work, stop)

    assert holder_when_work_ended == ["a"]  # still held while the work wound down
    assert stopped_leading == [""]  # released by the time on_stopped_leading ran
    assert exits.reasons == []
    assert b.try_acquire_or_renew()  # the standby's next attempt takes it


def test_work_that_raises_releases_the_lease_and_the_error_reaches_the_caller(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    def work(token: Cancellation) -> None:
        raise RuntimeError("reconcile loop crashed")

    exits = ExitRecorder()
    a = make_elector(store, clock, "a", exit_process=exits)

    with pytest.raises(RuntimeError, match="reconcile loop crashed"):
        a.run(work, Cancellation())

    assert holder_of(store) == ""
    assert exits.reasons == []


def test_stop_before_acquiring_returns_without_running_the_work(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    store.create(held_by("other", clock.now()), timeout=1)
    stop = Cancellation()
    started: list[bool] = []
    a = make_elector(store, clock, "a", on_started_leading=lambda: started.append(True))

    clock_before = clock.monotonic()
    stop.cancel("SIGTERM")
    a.run(lambda token: None, stop)

    assert started == []
    assert holder_of(store) == "other"
    assert clock.monotonic() == clock_before


class GatedClock(FakeClock):
    """A fake clock whose waits on a Cancellation first wait (real time) for it to fire.

    So the elector's renew loop does not spin ahead while the work thread acts: it wakes only when the work ends
    (or stop fires), as a real elector frozen with its process would find everything at once on waking.
    """

    def sleep(self, seconds: float, cancel: Cancellation | None = None) -> bool:
        if cancel is not None:
            cancel.wait(THREAD_GUARD)
        return super().sleep(seconds, cancel)


def test_work_that_stops_because_the_fence_refused_a_stale_leader_is_a_loss_not_a_release() -> None:
    """A leader frozen past its lease wakes; its work reaches the fence first, is refused and returns.

    That is lost leadership (exit 1, lease untouched: it may be the standby's by now), not a step-down.
    """
    store = InMemoryLeaseStore()
    clock = GatedClock(start=START)
    refused: list[str] = []

    def work(token: Cancellation) -> None:
        clock.advance(CONFIG.lease_duration)  # frozen (SIGSTOP) for a whole lease
        try:
            a.fence("SetDesiredCapacity")
        except NotLeaderError as error:  # what ReplacementController.run does: log, stop working
            refused.append(str(error))

    exits = ExitRecorder()
    stopped_leading: list[bool] = []
    a = make_elector(store, clock, "a", exit_process=exits, on_stopped_leading=lambda: stopped_leading.append(True))

    a.run(work, Cancellation())

    assert len(refused) == 1
    assert len(exits.reasons) == 1
    assert "the fence refused a capacity change" in exits.reasons[0]
    assert "last successful renew was sent 15.0s ago" in exits.reasons[0]
    assert holder_of(store) == "a"  # not released: a standby takes it once it expires
    assert stopped_leading == [True]
    assert not a.is_leader


def test_a_refusal_for_a_larger_margin_than_configured_is_not_a_loss() -> None:
    """A caller asking for more lease than the configured margin is refused, but the lease is still fine."""
    store = InMemoryLeaseStore()
    clock = GatedClock(start=START)
    refused: list[str] = []

    def work(token: Cancellation) -> None:
        clock.advance(5.0)  # 10 s of the 15 s lease left: enough for the default 2 s margin, not for 12 s
        try:
            a.ensure_leader(margin=12.0, action="a long drain")
        except NotLeaderError as error:
            refused.append(str(error))
        a.ensure_leader()  # the default margin still passes

    exits = ExitRecorder()
    a = make_elector(store, clock, "a", exit_process=exits)

    a.run(work, Cancellation())

    assert len(refused) == 1
    assert exits.reasons == []
    assert holder_of(store) == ""  # the work returned on its own: stepped down and released
