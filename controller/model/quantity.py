"""Kubernetes resource quantities ("100m", "1.5", "128Mi", "1G", "1e3") parsed into exact decimals.

The grammar is apimachinery's ``resource.Quantity``: a signed decimal number followed by at most one
suffix, which is a binary SI suffix (Ki Mi Gi Ti Pi Ei), a decimal SI suffix (n u m "" k M G T P E) or a
decimal exponent (e3, E-2). Values are kept as ``Decimal`` so nothing is lost to floating point; the
scheduler-style integer units (millicores for cpu, whole units for everything else) round up, as
Kubernetes does.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?P<suffix>[KMGTPE]i|[eE][+-]?\d+|[numkMGTPE]?)")
_CONTEXT = decimal.Context(prec=60)


def parse_quantity(value: str | int | float) -> Decimal:
    """The exact value of a Kubernetes quantity; ValueError naming the text if it is not one."""
    if isinstance(value, bool):
        raise ValueError(f"invalid Kubernetes quantity {value!r}: a boolean is not a quantity")
    if isinstance(value, int | float):
        return Decimal(str(value))
    text = value.strip()
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(
            f"invalid Kubernetes quantity {value!r}: expected a number with an optional suffix "
            "(m, k, M, G, Ki, Mi, Gi, e3, ...), like '100m', '1.5', '128Mi' or '1e3'"
        )
    number = Decimal(match["number"])
    suffix = match["suffix"]
    if suffix in _BINARY:
        return _CONTEXT.multiply(number, Decimal(_BINARY[suffix]))
    if suffix in _DECIMAL:
        return _CONTEXT.multiply(number, _DECIMAL[suffix])
    return _CONTEXT.multiply(number, _CONTEXT.power(Decimal(10), int(suffix[1:])))


def to_units(resource: str, value: str | int | float) -> int:
    """A quantity in the integer unit the scheduler counts ``resource`` in: millicores for cpu, else whole
    units (bytes for memory), rounded up."""
    exact = parse_quantity(value)
    if resource == "cpu":
        exact = exact * 1000
    return int(exact.to_integral_value(rounding=decimal.ROUND_CEILING))


def format_units(resource: str, units: int) -> str:
    """``units`` (as from ``to_units``) written for people: "1500m" or "2" cpu, "1.5Gi" memory (rounded)."""
    if resource == "cpu":
        return str(units // 1000) if units % 1000 == 0 else f"{units}m"
    if resource in {"memory", "ephemeral-storage"} or resource.startswith("hugepages-"):
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            if units >= _BINARY[suffix]:
                scaled = f"{units / _BINARY[suffix]:.2f}".rstrip("0").rstrip(".")
                return f"{scaled}{suffix}"
    return str(units)
