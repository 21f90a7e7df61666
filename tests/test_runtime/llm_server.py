"""Local servers for end-to-end tests (no tests here): a scripted LLM server on 127.0.0.1.

It speaks both wire formats the ``llm`` executor uses — OpenAI chat completions
(``POST /v1/chat/completions``) and the Anthropic Messages API (``POST /v1/messages``) — checks
the parts of a request the real APIs require (model, messages, Anthropic's ``max_tokens`` and
``anthropic-version``, the key when one is set), and answers with the next scripted reply and
its token usage. It runs on its own event loop in a thread, so it serves requests from the
test's loop (a Scheduler) and from code that runs ``asyncio.run`` itself (``symbi`` through
click's CliRunner) alike.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


class ThreadedServer:
    """Serves an aiohttp ``app`` on 127.0.0.1 from its own loop in a thread (``with``)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        self._loop = loop
        ready = threading.Event()
        runner = web.AppRunner(self.app)

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="test-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the test server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass(frozen=True)
class Reply:
    """One scripted answer and the token counts the server reports for it."""

    text: str
    prompt_tokens: int = 11
    completion_tokens: int = 7


@dataclass
class LlmServer:
    """``with LlmServer([...]) as srv:`` serves ``srv.url``; ``srv.requests`` are the bodies
    received (with ``path`` and lower-cased ``headers`` added under ``_path``/``_headers``)."""

    replies: list[Reply]
    key: str | None = None  # required API key (Bearer / x-api-key); None: none needed
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _server: ThreadedServer = field(init=False)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (an Anthropic base URL; OpenAI's adds ``/v1``)."""
        return f"http://127.0.0.1:{self.port}"

    def _next(self) -> Reply:
        if not self.replies:
            raise AssertionError("the LLM server got more requests than scripted replies")
        return self.replies.pop(0)

    async def _openai(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({**body, "_path": request.path,
                              "_headers": {k.lower(): v for k, v in request.headers.items()}})
        if self.key is not None and request.headers.get("Authorization") != f"Bearer {self.key}":
            return web.json_response({"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error"}}, status=401)
        if not isinstance(body.get("model"), str) or not body.get("messages"):
            return web.json_response({"error": {"message": "model and messages are required",
                                                "type": "invalid_request_error"}}, status=400)
        r = self._next()
        return web.json_response({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1741569952,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": r.text}}],
            "usage": {"prompt_tokens": r.prompt_tokens,
                      "completion_tokens": r.completion_tokens,
                      "total_tokens": r.prompt_tokens + r.completion_tokens}})

    async def _anthropic(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({**body, "_path": request.path,
                              "_headers": {k.lower(): v for k, v in request.headers.items()}})
        err = None
        if self.key is not None and request.headers.get("x-api-key") != self.key:
            err = (401, "authentication_error", "invalid x-api-key")
        elif not request.headers.get("anthropic-version"):
            err = (400, "invalid_request_error", "anthropic-version: header is required")
        elif not all(k in body for k in ("model", "max_tokens", "messages")):
            err = (400, "invalid_request_error", "model, max_tokens and messages are required")
        elif any(m.get("role") not in ("user", "assistant") for m in body["messages"]):
            err = (400, "invalid_request_error", "messages: only user/assistant roles")
        if err is not None:
            return web.json_response({"type": "error",
                                      "error": {"type": err[1], "message": err[2]}},
                                     status=err[0])
        r = self._next()
        return web.json_response({
            "id": "msg_test", "type": "message", "role": "assistant", "model": body["model"],
            "content": [{"type": "text", "text": r.text}], "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": r.prompt_tokens, "output_tokens": r.completion_tokens}})

    def __enter__(self) -> LlmServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        self._server = ThreadedServer(app).__enter__()
        self.port = self._server.port
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.__exit__(*exc)

    def user_texts(self) -> list[str]:
        """The last user message of each request received."""
        out = []
        for body in self.requests:
            users = [m for m in body.get("messages", []) if m.get("role") == "user"]
            content = users[-1]["content"] if users else ""
            out.append(content if isinstance(content, str) else json.dumps(content))
        return out
