"""The narrow interface between the elector and wherever the Lease lives, and the errors it may raise.

The elector is pure logic over this protocol: ``KubeLeaseStore`` talks to the API server,
``InMemoryLeaseStore`` emulates it for unit tests. Every call takes the timeout it must finish within;
an implementation must not block longer than that.
"""

from __future__ import annotations

from typing import Protocol

from controller.adapters.election.record import LeaseRecord, StoredLease


class LeaseStoreError(Exception):
    """A Lease API call did not succeed. The elector counts it as a failed attempt and retries."""

    def __init__(self, message: str, *, lease: str) -> None:
        super().__init__(message)
        self.lease = lease


class ConflictError(LeaseStoreError):
    """409: the Lease changed since the resourceVersion we hold was read, or it already exists on create."""


class ApiTimeoutError(LeaseStoreError):
    """The API server did not answer within the call's timeout (the write may or may not have happened)."""


class LeaseApiError(LeaseStoreError):
    """Any other failure: unreachable API server, 5xx, 429, 401/403 (RBAC), or a malformed reply.

    ``status`` is the HTTP status, or None when no response arrived.
    """

    def __init__(self, message: str, *, lease: str, status: int | None) -> None:
        super().__init__(message, lease=lease)
        self.status = status


class LeaseStore(Protocol):
    """Get, create and replace one Lease with optimistic concurrency, like the API server does."""

    @property
    def description(self) -> str:
        """What to call the Lease in logs and errors, e.g. ``lease spotguard/spotguard-controller``."""
        ...

    def get(self, *, timeout: float) -> StoredLease | None:
        """The current record and its resourceVersion, or None if the Lease does not exist."""
        ...

    def create(self, record: LeaseRecord, *, timeout: float) -> StoredLease:
        """Create the Lease; ConflictError if it already exists."""
        ...

    def update(self, record: LeaseRecord, resource_version: str, *, timeout: float) -> StoredLease:
        """Replace the whole spec if the Lease is still at ``resource_version``; ConflictError otherwise."""
        ...
