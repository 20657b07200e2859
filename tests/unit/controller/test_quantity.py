"""Kubernetes quantities parse exactly and convert to the scheduler's integer units."""

from __future__ import annotations

from decimal import Decimal

import pytest

from controller.model.quantity import format_units, parse_quantity, to_units


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("100m", Decimal("0.1")),
        ("1", Decimal(1)),
        ("0.5", Decimal("0.5")),
        (".5", Decimal("0.5")),
        ("2.", Decimal(2)),
        ("128Mi", Decimal(128 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1G", Decimal(10**9)),
        ("500k", Decimal(500_000)),
        ("1Ki", Decimal(1024)),
        ("2Ti", Decimal(2 * 2**40)),
        ("1E", Decimal(10**18)),
        ("1Ei", Decimal(2**60)),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("5e-3", Decimal("0.005")),
        ("250u", Decimal("0.00025")),
        ("3n", Decimal("3e-9")),
        ("-1", Decimal(-1)),
        ("+2M", Decimal(2_000_000)),
        ("123456789", Decimal(123456789)),
        (" 7 ", Decimal(7)),
    ],
)
def test_quantities_parse_to_their_exact_value(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_json_numbers_are_quantities_too() -> None:
    assert parse_quantity(110) == 110
    assert parse_quantity(0.25) == Decimal("0.25")


@pytest.mark.parametrize("text", ["", "Mi", "1mi", "1 Gi", "1.2.3", "1e", "abc", "1Kii", "0x10", "1KiB"])
def test_text_that_is_no_quantity_is_refused_with_the_text_and_examples(text: str) -> None:
    with pytest.raises(ValueError, match="invalid Kubernetes quantity") as refused:
        parse_quantity(text)
    assert repr(text) in str(refused.value) and "128Mi" in str(refused.value)


def test_booleans_are_not_quantities() -> None:
    with pytest.raises(ValueError, match="boolean"):
        parse_quantity(True)


@pytest.mark.parametrize(
    ("resource", "text", "units"),
    [
        ("cpu", "100m", 100),
        ("cpu", "2", 2000),
        ("cpu", "0.5", 500),
        ("cpu", "1.0001", 1001),  # rounded up, like the scheduler's MilliValue
        ("cpu", "250u", 1),
        ("memory", "1Gi", 2**30),
        ("memory", "1.5", 2),
        ("memory", "1e3", 1000),
        ("pods", "110", 110),
        ("nvidia.com/gpu", "1", 1),
    ],
)
def test_units_are_millicores_for_cpu_and_whole_units_otherwise_rounded_up(
    resource: str, text: str, units: int
) -> None:
    assert to_units(resource, text) == units


@pytest.mark.parametrize(
    ("resource", "units", "text"),
    [
        ("cpu", 2000, "2"),
        ("cpu", 1500, "1500m"),
        ("memory", 2**30, "1Gi"),
        ("memory", 3 * 2**29, "1.5Gi"),
        ("memory", 512 * 2**20, "512Mi"),
        ("memory", 100, "100"),
        ("pods", 3, "3"),
    ],
)
def test_units_are_written_back_for_people(resource: str, units: int, text: str) -> None:
    assert format_units(resource, units) == text
