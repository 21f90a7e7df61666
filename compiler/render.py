"""Diagnostic renderers: ``full``, ``concise``, ``json``, ``sarif``, ``github``.

Lines and columns are 1-based, columns count Unicode code points; end positions are exclusive
(the column after the last character), as in SARIF. Colour (plain ANSI) is used only when the
caller asks for it, which the CLI does only on a terminal.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from compiler.diagnostics import CODES, Diagnostic, Severity

FORMATS = ("full", "concise", "json", "sarif", "github")

_SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_INFO_URI = "https://github.com/symbi/symbi/blob/main/docs/language.md"

_RESET = "\x1b[0m"
_STYLE = {
    Severity.ERROR: "\x1b[1;31m",
    Severity.WARNING: "\x1b[1;33m",
    Severity.NOTE: "\x1b[1;36m",
    "gutter": "\x1b[1;34m",
    "help": "\x1b[1;36m",
    "bold": "\x1b[1m",
}


def _paint(text: str, style: Severity | str, color: bool) -> str:
    return f"{_STYLE[style]}{text}{_RESET}" if color else text


def _ordered(diags: Sequence[Diagnostic]) -> list[Diagnostic]:
    return sorted(diags, key=Diagnostic.sort_key)


def _head(d: Diagnostic, color: bool) -> str:
    line, col = d.line_col
    sev = d.sev.value
    label = _paint(f"{sev}[{d.code}]", d.sev, color)
    loc = _paint(f"{d.source.name}:{line}:{col}:", "bold", color)
    return f"{loc} {label}: {d.message}"


def render_full(diags: Sequence[Diagnostic], *, color: bool = False) -> str:
    """rustc/ruff-like: location line, source snippet with gutter and carets, help/note lines."""
    blocks = []
    for d in _ordered(diags):
        out = [_head(d, color)]
        line, col = d.line_col
        end_line, end_col = d.end_line_col
        text = d.source.line_text(line)
        if d.source.text:
            width = len(str(line))
            pad = " " * width
            bar = _paint("|", "gutter", color)
            # Tabs are expanded so the carets line up under the text as a terminal shows it.
            before = text[: col - 1].expandtabs(4)
            last = end_col if end_line == line else len(text) + 1
            marked = text[col - 1 : max(last - 1, col - 1)].expandtabs(4)
            carets = "^" * max(1, len(marked))
            out.append(f"{pad} {bar}")
            out.append(f"{_paint(str(line), 'gutter', color)} {bar} {text.expandtabs(4)}".rstrip())
            out.append(f"{pad} {bar} {' ' * len(before)}{_paint(carets, d.sev, color)}")
            for h in d.help:
                out.append(f"{pad} = {_paint('help', 'help', color)}: {h}")
            for n in d.notes:
                out.append(f"{pad} = {_paint('note', 'bold', color)}: {n}")
        else:
            for h in d.help:
                out.append(f"  = {_paint('help', 'help', color)}: {h}")
            for n in d.notes:
                out.append(f"  = {_paint('note', 'bold', color)}: {n}")
        blocks.append("\n".join(out))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def render_concise(diags: Sequence[Diagnostic], *, color: bool = False) -> str:
    """One line per diagnostic: ``path:line:col: severity[code]: message``."""
    return "".join(_head(d, color) + "\n" for d in _ordered(diags))


def diagnostic_to_dict(d: Diagnostic) -> dict[str, Any]:
    """The stable JSON object of one diagnostic."""
    line, col = d.line_col
    end_line, end_col = d.end_line_col
    return {
        "path": d.source.name,
        "line": line,
        "column": col,
        "end_line": end_line,
        "end_column": end_col,
        "severity": d.sev.value,
        "code": d.code,
        "message": d.message,
        "help": list(d.help),
        "notes": list(d.notes),
    }


def render_json(diags: Sequence[Diagnostic]) -> str:
    """A JSON array of diagnostic objects (keys: path, line, column, end_line, end_column,
    severity, code, message, help, notes), sorted by path and position."""
    return json.dumps([diagnostic_to_dict(d) for d in _ordered(diags)], indent=2, ensure_ascii=False) + "\n"


def _sarif_level(sev: Severity) -> str:
    return {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "note"}[sev]


def _uri(path: str) -> str:
    from pathlib import PurePath
    from urllib.parse import quote

    return quote(PurePath(path).as_posix(), safe="/:@-._~")


def sarif_document(diags: Sequence[Diagnostic], *, tool_version: str) -> dict[str, Any]:
    """A SARIF 2.1.0 log with one run of ``symbic``."""
    ordered = _ordered(diags)
    codes = sorted({d.code for d in ordered})
    index = {c: i for i, c in enumerate(codes)}
    rules = [
        {
            "id": c,
            "name": "".join(w.capitalize() for w in c.split("-")),
            "shortDescription": {"text": CODES[c].summary},
            "defaultConfiguration": {"level": _sarif_level(CODES[c].severity)},
            "helpUri": _INFO_URI,
        }
        for c in codes
    ]
    results = []
    for d in ordered:
        line, col = d.line_col
        end_line, end_col = d.end_line_col
        text = d.message
        if d.help:
            text += "\n" + "\n".join(f"help: {h}" for h in d.help)
        results.append(
            {
                "ruleId": d.code,
                "ruleIndex": index[d.code],
                "level": _sarif_level(d.sev),
                "message": {"text": text},
                "locations": [
                    {
                        "physicalLocation": {
                            "artifactLocation": {"uri": _uri(d.source.name), "uriBaseId": "%SRCROOT%"},
                            "region": {
                                "startLine": line,
                                "startColumn": col,
                                "endLine": end_line,
                                "endColumn": max(end_col, col) if end_line == line else end_col,
                            },
                        }
                    }
                ],
            }
        )
    return {
        "$schema": _SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "symbic",
                        "version": tool_version,
                        "informationUri": _INFO_URI,
                        "rules": rules,
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }


def render_sarif(diags: Sequence[Diagnostic], *, tool_version: str) -> str:
    """SARIF 2.1.0 JSON text."""
    return json.dumps(sarif_document(diags, tool_version=tool_version), indent=2, ensure_ascii=False) + "\n"


def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_prop(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(diags: Sequence[Diagnostic]) -> str:
    """GitHub Actions workflow commands (``::error file=…,line=…::message``)."""
    kind = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.NOTE: "notice"}
    lines = []
    for d in _ordered(diags):
        line, col = d.line_col
        end_line, end_col = d.end_line_col
        props = (f"file={_gh_prop(d.source.name)},line={line},col={col},endLine={end_line},"
                 f"endColumn={end_col},title={_gh_prop(d.code)}")
        msg = d.message + "".join(f"\nhelp: {h}" for h in d.help)
        lines.append(f"::{kind[d.sev]} {props}::{_gh_data(msg)}\n")
    return "".join(lines)


def render(diags: Sequence[Diagnostic], fmt: str, *, color: bool = False, tool_version: str = "") -> str:
    """Render ``diags`` in one of ``FORMATS``."""
    if fmt == "full":
        return render_full(diags, color=color)
    if fmt == "concise":
        return render_concise(diags, color=color)
    if fmt == "json":
        return render_json(diags)
    if fmt == "sarif":
        return render_sarif(diags, tool_version=tool_version)
    if fmt == "github":
        return render_github(diags)
    raise ValueError(f"unknown diagnostic format {fmt!r}")
