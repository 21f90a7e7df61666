"""${NAME} expansion at run time (SPEC §1.1)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.envexpand import MissingEnvVar, expand, refs, unescape

ENV = {"HOME": "/home/u", "A": "1", "B_2": "two", "EMPTY": "", "_X": "x"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("", ""),
        ("${HOME}/bin", "/home/u/bin"),
        ("${A}${B_2}", "1two"),
        ("a=${A}, b=${B_2}.", "a=1, b=two."),
        ("${EMPTY}|", "|"),  # empty value counts as set
        ("${_X}", "x"),
        ("$${A}", "${A}"),  # escape: literal ${
        ("$$${A}", "$${A}"),  # "$" then the escape "$${" then "A}"
        ("$${", "${"),
        ("$A $HOME", "$A $HOME"),  # only the braced form is a reference
        ("${lower}", "${lower}"),  # not a NAME: left as written
        ("${1A}", "${1A}"),
        ("${A", "${A"),  # unterminated
        ("$", "$"),
        ("cost: $5", "cost: $5"),
        ("${A}$${B_2}${B_2}", "1${B_2}two"),
        ("ünï ${A} ✓", "ünï 1 ✓"),
    ],
)
def test_expand_table(text: str, expected: str) -> None:
    assert expand(text, ENV) == expected


def test_value_is_not_rescanned() -> None:
    # a value that itself looks like a reference is inserted verbatim
    assert expand("${V}", {"V": "${A}", "A": "no"}) == "${A}"


@pytest.mark.parametrize(
    ("text", "name"), [("${NOPE}", "NOPE"), ("ok ${A} then ${MISSING_1}", "MISSING_1")]
)
def test_missing_variable_raises_with_clear_message(text: str, name: str) -> None:
    with pytest.raises(MissingEnvVar) as info:
        expand(text, ENV)
    assert info.value.name == name
    assert str(info.value) == f"environment variable `{name}` is not set"


def test_escaped_reference_to_missing_variable_is_fine() -> None:
    assert expand("$${NOPE}", {}) == "${NOPE}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("${A}", ["A"]),
        ("${B} ${A} ${B}", ["B", "A"]),  # order of first appearance, no duplicates
        ("$${A} ${C}", ["C"]),  # escaped is not a reference
        ("${lower} $A ${A", []),
    ],
)
def test_refs_table(text: str, expected: list[str]) -> None:
    assert refs(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("echo ${A} $${F}", "echo ${A} ${F}"), ("no refs", "no refs"), ("$$${A}", "$${A}")],
)
def test_unescape_keeps_references_and_drops_escapes(text: str, expected: str) -> None:
    assert unescape(text) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="${}AB_a1 x", max_size=30))
def test_expand_raises_exactly_when_a_reference_is_unset(text: str) -> None:
    env = {"A": "<a>"}
    missing = [name for name in refs(text) if name not in env]
    if missing:
        with pytest.raises(MissingEnvVar) as info:
            expand(text, env)
        assert info.value.name == missing[0]
    else:
        out = expand(text, env)
        if "$" not in text:
            assert out == text
        # every reference is resolved and no escape survives: re-scanning finds no reference
        # except those the escapes produced on purpose
        assert len(refs(out)) <= text.count("$${")
