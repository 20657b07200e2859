"""What the controller's benchmarks share: the simulator, a running controller, timestamps, waiting, restoring.

The controller runs as the real process (``python -m controller.app.cli run`` through
tests/integration/controller_process.py's launcher), against the sandbox's kube-apiserver and AWS simulator.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import boto3

from bench.registry import Context
from sandbox.aws.client import CallJson, SandboxAWSClient
from tests.integration.controller_process import (
    ON_DEMAND_ASG,
    SPOT_ASG,
    ControllerLauncher,
    ControllerProcess,
    clean_nodes,
    controller_env,
)

__all__ = ["ON_DEMAND_ASG", "SPOT_ASG"]

LEADING = "leading as"  # the leader's work started
SET_DESIRED = "SetDesiredCapacity"
DESCRIBE_GROUPS = "DescribeAutoScalingGroups"
CACHE_SETTLE = 2.0  # seconds after "leading as" for the informers to list and watch

T = TypeVar("T")


def sim(context: Context) -> SandboxAWSClient:
    return SandboxAWSClient(context.sandbox.aws_endpoint)


def autoscaling(context: Context) -> Any:
    env = context.sandbox.env()
    return boto3.client(
        "autoscaling",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def restore(context: Context, timeout: float = 180.0) -> None:
    """Back to the sandbox's start: the simulator's groups re-created, clean Nodes, as many as at the start."""
    aws = sim(context)
    aws.clear_faults()
    aws.reset()
    clean_nodes(context.core())
    sandbox = context.sandbox
    sandbox.wait_for_nodes(sandbox.spot_desired * sandbox.pairs, timeout=timeout, exact=True)


def epoch(iso: str) -> float:
    """Seconds since the epoch of an ISO-8601 timestamp (``Z`` or an offset)."""
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def wait_until(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.02) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def new_call(aws: SandboxAWSClient, operation: str, asg: str, seen: int) -> Callable[[], CallJson | None]:
    """A probe for the (seen+1)-th call of ``operation`` on ``asg`` in the simulator's call log."""

    def probe() -> CallJson | None:
        calls = aws.calls(operation, asg)
        return calls[seen] if len(calls) > seen else None

    return probe


@contextlib.contextmanager
def launcher(context: Context, **env: str) -> Iterator[ControllerLauncher]:
    """A launcher for replicas with the sandbox's environment plus ``env``; on exit all replicas are killed."""
    overrides = {"SPOT_GUARD_CAPACITY_POLL_INTERVAL": "5", "SPOT_GUARD_CAPACITY_CHECK_TIMEOUT": "180", **env}
    with ControllerLauncher(
        controller_env(context.sandbox.env(), **overrides), context.workdir, core=context.core()
    ) as run:
        yield run


@contextlib.contextmanager
def controller(context: Context, identity: str = "bench", **env: str) -> Iterator[ControllerProcess]:
    """One leading controller whose caches had time to fill; SIGTERM (then kill) on exit."""
    with launcher(context, **env) as run:
        process = run.start(identity)
        process.wait_for_log(LEADING, timeout=60)
        time.sleep(CACHE_SETTLE)
        yield process
        with contextlib.suppress(AssertionError):
            process.stop(timeout=20)
