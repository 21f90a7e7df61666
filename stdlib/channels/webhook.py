"""``webhook``: HTTP POST (or PUT/PATCH) of the run's JSON payload.

Headers: ``Content-Type: application/json``, the job's ``webhook_headers`` (``${VAR}``
expanded now, never stored expanded), ``Authorization`` from ``[scheduler.delivery]
webhook_auth_header`` / ``$SYMBI_WEBHOOK_AUTH_HEADER`` when the job sets none,
``Idempotency-Key`` (the delivery id: the same for every attempt of this run and channel),
``X-Symbi-Timestamp`` (Unix seconds of the attempt) and, with ``webhook_secret``,
``X-Symbi-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>``.

One attempt per call: 2xx is delivered; network errors, timeouts, 408, 429 and 5xx are
retryable (the worker waits ``Retry-After`` when given); other statuses fail for good.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from compiler.ir import JobDef
from runtime.delivery import (
    ChannelContext,
    DeliveryOutcome,
    delivery_id,
    expand_setting,
    run_payload,
)
from runtime.store import RunRow
from stdlib.channels._support import HttpReply, judge_http, send_http

METHODS = ("POST", "PUT", "PATCH")


def sign(secret: str, body: bytes) -> str:
    """The ``X-Symbi-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookChannel:
    """POSTs the payload to the job's ``webhook_url``."""

    name = "webhook"

    def __init__(self, context: ChannelContext) -> None:
        self.context = context
        cfg = context.config
        self.request_timeout = cfg.webhook_timeout_seconds
        self.timeout_seconds = cfg.webhook_timeout_seconds + 1.0  # the request's own comes first
        self.max_attempts = 1 + cfg.webhook_retry_attempts

    def request(self, channel: str, job: JobDef, run: RunRow, output: str
                ) -> tuple[str, str, bytes, dict[str, str]]:
        """(method, url, body, headers) of the attempt; ``ValueError`` for a missing setting
        or variable."""
        env = self.context.env
        if not job.webhook_url:
            raise ValueError("the job has no `webhook_url`")
        url = expand_setting(job.webhook_url, env, "webhook_url")
        method = (job.webhook_method or "POST").upper()
        if method not in METHODS:
            raise ValueError(f"`webhook_method` {method} is not one of {', '.join(METHODS)}")
        body = json.dumps(run_payload(job, run, output), ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        for key, value in job.webhook_headers:
            headers[key] = expand_setting(value, env, f"webhook_headers.{key}")
        auth = self.context.config.webhook_auth_header
        if auth is not None and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = auth.get_secret_value()
        headers["Idempotency-Key"] = delivery_id(run.id, channel)
        headers["X-Symbi-Timestamp"] = str(int(self.context.clock.now().timestamp()))
        if job.webhook_secret:
            secret = expand_setting(job.webhook_secret, env, "webhook_secret")
            headers["X-Symbi-Signature"] = sign(secret, body)
        return method, url, body, headers

    async def route(self, channel: str, job: JobDef, run: RunRow, output: str
                    ) -> DeliveryOutcome:
        """Send the request and judge the answer."""
        try:
            method, url, body, headers = self.request(channel, job, run, output)
        except ValueError as e:
            return DeliveryOutcome.failure(str(e))
        reply = await send_http(method, url, body, headers, self.request_timeout,
                                self.context.clock.now())
        if not isinstance(reply, HttpReply):
            return reply
        return judge_http(reply)
