"""Shell completion (click's own) and the help of every admin command."""

from __future__ import annotations

import pytest

from tests.unit.controller.admin.conftest import Run
from tests.unit.controller.admin.fake_kube import FakeKube


def test_the_completion_variable_prints_a_bash_script(run: Run) -> None:
    result = run(env={"_SPOTGUARD_COMPLETE": "bash_source"})

    assert result.exit_code == 0
    assert "_spotguard_completion()" in result.stdout
    assert "complete -o nosort -F _spotguard_completion spotguard" in result.stdout


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "_spotguard_completion"),
        ("zsh", "#compdef spotguard"),
        ("fish", "complete --no-files --command spotguard"),
    ],
)
def test_the_completion_command_prints_each_shells_script(run: Run, shell: str, marker: str) -> None:
    result = run("completion", shell)
    assert result.exit_code == 0
    assert marker in result.stdout


def test_commands_and_options_complete(run: Run) -> None:
    commands = run(env={"_SPOTGUARD_COMPLETE": "bash_complete", "COMP_WORDS": "spotguard ev", "COMP_CWORD": "1"})
    options = run(
        env={"_SPOTGUARD_COMPLETE": "bash_complete", "COMP_WORDS": "spotguard events list --ou", "COMP_CWORD": "3"}
    )

    assert commands.stdout.splitlines() == ["plain,events"]
    assert options.stdout.splitlines() == ["plain,--output"]


def test_node_names_complete_from_the_cluster(run: Run, kube: FakeKube) -> None:
    for name, label in (("spot-1", "SPOT"), ("spot-2", "SPOT"), ("ondemand-1", "ON_DEMAND")):
        kube.put(f"/api/v1/nodes/{name}", {"metadata": {"labels": {"eks.amazonaws.com/capacityType": label}}})

    result = run(
        env={"_SPOTGUARD_COMPLETE": "bash_complete", "COMP_WORDS": "spotguard simulate rebalance sp", "COMP_CWORD": "3"}
    )

    assert result.stdout.splitlines() == ["plain,spot-1", "plain,spot-2"]


def test_an_unknown_command_is_a_usage_error(run: Run) -> None:
    assert run("nonsense").exit_code == 2
    assert run("events", "nonsense").exit_code == 2


@pytest.mark.parametrize(
    "command",
    [
        ["events", "list"],
        ["events", "describe"],
        ["events", "delete"],
        ["events", "cleanup"],
        ["leader"],
        ["doctor"],
        ["pause"],
        ["resume"],
        ["simulate", "rebalance"],
        ["simulate", "interruption"],
    ],
)
def test_every_command_takes_the_kubectl_flags_and_output(run: Run, command: list[str]) -> None:
    result = run(*command, "--help")

    assert result.exit_code == 0
    for flag in ("--kubeconfig", "--context", "-n, --namespace", "-o, --output [table|json|yaml]"):
        assert flag in result.stdout


def test_event_names_complete_from_the_namespace_given(run: Run, kube: FakeKube) -> None:
    for namespace, name in (("kube-system", "fallback-1"), ("spotguard", "fallback-2")):
        kube.put(f"/apis/aws.amazon.com/v1/namespaces/{namespace}/spotguardfallbackevents/{name}", {})

    words = "spotguard events describe -n spotguard fall"
    result = run(env={"_SPOTGUARD_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": "5"})

    assert result.stdout.splitlines() == ["plain,fallback-2"]
