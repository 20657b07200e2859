"""``spotguard doctor``: each check's PASS, WARN and FAIL, the rendering, and the exit codes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import NoCredentialsError

from controller.adapters.pause_switch import PAUSED, lease_path
from controller.admin.context import Target
from controller.admin.doctor import (
    AWS_ACTIONS,
    FAIL,
    NODEWATCH_SELECTORS,
    PASS,
    WARN,
    Finding,
    principal_arn,
    render,
    required_permissions,
)
from controller.observability.metrics import AWS_OPERATIONS
from tests.unit.controller.admin.conftest import Run
from tests.unit.controller.admin.fake_aws import FakeAws, FakeIam, client_error, group, hook
from tests.unit.controller.admin.fake_kube import FakeKube, api_error

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/spotguardfallbackevents.aws.amazon.com"
MANIFEST = Path(__file__).resolve().parents[4] / "manifests" / "crd-spotguardfallbackevent.yaml"
TAG = "spotguard.io/on-demand-partner"


def installed_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    crd["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
    return crd


def linux_node(kube: FakeKube, name: str, os: str = "linux") -> None:
    kube.put(f"/api/v1/nodes/{name}", {"metadata": {"labels": {"kubernetes.io/os": os}}})


def nodewatch_pod(kube: FakeKube, node: str, ready: bool = True, selector: str = NODEWATCH_SELECTORS[0]) -> None:
    labels = dict(term.split("=") for term in selector.split(","))
    kube.put(
        f"/api/v1/namespaces/kube-system/pods/nodewatch-{node}",
        {
            "metadata": {"labels": labels},
            "spec": {"nodeName": node},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        },
    )


def lease(kube: FakeKube, **annotations: str) -> None:
    kube.put(
        lease_path("kube-system", "spotguard-controller"),
        {
            "metadata": {"annotations": annotations},
            "spec": {"holderIdentity": "ctl-a", "leaseDurationSeconds": 15, "renewTime": "2025-01-15T10:00:00Z"},
        },
    )


@pytest.fixture
def healthy(kube: FakeKube, aws: FakeAws) -> None:
    kube.put(CRD_PATH, installed_crd())
    lease(kube)
    for name in ("n1", "n2"):
        linux_node(kube, name)
        nodewatch_pod(kube, name)
    linux_node(kube, "n3")
    nodewatch_pod(kube, "n3", selector=NODEWATCH_SELECTORS[1])
    linux_node(kube, "w1", os="windows")  # nodewatch does not run there, and doctor does not look for it
    aws.autoscaling.groups = {
        g["AutoScalingGroupName"]: g
        for g in (group("spot-a", tags={TAG: "od-a"}), group("od-a", desired=0), group("unrelated"))
    }


def findings(run: Run, *args: str) -> tuple[int, dict[str, Finding]]:
    result = run("doctor", "-o", "json", *args)
    data = json.loads(result.stdout)
    return result.exit_code, {
        c["check"]: Finding(c["check"], c["status"], c["finding"], c["whatToDo"]) for c in data["checks"]
    }


@pytest.mark.usefixtures("healthy")
def test_a_healthy_setup_passes_and_exits_0(run: Run, aws: FakeAws) -> None:
    code, found = findings(run)

    assert code == 0
    assert {name: f.status for name, f in found.items()} == {
        "api-server": PASS,
        "crd": PASS,
        "rbac": PASS,
        "controller": PASS,
        "pause": PASS,
        "nodewatch": PASS,
        "aws-credentials": PASS,
        "asg-pairs": PASS,
        "headroom/spot-a": PASS,
        "capacity-rebalance/spot-a": PASS,
        "headroom/od-a": PASS,
        "partner-tag/spot-a": PASS,
        **{
            f"{check}/{name}": PASS
            for name in ("spot-a", "od-a")
            for check in (
                "az-rebalance",
                "launch-process",
                "managed-tag",
                "launch-hooks",
                "scale-in-protection",
                "instance-refresh",
            )
        },
        "iam": PASS,
    }
    assert "each of the 3 Linux nodes" in found["nodewatch"].finding
    assert "spot-a -> od-a (tag spotguard.io/on-demand-partner)" in found["asg-pairs"].finding
    assert "Auto Scaling has no DryRun parameter" in found["iam"].finding
    # The caller's assumed role, resolved to the role's real ARN (with its path), was simulated.
    assert aws.iam.simulated == [("arn:aws:iam::123456789012:role/controllers/spotguard", list(AWS_ACTIONS))]


@pytest.mark.usefixtures("healthy")
def test_the_table_shows_progress_on_stderr_and_a_summary(run: Run) -> None:
    result = run("doctor")

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "CHECK", "FINDING"]
    assert lines[1].split()[:2] == ["PASS", "api-server"]
    assert lines[-1] == "25 passed, 0 warnings, 0 failed"
    assert "[1/6] the Kubernetes API server" in result.stderr
    assert "[6/6] AWS Auto Scaling groups and IAM" in result.stderr
    assert yaml.safe_load(run("doctor", "-o", "yaml").stdout)["ok"] is True


def test_render_puts_what_to_do_under_warnings_and_failures() -> None:
    text = render(
        [
            Finding("crd", PASS, "fine", "never shown"),
            Finding("nodewatch", FAIL, "2 of 3 spot nodes are unwatched", "kubectl apply -k manifests/"),
            Finding("iam", WARN, "cannot verify", "check by hand"),
        ]
    )
    assert text.splitlines() == [
        "STATUS   CHECK       FINDING",
        "PASS     crd         fine",
        "FAIL     nodewatch   2 of 3 spot nodes are unwatched",
        "                     what to do: kubectl apply -k manifests/",
        "WARN     iam         cannot verify",
        "                     what to do: check by hand",
        "",
        "1 passed, 1 warning, 1 failed",
    ]


@pytest.mark.usefixtures("healthy")
def test_a_missing_crd_fails_with_the_apply_command(run: Run, kube: FakeKube) -> None:
    del kube.objects[CRD_PATH]

    code, found = findings(run)

    assert code == 1
    assert found["crd"].status == FAIL
    assert "not installed" in found["crd"].finding
    assert "kubectl apply -f manifests/crd-spotguardfallbackevent.yaml" in found["crd"].what_to_do


@pytest.mark.usefixtures("healthy")
def test_a_crd_at_the_wrong_version_or_schema_fails_saying_what_differs(run: Run, kube: FakeKube) -> None:
    crd = installed_crd()
    old = copy.deepcopy(crd["spec"]["versions"][0])
    old["name"] = "v1alpha1"
    crd["spec"]["versions"] = [old]
    kube.put(CRD_PATH, crd)
    assert "has no version v1 (has v1alpha1)" in findings(run)[1]["crd"].finding

    crd = installed_crd()
    version = crd["spec"]["versions"][0]
    del version["subresources"]
    del version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["onDemandInstanceID"]
    version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]["enum"] = ["Pending"]
    crd["status"]["conditions"] = [{"type": "Established", "status": "False", "message": "installing"}]
    kube.put(CRD_PATH, crd)
    text = findings(run)[1]["crd"].finding
    assert "status subresource is missing" in text
    assert "schema lacks spec.onDemandInstanceID" in text
    assert "status.phase does not allow Monitoring" in text
    assert "not Established (installing)" in text


@pytest.mark.usefixtures("healthy")
def test_missing_rbac_fails_listing_each_permission(run: Run, kube: FakeKube) -> None:
    kube.denied = {
        ("create", "", "pods", "eviction"),
        ("update", "aws.amazon.com", "spotguardfallbackevents", "status"),
    }

    code, found = findings(run)

    assert code == 1
    rbac = found["rbac"]
    assert rbac.status == FAIL
    assert rbac.finding.startswith("tester lacks 2 of 20 permissions the controller needs: ")
    assert "create pods/eviction (cluster-wide)" in rbac.finding
    assert "update spotguardfallbackevents/status.aws.amazon.com in namespace kube-system" in rbac.finding


@pytest.mark.usefixtures("healthy")
def test_rbac_can_be_checked_as_the_controllers_service_account(
    run: Run, connections: list[tuple[Target, str | None]]
) -> None:
    account = "system:serviceaccount:kube-system:spotguard-controller"
    code, found = findings(run, "--as", account)

    assert code == 0
    assert [who for _, who in connections] == [None, account]
    assert "--as" not in found["rbac"].finding


def test_the_permissions_cover_what_the_controller_does() -> None:
    permissions = required_permissions("spotguard", "leases-ns", "the-lease")
    described = {p.describe() for p in permissions}
    for expected in (
        "watch nodes (cluster-wide)",
        "patch nodes (cluster-wide)",
        "list pods (cluster-wide)",
        "create pods/eviction (cluster-wide)",
        "list poddisruptionbudgets.policy (cluster-wide)",
        "update leases.coordination.k8s.io the-lease in namespace leases-ns",
        "create leases.coordination.k8s.io in namespace leases-ns",
        "delete spotguardfallbackevents.aws.amazon.com in namespace spotguard",
        "patch events in namespace default",
        "create events in namespace spotguard",
    ):
        assert expected in described
    update_lease = next(p for p in permissions if p.verb == "update" and p.resource == "leases")
    assert update_lease.review()["spec"]["resourceAttributes"]["name"] == "the-lease"
    assert tuple(f"autoscaling:{op}" for op in AWS_OPERATIONS) == AWS_ACTIONS


@pytest.mark.usefixtures("healthy")
def test_linux_nodes_without_a_ready_nodewatch_fail_with_the_fix(run: Run, kube: FakeKube) -> None:
    del kube.objects["/api/v1/namespaces/kube-system/pods/nodewatch-n1"]
    nodewatch_pod(kube, "n2", ready=False)

    code, found = findings(run)

    assert code == 1
    nodewatch = found["nodewatch"]
    assert nodewatch.status == FAIL
    assert (
        nodewatch.finding
        == "2 of 3 Linux nodes are unwatched (no nodewatch pod on 1: n1; nodewatch not Ready on 1: n2)"
    )
    assert nodewatch.what_to_do.startswith("kubectl apply -k manifests/")


def test_no_linux_nodes_is_a_warning(run: Run, kube: FakeKube) -> None:
    kube.put(CRD_PATH, installed_crd())
    assert findings(run, "--no-aws")[1]["nodewatch"].status == WARN


@pytest.mark.usefixtures("healthy")
def test_no_leader_and_a_pause_are_warnings(run: Run, kube: FakeKube) -> None:
    lease(kube, **{PAUSED: "true"})
    kube.objects[lease_path("kube-system", "spotguard-controller")]["spec"]["holderIdentity"] = ""

    code, found = findings(run)

    assert code == 0
    assert found["controller"].status == WARN
    assert found["pause"].status == WARN
    assert found["pause"].what_to_do.startswith("spotguard resume")


@pytest.mark.usefixtures("healthy")
def test_no_lease_is_a_warning(run: Run, kube: FakeKube) -> None:
    del kube.objects[lease_path("kube-system", "spotguard-controller")]
    found = findings(run)[1]
    assert found["controller"].status == WARN
    assert "pause" not in found


def test_an_unreachable_api_server_fails_and_skips_the_cluster_checks(run: Run, kube: FakeKube) -> None:
    kube.failures[("GET", "/version")] = api_error(401, "Unauthorized")

    code, found = findings(run, "--no-aws")

    assert code == 1
    assert list(found) == ["api-server"]
    assert "HTTP 401 Unauthorized" in found["api-server"].finding


@pytest.mark.usefixtures("healthy")
def test_a_spot_group_at_its_max_size_or_with_capacity_rebalance_fails(run: Run, aws: FakeAws) -> None:
    aws.autoscaling.groups["spot-a"] = group(
        "spot-a", desired=5, max_size=5, capacity_rebalance=True, tags={TAG: "od-a"}
    )
    aws.autoscaling.groups["od-a"] = group("od-a", desired=2, max_size=2)

    code, found = findings(run)

    assert code == 1
    assert found["headroom/spot-a"].status == FAIL
    assert "--max-size 6" in found["headroom/spot-a"].what_to_do
    assert found["capacity-rebalance/spot-a"].status == FAIL
    assert "--no-capacity-rebalance" in found["capacity-rebalance/spot-a"].what_to_do
    assert found["headroom/od-a"].status == WARN


@pytest.mark.usefixtures("healthy")
def test_az_rebalance_running_on_either_group_of_a_pair_fails_with_the_command_that_suspends_it(
    run: Run, aws: FakeAws
) -> None:
    aws.autoscaling.groups["spot-a"] = group("spot-a", tags={TAG: "od-a"}, suspended=())
    aws.autoscaling.groups["od-a"] = group("od-a", desired=0, suspended=("Launch",))

    code, found = findings(run)

    assert code == 1
    for name in ("spot-a", "od-a"):
        finding = found[f"az-rebalance/{name}"]
        assert finding.status == FAIL
        assert "terminates an instance Spot Guard did not choose" in finding.finding
        assert finding.what_to_do == (
            f"aws autoscaling suspend-processes --auto-scaling-group-name {name} --scaling-processes AZRebalance"
        )


@pytest.mark.usefixtures("healthy")
def test_a_suspended_launch_process_fails_saying_what_it_breaks_and_how_to_resume_it(run: Run, aws: FakeAws) -> None:
    aws.autoscaling.groups["spot-a"] = group("spot-a", tags={TAG: "od-a"}, suspended=("AZRebalance", "Launch"))
    aws.autoscaling.groups["od-a"] = group("od-a", desired=0, suspended=("AZRebalance", "Launch"))

    code, found = findings(run)

    assert code == 1
    assert "every spot replacement falls back to on-demand at once" in found["launch-process/spot-a"].finding
    assert "an on-demand fallback cannot launch" in found["launch-process/od-a"].finding
    for name in ("spot-a", "od-a"):
        assert found[f"launch-process/{name}"].status == FAIL
        assert found[f"launch-process/{name}"].what_to_do == (
            f"aws autoscaling resume-processes --auto-scaling-group-name {name} --scaling-processes Launch"
        )
        assert found[f"az-rebalance/{name}"].status == PASS


@pytest.mark.usefixtures("healthy")
def test_a_group_without_the_managed_tag_fails_because_iam_denies_its_capacity_changes(run: Run, aws: FakeAws) -> None:
    aws.autoscaling.groups["od-a"] = group("od-a", desired=0, managed=False)

    code, found = findings(run)

    assert code == 1
    finding = found["managed-tag/od-a"]
    assert finding.status == FAIL
    assert "not tagged spotguard.io/managed" in finding.finding and "iam-policy.json" in finding.finding
    assert "Key=spotguard.io/managed,Value=true" in finding.what_to_do
    assert found["managed-tag/spot-a"].status == PASS


@pytest.mark.usefixtures("healthy")
def test_a_launch_hook_longer_than_the_capacity_check_waits_for_it_is_a_warning(run: Run, aws: FakeAws) -> None:
    aws.autoscaling.hooks["spot-a"] = [
        hook("bootstrap", timeout=3600),  # AWS's default: longer than the 10 minutes a hook may add
        hook("drain", "autoscaling:EC2_INSTANCE_TERMINATING"),
    ]
    aws.autoscaling.hooks["od-a"] = [hook("bootstrap", timeout=600)]  # longer than the deadline, but waited for

    code, found = findings(run)

    assert code == 0  # a warning
    finding = found["launch-hooks/spot-a"]
    assert finding.status == WARN
    assert "bootstrap (1h)" in finding.finding and "(13m:" in finding.finding and "drain" not in finding.finding
    assert "--heartbeat-timeout 600" in finding.what_to_do
    passed = found["launch-hooks/od-a"]
    assert passed.status == PASS and "waits up to 13m" in passed.finding


@pytest.mark.usefixtures("healthy")
def test_doctor_and_the_capacity_check_apply_the_same_hook_rule(run: Run, aws: FakeAws) -> None:
    from controller.checks.launch_hooks import HOOK_WAIT_CAP, hook_wait
    from controller.model.asg import LAUNCHING_TRANSITION, LifecycleHook

    for timeout in (30, int(HOOK_WAIT_CAP), int(HOOK_WAIT_CAP) + 1):
        aws.autoscaling.hooks["spot-a"] = [hook("bootstrap", timeout=timeout)]
        _, found = findings(run)
        conflict = bool(
            hook_wait([LifecycleHook("bootstrap", LAUNCHING_TRANSITION, timeout, "ABANDON")], 180.0).conflicts
        )
        assert (found["launch-hooks/spot-a"].status == WARN) == conflict == (timeout > HOOK_WAIT_CAP)


@pytest.mark.usefixtures("healthy")
def test_lifecycle_hooks_that_cannot_be_read_are_a_warning(run: Run, aws: FakeAws) -> None:
    aws.autoscaling.hooks_error = client_error("AccessDenied", "not authorized", "DescribeLifecycleHooks")

    found = findings(run)[1]

    assert found["launch-hooks/spot-a"].status == WARN
    assert "autoscaling:DescribeLifecycleHooks" in found["launch-hooks/spot-a"].what_to_do


@pytest.mark.usefixtures("healthy")
def test_an_active_instance_refresh_is_a_warning_saying_what_waits(run: Run, aws: FakeAws) -> None:
    # DescribeInstanceRefreshes' shape (https://docs.aws.amazon.com/autoscaling/ec2/APIReference/API_InstanceRefresh.html)
    aws.autoscaling.refreshes["spot-a"] = [
        {"InstanceRefreshId": "r-new", "AutoScalingGroupName": "spot-a", "Status": "InProgress"},
        {"InstanceRefreshId": "r-old", "AutoScalingGroupName": "spot-a", "Status": "Successful"},
    ]
    aws.autoscaling.refreshes["od-a"] = [
        {"InstanceRefreshId": "r-od", "AutoScalingGroupName": "od-a", "Status": "Cancelled"},
    ]

    code, found = findings(run)

    assert code == 0  # a warning
    finding = found["instance-refresh/spot-a"]
    assert finding.status == WARN
    assert "r-new" in finding.finding and "spot-a" in finding.finding and "InProgress" in finding.finding
    assert "rebalance replacements wait" in finding.finding and "interruptions are replaced at once" in finding.finding
    assert "cancel-instance-refresh --auto-scaling-group-name spot-a" in finding.what_to_do
    assert found["instance-refresh/od-a"].status == PASS, "a cancelled refresh is over"


@pytest.mark.usefixtures("healthy")
def test_scale_in_protection_on_new_instances_and_an_eks_managed_node_group_are_warnings(
    run: Run, aws: FakeAws
) -> None:
    aws.autoscaling.groups["spot-a"] = group(
        "spot-a", tags={TAG: "od-a", "eks:nodegroup-name": "spot-ng"}, protect_new_instances=True
    )

    code, found = findings(run)

    assert code == 0
    assert found["scale-in-protection/spot-a"].status == WARN
    assert "--no-new-instances-protected-from-scale-in" in found["scale-in-protection/spot-a"].what_to_do
    eks = found["eks-managed/spot-a"]
    assert eks.status == WARN
    assert "spot-ng" in eks.finding and "Capacity Rebalancing" in eks.finding and "desiredSize" in eks.finding
    assert "eks-managed/od-a" not in found


@pytest.mark.usefixtures("healthy")
def test_a_partner_tag_missing_is_a_warning_and_one_naming_another_group_fails(run: Run, aws: FakeAws) -> None:
    env = {"SPOT_ASG_NAME": "spot-a", "ON_DEMAND_ASG_NAME": "od-a"}
    aws.autoscaling.groups["spot-a"] = group("spot-a")

    found = findings(run, "--spot-asg", "spot-a", "--on-demand-asg", "od-a")[1]
    assert found["partner-tag/spot-a"].status == WARN
    assert "Key=spotguard.io/on-demand-partner,Value=od-a" in found["partner-tag/spot-a"].what_to_do

    aws.autoscaling.groups["spot-a"] = group("spot-a", tags={TAG: "od-b"})
    result = run("doctor", "-o", "json", env=env)
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["partner-tag/spot-a"]["status"] == FAIL
    assert "tagged spotguard.io/on-demand-partner=od-b" in checks["partner-tag/spot-a"]["finding"]


@pytest.mark.usefixtures("healthy")
def test_configured_groups_that_do_not_exist_fail(run: Run, aws: FakeAws) -> None:
    code, found = findings(run, "--spot-asg", "spot-x", "--on-demand-asg", "od-x")

    assert code == 1
    assert found["asg/spot-x"].status == FAIL
    assert found["asg/od-x"].status == FAIL
    assert "spot-x -> od-x (configured)" in found["asg-pairs"].finding
    assert found["headroom/spot-a"].status == PASS  # the tagged pair is still checked


@pytest.mark.usefixtures("healthy")
def test_the_pair_comes_from_the_environment_like_the_controllers(run: Run, aws: FakeAws) -> None:
    aws.autoscaling.groups["spot-a"]["Tags"] = []
    result = run("doctor", "-o", "json", env={"SPOT_ASG_NAME": "spot-a", "ON_DEMAND_ASG_NAME": "od-a"})
    checks = {c["check"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["asg-pairs"]["finding"] == "1 pair(s): spot-a -> od-a (configured)"


@pytest.mark.usefixtures("healthy")
def test_no_pair_at_all_fails(run: Run, aws: FakeAws) -> None:
    aws.autoscaling.groups["spot-a"]["Tags"] = []
    found = findings(run)[1]
    assert found["asg-pairs"].status == FAIL
    assert "SPOT_ASG_NAME" in found["asg-pairs"].what_to_do


def test_half_a_pair_or_the_same_group_twice_is_a_usage_error(run: Run) -> None:
    assert run("doctor", "--spot-asg", "spot-a").exit_code == 2
    assert run("doctor", "--spot-asg", "a", "--on-demand-asg", "a").exit_code == 2


@pytest.mark.usefixtures("healthy")
def test_no_aws_credentials_fail_and_skip_the_aws_checks(run: Run, aws: FakeAws) -> None:
    aws.sts.error = NoCredentialsError()

    code, found = findings(run)

    assert code == 1
    assert found["aws-credentials"].status == FAIL
    assert "Unable to locate credentials" in found["aws-credentials"].finding
    assert not [name for name in found if name.startswith(("asg", "headroom", "iam"))]


@pytest.mark.usefixtures("healthy")
def test_denied_iam_actions_fail(run: Run, aws: FakeAws) -> None:
    aws.iam.denied = {"autoscaling:SetDesiredCapacity"}

    iam = findings(run)[1]["iam"]

    assert iam.status == FAIL
    assert "is not allowed autoscaling:SetDesiredCapacity" in iam.finding


@pytest.mark.usefixtures("healthy")
@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (client_error("AccessDenied", "no", "SimulatePrincipalPolicy"), "may not call it (AccessDenied)"),
        (client_error("NotImplemented", "moto", "SimulatePrincipalPolicy"), "it failed (NotImplemented: moto)"),
        (ValueError("invalid XML received"), "this AWS endpoint does not answer it (ValueError: invalid XML"),
    ],
)
def test_iam_that_cannot_be_simulated_is_a_warning(run: Run, aws: FakeAws, error: Exception, expected: str) -> None:
    aws.iam.error = error

    code, found = findings(run)

    assert code == 0
    assert found["iam"].status == WARN
    assert "cannot verify IAM without iam:SimulatePrincipalPolicy" in found["iam"].finding
    assert "Auto Scaling has no DryRun parameter" in found["iam"].finding
    assert expected in found["iam"].finding


@pytest.mark.usefixtures("healthy")
def test_a_given_role_arn_is_simulated(run: Run, aws: FakeAws) -> None:
    findings(run, "--role-arn", "arn:aws:iam::1:role/ctl")
    assert aws.iam.simulated[0][0] == "arn:aws:iam::1:role/ctl"


def test_principal_arns() -> None:
    iam = FakeIam()
    assert principal_arn("arn:aws:sts::1:assumed-role/spotguard/s", iam) == iam.roles["spotguard"]
    assert principal_arn("arn:aws:sts::1:assumed-role/other/s", iam) == "arn:aws:iam::1:role/other"
    assert principal_arn("arn:aws:iam::1:user/alice", iam) == "arn:aws:iam::1:user/alice"
    assert principal_arn("arn:aws:sts::1:user/moto", iam) == "arn:aws:iam::1:user/moto"
    assert principal_arn("arn:aws:iam::1:root", iam) is None
    assert principal_arn("garbage", iam) is None


@pytest.mark.usefixtures("healthy")
def test_a_check_that_breaks_is_a_failure_not_a_crash(run: Run, kube: FakeKube) -> None:
    kube.failures[("GET", "/api/v1/pods")] = api_error(500, "InternalError", "etcd down")

    code, found = findings(run)

    assert code == 1
    assert found["nodewatch on every Linux node"].status == FAIL
    assert "HTTP 500 InternalError: etcd down" in found["nodewatch on every Linux node"].finding
