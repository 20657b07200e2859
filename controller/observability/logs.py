"""Log set-up for the controller, and helpers that name the objects a log line is about.

Off a terminal every record is one JSON object per line: ``time``, ``level``, ``logger``, ``msg``, then the
objects it is about (``node``, ``instance``, ``asg``, ``sgfe``), any other ``extra`` fields, ``trace_id`` and
``span_id`` when written inside a recording span, and ``exception``. On a terminal the same comes as one
readable line. Times and level names are the ones nodewatch's logs use, so both read alike.

    log = logging.getLogger(__name__)
    log_event(log, logging.INFO, "scaled spot-a to 4 to replace node n1", node="n1", asg="spot-a")
    about(log, node="n1", instance="i-0abc").warning("drain of node n1 timed out after 90 s; retrying")
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

from opentelemetry import trace

from controller.config import ConfigError

#: The objects a line can be about, in the order they are written.
OBJECT_FIELDS = ("node", "instance", "asg", "sgfe")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
DEFAULT_LEVEL = "info"

_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def parse_level(text: str) -> int:
    """A LOG_LEVEL value (debug, info, warning, error, critical; any case) as a logging level."""
    try:
        return LEVELS[text.strip().lower()]
    except KeyError:
        raise ConfigError(f"LOG_LEVEL={text!r} is not a log level: use one of {', '.join(LEVELS)}") from None


def setup_logging(level: str | None = None, stream: TextIO | None = None) -> int:
    """Send every record to ``stream`` (stderr): JSON lines, or text when it is a terminal. Returns the level.

    ``level`` defaults to $LOG_LEVEL, then ``info``; an unknown name raises ConfigError naming LOG_LEVEL.
    Replaces the root logger's handlers, so calling it again reconfigures rather than duplicates.
    """
    text = level if level is not None else (os.environ.get("LOG_LEVEL") or DEFAULT_LEVEL)
    numeric = parse_level(text)
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter() if _is_terminal(out) else JSONFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    return numeric


def log_event(logger: logging.Logger, level: int, msg: str, /, *, exc_info: bool = False, **fields: Any) -> None:
    """Log ``msg`` with ``fields`` (node=, instance=, asg=, sgfe=, or anything else) as structured fields."""
    logger.log(level, msg, exc_info=exc_info, extra=_safe_extra(fields))


class ObjectLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger bound to the objects it talks about; a call's own ``extra`` adds to (and overrides) them."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        bound: Mapping[str, object] = self.extra or {}
        kwargs["extra"] = _safe_extra({**bound, **(kwargs.get("extra") or {})})
        return msg, kwargs

    def bind(self, **fields: Any) -> ObjectLogger:
        """A logger about these objects as well."""
        return ObjectLogger(self.logger, {**(self.extra or {}), **fields})


def about(logger: logging.Logger, **objects: Any) -> ObjectLogger:
    """``logger``, bound to the objects every line it writes is about (``about(log, node="n1")``)."""
    return ObjectLogger(logger, objects)


def _safe_extra(fields: Mapping[str, object]) -> dict[str, object]:
    """``fields`` without Nones, a clashing name (``name``, ``msg``, ...) renamed with a trailing ``_``.

    logging raises KeyError for an ``extra`` key that is a LogRecord attribute; a log line must never take
    the controller down, so such a key is renamed instead.
    """
    return {
        (f"{key}_" if key in _RECORD_ATTRIBUTES else key): value for key, value in fields.items() if value is not None
    }


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-less stream
        return False


def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's structured fields: the objects first, in OBJECT_FIELDS order, then the rest as given."""
    extra = {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}
    ordered = {key: extra.pop(key) for key in OBJECT_FIELDS if key in extra}
    ordered.update(extra)
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        ordered.setdefault("trace_id", format(span.trace_id, "032x"))
        ordered.setdefault("span_id", format(span.span_id, "016x"))
    return ordered


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg, the objects, other fields, trace ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Readable single lines for a developer's terminal."""

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{key}={value}" for key, value in _fields(record).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if fields:
            line += f"  [{fields}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line
