"""Every parser of outside input yields a value or its typed error naming the object and the field, never another
exception (Hypothesis): settings, durations, the replacement record, the lifecycle record, SpotGuardFallbackEvents.

The typed errors are what the controllers contain to one object; any other exception would escape a pass and stop
the work on every object after it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller import config
from controller.config import MAX_DURATION, ConfigError, from_env, parse_duration
from controller.model import json_fields
from controller.model.progress import ANNOTATION as LIFECYCLE
from controller.model.progress import LifecycleProgress, MalformedRecordError
from controller.model.record import ANNOTATION as RECORD
from controller.model.record import ReplacementRecord
from controller.model.sgfe import FallbackEvent, MalformedEventError
from nodewatch.annotations import MalformedAnnotationError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- JSON values of every kind, and texts that look almost like numbers and durations -------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
NUMBERISH = st.sampled_from(
    ["nan", "NaN", "inf", "-inf", "Infinity", "1e400", "1e3", "-1", "0", "0.0", ".5", "5.", "1_000", "٣", "  7  ", ""]
)
DURATIONISH = NUMBERISH | st.sampled_from(
    ["10m", "10m0s", "1h30m", "500ms", "1.5µs", "100ns", "9000h", "8784h", "8784h1s", "1h1h", "m", "10x", "1d"]
)
TEXTS = st.text(max_size=40) | DURATIONISH | st.from_regex(r"[0-9.]{0,8}(ns|us|ms|s|m|h){0,3}", fullmatch=True)


# -- durations and settings ----------------------------------------------------------------------------------


@FUZZ
@given(TEXTS)
def test_a_duration_is_a_finite_number_of_seconds_up_to_a_year_or_a_config_error(text: str) -> None:
    try:
        seconds = parse_duration("SPOT_GUARD_X", text)
    except ConfigError as exc:
        assert exc.variable == "SPOT_GUARD_X"
        assert str(exc).startswith("SPOT_GUARD_X=")
        return
    assert math.isfinite(seconds) and 0 <= seconds <= MAX_DURATION


@pytest.mark.parametrize("text", ["nan", "inf", "1e400", "-inf", "infinity", "1e3", "8785h", "-5s", "10d"])
def test_durations_that_are_not_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="SPOT_GUARD_BATCH_WINDOW="):
        parse_duration("SPOT_GUARD_BATCH_WINDOW", text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("180", 180.0),
        ("0.5", 0.5),
        ("10m", 600.0),
        ("10m0s", 600.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1m30.5s", 90.5),
    ],
)
def test_durations_as_the_design_and_go_write_them_are_read(text: str, seconds: float) -> None:
    assert parse_duration("d", text) == pytest.approx(seconds)


ENV_VARS = sorted(var for var, _ in config._ENV.values())


@FUZZ
@given(st.dictionaries(st.sampled_from(ENV_VARS), TEXTS, max_size=6))
def test_settings_from_any_environment_are_valid_or_one_error_naming_a_variable(env: dict[str, str]) -> None:
    try:
        found = from_env(env)
    except ConfigError as exc:
        assert exc.variable in ENV_VARS, f"{exc!r} names no setting"
        assert exc.variable in str(exc)
        return
    for name in ("capacity_check_timeout", "batch_window", "batch_max_delay", "utilisation_buffer", "drain_timeout"):
        assert math.isfinite(getattr(found, name))
    assert found.capacity_poll_interval <= found.capacity_check_timeout
    assert found.batch_window <= found.batch_max_delay


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SPOT_GUARD_BATCH_WINDOW": "nan"}, "SPOT_GUARD_BATCH_WINDOW"),
        ({"SPOT_GUARD_CAPACITY_CHECK_TIMEOUT": "inf"}, "SPOT_GUARD_CAPACITY_CHECK_TIMEOUT"),
        ({"SPOT_GUARD_CAPACITY_CHECK_TIMEOUT": "2h"}, "SPOT_GUARD_CAPACITY_CHECK_TIMEOUT"),
        ({"SPOT_GUARD_UTILISATION_BUFFER": "nan"}, "SPOT_GUARD_UTILISATION_BUFFER"),
        ({"SPOT_GUARD_UTILISATION_BUFFER": "1.5"}, "SPOT_GUARD_UTILISATION_BUFFER"),
        ({"SPOT_GUARD_MAX_DRAIN_ATTEMPTS": "0"}, "SPOT_GUARD_MAX_DRAIN_ATTEMPTS"),
        ({"SPOT_GUARD_METRICS_PORT": "70000"}, "SPOT_GUARD_METRICS_PORT"),
        ({"SPOT_GUARD_CAPACITY_POLL_INTERVAL": "5m"}, "SPOT_GUARD_CAPACITY_POLL_INTERVAL"),
        ({"SPOT_GUARD_BATCH_MAX_DELAY": "50ms"}, "SPOT_GUARD_BATCH_MAX_DELAY"),
        ({"SPOT_GUARD_NAMESPACE": "Kube System"}, "SPOT_GUARD_NAMESPACE"),
        ({"SPOT_GUARD_DELETE_EMPTYDIR_DATA": "maybe"}, "SPOT_GUARD_DELETE_EMPTYDIR_DATA"),
    ],
)
def test_a_bad_setting_is_one_error_naming_its_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_env(env)
    assert raised.value.variable == variable
    assert variable in str(raised.value)


def test_values_given_in_code_are_checked_as_those_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="SPOT_GUARD_BATCH_WINDOW=nan: expected a finite number"):
        config.Settings(batch_window=float("nan")).validate()
    with pytest.raises(ConfigError, match="SPOT_GUARD_MAX_DRAIN_ATTEMPTS=True: expected a whole number"):
        config.Settings(max_drain_attempts=True).validate()


# -- the replacement record (annotation spotguard.io/replacement on a Node) -------------------------------------

GOOD_RECORD = {
    "phase": "SpotScaledUp",
    "trigger": "rebalance",
    "instanceId": "i-0123456789abcdef0",
    "spotAsg": "spot-a",
    "onDemandAsg": "od-a",
    "updatedAt": "2025-01-15T10:00:00Z",
    "spotTarget": 4,
    "spotKnown": ["i-1", "i-2"],
    "deadlineAt": "2025-01-15T10:03:00.000Z",
    "members": [["n2", "i-2", "rebalance", ""]],
    "version": 1,
}
RECORD_KEYS = sorted({json_fields.camel(name) for name in ReplacementRecord.__dataclass_fields__})


def _parse_record(text: str) -> ReplacementRecord | MalformedAnnotationError:
    try:
        return ReplacementRecord.from_json(text, node="n1")
    except MalformedAnnotationError as exc:
        assert exc.key == RECORD and exc.node == "n1" and exc.kind == "Node"
        assert str(exc).startswith("node n1: ")
        return exc


@FUZZ
@given(st.text(max_size=200))
def test_any_text_as_a_record_is_a_record_or_a_malformed_annotation(text: str) -> None:
    _parse_record(text)


@FUZZ
@given(st.sampled_from(RECORD_KEYS), JSON_VALUES)
def test_a_record_with_any_value_in_one_field_is_a_record_or_an_error_naming_that_field(key: str, value: Any) -> None:
    data = {**GOOD_RECORD, key: value}
    parsed = _parse_record(json.dumps(data))
    if isinstance(parsed, MalformedAnnotationError):
        assert parsed.field.split(".")[0] == key, f"{parsed} names {parsed.field!r}, not {key!r}"
        assert repr(key) in str(parsed)


@FUZZ
@given(st.dictionaries(st.sampled_from(RECORD_KEYS) | st.text(max_size=8), JSON_VALUES, max_size=10))
def test_a_record_of_any_shape_is_a_record_or_a_malformed_annotation(data: dict[str, Any]) -> None:
    _parse_record(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "field", "complaint"),
    [
        ({"version": "2"}, "version", "expected a whole number"),
        ({"version": True}, "version", "expected a whole number"),
        ({"phase": {"name": "SpotReady"}}, "phase", "expected text"),
        ({"phase": "Exploded"}, "phase", "expected one of"),
        ({"deadlineAt": "tomorrow"}, "deadlineAt", "expected an RFC 3339 time"),
        ({"deadlineAt": "0001-01-01T00:00:00+01:00"}, "deadlineAt", "within years 1 to 9999"),
        ({"spotTarget": 4.5}, "spotTarget", "expected a whole number"),
        ({"spotKnown": "i-1"}, "spotKnown", "a list of text"),
        ({"members": [["n2", "i-2"]]}, "members", "batch members"),
        ({"trigger": "boredom"}, "trigger", "rebalance, interruption"),
    ],
)
def test_the_issues_bad_records_name_their_field(change: dict[str, Any], field: str, complaint: str) -> None:
    parsed = _parse_record(json.dumps({**GOOD_RECORD, **change}))
    assert isinstance(parsed, MalformedAnnotationError)
    assert parsed.field == field
    assert complaint in str(parsed)


def test_a_good_record_reads_back_as_written() -> None:
    record = ReplacementRecord.from_json(json.dumps(GOOD_RECORD))
    assert ReplacementRecord.from_json(record.to_json()) == record


def test_every_record_field_has_a_json_reader() -> None:
    """A field the lead adds with a type no reader knows fails here, not in a reconcile pass."""
    assert json_fields.check_declared(ReplacementRecord, custom=frozenset({"members"})) == []
    assert json_fields.check_declared(LifecycleProgress) == []


# -- the lifecycle record (annotation spotguard.io/lifecycle on an SGFE) -----------------------------------------

LIFECYCLE_KEYS = sorted({json_fields.camel(name) for name in LifecycleProgress.__dataclass_fields__})
GOOD_LIFECYCLE = {
    "returnTarget": 3,
    "returnKnown": ["i-1"],
    "returnRequestedAt": "2025-01-15T10:00:00.000Z",
    "returnConfirmed": True,
    "returnAttempts": 1,
    "owner": "controller-a",
}


def _parse_lifecycle(text: str) -> LifecycleProgress | MalformedRecordError:
    try:
        return LifecycleProgress.from_json(text, event="fallback-1")
    except MalformedRecordError as exc:
        assert exc.kind == "SpotGuardFallbackEvent" and exc.name == "fallback-1"
        assert exc.field.startswith(LIFECYCLE)
        return exc


@FUZZ
@given(st.text(max_size=200))
def test_any_text_as_a_lifecycle_record_is_one_or_its_error(text: str) -> None:
    _parse_lifecycle(text)


@FUZZ
@given(st.sampled_from(LIFECYCLE_KEYS), JSON_VALUES)
def test_a_lifecycle_record_with_any_value_in_one_field_names_that_field(key: str, value: Any) -> None:
    parsed = _parse_lifecycle(json.dumps({**GOOD_LIFECYCLE, key: value}))
    if isinstance(parsed, MalformedRecordError):
        assert parsed.field in (f"{LIFECYCLE}.{key}", f"{LIFECYCLE}.version")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"returnAttempts": "2"}, "returnAttempts"),
        ({"returnConfirmed": "yes"}, "returnConfirmed"),
        ({"nextReturnAt": "soon"}, "nextReturnAt"),
        ({"returnKnown": [1, 2]}, "returnKnown"),
        ({"version": 0}, "version"),
    ],
)
def test_bad_lifecycle_records_name_their_field(change: dict[str, Any], field: str) -> None:
    parsed = _parse_lifecycle(json.dumps({**GOOD_LIFECYCLE, **change}))
    assert isinstance(parsed, MalformedRecordError)
    assert parsed.field == f"{LIFECYCLE}.{field}"


# -- SpotGuardFallbackEvents --------------------------------------------------------------------------------------

GOOD_EVENT: dict[str, Any] = {
    "metadata": {"name": "fallback-1", "namespace": "kube-system", "uid": "u", "resourceVersion": "7"},
    "spec": {
        "spotASGName": "spot-a",
        "onDemandASGName": "od-a",
        "onDemandNodeName": "od-node",
        "onDemandInstanceID": "i-0987654321fedcba0",
        "timestamp": "2025-01-15T10:00:45Z",
        "minimumWaitDuration": "10m",
    },
    "status": {"phase": "Pending", "message": "", "spotCapacityRestored": False, "scaleDownInitiated": False},
}
EVENT_PATHS = (
    [("metadata", key) for key in ("name", "namespace", "uid", "resourceVersion", "annotations")]
    + [(part, key) for part in ("spec", "status") for key in GOOD_EVENT[part]]
    + [("spec", None), ("status", None)]
)


def _parse_event(obj: Any) -> FallbackEvent | MalformedEventError:
    try:
        event = FallbackEvent.from_json(obj)
    except MalformedEventError as exc:
        assert exc.kind == "SpotGuardFallbackEvent"
        return exc
    try:
        wait = event.minimum_wait(600.0)
    except MalformedEventError as exc:
        assert exc.field == "spec.minimumWaitDuration" and exc.name == event.name
        return event
    assert math.isfinite(wait) and 0 <= wait <= MAX_DURATION
    return event


@FUZZ
@given(st.sampled_from(EVENT_PATHS), JSON_VALUES)
def test_an_event_with_any_value_anywhere_is_an_event_or_an_error_naming_it_and_the_field(
    path: tuple[str, str | None], value: Any
) -> None:
    obj = json.loads(json.dumps(GOOD_EVENT))
    part, key = path
    if key is None:
        obj[part] = value
    else:
        obj[part][key] = value
    parsed = _parse_event(obj)
    if isinstance(parsed, MalformedEventError):
        assert parsed.field.startswith(part), parsed.field
        if key is not None and parsed.field != part:
            assert parsed.field == f"{part}.{key}" or (part, key) == ("metadata", "name")


@FUZZ
@given(JSON_VALUES)
def test_any_json_as_an_event_is_an_event_or_its_error(value: Any) -> None:
    _parse_event(value)


@FUZZ
@given(DURATIONISH | st.text(max_size=20))
def test_any_minimum_wait_is_seconds_or_an_error_naming_the_event_and_field(text: str) -> None:
    obj = json.loads(json.dumps(GOOD_EVENT))
    obj["spec"]["minimumWaitDuration"] = text
    _parse_event(obj)


@pytest.mark.parametrize("text", ["1e400", "nan", "inf", "9000h"])
def test_the_issues_minimum_waits_are_refused_for_that_event(text: str) -> None:
    obj = json.loads(json.dumps(GOOD_EVENT))
    obj["spec"]["minimumWaitDuration"] = text
    event = FallbackEvent.from_json(obj)
    with pytest.raises(MalformedRecordError, match=r"SpotGuardFallbackEvent fallback-1: spec\.minimumWaitDuration"):
        event.minimum_wait(600.0)


def test_a_wrongly_typed_status_names_the_event_and_field() -> None:
    obj = json.loads(json.dumps(GOOD_EVENT))
    obj["status"]["scaleDownInitiated"] = "true"
    with pytest.raises(MalformedEventError) as raised:
        FallbackEvent.from_json(obj)
    assert (raised.value.name, raised.value.field) == ("fallback-1", "status.scaleDownInitiated")
