"""``spotguard events list | describe | delete | cleanup``: the SpotGuardFallbackEvents (SGFE) by hand.

Objects are read as raw JSON (``-o json`` prints them as the API server has them, in a kubectl-style
``List``). Deletes carry preconditions (uid, and for ``cleanup`` also the resourceVersion judged), so an
event that changed since it was read is never deleted by mistake.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import sys
from collections.abc import Mapping
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
from controller.admin.output import age, emit, key_values, parse_timestamp, progress, rfc3339, table

if TYPE_CHECKING:
    from controller.adapters.kube import Kube

GROUP = "aws.amazon.com"
VERSION = "v1"
PLURAL = "spotguardfallbackevents"
KIND = "SpotGuardFallbackEvent"
#: The CRD's status.phase enum (controller.model.sgfe.Phase.ALL; a unit test keeps them equal).
PHASES = ("Pending", "Monitoring", "ReadyForScaleDown", "ScalingDown", "Completed", "Failed")
UNFINISHED = ("Pending", "Monitoring", "ReadyForScaleDown", "ScalingDown")
#: The lifecycle controller's bookkeeping on each SGFE (controller.model.progress); its ``finishedAt`` is
#: when the event reached Completed, from which the controller's own TTL counts too.
LIFECYCLE_ANNOTATION = "spotguard.io/lifecycle"
DEFAULT_TTL = "24h"


def events_path(namespace: str | None, name: str = "") -> str:
    """The SGFE collection in ``namespace`` (all namespaces if None), or one event."""
    base = f"/apis/{GROUP}/{VERSION}"
    base += f"/namespaces/{namespace}/{PLURAL}" if namespace else f"/{PLURAL}"
    return f"{base}/{name}" if name else base


@dataclasses.dataclass(frozen=True)
class EventView:
    """What the commands show of one SGFE (``raw`` is the whole object)."""

    name: str
    namespace: str
    uid: str
    resource_version: str
    phase: str
    message: str
    spot_asg: str
    on_demand_asg: str
    on_demand_node: str
    on_demand_instance: str
    fallback_at: dt.datetime | None
    raw: Mapping[str, Any]

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> EventView:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        return cls(
            name=str(meta.get("name", "")),
            namespace=str(meta.get("namespace", "")),
            uid=str(meta.get("uid", "")),
            resource_version=str(meta.get("resourceVersion", "")),
            phase=str(status.get("phase") or "Pending"),
            message=str(status.get("message", "")),
            spot_asg=str(spec.get("spotASGName", "")),
            on_demand_asg=str(spec.get("onDemandASGName", "")),
            on_demand_node=str(spec.get("onDemandNodeName", "")),
            on_demand_instance=str(spec.get("onDemandInstanceID", "")),
            fallback_at=parse_timestamp(spec.get("timestamp")) or parse_timestamp(meta.get("creationTimestamp")),
            raw=obj,
        )

    @property
    def finished_at(self) -> dt.datetime | None:
        """When it reached Completed: the lifecycle record's ``finishedAt``, else the fallback time (as the
        controller counts its TTL)."""
        annotations = (self.raw.get("metadata") or {}).get("annotations") or {}
        try:
            record = json.loads(annotations.get(LIFECYCLE_ANNOTATION) or "{}")
        except ValueError:
            record = {}
        finished = parse_timestamp(record.get("finishedAt")) if isinstance(record, dict) else None
        return finished or self.fallback_at


def expired(event: EventView, ttl_seconds: float, now: dt.datetime) -> bool:
    """A Completed event whose completion lies more than ``ttl_seconds`` back (``cleanup`` deletes these)."""
    finished = event.finished_at
    return event.phase == "Completed" and finished is not None and (now - finished).total_seconds() > ttl_seconds


def list_events(kube: Kube, namespace: str | None) -> list[EventView]:
    """Every SGFE in ``namespace`` (all if None), following ``continue`` tokens, sorted by namespace, name."""
    from controller.adapters.kube import list_all  # the CLI loads the Kubernetes client only when it needs it

    items = list_all(kube, events_path(namespace), timeout=None)
    return sorted((EventView.from_json(item) for item in items), key=lambda e: (e.namespace, e.name))


def find_event(kube: Kube, namespace: str, name: str) -> EventView | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return EventView.from_json(kube.request("GET", events_path(namespace, name)))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def kubernetes_events(kube: Kube, namespace: str, name: str) -> list[Mapping[str, Any]]:
    """The core/v1 Events about one SGFE, oldest first."""
    selector = f"involvedObject.name={name},involvedObject.kind={KIND}"
    items = kube.request("GET", f"/api/v1/namespaces/{namespace}/events", query={"fieldSelector": selector})
    return sorted(items.get("items") or [], key=lambda e: _event_time(e) or dt.datetime.min.replace(tzinfo=dt.UTC))


#: The reason of observe-only mode's Events (controller.observability.would_act.REASON; a unit test keeps them equal).
WOULD_ACT_REASON = "SpotGuardWouldAct"


def would_act_events(kube: Kube) -> list[Mapping[str, Any]]:
    """Observe-only mode's Events in every namespace (on Nodes, and on the controller's Lease), oldest first; the
    road's own Events of that time say why (their messages start with "observe-only")."""
    items = kube.request("GET", "/api/v1/events", query={"fieldSelector": f"reason={WOULD_ACT_REASON}"})
    return sorted(items.get("items") or [], key=lambda e: _event_time(e) or dt.datetime.min.replace(tzinfo=dt.UTC))


def _event_time(event: Mapping[str, Any]) -> dt.datetime | None:
    meta = event.get("metadata") or {}
    return (
        parse_timestamp(event.get("lastTimestamp"))
        or parse_timestamp(event.get("eventTime"))
        or parse_timestamp(meta.get("creationTimestamp"))
    )


def _first_time(event: Mapping[str, Any]) -> dt.datetime | None:
    return parse_timestamp(event.get("firstTimestamp")) or _event_time(event)


def delete_event(kube: Kube, event: EventView, *, exact_version: bool) -> None:
    """Delete exactly this event (uid; with ``exact_version`` also unchanged since read); 409 if it changed."""
    preconditions = {"uid": event.uid} if event.uid else {}
    if exact_version and event.resource_version:
        preconditions["resourceVersion"] = event.resource_version
    body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": preconditions} if preconditions else None
    kube.request("DELETE", events_path(event.namespace, event.name), body=body)


def _complete_event_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of event names (best effort: nothing if the cluster is unreachable)."""
    try:
        from controller.admin.context import DEFAULT_NAMESPACE

        target = Target(
            kubeconfig=ctx.params.get("kubeconfig"),
            context=ctx.params.get("context"),
            namespace=ctx.params.get("namespace") or DEFAULT_NAMESPACE,
        )
        kube = services(ctx).connect(target)
        return [e.name for e in list_events(kube, target.namespace) if e.name.startswith(incomplete)]
    except Exception:
        return []


# -- commands --------------------------------------------------------------------------------------------


@click.group("events")
def events() -> None:
    """SpotGuardFallbackEvents (sgfe): list, describe, delete, clean up."""


@events.command("list")
@target_options
@output_option
@click.option("-A", "--all-namespaces", is_flag=True, help="List the events of every namespace.")
@click.option(
    "--phase",
    "phases",
    multiple=True,
    type=click.Choice(PHASES),
    help="Only events in this phase (repeatable).",
)
def list_command(target: Target, output: str, all_namespaces: bool, phases: tuple[str, ...]) -> None:
    """List the fallback events, newest first.

    Exit status 0, also when there is none (a message on stderr says so).
    """
    svc = services()
    namespace = None if all_namespaces else target.namespace
    with reported_errors("listing SpotGuardFallbackEvents"):
        found = list_events(svc.connect(target), namespace)
    if phases:
        found = [e for e in found if e.phase in phases]
    oldest = dt.datetime.min.replace(tzinfo=dt.UTC)
    found.sort(key=lambda e: (e.fallback_at or oldest, e.name), reverse=True)
    now = svc.clock.now()
    data = {"apiVersion": "v1", "kind": "List", "items": [dict(e.raw) for e in found]}

    def render() -> str:
        if not found:
            where = "any namespace" if all_namespaces else f"namespace {target.namespace}"
            click.echo(f"No SpotGuardFallbackEvents found in {where}.", err=True)
            return ""
        headers = ["name", "phase", "spot asg", "on-demand asg", "on-demand node", "age"]
        rows: list[list[object]] = [
            [e.name, e.phase, e.spot_asg, e.on_demand_asg, e.on_demand_node, age(e.fallback_at, now)] for e in found
        ]
        if all_namespaces:
            headers.insert(0, "namespace")
            rows = [[e.namespace, *row] for e, row in zip(found, rows, strict=True)]
        return table(headers, rows)

    emit(data, output, render)


@events.command("describe")
@click.argument("name", shell_complete=_complete_event_names)
@target_options
@output_option
def describe_command(name: str, target: Target, output: str) -> None:
    """Show one event: spec, status, age and the Kubernetes Events about it.

    Exit status 1 if there is no such event.
    """
    svc = services()
    with reported_errors(f"reading SpotGuardFallbackEvent {target.namespace}/{name}"):
        kube = svc.connect(target)
        event = find_event(kube, target.namespace, name)
        if event is None:
            raise Problem(f"SpotGuardFallbackEvent {target.namespace}/{name} not found")
        about = kubernetes_events(kube, target.namespace, name)
    now = svc.clock.now()
    meta = event.raw.get("metadata") or {}
    data: dict[str, Any] = {
        "name": event.name,
        "namespace": event.namespace,
        "age": age(event.fallback_at, now),
        "spec": dict(event.raw.get("spec") or {}),
        "status": dict(event.raw.get("status") or {}),
        "annotations": dict(meta.get("annotations") or {}),
        "events": [
            {
                "type": e.get("type", ""),
                "reason": e.get("reason", ""),
                "message": e.get("message", ""),
                "count": int(e.get("count") or 1),
                "firstTimestamp": _stamp(_first_time(e)),
                "lastTimestamp": _stamp(_event_time(e)),
                "source": ((e.get("source") or {}).get("component") or e.get("reportingComponent") or ""),
            }
            for e in about
        ],
    }

    def render() -> str:
        status = event.raw.get("status") or {}
        spec = event.raw.get("spec") or {}
        lines = key_values(
            [
                ("Name", event.name),
                ("Namespace", event.namespace),
                ("Phase", event.phase),
                ("Message", event.message),
                ("Age", data["age"]),
                ("Fallback At", spec.get("timestamp", "")),
                ("Spot ASG", event.spot_asg),
                ("On-Demand ASG", event.on_demand_asg),
                ("On-Demand Node", event.on_demand_node),
                ("On-Demand Instance", event.on_demand_instance),
                ("Minimum Wait", spec.get("minimumWaitDuration", "")),
                ("Spot Capacity Restored", bool(status.get("spotCapacityRestored", False))),
                ("Scale-Down Initiated", bool(status.get("scaleDownInitiated", False))),
                ("Spot Healthy Since", status.get("spotHealthySince", "")),
            ]
        )
        annotations = data["annotations"]
        if annotations:
            lines += "\nAnnotations:\n" + "\n".join(f"  {k}: {v}" for k, v in sorted(annotations.items()))
        if not about:
            return lines + "\nEvents:  <none>"
        rows = []
        for e, shown in zip(about, data["events"], strict=True):
            when = age(_event_time(e), now)
            if shown["count"] > 1:
                when = f"{when} (x{shown['count']} over {age(_first_time(e), now)})"
            rows.append([shown["type"], shown["reason"], when, shown["source"], shown["message"]])
        events_table = table(["type", "reason", "age", "from", "message"], rows)
        return lines + "\nEvents:\n" + "\n".join("  " + line for line in events_table.splitlines())

    emit(data, output, render)


@events.command("delete")
@click.argument("name", shell_complete=_complete_event_names)
@target_options
@output_option
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def delete_command(name: str, target: Target, output: str, yes: bool) -> None:
    """Delete one event (asks first unless --yes).

    Deleting an unfinished event stops Spot Guard from returning its on-demand capacity to spot: scale the
    on-demand ASG down yourself afterwards. Exit status 1 if there is no such event or you say no.
    """
    svc = services()
    with reported_errors(f"deleting SpotGuardFallbackEvent {target.namespace}/{name}"):
        kube = svc.connect(target)
        event = find_event(kube, target.namespace, name)
        if event is None:
            raise Problem(f"SpotGuardFallbackEvent {target.namespace}/{name} not found")
        if event.phase in UNFINISHED:
            click.echo(
                f"Warning: {name} is {event.phase}: Spot Guard is still acting on it. Once it is deleted, nothing "
                f"scales on-demand node {event.on_demand_node or '<unknown>'} in {event.on_demand_asg or '<unknown>'} "
                "back down: do that yourself.",
                err=True,
            )
        if not yes:
            click.confirm(f"Delete SpotGuardFallbackEvent {target.namespace}/{name} ({event.phase})?", abort=True)
        delete_event(kube, event, exact_version=False)
    emit(
        {"name": name, "namespace": target.namespace, "phase": event.phase, "deleted": True},
        output,
        lambda: f'spotguardfallbackevent.{GROUP} "{name}" deleted',
    )


@events.command("would")
@target_options
@output_option
@click.option("--node", default=None, help="Only what would have been done to this Node.")
@click.option("--asg", default=None, help="Only what would have been done to this Auto Scaling group.")
def would_command(target: Target, output: str, node: str | None, asg: str | None) -> None:
    """What a controller in observe-only mode (SPOT_GUARD_DRY_RUN) would have done, oldest first.

    Its Events with reason SpotGuardWouldAct, in every namespace: scale-ups and scale-downs, terminations, taints,
    cordons, evictions, SpotGuardFallbackEvents it would have created. Exit status 0, also when there is none.
    """
    svc = services()
    with reported_errors("listing the observe-only Events"):
        found = would_act_events(svc.connect(target))
    if node:
        found = [e for e in found if (e.get("involvedObject") or {}).get("name") == node]
    if asg:
        group = re.compile(rf"\bASG {re.escape(asg)}(?![\w.-])")
        found = [e for e in found if group.search(str(e.get("message", "")))]
    now = svc.clock.now()
    data = {"apiVersion": "v1", "kind": "List", "items": [dict(e) for e in found]}

    def render() -> str:
        if not found:
            click.echo("No observe-only decisions found (is SPOT_GUARD_DRY_RUN=true on the controller?).", err=True)
            return ""
        rows: list[list[object]] = []
        for event in found:
            about = event.get("involvedObject") or {}
            action, _, message = str(event.get("message", "")).partition(": ")
            rows.append(
                [
                    age(_event_time(event), now),
                    f"{str(about.get('kind', '')).lower()}/{about.get('name', '')}",
                    action,
                    event.get("count", 1),
                    message,
                ]
            )
        return table(["last seen", "object", "action", "count", "would"], rows)

    emit(data, output, render)


@events.command("cleanup")
@target_options
@output_option
@click.option(
    "--ttl",
    callback=parse_duration_option,
    default=DEFAULT_TTL,
    show_default=True,
    help="Delete Completed events that completed longer ago than this (24h, 90m, 3600).",
)
@click.option("--dry-run", is_flag=True, help="Only show what would be deleted.")
@click.option("-A", "--all-namespaces", is_flag=True, help="Clean up every namespace.")
def cleanup_command(target: Target, output: str, ttl: float, dry_run: bool, all_namespaces: bool) -> None:
    """Delete Completed events older than a TTL (the controller does this too; this catches up by hand).

    Age counts from when the event completed (the lifecycle record's finishedAt), else from the fallback.
    Pending, Monitoring, ScalingDown and Failed events are never touched. Exit status 1 if a deletion failed.
    """
    from kubernetes.client.exceptions import ApiException

    svc = services()
    now = svc.clock.now()
    with reported_errors("listing SpotGuardFallbackEvents"):
        kube = svc.connect(target)
        found = list_events(kube, None if all_namespaces else target.namespace)
    candidates = [e for e in found if expired(e, ttl, now)]
    results: list[dict[str, Any]] = []
    failures = 0
    if dry_run or not candidates:
        results = [_cleanup_row(e, now, "would delete" if dry_run else "deleted") for e in candidates]
    else:
        progress(f"Deleting {len(candidates)} Completed SpotGuardFallbackEvents...")
        with click.progressbar(candidates, label="deleting", file=sys.stderr) as bar:
            for event in bar:
                try:
                    delete_event(kube, event, exact_version=True)
                    result = "deleted"
                except ApiException as error:
                    if error.status == 404:
                        result = "already gone"
                    elif error.status == 409:
                        result = "changed since read; kept"
                    else:
                        failures += 1
                        result = f"failed: HTTP {error.status} {error.reason}"
                results.append(_cleanup_row(event, now, result))
    data = {
        "dryRun": dry_run,
        "ttl": _ttl_text(ttl),
        "examined": len(found),
        "items": results,
    }

    def render() -> str:
        verb = "would delete" if dry_run else "deleted"
        if not results:
            return f"No Completed SpotGuardFallbackEvents older than {_ttl_text(ttl)} ({len(found)} examined)."
        headers = ["namespace", "name", "completed", "result"]
        body = table(headers, [[r["namespace"], r["name"], r["completedAge"], r["result"]] for r in results])
        done = sum(1 for r in results if r["result"] in ("deleted", "would delete"))
        return f"{body}\n{done} of {len(found)} events {verb} (Completed more than {_ttl_text(ttl)} ago)."

    emit(data, output, render)
    if failures:
        raise Problem(f"{failures} of {len(candidates)} deletions failed")


def _cleanup_row(event: EventView, now: dt.datetime, result: str) -> dict[str, Any]:
    finished = event.finished_at
    return {
        "namespace": event.namespace,
        "name": event.name,
        "completedAt": _stamp(finished),
        "completedAge": age(finished, now),
        "result": result,
    }


def _stamp(moment: dt.datetime | None) -> str:
    return rfc3339(moment) if moment is not None else ""


def _ttl_text(seconds: float) -> str:
    from controller.config import format_duration

    return format_duration(seconds)
