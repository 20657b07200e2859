"""EC2's events from the queue, as tables: what a message says (``controller.model.ec2_event``), what the Node keeps
of it (``controller.model.queue_notice``), when two sources' notices are one (``decisions.same_notice``), what the
feed does with a message (``queue_feed.disposition``), and how it reports a queue it cannot read (injected clock).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from typing import Any

import pytest

from controller.adapters.sqs import ACCESS_DENIED, MISSING_QUEUE, THROTTLED, Message, QueueError, kind_of
from controller.clock import Cancellation, FakeClock
from controller.config import ConfigError, Settings, from_env
from controller.model import ec2_event
from controller.model.ec2_event import Ec2Event, Rejected, queue_owner, read
from controller.model.queue_notice import ANNOTATION, QueueNotice, after, instance_gone, node_notices
from controller.model.record import Phase, ReplacementRecord
from controller.replacement.decisions import Announce, NodeFacts, Notice, Queue, decide, is_new, same_notice
from controller.replacement.queue_feed import RETRY, QueueFeed, disposition
from nodewatch import annotations as contract

NOW = dt.datetime(2026, 11, 21, 10, 0, 30, tzinfo=dt.UTC)
ACCOUNT = "123456789012"
REGION = "us-east-2"
INSTANCE = "i-1234567890abcdef0"
EVENT_ID = "12345678-1234-1234-1234-123456789012"

# The examples of the AWS documentation (account, region and time filled in).
REBALANCE = {
    "version": "0",
    "id": EVENT_ID,
    "detail-type": "EC2 Instance Rebalance Recommendation",
    "source": "aws.ec2",
    "account": ACCOUNT,
    "time": "2026-11-21T10:00:00Z",
    "region": REGION,
    "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{INSTANCE}"],
    "detail": {"instance-id": INSTANCE},
}
INTERRUPTION = {
    **REBALANCE,
    "detail-type": "EC2 Spot Instance Interruption Warning",
    "detail": {"instance-id": INSTANCE, "instance-action": "terminate"},
}
STATE = {
    **REBALANCE,
    "detail-type": "EC2 Instance State-change Notification",
    "detail": {"instance-id": INSTANCE, "state": "shutting-down"},
}
T0 = dt.datetime(2026, 11, 21, 10, 0, 0, tzinfo=dt.UTC)


def body(event: dict[str, Any], **changes: Any) -> str:
    return json.dumps({**event, **changes})


def sns(inner: str) -> str:
    return json.dumps({"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:x:y:z", "Message": inner})


READ = [
    ("a rebalance recommendation", body(REBALANCE), Ec2Event("rebalance", INSTANCE, T0, EVENT_ID)),
    (
        "an interruption warning",
        body(INTERRUPTION),
        Ec2Event("interruption", INSTANCE, T0, EVENT_ID, action="terminate"),
    ),
    ("a state change", body(STATE), Ec2Event("state", INSTANCE, T0, EVENT_ID, state="shutting-down")),
    ("through SNS", sns(body(REBALANCE)), Ec2Event("rebalance", INSTANCE, T0, EVENT_ID)),
    ("not JSON", "{not json", ec2_event.MALFORMED),
    ("JSON but no object", "[1, 2]", ec2_event.MALFORMED),
    ("SNS whose message is not JSON", sns("nope"), ec2_event.MALFORMED),
    ("no detail-type", body({k: v for k, v in REBALANCE.items() if k != "detail-type"}), ec2_event.MALFORMED),
    ("another detail-type", body(REBALANCE, **{"detail-type": "EC2 Instance Launch"}), ec2_event.UNKNOWN_TYPE),
    ("another source", body(REBALANCE, source="my.app"), ec2_event.UNKNOWN_TYPE),
    ("another account", body(REBALANCE, account="210987654321"), ec2_event.FOREIGN),
    ("another region", body(REBALANCE, region="eu-west-3"), ec2_event.FOREIGN),
    ("no instance id", body(REBALANCE, detail={}), ec2_event.MALFORMED),
    ("not an instance id", body(REBALANCE, detail={"instance-id": "node-1"}), ec2_event.MALFORMED),
    ("no time", body(REBALANCE, time=None), ec2_event.MALFORMED),
    ("an unknown action", body(INTERRUPTION, detail={"instance-id": INSTANCE, "instance-action": "x"}), "malformed"),
    ("an interruption warning 4 minutes old", body(INTERRUPTION, time="2026-11-21T09:56:30Z"), ec2_event.OLD),
    ("a rebalance recommendation 2 hours old", body(REBALANCE, time="2026-11-21T08:00:00Z"), ec2_event.OLD),
    ("a rebalance recommendation 30 minutes old", body(REBALANCE, time="2026-11-21T09:30:30Z"), "rebalance"),
]


@pytest.mark.parametrize(("case", "text", "expected"), READ, ids=[row[0] for row in READ])
def test_read(case: str, text: str, expected: Ec2Event | str) -> None:
    found = read(text, account=ACCOUNT, region=REGION, now=NOW)
    if isinstance(expected, Ec2Event):
        assert found == expected
    elif expected in ("rebalance", "interruption", "state"):
        assert isinstance(found, Ec2Event) and found.kind == expected
    else:
        assert isinstance(found, Rejected) and found.outcome == expected, found
        assert found.message


def test_an_event_from_the_future_is_taken_as_now() -> None:
    found = read(body(REBALANCE, time="2026-11-21T11:00:00Z"), account=ACCOUNT, region=REGION, now=NOW)
    assert isinstance(found, Ec2Event) and found.time == NOW


def test_the_queue_url_names_the_account_and_region() -> None:
    assert queue_owner(f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/spotguard") == (ACCOUNT, REGION)
    assert queue_owner(f"http://127.0.0.1:4566/{ACCOUNT}/spotguard") == (ACCOUNT, "")
    with pytest.raises(ValueError, match="not an SQS queue URL"):
        queue_owner("spotguard")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/spotguard-events", True),
        (f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/spotguard.fifo", True),
        ("spotguard-events", False),
        (f"arn:aws:sqs:{REGION}:{ACCOUNT}:spotguard-events", False),
    ],
)
def test_the_queue_url_setting_is_validated(value: str, ok: bool) -> None:
    if ok:
        assert from_env({"SPOT_GUARD_QUEUE_URL": value}).queue_url == value
    else:
        with pytest.raises(ConfigError, match="SPOT_GUARD_QUEUE_URL") as caught:
            from_env({"SPOT_GUARD_QUEUE_URL": value})
        assert caught.value.variable == "SPOT_GUARD_QUEUE_URL"
    assert Settings().queue_url == "", "opt-in"


# -- what the Node keeps -------------------------------------------------------------------------------------


def test_a_recorded_event_is_recorded_once_and_reads_back() -> None:
    rebalance = Ec2Event("rebalance", INSTANCE, T0)
    first = after(None, rebalance)
    assert after(first, rebalance) == first, "a redelivery changes nothing"
    assert after(first, dataclasses.replace(rebalance, time=T0 + dt.timedelta(seconds=5))) == first, "first time kept"
    both = after(first, Ec2Event("interruption", INSTANCE, T0, action="terminate"))
    assert both.interruption == T0 + dt.timedelta(minutes=2), "the action's time, as IMDS reports it"
    gone = after(both, Ec2Event("state", INSTANCE, T0 + dt.timedelta(seconds=130), state="shutting-down"))
    assert QueueNotice.of({ANNOTATION: gone.to_json()}) == gone
    assert instance_gone({ANNOTATION: gone.to_json()}) and not instance_gone({ANNOTATION: both.to_json()})
    other = after(gone, Ec2Event("rebalance", "i-0fedcba9876543210", T0))
    assert other == QueueNotice("i-0fedcba9876543210", rebalance=T0), "another instance's notice is replaced"


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ("nope", ""),
        ('{"instanceId": "node-1"}', "instanceId"),
        ('{"instanceId": "i-1", "rebalance": "yesterday"}', "rebalance"),
        ('{"instanceId": "i-1", "extra": "x"}', "extra"),
        ('{"instanceId": "i-1", "interruption": "2026-11-21T10:00:00Z"}', "interruptionAction"),
    ],
)
def test_a_malformed_queue_notice_names_the_node_and_field(value: str, field: str) -> None:
    with pytest.raises(contract.MalformedAnnotationError) as caught:
        node_notices({ANNOTATION: value}, "node-a")
    assert caught.value.key == ANNOTATION and caught.value.field == field and caught.value.node == "node-a"
    assert "node node-a" in str(caught.value)


def test_both_sources_merge_and_nodewatch_speaks_for_what_it_saw() -> None:
    queued = after(None, Ec2Event("rebalance", INSTANCE, T0 + dt.timedelta(seconds=4))).to_json()
    only_queue = node_notices({ANNOTATION: queued})
    assert only_queue.rebalance is not None and only_queue.rebalance.notice_time == T0 + dt.timedelta(seconds=4)
    assert only_queue.instance_id == INSTANCE
    nodewatch = {
        contract.REBALANCE_NOTICE_TIME: "2026-11-21T10:00:00Z",
        contract.REBALANCE_CLEARED: "2026-11-21T10:05:00Z",
        contract.INSTANCE_ID: INSTANCE,
    }
    merged = node_notices({**nodewatch, ANNOTATION: queued})
    assert merged.rebalance == contract.parse(nodewatch).rebalance
    stale = after(None, Ec2Event("rebalance", "i-0fedcba9876543210", T0)).to_json()
    assert node_notices({contract.INSTANCE_ID: INSTANCE, ANNOTATION: stale}).rebalance is None


# -- one notice, two sources ---------------------------------------------------------------------------------

SAME = [
    ("the same identity", "rebalance:2026-11-21T10:00:00Z", "rebalance:2026-11-21T10:00:00Z", True),
    ("IMDS and EventBridge seconds apart", "rebalance:2026-11-21T10:00:00Z", "rebalance:2026-11-21T10:00:07Z", True),
    ("rebalance 20 minutes apart", "rebalance:2026-11-21T10:00:00Z", "rebalance:2026-11-21T10:20:00Z", False),
    ("an instance is interrupted once", "interruption:2026-11-21T10:02:00Z", "interruption:2026-11-21T10:02:09Z", True),
    ("another trigger", "rebalance:2026-11-21T10:00:00Z", "interruption:2026-11-21T10:00:00Z", False),
    ("an unreadable time", "rebalance:soon", "rebalance:2026-11-21T10:00:00Z", False),
]


@pytest.mark.parametrize(("case", "one", "other", "same"), SAME, ids=[row[0] for row in SAME])
def test_same_notice(case: str, one: str, other: str, same: bool) -> None:
    assert same_notice(one, other) is same
    assert same_notice(other, one) is same


def _record(phase: str, notice: str) -> ReplacementRecord:
    values: dict[str, Any] = {
        "phase": phase,
        "trigger": notice.split(":", 1)[0],
        "instance_id": INSTANCE,
        "spot_asg": "spot",
        "on_demand_asg": "od",
        "updated_at": "2026-11-21T10:00:10Z",
        "notice": notice,
        "requested_at": "2026-11-21T10:00:05Z",
    }
    return ReplacementRecord(**values)


def test_the_other_source_of_an_answered_notice_starts_nothing() -> None:
    """The queue's event came first and was answered; nodewatch's annotation of the same notice arrives."""
    imds = Notice("rebalance", "rebalance:2026-11-21T10:00:03Z")
    record = _record(Phase.FAILED, "rebalance:2026-11-21T10:00:00Z")
    assert not is_new(imds, record)
    facts = NodeFacts(name="n", now=NOW, record=record, notice=imds, instance_id=INSTANCE, has_finalizer=False)
    actions = decide(facts, Settings())
    assert not any(isinstance(a, (Queue, Announce)) for a in actions), actions


def test_a_notice_announced_from_one_source_is_not_announced_again_from_the_other() -> None:
    facts = NodeFacts(
        name="n",
        now=NOW,
        notice=Notice("rebalance", "rebalance:2026-11-21T10:00:03Z"),
        instance_id=INSTANCE,
        announced="rebalance:2026-11-21T10:00:00Z",
    )
    assert decide(facts, Settings()) == [Queue(facts.notice)]  # type: ignore[arg-type]


# -- what the feed does with a message -----------------------------------------------------------------------

REBALANCE_EVENT = Ec2Event("rebalance", INSTANCE, T0)
GONE_EVENT = Ec2Event("state", INSTANCE, T0, state="terminated")
RUNNING_EVENT = Ec2Event("state", INSTANCE, T0, state="running")
DISPOSITION = [
    ("a notice of a managed node: record it", REBALANCE_EVENT, "node-a", True, False, ec2_event.ACTED),
    ("an instance of no Node", REBALANCE_EVENT, None, None, False, ec2_event.NO_NODE),
    ("a group Spot Guard does not manage", REBALANCE_EVENT, "node-a", False, False, ec2_event.UNMANAGED),
    ("the group could not be looked up: later", REBALANCE_EVENT, "node-a", None, False, RETRY),
    ("a node being replaced goes away: record it", GONE_EVENT, "node-a", None, True, ec2_event.ACTED),
    ("a node not being replaced goes away", GONE_EVENT, "node-a", None, False, ec2_event.NOT_REPLACING),
    ("another state", RUNNING_EVENT, "node-a", None, True, ec2_event.NOT_REPLACING),
    ("a rejected message", Rejected(ec2_event.FOREIGN, "x"), None, None, False, ec2_event.FOREIGN),
]


@pytest.mark.parametrize(
    ("case", "parsed", "node", "managed", "replacing", "expected"), DISPOSITION, ids=[row[0] for row in DISPOSITION]
)
def test_disposition(
    *, case: str, parsed: Ec2Event | Rejected, node: str | None, managed: bool | None, replacing: bool, expected: str
) -> None:
    assert disposition(parsed, node, managed, replacing) == expected


# -- a queue that cannot be read -----------------------------------------------------------------------------


class FailingQueue:
    queue_url = "https://sqs.us-east-2.amazonaws.com/123456789012/spotguard"

    def __init__(self, failures: list[str], cancel: Cancellation) -> None:
        self.failures = failures
        self.cancel = cancel
        self.receives = 0

    def receive(self) -> list[Message]:
        self.receives += 1
        if self.failures:
            code = self.failures.pop(0)
            raise QueueError("ReceiveMessage", kind_of(code), code, "no", self.queue_url)
        self.cancel.cancel("enough")
        return []


class Reporter:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.readable: list[bool] = []
        self.messages: list[str] = []

    def queue_message(self, outcome: str) -> None:
        self.messages.append(outcome)

    def queue_failed(self, kind: str) -> None:
        self.failed.append(kind)

    def set_queue_readable(self, readable: bool) -> None:
        self.readable.append(readable)


def test_an_unreadable_queue_is_reported_once_per_outage_and_read_again_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert kind_of("AWS.SimpleQueueService.NonExistentQueue") == MISSING_QUEUE
    assert kind_of("AccessDenied") == ACCESS_DENIED and kind_of("ThrottlingException") == THROTTLED
    cancel = Cancellation()
    clock = FakeClock(NOW)
    failures = ["AccessDenied"] * 9 + ["AWS.SimpleQueueService.NonExistentQueue"]
    queue = FailingQueue(failures, cancel)
    reporter = Reporter()
    feed = QueueFeed(queue, kube=None, resolver=None, nodes=dict, clock=clock, reporter=reporter)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="controller.queue"):
        feed.run(cancel)
    assert queue.receives == 11
    assert clock.slept == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0], "exponential, at most a minute"
    assert reporter.failed == [ACCESS_DENIED] * 9 + [MISSING_QUEUE], "every failure counted"
    assert reporter.readable[-1] is True and reporter.readable.count(False) == 10
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, "reported once per outage (and once more when the cause changes)"
    assert "sqs:ReceiveMessage" in errors[0] and "nodewatch's notices still work" in errors[0]
    assert "create the queue" in errors[1]
    assert any("readable again" in r.getMessage() for r in caplog.records)


def test_what_simulate_publishes_is_what_the_feed_reads() -> None:
    entry = ec2_event.put_events_entry(
        "interruption", INSTANCE, region=REGION, account=ACCOUNT, time=T0, action="hibernate"
    )
    delivered = ec2_event.event_body(entry, region=REGION, account=ACCOUNT, event_id=EVENT_ID)
    assert read(delivered, account=ACCOUNT, region=REGION, now=NOW) == Ec2Event(
        "interruption", INSTANCE, T0, EVENT_ID, action="hibernate"
    )
