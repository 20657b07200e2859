"""Shared set-up for the election tests: a fake clock, an in-memory Lease and electors that never exit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from controller.adapters.election import ElectionConfig, InMemoryLeaseStore, LeaseElector, LeaseRecord
from controller.clock import FakeClock

START = dt.datetime(2025, 1, 15, 10, 0, 0, tzinfo=dt.UTC)
CONFIG = ElectionConfig(
    fence_margin=2.0
)  # client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry; 2 s fence margin


class ExitRecorder:
    """Stands in for the process exit: records why the elector wanted to exit."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


def make_elector(
    store: InMemoryLeaseStore,
    clock: FakeClock,
    identity: str,
    *,
    config: ElectionConfig = CONFIG,
    exit_process: Callable[[str], None] | None = None,
    on_started_leading: Callable[[], None] | None = None,
    on_stopped_leading: Callable[[], None] | None = None,
    on_new_leader: Callable[[str], None] | None = None,
    random_fraction: Callable[[], float] = lambda: 0.5,
) -> LeaseElector:
    return LeaseElector(
        store,
        identity=identity,
        config=config,
        clock=clock,
        on_started_leading=on_started_leading,
        on_stopped_leading=on_stopped_leading,
        on_new_leader=on_new_leader,
        exit_process=exit_process or ExitRecorder(),
        random_fraction=random_fraction,
    )


def held_by(holder: str, at: dt.datetime, *, transitions: int = 0, duration: int = 15) -> LeaseRecord:
    """A record as another process would have written it at wall time ``at``."""
    return LeaseRecord(
        holder_identity=holder,
        lease_duration_seconds=duration,
        acquire_time=at,
        renew_time=at,
        lease_transitions=transitions,
    )


def holder_of(store: InMemoryLeaseStore) -> str | None:
    current = store.current()
    return None if current is None else current.record.holder_identity
