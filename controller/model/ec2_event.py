"""EC2 events as EventBridge delivers them to an SQS queue: what one message says, or why it says nothing to us.

No I/O: ``read(body, ...)`` takes a message body and gives an ``Ec2Event`` (a rebalance recommendation, a spot
interruption warning, or an instance going away) or a ``Rejected`` with the outcome it is counted under and a
message saying what was wrong. The shapes are AWS's own:

- "EC2 Instance Rebalance Recommendation":
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-recommendations.html (``detail.instance-id``)
- "EC2 Spot Instance Interruption Warning":
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html
  (``detail.instance-id``, ``detail.instance-action``: terminate, stop or hibernate)
- "EC2 Instance State-change Notification":
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-instance-state-changes.html
  (``detail.instance-id``, ``detail.state``)

Every event carries ``source`` (aws.ec2), ``account``, ``region`` and ``time`` (RFC 3339, the event's time, which
for the same notice differs by seconds from the time IMDS reports). An EventBridge rule may also send to an SNS
topic that the queue subscribes to: such a message is an SNS envelope (``Type: Notification``, the event as text
in ``Message``), read the same way (aws-node-termination-handler's pkg/monitor/sqsevent does the same).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from typing import Any

from nodewatch import annotations as contract

REBALANCE = "EC2 Instance Rebalance Recommendation"
INTERRUPTION = "EC2 Spot Instance Interruption Warning"
STATE_CHANGE = "EC2 Instance State-change Notification"
#: The detail types a queue for Spot Guard is fed (the EventBridge rules in docs/install.md).
DETAIL_TYPES = (REBALANCE, INTERRUPTION, STATE_CHANGE)
#: The instance states that mean the instance is leaving (no drain of a node that is gone).
GONE_STATES = frozenset({"shutting-down", "terminated"})

#: How old an event may be and still matter (seconds). An interruption warning comes two minutes before the
#: action: a later one finds the instance gone. A rebalance recommendation or a departure matters while the
#: instance may still run; an hour-old one in a queue that was not read (an outage) is history, and nodewatch
#: still reports a recommendation that stands.
MAX_AGE = {"rebalance": 3600.0, "interruption": 180.0, "state": 3600.0}
#: An event this far in the future of the controller's clock is not believed (a clock that is off): read as now.
FUTURE_SLACK = 300.0

#: The outcomes a message is counted under (``spotguard_queue_messages_total{outcome}``).
ACTED = "acted"  # its effect is recorded on a Node (or already was: a redelivery, or nodewatch came first)
MALFORMED = "malformed"  # not JSON, or not an EC2 event of the expected shape
UNKNOWN_TYPE = "unknown-type"  # an event of a type Spot Guard does not read
FOREIGN = "foreign"  # another account's or region's
OLD = "old"  # older than its notice could matter
NO_NODE = "no-node"  # an instance of no Node in this cluster
UNMANAGED = "unmanaged"  # an instance in no group Spot Guard manages
NOT_REPLACING = "not-replacing"  # an instance leaving that Spot Guard is not replacing: nothing to record
OUTCOMES = (ACTED, MALFORMED, UNKNOWN_TYPE, FOREIGN, OLD, NO_NODE, UNMANAGED, NOT_REPLACING)

_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}", re.ASCII)
#: The longest message body read (SQS's own limit is 256 KiB).
MAX_BODY = 262144


@dataclasses.dataclass(frozen=True)
class Ec2Event:
    """One event for one instance."""

    kind: str  # "rebalance" | "interruption" | "state"
    instance_id: str
    time: dt.datetime  # the event's time (UTC)
    event_id: str = ""
    action: str = ""  # interruption: terminate | stop | hibernate
    state: str = ""  # state: the instance's new state


@dataclasses.dataclass(frozen=True)
class Rejected:
    """A message that asks nothing of Spot Guard: ``outcome`` (one of OUTCOMES), ``message`` says why."""

    outcome: str
    message: str


def read(body: str, *, account: str, region: str, now: dt.datetime) -> Ec2Event | Rejected:
    """Read one message body; ``account`` and ``region`` are the queue's ("" accepts any), ``now`` the wall time."""
    try:
        if len(body) > MAX_BODY:
            return Rejected(MALFORMED, f"a body of {len(body)} characters, more than an SQS message holds")
        event = json.loads(body)
    except ValueError as exc:
        return Rejected(MALFORMED, f"the body is not JSON ({exc})")
    if isinstance(event, dict) and event.get("Type") == "Notification" and "Message" in event:
        inner = event["Message"]
        if not isinstance(inner, str):
            return Rejected(MALFORMED, "an SNS notification whose Message is not text")
        try:
            event = json.loads(inner)
        except ValueError as exc:
            return Rejected(MALFORMED, f"an SNS notification whose Message is not JSON ({exc})")
    if not isinstance(event, dict):
        return Rejected(MALFORMED, f"the body is JSON {type(event).__name__}, not an event object")
    return _event(event, account=account, region=region, now=now)


def _event(event: dict[str, Any], *, account: str, region: str, now: dt.datetime) -> Ec2Event | Rejected:
    detail_type = event.get("detail-type")
    if not isinstance(detail_type, str):
        return Rejected(MALFORMED, "no detail-type: not an EventBridge event")
    if detail_type not in DETAIL_TYPES or event.get("source") != "aws.ec2":
        return Rejected(
            UNKNOWN_TYPE, f"an event {detail_type!r} from {event.get('source')!r}, not one Spot Guard reads"
        )
    if account and event.get("account") != account:
        return Rejected(FOREIGN, f"a {detail_type!r} of account {event.get('account')!r}, not the queue's {account}")
    if region and event.get("region") != region:
        return Rejected(FOREIGN, f"a {detail_type!r} of region {event.get('region')!r}, not {region}")
    detail = event.get("detail")
    if not isinstance(detail, dict):
        return Rejected(MALFORMED, f"a {detail_type!r} without a detail object")
    instance = detail.get("instance-id")
    if not isinstance(instance, str) or not _INSTANCE_ID.fullmatch(instance):
        return Rejected(MALFORMED, f"a {detail_type!r} whose detail.instance-id {instance!r} is no EC2 instance id")
    raw_time = event.get("time")
    try:
        time = contract.parse_time("time", raw_time if isinstance(raw_time, str) else "")
    except contract.MalformedAnnotationError:
        return Rejected(MALFORMED, f"a {detail_type!r} of {instance} whose time {raw_time!r} is no RFC 3339 time")
    event_id = event.get("id") if isinstance(event.get("id"), str) else ""
    assert isinstance(event_id, str)
    if detail_type == REBALANCE:
        found = Ec2Event("rebalance", instance, time, event_id)
    elif detail_type == INTERRUPTION:
        action = detail.get("instance-action")
        if action not in contract.INTERRUPTION_ACTIONS:
            return Rejected(
                MALFORMED,
                f"an interruption warning of {instance} whose instance-action {action!r} is not terminate, "
                "stop or hibernate",
            )
        found = Ec2Event("interruption", instance, time, event_id, action=str(action))
    else:
        state = detail.get("state")
        if not isinstance(state, str) or not state:
            return Rejected(MALFORMED, f"a state-change of {instance} without a state")
        found = Ec2Event("state", instance, time, event_id, state=state)
    age = (now - time).total_seconds()
    if age > MAX_AGE[found.kind]:
        return Rejected(OLD, f"a {detail_type!r} of {instance} from {contract.format_time(time)}, {age:.0f} s old")
    if age < -FUTURE_SLACK:
        found = dataclasses.replace(found, time=now)
    return found


def put_events_entry(
    kind: str, instance_id: str, *, region: str, account: str, time: dt.datetime, action: str = "terminate"
) -> dict[str, Any]:
    """A PutEvents entry of the event EC2 sends (``kind``: rebalance or interruption), for ``spotguard simulate
    --via queue``: what EventBridge delivers is then exactly what ``read`` expects."""
    detail = {"instance-id": instance_id}
    if kind == "interruption":
        detail["instance-action"] = action
    return {
        "Source": "aws.ec2",
        "DetailType": REBALANCE if kind == "rebalance" else INTERRUPTION,
        "Detail": json.dumps(detail),
        "Resources": [f"arn:aws:ec2:{region}:{account}:instance/{instance_id}"],
        "Time": time,
    }


def event_body(entry: dict[str, Any], *, region: str, account: str, event_id: str) -> str:
    """The message EventBridge delivers to an SQS target for ``entry`` (a PutEvents entry): the whole event
    (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-events-structure.html)."""
    return json.dumps(
        {
            "version": "0",
            "id": event_id,
            "detail-type": entry["DetailType"],
            "source": entry["Source"],
            "account": account,
            "time": contract.format_time(entry["Time"]),
            "region": region,
            "resources": entry["Resources"],
            "detail": json.loads(entry["Detail"]),
        }
    )


def queue_owner(queue_url: str) -> tuple[str, str]:
    """(account, region) of an SQS queue URL such as https://sqs.us-east-1.amazonaws.com/123456789012/name; a
    part the URL does not show (a local endpoint shows no region) is ""."""
    match = re.fullmatch(r"https?://([^/]+)/([0-9]{12})/([A-Za-z0-9_.-]{1,80})/?", queue_url.strip())
    if not match:
        raise ValueError(
            f"{queue_url!r} is not an SQS queue URL such as https://sqs.<region>.amazonaws.com/<account>/<name>"
        )
    host = match.group(1)
    region = ""
    parts = host.split(".")
    if len(parts) >= 3 and parts[0] == "sqs":
        region = parts[1]
    return match.group(2), region
