"""Property tests: the parser never raises, and key/value data round-trips through it."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import ast
from compiler.diagnostics import CODES, Diagnostic
from compiler.parser import MAX_ERRORS, parse_text

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "upstream"
VALID = [p.read_text(encoding="utf-8") for p in sorted(FIXTURES.glob("*.symbi"))]

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# pieces of the language, so random text reaches deep into the grammar
VOCAB = [
    "schedule", "agent", "policy", "metadata", "type", "function", "channel", "memory",
    "webhook", "with", "capabilities", "allow", "deny", "if", "else", "let", "return", "match",
    "for", "in", "try", "catch", "not", "true", "null", "name", "x", "{", "}", "[", "]", "(",
    ")", ":", "=", ",", ";", "=>", "->", "+", "-", "*", "/", "==", "&&", "||", "!", ".", "|",
    '"s"', '"""t"""', '"${A}"', '"${a"', '"\\q"', "'q'", "42", "-1", "3.5", "30s", "5.minutes",
    "vault://a/b", "# c\n", "// c\n", "/* c */", "/*", '"', "\n", " ", "@", "$", "\x00",
]  # fmt: skip


def check(text: str) -> None:
    """parse_text returns a Module and only well-formed Diagnostics, whatever the text."""
    module, diags = parse_text(text, "fuzz.symbi")
    assert isinstance(module, ast.Module)
    assert isinstance(diags, list)
    syntax = [d for d in diags if d.code in ("syntax-error", "unterminated-string",
                                              "unterminated-comment")]  # fmt: skip
    assert len(syntax) <= MAX_ERRORS
    for d in diags:
        assert isinstance(d, Diagnostic)
        assert d.code in CODES
        assert 0 <= d.span.start <= d.span.end <= len(text)
        assert "internal parser error" not in d.message, d.message


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    check(text)


@FUZZ
@given(st.lists(st.sampled_from(VOCAB), max_size=60), st.sampled_from([" ", "\n", ""]))
def test_token_soup_never_raises(tokens: list[str], joiner: str) -> None:
    check(joiner.join(tokens))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 4))):
        if not text:
            break
        i = draw(st.integers(0, len(text) - 1))
        j = draw(st.integers(i, min(len(text), i + 40)))
        op = draw(st.sampled_from(["delete", "insert", "duplicate", "replace"]))
        if op == "delete":
            text = text[:i] + text[j:]
        elif op == "insert":
            text = text[:i] + draw(st.sampled_from(VOCAB)) + text[i:]
        elif op == "duplicate":
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i] + draw(st.text(max_size=5)) + text[j:]
    return text


@FUZZ
@given(mutated())
def test_mutated_valid_files_never_raise(text: str) -> None:
    check(text)


# ------------------------------------------------------------------ round trip

KEYS = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
# `$` is left out: `${…}` in a string is an environment reference with rules of its own
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="$"), max_size=30)
SCALARS = st.integers(-(10**12), 10**12) | st.booleans() | st.none() | TEXT
DATA = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS | TEXT, inner, max_size=4),
    max_leaves=12,
)


def render(value: object, sep: str) -> str:
    """Write plain data in symbi syntax (JSON string escapes are valid symbi escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + sep.join(render(v, sep) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + sep.join(f"{json.dumps(k)}: {render(v, sep)}" for k, v in value.items()) + "}"


def plain(value: ast.Value) -> object:
    if isinstance(value, ast.NullLit):
        return None
    if isinstance(value, ast.StringLit | ast.NumberLit | ast.BoolLit):
        return value.value
    if isinstance(value, ast.ListLit):
        return [plain(v) for v in value.items]
    assert isinstance(value, ast.MapLit)
    return {p.key: plain(p.value) for p in value.entries}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, DATA, max_size=6), st.sampled_from([", ", "\n", " "]))
def test_key_value_data_round_trips(data: dict[str, object], sep: str) -> None:
    text = "schedule {\n" + "".join(f"  {k}: {render(v, sep)}\n" for k, v in data.items()) + "}\n"
    module, diags = parse_text(text)
    assert diags == [], [(d.line_col, d.message) for d in diags]
    (sched,) = module.items
    assert isinstance(sched, ast.Schedule)
    assert {p.key: plain(p.value) for p in sched.props} == data
