"""The Spot Guard dashboard: one row per question an operator asks, each panel a PromQL query on the metrics of
``controller/observability/metrics.py`` and ``nodewatch/metrics.py``.

Every query uses only Grafana's ``$__rate_interval`` and ``$__range`` and the ``datasource`` variable, so that the
integration test can evaluate each against a real Prometheus scrape of a running controller and nodewatch. Each
legend names the labels (``{{phase}}``) that every series of its query must carry.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef

UID = "spotguard"
TITLE = "Spot Guard"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
#: The phases a fallback is open in (SpotGuardFallbackEvent status.phase, before Completed or Failed).
OPEN_PHASES = "Pending|Monitoring|ReadyForScaleDown|ScalingDown"


@dataclasses.dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and its legend (``{{label}}`` placeholders name the labels it keeps)."""

    expr: str
    legend: str


@dataclasses.dataclass(frozen=True)
class PanelSpec:
    title: str
    description: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12
    height: int = 8
    stacked: bool = False


def _q(expr: str, legend: str = "") -> Query:
    return Query(" ".join(expr.split()), legend)


ROWS: tuple[tuple[str, tuple[PanelSpec, ...]], ...] = (
    (
        "Fallbacks to on-demand",
        (
            PanelSpec(
                "Open fallbacks by phase",
                "SpotGuardFallbackEvents not yet Completed or Failed, by status.phase (the leader's view).",
                (_q(f'max by (phase) (spotguard_fallback_events{{phase=~"{OPEN_PHASES}"}})', "{{phase}}"),),
                kind="stat",
                width=8,
            ),
            PanelSpec(
                "Oldest open fallback",
                "Time since the oldest unfinished fallback went to on-demand; SpotGuardFallbackTooLong fires past 6 h.",
                (_q("max(spotguard_oldest_unfinished_fallback_event_age_seconds)", "oldest"),),
                unit="s",
                kind="stat",
                width=4,
            ),
            PanelSpec(
                "Fallbacks by spot group and reason",
                "Replacements that gave spot up for the on-demand partner, by why (no_capacity, timeout, error).",
                (
                    _q(
                        "sum by (spot_asg, reason) (increase(spotguard_fallbacks_total[$__rate_interval]))",
                        "{{spot_asg}} {{reason}}",
                    ),
                ),
                stacked=True,
            ),
        ),
    ),
    (
        "How long it takes",
        (
            PanelSpec(
                "Replacement duration (recommendation to Ready node)",
                "Seconds from a rebalance recommendation to a Ready replacement node, by its capacity type.",
                (
                    _q(
                        "histogram_quantile(0.5, sum by (le, capacity_type) "
                        "(rate(spotguard_replacement_ready_seconds_bucket[$__rate_interval])))",
                        "p50 {{capacity_type}}",
                    ),
                    _q(
                        "histogram_quantile(0.9, sum by (le, capacity_type) "
                        "(rate(spotguard_replacement_ready_seconds_bucket[$__rate_interval])))",
                        "p90 {{capacity_type}}",
                    ),
                ),
                unit="s",
            ),
            PanelSpec(
                "Fallback duration (on-demand to Completed)",
                "Seconds from a fallback to on-demand until its SpotGuardFallbackEvent was Completed (back on spot).",
                (
                    _q(
                        "histogram_quantile(0.5, sum by (le) "
                        "(rate(spotguard_fallback_completed_seconds_bucket[$__rate_interval])))",
                        "p50",
                    ),
                    _q(
                        "histogram_quantile(0.9, sum by (le) "
                        "(rate(spotguard_fallback_completed_seconds_bucket[$__rate_interval])))",
                        "p90",
                    ),
                ),
                unit="s",
            ),
        ),
    ),
    (
        "Scale-ups and AWS",
        (
            PanelSpec(
                "Scale-up results by group",
                "Finished scale-ups by Auto Scaling Group, capacity type and result (success, no_capacity, timeout, "
                "error).",
                (
                    _q(
                        "sum by (asg, capacity_type, result) "
                        "(increase(spotguard_scale_up_results_total[$__rate_interval]))",
                        "{{asg}} ({{capacity_type}}) {{result}}",
                    ),
                ),
                stacked=True,
            ),
            PanelSpec(
                "AWS errors by code",
                "Failed Auto Scaling calls by operation and AWS error code; AccessDenied pages "
                "(SpotGuardAWSAccessDenied).",
                (
                    _q(
                        "sum by (operation, code) (increase(spotguard_aws_errors_total[$__rate_interval]))",
                        "{{operation}} {{code}}",
                    ),
                ),
                stacked=True,
            ),
            PanelSpec(
                "AWS calls by operation",
                "Auto Scaling calls per second, retries included.",
                (_q("sum by (operation) (rate(spotguard_aws_calls_total[$__rate_interval]))", "{{operation}}"),),
                unit="reqps",
            ),
            PanelSpec(
                "Refused recommendations and failed replacements",
                "Recommendations Spot Guard declined (paused, Capacity Rebalancing on, ...) and replacements that "
                "ended Failed, by reason.",
                (
                    _q("sum by (reason) (increase(spotguard_refusals_total[$__rate_interval]))", "refused {{reason}}"),
                    _q(
                        "sum by (reason) (increase(spotguard_replacement_failures_total[$__rate_interval]))",
                        "failed {{reason}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Drains",
        (
            PanelSpec(
                "Drains by result",
                "Node drains finished: success, timeout or error.",
                (_q("sum by (result) (increase(spotguard_drains_total[$__rate_interval]))", "{{result}}"),),
                stacked=True,
            ),
            PanelSpec(
                "Evictions by result",
                "Pod evictions asked for while draining: evicted, blocked (a PodDisruptionBudget), "
                "namespace_terminating (retried), gone, error.",
                (_q("sum by (result) (increase(spotguard_evictions_total[$__rate_interval]))", "{{result}}"),),
                stacked=True,
            ),
        ),
    ),
    (
        "Leader election",
        (
            PanelSpec(
                "Leader",
                "1 for the replica that holds the Lease; SpotGuardNoLeader fires after a minute without one.",
                (_q("max by (instance) (spotguard_leader)", "{{instance}}"),),
                width=8,
            ),
            PanelSpec(
                "Leader changes in the range",
                "Times a replica became or stopped being the leader (two per failover).",
                (_q("sum(increase(spotguard_leader_transitions_total[$__range]))", "changes"),),
                kind="stat",
                width=4,
            ),
            PanelSpec(
                "Paused",
                "1 while Spot Guard is paused (spotguard pause): no new replacement starts.",
                (_q("max(spotguard_paused)", "paused"),),
                kind="stat",
                width=4,
            ),
            PanelSpec(
                "Controller replicas scraped",
                "Controller replicas Prometheus reaches.",
                (_q('sum(up{job="spotguard-controller"})', "up"),),
                kind="stat",
                width=8,
            ),
        ),
    ),
    (
        "nodewatch",
        (
            PanelSpec(
                "Notices seen by kind",
                "Rebalance recommendations and interruption notices that appeared in IMDS, as nodewatch saw them.",
                (_q("sum by (kind) (increase(spotguard_nodewatch_notices_total[$__rate_interval]))", "{{kind}}"),),
                stacked=True,
            ),
            PanelSpec(
                "Notices showing now, by node",
                "Nodes whose IMDS shows a notice now (1), by node and kind.",
                (_q("max by (node, kind) (spotguard_nodewatch_notice_active)", "{{node}} {{kind}}"),),
            ),
            PanelSpec(
                "nodewatch agents",
                "Watching (spot instances, Ready), idle (instances that are not spot), and not ready.",
                (
                    _q(
                        "count(spotguard_nodewatch_idle == 0 and spotguard_nodewatch_ready == 1) or vector(0)",
                        "watching",
                    ),
                    _q("count(spotguard_nodewatch_idle == 1) or vector(0)", "idle"),
                    _q("count(spotguard_nodewatch_ready == 0) or vector(0)", "not ready"),
                ),
                kind="stat",
            ),
            PanelSpec(
                "IMDS and node API errors",
                "Failed IMDS reads and failed reads and patches of the agents' own Nodes, by kind.",
                (
                    _q(
                        "sum by (kind) (increase(spotguard_nodewatch_imds_errors_total[$__rate_interval]))",
                        "IMDS {{kind}}",
                    ),
                    _q(
                        "sum by (kind) (increase(spotguard_nodewatch_patch_errors_total[$__rate_interval]))",
                        "patch {{kind}}",
                    ),
                ),
            ),
        ),
    ),
)


def _target(query: Query, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(query.expr).legend_format(query.legend or "__auto").ref_id(ref)


def _panel(spec: PanelSpec) -> timeseries.Panel | stat.Panel:
    panel: timeseries.Panel | stat.Panel
    if spec.kind == "stat":
        panel = (
            stat.Panel()
            .graph_mode(common.BigValueGraphMode.NONE)
            .color_mode(common.BigValueColorMode.VALUE)
            .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]))
        )
    else:
        panel = timeseries.Panel().fill_opacity(10).line_width(1)
        if spec.stacked:
            panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    panel = panel.title(spec.title).description(spec.description).unit(spec.unit).datasource(DATASOURCE)
    panel = panel.height(spec.height).span(spec.width)
    for index, query in enumerate(spec.queries):
        panel = panel.with_target(_target(query, chr(ord("A") + index)))
    return panel


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (a dict)."""
    board = (
        dashboard.Dashboard(TITLE)
        .uid(UID)
        .description("Spot Guard: rebalance recommendations, fallbacks to on-demand and the way back to spot.")
        .tags(["spotguard", "spot", "autoscaling"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("1m")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for title, panels in ROWS:
        board = board.with_row(dashboard.Row(title))
        for spec in panels:
            board = board.with_panel(_panel(spec))
    encoded: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def render() -> str:
    """The JSON file's text: stable key order, two-space indent, a final newline."""
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def queries(model: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(panel title, expr, legend) of every query of a dashboard JSON model."""
    return [
        (str(panel["title"]), str(target["expr"]), str(target.get("legendFormat", "")))
        for panel in model["panels"]
        if panel.get("type") != "row"
        for target in panel.get("targets") or []
    ]
