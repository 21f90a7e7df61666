"""Validation rules of SPEC §1.3–1.5, end to end (parse → validate → lower) on small sources."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from compiler.compile import CompileResult, compile_sources
from compiler.diagnostics import Diagnostic, Severity
from compiler.ir import JobDef
from compiler.source import SourceFile

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def run(text: str, *more: str, **kw: object) -> CompileResult:
    sources = [SourceFile("t.symbi", text)] + [SourceFile(f"m{i}.symbi", t) for i, t in enumerate(more)]
    kw.setdefault("now", NOW)
    return compile_sources(sources, **kw)  # type: ignore[arg-type]


def only(result: CompileResult, code: str) -> Diagnostic:
    found = [d for d in result.diagnostics if d.code == code]
    assert len(found) == 1, [(d.code, d.message) for d in result.diagnostics]
    return found[0]


def codes(result: CompileResult) -> list[str]:
    return [d.code for d in result.diagnostics]


def under(d: Diagnostic) -> str:
    """The source text a diagnostic points at."""
    return d.source.text[d.span.start : d.span.end]


def sched(body: str, agent: str = "echo") -> str:
    return f'schedule {{\n  name: "job"\n  agent: "{agent}"\n{body}\n}}\n'


def job(result: CompileResult, name: str = "job") -> JobDef:
    assert not result.errors, [(d.code, d.message) for d in result.diagnostics]
    return next(j for j in result.jobs if j.name == name)


# ---------------------------------------------------------------- the acceptance checks


def test_cron_error_points_at_the_field_inside_the_string() -> None:
    r = run(sched('  cron: "0 25 * * *"'))
    d = only(r, "invalid-cron")
    assert d.sev is Severity.ERROR
    assert under(d) == "25"
    assert d.line_col == (4, 12)


def test_cron_error_in_escaped_string_points_at_whole_string() -> None:
    # After an escape, offsets inside the value no longer match the source: mark the string.
    r = run(sched('  cron: "0 25 * * \\u002a"'))
    d = only(r, "invalid-cron")
    assert under(d) == '"0 25 * * \\u002a"'
    assert d.message == "hour 25 is out of range 0-23"


def test_unknown_channel_suggests_slack() -> None:
    r = run(sched('  cron: "@daily"\n  delivery: ["slak"]'))
    d = only(r, "unknown-channel")
    assert under(d) == '"slak"'
    assert d.help == ("did you mean `slack`",)


def test_valid_schedule_lowers_with_defaults() -> None:
    j = job(run(sched('  cron: "0 9 * * *"')))
    assert j == JobDef(name="job", agent="echo", cron="0 9 * * *", source="t.symbi:1")


# ---------------------------------------------------------------- keys


def test_unknown_property_did_you_mean_points_at_key() -> None:
    d = only(run(sched('  cron: "@daily"\n  timezon: "UTC"')), "unknown-property")
    assert under(d) == "timezon"
    assert "did you mean `timezone`" in d.help


def test_policy_key_at_schedule_level_says_where_it_belongs() -> None:
    d = only(run(sched('  cron: "@daily"\n  require_approval: true')), "unknown-property")
    assert any("`policy` block" in h for h in d.help)


def test_duplicate_property_has_note_pointing_at_first() -> None:
    d = only(run(sched('  cron: "@daily"\n  cron: "@hourly"')), "duplicate-property")
    assert d.line_col == (5, 3)
    assert d.notes == ("first given at t.symbi:4:3",)


def test_prompt_and_system_prompt_are_one_property() -> None:
    r = run('agent a {\n  model: "m"\n  prompt: "x"\n  system_prompt: "y"\n}\n')
    d = only(r, "duplicate-property")
    assert "as `prompt` and `system_prompt`" in d.message


def test_prompt_alias_lowers_to_system_prompt() -> None:
    r = run('agent a { model: "gpt-4o-mini" prompt: "be brief" }\n' + sched('  cron: "@daily"', agent="a"))
    agent = next(a for a in r.agents if a.name == "a")
    assert agent.system_prompt == "be brief" and agent.executor == "llm"


def test_cron_and_at_together_conflict() -> None:
    d = only(run(sched('  cron: "@daily"\n  at: "2030-01-01T00:00:00Z"')), "conflicting-properties")
    assert under(d) == "at"


def test_neither_cron_nor_at_is_missing() -> None:
    d = only(run(sched("")), "missing-property")
    assert under(d) == "schedule"
    assert "neither `cron` nor `at`" in d.message


def test_missing_agent_and_name() -> None:
    r = run('schedule {\n  cron: "@daily"\n}\n')
    msgs = sorted(d.message for d in r.diagnostics if d.code == "missing-property")
    assert msgs == ["`schedule` block is missing `agent`", "`schedule` block is missing `name`"]


# ---------------------------------------------------------------- names


def test_header_name_and_name_property_conflict() -> None:
    r = run('schedule nightly {\n  name: "nightly"\n  agent: "echo"\n  cron: "@daily"\n}\n')
    d = only(r, "conflicting-properties")
    assert under(d) == "name"


@pytest.mark.parametrize("header", ["nightly_job", '"nightly-job"'])
def test_header_name_forms(header: str) -> None:
    r = run(f'schedule {header} {{\n  agent: "echo"\n  cron: "@daily"\n}}\n')
    assert [j.name for j in r.jobs] == [header.strip('"')]


@pytest.mark.parametrize("name", ["-starts-with-dash", "has space", "x" * 129, ""])
def test_invalid_schedule_names(name: str) -> None:
    d = only(run(f'schedule {{\n  name: "{name}"\n  agent: "echo"\n  cron: "@daily"\n}}\n'), "invalid-name")
    assert under(d) == f'"{name}"'


def test_duplicate_schedule_name_across_files() -> None:
    a = sched('  cron: "@daily"')
    r = run(a, a)
    d = only(r, "duplicate-name")
    assert d.source.name == "m0.symbi"
    assert d.notes == ("first defined at t.symbi:2:9",)


def test_duplicate_agent_name() -> None:
    r = run('agent a { command: "true" }\nagent a { command: "false" }\n')
    assert under(only(r, "duplicate-name")) == "a"


# ---------------------------------------------------------------- types and values


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ('  enabled: "yes"', '"yes"'),
        ("  max_concurrent: 1.5", "1.5"),
        ('  max_retries: "3"', '"3"'),
        ("  description: 42", "42"),
        ('  tags: "a"', '"a"'),
        ('  heartbeat: "on"', '"on"'),
        ("  webhook_headers: [1]", "[1]"),
    ],
)
def test_type_errors_point_at_the_value(line: str, value: str) -> None:
    d = only(run(sched('  cron: "@daily"\n' + line)), "invalid-type")
    assert under(d) == value


def test_quoted_boolean_gets_a_fix_hint() -> None:
    d = only(run(sched('  cron: "@daily"\n  enabled: "false"')), "invalid-type")
    assert d.help == ("write `false` without quotes",)


@pytest.mark.parametrize(
    ("line", "value"),
    [("  max_concurrent: 0", "0"), ("  max_retries: -1", "-1")],
)
def test_range_errors(line: str, value: str) -> None:
    d = only(run(sched('  cron: "@daily"\n' + line)), "invalid-value")
    assert under(d) == value


def test_enum_with_suggestion() -> None:
    d = only(run(sched('  cron: "@daily"\n  session_mode: "shared_persistant"')), "invalid-value")
    assert d.help[0] == "did you mean `shared_persistent`"


def test_enum_accepts_identifier() -> None:
    assert job(run(sched('  cron: "@daily"\n  catchup: all'))).catchup == "all"


def test_null_means_default() -> None:
    assert job(run(sched('  cron: "@daily"\n  max_retries: null'))).max_retries is None


@pytest.mark.parametrize(
    ("value", "seconds"),
    [('"5m"', 300), ('"1h30m"', 5400), ('"500ms"', 0.5), ('"2d"', 172800), ('"1w"', 604800), ("30s", 30),
     ("5.minutes", 300), ("45", 45)],
)
def test_durations(value: str, seconds: float) -> None:
    assert job(run(sched(f'  cron: "@daily"\n  retry_backoff: {value}'))).retry_backoff_seconds == seconds


def test_invalid_duration() -> None:
    d = only(run(sched('  cron: "@daily"\n  jitter: "5 parsecs"')), "invalid-duration")
    assert under(d) == '"5 parsecs"'


def test_zero_max_runtime_is_rejected() -> None:
    d = only(run(sched('  cron: "@daily"\n  policy { max_runtime: "0s" }')), "invalid-value")
    assert "greater than zero" in d.message


# ---------------------------------------------------------------- time


def test_invalid_timezone_suggests_close_zone() -> None:
    d = only(run(sched('  cron: "@daily"\n  timezone: "Europe/Berln"')), "invalid-timezone")
    assert d.help == ("did you mean `Europe/Berlin`",)


def test_timezone_city_only_suggests_full_name() -> None:
    d = only(run(sched('  cron: "@daily"\n  timezone: "Berlin"')), "invalid-timezone")
    assert d.help == ("did you mean `Europe/Berlin`",)


def test_at_with_offset_is_normalised_to_utc() -> None:
    assert job(run(sched('  at: "2030-02-15T14:30:00+01:00"'))).at == "2030-02-15T13:30:00+00:00"


def test_naive_at_uses_timezone() -> None:
    j = job(run(sched('  at: "2030-07-01T09:00:00"\n  timezone: "Europe/Berlin"')))
    assert j.at == "2030-07-01T07:00:00+00:00" and j.timezone == "Europe/Berlin"


@pytest.mark.parametrize("text", ["2030-02-30T10:00:00Z", "tomorrow", "2030-02-15", "14:30"])
def test_invalid_datetime(text: str) -> None:
    d = only(run(sched(f'  at: "{text}"')), "invalid-datetime")
    assert under(d) == f'"{text}"'


def test_at_in_past_is_a_warning_relative_to_now() -> None:
    r = run(sched('  at: "2026-06-01T11:59:59Z"'))
    d = only(r, "at-in-past")
    assert d.sev is Severity.WARNING and not r.errors
    assert "at-in-past" not in codes(run(sched('  at: "2026-06-01T12:00:01Z"')))


# ---------------------------------------------------------------- channels


def test_webhook_requires_url() -> None:
    d = only(run(sched('  cron: "@daily"\n  delivery: ["webhook"]')), "missing-channel-setting")
    assert under(d) == '"webhook"' and "webhook_url" in d.message


def test_email_requires_recipients_and_valid_addresses() -> None:
    only(run(sched('  cron: "@daily"\n  delivery: ["email"]')), "missing-channel-setting")
    d = only(run(sched('  cron: "@daily"\n  delivery: ["email"]\n  email_recipients: ["ops@example.com", "nope"]')),
             "invalid-email")
    assert under(d) == '"nope"'


def test_invalid_url() -> None:
    d = only(run(sched('  cron: "@daily"\n  delivery: ["webhook"]\n  webhook_url: "ftp://x.example"')), "invalid-url")
    assert under(d) == '"ftp://x.example"'


def test_env_reference_url_is_kept_as_written() -> None:
    j = job(run(sched('  cron: "@daily"\n  delivery: ["webhook"]\n  webhook_url: "${HOOK_URL}"\n'
                      '  webhook_headers: { Authorization: "Bearer ${TOKEN}" }')))
    assert j.webhook_url == "${HOOK_URL}"
    assert j.webhook_headers == (("Authorization", "Bearer ${TOKEN}"),)


def test_unused_channel_setting_warns() -> None:
    r = run(sched('  cron: "@daily"\n  slack_channel: "#ops"'))
    d = only(r, "unused-channel-setting")
    assert d.sev is Severity.WARNING and under(d) == "slack_channel"


def test_custom_channel_known_by_data() -> None:
    r = run(sched('  cron: "@daily"\n  delivery: ["pagerduty"]'), custom_channels=frozenset({"pagerduty"}))
    assert job(r).delivery == ("pagerduty",)
    assert "unknown-channel" in codes(run(sched('  cron: "@daily"\n  delivery: ["pagerduty"]')))


@pytest.mark.parametrize(
    ("uri", "delivery", "field", "value"),
    [
        ("slack://#alerts", ("slack",), "slack_channel", "#alerts"),
        ("email://a@example.com", ("email",), "email_recipients", ("a@example.com",)),
        ("webhook+https://h.example/x", ("webhook",), "webhook_url", "https://h.example/x"),
        ("log_file://job.log", ("log_file",), "log_file", "job.log"),
        ("stdout://", ("stdout",), "deliver", "stdout://"),
    ],
)
def test_deliver_uri_adds_channel_and_setting(uri: str, delivery: tuple[str, ...], field: str, value: object) -> None:
    j = job(run(sched(f'  cron: "@daily"\n  deliver: "{uri}"')))
    assert j.delivery == delivery and getattr(j, field) == value and j.deliver == uri


def test_deliver_adds_to_existing_delivery() -> None:
    j = job(run(sched('  cron: "@daily"\n  delivery: ["stdout"]\n  deliver: "slack://#x"')))
    assert j.delivery == ("stdout", "slack")


@pytest.mark.parametrize(("uri", "code"), [("slak://#x", "unknown-channel"), ("just-text", "invalid-value"),
                                           ("email://nope", "invalid-email"), ("webhook+https://", "invalid-url")])
def test_bad_deliver_uris(uri: str, code: str) -> None:
    only(run(sched(f'  cron: "@daily"\n  deliver: "{uri}"')), code)


# ---------------------------------------------------------------- policies


FULL_POLICY = """  policy {
    require_approval: true
    approvers: ["ops"]
    approval_timeout: "2h"
    max_runtime: "30m"
    require_capabilities: ["deploy"]
    allowed_hours: { start: "22:00", end: "04:00", timezone: "Europe/Berlin" }
    allowed_environments: ["staging", "production"]
    require_agent_pin: true
  }"""


def test_full_policy_block_lowers() -> None:
    p = job(run(sched('  cron: "@daily"\n' + FULL_POLICY))).policy
    assert p is not None and p.name is None
    assert p.require_approval and p.approvers == ("ops",) and p.approval_timeout_seconds == 7200
    assert p.max_runtime_seconds == 1800 and p.require_capabilities == ("deploy",)
    assert p.allowed_hours is not None and (p.allowed_hours.start, p.allowed_hours.end) == ("22:00", "04:00")
    assert p.allowed_hours.timezone == "Europe/Berlin"
    assert p.allowed_environments == ("staging", "production") and p.require_agent_pin


def test_named_policy_resolves_across_files() -> None:
    r = run(sched('  cron: "@daily"\n  policy: "night"'), 'policy night {\n  max_runtime: "10m"\n}\n')
    p = job(r).policy
    assert p is not None and p.name == "night" and p.max_runtime_seconds == 600


def test_policy_of_the_schedules_agent_resolves() -> None:
    """Upstream: `policy: "NAME"` names a (rule) policy defined inside the agent."""
    agent = 'agent a {\n  command: "true"\n  policy gate {\n    deny: deploy(x) if not ok\n  }\n}\n'
    p = job(run(agent + sched('  cron: "@daily"\n  policy: "gate"', agent="a"))).policy
    assert p is not None and p.name == "gate" and not p.require_approval
    # another agent's policy is not in scope
    r = run(agent + 'agent b { command: "true" }\n' + sched('  cron: "@daily"\n  policy: "gate"', agent="b"))
    only(r, "undefined-policy")


def test_undefined_policy_suggests() -> None:
    r = run(sched('  cron: "@daily"\n  policy: "nigth"') + 'policy night { max_runtime: "10m" }\n')
    d = only(r, "undefined-policy")
    assert under(d) == '"nigth"' and d.help == ("did you mean `night`",)


def test_bad_time_window() -> None:
    d = only(run(sched('  cron: "@daily"\n  policy { allowed_hours { start: "25:00", end: "04:00" } }')),
             "invalid-time-window")
    assert under(d) == '"25:00"'


def test_unknown_key_in_policy_block() -> None:
    d = only(run(sched('  cron: "@daily"\n  policy { requre_approval: true }')), "unknown-property")
    assert "did you mean `require_approval`" in d.help


def test_heartbeat_block() -> None:
    hb = job(run(sched('  cron: "@daily"\n  heartbeat { max_iterations: 5, iteration_timeout: "1m" }'))).heartbeat
    assert hb is not None and hb.enabled and hb.max_iterations == 5 and hb.iteration_timeout_seconds == 60
    d = only(run(sched('  cron: "@daily"\n  heartbeat: { max_iterations: 0 }')), "invalid-value")
    assert under(d) == "0"


# ---------------------------------------------------------------- agents


@pytest.mark.parametrize(
    ("body", "executor"),
    [('model: "gpt-4o-mini"', "llm"), ('command: "true"', "command"), ('command: ["ls", "-l"]', "command"),
     ('handler: "pkg.mod:fn"', "python"), ('url: "https://x.example/run"', "http"),
     ('executor: "python" handler: "pkg.mod:fn"', "python")],
)
def test_executor_inferred(body: str, executor: str) -> None:
    r = run(f"agent a {{ {body} }}\n" + sched('  cron: "@daily"', agent="a"))
    assert not r.diagnostics
    assert next(a for a in r.agents if a.name == "a").executor == executor


def test_ambiguous_executor() -> None:
    d = only(run('agent a {\n  model: "m"\n  command: "true"\n}\n'), "ambiguous-executor")
    assert under(d) == "a"


def test_explicit_executor_must_agree() -> None:
    d = only(run('agent a {\n  executor: "llm"\n  model: "m"\n  command: "x"\n}\n'), "conflicting-properties")
    assert under(d) == "command"
    d = only(run('agent a {\n  executor: "command"\n}\n'), "missing-property")
    assert "no `command`" in d.message


def test_agent_with_only_upstream_body_is_not_executable() -> None:
    r = run("agent watcher(input: String) -> String {\n  capabilities = [\"read\"]\n"
            "  with timeout = 30.seconds {\n    let x = input;\n    return x;\n  }\n}\n")
    d = only(r, "agent-not-executable")
    assert d.sev is Severity.WARNING and under(d) == "watcher"


def test_upstream_capabilities_and_with_timeout_lower() -> None:
    r = run('agent w {\n  command: "true"\n  capabilities = ["read", write]\n'
            "  with timeout = 5.minutes {\n    return 1;\n  }\n}\n" + sched('  cron: "@daily"', agent="w"))
    a = next(a for a in r.agents if a.name == "w")
    assert a.capabilities == ("read", "write") and a.timeout_seconds == 300


def test_undefined_agent_warning_in_check_error_in_compile() -> None:
    text = sched('  cron: "@daily"', agent="reportr") + 'agent reporter { command: "true" }\n'
    d = only(run(text), "undefined-agent")
    assert d.sev is Severity.WARNING and under(d) == '"reportr"'
    assert "did you mean `reporter`" in d.help
    assert only(run(text, mode="compile"), "undefined-agent").sev is Severity.ERROR
    r = run(text, mode="compile", allow_undefined_agents=True)
    assert only(r, "undefined-agent").sev is Severity.WARNING and [j.agent for j in r.jobs] == ["reportr"]


def test_stdlib_agents_resolve_and_are_added_once_used() -> None:
    r = run(sched('  cron: "@daily"', agent="system_health"), mode="compile")
    assert not r.diagnostics
    assert [a.name for a in r.agents] == ["system_health"]
    assert r.agents[0].handler == "stdlib.agents.system_health:run"
    assert "stdlib/agents/system_health.symbi" in [s.name for s in r.sources]


def test_own_agent_shadows_stdlib() -> None:
    r = run('agent echo { command: "cat" }\n' + sched('  cron: "@daily"'), mode="compile")
    assert [(a.name, a.executor) for a in r.agents] == [("echo", "command")]


def test_env_refs_stay_as_written() -> None:
    j = job(run(sched('  cron: "@daily"\n  agent_pin_jwt: "${AGENT_PIN_JWT}"\n  input: "$${NOT_A_REF}"')))
    assert j.agent_pin_jwt == "${AGENT_PIN_JWT}"
    assert j.input == "$${NOT_A_REF}"


def test_env_ref_in_cron_is_rejected() -> None:
    d = only(run(sched('  cron: "${CRON}"')), "invalid-cron")
    assert "environment" in d.message


def test_diagnostics_are_sorted_and_never_raise_on_empty_items() -> None:
    r = run("")
    assert codes(r) == ["empty-file"]
    r = run(sched('  cron: "0 25 * * *"\n  delivery: ["slak"]\n  jitter: "x"'))
    assert [d.span.start for d in r.diagnostics] == sorted(d.span.start for d in r.diagnostics)
