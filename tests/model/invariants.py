"""What must hold of the model's world: after every step (``always``), and once everything has settled
(``settled``). Each returns the violations found, in words."""

from __future__ import annotations

from controller.effects.protection import SCALE_DOWN_TAINT
from controller.model.record import TAINT_KEY, Phase
from controller.model.sgfe import Phase as SgfePhase
from controller.replacement.decisions import Notice, is_new
from nodewatch import annotations as contract
from tests.model.harness import Process, World


def always(world: World) -> list[str]:
    problems = []
    for termination in world.aws.terminations:
        if termination.chosen_by == "ec2":
            continue  # EC2 took it on its own (an interruption, a health check): nobody's choice but AWS's, by rule
        if termination.chosen_by == "aws":
            problems.append(
                f"AWS chose to terminate {termination.instance} of {termination.group} (desired capacity lowered "
                "below the live instances): an instance Spot Guard did not choose"
            )
        elif termination.cordoned is False:
            problems.append(f"Spot Guard terminated {termination.instance}, whose Node was not drained")
    reclaimed = {t.group for t in world.aws.terminations if t.chosen_by == "ec2"}
    for group, detail in zip(world.reports.outside_changes, world.reports.details, strict=True):
        if group[0] in reclaimed:
            continue  # an instance EC2 took leaves desired capacity above the instances until the group relaunches
        problems.append(
            f"Spot Guard took a change for someone else's; nobody else changes capacity in the model: {detail}"
        )
    problems.extend(f"an effect was refused: {refusal}" for refusal in world.reports.refused_effects)
    problems.extend(
        f"a fallback blamed someone else's lower desired capacity: {reason}"
        for reason in world.reports.fallback_reasons
        if "someone other than Spot Guard" in reason
    )
    return problems


def settled(world: World, process: Process) -> list[str]:
    """Everything has finished: no claim open, capacity neutral, nothing left cordoned or tainted, every notice
    answered."""
    problems = always(world)
    if process.workers.pending:
        problems.append(f"jobs still pending: {[key for _, key, _ in process.workers.pending]}")
    claims = process.owner.claims()
    if claims.open:
        problems.append(f"claims still open: {[c.key for c in claims.open]}")
    for pair in world.pairs:
        for group in (pair.spot, pair.on_demand):
            live = len(world.aws.live(group))
            desired = world.aws.groups[group]["desired"]
            if desired != live:
                problems.append(f"{group}: desired {desired} but {live} live instances (drift {desired - live})")
        total = len(world.aws.live(pair.spot)) + len(world.aws.live(pair.on_demand))
        if total != world.initial_total[pair.spot]:
            problems.append(
                f"{pair.spot}+{pair.on_demand}: {total} instances, {world.initial_total[pair.spot]} before: not "
                "capacity neutral"
            )
    for event in world.events():
        if event.status.phase not in (SgfePhase.COMPLETED, SgfePhase.FAILED):
            problems.append(f"SGFE {event.name} is still {event.status.phase}")
    for name, node in world.kube.nodes.items():
        problems.extend(_node_problems(world, name, node))
    return problems


def _node_problems(world: World, name: str, node: dict[str, object]) -> list[str]:
    problems = []
    record = world.record(name)
    spec = node["spec"]
    assert isinstance(spec, dict)
    annotations = world.kube.annotations(name)
    notices = contract.parse(annotations)
    interrupted = notices.interruption is not None and notices.interruption.cleared is None
    dying = record is not None and record.phase == Phase.FAILED and interrupted
    if spec.get("unschedulable") and not dying:
        problems.append(f"node {name} is left cordoned (record {record.phase if record else 'none'})")
    for taint in spec.get("taints") or []:
        if taint.get("key") == TAINT_KEY and taint.get("effect") == "NoSchedule":
            problems.append(
                f"node {name} keeps Spot Guard's NoSchedule taint (record {record.phase if record else 'none'})"
            )
        if (
            taint.get("key") == TAINT_KEY
            and taint.get("effect") == "PreferNoSchedule"
            and (record is None or record.phase != Phase.FAILED)
        ):
            problems.append(f"node {name} keeps a PreferNoSchedule taint without a Failed replacement")
        if taint.get("key") == SCALE_DOWN_TAINT:
            problems.append(f"node {name} keeps the scale-down taint")
    notice = Notice.of(notices)
    metadata = node.get("metadata")
    deleting = isinstance(metadata, dict) and bool(metadata.get("deletionTimestamp"))
    if notice is not None and not deleting:
        if record is None:
            problems.append(f"node {name} has a {notice.trigger} notice and no replacement")
        elif not record.terminal:
            problems.append(f"node {name}'s replacement is still {record.phase}")
        elif is_new(notice, record):
            problems.append(
                f"node {name}'s {notice.trigger} notice came after its replacement ended {record.phase}: unanswered"
            )
    return problems
