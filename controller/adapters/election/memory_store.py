"""An in-process Lease that behaves like the API server's: resourceVersions, 409s, and injectable outages."""

from __future__ import annotations

import threading

from controller.adapters.election.record import LeaseRecord, StoredLease
from controller.adapters.election.store import ApiTimeoutError, ConflictError, LeaseApiError, LeaseStoreError


class InMemoryLeaseStore:
    """A ``LeaseStore`` for tests. Share one instance between electors to make them race.

    Like the API server: every successful write gets a new resourceVersion; ``create`` of an existing Lease
    and ``update`` from a stale resourceVersion raise ConflictError; ``update`` of a missing Lease is a 404.
    ``fail_calls`` makes the following calls raise (an outage or timeouts), optionally after applying a write
    (the reply was lost, the write was not).
    """

    def __init__(self, namespace: str = "spotguard", name: str = "spotguard-controller") -> None:
        self._description = f"lease {namespace}/{name}"
        self._lock = threading.Lock()
        self._stored: StoredLease | None = None
        self._last_version = 0
        self._failure: LeaseStoreError | None = None
        self._failures_left: int | None = None
        self._fail_after_write = False
        #: Every call in order, as ("get" | "create" | "update", timeout), including the ones that failed.
        self.calls: list[tuple[str, float]] = []

    @property
    def description(self) -> str:
        return self._description

    def current(self) -> StoredLease | None:
        """What the "server" holds now; for assertions (not a call: never fails, not recorded)."""
        with self._lock:
            return self._stored

    def fail_calls(
        self, error: LeaseStoreError | None = None, *, count: int | None = None, after_write: bool = False
    ) -> None:
        """Make the next ``count`` calls (all of them if None) raise ``error`` (by default a timeout).

        With ``after_write``, a create or update still takes effect before the error is raised.
        """
        with self._lock:
            self._failure = error or ApiTimeoutError(
                f"{self._description}: the API server did not answer in time (emulated outage)",
                lease=self._description,
            )
            self._failures_left = count
            self._fail_after_write = after_write

    def heal(self) -> None:
        """End the outage started by ``fail_calls``."""
        with self._lock:
            self._failure = None
            self._failures_left = None

    def get(self, *, timeout: float) -> StoredLease | None:
        with self._lock:
            self.calls.append(("get", timeout))
            self._raise_injected_failure()
            return self._stored

    def create(self, record: LeaseRecord, *, timeout: float) -> StoredLease:
        with self._lock:
            self.calls.append(("create", timeout))
            if not self._fail_after_write:
                self._raise_injected_failure()
            if self._stored is not None:
                raise ConflictError(
                    f"creating {self._description} failed: it already exists (409 AlreadyExists)",
                    lease=self._description,
                )
            stored = self._write(record)
            self._raise_injected_failure()
            return stored

    def update(self, record: LeaseRecord, resource_version: str, *, timeout: float) -> StoredLease:
        with self._lock:
            self.calls.append(("update", timeout))
            if not self._fail_after_write:
                self._raise_injected_failure()
            if self._stored is None:
                raise LeaseApiError(
                    f"updating {self._description} failed: it does not exist (404 NotFound)",
                    lease=self._description,
                    status=404,
                )
            if self._stored.resource_version != resource_version:
                raise ConflictError(
                    f"updating {self._description} from resourceVersion {resource_version} failed: it is now at "
                    f"{self._stored.resource_version} (409 Conflict)",
                    lease=self._description,
                )
            stored = self._write(record)
            self._raise_injected_failure()
            return stored

    def _write(self, record: LeaseRecord) -> StoredLease:
        self._last_version += 1
        self._stored = StoredLease(record=record, resource_version=str(self._last_version))
        return self._stored

    def _raise_injected_failure(self) -> None:
        if self._failure is None:
            return
        failure = self._failure
        if self._failures_left is not None:
            self._failures_left -= 1
            if self._failures_left <= 0:
                self._failure = None
                self._failures_left = None
        raise failure
