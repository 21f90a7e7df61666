"""``slack``: a message per run, through an incoming webhook or the Web API.

- With the job's ``slack_webhook_url``: POST ``{"text": …}``; Slack answers ``ok``.
- Otherwise ``chat.postMessage`` at ``[scheduler.delivery] slack_api_url`` with the token
  (``slack_api_token`` / ``$SYMBI_SLACK_TOKEN``) to the job's ``slack_channel`` or
  ``slack_default_channel``; an answer ``{"ok": false, "error": …}`` is a failure.

429 and 5xx are retried after ``Retry-After``. The text comes from the template
``slack_message.txt.j2`` (overridable in ``templates_dir``).
"""

from __future__ import annotations

import json

import jinja2

from compiler.ir import JobDef
from runtime.delivery import ChannelContext, DeliveryOutcome, excerpt, expand_setting
from runtime.store import RunRow
from stdlib.channels._support import (
    HttpReply,
    judge_http,
    render,
    send_http,
    template_context,
    template_error,
)

#: chat.postMessage errors worth another attempt.
RETRYABLE_API_ERRORS = frozenset({"ratelimited", "rate_limited", "internal_error",
                                  "fatal_error", "service_unavailable", "request_timeout"})


class SlackChannel:
    """Posts run results to Slack."""

    name = "slack"

    def __init__(self, context: ChannelContext) -> None:
        self.context = context
        cfg = context.config
        self.request_timeout = cfg.webhook_timeout_seconds
        self.timeout_seconds = cfg.webhook_timeout_seconds + 1.0
        self.max_attempts = 1 + cfg.webhook_retry_attempts

    def text(self, job: JobDef, run: RunRow, output: str) -> str:
        """The message text (``jinja2.TemplateError`` on a broken template)."""
        return render(self.context.config.templates_dir, "slack_message.txt.j2",
                      template_context(job, run, output))

    async def route(self, channel: str, job: JobDef, run: RunRow, output: str
                    ) -> DeliveryOutcome:
        """Post the message."""
        try:
            text = self.text(job, run, output)
        except jinja2.TemplateError as e:
            return DeliveryOutcome.failure(template_error("slack message", e))
        try:
            if job.slack_webhook_url:
                url = expand_setting(job.slack_webhook_url, self.context.env, "slack_webhook_url")
                return await self._incoming_webhook(url, job, text)
        except ValueError as e:
            return DeliveryOutcome.failure(str(e))
        return await self._web_api(job, text)

    async def _incoming_webhook(self, url: str, job: JobDef, text: str) -> DeliveryOutcome:
        doc: dict[str, str] = {"text": text}
        if job.slack_channel:
            doc["channel"] = job.slack_channel
        reply = await send_http("POST", url, json.dumps(doc).encode("utf-8"),
                                {"Content-Type": "application/json"}, self.request_timeout,
                                self.context.clock.now())
        if not isinstance(reply, HttpReply):
            return reply
        outcome = judge_http(reply)
        if outcome.ok and reply.text.strip() != "ok":
            return DeliveryOutcome.failure(
                f"Slack answered {excerpt(reply.text.strip(), 200)!r} instead of \"ok\"",
                status_code=reply.status, response=excerpt(reply.text))
        return outcome

    async def _web_api(self, job: JobDef, text: str) -> DeliveryOutcome:
        cfg = self.context.config
        if cfg.slack_api_token is None:
            return DeliveryOutcome.failure(
                "no Slack destination: set `slack_webhook_url` on the job, or a token "
                "([scheduler.delivery] slack_api_token or $SYMBI_SLACK_TOKEN)")
        target = job.slack_channel or cfg.slack_default_channel
        if not target:
            return DeliveryOutcome.failure(
                "no Slack channel: set `slack_channel` on the job or [scheduler.delivery] "
                "slack_default_channel")
        url = cfg.slack_api_url.rstrip("/") + "/chat.postMessage"
        headers = {"Authorization": f"Bearer {cfg.slack_api_token.get_secret_value()}",
                   "Content-Type": "application/json; charset=utf-8"}
        body = json.dumps({"channel": target, "text": text}).encode("utf-8")
        reply = await send_http("POST", url, body, headers, self.request_timeout,
                                self.context.clock.now())
        if not isinstance(reply, HttpReply):
            return reply
        outcome = judge_http(reply)
        if not outcome.ok:
            return outcome
        try:
            data = json.loads(reply.text)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return DeliveryOutcome.failure("Slack answered with something that is not JSON",
                                           status_code=reply.status,
                                           response=excerpt(reply.text))
        if data.get("ok") is True:
            return DeliveryOutcome.success(reply.status, excerpt(reply.text))
        error = str(data.get("error") or "unknown error")
        return DeliveryOutcome.failure(f"Slack API error: {error}",
                                       retryable=error in RETRYABLE_API_ERRORS,
                                       status_code=reply.status, response=excerpt(reply.text),
                                       retry_after=reply.retry_after)
