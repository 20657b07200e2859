"""The Helm chart (charts/spotguard) and the kustomize base (manifests/) rendered with the same settings, and the
objects of the two compared field by field.

``helm`` and ``kubectl`` are the sandbox's own binaries (``sandbox/build-binaries.sh``). What the comparison
ignores, and why: the labels Helm adds (the base's labels must all be there), the pod-template annotation that rolls
the controller when its ConfigMap changes, and the hash kustomize puts in the ConfigMap's name. Environment
variables are compared by what the programs make of them: ``controller.config.from_env`` and
``nodewatch.config.parse_settings`` on each side must give equal settings, and downward-API variables must be the
same fields.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from controller import config as controller_config
from nodewatch import config as nodewatch_config
from sandbox import binaries
from tests.support import manifests as m

CHART = m.REPO / "charts" / "spotguard"
RELEASE = "spotguard"
NAMESPACE = "kube-system"
CONFIG_MAP = "spotguard-controller-config"
#: What Helm adds to every object's labels on top of the base's.
HELM_LABELS = (
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)

Obj = dict[str, Any]
Key = tuple[str, str, str]  # kind, namespace, name


def helm() -> Path:
    return binaries.ensure(build=False).helm


def kubectl() -> Path:
    return binaries.ensure(build=False).kubectl


def run_helm(*args: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(helm()), *args], capture_output=True, text=True, check=False, timeout=120, cwd=cwd, env=helm_env()
    )
    if check:
        assert result.returncode == 0, f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result


def helm_env() -> dict[str, str]:
    """helm's environment with its caches and config out of the user's home (helm writes a repository cache)."""
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"spotguard-helm-{os.getuid()}"
    return {
        **os.environ,
        "HELM_CACHE_HOME": str(base / "cache"),
        "HELM_CONFIG_HOME": str(base / "config"),
        "HELM_DATA_HOME": str(base / "data"),
    }


def helm_template(values: Mapping[str, Any], tmp_path: Path, *extra: str) -> list[Obj]:
    """``helm template`` of the chart with ``values`` (a values file), CRDs included, parsed."""
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(dict(values)))
    result = run_helm(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds", "-f", str(values_file), *extra
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomize_overlay(tmp_path: Path, base: Path, text: str) -> list[Obj]:
    """``kubectl kustomize`` of an overlay whose kustomization is ``text``, with ``BASE`` standing for ``base``."""
    overlay = tmp_path / f"overlay-{base.name}"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(text.replace("BASE", os.path.relpath(base, overlay)))
    return m.kustomize(kubectl(), overlay)


def key(obj: Mapping[str, Any]) -> Key:
    name = str(obj["metadata"]["name"])
    if obj["kind"] == "ConfigMap" and name.startswith(CONFIG_MAP + "-"):
        name = CONFIG_MAP  # kustomize's generated name carries a hash of the data
    return str(obj["kind"]), str(obj["metadata"].get("namespace", "")), name


def by_key(objects: Iterable[Obj]) -> dict[Key, Obj]:
    found: dict[Key, Obj] = {}
    for obj in objects:
        assert key(obj) not in found, f"two objects {key(obj)}"
        found[key(obj)] = obj
    return found


def _config_maps(objects: Iterable[Obj]) -> dict[str, dict[str, str]]:
    return {key(o)[2]: dict(o.get("data") or {}) for o in objects if o["kind"] == "ConfigMap"}


def effective_env(container: Mapping[str, Any], config_maps: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """A container's environment as the program sees it: its envFrom ConfigMaps, then its env (later wins).

    Downward-API variables stay ``{"fieldRef": path}``; any other valueFrom fails the comparison (add it here).
    """
    env: dict[str, Any] = {}
    for source in container.get("envFrom") or []:
        name = source["configMapRef"]["name"]
        short = CONFIG_MAP if name.startswith(CONFIG_MAP) else name
        env.update(config_maps[short])
    for item in container.get("env") or []:
        if "valueFrom" in item:
            env[item["name"]] = {"fieldRef": item["valueFrom"]["fieldRef"]["fieldPath"]}
        else:
            env[item["name"]] = str(item.get("value", ""))
    return env


def _plain(env: Mapping[str, Any], downward: Mapping[str, str]) -> dict[str, str]:
    """String values, with each downward-API variable given the value its field has (``downward``)."""
    return {k: downward[v["fieldRef"]] if isinstance(v, dict) else str(v) for k, v in env.items()}


DOWNWARD = {"metadata.namespace": NAMESPACE, "spec.nodeName": "ip-10-0-0-1.ec2.internal"}


def controller_settings(env: Mapping[str, Any]) -> controller_config.Settings:
    return controller_config.from_env(_plain(env, DOWNWARD))


def nodewatch_settings(env: Mapping[str, Any]) -> nodewatch_config.Settings:
    return nodewatch_config.parse_settings([], environ=_plain(env, DOWNWARD))


def _strip(obj: Obj) -> Obj:
    """The object without what the comparison treats apart (see the module docstring)."""
    stripped = copy.deepcopy(obj)
    metadata = stripped["metadata"]
    metadata.pop("labels", None)
    metadata["name"] = key(obj)[2]
    if obj["kind"] == "ConfigMap" and key(obj)[2] == CONFIG_MAP:
        stripped.pop("data", None)
    template = (stripped.get("spec") or {}).get("template")
    if template is not None:
        template["metadata"].pop("annotations", None)
        template["metadata"]["labels"] = {
            k: v for k, v in template["metadata"]["labels"].items() if k not in HELM_LABELS
        }
        for container in template["spec"]["containers"]:
            container.pop("env", None)
            container.pop("envFrom", None)
    return stripped


def differences(base: Sequence[Obj], chart: Sequence[Obj]) -> list[str]:
    """Every way the chart's objects differ from the base's; empty when they are the same objects."""
    problems: list[str] = []
    base_objects, chart_objects = by_key(base), by_key(chart)
    if set(base_objects) != set(chart_objects):
        problems.append(
            f"only in the base: {sorted(set(base_objects) - set(chart_objects))}; "
            f"only in the chart: {sorted(set(chart_objects) - set(base_objects))}"
        )
    base_maps, chart_maps = _config_maps(base), _config_maps(chart)
    for k in sorted(set(base_objects) & set(chart_objects)):
        ours, theirs = base_objects[k], chart_objects[k]
        missing = {
            label: value
            for label, value in (ours["metadata"].get("labels") or {}).items()
            if (theirs["metadata"].get("labels") or {}).get(label) != value
        }
        if missing:
            problems.append(f"{k}: the chart lacks the base's labels {missing}")
        if _strip(ours) != _strip(theirs):
            problems.append(
                f"{k} differs:\n  base:  {json.dumps(_strip(ours), sort_keys=True)}\n"
                f"  chart: {json.dumps(_strip(theirs), sort_keys=True)}"
            )
        template = (ours.get("spec") or {}).get("template")
        if template is None:
            continue
        chart_containers = {c["name"]: c for c in theirs["spec"]["template"]["spec"]["containers"]}
        for container in template["spec"]["containers"]:
            other = chart_containers.get(container["name"])
            if other is None:
                continue  # reported by the comparison above
            problems += _env_differences(k, container, base_maps, other, chart_maps)
    return problems


def _env_differences(
    k: Key,
    base_container: Mapping[str, Any],
    base_maps: Mapping[str, Mapping[str, str]],
    chart_container: Mapping[str, Any],
    chart_maps: Mapping[str, Mapping[str, str]],
) -> list[str]:
    base_env = effective_env(base_container, base_maps)
    chart_env = effective_env(chart_container, chart_maps)
    problems = []
    downward = (
        {n: v for n, v in base_env.items() if isinstance(v, dict)},
        {n: v for n, v in chart_env.items() if isinstance(v, dict)},
    )
    if downward[0] != downward[1]:
        problems.append(f"{k}: downward-API variables differ: base {downward[0]}, chart {downward[1]}")
    if base_container.get("args") == ["run"]:
        if controller_settings(base_env) != controller_settings(chart_env):
            problems.append(
                f"{k}: controller settings differ:\n  base:  {controller_settings(base_env)}\n"
                f"  chart: {controller_settings(chart_env)}"
            )
        for outside in ("AWS_DEFAULT_REGION",):
            if base_env.get(outside) != chart_env.get(outside):
                problems.append(f"{k}: {outside} is {base_env.get(outside)!r} in the base, {chart_env.get(outside)!r}")
    elif nodewatch_settings(base_env) != nodewatch_settings(chart_env):
        problems.append(
            f"{k}: nodewatch settings differ:\n  base:  {nodewatch_settings(base_env)}\n"
            f"  chart: {nodewatch_settings(chart_env)}"
        )
    return problems
