"""``spotguard run`` that cannot start says why in one line (exit status 1), never with a traceback: no cluster,
an unreadable or malformed kubeconfig, no AWS region, a bad or contradictory setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.app.cli import main

GOOD_KUBECONFIG = """apiVersion: v1
kind: Config
current-context: a
contexts: [{name: a, context: {cluster: c, user: u}}]
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
"""


@pytest.fixture
def environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("SPOT_GUARD_METRICS_PORT", "0")
    return {}


def _run(args: list[str], env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["run", *args], env=env)
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, lines


def test_a_kubeconfig_that_is_not_there_is_one_line(environment: dict[str, str], tmp_path: Path) -> None:
    code, lines = _run(["--kubeconfig", str(tmp_path / "missing")])
    assert code == 1
    assert lines == [f"Error: cannot read kubeconfig {tmp_path / 'missing'}: No such file or directory"]


def test_an_unreadable_kubeconfig_is_one_line(environment: dict[str, str], tmp_path: Path) -> None:
    code, lines = _run(["--kubeconfig", str(tmp_path)])  # a directory: no user can read it as a file
    assert code == 1
    assert lines == [f"Error: cannot read kubeconfig {tmp_path}: Is a directory"]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("foo: [", "while parsing a flow node"),
        ("- just\n- a list\n", "cannot use kubeconfig"),
        ("", "file is empty"),
        (GOOD_KUBECONFIG.replace("current-context: a", "current-context: elsewhere"), "elsewhere"),
    ],
)
def test_a_malformed_kubeconfig_is_one_line(
    environment: dict[str, str], tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    code, lines = _run(["--kubeconfig", str(path)])
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"Error: cannot use kubeconfig {path}: ") and complaint in lines[0]


def test_no_cluster_at_all_is_one_line(environment: dict[str, str]) -> None:
    code, lines = _run([])
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("Error: no cluster to connect to: not in a pod")
    assert "pass --kubeconfig or set KUBECONFIG" in lines[0]


def test_no_aws_region_is_one_line(
    environment: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    path = tmp_path / "kubeconfig"
    path.write_text(GOOD_KUBECONFIG)
    code, lines = _run(["--kubeconfig", str(path)])
    assert code == 1
    assert lines == [
        "Error: no AWS region: set AWS_DEFAULT_REGION to the region of the Auto Scaling groups (docs/install.md; "
        "on EKS the IRSA webhook sets it)"
    ]


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("SPOT_GUARD_BATCH_WINDOW", "nan", "SPOT_GUARD_BATCH_WINDOW='nan': expected seconds"),
        ("SPOT_GUARD_CAPACITY_CHECK_TIMEOUT", "inf", "SPOT_GUARD_CAPACITY_CHECK_TIMEOUT='inf'"),
        ("SPOT_GUARD_FENCE_MARGIN", "1s", "SPOT_GUARD_FENCE_MARGIN must be at least 2.5s"),
        ("SPOT_GUARD_FENCE_MARGIN", "9s", "SPOT_GUARD_FENCE_MARGIN must be at most 8s, or SPOT_GUARD_LEASE_DURATION"),
        ("SPOT_GUARD_RENEW_DEADLINE", "20s", "must be greater than SPOT_GUARD_RENEW_DEADLINE (20.0s)"),
        ("SPOT_GUARD_AWS_CONNECT_TIMEOUT", "5s", "or SPOT_GUARD_AWS_CONNECT_TIMEOUT at most 1.25s"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL='loud' is not a log level"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    environment: dict[str, str], variable: str, value: str, complaint: str
) -> None:
    code, lines = _run([], env={variable: value})
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("Error: ") and complaint in lines[0]


def test_dry_run_on_the_command_line_and_in_the_environment_reach_the_settings(
    environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import controller.app.run as run_module

    seen: list[bool] = []

    def fake_run(settings: object, *args: object) -> int:
        seen.append(bool(getattr(settings, "dry_run", None)))
        return 0

    monkeypatch.setattr(run_module, "run_controller", fake_run)
    assert _run(["--dry-run"])[0] == 0
    assert _run([])[0] == 0
    assert _run([], env={"SPOT_GUARD_DRY_RUN": "true"})[0] == 0
    code, lines = _run([], env={"SPOT_GUARD_DRY_RUN": "maybe"})
    assert seen == [True, False, True]
    assert code == 1 and lines == ["Error: SPOT_GUARD_DRY_RUN='maybe': expected true or false"]
