"""Running Debian's ``promtool`` from tests: a missing promtool fails the test and says how to install it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL_HINT = (
    "promtool is not on PATH; install Debian's prometheus package (apt-get install -y prometheus), "
    "which provides /usr/bin/promtool"
)


def promtool() -> str:
    """The promtool executable; fails the calling test (not skips it) when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return path


def run_promtool(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``promtool args...``; fail the test with promtool's output if it exits non-zero."""
    result = subprocess.run(
        [promtool(), *args], input=stdin, capture_output=True, text=True, check=False, timeout=60, cwd=cwd
    )
    if result.returncode != 0:
        pytest.fail(
            f"promtool {' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result
