"""The controller's metrics: what each recording method counts, the SGFE gauges computed at scrape time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from controller.adapters.aws import AutoScaling, AwsError
from controller.clock import FakeClock
from controller.observability.metrics import (
    SGFE_PHASES,
    SGFE_UNFINISHED_PHASES,
    CapacityType,
    FallbackEventAge,
    Metrics,
    ScaleUpResult,
)

CRD = Path(__file__).resolve().parents[4] / "manifests" / "crd-spotguardfallbackevent.yaml"


def value(metrics: Metrics, metric: str, /, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


class DeniedClient:
    """An Auto Scaling client whose every call is refused by IAM."""

    def describe_scaling_activities(self, **kwargs: Any) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, "DescribeScalingActivities")

    def set_desired_capacity(self, **kwargs: Any) -> dict[str, Any]:
        raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "SetDesiredCapacity")


def test_aws_calls_and_errors_are_counted_through_the_on_call_hook() -> None:
    metrics = Metrics(process_metrics=False)
    autoscaling = AutoScaling(DeniedClient(), on_call=metrics.aws_call, max_attempts=3, sleep=lambda _: None)

    with pytest.raises(AwsError):
        autoscaling.activities("spot-a")
    with pytest.raises(AwsError):
        autoscaling.set_desired_capacity("spot-a", 4)

    assert value(metrics, "spotguard_aws_calls_total", operation="DescribeScalingActivities") == 1
    assert value(metrics, "spotguard_aws_errors_total", operation="DescribeScalingActivities", code="AccessDenied") == 1
    # Throttling is retried: every attempt is a call and an error.
    assert value(metrics, "spotguard_aws_calls_total", operation="SetDesiredCapacity") == 3
    assert value(metrics, "spotguard_aws_errors_total", operation="SetDesiredCapacity", code="Throttling") == 3


def test_a_successful_aws_call_counts_no_error() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.aws_call("DescribeAutoScalingGroups", None)
    assert value(metrics, "spotguard_aws_calls_total", operation="DescribeAutoScalingGroups") == 1
    assert value(metrics, "spotguard_aws_errors_total", operation="DescribeAutoScalingGroups", code="AccessDenied") == 0


def test_access_denied_series_exist_before_the_first_error() -> None:
    metrics = Metrics(process_metrics=False)
    assert value(metrics, "spotguard_aws_errors_total", operation="SetDesiredCapacity", code="AccessDenied") == 0
    assert (
        value(
            metrics,
            "spotguard_aws_errors_total",
            operation="TerminateInstanceInAutoScalingGroup",
            code="UnauthorizedOperation",
        )
        == 0
    )


def test_a_group_pair_gets_zero_series_then_counts_scale_ups_and_fallbacks() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.prepare_group_pair("spot-a", "od-a")
    assert value(metrics, "spotguard_scale_up_attempts_total", asg="od-a", capacity_type="on-demand") == 0
    for result in ScaleUpResult.ALL:
        assert (
            value(metrics, "spotguard_scale_up_results_total", asg="spot-a", capacity_type="spot", result=result) == 0
        )
    assert value(metrics, "spotguard_fallbacks_total", spot_asg="spot-a", on_demand_asg="od-a", reason="timeout") == 0

    metrics.scale_up_started("spot-a", CapacityType.SPOT)
    metrics.scale_up_finished("spot-a", CapacityType.SPOT, ScaleUpResult.NO_CAPACITY)
    metrics.fell_back("spot-a", "od-a", "no_capacity")
    metrics.scale_up_started("od-a", CapacityType.ON_DEMAND)
    metrics.scale_up_finished("od-a", CapacityType.ON_DEMAND, ScaleUpResult.SUCCESS)

    assert value(metrics, "spotguard_scale_up_attempts_total", asg="spot-a", capacity_type="spot") == 1
    assert (
        value(metrics, "spotguard_scale_up_results_total", asg="spot-a", capacity_type="spot", result="no_capacity")
        == 1
    )
    assert (
        value(metrics, "spotguard_scale_up_results_total", asg="od-a", capacity_type="on-demand", result="success") == 1
    )
    assert (
        value(metrics, "spotguard_fallbacks_total", spot_asg="spot-a", on_demand_asg="od-a", reason="no_capacity") == 1
    )


def test_an_active_instance_refresh_shows_in_its_gauge_until_it_ends() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.prepare_group_pair("spot-a", "od-a")
    assert value(metrics, "spotguard_instance_refresh_active", asg="spot-a") == 0
    metrics.instance_refresh("spot-a", True)
    assert value(metrics, "spotguard_instance_refresh_active", asg="spot-a") == 1
    assert value(metrics, "spotguard_instance_refresh_active", asg="od-a") == 0
    metrics.instance_refresh("spot-a", False)
    assert value(metrics, "spotguard_instance_refresh_active", asg="spot-a") == 0


def test_durations_land_in_their_histograms() -> None:
    metrics = Metrics(process_metrics=False)
    metrics.replacement_ready(CapacityType.SPOT, 75.0)
    metrics.replacement_ready(CapacityType.ON_DEMAND, -3.0)  # skewed clocks: counted as 0
    metrics.fallback_completed(5 * 3600.0)

    ready = "spotguard_replacement_ready_seconds"
    assert value(metrics, ready + "_bucket", capacity_type="spot", le="60.0") == 0
    assert value(metrics, ready + "_bucket", capacity_type="spot", le="90.0") == 1
    assert value(metrics, ready + "_sum", capacity_type="on-demand") == 0
    assert value(metrics, ready + "_count", capacity_type="on-demand") == 1
    completed = "spotguard_fallback_completed_seconds"
    assert value(metrics, completed + "_bucket", le="14400.0") == 0
    assert value(metrics, completed + "_bucket", le="28800.0") == 1


def test_leadership_changes_count_as_transitions() -> None:
    metrics = Metrics(process_metrics=False)
    assert value(metrics, "spotguard_leader") == 0

    metrics.set_leader(False)  # still a standby: no transition
    metrics.set_leader(True)
    metrics.set_leader(True)
    assert value(metrics, "spotguard_leader") == 1
    metrics.set_leader(False)

    assert value(metrics, "spotguard_leader") == 0
    assert value(metrics, "spotguard_leader_transitions_total") == 2


def test_refusals_failures_drains_evictions_and_pause() -> None:
    metrics = Metrics(process_metrics=False)
    assert value(metrics, "spotguard_refusals_total", reason="capacity_rebalance_enabled") == 0

    metrics.refused("capacity_rebalance_enabled")
    metrics.replacement_failed("no_capacity")
    metrics.drains.labels("timeout").inc()
    metrics.evictions.labels("blocked").inc(2)
    metrics.set_paused(True)

    assert value(metrics, "spotguard_refusals_total", reason="capacity_rebalance_enabled") == 1
    assert value(metrics, "spotguard_replacement_failures_total", reason="no_capacity") == 1
    assert value(metrics, "spotguard_drains_total", result="timeout") == 1
    assert value(metrics, "spotguard_drains_total", result="success") == 0
    assert value(metrics, "spotguard_evictions_total", result="blocked") == 2
    assert value(metrics, "spotguard_paused") == 1


def test_fallback_event_gauges_are_computed_at_scrape_time(clock: FakeClock) -> None:
    metrics = Metrics(clock, process_metrics=False)
    now = clock.now()
    metrics.set_fallback_events(
        [
            FallbackEventAge("sgfe-old", "Monitoring", now - dt.timedelta(hours=7), now - dt.timedelta(hours=6)),
            FallbackEventAge("sgfe-new", "ScalingDown", now - dt.timedelta(hours=1), now - dt.timedelta(minutes=10)),
            FallbackEventAge("sgfe-done", "Completed", now - dt.timedelta(days=2), now - dt.timedelta(days=1)),
        ]
    )
    assert value(metrics, "spotguard_fallback_events", phase="Monitoring") == 1
    assert value(metrics, "spotguard_fallback_events", phase="Completed") == 1
    assert value(metrics, "spotguard_fallback_events", phase="Pending") == 0
    assert value(metrics, "spotguard_oldest_unfinished_fallback_event_age_seconds") == 7 * 3600
    assert value(metrics, "spotguard_fallback_event_phase_age_seconds", name="sgfe-new", phase="ScalingDown") == 600
    assert value(metrics, "spotguard_fallback_event_phase_age_seconds", name="sgfe-done", phase="Completed") is None

    clock.advance(60)  # no new snapshot: the ages still grow

    assert value(metrics, "spotguard_oldest_unfinished_fallback_event_age_seconds") == 7 * 3600 + 60
    assert value(metrics, "spotguard_fallback_event_phase_age_seconds", name="sgfe-new", phase="ScalingDown") == 660


def test_cleared_fallback_events_leave_zero_counts_and_no_ages(clock: FakeClock) -> None:
    metrics = Metrics(clock, process_metrics=False)
    metrics.set_fallback_events([FallbackEventAge("sgfe-1", "Pending", clock.now(), clock.now())])
    metrics.clear_fallback_events()

    for phase in SGFE_PHASES:
        assert value(metrics, "spotguard_fallback_events", phase=phase) == 0
    assert value(metrics, "spotguard_oldest_unfinished_fallback_event_age_seconds") == 0
    assert value(metrics, "spotguard_fallback_event_phase_age_seconds", name="sgfe-1", phase="Pending") is None


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(process_metrics=False), Metrics(process_metrics=False)
    first.refused("paused")
    assert value(first, "spotguard_refusals_total", reason="paused") == 1
    assert value(second, "spotguard_refusals_total", reason="paused") == 0


def test_the_phase_names_are_the_crds() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert tuple(schema["properties"]["status"]["properties"]["phase"]["enum"]) == SGFE_PHASES
    assert set(SGFE_UNFINISHED_PHASES) == set(SGFE_PHASES) - {"Completed", "Failed"}
