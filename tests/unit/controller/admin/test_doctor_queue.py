"""``spotguard doctor``'s check of the EC2 events queue against moto's SQS and EventBridge: the queue answers and
rules send it every event the controller reads; a missing rule, or a queue that is not there, says what to do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from controller.admin.doctor import FAIL, PASS, WARN, Doctor, DoctorOptions
from controller.clock import FakeClock
from sandbox.aws.event_queue import create_event_queue

REGION = "us-east-1"


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        events = boto3.client("events", region_name=REGION)
        yield {"sqs": sqs, "events": events, "url": create_event_queue(sqs, events)}


def _doctor(url: str) -> Doctor:
    return Doctor(
        DoctorOptions(queue_url=url),
        kube=None,
        rbac_kube=None,
        aws=lambda service: boto3.client(service, region_name=REGION),  # type: ignore[call-overload]
        clock=FakeClock(),
    )


def test_a_readable_queue_with_its_rules_passes(aws: dict[str, Any]) -> None:
    findings = _doctor(aws["url"]).check_queue()
    assert [(f.check, f.status) for f in findings] == [("queue", PASS), ("queue-rules", PASS)], findings
    assert "spotguard-rebalance" in findings[1].finding


def test_a_missing_rule_is_a_warning_naming_the_event(aws: dict[str, Any]) -> None:
    aws["events"].remove_targets(Rule="spotguard-interruption", Ids=["spotguard-queue"])
    findings = _doctor(aws["url"]).check_queue()
    assert findings[1].status == WARN
    assert "EC2 Spot Instance Interruption Warning" in findings[1].finding
    assert "docs/install.md" in findings[1].what_to_do


def test_a_queue_that_is_not_there_fails_saying_what_to_do(aws: dict[str, Any]) -> None:
    url = aws["url"].rsplit("/", 1)[0] + "/not-there"
    findings = _doctor(url).check_queue()
    assert [(f.check, f.status) for f in findings] == [("queue", FAIL)], findings
    assert "create the queue" in findings[0].what_to_do
