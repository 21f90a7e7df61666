"""Diagnostics: severities, the one registry of codes, and the Diagnostic record.

Every diagnostic the compiler emits has a code registered in ``CODES``. Renderers live in
``compiler.render`` so this module stays dependency-free.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from compiler.source import SourceFile, Span


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Code:
    name: str
    severity: Severity
    summary: str


def _c(name: str, severity: Severity, summary: str) -> tuple[str, Code]:
    return name, Code(name, severity, summary)


E, W = Severity.ERROR, Severity.WARNING

#: The registry of every diagnostic code (kebab-case). Add new codes here, nowhere else.
CODES: dict[str, Code] = dict(
    [
        # lexical / syntax
        _c("syntax-error", E, "the text does not follow the grammar"),
        _c("unterminated-string", E, "a string literal is not closed"),
        _c("unterminated-comment", E, "a block comment is not closed"),
        _c("invalid-escape", E, "unknown backslash escape in a string"),
        _c("invalid-env-ref", E, "malformed ${NAME} environment reference"),
        _c("invalid-encoding", E, "the file is not valid UTF-8"),
        # structure
        _c("unknown-property", E, "a property that this block does not have"),
        _c("duplicate-property", E, "a property given twice"),
        _c("missing-property", E, "a required property is absent"),
        _c("invalid-type", E, "a value of the wrong type"),
        _c("invalid-value", E, "a value outside the allowed set or range"),
        _c("conflicting-properties", E, "properties that exclude each other"),
        _c("duplicate-name", E, "two items with the same name"),
        _c("invalid-name", E, "a name that does not match the allowed pattern"),
        # schedule specifics
        _c("invalid-cron", E, "a cron expression that cannot be parsed"),
        _c("unsupported-cron", E, "cron syntax that symbi does not support"),
        _c("cron-never-fires", W, "a cron expression that matches no date"),
        _c("invalid-timezone", E, "not an IANA time zone name"),
        _c("invalid-datetime", E, "not an ISO-8601 instant"),
        _c("at-in-past", W, "an `at` time that has already passed"),
        _c("invalid-duration", E, "not a duration such as 30s, 5m, 1h30m"),
        _c("invalid-email", E, "not an e-mail address"),
        _c("invalid-url", E, "not an http(s) URL"),
        _c("unknown-channel", E, "a delivery channel that does not exist"),
        _c("missing-channel-setting", E, "a delivery channel lacks a required setting"),
        _c("unused-channel-setting", W, "a channel setting for a channel not in `delivery`"),
        _c("undefined-policy", E, "`policy` names a policy block that does not exist"),
        _c("undefined-agent", W, "a schedule names an agent that is not defined"),
        _c("agent-not-executable", W, "an agent with nothing the runtime can execute"),
        _c("ambiguous-executor", E, "an agent whose keys select more than one executor"),
        _c("invalid-time-window", E, "allowed_hours start/end is not HH:MM"),
        _c("empty-file", W, "a file with no items"),
        _c("unreadable-input", E, "a file that cannot be read"),
        # symbic fmt
        _c("format-failed", E, "symbic fmt could not format the file without changing it"),
    ]
)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding. ``span`` is relative to ``source``; ``help`` lines state, never ask."""

    code: str
    message: str
    source: SourceFile
    span: Span
    severity: Severity | None = None
    help: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise KeyError(f"unregistered diagnostic code {self.code!r}")
        if self.severity is None:
            object.__setattr__(self, "severity", CODES[self.code].severity)

    @property
    def sev(self) -> Severity:
        assert self.severity is not None
        return self.severity

    @property
    def line_col(self) -> tuple[int, int]:
        return self.source.line_col(self.span.start)

    @property
    def end_line_col(self) -> tuple[int, int]:
        return self.source.line_col(max(self.span.start, self.span.end))

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.source.name, self.span.start, self.span.end, self.code)


def diag(
    code: str,
    message: str,
    source: SourceFile,
    span: Span,
    *,
    help: str | tuple[str, ...] | None = None,
    severity: Severity | None = None,
) -> Diagnostic:
    """Shorthand constructor used by every pass."""
    helps: tuple[str, ...] = () if help is None else ((help,) if isinstance(help, str) else help)
    return Diagnostic(code, message, source, span, severity, helps)


def did_you_mean(word: str, candidates: list[str] | tuple[str, ...] | set[str]) -> str | None:
    """The closest candidate to ``word`` (difflib), or None if nothing is close."""
    import difflib

    found = difflib.get_close_matches(word, sorted(candidates), n=1, cutoff=0.6)
    if not found:
        low = {c.lower(): c for c in candidates}
        if word.lower() in low:
            return low[word.lower()]
        return None
    return found[0]
