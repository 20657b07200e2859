"""The wheel the image installs, built the way the Dockerfile builds it (from exactly what its build stage
copies, minus what .dockerignore leaves out of the context), installed into a fresh virtualenv, and both
console scripts started from it.

The fresh virtualenv gets Spot Guard from the wheel only; its dependencies come from this virtualenv's
site-packages through a .pth line (which adds the directory to sys.path without running that directory's own
.pth files, so this checkout's editable install stays out). Building the wheel uses pip's isolated build, as
the Dockerfile's ``pip wheel`` does, so it needs the package index (or pip's cache) for setuptools and wheel.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s

from sandbox.environment import Sandbox
from tests.integration import spotguard_install as install
from tests.support import manifests as m
from tests.support.faulty_imds import FaultyIMDS

CONSOLE_SCRIPTS = ("spotguard", "spotguard-nodewatch")


def _build_stage_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY in the Dockerfile's build stage."""
    build_stage = (m.REPO / "Dockerfile").read_text().split("\nFROM ", 2)[1]
    copies = []
    for line in build_stage.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            *sources, destination = line.split()[1:]
            copies.append((sources, destination))
    assert copies, "the Dockerfile's build stage copies nothing"
    return copies


def _ignored(name: str) -> bool:
    """Left out of the Docker build context by .dockerignore (the patterns this repository uses)."""
    for pattern in (m.REPO / ".dockerignore").read_text().split():
        if fnmatch.fnmatch(name, pattern.removeprefix("**/")):
            return True
    return False


def _build_context(target: Path) -> None:
    """What the build stage has in its WORKDIR before ``pip wheel``."""
    target.mkdir()
    for sources, destination in _build_stage_copies():
        for source in sources:
            assert not _ignored(source), f"the Dockerfile copies {source}, which .dockerignore leaves out"
            origin = m.REPO / source
            place = target / (source if destination == "./" else destination.removeprefix("./"))
            if origin.is_dir():
                shutil.copytree(origin, place, ignore=lambda _dir, names: [n for n in names if _ignored(n)])
            else:
                shutil.copy2(origin, place)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    _build_context(work / "src")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(work / "wheels"), str(work / "src")],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, f"pip wheel failed:\n{result.stdout}\n{result.stderr}"
    (built,) = (work / "wheels").glob("spotguard-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh virtualenv with the wheel installed (and this virtualenv's site-packages for the dependencies)."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    install_result = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert install_result.returncode == 0, install_result.stderr
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    (Path(site) / "spotguard-test-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    yield root


def _clean_env(**extra: str) -> dict[str, str]:
    """No PYTHONPATH, no virtualenv of this checkout: only what the fresh virtualenv has."""
    env = {key: os.environ[key] for key in ("HOME", "LANG") if key in os.environ}
    return {"PATH": "/usr/bin:/bin", **env, **extra}


def test_the_wheel_holds_the_three_packages_and_both_console_scripts(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    assert {name.split("/", 1)[0] for name in names if "/" in name and ".dist-info" not in name} == {
        "controller",
        "nodewatch",
        "sandbox",
    }
    assert "nodewatch/annotations.py" in names and "controller/app/cli.py" in names
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]
    assert "spotguard = controller.app.cli:main" in scripts
    assert "spotguard-nodewatch = nodewatch.__main__:main" in scripts


def test_both_console_scripts_start_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    for script in CONSOLE_SCRIPTS:
        result = subprocess.run(
            [str(venv / "bin" / script), "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=tmp_path,
            env=_clean_env(),
        )
        assert result.returncode == 0, result.stderr
        assert "sage:" in result.stdout
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import controller, nodewatch; print(controller.__file__, nodewatch.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=tmp_path,
        env=_clean_env(),
    ).stdout.split()
    assert all(Path(path).is_relative_to(venv) for path in where), f"imported from outside the wheel: {where}"


def test_nodewatch_from_the_wheel_records_a_rebalance_recommendation(
    sandbox: Sandbox, core: k8s.CoreV1Api, venv: Path, tmp_path: Path
) -> None:
    instance = "i-0abcabcabcabcabca"
    with FaultyIMDS(instance_id=instance) as imds, install.node_of_its_own(core, "wheel") as node:
        nodewatch = install.LoggedProcess(
            [str(venv / "bin" / "spotguard-nodewatch"), *install.nodewatch_argv(node, imds.url, sandbox.kubeconfig)],
            _clean_env(),
            tmp_path / "nodewatch.log",
            cwd=tmp_path,
        )
        try:
            install.check_nodewatch_works(nodewatch, core, node, imds, instance)
            assert nodewatch.stop() == 0
        finally:
            nodewatch.close()
