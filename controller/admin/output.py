"""Rendering for the admin commands: kubectl-style tables and key/value blocks, JSON, YAML, ages.

Tables are plain text with columns aligned by padding (three spaces between columns, like kubectl);
JSON is indented, YAML is block style; both keep the keys in the order the command built them.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
import yaml

COLUMN_GAP = "   "


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Aligned columns under upper-case headers; the last column is not padded (no trailing spaces)."""
    lines = [[str(h).upper() for h in headers], *[[_cell(v) for v in row] for row in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    out = []
    for line in lines:
        cells = [cell.ljust(widths[i]) if i < len(line) - 1 else cell for i, cell in enumerate(line)]
        out.append(COLUMN_GAP.join(cells).rstrip())
    return "\n".join(out)


def key_values(pairs: Iterable[tuple[str, object]], indent: str = "") -> str:
    """``Key:   value`` lines with the values aligned (kubectl describe's layout)."""
    items = [(f"{key}:", _cell(value)) for key, value in pairs]
    if not items:
        return ""
    width = max(len(key) for key, _ in items) + 2
    return "\n".join(f"{indent}{key.ljust(width)}{value}".rstrip() for key, value in items)


def _cell(value: object) -> str:
    if value is None or value == "":
        return "<none>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).replace("\n", " ")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, default=_default)


def to_yaml(data: Any) -> str:
    return yaml.safe_dump(_plain(data), sort_keys=False, default_flow_style=False, allow_unicode=True)


def emit(data: Any, output: str, render_table: Callable[[], str]) -> None:
    """Print ``data`` as JSON or YAML, or the table ``render_table()`` builds."""
    if output == "json":
        click.echo(to_json(data))
    elif output == "yaml":
        click.echo(to_yaml(data), nl=False)
    else:
        text = render_table()
        if text:
            click.echo(text)


def progress(message: str) -> None:
    """A step of a long operation, on stderr (stdout stays the result, for scripts)."""
    click.echo(message, err=True)


def _default(value: object) -> object:
    if isinstance(value, dt.datetime):
        return rfc3339(value)
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def _plain(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_plain(v) for v in data]
    if isinstance(data, dt.datetime):
        return rfc3339(data)
    return data


# -- time ------------------------------------------------------------------------------------------------


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: object) -> dt.datetime | None:
    """An RFC 3339 timestamp from a Kubernetes object (Z or offset, any fraction), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(dt.UTC)


def human_duration(seconds: float) -> str:
    """kubectl's ``duration.HumanDuration``: 45s, 3m12s, 25m, 5h3m, 30h, 3d4h, 90d, 2y45d, 9y."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    whole = int(seconds)
    if whole < 60 * 2:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 10:
        rest = whole % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24 - 365 * (hours // 24 // 365)
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(moment: dt.datetime | None, now: dt.datetime) -> str:
    return "<unknown>" if moment is None else human_duration((now - moment).total_seconds())
