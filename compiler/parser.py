"""The parser: source text → ``ast.Module`` + diagnostics. No lark type escapes this module.

The Lark LALR parser is built once per process (``functools.lru_cache``). Its analysed tables
are saved (``Lark.save``, written atomically) under ``$SYMBI_CACHE_DIR`` or
``$XDG_CACHE_HOME/symbi`` (default ``~/.cache/symbi``), keyed by the grammar text, the lark and
Python versions, so a cold process loads them in ~45 ms instead of analysing the grammar
(~350 ms). An unwritable or corrupt cache only costs that time.

Syntax errors are recovered from so that one run reports several of them:

0. an item keyword (``agent``, ``schedule`` …) at column 1 inside an open block means a ``}``
   is missing above it: the open blocks are closed there and the new item parses;
1. a missing token (``;``, ``,``, ``:`` after a key, a closing bracket) is inserted when the
   token after it then parses;
2. otherwise the bad token is dropped if the two tokens after it parse without it;
3. otherwise tokens are skipped to the next line start / ``}`` / ``;`` and parser states are
   popped until that token fits ("panic mode"); new errors are then reported only after three
   tokens have been accepted.

At most one syntax error is reported per line and ``MAX_ERRORS`` per file. At end of input the
open blocks are closed (the first missing closer is reported), so the items survive for
validation.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from copy import copy
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from compiler import ast
from compiler.diagnostics import Diagnostic, diag, did_you_mean
from compiler.source import SourceFile, Span

#: Cap on syntax errors reported for one file.
MAX_ERRORS = 10

#: Tokens that must be accepted after an error before another error is reported.
_QUIET_TOKENS = 3

_LARK_OPTIONS: dict[str, Any] = {
    "parser": "lalr",
    "lexer": "contextual",
    "propagate_positions": True,
    "maybe_placeholders": False,
}

# ---------------------------------------------------------------- the cached Lark parser


def grammar_text() -> str:
    """The text of ``grammar/symbi.lark``."""
    return files("grammar").joinpath("symbi.lark").read_text(encoding="utf-8")


def _cache_dir() -> Path:
    env = os.environ.get("SYMBI_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "symbi"


def build_lark(strict: bool = False) -> Any:
    """A freshly analysed Lark parser for the grammar (no cache). ``strict`` makes lark raise
    on any shift/reduce conflict or terminal collision (used by the grammar tests)."""
    import lark

    return lark.Lark(grammar_text(), strict=strict, **_LARK_OPTIONS)


@functools.lru_cache(maxsize=1)
def get_lark() -> Any:
    """The process-wide Lark parser, loaded from the on-disk cache when it is current."""
    import lark

    text = grammar_text()
    key_src = "\0".join([text, lark.__version__, sys.version, repr(sorted(_LARK_OPTIONS.items()))])
    key = hashlib.sha256(key_src.encode("utf-8")).hexdigest()[:24]
    path = _cache_dir() / f"grammar-{key}.pickle"
    try:
        with open(path, "rb") as fh:
            return lark.Lark.load(fh)
    except Exception:  # missing, truncated or stale cache: rebuild below
        pass
    parser = lark.Lark(text, **_LARK_OPTIONS)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".grammar-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                parser.save(fh)
            os.replace(tmp, path)  # atomic: concurrent processes never see a partial file
        except BaseException:
            os.unlink(tmp)
            raise
    except (OSError, pickle.PicklingError):
        pass  # an unwritable cache only costs time
    return parser


# ---------------------------------------------------------------- human words for tokens

_ITEM_KEYWORDS = (
    "SCHEDULE", "AGENT", "METADATA", "POLICY", "TYPE", "FUNCTION", "CHANNEL", "MEMORY", "WEBHOOK",
)  # fmt: skip
_KEYWORDS = frozenset(
    _ITEM_KEYWORDS
    + (
        "CAPABILITIES", "WITH", "ALLOW", "DENY", "REQUIRE", "AUDIT", "LET", "MUT", "RETURN",
        "IF", "ELSE", "FOR", "IN", "WHILE", "MATCH", "TRY", "CATCH", "FINALLY", "BREAK",
        "CONTINUE", "NOT", "TRUE", "FALSE", "NULL",
    )
)  # fmt: skip
_BINARY_OPS = frozenset(
    {"OR", "AND", "EQ", "NE", "IN", "LT", "GT", "LE", "GE", "PLUS", "MINUS", "STAR", "SLASH",
     "PERCENT"}
)  # fmt: skip
_VALUE_STARTS = frozenset(
    {"STRING", "TRIPLE_STRING", "NUMBER", "DURATION", "TRUE", "FALSE", "NULL", "VAULT", "LSQB",
     "LBRACE", "MINUS", "IDENT"}
)  # fmt: skip
_EXPR_ONLY_STARTS = frozenset({"LPAR", "BANG", "NOT", "MATCH"})
_REGEX_WORDS = {
    "IDENT": "a name",
    "STRING": "a string",
    "TRIPLE_STRING": "a string",
    "NUMBER": "a number",
    "DURATION": "a duration",
    "VAULT": "a `vault://` reference",
    "$END": "end of file",
}
#: Order in which expected alternatives are listed (most useful first).
_ORDER = ["COLON", "EQUAL", "RBRACE", "SEMICOLON", "COMMA", "RPAR", "RSQB", "LBRACE"]
#: Tokens we try to insert when one is missing.
_INSERTABLE = ("SEMICOLON", "COMMA", "COLON", "RPAR", "RSQB", "RBRACE", "EQUAL")
_CLOSERS = {"LBRACE": "RBRACE", "LSQB": "RSQB", "LPAR": "RPAR"}
_OPEN_WORDS = {"LBRACE": "block", "LSQB": "list", "LPAR": "parenthesis"}


@dataclass
class _Tables:
    """What recovery needs from the Lark object: parse table and terminal spellings."""

    states: dict[Any, dict[str, tuple[Any, Any]]]
    end_state: Any
    shift: Any
    literal: dict[str, str]  # terminal name → its fixed text, for string terminals

    def human(self, name: str) -> str:
        if name in self.literal:
            return f"`{self.literal[name]}`"
        return _REGEX_WORDS.get(name, name.lower())


def _tables(parser: Any) -> _Tables:
    from lark.parsers.lalr_analysis import Shift

    pconf = parser.parser.parser.parser.parse_table
    literal = {t.name: t.pattern.value for t in parser.terminals if t.pattern.type == "str"}
    return _Tables(pconf.states, pconf.end_states["start"], Shift, literal)


def _describe_found(tok: Any) -> str:
    t, v = tok.type, str(tok.value)
    if t == "$END":
        return "end of file"
    if t in ("STRING", "TRIPLE_STRING"):
        short = v if len(v) <= 30 else v[:27] + "…" + v[-1]
        return f"string {short}"
    if t in ("NUMBER", "DURATION"):
        return f"{_REGEX_WORDS[t][2:]} `{v}`"
    return f"`{v}`"


def _join_or(words: Sequence[str]) -> str:
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


# ---------------------------------------------------------------- the driver


@dataclass
class _Driver:
    """Feeds tokens to the LALR parser state and recovers from errors."""

    parser: Any
    tables: _Tables
    source: SourceFile
    diags: list[Diagnostic] = field(default_factory=list)
    errors: int = 0
    quiet: int = 0  # tokens still to accept before another error may be reported
    prev: Any = None  # the last token fed successfully
    prev2: Any = None  # the one before it
    last_error_line: int = -1  # one syntax error per line: more are follow-on noise
    stopped: bool = False  # an error made the rest of the file unreadable
    _comment_scanned: bool = False
    _comment_at: int | None = None  # offset of an unclosed `/*`, once scanned
    #: When a list, the (start, end) offsets of every token read from the source (for
    #: ``parse_with_comments``: comments are the ignored text between these tokens).
    token_spans: list[tuple[int, int]] | None = None

    # -------------------------------------------------------- set-up

    def run(self) -> tuple[Any, list[Any]]:
        """Parse; returns (tree or None, leftover values for salvaging items)."""
        from lark.exceptions import UnexpectedCharacters, UnexpectedToken

        ip = self.parser.parse_interactive(self.source.text)
        self.ps = ip.parser_state
        self.lt = ip.lexer_thread
        self.root = self.lt.lexer.root_lexer
        tokens: Iterator[Any] = self.lt.lex(self.ps)
        while not self.stopped:
            try:
                tok = next(tokens)
            except StopIteration:
                break
            except UnexpectedCharacters as exc:
                self._bad_characters(exc.pos_in_stream or 0)
                tokens = self.lt.lex(self.ps)
                continue
            except UnexpectedToken as exc:
                # the contextual lexer found a token that is not allowed here
                self._record(exc.token)
                self._feed_or_recover(exc.token)
                tokens = self.lt.lex(self.ps)
                continue
            self._record(tok)
            self._feed_or_recover(tok)
        return self._finish()

    def _record(self, tok: Any) -> None:
        if self.token_spans is not None and tok.start_pos is not None:
            end = tok.end_pos if tok.end_pos is not None else tok.start_pos + len(tok.value)
            self.token_spans.append((tok.start_pos, end))

    # -------------------------------------------------------- feeding

    def _feed_or_recover(self, tok: Any) -> None:
        from lark.exceptions import UnexpectedToken

        # fast path: a shift is always right; a reduce may be an LALR merged lookahead, so
        # that case is simulated first (recovery needs the state from before the error)
        action = self.tables.states[self.ps.state_stack[-1]].get(tok.type)
        if action is not None and (
            action[0] is self.tables.shift or self._accepts(self.ps.state_stack, [tok.type]) == 1
        ):
            try:
                self.ps.feed_token(tok)
            except UnexpectedToken:  # pragma: no cover - the simulation said it fits
                self._recover(tok)
                return
            self._accepted(tok)
            return
        self._recover(tok)

    def _accepted(self, tok: Any) -> None:
        self.prev2, self.prev = self.prev, tok
        if self.quiet:
            self.quiet -= 1

    def _accepts(self, stack: list[Any], types: Sequence[str]) -> int:
        """How many of ``types`` the parser accepts from ``stack`` (simulated, no side effects).
        ``$END`` counts as accepted when it completes the parse."""
        states, shift = self.tables.states, self.tables.shift
        stack = list(stack)
        for n, t in enumerate(types):
            while True:
                action = states[stack[-1]].get(t)
                if action is None:
                    return n
                kind, arg = action
                if kind is shift:
                    stack.append(arg)
                    break
                size = len(arg.expansion)
                if size:
                    del stack[-size:]
                goto = states[stack[-1]][arg.origin.name][1]
                stack.append(goto)
                if t == "$END" and goto == self.tables.end_state:
                    return n + 1
        return len(types)

    def _expected(self) -> list[str]:
        """Terminals that the parser really accepts now (LALR lookaheads filtered)."""
        stack = self.ps.state_stack
        cands = [t for t in self.tables.states[stack[-1]] if t.isupper() or t == "$END"]
        return [t for t in cands if self._accepts(stack, [t]) == 1]

    def _peek(self, k: int) -> list[Any]:
        """The next ``k`` tokens (context-free lexing), without consuming them."""
        from lark.exceptions import UnexpectedCharacters

        state = copy(self.lt.state)
        out: list[Any] = []
        while len(out) < k:
            try:
                out.append(self.root.next_token(state, None))
            except EOFError:
                out.append(_end_token(self.source))
                break
            except UnexpectedCharacters:
                break
        return out

    def _make(self, type_: str, at: Any) -> Any:
        from lark import Token

        value = self.tables.literal.get(type_, "")
        return Token.new_borrow_pos(type_, value, at)

    # -------------------------------------------------------- recovery

    def _recover(self, tok: Any) -> None:
        report = self.quiet == 0 and self.errors < MAX_ERRORS and tok.line != self.last_error_line
        expected = self._expected()
        if self._unterminated_comment(tok.start_pos or 0):
            return
        ahead = self._peek(2)
        ahead_types = [t.type for t in ahead]

        # 0. an item keyword at the start of a line inside a block: a `}` is missing above it
        if self._close_before_item(tok, ahead_types, report):
            return
        # 1. insert one missing token
        for ins in _INSERTABLE:
            if ins not in expected:
                continue
            want = [ins, tok.type, *ahead_types[:1]]
            if self._accepts(self.ps.state_stack, want) == len(want):
                if report:
                    self._report(tok, expected, inserted=ins)
                self.ps.feed_token(self._make(ins, tok))
                self.ps.feed_token(tok)
                self._accepted(tok)
                return  # the tokens after it were checked: no quiet period needed
        if report:
            self._report(tok, expected)
        # 2. drop the bad token if what follows fits
        if ahead_types and self._accepts(self.ps.state_stack, ahead_types) == len(ahead_types):
            return
        # 3. panic mode: skip to a synchronising token and pop states until it fits
        self.quiet = _QUIET_TOKENS
        self._panic(tok)

    def _close_before_item(self, tok: Any, ahead_types: list[str], report: bool) -> bool:
        """``agent x {`` at column 1 inside an unclosed block: close the blocks, start the item.

        The keyword was taken as a property key (keywords are valid keys), so it is taken back
        off the stack, the open blocks are closed with synthetic closers, and it is fed again.
        """
        kw = self.prev
        if (
            kw is None
            or kw.type not in _ITEM_KEYWORDS
            or kw.column != 1
            or not self.ps.value_stack
            or self.ps.value_stack[-1] is not kw
        ):
            return False
        closers = self._close_until(self.ps.state_stack[:-1], [kw.type, tok.type, *ahead_types[:1]])
        if not closers:
            return False
        opener = self._innermost_opener(skip_top=1)
        if report:
            if opener is not None:
                kind, what, line, _col = opener
                message = (
                    f"expected {self.tables.human(_CLOSERS[kind])} to close the {what} "
                    f"opened at line {line}"
                )
            else:
                message = f"expected {self.tables.human(closers[0])}"
            self._add(
                "syntax-error",
                message,
                _span_of(kw, self.source),
                help=f"`{kw.value}` at the start of a line begins a new item; "
                f"close the block above it first",
            )
        self.ps.state_stack.pop()
        self.ps.value_stack.pop()
        for closer in closers:
            self.ps.feed_token(self._make(closer, kw))
        self.ps.feed_token(kw)
        self.ps.feed_token(tok)
        self._accepted(tok)
        return True

    def _close_until(self, stack: list[Any], want: list[str]) -> list[str] | None:
        """The closing tokens (``}``, ``;``, ``)``, ``]``) that make ``want`` acceptable."""
        stack = list(stack)
        closers: list[str] = []
        for _ in range(100):
            if self._accepts(stack, want) == len(want):
                return closers
            for closer in ("RBRACE", "SEMICOLON", "RPAR", "RSQB"):
                if self._accepts(stack, [closer]) == 1:
                    stack = self._after(stack, closer)
                    closers.append(closer)
                    break
            else:
                return None
        return None

    def _after(self, stack: list[Any], type_: str) -> list[Any]:
        """The state stack after feeding one token (which must be accepted)."""
        states, shift = self.tables.states, self.tables.shift
        stack = list(stack)
        while True:
            kind, arg = states[stack[-1]][type_]
            if kind is shift:
                stack.append(arg)
                return stack
            size = len(arg.expansion)
            if size:
                del stack[-size:]
            stack.append(states[stack[-1]][arg.origin.name][1])

    def _panic(self, bad: Any) -> None:
        from lark.exceptions import UnexpectedCharacters

        last_line = bad.line
        while True:
            try:
                tok = self.root.next_token(self.lt.state, None)
            except EOFError:
                return
            except UnexpectedCharacters as exc:
                self._advance_to((exc.pos_in_stream or 0) + 1)
                continue
            at_sync = tok.line != last_line or tok.type in ("RBRACE", "SEMICOLON")
            last_line = tok.end_line or tok.line
            if not at_sync:
                continue
            if tok.type == "SEMICOLON":
                # a `;` ends the broken statement: resume right after it if possible
                if self._pop_until([tok.type]):
                    self.ps.feed_token(tok)
                    return
                continue
            ahead = [t.type for t in self._peek(1)]
            if tok.type in _ITEM_KEYWORDS and tok.column == 1:
                # a new item begins: close what is open (keeping it) instead of dropping it
                closers = self._close_until(self.ps.state_stack, [tok.type, *ahead])
                if closers is not None:
                    for closer in closers:
                        self.ps.feed_token(self._make(closer, tok))
                    self.ps.feed_token(tok)
                    self.prev2, self.prev = None, tok
                    return
            if self._pop_until([tok.type, *ahead]) or self._pop_until([tok.type]):
                self.ps.feed_token(tok)
                self.prev2, self.prev = None, tok
                return

    def _pop_until(self, types: list[str]) -> bool:
        """Pop parser states (fewest first) until ``types`` are accepted; True on success."""
        stack = self.ps.state_stack
        for depth in range(len(stack)):
            trial = stack[: len(stack) - depth]
            if self._accepts(trial, types) == len(types):
                if depth:
                    del self.ps.state_stack[len(stack) - depth :]
                    del self.ps.value_stack[len(self.ps.value_stack) - depth :]
                return True
        return False

    def _advance_to(self, pos: int) -> None:
        state = self.lt.state
        cur = state.line_ctr.char_pos
        if pos > cur:
            state.line_ctr.feed(self.source.text[cur:pos])

    def _bad_characters(self, pos: int) -> None:
        text = self.source.text
        line = self.source.line_col(pos)[0]
        report = self.quiet == 0 and self.errors < MAX_ERRORS and line != self.last_error_line
        if self._unterminated_comment(pos):
            return
        ch = text[pos] if pos < len(text) else ""
        if ch == '"':
            triple = text.startswith('"""', pos) or (pos >= 2 and text[pos - 2 : pos + 1] == '"""')
            start = pos - 2 if triple and not text.startswith('"""', pos) else pos
            eol = text.find("\n", pos)
            end = len(text) if eol < 0 else eol
            self._add(
                "unterminated-string",
                "triple-quoted string is not closed" if triple else "string is not closed",
                Span(start, max(end, start + 1)),
                help='close it with `"""`' if triple else 'close the string with `"`',
            )
            self.stopped = True
            return
        if ch == "'":
            close = text.find("'", pos + 1)
            nl = text.find("\n", pos + 1)
            if close > 0 and (nl < 0 or close < nl):
                # 'text': report once, then read it as the string it was meant to be
                if report:
                    self._add(
                        "syntax-error",
                        "strings use double quotes, not `'`",
                        Span(pos, close + 1),
                        help=f'write "{text[pos + 1 : close]}"',
                    )
                self._advance_to(close + 1)
                lit = self._make("STRING", self.prev or _end_token(self.source))
                lit = lit.update(value='"' + text[pos + 1 : close].replace('"', '\\"') + '"')
                lit.start_pos, lit.end_pos = pos, close + 1
                self._feed_or_recover(lit)
                return
        if report:
            end = pos + 1
            if ch == "'":
                help = 'strings use double quotes: write "…"'
            elif ch == "$":
                help = "`${NAME}` environment references go inside a string"
            else:
                help = None
            shown = ch if ch.isprintable() and ch != "`" else repr(ch)
            self._add(
                "syntax-error",
                f"unexpected character `{shown}`",
                Span(pos, end),
                help=help,
            )
            self._advance_to(end)
        else:
            self._advance_to(pos + 1)
        self.quiet = _QUIET_TOKENS

    def _unterminated_comment(self, pos: int) -> bool:
        """Report an unclosed ``/*`` before ``pos`` (it swallowed the rest of the file)."""
        if not self._comment_scanned:
            self._comment_scanned = True
            self._comment_at = _find_unterminated_comment(self.source.text)
        at = self._comment_at
        if at is not None and at <= pos:
            self._add(
                "unterminated-comment",
                "block comment is not closed",
                Span(at, at + 2),
                help="close it with `*/`",
            )
            self.stopped = True
            self._comment_at = None
            return True
        return False

    # -------------------------------------------------------- messages

    def _add(
        self, code: str, message: str, span: Span, help: str | tuple[str, ...] | None = None
    ) -> None:
        if self.errors >= MAX_ERRORS:
            return
        self.errors += 1
        self.last_error_line = self.source.line_col(span.start)[0]
        self.diags.append(diag(code, message, self.source, span, help=help))
        if self.errors == MAX_ERRORS:
            self.stopped = True

    def _report(self, tok: Any, expected: list[str], inserted: str | None = None) -> None:
        found = _describe_found(tok)
        span = _span_of(tok, self.source)
        helps: list[str] = []
        prev = self.prev
        exp = set(expected)
        if tok.type == "$END" and exp & set(_CLOSERS.values()):
            opener = self._innermost_opener()
            if opener is not None:
                kind, what, line, col = opener
                closer = self.tables.human(_CLOSERS[kind])
                self._add(
                    "syntax-error",
                    f"expected {closer} to close the {what} opened at line {line}",
                    span,
                    help=f"the {what} that starts at line {line}, column {col} is never closed",
                )
                return
        p2 = self.prev2
        if (
            tok.type in ("COLON", "EQUAL")
            and p2 is not None
            and p2.type in ("COLON", "EQUAL")
            and _is_key_token(prev)
            and prev.line > (p2.end_line or p2.line)
        ):
            # `name:` with its value missing: the next line's key was read as the value
            self._add(
                "syntax-error",
                f"expected a value after `{p2.value}`, found end of line",
                Span(p2.end_pos, p2.end_pos),
                help=f"`{prev.value}` on line {prev.line} starts the next property",
            )
            return
        if {"COLON", "EQUAL"} <= exp <= {"COLON", "EQUAL", "LBRACE"} and _is_key_token(prev):
            key = str(prev.value)
            message = f"expected `:` or `=` after property name `{key}`"
            if tok.type != "$END":
                message += f", found {found}"
            helps.append(f"write `{key}: value`")
            self._add("syntax-error", message, span, help=tuple(helps))
            return
        if inserted is not None:
            missing = self.tables.human(inserted)
            if prev is not None and prev.end_line is not None and prev.end_line < tok.line:
                # point just after the previous token: that is where the token is missing
                span = Span(prev.end_pos, prev.end_pos)
                helps.append(f"add {missing} at the end of line {prev.end_line}")
            message = f"expected {missing}, found {found}"
            self._add("syntax-error", message, span, help=tuple(helps) or None)
            return
        words = self._expected_words(expected)
        if set(_ITEM_KEYWORDS) & exp and (tok.type == "IDENT" or tok.type in _KEYWORDS):
            guess = did_you_mean(str(tok.value), [self.tables.literal[k] for k in _ITEM_KEYWORDS])
            if guess:
                helps.append(f"did you mean `{guess}`")
        if tok.type in _CLOSERS.values() and self._innermost_opener() is None:
            helps.append(f"this {found} has no matching opening bracket")
        if not words:
            words = ["something else"]
        message = f"expected {_join_or(words)}, found {found}"
        self._add("syntax-error", message, span, help=tuple(helps) or None)

    def _expected_words(self, expected: list[str]) -> list[str]:
        exp = set(expected)
        words: list[str] = []
        if exp and exp <= set(_ITEM_KEYWORDS) | {"$END", "SEMICOLON"}:
            items = ", ".join(f"`{self.tables.literal[k]}`" for k in _ITEM_KEYWORDS[:3])
            return [f"an item ({items} …)"]
        if {"IDENT", "STRING"} <= exp and len(exp & _KEYWORDS) >= 8:
            words.append("a property name")
            # the optional separators between entries are noise here
            exp -= _KEYWORDS | {"IDENT", "STRING", "COMMA", "SEMICOLON"}
        if {"STRING", "NUMBER", "LSQB"} <= exp:
            is_expr = bool(exp & _EXPR_ONLY_STARTS)
            words.append("an expression" if is_expr else "a value")
            exp -= _VALUE_STARTS | _EXPR_ONLY_STARTS | {"TRIPLE_STRING"}
        if len(exp & _BINARY_OPS) >= 5:
            exp -= _BINARY_OPS | {"DOT", "LPAR", "LSQB", "QUESTION"}
            words.append("an operator")
        rest = sorted(exp, key=lambda t: (_ORDER.index(t) if t in _ORDER else 99, t))
        rest_words = [self.tables.human(t) for t in rest if t != "$END"]
        if len(rest_words) > 6:
            rest_words = rest_words[:5] + ["…"]
        if "$END" in exp:
            words.append("end of file")
        return rest_words + words

    def _innermost_opener(self, skip_top: int = 0) -> tuple[str, str, int, int] | None:
        """The innermost bracket still open: (token type, description, line, column)."""
        from lark import Token, Tree

        values = self.ps.value_stack[: len(self.ps.value_stack) - skip_top]
        closed = 0  # closers seen (not yet reduced): they match the nearest openers
        for i in range(len(values) - 1, -1, -1):
            v = values[i]
            if isinstance(v, Token) and v.type in _CLOSERS.values():
                closed += 1
                continue
            if isinstance(v, Token) and v.type in _CLOSERS and closed:
                closed -= 1
                continue
            if isinstance(v, Token) and v.type in _CLOSERS:
                what = _OPEN_WORDS[v.type]
                name = None
                for back in range(i - 1, max(-1, i - 5), -1):
                    w = values[back]
                    if isinstance(w, Token) and w.type in _KEYWORDS and w.type not in (
                        "TRUE", "FALSE", "NULL", "NOT", "IN",
                    ):  # fmt: skip
                        name = str(w.value)
                        break
                    if isinstance(w, Tree) and w.data == "sep":
                        continue
                    if name is None and isinstance(w, Token) and w.type in ("IDENT", "STRING"):
                        name = str(w.value)
                        if (
                            back > 0
                            and isinstance(values[back - 1], Token)
                            and values[back - 1].type in _ITEM_KEYWORDS
                        ):
                            name = str(values[back - 1].value)
                        break
                    if isinstance(w, Token) and w.type in _CLOSERS.values():
                        break
                if name is not None and v.type == "LBRACE":
                    what = f"`{name}` block"
                line, col = self.source.line_col(v.start_pos or 0)
                return v.type, what, line, col
        return None

    # -------------------------------------------------------- end of input

    def _finish(self) -> tuple[Any, list[Any]]:
        """Feed end-of-input, closing open blocks (reported once) so the items survive."""
        end = _end_token(self.source)
        reported = self.stopped
        for _ in range(1000):
            if self._accepts(self.ps.state_stack, ["$END"]) == 1:
                return self.ps.feed_token(end, True), []
            if not reported:
                reported = True
                if self.quiet == 0 and self.errors < MAX_ERRORS:
                    self._report(end, self._expected())
            expected = self._expected()
            for closer in ("RBRACE", "RSQB", "RPAR", "SEMICOLON"):
                if closer in expected:
                    self.ps.feed_token(self._make(closer, end))
                    break
            else:
                if len(self.ps.state_stack) <= 1:
                    break
                self.ps.state_stack.pop()
                self.ps.value_stack.pop()
        return None, list(self.ps.value_stack)


def _is_key_token(tok: Any) -> bool:
    return tok is not None and (tok.type in ("IDENT", "STRING") or tok.type in _KEYWORDS)


def _end_token(source: SourceFile) -> Any:
    from lark import Token

    n = len(source.text)
    line, col = source.line_col(n)
    return Token("$END", "", n, line, col, line, col, n)


def _span_of(tok: Any, source: SourceFile) -> Span:
    start = tok.start_pos if tok.start_pos is not None else len(source.text)
    end = tok.end_pos if tok.end_pos is not None else start
    return Span(start, max(start, end))


_SCAN = re.compile(r'"""[\s\S]*?"""|"(?:[^"\\]|\\[\s\S])*"|(?:#|//)[^\n]*|/\*[\s\S]*?\*/|(/\*)')


def _find_unterminated_comment(text: str) -> int | None:
    """Offset of a ``/*`` that is never closed (strings and line comments skipped)."""
    if "/*" not in text:
        return None
    for m in _SCAN.finditer(text):
        if m.group(1):
            return m.start(1)
    return None


def _collect_items(values: list[Any]) -> list[Any]:
    """Complete item trees left on the parser stack when the parse could not be finished."""
    from lark import Tree

    items: list[Any] = []
    names = {"schedule", "agent", "metadata", "policy_def", "type_def", "function_def",
             "channel", "memory", "webhook"}  # fmt: skip
    for v in values:
        if isinstance(v, Tree):
            if v.data in names:
                items.append(v)
            elif str(v.data).startswith("__"):
                items.extend(_collect_items(list(v.children)))
    return items


# ---------------------------------------------------------------- public API


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment as written: ``# …`` / ``// …`` (to end of line, without the newline) or
    ``/* … */``; ``span`` covers exactly ``text``."""

    span: Span
    text: str


_COMMENT = re.compile(r"(?:#|//)[^\n]*|/\*[\s\S]*?\*/")


def _comments_between(text: str, token_spans: Sequence[tuple[int, int]]) -> list[Comment]:
    """The comments of ``text``: the gaps between consecutive tokens hold only whitespace and
    comments (the ignored terminals), so scanning just the gaps is exact — ``//`` inside a
    ``vault://`` token or ``#`` inside a string is never mistaken for a comment."""
    out: list[Comment] = []
    pos = 0
    for start, end in [*sorted(token_spans), (len(text), len(text))]:
        if start > pos:
            for m in _COMMENT.finditer(text, pos, start):
                out.append(Comment(Span(m.start(), m.end()), m.group()))
        pos = max(pos, end)
    return out


def parse_with_comments(source: SourceFile) -> tuple[ast.Module, list[Diagnostic], list[Comment]]:
    """``parse_source`` that also returns the file's comments in source order (for
    ``symbic fmt``). The comment list is exact only for a file without syntax errors."""
    spans: list[tuple[int, int]] = []
    module, diags = _guarded_parse(source, spans)
    return module, diags, _comments_between(source.text, spans)


def parse_source(source: SourceFile) -> tuple[ast.Module, list[Diagnostic]]:
    """Parse one file into its AST and the problems found (syntax errors, bad string escapes,
    malformed ``${…}``). Never raises: an internal failure is reported as ``syntax-error``."""
    return _guarded_parse(source, None)


def _guarded_parse(
    source: SourceFile, token_spans: list[tuple[int, int]] | None
) -> tuple[ast.Module, list[Diagnostic]]:
    try:
        return _parse(source, token_spans)
    except RecursionError:
        return ast.Module(()), [
            diag(
                "syntax-error",
                "the file nests too deeply to compile",
                source,
                Span(0, 0),
                help="lists, maps, blocks and expressions may nest a few hundred levels deep",
            )
        ]
    except Exception as exc:  # the boundary: a bug must not become a traceback
        return ast.Module(()), [
            diag(
                "syntax-error",
                f"internal parser error ({type(exc).__name__}: {exc})",
                source,
                Span(0, 0),
                help="this is a bug in symbic; report it together with this file",
            )
        ]


def parse_text(text: str, name: str = "<string>") -> tuple[ast.Module, list[Diagnostic]]:
    """``parse_source`` for a string (tests, REPL, stdin)."""
    return parse_source(SourceFile(name, text))


def _parse(
    source: SourceFile, token_spans: list[tuple[int, int]] | None = None
) -> tuple[ast.Module, list[Diagnostic]]:
    from lark import Tree

    from compiler.build import build_module

    parser = get_lark()
    driver = _Driver(parser, _tables_for(parser), source, token_spans=token_spans)
    tree, leftovers = driver.run()
    if tree is None:
        tree = Tree("start", _collect_items(leftovers))
    module, problems = build_module(tree, source)
    diags = driver.diags + problems
    diags.sort(key=lambda d: d.sort_key())
    return module, diags


@functools.lru_cache(maxsize=4)
def _tables_for(parser: Any) -> _Tables:
    return _tables(parser)
