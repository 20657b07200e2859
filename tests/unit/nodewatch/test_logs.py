"""Log lines: one JSON object per line with time, level, msg, node and error details; text on a terminal."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from nodewatch.clock import ManualClock
from nodewatch.logs import ErrorReporter, configure_logging


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


@pytest.mark.usefixtures("restore_root_logger")
def test_json_lines_carry_time_level_message_node_and_details() -> None:
    stream = io.StringIO()
    configure_logging("ip-10-0-0-1", logging.INFO, stream)
    reporter = ErrorReporter(logging.getLogger("nodewatch.agent"), "IMDS polling", ManualClock())
    reporter.failed("timeout:/x:", "IMDS did not answer GET /x within 2 s", imds_path="/x")
    logging.getLogger("nodewatch.agent").debug("not shown at info")

    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "warning"
    assert entry["msg"] == "IMDS did not answer GET /x within 2 s"
    assert entry["node"] == "ip-10-0-0-1"
    assert entry["error_kind"] == "timeout"
    assert entry["imds_path"] == "/x"
    assert entry["failures"] == 1
    assert entry["time"].endswith("Z")


@pytest.mark.usefixtures("restore_root_logger")
def test_a_terminal_gets_readable_text() -> None:
    stream = _Terminal()
    configure_logging("n1", logging.INFO, stream)
    logging.getLogger("nodewatch").info("patched the annotations of node n1", extra={"changes": {"k": "v"}})
    line = stream.getvalue().strip()
    assert "INFO" in line
    assert "patched the annotations of node n1" in line
    assert "changes={'k': 'v'}" in line
    assert not line.startswith("{")


def test_a_failure_that_persists_is_reminded_about_not_repeated(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    reporter = ErrorReporter(logging.getLogger("nodewatch.test"), "IMDS polling", clock, remind_every=600)
    for _ in range(400):  # 800 s of failing every 2 s
        reporter.failed("server_error:/x:503", "IMDS answered HTTP 503")
        clock.advance(2)
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "IMDS answered HTTP 503",
        "IMDS polling still failing after 301 attempts over 600 s; last error: IMDS answered HTTP 503",
    ]
