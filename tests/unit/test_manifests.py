"""manifests/ as written: what each object promises (security, placement, configuration, probes) checked against
the code it runs. tests/integration/test_manifests_on_sandbox.py installs them on a real API server."""

from __future__ import annotations

import ast
import dataclasses
import re

import pytest
import yaml

from controller import config
from controller.adapters.election.config import ElectionConfig
from controller.model.ownership import CONTROLLER_ANNOTATIONS, CONTROLLER_FINALIZERS
from nodewatch import annotations as contract
from nodewatch import config as nodewatch_config
from nodewatch.annotations import NODEWATCH_KEYS
from tests.support import manifests as m

OBJECTS = m.resources()
DEPLOYMENT = m.find(OBJECTS, "Deployment", m.CONTROLLER)
DAEMONSET = m.find(OBJECTS, "DaemonSet", m.NODEWATCH)
REGISTRY_HOSTS = ("docker.io", "ghcr.io", "quay.io", "gcr.io", "registry.k8s.io", "public.ecr.aws", ".dkr.ecr.")


def test_the_admission_policy_allows_exactly_nodewatchs_annotation_keys() -> None:
    policy = m.find(OBJECTS, "ValidatingAdmissionPolicy", m.NODEWATCH_POLICY)
    keys = m.allowed_annotation_keys(policy)
    assert sorted(keys) == sorted(NODEWATCH_KEYS)
    assert len(keys) == len(set(keys))
    binding = m.find(OBJECTS, "ValidatingAdmissionPolicyBinding", m.NODEWATCH_POLICY)
    assert binding["spec"] == {"policyName": m.NODEWATCH_POLICY, "validationActions": ["Deny"]}
    assert policy["spec"]["failurePolicy"] == "Fail"


def test_the_controller_state_policy_guards_exactly_the_controllers_keys_from_all_but_the_controller() -> None:
    policy = m.find(OBJECTS, "ValidatingAdmissionPolicy", m.CONTROLLER_STATE_POLICY)
    assert m.literals(policy, "controllerAnnotations") == list(CONTROLLER_ANNOTATIONS)
    assert m.literals(policy, "controllerFinalizers") == list(CONTROLLER_FINALIZERS)
    conditions = {c["name"]: c["expression"] for c in policy["spec"]["matchConditions"]}
    # The namespace is kube-system as written; manifests/namespace-transformer.yaml moves it with the installation.
    assert conditions == {
        "not-the-controller": f"request.userInfo.username != 'system:serviceaccount:kube-system:{m.CONTROLLER}'",
        "not-break-glass": "!('system:masters' in request.userInfo.groups)",
    }
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["nodes", "nodes/status"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    assert policy["spec"]["failurePolicy"] == "Fail"
    binding = m.find(OBJECTS, "ValidatingAdmissionPolicyBinding", m.CONTROLLER_STATE_POLICY)
    assert binding["spec"] == {"policyName": m.CONTROLLER_STATE_POLICY, "validationActions": ["Deny"]}
    replacements = [
        t for t in m.load_all(m.MANIFESTS / "namespace-transformer.yaml") if t["kind"] == "ReplacementTransformer"
    ]
    (target,) = [t for r in replacements for rep in r["replacements"] for t in rep["targets"]]
    assert target["select"] == {"kind": "ValidatingAdmissionPolicy", "name": m.CONTROLLER_STATE_POLICY}
    assert target["fieldPaths"] == ["spec.matchConditions.[name=not-the-controller].expression"]


#: ``spotguard.io/`` keys the controller spells that are not its annotations on Nodes, and where they live.
NOT_CONTROLLER_NODE_ANNOTATIONS = {
    "spotguard.io/lifecycle": "annotation on SpotGuardFallbackEvents (the controller alone may write those: RBAC)",
    "spotguard.io/traceparent": "annotation on SpotGuardFallbackEvents",
    "spotguard.io/tracestate": "annotation on SpotGuardFallbackEvents",
    "spotguard.io/paused": "annotation on the controller's Lease",
    "spotguard.io/paused-at": "annotation on the controller's Lease",
    "spotguard.io/paused-by": "annotation on the controller's Lease",
    "spotguard.io/paused-reason": "annotation on the controller's Lease",
    "spotguard.io/rebalance": "a taint (NodeRestriction keeps kubelets from changing taints)",
    "spotguard.io/scale-down": "a taint (NodeRestriction keeps kubelets from changing taints)",
    "spotguard.io/on-demand-partner": "a tag on Auto Scaling groups",
    "spotguard.io/managed": "a tag on Auto Scaling groups (the IAM policy allows capacity changes of those only)",
}


def _spotguard_keys_in_the_controller() -> set[str]:
    """Every ``spotguard.io/...`` string the controller's code spells, literally or as ``PREFIX + "..."``."""
    keys = set()
    for path in (m.REPO / "controller").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.startswith("spotguard.io/")
            ):
                keys.add(node.value)
            if (
                isinstance(node, ast.BinOp)
                and isinstance(node.right, ast.Constant)
                and isinstance(node.right.value, str)
                and (getattr(node.left, "attr", None) or getattr(node.left, "id", None)) == "PREFIX"
                and "observability/metrics" not in str(path)
            ):
                keys.add(contract.PREFIX + node.right.value)
    return keys


def test_every_key_the_controller_spells_is_guarded_or_said_to_live_elsewhere() -> None:
    """A key added to the controller's Node state without a place in the policy (or here) fails this test."""
    known = {*CONTROLLER_ANNOTATIONS, *CONTROLLER_FINALIZERS, *NODEWATCH_KEYS, *NOT_CONTROLLER_NODE_ANNOTATIONS}
    assert sorted(_spotguard_keys_in_the_controller() - known) == []


@pytest.mark.parametrize("workload", [DEPLOYMENT, DAEMONSET], ids=lambda w: w["kind"])
def test_every_container_runs_unprivileged_on_a_read_only_root(workload: m.Obj) -> None:
    pod = m.pod_spec(workload)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0 and pod["securityContext"]["runAsGroup"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(field), f"{field} is on"
    assert not [v for v in pod.get("volumes") or [] if "hostPath" in v]
    for container in [*pod["containers"], *(pod.get("initContainers") or [])]:
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert not security.get("privileged")
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
        assert container["resources"]["limits"]["memory"]


def test_the_images_are_placeholders_that_kustomize_sets() -> None:
    for workload in (DEPLOYMENT, DAEMONSET):
        assert [c["image"] for c in m.pod_spec(workload)["containers"]] == ["spotguard"]
    assert m.kustomization()["images"] == [{"name": "spotguard", "newName": "spotguard", "newTag": "0.1.0"}]
    texts = [p.read_text() for p in m.MANIFESTS.rglob("*") if p.is_file()]
    texts.append((m.REPO / "docs" / "install.md").read_text())
    for text in texts:
        for host in REGISTRY_HOSTS:
            assert host not in text


def test_the_controller_serves_its_probes_where_the_deployment_looks() -> None:
    (container,) = m.pod_spec(DEPLOYMENT)["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    env = m.env_of(container)
    assert int(env["SPOT_GUARD_METRICS_PORT"]["value"]) == port == config.Settings().metrics_port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["args"] == ["run"]
    assert container["envFrom"] == [{"configMapRef": {"name": m.kustomization()["configMapGenerator"][0]["name"]}}]
    # SGFEs and the Lease are where the Role is: the pod's own namespace.
    for name in ("SPOT_GUARD_NAMESPACE", "SPOT_GUARD_LEASE_NAMESPACE"):
        assert env[name]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    service = m.find(OBJECTS, "Service", m.CONTROLLER)
    assert service["spec"]["selector"] == DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_nodewatch_serves_its_probes_where_the_daemonset_looks() -> None:
    (container,) = m.pod_spec(DAEMONSET)["containers"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    env = m.env_of(container)
    assert container["command"] == ["spotguard-nodewatch"]
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    settings = nodewatch_config.parse_settings(
        [], {"NODE_NAME": "n", "NODEWATCH_LISTEN": env["NODEWATCH_LISTEN"]["value"]}
    )
    assert settings.listen_port == port
    assert settings.listen_host == "0.0.0.0"  # reachable by the kubelet's probes and by Prometheus
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    service = m.find(OBJECTS, "Service", m.NODEWATCH)
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == DAEMONSET["spec"]["template"]["metadata"]["labels"]


def test_the_controller_configuration_has_placeholders_and_the_design_defaults() -> None:
    values = m.read_env_file()
    assert re.fullmatch(r"<[a-z-]+>", values["SPOT_ASG_NAME"])
    assert re.fullmatch(r"<[a-z-]+>", values["ON_DEMAND_ASG_NAME"])
    known = {config.env_var(f.name) for f in dataclasses.fields(config.Settings)} | {"AWS_DEFAULT_REGION"}
    assert set(values) <= known, f"unknown settings: {set(values) - known}"
    settings = config.from_env({**values, "SPOT_ASG_NAME": "spot", "ON_DEMAND_ASG_NAME": "on-demand"})
    assert settings.scale_timeout == 60
    assert settings.capacity_check_timeout == 180
    assert settings.log_level == "info"


def test_the_controller_runs_twice_apart_off_spot_nodes_and_outlasts_its_lease_release() -> None:
    spec = DEPLOYMENT["spec"]
    pod = m.pod_spec(DEPLOYMENT)
    labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] == 2
    hostname_spread = [c for c in pod["topologySpreadConstraints"] if c["topologyKey"] == "kubernetes.io/hostname"]
    assert hostname_spread == [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": labels},
        }
    ]
    (preference,) = pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preference["preference"]["matchExpressions"] == [
        {"key": "eks.amazonaws.com/capacityType", "operator": "NotIn", "values": ["SPOT"]}
    ]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in pod["affinity"]["nodeAffinity"]
    pdb = m.find(OBJECTS, "PodDisruptionBudget", m.CONTROLLER)
    assert pdb["spec"]["selector"] == {"matchLabels": labels}
    assert pdb["spec"]["maxUnavailable"] == 1
    # On SIGTERM: wait for the work (at most a lease duration), then release (a read and a write at most).
    election = ElectionConfig()
    release = election.lease_duration + 2 * election.call_timeout
    assert pod["terminationGracePeriodSeconds"] > release
    assert pod["priorityClassName"] == "system-cluster-critical"


def test_the_controllers_lease_is_the_one_its_role_names() -> None:
    (container,) = m.pod_spec(DEPLOYMENT)["containers"]
    lease = m.env_of(container)["SPOT_GUARD_LEASE_NAME"]["value"]
    assert lease == config.Settings().lease_name
    rules = [r for r in m.rbac_rules(OBJECTS, "Role", m.CONTROLLER) if r["resources"] == ["leases"]]
    named = [r for r in rules if "resourceNames" in r]
    assert [r["resourceNames"] for r in named] == [[lease]]
    assert sorted(v for r in named for v in r["verbs"]) == ["get", "update"]
    assert [r["verbs"] for r in rules if "resourceNames" not in r] == [["create"]]


def test_nodewatch_runs_on_every_linux_node_whatever_its_labels_and_taints() -> None:
    pod = m.pod_spec(DAEMONSET)
    # No spot label to invent: each nodewatch asks IMDS whether its instance is spot (and idles if not).
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "affinity" not in pod
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["serviceAccountName"] == m.NODEWATCH
    assert not pod.get("hostNetwork"), "on the host network: update the IMDS hop-limit notes in docs/install.md"


def test_nodewatch_may_get_and_patch_nodes_and_nothing_else() -> None:
    assert m.rbac_rules(OBJECTS, "ClusterRole", m.NODEWATCH) == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}
    ]
    bindings = [
        b
        for b in [*m.find_all(OBJECTS, "ClusterRoleBinding"), *m.find_all(OBJECTS, "RoleBinding")]
        if any(s["name"] == m.NODEWATCH for s in b["subjects"])
    ]
    assert [b["roleRef"]["name"] for b in bindings] == [m.NODEWATCH]


def test_every_manifest_file_is_installed_or_documented_as_separate() -> None:
    listed = set(m.kustomization()["resources"]) | {t for t in m.kustomization()["transformers"]}
    listed |= {e for g in m.kustomization()["configMapGenerator"] for e in g["envs"]}
    separate = {"iam-policy.json", "kustomization.yaml"}
    files = {p.name for p in m.MANIFESTS.iterdir() if p.is_file()}
    assert files == listed | separate
    # The alerts and ServiceMonitors need the Prometheus Operator's CRDs: they are the monitoring overlay.
    assert "prometheusrule.yaml" in yaml.safe_load((m.MONITORING / "kustomization.yaml").read_text())["resources"]


def test_the_service_monitors_scrape_the_jobs_the_alerts_and_runbooks_name() -> None:
    monitors = {o["metadata"]["name"]: o for o in m.resources(m.MONITORING) if o["kind"] == "ServiceMonitor"}
    rules = (m.MONITORING / "prometheusrule.yaml").read_text()
    assert set(re.findall(r'job="([^"]+)"', rules)) <= set(monitors)
    for name, monitor in monitors.items():
        service = m.find(OBJECTS, "Service", name)  # the job label is the Service's name
        assert monitor["spec"]["selector"]["matchLabels"] == service["metadata"]["labels"]
        assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {p["name"] for p in service["spec"]["ports"]}


def test_install_docs_explain_every_placeholder() -> None:
    docs = (m.REPO / "docs" / "install.md").read_text()
    placeholders = set(re.findall(r"<[a-z-]+>", m.CONTROLLER_ENV.read_text()))
    account = m.find(OBJECTS, "ServiceAccount", m.CONTROLLER)
    placeholders |= set(re.findall(r"<[a-z-]+>", account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]))
    assert placeholders
    for placeholder in placeholders:
        assert placeholder in docs, f"docs/install.md does not say what to put for {placeholder}"
    for topic in ("hop limit", "IRSA", "iam-policy.json", "spotguard.io/managed"):
        assert topic in docs
