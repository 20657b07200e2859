"""The annotation changes a notice's life cycle calls for: appear, stay, disappear, reappear, change."""

from __future__ import annotations

from nodewatch import annotations as keys
from nodewatch.notices import INTERRUPTION, REBALANCE, Sighting, all_changes, apply_changes

T1, T2, T3 = "2025-01-15T10:00:05Z", "2025-01-15T10:05:00Z", "2025-01-15T11:00:00Z"
NOTICE = {keys.REBALANCE_NOTICE_TIME: "2025-01-15T10:00:00Z"}
IDENTITY = {"instance_id": "i-0123456789abcdef0", "availability_zone": "us-east-1a"}


def changes_for(recorded: dict[str, str], **sightings: Sighting) -> dict[str, str | None]:
    return all_changes(recorded, sightings, **IDENTITY)


def seen(values: dict[str, str] | None, when: str) -> Sighting:
    sighting = Sighting()
    sighting.observe(values, when)
    return sighting


def test_nothing_to_record_without_a_notice() -> None:
    assert changes_for({}, rebalance=seen(None, T1), interruption=seen(None, T1)) == {}


def test_a_failed_read_changes_nothing() -> None:
    recorded = {**NOTICE, keys.REBALANCE_FIRST_SEEN: T1, **_identity()}
    assert changes_for(recorded, rebalance=Sighting()) == {}


def test_a_new_notice_is_recorded_with_first_seen_and_identity() -> None:
    assert changes_for({}, rebalance=seen(NOTICE, T1)) == {
        keys.REBALANCE_NOTICE_TIME: "2025-01-15T10:00:00Z",
        keys.REBALANCE_FIRST_SEEN: T1,
        keys.INSTANCE_ID: "i-0123456789abcdef0",
        keys.AVAILABILITY_ZONE: "us-east-1a",
    }


def test_a_recorded_notice_still_showing_needs_no_change_and_keeps_its_first_seen() -> None:
    recorded = apply_changes({}, changes_for({}, rebalance=seen(NOTICE, T1)))
    assert changes_for(recorded, rebalance=seen(NOTICE, T3)) == {}


def test_a_disappeared_notice_is_recorded_as_cleared_not_forgotten() -> None:
    recorded = apply_changes({}, changes_for({}, rebalance=seen(NOTICE, T1)))
    assert changes_for(recorded, rebalance=seen(None, T2)) == {keys.REBALANCE_CLEARED: T2}


def test_a_cleared_notice_that_stays_away_needs_no_change() -> None:
    recorded = {**NOTICE, keys.REBALANCE_FIRST_SEEN: T1, keys.REBALANCE_CLEARED: T2, **_identity()}
    assert changes_for(recorded, rebalance=seen(None, T3)) == {}


def test_a_reappearing_notice_drops_cleared_and_gets_a_new_first_seen() -> None:
    recorded = {**NOTICE, keys.REBALANCE_FIRST_SEEN: T1, keys.REBALANCE_CLEARED: T2, **_identity()}
    assert changes_for(recorded, rebalance=seen(NOTICE, T3)) == {
        keys.REBALANCE_NOTICE_TIME: "2025-01-15T10:00:00Z",
        keys.REBALANCE_FIRST_SEEN: T3,
        keys.REBALANCE_CLEARED: None,
    }


def test_a_different_notice_time_is_a_new_notice() -> None:
    recorded = {**NOTICE, keys.REBALANCE_FIRST_SEEN: T1, **_identity()}
    newer = {keys.REBALANCE_NOTICE_TIME: "2025-01-15T10:59:00Z"}
    assert changes_for(recorded, rebalance=seen(newer, T3)) == {
        keys.REBALANCE_NOTICE_TIME: "2025-01-15T10:59:00Z",
        keys.REBALANCE_FIRST_SEEN: T3,
    }


def test_interruption_action_and_time_are_recorded_and_cleared() -> None:
    notice = {keys.INTERRUPTION_ACTION: "terminate", keys.INTERRUPTION_TIME: "2025-01-15T10:02:00Z"}
    first = changes_for({}, interruption=seen(notice, T1))
    assert first == {
        keys.INTERRUPTION_ACTION: "terminate",
        keys.INTERRUPTION_TIME: "2025-01-15T10:02:00Z",
        keys.INTERRUPTION_FIRST_SEEN: T1,
        **_identity(),
    }
    assert changes_for(apply_changes({}, first), interruption=seen(None, T2)) == {keys.INTERRUPTION_CLEARED: T2}


def test_a_changed_interruption_action_is_a_new_notice() -> None:
    recorded = {
        keys.INTERRUPTION_ACTION: "stop",
        keys.INTERRUPTION_TIME: "2025-01-15T10:02:00Z",
        keys.INTERRUPTION_FIRST_SEEN: T1,
        **_identity(),
    }
    notice = {keys.INTERRUPTION_ACTION: "terminate", keys.INTERRUPTION_TIME: "2025-01-15T10:02:00Z"}
    assert changes_for(recorded, interruption=seen(notice, T2)) == {
        keys.INTERRUPTION_ACTION: "terminate",
        keys.INTERRUPTION_TIME: "2025-01-15T10:02:00Z",
        keys.INTERRUPTION_FIRST_SEEN: T2,
    }


def test_a_lost_first_seen_is_written_again() -> None:
    assert changes_for({**NOTICE, **_identity()}, rebalance=seen(NOTICE, T2)) == {keys.REBALANCE_FIRST_SEEN: T2}


def test_a_tampered_value_under_our_key_is_corrected() -> None:
    recorded = {keys.REBALANCE_NOTICE_TIME: "garbage", keys.REBALANCE_FIRST_SEEN: T1, **_identity()}
    assert changes_for(recorded, rebalance=seen(NOTICE, T2)) == {
        keys.REBALANCE_NOTICE_TIME: "2025-01-15T10:00:00Z",
        keys.REBALANCE_FIRST_SEEN: T2,
    }


def test_identity_is_added_to_a_recorded_notice_once_known() -> None:
    recorded = {**NOTICE, keys.REBALANCE_FIRST_SEEN: T1}
    assert all_changes(recorded, {"rebalance": seen(NOTICE, T2)}, None, None) == {}
    assert changes_for(recorded, rebalance=seen(NOTICE, T2)) == _identity()


def test_every_change_uses_only_nodewatch_keys() -> None:
    notice = {keys.INTERRUPTION_ACTION: "hibernate", keys.INTERRUPTION_TIME: "2025-01-15T10:02:00Z"}
    recorded = {**NOTICE, keys.REBALANCE_FIRST_SEEN: T1}
    changes = changes_for(recorded, rebalance=seen(None, T2), interruption=seen(notice, T2))
    assert changes
    assert set(changes) <= set(keys.NODEWATCH_KEYS)


def test_sighting_reports_only_new_appearances() -> None:
    sighting = Sighting()
    assert sighting.observe(NOTICE, T1) is True
    assert sighting.observe(NOTICE, T2) is False
    assert sighting.since == T1
    assert sighting.observe(None, T2) is False
    assert sighting.since == T2
    assert sighting.observe(NOTICE, T3) is True
    assert REBALANCE.cleared_key != INTERRUPTION.cleared_key


def _identity() -> dict[str, str]:
    return {keys.INSTANCE_ID: "i-0123456789abcdef0", keys.AVAILABILITY_ZONE: "us-east-1a"}
