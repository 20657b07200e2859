"""nodewatch on every node: IMDS instance-life-cycle decides whether it watches (spot) or idles (not spot)."""

from __future__ import annotations

import logging
import random
import threading

import pytest

from nodewatch import annotations as keys
from nodewatch.agent import IDLE_WAIT, Agent, AgentTiming
from nodewatch.clock import ManualClock
from tests.support.faulty_imds import (
    INSTANCE_ACTION_PATH,
    INSTANCE_LIFE_CYCLE_PATH,
    REBALANCE_PATH,
    TOKEN_PATH,
    FaultyIMDS,
    Status,
)
from tests.unit.nodewatch.conftest import MakeClient
from tests.unit.nodewatch.fake_nodes import RecordingNodes

NODE = "ip-10-0-0-2.ec2.internal"
TIMING = AgentTiming(poll_interval=2.0, max_backoff=10.0, unready_after=30.0)


def agent_for(imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock, nodes: RecordingNodes) -> Agent:
    return Agent(NODE, make_client(url=imds.url, attempts=1), nodes, timing=TIMING, clock=clock, rng=random.Random(5))  # noqa: S311


def run_until_stopped(agent: Agent, clock: ManualClock, polls: int) -> list[float]:
    """Run the loop, stopping it at its ``polls``-th pause; the pauses it asked for."""
    stop = threading.Event()
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock.advance(seconds)
        if len(waits) == polls:
            stop.set()
        return stop.is_set()

    agent.run(stop, wait=wait)
    return waits


@pytest.mark.parametrize("life_cycle", ["on-demand", "scheduled", "capacity-block"])
def test_on_an_instance_that_is_not_spot_nodewatch_idles_and_says_why(
    life_cycle: str, make_client: MakeClient, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nodewatch")
    nodes = RecordingNodes()
    with FaultyIMDS(life_cycle=life_cycle) as imds:
        imds.set_rebalance("2025-01-15T10:00:00Z")  # never read: AWS would not send it to such an instance
        agent = agent_for(imds, make_client, clock, nodes)
        waits = run_until_stopped(agent, clock, polls=3)
        gets = [request.path for request in imds.requests if request.method == "GET"]

    assert gets == [INSTANCE_LIFE_CYCLE_PATH]  # one look, then nothing more
    assert waits == [IDLE_WAIT] * 3  # asleep until asked to stop
    assert nodes.gets == 0 and nodes.patch_attempts == 0  # never a call to the API server
    ready, why = agent.readiness()
    assert ready is True  # an idle pod is Ready: a DaemonSet rollout must not wait for it
    assert why.startswith(f"idle: this is an {life_cycle} instance (IMDS instance-life-cycle={life_cycle})")
    assert NODE in why
    assert agent.liveness()[0] is True
    assert agent.metrics.registry.get_sample_value("spotguard_nodewatch_idle") == 1
    assert agent.metrics.registry.get_sample_value("spotguard_nodewatch_ready") == 1
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("idle:")] == [why]


def test_on_a_spot_instance_nodewatch_watches_and_records_notices(make_client: MakeClient, clock: ManualClock) -> None:
    nodes = RecordingNodes()
    with FaultyIMDS(life_cycle="spot") as imds:
        imds.set_rebalance("2025-01-15T10:00:00Z")
        agent = agent_for(imds, make_client, clock, nodes)
        waits = run_until_stopped(agent, clock, polls=3)
        life_cycle_reads = imds.count("GET", INSTANCE_LIFE_CYCLE_PATH)
        rebalance_reads = imds.count("GET", REBALANCE_PATH)

    assert waits == [TIMING.poll_interval] * 3
    assert (life_cycle_reads, rebalance_reads) == (1, 3)  # the life cycle once, the notices every poll
    assert nodes.patches and nodes.patches[0][keys.REBALANCE_NOTICE_TIME] == "2025-01-15T10:00:00Z"
    assert agent.idle_reason is None
    assert agent.readiness() == (True, "ready")
    assert agent.metrics.registry.get_sample_value("spotguard_nodewatch_idle") == 0


@pytest.mark.parametrize("life_cycle", [None, "dedicated-spot-2030"], ids=["absent", "unknown"])
def test_an_imds_that_does_not_tell_a_known_option_is_watched_as_spot_with_a_warning(
    life_cycle: str | None, make_client: MakeClient, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = RecordingNodes()
    with FaultyIMDS(life_cycle=life_cycle) as imds:
        imds.set_interruption("terminate")
        agent = agent_for(imds, make_client, clock, nodes)
        run_until_stopped(agent, clock, polls=2)
        assert imds.count("GET", INSTANCE_ACTION_PATH) == 2

    assert agent.idle_reason is None
    assert nodes.patches and nodes.patches[0][keys.INTERRUPTION_ACTION] == "terminate"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "watching for notices as on a spot instance" in warnings[0]


def test_until_imds_tells_the_life_cycle_nodewatch_is_not_ready_and_keeps_asking(
    make_client: MakeClient, clock: ManualClock
) -> None:
    nodes = RecordingNodes()
    with FaultyIMDS(life_cycle="on-demand") as imds:
        imds.inject(INSTANCE_LIFE_CYCLE_PATH, Status(500), times=3)
        agent = agent_for(imds, make_client, clock, nodes)
        for _ in range(3):
            agent.poll_once()
            clock.advance(agent.next_delay())
        ready, why = agent.readiness()
        assert ready is False and "HTTP 500" in why
        assert agent.metrics.registry.get_sample_value("spotguard_nodewatch_idle") == 0
        agent.poll_once()
        assert imds.count("GET", INSTANCE_LIFE_CYCLE_PATH) == 4
        assert imds.count("PUT", TOKEN_PATH) >= 1

    assert agent.readiness()[1].startswith("idle: this is an on-demand instance")
    assert nodes.gets == 0
