"""``python -m dashboards``: write the dashboard JSON where the chart and the kustomize base ship it.

``python -m dashboards --check`` writes nothing and exits 1 if a shipped file differs from what the code builds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dashboards.spotguard import render

REPO = Path(__file__).resolve().parents[1]
#: The shipped copies: the chart's (its dashboard ConfigMap) and the plain file of the kustomize monitoring base.
SHIPPED = (
    REPO / "charts" / "spotguard" / "dashboards" / "spotguard.json",
    REPO / "manifests" / "monitoring" / "dashboards" / "spotguard.json",
)


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare the shipped files with the code; write nothing")
    args = parser.parse_args(argv)
    text = render()
    stale = [path for path in SHIPPED if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{_shown(path)} is not what dashboards/spotguard.py builds: run python -m dashboards")
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {_shown(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
