"""The cancellation token handed to the leader's work, and the clocks the election runs on."""

from __future__ import annotations

import datetime as dt

import pytest

from controller.clock import Cancellation, FakeClock, SystemClock


def test_cancellation_keeps_the_first_reason() -> None:
    token = Cancellation()
    assert (token.cancelled, token.reason) == (False, None)

    assert token.cancel("lost leadership")
    assert not token.cancel("SIGTERM")

    assert token.cancelled
    assert token.reason == "lost leadership"
    assert token.wait(0)


def test_cancellation_callbacks_run_once_even_when_registered_late_or_one_fails() -> None:
    token = Cancellation()
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("callback bug")

    token.add_callback(lambda: ran.append("early"))
    token.add_callback(broken)
    token.cancel("stop")
    token.cancel("stop again")
    token.add_callback(lambda: ran.append("late"))

    assert ran == ["early", "late"]


def test_fake_clock_sleep_moves_both_clocks_without_waiting() -> None:
    clock = FakeClock(start=dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.UTC), monotonic_start=50.0)

    assert not clock.sleep(2.5)

    assert clock.monotonic() == 52.5
    assert clock.now() == dt.datetime(2025, 1, 15, 10, 0, 2, 500000, tzinfo=dt.UTC)
    assert clock.slept == [2.5]


def test_fake_clock_sleep_on_a_cancelled_token_returns_at_once() -> None:
    clock = FakeClock(monotonic_start=50.0)
    token = Cancellation()
    token.cancel("SIGTERM")

    assert clock.sleep(2, token)
    assert clock.monotonic() == 50.0


def test_fake_clock_wall_time_can_jump_while_monotonic_time_does_not() -> None:
    clock = FakeClock(monotonic_start=50.0)
    clock.set_wall_time(dt.datetime(2030, 1, 1, tzinfo=dt.UTC))

    assert clock.monotonic() == 50.0
    assert clock.now().year == 2030
    with pytest.raises(ValueError, match="cannot go backwards"):
        clock.advance(-1)


def test_system_clock_gives_aware_utc_and_sleep_returns_at_once_when_cancelled() -> None:
    clock = SystemClock()
    token = Cancellation()
    token.cancel("SIGTERM")

    assert clock.now().utcoffset() == dt.timedelta(0)
    assert clock.sleep(3600, token)  # would hang the test if it did not honour the cancellation
