"""What EC2's events (through EventBridge and SQS) said about a Node's instance, kept on the Node as a fact.

The controller's queue feed (``controller.replacement.queue_feed``) writes the annotation ``spotguard.io/queue-notice``
(JSON) once an event's effect is decided, before it deletes the message; the replacement road reads it beside
nodewatch's annotations (``node_notices``), so one notice gives one replacement whichever source spoke first:
the road's identity of a notice tolerates the seconds by which EventBridge's event time and IMDS's notice time
differ (``controller.replacement.decisions.same_notice``).

    {"instanceId": "i-0123456789abcdef0", "rebalance": "2026-11-21T10:00:02Z",
     "interruption": "2026-11-21T10:02:03Z", "interruptionAction": "terminate",
     "state": "shutting-down", "stateTime": "2026-11-21T10:02:05Z"}

``interruption`` is the time of the action (the warning's time plus two minutes), as IMDS's instance-action
reports it. Each time is the first event's: a redelivered or repeated event changes nothing, so writing it again is
no change at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping

from controller.model.ec2_event import GONE_STATES, Ec2Event
from nodewatch import annotations as contract

ANNOTATION = contract.PREFIX + "queue-notice"
#: An interruption warning comes this long before the action
#: (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html).
WARNING_LEAD = dt.timedelta(minutes=2)
_FIELDS = ("instanceId", "rebalance", "interruption", "interruptionAction", "state", "stateTime")


@dataclasses.dataclass(frozen=True)
class QueueNotice:
    instance_id: str
    rebalance: dt.datetime | None = None
    interruption: dt.datetime | None = None
    interruption_action: str = ""
    state: str = ""
    state_time: dt.datetime | None = None

    @property
    def gone(self) -> bool:
        """EC2 said the instance is shutting down or terminated."""
        return self.state in GONE_STATES

    @classmethod
    def of(cls, annotations: Mapping[str, str], node: str = "") -> QueueNotice | None:
        """The annotation's notice (None if absent); MalformedAnnotationError naming the field otherwise."""
        raw = annotations.get(ANNOTATION)
        if raw is None:
            return None

        def bad(field: str, expected: str, value: object = raw) -> contract.MalformedAnnotationError:
            return contract.MalformedAnnotationError(ANNOTATION, value, expected, field=field, node=node)

        try:
            data = json.loads(raw)
        except ValueError:
            raise bad("", "a JSON object written by Spot Guard's queue feed") from None
        if not isinstance(data, dict):
            raise bad("", "a JSON object written by Spot Guard's queue feed")
        for key, value in data.items():
            if key not in _FIELDS:
                raise bad(key, f"only the fields {', '.join(_FIELDS)}", value)
            if not isinstance(value, str):
                raise bad(key, "text", value)
        instance = data.get("instanceId", "")
        if not instance.startswith("i-"):
            raise bad("instanceId", "an EC2 instance id such as i-0123456789abcdef0", instance)

        def time(field: str) -> dt.datetime | None:
            value = data.get(field)
            return None if value is None else contract.parse_time(ANNOTATION, value, field=field)

        try:
            notice = cls(
                instance_id=instance,
                rebalance=time("rebalance"),
                interruption=time("interruption"),
                interruption_action=data.get("interruptionAction", ""),
                state=data.get("state", ""),
                state_time=time("stateTime"),
            )
        except contract.MalformedAnnotationError as exc:
            raise exc.on_node(node) if node else exc from None
        if notice.interruption is not None and notice.interruption_action not in contract.INTERRUPTION_ACTIONS:
            raise bad("interruptionAction", "one of terminate, stop, hibernate", notice.interruption_action)
        return notice

    def to_json(self) -> str:
        data: dict[str, str] = {"instanceId": self.instance_id}
        if self.rebalance is not None:
            data["rebalance"] = contract.format_time(self.rebalance)
        if self.interruption is not None:
            data["interruption"] = contract.format_time(self.interruption)
            data["interruptionAction"] = self.interruption_action
        if self.state:
            data["state"] = self.state
            if self.state_time is not None:
                data["stateTime"] = contract.format_time(self.state_time)
        return json.dumps(data, separators=(",", ":"))

    def with_event(self, event: Ec2Event) -> QueueNotice:
        """This notice and ``event`` (of the same instance): the first time of each notice is kept; the latest
        state."""
        if event.kind == "rebalance" and self.rebalance is None:
            return dataclasses.replace(self, rebalance=event.time)
        if event.kind == "interruption" and self.interruption is None:
            return dataclasses.replace(self, interruption=event.time + WARNING_LEAD, interruption_action=event.action)
        if event.kind == "state" and (self.state_time is None or event.time > self.state_time):
            return dataclasses.replace(self, state=event.state, state_time=event.time)
        return self


def after(current: QueueNotice | None, event: Ec2Event) -> QueueNotice:
    """The notice a Node carries once ``event`` is recorded (a notice of an earlier instance is replaced)."""
    if current is None or current.instance_id != event.instance_id:
        current = QueueNotice(event.instance_id)
    return current.with_event(event)


def node_notices(annotations: Mapping[str, str], node: str = "") -> contract.NodeNotices:
    """The notices of a Node from both sources: nodewatch's annotations (IMDS) and the queue's.

    Where nodewatch reported a notice, its view stands (it also says when IMDS cleared it); a notice only the queue
    reported is added. A queue notice of another instance than nodewatch's is left out (stale). Raises
    MalformedAnnotationError naming the first bad annotation and field."""
    own = contract.parse(annotations, node)
    queued = QueueNotice.of(annotations, node)
    if queued is None or (own.instance_id and own.instance_id != queued.instance_id):
        return own
    rebalance, interruption = own.rebalance, own.interruption
    if rebalance is None and queued.rebalance is not None:
        rebalance = contract.Rebalance(notice_time=queued.rebalance, first_seen=None, cleared=None)
    if interruption is None and queued.interruption is not None:
        interruption = contract.Interruption(
            action=queued.interruption_action, time=queued.interruption, first_seen=None, cleared=None
        )
    return dataclasses.replace(
        own, rebalance=rebalance, interruption=interruption, instance_id=own.instance_id or queued.instance_id
    )


def instance_gone(annotations: Mapping[str, str]) -> bool:
    """EC2 said (through the queue) that the Node's instance is shutting down or terminated (False if unreadable)."""
    try:
        queued = QueueNotice.of(annotations)
    except contract.MalformedAnnotationError:
        return False
    return queued is not None and queued.gone
