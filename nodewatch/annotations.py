"""The contract between nodewatch and the controller: Node annotation keys and value formats.

nodewatch writes these keys on its own Node; the controller reads them. This module is the only
place the keys are spelled. It uses the standard library only, so both sides can import it.

Every time is an RFC 3339 UTC timestamp with a ``Z`` suffix (``2025-01-15T10:00:00Z``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping

PREFIX = "spotguard.io/"

# Rebalance recommendation (IMDS /latest/meta-data/events/recommendations/rebalance).
REBALANCE_NOTICE_TIME = PREFIX + "rebalance-notice-time"
REBALANCE_FIRST_SEEN = PREFIX + "rebalance-first-seen"
REBALANCE_CLEARED = PREFIX + "rebalance-cleared"

# Spot interruption notice (IMDS /latest/meta-data/spot/instance-action).
INTERRUPTION_ACTION = PREFIX + "interruption-action"
INTERRUPTION_TIME = PREFIX + "interruption-time"
INTERRUPTION_FIRST_SEEN = PREFIX + "interruption-first-seen"
INTERRUPTION_CLEARED = PREFIX + "interruption-cleared"

# Identity of the instance behind the Node, as IMDS reports it.
INSTANCE_ID = PREFIX + "instance-id"
AVAILABILITY_ZONE = PREFIX + "availability-zone"

#: Every key nodewatch may write. The admission policy allows exactly these.
NODEWATCH_KEYS: tuple[str, ...] = (
    REBALANCE_NOTICE_TIME,
    REBALANCE_FIRST_SEEN,
    REBALANCE_CLEARED,
    INTERRUPTION_ACTION,
    INTERRUPTION_TIME,
    INTERRUPTION_FIRST_SEEN,
    INTERRUPTION_CLEARED,
    INSTANCE_ID,
    AVAILABILITY_ZONE,
)

INTERRUPTION_ACTIONS = frozenset({"terminate", "stop", "hibernate"})


#: How much of a malformed value an error message quotes.
QUOTED_VALUE_CHARS = 120


class MalformedAnnotationError(ValueError):
    """An annotation value does not follow this contract.

    ``key`` is the annotation, ``field`` the part of its value that is wrong (a JSON field of a record; "" for the
    whole value), ``node`` the object it is on when known. ``kind`` is the object's kind (a Node).
    """

    kind = "Node"

    def __init__(self, key: str, value: object, expected: str, *, field: str = "", node: str = "") -> None:
        shown = repr(value)
        if len(shown) > QUOTED_VALUE_CHARS:
            shown = shown[:QUOTED_VALUE_CHARS] + "..."
        where = f"node {node}: " if node else ""
        part = f"field {field!r} of " if field else ""
        super().__init__(f"{where}{part}annotation {key}={shown} is malformed: expected {expected}")
        self.key = key
        self.value = value
        self.expected = expected
        self.field = field
        self.node = node

    @property
    def name(self) -> str:
        """The object's name ("" when the parser was not told)."""
        return self.node

    def on_node(self, node: str) -> MalformedAnnotationError:
        """The same error, naming the Node it was found on."""
        return MalformedAnnotationError(self.key, self.value, self.expected, field=self.field, node=node)


def format_time(moment: dt.datetime) -> str:
    """Render an aware datetime as the contract's RFC 3339 UTC form (second precision)."""
    if moment.tzinfo is None:
        raise ValueError("format_time needs a timezone-aware datetime")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(key: str, value: str, *, field: str = "") -> dt.datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset); raise MalformedAnnotationError otherwise (naming ``key``,
    and ``field`` when the time is one field of the annotation's value)."""
    expected = "an RFC 3339 time such as 2025-01-15T10:00:00Z"
    if not isinstance(value, str):
        raise MalformedAnnotationError(key, value, expected, field=field)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        raise MalformedAnnotationError(key, value, expected, field=field) from None
    if parsed.tzinfo is None:
        raise MalformedAnnotationError(
            key, value, "an RFC 3339 time with a zone, such as 2025-01-15T10:00:00Z", field=field
        )
    try:
        return parsed.astimezone(dt.UTC)
    except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00:00+01:00 is before the first representable UTC time
        raise MalformedAnnotationError(key, value, expected + " within years 1 to 9999 UTC", field=field) from None


@dataclasses.dataclass(frozen=True)
class Rebalance:
    notice_time: dt.datetime
    first_seen: dt.datetime | None
    cleared: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class Interruption:
    action: str
    time: dt.datetime
    first_seen: dt.datetime | None
    cleared: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class NodeNotices:
    """What nodewatch has recorded on one Node."""

    rebalance: Rebalance | None
    interruption: Interruption | None
    instance_id: str | None
    availability_zone: str | None


def _optional_time(annotations: Mapping[str, str], key: str) -> dt.datetime | None:
    value = annotations.get(key)
    return None if value is None else parse_time(key, value)


def parse(annotations: Mapping[str, str], node: str = "") -> NodeNotices:
    """Read nodewatch's annotations from a Node's annotation map.

    Raises MalformedAnnotationError naming the first bad key (and ``node``, when given); absent keys are simply
    absent.
    """
    try:
        return _parse(annotations)
    except MalformedAnnotationError as exc:
        raise (exc.on_node(node) if node else exc) from None


def _parse(annotations: Mapping[str, str]) -> NodeNotices:
    for key in NODEWATCH_KEYS:
        value = annotations.get(key)
        if value is not None and not isinstance(value, str):
            raise MalformedAnnotationError(key, value, "text")
    rebalance: Rebalance | None = None
    if REBALANCE_NOTICE_TIME in annotations:
        rebalance = Rebalance(
            notice_time=parse_time(REBALANCE_NOTICE_TIME, annotations[REBALANCE_NOTICE_TIME]),
            first_seen=_optional_time(annotations, REBALANCE_FIRST_SEEN),
            cleared=_optional_time(annotations, REBALANCE_CLEARED),
        )
    interruption: Interruption | None = None
    if INTERRUPTION_ACTION in annotations or INTERRUPTION_TIME in annotations:
        action = annotations.get(INTERRUPTION_ACTION, "")
        if action not in INTERRUPTION_ACTIONS:
            raise MalformedAnnotationError(INTERRUPTION_ACTION, action, "one of terminate, stop, hibernate")
        if INTERRUPTION_TIME not in annotations:
            raise MalformedAnnotationError(INTERRUPTION_TIME, "", "an RFC 3339 time next to the interruption action")
        interruption = Interruption(
            action=action,
            time=parse_time(INTERRUPTION_TIME, annotations[INTERRUPTION_TIME]),
            first_seen=_optional_time(annotations, INTERRUPTION_FIRST_SEEN),
            cleared=_optional_time(annotations, INTERRUPTION_CLEARED),
        )
    instance_id = annotations.get(INSTANCE_ID)
    if instance_id is not None and not instance_id.startswith("i-"):
        raise MalformedAnnotationError(INSTANCE_ID, instance_id, "an EC2 instance id such as i-0123456789abcdef0")
    return NodeNotices(
        rebalance=rebalance,
        interruption=interruption,
        instance_id=instance_id,
        availability_zone=annotations.get(AVAILABILITY_ZONE),
    )
