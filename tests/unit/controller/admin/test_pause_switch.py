"""The pause switch on the controller's Lease: cached reads, fail-safe, on_change, writes; the elector keeps it."""

from __future__ import annotations

import datetime as dt
import logging
from typing import cast

import pytest

from controller.adapters.election import KubeLeaseStore, LeaseElector
from controller.adapters.kube import Kube
from controller.adapters.pause_switch import (
    PAUSED,
    PAUSED_AT,
    PAUSED_BY,
    PAUSED_REASON,
    PauseStatus,
    PauseSwitch,
    lease_path,
)
from controller.clock import Cancellation, FakeClock
from tests.unit.controller.admin.conftest import NOW
from tests.unit.controller.admin.fake_kube import FakeKube, api_error
from tests.unit.controller.election_helpers import ExitRecorder
from tests.unit.controller.test_kube_lease_store import FakeCoordinationApi

NS, NAME = "kube-system", "spotguard-controller"
PATH = lease_path(NS, NAME)


def switch(kube: FakeKube, clock: FakeClock, **kwargs: object) -> PauseSwitch:
    return PauseSwitch(cast(Kube, kube), NS, NAME, clock, **kwargs)  # type: ignore[arg-type]


def lease(annotations: dict[str, str] | None = None) -> dict[str, object]:
    return {"metadata": {"annotations": annotations or {}}, "spec": {"holderIdentity": "a"}}


def gets(kube: FakeKube) -> int:
    return sum(1 for method, path, _ in kube.requests if method == "GET" and path == PATH)


def test_status_reads_the_annotations() -> None:
    status = PauseStatus.from_annotations(
        {PAUSED: "true", PAUSED_BY: "alice", PAUSED_AT: "2025-01-15T10:00:00Z", PAUSED_REASON: "INC-1"}
    )
    assert status == PauseStatus(True, "alice", dt.datetime(2025, 1, 15, 10, tzinfo=dt.UTC), "INC-1")
    assert status.describe() == "paused by alice at 2025-01-15T10:00:00Z: INC-1"
    assert PauseStatus.from_annotations({PAUSED: "false", PAUSED_BY: "alice"}) == PauseStatus(False)
    assert PauseStatus.from_annotations({PAUSED: "TRUE", PAUSED_AT: "garbage"}).at is None
    assert PauseStatus.from_lease(None) == PauseStatus(False)


def test_paused_reads_the_lease_at_most_every_refresh_period(kube: FakeKube, clock: FakeClock) -> None:
    kube.put(PATH, lease({PAUSED: "true"}))
    sw = switch(kube, clock, refresh_seconds=2.0)

    assert sw.paused() is True
    assert sw.paused() is True
    clock.advance(1.9)
    assert sw.paused() is True
    assert gets(kube) == 1

    kube.put(PATH, lease())
    clock.advance(0.1)
    assert sw.paused() is False
    assert gets(kube) == 2


def test_a_missing_lease_means_not_paused(kube: FakeKube, clock: FakeClock) -> None:
    assert switch(kube, clock).paused() is False


def test_a_failing_read_keeps_the_last_known_value_and_logs_once(
    kube: FakeKube, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    kube.put(PATH, lease({PAUSED: "true", PAUSED_BY: "alice"}))
    sw = switch(kube, clock, refresh_seconds=1.0)
    assert sw.paused() is True

    kube.failures[("GET", PATH)] = api_error(503, "ServiceUnavailable")
    with caplog.at_level(logging.DEBUG, logger="controller.adapters.pause_switch"):
        for _ in range(3):
            clock.advance(1.0)
            assert sw.paused() is True
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "cannot read" in r.getMessage()]
    assert len(warnings) == 1
    assert "HTTP 503" in warnings[0].getMessage()
    assert "keeping the last known value (paused)" in warnings[0].getMessage()
    assert gets(kube) == 4

    del kube.failures[("GET", PATH)]
    kube.put(PATH, lease())
    clock.advance(1.0)
    with caplog.at_level(logging.INFO, logger="controller.adapters.pause_switch"):
        assert sw.paused() is False
    assert any("readable again" in r.getMessage() for r in caplog.records)


def test_before_any_successful_read_it_is_not_paused(kube: FakeKube, clock: FakeClock) -> None:
    kube.failures[("GET", PATH)] = api_error(403, "Forbidden")
    assert switch(kube, clock).paused() is False


def test_on_change_follows_the_switch(kube: FakeKube, clock: FakeClock) -> None:
    seen: list[bool] = []
    kube.put(PATH, lease())
    sw = switch(kube, clock, refresh_seconds=0.0, on_change=seen.append)

    sw.paused()
    sw.paused()
    kube.put(PATH, lease({PAUSED: "true"}))
    sw.paused()
    sw.paused()
    kube.put(PATH, lease())
    sw.paused()

    assert seen == [False, True, False]


def test_run_refreshes_until_stopped(kube: FakeKube, clock: FakeClock) -> None:
    seen: list[bool] = []
    kube.put(PATH, lease({PAUSED: "true"}))
    sw = switch(kube, clock, refresh_seconds=2.0, on_change=seen.append)
    stop = Cancellation()

    def after_three_reads(method: str, path: str) -> None:
        if gets(kube) >= 3:
            stop.cancel("test done")

    kube.on_request = after_three_reads
    sw.run(stop)

    assert seen == [True]
    assert gets(kube) == 3
    assert clock.slept == [2.0, 2.0]


def test_set_pauses_with_a_merge_patch_of_the_annotations_only(kube: FakeKube, clock: FakeClock) -> None:
    kube.put(PATH, {"metadata": {"annotations": {"team": "infra"}}, "spec": {"holderIdentity": "a"}})
    sw = switch(kube, clock)

    status = sw.set(True, "alice@laptop", "INC-1")

    assert status == PauseStatus(True, "alice@laptop", NOW, "INC-1")
    stored = kube.get(PATH)
    assert stored is not None
    assert stored["spec"] == {"holderIdentity": "a"}
    assert stored["metadata"]["annotations"] == {
        "team": "infra",
        PAUSED: "true",
        PAUSED_BY: "alice@laptop",
        PAUSED_AT: "2025-01-15T10:00:00Z",
        PAUSED_REASON: "INC-1",
    }
    method, _, body = kube.requests[-1]
    assert method == "PATCH"
    assert set(body) == {"metadata"}
    assert sw.paused() is True  # learnt from the write, no read needed
    assert gets(kube) == 0

    assert sw.set(False, "bob", "") == PauseStatus(False)
    stored = kube.get(PATH)
    assert stored is not None
    assert stored["metadata"]["annotations"] == {"team": "infra"}


def test_pausing_before_the_controller_ever_ran_creates_an_unheld_lease(kube: FakeKube, clock: FakeClock) -> None:
    status = switch(kube, clock).set(True, "alice", "before install")

    assert status.paused
    stored = kube.get(PATH)
    assert stored is not None
    assert stored["spec"] == {}
    assert stored["metadata"]["annotations"][PAUSED_REASON] == "before install"


def test_resuming_without_a_lease_is_a_no_op(kube: FakeKube, clock: FakeClock) -> None:
    assert switch(kube, clock).set(False, "alice", "") == PauseStatus(False)
    assert kube.get(PATH) is None


def test_a_lease_created_by_an_elector_meanwhile_is_patched(kube: FakeKube, clock: FakeClock) -> None:
    original = kube._create

    def elector_wins(path: str, body: dict[str, object]) -> dict[str, object]:
        kube.put(PATH, lease())
        return original(path, body)  # now 409 AlreadyExists

    kube._create = elector_wins  # type: ignore[method-assign]
    kube.failures[("PATCH", PATH)] = api_error(404, "NotFound")
    sw = switch(kube, clock)

    def patch_works_again(method: str, path: str) -> None:
        if method == "POST":
            kube.failures.pop(("PATCH", PATH), None)

    kube.on_request = patch_works_again
    assert sw.set(True, "alice", "race").paused
    stored = kube.get(PATH)
    assert stored is not None
    assert stored["spec"] == {"holderIdentity": "a"}
    assert stored["metadata"]["annotations"][PAUSED] == "true"


def test_a_forbidden_write_raises(kube: FakeKube, clock: FakeClock) -> None:
    kube.put(PATH, lease())
    kube.failures[("PATCH", PATH)] = api_error(403, "Forbidden")
    with pytest.raises(Exception, match="Forbidden"):
        switch(kube, clock).set(True, "alice", "x")


def test_the_elector_keeps_a_pause_written_between_its_renewals() -> None:
    """The CLI merge-patches the Lease; the leader's next renew conflicts, re-reads, and keeps the annotations."""
    api = FakeCoordinationApi()
    clock = FakeClock(start=NOW)
    elector = LeaseElector(KubeLeaseStore(api, NS, NAME), identity="a", clock=clock, exit_process=ExitRecorder())
    assert elector.try_acquire_or_renew()

    stored = api.leases[(NS, NAME)]
    stored["metadata"]["annotations"] = {PAUSED: "true", PAUSED_BY: "alice"}
    stored["metadata"]["resourceVersion"] = str(int(stored["metadata"]["resourceVersion"]) + 1)

    for _ in range(3):
        clock.advance(2)
        assert elector.try_acquire_or_renew()
    after = api.leases[(NS, NAME)]
    assert after["metadata"]["annotations"] == {PAUSED: "true", PAUSED_BY: "alice"}
    assert after["spec"]["holderIdentity"] == "a"
    assert after["spec"]["renewTime"] == "2025-01-15T10:00:06.000000Z"

    assert elector.release()
    assert api.leases[(NS, NAME)]["metadata"]["annotations"] == {PAUSED: "true", PAUSED_BY: "alice"}
