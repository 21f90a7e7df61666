"""Property tables: the one place that says which keys each block has (SPEC §1.3, §1.4).

Validation, the language reference (``docs/language.md``) and "did you mean" suggestions all
read these tables. A key's ``kind`` names how its value is checked (see ``KINDS``); ``default``
is the human-readable default shown in the docs (the lowered defaults live in ``compiler.ir``
and a test keeps the two in step).
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.ir import AUDIT_LEVELS, BUILTIN_CHANNELS, CATCHUP_POLICIES, EXECUTORS, SESSION_MODES

#: Value kinds understood by ``compiler.validate`` and their one-line meaning for the docs.
KINDS: dict[str, str] = {
    "string": "string",
    "name": "string or identifier",
    "bool": "`true` / `false`",
    "int": "integer",
    "number": "number",
    "duration": 'duration (`"5m"`, `"1h30m"`, bare `30s`, or seconds)',
    "enum": "one of the listed values (string or identifier)",
    "string-list": "list of strings",
    "name-list": "list of strings or identifiers",
    "email-list": "list of e-mail addresses",
    "string-map": "map of string values (`{ key: \"value\" … }`)",
    "url": "`http://` or `https://` URL",
    "timezone": "IANA time zone name, e.g. `\"Europe/Berlin\"`",
    "datetime": "ISO-8601 date-time, e.g. `\"2030-02-15T14:30:00Z\"`",
    "cron": "cron expression (5, 6 or 7 fields, or a macro such as `@daily`)",
    "time": '`"HH:MM"` (24-hour clock)',
    "block": "nested block `key { … }` (or `key: { … }`)",
    "policy": "policy block `policy { … }` or the name of a top-level `policy NAME { … }`",
    "command": "string (run by `/bin/sh -c`) or list of strings (argv)",
    "channel-list": "list of channel names",
    "deliver-uri": "delivery URI: `slack://#chan`, `email://a@b.c`, `webhook+https://…`, `log_file://path`, `stdout://`",
    "path": "file path (string)",
}


@dataclass(frozen=True, slots=True)
class PropSpec:
    """One property of a block."""

    key: str
    kind: str
    doc: str
    default: str = ""  # shown in the docs; "" = no default
    choices: tuple[str, ...] = ()
    required: bool = False
    minimum: float | None = None  # for int/number/duration (inclusive)
    positive: bool = False  # for durations: must be > 0
    block: str | None = None  # nested table name for kind "block" / "policy"
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BlockSpec:
    """A table of properties for one kind of block."""

    name: str
    title: str
    props: tuple[PropSpec, ...]

    def get(self, key: str) -> PropSpec | None:
        """The property named ``key`` (or one of its aliases), if any."""
        for p in self.props:
            if p.key == key or key in p.aliases:
                return p
        return None

    def keys(self) -> tuple[str, ...]:
        """Every accepted key, aliases included (for "did you mean")."""
        out: list[str] = []
        for p in self.props:
            out.append(p.key)
            out.extend(p.aliases)
        return tuple(out)


P = PropSpec

SCHEDULE = BlockSpec(
    "schedule",
    "`schedule` properties",
    (
        P("name", "string", "job name, unique in the compilation; `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`; may be given in the header instead (`schedule NAME { … }`)", required=True),
        P("agent", "name", "the agent to run: an agent of the compilation or of the standard library", required=True),
        P("cron", "cron", "when to run (exactly one of `cron` and `at`)"),
        P("at", "datetime", "a one-off run at this instant; `Z`/offset, or naive in `timezone`; exactly one of `cron` and `at`"),
        P("timezone", "timezone", "zone in which `cron` (and a naive `at`) is evaluated", default='"UTC"'),
        P("description", "string", "shown in list/status"),
        P("tags", "name-list", "labels shown in list/status"),
        P("enabled", "bool", "`false` deploys the job paused", default="true"),
        P("one_shot", "bool", "with `cron`: run the first occurrence, then the job is `completed`", default="false"),
        P("input", "string", "default input of each run", default='""'),
        P("session_mode", "enum", "how agent context is carried between runs", default='"ephemeral_with_summary"', choices=SESSION_MODES),
        P("heartbeat", "block", "assess → act → sleep cycle within each run", default="disabled", block="heartbeat"),
        P("delivery", "channel-list", "where run output goes: " + ", ".join(f"`{c}`" for c in BUILTIN_CHANNELS) + " or a custom channel", default="[]"),
        P("deliver", "deliver-uri", "single-target form (upstream); adds its channel to `delivery`"),
        P("webhook_url", "url", "target of the `webhook` channel (required by it)"),
        P("webhook_headers", "string-map", "extra HTTP headers; `${VAR}` expanded at send time"),
        P("webhook_method", "enum", "HTTP method of the `webhook` channel", default='"POST"', choices=("POST", "PUT", "PATCH")),
        P("webhook_secret", "string", "HMAC-SHA256 key for the `X-Symbi-Signature` header"),
        P("slack_channel", "string", "Slack channel of the `slack` channel", default="config default"),
        P("slack_webhook_url", "url", "Slack incoming-webhook URL", default="config default"),
        P("email_recipients", "email-list", "recipients of the `email` channel (required by it)"),
        P("email_subject", "string", "subject template of the `email` channel"),
        P("log_file", "path", "file of the `log_file` channel, inside the configured log directory", default="`<data_dir>/logs/<job name>.log`"),
        P("policy", "policy", "policy gate evaluated before each run", default="none", block="policy"),
        P("max_concurrent", "int", "concurrent runs of this job; at the limit a due occurrence is skipped and recorded", default="1", minimum=1),
        P("max_retries", "int", "retries of a failed run before the job is dead-lettered", default="`[scheduler] default_max_retries` (3)", minimum=0),
        P("retry_backoff", "duration", "first retry delay, doubling, capped at 1 h", default='"30s"', minimum=0),
        P("jitter", "duration", "random start delay 0..jitter", default="`[scheduler] max_jitter_seconds`", minimum=0),
        P("catchup", "enum", "what happens to occurrences missed while the scheduler was down", default='"latest"', choices=CATCHUP_POLICIES),
        P("catchup_window", "duration", "missed occurrences older than this are recorded as `missed`, never run", default='"1h"', minimum=0),
        P("agent_pin_jwt", "string", 'AgentPin ES256 credential, normally `"${AGENT_PIN_JWT}"`'),
        P("audit", "enum", "per-run detail written to the audit log (security events are always logged)", default='"all_operations"', choices=AUDIT_LEVELS),
    ),
)

POLICY = BlockSpec(
    "policy",
    "`policy` block properties (schedule `policy { … }` and top-level `policy NAME { … }`)",
    (
        P("require_approval", "bool", "a human approves each run (`symbi cron approve`)", default="false"),
        P("approvers", "name-list", "who may approve"),
        P("approval_timeout", "duration", "an unapproved run is denied after this", default='"1h"', positive=True),
        P("max_runtime", "duration", "a run longer than this is cancelled (`timed_out`)", positive=True),
        P("require_capabilities", "name-list", "the agent must have each of these capabilities"),
        P("allowed_hours", "block", "time window in which runs are allowed; may cross midnight", block="allowed_hours"),
        P("allowed_environments", "name-list", "runtime environments (`SYMBI_ENV`) where runs are allowed"),
        P("require_agent_pin", "bool", "verify the AgentPin credential before each run", default="false"),
    ),
)

ALLOWED_HOURS = BlockSpec(
    "allowed_hours",
    "`allowed_hours` block properties",
    (
        P("start", "time", "window start (inclusive)", required=True),
        P("end", "time", "window end (exclusive); before `start` means the window crosses midnight", required=True),
        P("timezone", "timezone", "zone of `start`/`end`", default='"UTC"'),
    ),
)

HEARTBEAT = BlockSpec(
    "heartbeat",
    "`heartbeat` block properties",
    (
        P("enabled", "bool", "run the heartbeat cycle", default="true"),
        P("context_mode", "enum", "what each iteration sees of the previous one", default='"ephemeral_with_summary"', choices=SESSION_MODES),
        P("max_iterations", "int", "safety limit of iterations per wake-up", default="10", minimum=1),
        P("iteration_timeout", "duration", "time limit of one iteration", positive=True),
    ),
)

AGENT = BlockSpec(
    "agent",
    "`agent` properties",
    (
        P("model", "string", 'model name, e.g. `"claude-sonnet-4.5"`, `"gpt-4o-mini"`, `"llama3.2"`; selects executor `llm`'),
        P("system_prompt", "string", "system prompt of an `llm` agent", aliases=("prompt",)),
        P("executor", "enum", "how the agent runs; inferred from `model`/`command`/`handler`/`url` when absent", choices=EXECUTORS),
        P("command", "command", "selects executor `command`; input on stdin and in `SYMBI_INPUT`"),
        P("handler", "string", '`"package.module:function"` (sync or async); selects executor `python`'),
        P("url", "url", "selects executor `http`"),
        P("method", "enum", "HTTP method of an `http` agent", default='"POST"', choices=("GET", "POST", "PUT", "PATCH", "DELETE")),
        P("headers", "string-map", "HTTP headers of an `http` agent"),
        P("provider", "name", "`llm` provider (a `[providers.NAME]` config section)"),
        P("temperature", "number", "`llm` sampling temperature", minimum=0),
        P("max_tokens", "int", "`llm` reply limit", minimum=1),
        P("capabilities", "name-list", "capabilities the agent has (checked by `require_capabilities`)"),
        P("timeout", "duration", "time limit of one execution (also upstream's `with timeout = …`)", positive=True),
        P("env", "string-map", "extra environment of a `command` agent"),
        P("working_dir", "path", "working directory of a `command` agent"),
        P("description", "string", "metadata"),
        P("version", "string", "metadata"),
        P("tags", "name-list", "metadata"),
        P("author", "string", "metadata (kept, not used)"),
        P("license", "string", "metadata (kept, not used)"),
    ),
)

#: Every table by name.
BLOCKS: dict[str, BlockSpec] = {
    b.name: b for b in (SCHEDULE, POLICY, ALLOWED_HOURS, HEARTBEAT, AGENT)
}

#: Pattern of schedule (job) names, SPEC §1.3.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"

#: Which agent key selects which executor.
EXECUTOR_KEYS: dict[str, str] = {"model": "llm", "command": "command", "handler": "python", "url": "http"}

#: Channel → the schedule keys that configure it.
CHANNEL_SETTINGS: dict[str, tuple[str, ...]] = {
    "webhook": ("webhook_url", "webhook_headers", "webhook_method", "webhook_secret"),
    "slack": ("slack_channel", "slack_webhook_url"),
    "email": ("email_recipients", "email_subject"),
    "log_file": ("log_file",),
}

#: Channel → the settings it cannot work without.
CHANNEL_REQUIRED: dict[str, tuple[str, ...]] = {
    "webhook": ("webhook_url",),
    "email": ("email_recipients",),
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown_table(block: BlockSpec) -> str:
    """The docs table of one block (used to generate ``docs/language.md``)."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for p in block.props:
        key = f"`{p.key}`" + "".join(f" (alias `{a}`)" for a in p.aliases)
        kind = KINDS[p.kind] if p.kind != "enum" else " | ".join(f"`{c}`" for c in p.choices)
        if p.minimum is not None:
            kind += f", ≥ {p.minimum:g}"
        if p.positive:
            kind += ", > 0"
        default = "(required)" if p.required else (p.default or "")
        lines.append(f"| {key} | {_cell(kind)} | {_cell(default)} | {_cell(p.doc)} |")
    return "\n".join(lines)


def render_markdown_section(name: str) -> str:
    """One block's table with its heading, between ``schema:NAME`` marker comments."""
    block = BLOCKS[name]
    return (f"<!-- schema:{name} -->\n### {block.title}\n\n{render_markdown_table(block)}\n"
            f"<!-- /schema:{name} -->")


def render_schema_markdown() -> str:
    """All property tables, each under a marker comment, for ``docs/language.md``."""
    return "\n\n".join(render_markdown_section(name) for name in BLOCKS)


def render_codes_markdown() -> str:
    """The table of diagnostic codes (from the one registry), for ``docs/language.md``."""
    from compiler.diagnostics import CODES

    lines = ["<!-- schema:codes -->", "| code | severity | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.severity.value} | {_cell(c.summary)} |" for c in CODES.values()]
    lines.append("<!-- /schema:codes -->")
    return "\n".join(lines)


def update_docs(text: str) -> str:
    """``text`` with every ``<!-- schema:NAME -->…<!-- /schema:NAME -->`` section regenerated."""
    import re

    sections = {f"schema:{b}": render_markdown_section(b) for b in BLOCKS}
    sections["schema:codes"] = render_codes_markdown()

    def repl(m: re.Match[str]) -> str:
        return sections.get(m.group(1), m.group(0))

    return re.sub(r"<!-- (schema:[a-z_]+) -->.*?<!-- /\1 -->", repl, text, flags=re.S)


if __name__ == "__main__":  # `python -m compiler.schema docs/language.md` regenerates the tables
    import sys
    from pathlib import Path

    for arg in sys.argv[1:]:
        doc = Path(arg)
        doc.write_text(update_docs(doc.read_text(encoding="utf-8")), encoding="utf-8")
    if not sys.argv[1:]:
        print(render_schema_markdown())
        print()
        print(render_codes_markdown())
