"""The Helm chart, rendered by the real helm (built into the sandbox cache): it lints, it makes the same objects as
the kustomize base for the same settings (so the two cannot drift), every setting of the controller and nodewatch
is a value wired to its variable, its schema refuses wrong values naming them, and `helm package` makes the archive
an OCI registry takes. No sandbox is started: helm and kubectl only render."""

from __future__ import annotations

import dataclasses
import json
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller import config as controller_config
from nodewatch import config as nodewatch_config
from tests.support import chart as c
from tests.support import manifests as m

IMAGE = ("registry.example.com/platform/spotguard", "1.2.3")
ROLE = "arn:aws:iam::123456789012:role/spotguard-controller"
RUNBOOKS = "https://wiki.example.com/spotguard/runbooks"
#: One set of settings, said the Helm way...
VALUES: dict[str, Any] = {
    "image": {"repository": IMAGE[0], "tag": IMAGE[1]},
    "awsRegion": "eu-west-1",
    "controller": {
        "spotASGName": "my-cluster-spot",
        "onDemandASGName": "my-cluster-on-demand",
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": ROLE}},
    },
}
#: ...and the kustomize way (an overlay of manifests/, as docs/install.md shows).
OVERLAY = f"""
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [BASE]
images:
  - name: spotguard
    newName: {IMAGE[0]}
    newTag: "{IMAGE[1]}"
configMapGenerator:
  - name: spotguard-controller-config
    behavior: merge
    literals:
      - SPOT_ASG_NAME=my-cluster-spot
      - ON_DEMAND_ASG_NAME=my-cluster-on-demand
      - AWS_DEFAULT_REGION=eu-west-1
patches:
  - target: {{kind: ServiceAccount, name: spotguard-controller}}
    patch: |-
      - op: replace
        path: /metadata/annotations/eks.amazonaws.com~1role-arn
        value: {ROLE}
"""
MONITORING_VALUES: dict[str, Any] = {
    "serviceMonitor": {"create": True},
    "prometheusRule": {"create": True, "runbookBaseURL": RUNBOOKS},
    "dashboards": {"create": True},
}


def _docs_block(heading: str, marker: str) -> str:
    """The first ```yaml block after ``heading`` in docs/install.md that contains ``marker``."""
    text = (m.REPO / "docs" / "install.md").read_text().split(heading, 1)[1]
    for block in text.split("```yaml\n")[1:]:
        body = block.split("```", 1)[0]
        if marker in body:
            return textwrap.dedent(body)
    raise AssertionError(f"docs/install.md: no yaml block with {marker!r} under {heading!r}")


def test_helm_lint_passes_strict_with_and_without_the_monitoring_objects(tmp_path: Path) -> None:
    result = c.run_helm("lint", "--strict", str(c.CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    values = tmp_path / "monitoring.yaml"
    values.write_text(yaml.safe_dump(MONITORING_VALUES))
    result = c.run_helm("lint", "--strict", str(c.CHART), "-f", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_the_chart_and_the_kustomize_base_make_the_same_objects(tmp_path: Path) -> None:
    base = c.kustomize_overlay(tmp_path, m.MANIFESTS, OVERLAY)
    chart = c.helm_template(VALUES, tmp_path)

    assert c.differences(base, chart) == []
    # The comparison sees what it must: the images, the role, the groups came through on both sides.
    images = {ctr["image"] for o in m.workloads(chart) for ctr in m.pod_spec(o)["containers"]}
    assert images == {f"{IMAGE[0]}:{IMAGE[1]}"}
    (config_map,) = [o for o in chart if o["kind"] == "ConfigMap"]
    assert config_map["data"]["SPOT_ASG_NAME"] == "my-cluster-spot"
    assert config_map["data"]["AWS_DEFAULT_REGION"] == "eu-west-1"


def test_the_comparison_catches_a_drift(tmp_path: Path) -> None:
    """A chart that differed in one rule, one probe or one setting would be reported, not waved through."""
    base = c.kustomize_overlay(tmp_path, m.MANIFESTS, OVERLAY)
    drifted = c.helm_template(
        {**VALUES, "controller": {**VALUES["controller"], "drainTimeout": "91s"}, "nodewatch": {"pollInterval": 3}},
        tmp_path,
    )
    problems = "\n".join(c.differences(base, drifted))
    assert "controller settings differ" in problems and "drain_timeout=91.0" in problems
    assert "nodewatch settings differ" in problems and "poll_interval=3.0" in problems

    probe = json.loads(json.dumps(drifted))
    daemonset = next(o for o in probe if o["kind"] == "DaemonSet")
    daemonset["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["failureThreshold"] = 5
    role = next(o for o in probe if o["kind"] == "ClusterRole" and o["metadata"]["name"] == m.NODEWATCH)
    role["rules"][0]["verbs"].append("list")
    problems = "\n".join(c.differences(base, probe))
    assert "('DaemonSet', 'kube-system', 'spotguard-nodewatch') differs" in problems
    assert "('ClusterRole', '', 'spotguard-nodewatch') differs" in problems


def test_the_monitoring_objects_match_the_kustomize_monitoring_base_and_its_runbook_overlay(tmp_path: Path) -> None:
    overlay = _docs_block("## Monitoring", "runbook_url").replace("../../manifests/monitoring", "BASE")
    assert RUNBOOKS not in overlay
    base = c.kustomize_overlay(
        tmp_path, m.MONITORING, overlay.replace("https://docs.example.com/spotguard/runbooks", RUNBOOKS)
    )
    chart = [
        o
        for o in c.helm_template({**VALUES, **MONITORING_VALUES}, tmp_path)
        if o["kind"] in ("ServiceMonitor", "PrometheusRule") or o["metadata"]["name"] == "spotguard-dashboard"
    ]

    assert c.differences(base, chart) == []
    rule = m.find(chart, "PrometheusRule")
    urls = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert len(urls) >= 8
    assert urls == [f"{RUNBOOKS}#{r['alert'].lower()}" for g in rule["spec"]["groups"] for r in g["rules"]]
    dashboard = m.find(chart, "ConfigMap", "spotguard-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (m.MONITORING / "dashboards" / "spotguard.json").read_text()
    assert json.loads(dashboard["data"]["spotguard.json"]) == json.loads(shipped)


def test_the_install_docs_helm_values_set_what_they_say(tmp_path: Path) -> None:
    values = yaml.safe_load(_docs_block("## Install with Helm", "spotASGName"))
    objects = c.helm_template(values, tmp_path)
    settings = c.controller_settings(_containers(objects)[0])
    assert (settings.spot_asg_name, settings.on_demand_asg_name) == ("my-cluster-spot", "my-cluster-on-demand")
    assert m.find(objects, "ServiceAccount", m.CONTROLLER)["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/spotguard-controller"
    }
    assert {"ServiceMonitor", "PrometheusRule"} <= {o["kind"] for o in objects}


def test_without_monitoring_values_the_chart_needs_no_prometheus_operator(tmp_path: Path) -> None:
    kinds = {o["kind"] for o in c.helm_template({}, tmp_path)}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    assert "spotguard-dashboard" not in {o["metadata"]["name"] for o in c.helm_template({}, tmp_path)}


def _containers(objects: list[m.Obj]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(controller env, nodewatch env) as the programs see them."""
    maps = {c.key(o)[2]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"}
    (controller,) = m.pod_spec(m.find(objects, "Deployment"))["containers"]
    (nodewatch,) = m.pod_spec(m.find(objects, "DaemonSet"))["containers"]
    return c.effective_env(controller, maps), c.effective_env(nodewatch, maps)


def test_the_charts_defaults_are_the_programs_own_defaults(tmp_path: Path) -> None:
    controller_env, nodewatch_env = _containers(c.helm_template({}, tmp_path))
    # Every variable the controller reads is set by the chart (the downward API sets the two namespaces).
    assert {var for var, _ in controller_config._ENV.values()} <= set(controller_env)
    assert c.controller_settings(controller_env) == controller_config.Settings(
        namespace=c.NAMESPACE, lease_namespace=c.NAMESPACE
    )
    defaults = nodewatch_config.parse_settings([], environ={"NODE_NAME": c.DOWNWARD["spec.nodeName"]})
    assert c.nodewatch_settings(nodewatch_env) == defaults
    not_for_a_cluster = {"NODEWATCH_KUBECONFIG", "NODEWATCH_SERVICE_ACCOUNT_DIR"}  # in-cluster credentials instead
    read = {option.env for option in nodewatch_config._OPTIONS} | {"NODEWATCH_IMDS_V1_FALLBACK", "LOG_LEVEL"}
    assert read - not_for_a_cluster <= set(nodewatch_env)


#: values path -> (settings field, a value that is not the default, what the program makes of it)
CONTROLLER_VALUES: dict[str, tuple[str, Any, Any]] = {
    "controller.spotASGName": ("spot_asg_name", "s", "s"),
    "controller.onDemandASGName": ("on_demand_asg_name", "o", "o"),
    "controller.partnerTag": ("partner_tag", "example.com/partner", "example.com/partner"),
    "controller.scaleTimeout": ("scale_timeout", "61s", 61.0),
    "controller.capacityCheckTimeout": ("capacity_check_timeout", "4m", 240.0),
    "controller.capacityPollInterval": ("capacity_poll_interval", 7, 7.0),
    "controller.batchWindow": ("batch_window", "200ms", 0.2),
    "controller.batchMaxDelay": ("batch_max_delay", "3s", 3.0),
    "controller.queueURL": (
        "queue_url",
        "https://sqs.eu-west-3.amazonaws.com/123456789012/spotguard-ec2-events",
        "https://sqs.eu-west-3.amazonaws.com/123456789012/spotguard-ec2-events",
    ),
    "controller.retirePolicy": ("retire_policy", "keep-until-interruption", "keep-until-interruption"),
    "controller.keepGracePeriod": ("keep_grace_period", "20m", 1200.0),
    "controller.drainOnInterruption": ("drain_on_interruption", False, False),
    "controller.drainTimeout": ("drain_timeout", "2m", 120.0),
    "controller.maxDrainAttempts": ("max_drain_attempts", 5, 5),
    "controller.deleteLocalData": ("delete_emptydir_data", True, True),
    "controller.minimumWaitDuration": ("minimum_wait_duration", "1h", 3600.0),
    "controller.stabilityWindow": ("stability_window", "5m", 300.0),
    "controller.utilisationBuffer": ("utilisation_buffer", 0.5, 0.5),
    "controller.completedTTL": ("completed_ttl", "48h", 172800.0),
    "controller.monitoringBackoffInitial": ("monitoring_backoff_initial", "2m", 120.0),
    "controller.monitoringBackoffMax": ("monitoring_backoff_max", "30m", 1800.0),
    "controller.safetyRetryInterval": ("safety_retry_interval", "45s", 45.0),
    "controller.lifecyclePollInterval": ("lifecycle_poll_interval", "20s", 20.0),
    "controller.scaleDownTakeover": ("scale_down_takeover", "1m", 60.0),
    "controller.leaderElection.leaseName": ("lease_name", "sg-lease", "sg-lease"),
    "controller.leaderElection.leaseDuration": ("lease_duration", "20s", 20.0),
    "controller.leaderElection.renewDeadline": ("renew_deadline", "12s", 12.0),
    "controller.leaderElection.retryPeriod": ("retry_period", "3s", 3.0),
    "controller.leaderElection.fenceMargin": ("fence_margin", "4s", 4.0),
    "controller.awsConnectTimeout": ("aws_connect_timeout", "1200ms", 1.2),
    "controller.awsReadTimeout": ("aws_read_timeout", "10s", 10.0),
    "controller.metricsHost": ("metrics_host", "127.0.0.1", "127.0.0.1"),
    "controller.metricsPort": ("metrics_port", 9090, 9090),
    "controller.dryRun": ("dry_run", True, True),
    "logLevel": ("log_level", "debug", "debug"),
}
#: Set by the chart from the pod's own namespace (the RBAC grants them there), not values.
CONTROLLER_FROM_THE_POD = {"namespace", "lease_namespace"}
NODEWATCH_VALUES: dict[str, tuple[str, Any, Any]] = {
    "nodewatch.instanceMetadataURL": ("imds_url", "http://169.254.170.2", "http://169.254.170.2"),
    "nodewatch.pollInterval": ("poll_interval", 1, 1.0),
    "nodewatch.metadataTimeout": ("imds_timeout", 1.5, 1.5),
    "nodewatch.metadataTries": ("imds_attempts", 4, 4),
    "nodewatch.metadataTokenTTL": ("imds_token_ttl", 3600, 3600),
    "nodewatch.imdsV1Fallback": ("imds_v1_fallback", True, True),
    "nodewatch.maxBackoff": ("max_backoff", 20, 20.0),
    "nodewatch.unreadyAfter": ("unready_after", 60, 60.0),
    "nodewatch.apiTimeout": ("api_timeout", 9, 9.0),
    "nodewatch.metricsPort": ("listen_port", 9999, 9999),
}
#: nodewatch settings that are the pod's own (its node) or not for a cluster (a kubeconfig, the token directory).
NODEWATCH_NOT_VALUES = {"node_name", "listen_host", "kubeconfig", "service_account_dir", "log_level"}


def _nested(path: str, value: Any) -> dict[str, Any]:
    *parents, leaf = path.split(".")
    tree: dict[str, Any] = {leaf: value}
    for parent in reversed(parents):
        tree = {parent: tree}
    return tree


def test_every_controller_setting_is_a_value_wired_to_its_variable(tmp_path: Path) -> None:
    fields = {f.name for f in dataclasses.fields(controller_config.Settings)}
    assert {field for field, _, _ in CONTROLLER_VALUES.values()} == fields - CONTROLLER_FROM_THE_POD
    for number, (path, (field, value, expected)) in enumerate(CONTROLLER_VALUES.items()):
        values = _nested(path, value)
        if field in ("spot_asg_name", "on_demand_asg_name"):  # they go together
            values = {"controller": {"spotASGName": "s", "onDemandASGName": "o"}}
        directory = tmp_path / str(number)
        directory.mkdir()
        objects = c.helm_template(values, directory)
        settings = c.controller_settings(_containers(objects)[0])
        assert getattr(settings, field) == expected, f"{path}={value!r} did not reach {field}"
    lease_rule = next(
        r for r in m.rbac_rules(objects, "Role", m.CONTROLLER) if r["resources"] == ["leases"] and "resourceNames" in r
    )
    assert lease_rule["resourceNames"] == ["spotguard-controller"]  # the last render changed only the log level


def test_the_lease_the_role_grants_is_the_one_the_controller_uses(tmp_path: Path) -> None:
    objects = c.helm_template(_nested("controller.leaderElection.leaseName", "sg-lease"), tmp_path)
    assert c.controller_settings(_containers(objects)[0]).lease_name == "sg-lease"
    named = [r for r in m.rbac_rules(objects, "Role", m.CONTROLLER) if "resourceNames" in r]
    assert [r["resourceNames"] for r in named] == [["sg-lease"]]


def test_every_nodewatch_setting_is_a_value_wired_to_its_variable(tmp_path: Path) -> None:
    fields = {f.name for f in dataclasses.fields(nodewatch_config.Settings)}
    assert {field for field, _, _ in NODEWATCH_VALUES.values()} == fields - NODEWATCH_NOT_VALUES
    for number, (path, (field, value, expected)) in enumerate(NODEWATCH_VALUES.items()):
        directory = tmp_path / str(number)
        directory.mkdir()
        settings = c.nodewatch_settings(_containers(c.helm_template(_nested(path, value), directory))[1])
        assert getattr(settings, field) == expected, f"{path}={value!r} did not reach {field}"


def test_host_network_and_the_metrics_port_reach_the_pod_and_the_service(tmp_path: Path) -> None:
    objects = c.helm_template({"nodewatch": {"useHostNetwork": True, "metricsPort": 9999}}, tmp_path)
    pod = m.pod_spec(m.find(objects, "DaemonSet"))
    assert (pod["hostNetwork"], pod["dnsPolicy"]) == (True, "ClusterFirstWithHostNet")
    assert pod["containers"][0]["ports"][0]["containerPort"] == 9999
    assert m.find(objects, "Service", m.NODEWATCH)["spec"]["ports"][0]["port"] == 9999


@pytest.mark.parametrize(
    ("values", "named", "says"),
    [
        ({"controller": {"retirePolicy": "delete"}}, "/controller/retirePolicy", "'drain', 'keep-until-interruption'"),
        ({"controller": {"drainTimeout": "ninety seconds"}}, "/controller/drainTimeout", "does not match pattern"),
        ({"controller": {"utilisationBuffer": 1.5}}, "/controller/utilisationBuffer", "maximum"),
        ({"nodewatch": {"metadataTries": 0}}, "/nodewatch/metadataTries", "minimum"),
        (
            {"nodewatch": {"instanceMetadataURL": "https://169.254.169.254"}},
            "/nodewatch/instanceMetadataURL",
            "pattern",
        ),
        ({"prometheusRule": {"runbookBaseURL": "docs/runbooks.md"}}, "/prometheusRule/runbookBaseURL", "pattern"),
        ({"logLevel": "verbose"}, "/logLevel", "'debug', 'info', 'warning', 'error'"),
        ({"controler": {"drainTimeout": "90s"}}, "additional properties 'controler' not allowed", ""),
    ],
    ids=["enum", "duration", "fraction", "tries", "imds-url", "runbook-url", "log-level", "typo"],
)
def test_the_schema_refuses_a_wrong_value_and_names_it(
    values: dict[str, Any], named: str, says: str, tmp_path: Path
) -> None:
    values_file = tmp_path / "wrong.yaml"
    values_file.write_text(yaml.safe_dump(values))
    result = c.run_helm("template", c.RELEASE, str(c.CHART), "-f", str(values_file), check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert named in result.stderr and says in result.stderr, result.stderr


def test_helm_package_makes_a_versioned_chart_archive_for_an_oci_registry(tmp_path: Path) -> None:
    """``helm push oci://...`` takes a packaged chart named <name>-<semver>.tgz whose Chart.yaml says the same."""
    result = c.run_helm("package", str(c.CHART), "--destination", str(tmp_path))
    chart_yaml = yaml.safe_load((c.CHART / "Chart.yaml").read_text())
    archive = tmp_path / f"{chart_yaml['name']}-{chart_yaml['version']}.tgz"
    assert str(archive) in result.stdout
    with tarfile.open(archive) as packed:
        names = set(packed.getnames())
    for part in (
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "templates/NOTES.txt",
        "crds/crd-spotguardfallbackevent.yaml",
        "dashboards/spotguard.json",
        "files/spotguard-alerts.yaml",
    ):
        assert f"spotguard/{part}" in names
    shown = yaml.safe_load(c.run_helm("show", "chart", str(archive)).stdout)
    assert (shown["apiVersion"], shown["version"], shown["appVersion"]) == ("v2", "0.1.0", "0.1.0")
    # The archive renders by itself, as a user pulling it from a registry would install it.
    rendered = c.run_helm("template", c.RELEASE, str(archive), "--namespace", c.NAMESPACE).stdout
    assert "kind: DaemonSet" in rendered


def test_the_chart_ships_the_bases_crd_unchanged() -> None:
    assert (c.CHART / "crds" / "crd-spotguardfallbackevent.yaml").read_text() == (
        m.MANIFESTS / "crd-spotguardfallbackevent.yaml"
    ).read_text()
