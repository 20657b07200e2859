"""The replacement record: what Spot Guard has done for one noticed node, kept on that Node.

Every step that changes AWS is written here first (intent before effect), with optimistic
concurrency, so a successor that finds a record knows exactly where its predecessor stopped. The
record is JSON in the annotation ``spotguard.io/replacement``. A capacity increase is recorded as
the desired capacity it was read at (``*_before``), the one it asked for (``*_target``) and the owner's
change token (``*_change``): ``controller.capacity.owner`` tells from these whether the call was made.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
from typing import Any

from controller.model import json_fields
from nodewatch import annotations as contract

ANNOTATION = contract.PREFIX + "replacement"
TAINT_KEY = contract.PREFIX + "rebalance"
FINALIZER = contract.PREFIX + "replacement"
SCHEMA_VERSION = 1


class Phase:
    """Phases in the order a replacement goes through them."""

    DETECTED = "Detected"
    SPOT_REQUESTED = "SpotRequested"  # intent: SetDesiredCapacity(spot_target) about to be sent
    SPOT_SCALED_UP = "SpotScaledUp"  # the call succeeded; capacity check running until deadline_at
    SPOT_READY = "SpotReady"  # a new spot instance is InService and its Node Ready
    SPOT_WITHDRAWING = "SpotWithdrawing"  # intent: give back the unfulfilled spot increase
    ON_DEMAND_REQUESTED = "OnDemandRequested"  # intent: SetDesiredCapacity(on_demand_target)
    ON_DEMAND_SCALED_UP = "OnDemandScaledUp"
    ON_DEMAND_READY = "OnDemandReady"  # on-demand instance InService, Node Ready, SGFE created
    RETIRING = "Retiring"  # intent: drain the old node, then terminate exactly its instance
    RETIRED = "Retired"  # old instance terminated with decrement: capacity neutral again
    RELEASING = "Releasing"  # intent: keep policy, no interruption came: give the replacement back
    RELEASED = "Released"  # keep-until-interruption policy: no interruption came, surplus given back
    FAILED = "Failed"  # neither spot nor on-demand gave capacity; node keeps PreferNoSchedule only

    TERMINAL = frozenset({RETIRED, RELEASED, FAILED})
    REPLACED = frozenset({SPOT_READY, ON_DEMAND_READY})
    #: Phases that hold a claim on the spot group (its increase asked for, not yet bound or given back).
    SPOT_CLAIM = frozenset({SPOT_REQUESTED, SPOT_SCALED_UP, SPOT_WITHDRAWING})
    #: Phases that hold a claim on the on-demand group.
    ON_DEMAND_CLAIM = frozenset({ON_DEMAND_REQUESTED, ON_DEMAND_SCALED_UP})


@dataclasses.dataclass(frozen=True)
class Member:
    """A node of a batch, as its intent record lists it: enough to write that node's own record later."""

    node: str
    instance_id: str
    trigger: str
    traceparent: str = ""
    notice: str = ""

    def to_json(self) -> list[str]:
        fields = [self.node, self.instance_id, self.trigger, self.traceparent]
        return [*fields, self.notice] if self.notice else fields

    @classmethod
    def from_json(cls, value: Any) -> Member:
        if not (isinstance(value, list) and len(value) in (4, 5) and all(isinstance(v, str) for v in value)):
            raise ValueError(f"a batch member is [node, instance, trigger, traceparent, notice], not {value!r}")
        return cls(*value)


@dataclasses.dataclass(frozen=True)
class ReplacementRecord:
    phase: str
    trigger: str  # "rebalance" | "interruption"
    instance_id: str
    spot_asg: str
    on_demand_asg: str
    updated_at: str
    batch: str = ""
    notice: str = ""  # the notice this replacement answers ("rebalance:<time>", "interruption:<time>")
    spot_before: int | None = None  # the spot group's desired capacity when the increase was asked for
    spot_target: int | None = None
    spot_change: str = ""  # the capacity owner's token for that change
    spot_known: tuple[str, ...] = ()
    requested_at: str = ""
    activity_mark: str = ""  # start of the newest spot scaling activity before the scale-up
    deadline_at: str = ""
    replacement_instance: str = ""
    replacement_node: str = ""
    replacement_capacity: str = ""  # "spot" | "on-demand"
    replaced_at: str = ""  # when replacement_instance was bound to this node
    fallback_reason: str = ""
    on_demand_before: int | None = None
    on_demand_target: int | None = None
    on_demand_change: str = ""
    on_demand_known: tuple[str, ...] = ()
    on_demand_requested_at: str = ""
    on_demand_activity_mark: str = ""
    on_demand_deadline_at: str = ""
    giving_back: bool = False  # intent: the on-demand request is being given back (on-demand is short too)
    given_back: tuple[str, ...] = ()  # the instances of the claim being given back (when the give-back began)
    sgfe: str = ""
    failed_reason: str = ""
    cordoned: bool = False  # Spot Guard cordoned this node (a drain): it retires it or uncordons it again
    # intent (Retiring): this node's instance left its group without a decrement and the group launched this one in
    # its place; Spot Guard terminates exactly it (controller.checks.left_undecremented)
    owed_instance: str = ""
    previous: str = ""  # the outcome of an earlier replacement of this node (a new notice came after it)
    traceparent: str = ""  # W3C context of the detection span: every later span joins its trace
    # Only on a batch's intent record (SpotRequested): the batch's other nodes, whose own records are written
    # once the call is made. One intent write per batch keeps a burst's scale-up off O(nodes) API writes.
    members: tuple[Member, ...] = ()
    version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        data: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or value is False or value in ("", ()):
                continue
            if field.name == "members":
                value = [member.to_json() for member in value]
            data[_camel(field.name)] = list(value) if isinstance(value, tuple) else value
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, node: str = "") -> ReplacementRecord:
        """Parse a record (the same text parses once: every pass reads every record).

        Every field is checked against its declared type, phases and triggers against the known ones, times as
        RFC 3339; anything else raises MalformedAnnotationError naming the field (and ``node`` when given)."""
        try:
            return _parse(text)
        except contract.MalformedAnnotationError as exc:
            raise (exc.on_node(node) if node else exc) from None
        except TypeError:  # not text at all (unhashable for the cache)
            raise contract.MalformedAnnotationError(ANNOTATION, text, "a JSON object as text", node=node) from None

    @classmethod
    def _from_json(cls, text: str) -> ReplacementRecord:
        try:
            data = json_fields.load_object(text)
            values = json_fields.read_fields(cls, data, custom={"members": _members})
        except json_fields.WrongFieldError as wrong:
            raise contract.MalformedAnnotationError(ANNOTATION, text, wrong.expected, field=wrong.field) from None
        missing = [n for n in ("phase", "trigger", "instance_id", "spot_asg", "on_demand_asg") if n not in values]
        if missing:
            raise contract.MalformedAnnotationError(
                ANNOTATION, text, f"a record with {', '.join(json_fields.camel(n) for n in missing)}"
            )
        version = values.get("version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise contract.MalformedAnnotationError(
                ANNOTATION,
                text,
                f"schema version {SCHEMA_VERSION} (written by a newer Spot Guard: upgrade)",
                field=json_fields.camel("version"),
            )
        _check_values(text, values)
        try:
            return cls(**{"updated_at": "", **values})
        except TypeError as exc:
            raise contract.MalformedAnnotationError(ANNOTATION, text, str(exc)) from None

    def advance(self, phase: str, now: dt.datetime, **changes: Any) -> ReplacementRecord:
        return dataclasses.replace(self, phase=phase, updated_at=contract.format_time(now), **changes)

    @property
    def terminal(self) -> bool:
        return self.phase in Phase.TERMINAL

    def outcome(self) -> str:
        """This replacement's end in one line (kept as ``previous`` when the node gets a new replacement)."""
        why = self.failed_reason or self.fallback_reason
        return f"{self.phase} at {self.updated_at}" + (f": {why}" if why else "")


@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> ReplacementRecord:
    return ReplacementRecord._from_json(text)


#: The record's times (RFC 3339, or "" when not set).
TIME_FIELDS = frozenset(f.name for f in dataclasses.fields(ReplacementRecord) if f.name.endswith(("_at", "_mark")))
TRIGGERS = ("rebalance", "interruption")
PHASES = frozenset(value for name, value in vars(Phase).items() if name.isupper() and isinstance(value, str))


def _members(value: Any) -> tuple[Member, ...]:
    """The batch members of a record (a list of them); WrongFieldError with Member's own words for the shape."""
    try:
        return tuple(Member.from_json(member) for member in (value if isinstance(value, list) else [value]))
    except (TypeError, ValueError) as exc:
        raise json_fields.WrongFieldError("", f"a list of batch members ({exc})") from None


def _check_values(text: str, values: dict[str, Any]) -> None:
    """What the types alone do not say: a known phase and trigger, times, a version >= 1. (Numbers are the
    controller's own: a negative one may be a marker, as spotWithdrawTarget -1 is.)"""

    def wrong(name: str, expected: str) -> contract.MalformedAnnotationError:
        return contract.MalformedAnnotationError(ANNOTATION, text, expected, field=json_fields.camel(name))

    if values["phase"] not in PHASES:
        raise wrong("phase", f"one of {', '.join(sorted(PHASES))}")
    if values["trigger"] not in TRIGGERS:
        raise wrong("trigger", f"one of {', '.join(TRIGGERS)}")
    if values.get("version", SCHEMA_VERSION) < 1:
        raise wrong("version", f"a schema version from 1 to {SCHEMA_VERSION}")
    for name, value in values.items():
        if name in TIME_FIELDS and value:
            contract.parse_time(ANNOTATION, value, field=json_fields.camel(name))


def _camel(name: str) -> str:
    return json_fields.camel(name)
