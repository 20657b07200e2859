"""``spotguard doctor``: pre-flight checks, each a PASS, WARN or FAIL finding with what to do about it.

Kubernetes: the API server answers; the SpotGuardFallbackEvent CRD is installed at v1 (served, stored,
established, status subresource, the seed's schema); RBAC for everything the controller does, asked
through SelfSubjectAccessReview (as yourself, or with ``--as`` as the controller's ServiceAccount); the
controller's Lease (leader, pause switch); a Ready nodewatch pod on every Linux node (nodewatch runs on each and
idles, Ready, where IMDS says the instance is not spot).

AWS (boto3 from the environment: AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, credentials): the credentials work; the
spot/on-demand pairs (SPOT_ASG_NAME/ON_DEMAND_ASG_NAME and the partner tag) exist; each spot ASG has
MaxSize headroom and Capacity Rebalancing off; every group setting that breaks Spot Guard, on both groups of each
pair (AZRebalance not suspended, the managed tag missing, a launch hook longer than the capacity-check deadline,
scale-in protection on new instances, an EKS managed node group, a partner tag missing or contradicting the
configured pair); the IAM permissions. Auto Scaling has no DryRun parameter,
so IAM is checked with iam:SimulatePrincipalPolicy for the caller (or ``--role-arn``) where that is allowed
and implemented, else reported as a WARN.

Exit status 1 if any check FAILs (WARNs do not fail), 0 otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from controller.admin.context import Problem, Target, output_option, services, target_options
from controller.admin.output import emit, progress

if TYPE_CHECKING:
    from controller.adapters.aws import AutoScaling
    from controller.adapters.kube import Kube
    from controller.clock import Clock
    from controller.model.asg import Group

PASS = "PASS"  # noqa: S105 (a check status, not a password)
WARN = "WARN"
FAIL = "FAIL"

CRD_NAME = "spotguardfallbackevents.aws.amazon.com"
CRD_VERSION = "v1"
SGFE_GROUP = "aws.amazon.com"
SGFE_PLURAL = "spotguardfallbackevents"
SPEC_FIELDS = ("spotASGName", "onDemandASGName", "onDemandNodeName", "timestamp", "onDemandInstanceID")
STATUS_FIELDS = ("phase", "message", "spotCapacityRestored", "scaleDownInitiated", "spotHealthySince")
PHASES = ("Pending", "Monitoring", "ReadyForScaleDown", "ScalingDown", "Completed", "Failed")
#: Node events go to "default" (controller.observability.events.NODE_EVENT_NAMESPACE), SGFE events to theirs.
NODE_EVENT_NAMESPACE = "default"
#: The nodes nodewatch runs on (the DaemonSet's nodeSelector): every Linux node; each learns from IMDS if it is spot.
NODEWATCH_NODE_SELECTOR = "kubernetes.io/os=linux"
#: The nodewatch DaemonSet's pods: manifests/nodewatch.yaml's labels, and the older single-label form.
NODEWATCH_SELECTORS = (
    "app.kubernetes.io/name=spotguard,app.kubernetes.io/component=nodewatch",
    "app.kubernetes.io/name=spotguard-nodewatch",
)
CONTROLLER_SERVICE_ACCOUNT = "spotguard-controller"
APPLY_HINT = "kubectl apply -k manifests/"
DEFAULT_PARTNER_TAG = "spotguard.io/on-demand-partner"
#: manifests/iam-policy.json allows capacity changes only on groups carrying this tag with the value "true".
MANAGED_TAG = "spotguard.io/managed"
#: EKS tags the Auto Scaling group of each managed node group with the node group's name.
EKS_NODEGROUP_TAG = "eks:nodegroup-name"
AZ_REBALANCE = "AZRebalance"
DEFAULT_CAPACITY_CHECK_TIMEOUT = 180.0  # seconds: the controller's default SPOT_GUARD_CAPACITY_CHECK_TIMEOUT
SHOWN = 10  # names listed in one finding before "and N more"


@dataclasses.dataclass(frozen=True)
class Finding:
    check: str
    status: str  # PASS, WARN or FAIL
    finding: str
    what_to_do: str = ""

    def to_json(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "finding": self.finding, "whatToDo": self.what_to_do}


@dataclasses.dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    subresource: str = ""
    namespace: str = ""  # "" = cluster-wide (or every namespace)
    name: str = ""  # one object, for rules limited by resourceNames

    def describe(self) -> str:
        resource = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        if self.group:
            resource += f".{self.group}"
        if self.name:
            resource += f" {self.name}"
        where = f" in namespace {self.namespace}" if self.namespace else " (cluster-wide)"
        return f"{self.verb} {resource}{where}"

    def review(self) -> dict[str, Any]:
        attributes = {"verb": self.verb, "group": self.group, "resource": self.resource}
        if self.subresource:
            attributes["subresource"] = self.subresource
        if self.namespace:
            attributes["namespace"] = self.namespace
        if self.name:
            attributes["name"] = self.name
        return {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }


def required_permissions(namespace: str, lease_namespace: str, lease_name: str) -> list[Permission]:
    """Every API permission the controller uses (controller.kube, nodes, drain, lifecycle, election, events).

    The same list as manifests/controller-rbac.yaml grants: the Lease by name (get, update), since the Role
    limits those to it; pods are only listed (drain, lifecycle), never read one by one.
    """
    perms = [Permission(verb, "nodes") for verb in ("get", "list", "watch", "patch")]
    perms.append(Permission("list", "pods"))
    perms.append(Permission("create", "pods", subresource="eviction"))
    perms.append(Permission("list", "poddisruptionbudgets", group="policy"))
    lease_group = "coordination.k8s.io"
    perms += [
        Permission(verb, "leases", group=lease_group, namespace=lease_namespace, name=lease_name)
        for verb in ("get", "update")
    ]
    perms.append(Permission("create", "leases", group=lease_group, namespace=lease_namespace))
    perms += [
        Permission(verb, SGFE_PLURAL, group=SGFE_GROUP, namespace=namespace)
        for verb in ("get", "list", "create", "patch", "delete")
    ]
    perms.append(Permission("update", SGFE_PLURAL, group=SGFE_GROUP, subresource="status", namespace=namespace))
    for events_namespace in dict.fromkeys((namespace, NODE_EVENT_NAMESPACE)):
        perms += [Permission(verb, "events", namespace=events_namespace) for verb in ("create", "patch")]
    return perms


#: The Auto Scaling actions the controller calls (controller.adapters.aws; metrics.AWS_OPERATIONS lists the same).
AWS_ACTIONS = (
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeInstanceRefreshes",
    "autoscaling:DescribeLifecycleHooks",
    "autoscaling:DescribeScalingActivities",
    "autoscaling:SetDesiredCapacity",
    "autoscaling:TerminateInstanceInAutoScalingGroup",
)


@dataclasses.dataclass(frozen=True)
class DoctorOptions:
    namespace: str = "kube-system"
    lease_namespace: str = "kube-system"
    lease_name: str = "spotguard-controller"
    pairs: tuple[tuple[str, str], ...] = ()  # configured (spot, on-demand) pairs
    partner_tag: str = DEFAULT_PARTNER_TAG
    impersonate: str | None = None  # --as: the RBAC checks ask for this user
    role_arn: str | None = None  # --role-arn: the IAM principal to simulate (default: the caller)
    check_aws: bool = True
    capacity_check_timeout: float = DEFAULT_CAPACITY_CHECK_TIMEOUT  # SPOT_GUARD_CAPACITY_CHECK_TIMEOUT, seconds
    queue_url: str = ""  # SPOT_GUARD_QUEUE_URL: the EC2 events queue ("": not used)


Step = tuple[str, Callable[[], list[Finding]]]


class Doctor:
    """Runs the checks; ``kube`` and ``rbac_kube`` may be None when the cluster config cannot be loaded."""

    def __init__(
        self,
        options: DoctorOptions,
        *,
        kube: Kube | None,
        rbac_kube: Kube | None,
        aws: Callable[[str], Any],
        clock: Clock,
        step: Callable[[str], None] = lambda message: None,
        kube_error: str = "",
    ) -> None:
        self.options = options
        self.kube = kube
        self.rbac_kube = rbac_kube
        self.aws = aws
        self.clock = clock
        self.step = step
        self.kube_error = kube_error

    def run(self) -> list[Finding]:
        findings: list[Finding] = []
        kube_steps: list[Step] = [
            ("the SpotGuardFallbackEvent CRD", self.check_crd),
            ("RBAC (SelfSubjectAccessReview)", self.check_rbac),
            ("the controller's Lease", self.check_lease),
            ("nodewatch on every Linux node", self.check_nodewatch),
        ]
        aws_steps: list[Step] = [("AWS Auto Scaling groups and IAM", self.check_aws)] if self.options.check_aws else []
        total = 1 + len(kube_steps) + len(aws_steps)
        self.step(f"[1/{total}] the Kubernetes API server")
        reachable = self.check_api_server()
        findings += reachable
        number = 1
        for label, check in kube_steps:
            number += 1
            if reachable[0].status == FAIL:
                continue
            self.step(f"[{number}/{total}] {label}")
            findings += self._guarded(label, check)
        for label, check in aws_steps:
            number += 1
            self.step(f"[{number}/{total}] {label}")
            findings += self._guarded(label, check)
        return findings

    def _guarded(self, label: str, check: Callable[[], list[Finding]]) -> list[Finding]:
        try:
            return check()
        except Exception as error:  # a check that breaks is a finding, not a crash
            return [
                Finding(label, FAIL, f"the check itself failed: {_error_text(error)}", "fix the error and run again")
            ]

    # -- Kubernetes ------------------------------------------------------------------------------------------

    def check_api_server(self) -> list[Finding]:
        if self.kube is None:
            return [
                Finding(
                    "api-server",
                    FAIL,
                    f"cannot load the cluster configuration: {self.kube_error}",
                    "pass --kubeconfig/--context or set KUBECONFIG (kubectl must work with the same settings)",
                )
            ]
        try:
            version = self.kube.request("GET", "/version", timeout=10)
        except Exception as error:
            return [
                Finding(
                    "api-server",
                    FAIL,
                    f"the Kubernetes API server does not answer: {_error_text(error)}",
                    "check --kubeconfig/--context, the network path and your credentials (kubectl version)",
                )
            ]
        return [Finding("api-server", PASS, f"Kubernetes {version.get('gitVersion', '?')} answers")]

    def check_crd(self) -> list[Finding]:
        assert self.kube is not None
        from kubernetes.client.exceptions import ApiException

        fix = f"kubectl apply -f manifests/crd-spotguardfallbackevent.yaml (or {APPLY_HINT})"
        try:
            crd = self.kube.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
        except ApiException as error:
            if error.status == 404:
                return [Finding("crd", FAIL, f"the CRD {CRD_NAME} is not installed", fix)]
            raise
        spec = crd.get("spec") or {}
        versions = {v.get("name"): v for v in spec.get("versions") or []}
        v1 = versions.get(CRD_VERSION)
        problems: list[str] = []
        if v1 is None:
            problems.append(f"it has no version {CRD_VERSION} (has {', '.join(sorted(map(str, versions))) or 'none'})")
        else:
            if not v1.get("served"):
                problems.append(f"{CRD_VERSION} is not served")
            if not v1.get("storage"):
                problems.append(f"{CRD_VERSION} is not the storage version")
            if "status" not in (v1.get("subresources") or {}):
                problems.append("the status subresource is missing (the controller writes status through it)")
            schema = ((v1.get("schema") or {}).get("openAPIV3Schema") or {}).get("properties") or {}
            spec_props = (schema.get("spec") or {}).get("properties") or {}
            status_props = (schema.get("status") or {}).get("properties") or {}
            missing = [f"spec.{f}" for f in SPEC_FIELDS if f not in spec_props]
            missing += [f"status.{f}" for f in STATUS_FIELDS if f not in status_props]
            if missing:
                problems.append(f"its schema lacks {', '.join(missing)}")
            enum = (status_props.get("phase") or {}).get("enum")
            if enum is not None and not set(PHASES) <= set(enum):
                problems.append(f"status.phase does not allow {', '.join(p for p in PHASES if p not in enum)}")
        if spec.get("scope") != "Namespaced":
            problems.append(f"its scope is {spec.get('scope')!r}, not Namespaced")
        conditions = {c.get("type"): c for c in (crd.get("status") or {}).get("conditions") or []}
        established = conditions.get("Established") or {}
        if established.get("status") != "True":
            problems.append(f"it is not Established ({established.get('message') or 'no condition yet'})")
        if problems:
            return [Finding("crd", FAIL, f"the CRD {CRD_NAME} is not as Spot Guard needs: " + "; ".join(problems), fix)]
        return [Finding("crd", PASS, f"{CRD_NAME} {CRD_VERSION} is installed, served, established, with status")]

    def check_rbac(self) -> list[Finding]:
        assert self.rbac_kube is not None
        kube = self.rbac_kube
        who = self._whoami(kube)
        permissions = required_permissions(
            self.options.namespace, self.options.lease_namespace, self.options.lease_name
        )
        denied: list[Permission] = []
        for permission in permissions:
            review = kube.request(
                "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body=permission.review()
            )
            if not (review.get("status") or {}).get("allowed"):
                denied.append(permission)
        subject = who or self.options.impersonate or "you"
        as_hint = (
            ""
            if self.options.impersonate
            else f"; add --as system:serviceaccount:{self.options.namespace}:{CONTROLLER_SERVICE_ACCOUNT} to check the "
            "controller's own account"
        )
        if not denied:
            return [
                Finding("rbac", PASS, f"{subject} has all {len(permissions)} permissions the controller needs{as_hint}")
            ]
        listed = ", ".join(p.describe() for p in denied)
        return [
            Finding(
                "rbac",
                FAIL,
                f"{subject} lacks {len(denied)} of {len(permissions)} permissions the controller needs: {listed}",
                f"grant them to the controller's ServiceAccount ({APPLY_HINT} installs the ClusterRole and Roles); "
                f"kubectl auth can-i --list --as {self.options.impersonate or '<user>'} shows what it has",
            )
        ]

    def _whoami(self, kube: Kube) -> str:
        try:
            review = kube.request(
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
            )
        except Exception:
            return ""
        return str(((review.get("status") or {}).get("userInfo") or {}).get("username") or "")

    def check_lease(self) -> list[Finding]:
        assert self.kube is not None
        from controller.admin.leader_cmd import LeaderInfo, LeaderState, read_lease

        where = f"{self.options.lease_namespace}/{self.options.lease_name}"
        lease = read_lease(self.kube, self.options.lease_namespace, self.options.lease_name)
        if lease is None:
            return [
                Finding(
                    "controller",
                    WARN,
                    f"no Lease {where}: the controller has not run here yet (or uses another SPOT_GUARD_LEASE_NAME)",
                    f"install and start the controller ({APPLY_HINT}); then spotguard leader shows it",
                )
            ]
        info = LeaderInfo.from_lease(lease)
        now = self.clock.now()
        state = info.state(now)
        findings: list[Finding] = []
        logs_hint = f"check the controller's pods and logs in namespace {self.options.lease_namespace}"
        if state == LeaderState.LEADING:
            findings.append(
                Finding("controller", PASS, f"{info.holder} leads (Lease {where}, {info.transitions} transitions)")
            )
        elif state == LeaderState.RELEASED:
            findings.append(
                Finding("controller", WARN, f"nobody holds Lease {where}: no controller is leading", logs_hint)
            )
        else:
            findings.append(
                Finding("controller", WARN, f"{info.holder} stopped renewing Lease {where}: no live leader", logs_hint)
            )
        if info.pause.paused:
            findings.append(
                Finding(
                    "pause",
                    WARN,
                    f"Spot Guard is {info.pause.describe()}: new notices are not acted on",
                    "spotguard resume, once the reason is dealt with",
                )
            )
        else:
            findings.append(Finding("pause", PASS, "not paused"))
        return findings

    def check_nodewatch(self) -> list[Finding]:
        from controller.adapters.kube import list_all  # the CLI loads the Kubernetes client only when it needs it

        assert self.kube is not None
        query = {"labelSelector": NODEWATCH_NODE_SELECTOR}
        nodes = {item["metadata"]["name"] for item in list_all(self.kube, "/api/v1/nodes", query)}
        if not nodes:
            return [
                Finding(
                    "nodewatch",
                    WARN,
                    f"no Linux nodes found ({NODEWATCH_NODE_SELECTOR}): nodewatch has nowhere to run",
                    "add nodes; nodewatch runs on every Linux node and watches those that IMDS says are spot",
                )
            ]
        ready: set[str] = set()
        present: set[str] = set()
        pods = {
            (pod["metadata"].get("namespace"), pod["metadata"]["name"]): pod
            for selector in NODEWATCH_SELECTORS
            for pod in list_all(self.kube, "/api/v1/pods", {"labelSelector": selector})
        }
        for pod in pods.values():
            node = (pod.get("spec") or {}).get("nodeName")
            if not node:
                continue
            present.add(node)
            if _pod_ready(pod):
                ready.add(node)
        without = sorted(nodes - present)
        not_ready = sorted((nodes & present) - ready)
        if not without and not not_ready:
            return [
                Finding(
                    "nodewatch",
                    PASS,
                    f"a Ready nodewatch pod runs on each of the {len(nodes)} Linux nodes (idle where not spot)",
                )
            ]
        parts = []
        if without:
            parts.append(f"no nodewatch pod on {len(without)}: {_names(without)}")
        if not_ready:
            parts.append(f"nodewatch not Ready on {len(not_ready)}: {_names(not_ready)}")
        return [
            Finding(
                "nodewatch",
                FAIL,
                f"{len(without) + len(not_ready)} of {len(nodes)} Linux nodes are unwatched ({'; '.join(parts)})",
                f"{APPLY_HINT} (the nodewatch DaemonSet, pods labelled {NODEWATCH_SELECTORS[0]}); then kubectl -n "
                f"{self.options.namespace} rollout status daemonset/spotguard-nodewatch; a pod that stays not Ready "
                "says why on /readyz and in its log (mostly IMDS out of reach: the metadata hop limit, "
                "docs/install.md)",
            )
        ]

    # -- AWS -------------------------------------------------------------------------------------------------

    def check_aws(self) -> list[Finding]:
        try:
            sts = self.aws("sts")
            caller = sts.get_caller_identity()
        except Exception as error:
            return [
                Finding(
                    "aws-credentials",
                    FAIL,
                    f"AWS does not answer with these credentials: {_error_text(error)}",
                    "set AWS_DEFAULT_REGION and credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or "
                    "run where the controller's IAM role applies); AWS_ENDPOINT_URL for a local endpoint",
                )
            ]
        caller_arn = str(caller.get("Arn", ""))
        findings = [Finding("aws-credentials", PASS, f"AWS answers as {caller_arn}")]
        findings += self._guarded("asg", self.check_groups)
        findings += self._guarded("iam", lambda: self.check_iam(caller_arn))
        if self.options.queue_url:
            findings += self._guarded("queue", self.check_queue)
        return findings

    def check_queue(self) -> list[Finding]:
        """The EC2 events queue can be read, and EventBridge rules send it the events the controller reads."""
        from botocore.exceptions import BotoCoreError, ClientError

        from controller.adapters.sqs import ADVICE, EventQueue, QueueError
        from controller.model.ec2_event import DETAIL_TYPES

        url = self.options.queue_url
        queue = EventQueue(url, self.aws("sqs"))
        try:
            arn = queue.arn()
        except QueueError as error:
            return [Finding("queue", FAIL, f"the EC2 events queue cannot be read: {error}", ADVICE[error.kind])]
        findings = [Finding("queue", PASS, f"the EC2 events queue {arn} answers")]
        events = self.aws("events")
        try:
            names = events.list_rule_names_by_target(TargetArn=arn).get("RuleNames") or []
            patterns = [str(events.describe_rule(Name=name).get("EventPattern") or "") for name in names]
        except (ClientError, BotoCoreError) as error:
            return [
                *findings,
                Finding(
                    "queue-rules",
                    WARN,
                    f"could not list the EventBridge rules that target {arn}: {_error_text(error)}",
                    "check them by hand (docs/install.md, EC2 events through EventBridge and SQS), or allow "
                    "events:ListRuleNamesByTarget and events:DescribeRule to whoever runs doctor",
                ),
            ]
        missing = [kind for kind in DETAIL_TYPES if not any(kind in pattern for pattern in patterns)]
        if missing:
            findings.append(
                Finding(
                    "queue-rules",
                    WARN,
                    f"no EventBridge rule sends {_names(missing)} to {arn} (rules targeting it: "
                    f"{_names(sorted(names)) if names else 'none'})",
                    "create the rules of docs/install.md (EC2 events through EventBridge and SQS) with the queue as "
                    "their target",
                )
            )
        else:
            findings.append(Finding("queue-rules", PASS, f"EventBridge rules {_names(sorted(names))} target the queue"))
        return findings

    def check_groups(self) -> list[Finding]:
        from controller.adapters.aws import AutoScaling

        asg = AutoScaling(self.aws("autoscaling"), max_attempts=2)
        pairs: dict[str, tuple[str, str]] = {spot: (od, "configured") for spot, od in self.options.pairs}
        for group in asg.tagged_groups(self.options.partner_tag).values():
            partner = group.tags.get(self.options.partner_tag, "")
            if partner and group.name not in pairs:
                pairs[group.name] = (partner, f"tag {self.options.partner_tag}")
        if not pairs:
            return [
                Finding(
                    "asg-pairs",
                    FAIL,
                    "no spot/on-demand ASG pair is configured",
                    "set SPOT_ASG_NAME and ON_DEMAND_ASG_NAME (doctor: --spot-asg/--on-demand-asg) for one pair, or "
                    f"tag each spot ASG {self.options.partner_tag}=<on-demand ASG name>",
                )
            ]
        listed = ", ".join(f"{spot} -> {od} ({how})" for spot, (od, how) in sorted(pairs.items()))
        findings = [Finding("asg-pairs", PASS, f"{len(pairs)} pair(s): {listed}")]
        names = sorted({*pairs, *(od for od, _ in pairs.values())})
        groups = asg.describe_groups(names)
        for spot, (on_demand, _) in sorted(pairs.items()):
            findings += self._pair_findings(spot, on_demand, groups, asg)
        return findings

    def _pair_findings(self, spot: str, on_demand: str, groups: Mapping[str, Group], asg: AutoScaling) -> list[Finding]:
        findings: list[Finding] = []
        for name, role in ((spot, "spot"), (on_demand, "on-demand")):
            if name not in groups:
                findings.append(
                    Finding(
                        f"asg/{name}",
                        FAIL,
                        f"the {role} ASG {name} does not exist in this account and region",
                        "check SPOT_ASG_NAME/ON_DEMAND_ASG_NAME or the partner tag, and AWS_DEFAULT_REGION",
                    )
                )
        spot_group = groups.get(spot)
        if spot_group is not None:
            findings.append(_headroom(spot_group, "spot", FAIL, "Spot Guard cannot add a spot replacement"))
            if spot_group.capacity_rebalance:
                findings.append(
                    Finding(
                        f"capacity-rebalance/{spot}",
                        FAIL,
                        f"Capacity Rebalancing is on for {spot}: AWS launches its own replacement, so Spot Guard "
                        "refuses this group's nodes (both would launch one)",
                        f"aws autoscaling update-auto-scaling-group --auto-scaling-group-name {spot} "
                        "--no-capacity-rebalance",
                    )
                )
            else:
                findings.append(Finding(f"capacity-rebalance/{spot}", PASS, f"Capacity Rebalancing is off for {spot}"))
        od_group = groups.get(on_demand)
        if od_group is not None:
            findings.append(_headroom(od_group, "on-demand", WARN, "a fallback to on-demand cannot add capacity"))
        if spot_group is not None:
            findings += self._partner_tag_findings(spot_group, on_demand)
        for group, role in ((spot_group, "spot"), (od_group, "on-demand")):
            if group is not None:
                findings += self._group_setting_findings(group, role, asg)
        return findings

    def _partner_tag_findings(self, spot_group: Group, on_demand: str) -> list[Finding]:
        """The spot group names its on-demand partner in the partner tag, and the same one as the configuration."""
        tag = self.options.partner_tag
        check = f"partner-tag/{spot_group.name}"
        tagged = spot_group.tags.get(tag, "")
        fix = (
            f"aws autoscaling create-or-update-tags --tags ResourceId={spot_group.name},"
            f"ResourceType=auto-scaling-group,Key={tag},Value={on_demand},PropagateAtLaunch=false"
        )
        if not tagged:
            return [
                Finding(
                    check,
                    WARN,
                    f"{spot_group.name} has no tag {tag}: only SPOT_ASG_NAME/ON_DEMAND_ASG_NAME pair it with "
                    f"{on_demand}, so a controller or spotguard command started without them does not know the pair",
                    fix,
                )
            ]
        if tagged != on_demand:
            return [
                Finding(
                    check,
                    FAIL,
                    f"{spot_group.name} is configured with on-demand partner {on_demand} but tagged {tag}={tagged}: "
                    "the controller uses the configuration, other tools the tag",
                    f"make them agree: {fix} (or fix ON_DEMAND_ASG_NAME)",
                )
            ]
        return [Finding(check, PASS, f"{spot_group.name} is tagged {tag}={on_demand}")]

    def _group_setting_findings(self, group: Group, role: str, asg: AutoScaling) -> list[Finding]:
        """The settings of one group of a pair that break Spot Guard, each with what to do."""
        name = group.name
        findings = [_az_rebalance_finding(group), _launch_process_finding(group, role), _managed_tag_finding(group)]
        findings.append(self._launch_hooks_finding(group, role, asg))
        findings.append(self._instance_refresh_finding(group, role, asg))
        if group.new_instances_protected:
            findings.append(
                Finding(
                    f"scale-in-protection/{name}",
                    WARN,
                    f"new instances of {role} ASG {name} are protected from scale in: the ones Spot Guard adds stay "
                    "when anyone (you, a scaler, AWS) lowers desired capacity, while desired drops anyway; Spot "
                    "Guard's own retirements (TerminateInstanceInAutoScalingGroup) are not blocked",
                    f"aws autoscaling update-auto-scaling-group --auto-scaling-group-name {name} "
                    "--no-new-instances-protected-from-scale-in (or keep it if you mean it)",
                )
            )
        else:
            findings.append(
                Finding(f"scale-in-protection/{name}", PASS, f"new instances of {name} are not protected from scale in")
            )
        nodegroup = group.tags.get(EKS_NODEGROUP_TAG)
        if nodegroup:
            findings.append(
                Finding(
                    f"eks-managed/{name}",
                    WARN,
                    f"{role} ASG {name} belongs to EKS managed node group {nodegroup}: EKS (or the desiredSize your "
                    "IaC applies next) may set desired capacity back after Spot Guard changed it, and spot managed "
                    "node groups come with Capacity Rebalancing on",
                    "use self-managed node groups for Spot Guard's pairs, or keep desiredSize out of your IaC (e.g. "
                    "Terraform ignore_changes) and turn Capacity Rebalancing off on the group",
                )
            )
        return findings

    def _launch_hooks_finding(self, group: Group, role: str, asg: AutoScaling) -> Finding:
        """A launch hook holds a new instance in Pending:Wait up to its heartbeat timeout. The capacity check waits
        for such an instance beyond its deadline by the hook's timeout, at most HOOK_WAIT_CAP more
        (controller.checks.launch_hooks, the same rule): a hook longer than that conflicts, and a replacement still
        held when the wait ends falls back to on-demand as if spot were short."""
        from controller.adapters.aws import AwsError
        from controller.checks.launch_hooks import hook_wait
        from controller.config import format_duration

        check = f"launch-hooks/{group.name}"
        deadline = self.options.capacity_check_timeout
        try:
            wait = hook_wait(asg.lifecycle_hooks(group.name), deadline)
        except AwsError as error:
            return Finding(
                check,
                WARN,
                f"cannot read the lifecycle hooks of {group.name}: {error.code}: {error.aws_message}",
                "allow autoscaling:DescribeLifecycleHooks (manifests/iam-policy.json grants it) and run doctor again",
            )
        if not wait.hooks:
            return Finding(check, PASS, f"{group.name} has no launch lifecycle hook")
        listed = ", ".join(f"{h.name} ({format_duration(h.heartbeat_timeout)})" for h in (wait.conflicts or wait.hooks))
        if not wait.conflicts:
            return Finding(
                check,
                PASS,
                f"the capacity check waits up to {format_duration(wait.window)} (its deadline "
                f"{format_duration(deadline)} plus the longest launch hook) for an instance the launch hooks of "
                f"{group.name} hold in Pending:Wait: {listed}",
            )
        return Finding(
            check,
            WARN,
            f"launch hooks of {role} ASG {group.name} may hold a new instance in Pending:Wait longer than the "
            f"capacity check waits for it ({format_duration(wait.window)}: the deadline {format_duration(deadline)} "
            f"plus at most {format_duration(wait.cap)}): {listed}; a replacement still held then falls back to "
            "on-demand as if spot were short",
            f"complete the hook sooner and lower its heartbeat timeout to {format_duration(wait.cap)} or less (aws "
            f"autoscaling put-lifecycle-hook --auto-scaling-group-name {group.name} --lifecycle-hook-name "
            f"{wait.conflicts[0].name} --heartbeat-timeout {int(wait.cap)} ...); heartbeats "
            "(RecordLifecycleActionHeartbeat) do not make Spot Guard wait longer",
        )

    def _instance_refresh_finding(self, group: Group, role: str, asg: AutoScaling) -> Finding:
        """An active instance refresh replaces the group's instances itself; Spot Guard waits for it
        (controller.checks.instance_refresh): rebalance replacements up to REBALANCE_WAIT_MAX, the return to spot
        and the on-demand scale-down until it ends."""
        from controller.adapters.aws import AwsError
        from controller.checks.instance_refresh import REBALANCE_WAIT_MAX
        from controller.config import format_duration

        check = f"instance-refresh/{group.name}"
        try:
            active = next((r for r in asg.instance_refreshes(group.name) if r.active), None)
        except AwsError as error:
            return Finding(
                check,
                WARN,
                f"cannot read the instance refreshes of {group.name}: {error.code}: {error.aws_message}",
                "allow autoscaling:DescribeInstanceRefreshes (manifests/iam-policy.json grants it) and run doctor "
                "again",
            )
        if active is None:
            return Finding(check, PASS, f"no instance refresh of {group.name} is active")
        return Finding(
            check,
            WARN,
            f"instance refresh {active.refresh_id} of {role} ASG {group.name} is {active.status}: rebalance "
            f"replacements wait for it (at most {format_duration(REBALANCE_WAIT_MAX)}), returns to spot and on-demand "
            "scale-downs until it ends; interruptions are replaced at once",
            "let it finish (aws autoscaling describe-instance-refreshes --auto-scaling-group-name "
            f"{group.name}), or cancel it (aws autoscaling cancel-instance-refresh --auto-scaling-group-name "
            f"{group.name}) if replacements must not wait",
        )

    def check_iam(self, caller_arn: str) -> list[Finding]:
        from botocore.exceptions import ClientError

        preface = "Auto Scaling has no DryRun parameter, so IAM is checked with iam:SimulatePrincipalPolicy"
        actions = ", ".join(AWS_ACTIONS)
        by_hand = f"check the controller's IAM policy by hand for {actions}; spotguard_aws_errors_total shows denials"
        try:
            iam = self.aws("iam")
            principal = self.options.role_arn or principal_arn(caller_arn, iam)
        except Exception as error:
            return [Finding("iam", WARN, f"{preface}, but no IAM client: {_error_text(error)}", by_hand)]
        if principal is None:
            return [
                Finding(
                    "iam",
                    WARN,
                    f"{preface}, which cannot simulate {caller_arn or 'this caller'}",
                    f"pass --role-arn <the controller's IAM role ARN>, or {by_hand}",
                )
            ]
        try:
            response = iam.simulate_principal_policy(PolicySourceArn=principal, ActionNames=list(AWS_ACTIONS))
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in ("AccessDenied", "AccessDeniedException"):
                detail = f"{caller_arn} may not call it (AccessDenied)"
            else:
                detail = f"it failed ({code}: {error.response.get('Error', {}).get('Message', '')})"
            return [
                Finding(
                    "iam", WARN, f"{preface}; cannot verify IAM without iam:SimulatePrincipalPolicy: {detail}", by_hand
                )
            ]
        except Exception as error:  # e.g. an endpoint (moto) that does not implement it
            return [
                Finding(
                    "iam",
                    WARN,
                    f"{preface}; cannot verify IAM without iam:SimulatePrincipalPolicy: this AWS endpoint does not "
                    f"answer it ({_error_text(error)})",
                    by_hand,
                )
            ]
        results = response.get("EvaluationResults") or []
        denied = sorted(
            str(r.get("EvalActionName")) for r in results if str(r.get("EvalDecision", "")).lower() != "allowed"
        )
        if denied:
            return [
                Finding(
                    "iam",
                    FAIL,
                    f"{principal} is not allowed {', '.join(denied)} (by iam:SimulatePrincipalPolicy)",
                    f"allow {', '.join(denied)} in the controller's IAM policy (on its Auto Scaling groups)",
                )
            ]
        return [Finding("iam", PASS, f"{principal} is allowed all {len(AWS_ACTIONS)} Auto Scaling actions ({preface})")]


def principal_arn(caller_arn: str, iam: Any) -> str | None:
    """The IAM principal to simulate for the caller: the role behind an assumed-role session, or the user."""
    parts = caller_arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    _, partition, service, _, account, resource = parts
    kind, _, rest = resource.partition("/")
    if service == "sts" and kind == "assumed-role" and rest:
        role = rest.split("/", 1)[0]
        try:
            return str(iam.get_role(RoleName=role)["Role"]["Arn"])  # the real ARN, with its path
        except Exception:
            return f"arn:{partition}:iam::{account}:role/{role}"
    if kind in ("user", "role") and rest:
        return f"arn:{partition}:iam::{account}:{kind}/{rest}"
    return None


def _headroom(group: Group, role: str, status: str, consequence: str) -> Finding:
    room = group.max_size - group.desired
    check = f"headroom/{group.name}"
    if room > 0:
        return Finding(
            check, PASS, f"{role} ASG {group.name}: MaxSize {group.max_size}, desired {group.desired}: room for {room}"
        )
    return Finding(
        check,
        status,
        f"{role} ASG {group.name} is at its MaxSize ({group.max_size}, desired {group.desired}): {consequence}",
        f"raise MaxSize: aws autoscaling update-auto-scaling-group --auto-scaling-group-name {group.name} "
        f"--max-size {group.max_size + max(1, group.desired // 5)}",
    )


def _az_rebalance_finding(group: Group) -> Finding:
    """AZRebalance must be suspended on a group Spot Guard decrements: its terminations leave zones unbalanced, and
    AWS then launches in the emptiest zone and terminates an instance in the fullest one, undrained (EC2 Auto Scaling
    User Guide, "Rebalancing activities")."""
    check = f"az-rebalance/{group.name}"
    if AZ_REBALANCE in group.suspended_processes:
        return Finding(check, PASS, f"AZRebalance is suspended on {group.name}")
    return Finding(
        check,
        FAIL,
        f"AZRebalance is not suspended on {group.name}: when Spot Guard's exact terminations leave its zones "
        "unbalanced, AWS launches in the emptiest zone and then terminates an instance Spot Guard did not choose, "
        "without draining it",
        f"aws autoscaling suspend-processes --auto-scaling-group-name {group.name} --scaling-processes AZRebalance",
    )


def _launch_process_finding(group: Group, role: str) -> Finding:
    """A group whose Launch process is suspended launches nothing ("Suspend and resume a process for an Auto Scaling
    group"): every replacement in it falls back (spot) or fails (on-demand) at once, and a return to spot waits."""
    check = f"launch-process/{group.name}"
    if group.launches:
        return Finding(check, PASS, f"the Launch process of {group.name} is not suspended")
    consequence = (
        "every spot replacement falls back to on-demand at once, and no return to spot happens"
        if role == "spot"
        else "an on-demand fallback cannot launch: a replacement with spot short fails"
    )
    return Finding(
        check,
        FAIL,
        f"the Launch process of {role} ASG {group.name} is suspended, so it launches nothing: {consequence}",
        f"aws autoscaling resume-processes --auto-scaling-group-name {group.name} --scaling-processes Launch",
    )


def _managed_tag_finding(group: Group) -> Finding:
    """manifests/iam-policy.json conditions SetDesiredCapacity and TerminateInstanceInAutoScalingGroup on the tag."""
    check = f"managed-tag/{group.name}"
    value = group.tags.get(MANAGED_TAG)
    if value == "true":
        return Finding(check, PASS, f"{group.name} is tagged {MANAGED_TAG}=true")
    found = f"tagged {MANAGED_TAG}={value}" if value is not None else f"not tagged {MANAGED_TAG}"
    return Finding(
        check,
        FAIL,
        f"{group.name} is {found}: the controller's IAM policy (manifests/iam-policy.json) allows SetDesiredCapacity "
        "and TerminateInstanceInAutoScalingGroup only on groups tagged "
        f"{MANAGED_TAG}=true, so every scale-up, fallback and retirement on it is denied",
        f"aws autoscaling create-or-update-tags --tags ResourceId={group.name},ResourceType=auto-scaling-group,"
        f"Key={MANAGED_TAG},Value=true,PropagateAtLaunch=false",
    )


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown if len(names) <= SHOWN else f"{shown} and {len(names) - SHOWN} more"


def _error_text(error: BaseException) -> str:
    from kubernetes.client.exceptions import ApiException

    from controller.admin.context import api_error_text

    if isinstance(error, ApiException):
        return f"HTTP {api_error_text(error)}"
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def summary(findings: Iterable[Finding]) -> dict[str, int]:
    counts = {PASS: 0, WARN: 0, FAIL: 0}
    for finding in findings:
        counts[finding.status] = counts.get(finding.status, 0) + 1
    return {"pass": counts[PASS], "warn": counts[WARN], "fail": counts[FAIL]}


def render(findings: Sequence[Finding]) -> str:
    """One line per check (STATUS  CHECK  FINDING, aligned), a ``what to do:`` line under each WARN and FAIL."""
    check_width = max([len("CHECK"), *(len(f.check) for f in findings)])
    lines = [f"STATUS   {'CHECK':<{check_width}}   FINDING"]
    indent = " " * (len("STATUS") + 3 + check_width + 3)
    for f in findings:
        lines.append(f"{f.status:<6}   {f.check:<{check_width}}   {f.finding}")
        if f.what_to_do and f.status != PASS:
            lines.append(f"{indent}what to do: {f.what_to_do}")
    counts = summary(findings)
    lines.append(
        f"\n{counts['pass']} passed, {counts['warn']} warning{'s' if counts['warn'] != 1 else ''}, "
        f"{counts['fail']} failed"
    )
    return "\n".join(lines)


@click.command("doctor")
@target_options
@output_option
@click.option(
    "--spot-asg", envvar="SPOT_ASG_NAME", default=None, help="Spot ASG of the configured pair [$SPOT_ASG_NAME]."
)
@click.option(
    "--on-demand-asg",
    envvar="ON_DEMAND_ASG_NAME",
    default=None,
    help="On-demand ASG of the configured pair [$ON_DEMAND_ASG_NAME].",
)
@click.option(
    "--partner-tag",
    envvar="SPOT_GUARD_PARTNER_TAG",
    default=DEFAULT_PARTNER_TAG,
    show_default=True,
    help="Tag on spot ASGs naming their on-demand partner [$SPOT_GUARD_PARTNER_TAG].",
)
@click.option(
    "--as",
    "impersonate",
    default=None,
    metavar="USER",
    help="Check RBAC as this user, e.g. system:serviceaccount:kube-system:spotguard-controller (kubectl's --as).",
)
@click.option("--role-arn", default=None, help="IAM principal to simulate (default: the caller's role or user).")
@click.option("--no-aws", "no_aws", is_flag=True, help="Skip the AWS checks.")
@click.option(
    "--queue-url",
    envvar="SPOT_GUARD_QUEUE_URL",
    default="",
    help="The controller's EC2 events queue: check it is readable and EventBridge rules target it "
    "[$SPOT_GUARD_QUEUE_URL].",
)
@click.option(
    "--capacity-check-timeout",
    envvar="SPOT_GUARD_CAPACITY_CHECK_TIMEOUT",
    default=None,
    metavar="DURATION",
    help="The controller's capacity-check deadline (default 180s), which launch hooks must fit in "
    "[$SPOT_GUARD_CAPACITY_CHECK_TIMEOUT].",
)
def doctor(
    *,
    target: Target,
    output: str,
    spot_asg: str | None,
    on_demand_asg: str | None,
    partner_tag: str,
    impersonate: str | None,
    role_arn: str | None,
    no_aws: bool,
    queue_url: str,
    capacity_check_timeout: str | None,
) -> None:
    """Pre-flight checks of the cluster and AWS, each PASS, WARN or FAIL with what to do.

    Progress goes to stderr, the findings to stdout. Exit status 1 if any check FAILs.
    """
    if bool(spot_asg) != bool(on_demand_asg):
        raise click.UsageError("--spot-asg and --on-demand-asg (SPOT_ASG_NAME, ON_DEMAND_ASG_NAME) go together")
    if spot_asg and spot_asg == on_demand_asg:
        raise click.UsageError(f"--spot-asg and --on-demand-asg are both {spot_asg!r}: they must differ")
    deadline = DEFAULT_CAPACITY_CHECK_TIMEOUT
    if capacity_check_timeout:
        from controller.config import ConfigError, parse_duration

        try:
            deadline = parse_duration("SPOT_GUARD_CAPACITY_CHECK_TIMEOUT", capacity_check_timeout)
        except ConfigError as error:
            raise click.BadParameter(str(error), param_hint="--capacity-check-timeout") from None
    svc = services()
    options = DoctorOptions(
        namespace=target.namespace,
        lease_namespace=target.lease_namespace,
        lease_name=target.lease_name,
        pairs=((spot_asg, on_demand_asg),) if spot_asg and on_demand_asg else (),
        partner_tag=partner_tag,
        impersonate=impersonate,
        role_arn=role_arn,
        check_aws=not no_aws,
        capacity_check_timeout=deadline,
        queue_url=queue_url,
    )
    kube: Kube | None = None
    rbac_kube: Kube | None = None
    kube_error = ""
    try:
        kube = svc.connect(target)
        rbac_kube = svc.connect(target, impersonate) if impersonate else kube
    except Problem as error:
        kube_error = error.message
    findings = Doctor(
        options, kube=kube, rbac_kube=rbac_kube, aws=svc.aws, clock=svc.clock, step=progress, kube_error=kube_error
    ).run()
    counts = summary(findings)
    emit(
        {"checks": [f.to_json() for f in findings], "summary": counts, "ok": counts["fail"] == 0},
        output,
        lambda: render(findings),
    )
    if counts["fail"]:
        raise Problem(f"doctor found {counts['fail']} failing check(s)")
