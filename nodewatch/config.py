"""nodewatch's settings: command-line flags, each with an environment variable as its default, checked once."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from nodewatch.imds import MAX_TOKEN_TTL
from nodewatch.kube_connection import DEFAULT_SERVICE_ACCOUNT_DIR
from nodewatch.logs import LEVELS, parse_level

DEFAULT_IMDS_URL = "http://169.254.169.254"
DEFAULT_LISTEN = "0.0.0.0:9732"


@dataclasses.dataclass(frozen=True)
class Settings:
    node_name: str
    imds_url: str = DEFAULT_IMDS_URL
    poll_interval: float = 2.0
    imds_timeout: float = 2.0
    imds_attempts: int = 3
    imds_token_ttl: int = MAX_TOKEN_TTL
    imds_v1_fallback: bool = False
    kubeconfig: str | None = None
    service_account_dir: str = DEFAULT_SERVICE_ACCOUNT_DIR
    listen_host: str = "0.0.0.0"
    listen_port: int = 9732
    max_backoff: float = 10.0
    unready_after: float = 30.0
    api_timeout: float = 5.0
    log_level: int = LEVELS["info"]


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{text!r} is not true or false")


def _seconds(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number of seconds")
    return value


def _listen(text: str) -> tuple[str, int]:
    host, separator, port = text.strip().rpartition(":")
    if not separator or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example 0.0.0.0:9732 or [::]:9732)")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclasses.dataclass(frozen=True)
class _Option:
    flag: str
    env: str
    convert: Callable[[str], Any]
    default: str | None
    help: str


_OPTIONS = (
    _Option("--node-name", "NODE_NAME", str, None, "this node's name (downward API spec.nodeName); required"),
    _Option("--imds-url", "NODEWATCH_IMDS_URL", str, DEFAULT_IMDS_URL, "IMDS base URL"),
    _Option("--poll-interval", "NODEWATCH_POLL_INTERVAL", _seconds, "2", "seconds between IMDS polls"),
    _Option("--imds-timeout", "NODEWATCH_IMDS_TIMEOUT", _seconds, "2", "timeout of one IMDS request, in seconds"),
    _Option("--imds-attempts", "NODEWATCH_IMDS_ATTEMPTS", int, "3", "tries per IMDS read (jittered backoff between)"),
    _Option("--imds-token-ttl", "NODEWATCH_IMDS_TOKEN_TTL", int, str(MAX_TOKEN_TTL), "IMDSv2 token TTL, seconds"),
    _Option("--kubeconfig", "NODEWATCH_KUBECONFIG", str, None, "kubeconfig file to use outside a cluster"),
    _Option(
        "--service-account-dir",
        "NODEWATCH_SERVICE_ACCOUNT_DIR",
        str,
        DEFAULT_SERVICE_ACCOUNT_DIR,
        "directory with the in-cluster token and ca.crt",
    ),
    _Option("--listen", "NODEWATCH_LISTEN", _listen, DEFAULT_LISTEN, "HOST:PORT for /healthz, /readyz, /metrics"),
    _Option("--max-backoff", "NODEWATCH_MAX_BACKOFF", _seconds, "10", "longest wait between polls while failing"),
    _Option("--unready-after", "NODEWATCH_UNREADY_AFTER", _seconds, "30", "IMDS outage (s) before /readyz fails"),
    _Option("--api-timeout", "NODEWATCH_API_TIMEOUT", _seconds, "5", "timeout of one API server request, in seconds"),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spotguard-nodewatch",
        description="Spot Guard node agent: records IMDS rebalance and interruption notices on its Node.",
        epilog="Each flag defaults to the environment variable shown; LOG_LEVEL (debug, info, warning, error) "
        "sets the log level.",
    )
    for option in _OPTIONS:
        default = "" if option.default is None else f"; default {option.default}"
        parser.add_argument(option.flag, help=f"{option.help} (env {option.env}{default})")
    parser.add_argument(
        "--imds-v1-fallback",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read IMDS without a token when it has no IMDSv2 (env NODEWATCH_IMDS_V1_FALLBACK; default off)",
    )
    return parser


def parse_settings(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``argv`` and ``environ``; exits with status 2 and one line naming the flag or variable when a
    value is wrong (argparse's usage message when a flag itself is unknown)."""
    env = os.environ if environ is None else environ
    parser = _parser()
    args = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        name = option.flag[2:].replace("-", "_")
        given = getattr(args, name)
        source, text = (option.flag, given) if given is not None else (option.env, env.get(option.env))
        if text is None or (source == option.env and not text.strip()):
            source, text = "default", option.default
        if text is None:
            values[name] = None
            continue
        try:
            values[name] = option.convert(text)
        except ValueError as error:
            _fail(parser, f"{source}={text!r} is invalid: {error}")
    fallback = args.imds_v1_fallback
    if fallback is None:
        try:
            fallback = _boolean(env.get("NODEWATCH_IMDS_V1_FALLBACK", ""))
        except ValueError as error:
            _fail(parser, f"NODEWATCH_IMDS_V1_FALLBACK is invalid: {error}")
    try:
        log_level = parse_level(env.get("LOG_LEVEL", "info") or "info")
    except ValueError as error:
        _fail(parser, str(error))
    node_name = (values.pop("node_name") or "").strip()
    if not node_name:
        _fail(parser, "the node name is missing: pass --node-name or set NODE_NAME (downward API spec.nodeName)")
    listen_host, listen_port = values.pop("listen")
    settings = Settings(
        node_name=node_name,
        imds_v1_fallback=fallback,
        listen_host=listen_host,
        listen_port=listen_port,
        log_level=log_level,
        **values,
    )
    problem = _problem(settings)
    if problem:
        _fail(parser, problem)
    return settings


def _fail(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """Exit with status 2 and one line naming the flag or variable (a bad value needs no usage text)."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def _problem(settings: Settings) -> str | None:
    checks = (
        (
            0.1 <= settings.poll_interval <= 60,
            f"--poll-interval (NODEWATCH_POLL_INTERVAL) {settings.poll_interval:g} must be 0.1 to 60 s (a spot "
            "interruption notice comes two minutes ahead)",
        ),
        (
            0 < settings.imds_timeout <= 30,
            f"--imds-timeout (NODEWATCH_IMDS_TIMEOUT) {settings.imds_timeout:g} must be above 0 and at most 30 s",
        ),
        (
            1 <= settings.imds_attempts <= 10,
            f"--imds-attempts (NODEWATCH_IMDS_ATTEMPTS) {settings.imds_attempts} must be 1 to 10",
        ),
        (
            1 <= settings.imds_token_ttl <= MAX_TOKEN_TTL,
            f"--imds-token-ttl (NODEWATCH_IMDS_TOKEN_TTL) {settings.imds_token_ttl} must be 1 to {MAX_TOKEN_TTL} "
            "seconds",
        ),
        (
            settings.poll_interval <= settings.max_backoff <= 3600,
            f"--max-backoff (NODEWATCH_MAX_BACKOFF) {settings.max_backoff:g} must be at least --poll-interval "
            f"(NODEWATCH_POLL_INTERVAL) {settings.poll_interval:g} and at most 3600 s",
        ),
        (
            settings.poll_interval <= settings.unready_after <= 86400,
            f"--unready-after (NODEWATCH_UNREADY_AFTER) {settings.unready_after:g} must be at least --poll-interval "
            f"(NODEWATCH_POLL_INTERVAL) {settings.poll_interval:g} and at most 86400 s",
        ),
        (
            0 < settings.api_timeout <= 60,
            f"--api-timeout (NODEWATCH_API_TIMEOUT) {settings.api_timeout:g} must be above 0 and at most 60 s",
        ),
        (
            settings.imds_url.startswith("http://"),
            f"--imds-url (NODEWATCH_IMDS_URL) {settings.imds_url!r} must start with http:// (IMDS speaks plain HTTP)",
        ),
    )
    for ok, message in checks:
        if not ok:
            return message
    return None
