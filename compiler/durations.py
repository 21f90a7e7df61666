"""Duration text → seconds: ``30s``, ``5m``, ``1h30m``, ``500ms``, ``2d``, ``1w``, ``5.minutes``."""

from __future__ import annotations

import re
from functools import lru_cache

_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
}
_WORD_SECONDS = {
    "milliseconds": 0.001,
    "millisecond": 0.001,
    "seconds": 1.0,
    "second": 1.0,
    "minutes": 60.0,
    "minute": 60.0,
    "hours": 3600.0,
    "hour": 3600.0,
    "days": 86400.0,
    "day": 86400.0,
    "weeks": 604800.0,
    "week": 604800.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_WORD = re.compile(r"^(\d+(?:\.\d+)?)\.([a-z]+)$")


@lru_cache(maxsize=1024)
def parse_duration(text: str) -> float | None:
    """Seconds for a duration string, or None when it is not one.

    Compound forms must go from larger to smaller units (``1h30m``, not ``30m1h``)."""
    t = text.strip().replace("_", "")
    if not t:
        return None
    m = _WORD.match(t)
    if m:
        unit = _WORD_SECONDS.get(m.group(2))
        return None if unit is None else float(m.group(1)) * unit
    pos, total, last_rank = 0, 0.0, 99
    order = ["w", "d", "h", "m", "s", "ms"]
    while pos < len(t):
        pm = _PART.match(t, pos)
        if not pm:
            return None
        rank = order.index(pm.group(2))
        if rank <= last_rank and last_rank != 99:
            return None
        last_rank = rank
        total += float(pm.group(1)) * _UNIT_SECONDS[pm.group(2)]
        pos = pm.end()
    return total


def format_duration(seconds: float) -> str:
    """The shortest canonical text for a number of seconds (``90`` → ``1m30s``)."""
    if seconds < 1 and seconds > 0:
        return f"{round(seconds * 1000)}ms"
    secs = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if secs >= size:
            n, secs = divmod(secs, size)
            parts.append(f"{n}{unit}")
    return "".join(parts) or "0s"
