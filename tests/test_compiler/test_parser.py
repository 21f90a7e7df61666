"""The parser on valid input: every lexical form, every item, spans and literal decoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compiler import ast
from compiler.parser import parse_source, parse_text
from compiler.source import SourceFile

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "upstream"

SEED_DAILY = """\
schedule {
  name: "daily-report"
  agent: "reporter-agent"
  cron: "0 9 * * *"

  session_mode: "ephemeral_with_summary"
  delivery: ["stdout", "log_file"]

  policy {
    require_approval: false
    max_runtime: "5m"
  }
}
"""


def ok(text: str) -> ast.Module:
    """Parse text that must be valid; fail with the diagnostics otherwise."""
    module, diags = parse_text(text)
    assert diags == [], [(d.line_col, d.code, d.message) for d in diags]
    return module


def only(text: str) -> Any:
    """The single item of a valid text (typed loosely: each test narrows it)."""
    (item,) = ok(text).items
    return item


def keys(item: object) -> list[str]:
    """The property keys of an item, in order."""
    return [p.key for p in getattr(item, "props")]  # noqa: B009


def props(item: object) -> dict[str, ast.Value]:
    entries = item.entries if isinstance(item, ast.MapLit) else getattr(item, "props")  # noqa: B009
    return {p.key: p.value for p in entries}


def value_of(text: str) -> ast.Value:
    """The value of the single property in ``schedule { v: <text> }``."""
    sched = only(f"schedule {{ v: {text} }}")
    assert isinstance(sched, ast.Schedule)
    return sched.props[0].value


def string_of(literal: str) -> ast.StringLit:
    v = value_of(literal)
    assert isinstance(v, ast.StringLit)
    return v


def plain(value: ast.Value) -> object:
    """A value as plain Python data (for compact assertions)."""
    if isinstance(value, ast.StringLit | ast.NumberLit | ast.BoolLit):
        return value.value
    if isinstance(value, ast.NullLit):
        return None
    if isinstance(value, ast.DurationLit):
        return ("duration", value.seconds)
    if isinstance(value, ast.Ident):
        return ("ident", value.name)
    if isinstance(value, ast.VaultRef):
        return ("vault", value.path)
    if isinstance(value, ast.ListLit):
        return [plain(v) for v in value.items]
    return {p.key: plain(p.value) for p in value.entries}


# ------------------------------------------------------------------ schedules


def test_seed_schedule_block() -> None:
    sched = only(SEED_DAILY)
    assert isinstance(sched, ast.Schedule)
    assert sched.name is None
    assert [p.key for p in sched.props] == [
        "name", "agent", "cron", "session_mode", "delivery", "policy",
    ]  # fmt: skip
    p = props(sched)
    assert plain(p["name"]) == "daily-report"
    assert plain(p["delivery"]) == ["stdout", "log_file"]
    policy = p["policy"]
    assert isinstance(policy, ast.MapLit) and policy.block_form
    assert plain(policy) == {"require_approval": False, "max_runtime": "5m"}
    assert sched.props[-1].sep is None  # `policy { … }` has no separator
    assert sched.props[0].sep == ":"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("schedule daily_report {", ast.Ident),
        ('schedule "daily-report" {', ast.StringLit),
    ],
)
def test_named_schedule_forms(header: str, expected: type) -> None:
    sched = only(header + ' cron = "0 7 * * 1-5", agent = reporter }')
    assert isinstance(sched, ast.Schedule)
    assert isinstance(sched.name, expected) and sched.name is not None
    name = sched.name.name if isinstance(sched.name, ast.Ident) else sched.name.value
    assert name in ("daily_report", "daily-report")
    assert [(p.key, p.sep) for p in sched.props] == [("cron", "="), ("agent", "=")]
    assert plain(sched.props[1].value) == ("ident", "reporter")


def test_schedule_policy_string_and_block_both_parse() -> None:
    module = ok('schedule a { policy: "strict" }\nschedule b { policy { require_approval: true } }')
    first, second = module.items
    assert isinstance(first, ast.Schedule) and isinstance(second, ast.Schedule)
    assert plain(first.props[0].value) == "strict" and first.props[0].sep == ":"
    block = second.props[0]
    assert block.key == "policy" and block.sep is None
    assert isinstance(block.value, ast.MapLit) and block.value.block_form
    assert plain(block.value) == {"require_approval": True}


def test_nested_block_forms_with_and_without_colon() -> None:
    sched = only("schedule { heartbeat { enabled: true }\n other: { enabled: false } }")
    assert isinstance(sched, ast.Schedule)
    a, b = sched.props
    assert isinstance(a.value, ast.MapLit) and a.value.block_form and a.sep is None
    assert isinstance(b.value, ast.MapLit) and not b.value.block_form and b.sep == ":"


def test_upstream_scalar_schedule_with_equals_and_no_commas() -> None:
    sched = only(
        'schedule s { cron = "* * * * *" agent = reporter one_shot = true max_concurrent = 2\n'
        "jitter = 30s }"
    )
    assert plain(props(sched)["jitter"]) == ("duration", 30.0)
    assert plain(props(sched)["one_shot"]) is True
    assert plain(props(sched)["max_concurrent"]) == 2


def test_empty_schedule_and_empty_file() -> None:
    sched = only("schedule s { }")
    assert isinstance(sched, ast.Schedule) and sched.props == ()
    assert ok("").items == ()
    assert ok("  # only a comment\n// and another\n/* and a block */\n").items == ()


@pytest.mark.parametrize(
    "word",
    ["agent", "policy", "at", "audit", "schedule", "type", "match", "if", "with", "in", "true"],
)
def test_keywords_work_as_keys_in_key_value_blocks(word: str) -> None:
    # after a value and at the start of a block (different parser states)
    sched = only(f'schedule {{ {word}: 1\n name: "x"\n {word}2: 2 }}')
    assert [p.key for p in sched.props] == [word, "name", f"{word}2"]
    sched = only(f'schedule {{ name: "x"\n {word}: "v" }}')
    assert [p.key for p in sched.props] == ["name", word]
    meta = only(f"metadata {{ a = [1] {word} = {{ b: 1 }} }}")
    assert [p.key for p in meta.props] == ["a", word]


# ------------------------------------------------------------------ values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("1_000", 1000),
        ("3.14", 3.14),
        ("-1", -1),
        ("-2.5", -2.5),
        ("1e3", 1000.0),
        ("0", 0),
        ("true", True),
        ("false", False),
        ("null", None),
        ("reporter", ("ident", "reporter")),
        ("vault://secrets/api/key-1.json", ("vault", "secrets/api/key-1.json")),
        ("[]", []),
        ('["a", "b",]', ["a", "b"]),
        ('["a"\n "b"\n 3]', ["a", "b", 3]),
        ("[1, [2, [3]]]", [1, [2, [3]]]),
        ("{}", {}),
        ('{ a: 1, "b c": [true] }', {"a": 1, "b c": [True]}),
        (
            '{\n "Authorization": "Bearer x"\n "Content-Type": "json"\n}',
            {
                "Authorization": "Bearer x",
                "Content-Type": "json",
            },
        ),  # fmt: skip
        ("{ a { b: 1 } c = 2 }", {"a": {"b": 1}, "c": 2}),
    ],
)
def test_values(text: str, expected: object) -> None:
    assert plain(value_of(text)) == expected


def test_number_keeps_int_float_and_text() -> None:
    v = value_of("1_000")
    assert isinstance(v, ast.NumberLit) and v.value == 1000 and isinstance(v.value, int)
    assert v.text == "1_000"
    f = value_of("3.0")
    assert isinstance(f, ast.NumberLit) and isinstance(f.value, float)
    neg = value_of("-7")
    assert isinstance(neg, ast.NumberLit) and neg.text == "-7" and neg.value == -7


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("2d", 172800),
        ("1w", 604800),
        ("1.5h", 5400),
        ("30.seconds", 30),
        ("5.minutes", 300),
        ("1.hours", 3600),
        ("1.hour", 3600),
        ("2.days", 172800),
        ("-5m", -300),
    ],
)
def test_bare_durations(text: str, seconds: float) -> None:
    v = value_of(text)
    assert isinstance(v, ast.DurationLit)
    assert v.seconds == pytest.approx(seconds)
    assert v.text == text


def test_duration_needs_a_word_boundary() -> None:
    # `5min` is not `5m` followed by `in`: it is a number and a name, which is an error
    _, diags = parse_text("schedule { v: 5min }")
    assert diags and diags[0].code == "syntax-error"


# ------------------------------------------------------------------ strings


def test_string_escapes_are_decoded() -> None:
    s = string_of(r'"a\nb\tc\"d\\e\u00e9\u{1F600}\/"')
    assert s.value == 'a\nb\tc"d\\e\u00e9\U0001f600/'
    assert not s.raw_offsets


def test_plain_string_offsets_map_to_source() -> None:
    text = 'schedule {\n  cron: "0 9 * * *"\n}\n'
    sched = only(text)
    s = sched.props[0].value
    assert isinstance(s, ast.StringLit)
    assert s.raw_offsets
    assert text[s.content_start : s.content_start + len(s.value)] == "0 9 * * *"
    assert text[s.span.start : s.span.end] == '"0 9 * * *"'


def test_string_may_span_lines() -> None:
    s = string_of('"line one\nline two"')
    assert s.value == "line one\nline two"
    assert s.raw_offsets


def test_triple_quoted_string_is_dedented() -> None:
    text = 'agent a {\n  system_prompt: """\n    You are a monitor.\n      - indented\n    Done.\n    """\n}\n'
    agent = only(text)
    s = agent.props[0].value
    assert isinstance(s, ast.StringLit) and s.triple
    assert s.value == "You are a monitor.\n  - indented\nDone.\n"
    # content starts after the opening quotes and the newline that follows them
    assert text[s.content_start : s.content_start + 4] == "    "
    assert text.count("\n", 0, s.content_start) == 2


def test_triple_quoted_string_on_one_line_keeps_offsets() -> None:
    s = string_of('"""has "quotes" and \\n no escapes"""')
    assert s.value == 'has "quotes" and \\n no escapes'
    assert s.triple and s.raw_offsets


def test_env_refs_are_kept_verbatim_and_listed() -> None:
    s = string_of('"Bearer ${API_KEY} and ${API_KEY}/${_X1} $${LITERAL} $5"')
    assert s.value == "Bearer ${API_KEY} and ${API_KEY}/${_X1} $${LITERAL} $5"
    assert s.env_refs == ("API_KEY", "_X1")


def test_env_ref_in_triple_quoted_string() -> None:
    s = string_of('"""\n  token ${AGENT_PIN_JWT}\n  """')
    assert s.env_refs == ("AGENT_PIN_JWT",)


def test_string_key_is_decoded() -> None:
    m = value_of(r'{ "a\"b": 1 }')
    assert isinstance(m, ast.MapLit) and m.entries[0].key == 'a"b'


# ------------------------------------------------------------------ comments


def test_comments_everywhere_whitespace_is() -> None:
    text = """\
# leading comment
schedule { # after the brace
  name: "n" # after a value
  cron: /* inside */ "0 9 * * *" // line comment
  delivery: [ # inside a list
    "stdout", // after an item
    /* block */ "log_file"
  ]
  headers: {
    # inside a map
    "A": "b" # after a map value
  }
  url: "https://x.example/#anchor" # a `#` inside a string is text
} // trailing
/* a block comment
   over several lines */
"""
    sched = only(text)
    p = props(sched)
    assert plain(p["delivery"]) == ["stdout", "log_file"]
    assert plain(p["headers"]) == {"A": "b"}
    assert plain(p["url"]) == "https://x.example/#anchor"
    assert plain(p["cron"]) == "0 9 * * *"


# ------------------------------------------------------------------ spans


def test_spans_and_line_columns() -> None:
    text = 'schedule {\n  name: "daily"\n  max_retries: -3\n}\n'
    source = SourceFile("t.symbi", text)
    module, diags = parse_source(source)
    assert diags == []
    (sched,) = module.items
    assert isinstance(sched, ast.Schedule)
    assert (sched.span.start, sched.span.end) == (0, len(text) - 1)
    name, retries = sched.props
    assert source.line_col(name.span.start) == (2, 3)
    assert text[name.key_span.start : name.key_span.end] == "name"
    assert text[name.span.start : name.span.end] == 'name: "daily"'
    assert source.line_col(name.value.span.start) == (2, 9)
    assert text[retries.value.span.start : retries.value.span.end] == "-3"
    assert source.line_col(retries.value.span.start) == (3, 16)


def test_agent_name_span_and_string_names() -> None:
    text = 'agent "reporter-agent" {\n  model: "gpt-4o-mini"\n}'
    agent = only(text)
    assert isinstance(agent, ast.Agent)
    assert agent.name == "reporter-agent"
    assert text[agent.name_span.start : agent.name_span.end] == '"reporter-agent"'


# ------------------------------------------------------------------ agents


def test_seed_agent_key_value_form() -> None:
    agent = only('agent heartbeat_monitor {\n  model: "claude-sonnet-4.5"\n  timeout = 30s\n}')
    assert isinstance(agent, ast.Agent)
    assert agent.name == "heartbeat_monitor"
    assert plain(props(agent)["model"]) == "claude-sonnet-4.5"
    assert plain(props(agent)["timeout"]) == ("duration", 30.0)


def test_upstream_agent_form_mixed_with_props() -> None:
    text = """\
agent analyzer(input: DataSet, limit: int) -> Result<Report, Error> {
    capabilities = ["analyze", "validate"]
    model: "gpt-4o-mini"
    policy data_privacy {
        allow: read(input) if input.anonymized == true
        deny: store(input) if input.contains_pii
        require: { encryption: "AES-256", audit_trail: true }
        audit: all_operations with signature
        max_rows: 1000
    }
    policy: "baseline"
    function helper(x: String) -> String { return x; }
    with memory = "ephemeral", privacy = "high", sandbox = docker, timeout = 30.seconds {
        let r = process(input);
        r
    }
}
"""
    agent = only(text)
    assert isinstance(agent, ast.Agent)
    assert agent.name == "analyzer"
    assert [(p.name, p.type.name if p.type else None) for p in agent.params] == [
        ("input", "DataSet"),
        ("limit", "int"),
    ]
    assert agent.return_type is not None
    assert agent.return_type.name == "Result"
    assert [a.name for a in agent.return_type.args] == ["Report", "Error"]
    (caps,) = agent.capabilities
    assert plain(caps.values) == ["analyze", "validate"]
    assert [p.key for p in agent.props] == ["model", "policy"]
    (policy,) = agent.policies
    assert policy.name == "data_privacy"
    assert [r.action for r in policy.rules] == ["allow", "deny", "require", "audit"]
    assert isinstance(policy.rules[0].condition, ast.Syntax)
    assert policy.rules[0].condition.kind == "binop" and policy.rules[0].condition.text == "=="
    assert policy.rules[2].condition is None
    assert isinstance(policy.rules[3].qualifier, ast.Ident)
    assert [p.key for p in policy.props] == ["max_rows"]
    (fn,) = agent.functions
    assert fn.name == "helper" and fn.return_type is not None
    (w,) = agent.with_blocks
    assert [(a.key, plain(a.value)) for a in w.attrs] == [
        ("memory", "ephemeral"),
        ("privacy", "high"),
        ("sandbox", ("ident", "docker")),
        ("timeout", ("duration", 30.0)),
    ]
    assert [s.kind for s in w.body if isinstance(s, ast.Syntax)] == ["let"]
    assert isinstance(w.body[-1], ast.Ident)  # the trailing expression


def test_capabilities_with_colon_and_identifiers() -> None:
    agent = only("agent a { capabilities: [read, write] }")
    assert isinstance(agent, ast.Agent)
    assert plain(agent.capabilities[0].values) == [("ident", "read"), ("ident", "write")]


def test_agent_params_without_commas_and_generic_types() -> None:
    agent = only("agent a(x: Id<A, B> y: [String]? z) { }")
    assert isinstance(agent, ast.Agent)
    p = {q.name: q.type for q in agent.params}
    assert p["x"] is not None and p["x"].name == "Id" and len(p["x"].args) == 2
    assert p["y"] is not None and p["y"].name == "[]?"
    assert p["z"] is None


# ------------------------------------------------------------------ other items


def test_metadata_top_level_policy_type_function() -> None:
    module = ok(
        """\
metadata {
    version = "1.0"
    author: "me"
}
policy baseline {
    deny: network(host) if not host.allowed
    require_approval: true
}
type Query = { topic: String, depth: int }
type Alias = String
type Either = A | B
function add(a: int, b: int) -> int { a + b }
"""
    )
    meta, pol, t1, t2, t3, fn = module.items
    assert isinstance(meta, ast.Metadata)
    assert [(p.key, p.sep) for p in meta.props] == [("version", "="), ("author", ":")]
    assert isinstance(pol, ast.PolicyDef) and pol.name == "baseline"
    assert [r.action for r in pol.rules] == ["deny"]
    assert [p.key for p in pol.props] == ["require_approval"]
    assert isinstance(t1, ast.TypeDef) and isinstance(t1.definition, ast.Syntax)
    assert t1.definition.kind == "struct"
    assert isinstance(t2, ast.TypeDef) and isinstance(t2.definition, ast.TypeRef)
    assert isinstance(t3, ast.TypeDef) and isinstance(t3.definition, ast.Syntax)
    assert t3.definition.kind == "union"
    assert isinstance(fn, ast.FunctionDef) and fn.name == "add"
    (body,) = fn.body
    assert isinstance(body, ast.Syntax) and body.kind == "binop" and body.text == "+"


def test_channel_memory_webhook_blocks() -> None:
    module = ok(
        """\
channel support {
    platform = "slack"
    channels = ["#a", "#b"]
    policy access { allow: invoke(agent) if user.staff }
    data_classification { pii: redact, credentials: block }
}
memory mem {
    store markdown
    path "data/agents"
    retention 90d
    search { vector_weight 0.7 keyword_weight 0.3 }
}
webhook hook {
    path "/hooks/gh"
    provider github
    secret "${GH_SECRET}"
    filter { json_path "$.action" equals "opened" }
}
"""
    )
    channel, memory, webhook = module.items
    assert isinstance(channel, ast.GenericBlock) and channel.kind == "channel"
    assert [p.key for p in channel.props] == ["platform", "channels", "data_classification"]
    assert plain(props(channel)["data_classification"]) == {
        "pii": ("ident", "redact"),
        "credentials": ("ident", "block"),
    }
    (pol,) = channel.items
    assert isinstance(pol, ast.PolicyDef) and pol.name == "access"
    assert isinstance(memory, ast.GenericBlock) and memory.kind == "memory"
    assert plain(props(memory)["search"]) == {"vector_weight": 0.7, "keyword_weight": 0.3}
    assert plain(props(memory)["retention"]) == ("duration", 90 * 86400.0)
    assert [p.sep for p in memory.props] == [" ", " ", " ", None]  # `search { … }`: a block
    assert isinstance(webhook, ast.GenericBlock) and webhook.kind == "webhook"
    secret = props(webhook)["secret"]
    assert isinstance(secret, ast.StringLit) and secret.env_refs == ("GH_SECRET",)
    assert plain(props(webhook)["filter"]) == {"json_path": "$.action", "equals": "opened"}


# ------------------------------------------------------------------ statements and expressions


def body_of(statements: str) -> tuple[object, ...]:
    fn = only(f"function f() {{\n{statements}\n}}")
    assert isinstance(fn, ast.FunctionDef)
    return fn.body


def kinds(node: object) -> Any:
    """A compact shape of a Syntax tree: (kind, text, children…)."""
    if isinstance(node, ast.Syntax):
        return (node.kind, node.text, *[kinds(c) for c in node.children])
    if isinstance(node, ast.Ident):
        return node.name
    if isinstance(node, ast.NumberLit | ast.StringLit | ast.BoolLit):
        return node.value
    return type(node).__name__


def test_operator_precedence() -> None:
    (stmt,) = body_of("let x = a || b && c == d < e + f * -g.h(1)[2];")
    assert kinds(stmt) == (
        "let", "", "x",
        ("binop", "||", "a",
         ("binop", "&&", "b",
          ("binop", "==", "c",
           ("binop", "<", "d",
            ("binop", "+", "e",
             ("binop", "*", "f",
              ("unop", "-",
               ("index", "", ("call", "", ("member", "h", "g"), 1), 2)))))))),
    )  # fmt: skip


def test_left_associativity_and_in_operator() -> None:
    (stmt,) = body_of("x = a - b - c in items;")
    assert kinds(stmt) == (
        "assign", "=", "x",
        ("binop", "in", ("binop", "-", ("binop", "-", "a", "b"), "c"), "items"),
    )  # fmt: skip


def test_statements() -> None:
    body = body_of(
        """\
let mut total = 0;
total += 1; total -= 1; total *= 2; total /= 2; total %= 3;
return;
if not ready { wait(); } else if let Some(v) = cache.get(k) { use(v); } else { fail(); }
for (k, v) in pairs { continue; }
for item in items { break; }
while n > 0 { n -= 1; }
try { risky(); } catch (IoError e) { log(e); } catch_all();
match state { "a" | "b" => 1, Status.Ok => { ok() } Some(x) if x > 1 => x, _ => 0 }
;
f(x => x + 1, (a, b) => a * b, () => 0, named = 1, other: 2,)
"""
    )
    assert [kinds(s)[0] if isinstance(s, ast.Syntax) else s for s in body] == [
        "let", "assign", "assign", "assign", "assign", "assign", "return", "if", "for",
        "for", "while", "try", "expr", "match", "call",
    ]  # fmt: skip
    assert [s.text for s in body[1:6] if isinstance(s, ast.Syntax)] == [
        "+=", "-=", "*=", "/=", "%=",
    ]  # fmt: skip
    let = body[0]
    assert isinstance(let, ast.Syntax) and let.text == "mut"
    call = body[-1]
    assert isinstance(call, ast.Syntax)
    assert [kinds(a)[:2] for a in call.children[1:]] == [
        ("lambda", ""), ("lambda", ""), ("lambda", ""), ("named_arg", "named"),
        ("named_arg", "other"),
    ]  # fmt: skip


def test_records_typed_records_arrays_and_vault_literals() -> None:
    (stmt,) = body_of('return Report { ok: true, "n": [1, 2,], key: vault://k/v, nested: {a: 1} };')
    assert isinstance(stmt, ast.Syntax) and stmt.kind == "return"
    (rec,) = stmt.children
    assert isinstance(rec, ast.Syntax) and rec.kind == "typed_record" and rec.text == "Report"
    assert [f.text for f in rec.children if isinstance(f, ast.Syntax)] == [
        "ok", "n", "key", "nested",
    ]  # fmt: skip


def test_if_condition_brace_opens_the_body_not_a_record() -> None:
    (stmt,) = body_of("if x { y; }")
    assert kinds(stmt) == ("if", "", "x", ("block", "", ("expr", "", "y")))


def test_match_as_expression_and_statement() -> None:
    body = body_of('let s = match n { 0 => "zero", _ => "many" };\nmatch n { _ => {} }')
    assert kinds(body[0])[3][0] == "match"
    assert kinds(body[1])[0] == "match"


# ------------------------------------------------------------------ real files


def test_seed_guide_examples_parse() -> None:
    module = ok((FIXTURES / "seed_guide_examples.symbi").read_text(encoding="utf-8"))
    schedules = [i for i in module.items if isinstance(i, ast.Schedule)]
    agents = [i for i in module.items if isinstance(i, ast.Agent)]
    assert len(schedules) == 12 and len(agents) == 1
    names = [plain(props(s)["name"]) for s in schedules]
    assert names[:3] == ["daily-report", "deployment-check", "system-monitor"]
    prompt = props(agents[0])["system_prompt"]
    assert isinstance(prompt, ast.StringLit) and prompt.value.startswith("Du bist")
    assert "\n1. Systemmetriken" in prompt.value  # dedented


UPSTREAM_FILES = sorted(FIXTURES.glob("*.symbi"))


def test_there_are_upstream_fixtures() -> None:
    assert len(UPSTREAM_FILES) >= 7


@pytest.mark.parametrize("path", UPSTREAM_FILES, ids=lambda p: p.name)
def test_upstream_fixture_parses_cleanly(path: Path) -> None:
    source = SourceFile(str(path), path.read_text(encoding="utf-8"))
    module, diags = parse_source(source)
    assert diags == [], [(d.line_col, d.message) for d in diags]
    assert module.items
    for item in module.items:
        assert 0 <= item.span.start < item.span.end <= len(source.text)


def test_upstream_fixture_contents_survive_in_the_ast() -> None:
    module = ok((FIXTURES / "hitl_devops.symbi").read_text(encoding="utf-8"))
    agent = next(i for i in module.items if isinstance(i, ast.Agent))
    assert agent.name == "hitl_devops"
    (w,) = agent.with_blocks
    assert plain(w.attrs[1].value) == ("duration", 30.0)
    assert [r.action for r in agent.policies[0].rules] == ["allow", "require", "deny", "audit"]
    sched = next(i for i in module.items if isinstance(i, ast.Schedule))
    assert isinstance(sched.name, ast.Ident) and sched.name.name == "nightly_deploy_check"
