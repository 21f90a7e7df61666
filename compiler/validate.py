"""Validation: parsed modules → typed specs + diagnostics (SPEC §1.3–1.5).

Pure passes: nothing here reads files, the environment or the clock (``now`` is passed in).
Every problem becomes a ``Diagnostic``; the passes never raise on user input. The result
(``Validated``) carries each schedule/agent/policy with its values already converted
(durations in seconds, ``at`` normalised to UTC) for ``compiler.lower``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from compiler import ast
from compiler.diagnostics import CODES, Diagnostic, Severity, diag, did_you_mean
from compiler.durations import parse_duration
from compiler.ir import BUILTIN_CHANNELS
from compiler.schema import (
    AGENT,
    BLOCKS,
    CHANNEL_REQUIRED,
    CHANNEL_SETTINGS,
    EXECUTOR_KEYS,
    NAME_PATTERN,
    POLICY,
    SCHEDULE,
    BlockSpec,
    PropSpec,
)
from compiler.source import SourceFile, Span

# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class PolicySpec:
    """A validated policy: inline (``name`` None) or a top-level ``policy NAME { … }``."""

    name: str | None
    values: Mapping[str, Any]


@dataclass(frozen=True)
class ScheduleSpec:
    """A validated schedule. ``values`` holds the converted value of every key given.

    ``policy`` in ``values`` is a ``PolicySpec`` (inline block) or a ``str`` (a policy name that
    resolved); ``delivery`` already includes the channel of ``deliver``."""

    name: str
    source: SourceFile
    node: ast.Schedule
    values: Mapping[str, Any]

    @property
    def line(self) -> int:
        return self.source.line_col(self.node.span.start)[0]


@dataclass(frozen=True)
class AgentSpec:
    """A validated agent; ``executor`` is None when there is nothing to execute."""

    name: str
    source: SourceFile
    node: ast.Agent
    values: Mapping[str, Any]
    executor: str | None
    capabilities: tuple[str, ...]
    timeout_seconds: float | None

    @property
    def line(self) -> int:
        return self.source.line_col(self.node.span.start)[0]


@dataclass(frozen=True)
class Validated:
    schedules: tuple[ScheduleSpec, ...]
    agents: tuple[AgentSpec, ...]
    policies: Mapping[str, PolicySpec]
    diagnostics: tuple[Diagnostic, ...]

    @property
    def has_errors(self) -> bool:
        return any(d.sev is Severity.ERROR for d in self.diagnostics)


# ---------------------------------------------------------------- value helpers

_NAME_RE = re.compile(NAME_PATTERN)
_TIME_RE = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_EMAIL_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+"
)


def is_email(text: str) -> bool:
    """True for a plain ``local@domain.tld`` address."""
    return _EMAIL_RE.fullmatch(text) is not None


def url_problem(text: str) -> str | None:
    """Why ``text`` is not an http(s) URL, or None when it is one."""
    from urllib.parse import urlsplit

    if any(c.isspace() for c in text):
        return "a URL cannot contain spaces"
    try:
        parts = urlsplit(text)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        return str(e)
    if parts.scheme not in ("http", "https"):
        return "the URL must start with http:// or https://"
    if not host:
        return "the URL has no host"
    return None


@lru_cache(maxsize=256)
def timezone_valid(name: str) -> bool:
    """True if ``name`` is an IANA zone known to zoneinfo (tzdata)."""
    import zoneinfo

    if not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


@lru_cache(maxsize=1)
def _all_timezones() -> tuple[str, ...]:
    import zoneinfo

    return tuple(sorted(zoneinfo.available_timezones()))


def suggest_timezone(name: str) -> str | None:
    """The closest IANA zone name to ``name`` (slow: only called for invalid names)."""
    zones = _all_timezones()
    low = {z.lower(): z for z in zones}
    if name.lower() in low:
        return low[name.lower()]
    # Compare the city part too, so "Berlin" finds "Europe/Berlin".
    by_city = {z.rsplit("/", 1)[-1].lower(): z for z in zones}
    if name.lower().replace(" ", "_") in by_city:
        return by_city[name.lower().replace(" ", "_")]
    return did_you_mean(name, zones)


def parse_instant(text: str, tz_name: str) -> datetime | None:
    """An ISO-8601 date-time as an aware UTC datetime; a naive one is read in ``tz_name``."""
    import zoneinfo

    s = text.strip()
    if len(s) < 16 or s[4:5] != "-" or "T" not in s.upper():
        return None  # a date alone or a time alone is not an instant
    if s.endswith(("z", "Z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        if not timezone_valid(tz_name):
            return None
        dt = dt.replace(tzinfo=zoneinfo.ZoneInfo(tz_name))
    return dt.astimezone(UTC)


def describe_value(v: object) -> str:
    """Plain words for the kind of a value, for type errors."""
    if isinstance(v, ast.StringLit):
        return "a string"
    if isinstance(v, ast.BoolLit):
        return "a boolean"
    if isinstance(v, ast.NumberLit):
        return "a number"
    if isinstance(v, ast.NullLit):
        return "null"
    if isinstance(v, ast.DurationLit):
        return "a duration"
    if isinstance(v, ast.Ident):
        return f"the identifier `{v.name}`"
    if isinstance(v, ast.VaultRef):
        return "a vault reference"
    if isinstance(v, ast.ListLit):
        return "a list"
    if isinstance(v, ast.MapLit):
        return "a block" if v.block_form else "a map"
    return "a value"


def _fmt_num(x: float) -> str:
    return f"{x:g}"


def _quote_list(items: Iterable[str]) -> str:
    return ", ".join(f"`{i}`" for i in items)


# ---------------------------------------------------------------- the checker

_INVALID = object()  # a value that failed its check (a diagnostic was recorded)


@dataclass
class _Ctx:
    """Per-file state of one validation run (never shared between runs)."""

    source: SourceFile
    out: list[Diagnostic]
    custom_channels: Collection[str]
    now: datetime | None

    def error(self, code: str, message: str, span: Span, help: str | tuple[str, ...] | None = None,
              severity: Severity | None = None, notes: tuple[str, ...] = ()) -> None:
        d = diag(code, message, self.source, span, help=help, severity=severity)
        if notes:
            d = Diagnostic(d.code, d.message, d.source, d.span, d.severity, d.help, notes)
        self.out.append(d)

    def where(self, span: Span) -> str:
        line, col = self.source.line_col(span.start)
        return f"{self.source.name}:{line}:{col}"


def _inner_span(s: ast.StringLit, start: int, end: int) -> Span:
    """Span of ``value[start:end]`` inside a string literal, or the whole literal."""
    if s.raw_offsets and not s.triple:
        return Span(s.content_start + start, s.content_start + max(end, start))
    return s.span


def _header_span(node: ast.Schedule | ast.Agent, keyword: str) -> Span:
    return Span(node.span.start, node.span.start + len(keyword))


# -- kinds ----------------------------------------------------------------


def _expect_string(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    if isinstance(v, ast.StringLit):
        return v.value
    help: str | None = None
    if isinstance(v, ast.Ident):
        help = f'write it in quotes: `"{v.name}"`'
    elif isinstance(v, ast.NumberLit):
        help = f'write it in quotes: `"{v.text}"`'
    elif isinstance(v, ast.VaultRef):
        help = "vault references are not supported here; use an environment reference `${NAME}`"
    ctx.error("invalid-type", f"`{spec.key}` must be a string, found {describe_value(v)}", v.span, help)
    return _INVALID


def _expect_name(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    if isinstance(v, ast.StringLit):
        return v.value
    if isinstance(v, ast.Ident):
        return v.name
    ctx.error("invalid-type", f"`{spec.key}` must be a name (string or identifier), found {describe_value(v)}", v.span)
    return _INVALID


def _kind_string(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    return _expect_string(ctx, spec, v)


def _kind_path(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    s = _expect_string(ctx, spec, v)
    if s is not _INVALID and not s.strip():
        ctx.error("invalid-value", f"`{spec.key}` must not be empty", v.span)
        return _INVALID
    return s


def _kind_name(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    s = _expect_name(ctx, spec, v)
    if s is not _INVALID and not s.strip():
        ctx.error("invalid-value", f"`{spec.key}` must not be empty", v.span)
        return _INVALID
    return s


def _kind_bool(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    if isinstance(v, ast.BoolLit):
        return v.value
    help = None
    if isinstance(v, ast.StringLit) and v.value.strip().lower() in ("true", "false"):
        help = f"write `{v.value.strip().lower()}` without quotes"
    ctx.error("invalid-type", f"`{spec.key}` must be `true` or `false`, found {describe_value(v)}", v.span, help)
    return _INVALID


def _check_minimum(ctx: _Ctx, spec: PropSpec, x: float, span: Span, shown: str) -> bool:
    if spec.minimum is not None and x < spec.minimum:
        ctx.error("invalid-value", f"`{spec.key}` must be at least {_fmt_num(spec.minimum)}, found {shown}", span)
        return False
    if spec.positive and x <= 0:
        ctx.error("invalid-value", f"`{spec.key}` must be greater than zero, found {shown}", span)
        return False
    return True


def _kind_int(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    if isinstance(v, ast.NumberLit) and isinstance(v.value, int) and not isinstance(v.value, bool):
        return v.value if _check_minimum(ctx, spec, v.value, v.span, v.text) else _INVALID
    help = None
    if isinstance(v, ast.StringLit) and v.value.strip().lstrip("-").isdigit():
        help = f"write `{v.value.strip()}` without quotes"
    found = v.text if isinstance(v, ast.NumberLit) else describe_value(v)
    ctx.error("invalid-type", f"`{spec.key}` must be an integer, found {found}", v.span, help)
    return _INVALID


def _kind_number(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    if isinstance(v, ast.NumberLit):
        return v.value if _check_minimum(ctx, spec, v.value, v.span, v.text) else _INVALID
    ctx.error("invalid-type", f"`{spec.key}` must be a number, found {describe_value(v)}", v.span)
    return _INVALID


def _kind_duration(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    seconds: float | None
    if isinstance(v, ast.DurationLit):
        seconds, shown = v.seconds, v.text
    elif isinstance(v, ast.NumberLit):
        seconds, shown = float(v.value), v.text  # a bare number is seconds (upstream `timeout = 30`)
    elif isinstance(v, ast.StringLit):
        seconds, shown = parse_duration(v.value), f'"{v.value}"'
        if seconds is None:
            ctx.error("invalid-duration", f"`{spec.key}`: \"{v.value}\" is not a duration", v.span,
                      'write a number with a unit: "500ms", "30s", "5m", "1h30m", "2d", "1w"')
            return _INVALID
    else:
        ctx.error("invalid-type", f"`{spec.key}` must be a duration, found {describe_value(v)}", v.span,
                  'write a duration such as "30s", "5m" or "1h30m"')
        return _INVALID
    return float(seconds) if _check_minimum(ctx, spec, seconds, v.span, shown) else _INVALID


def _kind_enum(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    s = _expect_name(ctx, spec, v)
    if s is _INVALID:
        return _INVALID
    if s in spec.choices:
        return s
    if s.upper() in spec.choices and spec.choices[0].isupper():  # HTTP methods: any case
        return s.upper()
    guess = did_you_mean(s, spec.choices)
    help = f"did you mean `{guess}`" if guess else f"expected one of {_quote_list(spec.choices)}"
    helps = (help,) if not guess else (help, f"expected one of {_quote_list(spec.choices)}")
    ctx.error("invalid-value", f"`{spec.key}`: unknown value `{s}`", v.span, helps)
    return _INVALID


def _list_items(ctx: _Ctx, spec: PropSpec, v: ast.Value, what: str) -> tuple[ast.Value, ...] | None:
    if isinstance(v, ast.ListLit):
        return v.items
    help = None
    if isinstance(v, (ast.StringLit, ast.Ident)):
        text = v.value if isinstance(v, ast.StringLit) else v.name
        help = f'write a list: `["{text}"]`'
    ctx.error("invalid-type", f"`{spec.key}` must be a list of {what}, found {describe_value(v)}", v.span, help)
    return None


def _kind_string_list(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    items = _list_items(ctx, spec, v, "strings")
    if items is None:
        return _INVALID
    out = [_expect_string(ctx, spec, i) for i in items]
    return _INVALID if _INVALID in out else tuple(out)


def _kind_name_list(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    items = _list_items(ctx, spec, v, "names")
    if items is None:
        return _INVALID
    out = [_expect_name(ctx, spec, i) for i in items]
    return _INVALID if _INVALID in out else tuple(out)


def _kind_email_list(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    items = _list_items(ctx, spec, v, "e-mail addresses")
    if items is None:
        return _INVALID
    out: list[Any] = []
    for i in items:
        s = _expect_string(ctx, spec, i)
        if s is not _INVALID and isinstance(i, ast.StringLit) and not i.env_refs and not is_email(s):
            ctx.error("invalid-email", f"`{s}` is not an e-mail address", i.span,
                      'write an address such as "ops@example.com"')
            s = _INVALID
        out.append(s)
    if not out and _INVALID not in out:
        ctx.error("invalid-value", f"`{spec.key}` must not be empty", v.span)
        return _INVALID
    return _INVALID if _INVALID in out else tuple(out)


def _kind_string_map(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    if not isinstance(v, ast.MapLit):
        ctx.error("invalid-type", f"`{spec.key}` must be a map such as `{{ \"Key\": \"value\" }}`, found {describe_value(v)}", v.span)
        return _INVALID
    out: list[tuple[str, str]] = []
    seen: dict[str, ast.Property] = {}
    ok = True
    for e in v.entries:
        if e.key in seen:
            first = seen[e.key]
            ctx.error("duplicate-property", f"`{e.key}` is given twice in `{spec.key}`", e.key_span,
                      "remove one of them", notes=(f"first given at {ctx.where(first.key_span)}",))
            ok = False
            continue
        seen[e.key] = e
        if isinstance(e.value, ast.StringLit):
            out.append((e.key, e.value.value))
        else:
            ctx.error("invalid-type", f"`{spec.key}`: the value of `{e.key}` must be a string, found {describe_value(e.value)}", e.value.span)
            ok = False
    return tuple(out) if ok else _INVALID


def _kind_url(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    s = _expect_string(ctx, spec, v)
    if s is _INVALID:
        return _INVALID
    assert isinstance(v, ast.StringLit)
    if v.env_refs and s.strip().startswith("${"):
        return s  # the whole URL (or its scheme/host) comes from the environment at run time
    problem = url_problem(s)
    if problem is not None:
        ctx.error("invalid-url", f"`{spec.key}`: \"{s}\" is not an http(s) URL", v.span, problem)
        return _INVALID
    return s


def _kind_timezone(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    s = _expect_string(ctx, spec, v)
    if s is _INVALID:
        return _INVALID
    if not timezone_valid(s):
        guess = suggest_timezone(s)
        help = f"did you mean `{guess}`" if guess else 'use an IANA name such as "UTC" or "Europe/Berlin"'
        ctx.error("invalid-timezone", f"unknown time zone `{s}`", v.span, help)
        return _INVALID
    return s


def _kind_raw_string(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    """``datetime``: checked by the schedule pass, which knows the time zone."""
    return _expect_string(ctx, spec, v)


def _kind_cron(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    s = _expect_string(ctx, spec, v)
    if s is _INVALID:
        return _INVALID
    assert isinstance(v, ast.StringLit)
    if v.env_refs:
        ctx.error("invalid-cron", "`cron` cannot contain environment references", v.span,
                  "the schedule is computed when the bundle is deployed; write the expression itself")
        return _INVALID
    from compiler.cron import parse_cron

    expr, problems = parse_cron(s)
    bad = False
    for p in problems:
        code = p.code if p.code in CODES else "invalid-cron"
        span = _inner_span(v, p.start, p.end)
        ctx.error(code, p.message, span, p.help or None)
        bad = bad or _is_error(code)
    if expr is None or bad:
        return _INVALID
    return s


def _kind_time(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    s = _expect_string(ctx, spec, v)
    if s is _INVALID:
        return _INVALID
    if not _TIME_RE.fullmatch(s.strip()):
        ctx.error("invalid-time-window", f"`{spec.key}`: \"{s}\" is not a time of day HH:MM", v.span,
                  'write a 24-hour time such as "09:00" or "23:30"')
        return _INVALID
    return s.strip()


def _kind_command(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    if isinstance(v, ast.StringLit):
        if not v.value.strip():
            ctx.error("invalid-value", "`command` must not be empty", v.span)
            return _INVALID
        return v.value
    if isinstance(v, ast.ListLit):
        out = [_expect_string(ctx, spec, i) for i in v.items]
        if _INVALID in out:
            return _INVALID
        if not out:
            ctx.error("invalid-value", "`command` must not be an empty list", v.span,
                      'write the program and its arguments: `["python3", "job.py"]`')
            return _INVALID
        return tuple(out)
    ctx.error("invalid-type", f"`command` must be a string or a list of strings, found {describe_value(v)}", v.span)
    return _INVALID


def _kind_channel_list(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    items = _list_items(ctx, spec, v, "channel names")
    if items is None:
        return _INVALID
    out: list[tuple[str, Span]] = []
    ok = True
    for i in items:
        name = _expect_name(ctx, spec, i)
        if name is _INVALID:
            ok = False
            continue
        # Built-ins first: the custom set may be lazy (installed entry points are looked up
        # only when a name is not built in).
        if name not in BUILTIN_CHANNELS and name not in ctx.custom_channels:
            _unknown_channel(ctx, name, i.span, set(BUILTIN_CHANNELS) | set(ctx.custom_channels))
            ok = False
            continue
        if any(n == name for n, _ in out):
            continue  # listing a channel twice delivers once
        out.append((name, i.span))
    return tuple(out) if ok else _INVALID


def _unknown_channel(ctx: _Ctx, name: str, span: Span, known: set[str]) -> None:
    guess = did_you_mean(name, known)
    if guess:
        help = f"did you mean `{guess}`"
    else:
        help = (f"the built-in channels are {_quote_list(BUILTIN_CHANNELS)}; custom channels are "
                "installed as `symbi.channels` entry points")
    ctx.error("unknown-channel", f"unknown delivery channel `{name}`", span, help)


@dataclass(frozen=True)
class DeliverTarget:
    """A parsed ``deliver`` URI: the channel and the setting it implies."""

    channel: str
    setting: str | None = None  # key of the schedule setting filled from the URI
    value: Any = None


def _kind_deliver(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    s = _expect_string(ctx, spec, v)
    if s is _INVALID:
        return _INVALID
    assert isinstance(v, ast.StringLit)
    example = 'write a URI such as "slack://#ops", "email://ops@example.com", "webhook+https://example.com/hook", "log_file://job.log" or "stdout://"'
    if "://" not in s:
        ctx.error("invalid-value", f"`deliver`: \"{s}\" is not a delivery URI", v.span, example)
        return _INVALID
    scheme, rest = s.split("://", 1)
    if scheme == "stdout":
        return DeliverTarget("stdout")
    if scheme == "log_file":
        if not rest:
            return DeliverTarget("log_file")
        return DeliverTarget("log_file", "log_file", rest)
    if scheme == "slack":
        return DeliverTarget("slack", "slack_channel", rest) if rest else DeliverTarget("slack")
    if scheme == "email":
        addrs = tuple(a.strip() for a in rest.split(",") if a.strip())
        if not addrs:
            ctx.error("invalid-value", "`deliver`: `email://` needs an address", v.span, example)
            return _INVALID
        for a in addrs:
            if "${" not in a and not is_email(a):
                ctx.error("invalid-email", f"`{a}` is not an e-mail address", v.span, 'write an address such as "email://ops@example.com"')
                return _INVALID
        return DeliverTarget("email", "email_recipients", addrs)
    if scheme.startswith("webhook"):
        url = rest if scheme == "webhook" else f"{scheme.split('+', 1)[-1]}://{rest}"
        if scheme == "webhook" or scheme not in ("webhook+http", "webhook+https"):
            ctx.error("invalid-value", f"`deliver`: unknown webhook form `{scheme}://`", v.span,
                      'write "webhook+https://host/path" (or "webhook+http://…")')
            return _INVALID
        problem = None if url.startswith(("http://${", "https://${")) else url_problem(url)
        if problem is not None:
            ctx.error("invalid-url", f"`deliver`: \"{url}\" is not an http(s) URL", v.span, problem)
            return _INVALID
        return DeliverTarget("webhook", "webhook_url", url)
    if scheme in ctx.custom_channels:
        return DeliverTarget(scheme)
    known = set(BUILTIN_CHANNELS) | set(ctx.custom_channels)
    _unknown_channel(ctx, scheme, _inner_span(v, 0, len(scheme)), known)
    return _INVALID


def _kind_block(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    if not isinstance(v, ast.MapLit):
        ctx.error("invalid-type", f"`{spec.key}` must be a block `{spec.key} {{ … }}`, found {describe_value(v)}", v.span)
        return _INVALID
    assert spec.block is not None
    values = check_props(ctx, v.entries, BLOCKS[spec.block], owner=v.span)
    return values


def _kind_policy(ctx: _Ctx, spec: PropSpec, v: ast.Value) -> Any:
    if isinstance(v, ast.MapLit):
        values = check_props(ctx, v.entries, POLICY, owner=v.span)
        return PolicySpec(None, values)
    if isinstance(v, (ast.StringLit, ast.Ident)):
        return _PolicyRef(v.value if isinstance(v, ast.StringLit) else v.name, v.span)
    ctx.error("invalid-type", f"`policy` must be a block `policy {{ … }}` or a policy name, found {describe_value(v)}", v.span)
    return _INVALID


@dataclass(frozen=True)
class _PolicyRef:
    name: str
    span: Span


_KINDS = {
    "string": _kind_string,
    "name": _kind_name,
    "bool": _kind_bool,
    "int": _kind_int,
    "number": _kind_number,
    "duration": _kind_duration,
    "enum": _kind_enum,
    "string-list": _kind_string_list,
    "name-list": _kind_name_list,
    "email-list": _kind_email_list,
    "string-map": _kind_string_map,
    "url": _kind_url,
    "timezone": _kind_timezone,
    "datetime": _kind_raw_string,
    "cron": _kind_cron,
    "time": _kind_time,
    "block": _kind_block,
    "policy": _kind_policy,
    "command": _kind_command,
    "channel-list": _kind_channel_list,
    "deliver-uri": _kind_deliver,
    "path": _kind_path,
}


def _is_error(code: str) -> bool:
    return CODES[code].severity is Severity.ERROR


# Where a key that is unknown in one block does belong, for a more useful help line.
_ELSEWHERE: dict[str, dict[str, str]] = {
    "schedule": {
        **{p.key: "the `policy` block" for p in POLICY.props},
        **{k: "an `agent` block" for k in ("model", "system_prompt", "prompt", "command", "handler", "executor")},
        "context_mode": "the `heartbeat` block",
        "max_iterations": "the `heartbeat` block",
    },
    "agent": {p.key: "a `schedule` block" for p in SCHEDULE.props if p.key not in {a.key for a in AGENT.props}},
}


_ITEM_KEYWORDS = frozenset({"schedule", "agent", "policy", "metadata", "type", "function", "channel",
                            "memory", "webhook"})
# A concrete line to add for a channel's required setting.
_SETTING_EXAMPLE = {
    "webhook_url": 'webhook_url: "https://example.com/hook"',
    "email_recipients": 'email_recipients: ["ops@example.com"]',
}


def check_props(ctx: _Ctx, props: Sequence[ast.Property], block: BlockSpec, owner: Span,
                skip: Iterable[str] = ()) -> dict[str, Any]:
    """Check ``props`` against ``block``: unknown and duplicate keys, each value's kind, and
    required keys (reported at ``owner``). Returns the valid values by canonical key; the
    value span of key K is stored under ``"@K"``."""
    values: dict[str, Any] = {}
    first: dict[str, ast.Property] = {}
    skipped = set(skip)
    for prop in props:
        if prop.key in skipped:
            continue
        spec = block.get(prop.key)
        if spec is None:
            _unknown_property(ctx, prop, block)
            continue
        if spec.key in first:
            prev = first[spec.key]
            shown = f"`{spec.key}`" if prev.key == prop.key else f"`{spec.key}` (as `{prev.key}` and `{prop.key}`)"
            ctx.error("duplicate-property", f"{shown} is given twice", prop.key_span, "remove one of them",
                      notes=(f"first given at {ctx.where(prev.key_span)}",))
            continue
        first[spec.key] = prop
        if isinstance(prop.value, ast.NullLit) and not spec.required:
            continue  # `null` explicitly asks for the default
        value = _KINDS[spec.kind](ctx, spec, prop.value)
        if value is not _INVALID:
            values[spec.key] = value
            values["@" + spec.key] = prop
    for spec in block.props:
        if spec.required and spec.key not in first and spec.key not in skipped:
            ctx.error("missing-property", f"`{block.name}` block is missing `{spec.key}`", _owner_head(ctx, owner),
                      f"add `{spec.key}: …` ({spec.doc.split(';')[0]})")
    return values


def _owner_head(ctx: _Ctx, owner: Span) -> Span:
    """The first line of a block (where "missing …" is reported), not the whole block."""
    text = ctx.source.text
    nl = text.find("\n", owner.start, owner.end)
    return Span(owner.start, owner.end if nl < 0 else nl)


def _unknown_property(ctx: _Ctx, prop: ast.Property, block: BlockSpec) -> None:
    helps: list[str] = []
    guess = did_you_mean(prop.key, block.keys())
    if guess:
        helps.append(f"did you mean `{guess}`")
    elsewhere = _ELSEWHERE.get(block.name, {}).get(prop.key)
    if elsewhere:
        helps.append(f"`{prop.key}` belongs in {elsewhere}")
    if prop.key in _ITEM_KEYWORDS and prop.sep is None:
        # `schedule { … schedule { …`: the parser read the next item as a nested block.
        helps.append(f"a `{block.name}` block cannot contain a `{prop.key}` item; a `}}` is probably "
                     "missing before this line")
    if not helps:
        keys = block.keys()
        helps.append(f"`{block.name}` properties are {_quote_list(keys)}" if len(keys) <= 12
                     else f"the `{block.name}` properties are listed in docs/language.md")
    ctx.error("unknown-property", f"unknown property `{prop.key}` in `{block.name}`", prop.key_span, tuple(helps))


# ---------------------------------------------------------------- passes


def _check_schedule(ctx: _Ctx, node: ast.Schedule) -> tuple[str | None, Span, dict[str, Any]]:
    """Check one schedule block; returns (name, name span, values)."""
    values = check_props(ctx, node.props, SCHEDULE, owner=node.span, skip=("name",) if node.name else ())
    head = _header_span(node, "schedule")
    name: str | None = None
    name_span = head
    name_value: ast.Value | None = None
    if node.name is not None:
        name_value = node.name
        for p in node.props:
            if p.key == "name":
                ctx.error("conflicting-properties", "the schedule is named twice: in the header and by `name`",
                          p.key_span, "remove `name:` or the name after `schedule`",
                          notes=(f"the header name is at {ctx.where(node.name.span)}",))
                break
    elif "name" in values:
        name_value = values["@name"].value
    if name_value is not None:
        name = name_value.value if isinstance(name_value, ast.StringLit) else getattr(name_value, "name", None)
        name_span = name_value.span
        if name is not None and not _NAME_RE.fullmatch(name):
            ctx.error("invalid-name", f"schedule name `{name}` is not valid", name_span,
                      "a name starts with a letter or digit and has up to 128 letters, digits, `_`, `.` or `-`")
            name = None

    has_cron, has_at = "@cron" in values or _given(node, "cron"), "@at" in values or _given(node, "at")
    if has_cron and has_at:
        later = max((p for p in node.props if p.key in ("cron", "at")), key=lambda p: p.span.start)
        earlier = min((p for p in node.props if p.key in ("cron", "at")), key=lambda p: p.span.start)
        ctx.error("conflicting-properties", "a schedule has either `cron` or `at`, not both", later.key_span,
                  "use `cron` for a recurring job and `at` for a single run",
                  notes=(f"`{earlier.key}` is given at {ctx.where(earlier.key_span)}",))
    elif not has_cron and not has_at:
        ctx.error("missing-property", "schedule has neither `cron` nor `at`", head,
                  'add `cron: "0 9 * * *"` for a recurring job or `at: "2030-01-01T09:00:00Z"` for a single run')

    tz = values.get("timezone", "UTC")
    if "at" in values:
        prop = values["@at"]
        assert isinstance(prop.value, ast.StringLit)
        if prop.value.env_refs:
            ctx.error("invalid-datetime", "`at` cannot contain environment references", prop.value.span)
            del values["at"]
        elif "timezone" not in values and _given(node, "timezone"):
            del values["at"]  # the zone is invalid (already reported): the instant is unknown
        else:
            inst = parse_instant(values["at"], tz)
            if inst is None:
                ctx.error("invalid-datetime", f"`at`: \"{values['at']}\" is not an ISO-8601 date-time", prop.value.span,
                          'write e.g. "2030-02-15T14:30:00Z", "2030-02-15T14:30:00+01:00", or a local '
                          '"2030-02-15T14:30:00" read in `timezone`')
                del values["at"]
            else:
                values["at"] = inst.isoformat()
                if ctx.now is not None and inst <= ctx.now:
                    ctx.error("at-in-past", f"`at` {inst.isoformat()} is in the past", prop.value.span,
                              "a job whose time has passed never runs; choose a future time")

    _check_channels(ctx, node, values)
    return name, name_span, values


def _given(node: ast.Schedule, key: str) -> bool:
    return any(p.key == key for p in node.props)


def _check_channels(ctx: _Ctx, node: ast.Schedule, values: dict[str, Any]) -> None:
    """Fold ``deliver`` into ``delivery`` and check each channel's settings."""
    channels: list[tuple[str, Span]] = list(values.get("delivery", ()))
    target: DeliverTarget | None = values.get("deliver")
    if target is not None:
        dspan = values["@deliver"].value.span
        if not any(c == target.channel for c, _ in channels):
            channels.append((target.channel, dspan))
        if target.setting is not None:
            if target.setting in values and values[target.setting] != target.value:
                other = values["@" + target.setting]
                ctx.error("conflicting-properties", f"`deliver` and `{target.setting}` disagree", dspan,
                          f"remove `{target.setting}` or the target in `deliver`",
                          notes=(f"`{target.setting}` is given at {ctx.where(other.key_span)}",))
            else:
                values.setdefault(target.setting, target.value)
    if "delivery" in values or target is not None:
        values["delivery"] = tuple(channels)
    elif _given(node, "delivery"):
        return  # an invalid delivery list was already reported; do not pile on
    names = {c for c, _ in channels}
    for ch, span in channels:
        for key in CHANNEL_REQUIRED.get(ch, ()):
            if key not in values and not _given(node, key):
                ctx.error("missing-channel-setting", f"channel `{ch}` needs `{key}`", span,
                          f"add `{_SETTING_EXAMPLE.get(key, key + ': …')}` to the schedule")
    for ch, keys in CHANNEL_SETTINGS.items():
        if ch in names:
            continue
        for key in keys:
            prop = values.get("@" + key)
            if prop is not None and not (target is not None and target.setting == key):
                ctx.error("unused-channel-setting", f"`{key}` is set but `{ch}` is not in `delivery`",
                          prop.key_span, f'add "{ch}" to `delivery` or remove `{key}`')


def _check_agent(ctx: _Ctx, node: ast.Agent) -> AgentSpec | None:
    values = check_props(ctx, node.props, AGENT, owner=node.span)
    if not _NAME_RE.fullmatch(node.name):
        ctx.error("invalid-name", f"agent name `{node.name}` is not valid", node.name_span,
                  "a name starts with a letter or digit and has up to 128 letters, digits, `_`, `.` or `-`")
    caps: list[str] = list(values.get("capabilities", ()))
    for c in node.capabilities:
        for item in c.values.items:
            if isinstance(item, ast.StringLit):
                caps.append(item.value)
            elif isinstance(item, ast.Ident):
                caps.append(item.name)
            else:
                ctx.error("invalid-type", f"a capability must be a name, found {describe_value(item)}", item.span)
    timeout: float | None = values.get("timeout")
    for w in node.with_blocks:
        for attr in w.attrs:
            if attr.key == "timeout" and timeout is None:
                t = _kind_duration(ctx, PropSpec("timeout", "duration", "", positive=True), attr.value)
                if t is not _INVALID:
                    timeout = t
    executor = _infer_executor(ctx, node, values)
    return AgentSpec(node.name, ctx.source, node, values, executor, tuple(dict.fromkeys(caps)), timeout)


def _infer_executor(ctx: _Ctx, node: ast.Agent, values: dict[str, Any]) -> str | None:
    """The executor an agent's keys select (SPEC §1.4); reports disagreements."""
    selecting = [(k, EXECUTOR_KEYS[k]) for k in EXECUTOR_KEYS if any(p.key == k for p in node.props)]
    explicit = values.get("executor")
    if explicit is None and _given_prop(node.props, "executor"):
        return None  # an invalid executor was already reported
    if explicit is not None:
        ok = True
        for key, ex in selecting:
            if ex != explicit:
                prop = next(p for p in node.props if p.key == key)
                ctx.error("conflicting-properties", f"`{key}` belongs to executor `{ex}`, but the agent has executor `{explicit}`",
                          prop.key_span, f"remove `{key}` or change `executor`")
                ok = False
        need = {v: k for k, v in EXECUTOR_KEYS.items()}[explicit]
        if not any(k == need for k, _ in selecting):
            ctx.error("missing-property", f"agent `{node.name}` has executor `{explicit}` but no `{need}`",
                      values["@executor"].key_span, f"add `{need}: …`")
            ok = False
        return explicit if ok else None
    if len(selecting) > 1:
        ctx.error("ambiguous-executor", f"agent `{node.name}` has keys of more than one executor: "
                  + ", ".join(f"`{k}` ({ex})" for k, ex in selecting), node.name_span,
                  "keep one of them, or set `executor` to the one that runs the agent")
        return None
    if selecting:
        key = selecting[0][0]
        return selecting[0][1] if key in values else None
    ctx.error("agent-not-executable", f"agent `{node.name}` has nothing the runtime can execute", node.name_span,
              ("add `model` (llm), `command`, `handler` (python) or `url` (http)",
               "`with` and `function` bodies are checked for syntax only; runs of this agent fail"))
    return None


def _given_prop(props: Sequence[ast.Property], key: str) -> bool:
    return any(p.key == key for p in props)


def validate_modules(
    modules: Sequence[tuple[SourceFile, ast.Module]],
    *,
    custom_channels: Collection[str] = frozenset(),
    stdlib_agents: frozenset[str] = frozenset(),
    now: datetime | None = None,
    undefined_agent: Severity | None = Severity.WARNING,
) -> Validated:
    """Validate one compilation (all files of one ``symbic`` call).

    ``stdlib_agents``: names that resolve besides the compilation's own agents.
    ``custom_channels``: installed custom delivery channel names. ``now``: for `at-in-past`
    (None skips that check). ``undefined_agent``: the severity of `undefined-agent`
    (None: do not report it)."""
    out: list[Diagnostic] = []
    ctxs = [_Ctx(src, out, custom_channels, now) for src, _ in modules]

    # Top-level policies first: schedules refer to them by name, across files.
    policies: dict[str, PolicySpec] = {}
    policy_at: dict[str, tuple[_Ctx, Span]] = {}
    for ctx, (_, mod) in zip(ctxs, modules, strict=True):
        for item in mod.items:
            if isinstance(item, ast.PolicyDef):
                if item.name in policy_at:
                    pctx, pspan = policy_at[item.name]
                    ctx.error("duplicate-name", f"policy `{item.name}` is defined twice", item.name_span,
                              "rename one of them", notes=(f"first defined at {pctx.where(pspan)}",))
                    continue
                policy_at[item.name] = (ctx, item.name_span)
                policies[item.name] = PolicySpec(item.name, check_props(ctx, item.props, POLICY, owner=item.span))

    agents: list[AgentSpec] = []
    agent_at: dict[str, tuple[_Ctx, Span]] = {}
    # Upstream's `policy: "NAME"` names a policy defined inside the schedule's agent.
    agent_policies: dict[str, dict[str, PolicySpec]] = {}
    raw_schedules: list[tuple[_Ctx, ast.Schedule, str | None, Span, dict[str, Any]]] = []
    for ctx, (_, mod) in zip(ctxs, modules, strict=True):
        for item in mod.items:
            if isinstance(item, ast.Agent):
                spec = _check_agent(ctx, item)
                if item.name in agent_at:
                    actx, aspan = agent_at[item.name]
                    ctx.error("duplicate-name", f"agent `{item.name}` is defined twice", item.name_span,
                              "rename one of them", notes=(f"first defined at {actx.where(aspan)}",))
                    continue
                agent_at[item.name] = (ctx, item.name_span)
                agent_policies[item.name] = {
                    p.name: PolicySpec(p.name, check_props(ctx, p.props, POLICY, owner=p.span))
                    for p in item.policies
                }
                if spec is not None:
                    agents.append(spec)
            elif isinstance(item, ast.Schedule):
                name, name_span, values = _check_schedule(ctx, item)
                raw_schedules.append((ctx, item, name, name_span, values))

    schedules: list[ScheduleSpec] = []
    sched_at: dict[str, tuple[_Ctx, Span]] = {}
    known_agents = set(agent_at) | set(stdlib_agents)
    for ctx, node, name, name_span, values in raw_schedules:
        ok = name is not None
        if name is not None:
            if name in sched_at:
                sctx, sspan = sched_at[name]
                ctx.error("duplicate-name", f"schedule `{name}` is defined twice", name_span,
                          "schedule names are unique across all files compiled together",
                          notes=(f"first defined at {sctx.where(sspan)}",))
                ok = False
            else:
                sched_at[name] = (ctx, name_span)
        ref = values.get("policy")
        local = agent_policies.get(values.get("agent", ""), {})
        if isinstance(ref, _PolicyRef):
            if ref.name in policies:
                values["policy"] = ref.name
            elif ref.name in local:
                values["policy"] = local[ref.name]
            else:
                guess = did_you_mean(ref.name, set(policies) | set(local))
                help = (f"did you mean `{guess}`" if guess else
                        f"define `policy {ref.name} {{ … }}` at the top level of a file or in the schedule's agent")
                ctx.error("undefined-policy", f"policy `{ref.name}` is not defined", ref.span, help)
                ok = False
        agent = values.get("agent")
        if agent is not None and agent not in known_agents and undefined_agent is not None:
            guess = did_you_mean(agent, known_agents)
            helps: tuple[str, ...] = (f"did you mean `{guess}`",) if guess else ()
            helps += (f"define `agent {agent} {{ … }}` in one of the files compiled together",)
            ctx.error("undefined-agent", f"agent `{agent}` is not defined", values["@agent"].value.span,
                      helps, severity=undefined_agent)
        if ok:
            schedules.append(ScheduleSpec(name, ctx.source, node, values))  # type: ignore[arg-type]

    return Validated(tuple(schedules), tuple(agents), policies, tuple(sorted(out, key=Diagnostic.sort_key)))


def validate_module(source: SourceFile, module: ast.Module, **kw: Any) -> Validated:
    """``validate_modules`` for a single file."""
    return validate_modules([(source, module)], **kw)


__all__ = [
    "AgentSpec",
    "DeliverTarget",
    "PolicySpec",
    "ScheduleSpec",
    "Validated",
    "check_props",
    "describe_value",
    "is_email",
    "parse_duration",
    "parse_instant",
    "suggest_timezone",
    "timezone_valid",
    "url_problem",
    "validate_module",
    "validate_modules",
]
