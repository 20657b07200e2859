"""A log of the AWS API calls the sandbox received, for tests and benchmarks to count."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass

# The most calls kept; the oldest are dropped first.
MAX_CALLS = 20_000
# Longest parameter value kept in the summary.
MAX_PARAM_CHARS = 200


@dataclass(frozen=True)
class Call:
    seq: int
    time: str  # received
    answered: str
    service: str | None
    operation: str | None
    asg: str | None
    params: dict[str, str]
    http_status: int
    error_code: str | None
    injected: bool

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def summarize(params: dict[str, str]) -> dict[str, str]:
    return {k: v if len(v) <= MAX_PARAM_CHARS else v[:MAX_PARAM_CHARS] + "..." for k, v in params.items()}


class CallLog:
    def __init__(self) -> None:
        self._calls: deque[Call] = deque(maxlen=MAX_CALLS)
        self._seq = 0
        self._lock = threading.Lock()

    def record(
        self,
        *,
        time: str,
        answered: str,
        service: str | None,
        operation: str | None,
        asg: str | None,
        params: dict[str, str],
        http_status: int,
        error_code: str | None,
        injected: bool,
    ) -> Call:
        with self._lock:
            self._seq += 1
            call = Call(
                self._seq, time, answered, service, operation, asg, summarize(params), http_status, error_code, injected
            )
            self._calls.append(call)
            return call

    def calls(self, operation: str | None = None, asg: str | None = None) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self._calls
                if (operation is None or c.operation == operation) and (asg is None or c.asg == asg)
            ]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
