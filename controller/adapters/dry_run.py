"""Observe-only mode's seam (``SPOT_GUARD_DRY_RUN=true``): the controller's AWS and Kubernetes adapters, with every
change turned into a would-be change kept in memory.

Everything up to the first change is real: the reads of AWS and of the API server, the detection, the grouping, the
batching, and every decision, made against the real groups. The cut is here, under the whole controller and above
the wire, so that no caller has an ``if dry_run`` and nothing can slip past it:

* ``DryRunAutoScaling`` (for ``adapters.aws.AutoScaling``): ``SetDesiredCapacity`` and
  ``TerminateInstanceInAutoScalingGroup`` are never sent (the Auto Scaling API has no DryRun parameter). Each is
  checked as AWS would check it (the group exists and the value lies within MinSize..MaxSize; the instance is in a
  group), announced, and kept: the group's reads show the would-be desired capacity (the real one plus the
  would-be changes) and leave out the instances it would have terminated.
* ``DryRunKube`` (for ``adapters.kube.Kube``): every write except Events and Leases is sent with ``dryRun=All``
  (https://kubernetes.io/docs/reference/using-api/api-concepts/#dry-run): the API server authorizes, admits and
  validates it as it would the real write (RBAC, the ValidatingAdmissionPolicies, a PodDisruptionBudget for an
  eviction, the CRD's schema) and persists nothing. The would-be result is kept: reads and watches of a Node
  show its would-be patches on top of the real object, an evicted pod is left out of the pod lists, and a
  would-be SpotGuardFallbackEvent is listed and read like a real one.

So the road proceeds as it would: after a would-be scale-up the record says so and the group's desired capacity
shows it, but the capacity check reads instances that never come (nothing was asked for): a replacement falls
back at the capacity-check deadline, and its on-demand request ends the same way (``Failed``), each step
announced once. A real run could have fallen back sooner, on a failed launch activity.

The would-be state lives in this process only: a new leader (or a restart) starts from the real state again and
announces the notices still on the Nodes afresh. The Lease (election, pause switch) and Events are real writes.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller.adapters.aws import AutoScaling, AwsError
from controller.adapters.kube import JSON, Kube
from controller.adapters.sqs import EventQueue, Message
from controller.model.asg import Group, Membership
from controller.model.record import ANNOTATION as RECORD_ANNOTATION
from controller.model.record import FINALIZER
from controller.model.would_act import Action, WouldAct

log = logging.getLogger(__name__)

Announce = Callable[[WouldAct], None]

#: Writes made for real in observe-only mode: the controller's Events and its Lease (election and pause switch).
_REAL_WRITES = (
    re.compile(r"/api/v1/namespaces/[^/]+/events(/[^/]+)?"),
    re.compile(r"/apis/events\.k8s\.io/.*"),
    re.compile(r"/apis/coordination\.k8s\.io/v1/namespaces/[^/]+/leases(/[^/]+)?"),
)
_NODE = re.compile(r"/api/v1/nodes/(?P<name>[^/]+)")
_NODES = "/api/v1/nodes"
_EVICTION = re.compile(r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)/eviction")
_POD = re.compile(r"/api/v1/namespaces/(?P<namespace>[^/]+)/pods/(?P<name>[^/]+)")
_PODS = re.compile(r"/api/v1(/namespaces/[^/]+)?/pods")
_SGFES = re.compile(r"/apis/aws\.amazon\.com/v1/namespaces/(?P<namespace>[^/]+)/spotguardfallbackevents")
_SGFE = re.compile(
    r"/apis/aws\.amazon\.com/v1/namespaces/(?P<namespace>[^/]+)/spotguardfallbackevents/(?P<name>[^/]+)"
    r"(?P<status>/status)?"
)
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_OBSERVE_ONLY = "nothing was changed (observe-only)"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch of ``target`` (a new value; neither argument is changed)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _without_version(patch: JSON) -> JSON:
    """A patch as kept: its resourceVersion precondition was the API server's to check (with dryRun=All)."""
    kept = copy.deepcopy(patch)
    meta = kept.get("metadata")
    if isinstance(meta, dict):
        meta.pop("resourceVersion", None)
    return kept


def _not_found(what: str) -> ApiException:
    exc = ApiException(status=404, reason="Not Found")
    exc.body = json.dumps({"kind": "Status", "status": "Failure", "reason": "NotFound", "message": f"{what} not found"})
    return exc


class DryRunKube(Kube):
    """``Kube`` in observe-only mode (see the module docs): reads are real with the would-be writes on top; writes
    but Events and Leases go to the API server with ``dryRun=All`` and are kept here."""

    def __init__(self, inner: Kube, announce: Announce) -> None:
        super().__init__(inner.api, inner.request_timeout)
        self.inner = inner
        self.announce = announce
        self._lock = threading.Lock()
        self._node_patches: dict[str, list[JSON]] = {}  # node -> its would-be merge patches, oldest first
        self._evicted: set[tuple[str, str]] = set()  # (namespace, pod)
        self._sgfes: dict[tuple[str, str], JSON | None] = {}  # (namespace, name) -> would-be object; None: deleted
        self._versions = itertools.count(1)
        #: called with the would-be Node after each would-be Node write (the Node cache shows it, as it would
        #: show the real write's watch event)
        self.on_node: list[Callable[[JSON], None]] = []

    # -- KubeRequests -------------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        *,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        method = method.upper()
        if method in _MUTATING and not any(p.fullmatch(path) for p in _REAL_WRITES):
            return self._write(_Call(method, path, query, body, content_type, timeout))
        sgfe = _SGFE.fullmatch(path)
        if method == "GET" and sgfe and not sgfe.group("status"):
            known, kept = self._sgfe((sgfe.group("namespace"), sgfe.group("name")))
            if known:
                if kept is None:
                    raise _not_found(f"spotguardfallbackevents {sgfe.group('name')!r}")
                return copy.deepcopy(kept)
        answer = self.inner.request(method, path, query, body=body, content_type=content_type, timeout=timeout)
        if method != "GET":
            return answer
        return self._show(path, answer)

    def stream(self, path: str, query: Mapping[str, str | int], timeout: float) -> Iterator[JSON]:
        for event in self.inner.stream(path, query, timeout):
            obj = event.get("object")
            shown = event
            if event.get("type") in {"ADDED", "MODIFIED"} and isinstance(obj, dict):
                if path == _NODES:
                    shown = {**event, "object": self._node(obj)}
                elif _SGFES.fullmatch(path):
                    meta = obj.get("metadata") or {}
                    known, kept = self._sgfe((str(meta.get("namespace", "")), str(meta.get("name", ""))))
                    if known and kept is None:
                        continue
                    if kept is not None:
                        shown = {**event, "object": kept}
            yield shown

    # -- reads: the real object with the would-be writes on top ------------------------------------------------
    def _show(self, path: str, answer: JSON) -> JSON:
        if _NODE.fullmatch(path):
            return self._node(answer)
        if path == _NODES:
            return {**answer, "items": [self._node(item) for item in answer.get("items") or []]}
        if _PODS.fullmatch(path):
            with self._lock:
                evicted = set(self._evicted)
            items = [item for item in answer.get("items") or [] if _pod_key(item) not in evicted]
            return {**answer, "items": items}
        pod = _POD.fullmatch(path)
        if pod and (pod.group("namespace"), pod.group("name")) in self._evicted_now():
            raise _not_found(f"pods {pod.group('name')!r}")
        sgfes = _SGFES.fullmatch(path)
        if sgfes:
            return {**answer, "items": self._sgfe_items(sgfes.group("namespace"), answer.get("items") or [])}
        return answer

    def _evicted_now(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self._evicted)

    def _node(self, node: JSON) -> JSON:
        name = str((node.get("metadata") or {}).get("name", ""))
        with self._lock:
            patches = list(self._node_patches.get(name, ()))
        shown: JSON = node
        for patch in patches:
            shown = merge_patch(shown, patch)
        return shown

    def _sgfe(self, key: tuple[str, str]) -> tuple[bool, JSON | None]:
        """(whether this process would have changed it, the would-be object or None if it would have been deleted)."""
        with self._lock:
            if key not in self._sgfes:
                return False, None
            return True, self._sgfes[key]

    def _sgfe_items(self, namespace: str, items: Sequence[JSON]) -> list[JSON]:
        with self._lock:
            kept = {name: obj for (ns, name), obj in self._sgfes.items() if ns == namespace}
        shown: list[JSON] = []
        for item in items:
            name = str((item.get("metadata") or {}).get("name", ""))
            if name in kept:
                obj = kept.pop(name)
                if obj is not None:
                    shown.append(copy.deepcopy(obj))
            else:
                shown.append(item)
        shown.extend(copy.deepcopy(obj) for obj in kept.values() if obj is not None)
        return shown

    # -- writes -----------------------------------------------------------------------------------------------
    def _dry_run(self, call: _Call) -> JSON:
        """The API server's answer to the write, which it checks in full and does not persist."""
        return self.inner.request(
            call.method,
            call.path,
            {**(call.query or {}), "dryRun": "All"},
            body=call.body,
            content_type=call.content_type,
            timeout=call.timeout,
        )

    def _write(self, call: _Call) -> JSON:
        node = _NODE.fullmatch(call.path)
        if node and call.method == "PATCH" and isinstance(call.body, dict):
            self._dry_run(call)
            return self._patch_node(node.group("name"), call.body)
        eviction = _EVICTION.fullmatch(call.path)
        if eviction and call.method == "POST":
            answer = self._dry_run(call)
            namespace, pod = eviction.group("namespace"), eviction.group("name")
            with self._lock:
                self._evicted.add((namespace, pod))
            message = f"would evict pod {namespace}/{pod}; {_OBSERVE_ONLY}"
            self.announce(WouldAct(Action.EVICT, "Pod", f"{namespace}/{pod}", message))
            return answer
        sgfes, sgfe = _SGFES.fullmatch(call.path), _SGFE.fullmatch(call.path)
        if sgfes and call.method == "POST" and isinstance(call.body, dict):
            return self._create_sgfe(sgfes.group("namespace"), call)
        if sgfe:
            return self._change_sgfe(sgfe, call)
        answer = self._dry_run(call)
        self.announce(WouldAct(Action.OTHER, "", call.path, f"would {call.method} {call.path}; {_OBSERVE_ONLY}"))
        return answer

    def _patch_node(self, name: str, patch: JSON) -> JSON:
        before = self._node(self.inner.request("GET", f"/api/v1/nodes/{name}"))
        with self._lock:
            self._node_patches.setdefault(name, []).append(_without_version(patch))
        after = self._node(before)
        for would in _node_changes(name, before, after):
            self.announce(would)
        for callback in list(self.on_node):
            callback(after)
        return after

    def _create_sgfe(self, namespace: str, call: _Call) -> JSON:
        name = str((call.body.get("metadata") or {}).get("name", ""))
        if self._sgfe((namespace, name))[1] is not None:
            exc = ApiException(status=409, reason="Conflict")
            exc.body = json.dumps({"kind": "Status", "reason": "AlreadyExists", "message": f"{name!r} already exists"})
            raise exc
        created = self._dry_run(call)
        meta = created.setdefault("metadata", {})
        meta["uid"] = meta.get("uid") or str(uuid.uuid4())
        self._keep(namespace, name, created)
        spec = created.get("spec") or {}
        self.announce(
            WouldAct(
                Action.CREATE_FALLBACK_EVENT,
                "SpotGuardFallbackEvent",
                f"{namespace}/{name}",
                f"would create SpotGuardFallbackEvent {namespace}/{name} for on-demand node "
                f"{spec.get('onDemandNodeName', '?')} in ASG {spec.get('onDemandASGName', '?')}; {_OBSERVE_ONLY}",
                node=str(spec.get("onDemandNodeName", "")),
                asg=str(spec.get("onDemandASGName", "")),
            )
        )
        return copy.deepcopy(created)

    def _change_sgfe(self, match: re.Match[str], call: _Call) -> JSON:
        method, body = call.method, call.body
        namespace, name = match.group("namespace"), match.group("name")
        known, kept = self._sgfe((namespace, name))
        if known and kept is None:
            raise _not_found(f"spotguardfallbackevents {name!r}")
        if not known:  # a real object: the API server checks the write (version, schema) and keeps nothing
            current = self._dry_run(call)
            if method != "DELETE":
                kept = current
        if method == "DELETE":
            with self._lock:
                self._sgfes[(namespace, name)] = None
            action, changed = Action.DELETE_FALLBACK_EVENT, "delete"
            result: JSON = {"kind": "Status", "status": "Success"}
        else:
            assert isinstance(kept, dict)
            version = str(((body or {}).get("metadata") or {}).get("resourceVersion", ""))
            if known and version and version != str((kept.get("metadata") or {}).get("resourceVersion", "")):
                raise ApiException(status=409, reason="Conflict")
            if method == "PATCH":
                result = merge_patch(kept, _without_version(body))
            elif match.group("status"):
                result = {**kept, "status": copy.deepcopy((body or {}).get("status"))}
            else:
                result = {**copy.deepcopy(body), "status": kept.get("status")}
            self._keep(namespace, name, result)
            action, changed = Action.UPDATE_FALLBACK_EVENT, "update"
            phase = (result.get("status") or {}).get("phase")
            changed += f" (phase {phase})" if phase else ""
        self.announce(
            WouldAct(
                action,
                "SpotGuardFallbackEvent",
                f"{namespace}/{name}",
                f"would {changed} SpotGuardFallbackEvent {namespace}/{name}; {_OBSERVE_ONLY}",
            )
        )
        return copy.deepcopy(result)

    def _keep(self, namespace: str, name: str, obj: JSON) -> None:
        obj.setdefault("metadata", {})["resourceVersion"] = f"dry-run-{next(self._versions)}"
        with self._lock:
            self._sgfes[(namespace, name)] = copy.deepcopy(obj)


@dataclasses.dataclass(frozen=True)
class _Call:
    """One request to the API server, as ``Kube.request`` takes it."""

    method: str
    path: str
    query: Mapping[str, str | int] | None
    body: Any
    content_type: str
    timeout: float | None


def _pod_key(pod: JSON) -> tuple[str, str]:
    meta = pod.get("metadata") or {}
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _node_changes(name: str, before: JSON, after: JSON) -> list[WouldAct]:
    """What a would-be patch changes on Node ``name``, in the announcer's words."""
    found: list[WouldAct] = []

    def would(action: Action, message: str) -> None:
        found.append(WouldAct(action, "Node", name, f"{message}; {_OBSERVE_ONLY}", node=name))

    old_meta, new_meta = before.get("metadata") or {}, after.get("metadata") or {}
    old_notes, new_notes = old_meta.get("annotations") or {}, new_meta.get("annotations") or {}
    record = new_notes.get(RECORD_ANNOTATION)
    if record != old_notes.get(RECORD_ANNOTATION) or (FINALIZER in (old_meta.get("finalizers") or [])) != (
        FINALIZER in (new_meta.get("finalizers") or [])
    ):
        phase = "removed"
        if record is not None:
            try:
                phase = str(json.loads(record).get("phase", "?"))
            except (ValueError, AttributeError):
                phase = "?"
        would(Action.RECORD, f"would write the replacement record of node {name}: {phase}")
    changed = sorted(
        key
        for key in set(old_notes) | set(new_notes)
        if key != RECORD_ANNOTATION and old_notes.get(key) != new_notes.get(key)
    )
    if changed:
        would(Action.ANNOTATE, f"would change the annotations {', '.join(changed)} of node {name}")
    old_spec, new_spec = before.get("spec") or {}, after.get("spec") or {}
    old_taints = {t.get("key"): t for t in old_spec.get("taints") or []}
    new_taints = {t.get("key"): t for t in new_spec.get("taints") or []}
    for key, taint in sorted(new_taints.items(), key=lambda kv: str(kv[0])):
        if old_taints.get(key) != taint:
            would(
                Action.TAINT,
                f"would taint node {name} with {key}={taint.get('value', '')}:{taint.get('effect', '')}",
            )
    for key in sorted(set(old_taints) - set(new_taints), key=str):
        would(Action.UNTAINT, f"would remove the taint {key} from node {name}")
    if bool(old_spec.get("unschedulable")) != bool(new_spec.get("unschedulable")):
        if new_spec.get("unschedulable"):
            would(Action.CORDON, f"would cordon node {name}")
        else:
            would(Action.UNCORDON, f"would uncordon node {name}")
    return found


class DryRunAutoScaling(AutoScaling):
    """``AutoScaling`` in observe-only mode (see the module docs): the reads are real, with the would-be desired
    capacity and without the instances it would have terminated; the capacity changes are announced, not sent."""

    def __init__(self, client: Any = None, *, announce: Announce, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        self.announce = announce
        self._wb_lock = threading.Lock()
        self._delta: dict[str, int] = {}  # group -> would-be desired capacity less the real one
        self._terminated: dict[str, str] = {}  # instance -> its group

    # -- reads ------------------------------------------------------------------------------------------------
    def describe_groups(self, names: Sequence[str]) -> dict[str, Group]:
        return {name: self._shown(group) for name, group in super().describe_groups(names).items()}

    def tagged_groups(self, tag_key: str) -> dict[str, Group]:
        return {name: self._shown(group) for name, group in super().tagged_groups(tag_key).items()}

    def memberships(self, instance_ids: Any) -> dict[str, Membership]:
        found = super().memberships(instance_ids)
        with self._wb_lock:
            return {instance: member for instance, member in found.items() if instance not in self._terminated}

    def _shown(self, group: Group) -> Group:
        present = {i.instance_id for i in group.instances}
        with self._wb_lock:
            for instance in [i for i, g in self._terminated.items() if g == group.name and i not in present]:
                del self._terminated[instance]  # gone for real since: nothing to hide any more
            gone = {i for i, g in self._terminated.items() if g == group.name}
            delta = self._delta.get(group.name, 0)
        if not gone and not delta:
            return group
        return dataclasses.replace(
            group,
            desired=group.desired + delta,
            instances=tuple(i for i in group.instances if i.instance_id not in gone),
        )

    # -- capacity changes (announced, not sent) ---------------------------------------------------------------
    def set_desired_capacity(self, group: str, desired: int) -> None:
        self._fence("SetDesiredCapacity", group)  # a deposed leader announces nothing either
        with self._changing(group):
            real = super().describe_groups([group]).get(group)
            if real is None:
                message = f"AutoScalingGroup name not found - {group}"
                raise AwsError("SetDesiredCapacity", "ValidationError", message, group)
            if desired > real.max_size:
                raise AwsError(
                    "SetDesiredCapacity",
                    "ValidationError",
                    f"New SetDesiredCapacity value {desired} is above max value {real.max_size} for the "
                    "AutoScalingGroup.",
                    group,
                )
            if desired < real.min_size:
                raise AwsError(
                    "SetDesiredCapacity",
                    "ValidationError",
                    f"New SetDesiredCapacity value {desired} is below min value {real.min_size} for the "
                    "AutoScalingGroup.",
                    group,
                )
            with self._wb_lock:
                before = real.desired + self._delta.get(group, 0)
                self._delta[group] = desired - real.desired
        action = Action.SCALE_UP if desired > before else Action.SCALE_DOWN
        # Said once, with the increase: the capacity check will wait for instances that were never asked for.
        consequence = (
            ": no instance will come, so its capacity check ends at the deadline as if the group were short"
            if action is Action.SCALE_UP
            else ""
        )
        self.announce(
            WouldAct(
                action,
                "AutoScalingGroup",
                group,
                f"would set the desired capacity of ASG {group} from {before} to {desired} ({desired - before:+d}); "
                f"nothing was sent to AWS (observe-only){consequence}",
                asg=group,
            )
        )

    def terminate_instance(self, instance_id: str, decrement: bool = True) -> None:
        self._fence("TerminateInstanceInAutoScalingGroup", instance_id)
        with self._changing(None):
            member = super().memberships([instance_id]).get(instance_id)
            with self._wb_lock:
                if member is None or instance_id in self._terminated:
                    raise AwsError(
                        "TerminateInstanceInAutoScalingGroup",
                        "ValidationError",
                        f"Instance Id not found - No managed instance found for instance ID: {instance_id}",
                        instance_id,
                    )
                self._terminated[instance_id] = member.group
                if decrement:
                    self._delta[member.group] = self._delta.get(member.group, 0) - 1
        self.announce(
            WouldAct(
                Action.TERMINATE,
                "AutoScalingGroup",
                member.group,
                f"would terminate instance {instance_id} in ASG {member.group}"
                + (" and lower its desired capacity by one" if decrement else "")
                + "; nothing was sent to AWS (observe-only)",
                asg=member.group,
            )
        )


class DryRunEventQueue(EventQueue):
    """The EC2 events queue in observe-only mode: messages are received as ever, never deleted (deleting is a
    change in AWS). Each comes back after the queue's visibility timeout and changes nothing, its notice being
    recorded already (in this process's memory), until the queue's retention period ends it."""

    def __init__(self, queue_url: str, client: Any = None, *, announce: Announce, connect_timeout: float = 1.0) -> None:
        super().__init__(queue_url, client, connect_timeout=connect_timeout)
        self.announce = announce

    def delete(self, messages: Sequence[Message]) -> list[str]:
        for message in messages:
            self.announce(
                WouldAct(
                    Action.ACKNOWLEDGE,
                    "Queue",
                    self.queue_url,
                    f"would delete message {message.message_id} from the EC2 events queue; {_OBSERVE_ONLY}",
                )
            )
        return []
