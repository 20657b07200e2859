"""Log set-up (one JSON object per line, or readable text on a terminal) and once-per-error reporting."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, TextIO

from nodewatch.clock import Clock

_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "node"}

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, msg, node, then any ``extra`` fields of the call."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
            "node": getattr(record, "node", None),
        }
        entry.update(_extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Readable single lines for a developer's terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={value}" for key, value in _extra_fields(record).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.getMessage()}"
        if fields:
            line += f"  [{fields}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _NodeField(logging.Filter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


def parse_level(name: str) -> int:
    """Map a LOG_LEVEL value (debug, info, warning, error; any case) to a logging level."""
    try:
        return LEVELS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"LOG_LEVEL={name!r} is not a log level: use one of {', '.join(LEVELS)}") from None


def configure_logging(node: str, level: int, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr by default): JSON lines, or text when it is a TTY."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter() if out.isatty() else JSONFormatter())
    handler.addFilter(_NodeField(node))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


class ErrorReporter:
    """Logs a repeatedly failing operation once per distinct error instead of once per attempt.

    ``failed`` logs a warning the first time an error key is seen in the current run of failures, and a
    reminder if the operation is still failing after ``remind_every`` seconds; ``succeeded`` logs one
    recovery line and forgets the errors, so a later failure is logged again.
    """

    def __init__(
        self,
        logger: logging.Logger,
        operation: str,
        clock: Clock,
        remind_every: float = 600.0,
        max_distinct: int = 32,
    ) -> None:
        self._logger = logger
        self._operation = operation
        self._clock = clock
        self._remind_every = remind_every
        self._max_distinct = max_distinct
        self._seen: set[str] = set()
        self._failures = 0
        self._failing_since: float | None = None
        self._last_logged = 0.0

    @property
    def failures(self) -> int:
        """Consecutive failures since the last success."""
        return self._failures

    def failed(self, key: str, message: str, *, exc_info: bool = False, **fields: Any) -> None:
        now = self._clock.monotonic()
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
        extra: dict[str, Any] = {"operation": self._operation, "error_kind": key.split(":", 1)[0]}
        extra.update(fields)
        extra["failures"] = self._failures
        if key not in self._seen:
            if len(self._seen) < self._max_distinct:
                self._seen.add(key)
            self._logger.warning(message, extra=extra, exc_info=exc_info)
            self._last_logged = now
        elif now - self._last_logged >= self._remind_every:
            self._logger.warning(
                f"{self._operation} still failing after {self._failures} attempts over "
                f"{now - self._failing_since:.0f} s; last error: {message}",
                extra=extra,
            )
            self._last_logged = now

    def succeeded(self) -> None:
        if self._failures:
            assert self._failing_since is not None
            elapsed = self._clock.monotonic() - self._failing_since
            self._logger.info(
                f"{self._operation} works again after {self._failures} failed attempts over {elapsed:.0f} s",
                extra={"operation": self._operation, "failures": self._failures},
            )
        self._seen.clear()
        self._failures = 0
        self._failing_since = None
