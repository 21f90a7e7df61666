"""The `llm` executor against local servers speaking the providers' wire formats (SPEC §5.4).

The fake servers check requests the way the real APIs document them (OpenAI chat completions:
Bearer auth, ``model`` + ``messages``; Anthropic Messages: ``x-api-key``, ``anthropic-version``,
required ``max_tokens``, no ``system`` role in ``messages``) and answer with realistic bodies.
Everything runs on 127.0.0.1; retry waits are tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from compiler.ir import AgentDef
from runtime.config import Config, ConfigError, load_config
from runtime.executor import AgentContext, ExecRequest, ExecResult, executor_for, run_agent
from runtime.llm import (
    ANTHROPIC_VERSION,
    DEFAULT_MAX_TOKENS,
    DEFAULT_USER_MESSAGE,
    LlmExecutor,
    error_detail,
    parse_retry_after,
    reply_summary,
)

OPENAI_KEY = "sk-test-openai"
ANTHROPIC_KEY = "sk-ant-test"

# ----------------------------------------------------------------------------- fake servers


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any
    at: float  # time.monotonic() on arrival
    raw_headers: list[tuple[str, str]] = field(default_factory=list)  # as sent, repeats kept


Step = Callable[[web.Request, Seen], Awaitable[web.StreamResponse]]


@dataclass
class FakeProvider:
    """A provider endpoint: records requests, answers with the scripted steps first, then
    with the format's normal (validated) answer."""

    kind: str  # 'openai' | 'anthropic'
    key: str | None  # None: no authentication (Ollama-style)
    reply: str = "Hello from the model."
    seen: list[Seen] = field(default_factory=list)
    script: list[Step] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode()
        seen = Seen(
            request.method,
            request.path,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            time.monotonic(),
            list(request.headers.items()),
        )
        self.seen.append(seen)
        step = self.script.pop(0) if self.script else self.answer
        return await step(request, seen)

    async def answer(self, request: web.Request, seen: Seen) -> web.StreamResponse:
        if self.kind == "anthropic":
            return anthropic_answer(self, seen)
        return openai_answer(self, seen)


def openai_error(status: int, message: str, type_: str, code: str | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": type_, "param": None, "code": code}},
        status=status,
        headers={"x-request-id": "req_8f1e2d"},
    )


def openai_answer(fake: FakeProvider, seen: Seen) -> web.Response:
    """/v1/chat/completions as documented: Bearer key, model, non-empty messages."""
    if seen.path != "/v1/chat/completions":
        return openai_error(404, f"Invalid URL (POST {seen.path})", "invalid_request_error")
    if fake.key is not None and seen.headers.get("authorization") != f"Bearer {fake.key}":
        return openai_error(
            401,
            "Incorrect API key provided. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )
    body = seen.body
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return openai_error(400, "you must provide a model parameter", "invalid_request_error")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return openai_error(
            400, "'messages' must contain at least one message", "invalid_request_error"
        )
    for m in messages:
        if m.get("role") not in ("system", "developer", "user", "assistant") or not isinstance(
            m.get("content"), str
        ):
            return openai_error(400, f"Invalid message: {m!r}", "invalid_request_error")
    return web.json_response(
        {
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion",
            "created": 1741569952,
            "model": body["model"] + "-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": fake.reply,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": 19,
                "completion_tokens": 10,
                "total_tokens": 29,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_06737a9306",
        }
    )


def anthropic_error(status: int, type_: str, message: str) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": type_, "message": message}},
        status=status,
        headers={"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy"},
    )


def anthropic_answer(fake: FakeProvider, seen: Seen) -> web.Response:
    """/v1/messages as documented: x-api-key, anthropic-version, max_tokens, user/assistant."""
    if seen.path != "/v1/messages":
        return anthropic_error(404, "not_found_error", "Not Found")
    if fake.key is not None and seen.headers.get("x-api-key") != fake.key:
        return anthropic_error(401, "authentication_error", "invalid x-api-key")
    if seen.headers.get("anthropic-version") != ANTHROPIC_VERSION:
        return anthropic_error(
            400, "invalid_request_error", "anthropic-version: header is required"
        )
    if not seen.headers.get("content-type", "").startswith("application/json"):
        return anthropic_error(
            400, "invalid_request_error", "content-type must be application/json"
        )
    body = seen.body
    if not isinstance(body, dict):
        return anthropic_error(400, "invalid_request_error", "body must be a JSON object")
    for required in ("model", "max_tokens", "messages"):
        if required not in body:
            return anthropic_error(400, "invalid_request_error", f"{required}: Field required")
    if "system" in body and not isinstance(body["system"], str | list):
        return anthropic_error(
            400, "invalid_request_error", "system: Input should be a valid string"
        )
    for m in body["messages"]:
        if m.get("role") not in ("user", "assistant"):
            return anthropic_error(
                400,
                "invalid_request_error",
                f'messages: Unexpected role "{m.get("role")}". The Messages API accepts a '
                'top-level `system` parameter, not "system" as an input message role.',
            )
    if body["messages"][0]["role"] != "user":
        return anthropic_error(
            400, "invalid_request_error", 'messages: first message must use the "user" role'
        )
    return web.json_response(
        {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": body["model"] + "-20250929",
            "content": [
                {"type": "text", "text": fake.reply},
                {"type": "tool_use", "id": "toolu_01", "name": "noop", "input": {}},
            ],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 21,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 4,
                "output_tokens": 7,
                "service_tier": "standard",
            },
        }
    )


async def wait_for_disconnect(fake: FakeProvider, request: web.Request, limit: float) -> None:
    """Hold the request open until the client goes away (then flag it) or ``limit`` passes."""
    end = time.monotonic() + limit
    try:
        while time.monotonic() < end:
            transport = request.transport
            if transport is None or transport.is_closing():
                fake.disconnected.set()
                return
            await asyncio.sleep(0.01)
    except asyncio.CancelledError:  # aiohttp cancels the handler when the client hangs up
        fake.disconnected.set()
        raise


def status_step(status: int, body: Any, headers: dict[str, str] | None = None) -> Step:
    async def step(request: web.Request, seen: Seen) -> web.StreamResponse:
        return web.json_response(body, status=status, headers=headers)

    return step


def slow_step(fake: FakeProvider, limit: float = 5.0) -> Step:
    async def step(request: web.Request, seen: Seen) -> web.StreamResponse:
        await wait_for_disconnect(fake, request, limit)
        return await fake.answer(request, seen)

    return step


Start = Callable[..., Awaitable[FakeProvider]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    servers: list[TestServer] = []

    async def start_(kind: str, key: str | None = None, **kw: Any) -> FakeProvider:
        fake = FakeProvider(kind=kind, key=key, **kw)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", fake.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        fake.url = str(server.make_url("")).rstrip("/")
        return fake

    yield start_
    for server in servers:
        await server.close()


def write_config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "symbi.toml"
    path.write_text(text)
    return load_config(path, env={})


def llm_agent(model: str, **kw: Any) -> AgentDef:
    return AgentDef(name=kw.pop("name", "writer"), executor="llm", model=model, **kw)


def fast(config: Config | None = None, **kw: Any) -> LlmExecutor:
    """An executor whose backoff is short enough for tests."""
    kw.setdefault("backoff_base_seconds", 0.01)
    kw.setdefault("backoff_max_seconds", 0.05)
    return LlmExecutor(config, **kw)


async def run(ex: LlmExecutor, agent: AgentDef, input: str = "hi", **kw: Any) -> ExecResult:
    return await ex.execute(ExecRequest(agent=agent, input=input, **kw))


def openai_config(tmp_path: Path, fake: FakeProvider, extra: str = "") -> Config:
    return write_config(
        tmp_path,
        f"""
[providers.openai]
base_url = "{fake.url}/v1"
{extra}
""",
    )


def anthropic_config(tmp_path: Path, fake: FakeProvider, extra: str = "") -> Config:
    return write_config(
        tmp_path,
        f"""
[providers.anthropic]
base_url = "{fake.url}"
{extra}
""",
    )


# ------------------------------------------------------------------------- request shapes


async def test_openai_request_shape_and_reply(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", OPENAI_KEY, reply="All systems nominal.")
    agent = llm_agent(
        "gpt-4o-mini", system_prompt="You are a terse SRE.", temperature=0.2, max_tokens=300
    )
    ctx = AgentContext(
        messages=[
            {"role": "user", "content": "Earlier question"},
            {"role": "assistant", "content": "Earlier answer"},
        ],
        summary_in="disk was at 91%",
    )
    r = await run(
        fast(openai_config(tmp_path, fake)),
        agent,
        "Check the fleet.",
        context=ctx,
        env={"OPENAI_API_KEY": OPENAI_KEY},
    )
    assert r.status == "succeeded", r.error
    assert (r.output, r.summary, r.error) == ("All systems nominal.", None, None)
    assert r.usage == {
        "provider": "openai",
        "model": "gpt-4o-mini-2024-07-18",
        "prompt_tokens": 19,
        "completion_tokens": 10,
        "total_tokens": 29,
        "finish_reason": "stop",
        "attempts": 1,
    }
    [seen] = fake.seen
    assert (seen.method, seen.path) == ("POST", "/v1/chat/completions")
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert seen.headers["content-type"] == "application/json"
    assert "x-api-key" not in seen.headers
    assert seen.body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a terse SRE."},
            {"role": "system", "content": "Summary of the previous run: disk was at 91%"},
            {"role": "user", "content": "Earlier question"},
            {"role": "assistant", "content": "Earlier answer"},
            {"role": "user", "content": "Check the fleet."},
        ],
        "temperature": 0.2,
        "max_tokens": 300,
    }


async def test_openai_omits_unset_options_and_uses_default_user_message(
    start: Start, tmp_path: Path
) -> None:
    fake = await start("openai", OPENAI_KEY)
    r = await run(
        fast(openai_config(tmp_path, fake)),
        llm_agent("gpt-4o"),
        "  ",
        env={"OPENAI_API_KEY": OPENAI_KEY},
    )
    assert r.status == "succeeded", r.error
    assert fake.seen[0].body == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": DEFAULT_USER_MESSAGE}],
    }


async def test_anthropic_request_shape_and_reply(start: Start, tmp_path: Path) -> None:
    fake = await start("anthropic", ANTHROPIC_KEY, reply="Two hosts need attention.")
    agent = llm_agent("claude-sonnet-4-5", system_prompt="You are a terse SRE.", temperature=0.5)
    ctx = AgentContext(
        messages=[
            {"role": "system", "content": "Hosts: a, b, c."},
            {"role": "user", "content": "Earlier question"},
            {"role": "assistant", "content": "Earlier answer"},
            {"role": "user", "content": "A follow-up left unanswered"},
        ],
        summary_in="all green",
    )
    r = await run(
        fast(anthropic_config(tmp_path, fake)),
        agent,
        "Check the fleet.",
        context=ctx,
        env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY},
    )
    assert r.status == "succeeded", r.error
    assert r.output == "Two hosts need attention."  # text blocks only, tool_use ignored
    assert r.usage == {
        "provider": "anthropic",
        "model": "claude-sonnet-4-5-20250929",
        "prompt_tokens": 25,  # input_tokens + cache reads
        "completion_tokens": 7,
        "total_tokens": 32,
        "finish_reason": "end_turn",
        "attempts": 1,
    }
    [seen] = fake.seen
    assert (seen.method, seen.path) == ("POST", "/v1/messages")
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["content-type"] == "application/json"
    assert "authorization" not in seen.headers
    assert seen.body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "system": "You are a terse SRE.\n\nSummary of the previous run: all green\n\n"
        "Hosts: a, b, c.",
        "messages": [
            {"role": "user", "content": "Earlier question"},
            {"role": "assistant", "content": "Earlier answer"},
            # consecutive user turns are joined, as the API would
            {"role": "user", "content": "A follow-up left unanswered\n\nCheck the fleet."},
        ],
        "temperature": 0.5,
    }


async def test_anthropic_without_system_prompt_sends_no_system_and_agent_max_tokens(
    start: Start, tmp_path: Path
) -> None:
    fake = await start("anthropic", ANTHROPIC_KEY)
    ctx = AgentContext(messages=[{"role": "assistant", "content": "I spoke first"}])
    r = await run(
        fast(anthropic_config(tmp_path, fake)),
        llm_agent("claude-haiku-4-5", max_tokens=64),
        "",
        context=ctx,
        env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY},
    )
    assert r.status == "succeeded", r.error
    body = fake.seen[0].body
    assert "system" not in body and body["max_tokens"] == 64
    assert body["messages"] == [
        {"role": "user", "content": "(conversation so far)"},
        {"role": "assistant", "content": "I spoke first"},
        {"role": "user", "content": DEFAULT_USER_MESSAGE},
    ]


@pytest.mark.parametrize(
    ("reply", "summary"),
    [
        ('{"summary": "3 alerts", "details": []}', "3 alerts"),
        ('```json\n{"summary": "fenced", "n": 1}\n```', "fenced"),
        ("plain prose reply", None),
        ('{"no_summary": true}', None),
    ],
)
async def test_json_reply_with_summary_gives_the_summary(
    start: Start, tmp_path: Path, reply: str, summary: str | None
) -> None:
    fake = await start("openai", OPENAI_KEY, reply=reply)
    r = await run(
        fast(openai_config(tmp_path, fake)), llm_agent("gpt-4o"), env={"OPENAI_API_KEY": OPENAI_KEY}
    )
    assert (r.status, r.output, r.summary) == ("succeeded", reply, summary)


# -------------------------------------------------------------------------------- errors


async def test_400_fails_with_the_providers_message_and_is_not_retried(
    start: Start, tmp_path: Path
) -> None:
    fake = await start("anthropic", ANTHROPIC_KEY)
    fake.script.append(
        status_step(
            400,
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "prompt is too long"},
            },
            {"request-id": "req_abc"},
        )
    )
    r = await run(
        fast(anthropic_config(tmp_path, fake)),
        llm_agent("claude-opus-4-1"),
        env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY},
    )
    assert r.status == "failed" and r.usage is None
    assert r.error == (
        "provider `anthropic` refused the request: HTTP 400: invalid_request_error: "
        "prompt is too long (request id req_abc)"
    )
    assert len(fake.seen) == 1


async def test_401_wrong_key_is_refused(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", OPENAI_KEY)
    r = await run(
        fast(openai_config(tmp_path, fake)),
        llm_agent("gpt-4o"),
        env={"OPENAI_API_KEY": "sk-wrong"},
    )
    assert r.status == "failed"
    assert r.error is not None
    assert r.error.startswith(
        "provider `openai` refused the request: HTTP 401: invalid_api_key: Incorrect API key"
    )
    assert r.error.endswith("(request id req_8f1e2d)")
    assert len(fake.seen) == 1


async def test_429_waits_for_retry_after_then_succeeds(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", OPENAI_KEY)
    fake.script.append(
        status_step(
            429,
            {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            },
            {"retry-after": "0.2"},
        )
    )
    r = await run(
        fast(openai_config(tmp_path, fake)), llm_agent("gpt-4o"), env={"OPENAI_API_KEY": OPENAI_KEY}
    )
    assert r.status == "succeeded", r.error
    assert r.usage is not None and r.usage["attempts"] == 2
    gap = fake.seen[1].at - fake.seen[0].at
    assert 0.2 <= gap < 1.0  # waited what the server asked, not the (tiny) backoff


async def test_retry_after_is_capped(start: Start, tmp_path: Path) -> None:
    fake = await start("anthropic", ANTHROPIC_KEY)
    fake.script.append(
        status_step(
            429,
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
            {"retry-after": "3600"},
        )
    )
    ex = fast(anthropic_config(tmp_path, fake), retry_after_cap_seconds=0.1)
    t0 = time.monotonic()
    r = await run(ex, llm_agent("claude-sonnet-4-5"), env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY})
    assert r.status == "succeeded", r.error
    gap = fake.seen[1].at - fake.seen[0].at
    assert 0.1 <= gap < 1.0 and time.monotonic() - t0 < 2.0


async def test_retry_after_beyond_the_run_timeout_fails_with_the_providers_answer(
    start: Start, tmp_path: Path
) -> None:
    fake = await start("openai", OPENAI_KEY)
    fake.script.append(
        status_step(
            429,
            {"error": {"message": "quota", "type": "insufficient_quota", "code": None}},
            {"retry-after": "30"},
        )
    )
    t0 = time.monotonic()
    r = await run(
        fast(openai_config(tmp_path, fake)),
        llm_agent("gpt-4o", timeout_seconds=2.0),
        env={"OPENAI_API_KEY": OPENAI_KEY},
    )
    assert time.monotonic() - t0 < 1.0  # did not sit out the wait
    assert r.status == "failed"
    assert r.error == (
        "provider `openai` refused the request: HTTP 429: insufficient_quota: quota "
        "(after 1 attempt; not retried: the wait of 30s exceeds the run's remaining time)"
    )


async def test_500_twice_then_success(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", OPENAI_KEY)
    for _ in range(2):
        fake.script.append(
            status_step(
                500, {"error": {"message": "The server had an error", "type": "server_error"}}
            )
        )
    r = await run(
        fast(openai_config(tmp_path, fake)), llm_agent("gpt-4o"), env={"OPENAI_API_KEY": OPENAI_KEY}
    )
    assert r.status == "succeeded", r.error
    assert len(fake.seen) == 3 and r.usage is not None and r.usage["attempts"] == 3
    assert fake.seen[0].body == fake.seen[2].body  # the same request each time


async def test_5xx_exhausting_retries_fails_naming_the_attempts(
    start: Start, tmp_path: Path
) -> None:
    fake = await start("anthropic", ANTHROPIC_KEY)
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    fake.script.extend(status_step(529, overloaded) for _ in range(5))
    config = anthropic_config(tmp_path, fake, "max_retries = 1")
    r = await run(
        fast(config), llm_agent("claude-sonnet-4-5"), env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    )
    assert r.status == "failed"
    assert r.error == (
        "provider `anthropic` failed: HTTP 529: overloaded_error: Overloaded (after 2 attempts)"
    )
    assert len(fake.seen) == 2


async def test_x_should_retry_false_stops_retries(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", OPENAI_KEY)
    fake.script.append(
        status_step(
            503, {"error": {"message": "down", "type": "server_error"}}, {"x-should-retry": "false"}
        )
    )
    r = await run(
        fast(openai_config(tmp_path, fake)), llm_agent("gpt-4o"), env={"OPENAI_API_KEY": OPENAI_KEY}
    )
    assert (r.status, r.error) == (
        "failed",
        "provider `openai` failed: HTTP 503: server_error: down",
    )
    assert len(fake.seen) == 1


async def test_non_json_success_body_fails_clearly(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", None)

    async def html(request: web.Request, seen: Seen) -> web.StreamResponse:
        return web.Response(text="<html>proxy login</html>", content_type="text/html")

    fake.script.append(html)
    config = write_config(
        tmp_path, f'[providers.local]\nbase_url = "{fake.url}/v1"\nmodels = ["local-*"]\n'
    )
    r = await run(fast(config), llm_agent("local-7b"))
    assert r.status == "failed"
    assert r.error == (
        "provider `local` sent an unexpected response (the body is not JSON): "
        "<html>proxy login</html>"
    )


async def test_openai_refusal_fails_the_run(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", OPENAI_KEY)

    async def refusal(request: web.Request, seen: Seen) -> web.StreamResponse:
        return web.json_response(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "gpt-4o",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "refusal": "I can't help with that.",
                        },
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
            }
        )

    fake.script.append(refusal)
    r = await run(
        fast(openai_config(tmp_path, fake)), llm_agent("gpt-4o"), env={"OPENAI_API_KEY": OPENAI_KEY}
    )
    assert (r.status, r.error) == (
        "failed",
        "provider `openai`: the model refused: I can't help with that.",
    )
    assert r.usage is not None and r.usage["total_tokens"] == 11  # the tokens were still spent


async def test_connection_refused_is_retried_then_fails(tmp_path: Path) -> None:
    # a port that was just closed: nothing listens there
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    await server.close()
    config = write_config(
        tmp_path, f'[providers.local]\nbase_url = "{url}/v1"\nmodels = ["*"]\nmax_retries = 2\n'
    )
    r = await run(fast(config), llm_agent("anything"))
    assert r.status == "failed"
    assert r.error is not None
    assert r.error.startswith(f"cannot reach provider `local` at {url}/v1/chat/completions: ")
    assert r.error.endswith("(after 3 attempts)")


# ---------------------------------------------------------------- timeouts, cancellation


async def test_run_timeout_aborts_the_request(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", OPENAI_KEY)
    fake.script.append(slow_step(fake))
    t0 = time.monotonic()
    r = await run(
        fast(openai_config(tmp_path, fake)),
        llm_agent("gpt-4o"),
        env={"OPENAI_API_KEY": OPENAI_KEY},
        timeout_seconds=0.3,
    )
    assert time.monotonic() - t0 < 2.0
    assert (r.status, r.error) == (
        "timed_out",
        "timed out after 0.3s waiting for provider `openai`",
    )
    await asyncio.wait_for(fake.disconnected.wait(), 2.0)  # the server saw the request dropped


async def test_request_timeout_is_retried(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", OPENAI_KEY)
    fake.script.append(slow_step(fake))
    config = openai_config(tmp_path, fake, "timeout_seconds = 0.3")
    r = await run(fast(config), llm_agent("gpt-4o"), env={"OPENAI_API_KEY": OPENAI_KEY})
    assert r.status == "succeeded", r.error
    assert r.usage is not None and r.usage["attempts"] == 2
    assert fake.disconnected.is_set()


async def test_request_timeout_without_retries_is_timed_out(start: Start, tmp_path: Path) -> None:
    fake = await start("anthropic", ANTHROPIC_KEY)
    fake.script.append(slow_step(fake))
    config = anthropic_config(tmp_path, fake, "timeout_seconds = 0.2\nmax_retries = 0")
    r = await run(
        fast(config), llm_agent("claude-sonnet-4-5"), env={"ANTHROPIC_API_KEY": ANTHROPIC_KEY}
    )
    assert (r.status, r.error) == (
        "timed_out",
        f"provider `anthropic` did not answer within 0.2s ({fake.url}/v1/messages)",
    )


async def test_cancellation_aborts_the_request(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", OPENAI_KEY)
    fake.script.append(slow_step(fake))
    task = asyncio.create_task(
        run(
            fast(openai_config(tmp_path, fake)),
            llm_agent("gpt-4o"),
            env={"OPENAI_API_KEY": OPENAI_KEY},
        )
    )
    while not fake.seen:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(fake.disconnected.wait(), 2.0)


# ------------------------------------------------------------------- keys and providers


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("gpt-4o-mini", "environment variable `OPENAI_API_KEY` is not set (provider `openai`)"),
        (
            "claude-sonnet-4-5",
            "environment variable `ANTHROPIC_API_KEY` is not set (provider `anthropic`)",
        ),
    ],
)
async def test_missing_api_key_fails_before_any_request(model: str, message: str) -> None:
    r = await run(fast(), llm_agent(model), env={"OPENAI_API_KEY": ""})  # empty counts as unset
    assert r == ExecResult(status="failed", error=f"agent `writer`: {message}")


async def test_default_routing_honours_base_url_variables(start: Start) -> None:
    oa = await start("openai", OPENAI_KEY)
    an = await start("anthropic", ANTHROPIC_KEY)
    env = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": oa.url + "/v1",
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": an.url,
    }
    for model in ("gpt-4o", "llama3.2", "Claude-Opus-4-1", "claude-haiku-4-5"):
        r = await run(fast(), llm_agent(model), env=env)
        assert r.status == "succeeded", (model, r.error)
    assert [s.body["model"] for s in oa.seen] == ["gpt-4o", "llama3.2"]
    assert [s.body["model"] for s in an.seen] == ["Claude-Opus-4-1", "claude-haiku-4-5"]


async def test_provider_selection_by_model_pattern_and_explicit_provider(
    start: Start, tmp_path: Path
) -> None:
    local = await start("openai", None, reply="from ollama")
    cloud = await start("openai", "sk-cloud", reply="from cloud")
    config = write_config(
        tmp_path,
        f"""
[providers.ollama]
base_url = "{local.url}/v1"
models = ["llama*", "qwen*"]

[providers.cloud]
kind = "openai"
base_url = "{cloud.url}/v1"
api_key_env = "CLOUD_KEY"
models = ["gpt-*"]
""",
    )
    env = {"CLOUD_KEY": "sk-cloud"}
    ex = fast(config)
    by_pattern = await run(ex, llm_agent("qwen2.5:7b"), env=env)
    to_cloud = await run(ex, llm_agent("gpt-4.1"), env=env)
    explicit = await run(ex, llm_agent("llama3.2", provider="cloud"), env=env)
    assert [by_pattern.output, to_cloud.output, explicit.output] == [
        "from ollama",
        "from cloud",
        "from cloud",
    ]
    assert [s.body["model"] for s in local.seen] == ["qwen2.5:7b"]
    assert [s.body["model"] for s in cloud.seen] == ["gpt-4.1", "llama3.2"]
    # the Ollama-style server got no credentials at all
    assert "authorization" not in local.seen[0].headers
    assert cloud.seen[0].headers["authorization"] == "Bearer sk-cloud"
    assert by_pattern.usage is not None and by_pattern.usage["provider"] == "ollama"


async def test_builtin_ollama_provider_needs_no_key(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", None, reply="local reply")
    # only base_url overridden: kind and "no key" come from the built-in ollama provider
    config = write_config(tmp_path, f'[providers.ollama]\nbase_url = "{fake.url}/v1"\n')
    r = await run(fast(config), llm_agent("llama3.2", provider="ollama"), env={})
    assert (r.status, r.output) == ("succeeded", "local reply")
    assert "authorization" not in fake.seen[0].headers


async def test_api_key_from_config_reference_and_extra_headers(
    start: Start, tmp_path: Path
) -> None:
    fake = await start("anthropic", "sk-ant-from-ref")
    config = write_config(
        tmp_path,
        f"""
[providers.claude]
kind = "anthropic"
base_url = "{fake.url}/v1"
api_key = "${{MY_ANTHROPIC}}"
models = ["claude-*"]
headers = {{ anthropic-beta = "context-1m-2025-08-07", Accept = "application/x-test" }}
""",
    )
    r = await run(
        fast(config), llm_agent("claude-sonnet-4-5"), env={"MY_ANTHROPIC": "sk-ant-from-ref"}
    )
    assert r.status == "succeeded", r.error
    assert fake.seen[0].path == "/v1/messages"  # a base_url written with /v1 is not doubled
    assert fake.seen[0].headers["anthropic-beta"] == "context-1m-2025-08-07"
    # a table header replaces ours of the same name (any case) instead of repeating it
    accepts = [v for k, v in fake.seen[0].raw_headers if k.lower() == "accept"]
    assert accepts == ["application/x-test"]

    missing = await run(fast(config), llm_agent("claude-sonnet-4-5"), env={})
    assert missing == ExecResult(
        status="failed",
        error=f"agent `writer`: {tmp_path / 'symbi.toml'}: [providers.claude] api_key: "
        "environment variable `MY_ANTHROPIC` is not set",
    )


async def test_unknown_provider_name(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[providers.local]\nbase_url = "http://127.0.0.1:9/v1"\n')
    r = await run(fast(config), llm_agent("gpt-4o", provider="locl"))
    assert r == ExecResult(
        status="failed",
        error="agent `writer`: unknown provider `locl`: did you mean `local`? known providers: "
        "anthropic, local, ollama, openai (configure it as a [providers.locl] table in symbi.toml)",
    )


async def test_unknown_model_route(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[providers.openai]\nmodels = ["gpt-*", "o3*"]\n\n'
        '[providers.ollama]\nmodels = ["llama*"]\n',
    )
    r = await run(fast(config), llm_agent("mistral-large"), env={"OPENAI_API_KEY": "k"})
    assert r == ExecResult(
        status="failed",
        error="agent `writer`: no provider serves model `mistral-large` (patterns: openai: "
        "gpt-*, o3*; ollama: llama*); add it to a provider's `models` or name a `provider` in "
        "the agent",
    )


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            'base_url = "http://h/v1"\nmodel = ["x"]\n',
            ": unknown key `model` (did you mean `models`?)",
        ),
        ('kind = "gemini"\n', " kind: must be one of 'openai', 'anthropic', not 'gemini'"),
        (
            'models = "gpt-*"\n',
            ' models: expected a list of strings (model name patterns such as "claude-*")',
        ),
        ("timeout_seconds = 0\n", " timeout_seconds: must be a finite number greater than 0"),
        ("timeout_seconds = inf\n", " timeout_seconds: must be a finite number greater than 0"),
        ("max_retries = -1\n", " max_retries: must be at least 0"),
        ("max_retries = true\n", " max_retries: expected an integer"),
        ("headers = { x = 1 }\n", " headers: expected a table of strings"),
        ("api_key_env = 3\n", " api_key_env: expected a string"),
    ],
)
def test_bad_provider_tables_are_config_errors_at_load(
    tmp_path: Path, table: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        write_config(tmp_path, "[providers.p]\n" + table)
    assert str(info.value) == f"{tmp_path / 'symbi.toml'}: [providers.p]{problem}"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            'base_url = "http://h/v1"\nmax_retries = "${N}"\n',
            " max_retries: expected an integer, not 'many'",
        ),
        (
            'base_url = "http://h/v1"\ntimeout_seconds = "${N}"\n',
            " timeout_seconds: expected a number, not 'many'",
        ),
        (
            'base_url = "http://h/v1"\nkind = "${N}"\n',
            " kind: must be one of 'openai', 'anthropic', not 'many'",
        ),
        (
            'base_url = "http://h/v1"\ntimeout_seconds = "-5"\n',
            " timeout_seconds: must be a finite number greater than 0",
        ),
        (
            'base_url = "ftp://example"\n',
            " base_url: 'ftp://example' is not an http:// or https:// URL (provider `p`)",
        ),
        ('kind = "openai"\n', ": `base_url` is required (provider `p`)"),
    ],
)
async def test_bad_provider_values_are_reported_on_use(
    tmp_path: Path, table: str, problem: str
) -> None:
    config = write_config(tmp_path, "[providers.p]\n" + table)
    r = await run(fast(config), llm_agent("m", provider="p"), env={"N": "many"})
    assert r == ExecResult(
        status="failed",
        error=f"agent `writer`: {tmp_path / 'symbi.toml'}: [providers.p]{problem}",
    )


async def test_provider_tables_of_a_hand_made_config_are_checked_on_use() -> None:
    config = Config(providers={"p": {"base_url": "http://h/v1", "modles": ["m"]}})
    r = await run(fast(config), llm_agent("m", provider="p"), env={})
    assert r == ExecResult(
        status="failed",
        error="agent `writer`: symbi.toml: [providers.p]: unknown key `modles` (did you mean "
        "`models`?)",
    )


async def test_agent_without_model() -> None:
    r = await run(fast(), AgentDef(name="nomodel", executor="llm"))
    assert r == ExecResult(
        status="failed", error="agent `nomodel` uses executor `llm` but has no `model`"
    )


async def test_executor_for_and_run_agent_take_the_config(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", None, reply="via run_agent")
    config = write_config(
        tmp_path, f'[providers.box]\nbase_url = "{fake.url}/v1"\nmodels = ["box-*"]\n'
    )
    agent = llm_agent("box-1")
    ex = executor_for(agent, config)
    assert isinstance(ex, LlmExecutor) and ex.config is config
    r = await run_agent(agent, "hello", config=config, env={})
    assert (r.status, r.output) == ("succeeded", "via run_agent")
    assert fake.seen[0].body["messages"] == [{"role": "user", "content": "hello"}]
    # without a config only the built-in providers exist: box-1 would go to OpenAI, keyless
    r = await run_agent(agent, "hello", env={})
    assert (
        r.error
        == "agent `writer`: environment variable `OPENAI_API_KEY` is not set (provider `openai`)"
    )


# ---------------------------------------------------------------------------------- units


NOW = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after": "-5"}, 0.0),
        ({"retry-after": "Mon, 05 Jan 2026 12:00:07 GMT"}, 7.0),
        ({"retry-after": "Mon, 05 Jan 2026 11:59:00 GMT"}, 0.0),  # already past
        ({"retry-after-ms": "150", "retry-after": "9"}, 0.15),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, NOW) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"error": {"message": "model \\"x\\" not found", "type": "api_error"}}',
            'api_error: model "x" not found',
        ),
        (
            b'{"object": "error", "message": "max_tokens too large", "type": "BadRequestError", "code": 400}',
            "BadRequestError: max_tokens too large",
        ),
        (b'{"error": "model not loaded"}', "model not loaded"),
        (b'{"detail": "Not Found"}', "Not Found"),
        (b"", "(empty body)"),
        (b"x" * 600, "x" * 500 + "…"),
    ],
)
def test_error_detail_of_other_servers(body: bytes, expected: str) -> None:
    assert error_detail(body) == expected


def test_reply_summary_ignores_non_object_json() -> None:
    assert reply_summary('["summary"]') is None
    assert reply_summary('{"summary": 4}') == "4"
    assert reply_summary('{"summary": ""}') is None


async def test_redirects_are_not_followed(start: Start, tmp_path: Path) -> None:
    fake = await start("openai", OPENAI_KEY)
    elsewhere = await start("openai", None)

    async def redirect(request: web.Request, seen: Seen) -> web.StreamResponse:
        return web.Response(
            status=307, headers={"Location": elsewhere.url + "/v1/chat/completions"}
        )

    fake.script.append(redirect)
    r = await run(
        fast(openai_config(tmp_path, fake)), llm_agent("gpt-4o"), env={"OPENAI_API_KEY": OPENAI_KEY}
    )
    assert (r.status, r.error) == (
        "failed",
        "provider `openai` refused the request: HTTP 307: (empty body)",
    )
    assert elsewhere.seen == []  # the key never travelled to the Location


async def test_oversized_response_fails(
    start: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runtime.llm.MAX_RESPONSE_BYTES", 200)
    fake = await start("openai", OPENAI_KEY, reply="y" * 1000)
    r = await run(
        fast(openai_config(tmp_path, fake)), llm_agent("gpt-4o"), env={"OPENAI_API_KEY": OPENAI_KEY}
    )
    assert (r.status, r.error) == (
        "failed",
        "provider `openai` sent a response larger than 200 bytes",
    )
