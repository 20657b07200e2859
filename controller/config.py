"""Every controller setting, read from the environment once and validated together.

Environment names follow the design (seed 000): ``SPOT_ASG_NAME``, ``ON_DEMAND_ASG_NAME``,
``SPOT_GUARD_SCALE_TIMEOUT``, ``SPOT_GUARD_CAPACITY_CHECK_TIMEOUT``; the rest use the
``SPOT_GUARD_`` prefix. Durations accept seconds (``180``, ``0.5``) or Go-style units (``10m``, ``1h30m``,
``500ms``, ``10m0s`` as Go's ``Duration.String()`` writes it); nothing else (no ``nan``, ``inf``, ``1e3``), and
at most ``MAX_DURATION``. Every value is checked when the settings are made: finite, in its range, and
consistent with the others; a ``ConfigError`` names the variable.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping

_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_SECONDS = re.compile(_NUMBER, re.ASCII)
_DURATION_PART = re.compile(rf"({_NUMBER})(ns|us|\u00b5s|\u03bcs|ms|s|m|h)", re.ASCII)
_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: The longest duration any setting or SpotGuardFallbackEvent may name: a year. Anything longer is a typo.
MAX_DURATION = 366 * 86400.0
#: The longest text ``parse_duration`` reads (a Go duration of every unit is about 40 characters).
MAX_DURATION_TEXT = 64

RETIRE_POLICIES = ("drain", "keep-until-interruption")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the variable (``variable``) and what it expects."""

    def __init__(self, message: str, variable: str = "") -> None:
        super().__init__(message)
        self.variable = variable


def parse_duration(name: str, text: str) -> float:
    """``180`` -> 180.0, ``10m`` -> 600.0, ``1h30m`` -> 5400.0, ``500ms`` -> 0.5 (seconds).

    Raises ConfigError naming ``name`` for anything else: a wrong type, an empty or unknown form, ``nan``,
    ``inf``, an exponent, or more than ``MAX_DURATION``.
    """
    if not isinstance(text, str):
        raise ConfigError(f"{name}={text!r}: expected a duration as text, such as 90s or 10m", name)
    value = text.strip()
    expected = "expected seconds (180) or a duration like 500ms, 90s, 10m, 1h30m"
    if not value or len(value) > MAX_DURATION_TEXT:
        raise ConfigError(f"{name}={text!r}: {expected}", name)
    if _SECONDS.fullmatch(value):
        seconds = float(value)
    else:
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(value):
            raise ConfigError(f"{name}={text!r}: {expected}", name)
    if not math.isfinite(seconds) or seconds > MAX_DURATION:
        raise ConfigError(f"{name}={text!r}: longer than {format_duration(MAX_DURATION)}, the most allowed", name)
    return seconds


def format_duration(seconds: float) -> str:
    """600 -> ``10m``; 90 -> ``1m30s``; 0.5 -> ``500ms`` (the form the SGFE spec stores)."""
    if not math.isfinite(seconds):
        raise ValueError(f"format_duration needs a finite number of seconds, got {seconds!r}")
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
    batch_window: float = 0.1  # a lone recommendation's quiet period (controller.replacement.batching)...
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
    fence_margin: float = 3.0  # the fence closes this long before a standby may take over (controller.fence)
    # Auto Scaling calls: connect (TCP and TLS) and wait for the answer (controller.adapters.aws.CallBudget).
    aws_connect_timeout: float = 1.0
    aws_read_timeout: float = 5.0
    # A second source of notices: the SQS queue EventBridge feeds with EC2's events ("": IMDS through nodewatch only).
    queue_url: str = ""
    # Serving.
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 8080
    log_level: str = "info"
    # Observe-only: decide everything against the real groups and Nodes, change nothing but the Lease and Events
    # (controller.adapters.dry_run).
    dry_run: bool = False

    def validate(self) -> Settings:
        """Check every value (finite, in its range) and how they fit together; ConfigError names the variable."""
        for field in dataclasses.fields(self):
            _check_value(field.name, getattr(self, field.name))
        if bool(self.spot_asg_name) != bool(self.on_demand_asg_name):
            raise ConfigError(
                "SPOT_ASG_NAME and ON_DEMAND_ASG_NAME go together: set both for one pair, or neither and tag "
                f"each spot ASG with {self.partner_tag}=<on-demand ASG name>",
                "SPOT_ASG_NAME" if not self.spot_asg_name else "ON_DEMAND_ASG_NAME",
            )
        if self.spot_asg_name and self.spot_asg_name == self.on_demand_asg_name:
            raise ConfigError(
                f"SPOT_ASG_NAME and ON_DEMAND_ASG_NAME are both {self.spot_asg_name!r}: they must differ",
                "ON_DEMAND_ASG_NAME",
            )
        _not_longer("capacity_poll_interval", self.capacity_poll_interval, "capacity_check_timeout", self)
        if self.batch_max_delay < self.batch_window:
            raise ConfigError(
                f"SPOT_GUARD_BATCH_MAX_DELAY={format_duration(self.batch_max_delay)} is shorter than "
                f"SPOT_GUARD_BATCH_WINDOW={format_duration(self.batch_window)}: the longest wait must be at least the "
                "window",
                "SPOT_GUARD_BATCH_MAX_DELAY",
            )
        _not_longer("monitoring_backoff_initial", self.monitoring_backoff_initial, "monitoring_backoff_max", self)
        if self.retire_policy not in RETIRE_POLICIES:
            raise ConfigError(
                f"SPOT_GUARD_RETIRE_POLICY={self.retire_policy!r}: expected one of {', '.join(RETIRE_POLICIES)}",
                "SPOT_GUARD_RETIRE_POLICY",
            )
        if self.partner_tag.strip() == "":
            raise ConfigError("SPOT_GUARD_PARTNER_TAG is empty: name the tag key, e.g. spotguard.io/on-demand-partner")
        if self.queue_url and not _QUEUE_URL.fullmatch(self.queue_url):
            raise ConfigError(
                f"SPOT_GUARD_QUEUE_URL={self.queue_url!r}: expected an SQS queue URL such as "
                "https://sqs.us-east-1.amazonaws.com/123456789012/spotguard-events (aws sqs get-queue-url prints it)",
                "SPOT_GUARD_QUEUE_URL",
            )
        for name in ("namespace", "lease_name", "lease_namespace"):
            value = getattr(self, name)
            if not _DNS_NAME.fullmatch(value):
                raise ConfigError(
                    f"{env_var(name)}={value!r}: expected a Kubernetes object name (lower-case letters, digits, "
                    "'-' and '.', at most 253 characters)",
                    env_var(name),
                )
        return self


#: Each number's range: (lowest, highest, whether the lowest itself is allowed). Durations are in seconds.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "scale_timeout": (0.0, 3600.0, False),
    "capacity_check_timeout": (0.0, 3600.0, False),
    "capacity_poll_interval": (0.0, 600.0, False),
    "batch_window": (0.0, 60.0, True),
    "batch_max_delay": (0.0, 60.0, False),
    "minimum_wait_duration": (0.0, MAX_DURATION, True),
    "keep_grace_period": (0.0, MAX_DURATION, True),
    "drain_timeout": (0.0, 86400.0, False),
    "max_drain_attempts": (1, 1000, True),
    "stability_window": (0.0, MAX_DURATION, True),
    "utilisation_buffer": (0.0, 1.0, False),
    "completed_ttl": (0.0, MAX_DURATION, False),
    "monitoring_backoff_initial": (0.0, MAX_DURATION, False),
    "monitoring_backoff_max": (0.0, MAX_DURATION, False),
    "safety_retry_interval": (0.0, 86400.0, False),
    "lifecycle_poll_interval": (0.0, 3600.0, False),
    "scale_down_takeover": (0.0, MAX_DURATION, True),
    "lease_duration": (1.0, 3600.0, True),
    "renew_deadline": (0.0, 3600.0, False),
    "retry_period": (0.0, 3600.0, False),
    "fence_margin": (0.0, 3600.0, True),
    "aws_connect_timeout": (0.0, 60.0, False),
    "aws_read_timeout": (0.0, 600.0, False),
    "metrics_port": (0, 65535, True),
}
#: An SQS queue URL: scheme, host, the 12-digit account and the queue's name (a FIFO queue's ends in .fifo).
_QUEUE_URL = re.compile(r"https?://[A-Za-z0-9.:-]+/[0-9]{12}/[A-Za-z0-9_-]{1,75}(\.fifo)?", re.ASCII)
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", re.ASCII)


def _check_value(field: str, value: object) -> None:
    """One value on its own: the right type, finite, in its range."""
    name = env_var(field)
    expected_type = _ENV[field][1]
    if expected_type in {"duration", "float"}:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name}={value!r}: expected a finite number", name)
    elif expected_type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}={value!r}: expected a whole number", name)
    elif expected_type == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r}: expected true or false", name)
    elif not isinstance(value, str):
        raise ConfigError(f"{name}={value!r}: expected text", name)
    if field not in _RANGES:
        return
    assert isinstance(value, (int, float))  # checked above for every field with a range
    low, high, low_allowed = _RANGES[field]
    if (value < low or (value == low and not low_allowed)) or value > high:
        unit = " s" if expected_type == "duration" else ""
        lowest = f"at least {low:g}{unit}" if low_allowed else f"more than {low:g}{unit}"
        raise ConfigError(f"{name}={value!r}: must be {lowest} and at most {high:g}{unit}", name)


def _not_longer(field: str, value: float, limit_field: str, settings: Settings) -> None:
    limit = getattr(settings, limit_field)
    if value > limit:
        raise ConfigError(
            f"{env_var(field)}={format_duration(value)} is longer than "
            f"{env_var(limit_field)}={format_duration(limit)}: it must not be",
            env_var(field),
        )


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
    "aws_connect_timeout": ("SPOT_GUARD_AWS_CONNECT_TIMEOUT", "duration"),
    "aws_read_timeout": ("SPOT_GUARD_AWS_READ_TIMEOUT", "duration"),
    "queue_url": ("SPOT_GUARD_QUEUE_URL", "str"),
    "metrics_host": ("SPOT_GUARD_METRICS_HOST", "str"),
    "metrics_port": ("SPOT_GUARD_METRICS_PORT", "int"),
    "log_level": ("LOG_LEVEL", "str"),
    "dry_run": ("SPOT_GUARD_DRY_RUN", "bool"),
}


_INTEGER = re.compile(r"[0-9]{1,9}", re.ASCII)
_DECIMAL = re.compile(_NUMBER, re.ASCII)


def _parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={text!r}: expected true or false", name)


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
            if not _INTEGER.fullmatch(raw.strip()):
                raise ConfigError(f"{var}={raw!r}: expected a whole number", var)
            values[field] = int(raw)
        elif kind == "float":
            if not _DECIMAL.fullmatch(raw.strip()):
                raise ConfigError(f"{var}={raw!r}: expected a number such as 0.75", var)
            values[field] = float(raw)
        else:
            values[field] = raw.strip()
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values).validate()  # type: ignore[arg-type]


def env_var(field: str) -> str:
    """The environment variable behind a settings field (for messages and docs)."""
    return _ENV[field][0]
