"""The ``llm`` executor: chat completions over HTTP (SPEC §5.4, §6).

Two wire formats:

- ``openai``: OpenAI-compatible chat completions (OpenAI, Ollama, vLLM, llama.cpp, …):
  ``POST {base_url}/chat/completions`` with ``Authorization: Bearer <key>`` (omitted when the
  provider needs no key), body ``model``, ``messages``, ``temperature``, ``max_tokens``; the reply
  is ``choices[0].message.content``, usage ``usage.prompt_tokens``/``completion_tokens``.
- ``anthropic``: the Anthropic Messages API: ``POST {base_url}/v1/messages`` with ``x-api-key``
  and ``anthropic-version: 2023-06-01``; body ``model``, ``max_tokens`` (required; default
  :data:`DEFAULT_MAX_TOKENS`), a top-level ``system`` string and ``messages`` of user/assistant
  turns; the reply is the ``text`` blocks of ``content``, usage ``usage.input_tokens``/
  ``output_tokens``.

Which provider serves an agent (:func:`route`): the agent's ``provider`` key names one
explicitly; otherwise the first ``[providers.NAME]`` table whose ``models`` glob patterns match
the model (case-insensitively); otherwise ``claude-*`` goes to ``anthropic`` and every other
model to ``openai`` — unless that provider's table lists ``models`` that do not match, which is
an error (no silent fallback to a provider the config restricted). The names ``anthropic``
(``$ANTHROPIC_API_KEY``, base ``$ANTHROPIC_BASE_URL`` or https://api.anthropic.com), ``openai``
(``$OPENAI_API_KEY``, base ``$OPENAI_BASE_URL`` or https://api.openai.com/v1) and ``ollama``
(http://127.0.0.1:11434/v1, no key) are built in (:data:`BUILTIN_PROVIDERS`); a table of the
same name overrides their keys one by one.

Provider table keys (``[providers.NAME]`` in ``symbi.toml``, ``${VAR}`` expanded on use):
``kind`` (``"openai"`` | ``"anthropic"``, default ``"openai"``), ``base_url``, ``api_key_env``
(the *name* of the variable holding the key; ``""``, or absent outside the built-ins: no key
needed, as for Ollama), ``api_key``
(the key itself, normally ``"${VAR}"``), ``models`` (list of globs), ``timeout_seconds`` (per
HTTP request, default 300), ``max_retries`` (default 2), ``headers`` (extra request headers).

Requests that fail with 408/409/429/5xx, a network error or the per-request timeout are retried
(``max_retries`` times) with exponential backoff, or after the server's ``Retry-After``
(``retry-after-ms``, seconds or an HTTP date; capped). The run's own timeout (agent ``timeout``,
policy ``max_runtime``) bounds the whole run including retries; it and cancellation abort the
HTTP request in flight (the connection is closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import aiohttp

from compiler.diagnostics import did_you_mean
from runtime.clock import Clock, SystemClock
from runtime.config import PROVIDER_KINDS, Config, ConfigError, check_provider_table
from runtime.executor import (
    STATUS_FAILED,
    STATUS_SUCCEEDED,
    STATUS_TIMED_OUT,
    AgentContext,
    ExecRequest,
    ExecResult,
    _effective_timeout,
    _failed,
    _fmt_seconds,
)
from runtime.retryafter import retry_after_seconds

KIND_OPENAI = "openai"
KIND_ANTHROPIC = "anthropic"
KINDS = PROVIDER_KINDS
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024  # Anthropic requires max_tokens; used when the agent sets none
DEFAULT_TIMEOUT_SECONDS = 300.0  # per HTTP request
DEFAULT_MAX_RETRIES = 2
DEFAULT_USER_MESSAGE = "Run your scheduled task."
SUMMARY_NOTE = "Summary of the previous run: "
ERROR_BODY_CHARS = 500  # how much of an unparseable error body an error message carries
MAX_RESPONSE_BYTES = 32 << 20  # a completion is far smaller; more is a broken server
RETRYABLE_STATUSES = frozenset({408, 409, 429})  # and every 5xx

# Built-in providers; a [providers.NAME] table with the same name overrides them key by key.
# ``base_url_env``: a variable that, when set, replaces the default base URL (the SDKs' own).
BUILTIN_PROVIDERS: Mapping[str, Mapping[str, Any]] = {
    "anthropic": {
        "kind": KIND_ANTHROPIC,
        "base_url": "https://api.anthropic.com",
        "base_url_env": "ANTHROPIC_BASE_URL",
        "api_key_env": "ANTHROPIC_API_KEY",
        "models": ["claude-*"],
    },
    "openai": {
        "kind": KIND_OPENAI,
        "base_url": "https://api.openai.com/v1",
        "base_url_env": "OPENAI_BASE_URL",
        "api_key_env": "OPENAI_API_KEY",
    },
    "ollama": {"kind": KIND_OPENAI, "base_url": "http://127.0.0.1:11434/v1"},
}


class ProviderError(Exception):
    """The agent's provider cannot be determined or configured; ``str()`` says why."""


@dataclass(frozen=True)
class Provider:
    """A resolved provider: everything needed to send one request."""

    name: str
    kind: str  # 'openai' | 'anthropic'
    base_url: str
    api_key: str | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    max_retries: int = DEFAULT_MAX_RETRIES
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def endpoint(self) -> str:
        """The URL requests are POSTed to."""
        base = self.base_url.rstrip("/")
        if self.kind == KIND_ANTHROPIC:
            # the documented base is the host; tolerate a base_url written with /v1
            return (base if base.endswith("/v1") else base + "/v1") + "/messages"
        return base + "/chat/completions"


# ------------------------------------------------------------------------------- routing


def _where(config: Config | None, name: str) -> str:
    source = config.source if config is not None and config.source is not None else "symbi.toml"
    return f"{source}: [providers.{name}]"


def _models_match(patterns: Any, model: str) -> bool:
    if not isinstance(patterns, list):
        return False
    lowered = model.lower()
    return any(isinstance(p, str) and fnmatchcase(lowered, p.lower()) for p in patterns)


def route(model: str | None, explicit: str | None, config: Config | None) -> str:
    """The name of the provider that serves ``model`` (``explicit``: the agent's ``provider``).
    Raises :class:`ProviderError` for an unknown provider name or a model no provider serves."""
    configured = config.providers if config is not None else {}
    known = sorted(set(configured) | set(BUILTIN_PROVIDERS))
    if explicit:
        if explicit in configured or explicit in BUILTIN_PROVIDERS:
            return explicit
        guess = did_you_mean(explicit, known)
        hint = f"did you mean `{guess}`? " if guess else ""
        raise ProviderError(
            f"unknown provider `{explicit}`: {hint}known providers: {', '.join(known)} "
            f"(configure it as a [providers.{explicit}] table in symbi.toml)"
        )
    if not model:
        raise ProviderError("no `model` to choose a provider by")
    for name, table in configured.items():
        if _models_match(table.get("models"), model):
            return name
    default = "anthropic" if fnmatchcase(model.lower(), "claude-*") else "openai"
    chosen = configured.get(default)
    if chosen is not None and "models" in chosen and not _models_match(chosen["models"], model):
        patterns = [
            f"{n}: {', '.join(map(str, t['models']))}"
            for n, t in configured.items()
            if isinstance(t.get("models"), list)
        ]
        raise ProviderError(
            f"no provider serves model `{model}` (patterns: {'; '.join(patterns)}); add it to "
            "a provider's `models` or name a `provider` in the agent"
        )
    return default


def resolve_provider(name: str, config: Config | None, env: Mapping[str, str]) -> Provider:
    """Build provider ``name`` from the built-in defaults and its ``[providers.NAME]`` table
    (``${VAR}`` expanded from ``env``), reading the API key from the environment.
    Raises :class:`ProviderError` (a missing key, a bad table, a missing variable)."""
    table: dict[str, Any] = {}
    if config is not None and name in config.providers:
        problems = check_provider_table(name, config.providers[name], _where(config, name))
        if problems:
            raise ProviderError("; ".join(problems))
        try:
            table = config.provider(name, env)
        except ConfigError as exc:
            raise ProviderError(str(exc)) from None
    builtin = BUILTIN_PROVIDERS.get(name, {})
    merged = {**builtin, **table}
    where = _where(config, name)

    kind = merged.get("kind", KIND_OPENAI)
    if kind not in KINDS:
        kinds = ", ".join(repr(k) for k in KINDS)
        raise ProviderError(f"{where} kind: must be one of {kinds}, not {kind!r}")
    base_url = merged.get("base_url")
    if "base_url" not in table and builtin.get("base_url_env"):
        base_url = env.get(builtin["base_url_env"]) or base_url
    if not base_url:
        raise ProviderError(f"{where}: `base_url` is required (provider `{name}`)")
    if not re.match(r"https?://", base_url):
        raise ProviderError(
            f"{where} base_url: {base_url!r} is not an http:// or https:// URL (provider `{name}`)"
        )

    api_key: str | None = merged.get("api_key") or None
    if api_key is None:
        key_env = merged.get("api_key_env") or None
        if key_env is not None:
            api_key = env.get(key_env) or None
            if api_key is None:
                raise ProviderError(
                    f"environment variable `{key_env}` is not set (provider `{name}`)"
                )
    # numbers may arrive as text from "${VAR}" references
    raw_timeout = merged.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    raw_retries = merged.get("max_retries", DEFAULT_MAX_RETRIES)
    try:
        timeout = float(raw_timeout)
    except (TypeError, ValueError):
        raise ProviderError(
            f"{where} timeout_seconds: expected a number, not {raw_timeout!r}"
        ) from None
    try:
        retries = int(raw_retries)
    except (TypeError, ValueError):
        raise ProviderError(
            f"{where} max_retries: expected an integer, not {raw_retries!r}"
        ) from None
    if not 0 < timeout < math.inf:  # also rejects nan
        raise ProviderError(f"{where} timeout_seconds: must be a finite number greater than 0")
    if retries < 0:
        raise ProviderError(f"{where} max_retries: must be at least 0")
    headers = tuple((str(k), str(v)) for k, v in (merged.get("headers") or {}).items())
    return Provider(name, kind, base_url, api_key, timeout, retries, headers)


# ------------------------------------------------------------------------------ messages


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def conversation(req: ExecRequest) -> tuple[list[str], list[dict[str, str]]]:
    """The run as (system texts, turns): the agent's system prompt and the previous run's
    summary are system texts; the context's messages then the run input (or
    :data:`DEFAULT_USER_MESSAGE` when empty) are the turns. Context messages with role
    ``system`` stay system texts; roles other than user/assistant count as user."""
    ctx = req.context or AgentContext()
    system: list[str] = []
    if req.agent.system_prompt:
        system.append(req.agent.system_prompt)
    if ctx.summary_in:
        system.append(SUMMARY_NOTE + ctx.summary_in)
    turns: list[dict[str, str]] = []
    for message in ctx.messages:
        role = str(message.get("role", "user"))
        content = _text(message.get("content", ""))
        if role == "system":
            system.append(content)
        else:
            turns.append({"role": role if role == "assistant" else "user", "content": content})
    turns.append(
        {"role": "user", "content": req.input if req.input.strip() else DEFAULT_USER_MESSAGE}
    )
    return system, turns


def openai_body(req: ExecRequest) -> dict[str, Any]:
    """The chat-completions request body."""
    system, turns = conversation(req)
    messages = [{"role": "system", "content": text} for text in system] + turns
    body: dict[str, Any] = {"model": req.agent.model, "messages": messages}
    if req.agent.temperature is not None:
        body["temperature"] = req.agent.temperature
    if req.agent.max_tokens is not None:
        body["max_tokens"] = req.agent.max_tokens
    return body


def anthropic_body(req: ExecRequest) -> dict[str, Any]:
    """The Messages API request body: ``system`` is top level; turns alternate, starting with
    a user turn (consecutive turns of one role are joined, as the API itself would)."""
    system, turns = conversation(req)
    messages: list[dict[str, str]] = []
    for turn in turns:
        if messages and messages[-1]["role"] == turn["role"]:
            messages[-1] = {
                "role": turn["role"],
                "content": messages[-1]["content"] + "\n\n" + turn["content"],
            }
        else:
            messages.append(dict(turn))
    if messages[0]["role"] != "user":
        messages.insert(0, {"role": "user", "content": "(conversation so far)"})
    body: dict[str, Any] = {
        "model": req.agent.model,
        "max_tokens": req.agent.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if req.agent.temperature is not None:
        body["temperature"] = req.agent.temperature
    return body


def request_headers(provider: Provider) -> dict[str, str]:
    """Authentication and protocol headers, then the provider's extra ``headers``."""
    headers = {"content-type": "application/json", "accept": "application/json"}
    if provider.kind == KIND_ANTHROPIC:
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if provider.api_key:
            headers["x-api-key"] = provider.api_key
    elif provider.api_key:
        headers["authorization"] = f"Bearer {provider.api_key}"
    for name, value in provider.headers:  # the table's headers win, whatever their case
        for existing in [k for k in headers if k.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value
    return headers


# ----------------------------------------------------------------------------- responses


class BadResponse(Exception):
    """A 2xx response whose body is not what the wire format promises."""


@dataclass(frozen=True)
class Reply:
    """A parsed successful completion."""

    text: str
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None
    refusal: str | None = None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_openai(data: Any) -> Reply:
    """``choices[0].message.content`` and ``usage`` of a chat completion."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BadResponse("no choices[0].message in the response")
    choice: dict[str, Any] = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise BadResponse("no choices[0].message in the response")
    content = message.get("content")
    if isinstance(content, list):  # some servers return content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    usage = _dict(data.get("usage"))
    refusal = message.get("refusal")
    return Reply(
        text=content if isinstance(content, str) else "",
        model=_str(data.get("model")),
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        finish_reason=_str(choice.get("finish_reason")),
        refusal=refusal if isinstance(refusal, str) and refusal else None,
    )


def parse_anthropic(data: Any) -> Reply:
    """The ``text`` blocks of ``content``, ``usage`` and ``stop_reason`` of a message."""
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise BadResponse("no `content` list in the response")
    text = "".join(
        b.get("text", "")
        for b in data["content"]
        if isinstance(b, dict) and b.get("type") == "text"
    )
    usage = _dict(data.get("usage"))
    prompt = _int(usage.get("input_tokens"))
    if prompt is not None:  # cached prompt tokens are reported apart; they are prompt too
        prompt += sum(
            (_int(usage.get(k)) or 0)
            for k in ("cache_creation_input_tokens", "cache_read_input_tokens")
        )
    stop = data.get("stop_reason") if isinstance(data.get("stop_reason"), str) else None
    return Reply(
        text=text,
        model=_str(data.get("model")),
        prompt_tokens=prompt,
        completion_tokens=_int(usage.get("output_tokens")),
        finish_reason=stop,
        refusal="the model declined to answer (stop_reason `refusal`)"
        if stop == "refusal" and not text
        else None,
    )


def error_detail(body: bytes) -> str:
    """The provider's error message from an error body: Anthropic
    ``{"type":"error","error":{"type","message"}}``, OpenAI ``{"error":{"message","type",
    "code"}}``, vLLM ``{"object":"error","message"}``, ``{"error":"…"}``, ``{"detail":…}``;
    else the first characters of the body."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            label = err.get("code") or err.get("type")
            message = str(err["message"])
            return f"{label}: {message}" if isinstance(label, str) and label else message
        if isinstance(err, str) and err:
            return err
        if data.get("message"):
            label = data.get("type") or data.get("code")
            message = str(data["message"])
            return f"{label}: {message}" if isinstance(label, str) and label else message
        if data.get("detail"):
            return _text(data["detail"])[:ERROR_BODY_CHARS]
    if len(text) > ERROR_BODY_CHARS:
        return text[:ERROR_BODY_CHARS] + "…"
    return text or "(empty body)"


def parse_retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, else ``Retry-After`` as seconds
    or an HTTP date (relative to ``now``); None when absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            return max(0.0, float(ms) / 1000)
    return retry_after_seconds(headers.get("retry-after"), now)


def reply_summary(text: str) -> str | None:
    """The ``summary`` field of a reply that is a JSON object (also inside a ```json fence)."""
    stripped = text.strip()
    fence = re.fullmatch(r"```[A-Za-z0-9_-]*\s*\n(.*?)\n?```", stripped, re.DOTALL)
    if fence:
        stripped = fence.group(1).strip()
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped)
    except ValueError:
        return None
    if isinstance(data, dict):
        summary = data.get("summary")
        if isinstance(summary, str) and summary:
            return summary
        if isinstance(summary, int | float) and not isinstance(summary, bool):
            return str(summary)
    return None


# ------------------------------------------------------------------------------ executor


@dataclass(frozen=True)
class _Attempt:
    """One HTTP exchange that did not succeed."""

    error: str
    retryable: bool
    retry_after: float | None = None
    timed_out: bool = False


class _TooLarge(Exception):
    pass


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, or :class:`_TooLarge` past ``limit`` bytes (a broken or hostile server must
    not fill memory)."""
    data = bytearray()
    async for chunk in resp.content.iter_any():
        data += chunk
        if len(data) > limit:
            raise _TooLarge
    return bytes(data)


def _give_up(outcome: _Attempt, suffix: str) -> ExecResult:
    status = STATUS_TIMED_OUT if outcome.timed_out else STATUS_FAILED
    return ExecResult(status=status, error=outcome.error + suffix)


class LlmExecutor:
    """Runs an ``llm`` agent against its provider; see the module docstring.

    ``config`` supplies the ``[providers.*]`` tables (None: built-in providers only). The
    backoff before retry ``n`` (1-based) is ``backoff_base_seconds * 2**(n-1)`` capped at
    ``backoff_max_seconds``, with up to 25% random jitter; a ``Retry-After`` wait is capped at
    ``retry_after_cap_seconds``.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        clock: Clock | None = None,
        backoff_base_seconds: float = 0.5,
        backoff_max_seconds: float = 8.0,
        retry_after_cap_seconds: float = 60.0,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.retry_after_cap_seconds = retry_after_cap_seconds

    def provider_for(self, req: ExecRequest) -> Provider:
        """The provider that serves ``req.agent`` (raises :class:`ProviderError`)."""
        env = os.environ if req.env is None else req.env
        name = route(req.agent.model, req.agent.provider, self.config)
        return resolve_provider(name, self.config, env)

    async def execute(self, req: ExecRequest) -> ExecResult:
        """Send the run to the provider; never raises except ``CancelledError``."""
        agent = req.agent
        if not agent.model:
            return _failed(f"agent `{agent.name}` uses executor `llm` but has no `model`")
        try:
            provider = self.provider_for(req)
        except ProviderError as exc:
            return _failed(f"agent `{agent.name}`: {exc}")
        body = anthropic_body(req) if provider.kind == KIND_ANTHROPIC else openai_body(req)
        timeout = _effective_timeout(req)
        if timeout is None:
            return await self._exchange(provider, body, None)
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await self._exchange(
                    provider, body, asyncio.get_running_loop().time() + timeout
                )
        except TimeoutError:
            if not deadline.expired():  # cannot happen: _exchange turns its timeouts into results
                raise
            return ExecResult(
                status=STATUS_TIMED_OUT,
                error=f"timed out after {_fmt_seconds(timeout)} waiting for provider "
                f"`{provider.name}`",
            )

    async def _exchange(
        self, provider: Provider, body: dict[str, Any], deadline: float | None
    ) -> ExecResult:
        loop = asyncio.get_running_loop()
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        headers = request_headers(provider)
        client_timeout = aiohttp.ClientTimeout(total=provider.timeout_seconds)
        attempts = 0
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            while True:
                attempts += 1
                outcome = await self._attempt(session, provider, data, headers, attempts)
                if isinstance(outcome, ExecResult):
                    return outcome
                tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
                if not outcome.retryable or attempts > provider.max_retries:
                    suffix = f" (after {tries})" if attempts > 1 else ""
                    return _give_up(outcome, suffix)
                if outcome.retry_after is not None:
                    delay = min(outcome.retry_after, self.retry_after_cap_seconds)
                else:
                    delay = min(
                        self.backoff_max_seconds, self.backoff_base_seconds * 2 ** (attempts - 1)
                    ) * (1 - 0.25 * random.random())
                if deadline is not None and loop.time() + delay >= deadline:
                    # waiting would outlast the run: report the provider's answer instead
                    return _give_up(
                        outcome,
                        f" (after {tries}; not retried: the wait of {delay:.3g}s exceeds the "
                        "run's remaining time)",
                    )
                await self.clock.sleep_until(self.clock.now() + timedelta(seconds=delay))

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        provider: Provider,
        data: bytes,
        headers: dict[str, str],
        attempt: int,
    ) -> ExecResult | _Attempt:
        name = provider.name
        try:
            # no redirects: they would carry the API key to wherever the Location points
            async with session.post(
                provider.endpoint, data=data, headers=headers, allow_redirects=False
            ) as resp:
                raw = await _read_limited(resp, MAX_RESPONSE_BYTES)
                status = resp.status
                resp_headers = {k.lower(): v for k, v in resp.headers.items()}
        except TimeoutError:
            return _Attempt(
                f"provider `{name}` did not answer within "
                f"{_fmt_seconds(provider.timeout_seconds)} ({provider.endpoint})",
                retryable=True,
                timed_out=True,
            )
        except aiohttp.InvalidURL:
            return _Attempt(f"provider `{name}` has an invalid URL {provider.endpoint!r}", False)
        except _TooLarge:
            return _Attempt(
                f"provider `{name}` sent a response larger than {MAX_RESPONSE_BYTES} bytes", False
            )
        except (aiohttp.ClientError, OSError) as exc:
            return _Attempt(
                f"cannot reach provider `{name}` at {provider.endpoint}: "
                f"{type(exc).__name__}: {exc}",
                retryable=True,
            )
        request_id = resp_headers.get("request-id") or resp_headers.get("x-request-id")
        rid = f" (request id {request_id})" if request_id else ""
        if not 200 <= status < 300:
            should = resp_headers.get("x-should-retry")
            retryable = status in RETRYABLE_STATUSES or status >= 500
            if should in ("true", "false"):
                retryable = should == "true"
            verb = "refused the request" if status < 500 else "failed"
            return _Attempt(
                f"provider `{name}` {verb}: HTTP {status}: {error_detail(raw)}{rid}",
                retryable=retryable,
                retry_after=parse_retry_after(resp_headers, self.clock.now()),
            )
        try:
            payload = json.loads(raw)
            reply = (parse_anthropic if provider.kind == KIND_ANTHROPIC else parse_openai)(payload)
        except (ValueError, BadResponse) as exc:
            reason = str(exc) if isinstance(exc, BadResponse) else "the body is not JSON"
            snippet = raw[:200].decode("utf-8", errors="replace")
            return _Attempt(
                f"provider `{name}` sent an unexpected response ({reason}): {snippet}{rid}",
                retryable=False,
            )
        usage = {
            "provider": name,
            "model": reply.model,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": (reply.prompt_tokens or 0) + (reply.completion_tokens or 0)
            if reply.prompt_tokens is not None or reply.completion_tokens is not None
            else None,
            "finish_reason": reply.finish_reason,
            "attempts": attempt,
        }
        if reply.refusal:
            return ExecResult(
                status=STATUS_FAILED,
                error=f"provider `{name}`: the model refused: {reply.refusal}{rid}",
                usage=usage,
            )
        return ExecResult(
            status=STATUS_SUCCEEDED,
            output=reply.text,
            summary=reply_summary(reply.text),
            usage=usage,
        )


__all__ = [
    "ANTHROPIC_VERSION",
    "BUILTIN_PROVIDERS",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_USER_MESSAGE",
    "LlmExecutor",
    "Provider",
    "ProviderError",
    "anthropic_body",
    "conversation",
    "error_detail",
    "openai_body",
    "parse_anthropic",
    "parse_openai",
    "parse_retry_after",
    "reply_summary",
    "resolve_provider",
    "route",
]
