"""Helpers shared by the built-in channels: Jinja2 templates and one HTTP request."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jinja2
from jinja2.sandbox import SandboxedEnvironment

from compiler.ir import JobDef
from runtime.delivery import (
    DeliveryOutcome,
    excerpt,
    format_duration,
    parse_retry_after,
    run_payload,
)
from runtime.store import RunRow

#: The templates shipped with symbi (``stdlib/templates``).
BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
#: At most this much of a response body is read.
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "symbi-delivery/0.1"


# ------------------------------------------------------------------------------ templates


@functools.lru_cache(maxsize=8)
def template_env(user_dir: Path | None) -> jinja2.Environment:
    """A sandboxed Jinja2 environment that finds a template in ``user_dir`` first (the
    ``[scheduler.delivery] templates_dir`` override), then among the built-in ones. Undefined
    variables are errors, so a typo in a template is reported instead of rendering blank."""
    dirs = [str(user_dir)] if user_dir is not None else []
    dirs.append(str(BUILTIN_TEMPLATES))
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(dirs),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"),
                                            default_for_string=False),
        keep_trailing_newline=False,
    )


def template_context(job: JobDef, run: RunRow, output: str) -> dict[str, Any]:
    """Variables of every delivery template: ``job`` (id, name, agent, description), ``run``
    (the webhook payload's run object), ``output``, ``summary``, ``duration`` (``"1.23s"``)."""
    payload = run_payload(job, run, output)
    payload["job"]["description"] = job.description
    return {**payload, "duration": format_duration(run.duration_ms)}


def render(user_dir: Path | None, name: str, context: dict[str, Any]) -> str:
    """Render the template file ``name``; raises ``jinja2.TemplateError``."""
    return template_env(user_dir).get_template(name).render(context)


def render_string(user_dir: Path | None, source: str, context: dict[str, Any]) -> str:
    """Render a template given as text (e.g. a job's ``email_subject``)."""
    return template_env(user_dir).from_string(source).render(context)


def has_template(user_dir: Path | None, name: str) -> bool:
    """Whether the template ``name`` exists (user directory or built-in)."""
    try:
        template_env(user_dir).get_template(name)
    except jinja2.TemplateNotFound:
        return False
    return True


def template_error(what: str, e: jinja2.TemplateError) -> str:
    """A readable message for a template problem."""
    where = ""
    if isinstance(e, jinja2.TemplateSyntaxError) and e.lineno:
        where = f" (line {e.lineno})"
    return f"{what} template{where}: {e.message or e}"


# ------------------------------------------------------------------------------ HTTP


@dataclass(frozen=True, slots=True)
class HttpReply:
    """What a peer answered."""

    status: int
    text: str
    retry_after: float | None


async def send_http(method: str, url: str, body: bytes, headers: dict[str, str],
                    timeout: float, now: Any) -> HttpReply | DeliveryOutcome:
    """One request; transport problems come back as a (retryable) failed outcome, an answer
    as an :class:`HttpReply` for the channel to judge. ``now`` is the clock's current time
    (for an HTTP-date ``Retry-After``)."""
    headers = {"User-Agent": USER_AGENT, **headers}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.request(method, url, data=body, headers=headers,
                                 allow_redirects=False) as resp:
                raw = await resp.content.read(MAX_RESPONSE_BYTES)
                return HttpReply(resp.status, raw.decode(resp.charset or "utf-8", "replace"),
                                 parse_retry_after(resp.headers.get("Retry-After"), now))
    except aiohttp.InvalidURL:
        return DeliveryOutcome.failure(f"invalid URL {url!r}")
    except TimeoutError:
        return DeliveryOutcome.failure(f"no response within {timeout:g}s", retryable=True)
    except aiohttp.ClientError as e:
        return DeliveryOutcome.failure(f"network error: {e or type(e).__name__}",
                                       retryable=True)
    except OSError as e:
        return DeliveryOutcome.failure(f"network error: {e}", retryable=True)


def judge_http(reply: HttpReply) -> DeliveryOutcome:
    """2xx: delivered; 408, 429 and 5xx: retryable (with the peer's ``Retry-After``); any
    other status: a permanent failure."""
    text = excerpt(reply.text)
    if 200 <= reply.status < 300:
        return DeliveryOutcome.success(reply.status, text)
    retryable = reply.status in (408, 429) or reply.status >= 500
    detail = f": {excerpt(reply.text.strip(), 200)}" if reply.text.strip() else ""
    return DeliveryOutcome.failure(f"HTTP {reply.status}{detail}", retryable=retryable,
                                   status_code=reply.status, response=text,
                                   retry_after=reply.retry_after if retryable else None)
