"""Syntax errors: human messages, precise locations, several per file, never a traceback."""

from __future__ import annotations

import re

import pytest

from compiler import ast
from compiler import parser as parser_mod
from compiler.diagnostics import CODES, Diagnostic
from compiler.parser import MAX_ERRORS, parse_source, parse_text
from compiler.source import SourceFile


def errors(text: str) -> list[Diagnostic]:
    _, diags = parse_text(text)
    return diags


def one(text: str) -> Diagnostic:
    diags = errors(text)
    assert len(diags) == 1, [(d.line_col, d.message) for d in diags]
    return diags[0]


def at(d: Diagnostic) -> tuple[int, int]:
    return d.line_col


def test_missing_separator_after_property_name() -> None:
    d = one('schedule {\n  name: "a"\n  cron "0 9 * * *"\n}\n')
    assert d.code == "syntax-error"
    assert d.message.startswith("expected `:` or `=` after property name `cron`")
    assert at(d) == (3, 8)  # the string that should have followed a `:`
    assert any("cron: value" in h for h in d.help)


def test_missing_separator_recovers_the_property() -> None:
    module, diags = parse_text('schedule {\n  cron "0 9 * * *"\n  agent: "a"\n}\n')
    assert len(diags) == 1
    (sched,) = module.items
    assert isinstance(sched, ast.Schedule)
    assert [p.key for p in sched.props] == ["cron", "agent"]


def test_missing_closing_brace_at_end_of_file() -> None:
    text = '# a comment\n\nschedule {\n  name: "a"\n  cron: "0 9 * * *"\n'
    d = one(text)
    assert d.message == "expected `}` to close the `schedule` block opened at line 3"
    assert d.span.start == len(text)  # located at the end of the file
    assert any("line 3" in h for h in d.help)


def test_missing_closing_brace_of_a_nested_block() -> None:
    d = one('agent "a" {\n  model: "x"\n  env {\n    A: "1"\n}\n')
    assert "close the `agent` block opened at line 1" in d.message


def test_unclosed_list_names_the_list() -> None:
    d = one('schedule {\n  delivery: ["a", "b"\n}\n')
    assert d.message == "expected `]`, found `}`"
    assert at(d) == (2, 22)  # right after the last item: where the `]` is missing
    assert any("end of line 2" in h for h in d.help)


def test_item_keyword_at_line_start_inside_a_block() -> None:
    text = 'schedule {\n  name: "a"\n\nagent foo {\n  model: "x"\n}\n'
    module, diags = parse_text(text)
    (d,) = diags
    assert d.message == "expected `}` to close the `schedule` block opened at line 1"
    assert at(d) == (4, 1)
    # both items survive the recovery
    assert [type(i).__name__ for i in module.items] == ["Schedule", "Agent"]
    agent = module.items[1]
    assert isinstance(agent, ast.Agent) and [p.key for p in agent.props] == ["model"]


def test_missing_semicolon_points_at_the_end_of_the_statement() -> None:
    d = one("function f() {\n  let x = 1\n  let y = 2;\n}\n")
    assert d.message == "expected `;`, found `let`"
    assert at(d) == (2, 12)
    assert any("end of line 2" in h for h in d.help)


def test_misspelled_item_keyword_suggests_the_keyword() -> None:
    d = one('shedule {\n  name: "a"\n}\n')
    assert d.message.startswith("expected an item (")
    assert "found `shedule`" in d.message
    assert "did you mean `schedule`" in d.help


def test_stray_closing_brace() -> None:
    d = one('schedule {\n  name: "a"\n}\n}\n')
    assert at(d) == (4, 1)
    assert "found `}`" in d.message
    assert any("no matching" in h for h in d.help)


def test_missing_value() -> None:
    d = one("schedule {\n  name:\n}\n")
    assert d.message == "expected a value, found `}`"


def test_missing_value_before_the_next_property() -> None:
    # without newlines mattering, `agent` is read as the value of `name`; say what happened
    d = one('schedule {\n  name:\n  agent: "a"\n}\n')
    assert d.message == "expected a value after `:`, found end of line"
    assert at(d) == (2, 8)
    assert any("`agent` on line 3" in h for h in d.help)


def test_single_quotes_are_not_strings() -> None:
    module, diags = parse_text("schedule {\n  name: 'daily'\n  agent: \"a\"\n}\n")
    (d,) = diags
    assert d.message == "strings use double quotes, not `'`"
    assert '"daily"' in d.help[0]
    assert at(d) == (2, 9)
    # read as the string it was meant to be, so nothing else is reported or lost
    (sched,) = module.items
    assert isinstance(sched, ast.Schedule)
    assert [(p.key, getattr(p.value, "value", None)) for p in sched.props] == [
        ("name", "daily"),
        ("agent", "a"),
    ]


def test_unterminated_string() -> None:
    d = one('schedule {\n  name: "daily\n}\n')
    assert d.code == "unterminated-string"
    assert at(d) == (2, 9)


def test_unterminated_triple_quoted_string() -> None:
    d = one('agent a {\n  system_prompt: """\n  text\n}\n')
    assert d.code == "unterminated-string"
    assert "triple-quoted" in d.message
    assert at(d) == (2, 18)


def test_unterminated_block_comment() -> None:
    d = one('schedule {\n  name: "a"\n  /* note\n}\n')
    assert d.code == "unterminated-comment"
    assert at(d) == (3, 3)


def test_unterminated_block_comment_inside_an_expression() -> None:
    d = one("function f() {\n  let x = a /* oops\n  b;\n}\n")
    assert d.code == "unterminated-comment"
    assert at(d) == (2, 13)


def test_invalid_escape_points_at_the_backslash() -> None:
    text = 'schedule {\n  name: "a\\qb"\n}\n'
    d = one(text)
    assert d.code == "invalid-escape"
    assert text[d.span.start : d.span.end] == "\\q"


def test_invalid_env_refs_point_inside_the_string() -> None:
    text = 'schedule {\n  token: "x ${lower} y ${} z ${OPEN"\n}\n'
    diags = errors(text)
    assert [d.code for d in diags] == ["invalid-env-ref"] * 3
    spans = [text[d.span.start : d.span.end] for d in diags]
    assert spans[0] == "${lower}"
    assert spans[1] == "${}"
    assert spans[2].startswith("${OPEN")
    assert any("${LOWER}" in h for h in diags[0].help)
    assert "not closed" in diags[2].message


def test_dollar_dollar_brace_is_not_an_env_ref() -> None:
    assert errors('schedule { a: "$${lower} costs $5" }') == []


def test_several_errors_in_one_file_without_avalanche() -> None:
    text = """\
schedule {
  name: "one"
  cron "0 9 * * *"
  agent: "a"
}

schedule {
  name: "two" @
  delivery: ["stdout" "log_file"]
}

agent a {
  model: "x"
  timeout: 5 5
}
"""
    diags = errors(text)
    assert [at(d)[0] for d in diags] == [3, 8, 14]
    assert all(d.code == "syntax-error" for d in diags)


def test_error_count_is_capped() -> None:
    text = "schedule {\n" + "".join(f'  key{i} "v"\n' for i in range(40)) + "}\n"
    diags = errors(text)
    assert len(diags) == MAX_ERRORS
    # each reported error is on its own line, in order
    lines = [at(d)[0] for d in diags]
    assert lines == sorted(set(lines))


def test_errors_in_statement_bodies_recover_per_statement() -> None:
    text = "function f() {\n  let = 1;\n  let y = 2;\n  foo(a b);\n  return y +;\n}\n"
    diags = errors(text)
    assert [at(d)[0] for d in diags] == [2, 4, 5]


BROKEN = [
    "schedule",
    "schedule {",
    "schedule { name: }",
    "schedule { name: [1, 2 }",
    'schedule { name: "a" ] }',
    "agent",
    "agent a(",
    "agent a() -> {",
    "agent a { with x = { } }",
    "agent a { policy p { allow } }",
    "agent a { capabilities }",
    "policy { }",
    "type = 1",
    "type T = { a: }",
    "function f( { }",
    "function f() { let x = ; }",
    "function f() { if { } }",
    "function f() { match x { => 1 } }",
    "function f() { try { } }",
    "function f() { x = y = ; }",
    "memory m { store }",
    "webhook w { filter { a } }",
    "channel c { policy }",
    "metadata { a b c }",
    "}}}}",
    "{",
    "@@@@",
    '"',
    '"""',
    "/*",
    "schedule { name: 5min }",
    "schedule { a: -x }",
    "schedule { a: vault: }",
    "\x00\x01",
    "schedule { a: 1 } \u00e9t\u00e9",
]


@pytest.mark.parametrize("text", BROKEN)
def test_broken_input_gives_clean_diagnostics(text: str) -> None:
    module, diags = parse_source(SourceFile("t.symbi", text))
    assert isinstance(module, ast.Module)
    assert diags, "broken input must be reported"
    assert len(diags) <= MAX_ERRORS
    for d in diags:
        assert d.code in CODES
        assert 0 <= d.span.start <= d.span.end <= len(text)
        assert d.message and d.message[0].islower() and not d.message.endswith(".")
        # no raw lark terminal names (RBRACE, __ANON_0, $END …) leak into messages
        assert not re.search(r"\b[A-Z][A-Z_0-9]{3,}\b|__ANON|\$END", d.message), d.message
        assert "internal" not in d.message


def test_internal_failure_becomes_a_diagnostic(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_args: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(parser_mod, "_parse", explode)
    module, diags = parse_text("schedule { }")
    assert module.items == ()
    (d,) = diags
    assert d.code == "syntax-error"
    assert "internal parser error" in d.message and "boom" in d.message
    assert d.help


@pytest.mark.parametrize(
    "text",
    [
        "schedule { a: " + "[" * 3000 + "]" * 3000 + " }",
        "function f() { let x = " + " + ".join(["a"] * 3000) + "; }",
    ],
)
def test_absurd_nesting_is_a_diagnostic(text: str) -> None:
    module, diags = parse_text(text)
    (d,) = diags
    assert d.code == "syntax-error"
    assert d.message == "the file nests too deeply to compile"
