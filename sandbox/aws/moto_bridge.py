"""Every moto internal the sandbox touches, in one module (written against moto 5.2.5).

moto keeps Auto Scaling groups as `moto.autoscaling.models.FakeAutoScalingGroup` objects whose
`instance_states` list holds `InstanceState` objects (`.instance`, `.lifecycle_state`,
`.protected_from_scale_in`) wrapping `moto.ec2.models.instances.Instance` objects. moto launches and
terminates instances synchronously inside `FakeAutoScalingGroup.set_desired_capacity` and re-launches in
`replace_autoscaling_group_instances` (called when EC2 TerminateInstances hits a group member). The sandbox
takes those two decisions away from moto per group by shadowing both methods on the group object, and launches
and terminates through `EC2Backend.run_instances` / `terminate_instances` itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from moto.autoscaling.models import ASG_NAME_TAG, InstanceState, autoscaling_backends
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.exceptions import InvalidInstanceIdError
from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS
from moto.ec2.models.instances import InstanceBackend
from moto.events.utils import EventTemplateParser
from moto.moto_api._internal.models import moto_api_backend
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app

# moto's group object, its InstanceState and an EC2 instance; moto ships no type hints, so these are Any.
MotoGroup = Any
MotoInstanceState = Any

_SHADOW_MARK = "_spotguard_sandbox_adopted"


def account_id() -> str:
    """The account moto files requests under: MOTO_ACCOUNT_ID, else moto's default for unknown access keys."""
    return os.environ.get("MOTO_ACCOUNT_ID", DEFAULT_ACCOUNT_ID)


def configure_moto() -> None:
    """Process-wide moto settings: skip loading moto's ~1000 default AMIs (the sandbox needs none, and without
    them a reset takes milliseconds instead of a fraction of a second; an explicit environment value wins),
    look instances up without copying every reservation (below), and have EventBridge deliver whole events."""
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    InstanceBackend.get_instance = _get_instance  # type: ignore[method-assign,assignment]
    EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE = _WHOLE_EVENT


#: What EventBridge sends a target without an input transformer: the whole event, ``account`` included
#: (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-events-structure.html). moto 5's default template
#: leaves ``account`` out; ``<time>`` is moto's epoch number, which its SQS delivery turns into RFC 3339.
_WHOLE_EVENT = (
    '{"version": "0", "id": "<id>", "detail-type": "<detail-type>", "source": "<source>", "account": "<account>", '
    '"time": <time>, "region": "<region>", "resources": <resources>, "detail": <detail>}'
)


def _get_instance(backend: Any, instance_id: str) -> Any:
    """moto's `InstanceBackend.get_instance`, same answer, without `all_instances()`: that copies every reservation
    on each lookup, and each launch looks its instance up (to attach its root volume), so launching n instances into
    a group of n cost O(n^2): 2 s for 250 instances, the whole of a SetDesiredCapacity's answer time. Newest
    reservations first: a launch looks up the instance it is making, in the reservation made last, where a scan from
    the oldest passed every instance ever run (terminated ones stay): up to a third of the simulator's busy time in a
    burst benchmark round."""
    for reservation in reversed(list(backend.reservations.values())):
        for instance in reservation.instances:
            if instance.id == instance_id:
                return instance
    raise InvalidInstanceIdError(instance_id)


def moto_wsgi_app() -> Any:
    """moto's whole-API WSGI application, as `moto_server` serves it."""
    return DomainDispatcherApplication(create_backend_app)


class _QuietRequestHandler(MotoRequestHandler):
    """moto's werkzeug request handler (keeps headers with underscores), logging requests at DEBUG, not stderr."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        logging.getLogger("sandbox.aws.http").debug('"%s" %s %s', self.requestline, code, size)


def quiet_request_handler() -> type[Any]:
    return _QuietRequestHandler


def reset_all_backends() -> None:
    """What `POST /moto-api/reset` does: forget every resource in every service."""
    moto_api_backend.reset()


def groups(region: str) -> dict[str, MotoGroup]:
    """The region's Auto Scaling groups by name (moto's live dict: do not mutate)."""
    return autoscaling_backends[account_id()][region].autoscaling_groups


def adopt(
    group: MotoGroup, on_desired_set: Callable[[int | None], None], on_replace_requested: Callable[[], None]
) -> bool:
    """Take launching and terminating away from moto for this group; False if it was adopted before.

    `on_desired_set(new)` runs instead of moto's `set_desired_capacity` (UpdateAutoScalingGroup, DetachInstances,
    DeleteAutoScalingGroup, ... call it); `on_replace_requested()` runs instead of moto launching replacements when
    EC2 TerminateInstances removed a member.
    """
    if getattr(group, _SHADOW_MARK, False):
        return False
    group.set_desired_capacity = on_desired_set
    group.replace_autoscaling_group_instances = lambda _count, _tags: on_replace_requested()
    setattr(group, _SHADOW_MARK, True)
    return True


@dataclass(frozen=True)
class InstanceFacts:
    instance_id: str
    lifecycle_state: str
    availability_zone: str
    instance_type: str
    private_dns_name: str
    private_ip: str | None
    subnet_id: str | None
    launch_time: datetime | None
    protected_from_scale_in: bool
    ec2_state: str


def facts(state: MotoInstanceState) -> InstanceFacts:
    instance = state.instance
    return InstanceFacts(
        instance_id=instance.id,
        lifecycle_state=state.lifecycle_state,
        availability_zone=instance.placement.zone,
        instance_type=instance.instance_type,
        private_dns_name=instance.private_dns_name,
        private_ip=instance.private_ip,
        subnet_id=instance.subnet_id,
        launch_time=instance.launch_time,
        protected_from_scale_in=bool(state.protected_from_scale_in),
        ec2_state=instance.state,
    )


def instance_states(group: MotoGroup) -> list[MotoInstanceState]:
    return list(group.instance_states)


def find_state(group: MotoGroup, instance_id: str) -> MotoInstanceState | None:
    return next((s for s in group.instance_states if s.instance.id == instance_id), None)


def set_lifecycle_state(state: MotoInstanceState, lifecycle_state: str) -> None:
    state.lifecycle_state = lifecycle_state


def set_desired(group: MotoGroup, desired: int) -> None:
    """Change DesiredCapacity only (no launching or terminating)."""
    group.desired_capacity = desired


def _subnet_in_zone(group: MotoGroup, zone: str) -> str | None:
    if not group.vpc_zone_identifier:
        return None
    for subnet_id in group.vpc_zone_identifier.split(","):
        subnet = group.ec2_backend.get_subnet(subnet_id.strip())
        if subnet.availability_zone == zone:
            return subnet_id.strip()  # type: ignore[no-any-return]
    return None


_OFFERED_FIRST: set[tuple[str, str]] = set()


def _offered_first(region: str, instance_type: str) -> None:
    """Put ``instance_type``'s offerings first in moto's list for ``region`` (once per type).

    moto checks the type of every instance it runs with a linear scan of the region's 6,000-odd (type, zone)
    offerings that stops at the first match: m5.large is at index 528, 1.5 ms of a launch's 2.3 ms, and a burst's
    scale-outs launch hundreds. Same offerings, same answer; only the scan ends at once."""
    if (region, instance_type) in _OFFERED_FIRST:
        return
    for by_region in INSTANCE_TYPE_OFFERINGS.values():
        offerings = by_region.get(region)
        if offerings:
            offerings.sort(key=lambda offering: offering.get("InstanceType") != instance_type)  # stable
    _OFFERED_FIRST.add((region, instance_type))


def launch_instance(
    group: MotoGroup, zone: str, lifecycle_state: str, spot: bool, instance_type: str | None = None
) -> MotoInstanceState:
    """Run one EC2 instance from the group's launch template in `zone` (of `instance_type`, default the template's)
    and add it to the group."""
    instance_type = instance_type or group.instance_type
    _offered_first(group.ec2_backend.region_name, instance_type)
    tags = dict(group.get_propagated_tags())
    tags[ASG_NAME_TAG] = group.name
    tags.update(group.instance_tags)
    launch_template = None
    if group.ec2_launch_template is not None:
        launch_template = {"LaunchTemplateId": group.ec2_launch_template.id}
    reservation = group.ec2_backend.run_instances(
        group.image_id,
        1,
        group.user_data,
        group.security_groups,
        instance_type=instance_type,
        tags={"instance": tags},
        placement=zone,
        launch_config=group.launch_config,
        launch_template=launch_template,
        is_instance_type_default=False,
        associate_public_ip=group.launch_config.associate_public_ip_address if group.launch_config else None,
        subnet_id=_subnet_in_zone(group, zone),
        lifecycle="spot" if spot else None,
    )
    instance = reservation.instances[0]
    instance.autoscaling_group = group
    state = InstanceState(
        instance,
        lifecycle_state=lifecycle_state,
        protected_from_scale_in=group.new_instances_protected_from_scale_in,
        autoscaling_group=group,
    )
    group.instance_states.append(state)
    return state


def remove_and_terminate(group: MotoGroup | None, state: MotoInstanceState) -> None:
    """Take the instance out of its group (if still there) and terminate it in EC2.

    Removing first matters: terminating a group member through EC2 would otherwise count as a loss to replace.
    """
    if group is not None:
        group.instance_states = [s for s in group.instance_states if s is not state]
    instance = state.instance
    if instance.state != "terminated":
        instance.ec2_backend.terminate_instances([instance.id])


def group_tags(group: MotoGroup) -> dict[str, str]:
    return {tag["Key"]: tag.get("Value", "") for tag in group.tags}


def group_arn(group: MotoGroup) -> str:
    return group.arn  # type: ignore[no-any-return]


def group_sizes(group: MotoGroup) -> tuple[int, int, int]:
    """(min, max, desired), with moto's None read as 0."""
    return (group.min_size or 0, group.max_size or 0, group.desired_capacity or 0)


def group_instance_type(group: MotoGroup) -> str:
    return group.instance_type  # type: ignore[no-any-return]


def group_zones(group: MotoGroup) -> list[str]:
    return list(group.availability_zones)


# ---- what a group is configured to do (plain values, read under the simulator's lock) ----

LAUNCHING_TRANSITION = "autoscaling:EC2_INSTANCE_LAUNCHING"
TERMINATING_TRANSITION = "autoscaling:EC2_INSTANCE_TERMINATING"


@dataclass(frozen=True)
class HookConfig:
    """A lifecycle hook as PutLifecycleHook stored it (moto defaults: HeartbeatTimeout 3600, DefaultResult ABANDON,
    as the API Reference's PutLifecycleHook documents)."""

    name: str
    transition: str
    heartbeat_timeout: int
    default_result: str


def mixed_instances_policy(group: MotoGroup) -> dict[str, Any] | None:
    policy = group.mixed_instances_policy
    return policy if policy else None


def restore_mixed_instances_policy(group: MotoGroup, policy: dict[str, Any] | None) -> None:
    """Put back a policy moto's UpdateAutoScalingGroup dropped (moto sets it to the request's, None when absent)."""
    group.mixed_instances_policy = policy


def termination_policies(group: MotoGroup) -> tuple[str, ...]:
    return tuple(group.termination_policies or ("Default",))


def set_termination_policies(group: MotoGroup, policies: list[str]) -> None:
    group.termination_policies = list(policies) or ["Default"]


def suspended_processes(group: MotoGroup) -> frozenset[str]:
    return frozenset(p["ProcessName"] for p in group.suspended_processes)


def lifecycle_hooks(group: MotoGroup) -> list[HookConfig]:
    hooks = group.autoscaling_backend.lifecycle_hooks.values()
    return [
        HookConfig(
            name=hook.name,
            transition=hook.lifecycle_transition,
            heartbeat_timeout=int(hook.heartbeat_timeout),
            default_result=str(hook.default_result).upper(),
        )
        for hook in hooks
        if hook.auto_scaling_group_name == group.name
    ]


def health_check_grace_period(group: MotoGroup) -> int:
    return int(group.health_check_grace_period or 0)


def launch_configuration_name(group: MotoGroup) -> str | None:
    return getattr(group, "launch_configuration_name", None) if group.launch_config is not None else None


def template_exists(group: MotoGroup) -> bool:
    """False once the group's launch template was deleted from EC2 (the group keeps pointing at it)."""
    template = group.ec2_launch_template
    return template is None or template.id in group.ec2_backend.launch_templates


def current_template(group: MotoGroup) -> tuple[str, int] | None:
    """(launch template id, version number) the group launches from now; None for a launch configuration group."""
    template = group.ec2_launch_template
    if template is None or not template_exists(group):
        return None
    return template.id, template.get_version(group.launch_template_version).number


def template_id(group: MotoGroup) -> str | None:
    template = group.ec2_launch_template
    return None if template is None else str(template.id)


def image_id(group: MotoGroup) -> str:
    try:
        return str(group.image_id)
    except Exception:  # the template is gone
        return ""


def template_market(group: MotoGroup) -> str | None:
    """``spot`` when the group's launch template requests spot (InstanceMarketOptions.MarketType), else None."""
    template = group.ec2_launch_template
    if template is None or not template_exists(group):
        return None
    data = template.get_version(group.launch_template_version).data or {}
    options = data.get("InstanceMarketOptions") or {}
    return "spot" if str(options.get("MarketType", "")).lower() == "spot" else None


def subnet_in_zone(group: MotoGroup, zone: str) -> str | None:
    return _subnet_in_zone(group, zone)


_ZONES_OFFERING: dict[str, dict[str, frozenset[str]]] = {}


def zones_offering(region: str, instance_type: str) -> frozenset[str]:
    """The zones of ``region`` where EC2 offers ``instance_type`` (moto's copy of DescribeInstanceTypeOfferings)."""
    if region not in _ZONES_OFFERING:
        by_type: dict[str, set[str]] = {}
        for offering in INSTANCE_TYPE_OFFERINGS["availability-zone"].get(region, []):
            by_type.setdefault(offering["InstanceType"], set()).add(offering["Location"])
        _ZONES_OFFERING[region] = {t: frozenset(zones) for t, zones in by_type.items()}
    return _ZONES_OFFERING[region].get(instance_type, frozenset())
