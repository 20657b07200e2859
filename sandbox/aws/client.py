"""A typed client for the sandbox's control API (/_sandbox/...), for tests, benchmarks and the demo.

AWS calls themselves go through plain boto3 with `endpoint_url=<endpoint>`; this client only reaches the
sandbox's own knobs: capacity settings, injected faults, the call log, state and reset. Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypedDict, TypeVar, cast

T = TypeVar("T")


class CapacitySettingsJson(TypedDict):
    pending_seconds: float
    capacity_short: bool
    retry_seconds: float
    terminating_seconds: float
    launch_failure: str | None
    pool_retry_seconds: float
    az_rebalance_seconds: float


class PoolSettingsJson(TypedDict):
    short: bool | None
    spot_price: float | None
    capacity_score: float | None


class LaunchFailureJson(TypedDict):
    name: str
    code: str
    category: str
    source: str


class InstanceJson(TypedDict):
    instance_id: str
    group_name: str
    capacity_type: str
    lifecycle_state: str
    availability_zone: str
    instance_type: str
    private_dns_name: str
    private_ip: str | None


class GroupJson(TypedDict):
    name: str
    arn: str
    capacity_type: str
    min_size: int
    max_size: int
    desired_capacity: int
    availability_zones: list[str]
    instance_type: str
    tags: dict[str, str]
    settings: CapacitySettingsJson
    instances: list[InstanceJson]
    instance_types: list[str]
    mixed_instances: bool
    suspended_processes: list[str]
    pools: dict[str, PoolSettingsJson]


class StateJson(TypedDict):
    region: str
    groups: list[GroupJson]


class FaultJson(TypedDict):
    fault_id: str
    operation: str
    code: str
    message: str
    http_status: int
    count: int
    asg: str | None
    fault_type: str


class CallJson(TypedDict):
    seq: int
    time: str  # when the sandbox received the call
    answered: str  # when it had its answer
    service: str | None
    operation: str | None
    asg: str | None
    params: dict[str, str]
    http_status: int
    error_code: str | None
    injected: bool


class ActivityJson(TypedDict):
    activity_id: str
    group: str
    description: str
    cause: str
    start_time: str
    end_time: str | None
    status_code: str
    status_message: str | None
    progress: int


class StartupGroupJson(TypedDict):
    name: str
    capacity_type: str
    on_demand_partner: str | None
    desired_capacity: int
    min_size: int
    max_size: int
    availability_zones: list[str]
    instance_type: str
    instance_types: list[str]
    mixed_instances: bool
    suspended_processes: list[str]


class AnnouncementJson(TypedDict, total=False):
    endpoint: str
    region: str
    account_id: str
    launch_template: str
    groups: list[StartupGroupJson]


class SandboxAWSError(RuntimeError):
    """A control API call failed; the message names the call, the HTTP status and the sandbox's reason."""


class SandboxAWSClient:
    def __init__(self, endpoint: str, timeout_seconds: float = 10.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout_seconds = timeout_seconds

    def _call(self, method: str, path: str, body: object = None, query: dict[str, str] | None = None) -> Any:
        url = f"{self.endpoint}/_sandbox{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                detail = json.loads(detail).get("error", detail)
            raise SandboxAWSError(f"{method} {url} failed with HTTP {error.code}: {detail}") from None
        except urllib.error.URLError as error:
            raise SandboxAWSError(
                f"{method} {url} failed: {error.reason}; is the sandbox AWS server running?"
            ) from None

    # ---- state ----

    def health(self) -> bool:
        try:
            return bool(self._call("GET", "/health").get("status") == "ok")
        except SandboxAWSError:
            return False

    def state(self) -> StateJson:
        return cast(StateJson, self._call("GET", "/state"))

    def group(self, name: str) -> GroupJson:
        groups = self.state()["groups"]
        for group in groups:
            if group["name"] == name:
                return group
        raise SandboxAWSError(
            f"no Auto Scaling group {name!r} in the sandbox; groups are {[g['name'] for g in groups]}"
        )

    def instances(self, group: str, lifecycle_state: str | None = None) -> list[InstanceJson]:
        return [
            i
            for i in self.group(group)["instances"]
            if lifecycle_state is None or i["lifecycle_state"] == lifecycle_state
        ]

    def activities(self, asg: str | None = None) -> list[ActivityJson]:
        return cast(
            list[ActivityJson], self._call("GET", "/activities", query={"asg": asg} if asg else None)["activities"]
        )

    # ---- capacity ----

    def capacity(self, group: str) -> CapacitySettingsJson:
        return cast(CapacitySettingsJson, self._call("GET", f"/groups/{urllib.parse.quote(group)}/capacity"))

    def set_capacity(
        self,
        group: str,
        *,
        pending_seconds: float | None = None,
        capacity_short: bool | None = None,
        retry_seconds: float | None = None,
        terminating_seconds: float | None = None,
        pool_retry_seconds: float | None = None,
        az_rebalance_seconds: float | None = None,
    ) -> CapacitySettingsJson:
        """Change the given settings of one group; the others keep their values."""
        changes = {
            k: v
            for k, v in {
                "pending_seconds": pending_seconds,
                "capacity_short": capacity_short,
                "retry_seconds": retry_seconds,
                "terminating_seconds": terminating_seconds,
                "pool_retry_seconds": pool_retry_seconds,
                "az_rebalance_seconds": az_rebalance_seconds,
            }.items()
            if v is not None
        }
        return cast(CapacitySettingsJson, self._call("POST", f"/groups/{urllib.parse.quote(group)}/capacity", changes))

    def reclaim(self, instance_id: str) -> ActivityJson:
        """EC2 takes ``instance_id`` away on its own (a spot interruption, a failed health check): it leaves its group
        without a decrement and the group launches one in its place."""
        return cast(ActivityJson, self._call("POST", f"/instances/{urllib.parse.quote(instance_id)}/reclaim"))

    def set_launch_failure(self, group: str, failure: str | None) -> CapacitySettingsJson:
        """Every launch of ``group`` fails with this shape (a name from ``launch_failures()``); None: none does."""
        path = f"/groups/{urllib.parse.quote(group)}/capacity"
        return cast(CapacitySettingsJson, self._call("POST", path, {"launch_failure": failure}))

    def launch_failures(self) -> list[LaunchFailureJson]:
        return cast(list[LaunchFailureJson], self._call("GET", "/launch-failures")["launch_failures"])

    # ---- pools ----

    def pools(self, group: str) -> dict[str, PoolSettingsJson]:
        return cast(dict[str, PoolSettingsJson], self._call("GET", f"/groups/{urllib.parse.quote(group)}/pools"))

    def set_pool(
        self,
        group: str,
        *,
        zone: str | None = None,
        instance_type: str | None = None,
        short: bool | None = None,
        spot_price: float | None = None,
        capacity_score: float | None = None,
    ) -> PoolSettingsJson:
        """Change the settings of ``group``'s pools of ``instance_type`` in ``zone`` (None: every type or zone); with
        no setting given, clear them."""
        body: dict[str, object] = {"zone": zone, "instance_type": instance_type}
        body.update(
            {
                k: v
                for k, v in {"short": short, "spot_price": spot_price, "capacity_score": capacity_score}.items()
                if v is not None
            }
        )
        return cast(PoolSettingsJson, self._call("POST", f"/groups/{urllib.parse.quote(group)}/pools", body))

    # ---- faults ----

    def add_fault(
        self,
        operation: str,
        code: str,
        message: str | None = None,
        *,
        http_status: int | None = None,
        count: int = 1,
        asg: str | None = None,
    ) -> FaultJson:
        """The next `count` calls of `operation` (for group `asg` only, if given) fail with `code`.

        `message` and `http_status` default to what AWS sends for that code (Throttling, AccessDenied,
        ScalingActivityInProgress, ResourceContention, ...); ValidationError needs an explicit message.
        """
        body: dict[str, object] = {"operation": operation, "code": code, "count": count, "asg": asg}
        if message is not None:
            body["message"] = message
        if http_status is not None:
            body["http_status"] = http_status
        return cast(FaultJson, self._call("POST", "/faults", body))

    def faults(self) -> list[FaultJson]:
        return cast(list[FaultJson], self._call("GET", "/faults")["faults"])

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    # ---- call log ----

    def calls(self, operation: str | None = None, asg: str | None = None) -> list[CallJson]:
        query = {k: v for k, v in {"operation": operation, "asg": asg}.items() if v is not None}
        return cast(list[CallJson], self._call("GET", "/calls", query=query)["calls"])

    def count_calls(self, operation: str, asg: str | None = None) -> int:
        return len(self.calls(operation, asg))

    def reset_calls(self) -> None:
        self._call("POST", "/calls/reset")

    # ---- reset and waiting ----

    def reset(self) -> AnnouncementJson:
        """Forget everything and re-create the start-up groups."""
        return cast(AnnouncementJson, self._call("POST", "/reset"))

    def wait_for(
        self, what: str, probe: Callable[[], T | None], timeout_seconds: float = 30.0, poll_seconds: float = 0.1
    ) -> T:
        """Poll `probe` until it returns something other than None/False; raise TimeoutError naming `what`."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            value = probe()
            if value is not None and value is not False:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"sandbox AWS: gave up after {timeout_seconds} s waiting for {what}")
            time.sleep(poll_seconds)

    def wait_for_instances(
        self, group: str, lifecycle_state: str, count: int, timeout_seconds: float = 30.0
    ) -> list[InstanceJson]:
        """Wait until `group` has exactly `count` instances in `lifecycle_state`, and return them."""

        def probe() -> list[InstanceJson] | None:
            found = self.instances(group, lifecycle_state)
            return found if len(found) == count else None

        return self.wait_for(f"{count} {lifecycle_state} instance(s) in {group}", probe, timeout_seconds)
