"""The election state machine, stepped one attempt at a time on a fake clock over an in-memory Lease."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest

from controller.adapters.election import (
    ApiTimeoutError,
    ElectionConfig,
    InMemoryLeaseStore,
    LeaseElector,
    LeaseRecord,
    StoredLease,
)
from controller.clock import Cancellation, FakeClock
from controller.fence import NotLeaderError
from tests.unit.controller.election_helpers import CONFIG, held_by, holder_of, make_elector


def test_first_acquire_creates_the_lease(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    a = make_elector(store, clock, "a")

    assert a.try_acquire_or_renew()

    current = store.current()
    assert current is not None
    assert current.record == LeaseRecord(
        holder_identity="a",
        lease_duration_seconds=15,
        acquire_time=clock.now(),
        renew_time=clock.now(),
        lease_transitions=0,
    )
    assert [call for call, _ in store.calls] == ["get", "create"]
    status = a.status()
    assert status.is_leader
    assert status.holder_identity == "a"
    assert status.lease_transitions == 0
    assert status.last_renew_time == clock.now()


def test_standby_does_not_acquire_while_the_holder_keeps_renewing(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    a = make_elector(store, clock, "a")
    b = make_elector(store, clock, "b")
    assert a.try_acquire_or_renew()

    for _ in range(20):  # 40 s: well past one lease duration
        assert not b.try_acquire_or_renew()
        clock.advance(2)
        assert a.try_acquire_or_renew()

    assert holder_of(store) == "a"
    assert not b.is_leader
    assert b.status().holder_identity == "a"


def test_leader_renews_with_a_single_put_from_the_version_it_wrote(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    a = make_elector(store, clock, "a")
    assert a.try_acquire_or_renew()
    store.calls.clear()

    clock.advance(2)
    assert a.try_acquire_or_renew()

    assert [call for call, _ in store.calls] == ["update"]
    current = store.current()
    assert current is not None
    assert current.record.renew_time == clock.now()


def test_standby_takes_over_a_dead_holders_lease_after_lease_duration_of_no_change(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    # The dead holder's host clock ran an hour fast: its renewTime claims to be recent for another hour.
    store.create(held_by("dead", clock.now() + dt.timedelta(hours=1), transitions=4), timeout=1)
    b = make_elector(store, clock, "b")

    assert not b.try_acquire_or_renew()  # first sight of the record: the lease counts from now
    clock.advance(14.9)
    assert not b.try_acquire_or_renew()
    clock.advance(0.2)
    assert b.try_acquire_or_renew()

    current = store.current()
    assert current is not None
    assert current.record.holder_identity == "b"
    assert current.record.lease_transitions == 5


def test_a_record_that_looks_stale_is_still_respected_until_it_stops_changing(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    # The holder's clock runs an hour slow, but it keeps renewing: its renewTime always looks ancient.
    skewed = clock.now() - dt.timedelta(hours=1)
    store.create(held_by("slow-clock", skewed), timeout=1)
    b = make_elector(store, clock, "b")

    for second in range(1, 31):
        assert not b.try_acquire_or_renew()
        clock.advance(1)
        current = store.current()
        assert current is not None
        renewed = dataclasses.replace(current.record, renew_time=skewed + dt.timedelta(seconds=second))
        store.update(renewed, current.resource_version, timeout=1)

    assert holder_of(store) == "slow-clock"


class _RaceBeforeWrite:
    """Wraps the shared store for one elector: just before its first write, another elector runs a whole attempt."""

    def __init__(self, store: InMemoryLeaseStore) -> None:
        self._store = store
        self.rival: LeaseElector | None = None

    @property
    def description(self) -> str:
        return self._store.description

    def get(self, *, timeout: float) -> StoredLease | None:
        return self._store.get(timeout=timeout)

    def create(self, record: LeaseRecord, *, timeout: float) -> StoredLease:
        self._let_rival_run()
        return self._store.create(record, timeout=timeout)

    def update(self, record: LeaseRecord, resource_version: str, *, timeout: float) -> StoredLease:
        self._let_rival_run()
        return self._store.update(record, resource_version, timeout=timeout)

    def _let_rival_run(self) -> None:
        rival, self.rival = self.rival, None
        if rival is not None:
            assert rival.try_acquire_or_renew()


def test_two_standbys_racing_for_an_expired_lease_from_the_same_version_elect_exactly_one(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    store.create(held_by("dead", clock.now(), transitions=2), timeout=1)
    racing = _RaceBeforeWrite(store)
    a = LeaseElector(racing, identity="a", clock=clock, exit_process=lambda reason: None)
    b = make_elector(store, clock, "b")
    assert not a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.advance(16)

    racing.rival = b  # a reads version N, then b reads N and writes N+1, then a writes from N
    won = a.try_acquire_or_renew()

    assert not won
    assert b.is_leader and not a.is_leader
    current = store.current()
    assert current is not None
    assert current.record.holder_identity == "b"
    assert current.record.lease_transitions == 3  # one change of holder, not two
    assert not a.try_acquire_or_renew()  # a now sees b's fresh record and stands by
    assert a.status().holder_identity == "b"


def test_two_electors_creating_the_lease_at_once_elect_exactly_one(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    racing = _RaceBeforeWrite(store)
    a = LeaseElector(racing, identity="a", clock=clock, exit_process=lambda reason: None)
    racing.rival = make_elector(store, clock, "b")

    assert not a.try_acquire_or_renew()  # its create gets 409 AlreadyExists

    assert holder_of(store) == "b"
    assert not a.is_leader
    assert not a.try_acquire_or_renew()


def test_lease_transitions_count_changes_of_holder_and_not_renewals(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    a = make_elector(store, clock, "a")
    b = make_elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    first_acquired = clock.now()
    for _ in range(3):
        clock.advance(2)
        assert a.try_acquire_or_renew()
    current = store.current()
    assert current is not None
    assert current.record.lease_transitions == 0
    assert current.record.acquire_time == first_acquired

    assert not b.try_acquire_or_renew()
    clock.advance(16)  # a died
    assert b.try_acquire_or_renew()
    current = store.current()
    assert current is not None
    assert (current.record.lease_transitions, current.record.acquire_time) == (1, clock.now())
    assert not a.try_acquire_or_renew()

    assert b.release()
    assert a.try_acquire_or_renew()
    current = store.current()
    assert current is not None
    assert current.record.lease_transitions == 2


def test_release_writes_an_empty_holder_with_a_one_second_lease_and_a_standby_takes_it_at_once(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    a = make_elector(store, clock, "a")
    b = make_elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.advance(5)

    assert a.release()

    current = store.current()
    assert current is not None
    assert current.record == LeaseRecord(
        holder_identity="",
        lease_duration_seconds=1,
        acquire_time=clock.now(),
        renew_time=clock.now(),
        lease_transitions=0,
    )
    assert not a.is_leader
    with pytest.raises(NotLeaderError):
        a.ensure_leader()
    assert b.try_acquire_or_renew()  # its next retry: no need to wait out the old lease
    assert holder_of(store) == "b"


def test_release_by_a_process_that_does_not_lead_writes_nothing(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    a = make_elector(store, clock, "a")
    b = make_elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()

    assert not b.release()

    assert holder_of(store) == "a"


def test_release_still_succeeds_when_the_last_renew_landed_but_its_reply_was_lost(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    a = make_elector(store, clock, "a")
    assert a.try_acquire_or_renew()
    clock.advance(2)
    store.fail_calls(count=2, after_write=True)  # the renew lands but its reply is lost, then the re-read fails
    assert not a.try_acquire_or_renew()  # so a holds a stale resourceVersion now

    assert a.release()

    assert holder_of(store) == ""


def test_standby_retries_at_most_one_retry_period_apart(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    store.create(held_by("dead", clock.now()), timeout=1)
    fractions = iter([0.0, 0.99] * 20)
    b = make_elector(store, clock, "b", random_fraction=lambda: next(fractions))
    started = clock.monotonic()

    assert b.acquire(Cancellation())

    assert clock.slept, "the standby should have waited between attempts"
    assert all(CONFIG.retry_period / 2 <= pause <= CONFIG.retry_period for pause in clock.slept)
    assert started + 15 < clock.monotonic() <= started + 15 + CONFIG.retry_period


def test_acquire_returns_without_leading_once_stopped(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    store.create(held_by("other", clock.now()), timeout=1)
    b = make_elector(store, clock, "b")
    stop = Cancellation()
    stop.cancel("SIGTERM")

    assert not b.acquire(stop)
    assert holder_of(store) == "other"


# -- the fence ---------------------------------------------------------------------------------------------------


def test_fence_passes_for_a_freshly_renewed_leader(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    a = make_elector(store, clock, "a")
    assert a.try_acquire_or_renew()
    clock.advance(12.9)  # 15 s lease - 2 s margin = 13 s of trust after the renew was sent

    a.ensure_leader()


def test_fence_fails_once_the_lease_minus_margin_has_passed_without_a_renew(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    a = make_elector(store, clock, "a")
    assert a.try_acquire_or_renew()
    clock.advance(13)

    with pytest.raises(NotLeaderError, match=r"last successful renew was sent 13\.0s ago") as raised:
        a.ensure_leader()
    assert raised.value.identity == "a"
    assert raised.value.seconds_since_renew == pytest.approx(13)
    a.ensure_leader(margin=1)  # a smaller margin still trusts the remaining second
    with pytest.raises(NotLeaderError):
        a.ensure_leader(margin=1.5 + 1)


def test_fence_fails_for_a_standby_and_names_the_holder(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    a = make_elector(store, clock, "a")
    b = make_elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()

    with pytest.raises(
        NotLeaderError, match=r"'b' is not the leader .* \(holder: 'a', our last successful renew: never"
    ):
        b.ensure_leader()


def test_a_leader_frozen_past_its_lease_makes_no_aws_call_when_it_wakes(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    a = make_elector(store, clock, "a")
    b = make_elector(store, clock, "b")
    aws_calls: list[str] = []

    def scale_up(elector: LeaseElector) -> None:
        elector.ensure_leader()
        aws_calls.append(elector.identity)

    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    scale_up(a)

    clock.advance(16)  # SIGSTOP: a is frozen; monotonic time runs on
    assert b.try_acquire_or_renew()
    scale_up(b)
    # SIGCONT: a's work thread runs before its renew loop notices anything
    with pytest.raises(NotLeaderError):
        scale_up(a)
    assert not a.try_acquire_or_renew()  # and its renew finds b holding the lease

    assert aws_calls == ["a", "b"]
    assert not a.is_leader
    assert a.status().holder_identity == "b"


def test_fence_guards_an_aws_call_by_name(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    a = make_elector(store, clock, "a")
    b = make_elector(store, clock, "b")
    fence: Callable[[str], None] = b.fence  # the shape controller.adapters.aws.AutoScaling takes
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()

    a.fence("SetDesiredCapacity")
    with pytest.raises(NotLeaderError, match="refusing AWS SetDesiredCapacity"):
        fence("SetDesiredCapacity")


class _SlowReplies:
    """Wraps a store so that every write's reply arrives ``delay`` seconds after the request was sent."""

    def __init__(self, store: InMemoryLeaseStore, clock: FakeClock, delay: float) -> None:
        self._store, self._clock, self._delay = store, clock, delay

    @property
    def description(self) -> str:
        return self._store.description

    def get(self, *, timeout: float) -> StoredLease | None:
        return self._store.get(timeout=timeout)

    def create(self, record: LeaseRecord, *, timeout: float) -> StoredLease:
        stored = self._store.create(record, timeout=timeout)
        self._clock.advance(self._delay)
        return stored

    def update(self, record: LeaseRecord, resource_version: str, *, timeout: float) -> StoredLease:
        stored = self._store.update(record, resource_version, timeout=timeout)
        self._clock.advance(self._delay)
        return stored


def test_fence_counts_from_when_the_renew_was_sent_not_when_its_reply_came(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    a = LeaseElector(_SlowReplies(store, clock, delay=4), identity="a", clock=clock, exit_process=lambda reason: None)
    assert a.try_acquire_or_renew()  # sent at t, answered at t + 4

    clock.advance(9.5)  # 9.5 s after the reply, but 13.5 s after the request: a standby may be close to taking over

    with pytest.raises(NotLeaderError, match=r"sent 13\.5s ago"):
        a.ensure_leader()


# -- failures of the API -------------------------------------------------------------------------------------------


def test_api_timeouts_on_every_call_are_failed_attempts_not_crashes(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    a = make_elector(store, clock, "a")
    store.fail_calls(count=5)

    assert not a.try_acquire_or_renew()
    assert a.acquire(Cancellation())  # keeps trying through the remaining failures, then wins

    assert holder_of(store) == "a"
    assert len(store.calls) == 5 + 2  # five failed reads, then a read and a create


def test_an_unexpected_exception_from_the_store_is_a_failed_attempt(clock: FakeClock) -> None:
    class BrokenStore(InMemoryLeaseStore):
        def get(self, *, timeout: float) -> StoredLease | None:
            raise RuntimeError("bug in a store")

    a = LeaseElector(BrokenStore(), identity="a", clock=clock, exit_process=lambda reason: None)

    assert not a.try_acquire_or_renew()
    assert not a.is_leader


def test_a_renew_whose_reply_was_lost_does_not_cost_the_leadership(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    a = make_elector(store, clock, "a")
    assert a.try_acquire_or_renew()
    clock.advance(2)
    store.fail_calls(ApiTimeoutError("reply lost", lease=store.description), count=1, after_write=True)
    store.calls.clear()

    assert a.try_acquire_or_renew()  # the re-read shows the lease still names a, so it renews from there

    assert [call for call, _ in store.calls] == ["update", "get", "update"]
    store.fail_calls(count=2, after_write=True)  # the same, and the re-read times out as well
    assert not a.try_acquire_or_renew()
    clock.advance(2)
    assert a.try_acquire_or_renew()  # the optimistic PUT conflicts with its own lost write; the re-read recovers

    current = store.current()
    assert current is not None
    assert (current.record.holder_identity, current.record.lease_transitions) == ("a", 0)
    a.ensure_leader()


def test_every_api_call_is_bounded_by_a_timeout_shorter_than_the_renew_deadline(
    store: InMemoryLeaseStore, clock: FakeClock
) -> None:
    a = make_elector(store, clock, "a")
    b = make_elector(store, clock, "b")
    assert a.try_acquire_or_renew()
    assert not b.try_acquire_or_renew()
    clock.advance(2)
    assert a.try_acquire_or_renew()
    assert a.release()

    assert store.calls
    assert all(0 < timeout <= CONFIG.call_timeout < CONFIG.renew_deadline for _, timeout in store.calls)


# -- observers ------------------------------------------------------------------------------------------------------


def test_on_new_leader_reports_each_change_of_holder_once(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    seen: list[str] = []
    a = make_elector(store, clock, "a")
    b = make_elector(store, clock, "b", on_new_leader=seen.append)
    assert a.try_acquire_or_renew()

    for _ in range(3):
        assert not b.try_acquire_or_renew()
        clock.advance(2)
        assert a.try_acquire_or_renew()
    assert a.release()
    assert b.try_acquire_or_renew()

    assert seen == ["a", "b"]  # b takes over on the same attempt that shows it the release


def test_a_failing_callback_does_not_stop_the_election(store: InMemoryLeaseStore, clock: FakeClock) -> None:
    def explode(holder: str) -> None:
        raise RuntimeError(f"metrics broke on {holder}")

    a = make_elector(store, clock, "a", on_new_leader=explode)

    assert a.try_acquire_or_renew()
    assert a.is_leader


# -- configuration ------------------------------------------------------------------------------------------------


def test_defaults_are_client_gos() -> None:
    config = ElectionConfig()
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15, 10, 2)
    assert config.call_timeout == 5


@pytest.mark.parametrize(
    ("settings", "complaint"),
    [
        ({"lease_duration": 10, "renew_deadline": 10}, "lease_duration .* must be greater than renew_deadline"),
        ({"renew_deadline": 2.4, "retry_period": 2}, r"renew_deadline .* greater than 1\.2 x retry_period"),
        ({"retry_period": 0}, "retry_period must be positive"),
        ({"lease_duration": -15}, "lease_duration must be positive"),
        ({"renew_deadline": 0}, "renew_deadline must be positive"),
        ({"lease_duration": 15.5}, "whole seconds"),
        ({"request_timeout": 10}, "request_timeout .* shorter than renew_deadline"),
        ({"request_timeout": 0}, "request_timeout .* must be positive"),
        ({"fence_margin": 15}, "fence_margin"),
        ({"fence_margin": -1}, "fence_margin"),
    ],
)
def test_contradictory_timings_are_refused(settings: dict[str, float], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        ElectionConfig(**settings)


def test_call_timeout_is_half_the_renew_deadline_up_to_five_seconds() -> None:
    assert ElectionConfig(lease_duration=8, renew_deadline=4, retry_period=1).call_timeout == 2
    assert ElectionConfig(lease_duration=60, renew_deadline=40, retry_period=5).call_timeout == 5
    assert ElectionConfig(request_timeout=3).call_timeout == 3


def test_identity_defaults_to_hostname_and_a_random_suffix(store: InMemoryLeaseStore) -> None:
    first, second = LeaseElector(store).identity, LeaseElector(store).identity
    assert first != second
    assert first.rsplit("_", 1)[0] == second.rsplit("_", 1)[0]


def test_an_empty_identity_is_refused(store: InMemoryLeaseStore) -> None:
    with pytest.raises(ValueError, match="identity must not be empty"):
        LeaseElector(store, identity="")
