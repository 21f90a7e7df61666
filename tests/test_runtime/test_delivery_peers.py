"""Real local peers for the delivery tests (no tests here): an aiohttp HTTP server on
127.0.0.1 with scripted answers (webhooks, Slack) and an aiosmtpd SMTP server, plus helpers
that make finished runs in a real store. Imported by test_delivery*.py and
tests/test_stdlib/test_channels*.py."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from compiler.ir import JobDef
from runtime.clock import Clock
from runtime.config import Config, load_config
from runtime.delivery import ChannelContext
from runtime.store import RunRecord, RunRow, SqliteStore, WriteBatch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CUSTOM_SITE = FIXTURES / "custom_channel" / "site"
CLASH_SITE = FIXTURES / "custom_channel" / "clash_site"


# ------------------------------------------------------------------------------ HTTP


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0  # what the peer answered

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Answer:
    status: int = 200
    body: str = "ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # real seconds before answering (timeouts)


class HttpPeer:
    """Records every request; answers from a per-path script (first in, first out), then
    with the path's default answer."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.scripts: dict[str, list[Answer]] = {}
        self.defaults: dict[str, Answer] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    def script(self, path: str, *answers: Answer) -> None:
        self.scripts.setdefault(path, []).extend(answers)

    def default(self, path: str, answer: Answer) -> None:
        self.defaults[path] = answer

    def at(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        queue = self.scripts.get(request.path)
        answer = queue.pop(0) if queue else self.defaults.get(request.path, Answer())
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body,
                                      answer.status))
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return web.Response(status=answer.status, text=answer.body, headers=dict(answer.headers))

    async def start(self) -> HttpPeer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# ------------------------------------------------------------------------------ SMTP


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        msg = message_from_bytes(self.content, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


class Inbox:
    """aiosmtpd handler: keeps every message; ``replies`` are answered to DATA first (e.g.
    ``"451 4.3.0 try again later"``)."""

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self.replies: list[str] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.replies:
            return self.replies.pop(0)
        self.mails.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"

    def authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                     auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            user, pw = auth_data.login.decode(), auth_data.password.decode()
            self.logins.append((user, pw))
            if (user, pw) == ("mailer", "s3cret"):
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class SmtpPeer:
    """An aiosmtpd server on 127.0.0.1 (its own thread and loop)."""

    def __init__(self, *, tls_context: ssl.SSLContext | None = None, auth: bool = False
                 ) -> None:
        self.inbox = Inbox()
        self.port = free_port()
        kw: dict[str, Any] = {}
        if tls_context is not None:
            kw.update(tls_context=tls_context, require_starttls=True)
        if auth:
            kw.update(authenticator=self.inbox.authenticate, auth_required=True,
                      auth_require_tls=tls_context is not None)
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port,
                                     ready_timeout=5, **kw)

    def __enter__(self) -> SmtpPeer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1/localhost and its key (PEM files)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


# ------------------------------------------------------------------------------ runtime


def make_config(tmp_path: Path, **delivery: Any) -> Config:
    """A config with data_dir in ``tmp_path`` and ``[scheduler.delivery]`` overrides."""
    delivery.setdefault("smtp_starttls", False)
    return load_config(env={}, overrides={"data_dir": str(tmp_path / "data"),
                                          "scheduler.delivery": delivery})


def make_context(config: Config, clock: Clock, env: Mapping[str, str] | None = None,
                 stdout: Any = None) -> ChannelContext:
    return ChannelContext.from_config(config, clock=clock, env=env or {}, stdout=stdout)


def make_run(job: JobDef, *, status: str = "succeeded", output: str = "hello",
             run_id: str = "11111111-2222-4333-8444-555555555555",
             job_id: str = "job_0123456789ab", error: str | None = None,
             at: dt.datetime | None = None, attempt: int = 1, summary: str | None = None
             ) -> RunRow:
    """A finished run (not stored) for channel tests."""
    t = at or dt.datetime(2026, 3, 8, 7, 0, tzinfo=dt.UTC)
    return RunRow(id=run_id, job_id=job_id, job_name=job.name, scheduled_for=t,
                  trigger="schedule", status=status, attempt=attempt, retry_of=None,
                  owner=None, due_at=t, created_at=t, started_at=t,
                  finished_at=t + dt.timedelta(milliseconds=1234), duration_ms=1234,
                  lateness_ms=0, jitter_ms=0, start_delay_ms=0, input="", output=output,
                  summary=summary, error=error, stop_reason=None, exit_code=None)


def store_finished_run(store: SqliteStore, job_name: str, *, status: str = "succeeded",
                       output: str = "hello", finished_at: dt.datetime | None = None
                       ) -> RunRow:
    """Insert a finished run of the stored job ``job_name`` (through the store's own
    write paths, as the scheduler would)."""
    pending = store.request_manual_run(job_name, input="", actor="test")
    rec = RunRecord.from_row(pending)
    end = finished_at or store.clock.now()
    rec.status = status
    rec.started_at = end - dt.timedelta(seconds=1)
    rec.finished_at = end
    rec.duration_ms = 1000
    rec.output = output
    rec.error = None if status == "succeeded" else "exit status 1"
    store.write_batch(WriteBatch(run_updates=[rec]))
    row = store.get_run(pending.id)
    assert row is not None
    return row


async def settle(predicate: Any, timeout: float = 5.0) -> None:
    """Yield (real milliseconds at a time) until ``predicate()`` is true."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)
