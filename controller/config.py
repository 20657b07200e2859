"""Every controller setting, read from the environment once and validated together.

Environment names follow the design (seed 000): ``SPOT_ASG_NAME``, ``ON_DEMAND_ASG_NAME``,
``SPOT_GUARD_SCALE_TIMEOUT``, ``SPOT_GUARD_CAPACITY_CHECK_TIMEOUT``; the rest use the
``SPOT_GUARD_`` prefix. Durations accept seconds (``180``) or Go-style units (``10m``, ``1h30m``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

RETIRE_POLICIES = ("drain", "keep-until-interruption")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable and what it expects."""


def parse_duration(name: str, text: str) -> float:
    """``180`` -> 180.0, ``10m`` -> 600.0, ``1h30m`` -> 5400.0, ``500ms`` -> 0.5 (seconds)."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise ConfigError(f"{name}={text!r}: expected seconds (180) or a duration like 90s, 10m, 1h30m") from None
    if seconds < 0:
        raise ConfigError(f"{name}={text!r}: must not be negative")
    return seconds


def format_duration(seconds: float) -> str:
    """600 -> ``10m``; 90 -> ``1m30s``; 0.5 -> ``500ms`` (the form the SGFE spec stores)."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


@dataclasses.dataclass(frozen=True)
class Settings:
    # Groups: one pair by name, and/or any number of spot ASGs tagged with their on-demand partner.
    spot_asg_name: str = ""
    on_demand_asg_name: str = ""
    partner_tag: str = "spotguard.io/on-demand-partner"
    # Timings (seconds).
    scale_timeout: float = 60.0
    capacity_check_timeout: float = 180.0
    capacity_poll_interval: float = 5.0
    batch_window: float = 0.1  # a lone recommendation's quiet period (controller.batching)...
    batch_max_delay: float = 2.0  # ...but no longer than this after the first (one nodewatch poll interval; twice
    # this after its first arrival for the rest of a burst whose first call closed early)
    minimum_wait_duration: float = 600.0
    # What happens to a recommended node once its replacement is Ready.
    retire_policy: str = "drain"
    keep_grace_period: float = 900.0
    drain_on_interruption: bool = True
    drain_timeout: float = 90.0
    max_drain_attempts: int = 3
    delete_emptydir_data: bool = False
    # The SGFE lifecycle: from on-demand back to spot (controller.lifecycle).
    stability_window: float = 120.0
    utilisation_buffer: float = 0.75
    completed_ttl: float = 86400.0
    monitoring_backoff_initial: float = 60.0
    monitoring_backoff_max: float = 900.0
    safety_retry_interval: float = 30.0
    lifecycle_poll_interval: float = 10.0
    scale_down_takeover: float = 30.0
    # Where things live.
    namespace: str = "kube-system"
    lease_name: str = "spotguard-controller"
    lease_namespace: str = "kube-system"
    # Leader election (client-go defaults).
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    fence_margin: float = 2.0
    # Serving.
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    log_level: str = "info"

    def validate(self) -> Settings:
        if bool(self.spot_asg_name) != bool(self.on_demand_asg_name):
            raise ConfigError(
                "SPOT_ASG_NAME and ON_DEMAND_ASG_NAME go together: set both for one pair, or neither and tag "
                f"each spot ASG with {self.partner_tag}=<on-demand ASG name>"
            )
        if self.spot_asg_name and self.spot_asg_name == self.on_demand_asg_name:
            raise ConfigError(f"SPOT_ASG_NAME and ON_DEMAND_ASG_NAME are both {self.spot_asg_name!r}: they must differ")
        if self.capacity_check_timeout <= 0:
            raise ConfigError("SPOT_GUARD_CAPACITY_CHECK_TIMEOUT must be positive")
        if self.capacity_poll_interval <= 0 or self.capacity_poll_interval > self.capacity_check_timeout:
            raise ConfigError(
                "SPOT_GUARD_CAPACITY_POLL_INTERVAL must be positive and no longer than "
                "SPOT_GUARD_CAPACITY_CHECK_TIMEOUT"
            )
        if self.batch_max_delay < self.batch_window:
            raise ConfigError(
                f"SPOT_GUARD_BATCH_MAX_DELAY={format_duration(self.batch_max_delay)} is shorter than "
                f"SPOT_GUARD_BATCH_WINDOW={format_duration(self.batch_window)}: the longest wait must be at least the "
                "window"
            )
        if self.retire_policy not in RETIRE_POLICIES:
            raise ConfigError(f"SPOT_GUARD_RETIRE_POLICY={self.retire_policy!r}: expected one of {RETIRE_POLICIES}")
        if not 0 < self.utilisation_buffer <= 1:
            raise ConfigError(
                f"SPOT_GUARD_UTILISATION_BUFFER={self.utilisation_buffer}: expected a fraction in (0, 1], e.g. 0.75"
            )
        if not 0 < self.monitoring_backoff_initial <= self.monitoring_backoff_max:
            raise ConfigError(
                "SPOT_GUARD_MONITORING_BACKOFF_INITIAL must be positive and no longer than "
                "SPOT_GUARD_MONITORING_BACKOFF_MAX"
            )
        for field in ("completed_ttl", "safety_retry_interval", "lifecycle_poll_interval", "drain_timeout"):
            if getattr(self, field) <= 0:
                raise ConfigError(f"{env_var(field)}={getattr(self, field)}: must be positive")
        if self.max_drain_attempts < 1:
            raise ConfigError(f"SPOT_GUARD_MAX_DRAIN_ATTEMPTS={self.max_drain_attempts}: must be at least 1")
        if not 0 <= self.metrics_port < 65536:
            raise ConfigError(f"SPOT_GUARD_METRICS_PORT={self.metrics_port}: expected a TCP port")
        return self


_ENV: dict[str, tuple[str, str]] = {
    # field: (environment variable, kind)
    "spot_asg_name": ("SPOT_ASG_NAME", "str"),
    "on_demand_asg_name": ("ON_DEMAND_ASG_NAME", "str"),
    "partner_tag": ("SPOT_GUARD_PARTNER_TAG", "str"),
    "scale_timeout": ("SPOT_GUARD_SCALE_TIMEOUT", "duration"),
    "capacity_check_timeout": ("SPOT_GUARD_CAPACITY_CHECK_TIMEOUT", "duration"),
    "capacity_poll_interval": ("SPOT_GUARD_CAPACITY_POLL_INTERVAL", "duration"),
    "batch_window": ("SPOT_GUARD_BATCH_WINDOW", "duration"),
    "batch_max_delay": ("SPOT_GUARD_BATCH_MAX_DELAY", "duration"),
    "minimum_wait_duration": ("SPOT_GUARD_MINIMUM_WAIT_DURATION", "duration"),
    "retire_policy": ("SPOT_GUARD_RETIRE_POLICY", "str"),
    "keep_grace_period": ("SPOT_GUARD_KEEP_GRACE_PERIOD", "duration"),
    "drain_on_interruption": ("SPOT_GUARD_DRAIN_ON_INTERRUPTION", "bool"),
    "drain_timeout": ("SPOT_GUARD_DRAIN_TIMEOUT", "duration"),
    "max_drain_attempts": ("SPOT_GUARD_MAX_DRAIN_ATTEMPTS", "int"),
    "delete_emptydir_data": ("SPOT_GUARD_DELETE_EMPTYDIR_DATA", "bool"),
    "stability_window": ("SPOT_GUARD_STABILITY_WINDOW", "duration"),
    "utilisation_buffer": ("SPOT_GUARD_UTILISATION_BUFFER", "float"),
    "completed_ttl": ("SPOT_GUARD_COMPLETED_TTL", "duration"),
    "monitoring_backoff_initial": ("SPOT_GUARD_MONITORING_BACKOFF_INITIAL", "duration"),
    "monitoring_backoff_max": ("SPOT_GUARD_MONITORING_BACKOFF_MAX", "duration"),
    "safety_retry_interval": ("SPOT_GUARD_SAFETY_RETRY_INTERVAL", "duration"),
    "lifecycle_poll_interval": ("SPOT_GUARD_LIFECYCLE_POLL_INTERVAL", "duration"),
    "scale_down_takeover": ("SPOT_GUARD_SCALE_DOWN_TAKEOVER", "duration"),
    "namespace": ("SPOT_GUARD_NAMESPACE", "str"),
    "lease_name": ("SPOT_GUARD_LEASE_NAME", "str"),
    "lease_namespace": ("SPOT_GUARD_LEASE_NAMESPACE", "str"),
    "lease_duration": ("SPOT_GUARD_LEASE_DURATION", "duration"),
    "renew_deadline": ("SPOT_GUARD_RENEW_DEADLINE", "duration"),
    "retry_period": ("SPOT_GUARD_RETRY_PERIOD", "duration"),
    "fence_margin": ("SPOT_GUARD_FENCE_MARGIN", "duration"),
    "metrics_host": ("SPOT_GUARD_METRICS_HOST", "str"),
    "metrics_port": ("SPOT_GUARD_METRICS_PORT", "int"),
    "log_level": ("LOG_LEVEL", "str"),
}


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={text!r}: expected true or false")


def from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from the environment (``env`` defaults to os.environ), then ``overrides``, validated."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for field, (var, kind) in _ENV.items():
        if var not in env or env[var] == "":
            continue
        raw = env[var]
        if kind == "duration":
            values[field] = parse_duration(var, raw)
        elif kind == "bool":
            values[field] = _parse_bool(var, raw)
        elif kind == "int":
            try:
                values[field] = int(raw)
            except ValueError:
                raise ConfigError(f"{var}={raw!r}: expected a whole number") from None
        elif kind == "float":
            try:
                values[field] = float(raw)
            except ValueError:
                raise ConfigError(f"{var}={raw!r}: expected a number such as 0.75") from None
        else:
            values[field] = raw.strip()
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values).validate()  # type: ignore[arg-type]


def env_var(field: str) -> str:
    """The environment variable behind a settings field (for messages and docs)."""
    return _ENV[field][0]
