"""nodewatch's annotation contract and settings take any input: a value, or their typed error naming the key or
the variable, never another exception (Hypothesis)."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodewatch import annotations as contract
from nodewatch.config import parse_settings

FUZZ = settings(max_examples=300, deadline=None)
TIMES = st.sampled_from(
    [
        "2025-01-15T10:00:00Z",
        "2025-01-15T10:00:00+01:00",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2025-01-15",
        "2025-01-15T10:00:00",
        "",
        "Z",
    ]
)
VALUES = TIMES | st.text(max_size=40) | st.sampled_from(["terminate", "stop", "hibernate", "i-0abc", "i-", "x"])


@FUZZ
@given(st.dictionaries(st.sampled_from(contract.NODEWATCH_KEYS) | st.text(max_size=20), VALUES, max_size=9))
def test_any_annotations_are_notices_or_a_malformed_annotation_naming_key_and_node(annotations: dict[str, str]) -> None:
    try:
        contract.parse(annotations, node="ip-10-0-0-1")
    except contract.MalformedAnnotationError as exc:
        assert exc.key in contract.NODEWATCH_KEYS
        assert exc.node == "ip-10-0-0-1" and str(exc).startswith("node ip-10-0-0-1: annotation spotguard.io/")


@FUZZ
@given(st.dictionaries(st.sampled_from(contract.NODEWATCH_KEYS), st.integers() | st.none() | st.booleans(), min_size=1))
def test_a_value_that_is_not_text_is_a_malformed_annotation(annotations: dict[str, object]) -> None:
    present = {k: v for k, v in annotations.items() if v is not None}
    try:
        contract.parse(present)  # type: ignore[arg-type]
    except contract.MalformedAnnotationError as exc:
        assert exc.key in present
    else:
        assert not present


def test_a_time_before_the_first_utc_instant_is_malformed_not_an_overflow() -> None:
    with pytest.raises(contract.MalformedAnnotationError, match="within years 1 to 9999 UTC"):
        contract.parse({contract.REBALANCE_NOTICE_TIME: "0001-01-01T00:00:00+01:00"})


SETTINGS = [
    "NODEWATCH_POLL_INTERVAL",
    "NODEWATCH_IMDS_TIMEOUT",
    "NODEWATCH_IMDS_ATTEMPTS",
    "NODEWATCH_IMDS_TOKEN_TTL",
    "NODEWATCH_MAX_BACKOFF",
    "NODEWATCH_UNREADY_AFTER",
    "NODEWATCH_API_TIMEOUT",
    "NODEWATCH_LISTEN",
    "NODEWATCH_IMDS_V1_FALLBACK",
    "LOG_LEVEL",
]
NUMBERISH = st.sampled_from(["nan", "inf", "1e400", "1e300", "-1", "0", "0.05", "2", "60", "61", "3601", "x", ""])


@FUZZ
@given(st.dictionaries(st.sampled_from(SETTINGS), NUMBERISH | st.text(max_size=12), max_size=4))
def test_any_nodewatch_environment_gives_settings_or_exits_2_naming_the_variable(environ: dict[str, str]) -> None:
    error = io.StringIO()
    try:
        with contextlib.redirect_stderr(error):
            found = parse_settings([], {"NODE_NAME": "n", **environ})
    except SystemExit as exit:
        assert exit.code == 2
        assert any(name in error.getvalue() for name in environ), error.getvalue()
        return
    assert 0.1 <= found.poll_interval <= 60
    assert found.poll_interval <= found.max_backoff <= 3600
    assert 0 < found.api_timeout <= 60
