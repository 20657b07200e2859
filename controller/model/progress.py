"""The lifecycle record: what the lifecycle controller has asked of AWS for one SGFE, kept on the SGFE.

The SGFE's schema is the seed's and fixed, so this bookkeeping lives in the annotation
``spotguard.io/lifecycle`` (JSON), written with the resourceVersion that was read (merge patch), like the
status. Every AWS-changing step is written here before it is made (intent before effect); targets are
absolute desired capacities, so a successor that repeats a step after a crash changes nothing.

Return to spot (Monitoring):  ``return_target`` + ``return_known`` + times (intent) -> SetDesiredCapacity ->
``return_confirmed`` -> the new instance InService with a Ready Node -> ``returned_instance``. A return that
stays short: ``withdraw_target`` (intent) -> the increase given back -> cleared, with ``return_attempts`` and
``next_return_at`` (backoff).
Scale-down (ScalingDown): ``owner`` + ``drain_started_at`` (claim) -> drain -> ``terminate_requested_at``
(intent) -> TerminateInstanceInAutoScalingGroup -> ``finished_at`` -> status Completed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from controller.model import json_fields
from controller.model.malformed import MalformedObjectError
from nodewatch import annotations as contract

ANNOTATION = contract.PREFIX + "lifecycle"
SCHEMA_VERSION = 1


class MalformedRecordError(MalformedObjectError):
    """The annotation is not a lifecycle record this version can read; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class LifecycleProgress:
    # Return to spot.
    return_target: int | None = None  # spot desired capacity asked for
    return_before: int | None = None  # spot desired capacity when the return was asked for
    return_change: str = ""  # the capacity owner's token of that change
    return_known: tuple[str, ...] = ()  # spot instances before the return scale-up
    return_requested_at: str = ""
    return_deadline_at: str = ""
    return_confirmed: bool = False  # SetDesiredCapacity(return_target) succeeded
    return_seen_activity: str = ""  # the spot ASG's newest scaling activity before the return: older ones do not count
    returned_instance: str = ""  # the spot instance that brought the capacity back (InService, Node Ready)
    withdraw_instances: tuple[str, ...] = ()  # the return's instances when it was given back
    withdraw_target: int | None = None  # intent: give an unfulfilled return back down to this desired capacity
    return_attempts: int = 0  # consecutive returns that stayed short (backoff)
    next_return_at: str = ""  # no return attempt before this
    last_short_reason: str = ""
    # Scale-down.
    owner: str = ""  # identity of the controller running the scale-down
    drain_started_at: str = ""
    terminate_requested_at: str = ""  # intent: terminate exactly the on-demand instance, with decrement
    terminate_by: str = ""
    # intent: the on-demand instance had left its group without a decrement and the group launched this one in its
    # place; terminate exactly it (controller.checks.left_undecremented)
    owed_instance: str = ""
    finished_at: str = ""  # when the event reached Completed or Failed (the TTL counts from here)
    given_back: str = ""  # ended by a give-back of its on-demand replacement (why), not by a return to spot
    version: int = SCHEMA_VERSION

    @property
    def return_in_flight(self) -> bool:
        return self.return_target is not None and not self.returned_instance

    def to_json(self) -> str:
        data: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value in ("", None, (), False) or (field.name == "return_attempts" and value == 0):
                continue
            data[_camel(field.name)] = list(value) if isinstance(value, tuple) else value
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, event: str = "") -> LifecycleProgress:
        """Parse the annotation; MalformedRecordError naming the field (and ``event``, when given) otherwise.

        Every field is checked against its declared type, times as RFC 3339, the schema version from 1.
        """

        def malformed(field: str, problem: str) -> MalformedRecordError:
            where = f"annotation {ANNOTATION}" + (f" field {field!r}" if field else "")
            return MalformedRecordError(
                f"{where} {problem}; remove the annotation to let Spot Guard start the event's bookkeeping over",
                kind=_KIND,
                name=event,
                field=f"{ANNOTATION}.{field}" if field else ANNOTATION,
            )

        try:
            values = json_fields.read_fields(cls, json_fields.load_object(text))
        except json_fields.WrongFieldError as wrong:
            problem = f"is malformed: expected {wrong.expected}" if wrong.field else f"is not {wrong.expected}"
            raise malformed(wrong.field, problem) from None
        version = values.get("version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise MalformedRecordError(
                f"annotation {ANNOTATION} has schema version {version}, written by a newer Spot Guard "
                f"(this one reads {SCHEMA_VERSION}): upgrade",
                kind=_KIND,
                name=event,
                field=f"{ANNOTATION}.version",
            )
        for name, value in values.items():
            key = json_fields.camel(name)
            if name in TIME_FIELDS and value and not _is_time(value):
                raise malformed(key, f"is {value!r}: expected an RFC 3339 time such as 2025-01-15T10:00:00Z")
            if name == "version" and value < 1:
                raise malformed(key, f"is {value}: expected a schema version from 1 to {SCHEMA_VERSION}")
        return cls(**values)

    @classmethod
    def of(cls, annotations: Mapping[str, str], event: str = "") -> LifecycleProgress:
        raw = annotations.get(ANNOTATION)
        return cls() if raw is None else cls.from_json(raw, event=event)

    def replace(self, **changes: Any) -> LifecycleProgress:
        return dataclasses.replace(self, **changes)

    def cleared_return(self) -> LifecycleProgress:
        """The record without a return in flight (after it was withdrawn)."""
        return dataclasses.replace(
            self,
            return_target=None,
            return_before=None,
            return_change="",
            return_known=(),
            return_requested_at="",
            return_deadline_at="",
            return_confirmed=False,
            return_seen_activity="",
            withdraw_target=None,
            withdraw_instances=(),
        )

    def cleared_scale_down(self) -> LifecycleProgress:
        """The record after a scale-down was rolled back (the spot ASG relapsed)."""
        return dataclasses.replace(self, owner="", drain_started_at="", terminate_requested_at="", terminate_by="")


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 UTC with milliseconds: a stability window of a few seconds must not lose a second to rounding."""
    if moment.tzinfo is None:
        raise ValueError("format_time needs a timezone-aware datetime")
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


#: The record's times (RFC 3339, or "" when not set).
TIME_FIELDS = frozenset(f.name for f in dataclasses.fields(LifecycleProgress) if f.name.endswith("_at"))
_KIND = "SpotGuardFallbackEvent"


def _is_time(text: str) -> bool:
    try:
        contract.parse_time(ANNOTATION, text)
    except contract.MalformedAnnotationError:
        return False
    return True


def parse_time(what: str, text: str) -> dt.datetime:
    """An RFC 3339 time written by Spot Guard; MalformedRecordError naming ``what`` otherwise."""
    try:
        return contract.parse_time(what, text)
    except contract.MalformedAnnotationError as exc:
        raise MalformedRecordError(str(exc)) from None


def _camel(name: str) -> str:
    return json_fields.camel(name)
