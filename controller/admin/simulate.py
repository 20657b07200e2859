"""``spotguard simulate rebalance | interruption NODE``: write a notice on a Node exactly as nodewatch would.

nodewatch records a new notice with a merge patch of its Node's annotations: the notice's values, the
first-seen time, the removal of an earlier ``-cleared`` mark, and the instance id and zone (which it reads
from IMDS; here they come from the Node's ``spec.providerID``, ``aws:///<zone>/<instance-id>``). The keys
and formats are nodewatch's own (``nodewatch.annotations``). The controller then acts as on a real notice:
use this on a test cluster, or to rehearse on one node.
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
def rebalance(node: str, target: Target, output: str) -> None:
    """Annotate NODE with a rebalance recommendation noticed now. Exit status 1 if there is no such node."""
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
def interruption(node: str, target: Target, output: str, action: str, delay: float) -> None:
    """Annotate NODE with a spot interruption notice seen now. Exit status 1 if there is no such node."""

    def build(now: dt.datetime, instance_id: str | None, zone: str | None) -> dict[str, str | None]:
        return interruption_changes(now, action, delay, instance_id, zone)

    _annotate(target, node, build, f"spot interruption notice ({action})", output)
