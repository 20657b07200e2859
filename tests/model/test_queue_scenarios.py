"""EC2's events from the queue on the model (the real replacement controller over in-memory AWS and Kubernetes):
what the queue feed records on a Node (``spotguard.io/queue-notice``) is a notice like nodewatch's, the two sources
of one notice give one replacement, and a node EC2 says is shutting down is retired without a drain."""

from __future__ import annotations

import datetime as dt

from controller.model.ec2_event import Ec2Event
from controller.model.queue_notice import ANNOTATION as QUEUE_NOTICE
from controller.model.queue_notice import QueueNotice, after
from controller.model.record import Phase
from nodewatch import annotations as contract
from tests.model.test_regression_scenarios import Scenario


def _record_event(s: Scenario, node: str, event: Ec2Event) -> None:
    """What the queue feed writes for ``event`` on ``node``."""
    raw = s.world.kube.annotations(node).get(QUEUE_NOTICE)
    s.world.kube.annotate(
        node, {QUEUE_NOTICE: after(QueueNotice.of({QUEUE_NOTICE: raw}) if raw else None, event).to_json()}
    )


def _instance(s: Scenario, node: str) -> str:
    return str(s.world.kube.nodes[node]["spec"]["providerID"].rsplit("/", 1)[-1])


def test_an_event_and_nodewatchs_annotation_of_one_notice_give_one_replacement() -> None:
    s = Scenario()
    node = s.nodes[0]
    instance = _instance(s, node)
    now = s.world.clock.now()
    _record_event(s, node, Ec2Event("rebalance", instance, now + dt.timedelta(seconds=4)))
    s.until("the replacement asked for", lambda: s.desired("spot-a") == 5)
    s.world.notice(node, "rebalance")  # nodewatch's noticeTime is seconds before EventBridge's event time
    s.until(f"{node} retired", lambda: s.retired(node))
    s.rounds(20, 1.0, aws=True)
    assert s.desired("spot-a") == 4, "capacity neutral: one replacement"
    assert [t.instance for t in s.terminations()] == [instance]
    announced = [reason for n, reason, _ in s.world.reports.events if n == node and reason == "RebalanceRecommendation"]
    assert announced == ["RebalanceRecommendation"], "one notice, announced once"


def test_a_node_ec2_says_is_shutting_down_is_retired_without_a_drain() -> None:
    s = Scenario()
    node = s.nodes[0]
    instance = _instance(s, node)
    _record_event(s, node, Ec2Event("interruption", instance, s.world.clock.now(), action="terminate"))
    s.until("the replacement under way", lambda: s.phase(node) not in ("(none)", Phase.DETECTED))
    assert s.world.record(node) is not None
    _record_event(s, node, Ec2Event("state", instance, s.world.clock.now(), state="shutting-down"))
    s.until(f"{node} retired", lambda: s.retired(node))
    assert node not in s.world.drains.drained, "no drain of a node that is going away"
    assert [t.instance for t in s.terminations()] == [instance]
    assert contract.format_time(s.world.clock.now())
