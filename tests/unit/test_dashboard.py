"""The Grafana dashboard: the JSON files the chart and the kustomize base ship are exactly what
``dashboards/spotguard.py`` builds, and the dashboard covers what an operator asks of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dashboards import __main__ as dashboards_cli
from dashboards.spotguard import build, queries, render

#: Metric families the dashboard must show (controller/observability/metrics.py, nodewatch/metrics.py).
SHOWN = (
    "spotguard_fallback_events",
    "spotguard_oldest_unfinished_fallback_event_age_seconds",
    "spotguard_fallbacks_total",
    "spotguard_replacement_ready_seconds_bucket",
    "spotguard_fallback_completed_seconds_bucket",
    "spotguard_scale_up_results_total",
    "spotguard_aws_errors_total",
    "spotguard_drains_total",
    "spotguard_evictions_total",
    "spotguard_leader",
    "spotguard_leader_transitions_total",
    "spotguard_nodewatch_notices_total",
    "spotguard_nodewatch_idle",
)


def test_the_shipped_json_files_are_what_the_code_builds() -> None:
    text = render()
    for path in dashboards_cli.SHIPPED:
        assert path.read_text() == text, f"{path} is stale: run python -m dashboards"
    assert dashboards_cli.main(["--check"]) == 0


def test_the_check_fails_on_a_stale_file_and_writing_fixes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = tmp_path / "spotguard.json"
    stale.write_text(render().replace("Open fallbacks by phase", "Open fallbacks"))
    monkeypatch.setattr(dashboards_cli, "SHIPPED", (stale,))
    assert dashboards_cli.main(["--check"]) == 1
    assert dashboards_cli.main([]) == 0
    assert stale.read_text() == render()
    assert dashboards_cli.main(["--check"]) == 0


def test_every_asked_for_view_is_a_panel_on_the_prometheus_datasource_variable() -> None:
    model = build()
    exprs = " ".join(expr for _, expr, _ in queries(model))
    for metric in SHOWN:
        assert re.search(rf"\b{metric}\b", exprs), f"no panel shows {metric}"
    titles = {title for title, _, _ in queries(model)}
    for wanted in ("Open fallbacks by phase", "Scale-up results by group", "AWS errors by code", "Evictions by result"):
        assert wanted in titles
    panels = [p for p in model["panels"] if p["type"] != "row"]
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in panels)
    assert [v["name"] for v in model["templating"]["list"]] == ["datasource"]
    assert model["uid"] == "spotguard"
    json.dumps(model)  # plain JSON all the way down
