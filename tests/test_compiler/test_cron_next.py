"""Next-fire semantics of compiler.cron (SPEC §3): a hand-checked golden table plus properties."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from compiler.cron import parse_cron

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "cron_next.txt"


@dataclass(frozen=True)
class Case:
    line: int
    expr: str
    tz: str
    after: datetime
    expected: tuple[str, ...]  # local ISO strings
    ends: bool  # the list ends with `none`


def _load() -> list[Case]:
    cases = []
    for no, raw in enumerate(GOLDEN.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        expr, tz, after, expected = (part.strip() for part in raw.split("|"))
        items = [x.strip() for x in expected.split(",")]
        ends = items[-1] == "none"
        if ends:
            items = items[:-1]
        cases.append(
            Case(no, expr, tz, datetime.fromisoformat(after), tuple(items), ends)
        )
    return cases


CASES = _load()


def test_golden_file_is_substantial() -> None:
    # Guards the loader: a broken separator would silently shrink the table.
    assert len(CASES) >= 70


@pytest.mark.parametrize("case", CASES, ids=[f"L{c.line}:{c.expr}@{c.tz}" for c in CASES])
def test_golden_next_fire_times(case: Case) -> None:
    expr, problems = parse_cron(case.expr)
    assert expr is not None, problems
    assert not problems
    want = len(case.expected) + (1 if case.ends else 0)
    got = expr.next_n(case.after, case.tz, want)
    zone = ZoneInfo(case.tz)
    assert [g.astimezone(zone).isoformat() for g in got] == list(case.expected)
    assert all(g.tzinfo is UTC for g in got)


# --------------------------------------------------------------------------------------------
# API behaviour
# --------------------------------------------------------------------------------------------


def _expr(text: str):  # type: ignore[no-untyped-def]
    expr, problems = parse_cron(text)
    assert expr is not None, problems
    return expr


def test_next_after_is_strict_and_utc() -> None:
    e = _expr("*/5 * * * *")
    t = datetime(2024, 1, 1, 0, 5, tzinfo=UTC)
    nxt = e.next_after(t, "UTC")
    assert nxt == datetime(2024, 1, 1, 0, 10, tzinfo=UTC)
    assert nxt is not None and nxt.utcoffset() == timedelta(0)


def test_next_after_accepts_zoneinfo_and_fixed_offsets() -> None:
    e = _expr("0 9 * * *")
    after = datetime(2024, 7, 1, tzinfo=UTC)
    assert e.next_after(after, ZoneInfo("Europe/Berlin")) == datetime(2024, 7, 1, 7, tzinfo=UTC)
    plus2 = timezone(timedelta(hours=2))
    assert e.next_after(after, plus2) == datetime(2024, 7, 1, 7, tzinfo=UTC)
    assert e.next_after(after, ZoneInfo("Etc/UTC")) == datetime(2024, 7, 1, 9, tzinfo=UTC)


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="aware"):
        _expr("* * * * *").next_after(datetime(2024, 1, 1), "UTC")


def test_never_fires_returns_none() -> None:
    expr, problems = parse_cron("0 0 30 2 *")
    assert expr is not None and expr.never_fires
    assert [p.code for p in problems] == ["cron-never-fires"]
    assert expr.next_after(datetime(2024, 1, 1, tzinfo=UTC), "UTC") is None
    assert expr.next_n(datetime(2024, 1, 1, tzinfo=UTC), "UTC", 3) == []


def test_occurrences_between_is_start_exclusive_end_inclusive() -> None:
    e = _expr("0 * * * *")
    start = datetime(2024, 1, 1, 0, tzinfo=UTC)
    end = datetime(2024, 1, 1, 3, tzinfo=UTC)
    got = e.occurrences_between(start, end, "UTC")
    assert got == [datetime(2024, 1, 1, h, tzinfo=UTC) for h in (1, 2, 3)]
    assert e.occurrences_between(start, end, "UTC", limit=2) == got[:2]
    assert e.occurrences_between(end, start, "UTC") == []


def test_occurrences_between_covers_a_dst_day() -> None:
    # 23 hourly fires on the spring-forward day, 25 on the fall-back day (New York).
    e = _expr("0 * * * *")
    ny = ZoneInfo("America/New_York")
    for day, count in ((datetime(2024, 3, 10), 23), (datetime(2024, 11, 3), 25)):
        start = day.replace(tzinfo=ny) - timedelta(microseconds=1)
        end = (day + timedelta(days=1)).replace(tzinfo=ny) - timedelta(seconds=1)
        assert len(e.occurrences_between(start, end, "America/New_York")) == count
    # A fixed-time daily job fires exactly once on both days.
    d = _expr("30 1 * * *")
    for day in (datetime(2024, 3, 10), datetime(2024, 11, 3)):
        start = day.replace(tzinfo=ny) - timedelta(microseconds=1)
        end = (day + timedelta(days=1)).replace(tzinfo=ny) - timedelta(seconds=1)
        assert len(d.occurrences_between(start, end, ny)) == 1


def test_next_n_chains_strictly_increasing() -> None:
    e = _expr("*/20 * * * *")
    got = e.next_n(datetime(2024, 4, 6, 13, tzinfo=UTC), "Australia/Lord_Howe", 12)
    assert len(got) == 12
    assert all(a < b for a, b in zip(got, got[1:], strict=False))


def test_year_field_exhausted_returns_none() -> None:
    e = _expr("0 0 0 1 1 * 2030")
    assert e.next_after(datetime(2030, 1, 1, tzinfo=UTC), "UTC") is None
    assert e.next_after(datetime(2031, 1, 1, tzinfo=UTC), "Europe/Berlin") is None


# --------------------------------------------------------------------------------------------
# croniter as the reference for wall-clock matching (UTC, no DST involved)
# --------------------------------------------------------------------------------------------


def _random_field(rng: random.Random, lo: int, hi: int) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return "*"
    if kind == 1:
        return str(rng.randint(lo, hi))
    if kind == 2:
        return ",".join(str(rng.randint(lo, hi)) for _ in range(rng.randint(2, 4)))
    if kind == 3:
        a = rng.randint(lo, hi - 1)
        return f"{a}-{rng.randint(a + 1, hi)}"
    if kind == 4:
        return f"*/{rng.randint(2, max(2, (hi - lo) // 2))}"
    if kind == 5:
        a = rng.randint(lo, hi - 1)
        return f"{a}-{rng.randint(a + 1, hi)}/{rng.randint(2, 5)}"
    return f"{rng.randint(lo, hi)}/{rng.randint(2, 9)}"


def _croniter_reference_cases(n: int) -> list[tuple[str, datetime]]:
    rng = random.Random(20240310)
    out = []
    for _ in range(n):
        fields = [
            _random_field(rng, 0, 59),
            _random_field(rng, 0, 23),
            _random_field(rng, 1, 28),
            _random_field(rng, 1, 12),
            _random_field(rng, 0, 6),
        ]
        if rng.random() < 0.3:
            fields.insert(0, _random_field(rng, 0, 59))
            if rng.random() < 0.5:
                fields.append(_random_field(rng, 2024, 2040))
        start = datetime(2024, 1, 1) + timedelta(seconds=rng.randrange(3 * 365 * 86400))
        out.append((" ".join(fields), start))
    return out


def test_matches_croniter_on_wall_clock_time() -> None:
    """In UTC no DST rule applies, so croniter (Vixie day rule enabled, seconds first) must
    give the same times for the plain dialect."""
    compared = 0
    for text, start in _croniter_reference_cases(300):
        expr = _expr(text)
        it = croniter(
            text, start, day_or=True, implement_cron_bug=True,
            second_at_beginning=expr.has_seconds,
        )
        cur = start.replace(tzinfo=UTC)
        for _ in range(4):
            mine = expr.next_after(cur, "UTC")
            try:
                ref = it.get_next(datetime)
            except Exception:  # croniter's 50-year search limit / exhausted year field
                ref = None
            assert (mine.replace(tzinfo=None) if mine else None) == ref, (text, cur)
            if mine is None:
                break
            cur = mine
            compared += 1
    assert compared > 900


# --------------------------------------------------------------------------------------------
# A brute-force oracle for the DST rules, in zones with unusual shifts
# --------------------------------------------------------------------------------------------

ODD_ZONES = (
    "America/New_York",
    "Europe/Dublin",  # negative DST in tzdata (winter is the "daylight" offset)
    "Australia/Lord_Howe",  # 30-minute shift
    "Pacific/Chatham",  # +12:45 / +13:45
    "America/Santiago",  # midnight gap
    "Africa/Casablanca",  # DST suspended for Ramadan: two transitions a month apart
    "America/St_Johns",  # -03:30 / -02:30
)
_MIN = timedelta(minutes=1)


def _wall_matches(expr, wall: datetime) -> bool:  # type: ignore[no-untyped-def]
    return (
        wall.minute in expr.minutes
        and wall.hour in expr.hours
        and expr.matches_day(wall.year, wall.month, wall.day)
    )


def _exists(naive: datetime, zone: ZoneInfo) -> bool:
    back = naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return back == naive


def _oracle(expr, after: datetime, zone: ZoneInfo) -> datetime:  # type: ignore[no-untyped-def]
    """Minute-by-minute scan, written independently of the module's segment logic."""
    if not expr.fixed_time:
        t = after.astimezone(UTC).replace(second=0, microsecond=0) + _MIN
        while not _wall_matches(expr, t.astimezone(zone)):
            t += _MIN
        return t
    n = after.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0) + _MIN
    while True:
        if _wall_matches(expr, n):
            first = n
            while not _exists(first, zone):  # in a gap: the first wall minute after it
                first += _MIN
            u = first.replace(tzinfo=zone, fold=0).astimezone(UTC)
            if u > after:
                return u
        n += _MIN


def _zone_changes(zone: ZoneInfo) -> list[datetime]:
    out = []
    t = datetime(2024, 1, 1, tzinfo=UTC)
    prev = t.astimezone(zone).utcoffset()
    while t.year < 2026:
        t += timedelta(minutes=30)
        off = t.astimezone(zone).utcoffset()
        if off != prev:
            out.append(t)
        prev = off
    return out


def test_dst_rules_against_brute_force_oracle() -> None:
    rng = random.Random(4242)
    changes = {z: _zone_changes(ZoneInfo(z)) for z in ODD_ZONES}
    minute_forms = ["0", "30", "15,45", "*/15", "*/20", "*", "5-50/15", "59"]
    hour_forms = ["0", "1", "2", "0-3", "*/2", "*", "1,2", "23"]
    checked = 0
    for _ in range(160):
        text = f"{rng.choice(minute_forms)} {rng.choice(hour_forms)} * * *"
        expr = _expr(text)
        tz = rng.choice(ODD_ZONES)
        zone = ZoneInfo(tz)
        cur = rng.choice(changes[tz]) + timedelta(minutes=rng.randint(-200, 120), seconds=rng.randint(0, 59))
        for _ in range(4):
            want = _oracle(expr, cur, zone)
            got = expr.next_after(cur, tz)
            assert got == want, (text, tz, cur.astimezone(zone).isoformat(), got, want)
            cur = want
            checked += 1
    assert checked == 640


def test_nearest_weekday_rule_is_croniters() -> None:
    import calendar

    from compiler.cron import nearest_weekday

    for year in (2023, 2024, 2025):
        for month in range(1, 13):
            for day in range(1, 32):
                assert nearest_weekday(year, month, day) == croniter._get_nearest_weekday(
                    year, month, day
                ), (year, month, day)
                got = nearest_weekday(year, month, day)
                assert calendar.weekday(year, month, got) < 5
