"""Reading manifests/: the files as written, and what ``kubectl kustomize`` makes of them.

Shared by the static checks (tests/unit/test_manifests.py) and the sandbox tests that install the manifests.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
MONITORING = MANIFESTS / "monitoring"
KUSTOMIZATION = MANIFESTS / "kustomization.yaml"
IAM_POLICY = MANIFESTS / "iam-policy.json"
CONTROLLER_ENV = MANIFESTS / "controller.env"
NODEWATCH_POLICY = "spotguard-nodewatch"
CONTROLLER_STATE_POLICY = "spotguard-controller-state"
CONTROLLER = "spotguard-controller"
NODEWATCH = "spotguard-nodewatch"

Obj = dict[str, Any]


def load_all(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(path: Path = KUSTOMIZATION) -> Obj:
    return dict(yaml.safe_load(path.read_text()))


def resources(directory: Path = MANIFESTS) -> list[Obj]:
    """Every object of the files the kustomization in ``directory`` lists, as written (no kustomize)."""
    found: list[Obj] = []
    for name in kustomization(directory / "kustomization.yaml")["resources"]:
        found += load_all(directory / name)
    return found


def find(objects: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    matches = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def find_all(objects: Iterable[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def workloads(objects: Iterable[Obj]) -> list[Obj]:
    return [o for o in objects if o["kind"] in ("Deployment", "DaemonSet")]


def pod_spec(workload: Mapping[str, Any]) -> Obj:
    return dict(workload["spec"]["template"]["spec"])


def env_of(container: Mapping[str, Any]) -> dict[str, Obj]:
    return {item["name"]: item for item in container.get("env") or []}


def read_env_file(path: Path = CONTROLLER_ENV) -> dict[str, str]:
    """KEY=value lines of a kustomize env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, separator, value = stripped.partition("=")
        assert separator, f"{path.name}: not KEY=value: {line!r}"
        values[key] = value
    return values


def policy_variable(policy: Mapping[str, Any], name: str) -> str:
    for variable in policy["spec"].get("variables") or []:
        if variable["name"] == name:
            return str(variable["expression"])
    raise AssertionError(f"ValidatingAdmissionPolicy {policy['metadata']['name']} has no variable {name}")


def allowed_annotation_keys(policy: Mapping[str, Any]) -> list[str]:
    """The string literals of the admission policy's ``allowedKeys`` list."""
    return literals(policy, "allowedKeys")


def literals(policy: Mapping[str, Any], variable: str) -> list[str]:
    """The string literals of one of the admission policy's variables (a list of keys)."""
    return re.findall(r"'([^']*)'", policy_variable(policy, variable))


def kustomize(kubectl: Path | str, directory: Path = MANIFESTS) -> list[Obj]:
    """``kubectl kustomize directory``, parsed."""
    result = subprocess.run(
        [str(kubectl), "kustomize", str(directory)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def rbac_rules(objects: Sequence[Obj], kind: str, name: str) -> list[Obj]:
    return list(find(objects, kind, name)["rules"])
