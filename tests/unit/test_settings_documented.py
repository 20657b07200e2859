"""Every setting is documented, and every message that tells the operator to set something names a setting that
exists (a message once said "set force", which no setting allows)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from controller import config
from nodewatch import config as nodewatch_config

REPO = Path(__file__).resolve().parents[2]
INSTALL = (REPO / "docs" / "install.md").read_text()
SETTING_NAME = re.compile(r"\b(?:SPOT_GUARD_[A-Z0-9_]+|NODEWATCH_[A-Z0-9_]+|SPOT_ASG_NAME|ON_DEMAND_ASG_NAME)\b")
#: "set x_y" / "set force": advice naming a code identifier rather than a setting.
SET_IDENTIFIER = re.compile(r"\b(?:set|raise|lower) (force|[a-z]+_[a-z_]+)\b")

CONTROLLER_SETTINGS = {variable for variable, _ in config._ENV.values()}
NODEWATCH_SETTINGS = {option.env for option in nodewatch_config._OPTIONS} | {"NODEWATCH_IMDS_V1_FALLBACK"}
CONSTANTS = {"NODEWATCH_KEYS"}  # Python names that look like settings


def _string_literals() -> list[tuple[str, str]]:
    found = []
    for package in ("controller", "nodewatch"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    found.append((f"{path.relative_to(REPO)}:{node.lineno}", node.value))
    return found


def test_every_setting_is_in_the_install_guide() -> None:
    missing = sorted(name for name in CONTROLLER_SETTINGS | NODEWATCH_SETTINGS if f"`{name}`" not in INSTALL)
    assert missing == []


def test_every_setting_a_message_or_a_document_names_exists() -> None:
    texts = [*_string_literals()]
    for path in [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "manifests").rglob("*.y*ml")]:
        texts.append((str(path.relative_to(REPO)), path.read_text()))
    texts.append(("manifests/controller.env", (REPO / "manifests" / "controller.env").read_text()))
    unknown = sorted(
        {
            (where, name)
            for where, text in texts
            for name in SETTING_NAME.findall(text)
            if name not in CONTROLLER_SETTINGS | NODEWATCH_SETTINGS | CONSTANTS
        }
    )
    assert unknown == []


def test_no_message_tells_the_operator_to_set_a_code_name() -> None:
    offenders = [(where, text) for where, text in _string_literals() if SET_IDENTIFIER.search(text)]
    assert offenders == []
