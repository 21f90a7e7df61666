"""compiler.cron expands plain field items itself (croniter's expansion costs ~35 µs per
expression); croniter stays the reference. Every test here compares the values of
``parse_cron`` with croniter's expansion of the same validated items
(``compiler.cron._reference_values``), so any divergence between the two fails.
"""

from __future__ import annotations

import random

import pytest

from compiler.cron import _reference_values, parse_cron

# (position in a 7-field expression, low, high, names or None, name offset)
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
FIELDS = {
    "second": (0, 0, 59, None, 0),
    "minute": (1, 0, 59, None, 0),
    "hour": (2, 0, 23, None, 0),
    "day-of-month": (3, 1, 31, None, 0),
    "month": (4, 1, 12, MONTHS, 1),
    "day-of-week": (5, 0, 7, DAYS, 0),
    "year": (6, 1970, 2099, None, 0),
}


def _values(text: str) -> list[tuple[int, ...]]:
    expr, problems = parse_cron(text)
    assert expr is not None, (text, problems)
    return [f.values for f in expr.fields]


def _check(text: str) -> None:
    ours = _values(text)
    reference = _reference_values(text)
    assert isinstance(reference, list), (text, reference)
    assert ours == reference, text


def _in_field(name: str, item: str) -> str:
    """A 7-field expression with ``item`` in field ``name`` and ``*`` elsewhere."""
    parts = ["*"] * 7
    parts[FIELDS[name][0]] = item
    return " ".join(parts)


def _word(rng: random.Random, name: str, v: int) -> str:
    _, _, _, names, off = FIELDS[name]
    if names is not None and rng.random() < 0.3 and v - off < len(names):
        w = names[v - off]
        return rng.choice((w, w.upper(), w.capitalize()))
    return str(v)


def _random_item(rng: random.Random, name: str) -> str:
    _, lo, hi, _, _ = FIELDS[name]
    step = rng.choice((1, 2, 3, 4, 5, 6, 7, 10, 13, 15, 25, 30, 59, 100))
    kind = rng.randrange(6)
    if kind == 0:
        return rng.choice(("*", f"*/{step}"))
    if kind == 1:
        return _word(rng, name, rng.randint(lo, hi))
    if kind == 2:
        return f"{rng.randint(lo, hi)}/{step}"
    a = rng.randint(lo, hi)
    b = rng.randint(a, hi)
    if name == "day-of-week" and rng.random() < 0.3:
        a, b = rng.randint(1, 7), rng.choice((0, 7))  # Vixie's `X-0` and `X-7`
        if a == 7:
            b = rng.choice((0, 7))
    rng_text = f"{_word(rng, name, a)}-{_word(rng, name, b)}"
    return rng_text if kind == 3 else f"{rng_text}/{step}"


def _random_field(rng: random.Random, name: str) -> str:
    return ",".join(_random_item(rng, name) for _ in range(rng.choice((1, 1, 1, 2, 3, 4))))


@pytest.mark.parametrize("name", list(FIELDS))
def test_every_single_value_and_step_matches_croniter(name: str) -> None:
    _, lo, hi, _, _ = FIELDS[name]
    for v in range(lo, hi + 1):
        _check(_in_field(name, str(v)))
        for step in (1, 2, 5, 7, 200):
            _check(_in_field(name, f"{v}/{step}"))
    for step in range(1, hi - lo + 2):
        _check(_in_field(name, f"*/{step}"))


@pytest.mark.parametrize("name", ["day-of-week", "month", "hour"])
def test_every_range_and_stepped_range_matches_croniter(name: str) -> None:
    """Exhaustive over the small fields, where the edge cases are (Sunday as 0 and 7)."""
    _, lo, hi, _, _ = FIELDS[name]
    for a in range(lo, hi + 1):
        for b in range(lo, hi + 1):
            if a > b and not (name == "day-of-week" and b == 0):
                continue
            if name == "day-of-week" and a == 7 and b not in (0, 7):
                continue  # reversed: reported, not expanded
            for suffix in ("", "/2", "/3", "/6", "/8"):
                _check(_in_field(name, f"{a}-{b}{suffix}"))


def test_random_fields_match_croniter() -> None:
    rng = random.Random(20261126)
    for _ in range(3000):
        n = rng.choice((5, 6, 7))
        names = list(FIELDS)[1:6] if n == 5 else list(FIELDS)[:n]
        _check(" ".join(_random_field(rng, name) for name in names))


@pytest.mark.parametrize("text", [
    "*,5 * * * *",           # a `*` item in a list is the whole field
    "0 0 ? * mon-fri",
    "0 0 1,15 * sun,7",
    "0 0 * * sat-sun,wed",
    "0 0 * * 5-0/2,1",
    "0 0 L,5 * 5L",          # extensions do not enter the plain values
    "0 0 15W * 2#3",
    "@weekly",
    "0 0 5-5 * *",           # an equal range is that one value (croniter: the whole field)
])
def test_special_spellings_match_croniter(text: str) -> None:
    _check(text)


def test_reference_is_independent_of_our_expansion() -> None:
    """The reference really is croniter's: a spelling both read the same way gives the same
    values, and the reference of an invalid expression is None."""
    assert _reference_values("*/20 1-3 * * 1-7/2") == [
        (0, 20, 40), (1, 2, 3), tuple(range(1, 32)), tuple(range(1, 13)), (0, 1, 3, 5)]
    assert _reference_values("61 * * * *") is None
