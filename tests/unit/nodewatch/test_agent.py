"""The poll loop against the fault-injecting IMDS: patches, backoff, once-only logging, readiness."""

from __future__ import annotations

import logging
import random
import threading

import pytest

from nodewatch import annotations as keys
from nodewatch.agent import Agent, AgentTiming
from nodewatch.clock import ManualClock
from nodewatch.imds import InterruptionNotice, RebalanceRecommendation
from tests.support.faulty_imds import (
    INSTANCE_ACTION_PATH,
    REBALANCE_PATH,
    FaultyIMDS,
    Garbage,
    Hangup,
    IMDSMode,
    Status,
)
from tests.unit.nodewatch.conftest import MakeClient
from tests.unit.nodewatch.fake_nodes import RecordingNodes

NODE = "ip-10-0-0-1.ec2.internal"
START = "2025-01-15T10:00:00Z"  # ManualClock's wall time
IDENTITY = {keys.INSTANCE_ID: "i-0123456789abcdef0", keys.AVAILABILITY_ZONE: "us-east-1a"}
TIMING = AgentTiming(poll_interval=2.0, max_backoff=10.0, unready_after=30.0)


def make_agent(make_client: MakeClient, clock: ManualClock, nodes: RecordingNodes, **client_options: object) -> Agent:
    return Agent(
        NODE,
        make_client(**client_options),
        nodes,
        timing=TIMING,
        clock=clock,
        rng=random.Random(3),  # noqa: S311
    )


def poll(agent: Agent, clock: ManualClock, times: int = 1) -> None:
    for _ in range(times):
        agent.poll_once()
        clock.advance(agent.next_delay())


def test_a_node_without_notices_is_never_patched(imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock) -> None:
    nodes = RecordingNodes()
    poll(make_agent(make_client, clock, nodes), clock, times=5)
    assert nodes.patches == []
    assert nodes.gets == 1


def test_notice_appear_disappear_reappear_produce_exactly_these_patches(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    nodes = RecordingNodes()
    agent = make_agent(make_client, clock, nodes)
    poll(agent, clock)

    imds.set_rebalance("2025-01-15T09:59:58Z")
    poll(agent, clock, times=3)  # first sighting at 10:00:02, then unchanged
    imds.set_rebalance(None)
    poll(agent, clock, times=2)  # gone at 10:00:08
    imds.set_rebalance("2025-01-15T09:59:58Z")
    poll(agent, clock)  # back at 10:00:12

    assert nodes.patches == [
        {
            keys.REBALANCE_NOTICE_TIME: "2025-01-15T09:59:58Z",
            keys.REBALANCE_FIRST_SEEN: "2025-01-15T10:00:02Z",
            **IDENTITY,
        },
        {keys.REBALANCE_CLEARED: "2025-01-15T10:00:08Z"},
        {
            keys.REBALANCE_NOTICE_TIME: "2025-01-15T09:59:58Z",
            keys.REBALANCE_FIRST_SEEN: "2025-01-15T10:00:12Z",
            keys.REBALANCE_CLEARED: None,
        },
    ]
    assert nodes.annotations["kubeadm.alpha.kubernetes.io/cri-socket"] == "unix:///run/c.sock"


def test_interruption_notice_is_recorded_with_action_and_time(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    imds.set_interruption("hibernate", "2025-01-15T10:02:00Z")
    nodes = RecordingNodes()
    poll(make_agent(make_client, clock, nodes), clock, times=2)

    assert nodes.patches == [
        {
            keys.INTERRUPTION_ACTION: "hibernate",
            keys.INTERRUPTION_TIME: "2025-01-15T10:02:00Z",
            keys.INTERRUPTION_FIRST_SEEN: START,
            **IDENTITY,
        }
    ]


def test_a_restarted_agent_keeps_recorded_first_seen_and_does_not_patch(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    imds.set_rebalance("2025-01-15T09:00:00Z")
    recorded = {
        keys.REBALANCE_NOTICE_TIME: "2025-01-15T09:00:00Z",
        keys.REBALANCE_FIRST_SEEN: "2025-01-15T09:00:01Z",
        **IDENTITY,
    }
    nodes = RecordingNodes(recorded)
    poll(make_agent(make_client, clock, nodes), clock, times=3)
    assert nodes.patches == []
    assert nodes.annotations[keys.REBALANCE_FIRST_SEEN] == "2025-01-15T09:00:01Z"


def test_a_restarted_agent_records_a_notice_that_went_away_while_it_was_down(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    recorded = {keys.REBALANCE_NOTICE_TIME: "2025-01-15T09:00:00Z", keys.REBALANCE_FIRST_SEEN: "2025-01-15T09:00:01Z"}
    nodes = RecordingNodes({**recorded, **IDENTITY})
    poll(make_agent(make_client, clock, nodes), clock)
    assert nodes.patches == [{keys.REBALANCE_CLEARED: START}]


def test_a_failed_patch_is_retried_with_backoff_and_the_original_first_seen(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    imds.set_rebalance("2025-01-15T09:59:59Z")
    nodes = RecordingNodes()
    nodes.fail_next("get")
    nodes.fail_next("patch")
    agent = make_agent(make_client, clock, nodes)

    poll(agent, clock, times=12)  # 24 s of polling

    assert nodes.patches == [
        {keys.REBALANCE_NOTICE_TIME: "2025-01-15T09:59:59Z", keys.REBALANCE_FIRST_SEEN: START, **IDENTITY}
    ]
    assert nodes.gets == 2
    assert nodes.patch_attempts == 2


def test_a_failing_api_server_gets_backoff_not_a_retry_every_poll(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    imds.set_rebalance("2025-01-15T09:59:59Z")
    nodes = RecordingNodes()
    nodes.fail_next("patch", times=1000)
    agent = make_agent(make_client, clock, nodes)

    poll(agent, clock, times=60)  # two minutes of polling every 2 s

    assert 5 <= nodes.patch_attempts <= 16  # backoff grows to --max-backoff (10 s): about one try per 10 s
    assert agent.next_delay() == TIMING.poll_interval  # IMDS polling itself keeps its pace


def test_no_patch_before_the_recorded_annotations_are_known(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    imds.set_rebalance("2025-01-15T09:00:00Z")
    recorded = {keys.REBALANCE_NOTICE_TIME: "2025-01-15T09:00:00Z", keys.REBALANCE_FIRST_SEEN: "2025-01-15T09:00:01Z"}
    nodes = RecordingNodes({**recorded, **IDENTITY})
    nodes.fail_next("get", times=3)
    poll(make_agent(make_client, clock, nodes), clock, times=15)

    assert nodes.patch_attempts == 0  # it never overwrote the first-seen time it could not read
    assert nodes.gets == 4


def test_one_imds_read_failing_does_not_block_the_other_notice(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    imds.inject(REBALANCE_PATH, Garbage())
    imds.set_interruption("terminate", "2025-01-15T10:02:00Z")
    nodes = RecordingNodes()
    poll(make_agent(make_client, clock, nodes), clock)
    assert [set(patch) & {keys.INTERRUPTION_ACTION, keys.REBALANCE_NOTICE_TIME} for patch in nodes.patches] == [
        {keys.INTERRUPTION_ACTION}
    ]


def test_unreachable_imds_is_not_asked_again_within_the_same_poll(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    imds.inject(INSTANCE_ACTION_PATH, Hangup())
    poll(make_agent(make_client, clock, RecordingNodes(), attempts=1), clock)
    assert imds.count("GET", INSTANCE_ACTION_PATH) == 1
    assert imds.count("GET", REBALANCE_PATH) == 0


def test_each_distinct_error_is_logged_once_and_recovery_once(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nodewatch")
    agent = make_agent(make_client, clock, RecordingNodes(), attempts=1)
    imds.inject(REBALANCE_PATH, Status(503))
    poll(agent, clock, times=5)
    imds.inject(INSTANCE_ACTION_PATH, Garbage(b"not json"))
    poll(agent, clock, times=5)
    imds.clear_faults()
    poll(agent, clock, times=3)

    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "HTTP 503" in warnings[0].getMessage()
    assert REBALANCE_PATH in warnings[0].getMessage()
    assert "not JSON" in warnings[1].getMessage()
    assert all("keeps polling" in record.getMessage() for record in warnings)
    recovered = [record for record in caplog.records if "works again" in record.getMessage()]
    assert len(recovered) == 1


def test_readiness_fails_after_a_sustained_outage_and_recovers_by_itself(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    agent = make_agent(make_client, clock, RecordingNodes(), attempts=1)
    assert agent.readiness()[0] is False  # nothing polled yet
    poll(agent, clock)
    assert agent.readiness() == (True, "ready")

    imds.inject(INSTANCE_ACTION_PATH, Status(500))
    imds.inject(REBALANCE_PATH, Status(500))
    poll(agent, clock, times=3)
    assert agent.readiness()[0] is True  # a short outage is tolerated
    while clock.monotonic() < 1000.0 + 2.0 + TIMING.unready_after + 1:
        poll(agent, clock)
    ready, why = agent.readiness()
    assert ready is False
    assert "no successful IMDS poll" in why
    assert "HTTP 500" in why
    assert agent.metrics.registry.get_sample_value("spotguard_nodewatch_ready") == 0

    imds.clear_faults()
    poll(agent, clock)
    assert agent.readiness() == (True, "ready")
    assert agent.metrics.registry.get_sample_value("spotguard_nodewatch_ready") == 1


def test_imdsv1_only_endpoint_without_fallback_keeps_running_not_ready(
    make_client: MakeClient, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    with FaultyIMDS(IMDSMode.V1_ONLY) as v1_only:
        agent = make_agent(make_client, clock, RecordingNodes(), url=v1_only.url)
        poll(agent, clock, times=20)
        ready, why = agent.readiness()
        assert v1_only.count("GET", REBALANCE_PATH) == 0
        assert v1_only.token_requests == 20  # one token request per poll, each answered 405
    assert ready is False
    assert "--imds-v1-fallback" in why
    assert len([record for record in caplog.records if record.levelno == logging.WARNING]) == 1


def test_polling_backs_off_while_failing_and_returns_to_the_interval(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    agent = make_agent(make_client, clock, RecordingNodes(), attempts=1)
    imds.inject(INSTANCE_ACTION_PATH, Status(503))
    delays = []
    for _ in range(6):
        agent.poll_once()
        delays.append(agent.next_delay())
        clock.advance(delays[-1])
    assert delays[0] > TIMING.poll_interval
    assert delays[-1] > delays[0]
    assert max(delays) <= TIMING.max_backoff

    imds.clear_faults()
    agent.poll_once()
    assert agent.next_delay() == TIMING.poll_interval


def test_metrics_count_polls_notices_and_errors(imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock) -> None:
    nodes = RecordingNodes()
    nodes.fail_next("get")
    agent = make_agent(make_client, clock, nodes, attempts=1)
    imds.set_interruption("terminate", "2025-01-15T10:02:00Z")
    poll(agent, clock, times=2)
    last_good_poll = clock.now().timestamp() - TIMING.poll_interval
    imds.inject(REBALANCE_PATH, Garbage())
    poll(agent, clock)

    def sample(name: str, **labels: str) -> float | None:
        return agent.metrics.registry.get_sample_value(name, labels)

    assert sample("spotguard_nodewatch_polls_total", result="ok") == 2
    assert sample("spotguard_nodewatch_polls_total", result="error") == 1
    assert sample("spotguard_nodewatch_notices_total", kind="interruption") == 1
    assert sample("spotguard_nodewatch_notices_total", kind="rebalance") == 0
    assert sample("spotguard_nodewatch_notice_active", kind="interruption") == 1
    assert sample("spotguard_nodewatch_imds_errors_total", kind="malformed") == 1
    assert sample("spotguard_nodewatch_node_read_errors_total", kind="server_error") == 1
    assert sample("spotguard_nodewatch_node_patches_total") == 1
    assert sample("spotguard_nodewatch_last_good_poll_timestamp_seconds") == last_good_poll


class _ExplodingIMDS:
    def interruption_notice(self) -> InterruptionNotice | None:
        raise RuntimeError("boom")

    def rebalance_recommendation(self) -> RebalanceRecommendation | None:
        return None

    def instance_id(self) -> str:
        return "i-0123456789abcdef0"

    def availability_zone(self) -> str:
        return "us-east-1a"

    def instance_life_cycle(self) -> str | None:
        return "spot"


def test_the_loop_survives_unexpected_errors_and_stops_when_asked(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    agent = Agent(NODE, _ExplodingIMDS(), RecordingNodes(), timing=TIMING, clock=clock)
    stop = threading.Event()
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock.advance(seconds)
        if len(waits) == 5:
            stop.set()
        return stop.is_set()

    agent.run(stop, wait=wait)

    assert len(waits) == 5
    assert agent.metrics.registry.get_sample_value("spotguard_nodewatch_internal_errors_total") == 5
    logged = [record for record in caplog.records if "RuntimeError" in record.getMessage()]
    assert len(logged) == 1
    assert logged[0].exc_info is not None


def test_liveness_fails_only_when_the_loop_stops_polling(
    imds: FaultyIMDS, make_client: MakeClient, clock: ManualClock
) -> None:
    agent = make_agent(make_client, clock, RecordingNodes(), attempts=1)
    imds.inject(INSTANCE_ACTION_PATH, Status(500))
    poll(agent, clock, times=30)
    assert agent.liveness() == (True, "ok")  # failing IMDS is not a reason to restart the pod
    clock.advance(TIMING.stall_after + 1)
    alive, why = agent.liveness()
    assert alive is False
    assert "stuck" in why
