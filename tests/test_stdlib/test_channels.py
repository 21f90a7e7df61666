"""Built-in channels (SPEC §5.8) against real local peers: an aiohttp server on 127.0.0.1 for
webhook and Slack, an aiosmtpd server for e-mail, real files for log_file."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test_runtime"))  # shared peers
from test_delivery_peers import (  # noqa: E402
    Answer,
    HttpPeer,
    SmtpPeer,
    make_config,
    make_context,
    make_run,
    self_signed_cert,
)

from compiler.ir import JobDef  # noqa: E402
from runtime.clock import FakeClock  # noqa: E402
from runtime.delivery import ChannelRegistry, DeliveryOutcome, delivery_id  # noqa: E402
from stdlib.channels.log_file import LogFileChannel  # noqa: E402
from stdlib.channels.webhook import sign  # noqa: E402

T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def peer() -> AsyncIterator[HttpPeer]:
    p = await HttpPeer().start()
    yield p
    await p.close()


def channel(tmp_path: Path, clock: FakeClock, name: str, *, env: dict[str, str] | None = None,
            stdout: Any = None, **delivery: Any) -> Any:
    reg = ChannelRegistry(make_context(make_config(tmp_path, **delivery), clock, env=env,
                                       stdout=stdout))
    return reg.get(name)


async def route(ch: Any, job: JobDef, output: str = "hello", **run: Any) -> DeliveryOutcome:
    r = make_run(job, output=output, **run)
    out: DeliveryOutcome = await ch.route(ch.name, job, r, output)
    return out


# ------------------------------------------------------------------------------ stdout


async def test_stdout_prints_one_block_per_run(tmp_path: Path, clock: FakeClock) -> None:
    buf = io.StringIO()
    ch = channel(tmp_path, clock, "stdout", stdout=buf)
    job = JobDef(name="daily", agent="a")
    assert (await route(ch, job, "line 1\nline 2\n")).ok
    assert (await route(ch, job, "", status="failed", error="exit status 2")).ok
    assert buf.getvalue() == (
        "=== daily | succeeded | 2026-03-08T07:00:01+00:00 | 1.23s | run 11111111 ===\n"
        "line 1\nline 2\n\n"
        "=== daily | failed | 2026-03-08T07:00:01+00:00 | 1.23s | run 11111111 ===\n"
        "error: exit status 2\n\n")


async def test_stdout_closed_stream_is_a_failure(tmp_path: Path, clock: FakeClock) -> None:
    buf = io.StringIO()
    buf.close()
    out = await route(channel(tmp_path, clock, "stdout", stdout=buf), JobDef(name="d", agent="a"))
    assert not out.ok and "cannot write to standard output" in (out.error or "")


# ------------------------------------------------------------------------------ log_file


async def test_log_file_default_path_text_format_and_permissions(
        tmp_path: Path, clock: FakeClock) -> None:
    ch = channel(tmp_path, clock, "log_file")
    job = JobDef(name="nightly", agent="a")
    out = await route(ch, job, "a\nb")
    path = tmp_path / "data" / "logs" / "nightly.log"
    assert out.ok and out.response == str(path)
    await route(ch, job, "", status="failed", error="boom")
    assert path.read_text() == (
        "[2026-03-08T07:00:00.000000+00:00] job=nightly run=11111111-2222-4333-8444-555555555555"
        " status=succeeded trigger=schedule attempt=1 duration=1.23s\n  a\n  b\n"
        "[2026-03-08T07:00:00.000000+00:00] job=nightly run=11111111-2222-4333-8444-555555555555"
        " status=failed trigger=schedule attempt=1 duration=1.23s\n  error: boom\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_log_file_json_lines(tmp_path: Path, clock: FakeClock) -> None:
    ch = channel(tmp_path, clock, "log_file")
    await route(ch, JobDef(name="j", agent="a", log_file="sub/j.jsonl"), "out")
    (line,) = (tmp_path / "data" / "logs" / "sub" / "j.jsonl").read_text().splitlines()
    doc = json.loads(line)
    assert doc["time"] == "2026-03-08T07:00:00.000000+00:00"
    assert (doc["job"]["name"], doc["run"]["status"], doc["output"]) == ("j", "succeeded", "out")
    ch2 = channel(tmp_path / "b", clock, "log_file", log_file_format="json")
    await route(ch2, JobDef(name="k", agent="a"), "x")
    assert json.loads((tmp_path / "b" / "data" / "logs" / "k.log").read_text())["output"] == "x"


@pytest.mark.parametrize("bad, reason", [
    ("../escape.log", "contains `..`"),
    ("a/../../escape.log", "contains `..`"),
    ("/etc/symbi-escape.log", "is outside the log directory"),
    ("", "is empty"),
    ("x\x00y", "NUL"),
])
async def test_log_file_path_confined_to_log_dir(tmp_path: Path, clock: FakeClock, bad: str,
                                                 reason: str) -> None:
    before = {p for p in tmp_path.rglob("*")}
    out = await route(channel(tmp_path, clock, "log_file"),
                      JobDef(name="j", agent="a", log_file=bad))
    assert not out.ok and not out.retryable
    assert out.error is not None and out.error.startswith("rejected: ") and reason in out.error
    created = {p for p in tmp_path.rglob("*")} - before
    assert not [p for p in created if p.is_file()]  # nothing written anywhere
    assert not Path("/etc/symbi-escape.log").exists()


async def test_log_file_absolute_path_inside_log_dir_is_accepted(tmp_path: Path,
                                                                 clock: FakeClock) -> None:
    inside = tmp_path / "data" / "logs" / "abs.log"
    out = await route(channel(tmp_path, clock, "log_file"),
                      JobDef(name="j", agent="a", log_file=str(inside)))
    assert out.ok and inside.read_text().startswith("[2026-03-08")


async def test_log_file_symlinks_cannot_escape(tmp_path: Path, clock: FakeClock) -> None:
    logs = tmp_path / "data" / "logs"
    logs.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (logs / "door").symlink_to(outside, target_is_directory=True)
    (logs / "trap.log").symlink_to(outside / "target.log")
    ch = channel(tmp_path, clock, "log_file")
    out = await route(ch, JobDef(name="j", agent="a", log_file="door/x.log"))
    assert not out.ok and "through a symbolic link" in (out.error or "")
    out = await route(ch, JobDef(name="j", agent="a", log_file="trap.log"))
    assert not out.ok and "is a symbolic link" in (out.error or "")
    assert list(outside.iterdir()) == []


async def test_log_file_rotates_by_size(tmp_path: Path, clock: FakeClock) -> None:
    ch: LogFileChannel = channel(tmp_path, clock, "log_file", log_file_max_bytes=300,
                                 log_file_backups=2)
    job = JobDef(name="r", agent="a")
    for i in range(8):
        assert (await route(ch, job, f"entry {i} " + "x" * 100)).ok
    logs = tmp_path / "data" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["r.log", "r.log.1", "r.log.2"]
    texts = {p.name: p.read_text() for p in logs.iterdir()}
    assert all(len(t.encode()) <= 300 for t in texts.values())
    assert "entry 7" in texts["r.log"]
    assert "entry 0" not in "".join(texts.values())  # the oldest backup was dropped
    assert all(stat.S_IMODE((logs / n).stat().st_mode) == 0o600 for n in texts)


async def test_log_file_expands_variables_in_path(tmp_path: Path, clock: FakeClock) -> None:
    ch = channel(tmp_path, clock, "log_file", env={"TEAM": "ops"})
    assert (await route(ch, JobDef(name="j", agent="a", log_file="${TEAM}/j.log"))).ok
    assert (tmp_path / "data" / "logs" / "ops" / "j.log").exists()
    out = await route(ch, JobDef(name="j", agent="a", log_file="${MISSING}/j.log"))
    assert not out.ok and "environment variable `MISSING` is not set" in (out.error or "")


# ------------------------------------------------------------------------------ webhook


def hook_job(peer: HttpPeer, **kw: Any) -> JobDef:
    kw.setdefault("webhook_url", peer.url("/hook"))
    return JobDef(name="hooked", agent="reporter", delivery=("webhook",), **kw)


async def test_webhook_request_headers_payload_and_signature(
        tmp_path: Path, clock: FakeClock, peer: HttpPeer) -> None:
    ch = channel(tmp_path, clock, "webhook", env={"HOOK_TOKEN": "t0k", "HOOK_SECRET": "s3c"})
    job = hook_job(peer, webhook_headers=(("X-Token", "${HOOK_TOKEN}"), ("X-Team", "ops")),
                   webhook_secret="${HOOK_SECRET}")
    out = await route(ch, job, "result text", summary="short")
    assert out.ok and out.status_code == 200
    (req,) = peer.requests
    assert (req.method, req.path) == ("POST", "/hook")
    h = req.headers
    assert h["Content-Type"] == "application/json"
    assert (h["X-Token"], h["X-Team"]) == ("t0k", "ops")
    assert h["Idempotency-Key"] == delivery_id("11111111-2222-4333-8444-555555555555", "webhook")
    assert h["X-Symbi-Timestamp"] == str(int(T0.timestamp()))
    assert "Authorization" not in h
    expected = hmac.new(b"s3c", req.body, hashlib.sha256).hexdigest()
    assert h["X-Symbi-Signature"] == f"sha256={expected}" == sign("s3c", req.body)
    body = req.json()
    assert body == {
        "job": {"id": "job_0123456789ab", "name": "hooked", "agent": "reporter"},
        "run": {"id": "11111111-2222-4333-8444-555555555555", "status": "succeeded",
                "trigger": "schedule", "scheduled_for": "2026-03-08T07:00:00+00:00",
                "started_at": "2026-03-08T07:00:00+00:00",
                "finished_at": "2026-03-08T07:00:01.234000+00:00", "duration_ms": 1234,
                "attempt": 1, "error": None},
        "output": "result text",
        "summary": "short",
    }


async def test_webhook_default_authorization_and_method(tmp_path: Path, clock: FakeClock,
                                                        peer: HttpPeer) -> None:
    ch = channel(tmp_path, clock, "webhook", webhook_auth_header="Bearer from-config")
    await route(ch, hook_job(peer, webhook_method="PUT"))
    await route(ch, hook_job(peer, webhook_headers=(("authorization", "Basic job"),)))
    first, second = peer.requests
    assert (first.method, first.headers["Authorization"]) == ("PUT", "Bearer from-config")
    assert second.headers["Authorization"] == "Basic job"  # the job's own header wins
    assert "X-Symbi-Signature" not in first.headers  # no secret, no signature


async def test_webhook_variables_are_expanded_at_send_time(tmp_path: Path, clock: FakeClock,
                                                           peer: HttpPeer) -> None:
    env = {"TOKEN": "one"}
    ch = channel(tmp_path, clock, "webhook", env=env)
    job = hook_job(peer, webhook_headers=(("X-Token", "${TOKEN}"),))
    await route(ch, job)
    env["TOKEN"] = "two"  # rotated secret: the next delivery uses it
    await route(ch, job)
    assert [r.headers["X-Token"] for r in peer.requests] == ["one", "two"]
    del env["TOKEN"]
    out = await route(ch, job)
    assert not out.ok and not out.retryable
    assert out.error == "`webhook_headers.X-Token`: environment variable `TOKEN` is not set"
    assert len(peer.requests) == 2


@pytest.mark.parametrize("answer, retryable, retry_after", [
    (Answer(500, "internal"), True, None),
    (Answer(503, "unavailable", {"Retry-After": "12"}), True, 12.0),
    (Answer(429, "slow down", {"Retry-After": "3"}), True, 3.0),
    (Answer(408, "timeout"), True, None),
    (Answer(404, "not found"), False, None),
    (Answer(401, "who are you"), False, None),
    (Answer(302, "", {"Location": "http://127.0.0.1:1/elsewhere"}), False, None),
])
async def test_webhook_status_classification(tmp_path: Path, clock: FakeClock, peer: HttpPeer,
                                             answer: Answer, retryable: bool,
                                             retry_after: float | None) -> None:
    peer.script("/hook", answer)
    out = await route(channel(tmp_path, clock, "webhook"), hook_job(peer))
    assert not out.ok
    assert (out.status_code, out.retryable, out.retry_after) == (answer.status, retryable,
                                                                 retry_after)
    assert out.error is not None and out.error.startswith(f"HTTP {answer.status}")
    assert len(peer.requests) == 1  # one attempt per call: the worker retries


async def test_webhook_timeout_and_refused_connection_are_retryable(
        tmp_path: Path, clock: FakeClock, peer: HttpPeer) -> None:
    peer.script("/hook", Answer(200, "late", delay=2.0))
    ch = channel(tmp_path, clock, "webhook", webhook_timeout_seconds=0.2)
    out = await route(ch, hook_job(peer))
    assert not out.ok and out.retryable and out.error == "no response within 0.2s"
    closed = HttpPeer()
    await closed.start()
    url = closed.url("/gone")
    await closed.close()
    out = await route(ch, hook_job(peer, webhook_url=url))
    assert not out.ok and out.retryable and out.error is not None
    assert out.error.startswith("network error")


async def test_webhook_without_url_fails_clearly(tmp_path: Path, clock: FakeClock) -> None:
    out = await route(channel(tmp_path, clock, "webhook"), JobDef(name="j", agent="a"))
    assert (out.ok, out.error) == (False, "the job has no `webhook_url`")


# ------------------------------------------------------------------------------ slack


async def test_slack_incoming_webhook(tmp_path: Path, clock: FakeClock, peer: HttpPeer) -> None:
    ch = channel(tmp_path, clock, "slack", env={"SLACK_HOOK": peer.url("/services/T/B/X")})
    job = JobDef(name="s", agent="a", slack_webhook_url="${SLACK_HOOK}")
    out = await route(ch, job, "all good")
    assert out.ok
    (req,) = peer.requests
    assert req.path == "/services/T/B/X"
    text = req.json()["text"]
    assert text.startswith(":white_check_mark: *s* succeeded in 1.23s (run `11111111`")
    assert "```\nall good\n```" in text
    peer.script("/services/T/B/X", Answer(200, "not ok at all"))
    out = await route(ch, job)
    assert not out.ok and "instead of \"ok\"" in (out.error or "")
    peer.script("/services/T/B/X", Answer(404, "no_service"))
    out = await route(ch, job)
    assert not out.ok and not out.retryable and out.error == "HTTP 404: no_service"


async def test_slack_web_api(tmp_path: Path, clock: FakeClock, peer: HttpPeer) -> None:
    ch = channel(tmp_path, clock, "slack", slack_api_url=peer.url("/api"),
                 slack_api_token="xoxb-test", slack_default_channel="#general")
    peer.default("/api/chat.postMessage", Answer(200, '{"ok": true, "ts": "1.2"}'))
    assert (await route(ch, JobDef(name="s", agent="a", slack_channel="#ops"))).ok
    assert (await route(ch, JobDef(name="s", agent="a"), status="failed", error="bad")).ok
    first, second = peer.requests
    assert first.headers["Authorization"] == "Bearer xoxb-test"
    assert first.json()["channel"] == "#ops"
    assert second.json()["channel"] == "#general"
    assert second.json()["text"].startswith(":x: *s* failed")
    assert "> bad" in second.json()["text"]


async def test_slack_api_errors(tmp_path: Path, clock: FakeClock, peer: HttpPeer) -> None:
    ch = channel(tmp_path, clock, "slack", slack_api_url=peer.url("/api"),
                 slack_api_token="xoxb-test")
    job = JobDef(name="s", agent="a", slack_channel="#nope")
    peer.script("/api/chat.postMessage",
                Answer(200, '{"ok": false, "error": "channel_not_found"}'),
                Answer(429, '{"ok": false, "error": "ratelimited"}', {"Retry-After": "30"}),
                Answer(200, "<html>proxy</html>"))
    out = await route(ch, job)
    assert (out.ok, out.retryable, out.error) == (False, False,
                                                  "Slack API error: channel_not_found")
    out = await route(ch, job)
    assert (out.ok, out.retryable, out.retry_after, out.status_code) == (False, True, 30.0, 429)
    out = await route(ch, job)
    assert not out.ok and "not JSON" in (out.error or "")


async def test_slack_without_destination_fails_clearly(tmp_path: Path, clock: FakeClock) -> None:
    out = await route(channel(tmp_path, clock, "slack"), JobDef(name="s", agent="a"))
    assert not out.ok and "no Slack destination" in (out.error or "")
    out = await route(channel(tmp_path / "2", clock, "slack", slack_api_token="x"),
                      JobDef(name="s", agent="a"))
    assert not out.ok and "no Slack channel" in (out.error or "")


async def test_slack_template_override(tmp_path: Path, clock: FakeClock, peer: HttpPeer) -> None:
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "slack_message.txt.j2").write_text("{{ job.name }}={{ run.status }}:{{ output }}")
    ch = channel(tmp_path, clock, "slack", templates_dir=str(tdir))
    await route(ch, JobDef(name="s", agent="a", slack_webhook_url=peer.url("/h")), "X")
    assert peer.requests[0].json()["text"] == "s=succeeded:X"


# ------------------------------------------------------------------------------ email


def mail_job(**kw: Any) -> JobDef:
    kw.setdefault("email_recipients", ("ops@example.com", "dev@example.com"))
    return JobDef(name="mailer", agent="reporter", **kw)


async def test_email_arrives_with_rendered_subject_and_body(tmp_path: Path,
                                                            clock: FakeClock) -> None:
    with SmtpPeer() as smtp:
        ch = channel(tmp_path, clock, "email", smtp_host="127.0.0.1", smtp_port=smtp.port,
                     email_from="symbi@example.com")
        out = await route(ch, mail_job(), "report body\nline two")
        assert out.ok and out.status_code == 250
        (mail,) = smtp.inbox.mails
    assert mail.mail_from == "symbi@example.com"
    assert mail.rcpt_tos == ["ops@example.com", "dev@example.com"]
    msg = mail.message
    assert msg["Subject"] == "[symbi] mailer: succeeded"
    assert msg["To"] == "ops@example.com, dev@example.com"
    assert msg["X-Symbi-Run"] == "11111111-2222-4333-8444-555555555555"
    assert msg.get_content_type() == "text/plain"
    body = msg.get_content().replace("\r\n", "\n")
    assert "Job:        mailer (agent reporter)" in body
    assert "Duration:   1.23s" in body
    assert "Output:\nreport body\nline two" in body


async def test_email_subject_template_from_job_and_html_from_templates_dir(
        tmp_path: Path, clock: FakeClock) -> None:
    tdir = tmp_path / "tpl"
    tdir.mkdir()
    (tdir / "email_body.html.j2").write_text("<p>{{ output }}</p>")
    (tdir / "email_body.txt.j2").write_text("plain: {{ output }}")
    with SmtpPeer() as smtp:
        ch = channel(tmp_path, clock, "email", smtp_host="127.0.0.1", smtp_port=smtp.port,
                     templates_dir=str(tdir))
        job = mail_job(email_subject="{{ job.name | upper }} is {{ run.status }}\nextra line")
        assert (await route(ch, job, "<b>&</b>")).ok
        (mail,) = smtp.inbox.mails
    msg = mail.message
    assert msg["Subject"] == "MAILER is succeeded extra line"
    assert msg["From"] == "symbi@localhost"
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "plain: <b>&</b>"
    assert html is not None and html.get_content().strip() == "<p>&lt;b&gt;&amp;&lt;/b&gt;</p>"


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_email_login_and_smtp_replies(tmp_path: Path, clock: FakeClock) -> None:
    with SmtpPeer(auth=True) as smtp:
        common = dict(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_username="mailer")
        ok = channel(tmp_path, clock, "email", smtp_password="s3cret", **common)
        assert (await route(ok, mail_job())).ok
        assert smtp.inbox.logins == [("mailer", "s3cret")]
        smtp.inbox.replies = ["451 4.3.0 try again later", "554 5.7.1 rejected"]
        out = await route(ok, mail_job())
        assert (out.ok, out.retryable, out.status_code) == (False, True, 451)
        out = await route(ok, mail_job())
        assert (out.ok, out.retryable, out.status_code) == (False, False, 554)
        bad = channel(tmp_path / "2", clock, "email", smtp_password="wrong", **common)
        out = await route(bad, mail_job())
        assert (out.ok, out.retryable, out.status_code) == (False, False, 535)
        assert len(smtp.inbox.mails) == 1


async def test_email_starttls_verifies_the_server(tmp_path: Path, clock: FakeClock,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl

    cert, key = self_signed_cert(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    with SmtpPeer(tls_context=server_ctx) as smtp:
        common = dict(smtp_host="127.0.0.1", smtp_port=smtp.port, smtp_starttls=True)
        untrusted = await route(channel(tmp_path, clock, "email", **common), mail_job())
        assert not untrusted.ok and "TLS" in (untrusted.error or "")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now the client trusts it
        out = await route(channel(tmp_path, clock, "email", **common), mail_job())
        assert out.ok, out.error
        plain = await route(channel(tmp_path, clock, "email", smtp_host="127.0.0.1",
                                    smtp_port=smtp.port, smtp_starttls=False), mail_job())
        assert not plain.ok and plain.status_code == 530  # the server insists on STARTTLS
        assert len(smtp.inbox.mails) == 1


async def test_email_configuration_problems(tmp_path: Path, clock: FakeClock) -> None:
    out = await route(channel(tmp_path, clock, "email"), mail_job())
    assert (out.ok, out.error) == (False,
                                   "no SMTP server configured: set [scheduler.delivery] smtp_host")
    ch = channel(tmp_path, clock, "email", smtp_host="127.0.0.1", smtp_port=1)
    out = await route(ch, mail_job(email_subject="{{ nope }}"))
    assert not out.ok and "e-mail template" in (out.error or "") and "nope" in (out.error or "")
    out = await route(ch, mail_job())  # nothing listens on port 1
    assert not out.ok and out.retryable and "SMTP connection to 127.0.0.1:1 failed" in (
        out.error or "")
    out = await route(ch, JobDef(name="m", agent="a"))
    assert (out.ok, out.error) == (False, "the job has no `email_recipients`")


def test_builtin_templates_ship_with_the_package() -> None:
    from stdlib.channels._support import BUILTIN_TEMPLATES

    names = sorted(p.name for p in BUILTIN_TEMPLATES.iterdir())
    assert names == ["email_body.txt.j2", "email_subject.txt.j2", "slack_message.txt.j2"]
    assert os.access(BUILTIN_TEMPLATES / "email_subject.txt.j2", os.R_OK)


async def test_channels_do_not_block_each_other(tmp_path: Path, clock: FakeClock,
                                                peer: HttpPeer) -> None:
    peer.default("/slow", Answer(200, "ok", delay=0.3))
    ch = channel(tmp_path, clock, "webhook")
    job = hook_job(peer, webhook_url=peer.url("/slow"))
    loop = asyncio.get_running_loop()
    start = loop.time()
    outs = await asyncio.gather(*(route(ch, job) for _ in range(4)))
    assert all(o.ok for o in outs)
    assert loop.time() - start < 1.0
