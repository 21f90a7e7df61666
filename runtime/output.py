"""Human and machine output for the `symbi` CLI: tables, JSON, CSV, local times.

Human output shows instants in the local time zone with their UTC offset
(``2026-11-25 09:00:00 +01:00``) and, where it helps, a relative phrase (``in 4m``). JSON output
is the complete, stable record (``to_dict()`` of the row types, ISO-8601 times, sorted keys);
CSV has one column per key of those records (minus bulky run output).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

FORMATS = ("table", "json", "csv")


def local_time(dt: datetime | None) -> str:
    """An aware datetime in the local zone with its offset, e.g. ``2026-11-25 09:00:00 +01:00``."""
    if dt is None:
        return "-"
    loc = dt.astimezone()
    return f"{loc:%Y-%m-%d %H:%M:%S} {_offset(loc)}"


def clock_time(dt: datetime) -> str:
    """Time of day in the local zone with its offset, e.g. ``09:00:05 +01:00`` (log lines)."""
    loc = dt.astimezone()
    return f"{loc:%H:%M:%S} {_offset(loc)}"


def local_date(dt: datetime) -> str:
    """The local calendar date with the weekday, e.g. ``Wed 2026-11-25``."""
    return f"{dt.astimezone():%a %Y-%m-%d}"


def _offset(loc: datetime) -> str:
    off = loc.strftime("%z")  # "+0100"; "+053045" for historical zones with seconds
    return f"{off[:3]}:{off[3:5]}"


def relative(dt: datetime | None, now: datetime | None = None) -> str:
    """A short relative phrase: ``in 4m``, ``2h05m ago``, ``now``."""
    if dt is None:
        return ""
    now = now or datetime.now(UTC)
    secs = (dt - now).total_seconds()
    mag = abs(secs)
    if mag < 1:
        return "now"
    if mag < 60:
        text = f"{int(mag)}s"
    elif mag < 3600:
        text = f"{int(mag // 60)}m"
    elif mag < 86400:
        h, m = divmod(int(mag // 60), 60)
        text = f"{h}h{m:02d}m" if m else f"{h}h"
    else:
        d, h = divmod(int(mag // 3600), 24)
        text = f"{d}d{h}h" if h else f"{d}d"
    return f"in {text}" if secs > 0 else f"{text} ago"


def when(dt: datetime | None, now: datetime | None = None) -> str:
    """Local time plus relative phrase, for tables: ``2026-11-25 09:00:00 +01:00 (in 4m)``."""
    if dt is None:
        return "-"
    return f"{local_time(dt)} ({relative(dt, now)})"


def when_next(dt: datetime | None, now: datetime | None = None) -> str:
    """Like :func:`when` for a *next* run: one in the past is ``due …`` (no scheduler has run
    it yet)."""
    if dt is None:
        return "-"
    now = now or datetime.now(UTC)
    if (dt - now).total_seconds() <= -1:
        return f"{local_time(dt)} (due {relative(dt, now)})"
    return when(dt, now)


def duration_ms(ms: int | float | None) -> str:
    """``850ms``, ``2.4s``, ``3m05s``; ``-`` for None."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{int(ms)}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    if ms < 3_600_000:
        m, s = divmod(int(ms // 1000), 60)
        return f"{m}m{s:02d}s"
    h, m = divmod(int(ms // 60_000), 60)
    return f"{h}h{m:02d}m"


def one_line(text: str | None, width: int = 80) -> str:
    """The first non-empty line of ``text``, shortened to ``width`` characters with ``…``."""
    if not text:
        return ""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    if len(lines) > 1:
        first += " …" if len(first) < width - 2 else ""
    if len(first) > width:
        first = first[: width - 1] + "…"
    return first


def to_json(data: Any) -> str:
    """The JSON text the CLI prints: indented, sorted keys, UTF-8 kept, datetimes ISO-8601."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def emit(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    fmt: str,
    *,
    records: Sequence[dict[str, Any]] | None = None,
    csv_exclude: Sequence[str] = (),
    empty: str = "",
) -> None:
    """Print a listing as an aligned table, JSON or CSV.

    ``rows``/``columns`` (key, header) are the human table. ``records`` are the complete,
    stable records: JSON prints them as a list; CSV prints one column per record key (except
    ``csv_exclude``), values raw (ISO times, nested values as JSON). Without ``records`` JSON
    and CSV use ``rows``."""
    out = sys.stdout
    data = list(records if records is not None else rows)
    if fmt == "json":
        out.write(to_json(data) + "\n")
        return
    if fmt == "csv":
        if records is not None:
            keys = [k for k in (data[0] if data else _keys_of_empty(columns)) if k not in csv_exclude]
            headers = keys
        else:
            keys = [k for k, _ in columns]
            headers = [h for _, h in columns]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(headers)
        for r in data:
            w.writerow([_csv_cell(r.get(k)) for k in keys])
        out.write(buf.getvalue())
        return
    if not rows:
        if empty:
            out.write(empty + "\n")
        return
    out.write(render_table([[_cell(r.get(k)) for k, _ in columns] for r in rows],
                           [h for _, h in columns]))


def _keys_of_empty(columns: Sequence[tuple[str, str]]) -> list[str]:
    return [k for k, _ in columns]


def _csv_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _cell(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v) or "-"
    return str(v)


def render_table(rows: list[list[str]], headers: list[str], *, indent: int = 0) -> str:
    """An aligned plain-text table (rich: header rule, no box, bold header on a terminal).

    Lines never wrap (a long cell makes the line long) and carry no trailing spaces."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold",
                  show_header=bool(headers))
    for h in headers or [""] * (len(rows[0]) if rows else 0):
        table.add_column(h, no_wrap=True, overflow="ignore")
    for r in rows:
        table.add_row(*r)
    buf = io.StringIO()
    is_tty = sys.stdout.isatty()
    console = Console(file=buf, width=10_000, highlight=False, soft_wrap=False,
                      force_terminal=is_tty, no_color=not is_tty, emoji=False, markup=False)
    console.print(table)
    pad = " " * indent
    lines = [(pad + ln).rstrip() for ln in buf.getvalue().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"
