"""IMDSv2 client for the two spot notices, the instance identity and its purchasing option (life cycle).

Every request has a short timeout and a bounded number of tries with jittered backoff. The session token
is requested with a TTL, refreshed shortly before it expires and requested again when IMDS answers 401.
Reading IMDSv1-style (no token) happens only when the caller allows it and the endpoint has no tokens.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import http.client
import json
import logging
import random
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from nodewatch.annotations import INTERRUPTION_ACTIONS
from nodewatch.clock import Clock, SystemClock

TOKEN_PATH = "/latest/api/token"  # noqa: S105 - a URL path, not a secret
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
INSTANCE_ACTION_PATH = "/latest/meta-data/spot/instance-action"
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"
AVAILABILITY_ZONE_PATH = "/latest/meta-data/placement/availability-zone"
INSTANCE_LIFE_CYCLE_PATH = "/latest/meta-data/instance-life-cycle"

TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 - a header name
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"  # noqa: S105 - a header name
MAX_TOKEN_TTL = 21600
MAX_BODY_BYTES = 64 * 1024

_HOP_LIMIT_HINT = (
    "check that the node's IMDS is enabled and, if the pod is not on the host network, "
    "that the instance's metadata hop limit is at least 2"
)

log = logging.getLogger(__name__)


class IMDSErrorKind(enum.StrEnum):
    """Why an IMDS read failed; also the ``kind`` label of the IMDS error metric."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    SERVER_ERROR = "server_error"
    UNAUTHORIZED = "unauthorized"
    MALFORMED = "malformed"
    UNEXPECTED_STATUS = "unexpected_status"
    IMDSV2_UNAVAILABLE = "imdsv2_unavailable"
    TOKEN_REJECTED = "token_rejected"  # noqa: S105 - an error kind


_RETRYABLE = frozenset(
    {IMDSErrorKind.TIMEOUT, IMDSErrorKind.CONNECTION, IMDSErrorKind.SERVER_ERROR, IMDSErrorKind.UNAUTHORIZED}
)


class IMDSError(Exception):
    """An IMDS read failed. ``key`` is stable across repeats of the same failure (for once-only logging)."""

    def __init__(self, kind: IMDSErrorKind, path: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.path = path
        self.key = f"{kind}:{path}:{detail}"

    @property
    def retryable(self) -> bool:
        return self.kind in _RETRYABLE

    @property
    def affects_every_read(self) -> bool:
        """IMDS did not answer at all, or gave no session token: every other read would fail the same way."""
        return self.kind in (IMDSErrorKind.TIMEOUT, IMDSErrorKind.CONNECTION) or self.path == TOKEN_PATH


@dataclasses.dataclass(frozen=True)
class RebalanceRecommendation:
    notice_time: dt.datetime


@dataclasses.dataclass(frozen=True)
class InterruptionNotice:
    action: str
    time: dt.datetime


class IMDSClient:
    """Reads the rebalance recommendation, the spot interruption notice and the instance identity."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 2.0,
        attempts: int = 3,
        token_ttl: int = MAX_TOKEN_TTL,
        allow_v1_fallback: bool = False,
        clock: Clock | None = None,
        sleep: Callable[[float], object] = time.sleep,
        rng: random.Random | None = None,
        retry_base_delay: float = 0.1,
        retry_max_delay: float = 1.0,
    ) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"IMDS URL {base_url!r} must look like http://HOST[:PORT] (IMDS speaks plain HTTP)")
        if not 1 <= token_ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"IMDS token TTL {token_ttl} s is out of range: use 1 to {MAX_TOKEN_TTL} seconds")
        if attempts < 1:
            raise ValueError(f"IMDS attempts must be at least 1, got {attempts}")
        self.base_url = base_url.rstrip("/")
        self._host = parsed.hostname
        self._port = parsed.port or 80
        self._prefix = parsed.path.rstrip("/")
        self._timeout = timeout
        self._attempts = attempts
        self._token_ttl = token_ttl
        self._allow_v1 = allow_v1_fallback
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._retry_base_delay = retry_base_delay
        self._retry_max_delay = retry_max_delay
        self._token: str | None = None
        self._token_expires = 0.0
        self._v1_mode = False

    @property
    def using_v1(self) -> bool:
        """True once the client fell back to token-less IMDSv1 reads."""
        return self._v1_mode

    def _refresh_margin(self, ttl: float) -> float:
        # Renew 60 s before expiry, or at three quarters of a short TTL, so a token never dies mid-poll.
        return min(60.0, ttl / 4)

    # -- the documents -------------------------------------------------------------------------------

    def rebalance_recommendation(self) -> RebalanceRecommendation | None:
        """The current rebalance recommendation, or None while IMDS answers 404."""
        document = self._json_document(REBALANCE_PATH)
        if document is None:
            return None
        return RebalanceRecommendation(notice_time=self._time_field(REBALANCE_PATH, document, "noticeTime"))

    def interruption_notice(self) -> InterruptionNotice | None:
        """The current spot interruption notice, or None while IMDS answers 404."""
        document = self._json_document(INSTANCE_ACTION_PATH)
        if document is None:
            return None
        action = document.get("action")
        if action not in INTERRUPTION_ACTIONS:
            raise self._malformed(INSTANCE_ACTION_PATH, f"action {action!r} is not terminate, stop or hibernate")
        return InterruptionNotice(action=str(action), time=self._time_field(INSTANCE_ACTION_PATH, document, "time"))

    def instance_id(self) -> str:
        value = self._text_document(INSTANCE_ID_PATH)
        if not value.startswith("i-") or any(ch.isspace() for ch in value):
            raise self._malformed(INSTANCE_ID_PATH, f"{value[:40]!r} is not an EC2 instance id")
        return value

    def instance_life_cycle(self) -> str | None:
        """The instance's purchasing option (``spot``, ``on-demand``, ...), or None while IMDS answers 404."""
        status, body = self._get(INSTANCE_LIFE_CYCLE_PATH)
        if status == 404:
            return None
        if status != 200:
            raise self._unexpected_status(INSTANCE_LIFE_CYCLE_PATH, status)
        try:
            value = body.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self._malformed(INSTANCE_LIFE_CYCLE_PATH, f"not UTF-8 text: {body[:40]!r}") from None
        if not value or any(ch.isspace() for ch in value) or len(value) > 40:
            raise self._malformed(INSTANCE_LIFE_CYCLE_PATH, f"{value[:40]!r} is not a purchasing option")
        return value

    def availability_zone(self) -> str:
        value = self._text_document(AVAILABILITY_ZONE_PATH)
        if not value or any(ch.isspace() for ch in value) or len(value) > 63:
            raise self._malformed(AVAILABILITY_ZONE_PATH, f"{value[:40]!r} is not an availability zone name")
        return value

    # -- parsing -------------------------------------------------------------------------------------

    def _malformed(self, path: str, detail: str) -> IMDSError:
        return IMDSError(
            IMDSErrorKind.MALFORMED,
            path,
            f"IMDS returned a {path} document nodewatch cannot read: {detail}",
        )

    def _json_document(self, path: str) -> dict[str, Any] | None:
        status, body = self._get(path)
        if status == 404:
            return None
        if status != 200:
            raise self._unexpected_status(path, status)
        try:
            document = json.loads(body)
        except ValueError:
            raise self._malformed(path, f"not JSON: {body[:80]!r}") from None
        if not isinstance(document, dict):
            raise self._malformed(path, f"expected a JSON object, got {type(document).__name__}")
        return document

    def _text_document(self, path: str) -> str:
        status, body = self._get(path)
        if status != 200:
            raise self._unexpected_status(path, status)
        try:
            return body.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise self._malformed(path, f"not UTF-8 text: {body[:40]!r}") from None

    def _time_field(self, path: str, document: dict[str, Any], field: str) -> dt.datetime:
        value = document.get(field)
        if not isinstance(value, str):
            raise self._malformed(path, f"field {field!r} is missing or not a string")
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise self._malformed(path, f"field {field!r}={value[:40]!r} is not an RFC 3339 time") from None
        if parsed.tzinfo is None:
            raise self._malformed(path, f"field {field!r}={value[:40]!r} has no time zone")
        return parsed.astimezone(dt.UTC)

    def _unexpected_status(self, path: str, status: int) -> IMDSError:
        return IMDSError(
            IMDSErrorKind.UNEXPECTED_STATUS,
            path,
            f"IMDS answered HTTP {status} to GET {self.base_url}{path}; expected 200 or 404",
            detail=str(status),
        )

    # -- transport -----------------------------------------------------------------------------------

    def _retry_delay(self, retry: int) -> float:
        ceiling = min(self._retry_max_delay, self._retry_base_delay * 2.0 ** (retry - 1))
        return ceiling * self._rng.uniform(0.5, 1.0)

    def _get(self, path: str) -> tuple[int, bytes]:
        """GET with bounded retries; returns (status, body) for any answer that is not retryable."""
        last_error: IMDSError | None = None
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(self._retry_delay(attempt))
            try:
                headers = self._auth_headers()
                status, body, _ = self._exchange("GET", path, headers)
            except IMDSError as error:
                if not error.retryable:
                    raise
                last_error = error
                continue
            if status == 401:
                last_error = self._unauthorized(path)
                continue
            if status >= 500:
                last_error = IMDSError(
                    IMDSErrorKind.SERVER_ERROR,
                    path,
                    f"IMDS answered HTTP {status} to GET {self.base_url}{path} ({self._attempts} tries)",
                    detail=str(status),
                )
                continue
            return status, body
        assert last_error is not None
        raise last_error

    def _unauthorized(self, path: str) -> IMDSError:
        if self._v1_mode:
            log.info(
                "IMDS now demands IMDSv2 session tokens (a token-less GET was answered 401); switching back to IMDSv2",
                extra={"imds": self.base_url},
            )
            self._v1_mode = False
        self._token = None  # whatever we sent is no good: ask for a new token on the next try
        return IMDSError(
            IMDSErrorKind.UNAUTHORIZED,
            path,
            f"IMDS answered 401 to GET {self.base_url}{path} and kept rejecting freshly requested session "
            f"tokens ({self._attempts} tries)",
        )

    def _auth_headers(self) -> dict[str, str]:
        if not self._v1_mode and (self._token is None or self._clock.monotonic() >= self._token_expires):
            self._token = self._fetch_token()
        if self._v1_mode or self._token is None:
            return {}
        return {TOKEN_HEADER: self._token}

    def _fetch_token(self) -> str | None:
        """Request a session token; None means the endpoint has no tokens and IMDSv1 reads are allowed."""
        requested_at = self._clock.monotonic()
        status, body, answer_headers = self._exchange("PUT", TOKEN_PATH, {TOKEN_TTL_HEADER: str(self._token_ttl)})
        url = f"{self.base_url}{TOKEN_PATH}"
        if status == 200 and body.strip():
            ttl = float(self._token_ttl)
            # Trust a shorter TTL if IMDS says so; never a longer one than we asked for.
            granted = answer_headers.get(TOKEN_TTL_HEADER.lower(), "")
            if granted.isdigit() and int(granted) > 0:
                ttl = min(ttl, float(granted))
            self._token_expires = requested_at + ttl - self._refresh_margin(ttl)
            return body.decode("ascii", errors="replace").strip()
        if status >= 500 and status != 501:
            raise IMDSError(
                IMDSErrorKind.SERVER_ERROR,
                TOKEN_PATH,
                f"IMDS answered HTTP {status} to PUT {url} (session token request)",
                detail=str(status),
            )
        if status == 400:
            raise IMDSError(
                IMDSErrorKind.TOKEN_REJECTED,
                TOKEN_PATH,
                f"IMDS rejected the session token request PUT {url} with HTTP 400 "
                f"(asked for a TTL of {self._token_ttl} s); check --imds-token-ttl (1 to {MAX_TOKEN_TTL})",
            )
        if status == 200:
            raise self._malformed(TOKEN_PATH, "the session token is empty")
        if self._allow_v1:
            log.warning(
                f"IMDS at {self.base_url} does not issue IMDSv2 session tokens (PUT {TOKEN_PATH} answered "
                f"HTTP {status}); reading it IMDSv1-style without a token, as --imds-v1-fallback allows",
                extra={"imds": self.base_url, "status": status},
            )
            self._v1_mode = True
            return None
        raise IMDSError(
            IMDSErrorKind.IMDSV2_UNAVAILABLE,
            TOKEN_PATH,
            f"IMDS at {self.base_url} does not issue IMDSv2 session tokens (PUT {TOKEN_PATH} answered "
            f"HTTP {status}); point --imds-url at an IMDS that supports IMDSv2, or start nodewatch "
            "with --imds-v1-fallback to read it without a token",
            detail=str(status),
        )

    def _exchange(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        """One HTTP request: (status, body, lower-cased response headers); IMDSError if there is no answer."""
        url = f"{self.base_url}{path}"
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        try:
            connection.request(method, self._prefix + path, headers=headers)
            response = connection.getresponse()
            body = response.read(MAX_BODY_BYTES)
            return response.status, body, {key.lower(): value for key, value in response.getheaders()}
        except TimeoutError:
            raise IMDSError(
                IMDSErrorKind.TIMEOUT,
                path,
                f"IMDS did not answer {method} {url} within {self._timeout:g} s; {_HOP_LIMIT_HINT}",
            ) from None
        except (OSError, http.client.HTTPException) as error:
            raise IMDSError(
                IMDSErrorKind.CONNECTION,
                path,
                f"cannot reach IMDS for {method} {url}: {error or type(error).__name__}; {_HOP_LIMIT_HINT}",
                detail=type(error).__name__,
            ) from None
        finally:
            connection.close()
