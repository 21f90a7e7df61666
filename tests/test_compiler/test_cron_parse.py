"""Parsing and validation of cron expressions (compiler.cron): tables of valid and invalid
expressions with the exact field values, problem codes, messages and spans."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cron import CronExpr, parse_cron
from compiler.diagnostics import CODES

ALL_MIN = tuple(range(60))
ALL_HOUR = tuple(range(24))
ALL_DOM = tuple(range(1, 32))
ALL_MONTH = tuple(range(1, 13))
ALL_DOW = tuple(range(7))

# text -> (seconds, minutes, hours, dom, months, dow, fixed_time, use_or)
VALID: list[tuple[str, tuple]] = [
    ("* * * * *", ((0,), ALL_MIN, ALL_HOUR, ALL_DOM, ALL_MONTH, ALL_DOW, False, False)),
    ("0 9 * * *", ((0,), (0,), (9,), ALL_DOM, ALL_MONTH, ALL_DOW, True, False)),
    ("*/15 * * * *", ((0,), (0, 15, 30, 45), ALL_HOUR, ALL_DOM, ALL_MONTH, ALL_DOW, False, False)),
    ("0 */6 * * *", ((0,), (0,), (0, 6, 12, 18), ALL_DOM, ALL_MONTH, ALL_DOW, False, False)),
    ("5/20 * * * *", ((0,), (5, 25, 45), ALL_HOUR, ALL_DOM, ALL_MONTH, ALL_DOW, False, False)),
    ("59/15 * * * *", ((0,), (59,), ALL_HOUR, ALL_DOM, ALL_MONTH, ALL_DOW, False, False)),
    ("10-40/15 1-3 * * *", ((0,), (10, 25, 40), (1, 2, 3), ALL_DOM, ALL_MONTH, ALL_DOW, True, False)),
    ("0 5-5 * * *", ((0,), (0,), (5,), ALL_DOM, ALL_MONTH, ALL_DOW, True, False)),
    ("0,30 8,20 * * *", ((0,), (0, 30), (8, 20), ALL_DOM, ALL_MONTH, ALL_DOW, True, False)),
    ("0 0 1,15 * *", ((0,), (0,), (0,), (1, 15), ALL_MONTH, ALL_DOW, True, False)),
    ("0 0 * JAN,jul *", ((0,), (0,), (0,), ALL_DOM, (1, 7), ALL_DOW, True, False)),
    ("0 0 * mar-MAY *", ((0,), (0,), (0,), ALL_DOM, (3, 4, 5), ALL_DOW, True, False)),
    ("0 0 * */3 *", ((0,), (0,), (0,), ALL_DOM, (1, 4, 7, 10), ALL_DOW, True, False)),
    ("0 0 * * 7", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (0,), True, False)),
    ("0 0 * * 0", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (0,), True, False)),
    ("0 0 * * 7-7", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (0,), True, False)),
    ("0 0 * * sun-sun", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (0,), True, False)),
    ("0 0 * * 0-7", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, ALL_DOW, True, False)),
    ("0 0 * * 1-7", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, ALL_DOW, True, False)),
    ("0 0 * * 5-7", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (0, 5, 6), True, False)),
    ("0 0 * * sat-sun", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (0, 6), True, False)),
    ("0 0 * * 5-0", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (0, 5, 6), True, False)),
    ("0 0 * * mon-fri", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (1, 2, 3, 4, 5), True, False)),
    ("0 0 * * */2", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (0, 2, 4, 6), True, False)),
    ("0 0 * * 1-7/2", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (0, 1, 3, 5), True, False)),
    ("0 0 * * 3/2", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (3, 5), True, False)),
    ("0 0 * * 7/2", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (0,), True, False)),
    ("0 0 1 * 1", ((0,), (0,), (0,), (1,), ALL_MONTH, (1,), True, True)),
    ("0 0 */2 * 1", ((0,), (0,), (0,), tuple(range(1, 32, 2)), ALL_MONTH, (1,), True, False)),
    ("0 0 1 * */7", ((0,), (0,), (0,), (1,), ALL_MONTH, (0,), True, False)),
    ("0 0 ? * mon", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (1,), True, False)),
    ("*/5 0 * * *", ((0,), (0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55), (0,), ALL_DOM, ALL_MONTH, ALL_DOW, False, False)),
    ("0 * * * *", ((0,), (0,), ALL_HOUR, ALL_DOM, ALL_MONTH, ALL_DOW, False, False)),
    # 6 fields: seconds first
    ("30 * * * * *", ((30,), ALL_MIN, ALL_HOUR, ALL_DOM, ALL_MONTH, ALL_DOW, False, False)),
    ("*/10 0 9 * * *", ((0, 10, 20, 30, 40, 50), (0,), (9,), ALL_DOM, ALL_MONTH, ALL_DOW, True, False)),
    # macros
    ("@hourly", ((0,), (0,), ALL_HOUR, ALL_DOM, ALL_MONTH, ALL_DOW, False, False)),
    ("@daily", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, ALL_DOW, True, False)),
    ("@MIDNIGHT", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, ALL_DOW, True, False)),
    ("@weekly", ((0,), (0,), (0,), ALL_DOM, ALL_MONTH, (0,), True, False)),
    ("@monthly", ((0,), (0,), (0,), (1,), ALL_MONTH, ALL_DOW, True, False)),
    ("@yearly", ((0,), (0,), (0,), (1,), (1,), ALL_DOW, True, False)),
    ("@annually", ((0,), (0,), (0,), (1,), (1,), ALL_DOW, True, False)),
    ("  0 9 * * *  ", ((0,), (0,), (9,), ALL_DOM, ALL_MONTH, ALL_DOW, True, False)),
    ("0\t9 *  * *", ((0,), (0,), (9,), ALL_DOM, ALL_MONTH, ALL_DOW, True, False)),
]


@pytest.mark.parametrize(("text", "want"), VALID, ids=[v[0] for v in VALID])
def test_valid_expressions_expand_as_expected(text: str, want: tuple) -> None:
    expr, problems = parse_cron(text)
    assert problems == []
    assert expr is not None
    secs, mins, hours, dom, months, dow, fixed, use_or = want
    assert expr.seconds == secs
    assert expr.minutes == mins
    assert expr.hours == hours
    assert expr.days.dom == dom
    assert expr.months == months
    assert expr.days.dow == dow
    assert expr.fixed_time is fixed
    assert expr.days.use_or is use_or
    assert expr.has_seconds is (len(text.split()) >= 6)


def test_extensions_are_recorded() -> None:
    expr, _ = parse_cron("0 0 L,LW,15W * *")
    assert expr is not None
    assert expr.days.dom == () and expr.days.dom_last and expr.days.dom_last_weekday
    assert expr.days.dom_nearest == (15,)
    expr, _ = parse_cron("0 0 * * 5L,L1,fri#3,7#1,SUN#2")
    assert expr is not None
    assert expr.days.dow == ()
    assert expr.days.dow_last == (1, 5)
    assert expr.days.dow_nth == ((0, 1), (0, 2), (5, 3))


def test_year_field() -> None:
    expr, problems = parse_cron("0 0 12 1 1 * 2030,2032-2034")
    assert problems == [] and expr is not None
    assert expr.years == (2030, 2032, 2033, 2034)
    assert expr.seconds == (0,) and expr.minutes == (0,) and expr.hours == (12,)
    any_year, _ = parse_cron("0 0 12 1 1 * *")
    assert any_year is not None and any_year.years is None
    stepped, _ = parse_cron("0 0 0 1 1 * */25")
    assert stepped is not None and stepped.years == (1970, 1995, 2020, 2045, 2070, 2095)


def test_fields_carry_their_spans() -> None:
    text = "0 30 9 1-5 * mon 2030"
    expr, _ = parse_cron(text)
    assert expr is not None
    assert [(f.name, text[f.start : f.end]) for f in expr.fields] == [
        ("second", "0"),
        ("minute", "30"),
        ("hour", "9"),
        ("day-of-month", "1-5"),
        ("month", "*"),
        ("day-of-week", "mon"),
        ("year", "2030"),
    ]
    macro, _ = parse_cron("@daily")
    assert macro is not None and macro.macro == "@daily"
    assert {(f.start, f.end) for f in macro.fields} == {(0, 6)}


# text -> (code, message (exact), (start, end) inside the string)
INVALID: list[tuple[str, str, str, tuple[int, int]]] = [
    ("", "invalid-cron", "empty cron expression", (0, 0)),
    ("   ", "invalid-cron", "empty cron expression", (0, 3)),
    ("1 2 3 4", "invalid-cron", "expected 5, 6 or 7 fields, found 4", (0, 7)),
    ("0 0 * * * * * *", "invalid-cron", "expected 5, 6 or 7 fields, found 8", (0, 15)),
    ("0 25 * * *", "invalid-cron", "hour 25 is out of range 0-23", (2, 4)),
    ("60 * * * *", "invalid-cron", "minute 60 is out of range 0-59", (0, 2)),
    ("0 0 0 * *", "invalid-cron", "day-of-month 0 is out of range 1-31", (4, 5)),
    ("0 0 32 * *", "invalid-cron", "day-of-month 32 is out of range 1-31", (4, 6)),
    ("0 0 * 13 *", "invalid-cron", "month 13 is out of range 1-12", (6, 8)),
    ("0 0 * * 8", "invalid-cron", "day-of-week 8 is out of range 0-7", (8, 9)),
    ("60 0 0 * * *", "invalid-cron", "second 60 is out of range 0-59", (0, 2)),
    ("0 0 0 1 1 * 1969", "invalid-cron", "year 1969 is out of range 1970-2099", (12, 16)),
    ("0 0 1-40 * *", "invalid-cron", "day-of-month 40 is out of range 1-31", (6, 8)),
    ("0 0 * foo *", "invalid-cron", "unknown month name `foo`", (6, 9)),
    ("0 0 * janu *", "invalid-cron", "unknown month name `janu`", (6, 10)),
    ("0 0 * * thurs", "invalid-cron", "unknown day-of-week name `thurs`", (8, 13)),
    ("0 0 * * mon-frx", "invalid-cron", "unknown day-of-week name `frx`", (12, 15)),
    ("a * * * *", "invalid-cron", "invalid minute value `a`", (0, 1)),
    ("0 jan * * *", "invalid-cron", "invalid hour value `jan`", (2, 5)),
    ("0 0 * * ½", "invalid-cron", "invalid day-of-week value `½`", (8, 9)),
    ("1,,2 * * * *", "invalid-cron", "empty value in the minute list", (2, 2)),
    ("*/0 * * * *", "invalid-cron", "step 0 in the minute field must be at least 1", (2, 3)),
    ("0 0 * * 2/0", "invalid-cron", "step 0 in the day-of-week field must be at least 1", (10, 11)),
    ("*/x * * * *", "invalid-cron", "invalid step `x` in the minute field", (2, 3)),
    ("*/ * * * *", "invalid-cron", "missing step after `/` in the minute field", (1, 2)),
    ("/5 * * * *", "invalid-cron", "missing start before `/` in the minute field", (0, 1)),
    ("5-1 * * * *", "invalid-cron", "reversed range `5-1` in the minute field", (0, 3)),
    ("0 22-2 * * *", "invalid-cron", "reversed range `22-2` in the hour field", (2, 6)),
    ("0 0 * * fri-mon", "invalid-cron", "reversed range `fri-mon` in the day-of-week field", (8, 15)),
    ("0 0 * nov-feb *", "invalid-cron", "reversed range `nov-feb` in the month field", (6, 13)),
    ("0 0 * * 7-2", "invalid-cron", "reversed range `7-2` in the day-of-week field", (8, 11)),
    ("1-2-3 * * * *", "invalid-cron", "invalid range `1-2-3` in the minute field", (0, 5)),
    ("-5 * * * *", "invalid-cron", "negative minute `-5` is not allowed", (0, 2)),
    ("? * * * *", "invalid-cron", "`?` is not allowed in the minute field", (0, 1)),
    ("0 L * * *", "invalid-cron", "`L` is only valid in the day-of-month and day-of-week fields", (2, 3)),
    ("0 0 * 1#2 *", "invalid-cron", "`1#2` is only valid in the day-of-week field", (6, 9)),
    ("0 15W * * *", "invalid-cron", "`15W` is only valid in the day-of-month field", (2, 5)),
    ("0 0 W * *", "invalid-cron", "invalid day-of-month value `W`", (4, 5)),
    ("0 0 * * 1#6", "invalid-cron", "nth weekday 6 is out of range 1-5", (10, 11)),
    ("0 0 * * 1#x", "invalid-cron", "invalid nth weekday `x`", (10, 11)),
    ("0 0 * * 1#0", "invalid-cron", "nth weekday 0 is out of range 1-5", (10, 11)),
    ("0 0 * * 9#2", "invalid-cron", "day-of-week 9 is out of range 0-7", (8, 9)),
    ("@dialy", "invalid-cron", "unknown macro `@dialy`", (0, 6)),
    ("@daily 5", "invalid-cron", "unexpected text after `@daily`", (7, 8)),
    ("  0 25 * * *", "invalid-cron", "hour 25 is out of range 0-23", (4, 6)),
    ("0 0 1,99 * *", "invalid-cron", "day-of-month 99 is out of range 1-31", (6, 8)),
    # unsupported syntax
    ("@reboot", "unsupported-cron", "`@reboot` is not supported", (0, 7)),
    ("@every 5m", "unsupported-cron", "`@every` is not supported", (0, 6)),
    ("0 0 L-3 * *", "unsupported-cron", "an offset from the last day (`L-3`) is not supported", (4, 7)),
    ("0 0 * * L", "unsupported-cron", "`L` alone is not supported in the day-of-week field", (8, 9)),
    ("0 0 * * 1-5#2", "unsupported-cron", "`#` after a range or step (`1-5#2`) is not supported", (8, 13)),
    ("0 0 * * 1-5L", "unsupported-cron", "`L` after a range or step (`1-5L`) is not supported", (8, 12)),
    ("0 0 1-5W * *", "unsupported-cron", "`W` after a range or step (`1-5W`) is not supported", (4, 8)),
    ("H * * * *", "unsupported-cron", "hashed and random values (`H`) are not supported", (0, 1)),
    ("0 R * * *", "unsupported-cron", "hashed and random values (`R`) are not supported", (2, 3)),
    ("H(0-29)/5 * * * *", "unsupported-cron", "hashed and random values (`H(0-29)/5`) are not supported", (0, 9)),
]


@pytest.mark.parametrize(
    ("text", "code", "message", "span"), INVALID, ids=[f"{i}:{v[0]!r}" for i, v in enumerate(INVALID)]
)
def test_invalid_expressions_are_reported_precisely(
    text: str, code: str, message: str, span: tuple[int, int]
) -> None:
    expr, problems = parse_cron(text)
    assert expr is None
    assert [(p.code, p.message, (p.start, p.end)) for p in problems][:1] == [(code, message, span)]


def test_every_bad_field_is_reported() -> None:
    text = "61 25 * 13 *"
    _, problems = parse_cron(text)
    assert [text[p.start : p.end] for p in problems] == ["61", "25", "13"]


@pytest.mark.parametrize(
    ("text", "help_fragment"),
    [
        ("0 0 * foo *", "month names are jan, feb, mar, apr, may, jun, jul, aug, sep, oct, nov, dec"),
        ("0 0 * * thurs", "names have three letters: `thu`"),
        ("0 0 * * mnn", "the closest name is `mon`"),
        ("@dialy", "the closest macro is `@daily`"),
        ("5-1 * * * *", "`5-59,0-1`"),
        ("0 0 * * fri-mon", "`fri-sat,sun-mon`"),
        ("1 2 3 4", "6 put seconds first"),
    ],
)
def test_help_lines_state_the_fix(text: str, help_fragment: str) -> None:
    _, problems = parse_cron(text)
    assert any(help_fragment in h for p in problems for h in p.help), problems


@pytest.mark.parametrize(
    ("text", "message", "span_text"),
    [
        ("0 0 30 2 *", "day 30 never occurs in february, so this expression never fires", "30 2"),
        ("0 0 31 4,6,9,11 *", "day 31 never occurs in april, june, september or november, so this expression never fires", "31 4,6,9,11"),
        ("0 0 30,31 feb *", "days 30 and 31 never occur in february, so this expression never fires", "30,31 feb"),
        ("0 0 0 29 2 * 2025", "no date matches this expression, so it never fires", "0 0 0 29 2 * 2025"),
    ],
)
def test_never_fires_is_a_warning_with_an_expression(text: str, message: str, span_text: str) -> None:
    expr, problems = parse_cron(text)
    assert expr is not None and expr.never_fires
    assert [(p.code, p.message, text[p.start : p.end]) for p in problems] == [
        ("cron-never-fires", message, span_text)
    ]


@pytest.mark.parametrize("text", ["0 0 29 2 *", "0 0 30 2 1", "0 0 30 * *", "0 0 L 2 *", "0 0 31 * *"])
def test_rare_but_possible_dates_do_not_warn(text: str) -> None:
    expr, problems = parse_cron(text)
    assert expr is not None and not expr.never_fires and problems == []


def test_problem_codes_are_registered_and_messages_follow_house_style() -> None:
    for text, *_ in INVALID:
        for p in parse_cron(text)[1]:
            assert p.code in CODES
            assert p.message[:1] == p.message[:1].lower() and not p.message.endswith(".")
            assert 0 <= p.start <= p.end <= len(text)


def test_parse_is_cached_and_results_are_hashable() -> None:
    a, pa = parse_cron("*/7 * * * *")
    b, pb = parse_cron("*/7 * * * *")
    assert a is b
    pa.append(pa[0] if pa else None)  # type: ignore[arg-type]
    assert parse_cron("*/7 * * * *")[1] == []  # callers get their own list
    assert isinstance(a, CronExpr)
    assert len({a, b}) == 1


_CRONISH = st.text(alphabet="0123456789*/-,#?LWHlwjanfebMONsu@ \t", max_size=40)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), _CRONISH))
def test_parse_never_raises_and_spans_stay_inside(text: str) -> None:
    expr, problems = parse_cron(text)
    for p in problems:
        assert p.code in CODES
        assert 0 <= p.start <= p.end <= len(text)
    assert (expr is None) == any(p.code != "cron-never-fires" for p in problems)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.sampled_from(["*", "1", "5", "1-5", "*/3", "2/4", "1,3", "3-6/2", "7", "?"]),
        min_size=5,
        max_size=5,
    )
)
def test_well_formed_expressions_parse_and_fire_on_matching_times(fields: list[str]) -> None:
    text = " ".join(fields)
    expr, problems = parse_cron(text)
    if "?" in fields[:2] or "?" in fields[3:4]:
        assert expr is None and problems[0].code == "invalid-cron"
        return
    assert expr is not None, problems
    assert problems == []
    t = expr.next_after(datetime(2024, 5, 17, 13, 7, tzinfo=UTC), "UTC")
    assert t is not None and t > datetime(2024, 5, 17, 13, 7, tzinfo=UTC)
    assert t.minute in expr.minutes and t.hour in expr.hours and t.second == 0
    assert expr.matches_day(t.year, t.month, t.day)
