"""The sandbox's own HTTP API under /_sandbox/ (JSON in and out): state, capacity settings, faults, call log, reset.

Routes:
  GET  /_sandbox/health
  GET  /_sandbox/state                         every group with its instances and capacity settings
  GET  /_sandbox/groups/<name>/capacity        one group's capacity settings
  POST /_sandbox/groups/<name>/capacity        change some settings, e.g. {"capacity_short": true},
                                               {"launch_failure": "vcpu-limit"} (names: /launch-failures)
  GET  /_sandbox/groups/<name>/pools           the group's pool settings, by "type/zone" ("*" for any)
  POST /_sandbox/groups/<name>/pools           {"zone"?, "instance_type"?, "short"?, "spot_price"?, "capacity_score"?}
                                               (a missing zone or type means every one; all values null clears)
  POST /_sandbox/instances/<id>/reclaim        EC2 takes the instance away (a spot interruption, a failed health
                                               check): no decrement, the group launches one in its place
  GET  /_sandbox/launch-failures               every launch failure shape: name, code, category, source
  GET  /_sandbox/activities[?asg=NAME]         scaling activities, newest first
  GET  /_sandbox/faults                        faults still waiting to fire
  POST /_sandbox/faults                        {"operation", "code", "message"?, "http_status"?, "count"?, "asg"?}
                                               (message and http_status default to AWS's for that code)
  DELETE /_sandbox/faults                      drop all waiting faults
  GET  /_sandbox/calls[?operation=OP&asg=NAME] AWS calls received, oldest first
  POST /_sandbox/calls/reset                   forget the calls
  POST /_sandbox/reset                         reset moto and the simulator, re-create the start-up groups
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.aws import aws_messages as msg
from sandbox.aws import launch_errors
from sandbox.aws.call_log import CallLog
from sandbox.aws.faults import Fault, FaultInjector
from sandbox.aws.group_state import UnknownGroupError
from sandbox.aws.pools import PoolSettings
from sandbox.aws.query_protocol import AwsApiError
from sandbox.aws.simulator import CapacitySimulator

log = logging.getLogger(__name__)

PREFIX = "/_sandbox"


class ControlError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(data: object, status: int = 200) -> Response:
    return Response(json.dumps(data, indent=None), status=status, mimetype="application/json")


def _body(request: Request) -> dict[str, object]:
    try:
        data = json.loads(request.get_data(as_text=True) or "{}")
    except json.JSONDecodeError as error:
        raise ControlError(400, f"request body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ControlError(400, f"request body must be a JSON object, got {type(data).__name__}")
    return data


class ControlApi:
    def __init__(
        self,
        simulator: CapacitySimulator,
        faults: FaultInjector,
        calls: CallLog,
        reset: Callable[[], dict[str, object]],
    ) -> None:
        self.simulator = simulator
        self.faults = faults
        self.calls = calls
        self.reset = reset

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._route(request)
        except ControlError as error:
            response = _json({"error": error.message}, error.status)
        except Exception as error:
            log.exception("Sandbox control call %s %s failed", request.method, request.path)
            response = _json({"error": f"{type(error).__name__}: {error}"}, 500)
        return response(environ, start_response)

    def _route(self, request: Request) -> Response:
        path = request.path[len(PREFIX) :].rstrip("/")
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "groups" and parts[2] == "capacity":
            return self._capacity(request.method, parts[1], request)
        if len(parts) == 3 and parts[0] == "groups" and parts[2] == "pools":
            return self._pools(request.method, parts[1], request)
        if len(parts) == 3 and parts[0] == "instances" and parts[2] == "reclaim" and request.method == "POST":
            return self._reclaim(parts[1])
        if path == "/faults":
            return self._faults(request.method, request)
        handler = self._routes().get((request.method, path))
        if handler is None:
            raise ControlError(
                404, f"no sandbox route {request.method} {request.path}; see sandbox/aws/control_api.py for routes"
            )
        return handler(request)

    def _routes(self) -> dict[tuple[str, str], Callable[[Request], Response]]:
        return {
            ("GET", "/health"): lambda _r: _json({"status": "ok"}),
            ("GET", "/state"): lambda _r: _json(
                {"region": self.simulator.region, "groups": [g.to_json() for g in self.simulator.snapshot()]}
            ),
            ("GET", "/activities"): lambda r: self._activities(r.args.get("asg")),
            ("GET", "/calls"): self._calls,
            ("POST", "/calls/reset"): self._reset_calls,
            ("POST", "/reset"): lambda _r: _json(self.reset()),
            ("GET", "/launch-failures"): lambda _r: _json(
                {
                    "launch_failures": [
                        {"name": f.name, "code": f.code, "category": f.category, "source": f.source}
                        for f in launch_errors.SHAPES
                    ]
                }
            ),
        }

    def _calls(self, request: Request) -> Response:
        calls = self.calls.calls(operation=request.args.get("operation"), asg=request.args.get("asg"))
        return _json({"calls": [c.to_json() for c in calls]})

    def _reset_calls(self, _request: Request) -> Response:
        self.calls.clear()
        return _json({"status": "ok"})

    def _capacity(self, method: str, group: str, request: Request) -> Response:
        try:
            if method == "GET":
                return _json(self.simulator.settings(group).to_json())
            if method in ("POST", "PUT", "PATCH"):
                return _json(self.simulator.update_settings(group, _body(request)).to_json())
        except UnknownGroupError:
            raise ControlError(
                404, f"no Auto Scaling group {group!r}; groups are {self.simulator.group_names()}"
            ) from None
        except ValueError as error:
            raise ControlError(400, f"capacity settings of {group} unchanged: {error}") from None
        raise ControlError(405, f"{method} is not allowed on {request.path}; use GET or POST")

    def _pools(self, method: str, group: str, request: Request) -> Response:
        try:
            if method == "GET":
                return _json({k: v.to_json() for k, v in self.simulator.pool_settings(group).items()})
            if method in ("POST", "PUT", "PATCH"):
                body = _body(request)
                unknown = sorted(set(body) - {"zone", "instance_type", "short", "spot_price", "capacity_score"})
                if unknown:
                    raise ValueError(f"unknown pool field(s) {unknown}")
                zone, instance_type = body.pop("zone", None), body.pop("instance_type", None)
                for name, value in (("zone", zone), ("instance_type", instance_type)):
                    if value is not None and not isinstance(value, str):
                        raise ValueError(f"{name} must be a string or null, got {value!r}")
                changes = PoolSettings.from_json(body)
                clear = not body or all(v is None for v in body.values())
                updated = self.simulator.update_pool(
                    group,
                    instance_type if isinstance(instance_type, str) else None,
                    zone if isinstance(zone, str) else None,
                    changes,
                    clear=clear,
                )
                return _json(updated.to_json())
        except UnknownGroupError:
            raise ControlError(
                404, f"no Auto Scaling group {group!r}; groups are {self.simulator.group_names()}"
            ) from None
        except ValueError as error:
            raise ControlError(400, f"pool settings of {group} unchanged: {error}") from None
        raise ControlError(405, f"{method} is not allowed on {request.path}; use GET or POST")

    def _reclaim(self, instance_id: str) -> Response:
        try:
            activity = self.simulator.reclaim(instance_id)
        except AwsApiError as error:
            raise ControlError(404, f"instance {instance_id} not reclaimed: {error}") from None
        return _json(activity.to_json())

    def _activities(self, group: str | None) -> Response:
        activities = self.simulator.describe_scaling_activities(group, [], include_deleted_groups=True)
        return _json({"activities": [a.to_json() for a in activities]})

    def _default_fault_message(self, code: str, operation: str, asg: str | None) -> str | None:
        arn = None
        if asg is not None:
            arn = next((g.arn for g in self.simulator.snapshot() if g.name == asg), None)
        return msg.default_error_message(code, operation, arn, self.simulator.account_id)

    def _faults(self, method: str, request: Request) -> Response:
        if method == "GET":
            return _json({"faults": [f.to_json() for f in self.faults.pending()]})
        if method == "POST":
            try:
                fault = Fault.from_json(_body(request), self._default_fault_message)
            except ValueError as error:
                raise ControlError(400, f"fault not added: {error}") from None
            self.faults.add(fault)
            log.info("Fault added: next %d %s call(s) fail with %s", fault.count, fault.operation, fault.code)
            return _json(fault.to_json(), 201)
        if method == "DELETE":
            self.faults.clear()
            return _json({"status": "ok"})
        raise ControlError(405, f"{method} is not allowed on {request.path}; use GET, POST or DELETE")
