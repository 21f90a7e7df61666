"""``symbic fmt``: the canonical layout of ``.symbi`` / ``.dsl`` files, comments kept.

A printer over the AST (``compiler.ast``) and the file's comments
(``parser.parse_with_comments``). Pure: text in, text out; the CLI does the file I/O.

Canonical style
  * 2-space indentation; one property per line; separators between entries (``,``/``;``)
    dropped; one blank line between top-level items; inside blocks a blank line is kept where
    the source had one (several collapse to one), never right after ``{`` or before ``}``.
  * ``key: value`` in schedules, agents, policies and maps (``=`` becomes ``:``). ``metadata``
    and ``capabilities`` — upstream Symbiont items — keep the separator as written.
  * A nested block stays ``key {`` … ``}`` and a map value ``key: {`` … ``}``; maps have one
    entry per line. A list is on one line when it fits in ``MAX_WIDTH`` columns, otherwise
    one item per line with a trailing comma (also when a comment is inside it).
  * Strings are re-quoted canonically (only ``\\\\``, ``\\"``, ``\\n``, ``\\t``, ``\\r`` and
    ``\\u…`` for invisible characters are escaped); a string written across lines and
    triple-quoted strings are kept exactly as written. Numbers and durations as written.
  * Constructs whose bodies are statements or expressions — ``function``, ``with`` blocks,
    policy rules, ``type``, ``channel``, ``memory``, ``webhook`` — are echoed verbatim, only
    re-indented (as upstream's own formatter does), which keeps them exact.
  * Comments: an own-line comment stays before the element it precedes, at that element's
    indentation; a comment after an element on the same line stays there (two spaces before
    it); a comment inside an element that is printed on one line moves just above it.

Safety: the output is re-parsed and must give the same AST (spans, separators ``:``/``=``
aside) and the same comments in the same order; otherwise nothing is formatted and a
``format-failed`` diagnostic explains why (the file is then left as it is).
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from functools import lru_cache

from compiler import ast
from compiler.diagnostics import Diagnostic, Severity, diag
from compiler.parser import Comment, parse_text, parse_with_comments
from compiler.source import SourceFile, Span

#: A list is printed on one line when that line is at most this wide.
MAX_WIDTH = 100
INDENT = "  "

_BLANK_LINE = re.compile(r"\n[ \t\f\r\ufeff\u00a0]*\n")
_STRING = re.compile(r'"""[\s\S]*?"""|"(?:[^"\\]|\\[\s\S])*"')
_NUMBER_TAIL = re.compile(r"[0-9][0-9A-Za-z_.+\-]*$")


@dataclass(frozen=True, slots=True)
class FormatResult:
    """``text`` is the formatted file, or None when the file was not formatted (syntax errors
    or a ``format-failed`` problem, both in ``diagnostics``)."""

    text: str | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return self.text is not None


# ---------------------------------------------------------------- strings


def _escape(value: str) -> str:
    out: list[str] = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch != " " and not ch.isprintable():
            code = ord(ch)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\u{{{code:x}}}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@lru_cache(maxsize=1024)
def _decode(literal: str) -> tuple[str, tuple[str, ...]] | None:
    """(value, env refs) of a string literal, decoded by the real parser; None if it is not
    a clean literal."""
    module, diags = parse_text(f"metadata {{ k: {literal} }}", "<string>")
    if diags or len(module.items) != 1:
        return None
    item = module.items[0]
    if not isinstance(item, ast.Metadata) or len(item.props) != 1:
        return None
    value = item.props[0].value
    if not isinstance(value, ast.StringLit):
        return None
    return value.value, value.env_refs


def canonical_string(raw: str) -> str:
    """The canonical spelling of a ``"…"`` literal: same value and ``${…}`` references, minimal
    escapes. Literals written across lines, and any whose canonical form would not decode to
    the same thing (e.g. ``\\u0024{X}``, which must not become a ``${X}`` reference), are kept
    as written."""
    if raw.startswith('"""') or "\n" in raw:
        return raw
    body = raw[1:-1]
    if "\\" not in body and all(ch == " " or ch.isprintable() for ch in body):
        return raw
    original = _decode(raw)
    if original is None:
        return raw
    candidate = _escape(original[0])
    return candidate if _decode(candidate) == original else raw


# ---------------------------------------------------------------- the printer


class _Printer:
    """Builds the output lines. ``ci`` is the next comment not yet printed; comments are
    printed strictly in source order, so none is lost or reordered."""

    def __init__(self, source: SourceFile, comments: Sequence[Comment]) -> None:
        self.src = source.text
        self.source = source
        self.comments = list(comments)
        self.starts = [c.span.start for c in self.comments]
        self.ci = 0
        self.out: list[str] = []
        self.last_end = 0  # source offset just after the last thing printed
        self.fresh = True  # just after an opening bracket: no blank line here
        self.force_blank = False  # between top-level items

    # ------------------------------------------------------------ low level

    def line_of(self, offset: int) -> int:
        return self.source.line_col(offset)[0]

    def emit(self, indent: int, text: str) -> None:
        self.out.append(INDENT * indent + text)
        self.fresh = False

    def separate(self, pos: int) -> None:
        """A blank line before the next output, if one belongs there."""
        if not self.out or self.out[-1] == "":
            self.force_blank = False
            return
        if self.force_blank:
            self.force_blank = False
            self.out.append("")
        elif not self.fresh and _BLANK_LINE.search(
            self.src, self.last_end, max(self.last_end, pos)
        ):
            self.out.append("")

    def flush(self, upto: int, indent: int) -> None:
        """Print every comment before ``upto`` on its own line (a comment that shares a source
        line with the previous one stays beside it)."""
        while self.ci < len(self.comments) and self.comments[self.ci].span.start < upto:
            c = self.comments[self.ci]
            self.separate(c.span.start)
            self.emit(indent, _comment_text(c))
            self.last_end = c.span.end
            self.ci += 1
            self.trailing(c.span.end, upto, gap=" ")

    def trailing(self, end: int, limit: int, gap: str = "  ") -> None:
        """Append the comments that follow source offset ``end`` on the same line (and come
        before ``limit``) to the last output line."""
        line = self.line_of(max(end - 1, 0))
        while self.ci < len(self.comments):
            c = self.comments[self.ci]
            if c.span.start >= limit or c.span.start < end or self.line_of(c.span.start) != line:
                return
            self.out[-1] += gap + _comment_text(c)
            gap = " "
            self.last_end = c.span.end
            self.ci += 1
            line = self.line_of(c.span.end - 1)

    def skip_comments(self, end: int) -> None:
        """Comments before ``end`` were printed as part of verbatim text."""
        while self.ci < len(self.comments) and self.comments[self.ci].span.start < end:
            self.ci += 1

    def has_comment(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self.starts, start)
        return i < len(self.starts) and self.starts[i] < end

    def code_pos(self, char: str, pos: int) -> int:
        """Offset of the next ``char`` at or after ``pos`` outside comments."""
        i = bisect.bisect_left(self.starts, pos)
        while True:
            nxt = self.starts[i] if i < len(self.starts) else len(self.src)
            at = self.src.find(char, pos, nxt)
            if at >= 0:
                return at
            if i >= len(self.starts):
                raise _FormatBug(f"expected `{char}` after offset {pos}")
            pos = self.comments[i].span.end
            i += 1

    def next_code(self, pos: int) -> int:
        """Offset of the next character at or after ``pos`` that is neither whitespace nor
        inside a comment."""
        i = bisect.bisect_left(self.starts, pos)
        while True:
            while pos < len(self.src) and self.src[pos].isspace():
                pos += 1
            if i < len(self.starts) and self.starts[i] == pos:
                pos = self.comments[i].span.end
                i += 1
                continue
            if pos >= len(self.src):
                raise _FormatBug("unexpected end of text")
            return pos

    # ------------------------------------------------------------ verbatim

    def verbatim(self, span: Span, indent: int) -> None:
        """Echo source text, re-indented when that cannot change what it means."""
        text = self.src[span.start : span.end]
        lines = text.split("\n")
        if len(lines) > 1 and self._reindentable(span):
            col = self.source.line_col(span.start)[1] - 1
            rest = [ln.rstrip() for ln in lines[1:]]
            widths = [len(ln) - len(ln.lstrip(" ")) for ln in rest if ln.strip()]
            base = min([col, *widths])
            rel = [w - base for w in widths]
            # A body written with 4-space steps gets 2-space steps. The smallest step decides,
            # so the result (smallest step 2) is not halved again: idempotent.
            steps = [r for r in rel if r]
            halve = bool(steps) and min(steps) == 4 and all(r % 4 == 0 for r in rel)
            target = len(INDENT) * indent
            moved = []
            for ln in rest:
                body = ln.lstrip(" ")
                if not body:
                    moved.append("")
                    continue
                r = len(ln) - len(body) - base
                moved.append(" " * (target + (r // 2 if halve else r)) + body)
            text = "\n".join([lines[0].rstrip(), *moved])
        self.emit(indent, text)
        self.skip_comments(span.end)
        self.last_end = span.end

    def _reindentable(self, span: Span) -> bool:
        """No string or comment spans a line break (their text must not change), and no
        leading tab (its width is unknown)."""
        text = self.src[span.start : span.end]
        for line in text.split("\n")[1:]:
            if "\t" in line[: len(line) - len(line.lstrip())]:
                return False
        masked = list(text)
        i = bisect.bisect_left(self.starts, span.start)
        while i < len(self.comments) and self.comments[i].span.start < span.end:
            c = self.comments[i].span
            if "\n" in self.src[c.start : c.end]:
                return False
            for k in range(c.start - span.start, min(c.end, span.end) - span.start):
                masked[k] = " "
            i += 1
        return not any("\n" in m.group() for m in _STRING.finditer("".join(masked)))

    # ------------------------------------------------------------ values

    def scalar(self, value: ast.Value) -> str:
        if isinstance(value, ast.StringLit):
            raw = self.src[value.span.start : value.span.end]
            return raw if value.triple else canonical_string(raw)
        if isinstance(value, ast.NumberLit | ast.DurationLit):
            return _literal_text(value.text)
        if isinstance(value, ast.BoolLit):
            return "true" if value.value else "false"
        if isinstance(value, ast.NullLit):
            return "null"
        if isinstance(value, ast.Ident):
            return value.name
        if isinstance(value, ast.VaultRef):
            return "vault://" + value.path
        raise _FormatBug(f"not a scalar: {type(value).__name__}")

    def inline(self, value: ast.Value) -> str | None:
        """The one-line form of a value, or None (a map, a comment inside, a line break)."""
        if isinstance(value, ast.MapLit):
            return None
        if isinstance(value, ast.ListLit):
            if self.has_comment(value.span.start, value.span.end):
                return None
            parts = [self.inline(v) for v in value.items]
            if any(p is None for p in parts):
                return None
            return "[" + ", ".join(p for p in parts if p is not None) + "]"
        text = self.scalar(value)
        return None if "\n" in text else text

    def value(
        self, value: ast.Value, indent: int, prefix: str, suffix: str, limit: int, at: int
    ) -> None:
        """Print ``prefix value suffix`` starting a new line at ``indent``; ``at`` is where the
        element (the property, for a value) starts in the source. Comments inside the value
        that cannot stay in place are printed above it."""
        span = value.span
        if isinstance(value, ast.MapLit):
            self.flush(span.start, indent)
            self.separate(at)
            self.block(prefix, span, value.entries, indent, self.prop_printer(":"), suffix)
        elif isinstance(value, ast.ListLit):
            self.flush(span.start, indent)
            self.separate(at)
            one = self.inline(value)
            if one is not None and len(INDENT * indent + prefix + one + suffix) <= MAX_WIDTH:
                self.emit(indent, prefix + one + suffix)
                self.last_end = span.end
            else:
                self.list_lines(value, indent, prefix, suffix)
        else:
            self.flush(span.end, indent)
            self.separate(at)
            self.emit(indent, prefix + self.scalar(value) + suffix)
            self.last_end = span.end
        self.trailing(span.end, limit)

    def list_lines(self, value: ast.ListLit, indent: int, prefix: str, suffix: str) -> None:
        span = value.span
        close = span.end - 1
        self.emit(indent, prefix + "[")
        self.last_end = span.start + 1
        items = value.items
        self.trailing(span.start + 1, items[0].span.start if items else close)
        self.fresh = True
        for i, item in enumerate(items):
            limit = items[i + 1].span.start if i + 1 < len(items) else close
            self.value(item, indent + 1, "", ",", limit, item.span.start)
        self.flush(close, indent + 1)
        self.emit(indent, "]" + suffix)
        self.last_end = span.end

    # ------------------------------------------------------------ blocks and properties

    def block(
        self,
        header: str,
        braces: Span,
        entries: Sequence[object],
        indent: int,
        printer: Callable[[object, int, int], None],
        suffix: str = "",
    ) -> None:
        """``header{`` entries ``}``; ``braces`` runs from the ``{`` to just after the ``}``.
        The caller has printed the comments before the header."""
        open_at, close = braces.start, braces.end - 1
        if self.src[open_at] != "{" or self.src[close] != "}":
            raise _FormatBug(f"block braces not at {open_at}..{close}")
        if not entries and not self.has_comment(open_at, close):
            self.emit(indent, header + "{}" + suffix)
            self.last_end = braces.end
            return
        self.emit(indent, header + "{")
        self.last_end = open_at + 1
        ordered = sorted(entries, key=_start)
        self.trailing(open_at + 1, _start(ordered[0]) if ordered else close)
        self.fresh = True
        for i, entry in enumerate(ordered):
            limit = _start(ordered[i + 1]) if i + 1 < len(ordered) else close
            printer(entry, indent + 1, limit)
        self.flush(close, indent + 1)
        self.emit(indent, "}" + suffix)
        self.last_end = braces.end

    def key_text(self, prop: ast.Property) -> str:
        raw = self.src[prop.key_span.start : prop.key_span.end]
        return canonical_string(raw) if raw.startswith('"') else raw

    def prop(self, prop: ast.Property, indent: int, limit: int, sep: str | None) -> None:
        """One property; ``sep`` None keeps the separator as written."""
        key = self.key_text(prop)
        value = prop.value
        if isinstance(value, ast.MapLit) and value.block_form:
            prefix = key + " "
        else:
            written = prop.sep if prop.sep in (":", "=") else ":"
            prefix = key + _SEPARATORS[sep or written]
        self.value(value, indent, prefix, "", limit, prop.span.start)
        self.trailing(prop.span.end, limit)

    def prop_printer(self, sep: str | None) -> Callable[[object, int, int], None]:
        def print_prop(entry: object, indent: int, limit: int) -> None:
            if not isinstance(entry, ast.Property):
                raise _FormatBug(f"unexpected entry {type(entry).__name__}")
            self.prop(entry, indent, limit, sep)

        return print_prop

    # ------------------------------------------------------------ items

    def module(self, module: ast.Module) -> str:
        items = module.items
        for i, item in enumerate(items):
            limit = items[i + 1].span.start if i + 1 < len(items) else len(self.src)
            self.flush(item.span.start, 0)
            self.separate(item.span.start)
            self.item(item, 0)
            self.trailing(item.span.end, limit)
            self.force_blank = True
        self.force_blank = False
        self.flush(len(self.src) + 1, 0)
        return "\n".join(self.out) + "\n" if self.out else ""

    def item(self, item: object, indent: int) -> None:
        if isinstance(item, ast.Schedule):
            after = item.name.span.end if item.name is not None else item.span.start + 8
            header = "schedule "
            if item.name is not None:
                header += self.scalar(item.name) + " "
            self.header_block(header, after, item.span, item.props, indent, self.prop_printer(":"))
        elif isinstance(item, ast.Metadata):
            self.header_block(
                "metadata ", item.span.start + 8, item.span, item.props, indent,
                self.prop_printer(None),
            )  # fmt: skip
        elif isinstance(item, ast.Agent):
            self.agent(item, indent)
        elif isinstance(item, ast.PolicyDef):
            self.policy(item, indent)
        elif isinstance(item, ast.TypeDef | ast.FunctionDef | ast.GenericBlock | ast.WithBlock):
            self.verbatim(item.span, indent)
        else:
            raise _FormatBug(f"unexpected item {type(item).__name__}")

    def header_block(
        self,
        header: str,
        after: int,
        span: Span,
        entries: Sequence[object],
        indent: int,
        printer: Callable[[object, int, int], None],
    ) -> None:
        open_at = self.code_pos("{", after)
        self.flush(open_at, indent)  # comments inside the header go above it
        self.block(header, Span(open_at, span.end), entries, indent, printer)

    def agent(self, agent: ast.Agent, indent: int) -> None:
        name = self.src[agent.name_span.start : agent.name_span.end]
        if name.startswith('"'):
            name = canonical_string(name)
        header = "agent " + name
        after = agent.name_span.end
        if self.src[self.next_code(after)] == "(":
            header += "(" + ", ".join(_param(p) for p in agent.params) + ")"
        if agent.return_type is not None:
            header += " -> " + _type(agent.return_type)
        entries: list[object] = [
            *agent.props, *agent.capabilities, *agent.policies, *agent.functions,
            *agent.with_blocks,
        ]  # fmt: skip
        self.header_block(header + " ", after, agent.span, entries, indent, self.agent_entry)

    def agent_entry(self, entry: object, indent: int, limit: int) -> None:
        if isinstance(entry, ast.Property):
            self.prop(entry, indent, limit, ":")
            return
        if isinstance(entry, ast.Capabilities):
            sep = self.src[self.next_code(entry.span.start + len("capabilities"))]
            prefix = "capabilities" + _SEPARATORS[sep]
            self.value(entry.values, indent, prefix, "", limit, entry.span.start)
            self.trailing(entry.span.end, limit)
            return
        self.flush(_start(entry), indent)
        self.separate(_start(entry))
        if isinstance(entry, ast.PolicyDef):
            self.policy(entry, indent)
        else:
            self.verbatim(_span_of(entry), indent)
        self.trailing(_span_of(entry).end, limit)

    def policy(self, policy: ast.PolicyDef, indent: int) -> None:
        header = "policy "
        after = policy.span.start + len("policy")
        if policy.name:
            name = self.src[policy.name_span.start : policy.name_span.end]
            header += (canonical_string(name) if name.startswith('"') else name) + " "
            after = policy.name_span.end
        entries: list[object] = [*policy.rules, *policy.props]
        self.header_block(header, after, policy.span, entries, indent, self.policy_entry)

    def policy_entry(self, entry: object, indent: int, limit: int) -> None:
        if isinstance(entry, ast.Property):
            self.prop(entry, indent, limit, ":")
            return
        self.flush(_start(entry), indent)
        self.separate(_start(entry))
        self.verbatim(_span_of(entry), indent)
        self.trailing(_span_of(entry).end, limit)


_SEPARATORS = {":": ": ", "=": " = "}


class _FormatBug(Exception):
    """The printer met a shape it does not handle: reported as ``format-failed``."""


def _span_of(node: object) -> Span:
    span = getattr(node, "span", None)
    if not isinstance(span, Span):
        raise _FormatBug(f"no span on {type(node).__name__}")
    return span


def _start(node: object) -> int:
    return _span_of(node).start


def _literal_text(text: str) -> str:
    """A number or duration as written; a negative one as ``-`` then the literal (the source
    may have had blanks or a comment between them)."""
    if text.startswith("-"):
        m = _NUMBER_TAIL.search(text)
        return "-" + (m.group() if m else text[1:].strip())
    return text


def _comment_text(c: Comment) -> str:
    return c.text.rstrip() if not c.text.startswith("/*") else c.text


def _type(t: ast.TypeRef) -> str:
    optional = "?" if t.name.endswith("?") else ""
    name = t.name.removesuffix("?")
    if name == "[]":
        return "[" + ", ".join(_type(a) for a in t.args) + "]" + optional
    args = "<" + ", ".join(_type(a) for a in t.args) + ">" if t.args else ""
    return name + args + optional


def _param(p: ast.Param) -> str:
    return p.name + (": " + _type(p.type) if p.type is not None else "")


# ---------------------------------------------------------------- equivalence


_POSITIONAL = frozenset({"span", "key_span", "name_span", "content_start", "raw_offsets"})


def ast_shape(node: object) -> object:
    """A comparable form of an AST without positions: two files with the same shape mean the
    same thing (``:`` and ``=`` separators are equal)."""
    if is_dataclass(node) and not isinstance(node, type):
        parts: list[tuple[str, object]] = []
        for f in fields(node):
            if f.name in _POSITIONAL:
                continue
            v = getattr(node, f.name)
            if f.name == "sep" and v == "=":
                v = ":"
            elif f.name == "text" and isinstance(node, ast.NumberLit | ast.DurationLit):
                v = _literal_text(v)
            parts.append((f.name, ast_shape(v)))
        return (type(node).__name__, tuple(parts))
    if isinstance(node, tuple | list):
        return tuple(ast_shape(x) for x in node)
    return node


def comment_texts(comments: Sequence[Comment]) -> list[str]:
    """Comment texts as the formatter keeps them (line comments lose trailing blanks)."""
    return [_comment_text(c) for c in comments]


# ---------------------------------------------------------------- public API


def format_source(source: SourceFile) -> FormatResult:
    """Format one file. A file with syntax errors is not formatted: its diagnostics are
    returned and ``text`` is None. Never raises."""
    module, diags, comments = parse_with_comments(source)
    if any(d.sev is Severity.ERROR for d in diags):
        return FormatResult(None, tuple(diags))
    try:
        text = _Printer(source, comments).module(module)
    except (_FormatBug, IndexError, ValueError) as exc:
        return FormatResult(None, (*diags, _failed(source, f"the printer stopped: {exc}")))
    problem = _verify(source, module, comments, text)
    if problem is not None:
        return FormatResult(None, (*diags, _failed(source, problem)))
    return FormatResult(text, tuple(diags))


def format_text(text: str, name: str = "<string>") -> FormatResult:
    """``format_source`` for a string."""
    return format_source(SourceFile(name, text))


def _verify(
    source: SourceFile, module: ast.Module, comments: Sequence[Comment], text: str
) -> str | None:
    """Why ``text`` is not a faithful formatting of ``source`` (None when it is)."""
    again, diags, new_comments = parse_with_comments(SourceFile(source.name, text))
    if diags:
        first = diags[0]
        return f"the formatted text does not parse ({first.code}: {first.message})"
    if comment_texts(new_comments) != comment_texts(comments):
        return "the formatted text would lose or reorder a comment"
    if ast_shape(again) != ast_shape(module):
        return "the formatted text would mean something else"
    return None


def _failed(source: SourceFile, reason: str) -> Diagnostic:
    return diag(
        "format-failed",
        f"not formatted: {reason}",
        source,
        Span(0, 0),
        help="the file is left unchanged; this is a bug in symbic fmt, please report it with "
        "the file",
    )


def unified_diff(before: str, after: str, name: str) -> str:
    """A unified diff of a reformatting (``--diff``), labelled like ``git diff``."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a/{name}",
            tofile=f"b/{name}",
        )
    )
