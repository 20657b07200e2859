from __future__ import annotations

import pytest

from controller.adapters.election import InMemoryLeaseStore
from controller.clock import FakeClock
from tests.unit.controller.election_helpers import START


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=START)


@pytest.fixture
def store() -> InMemoryLeaseStore:
    return InMemoryLeaseStore()
