"""``email``: one message per run over SMTP.

Connection from ``[scheduler.delivery]``: ``smtp_host``/``smtp_port``, implicit TLS with
``smtp_ssl`` or STARTTLS with ``smtp_starttls`` (certificates verified against the system's
trust store), ``smtp_username``/``smtp_password`` login, ``email_from`` (else the user name,
else ``symbi@localhost``), ``smtp_timeout_seconds``. Recipients: the job's
``email_recipients`` (``${VAR}`` expanded).

Subject: the job's ``email_subject`` (itself a Jinja2 template) or ``email_subject.txt.j2``;
body: ``email_body.txt.j2``, plus an HTML alternative when an ``email_body.html.j2`` exists in
``templates_dir``. Connection problems and 4xx replies are retryable, 5xx replies are not.
smtplib runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import jinja2

from compiler.ir import JobDef
from runtime.delivery import ChannelContext, DeliveryOutcome, expand_setting
from runtime.store import RunRow
from stdlib.channels._support import (
    has_template,
    render,
    render_string,
    template_context,
    template_error,
)

SUBJECT_TEMPLATE = "email_subject.txt.j2"
TEXT_TEMPLATE = "email_body.txt.j2"
HTML_TEMPLATE = "email_body.html.j2"


def _reply_text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


class EmailChannel:
    """Sends run results by e-mail."""

    name = "email"

    def __init__(self, context: ChannelContext) -> None:
        self.context = context
        cfg = context.config
        self.timeout_seconds = cfg.smtp_timeout_seconds * 2 + 1.0  # connect + send
        self.max_attempts = 1 + cfg.webhook_retry_attempts

    @property
    def sender(self) -> str:
        """The envelope and ``From`` address."""
        cfg = self.context.config
        return cfg.email_from or cfg.smtp_username or "symbi@localhost"

    def message(self, job: JobDef, run: RunRow, output: str, recipients: list[str]
                ) -> EmailMessage:
        """The rendered message (``jinja2.TemplateError`` on a broken template)."""
        tdir = self.context.config.templates_dir
        ctx = template_context(job, run, output)
        if job.email_subject:
            subject = render_string(tdir, job.email_subject, ctx)
        else:
            subject = render(tdir, SUBJECT_TEMPLATE, ctx)
        subject = " ".join(subject.split())  # one line, whatever the template did
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(recipients)
        msg["Date"] = format_datetime(self.context.clock.now())
        msg["Message-ID"] = make_msgid(domain="symbi.invalid")
        msg["X-Symbi-Job"] = job.name
        msg["X-Symbi-Run"] = run.id
        msg.set_content(render(tdir, TEXT_TEMPLATE, ctx) + "\n")
        if has_template(tdir, HTML_TEMPLATE):
            msg.add_alternative(render(tdir, HTML_TEMPLATE, ctx), subtype="html")
        return msg

    async def route(self, channel: str, job: JobDef, run: RunRow, output: str
                    ) -> DeliveryOutcome:
        """Render and send the message."""
        cfg = self.context.config
        if not cfg.smtp_host:
            return DeliveryOutcome.failure(
                "no SMTP server configured: set [scheduler.delivery] smtp_host")
        try:
            recipients = [expand_setting(a, self.context.env, "email_recipients")
                          for a in job.email_recipients]
        except ValueError as e:
            return DeliveryOutcome.failure(str(e))
        if not recipients:
            return DeliveryOutcome.failure("the job has no `email_recipients`")
        try:
            msg = self.message(job, run, output, recipients)
        except jinja2.TemplateError as e:
            return DeliveryOutcome.failure(template_error("e-mail", e))
        return await asyncio.to_thread(self._send, msg, recipients)

    def _send(self, msg: EmailMessage, recipients: list[str]) -> DeliveryOutcome:
        cfg = self.context.config
        host, port, timeout = cfg.smtp_host or "", cfg.smtp_port, cfg.smtp_timeout_seconds
        try:
            smtp: smtplib.SMTP
            if cfg.smtp_ssl:
                smtp = smtplib.SMTP_SSL(host, port, timeout=timeout,
                                        context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(host, port, timeout=timeout)
            with smtp:
                if not cfg.smtp_ssl and cfg.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if cfg.smtp_username and cfg.smtp_password is not None:
                    smtp.login(cfg.smtp_username, cfg.smtp_password.get_secret_value())
                refused = smtp.send_message(msg, from_addr=self.sender, to_addrs=recipients)
        except smtplib.SMTPRecipientsRefused as e:
            codes = [c for c, _ in e.recipients.values()]
            detail = "; ".join(f"{a}: {c} {_reply_text(m)}" for a, (c, m) in
                               e.recipients.items())
            return DeliveryOutcome.failure(
                f"SMTP server refused every recipient ({detail})",
                retryable=all(400 <= c < 500 for c in codes),
                status_code=codes[0] if codes else None)
        except smtplib.SMTPNotSupportedError as e:
            return DeliveryOutcome.failure(
                f"the SMTP server does not support what was asked ({e}); check smtp_starttls "
                "and smtp_ssl")
        except smtplib.SMTPResponseException as e:
            text = _reply_text(e.smtp_error)
            return DeliveryOutcome.failure(f"SMTP {e.smtp_code}: {text}",
                                           retryable=400 <= e.smtp_code < 500,
                                           status_code=e.smtp_code, response=text)
        except ssl.SSLError as e:
            return DeliveryOutcome.failure(f"TLS with the SMTP server failed: {e}")
        except (smtplib.SMTPException, OSError) as e:
            return DeliveryOutcome.failure(f"SMTP connection to {host}:{port} failed: {e}",
                                           retryable=True)
        accepted = len(recipients) - len(refused)
        note = f"accepted for {accepted} recipient(s)"
        if refused:
            note += "; refused: " + ", ".join(
                f"{a} ({c} {_reply_text(m)})" for a, (c, m) in refused.items())
        return DeliveryOutcome.success(250, note)
