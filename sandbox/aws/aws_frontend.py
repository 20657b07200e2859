"""The WSGI layer in front of moto: logs each AWS call, fires injected faults, and answers the Auto Scaling
operations the capacity simulator owns (SetDesiredCapacity, TerminateInstanceInAutoScalingGroup,
DescribeScalingActivities, and those moto lacks: CompleteLifecycleAction, RecordLifecycleActionHeartbeat,
StartInstanceRefresh, DescribeInstanceRefreshes, CancelInstanceRefresh); everything else goes to moto, and the
simulator acts on what moto changed (UpdateAutoScalingGroup keeps a MixedInstancesPolicy the request does not
name and takes TerminationPolicies, which moto drops or ignores; SuspendProcesses, SetInstanceProtection and the
like take effect at once)."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from sandbox.aws import aws_messages as msg
from sandbox.aws import moto_bridge
from sandbox.aws.call_log import CallLog
from sandbox.aws.faults import FaultInjector
from sandbox.aws.instance_refresh import Preferences
from sandbox.aws.query_protocol import (
    AwsApiError,
    QueryRequest,
    autoscaling_response,
    error_body,
    error_code_in,
    new_request_id,
    parse_request,
)
from sandbox.aws.simulator import CapacitySimulator

log = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Answer = tuple[int, list[tuple[str, str]], bytes]

DEFAULT_MAX_RECORDS = 100
_TRUE = "true"
#: Services whose calls go to moto without the simulator's lock (the EC2 events queue and its rules).
UNLOCKED_SERVICES = frozenset({"sqs", "events"})
# moto calls after which the simulator looks at the group again.
_SETTINGS_CALLS = frozenset(
    {
        "CreateAutoScalingGroup",
        "UpdateAutoScalingGroup",
        "SuspendProcesses",
        "ResumeProcesses",
        "SetInstanceProtection",
        "PutLifecycleHook",
        "DeleteLifecycleHook",
        "CreateOrUpdateTags",
    }
)


def _read_body(environ: dict[str, Any]) -> bytes:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    body: bytes = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _xml_answer(status: int, body: bytes, request_id: str) -> Answer:
    return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body


def _int_param(request: QueryRequest, name: str) -> int | None:
    raw = request.params.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise AwsApiError("ValidationError", f"Value '{raw}' at '{name}' is not a valid integer") from None


class AwsFrontend:
    def __init__(self, simulator: CapacitySimulator, faults: FaultInjector, calls: CallLog, moto_app: WsgiApp) -> None:
        self.simulator = simulator
        self.faults = faults
        self.calls = calls
        self.moto_app = moto_app
        self._own: dict[str, Callable[[QueryRequest], str | None]] = {
            "SetDesiredCapacity": self._set_desired_capacity,
            "TerminateInstanceInAutoScalingGroup": self._terminate_instance,
            "DescribeScalingActivities": self._describe_scaling_activities,
            "CompleteLifecycleAction": self._complete_lifecycle_action,
            "RecordLifecycleActionHeartbeat": self._record_lifecycle_action_heartbeat,
            "StartInstanceRefresh": self._start_instance_refresh,
            "DescribeInstanceRefreshes": self._describe_instance_refreshes,
            "CancelInstanceRefresh": self._cancel_instance_refresh,
        }

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        # A call's time is when it arrived, before it waits for the lock or its work (a scale-out launching hundreds
        # of instances takes a while): the moment the client sent it, as near as this side can tell.
        received = self.simulator.clock.now().isoformat()
        body = _read_body(environ)
        request = parse_request(environ.get("HTTP_AUTHORIZATION"), environ.get("CONTENT_TYPE"), body)
        if request.service in UNLOCKED_SERVICES:
            return self._unlocked(environ, start_response, request, received)
        with self.simulator.lock:
            asg = self._group_named_by(request)
            injected = self.faults.take(request.action, asg)
            if injected is not None:
                request_id = new_request_id()
                status, headers, payload = _xml_answer(
                    injected.http_status, error_body(request.service, injected, request_id), request_id
                )
                log.info("Injected %s into %s call (group %s)", injected.code, request.action, asg)
            elif self._is_own(request):
                status, headers, payload = self._answer_own(request)
            else:
                kept_policy = self._mixed_policy_of(request)
                status, headers, payload = self._call_moto(environ)
                if status < 400:
                    self._after_moto(request, kept_policy)
            self.calls.record(
                time=received,
                answered=self.simulator.clock.now().isoformat(),
                service=request.service,
                operation=request.action,
                asg=asg,
                params=request.params,
                http_status=status,
                error_code=error_code_in(payload) if status >= 400 else None,
                injected=injected is not None,
            )
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(payload))))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [payload]

    def _unlocked(
        self, environ: dict[str, Any], start_response: Callable[..., Any], request: QueryRequest, received: str
    ) -> Iterable[bytes]:
        """A call of a service the simulator does not act on, straight to moto without the simulator's lock: an SQS
        long poll waits up to 20 s for messages and must not hold up the Auto Scaling calls meanwhile."""
        status, headers, payload = self._call_moto(environ)
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))  # the JSON protocol names the operation here
        self.calls.record(
            time=received,
            answered=self.simulator.clock.now().isoformat(),
            service=request.service,
            operation=request.action or target.rsplit(".", 1)[-1] or None,
            asg=None,
            params=request.params,
            http_status=status,
            error_code=None if status < 400 else (error_code_in(payload) or "error"),
            injected=False,
        )
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(payload))))
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [payload]

    def _mixed_policy_of(self, request: QueryRequest) -> dict[str, Any] | None:
        """The group's MixedInstancesPolicy before an UpdateAutoScalingGroup that does not name one."""
        if request.action != "UpdateAutoScalingGroup" or request.service != "autoscaling":
            return None
        if any(k.startswith("MixedInstancesPolicy.") for k in request.params):
            return None
        group = moto_bridge.groups(self.simulator.region).get(request.params.get("AutoScalingGroupName", ""))
        return None if group is None else moto_bridge.mixed_instances_policy(group)

    def _after_moto(self, request: QueryRequest, kept_policy: dict[str, Any] | None) -> None:
        """What AWS does with a call moto answered and moto does not: see the module docstring."""
        if request.service != "autoscaling" or request.action not in _SETTINGS_CALLS:
            return
        name = request.params.get("AutoScalingGroupName")
        group = moto_bridge.groups(self.simulator.region).get(name or "")
        if group is None or name is None:
            return
        if request.action == "CreateAutoScalingGroup":
            if policies := request.member_list("TerminationPolicies"):
                moto_bridge.set_termination_policies(group, policies)
            self.simulator.group_created(name)
            return
        if request.action == "UpdateAutoScalingGroup":
            if kept_policy is not None:
                moto_bridge.restore_mixed_instances_policy(group, kept_policy)
            policies = request.member_list("TerminationPolicies")
            if policies:
                moto_bridge.set_termination_policies(group, policies)
            # moto honours CapacityRebalance only at creation; AWS also takes it in UpdateAutoScalingGroup.
            if (value := request.params.get("CapacityRebalance")) is not None:
                group.capacity_rebalance = value.lower() == "true"
        self.simulator.after_update(name)

    def _group_named_by(self, request: QueryRequest) -> str | None:
        if request.service not in (None, "autoscaling"):
            return None
        if name := request.params.get("AutoScalingGroupName"):
            return name
        if instance_id := request.params.get("InstanceId"):
            return self.simulator.group_of_instance(instance_id)
        return None

    def _is_own(self, request: QueryRequest) -> bool:
        return (
            request.service == "autoscaling"
            and request.region in (None, self.simulator.region)
            and request.action in self._own
        )

    def _answer_own(self, request: QueryRequest) -> Answer:
        assert request.action is not None
        request_id = new_request_id()
        try:
            result = self._own[request.action](request)
        except AwsApiError as error:
            log.info("%s refused: %s: %s", request.action, error.code, error.message)
            return _xml_answer(error.http_status, error_body(request.service, error, request_id), request_id)
        return _xml_answer(200, autoscaling_response(request.action, result, request_id), request_id)

    def _call_moto(self, environ: dict[str, Any]) -> Answer:
        captured: dict[str, Any] = {}
        written: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            captured["status"], captured["headers"] = status, headers
            return written.append

        result = self.moto_app(environ, start_response)
        try:
            payload = b"".join(written) + b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return int(str(captured["status"]).split()[0]), list(captured["headers"]), payload

    # ---- the operations the simulator answers ----

    def _set_desired_capacity(self, request: QueryRequest) -> str | None:
        name = request.params.get("AutoScalingGroupName", "")
        desired = _int_param(request, "DesiredCapacity")
        if desired is None:
            raise AwsApiError("ValidationError", "DesiredCapacity is required")
        # HonorCooldown is accepted and ignored: the sandbox has no cooldowns.
        self.simulator.set_desired_capacity(name, desired)
        return None

    def _terminate_instance(self, request: QueryRequest) -> str | None:
        instance_id = request.params.get("InstanceId", "")
        decrement = request.params.get("ShouldDecrementDesiredCapacity", "").lower() == _TRUE
        activity = self.simulator.terminate_instance_in_group(instance_id, decrement)
        return f"<Activity>{activity.to_xml()}</Activity>"

    def _describe_scaling_activities(self, request: QueryRequest) -> str | None:
        max_records = _int_param(request, "MaxRecords") or DEFAULT_MAX_RECORDS
        if not 1 <= max_records <= DEFAULT_MAX_RECORDS:
            raise AwsApiError("ValidationError", msg.max_records_out_of_range(max_records))
        start = 0
        if token := request.params.get("NextToken"):
            if not token.startswith("sandbox-") or not token[len("sandbox-") :].isdigit():
                raise AwsApiError("InvalidNextToken", msg.invalid_next_token())
            start = int(token[len("sandbox-") :])
        activities = self.simulator.describe_scaling_activities(
            group_name=request.params.get("AutoScalingGroupName") or None,
            activity_ids=request.member_list("ActivityIds"),
            include_deleted_groups=request.params.get("IncludeDeletedGroups", "").lower() == _TRUE,
        )
        page = activities[start : start + max_records]
        members = "".join(f"<member>{a.to_xml()}</member>" for a in page)
        next_token = (
            f"<NextToken>sandbox-{start + max_records}</NextToken>" if start + max_records < len(activities) else ""
        )
        return f"<Activities>{members}</Activities>{next_token}"

    def _complete_lifecycle_action(self, request: QueryRequest) -> str | None:
        self.simulator.complete_lifecycle_action(
            group_name=request.params.get("AutoScalingGroupName", ""),
            hook_name=request.params.get("LifecycleHookName", ""),
            result=request.params.get("LifecycleActionResult", ""),
            instance_id=request.params.get("InstanceId") or None,
            token=request.params.get("LifecycleActionToken") or None,
        )
        return ""

    def _record_lifecycle_action_heartbeat(self, request: QueryRequest) -> str | None:
        self.simulator.record_lifecycle_action_heartbeat(
            group_name=request.params.get("AutoScalingGroupName", ""),
            hook_name=request.params.get("LifecycleHookName", ""),
            instance_id=request.params.get("InstanceId") or None,
            token=request.params.get("LifecycleActionToken") or None,
        )
        return ""

    def _start_instance_refresh(self, request: QueryRequest) -> str | None:
        strategy = request.params.get("Strategy", "Rolling")
        if strategy != "Rolling":
            raise AwsApiError("ValidationError", f"Strategy must be Rolling, got {strategy!r}")
        refresh = self.simulator.start_instance_refresh(
            request.params.get("AutoScalingGroupName", ""), Preferences.from_params(request.params)
        )
        return f"<InstanceRefreshId>{refresh.refresh_id}</InstanceRefreshId>"

    def _describe_instance_refreshes(self, request: QueryRequest) -> str | None:
        refreshes = self.simulator.describe_instance_refreshes(
            request.params.get("AutoScalingGroupName", ""), request.member_list("InstanceRefreshIds")
        )
        members = "".join(f"<member>{r.to_xml()}</member>" for r in refreshes)
        return f"<InstanceRefreshes>{members}</InstanceRefreshes>"

    def _cancel_instance_refresh(self, request: QueryRequest) -> str | None:
        refresh_id = self.simulator.cancel_instance_refresh(request.params.get("AutoScalingGroupName", ""))
        return f"<InstanceRefreshId>{refresh_id}</InstanceRefreshId>"
