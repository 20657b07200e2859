"""Is a spot ASG healthy? A pure verdict over one snapshot: the group, its activities, the Ready Nodes.

Healthy (the seed's Phase 5) means all three at once, and the group's Launch process not suspended (a suspended
one launches nothing, so a return to spot could not happen):

* InService == Desired: every instance the group wants is in service (none Pending, none missing);
* every InService instance has a Node, and that Node is Ready;
* no scaling activity of the group is in progress (any status other than Successful, Failed, Cancelled), except
  terminations: an instance on its way out (``Terminating:Wait`` while a termination lifecycle hook holds it, up to
  its heartbeat timeout) has left the group's capacity already (it is not InService, and a termination that
  decremented desired capacity asks for nothing; one that did not is followed by a launch, which counts).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence

from controller.model.asg import Activity, Group, instance_id_from_provider_id
from controller.model.node import NodeView

FINISHED_ACTIVITY_CODES = frozenset({"Successful", "Failed", "Cancelled"})
#: How EC2 Auto Scaling describes a termination activity ("Terminating EC2 instance: i-...").
TERMINATION = "Terminating EC2 instance"
MAX_NAMED = 3


@dataclasses.dataclass(frozen=True)
class SpotHealth:
    healthy: bool
    reason: str  # what was found, in words (why it is not healthy, or what makes it healthy)


def ready_instances(nodes: Mapping[str, NodeView]) -> frozenset[str]:
    """Instance ids of the Nodes that are Ready and not being deleted."""
    ready = set()
    for node in nodes.values():
        instance = instance_id_from_provider_id(node.provider_id)
        if instance and node.ready and not node.deleting:
            ready.add(instance)
    return frozenset(ready)


def in_progress(activities: Sequence[Activity]) -> list[Activity]:
    """The unfinished activities that can still change the group's capacity (every one but terminations)."""
    return [
        a
        for a in activities
        if a.status_code not in FINISHED_ACTIVITY_CODES and not a.description.startswith(TERMINATION)
    ]


def assess(group: Group | None, activities: Sequence[Activity], ready: Collection[str], name: str = "") -> SpotHealth:
    """The verdict for spot ASG ``group`` (None: AWS does not know ``name``)."""
    if group is None:
        return SpotHealth(False, f"spot ASG {name} does not exist (DescribeAutoScalingGroups does not return it)")
    if not group.launches:
        return SpotHealth(
            False,
            f"the Launch process of spot ASG {group.name} is suspended: it can launch nothing for a return to spot "
            f"(aws autoscaling resume-processes --auto-scaling-group-name {group.name} --scaling-processes Launch)",
        )
    in_service = group.in_service
    if len(in_service) != group.desired:
        states = sorted({i.lifecycle_state for i in group.instances if i.lifecycle_state != "InService"})
        other = f" (others: {', '.join(states)})" if states else ""
        return SpotHealth(
            False, f"spot ASG {group.name} has {len(in_service)} InService of desired {group.desired}{other}"
        )
    not_ready = sorted(i.instance_id for i in in_service if i.instance_id not in ready)
    if not_ready:
        named = ", ".join(not_ready[:MAX_NAMED]) + (" ..." if len(not_ready) > MAX_NAMED else "")
        return SpotHealth(
            False, f"{len(not_ready)} InService instance(s) of spot ASG {group.name} have no Ready Node: {named}"
        )
    running = in_progress(activities)
    if running:
        first = running[0]
        return SpotHealth(
            False,
            f"{len(running)} scaling activity(ies) of spot ASG {group.name} in progress "
            f"({first.status_code}: {first.description or first.activity_id})",
        )
    return SpotHealth(
        True,
        f"spot ASG {group.name}: InService {len(in_service)} = Desired {group.desired}, every spot Node Ready, "
        "no scaling activity in progress",
    )
