"""The `http` executor against a local aiohttp server (SPEC §1.4, §5.4)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from compiler.ir import AgentDef
from runtime.executor import ExecRequest, ExecResult, HttpExecutor, executor_for, run_agent


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes


Reply = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Endpoint:
    """A local server: records each request and answers with ``reply``."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    reply: Reply | None = None
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                await request.read(),
            )
        )
        if self.reply is not None:
            return await self.reply(request)
        return web.Response(text="plain ok")


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    ep = Endpoint()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ep.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    ep.url = str(server.make_url("")).rstrip("/")
    yield ep
    await server.close()


def http_agent(url: str, **kw: Any) -> AgentDef:
    return AgentDef(name=kw.pop("name", "hook"), executor="http", url=url, **kw)


async def run(agent: AgentDef, input: str = "payload", **kw: Any) -> ExecResult:
    return await HttpExecutor().execute(ExecRequest(agent=agent, input=input, **kw))


async def test_post_sends_json_input_and_expanded_headers(endpoint: Endpoint) -> None:
    agent = http_agent(
        endpoint.url + "/hooks/${HOOK_ID}",
        headers=(("Authorization", "Bearer ${HOOK_TOKEN}"), ("X-Literal", "$${NOT_A_VAR}")),
    )
    r = await run(
        agent,
        "check disks",
        job_name="nightly",
        run_id="run-1",
        env={"HOOK_TOKEN": "t0k3n", "HOOK_ID": "42"},
    )
    assert r == ExecResult(status="succeeded", output="plain ok")
    [seen] = endpoint.seen
    assert (seen.method, seen.path, seen.query) == ("POST", "/hooks/42", {})
    assert seen.headers["authorization"] == "Bearer t0k3n"
    assert seen.headers["x-literal"] == "${NOT_A_VAR}"
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == {"input": "check disks", "job": "nightly", "run_id": "run-1"}


@pytest.mark.parametrize("method", ["PUT", "patch"])
async def test_put_and_patch_send_the_json_body(endpoint: Endpoint, method: str) -> None:
    r = await run(http_agent(endpoint.url + "/x", method=method), "in")
    assert r.status == "succeeded"
    [seen] = endpoint.seen
    assert seen.method == method.upper()
    assert json.loads(seen.body) == {"input": "in", "job": None, "run_id": None}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_bodyless_methods_pass_the_input_as_a_query_parameter(
    endpoint: Endpoint, method: str
) -> None:
    r = await run(http_agent(endpoint.url + "/status?verbose=1", method=method), "a b&c")
    assert r.status == "succeeded"
    [seen] = endpoint.seen
    assert (seen.method, seen.body) == (method, b"")
    assert seen.query == {"verbose": "1", "input": "a b&c"}


async def test_get_with_empty_input_sends_no_query(endpoint: Endpoint) -> None:
    await run(http_agent(endpoint.url + "/status", method="GET"), "")
    assert endpoint.seen[0].query == {}


@pytest.mark.parametrize(
    ("body", "content_type", "output", "summary"),
    [
        ('{"output": "done", "summary": "1 item"}', "application/json", "done", "1 item"),
        (
            '{"summary": "only a summary"}',
            "application/json",
            '{"summary": "only a summary"}',
            "only a summary",
        ),
        ('{"output": {"n": 2}}', "application/json", '{"n": 2}', None),
        ('{"status": "ok"}', "application/json", '{"status": "ok"}', None),
        ("[1, 2]", "application/json", "[1, 2]", None),
        ("{not json", "text/plain", "{not json", None),
        ("héllo", "text/plain", "héllo", None),
    ],
)
async def test_output_from_the_response_body(
    endpoint: Endpoint, body: str, content_type: str, output: str, summary: str | None
) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(text=body, content_type=content_type)

    endpoint.reply = reply
    r = await run(http_agent(endpoint.url + "/"))
    assert (r.status, r.output, r.summary, r.error) == ("succeeded", output, summary, None)


async def test_non_2xx_fails_with_status_and_body_head(endpoint: Endpoint) -> None:
    body = "upstream unavailable: " + "z" * 800

    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text=body)

    endpoint.reply = reply
    r = await run(http_agent(endpoint.url + "/"))
    assert r.status == "failed"
    assert r.error == "HTTP 503: " + body[:500]
    assert r.output == body  # the whole body is kept as the run's output


async def test_non_2xx_with_empty_body_names_the_reason(endpoint: Endpoint) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(status=404)

    endpoint.reply = reply
    r = await run(http_agent(endpoint.url + "/gone"))
    assert (r.status, r.error) == ("failed", "HTTP 404 Not Found")


async def test_timeout_is_timed_out_and_drops_the_request(endpoint: Endpoint) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:  # aiohttp cancels the handler when the client hangs up
            endpoint.disconnected.set()
            raise
        return web.Response(text="too late")

    endpoint.reply = reply
    t0 = time.monotonic()
    r = await run(http_agent(endpoint.url + "/slow"), timeout_seconds=0.2)
    assert time.monotonic() - t0 < 2.0
    assert r == ExecResult(status="timed_out", error=f"timed out after 0.2s ({endpoint.url}/slow)")
    await asyncio.wait_for(endpoint.disconnected.wait(), 2.0)


async def test_agent_timeout_and_default_timeout_apply(endpoint: Endpoint) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(text="too late")

    endpoint.reply = reply
    r = await run(http_agent(endpoint.url + "/", timeout_seconds=0.1))
    assert (r.status, r.error) == ("timed_out", f"timed out after 0.1s ({endpoint.url}/)")
    ex = HttpExecutor(default_timeout_seconds=0.15)
    r = await ex.execute(ExecRequest(agent=http_agent(endpoint.url + "/"), input=""))
    assert (r.status, r.error) == ("timed_out", f"timed out after 0.15s ({endpoint.url}/)")


async def test_cancellation_drops_the_request(endpoint: Endpoint) -> None:
    started = asyncio.Event()

    async def reply(request: web.Request) -> web.StreamResponse:
        started.set()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            endpoint.disconnected.set()
            raise
        return web.Response(text="too late")

    endpoint.reply = reply
    task = asyncio.create_task(run(http_agent(endpoint.url + "/")))
    await asyncio.wait_for(started.wait(), 2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(endpoint.disconnected.wait(), 2.0)


async def test_missing_header_variable_fails_before_sending(endpoint: Endpoint) -> None:
    agent = http_agent(endpoint.url + "/", headers=(("Authorization", "Bearer ${HOOK_TOKEN}"),))
    r = await run(agent, env={})
    assert r == ExecResult(
        status="failed",
        error="environment variable `HOOK_TOKEN` is not set (needed by agent `hook` header "
        "`Authorization`)",
    )
    assert endpoint.seen == []


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("${BASE}/x", "environment variable `BASE` is not set (needed by agent `hook` url)"),
        (
            "example.com/hook",
            "agent `hook` url 'example.com/hook' is not an http:// or https:// URL",
        ),
        (None, "agent `hook` uses executor `http` but has no `url`"),
    ],
)
async def test_unusable_urls(url: str | None, error: str) -> None:
    agent = AgentDef(name="hook", executor="http", url=url)
    assert await run(agent, env={}) == ExecResult(status="failed", error=error)


async def test_connection_refused() -> None:
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/hook"))
    await server.close()
    r = await run(http_agent(url))
    assert r.status == "failed" and r.error is not None
    assert r.error.startswith(f"cannot reach {url}: ClientConnector")


async def test_large_body_is_capped(endpoint: Endpoint) -> None:
    async def reply(request: web.Request) -> web.StreamResponse:
        return web.Response(text="0123456789" * 100)

    endpoint.reply = reply
    ex = HttpExecutor(output_cap_bytes=25)
    r = await ex.execute(ExecRequest(agent=http_agent(endpoint.url + "/"), input=""))
    assert r.status == "succeeded"
    assert r.output == (
        "0123456789012345678901234\n[symbi: output truncated: kept the first 25 of 1000 bytes]"
    )


async def test_executor_for_and_run_agent(endpoint: Endpoint) -> None:
    agent = http_agent(endpoint.url + "/")
    assert isinstance(executor_for(agent), HttpExecutor)
    assert executor_for(agent) is executor_for(http_agent("http://127.0.0.1:9/"))
    r = await run_agent(agent, "x", job_name="j")
    assert (r.status, r.output) == ("succeeded", "plain ok")
    assert json.loads(endpoint.seen[0].body)["job"] == "j"
