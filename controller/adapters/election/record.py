"""The leader election record a Lease carries, and the MicroTime text format its timestamps use."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """The ``spec`` of a ``coordination.k8s.io/v1`` Lease as client-go's leader election writes it.

    ``holder_identity`` is ``""`` when nobody holds the lease (never acquired, or released).
    Two records are the same observation only if every field is equal: that is how an elector decides
    the holder is still alive (the record changed) without trusting anyone's wall clock.
    """

    holder_identity: str
    lease_duration_seconds: int
    acquire_time: dt.datetime | None
    renew_time: dt.datetime | None
    lease_transitions: int


@dataclasses.dataclass(frozen=True)
class StoredLease:
    """A record as read from (or written to) the API server, with the resourceVersion to update it from."""

    record: LeaseRecord
    resource_version: str


def format_micro_time(moment: dt.datetime) -> str:
    """Render an aware datetime as a Kubernetes MicroTime: RFC 3339 UTC with exactly six fraction digits.

    The API server parses MicroTime with Go's layout ``2006-01-02T15:04:05.000000Z07:00``, which rejects a
    missing fraction, so ``datetime.isoformat()`` (which drops a zero fraction) must not be used.
    """
    if moment.tzinfo is None:
        raise ValueError(f"a MicroTime needs a timezone-aware datetime, got naive {moment.isoformat()}")
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(value: object, *, field: str, lease: str) -> dt.datetime | None:
    """Read a Lease timestamp however the client handed it over; None if absent or unreadable.

    Accepts None, an aware or naive (taken as UTC) datetime, or RFC 3339 text with ``Z`` or an offset and any
    number of fraction digits (nanoseconds are truncated to microseconds). An unreadable value is logged and
    treated as absent: the election only needs the holder, duration and transitions to decide.
    """
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, str):
        parsed = _parse_rfc3339(value)
        if parsed is not None:
            return parsed
    log.warning(
        "%s has an unreadable %s %r (expected RFC 3339 such as 2025-01-15T10:00:00.000000Z); "
        "treating it as absent, the next write by an elector replaces it",
        lease,
        field,
        value,
    )
    return None


def _parse_rfc3339(text: str) -> dt.datetime | None:
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(candidate)  # 3.11+: reads any fraction length, truncating to µs
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(dt.UTC)
