"""The replacement road as pure decisions: given one node's facts (its record, its notices, its state in the
cluster), what is its next step? No I/O here: ``controller.replacement.controller`` gathers the facts and
applies the actions; the steps a batch takes together (scale-up, capacity check, fallback) are decided per
claim by ``controller.checks.capacity_check``.

A node's road (``controller.model.record.Phase``)::

    notice -> queued -> SpotRequested -> SpotScaledUp -> SpotReady ---------------------------> Retiring -> Retired
                                              \\-> SpotWithdrawing -> OnDemandRequested -> OnDemandScaledUp
                                                        -> OnDemandReady (SGFE) -> Retiring -> Retired
                                                                         \\-> Failed (PreferNoSchedule only)
    keep-until-interruption, or a drain that never finishes:  ...Ready -> Releasing -> Released

No dead ends: a new notice after Released or Failed starts a new replacement (the old outcome is kept in
``previous``); a node Spot Guard cordoned is either retired or uncordoned once no interruption is pending.

No chains: a node that stands in for another (its replacement, not yet ended) gets no replacement of its own. Under
keep-until-interruption such a spare that gets a notice is given back at once; otherwise it waits until the node
it replaces is retired, then it is an ordinary node.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from controller.config import Settings, format_duration
from controller.model.record import Phase, ReplacementRecord
from nodewatch import annotations as contract

#: Phases whose next step is one per batch (an AWS call for all its nodes), decided per claim.
BATCHED = frozenset(
    {
        Phase.SPOT_REQUESTED,
        Phase.SPOT_SCALED_UP,
        Phase.SPOT_WITHDRAWING,
        Phase.ON_DEMAND_REQUESTED,
        Phase.ON_DEMAND_SCALED_UP,
    }
)
#: Ended replacements that a new notice may follow with a new one (Retired: the instance is gone).
RESTARTABLE = frozenset({Phase.RELEASED, Phase.FAILED})
#: How long a node with nothing to do now waits before it is looked at again (a change wakes it sooner).
IDLE_WAIT = 30.0
#: The most instances one claim asks for (a batch's nodes): a recorded increase beyond it is not Spot Guard's.
MAX_CLAIM = 1000


@dataclasses.dataclass(frozen=True)
class Notice:
    """The notice a replacement answers: an interruption outranks a rebalance recommendation."""

    trigger: str  # "rebalance" | "interruption"
    identity: str  # "<trigger>:<time>": a later notice of the same node has another

    @classmethod
    def of(cls, notices: contract.NodeNotices) -> Notice | None:
        """The active (not cleared) notice of a node, if any."""
        if notices.interruption is not None and notices.interruption.cleared is None:
            return cls("interruption", "interruption:" + contract.format_time(notices.interruption.time))
        if notices.rebalance is not None and notices.rebalance.cleared is None:
            return cls("rebalance", "rebalance:" + contract.format_time(notices.rebalance.notice_time))
        return None


@dataclasses.dataclass(frozen=True)
class Truth:
    """What AWS and the cluster say about what a record would have Spot Guard touch (never what the record says):
    a record is acted on only if it agrees (``untrusted``). "" or None: not known (an instance in no group any more,
    a lookup that failed, a Node without a creation time): nothing to compare with."""

    group: str = ""  # the Auto Scaling group of the node's own instance
    pair: tuple[str, str] | None = None  # the configured (spot, on-demand) pair of that group; None: not configured
    replacement_group: str = ""  # the Auto Scaling group of the record's replacement instance
    replacement_bound_by: str = ""  # another node whose record binds the same replacement instance


@dataclasses.dataclass(frozen=True)
class NodeFacts:
    """One node as one pass sees it."""

    name: str
    now: dt.datetime
    record: ReplacementRecord | None = None
    record_error: str = ""  # the record annotation could not be read (the message says why)
    notice: Notice | None = None
    notice_error: str = ""  # nodewatch's annotations could not be read
    error_field: str = ""  # the annotation (and field) that record_error or notice_error is about
    interrupted: bool = False  # an interruption notice is active
    instance_id: str = ""  # from spec.providerID
    annotated_instance: str = ""  # the instance nodewatch's annotations name
    deleting: bool = False
    has_finalizer: bool = False
    replaced_taint: bool = False  # Spot Guard's NoSchedule taint is on it
    waiting: bool = False  # queued, or taken by a scale-up in flight, or listed on a batch's intent
    job_running: bool = False  # a drain/retire/release job of this node is running
    paused: bool = False
    claim_pending: bool = False  # an open claim of its replacement's group was asked before it was bound
    stands_in_for: str = ""  # what this node stands in for (a node whose replacement has not ended, an open claim)
    stand_in_noticed: bool = False  # the node standing in for this one has a notice of its own
    announced: str = ""  # the notice this process already announced with an Event on the node
    truth: Truth = Truth()  # what AWS and the cluster say about what the record names


# -- actions -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Refuse:
    reason: str  # short, for metrics
    message: str
    field: str = ""  # the malformed annotation (and its field), when that is why


@dataclasses.dataclass(frozen=True)
class Announce:
    """Say on the node (an Event with the reason users know from aws-node-termination-handler) that a notice was
    first seen; whatever Spot Guard then does or refuses follows in its own Events."""

    notice: Notice

    @property
    def reason(self) -> str:
        return "SpotInterruption" if self.notice.trigger == "interruption" else "RebalanceRecommendation"


@dataclasses.dataclass(frozen=True)
class Queue:
    """Queue the node for a spot scale-up (its group is resolved when applied)."""

    notice: Notice
    previous: str = ""  # the outcome of the replacement this one follows


@dataclasses.dataclass(frozen=True)
class Taint:
    """Put Spot Guard's NoSchedule taint on the old node: its replacement is Ready."""


@dataclasses.dataclass(frozen=True)
class BeginRetiring:
    """Write Retiring (intent), then retire: drain, then terminate exactly its instance."""


@dataclasses.dataclass(frozen=True)
class Retire:
    """Run (or resume) the retirement job."""


@dataclasses.dataclass(frozen=True)
class BeginReleasing:
    """Write Releasing (intent), then give the replacement back."""

    why: str


@dataclasses.dataclass(frozen=True)
class Release:
    """Run (or resume) the release job: give the replacement back, lift the taint, uncordon."""


@dataclasses.dataclass(frozen=True)
class DrainForInterruption:
    """Record that Spot Guard cordons the node (intent), then drain it at once."""


@dataclasses.dataclass(frozen=True)
class Uncordon:
    """Spot Guard cordoned the node and nothing will retire it now: uncordon it, then clear the mark."""


@dataclasses.dataclass(frozen=True)
class Finish:
    """Take Spot Guard's finalizer off an ended replacement's node."""


@dataclasses.dataclass(frozen=True)
class Wait:
    seconds: float
    why: str = ""


Action = (
    Refuse
    | Announce
    | Queue
    | Taint
    | BeginRetiring
    | Retire
    | BeginReleasing
    | Release
    | DrainForInterruption
    | Uncordon
    | Finish
    | Wait
)


# -- the decision ------------------------------------------------------------------------------------------


def decide(facts: NodeFacts, settings: Settings) -> list[Action]:
    """The node's next steps, in order (empty: nothing to do; a batched phase's step is decided per claim)."""
    actions = _next_steps(facts, settings)
    if facts.notice is not None and _first_seen(facts.notice, facts):
        actions.insert(0, Announce(facts.notice))
    return actions


def _first_seen(notice: Notice, facts: NodeFacts) -> bool:
    """Is ``notice`` one this process has not announced, and no replacement has answered yet? (Not when the record
    cannot be read, the annotations are an earlier instance's, or the instance is gone.)"""
    record = facts.record
    return (
        not (facts.announced and same_notice(notice.identity, facts.announced))
        and not facts.deleting
        and not facts.record_error
        and not (facts.annotated_instance and facts.instance_id and facts.annotated_instance != facts.instance_id)
        and (record is None or (record.phase != Phase.RETIRED and is_new(notice, record)))
    )


def _next_steps(facts: NodeFacts, settings: Settings) -> list[Action]:
    if facts.record_error:
        return [
            Refuse("malformed-record", f"{facts.record_error}; fix or remove the annotation by hand", facts.error_field)
        ]
    record = facts.record
    if record is None:
        return _unreplaced(facts)
    wrong = untrusted(record, facts.instance_id, facts.truth)
    if wrong:
        return [
            Refuse("untrusted-record", f"{wrong}: not written by Spot Guard; nothing done for it (remove it by hand)")
        ]
    if record.terminal:
        return _ended(facts, record)
    actions: list[Action] = []
    if (
        settings.drain_on_interruption
        and facts.interrupted
        and not record.cordoned
        and record.phase not in (Phase.RETIRING, Phase.RELEASING)
        and not facts.job_running
    ):
        actions.append(DrainForInterruption())
    if record.phase in Phase.REPLACED:
        actions.extend(_replaced(facts, record, settings))
    elif record.phase == Phase.RETIRING and not facts.job_running:
        actions.append(Retire())
    elif record.phase == Phase.RELEASING and not facts.job_running:
        actions.append(Release())
    elif record.phase == Phase.DETECTED and not facts.waiting and facts.notice is not None:
        actions.append(Queue(facts.notice))  # written by an older version: queue it again
    return actions


def untrusted(record: ReplacementRecord, instance_id: str, truth: Truth) -> str:
    """Why ``record`` (of a node whose spec.providerID names ``instance_id``) cannot be Spot Guard's own, or "".

    Checked before any effect: the record names the node's own instance, the pair AWS and the configuration give
    that instance's group, increases that one claim can have asked for, and a replacement that can have been
    launched for it (in the group it was asked from, bound to no other node, registered after this node). An ended
    record drives no AWS call and is not checked."""
    if record.terminal:
        return ""
    if record.instance_id != instance_id:
        return f"the record names instance {record.instance_id or '(none)'}, but the node is instance {instance_id}"
    if truth.group:
        if truth.pair is None:
            return f"instance {instance_id} is in ASG {truth.group}, which is not a configured spot group"
        if truth.pair != (record.spot_asg, record.on_demand_asg):
            return (
                f"the record names ASGs {record.spot_asg}/{record.on_demand_asg}, but instance {instance_id} is in "
                f"ASG {truth.group}, paired with {truth.pair[1]}"
            )
    if record.phase in Phase.SPOT_CLAIM:
        # nodes beyond the group's MaxSize go straight to SpotWithdrawing, with no increase of their own
        optional = record.phase == Phase.SPOT_WITHDRAWING
        wrong = _increase("spot", record.spot_before, record.spot_target, optional=optional)
        expected = 1 + len(record.members)
        if (
            not wrong
            and record.phase == Phase.SPOT_REQUESTED
            and record.spot_target != (record.spot_before or 0) + expected
        ):
            wrong = f"its spot target {record.spot_target} is not {record.spot_before} + its {expected} node(s)"
        if wrong:
            return wrong
    if record.phase in Phase.ON_DEMAND_CLAIM:
        wrong = _increase("on-demand", record.on_demand_before, record.on_demand_target)
        if wrong:
            return wrong
    if record.replacement_instance:
        replacement = record.replacement_instance
        group = record.on_demand_asg if record.replacement_capacity == "on-demand" else record.spot_asg
        if replacement == instance_id:
            return f"the record names the node's own instance {instance_id} as its replacement"
        if truth.replacement_group and truth.replacement_group != group:
            return (
                f"its replacement {replacement} is in ASG {truth.replacement_group}, not in {group} it was asked from"
            )
        if truth.replacement_bound_by:
            return f"its replacement {replacement} is bound to node {truth.replacement_bound_by} too"
    return ""


def _increase(kind: str, before: int | None, target: int | None, *, optional: bool = False) -> str:
    if optional and before is None and target is None:
        return ""
    if before is None or target is None:
        return f"its {kind} increase names no desired capacity before and after it"
    if not 1 <= target - before <= MAX_CLAIM:
        return f"its {kind} increase {before} -> {target} is not one a claim of 1 to {MAX_CLAIM} nodes asks for"
    return ""


def _unreplaced(facts: NodeFacts) -> list[Action]:
    if facts.notice_error:
        return [Refuse("malformed-annotation", facts.notice_error, facts.error_field)]
    if facts.notice is None or facts.deleting or facts.waiting:
        return []
    if facts.stands_in_for:
        # It stands in for a node whose replacement has not ended: that node's road decides (a spare kept under
        # keep-until-interruption is given back; a replacement waits for the node it replaces to be retired).
        return [Wait(IDLE_WAIT, f"stands in for {facts.stands_in_for}")]
    refusal = _refusal(facts)
    return [refusal] if refusal else [Queue(facts.notice)]


def _refusal(facts: NodeFacts) -> Refuse | None:
    if facts.paused:
        return Refuse("paused", "Spot Guard is paused (spotguard resume to act on new notices)")
    if facts.annotated_instance and facts.instance_id and facts.annotated_instance != facts.instance_id:
        return Refuse(
            "stale-annotation",
            f"notice annotations name instance {facts.annotated_instance} but the node is instance "
            f"{facts.instance_id}: stale annotations from an earlier instance; remove them",
        )
    return None


def _ended(facts: NodeFacts, record: ReplacementRecord) -> list[Action]:
    actions: list[Action] = []
    if record.cordoned and record.phase != Phase.RETIRED and not facts.interrupted and not facts.job_running:
        actions.append(Uncordon())
    if (
        record.phase in RESTARTABLE
        and facts.notice is not None
        and is_new(facts.notice, record)
        and not facts.deleting
        and not facts.waiting
        and not facts.stands_in_for
    ):
        refusal = _refusal(facts)
        actions.append(refusal or Queue(facts.notice, previous=record.outcome()))
    elif facts.has_finalizer and not facts.claim_pending and not record.members and not actions:
        actions.append(Finish())
    return actions


#: Two rebalance recommendations of one instance this close together are one notice seen by two sources: IMDS's
#: noticeTime (nodewatch) and EventBridge's event time (the queue) differ by seconds.
SAME_REBALANCE = dt.timedelta(minutes=10)


def same_notice(identity: str, other: str) -> bool:
    """Are two notice identities (``<trigger>:<time>``) one notice, whichever source each came from? An instance is
    interrupted once (EventBridge's warning time and IMDS's action time differ by two minutes); rebalance
    recommendations within ``SAME_REBALANCE`` are one."""
    if identity == other:
        return True
    trigger, _, when = identity.partition(":")
    other_trigger, _, other_when = other.partition(":")
    if trigger != other_trigger:
        return False
    if trigger == "interruption":
        return True
    try:
        apart = abs(contract.parse_time("notice", when) - contract.parse_time("notice", other_when))
    except contract.MalformedAnnotationError:
        return False
    return apart <= SAME_REBALANCE


def is_new(notice: Notice, record: ReplacementRecord) -> bool:
    """Is ``notice`` another notice than the one ``record`` answered (``same_notice``)?"""
    if record.notice:
        return not same_notice(notice.identity, record.notice)
    # A record of an older version names only its trigger: a notice is new if it is of another kind, or issued
    # after the replacement was asked for.
    if notice.trigger != record.trigger:
        return True
    issued = contract.parse_time("notice", notice.identity.split(":", 1)[1])
    asked = record.requested_at or record.updated_at
    return bool(asked) and issued > contract.parse_time("record", asked)


def _replaced(facts: NodeFacts, record: ReplacementRecord, settings: Settings) -> list[Action]:
    actions: list[Action] = [] if facts.replaced_taint else [Taint()]
    if settings.retire_policy == "drain" or record.trigger == "interruption" or facts.interrupted:
        actions.append(BeginRetiring())
        return actions
    # keep-until-interruption: give the surplus back when no interruption comes within the grace period, or at once
    # when the spare itself got a notice (it is doomed too; a later interruption of this node starts a new one).
    if facts.stand_in_noticed:
        actions.append(BeginReleasing(f"its replacement {record.replacement_node} got a notice of its own"))
        return actions
    since = contract.parse_time("record", record.replaced_at or record.updated_at)
    left = settings.keep_grace_period - (facts.now - since).total_seconds()
    if left <= 0:
        actions.append(BeginReleasing(f"no interruption within {format_duration(settings.keep_grace_period)}"))
    else:
        actions.append(Wait(left, "keep-until-interruption grace period"))
    return actions
