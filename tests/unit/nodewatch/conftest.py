"""Fixtures for nodewatch unit tests: a fault-injecting IMDS, a manual clock, an IMDS client wired to both."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from nodewatch.clock import ManualClock
from nodewatch.imds import IMDSClient
from tests.support.faulty_imds import FaultyIMDS

MakeClient = Callable[..., IMDSClient]


@pytest.fixture
def imds() -> Iterator[FaultyIMDS]:
    with FaultyIMDS() as server:
        yield server


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_client(imds: FaultyIMDS, clock: ManualClock) -> MakeClient:
    """An IMDSClient for the fake IMDS whose retry pauses only advance the manual clock."""

    def make(**overrides: Any) -> IMDSClient:
        options: dict[str, Any] = {"timeout": 1.0, "clock": clock, "sleep": clock.sleep, "rng": random.Random(7)}  # noqa: S311
        options.update(overrides)
        return IMDSClient(options.pop("url", imds.url), **options)

    return make
