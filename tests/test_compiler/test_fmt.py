"""`symbic fmt` (compiler.fmt): idempotence, meaning kept, comments kept, golden layouts, and
the individual style rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from compiler import ast
from compiler.compile import compile_sources
from compiler.diagnostics import Severity
from compiler.fmt import (
    MAX_WIDTH,
    _verify,
    ast_shape,
    canonical_string,
    comment_texts,
    format_source,
    format_text,
)
from compiler.parser import parse_text, parse_with_comments
from compiler.source import SourceFile

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "fmt"
CORPUS = sorted(
    [
        *ROOT.glob("examples/*.symbi"),
        *ROOT.glob("tests/fixtures/upstream/*.symbi"),
        *ROOT.glob("stdlib/agents/*.symbi"),
        *GOLDEN.glob("*.in.symbi"),
    ]
)
IDS = [str(p.relative_to(ROOT)) for p in CORPUS]


def fmt(text: str) -> str:
    result = format_text(text, "t.symbi")
    assert result.text is not None, [d.message for d in result.diagnostics]
    return result.text


def test_corpus_is_not_empty() -> None:
    assert len(CORPUS) >= 20


# ---------------------------------------------------------------- the guarantees


@pytest.mark.parametrize("path", CORPUS, ids=IDS)
def test_idempotent(path: Path) -> None:
    once = fmt(path.read_text(encoding="utf-8"))
    assert fmt(once) == once


@pytest.mark.parametrize("path", CORPUS, ids=IDS)
def test_comments_kept_in_order(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    _, _, before = parse_with_comments(SourceFile("in", text))
    _, diags, after = parse_with_comments(SourceFile("out", fmt(text)))
    assert not diags
    assert comment_texts(after) == comment_texts(before)
    # every comment's text is literally in the output, in order
    out, pos = fmt(text), 0
    for c in comment_texts(before):
        pos = out.index(c, pos) + len(c)


def _lowered(text: str, name: str) -> tuple[object, ...]:
    """Everything a compilation produces, minus source line numbers (formatting moves lines)."""
    result = compile_sources([SourceFile(name, text)], mode="check")
    jobs = [dataclasses.replace(j, source="") for j in result.jobs]
    agents = [dataclasses.replace(a, source="") for a in result.agents]
    diags = [(d.code, d.sev, d.message) for d in result.diagnostics]
    return tuple(jobs), tuple(agents), tuple(diags)


SEMANTIC = [p for p in CORPUS if "golden" not in str(p)]


@pytest.mark.parametrize("path", SEMANTIC, ids=[str(p.relative_to(ROOT)) for p in SEMANTIC])
def test_lowered_definitions_unchanged(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    before = _lowered(text, path.name)
    after = _lowered(fmt(text), path.name)
    assert after == before
    if "examples" in str(path):  # examples compile cleanly: the comparison covers real jobs
        assert before[0] and not [d for d in before[2] if d[1] is Severity.ERROR]


def test_examples_lower_to_jobs_and_agents() -> None:
    """The semantic comparison above is not vacuous: examples yield jobs and agents."""
    jobs = agents = 0
    for path in ROOT.glob("examples/*.symbi"):
        j, a, _ = _lowered(path.read_text(encoding="utf-8"), path.name)
        jobs, agents = jobs + len(j), agents + len(a)
    assert jobs >= 12 and agents >= 10


@pytest.mark.parametrize("path", CORPUS, ids=IDS)
def test_ast_shape_unchanged(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    before, _ = parse_text(text)
    after, diags = parse_text(fmt(text))
    assert not diags and ast_shape(after) == ast_shape(before)


GOLDEN_INPUTS = sorted(GOLDEN.glob("*.in.symbi"))


def test_golden_inputs_exist() -> None:
    assert len(GOLDEN_INPUTS) >= 5


@pytest.mark.parametrize("path", GOLDEN_INPUTS, ids=[p.name for p in GOLDEN_INPUTS])
def test_golden(path: Path, update_goldens: bool) -> None:
    expected_path = path.with_name(path.name.replace(".in.symbi", ".out.symbi"))
    got = fmt(path.read_text(encoding="utf-8"))
    if update_goldens:
        expected_path.write_text(got, encoding="utf-8")
    assert got == expected_path.read_text(encoding="utf-8")
    assert fmt(got) == got  # the expected output is itself formatted


def test_examples_are_formatted() -> None:
    """The shipped examples and stdlib agents are already in the canonical layout, except
    three written on purpose in other styles (checked to change only in layout above)."""
    unformatted = {"production_deploy.symbi", "security_scan.symbi", "upstream_style.symbi"}
    for path in [*ROOT.glob("examples/*.symbi"), *ROOT.glob("stdlib/agents/*.symbi")]:
        text = path.read_text(encoding="utf-8")
        assert (fmt(text) == text) == (path.name not in unformatted), path.name


# ---------------------------------------------------------------- style rules


def test_separators_indentation_and_one_property_per_line() -> None:
    src = 'schedule{name="a" ,agent : "echo";cron:"@daily"}'
    assert fmt(src) == 'schedule {\n  name: "a"\n  agent: "echo"\n  cron: "@daily"\n}\n'


def test_metadata_and_capabilities_keep_their_separator() -> None:
    src = 'metadata { a = 1, b: 2 }\nagent x { capabilities = ["r"] model = "m" }\n'
    assert fmt(src) == (
        'metadata {\n  a = 1\n  b: 2\n}\n\nagent x {\n  capabilities = ["r"]\n  model: "m"\n}\n'
    )


def test_nested_block_and_map_forms_are_kept() -> None:
    src = "schedule { policy { max_runtime: 1 } heartbeat = { enabled: true } }"
    assert fmt(src) == (
        "schedule {\n  policy {\n    max_runtime: 1\n  }\n"
        "  heartbeat: {\n    enabled: true\n  }\n}\n"
    )


def test_blank_lines_between_items_and_inside_blocks() -> None:
    src = "schedule a {\n\n\n  x: 1\n\n\n\n  y: 2\n\n}\nschedule b {}\n\n\n\nschedule c {}"
    assert fmt(src) == "schedule a {\n  x: 1\n\n  y: 2\n}\n\nschedule b {}\n\nschedule c {}\n"


def test_list_fits_on_one_line_or_breaks_with_trailing_commas() -> None:
    short = 'agent x { tags: [ "a" ,"b", ] }'
    assert fmt(short) == 'agent x {\n  tags: ["a", "b"]\n}\n'
    items = [f'"item-{i:02d}"' for i in range(12)]
    long = "agent x { tags: [" + ", ".join(items) + "] }"
    out = fmt(long)
    assert out == "agent x {\n  tags: [\n" + "".join(f"    {i},\n" for i in items) + "  ]\n}\n"
    assert max(len(line) for line in out.splitlines()) <= MAX_WIDTH


def test_list_width_limit_is_exactly_max_width() -> None:
    def line_for(n: int) -> str:
        return f'  tags: ["{"x" * n}"]'

    fit = MAX_WIDTH - len(line_for(0))
    ok = fmt(f'agent a {{ tags: ["{"x" * fit}"] }}')
    assert line_for(fit) in ok.splitlines()
    broken = fmt(f'agent a {{ tags: ["{"x" * (fit + 1)}"] }}')
    assert "  tags: [" in broken.splitlines() and f'    "{"x" * (fit + 1)}",' in broken


def test_maps_one_entry_per_line() -> None:
    src = 'agent a { env: { A: "1", "B-2" = "2" } }'
    assert fmt(src) == 'agent a {\n  env: {\n    A: "1"\n    "B-2": "2"\n  }\n}\n'


def test_numbers_and_durations_as_written() -> None:
    src = "metadata { a = 1_000, b = 3.14, c = 1e6, d = -  7, e = 5.minutes, f = 1h30m, g = - 5m }"
    out = fmt(src)
    for expected in ["a = 1_000", "b = 3.14", "c = 1e6", "d = -7", "e = 5.minutes",
                     "f = 1h30m", "g = -5m"]:  # fmt: skip
        assert f"  {expected}\n" in out


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ('"plain"', '"plain"'),
        ('"a\\/b"', '"a/b"'),
        ('"caf\\u00e9"', '"café"'),
        ('"\\u{1F600}"', '"\U0001f600"'),
        ('"say \\"hi\\""', '"say \\"hi\\""'),
        ('"tab\\there"', '"tab\\there"'),
        ('"it\\\'s"', '"it\'s"'),
        ('"zero\\u200bwidth"', '"zero\\u200bwidth"'),  # invisible: stays escaped
        ('"${HOME} $${x}"', '"${HOME} $${x}"'),
        ('"\\u0024{X}"', '"\\u0024{X}"'),  # must not turn into a ${X} reference
        ('"two\nlines"', '"two\nlines"'),  # written across lines: kept
    ],
)
def test_canonical_string(raw: str, canonical: str) -> None:
    assert canonical_string(raw) == canonical


def test_triple_quoted_string_kept_exactly() -> None:
    src = 'agent a {\n    system_prompt: """\n      Line one.\n        Indented.\n    """\n}\n'
    assert (
        fmt(src)
        == 'agent a {\n  system_prompt: """\n      Line one.\n        Indented.\n    """\n}\n'
    )


def test_verbatim_bodies_reindented_from_four_to_two_spaces() -> None:
    src = (
        "agent a {\n"
        "    with timeout = 5.minutes {\n"
        "        let x = f(\n"
        "            1,\n"
        "        );\n"
        "        x\n"
        "    }\n"
        "}\n"
    )
    assert fmt(src) == (
        "agent a {\n  with timeout = 5.minutes {\n    let x = f(\n      1,\n    );\n    x\n  }\n}\n"
    )


def test_verbatim_body_with_multiline_string_is_not_reindented() -> None:
    body = '    with timeout = 5m {\n        let s = "a\n    b";\n        s\n    }\n'
    out = fmt("agent a {\n" + body + "}\n")
    # the string spans lines: only the first line moves, nothing inside changes
    assert out == "agent a {\n  " + body.lstrip(" ") + "}\n"


def test_top_level_upstream_blocks_echoed() -> None:
    src = 'memory m {\n    store markdown\n    search { vector_weight 0.7 }\n}\nwebhook w { path "/x" }\n'
    assert fmt(src) == (
        "memory m {\n  store markdown\n  search { vector_weight 0.7 }\n}\n\n"
        'webhook w { path "/x" }\n'
    )


def test_agent_header_rebuilt() -> None:
    src = "agent  x ( a : Int , b : [ Map<String,int> ]? )->Out{}\nagent y(){}\n"
    assert fmt(src) == "agent x(a: Int, b: [Map<String, int>]?) -> Out {}\n\nagent y() {}\n"


def test_empty_and_comment_only_files() -> None:
    assert fmt("") == ""
    assert fmt(" \n\n") == ""
    assert fmt("# a\n\n\n\n// b") == "# a\n\n// b\n"


def test_crlf_and_bom_free_output() -> None:
    assert fmt('schedule {\r\n  name: "x" // c\r\n}\r\n') == 'schedule {\n  name: "x"  // c\n}\n'


# ---------------------------------------------------------------- comments


def test_trailing_comment_stays_on_its_line() -> None:
    src = 'schedule {\n  cron: "@daily"     # daily\n  name: "x" /* b */ // l\n}  # end\n'
    assert (
        fmt(src) == 'schedule {\n  cron: "@daily"  # daily\n  name: "x"  /* b */ // l\n}  # end\n'
    )


def test_own_line_comment_moves_to_element_indentation() -> None:
    src = "schedule {\n        # about x\n  x: 1\n# before the brace\n}\n"
    assert fmt(src) == "schedule {\n  # about x\n  x: 1\n  # before the brace\n}\n"


def test_comment_inside_a_one_line_element_moves_above_it() -> None:
    src = "schedule { x: /* why */ 1 }"
    assert fmt(src) == "schedule {\n  /* why */\n  x: 1\n}\n"


def test_comment_in_a_list_forces_one_item_per_line() -> None:
    src = 'agent a { tags: ["x", # first\n "y"] }'
    assert fmt(src) == 'agent a {\n  tags: [\n    "x",  # first\n    "y",\n  ]\n}\n'


def test_comment_like_text_in_strings_and_vault_refs_is_not_a_comment() -> None:
    src = 'metadata { a = "# not // a /* comment" b = vault://x//y }\n'
    _, _, comments = parse_with_comments(SourceFile("t", src))
    assert comments == []
    assert fmt(src) == 'metadata {\n  a = "# not // a /* comment"\n  b = vault://x//y\n}\n'


# ---------------------------------------------------------------- refusals and safety


def test_syntax_error_is_not_formatted() -> None:
    result = format_text('schedule {\n  name: "x"\n', "bad.symbi")
    assert result.text is None and not result.ok
    assert [d.code for d in result.diagnostics] == ["syntax-error"]


def test_bad_escape_is_not_formatted() -> None:
    result = format_text('schedule { name: "a\\qb" }')
    assert result.text is None and result.diagnostics[0].code == "invalid-escape"


def test_validation_errors_do_not_stop_formatting() -> None:
    # unknown keys, bad cron: a formatter only needs the syntax
    assert (
        fmt('schedule{nme:"x" cron:"99 * * * *"}')
        == 'schedule {\n  nme: "x"\n  cron: "99 * * * *"\n}\n'
    )


@pytest.mark.parametrize(
    ("wrong", "reason"),
    [
        ('schedule {\n  name: "x"\n}\n', "comment"),  # the comment was dropped
        ('schedule {\n  name: "y"  # c\n}\n', "mean something else"),
        ('schedule {\n  name: "x"  # c\n', "does not parse"),
        ('# c\nschedule {\n  name: "x"\n}\n', None),  # a moved comment is still in order
    ],
)
def test_verification_catches_unfaithful_output(wrong: str, reason: str | None) -> None:
    src = SourceFile("t.symbi", 'schedule { name: "x" } # c')
    module, _, comments = parse_with_comments(src)
    problem = _verify(src, module, comments, wrong)
    if reason is None:
        assert problem is None
    else:
        assert problem is not None and reason in problem


def test_format_source_reports_format_failed_instead_of_bad_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import compiler.fmt as fmt_module

    def broken(self: object, module: ast.Module) -> str:
        return 'schedule {\n  name: "changed"\n}\n'

    monkeypatch.setattr(fmt_module._Printer, "module", broken)
    result = format_source(SourceFile("t.symbi", 'schedule { name: "x" }'))
    assert result.text is None
    assert [d.code for d in result.diagnostics] == ["format-failed"]
    assert result.diagnostics[0].sev is Severity.ERROR
