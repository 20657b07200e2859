"""The Lease leader elector: client-go's algorithm, run on an injected clock, plus a fence for AWS calls.

One small state machine. ``try_acquire_or_renew`` is one step of it (client-go's tryAcquireOrRenew);
``run`` drives it: campaign until leader, run the leader's work in a thread while renewing, and

* lose: if no renew succeeds within renew_deadline (or another holder shows up), cancel the work at once,
  call on_stopped_leading, then the exit callback (by default the process exits with status 1). The same
  happens when the work ends on its own after the fence refused it because this process could no longer
  vouch for its lease (a woken leader whose work noticed before its elector did): nothing is released;
* stop: when ``stop`` fires (SIGTERM) or the work returns, cancel the work, wait for it to end, then
  release the Lease (empty holder, 1 s duration) so a standby takes over on its next retry.

Expiry is judged on the local monotonic clock from when this process last saw the record change, never
from the timestamps in the record, so clock skew between hosts does not matter.

Leader election alone does not fence: a process frozen (SIGSTOP) while leading wakes up believing it
leads. ``ensure_leader`` closes that gap: call it right before every AWS call that changes capacity.
It passes only while the last successful renew was *sent* less than lease_duration - margin ago
(monotonic time keeps running while a process is stopped, so a woken leader fails it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import os
import random
import threading
from collections.abc import Callable

from controller.adapters.election.config import ElectionConfig, default_identity
from controller.adapters.election.record import LeaseRecord, StoredLease
from controller.adapters.election.store import ConflictError, LeaseStore, LeaseStoreError
from controller.clock import Cancellation, Clock, SystemClock
from controller.fence import NotLeaderError

log = logging.getLogger(__name__)

#: Called with the reason once leadership is lost; must end the process (tests inject a recorder).
ExitProcess = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class ElectionStatus:
    """A snapshot for metrics and the CLI.

    holder_identity: the holder in the last record seen (``""`` after a release, None before any read).
    lease_transitions: leaseTransitions in the last record seen (how often the lease changed hands).
    last_renew_time: wall time written by this process's last successful acquire or renew.
    seconds_since_renew: monotonic seconds since that renew was sent.
    """

    identity: str
    is_leader: bool
    holder_identity: str | None
    lease_transitions: int | None
    last_renew_time: dt.datetime | None
    seconds_since_renew: float | None


def exit_process_now(reason: str) -> None:
    """The default exit callback: log, flush the logs, and ``os._exit(1)``.

    ``os._exit`` rather than ``SystemExit``: this runs in the elector's thread, and the leader's work may
    be blocked inside a boto3 or kubernetes call that must not keep the process (or its capacity changes)
    alive. The Deployment restarts the pod, which rejoins as a standby.
    """
    log.critical("%s; exiting with status 1 so the pod restarts and rejoins the election as a standby", reason)
    logging.shutdown()
    os._exit(1)


class _Result(enum.Enum):
    LEADING = "leading"  # acquired or renewed: this process holds the lease
    HELD = "held"  # another holder's lease has not expired
    FAILED = "failed"  # an API call failed, a write conflicted, or no time was left


@dataclasses.dataclass(frozen=True)
class _Attempt:
    result: _Result
    detail: str = ""


_NO_TIME_LEFT = "no time left before the renew deadline"


def _written(failure: str | None) -> _Attempt:
    return _Attempt(_Result.LEADING) if failure is None else _Attempt(_Result.FAILED, failure)


class LeaseElector:
    """Elects one leader among processes sharing a Lease (see the module docstring).

    Thread-safe: ``ensure_leader``, ``is_leader`` and ``status`` may be called from any thread while ``run``
    drives the election. Callbacks run in the elector's thread, must be quick, and their exceptions are
    logged and ignored. ``on_new_leader`` gets ``""`` when the lease is released.
    """

    def __init__(
        self,
        store: LeaseStore,
        *,
        identity: str | None = None,
        config: ElectionConfig | None = None,
        clock: Clock | None = None,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        on_new_leader: Callable[[str], None] | None = None,
        exit_process: ExitProcess = exit_process_now,
        random_fraction: Callable[[], float] | None = None,
    ) -> None:
        self._identity = default_identity() if identity is None else identity
        if not self._identity.strip():
            raise ValueError("the elector identity must not be empty: an empty holderIdentity means 'released'")
        self._store = store
        self._config = config or ElectionConfig()
        self._clock: Clock = clock or SystemClock()
        self._on_started_leading = on_started_leading
        self._on_stopped_leading = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._exit_process = exit_process
        self._random_fraction = random_fraction or random.SystemRandom().random

        self._lock = threading.Lock()
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0  # monotonic time the observed record was last seen to change
        self._resource_version: str | None = None
        self._leading = False
        self._renew_sent_at: float | None = None  # monotonic send time of our last successful write
        self._renew_wall_time: dt.datetime | None = None
        self._reported_leader: str | None = None
        self._vouch_lost: str | None = None  # why the fence refused a leader whose lease had run out

    # -- state -------------------------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def config(self) -> ElectionConfig:
        return self._config

    @property
    def is_leader(self) -> bool:
        with self._lock:
            return self._leading

    def status(self) -> ElectionStatus:
        with self._lock:
            observed = self._observed
            sent = self._renew_sent_at
            return ElectionStatus(
                identity=self._identity,
                is_leader=self._leading,
                holder_identity=None if observed is None else observed.holder_identity,
                lease_transitions=None if observed is None else observed.lease_transitions,
                last_renew_time=self._renew_wall_time,
                seconds_since_renew=None if sent is None else self._clock.monotonic() - sent,
            )

    # -- the fence -----------------------------------------------------------------------------------------

    def fence(self, operation: str) -> None:
        """``ensure_leader`` with the default margin, naming the AWS call it guards (fits ``aws.FenceCheck``)."""
        self.ensure_leader(action=f"AWS {operation}")

    def ensure_leader(self, margin: float | None = None, *, action: str = "the capacity change") -> None:
        """Raise NotLeaderError unless this process leads and its lease has more than ``margin`` seconds left.

        "Left" is counted from when the last successful renew request was sent, on the monotonic clock.
        ``margin`` defaults to ``config.fence_margin``; make it cover the time until the guarded call is made.
        ``action`` names what is refused, for the error message.
        """
        margin = self._config.fence_margin if margin is None else margin
        if not margin >= 0:
            raise ValueError(f"the fence margin must be at least 0 seconds, got {margin!r}")
        with self._lock:
            now = self._clock.monotonic()
            leading = self._leading
            holder = None if self._observed is None else self._observed.holder_identity
            sent = self._renew_sent_at
        if not leading or sent is None:
            renewed = "never" if sent is None else f"{now - sent:.1f}s ago"
            raise NotLeaderError(
                f"{self._identity!r} is not the leader of {self._store.description} (holder: {holder!r}, "
                f"our last successful renew: {renewed}); refusing {action}, the leader does that",
                identity=self._identity,
                holder=holder,
                seconds_since_renew=None if sent is None else now - sent,
            )
        since = now - sent
        if sent + self._config.lease_duration - margin <= now:
            if sent + self._config.lease_duration - self._config.fence_margin <= now:
                # Not just short of a caller's larger margin: by the configured one, the lease may be gone.
                with self._lock:
                    if self._leading and self._vouch_lost is None:
                        self._vouch_lost = f"its last successful renew was sent {since:.1f}s ago"
            raise NotLeaderError(
                f"{self._identity!r} can no longer vouch that it leads {self._store.description} (holder in the "
                f"last record seen: {holder!r}): its last successful renew was sent {since:.1f}s ago, the lease "
                f"lasts {self._config.lease_duration:.0f}s and the fence keeps a {margin:.1f}s margin, so a standby "
                f"may have taken over; refusing {action} (was this process paused, or cut off from the "
                f"API server?)",
                identity=self._identity,
                holder=holder,
                seconds_since_renew=since,
            )

    # -- one step of the state machine -----------------------------------------------------------------------

    def try_acquire_or_renew(self) -> bool:
        """One attempt to acquire or renew the lease (client-go's tryAcquireOrRenew); True if we hold it now.

        Never raises for API failures: they are logged and return False.
        """
        attempt = self._try_acquire_or_renew(deadline=None)
        if attempt.result is _Result.FAILED:
            log.warning(
                "acquiring or renewing %s as %r failed: %s", self._store.description, self._identity, attempt.detail
            )
        return attempt.result is _Result.LEADING

    def _try_acquire_or_renew(self, deadline: float | None) -> _Attempt:
        attempt = self._attempt(deadline)
        with self._lock:
            holder = None if self._observed is None else self._observed.holder_identity
        if holder is not None:
            self._report_leader(holder)
        return attempt

    def _attempt(self, deadline: float | None) -> _Attempt:
        started = self._clock.monotonic()
        wall_now = self._clock.now()
        desired = LeaseRecord(
            holder_identity=self._identity,
            lease_duration_seconds=self._config.lease_duration_seconds,
            acquire_time=wall_now,
            renew_time=wall_now,
            lease_transitions=0,
        )
        if self._renew_optimistically(desired, started, deadline):
            return _Attempt(_Result.LEADING)

        # Read the lease; create it if it does not exist.
        timeout = self._call_timeout(deadline)
        if timeout is None:
            return _Attempt(_Result.FAILED, _NO_TIME_LEFT)
        try:
            current = self._store.get(timeout=timeout)
        except Exception as error:  # any failure is a failed attempt, never a crash
            return _Attempt(_Result.FAILED, self._describe_failure("reading", error))
        if current is None:
            return _written(self._write(desired, None, deadline))

        holder = current.record.holder_identity
        if self._observe(current, started):
            return _Attempt(_Result.HELD, f"held by {holder!r}")

        # Take it over (or renew it, if the record still names us), from the resourceVersion just read.
        if holder == self._identity:
            record = dataclasses.replace(
                desired,
                acquire_time=current.record.acquire_time,
                lease_transitions=current.record.lease_transitions,
            )
        else:
            record = dataclasses.replace(desired, lease_transitions=current.record.lease_transitions + 1)
        return _written(self._write(record, current.resource_version, deadline))

    def _renew_optimistically(self, desired: LeaseRecord, started: float, deadline: float | None) -> bool:
        """client-go's fast path: a leader whose lease is valid renews from the version it last wrote, one PUT."""
        with self._lock:
            observed = self._observed
            version = self._resource_version
            valid = self._leading and self._lease_valid(started)
        if not valid or observed is None or version is None:
            return False
        renewal = dataclasses.replace(
            desired, acquire_time=observed.acquire_time, lease_transitions=observed.lease_transitions
        )
        failure = self._write(renewal, version, deadline)
        if failure is not None:
            log.debug("optimistic renew of %s failed (%s); reading it again", self._store.description, failure)
        return failure is None

    def _observe(self, current: StoredLease, started: float) -> bool:
        """Take in a record just read; True if another holder's lease is still valid (so we may not take it).

        Expiry counts from when the record was last seen to change, on our own monotonic clock: the times
        written in the record are never compared with ours.
        """
        seen_at = self._clock.monotonic()
        holder = current.record.holder_identity
        with self._lock:
            if current.record != self._observed:
                self._observed = current.record
                self._observed_at = seen_at
            self._resource_version = current.resource_version
            held_by_other = bool(holder) and holder != self._identity and self._lease_valid(started)
            if held_by_other:
                self._leading = False
        return held_by_other

    def _write(self, record: LeaseRecord, resource_version: str | None, deadline: float | None) -> str | None:
        """Create (no resourceVersion) or update the lease as ours; None on success, else what went wrong."""
        timeout = self._call_timeout(deadline)
        if timeout is None:
            return _NO_TIME_LEFT
        sent_at = self._clock.monotonic()
        try:
            if resource_version is None:
                stored = self._store.create(record, timeout=timeout)
            else:
                stored = self._store.update(record, resource_version, timeout=timeout)
        except Exception as error:  # any failure is a failed attempt, never a crash
            return self._describe_failure("creating" if resource_version is None else "updating", error)
        self._hold(stored, sent_at)
        return None

    def _hold(self, stored: StoredLease, sent_at: float) -> None:
        with self._lock:
            became_leader = not self._leading
            self._observed = stored.record
            self._observed_at = self._clock.monotonic()
            self._resource_version = stored.resource_version
            self._leading = True
            self._renew_sent_at = sent_at
            self._renew_wall_time = stored.record.renew_time
            if became_leader:
                self._vouch_lost = None
        if became_leader:
            log.info(
                "%r became the leader of %s (leaseTransitions %d)",
                self._identity,
                self._store.description,
                stored.record.lease_transitions,
            )
        else:
            log.debug("%r renewed %s", self._identity, self._store.description)

    def _lease_valid(self, now: float) -> bool:
        """Whether the observed record's lease, counted from when we saw it change, has not expired (lock held)."""
        if self._observed is None:
            return False
        return self._observed_at + self._observed.lease_duration_seconds > now

    def _call_timeout(self, deadline: float | None) -> float | None:
        """The timeout for the next API call: the configured bound, cut to what is left before ``deadline``."""
        timeout = self._config.call_timeout
        if deadline is None:
            return timeout
        remaining = deadline - self._clock.monotonic()
        return None if remaining <= 0 else min(timeout, remaining)

    def _describe_failure(self, action: str, error: Exception) -> str:
        if isinstance(error, LeaseStoreError):
            return str(error)
        log.error(
            "unexpected error %s %s; counting it as a failed attempt",
            action,
            self._store.description,
            exc_info=error,
        )
        return f"{action} {self._store.description} raised {error!r}"

    # -- release ---------------------------------------------------------------------------------------------

    def release(self) -> bool:
        """Hand the lease over: empty holder, 1 s duration, transitions kept. Call only once the work stopped.

        The fence fails from the moment this is called. Returns True if the release was written; if not
        (not leading, API failure), a standby takes over when the lease expires.
        """
        with self._lock:
            observed = self._observed
            version = self._resource_version
            was_leading = self._leading
            self._leading = False
        if not was_leading or observed is None or version is None:
            log.info("%r does not lead %s; nothing to release", self._identity, self._store.description)
            return False
        wall_now = self._clock.now()
        released = LeaseRecord(
            holder_identity="",
            lease_duration_seconds=1,
            acquire_time=wall_now,
            renew_time=wall_now,
            lease_transitions=observed.lease_transitions,
        )
        timeout = self._config.call_timeout
        try:
            try:
                stored = self._store.update(released, version, timeout=timeout)
            except ConflictError:
                # Our last renew may have landed with its reply lost: release from the current version if
                # the lease still names us; if it names someone else, there is nothing of ours to release.
                current = self._store.get(timeout=timeout)
                if current is None or current.record.holder_identity != self._identity:
                    holder = None if current is None else current.record.holder_identity
                    log.info("%s is no longer ours (holder %r); nothing to release", self._store.description, holder)
                    return False
                released = dataclasses.replace(released, lease_transitions=current.record.lease_transitions)
                stored = self._store.update(released, current.resource_version, timeout=timeout)
        except Exception as error:  # a failed release only delays the takeover
            log.warning(
                "could not release %s as %r (%s); a standby takes over when it expires, within %ds",
                self._store.description,
                self._identity,
                self._describe_failure("releasing", error),
                self._config.lease_duration_seconds,
            )
            return False
        with self._lock:
            self._observed = stored.record
            self._observed_at = self._clock.monotonic()
            self._resource_version = stored.resource_version
        log.info(
            "%r released %s; a standby takes over on its next retry (within %.0fs)",
            self._identity,
            self._store.description,
            self._config.retry_period,
        )
        self._report_leader("")
        return True

    # -- the loops -------------------------------------------------------------------------------------------

    def acquire(self, stop: Cancellation) -> bool:
        """Try every retry period (jittered down, to half at most) until leader (True) or ``stop`` fires (False)."""
        log.info("%r is campaigning for %s", self._identity, self._store.description)
        while not stop.cancelled:
            attempt = self._try_acquire_or_renew(deadline=None)
            if attempt.result is _Result.LEADING:
                return True
            if attempt.result is _Result.FAILED:
                log.warning(
                    "acquiring %s as %r failed: %s; retrying", self._store.description, self._identity, attempt.detail
                )
            if self._clock.sleep(self._standby_pause(), stop):
                break
        return False

    def run(self, work: Callable[[Cancellation], None], stop: Cancellation) -> None:
        """Campaign, then run ``work(token)`` in a thread while leading; return on stop, or exit on loss.

        ``token`` fires the moment leadership is lost or ``stop`` fires; ``work`` must return promptly then.
        On loss, ``on_stopped_leading`` and the exit callback are called right after cancelling ``token``
        (without waiting for ``work``). If ``work`` returns or raises on its own after the fence refused this
        process for want of a fresh renew (see ``ensure_leader``), that is a loss too. On stop, or if ``work``
        returns or raises on its own otherwise, the lease is released once ``work`` has ended (waiting at most
        lease_duration, real time), ``on_stopped_leading`` is called, and ``run`` returns, re-raising what
        ``work`` raised.
        """
        if not self.acquire(stop):
            log.info("%r stopped before acquiring %s; nothing to release", self._identity, self._store.description)
            return
        token = Cancellation()
        work_ended = Cancellation()
        wake = Cancellation()
        stop.add_callback(lambda: wake.cancel("stop requested"))
        work_ended.add_callback(lambda: wake.cancel("the leader's work returned"))
        raised: list[BaseException] = []

        def run_work() -> None:
            try:
                work(token)
            except BaseException as error:  # run() re-raises it after releasing
                log.exception("the leader's work raised; releasing %s", self._store.description)
                raised.append(error)
            finally:
                work_ended.cancel("the leader's work returned")

        self._notify("on_started_leading", self._on_started_leading)
        threading.Thread(target=run_work, name="spotguard-leader-work", daemon=True).start()

        lost_reason = self._keep_renewing(wake)
        if lost_reason is None and not stop.cancelled:
            with self._lock:
                vouch_lost = self._vouch_lost
            if vouch_lost is not None:
                # The work stopped because the fence refused it: the lease may be another's by now, so
                # releasing (or carrying on as if leading) is not ours to do. Exit like any other loss.
                lost_reason = self._lose(
                    f"the fence refused a capacity change ({vouch_lost}, the lease lasts "
                    f"{self._config.lease_duration:.0f}s: was this process paused?) and the leader's work stopped"
                )
        if lost_reason is not None:
            token.cancel(lost_reason)
            self._notify("on_stopped_leading", self._on_stopped_leading)
            self._exit_process(lost_reason)
            return

        why = "stop requested" if stop.cancelled else "the leader's work returned"
        token.cancel(f"{why}: stepping down as leader of {self._store.description}")
        log.info("%s; waiting for the leader's work to stop before releasing %s", why, self._store.description)
        if not work_ended.wait(self._config.lease_duration):
            log.error(
                "the leader's work did not stop within %.0fs of being cancelled; not releasing %s "
                "(it expires on its own and the fence blocks the work's AWS calls)",
                self._config.lease_duration,
                self._store.description,
            )
            with self._lock:
                self._leading = False
            self._notify("on_stopped_leading", self._on_stopped_leading)
            return
        self.release()
        self._notify("on_stopped_leading", self._on_stopped_leading)
        if raised:
            raise raised[0]

    def _keep_renewing(self, wake: Cancellation) -> str | None:
        """Renew every retry period until ``wake`` fires (None) or leadership is lost (the reason)."""
        while not self._clock.sleep(self._config.retry_period, wake):
            deadline = self._clock.monotonic() + self._config.renew_deadline
            last_failure = _NO_TIME_LEFT
            while True:
                attempt = self._try_acquire_or_renew(deadline)
                if attempt.result is _Result.LEADING:
                    break
                if attempt.result is _Result.HELD:
                    return self._lose(f"the lease is now {attempt.detail}")
                if attempt.detail != _NO_TIME_LEFT:
                    last_failure = attempt.detail
                remaining = deadline - self._clock.monotonic()
                if remaining <= 0:
                    return self._lose(
                        f"no renew succeeded within the {self._config.renew_deadline:.0f}s renew deadline "
                        f"(last failure: {last_failure})"
                    )
                pause = min(self._config.retry_period, remaining)
                log.warning(
                    "renewing %s as %r failed: %s; retrying in %.1fs, leadership is lost in %.1fs without a renew",
                    self._store.description,
                    self._identity,
                    attempt.detail,
                    pause,
                    remaining,
                )
                if self._clock.sleep(pause, wake):
                    return None
        return None

    def _lose(self, why: str) -> str:
        with self._lock:
            self._leading = False
            sent = self._renew_sent_at
        since = "never" if sent is None else f"{self._clock.monotonic() - sent:.1f}s ago"
        reason = (
            f"{self._identity!r} lost the leadership of {self._store.description}: {why}; last successful renew "
            f"sent {since}; the leader's work is cancelled"
        )
        log.error("%s", reason)
        return reason

    def _standby_pause(self) -> float:
        """retry_period jittered down to between half and all of it, so a released lease is taken within one."""
        return self._config.retry_period * (1.0 - 0.5 * self._random_fraction())

    # -- callbacks -------------------------------------------------------------------------------------------

    def _report_leader(self, holder: str) -> None:
        with self._lock:
            if holder == self._reported_leader:
                return
            self._reported_leader = holder
        if holder and holder != self._identity:
            log.info("%s is held by %r; %r stands by", self._store.description, holder, self._identity)
        if self._on_new_leader is not None:
            self._notify("on_new_leader", self._on_new_leader, holder)

    def _notify(self, name: str, callback: Callable[..., None] | None, *args: str) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("the %s callback raised; the election carries on regardless", name)
