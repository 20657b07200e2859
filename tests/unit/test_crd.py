"""manifests/crd-spotguardfallbackevent.yaml keeps every field, type, format, description and column of the design's
CRD (tests/unit/seed_crd.yaml, verbatim from seed 003) and adds only bounds that refuse garbage; its duration
pattern accepts exactly what the controller reads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.config import ConfigError, parse_duration
from tests.support import manifests as m

SEED = yaml.safe_load((m.REPO / "tests" / "unit" / "seed_crd.yaml").read_text())
CRD = m.find(m.load_all(m.MANIFESTS / "crd-spotguardfallbackevent.yaml"), "CustomResourceDefinition")
ADDED_KEYWORDS = {"minLength", "maxLength", "pattern"}


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in (schema.get("properties") or {}).items():
        yield from _walk(child, f"{path}.{name}")


def test_every_field_of_the_design_is_kept_with_its_type_format_and_description() -> None:
    ours = dict(_walk(_schema(CRD)))
    for path, field in _walk(_schema(SEED)):
        assert path in ours, f"{path} of the design is missing"
        kept = {k: v for k, v in ours[path].items() if k != "properties"}
        design = {k: v for k, v in field.items() if k != "properties"}
        assert {k: kept.get(k) for k in design} == design, path
        assert set(kept) - set(design) <= ADDED_KEYWORDS, f"{path}: only bounds may be added"
    assert set(ours) == {path for path, _ in _walk(_schema(SEED))}, "no field of our own"


def test_names_scope_columns_and_status_subresource_are_the_designs() -> None:
    for key in ("group", "names", "scope"):
        assert CRD["spec"][key] == SEED["spec"][key]
    ours, design = CRD["spec"]["versions"][0], SEED["spec"]["versions"][0]
    for key in ("name", "served", "storage", "subresources", "additionalPrinterColumns"):
        assert ours[key] == design[key]
    assert CRD["metadata"]["name"] == SEED["metadata"]["name"]


DURATION = re.compile(_schema(CRD)["properties"]["spec"]["properties"]["minimumWaitDuration"]["pattern"])


def _reads(text: str) -> bool:
    try:
        parse_duration("d", text)
    except ConfigError as exc:
        return "longer than" in str(exc)  # a duration, only too long (the CRD cannot count)
    return True


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("10m", True),
        ("10m0s", True),
        ("1h30m", True),
        ("600", True),
        ("0.5", True),
        ("500ms", True),
        ("1.5µs", True),
        ("nan", False),
        ("inf", False),
        ("1e400", False),
        ("-5m", False),
        ("10 m", False),
        ("", False),
        ("10d", False),
    ],
)
def test_the_duration_pattern_stores_what_the_controller_reads(text: str, stored: bool) -> None:
    assert bool(DURATION.search(text)) is stored
    assert _reads(text) is stored


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[0-9.]{0,6}(ns|us|ms|s|m|h|x|e){0,3}[0-9.]{0,3}", fullmatch=True) | st.text(max_size=12))
def test_what_the_pattern_stores_the_controller_reads_and_back(text: str) -> None:
    assert bool(DURATION.search(text)) == _reads(text) or text != text.strip()
