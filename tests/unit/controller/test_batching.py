"""Which recommendations share a SetDesiredCapacity: the debounce of controller.batching."""

from __future__ import annotations

import pytest

from controller.capacity.groups import Pair
from controller.replacement.batching import BatchQueues, Queued

PAIR = Pair("spot-a", "od-a")


def _add(queues: BatchQueues, node: str, at: float, asg: str = "spot-a") -> None:
    queues.add(asg, Queued(node, "rebalance", Pair(asg, "od"), at))


def test_a_lone_recommendation_closes_one_window_after_it_arrived() -> None:
    queues = BatchQueues(window=0.1, max_delay=2.0)
    _add(queues, "n1", at=10.0)

    assert queues.due(10.09) == []
    assert queues.due(10.1) == ["spot-a"]
    assert [q.node for q in queues.take("spot-a")] == ["n1"]
    assert queues.next_due() is None


def test_each_arrival_extends_the_window_but_never_past_the_maximum_delay() -> None:
    queues = BatchQueues(window=0.1, max_delay=2.0)
    for step in range(40):  # one every 50 ms for 2 s: never a quiet window
        _add(queues, f"n{step:02}", at=10.0 + step * 0.05)

    assert queues.due_at("spot-a") == pytest.approx(12.0)
    assert queues.due(11.99) == []
    taken = queues.take("spot-a")
    assert len(taken) == 40 and [q.node for q in taken] == sorted(q.node for q in taken)


def test_a_burst_spread_over_one_poll_interval_costs_at_most_two_calls() -> None:
    """500 nodewatch agents see the same recommendation at their next 2 s poll: arrivals over 2 s."""
    queues = BatchQueues(window=0.1, max_delay=2.0)
    arrivals = sorted((i * 7919 % 2000) / 1000 for i in range(500))  # spread over [0, 2) s, no gap >= 0.1 s
    calls = _calls_for(arrivals, queues)

    assert len(calls) <= 2
    assert sum(size for _, size in calls) == 500
    assert calls[-1][0] <= 2.2


def _calls_for(arrivals: list[float], queues: BatchQueues) -> list[tuple[float, int]]:
    """Drive ``arrivals`` (seconds, sorted) through ``queues`` on a 10 ms tick: (time, size) of each call."""
    calls: list[tuple[float, int]] = []
    now, pending = 0.0, list(enumerate(arrivals))
    while pending or queues.next_due() is not None:
        while pending and pending[0][1] <= now:
            index, at = pending.pop(0)
            _add(queues, f"n{index:03}", at=at)
        for asg in queues.due(now):
            calls.append((now, len(queues.take(asg))))
        now = round(now + 0.01, 2)
    return calls


def test_a_burst_with_pauses_in_its_arrivals_still_costs_at_most_two_calls() -> None:
    """As measured on the sandbox: Node events every few milliseconds, with pauses of 140-250 ms while the API
    server or the watch lagged, the last ones landing 0.3 s after the poll interval. A fixed 100 ms quiet window
    closed the first call after the first lump (8 of 250 nodes); the quiet period that grows with the queue
    does not."""
    pauses = [(0.03, 0.17), (1.33, 1.58), (1.62, 1.82)]
    steady = [i * 2.3 / 250 for i in range(250)]
    arrivals = sorted(
        at if not any(a <= at < b for a, b in pauses) else next(b for a, b in pauses if a <= at < b) for at in steady
    )
    calls = _calls_for(arrivals, BatchQueues(window=0.1, max_delay=2.0))

    assert len(calls) <= 2, calls
    assert sum(size for _, size in calls) == 250
    assert calls[0][1] >= 200, "the first call carries the burst, not its first lump"
    assert calls[-1][0] <= 2.3 + 0.3 + 0.01, "the stragglers wait at most three windows after the last"


def test_a_burst_whose_first_arrival_came_alone_still_costs_at_most_two_calls() -> None:
    """As measured in the benchmark's 3- and 4-call rounds: the burst's first Node event came alone, then
    nothing for 0.15 s (the first call took 1 node), and the API server stretched the rest over 2.5 s. Counted
    from its own first arrival the second queue closed 2 s later, before the burst ended: a third call."""
    arrivals = [0.0] + [0.25 + i * 2.3 / 249 for i in range(249)]
    calls = _calls_for(arrivals, BatchQueues(window=0.1, max_delay=2.0))

    assert [size for _, size in calls] == [1, 249], calls
    assert calls[0][0] == pytest.approx(0.1), "the first arrival still goes after one window"
    assert calls[-1][0] == pytest.approx(2.55 + 0.3, abs=0.015), "the rest closes on quiet after the last"


def test_a_stream_after_an_early_call_is_cut_at_twice_the_maximum_delay_from_its_start() -> None:
    queues = BatchQueues(window=0.1, max_delay=2.0)
    _add(queues, "n0", at=10.0)
    queues.take("spot-a")  # closed on quiet at 10.1: a burst began at 10.0
    for step in range(100):  # one every 50 ms from 10.5: never quiet
        _add(queues, f"n{step + 1:03}", at=10.5 + step * 0.05)

    assert queues.due_at("spot-a") == pytest.approx(14.0), "twice the maximum delay after the burst's first arrival"
    queues.take("spot-a")
    _add(queues, "late", at=14.1)
    assert queues.due_at("spot-a") == pytest.approx(14.2), "a queue after the burst is an ordinary one"


def test_lone_recommendations_a_second_apart_each_go_after_one_window() -> None:
    queues = BatchQueues(window=0.1, max_delay=2.0)
    for index, at in enumerate((10.0, 11.0, 11.5)):
        _add(queues, f"n{index}", at=at)
        assert queues.due_at("spot-a") == pytest.approx(at + 0.1)
        queues.take("spot-a")


def test_a_queue_closed_by_its_maximum_delay_starts_no_burst() -> None:
    queues = BatchQueues(window=0.1, max_delay=2.0)
    for step in range(40):  # never quiet: closed by the maximum delay at 12.0
        _add(queues, f"n{step:02}", at=10.0 + step * 0.05)
    queues.take("spot-a")
    for step in range(60):
        _add(queues, f"m{step:02}", at=12.0 + step * 0.05)

    assert queues.due_at("spot-a") == pytest.approx(14.0), "the next queue's own maximum delay"


@pytest.mark.parametrize(("queued", "windows"), [(1, 1.0), (2, 3.0), (4, 3.0), (16, 3.0), (500, 3.0)])
def test_the_quiet_period_is_one_window_alone_and_three_once_a_burst_began(queued: int, windows: float) -> None:
    assert BatchQueues(window=0.1, max_delay=2.0).quiet_period(queued) == pytest.approx(0.1 * windows)


def test_the_same_node_is_queued_once_and_keeps_its_first_arrival() -> None:
    queues = BatchQueues(window=0.1, max_delay=2.0)
    _add(queues, "n1", at=1.0)
    assert not queues.add("spot-a", Queued("n1", "interruption", PAIR, 1.5))

    assert queues.due_at("spot-a") == pytest.approx(1.1)
    assert queues.queued() == {"n1"}


def test_queues_of_different_groups_close_independently() -> None:
    queues = BatchQueues(window=0.1, max_delay=2.0)
    _add(queues, "a1", at=1.0, asg="spot-a")
    _add(queues, "b1", at=1.05, asg="spot-b")

    assert queues.due(1.1) == ["spot-a"]
    assert queues.due(1.16) == ["spot-a", "spot-b"]
    assert queues.next_due() == pytest.approx(1.1)


def test_a_full_queue_closes_at_once_and_the_rest_wait_for_the_next_call() -> None:
    queues = BatchQueues(window=0.1, max_delay=2.0, max_size=3)
    for index in range(5):
        _add(queues, f"n{index}", at=1.0 + index * 0.01)

    assert queues.due(1.05) == ["spot-a"]
    assert [q.node for q in queues.take("spot-a")] == ["n0", "n1", "n2"]
    assert queues.queued() == {"n3", "n4"}
    assert queues.due_at("spot-a") == pytest.approx(1.04 + 0.3), "two queued: three windows after n4"


def test_after_an_aws_error_the_nodes_are_kept_and_retried_no_sooner_than_asked() -> None:
    queues = BatchQueues(window=0.1, max_delay=2.0)
    _add(queues, "n1", at=1.0)
    taken = queues.take("spot-a")
    queues.put_back("spot-a", taken, retry_at=6.0)

    assert queues.queued() == {"n1"}
    assert queues.due(5.9) == []
    assert queues.due(6.0) == ["spot-a"]
    queues.take("spot-a")
    _add(queues, "n2", at=7.0)
    assert queues.due_at("spot-a") == pytest.approx(7.1), "the retry delay ends with the retry"


def test_an_interruption_does_not_wait_behind_recommendations_held_for_an_instance_refresh() -> None:
    queues = BatchQueues(window=0.1, max_delay=2.0)
    _add(queues, "n1", at=1.0)
    queues.put_back("spot-a", queues.take("spot-a"), retry_at=6.0, refresh_held=True)
    assert queues.due(3.0) == []
    queues.add("spot-a", Queued("n2", "interruption", PAIR, 3.0))
    assert queues.due_at("spot-a") == pytest.approx(3.3), "closes on quiet, as if nothing waited (two queued)"


def test_an_interruption_still_waits_out_an_aws_error_backoff() -> None:
    queues = BatchQueues(window=0.1, max_delay=2.0)
    _add(queues, "n1", at=1.0)
    queues.put_back("spot-a", queues.take("spot-a"), retry_at=6.0)
    queues.add("spot-a", Queued("n2", "interruption", PAIR, 3.0))
    assert queues.due_at("spot-a") == 6.0


@pytest.mark.parametrize(("window", "max_delay", "size"), [(-0.1, 1.0, 10), (2.0, 1.0, 10), (0.1, 1.0, 0)])
def test_impossible_settings_are_refused(window: float, max_delay: float, size: int) -> None:
    with pytest.raises(ValueError, match="batch"):
        BatchQueues(window=window, max_delay=max_delay, max_size=size)
