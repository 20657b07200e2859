"""The replacement road's decisions as a table: one node's facts in, its next steps out (no I/O, no clock).

Each row is a situation an operator would recognise; the expected steps are what a careful person would do by
hand. The batched phases (SpotRequested ... OnDemandScaledUp) have no per-node step: their step is one per claim,
decided by ``controller.checks.capacity_check`` (tested in ``test_capacity.py``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from controller.config import Settings
from controller.model.record import Phase, ReplacementRecord
from controller.replacement.decisions import (
    BATCHED,
    IDLE_WAIT,
    Action,
    Announce,
    BeginReleasing,
    BeginRetiring,
    DrainForInterruption,
    Finish,
    NodeFacts,
    Notice,
    Queue,
    Refuse,
    Release,
    Retire,
    Taint,
    Truth,
    Uncordon,
    Wait,
    decide,
    is_new,
    untrusted,
)

NOW = dt.datetime(2026, 1, 15, 10, 30, tzinfo=dt.UTC)
FIRST = Notice("rebalance", "rebalance:2026-01-15T10:00:00Z")
LATER = Notice("rebalance", "rebalance:2026-01-15T10:20:00Z")
INTERRUPTION = Notice("interruption", "interruption:2026-01-15T10:25:00Z")
DRAIN = Settings()
KEEP = dataclasses.replace(Settings(), retire_policy="keep-until-interruption", keep_grace_period=900.0)


def record(phase: str, **fields: object) -> ReplacementRecord:
    values: dict[str, object] = {
        "phase": phase,
        "trigger": "rebalance",
        "instance_id": "i-old",
        "spot_asg": "spot",
        "on_demand_asg": "od",
        "updated_at": "2026-01-15T10:01:00Z",
        "notice": FIRST.identity,
        "requested_at": "2026-01-15T10:00:05Z",
    }
    if phase in Phase.REPLACED or phase in Phase.TERMINAL or phase in (Phase.RETIRING, Phase.RELEASING):
        values |= {"replacement_instance": "i-new", "replacement_node": "new", "replaced_at": "2026-01-15T10:02:00Z"}
    if phase in Phase.SPOT_CLAIM or phase in Phase.ON_DEMAND_CLAIM:
        values |= {"spot_before": 4, "spot_target": 5}
    if phase in Phase.ON_DEMAND_CLAIM:
        values |= {"on_demand_before": 0, "on_demand_target": 1}
    values.update(fields)
    return ReplacementRecord(**values)  # type: ignore[arg-type]


def facts(rec: ReplacementRecord | None = None, **fields: object) -> NodeFacts:
    values: dict[str, object] = {"name": "old", "now": NOW, "record": rec, "instance_id": "i-old"}
    values.update(fields)
    return NodeFacts(**values)  # type: ignore[arg-type]


ROWS: list[tuple[str, NodeFacts, Settings, list[Action]]] = [
    # -- no replacement yet ---------------------------------------------------------------------------------
    ("a node with no notice is left alone", facts(), DRAIN, []),
    ("a first notice is queued for a spot scale-up", facts(notice=FIRST), DRAIN, [Announce(FIRST), Queue(FIRST)]),
    (
        "a notice already queued or in a scale-up is not queued twice",
        facts(notice=FIRST, waiting=True, announced=FIRST.identity),
        DRAIN,
        [],
    ),
    ("a node being deleted gets no replacement", facts(notice=FIRST, deleting=True), DRAIN, []),
    (
        "a node that stands in for another gets no replacement of its own (no chains)",
        facts(notice=FIRST, stands_in_for="node a"),
        DRAIN,
        [Announce(FIRST), Wait(IDLE_WAIT, "stands in for node a")],
    ),
    (
        "paused: a new notice is refused and said so",
        facts(notice=FIRST, paused=True),
        DRAIN,
        [Announce(FIRST), Refuse("paused", "Spot Guard is paused (spotguard resume to act on new notices)")],
    ),
    (
        "annotations of an earlier instance are refused, not acted on",
        facts(notice=FIRST, annotated_instance="i-gone"),
        DRAIN,
        [
            Refuse(
                "stale-annotation",
                "notice annotations name instance i-gone but the node is instance i-old: stale annotations from an "
                "earlier instance; remove them",
            )
        ],
    ),
    (
        "malformed notice annotations are refused naming the field",
        facts(notice_error="annotation x is bad", error_field="spotguard.io/rebalance"),
        DRAIN,
        [Refuse("malformed-annotation", "annotation x is bad", "spotguard.io/rebalance")],
    ),
    (
        "a malformed record is refused before anything else, naming the field",
        facts(record_error="record is bad", error_field="spotguard.io/replacement.phase", notice=FIRST),
        DRAIN,
        [
            Refuse(
                "malformed-record",
                "record is bad; fix or remove the annotation by hand",
                "spotguard.io/replacement.phase",
            )
        ],
    ),
    # -- a replacement under way ----------------------------------------------------------------------------
    (
        "Detected by an older version and not queued: queued again",
        facts(record(Phase.DETECTED), notice=FIRST),
        DRAIN,
        [Queue(FIRST)],
    ),
    ("Detected and already queued: nothing", facts(record(Phase.DETECTED), notice=FIRST, waiting=True), DRAIN, []),
    *[
        (f"{phase}: its step is the claim's, nothing per node", facts(record(phase), notice=FIRST), DRAIN, [])
        for phase in sorted(BATCHED)
    ],
    (
        "an interruption during a scale-up drains the node at once (cordon recorded first)",
        facts(record(Phase.SPOT_SCALED_UP), notice=INTERRUPTION, interrupted=True),
        DRAIN,
        [Announce(INTERRUPTION), DrainForInterruption()],
    ),
    (
        "an interruption drain is not started twice",
        facts(
            record(Phase.SPOT_SCALED_UP, cordoned=True),
            notice=INTERRUPTION,
            interrupted=True,
            announced=INTERRUPTION.identity,
        ),
        DRAIN,
        [],
    ),
    (
        "no interruption drain when the setting is off",
        facts(record(Phase.SPOT_SCALED_UP), notice=INTERRUPTION, interrupted=True),
        dataclasses.replace(DRAIN, drain_on_interruption=False),
        [Announce(INTERRUPTION)],
    ),
    # -- replaced -------------------------------------------------------------------------------------------
    (
        "spot replacement Ready (drain policy): taint the old node, then retire it",
        facts(record(Phase.SPOT_READY), notice=FIRST),
        DRAIN,
        [Taint(), BeginRetiring()],
    ),
    (
        "on-demand replacement Ready, taint already on: retire",
        facts(record(Phase.ON_DEMAND_READY, sgfe="fb-1"), notice=FIRST, replaced_taint=True),
        DRAIN,
        [BeginRetiring()],
    ),
    (
        "keep-until-interruption, within the grace period: wait for the rest of it",
        facts(record(Phase.SPOT_READY, replaced_at="2026-01-15T10:25:00Z"), notice=FIRST, replaced_taint=True),
        KEEP,
        [Wait(600.0, "keep-until-interruption grace period")],
    ),
    (
        "keep-until-interruption, grace period over: give the spare back",
        facts(record(Phase.SPOT_READY, replaced_at="2026-01-15T10:00:00Z"), notice=FIRST, replaced_taint=True),
        KEEP,
        [BeginReleasing("no interruption within 15m")],
    ),
    (
        "keep-until-interruption, the interruption came: retire (and drain at once)",
        facts(record(Phase.SPOT_READY), notice=INTERRUPTION, interrupted=True, replaced_taint=True),
        KEEP,
        [Announce(INTERRUPTION), DrainForInterruption(), BeginRetiring()],
    ),
    (
        "keep-until-interruption, the spare itself got a notice: give it back at once",
        facts(record(Phase.SPOT_READY), notice=FIRST, replaced_taint=True, stand_in_noticed=True),
        KEEP,
        [BeginReleasing("its replacement new got a notice of its own")],
    ),
    (
        "Retiring after a crash: resume the retirement",
        facts(record(Phase.RETIRING), notice=FIRST),
        DRAIN,
        [Retire()],
    ),
    ("Retiring with its job running: nothing more", facts(record(Phase.RETIRING), job_running=True), DRAIN, []),
    (
        "Releasing after a crash: resume the release",
        facts(record(Phase.RELEASING), notice=FIRST),
        DRAIN,
        [Release()],
    ),
    # -- ended: no dead ends --------------------------------------------------------------------------------
    (
        "Released, then a new notice: a new replacement that remembers the old outcome",
        facts(record(Phase.RELEASED), notice=LATER),
        DRAIN,
        [Announce(LATER), Queue(LATER, previous="Released at 2026-01-15T10:01:00Z")],
    ),
    (
        "Failed, then an interruption: a new replacement",
        facts(record(Phase.FAILED, failed_reason="on-demand short"), notice=INTERRUPTION, interrupted=True),
        DRAIN,
        [Announce(INTERRUPTION), Queue(INTERRUPTION, previous="Failed at 2026-01-15T10:01:00Z: on-demand short")],
    ),
    (
        "Failed, the same notice still on the node: no second replacement",
        facts(record(Phase.FAILED), notice=FIRST),
        DRAIN,
        [],
    ),
    (
        "Retired: a notice on a node whose instance is gone starts nothing",
        facts(record(Phase.RETIRED), notice=LATER),
        DRAIN,
        [],
    ),
    (
        "Failed after Spot Guard cordoned it and the interruption cleared: uncordon",
        facts(record(Phase.FAILED, cordoned=True), notice=FIRST),
        DRAIN,
        [Uncordon()],
    ),
    (
        "Released and cordoned, an interruption still pending: stays cordoned",
        facts(record(Phase.RELEASED, cordoned=True), notice=FIRST, interrupted=True),
        DRAIN,
        [],
    ),
    (
        "Retired and cordoned: nothing to uncordon (the instance is gone)",
        facts(record(Phase.RETIRED, cordoned=True), has_finalizer=True),
        DRAIN,
        [Finish()],
    ),
    (
        "ended with the finalizer: take it off",
        facts(record(Phase.RELEASED), has_finalizer=True),
        DRAIN,
        [Finish()],
    ),
    (
        "ended, but an older claim of its replacement's group is still open: keep the finalizer",
        facts(record(Phase.RELEASED), has_finalizer=True, claim_pending=True),
        DRAIN,
        [],
    ),
    (
        "Failed with a new notice while paused: refused, not queued",
        facts(record(Phase.FAILED), notice=LATER, paused=True),
        DRAIN,
        [Announce(LATER), Refuse("paused", "Spot Guard is paused (spotguard resume to act on new notices)")],
    ),
]


@pytest.mark.parametrize(("situation", "node", "settings", "expected"), ROWS, ids=[row[0] for row in ROWS])
def test_decide(situation: str, node: NodeFacts, settings: Settings, expected: list[Action]) -> None:
    assert decide(node, settings) == expected, situation


def test_every_phase_has_a_row() -> None:
    phases = {row[1].record.phase for row in ROWS if row[1].record is not None}
    declared = {value for name, value in vars(Phase).items() if name.isupper() and isinstance(value, str)}
    assert declared - phases == set()


def test_the_announcement_uses_the_reasons_users_know_from_nth() -> None:
    assert Announce(FIRST).reason == "RebalanceRecommendation"
    assert Announce(INTERRUPTION).reason == "SpotInterruption"


def test_a_notice_is_announced_once_per_process() -> None:
    assert decide(facts(notice=FIRST, announced=FIRST.identity), DRAIN) == [Queue(FIRST)]
    # a later notice of the same node is announced again
    assert decide(facts(notice=LATER, announced=FIRST.identity), DRAIN) == [Announce(LATER), Queue(LATER)]


@pytest.mark.parametrize(
    ("notice", "rec", "new"),
    [
        (FIRST, record(Phase.FAILED), False),
        (LATER, record(Phase.FAILED), True),
        # records of an older version name only the trigger: a notice issued after the request is new
        (FIRST, record(Phase.FAILED, notice=""), False),
        (LATER, record(Phase.FAILED, notice=""), True),
        (INTERRUPTION, record(Phase.FAILED, notice=""), True),
    ],
)
def test_is_new(notice: Notice, rec: ReplacementRecord, new: bool) -> None:
    assert is_new(notice, rec) is new


# -- a record that is not Spot Guard's own (trust boundaries) ----------------------------------------------

PAIRED = Truth(group="spot", pair=("spot", "od"), replacement_group="spot")


@pytest.mark.parametrize(
    ("rec", "truth", "says"),
    [
        (record(Phase.RETIRING, instance_id="i-other"), PAIRED, "names instance i-other"),
        (record(Phase.SPOT_READY), Truth(group="spot-b", pair=("spot-b", "od-b")), "paired with od-b"),
        (record(Phase.SPOT_READY), Truth(group="web", pair=None), "not a configured spot group"),
        (record(Phase.SPOT_REQUESTED, spot_before=None, spot_target=50), PAIRED, "no desired capacity before"),
        (record(Phase.SPOT_REQUESTED, spot_before=4, spot_target=50), PAIRED, "not 4 + its 1 node"),
        (record(Phase.SPOT_SCALED_UP, spot_before=4, spot_target=4), PAIRED, "4 -> 4"),
        (record(Phase.ON_DEMAND_REQUESTED, on_demand_before=0, on_demand_target=5000), PAIRED, "0 -> 5000"),
        (record(Phase.SPOT_READY, replacement_instance="i-old"), PAIRED, "own instance"),
        (record(Phase.RELEASING), Truth(group="spot", pair=("spot", "od"), replacement_group="od"), "not in spot"),
        (record(Phase.SPOT_READY), dataclasses.replace(PAIRED, replacement_bound_by="n2"), "bound to node n2"),
    ],
)
def test_a_record_that_is_not_spot_guards_own_is_refused_before_any_step(
    rec: ReplacementRecord, truth: Truth, says: str
) -> None:
    facts = NodeFacts("n1", NOW, record=rec, instance_id="i-old", notice=INTERRUPTION, interrupted=True, truth=truth)
    [refusal] = [a for a in decide(facts, DRAIN) if not isinstance(a, Announce)]
    assert isinstance(refusal, Refuse) and refusal.reason == "untrusted-record"
    assert says in refusal.message
    assert untrusted(rec, "i-old", truth)


@pytest.mark.parametrize(
    "rec",
    [
        record(Phase.SPOT_REQUESTED, spot_before=4, spot_target=5),
        record(Phase.SPOT_WITHDRAWING),  # beyond MaxSize: no increase of its own
        record(Phase.SPOT_READY),
        record(Phase.RETIRED, instance_id="i-gone"),  # ended: drives nothing
    ],
)
def test_spot_guards_own_records_are_trusted(rec: ReplacementRecord) -> None:
    assert untrusted(rec, "i-old", PAIRED) == ""
    assert untrusted(rec, "i-old", Truth()) == ""  # nothing known to compare with
