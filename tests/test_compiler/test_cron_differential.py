"""Differential test: compiler.cron against cronsim (which reproduces Debian cron's DST rules).

Seeded random 5-field expressions (within what cronsim accepts) and start times, many of them
right around DST transitions, in several zones. Each case chains ``next_after`` five times and
compares every step with ``cronsim.CronSim``. A disagreement must be explained by an entry of
INTENDED_DIFFERENCES, otherwise the test fails.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from compiler.cron import CronExpr, parse_cron

ZONES = (
    "UTC",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # 30-minute DST shift
    "America/Santiago",  # midnight does not exist on spring-forward day
    "Asia/Kolkata",  # +05:30, no DST
)
CASES = 420
CHAIN = 5


@dataclass(frozen=True)
class Disagreement:
    expr: CronExpr
    tz: str
    after: datetime  # UTC
    ours: datetime | None
    theirs: datetime | None


def _local(d: datetime, tz: str) -> datetime:
    return d.astimezone(ZoneInfo(tz))


def _cronsim_before_start(d: Disagreement) -> bool:
    # cronsim maps a fixed-time job's wall time with fold=0 without checking it against the
    # start: started inside the second copy of a repeated hour it returns the first copy, an
    # instant *earlier* than the start (peers.md §4.4). We fire strictly after `after`.
    return d.theirs is not None and d.theirs <= d.after


def _cronsim_half_hour_zone(d: Disagreement) -> bool:
    # cronsim's hour/minute roll-forward uses wall-clock `replace()` in aware mode, which in a
    # zone with a 30-minute DST shift skips valid times (peers.md §4.3: `0 */3 * * *` skips
    # 03:00 on Lord Howe's spring-forward day). Ours must then be an earlier, existing,
    # matching wall time.
    if d.tz != "Australia/Lord_Howe" or d.ours is None:
        return False
    if d.theirs is not None and d.theirs < d.ours:
        return False
    wall = _local(d.ours, d.tz)
    roundtrip = wall.replace(tzinfo=None).replace(tzinfo=ZoneInfo(d.tz), fold=wall.fold)
    return (
        roundtrip.astimezone(UTC) == d.ours
        and d.expr.matches_day(wall.year, wall.month, wall.day)
        and wall.hour in d.expr.hours
        and wall.minute in d.expr.minutes
    )


def _dow_start_step(d: Disagreement) -> bool:
    # `a/n` in day-of-week: we expand it with croniter to a..6 step n (Saturday ends the week),
    # cronsim to a..7 step n, so e.g. `3/2` adds Sunday (7) for cronsim only.
    return re.search(r"(^|,)\d/\d", d.expr.fields[4].text) is not None


INTENDED_DIFFERENCES: dict[str, tuple[str, Callable[[Disagreement], bool]]] = {
    "cronsim-returns-time-before-start": (
        "fixed-time job started inside the second copy of a repeated hour", _cronsim_before_start
    ),
    "cronsim-skips-valid-time-in-half-hour-zone": (
        "cronsim bug with 30-minute DST shifts", _cronsim_half_hour_zone
    ),
    "dow-start-step-range": (
        "`a/n` in day-of-week runs to Saturday (croniter), not to 7 (cronsim)", _dow_start_step
    ),
}


def _field(rng: random.Random, lo: int, hi: int, names: tuple[str, ...] = ()) -> str:
    def val() -> str:
        v = rng.randint(lo, hi)
        if names and rng.random() < 0.3:
            return names[v - lo] if v - lo < len(names) else str(v)
        return str(v)

    kind = rng.choices(range(7), weights=(4, 4, 2, 2, 3, 1, 1))[0]
    if kind == 0:
        return "*"
    if kind == 1:
        return val()
    if kind == 2:
        return ",".join(val() for _ in range(rng.randint(2, 3)))
    if kind == 3:
        a = rng.randint(lo, hi - 1)
        return f"{a}-{rng.randint(a + 1, hi)}"
    if kind == 4:
        return f"*/{rng.choice((2, 3, 5, 6, 10, 15, 20, 30))}" if hi > 20 else f"*/{rng.randint(2, 4)}"
    if kind == 5:
        a = rng.randint(lo, hi - 1)
        return f"{a}-{rng.randint(a + 1, hi)}/{rng.randint(2, 4)}"
    return f"{rng.randint(lo, hi)}/{rng.randint(2, 5)}"


def _dow(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.08:
        return f"{rng.randint(0, 7)}L"
    if r < 0.16:
        return f"{rng.choice(('MON', 'TUE', 'FRI', '1', '5', '0', '7'))}#{rng.randint(1, 5)}"
    return _field(rng, 0, 7, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"))


def _dom(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.05:
        return "L"
    if r < 0.08:
        return "LW"
    return _field(rng, 1, 31)


def _expression(rng: random.Random) -> str:
    # Hours and minutes lean towards the DST-relevant 0-3 range.
    hour = _field(rng, 0, 23) if rng.random() < 0.5 else _field(rng, 0, 3)
    return " ".join(
        (
            _field(rng, 0, 59),
            hour,
            _dom(rng) if rng.random() < 0.4 else "*",
            _field(rng, 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG",
                                "SEP", "OCT", "NOV", "DEC")) if rng.random() < 0.3 else "*",
            _dow(rng) if rng.random() < 0.4 else "*",
        )
    )


def _transitions(tz: str, years: range) -> list[datetime]:
    zone = ZoneInfo(tz)
    found = []
    t = datetime(years.start, 1, 1, tzinfo=UTC)
    end = datetime(years.stop, 1, 1, tzinfo=UTC)
    prev = t.astimezone(zone).utcoffset()
    while t < end:
        t += timedelta(hours=1)
        off = t.astimezone(zone).utcoffset()
        if off != prev:
            found.append(t)
        prev = off
    return found


def _start(rng: random.Random, tz: str, transitions: dict[str, list[datetime]]) -> datetime:
    near = transitions[tz]
    if near and rng.random() < 0.7:
        base = rng.choice(near)
        return base + timedelta(seconds=rng.randint(-4 * 3600, 3 * 3600))
    return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(3 * 365 * 86400))


def _explain(d: Disagreement) -> str | None:
    for name, (_reason, pred) in INTENDED_DIFFERENCES.items():
        if pred(d):
            return name
    return None


def test_agrees_with_cronsim() -> None:
    rng = random.Random(1959)
    transitions = {tz: _transitions(tz, range(2024, 2027)) for tz in ZONES}
    compared = 0
    explained: Counter[str] = Counter()
    unexplained: list[str] = []
    rejected_by_cronsim = 0
    for _ in range(CASES):
        text = _expression(rng)
        expr, problems = parse_cron(text)
        assert expr is not None, (text, problems)
        tz = rng.choice(ZONES)
        start = _start(rng, tz, transitions)
        try:
            sim = CronSim(text, start.astimezone(ZoneInfo(tz)))
        except CronSimError:
            rejected_by_cronsim += 1  # e.g. `0 0 30 2 *`, which we accept with a warning
            assert expr.never_fires or any(p.code == "cron-never-fires" for p in problems) or (
                re.search(r"\d-0\b|[A-Z]+-SUN", text)
            ), text
            continue
        cur = start
        for _step in range(CHAIN):
            ours = expr.next_after(cur, tz)
            try:
                theirs: datetime | None = next(sim).astimezone(UTC)
            except StopIteration:
                theirs = None
            compared += 1
            if ours != theirs:
                d = Disagreement(expr, tz, cur, ours, theirs)
                why = _explain(d)
                if why is None:
                    unexplained.append(
                        f"{text!r} {tz} after {_local(cur, tz).isoformat()}: ours "
                        f"{ours and _local(ours, tz).isoformat()} cronsim "
                        f"{theirs and _local(theirs, tz).isoformat()}"
                    )
                else:
                    explained[why] += 1
                break  # the two chains diverge from here
            if ours is None:
                break
            cur = ours
    assert not unexplained, "\n".join(unexplained)
    assert compared >= 1800, compared
    # The table is not dead weight: the DST-related entries are actually exercised.
    assert explained["cronsim-returns-time-before-start"] > 0, explained
    assert rejected_by_cronsim < CASES // 10
