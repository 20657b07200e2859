"""manifests/iam-policy.json against moto's IAM enforcement: every Auto Scaling call the controller makes
(controller/adapters/aws.py) is allowed for groups tagged spotguard.io/managed=true, capacity changes of any other group
are denied, the EC2 events queue (controller/adapters/sqs.py) is read on the one queue named in the policy only, and
nothing else is granted.

moto checks actions against the policy but cannot evaluate the ``autoscaling:ResourceTag/<key>`` condition (it
knows no condition keys for Auto Scaling and treats a missing key as a match). ``asg_tag_conditions`` fills
that gap the way AWS does: the request's group (named, or the group of the named instance) supplies its tags as
``autoscaling:ResourceTag/<key>``, and a condition on a key the request does not carry is not met.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.autoscaling.models import autoscaling_backends
from moto.core import enable_iam_authentication
from moto.iam.access_control import IAMPolicyStatement, IAMRequest

from controller.adapters.aws import AutoScaling, AwsError
from controller.adapters.sqs import ACCESS_DENIED, EventQueue, QueueError

REPO = Path(__file__).resolve().parents[2]
POLICY_FILE = REPO / "manifests" / "iam-policy.json"
AWS_MODULE = REPO / "controller" / "adapters" / "aws.py"
SQS_MODULE = REPO / "controller" / "adapters" / "sqs.py"
QUEUE = "spotguard-ec2-events"  # the queue docs/install.md creates
REGION = "us-east-1"
IMAGE = "ami-0123456789abcdef0"  # moto launches any image id; its default AMIs may be switched off
MANAGED_TAG = "spotguard.io/managed"
#: The capacity-changing calls; the policy must condition them on the tag.
MUTATING = {"autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"}

_request_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("asg_request", default=None)


def policy() -> dict[str, Any]:
    return dict(json.loads(POLICY_FILE.read_text()))


def operations_called_by_the_controller() -> set[str]:
    """Every operation name controller/adapters/aws.py passes to AutoScaling._call (the one path to AWS)."""
    names = set(re.findall(r'self\._call\(\s*"(\w+)"', AWS_MODULE.read_text()))
    assert names, "found no AutoScaling._call in controller/adapters/aws.py: update this test with the module"
    queue = set(re.findall(r'self\._call\(\s*"(\w+)"', SQS_MODULE.read_text()))
    assert queue, "found no EventQueue._call in controller/adapters/sqs.py: update this test with the module"
    # DeleteMessageBatch is authorized as sqs:DeleteMessage (there is no IAM action of the batch's name).
    queue = {"DeleteMessage" if name == "DeleteMessageBatch" else name for name in queue}
    return {f"autoscaling:{name}" for name in names} | {f"sqs:{name}" for name in queue}


def _asg_of_request(data: Mapping[str, Any], account_id: str) -> Any:
    backend = autoscaling_backends[account_id][REGION]

    def first(key: str) -> str | None:
        value = data.get(key)
        if isinstance(value, list):
            return str(value[0]) if value else None
        return None if value is None else str(value)

    name = first("AutoScalingGroupName")
    if name is not None:
        return backend.autoscaling_groups.get(name)
    instance_id = first("InstanceId")
    if instance_id is not None:
        for group in backend.autoscaling_groups.values():
            if any(state.instance.id == instance_id for state in group.instance_states):
                return group
    return None


@pytest.fixture(scope="module")
def asg_tag_conditions() -> Iterator[None]:
    """Teach moto's IAM check the ``autoscaling:ResourceTag/<key>`` condition keys, with AWS's semantics."""
    original_check = IAMRequest.check_action_permitted

    def check_action_permitted(self: IAMRequest, resource: str) -> None:
        group = _asg_of_request(self._data, self.account_id)
        context = {}
        if group is not None:
            context = {f"autoscaling:ResourceTag/{tag['Key']}": str(tag.get("Value", "")) for tag in group.tags}
        token = _request_context.set(context)
        try:
            original_check(self, resource)
        finally:
            _request_context.reset(token)

    def check_conditions(self: IAMPolicyStatement, _incoming: object) -> bool:
        conditions: Mapping[str, Mapping[str, Any]] = self._statement.get("Condition") or {}
        context = _request_context.get() or {}
        for operator, keys in conditions.items():
            if operator != "StringEquals":
                raise AssertionError(f"this test evaluates StringEquals conditions only, not {operator}")
            for key, expected in keys.items():
                allowed = expected if isinstance(expected, list) else [expected]
                if key not in context or context[key] not in allowed:
                    return False
        return True

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(IAMRequest, "check_action_permitted", check_action_permitted)
        patch.setattr(IAMPolicyStatement, "_check_conditions", check_conditions)
        yield


@pytest.fixture(scope="module")
def aws(asg_tag_conditions: None) -> Iterator[dict[str, Any]]:
    """moto with three groups (two tagged managed, one not) and an IAM user holding only the policy."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        admin = boto3.client("autoscaling", region_name=REGION)
        iam = boto3.client("iam", region_name=REGION)
        ec2.create_launch_template(
            LaunchTemplateName="nodes", LaunchTemplateData={"ImageId": IMAGE, "InstanceType": "m5.large"}
        )
        groups = {"spot": "team-spot", "on-demand": "team-on-demand", "untagged": "someone-elses"}
        for role, name in groups.items():
            key, value = (MANAGED_TAG, "true") if role != "untagged" else ("team", "x")
            admin.create_auto_scaling_group(
                AutoScalingGroupName=name,
                LaunchTemplate={"LaunchTemplateName": "nodes", "Version": "$Latest"},
                MinSize=0,
                MaxSize=10,
                DesiredCapacity=2,
                AvailabilityZones=[f"{REGION}a"],
                Tags=[
                    {
                        "Key": key,
                        "Value": value,
                        "ResourceId": name,
                        "ResourceType": "auto-scaling-group",
                        "PropagateAtLaunch": False,
                    }
                ],
            )
        admin_sqs = boto3.client("sqs", region_name=REGION)
        queues = {name: admin_sqs.create_queue(QueueName=name)["QueueUrl"] for name in (QUEUE, "someone-elses-queue")}
        iam.create_user(UserName="spotguard-controller")
        iam.put_user_policy(
            UserName="spotguard-controller", PolicyName="spotguard", PolicyDocument=POLICY_FILE.read_text()
        )
        key = iam.create_access_key(UserName="spotguard-controller")["AccessKey"]
        controller_client = boto3.client(
            "autoscaling",
            region_name=REGION,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        instances = {
            role: [
                i["InstanceId"]
                for i in admin.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0][
                    "Instances"
                ]
            ]
            for role, name in groups.items()
        }
        controller_sqs = boto3.client(
            "sqs",
            region_name=REGION,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        with enable_iam_authentication():
            yield {
                "sqs": controller_sqs,
                "queues": queues,
                "asg": AutoScaling(controller_client, max_attempts=1, sleep=lambda _s: None),
                "client": controller_client,
                "groups": groups,
                "instances": instances,
            }


def test_the_policy_allows_exactly_the_calls_the_controller_makes() -> None:
    allowed = {action for statement in policy()["Statement"] for action in statement["Action"]}
    assert allowed == operations_called_by_the_controller()
    assert all(statement["Effect"] == "Allow" for statement in policy()["Statement"])
    for statement in policy()["Statement"]:
        if MUTATING & set(statement["Action"]):
            assert set(statement["Action"]) <= MUTATING, "capacity changes get a statement of their own"
            assert statement["Condition"] == {"StringEquals": {f"autoscaling:ResourceTag/{MANAGED_TAG}": "true"}}
        if any(action.startswith("sqs:") for action in statement["Action"]):
            assert all(action.startswith("sqs:") for action in statement["Action"])
            assert statement["Resource"] == f"arn:aws:sqs:*:*:{QUEUE}", "that one queue only"


def test_the_events_queue_is_read_and_its_messages_deleted_on_that_queue_only(aws: dict[str, Any]) -> None:
    ours = EventQueue(aws["queues"][QUEUE], aws["sqs"])
    assert ours.receive(wait_seconds=0) == []
    assert ours.arn().endswith(f":{QUEUE}")
    theirs = EventQueue(aws["queues"]["someone-elses-queue"], aws["sqs"])
    with pytest.raises(QueueError) as denied:
        theirs.receive(wait_seconds=0)
    assert denied.value.kind == ACCESS_DENIED, denied.value
    assert "sqs:ReceiveMessage" in denied.value.advice


def test_every_call_of_the_controller_succeeds_on_managed_groups(aws: dict[str, Any]) -> None:
    asg: AutoScaling = aws["asg"]
    spot, on_demand = aws["groups"]["spot"], aws["groups"]["on-demand"]

    described = asg.describe_groups([spot, on_demand])
    assert set(described) == {spot, on_demand}
    assert set(asg.tagged_groups(MANAGED_TAG)) == {spot, on_demand}
    victim = aws["instances"]["spot"][0]
    assert asg.group_of_instances([victim]) == {victim: spot}
    assert asg.activities(spot) is not None
    assert asg.lifecycle_hooks(spot) == []
    # moto authorizes the call against the policy first, then finds it has no DescribeInstanceRefreshes (the
    # sandbox's simulator has it): getting that far is the policy allowing it (a denial raises AwsError).
    with pytest.raises(NotImplementedError, match="describe_instance_refreshes"):
        asg.instance_refreshes(spot)

    asg.set_desired_capacity(spot, 3)
    asg.terminate_instance(victim, decrement=True)

    after = asg.describe_groups([spot])[spot]
    assert after.desired == 2  # 3, then one fewer with exactly the terminated instance
    assert victim not in after.instance_ids()


def test_capacity_changes_of_groups_without_the_tag_are_denied(aws: dict[str, Any]) -> None:
    asg: AutoScaling = aws["asg"]
    foreign = aws["groups"]["untagged"]

    with pytest.raises(AwsError) as scaled:
        asg.set_desired_capacity(foreign, 5)
    assert scaled.value.access_denied

    with pytest.raises(AwsError) as terminated:
        asg.terminate_instance(aws["instances"]["untagged"][0])
    assert terminated.value.access_denied

    # Reading it is fine: the controller describes groups to find out whether they are its own.
    assert asg.describe_groups([foreign])[foreign].desired == 2


def test_calls_the_controller_does_not_make_are_denied(aws: dict[str, Any]) -> None:
    client = aws["client"]
    spot = aws["groups"]["spot"]
    calls: list[Callable[[], object]] = [
        lambda: client.update_auto_scaling_group(AutoScalingGroupName=spot, MaxSize=100),
        lambda: client.delete_auto_scaling_group(AutoScalingGroupName=spot, ForceDelete=True),
        lambda: client.detach_instances(
            AutoScalingGroupName=spot, InstanceIds=aws["instances"]["spot"][1:2], ShouldDecrementDesiredCapacity=True
        ),
    ]
    for call in calls:
        with pytest.raises(client.exceptions.ClientError) as denied:
            call()
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
