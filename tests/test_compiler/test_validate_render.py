"""Renderers of diagnostics: exact text of each format, SARIF validated against the schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from compiler.diagnostics import Diagnostic, Severity, diag
from compiler.render import (
    render,
    render_concise,
    render_full,
    render_github,
    render_json,
    sarif_document,
)
from compiler.source import SourceFile, Span

SARIF_SCHEMA = Path(__file__).parents[1] / "fixtures" / "sarif-2.1.0-subset.json"

TEXT = 'schedule {\n  name: "x"\n  cron: "0 25 * * *"\n\tdelivery: ["slak"]\n}\n'
SRC = SourceFile("jobs/x.symbi", TEXT)


def _span(needle: str) -> Span:
    i = TEXT.index(needle)
    return Span(i, i + len(needle))


def _diags() -> list[Diagnostic]:
    return [
        diag("unknown-channel", "unknown delivery channel `slak`", SRC, _span('"slak"'), help="did you mean `slack`"),
        diag("invalid-cron", "hour 25 is out of range 0-23", SRC, _span("25")),
        diag("undefined-agent", "agent `a` is not defined", SRC, _span('"x"'), severity=Severity.WARNING),
    ]


def test_full_format_has_location_snippet_and_carets() -> None:
    out = render_full(_diags()[1:2])
    assert out == (
        "jobs/x.symbi:3:12: error[invalid-cron]: hour 25 is out of range 0-23\n"
        "  |\n"
        '3 |   cron: "0 25 * * *"\n'
        "  |            ^^\n"
    )


def test_full_format_expands_tabs_so_carets_line_up() -> None:
    out = render_full(_diags()[0:1])
    lines = out.splitlines()
    assert lines[0] == "jobs/x.symbi:4:13: error[unknown-channel]: unknown delivery channel `slak`"
    snippet, carets = lines[2], lines[3]
    assert "\t" not in snippet
    # the carets sit exactly under "slak" with its quotes
    start = carets.index("^")
    assert snippet[start : start + 6] == '"slak"' and carets.count("^") == 6
    assert lines[4] == "  = help: did you mean `slack`"


def test_full_format_sorts_by_position_and_separates_blocks() -> None:
    out = render_full(_diags())
    heads = [line for line in out.splitlines() if line.startswith("jobs/")]
    assert [h.split(": ")[1] for h in heads] == ["warning[undefined-agent]", "error[invalid-cron]", "error[unknown-channel]"]
    assert "\n\n" in out


def test_full_format_without_source_text_has_no_snippet() -> None:
    src = SourceFile("missing.symbi", "")
    out = render_full([diag("unreadable-input", "cannot read missing.symbi: no such file", src, Span(0, 0))])
    assert out == "missing.symbi:1:1: error[unreadable-input]: cannot read missing.symbi: no such file\n"


def test_zero_width_span_gets_one_caret() -> None:
    d = diag("syntax-error", "expected `}`", SRC, Span(len(TEXT) - 1, len(TEXT) - 1))
    assert render_full([d]).splitlines()[3] == "  |  ^"  # column 2: just after the `}`


def test_multiline_span_marks_to_end_of_first_line() -> None:
    d = diag("invalid-type", "x", SRC, Span(TEXT.index("name"), TEXT.index("cron") + 2))
    carets = render_full([d]).splitlines()[3]
    assert carets.endswith("^" * len('name: "x"'))


def test_color_only_when_asked() -> None:
    assert "\x1b[" not in render(_diags(), "full")
    assert "\x1b[" in render(_diags(), "full", color=True)
    assert "\x1b[" not in render(_diags(), "json", color=True)


def test_concise_is_one_line_each() -> None:
    out = render_concise(_diags())
    assert out.splitlines() == [
        "jobs/x.symbi:2:9: warning[undefined-agent]: agent `a` is not defined",
        "jobs/x.symbi:3:12: error[invalid-cron]: hour 25 is out of range 0-23",
        "jobs/x.symbi:4:13: error[unknown-channel]: unknown delivery channel `slak`",
    ]


def test_json_objects_are_stable_and_complete() -> None:
    data = json.loads(render_json(_diags()))
    assert list(data[2]) == ["path", "line", "column", "end_line", "end_column", "severity", "code",
                             "message", "help", "notes"]
    assert data[2] == {
        "path": "jobs/x.symbi", "line": 4, "column": 13, "end_line": 4, "end_column": 19,
        "severity": "error", "code": "unknown-channel", "message": "unknown delivery channel `slak`",
        "help": ["did you mean `slack`"], "notes": [],
    }
    assert render_json([]) == "[]\n"


def test_github_annotations_escape_properties_and_data() -> None:
    src = SourceFile("a,b:c.symbi", "x\n")
    d = Diagnostic("invalid-value", "50% wrong\nreally", src, Span(0, 1), None, ("fix it",))
    out = render_github([d])
    assert out == (
        "::error file=a%2Cb%3Ac.symbi,line=1,col=1,endLine=1,endColumn=2,title=invalid-value"
        "::50%25 wrong%0Areally%0Ahelp: fix it\n"
    )
    warn = render_github(_diags()[2:3])
    assert warn.startswith("::warning file=jobs/x.symbi,line=2,col=9,")


def test_sarif_validates_against_schema_and_lists_rules() -> None:
    doc = sarif_document(_diags(), tool_version="9.9.9")
    schema = json.loads(SARIF_SCHEMA.read_text())
    jsonschema.validate(doc, schema)
    run = doc["runs"][0]
    assert run["tool"]["driver"]["name"] == "symbic" and run["tool"]["driver"]["version"] == "9.9.9"
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert rules == ["invalid-cron", "undefined-agent", "unknown-channel"]
    first = run["results"][1]
    assert first["ruleId"] == "invalid-cron" and rules[first["ruleIndex"]] == "invalid-cron"
    assert first["level"] == "error"
    region = first["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 3, "startColumn": 12, "endLine": 3, "endColumn": 14}
    assert first["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "jobs/x.symbi"
    assert run["results"][0]["level"] == "warning"


def test_sarif_schema_rejects_a_broken_document() -> None:
    """The subset schema is not vacuous: a wrong level or a missing driver name fails."""
    schema = json.loads(SARIF_SCHEMA.read_text())
    doc = sarif_document(_diags(), tool_version="1")
    doc["runs"][0]["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)
    doc = sarif_document(_diags(), tool_version="1")
    del doc["runs"][0]["tool"]["driver"]["name"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


def test_sarif_uri_is_escaped() -> None:
    src = SourceFile("dir with space/ä.symbi", "x")
    doc = sarif_document([diag("empty-file", "the file defines nothing", src, Span(0, 0))], tool_version="1")
    uri = doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "dir%20with%20space/%C3%A4.symbi"


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError):
        render([], "xml")
