"""The PrometheusRule in manifests/: promtool accepts its rules, its unit tests in tests/alerts/ pass, and every
alert is complete (a severity of the ecosystem's critical/warning/info, summary, description, an absolute
runbook_url whose section exists in docs/runbooks.md) and tested both ways.

Needs promtool (Debian: apt-get install -y prometheus); without it these tests fail, they do not skip.
"""

from __future__ import annotations

import re
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.controller.observability.promtool import run_promtool

REPO = Path(__file__).resolve().parents[2]
RULE = REPO / "manifests" / "monitoring" / "prometheusrule.yaml"
ALERT_TESTS = REPO / "tests" / "alerts"
RUNBOOKS = REPO / "docs" / "runbooks.md"
RULES_FILE_NAME = "spotguard.rules.yaml"  # what the files in tests/alerts/ list under rule_files
#: The severities stock Alertmanager routing and the monitoring mixins know.
SEVERITIES = ("critical", "warning", "info")
#: Where the runbooks are published unless a user changes it (the chart's prometheusRule.runbookBaseURL default).
DEFAULT_RUNBOOK_BASE = "https://github.com/spotguard/spotguard/blob/main/docs/runbooks.md"


def load_rule() -> dict[str, Any]:
    rule = yaml.safe_load(RULE.read_text())
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    return dict(rule)


def alerts() -> list[dict[str, Any]]:
    return [r for group in load_rule()["spec"]["groups"] for r in group["rules"] if "alert" in r]


def alert_test_files() -> list[Path]:
    files = sorted(ALERT_TESTS.glob("*.yaml"))
    assert files, f"no promtool test files in {ALERT_TESTS}"
    return files


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A directory with the PrometheusRule's spec.groups as a plain rule file and copies of the test files."""
    (tmp_path / RULES_FILE_NAME).write_text(yaml.safe_dump({"groups": load_rule()["spec"]["groups"]}, sort_keys=False))
    for path in alert_test_files():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path


def test_promtool_accepts_the_rules(rules_dir: Path) -> None:
    result = run_promtool("check", "rules", str(rules_dir / RULES_FILE_NAME))
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout + result.stderr


def test_the_promtool_unit_tests_pass(rules_dir: Path) -> None:
    result = run_promtool("test", "rules", *(path.name for path in alert_test_files()), cwd=rules_dir)
    assert "SUCCESS" in result.stdout + result.stderr


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: str(a["alert"]))
def test_every_alert_is_complete(alert: dict[str, Any]) -> None:
    anchors = {github_anchor(line.lstrip("#")) for line in RUNBOOKS.read_text().splitlines() if line.startswith("#")}
    assert alert["labels"]["severity"] in SEVERITIES
    annotations = alert["annotations"]
    assert annotations["summary"]
    assert annotations["description"]
    page, _, anchor = annotations["runbook_url"].partition("#")
    url = urllib.parse.urlsplit(page)
    assert (url.scheme, bool(url.netloc)) == ("https", True), f"{alert['alert']}: runbook_url is not absolute"
    assert page == DEFAULT_RUNBOOK_BASE
    assert anchor == str(alert["alert"]).lower()
    assert anchor in anchors, f"{alert['alert']}: docs/runbooks.md has no section with anchor #{anchor}"


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: str(a["alert"]))
def test_every_alert_is_tested_firing_and_silent(alert: dict[str, Any]) -> None:
    cases = [
        case
        for path in alert_test_files()
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert["alert"]
    ]
    assert any(case.get("exp_alerts") for case in cases), f"no test in {ALERT_TESTS} shows {alert['alert']} firing"
    assert any(not case.get("exp_alerts") for case in cases), f"no test shows {alert['alert']} staying silent"
