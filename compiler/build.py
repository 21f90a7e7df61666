"""Lark parse tree → ``compiler.ast`` nodes, with spans; records problems, never raises.

The tree shapes come from ``grammar/symbi.lark``. Key/value blocks become ``Property``/value
nodes; the upstream statement/expression language becomes generic ``ast.Syntax`` nodes whose
``kind`` names the construct (``let``, ``if``, ``match``, ``call``, ``binop`` …).

String literals are decoded here: backslash escapes (regular strings only), dedent of
triple-quoted strings, ``${NAME}`` environment references (kept verbatim in the value and
listed in ``env_refs``), and the diagnostics ``invalid-escape`` / ``invalid-env-ref``.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from typing import Any

from lark import Token, Tree

from compiler import ast
from compiler.diagnostics import Diagnostic, diag
from compiler.source import SourceFile, Span

# ---------------------------------------------------------------- literals

_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "0": "\0",
    "b": "\b",
    "f": "\f",
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
}

_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "months": 30 * 86400.0,
    "y": 365 * 86400.0,
}
_DURATION_WORDS = {
    "millisecond": 0.001,
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
    "week": 604800.0,
    "month": 30 * 86400.0,
    "year": 365 * 86400.0,
}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|months|s|m|h|d|w|y)")
_DURATION_WORD = re.compile(r"([0-9]+)\.([a-z]+)")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_ENV_REF = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)\}")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_BRACED_HEX = re.compile(r"\{([0-9A-Fa-f]{1,6})\}")
_LOW_SURROGATE = re.compile(r"\\u([dD][c-fC-F][0-9A-Fa-f]{2})")

#: Keyword tokens dropped from generic ``Syntax`` children (the node ``kind`` says it all).
_KEYWORD_TYPES = frozenset(
    {
        "LET", "RETURN", "IF", "ELSE", "FOR", "IN", "WHILE", "MATCH", "TRY", "CATCH",
        "FINALLY", "BREAK", "CONTINUE", "WITH", "FUNCTION", "POLICY", "CAPABILITIES",
    }
)  # fmt: skip

#: Parse-tree rule names → ``Syntax.kind``.
_KIND = {
    "let_stmt": "let",
    "assign_stmt": "assign",
    "return_stmt": "return",
    "expr_stmt": "expr",
    "break_stmt": "break",
    "continue_stmt": "continue",
    "if_stmt": "if",
    "let_cond": "let_cond",
    "for_stmt": "for",
    "while_stmt": "while",
    "match_stmt": "match",
    "match_expr": "match",
    "match_arm": "arm",
    "try_stmt": "try",
    "catch_clause": "catch",
    "block": "block",
    "binop": "binop",
    "unop": "unop",
    "member": "member",
    "call": "call",
    "index": "index",
    "paren": "paren",
    "array": "array",
    "record": "record",
    "typed_record": "typed_record",
    "record_field": "field",
    "named_arg": "named_arg",
    "lambda": "lambda",
    "pattern_or": "pattern_or",
    "pattern_call": "pattern_call",
    "pattern_tuple": "tuple",
    "path": "path",
    "struct_type": "struct",
    "field_decl": "field",
    "union_type": "union",
}


def duration_seconds(text: str) -> float:
    """Seconds of a DURATION token (``1h30m``, ``500ms``, ``5.minutes``); units may repeat."""
    m = _DURATION_WORD.fullmatch(text)
    if m:
        word = m.group(2).removesuffix("s") if m.group(2) != "ms" else "millisecond"
        return float(m.group(1)) * _DURATION_UNITS.get(word, _DURATION_WORDS.get(word, 0.0))
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))


def _span(node: Any) -> Span:
    if isinstance(node, Token):
        start = node.start_pos or 0
        end = node.end_pos if node.end_pos is not None else start + len(node.value)
        return Span(start, end)
    meta = node.meta
    if getattr(meta, "empty", True):
        return Span(0, 0)
    return Span(meta.start_pos, meta.end_pos)


class _Builder:
    """One pass over one file's tree; collects diagnostics in ``diags``."""

    def __init__(self, source: SourceFile) -> None:
        self.source = source
        self.diags: list[Diagnostic] = []

    # ------------------------------------------------------------ diagnostics

    def error(self, code: str, message: str, span: Span, help: str | None = None) -> None:
        self.diags.append(diag(code, message, self.source, span, help=help))

    # ------------------------------------------------------------ strings

    def string(self, tok: Token) -> ast.StringLit:
        """Decode a STRING / TRIPLE_STRING token."""
        span = _span(tok)
        text: str = tok.value
        if tok.type == "TRIPLE_STRING":
            raw = text[3:-3]
            content_start = span.start + 3
            if raw.startswith("\r\n"):
                raw, content_start = raw[2:], content_start + 2
            elif raw.startswith("\n"):
                raw, content_start = raw[1:], content_start + 1
            value = textwrap.dedent(raw)
            triple = True
        else:
            raw = text[1:-1]
            content_start = span.start + 1
            value = self._unescape(raw, content_start)
            triple = False
        env_refs = self._env_refs(raw, content_start)
        src = self.source.text
        raw_offsets = src[content_start : content_start + len(value)] == value
        return ast.StringLit(span, value, triple, env_refs, content_start, raw_offsets)

    def _unescape(self, raw: str, offset: int) -> str:
        if "\\" not in raw:
            return raw
        out: list[str] = []
        i, n = 0, len(raw)
        while i < n:
            ch = raw[i]
            if ch != "\\" or i + 1 >= n:
                out.append(ch)
                i += 1
                continue
            nxt = raw[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u":
                m4 = _HEX4.match(raw, i + 2)
                mb = _BRACED_HEX.match(raw, i + 2)
                if m4:
                    code = int(m4.group(0), 16)
                    i = m4.end()
                    if 0xD800 <= code <= 0xDBFF:  # a UTF-16 surrogate pair, as JSON writes it
                        low = _LOW_SURROGATE.match(raw, i)
                        if low:
                            code = (
                                0x10000 + ((code - 0xD800) << 10) + int(low.group(1), 16) - 0xDC00
                            )
                            i = low.end()
                    if 0xD800 <= code <= 0xDFFF:
                        self.error(
                            "invalid-escape",
                            f"`\\u{m4.group(0)}` is half of a surrogate pair",
                            Span(offset + m4.start() - 2, offset + m4.end()),
                            help="write the character itself or `\\u{…}` with its code point",
                        )
                        out.append("\ufffd")
                        continue
                    out.append(chr(code))
                    continue
                if (
                    mb
                    and int(mb.group(1), 16) <= 0x10FFFF
                    and not (0xD800 <= int(mb.group(1), 16) <= 0xDFFF)
                ):
                    out.append(chr(int(mb.group(1), 16)))
                    i = mb.end()
                    continue
                self.error(
                    "invalid-escape",
                    "invalid unicode escape: `\\u` needs four hex digits or `{…}`",
                    Span(offset + i, offset + i + 2),
                    help="write `\\u00e9` or `\\u{1F600}`",
                )
                out.append("\\u")
                i += 2
                continue
            shown = "\\" + (repr(nxt)[1:-1] if nxt in "\n\r\t" else nxt)
            self.error(
                "invalid-escape",
                f"unknown escape sequence `{shown}` in string",
                Span(offset + i, offset + i + 2),
                help='valid escapes are \\n \\t \\r \\0 \\" \\\\ \\/ \\b \\f \\uXXXX; '
                "write `\\\\` for a backslash",
            )
            out.append("\\" + nxt)
            i += 2
        return "".join(out)

    def _env_refs(self, raw: str, offset: int) -> tuple[str, ...]:
        """Names of ``${NAME}`` references in the raw string text; reports malformed ones."""
        if "${" not in raw:
            return ()
        names: list[str] = []
        i = raw.find("$")
        while i >= 0:
            if raw.startswith("$${", i):
                i = raw.find("$", i + 3)
                continue
            if raw.startswith("${", i):
                m = _ENV_REF.match(raw, i)
                if m:
                    if m.group(1) not in names:
                        names.append(m.group(1))
                    i = raw.find("$", m.end())
                    continue
                self._bad_env_ref(raw, i, offset)
                i = raw.find("$", i + 2)
                continue
            i = raw.find("$", i + 1)
        return tuple(names)

    def _bad_env_ref(self, raw: str, i: int, offset: int) -> None:
        close = raw.find("}", i + 2)
        newline = raw.find("\n", i + 2)
        if close < 0 or (0 <= newline < close):
            end = newline if newline >= 0 else len(raw)
            self.error(
                "invalid-env-ref",
                "environment reference is not closed: expected `}` after `${`",
                Span(offset + i, offset + max(i + 2, min(end, i + 40))),
                help="write `${NAME}`; write `$${` for a literal `${`",
            )
            return
        name = raw[i + 2 : close]
        span = Span(offset + i, offset + close + 1)
        if not name:
            msg = "empty environment reference `${}`"
        else:
            msg = f"invalid environment variable name `{name}` in `${{{name}}}`"
        upper = re.sub(r"[^A-Za-z0-9_]", "_", name).upper()
        if upper and _ENV_NAME.fullmatch(upper) and upper != name:
            help = f"names are upper-case letters, digits and `_`: `${{{upper}}}`"
        else:
            help = "names match [A-Z_][A-Z0-9_]*; write `$${` for a literal `${`"
        self.error("invalid-env-ref", msg, span, help=help)

    # ------------------------------------------------------------ values

    def literal(self, tok: Token) -> ast.Value:
        """A single-token value."""
        t = tok.type
        span = _span(tok)
        if t in ("STRING", "TRIPLE_STRING"):
            return self.string(tok)
        if t == "NUMBER":
            return ast.NumberLit(span, _number(tok.value), tok.value)
        if t == "DURATION":
            return ast.DurationLit(span, tok.value, duration_seconds(tok.value))
        if t == "TRUE":
            return ast.BoolLit(span, True)
        if t == "FALSE":
            return ast.BoolLit(span, False)
        if t == "NULL":
            return ast.NullLit(span)
        if t == "VAULT":
            return ast.VaultRef(span, tok.value[len("vault://") :])
        return ast.Ident(span, tok.value)

    def value(self, node: Any) -> ast.Value:
        """A key/value value (scalar token, negative number, list, map)."""
        if isinstance(node, Token):
            return self.literal(node)
        span = _span(node)
        data = node.data
        if data == "neg":
            inner = node.children[1]
            text = self.source.text[span.start : span.end]
            if inner.type == "DURATION":
                return ast.DurationLit(span, text, -duration_seconds(inner.value))
            return ast.NumberLit(span, -_number(inner.value), text)
        if data == "list":
            return ast.ListLit(span, tuple(self.value(c) for c in node.children))
        if data in ("map", "bare_map"):
            return ast.MapLit(span, self.props(node.children))
        raise _internal(f"unexpected value node {data!r}")

    def key(self, tok: Token) -> str:
        if tok.type == "STRING":
            return self.string(tok).value
        return str(tok.value)

    def prop(self, node: Any) -> ast.Property:
        span = _span(node)
        kids = node.children
        key_tok = kids[0]
        key, key_span = self.key(key_tok), _span(key_tok)
        if node.data == "prop_block":
            block = kids[1]
            value = ast.MapLit(_span(block), self.props(block.children), block_form=True)
            return ast.Property(span, key, key_span, value, None)
        sep: str | None = " "  # upstream memory/webhook blocks write `key value`
        if len(kids) == 3:
            sep = str(kids[1].children[0].value)
        last = kids[-1]
        if sep == " " and isinstance(last, Tree) and last.data == "bare_map":
            value = ast.MapLit(_span(last), self.props(last.children), block_form=True)
            return ast.Property(span, key, key_span, value, None)  # `search { … }`
        return ast.Property(span, key, key_span, self.value(last), sep)

    def props(self, nodes: Iterable[Any]) -> tuple[ast.Property, ...]:
        return tuple(
            self.prop(n)
            for n in nodes
            if isinstance(n, Tree) and n.data in ("prop", "prop_block", "bare_prop")
        )

    # ------------------------------------------------------------ items

    def module(self, tree: Any) -> ast.Module:
        items: list[ast.Item] = []
        for child in tree.children:
            if isinstance(child, Tree):
                items.append(self.item(child))
        return ast.Module(tuple(items))

    def item(self, node: Any) -> ast.Item:
        handler = getattr(self, "item_" + str(node.data), None)
        if handler is None:
            raise _internal(f"unexpected item node {node.data!r}")
        result: ast.Item = handler(node)
        return result

    def _header_name(self, node: Any) -> Token | None:
        for c in node.children:
            if isinstance(c, Token) and c.type in ("IDENT", "STRING"):
                return c
            if isinstance(c, Tree):
                return None
        return None

    def _name_str(self, tok: Token | None, fallback: Span) -> tuple[str, Span]:
        if tok is None:
            return "", fallback
        return self.key(tok), _span(tok)

    def item_schedule(self, node: Any) -> ast.Schedule:
        tok = self._header_name(node)
        name: ast.StringLit | ast.Ident | None = None
        if tok is not None:
            lit = self.literal(tok)
            assert isinstance(lit, ast.StringLit | ast.Ident)
            name = lit
        return ast.Schedule(_span(node), name, self.props(node.children))

    def item_metadata(self, node: Any) -> ast.Metadata:
        return ast.Metadata(_span(node), self.props(node.children))

    def item_agent(self, node: Any) -> ast.Agent:
        span = _span(node)
        name, name_span = self._name_str(self._header_name(node), span)
        params: tuple[ast.Param, ...] = ()
        ret: ast.TypeRef | None = None
        caps: list[ast.Capabilities] = []
        policies: list[ast.PolicyDef] = []
        functions: list[ast.FunctionDef] = []
        withs: list[ast.WithBlock] = []
        for c in node.children:
            if not isinstance(c, Tree):
                continue
            d = c.data
            if d == "params":
                params = self.params(c)
            elif d in ("type_ref", "list_type"):
                ret = self.type_ref(c)
            elif d == "capabilities":
                caps.append(self.capabilities(c))
            elif d == "policy_def":
                policies.append(self.item_policy_def(c))
            elif d == "function_def":
                functions.append(self.item_function_def(c))
            elif d == "with_block":
                withs.append(self.with_block(c))
        return ast.Agent(
            span,
            name,
            name_span,
            params,
            ret,
            self.props(node.children),
            tuple(caps),
            tuple(policies),
            tuple(functions),
            tuple(withs),
        )

    def capabilities(self, node: Any) -> ast.Capabilities:
        value = self.value(node.children[-1])
        if not isinstance(value, ast.ListLit):
            self.error(
                "invalid-type",
                "`capabilities` takes a list",
                value.span,
                help='write `capabilities = ["read", "write"]`',
            )
            value = ast.ListLit(value.span, (value,))
        return ast.Capabilities(_span(node), value)

    def with_block(self, node: Any) -> ast.WithBlock:
        attrs: list[ast.Property] = []
        body: tuple[object, ...] = ()
        for c in node.children:
            if isinstance(c, Tree) and c.data == "with_attr":
                attrs.append(self.prop(c))
            elif isinstance(c, Tree) and c.data == "block":
                body = self.statements(c)
        return ast.WithBlock(_span(node), tuple(attrs), body)

    def item_policy_def(self, node: Any) -> ast.PolicyDef:
        span = _span(node)
        kw = node.children[0]
        tok = self._header_name(node)
        name, name_span = self._name_str(tok, _span(kw) if isinstance(kw, Token) else span)
        rules: list[ast.PolicyRule] = []
        for c in node.children:
            if isinstance(c, Tree) and c.data == "policy_rule":
                rules.append(self.policy_rule(c))
        return ast.PolicyDef(span, name, name_span, tuple(rules), self.props(node.children))

    def policy_rule(self, node: Any) -> ast.PolicyRule:
        kids = node.children
        action = str(kids[0].value)
        expr = self.syntax(kids[1])
        condition: object | None = None
        qualifier: object | None = None
        i = 2
        while i + 1 < len(kids):
            marker = kids[i]
            if isinstance(marker, Token) and marker.type == "IF":
                condition = self.syntax(kids[i + 1])
            elif isinstance(marker, Token) and marker.type == "WITH":
                qualifier = self.syntax(kids[i + 1])
            i += 2
        return ast.PolicyRule(_span(node), action, expr, condition, qualifier)

    def item_function_def(self, node: Any) -> ast.FunctionDef:
        span = _span(node)
        name_tok = next(c for c in node.children if isinstance(c, Token) and c.type == "IDENT")
        params: tuple[ast.Param, ...] = ()
        ret: ast.TypeRef | None = None
        body: tuple[object, ...] = ()
        for c in node.children:
            if not isinstance(c, Tree):
                continue
            if c.data == "params":
                params = self.params(c)
            elif c.data in ("type_ref", "list_type"):
                ret = self.type_ref(c)
            elif c.data == "block":
                body = self.statements(c)
        return ast.FunctionDef(span, str(name_tok.value), _span(name_tok), params, ret, body)

    def item_type_def(self, node: Any) -> ast.TypeDef:
        name_tok, body = node.children[0], node.children[1]
        definition: object
        if isinstance(body, Tree) and body.data in ("type_ref", "list_type"):
            definition = self.type_ref(body)
        else:
            definition = self.syntax(body)
        return ast.TypeDef(_span(node), str(name_tok.value), _span(name_tok), definition)

    def _generic(self, node: Any, kind: str) -> ast.GenericBlock:
        span = _span(node)
        name, name_span = self._name_str(self._header_name(node), span)
        items = tuple(
            self.item_policy_def(c)
            for c in node.children
            if isinstance(c, Tree) and c.data == "policy_def"
        )
        return ast.GenericBlock(span, kind, name, name_span, self.props(node.children), items)

    def item_channel(self, node: Any) -> ast.GenericBlock:
        return self._generic(node, "channel")

    def item_memory(self, node: Any) -> ast.GenericBlock:
        return self._generic(node, "memory")

    def item_webhook(self, node: Any) -> ast.GenericBlock:
        return self._generic(node, "webhook")

    # ------------------------------------------------------------ types, params

    def params(self, node: Any) -> tuple[ast.Param, ...]:
        out: list[ast.Param] = []
        for p in node.children:
            if isinstance(p, Tree) and p.data == "param":
                name_tok: Any = p.children[0]
                typ = self.type_ref(p.children[1]) if len(p.children) > 1 else None
                out.append(ast.Param(_span(p), str(name_tok.value), typ))
        return tuple(out)

    def type_ref(self, node: Any) -> ast.TypeRef:
        span = _span(node)
        optional = any(isinstance(c, Token) and c.type == "QUESTION" for c in node.children)
        args = tuple(
            self.type_ref(c)
            for c in node.children
            if isinstance(c, Tree) and c.data in ("type_ref", "list_type")
        )
        if node.data == "list_type":
            name = "[]"
        else:
            name = str(node.children[0].value)
        return ast.TypeRef(span, name + ("?" if optional else ""), args)

    # ------------------------------------------------------------ statements, expressions

    def statements(self, block: Any) -> tuple[object, ...]:
        return tuple(s for s in (self.syntax(c) for c in block.children) if s is not None)

    def syntax(self, node: Any) -> object:
        """Any upstream statement/expression node → value node, ``Ident`` or ``ast.Syntax``."""
        if isinstance(node, Token):
            return self.literal(node)
        data = str(node.data)
        span = _span(node)
        if data == "name":
            return self.literal(node.children[0])
        if data in ("type_ref", "list_type"):
            return self.type_ref(node)
        kind = _KIND.get(data, data)
        kids = list(node.children)
        text = ""
        if data in ("record_field", "field_decl"):
            text, kids = self.key(kids[0]), kids[1:]
        elif data in ("typed_record", "named_arg"):
            text, kids = str(kids[0].value), kids[1:]
        elif data == "member":
            text, kids = str(kids[-1].value), kids[:-1]
        elif data == "path":
            return ast.Syntax(kind, span, (), ".".join(str(k.value) for k in kids))
        children: list[object] = []
        for c in kids:
            if isinstance(c, Tree):
                if c.data in ("sep", "assign_op"):
                    op: Any = c.children[0]
                    text = text or str(op.value)
                else:
                    children.append(self.syntax(c))
            elif data in ("binop", "unop") and c.type in _OPERATOR_TYPES:
                text = str(c.value)
            elif c.type == "MUT":
                text = "mut"
            elif c.type not in _KEYWORD_TYPES:
                children.append(self.literal(c))
        return ast.Syntax(kind, span, tuple(children), text)


_OPERATOR_TYPES = frozenset(
    {"OR", "AND", "EQ", "NE", "LE", "GE", "LT", "GT", "PLUS", "MINUS", "STAR", "SLASH",
     "PERCENT", "BANG", "NOT", "IN"}
)  # fmt: skip


class InternalBuildError(Exception):
    """The tree did not have a shape the builder knows: a bug, reported as a diagnostic."""


def _internal(message: str) -> InternalBuildError:
    return InternalBuildError(message)


def _number(text: str) -> int | float:
    clean = text.replace("_", "")
    if any(ch in clean for ch in ".eE"):
        return float(clean)
    return int(clean)


def build_module(tree: Tree[Token], source: SourceFile) -> tuple[ast.Module, list[Diagnostic]]:
    """Build the AST of one file from its lark parse tree.

    Problems inside literals (bad escapes, malformed ``${…}``) are returned as diagnostics.
    A tree shape the builder does not know raises ``InternalBuildError`` (a bug; the parser
    turns it into a diagnostic)."""
    builder = _Builder(source)
    module = builder.module(tree)
    return module, builder.diags
