"""Property tests for `symbic fmt` on generated key/value files written in random layouts:
formatting succeeds, is idempotent, keeps every comment in order and keeps the meaning (the
AST without positions). Plus: formatting arbitrary text never raises."""

from __future__ import annotations

import random
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.fmt import ast_shape, comment_texts, format_text
from compiler.parser import parse_with_comments
from compiler.source import SourceFile

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEYS = ["name", "agent", "cron", "at", "tags", "input", "max_retries", "delivery", "env", "x",
        "y_2", "timezone", "heartbeat", "allowed_hours", "webhook_headers", "model"]  # fmt: skip
AGENT_KEYS = [k for k in KEYS if k != "agent"] + ["command", "timeout"]
NAMES = ["job", "daily_report", "w2"]

# ------------------------------------------------------------------ layout pieces

_word = st.text(st.sampled_from("abcxyz019 -_.,:;!?()[]{}<>'éß"), max_size=12)
space = st.sampled_from([" ", "  ", "", "\t"])


@st.composite
def line_comment(draw: st.DrawFn) -> str:
    return (draw(st.sampled_from(["#", "//", "# ", "// "])) + draw(_word)).rstrip()


@st.composite
def block_comment(draw: st.DrawFn) -> str:
    return "/*" + draw(_word) + draw(st.sampled_from(["", "\n", "\n  "])) + draw(_word) + "*/"


@st.composite
def gap(draw: st.DrawFn, need: bool = True, sep: bool = True) -> str:
    """Whitespace between entries, possibly with comments and (``sep``) at most one ``,``/``;``;
    never empty when ``need``."""
    parts: list[str] = []
    kinds = ["nl", "blank", "line", "block"] + (["sep"] if sep else [])
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from(kinds))
        if kind == "nl":
            parts.append("\n" + draw(space))
        elif kind == "blank":
            parts.append("\n\n" + draw(space))
        elif kind == "line":
            parts.append(" " + draw(space) + draw(line_comment()) + "\n" + draw(space))
        elif kind == "block":
            parts.append(" " + draw(block_comment()) + " ")
        else:
            parts.append(draw(st.sampled_from([",", ";", " ,", ", "])) + draw(space))
            kinds.remove("sep")
    text = "".join(parts)
    if need and not text.strip(" \t,;"):
        text += draw(st.sampled_from([" ", "\n", "\n  "]))
    return text


# ------------------------------------------------------------------ values

_plain = st.text(st.sampled_from("abc XYZ 09-_./:#*é😀{}"), max_size=8)
_ESCAPES = ["\\n", "\\t", '\\"', "\\\\", "\\/", "\\u00e9", "\\u{1F600}", "${HOME}",
            "${API_KEY}", "$${", "\\u0024", "\u200b"]  # fmt: skip
_SCALARS = ["true", "false", "null", "echo", "some_ident", "vault://a/b-c.d", "30s", "5m",
            "1h30m", "500ms", "2d", "1w", "5.minutes", "1.hours", "1_000", "3.14", "1e6",
            "2.5E-3", "0", "-1", "- 7", "-5m", "-2.5E-3"]  # fmt: skip


@st.composite
def scalar(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 5))
    if kind <= 1:  # a string with escapes, references, non-ASCII
        pieces = draw(st.lists(st.one_of(_plain, st.sampled_from(_ESCAPES)), max_size=5))
        return '"' + "".join(pieces) + '"'
    if kind == 2:  # triple-quoted, content kept exactly
        ind = draw(st.sampled_from(["", "  ", "    "]))
        lines = draw(st.lists(st.text(st.sampled_from("abc de'#/{}"), max_size=10), max_size=3))
        return '"""\n' + "".join(f"{ind}{ln}\n" for ln in lines) + ind + '"""'
    if kind == 3:
        return str(draw(st.integers(0, 10**7)))
    return draw(st.sampled_from(_SCALARS))


@st.composite
def value(draw: st.DrawFn, depth: int = 2) -> str:
    kind = draw(st.integers(0, 7)) if depth > 0 else 0
    if kind == 6:  # a list; commas optional between items, a trailing one allowed
        items = draw(st.lists(value(depth - 1), max_size=5))
        out = "[" + draw(gap(need=False, sep=False))
        for i, item in enumerate(items):
            out += item
            last = i == len(items) - 1
            if draw(st.integers(0, 3)) > 0 if not last else draw(st.booleans()):
                out += draw(space) + "," + draw(gap(need=False, sep=False))
            elif not last:
                out += draw(gap(sep=False))
        return out + draw(space) + "]"
    if kind == 7:
        return "{" + draw(entries(KEYS, depth - 1, max_size=4)) + "}"
    return draw(scalar())


@st.composite
def entries(draw: st.DrawFn, keys: list[str], depth: int = 2, max_size: int = 6) -> str:
    out = draw(gap(need=False, sep=False))
    for key in draw(st.lists(st.sampled_from(keys), max_size=max_size)):
        if draw(st.integers(0, 3)) == 0:
            key = '"' + key.replace("_", "-") + '"'  # a string key
        if depth > 0 and draw(st.integers(0, 4)) == 0:  # a nested block `key { … }`
            out += key + draw(space) + "{" + draw(entries(KEYS, depth - 1, max_size=3)) + "}"
        else:
            sep = draw(st.sampled_from([":", "="]))
            out += key + draw(space) + sep + draw(space) + draw(value(depth))
        out += draw(gap())
    return out


@st.composite
def module(draw: st.DrawFn) -> str:
    out = draw(gap(need=False, sep=False))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["schedule", "named", "agent", "metadata", "policy"]))
        if kind == "schedule":
            head = "schedule"
        elif kind == "named":
            head = "schedule " + draw(st.sampled_from([*NAMES, '"daily-report"']))
        elif kind == "agent":
            head = "agent " + draw(st.sampled_from([*NAMES, '"my-agent"']))
        elif kind == "metadata":
            head = "metadata"
        else:
            head = "policy " + draw(st.sampled_from(NAMES))
        keys = AGENT_KEYS if kind == "agent" else KEYS
        out += head + draw(space) + "{" + draw(entries(keys)) + "}"
        out += draw(st.sampled_from(["\n", "\n\n", " ", ";\n", "\n\n\n"]))
        out += draw(gap(need=False, sep=False))
    return out


# ------------------------------------------------------------------ properties


@SETTINGS
@given(module())
def test_generated_files_format_faithfully(text: str) -> None:
    before, diags, c_before = parse_with_comments(SourceFile("a", text))
    assert not diags, (text, [d.message for d in diags])  # the generator writes valid files
    result = format_text(text)
    assert result.text is not None, (text, [d.message for d in result.diagnostics])
    out = result.text
    # idempotent
    assert format_text(out).text == out
    # same meaning, and every comment in order
    after, diags_after, c_after = parse_with_comments(SourceFile("b", out))
    assert not diags_after and ast_shape(after) == ast_shape(before)
    assert comment_texts(c_after) == comment_texts(c_before)
    # canonical surface: no trailing blanks (outside text kept as written), one final newline
    if '"""' not in text and "/*" not in text:
        assert all(line == line.rstrip() for line in out.splitlines())
    assert out == "" or (out.endswith("\n") and not out.endswith("\n\n"))


TOKENS = [
    "schedule", "agent", "policy", "metadata", "with", "{", "}", "[", "]", "(", ")", ":", "=",
    ",", ";", "->", "x", "name", '"s"', '"""t"""', "42", "-", "30s", "# c\n", "/* c */", "\n",
    " ", "if", "allow", "let", "return", '"${A}"', "vault://a",
]  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_formatting_any_text_never_raises(text: str) -> None:
    result = format_text(text)
    if result.text is None:
        assert result.diagnostics  # refused, with a reason
        assert all(d.code != "format-failed" for d in result.diagnostics), text
    else:
        assert format_text(result.text).text == result.text


# ------------------------------------------------------------------ real files, re-laid out

ROOT = Path(__file__).resolve().parents[2]
CORPUS = [
    p.read_text(encoding="utf-8")
    for p in sorted([*ROOT.glob("examples/*.symbi"), *ROOT.glob("tests/fixtures/upstream/*.symbi")])
]
_SKIP = re.compile(
    r'"""[\s\S]*?"""|"(?:[^"\\]|\\[\s\S])*"|(?:#|//)[^\n]*|/\*[\s\S]*?\*/|vault://\S+'
)
_WS = re.compile(r"[ \t\n]+")


def _gaps(text: str) -> list[tuple[int, int, bool]]:
    """Whitespace runs between tokens (not inside strings, comments or vault references), and
    whether one ends a line comment (then it must keep its line break)."""
    masked = list(text)
    line_ends = set()
    for m in _SKIP.finditer(text):
        masked[m.start() : m.end()] = "x" * (m.end() - m.start())
        if m.group().startswith(("#", "//")):
            line_ends.add(m.end())
    return [(m.start(), m.end(), m.start() in line_ends) for m in _WS.finditer("".join(masked))]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(CORPUS))), st.randoms(use_true_random=False))
def test_real_files_in_random_layouts(index: int, rnd: random.Random) -> None:
    """Every example and upstream fixture, with its whitespace between tokens replaced at
    random and comments inserted, formats faithfully and idempotently — upstream constructs
    (functions, with blocks, policy rules, channels…) included."""
    text = CORPUS[index]
    out: list[str] = []
    pos = 0
    for start, end, after_comment in _gaps(text):
        out.append(text[pos:start] + ("\n" if after_comment else ""))
        choice = rnd.randrange(8)
        if choice == 0:
            out.append(f" /* c{start} */ ")
        elif choice == 1:
            out.append(f"  # c{start}\n")
        elif choice == 2:
            out.append("\n\n\t  ")
        elif choice == 3:
            out.append(" ")
        else:
            out.append(text[start:end])
        pos = end
    out.append(text[pos:])
    mutated = "".join(out)
    before, diags, c_before = parse_with_comments(SourceFile("m", mutated))
    assert not diags, mutated
    result = format_text(mutated)
    assert result.text is not None, [d.message for d in result.diagnostics]
    assert format_text(result.text).text == result.text
    after, _, c_after = parse_with_comments(SourceFile("f", result.text))
    assert ast_shape(after) == ast_shape(before)
    assert comment_texts(c_after) == comment_texts(c_before)
