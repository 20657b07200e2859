"""The fence has no gap: no capacity change reaches the wire once the fence budget is spent, on an injected clock.

A real botocore client signs each request; a ``before-send`` handler registered after Spot Guard's stands in for
the network and records when each request would have been written. Credentials are botocore's own refreshable
credentials, whose refresh takes as long as the test says (an STS call on a bad day).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import botocore.session
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders
from botocore.credentials import CredentialProvider, RefreshableCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.adapters.aws import FENCE_ALLOWANCE, AutoScaling, AwsError, CallBudget, InvalidCallBudgetError
from controller.adapters.election import ElectionConfig, InMemoryLeaseStore
from controller.clock import FakeClock
from controller.fence import NotLeaderError
from tests.unit.controller.election_helpers import START, make_elector

ELECTION = ElectionConfig(fence_margin=3.0)  # the controller's defaults: 15 s lease, 2 s retry, 3 s margin
BUDGET = CallBudget(connect_timeout=1.0, read_timeout=5.0, fence_margin=ELECTION.fence_margin)


def _answer(operation: str) -> bytes:
    """Auto Scaling's XML answer to ``operation`` (nothing in it the test reads)."""
    result = f"<{operation}Result/>" if operation != "SetDesiredCapacity" else ""
    return (
        f'<{operation}Response xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">{result}'
        f"<ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></{operation}Response>"
    ).encode()


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **kwargs: Any) -> Iterator[bytes]:
        yield self.data


@dataclasses.dataclass
class Wire:
    """Stands in for the network: records (operation, monotonic time) of every request botocore would send."""

    clock: FakeClock
    sent: list[tuple[str, float]] = dataclasses.field(default_factory=list)

    def __call__(self, request: Any, event_name: str, **kwargs: Any) -> AWSResponse:
        operation = event_name.rsplit(".", 1)[-1]
        self.sent.append((operation, self.clock.monotonic()))
        return AWSResponse(request.url, 200, HTTPHeaders(), _Body(_answer(operation)))


@dataclasses.dataclass
class SlowRefresh:
    """botocore's refresh callback (an STS call): takes ``seconds`` of the injected clock."""

    clock: FakeClock
    seconds: float
    calls: int = 0

    def __call__(self) -> dict[str, str]:
        self.calls += 1
        self.clock.advance(self.seconds)
        return {
            "access_key": "AKIDREFRESHED",
            "secret_key": "secret",
            "token": "token",
            "expiry_time": (self.clock.now() + dt.timedelta(hours=1)).isoformat(),
        }


class _Given(CredentialProvider):
    """The session's credential chain, finding the test's credentials first (as it would find IRSA's)."""

    METHOD = "test"

    def __init__(self, credentials: RefreshableCredentials) -> None:
        super().__init__()
        self.credentials = credentials

    def load(self) -> RefreshableCredentials:
        return self.credentials


def _world(refresh_seconds: float) -> tuple[FakeClock, Any, RefreshableCredentials, Wire, SlowRefresh, Any]:
    clock = FakeClock(START)
    refresh = SlowRefresh(clock, refresh_seconds)
    # Five minutes left: inside botocore's mandatory refresh window, so the next signature refreshes first.
    credentials = RefreshableCredentials(
        "AKIDOLD",
        "secret",
        "token",
        clock.now() + dt.timedelta(minutes=5),
        refresh,
        "test",
        time_fetcher=clock.now,
    )
    session = botocore.session.Session()
    session.get_component("credential_provider").insert_before("env", _Given(credentials))
    client = session.create_client("autoscaling", region_name="eu-west-1")
    wire = Wire(clock)
    elector = make_elector(InMemoryLeaseStore(), clock, "leader", config=ELECTION)
    assert elector.try_acquire_or_renew()
    return clock, client, credentials, wire, refresh, elector


def _autoscaling(client: Any, elector: Any, wire: Wire, credentials: Any = None) -> AutoScaling:
    asg = AutoScaling(client, fence=elector.fence, budget=BUDGET, credentials=credentials, sleep=lambda s: None)
    client.meta.events.register("before-send.auto-scaling", wire)  # after Spot Guard's own handler
    return asg


def test_a_capacity_change_within_the_budget_is_sent() -> None:
    clock, client, credentials, wire, refresh, elector = _world(refresh_seconds=0.5)
    asg = _autoscaling(client, elector, wire, credentials.get_frozen_credentials)

    asg.set_desired_capacity("spot-a", 4)

    assert wire.sent == [("SetDesiredCapacity", clock.monotonic())]
    assert refresh.calls == 1


def test_no_capacity_change_is_sent_once_the_fence_budget_is_spent() -> None:
    clock, client, credentials, wire, _, elector = _world(refresh_seconds=0.0)
    asg = _autoscaling(client, elector, wire, credentials.get_frozen_credentials)
    # 15 s lease - 3 s margin: from 12 s after the renew was sent a standby may take over before the request lands.
    clock.advance(ELECTION.lease_duration - ELECTION.fence_margin)

    with pytest.raises(NotLeaderError):
        asg.set_desired_capacity("spot-a", 4)
    with pytest.raises(NotLeaderError):
        asg.terminate_instance("i-0123456789abcdef0")

    assert wire.sent == []


def test_a_slow_credential_refresh_comes_before_the_fence_so_it_cannot_push_the_call_past_the_lease() -> None:
    clock, client, credentials, wire, refresh, elector = _world(refresh_seconds=11.0)
    asg = _autoscaling(client, elector, wire, credentials.get_frozen_credentials)
    clock.advance(2.0)  # 2 s after the renew: the fence alone would pass, but the refresh takes 11 s more

    with pytest.raises(NotLeaderError, match=r"renew was sent 13\.0s ago"):
        asg.set_desired_capacity("spot-a", 4)

    assert refresh.calls == 1
    assert wire.sent == []


def test_a_refresh_inside_the_sdk_is_caught_by_the_fence_just_before_sending() -> None:
    """No refresh hook given: the refresh happens while botocore signs, after the first fence check passed."""
    clock, client, _, wire, refresh, elector = _world(refresh_seconds=11.0)
    asg = _autoscaling(client, elector, wire, credentials=None)
    clock.advance(2.0)

    with pytest.raises(NotLeaderError, match=r"renew was sent 13\.0s ago"):
        asg.terminate_instance("i-0123456789abcdef0")

    assert refresh.calls == 1
    assert wire.sent == []


def test_a_failed_refresh_is_an_aws_error_and_nothing_is_sent() -> None:
    _, client, _, wire, _, elector = _world(refresh_seconds=0.0)

    def broken() -> object:
        raise botocore.exceptions.CredentialRetrievalError(provider="sts", error_msg="connection refused")

    asg = _autoscaling(client, elector, wire, broken)

    with pytest.raises(AwsError, match="refreshing the AWS credentials failed"):
        asg.set_desired_capacity("spot-a", 4)
    assert wire.sent == []


def test_a_client_shared_by_two_instances_is_fenced_by_each_for_its_own_calls_only() -> None:
    """A deposed instance's fence must not refuse the leader's calls when both were handed one client."""
    clock, client, credentials, wire, _, elector = _world(refresh_seconds=0.0)

    def deposed(operation: str) -> None:
        raise NotLeaderError(f"deposed; refusing {operation}", identity="old", holder="new", seconds_since_renew=30)

    old = AutoScaling(client, fence=deposed, budget=BUDGET, sleep=lambda s: None)
    leader = _autoscaling(client, elector, wire, credentials.get_frozen_credentials)

    with pytest.raises(NotLeaderError):
        old.terminate_instance("i-0123456789abcdef0")
    leader.terminate_instance("i-0123456789abcdef0")

    assert wire.sent == [("TerminateInstanceInAutoScalingGroup", clock.monotonic())]


@settings(max_examples=25, deadline=None)
@given(
    idle=st.floats(min_value=0.0, max_value=20.0),
    refresh_seconds=st.floats(min_value=0.0, max_value=20.0),
    inside_sdk=st.booleans(),
)
def test_whatever_the_delays_a_sent_request_lands_before_a_standby_may_take_over(
    idle: float, refresh_seconds: float, inside_sdk: bool
) -> None:
    clock, client, credentials, wire, _, elector = _world(refresh_seconds=refresh_seconds)
    renewed_at = clock.monotonic()
    asg = _autoscaling(client, elector, wire, None if inside_sdk else credentials.get_frozen_credentials)
    clock.advance(idle)

    try:
        asg.set_desired_capacity("spot-a", 4)
    except NotLeaderError:
        assert wire.sent == []
        return
    ((_, sent_at),) = wire.sent
    # Written within the request window of the last fence check, with the allowance still to spare.
    assert sent_at + BUDGET.request_window + FENCE_ALLOWANCE <= renewed_at + ELECTION.lease_duration


@pytest.mark.parametrize(
    ("timings", "field", "complaint"),
    [
        ({"connect_timeout": float("nan")}, "connect_timeout", "finite"),
        ({"read_timeout": float("inf")}, "read_timeout", "finite"),
        ({"connect_timeout": 0}, "connect_timeout", "positive"),
        ({"connect_timeout": 5.0, "fence_margin": 3.0}, "fence_margin", r"at least 10\.5s"),
        ({"connect_timeout": 1.0, "fence_margin": 2.4}, "fence_margin", r"at least 2\.5s"),
    ],
)
def test_a_budget_the_fence_cannot_cover_is_refused_when_made(
    timings: dict[str, float], field: str, complaint: str
) -> None:
    with pytest.raises(InvalidCallBudgetError, match=complaint) as raised:
        CallBudget(**timings)
    assert raised.value.field == field


def test_the_default_budget_fits_the_default_election() -> None:
    budget, election = CallBudget(), ElectionConfig()
    assert budget.fence_margin == election.fence_margin
    assert budget.request_window + 0.5 <= budget.fence_margin
