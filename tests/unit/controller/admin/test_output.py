"""Rendering: kubectl's ages, aligned tables, key/value blocks, JSON and YAML."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import yaml

from controller.admin.output import age, emit, human_duration, key_values, parse_timestamp, table


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (120, "2m"),
        (192, "3m12s"),
        (599, "9m59s"),
        (25 * 60, "25m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 3 * 60, "5h3m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (3 * 86400, "3d"),
        (90 * 86400, "90d"),
        (3 * 365 * 86400 + 45 * 86400, "3y45d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_ages_read_like_kubectl(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_age_of_an_unknown_time_says_so() -> None:
    now = dt.datetime(2025, 1, 15, 10, 0, tzinfo=dt.UTC)
    assert age(None, now) == "<unknown>"
    assert age(now - dt.timedelta(minutes=5), now) == "5m"


def test_table_aligns_columns_and_shows_empty_cells_as_none() -> None:
    text = table(["name", "phase", "age"], [["fallback-1", "Monitoring", "5m"], ["f-2", "", "10d"]])

    assert text.splitlines() == [
        "NAME         PHASE        AGE",
        "fallback-1   Monitoring   5m",
        "f-2          <none>       10d",
    ]


def test_key_values_align_the_values() -> None:
    assert key_values([("Name", "x"), ("Spot ASG", "spot-a"), ("Restored", False)]).splitlines() == [
        "Name:      x",
        "Spot ASG:  spot-a",
        "Restored:  false",
    ]


def test_timestamps_parse_with_fractions_offsets_or_not_at_all() -> None:
    assert parse_timestamp("2025-01-15T10:00:00Z") == dt.datetime(2025, 1, 15, 10, tzinfo=dt.UTC)
    assert parse_timestamp("2025-01-15T10:00:00.123456789Z") == dt.datetime(2025, 1, 15, 10, 0, 0, 123456, dt.UTC)
    assert parse_timestamp("2025-01-15T11:00:00+01:00") == dt.datetime(2025, 1, 15, 10, tzinfo=dt.UTC)
    assert parse_timestamp("2025-01-15T10:00:00") is None  # no zone
    assert parse_timestamp("yesterday") is None
    assert parse_timestamp(None) is None


def test_emit_prints_json_yaml_or_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    data = {"b": 1, "a": [dt.datetime(2025, 1, 15, 10, tzinfo=dt.UTC)]}

    emit(data, "json", lambda: "unused")
    assert json.loads(capsys.readouterr().out) == {"b": 1, "a": ["2025-01-15T10:00:00Z"]}

    emit(data, "yaml", lambda: "unused")
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == {"b": 1, "a": ["2025-01-15T10:00:00Z"]}
    assert out.index("b:") < out.index("a:")  # the command's order, not sorted

    emit(data, "table", lambda: "THE TABLE")
    assert capsys.readouterr().out == "THE TABLE\n"
