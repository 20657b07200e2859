"""``spotguard simulate rebalance | interruption NODE``: write a notice on a Node exactly as nodewatch would, or
(``--via queue``) publish the EC2 event AWS sends for it.

nodewatch records a new notice with a merge patch of its Node's annotations: the notice's values, the
first-seen time, the removal of an earlier ``-cleared`` mark, and the instance id and zone (which it reads
from IMDS; here they come from the Node's ``spec.providerID``, ``aws:///<zone>/<instance-id>``). The keys
and formats are nodewatch's own (``nodewatch.annotations``). The controller then acts as on a real notice:
use this on a test cluster, or to rehearse on one node.

``--via queue`` publishes the event EC2 would send through EventBridge (``put_events`` on the default bus: the rules
of docs/install.md deliver it to the controller's queue). AWS accepts ``aws.ec2`` events from EC2 only, so against
AWS itself give ``--queue-url`` (``SPOT_GUARD_QUEUE_URL``): the event is then sent straight to the queue, as
EventBridge would deliver it.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import click

from controller.admin.context import (
    Problem,
    Target,
    output_option,
    parse_duration_option,
    reported_errors,
    services,
    target_options,
)
from controller.admin.output import emit
from nodewatch import annotations as contract

if TYPE_CHECKING:
    from controller.adapters.kube import Kube

SPOT_LABELS = {"eks.amazonaws.com/capacityType": "SPOT", "node.kubernetes.io/lifecycle": "spot"}
#: AWS sends the interruption notice two minutes before it acts.
DEFAULT_INTERRUPTION_DELAY = "2m"


def identity_from_provider_id(provider_id: str) -> tuple[str | None, str | None]:
    """``aws:///us-east-1a/i-0123`` -> (``i-0123``, ``us-east-1a``); (None, None) if it is not an EC2 one."""
    if not provider_id.startswith("aws://"):
        return None, None
    parts = [p for p in provider_id[len("aws://") :].split("/") if p]
    instance = parts[-1] if parts and parts[-1].startswith("i-") else None
    zone = parts[-2] if instance and len(parts) >= 2 else None
    return instance, zone


def rebalance_changes(now: dt.datetime, instance_id: str | None, zone: str | None) -> dict[str, str | None]:
    """The merge patch nodewatch writes when IMDS first shows a rebalance recommendation noticed at ``now``."""
    stamp = contract.format_time(now)
    changes: dict[str, str | None] = {
        contract.REBALANCE_NOTICE_TIME: stamp,
        contract.REBALANCE_FIRST_SEEN: stamp,
        contract.REBALANCE_CLEARED: None,
    }
    return {**changes, **_identity(instance_id, zone)}


def interruption_changes(
    now: dt.datetime, action: str, delay_seconds: float, instance_id: str | None, zone: str | None
) -> dict[str, str | None]:
    """The merge patch nodewatch writes when IMDS first shows a spot interruption notice (``action`` at now+delay)."""
    if action not in contract.INTERRUPTION_ACTIONS:
        raise ValueError(f"interruption action {action!r}: expected one of {sorted(contract.INTERRUPTION_ACTIONS)}")
    changes: dict[str, str | None] = {
        contract.INTERRUPTION_ACTION: action,
        contract.INTERRUPTION_TIME: contract.format_time(now + dt.timedelta(seconds=delay_seconds)),
        contract.INTERRUPTION_FIRST_SEEN: contract.format_time(now),
        contract.INTERRUPTION_CLEARED: None,
    }
    return {**changes, **_identity(instance_id, zone)}


def _identity(instance_id: str | None, zone: str | None) -> dict[str, str | None]:
    identity: dict[str, str | None] = {}
    if instance_id:
        identity[contract.INSTANCE_ID] = instance_id
    if zone:
        identity[contract.AVAILABILITY_ZONE] = zone
    return identity


def _read_node(kube: Kube, name: str) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    try:
        return kube.request("GET", f"/api/v1/nodes/{name}")
    except ApiException as error:
        if error.status == 404:
            raise Problem(f"node {name} not found") from error
        raise


def _annotate(target: Target, node_name: str, build: Any, kind: str, output: str) -> None:
    from controller.adapters.kube import MERGE_PATCH

    svc = services()
    with reported_errors(f"annotating node {node_name}"):
        kube = svc.connect(target)
        node = _read_node(kube, node_name)
        meta = node.get("metadata") or {}
        labels = meta.get("labels") or {}
        instance_id, zone = identity_from_provider_id(str((node.get("spec") or {}).get("providerID") or ""))
        if instance_id is None:
            click.echo(
                f"Warning: node {node_name} has no EC2 spec.providerID (aws:///<zone>/<instance-id>); writing the "
                "notice without instance id and zone (the controller refuses a node it cannot map to an instance)",
                err=True,
            )
        if not any(labels.get(key) == value for key, value in SPOT_LABELS.items()):
            click.echo(
                f"Warning: node {node_name} is not labelled as a spot node; nodewatch runs on spot nodes only", err=True
            )
        changes = build(svc.clock.now(), instance_id, zone)
        kube.request(
            "PATCH", f"/api/v1/nodes/{node_name}", body={"metadata": {"annotations": changes}}, content_type=MERGE_PATCH
        )
    written = {k: v for k, v in changes.items() if v is not None}
    removed = sorted(k for k, v in changes.items() if v is None and k in (meta.get("annotations") or {}))

    def render() -> str:
        lines = [f"node/{node_name} annotated as nodewatch would on a {kind}:"]
        lines += [f"  {key}={value}" for key, value in written.items()]
        lines += [f"  {key} removed" for key in removed]
        return "\n".join(lines)

    emit({"node": node_name, "notice": kind, "annotations": written, "removed": removed}, output, render)


def _publish(
    target: Target, node_name: str, kind: str, *, queue_url: str, output: str, action: str = "terminate"
) -> None:
    """Publish the EC2 event of a notice of ``node_name``'s instance (see the module docs)."""
    import uuid

    from controller.model.ec2_event import event_body, put_events_entry

    svc = services()
    with reported_errors(f"publishing a {kind} of node {node_name}"):
        node = _read_node(svc.connect(target), node_name)
        instance_id, _zone = identity_from_provider_id(str((node.get("spec") or {}).get("providerID") or ""))
        if instance_id is None:
            raise Problem(
                f"node {node_name} has no EC2 spec.providerID (aws:///<zone>/<instance-id>): no event names it"
            )
        account = str(svc.aws("sts").get_caller_identity()["Account"])
        events = svc.aws("events")
        region = str(events.meta.region_name)
        entry = put_events_entry(kind, instance_id, region=region, account=account, time=svc.clock.now(), action=action)
        if queue_url:
            body = event_body(entry, region=region, account=account, event_id=str(uuid.uuid4()))
            svc.aws("sqs").send_message(QueueUrl=queue_url, MessageBody=body)
            where = f"queue {queue_url}"
        else:
            answer = events.put_events(Entries=[entry])
            if answer.get("FailedEntryCount"):
                failed = answer["Entries"][0]
                raise Problem(
                    f"EventBridge refused the event: {failed.get('ErrorCode')}: {failed.get('ErrorMessage')}; "
                    "against AWS, give --queue-url to send it straight to the controller's queue"
                )
            where = "EventBridge's default bus"

    def render() -> str:
        return f"{entry['DetailType']} of instance {instance_id} (node/{node_name}) published to {where}"

    emit({"node": node_name, "instanceId": instance_id, "event": entry["DetailType"], "to": where}, output, render)


def _via_options(command: Any) -> Any:
    command = click.option(
        "--queue-url",
        envvar="SPOT_GUARD_QUEUE_URL",
        default="",
        help="With --via queue: send the event straight to this SQS queue [$SPOT_GUARD_QUEUE_URL] instead of "
        "publishing it with put_events.",
    )(command)
    return click.option(
        "--via",
        type=click.Choice(["annotation", "queue"]),
        default="annotation",
        show_default=True,
        help="annotation: write nodewatch's annotations; queue: publish the EC2 event (EventBridge to SQS).",
    )(command)


def _complete_nodes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of spot node names (best effort: nothing if the cluster is unreachable)."""
    try:
        target = Target(kubeconfig=ctx.params.get("kubeconfig"), context=ctx.params.get("context"))
        kube = services(ctx).connect(target)
        names: set[str] = set()
        for key, value in SPOT_LABELS.items():
            page = kube.request("GET", "/api/v1/nodes", query={"labelSelector": f"{key}={value}"})
            names.update(item["metadata"]["name"] for item in page.get("items") or [])
        return sorted(n for n in names if n.startswith(incomplete))
    except Exception:
        return []


@click.group("simulate")
def simulate() -> None:
    """Write a spot notice on a Node as nodewatch would (rehearsals and tests; the controller acts on it)."""


@simulate.command("rebalance")
@click.argument("node", shell_complete=_complete_nodes)
@target_options
@output_option
@_via_options
def rebalance(node: str, target: Target, output: str, via: str, queue_url: str) -> None:
    """Annotate NODE with a rebalance recommendation noticed now (or publish its EC2 event). Exit status 1 if there
    is no such node."""
    if via == "queue":
        _publish(target, node, "rebalance", queue_url=queue_url, output=output)
        return
    _annotate(target, node, rebalance_changes, "rebalance recommendation", output)


@simulate.command("interruption")
@click.argument("node", shell_complete=_complete_nodes)
@target_options
@output_option
@click.option(
    "--action",
    type=click.Choice(sorted(contract.INTERRUPTION_ACTIONS)),
    default="terminate",
    show_default=True,
    help="What AWS is about to do to the instance.",
)
@click.option(
    "--in",
    "delay",
    callback=parse_duration_option,
    default=DEFAULT_INTERRUPTION_DELAY,
    show_default=True,
    help="When the action happens, from now (90s, 2m).",
)
@_via_options
def interruption(  # noqa: PLR0917
    node: str, target: Target, output: str, action: str, delay: float, via: str, queue_url: str
) -> None:
    """Annotate NODE with a spot interruption notice seen now (or publish its EC2 event: the action comes two
    minutes later, whatever --in says). Exit status 1 if there is no such node."""
    if via == "queue":
        _publish(target, node, "interruption", queue_url=queue_url, output=output, action=action)
        return

    def build(now: dt.datetime, instance_id: str | None, zone: str | None) -> dict[str, str | None]:
        return interruption_changes(now, action, delay, instance_id, zone)

    _annotate(target, node, build, f"spot interruption notice ({action})", output)
