"""sandbox/build-binaries.sh is quiet: one progress line per part (what, version, elapsed), the Go tool's output
only when a part fails, and a warm cache reused as it is. A stand-in ``go`` on PATH plays the Go tool: it prints
what a cold build prints (hundreds of ``go: downloading`` lines) and makes the binaries ``go build -o`` names."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

from sandbox import binaries

SCRIPT = binaries.BUILD_SCRIPT
PARTS = ("etcd", "kwok", "aemm", "helm", "kubernetes")
FAKE_GO = r"""#!/usr/bin/env bash
# A stand-in for the Go tool: chatty like a cold module cache, and it fails where FAIL_PART says.
echo "go $*" >> "$GO_CALLS"
case "$1" in
  mod)
    if [ "$2" = download ]; then echo '{"GoMod": "'"$FAKE_GOMOD"'"}'; fi ;;
  build)
    for i in $(seq 1 150); do echo "go: downloading example.com/module$i v1.0.$i" >&2; done
    out=""; prev=""
    for arg in "$@"; do [ "$prev" = -o ] && out="$arg"; prev="$arg"; done
    if [ -n "${FAIL_PART:-}" ] && [[ "$*" == *"$FAIL_PART"* ]]; then
      echo "# $FAIL_PART" >&2; echo "compile: undefined: somethingThatBroke" >&2; exit 1
    fi
    case "$out" in
      */)
        for pkg in "$@"; do
          case "$pkg" in k8s.io/kubernetes/cmd/*) touch "$out${pkg##*/}"; chmod +x "$out${pkg##*/}";; esac
        done ;;
      *) mkdir -p "$(dirname "$out")"; touch "$out"; chmod +x "$out" ;;
    esac ;;
esac
exit 0
"""


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    go = fake_bin / "go"
    go.write_text(FAKE_GO)
    go.chmod(go.stat().st_mode | stat.S_IEXEC)
    gomod = tmp_path / "kubernetes.mod"
    gomod.write_text("module k8s.io/kubernetes\nrequire (\n\tk8s.io/api v0.0.0\n)\n")
    environment = {
        **os.environ,
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "SPOTGUARD_CACHE": str(tmp_path / "cache"),
        "GO_CALLS": str(tmp_path / "go-calls.log"),
        "FAKE_GOMOD": str(gomod),
        **env,
    }
    return subprocess.run(
        ["bash", str(SCRIPT)], capture_output=True, text=True, env=environment, timeout=120, check=False
    )


def test_a_cold_build_prints_one_line_per_part_and_none_of_gos_output(tmp_path: Path) -> None:
    result = _run(tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(PARTS), result.stderr
    versions = binaries.read_versions()
    for number, (line, part) in enumerate(zip(lines, PARTS, strict=True), start=1):
        version = versions[f"{part.upper()}_VERSION"]
        assert re.fullmatch(rf"\[sandbox build {number}/5\] {part} {re.escape(version)}.*: built \(\d+s\)", line), line
    assert "go: downloading" not in result.stderr + result.stdout
    assert result.stdout.strip().splitlines()[-1] == str(tmp_path / "cache")
    assert binaries.missing(binaries.expected(tmp_path / "cache")) == []


def test_a_warm_cache_is_reused_without_calling_go(tmp_path: Path) -> None:
    assert _run(tmp_path).returncode == 0
    (tmp_path / "go-calls.log").unlink()

    again = _run(tmp_path)

    assert again.returncode == 0
    assert [line.rsplit(": ", 1)[1] for line in again.stderr.splitlines()] == ["cached (0s)"] * len(PARTS)
    assert not (tmp_path / "go-calls.log").exists(), "a warm cache must not run go at all"


def test_a_failing_part_prints_gos_whole_output_and_installs_nothing(tmp_path: Path) -> None:
    result = _run(tmp_path, FAIL_PART="helm.sh/helm/v4/cmd/helm")

    assert result.returncode != 0
    assert "[sandbox build 4/5] helm" in result.stderr and ": FAILED (" in result.stderr
    assert "compile: undefined: somethingThatBroke" in result.stderr
    assert result.stderr.count("go: downloading") == 150  # every line of the failing part, none of the others'
    assert "[sandbox build 5/5]" not in result.stderr  # it stops at the first failure
    cache = tmp_path / "cache"
    assert not any(p.name.startswith("helm-") and not p.name.endswith(".tmp") for p in cache.iterdir())
