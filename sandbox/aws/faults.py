"""Injected API faults: the next N calls of an operation (optionally for one group) fail with a real AWS error."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from sandbox.aws.aws_messages import ERROR_HTTP_STATUS
from sandbox.aws.query_protocol import AwsApiError


@dataclass
class Fault:
    operation: str
    code: str
    message: str
    http_status: int = 400
    count: int = 1
    asg: str | None = None
    fault_type: str = "Sender"
    fault_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @classmethod
    def from_json(cls, data: dict[str, object], default_message: Callable[[str, str, str | None], str | None]) -> Fault:
        """Build from the control API's JSON; ValueError says which field is wrong.

        A missing `message` comes from `default_message(code, operation, asg)`; a missing `http_status` is the
        status AWS uses for that code.
        """
        known = {"operation", "code", "message", "http_status", "count", "asg", "type"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fault field(s) {unknown}; known fields are {sorted(known)}")
        for name in ("operation", "code"):
            if not isinstance(data.get(name), str) or not data[name]:
                raise ValueError(f"fault field {name!r} must be a non-empty string, got {data.get(name)!r}")
        operation, code = str(data["operation"]), str(data["code"])
        asg = data.get("asg")
        if asg is not None and not isinstance(asg, str):
            raise ValueError(f"fault field 'asg' must be a group name or null, got {asg!r}")
        message = data.get("message")
        if message is None:
            message = default_message(code, operation, asg)
            if message is None:
                raise ValueError(f"fault field 'message' is required for code {code!r} (no standard AWS message)")
        if not isinstance(message, str) or not message:
            raise ValueError(f"fault field 'message' must be a non-empty string, got {message!r}")
        http_status = data.get("http_status", ERROR_HTTP_STATUS.get(code, 400))
        if not isinstance(http_status, int) or isinstance(http_status, bool) or not 400 <= http_status <= 599:
            raise ValueError(f"fault field 'http_status' must be an HTTP error status 400-599, got {http_status!r}")
        count = data.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"fault field 'count' must be an integer >= 1, got {count!r}")
        fault_type = data.get("type", "Receiver" if http_status >= 500 else "Sender")
        if fault_type not in ("Sender", "Receiver"):
            raise ValueError(f"fault field 'type' must be 'Sender' or 'Receiver', got {fault_type!r}")
        return cls(
            operation=operation,
            code=code,
            message=message,
            http_status=http_status,
            count=count,
            asg=asg,
            fault_type=str(fault_type),
        )

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class FaultInjector:
    """Faults waiting to fire, matched in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, operation: str | None, asg: str | None) -> AwsApiError | None:
        """The error for this call if a fault matches it (using up one of that fault's count), else None."""
        if operation is None:
            return None
        with self._lock:
            for fault in self._faults:
                if fault.operation == operation and (fault.asg is None or fault.asg == asg):
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    return AwsApiError(fault.code, fault.message, fault.http_status, fault.fault_type)
        return None

    def pending(self) -> list[Fault]:
        with self._lock:
            return [Fault(**asdict(f)) for f in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
