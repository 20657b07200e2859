"""``spotguard leader``: who holds the controller's Lease, since when, how often it changed hands, paused or not."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from controller.admin.context import Problem, Target, output_option, reported_errors, services, target_options
from controller.admin.output import age, emit, human_duration, key_values, parse_timestamp, rfc3339

if TYPE_CHECKING:
    from controller.adapters.kube import Kube
    from controller.adapters.pause_switch import PauseStatus


class LeaderState:
    LEADING = "leading"
    EXPIRED = "expired"  # the holder stopped renewing (by this machine's clock)
    RELEASED = "released"  # empty holder: stepped down, or never held (e.g. created by spotguard pause)


@dataclasses.dataclass(frozen=True)
class LeaderInfo:
    lease: str
    holder: str
    acquire_time: dt.datetime | None
    renew_time: dt.datetime | None
    lease_duration_seconds: int
    transitions: int
    pause: PauseStatus

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaderInfo:
        from controller.adapters.pause_switch import PauseStatus

        meta = lease.get("metadata") or {}
        spec = lease.get("spec") or {}
        return cls(
            lease=f"{meta.get('namespace', '')}/{meta.get('name', '')}",
            holder=str(spec.get("holderIdentity") or ""),
            acquire_time=parse_timestamp(spec.get("acquireTime")),
            renew_time=parse_timestamp(spec.get("renewTime")),
            lease_duration_seconds=_whole(spec.get("leaseDurationSeconds")),
            transitions=_whole(spec.get("leaseTransitions")),
            pause=PauseStatus.from_lease(lease),
        )

    def state(self, now: dt.datetime) -> str:
        if not self.holder:
            return LeaderState.RELEASED
        if self.renew_time is None or (now - self.renew_time).total_seconds() > self.lease_duration_seconds:
            return LeaderState.EXPIRED
        return LeaderState.LEADING

    def to_json(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "lease": self.lease,
            "holder": self.holder,
            "state": self.state(now),
            "since": _stamp(self.acquire_time),
            "lastRenew": _stamp(self.renew_time),
            "leaseDurationSeconds": self.lease_duration_seconds,
            "transitions": self.transitions,
            "paused": self.pause.to_json(),
        }

    def render(self, now: dt.datetime) -> str:
        state = self.state(now)
        state_text = {
            LeaderState.LEADING: "leading",
            LeaderState.EXPIRED: "expired: the holder stopped renewing, no live leader (by this machine's clock)",
            LeaderState.RELEASED: "no leader (the Lease is released or was never held)",
        }[state]
        paused = "no"
        if self.pause.paused:
            paused = "yes"
            if self.pause.by:
                paused += f", by {self.pause.by}"
            if self.pause.at is not None:
                paused += f", at {rfc3339(self.pause.at)} ({age(self.pause.at, now)} ago)"
            if self.pause.reason:
                paused += f": {self.pause.reason}"
        return key_values(
            [
                ("Lease", self.lease),
                ("Holder", self.holder),
                ("State", state_text),
                ("Since", _when(self.acquire_time, now)),
                ("Last Renew", _when(self.renew_time, now)),
                ("Lease Duration", human_duration(self.lease_duration_seconds) if self.lease_duration_seconds else ""),
                ("Transitions", self.transitions),
                ("Paused", paused),
            ]
        )


def read_lease(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    from controller.adapters.pause_switch import lease_path

    try:
        return kube.request("GET", lease_path(namespace, name))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value)


def _stamp(moment: dt.datetime | None) -> str:
    return rfc3339(moment) if moment is not None else ""


def _when(moment: dt.datetime | None, now: dt.datetime) -> str:
    return "" if moment is None else f"{rfc3339(moment)} ({age(moment, now)} ago)"


@click.command("leader")
@target_options
@output_option
def leader(target: Target, output: str) -> None:
    """Show the controller's leader: holder, since when, last renew, transitions, and the pause switch.

    Exit status 0 while a leader holds the Lease (paused or not); 1 if there is no Lease or no live leader.
    """
    svc = services()
    where = f"{target.lease_namespace}/{target.lease_name}"
    with reported_errors(f"reading Lease {where}"):
        lease = read_lease(svc.connect(target), target.lease_namespace, target.lease_name)
    if lease is None:
        raise Problem(
            f"no Lease {where}: the controller has not run here yet (or uses another --lease-name/--namespace)"
        )
    info = LeaderInfo.from_lease(lease)
    now = svc.clock.now()
    emit(info.to_json(now), output, lambda: info.render(now))
    state = info.state(now)
    if state != LeaderState.LEADING:
        raise Problem(f"no live leader for Lease {where} ({state}): check the controller's pods and their logs")
