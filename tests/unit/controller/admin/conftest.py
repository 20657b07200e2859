from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from controller.adapters.kube import Kube
from controller.admin.context import Services, Target
from controller.app.cli import main
from controller.clock import FakeClock
from tests.unit.controller.admin.fake_aws import FakeAws
from tests.unit.controller.admin.fake_kube import FakeKube

NOW = dt.datetime(2025, 1, 15, 10, 0, 0, tzinfo=dt.UTC)

Run = Callable[..., Result]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=NOW)


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube()


@pytest.fixture
def aws() -> FakeAws:
    return FakeAws()


@pytest.fixture
def connections() -> list[tuple[Target, str | None]]:
    """Every (target, impersonated user) a command connected with."""
    return []


@pytest.fixture
def run(kube: FakeKube, aws: FakeAws, clock: FakeClock, connections: list[tuple[Target, str | None]]) -> Run:
    """``run("events", "list", "-o", "json")``: the real command tree on the fakes (exit code, stdout, stderr)."""

    def connect(target: Target, impersonate: str | None) -> Kube:
        connections.append((target, impersonate))
        return kube  # type: ignore[return-value]

    services = Services(kube=connect, aws=aws, clock=clock, user=lambda: "alice@laptop")

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(
            main, list(args), obj=services, input=input, env=env, catch_exceptions=False, prog_name="spotguard"
        )

    return invoke
