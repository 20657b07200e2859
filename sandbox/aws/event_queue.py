"""The sandbox's EC2 events queue: an SQS queue fed by EventBridge rules, as docs/install.md sets it up on AWS, and a
helper that publishes EC2's events in the shapes AWS documents, with ``put_events``.

moto's EventBridge delivers an event put on the default bus to the SQS targets of every rule whose pattern matches
(moto.events ``Rule.send_to_targets``), so the controller reads exactly what EventBridge would send it:

- rebalance recommendation: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html
- interruption warning: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html
- state change: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-instance-state-changes.html

On AWS only EC2 itself puts ``aws.ec2`` events; moto lets the sandbox stand in for it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

QUEUE_NAME = "spotguard-ec2-events"
#: Seconds a received message stays hidden before SQS delivers it again (short, so a test sees redeliveries soon).
VISIBILITY_TIMEOUT = 10
#: The rules of docs/install.md: name -> event pattern.
RULES: dict[str, dict[str, Any]] = {
    "spotguard-rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "spotguard-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "spotguard-state-change": {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["shutting-down", "terminated"]},
    },
}
DETAIL_TYPES = {
    "rebalance": "EC2 Instance Rebalance Recommendation",
    "interruption": "EC2 Spot Instance Interruption Warning",
    "state": "EC2 Instance State-change Notification",
}


def create_event_queue(sqs: Any, events: Any) -> str:
    """Create the queue and the rules that target it; returns the queue's URL."""
    url = str(
        sqs.create_queue(QueueName=QUEUE_NAME, Attributes={"VisibilityTimeout": str(VISIBILITY_TIMEOUT)})["QueueUrl"]
    )
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for name, pattern in RULES.items():
        events.put_rule(Name=name, EventPattern=json.dumps(pattern), State="ENABLED")
        events.put_targets(Rule=name, Targets=[{"Id": "spotguard-queue", "Arn": arn}])
    return url


def entry(
    kind: str,
    instance_id: str,
    *,
    region: str,
    account: str,
    time: dt.datetime | None = None,
    action: str = "terminate",
    state: str = "shutting-down",
) -> dict[str, Any]:
    """One ``put_events`` entry of an EC2 event of ``kind`` (rebalance, interruption, state) for ``instance_id``."""
    detail: dict[str, str] = {"instance-id": instance_id}
    if kind == "interruption":
        detail["instance-action"] = action
    elif kind == "state":
        detail["state"] = state
    return {
        "Source": "aws.ec2",
        "DetailType": DETAIL_TYPES[kind],
        "Detail": json.dumps(detail),
        "Resources": [f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"],
        "Time": time or dt.datetime.now(dt.UTC),
    }


def publish(events: Any, entries: list[dict[str, Any]]) -> None:
    """Put ``entries`` on the default bus, ten per call (PutEvents' limit); raises if any was refused."""
    for start in range(0, len(entries), 10):
        answer = events.put_events(Entries=entries[start : start + 10])
        if answer.get("FailedEntryCount"):
            raise RuntimeError(f"put_events refused {answer['FailedEntryCount']} entries: {answer['Entries']}")
