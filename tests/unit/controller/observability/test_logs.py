"""Controller log lines: JSON with the objects they are about, text on a terminal, the level from LOG_LEVEL."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from controller.config import ConfigError
from controller.observability.logs import about, log_event, setup_logging
from controller.observability.tracing import Tracing

log = logging.getLogger("controller.replacement")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_name_the_objects_they_are_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    stream = io.StringIO()
    setup_logging(stream=stream)

    log_event(log, logging.INFO, "scaled spot-a to 4", asg="spot-a", node="n1", target=4, sgfe=None)
    log.debug("not shown at the default level")

    (entry,) = lines(stream)
    assert list(entry)[:6] == ["time", "level", "logger", "msg", "node", "asg"]
    assert entry["level"] == "info"
    assert entry["logger"] == "controller.replacement"
    assert entry["msg"] == "scaled spot-a to 4"
    assert entry["target"] == 4
    assert "sgfe" not in entry  # None values are left out
    assert entry["time"].endswith("Z")


def test_a_bound_logger_adds_its_objects_to_every_line() -> None:
    stream = io.StringIO()
    setup_logging("debug", stream)
    node_log = about(log, node="n1", instance="i-0abc")

    node_log.warning("drain of node n1 timed out after 90 s; retrying", extra={"attempt": 2})
    node_log.bind(sgfe="fallback-n1").debug("SGFE created")

    first, second = lines(stream)
    assert (first["node"], first["instance"], first["attempt"]) == ("n1", "i-0abc", 2)
    assert first["level"] == "warning"
    assert (second["node"], second["sgfe"], second["level"]) == ("n1", "fallback-n1", "debug")


def test_a_field_named_like_a_record_attribute_is_renamed_not_fatal() -> None:
    stream = io.StringIO()
    setup_logging("info", stream)
    log_event(log, logging.INFO, "created the SGFE", name="fallback-n1", msg="clash")
    (entry,) = lines(stream)
    assert entry["msg"] == "created the SGFE"
    assert (entry["name_"], entry["msg_"]) == ("fallback-n1", "clash")


def test_exceptions_are_kept_in_the_line() -> None:
    stream = io.StringIO()
    setup_logging("info", stream)
    try:
        raise ValueError("bad annotation")
    except ValueError:
        log_event(log, logging.ERROR, "could not read node n1's record", exc_info=True, node="n1")
    (entry,) = lines(stream)
    assert "ValueError: bad annotation" in entry["exception"]


def test_a_terminal_gets_readable_text() -> None:
    stream = Terminal()
    setup_logging("info", stream)
    log_event(log, logging.INFO, "replacement of node n1 is Ready", node="n1", asg="spot-a")
    line = stream.getvalue().strip()
    assert "INFO" in line
    assert "controller.replacement: replacement of node n1 is Ready" in line
    assert line.endswith("[node=n1 asg=spot-a]")


def test_the_level_comes_from_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    stream = io.StringIO()
    assert setup_logging(stream=stream) == logging.WARNING
    log.info("hidden")
    log.warning("shown")
    assert [e["msg"] for e in lines(stream)] == ["shown"]


def test_a_bad_log_level_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    with pytest.raises(ConfigError, match=r"LOG_LEVEL='verbose' is not a log level: use one of debug, info"):
        setup_logging(stream=io.StringIO())


def test_lines_written_inside_a_span_carry_its_trace_ids() -> None:
    stream = io.StringIO()
    setup_logging("info", stream)
    tracing = Tracing(TracerProvider())
    with tracing.span("fallback", node="n1") as step:
        log.info("falling back to od-a")
        context = step.span.get_span_context()
    log.info("outside any span")

    inside, outside = lines(stream)
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside
