"""Issue 5 acceptance, end to end through real `symbi` processes.

1. A job delivering to ``log_file``, ``webhook`` and ``email`` runs under ``symbi up`` (a real
   subprocess, configured by a ``symbi.toml``) against a local webhook server that answers 503
   twice and then 200, and a local SMTP server (aiosmtpd); ``symbi cron status`` (a subprocess)
   shows the three receipts.
2. ``symbi up`` is killed with SIGKILL while a webhook retry is pending; after a restart the
   delivery completes exactly once (one accepted request, one ``Idempotency-Key``).
3. The seed's delivery examples — ``examples/backup.symbi`` (log_file),
   ``security_scan.symbi`` (log_file, Slack, e-mail), ``metrics_report.symbi`` (webhook with
   ``${VAR}`` headers and a signature) and ``heartbeat_monitor.symbi`` (an LLM heartbeat agent;
   log_file, Slack) — are deployed with ``symbi deploy`` and run once each with ``symbi cron
   run`` against local peers: an aiohttp server playing the webhook receiver, Slack's Web API
   (``slack_api_url``) and an OpenAI-compatible model server (``[providers.NAME]``), and
   aiosmtpd. Where an example names something this machine must not touch, a copy of the
   file is rewritten, and only that text (see :func:`rewritten_example`).

The peers run in the test process on 127.0.0.1; each ``symbi`` process gets an environment
without the ``SYMBI_*`` variables of the machine running the tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import sqlite3
import sys
import tarfile
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from test_delivery_peers import Answer, HttpPeer, SmtpPeer

from runtime.config import ENV_VARS
from runtime.delivery import BACKOFF_BASE_SECONDS, backoff_seconds, delivery_id

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
README = ROOT / "README.md"
SYMBI = Path(sys.executable).parent / "symbi"
HOOK_SECRET = "whsec-issue5"
JSON = {"Content-Type": "application/json"}

# ------------------------------------------------------------------------------ helpers


@pytest.fixture
async def peer() -> AsyncIterator[HttpPeer]:
    p = await HttpPeer().start()
    yield p
    await p.close()


def symbi_env(**extra: str) -> dict[str, str]:
    """The environment of a `symbi` process: this one's, without SYMBI_* settings."""
    env = {k: v for k, v in os.environ.items()
           if k not in ENV_VARS and k != "SYMBI_CONFIG" and not k.startswith("SYMBI_")}
    env.update(extra)
    return env


async def symbi(cwd: Path, *args: str, env: Mapping[str, str], timeout: float = 30
                ) -> tuple[int, str, str]:
    """Run `symbi --config symbi.toml ARGS` to completion (the event loop keeps serving the
    peers meanwhile); returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        str(SYMBI), "--config", "symbi.toml", *args, cwd=cwd, env=dict(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode() + err.decode()
    assert "Traceback" not in text, text
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


class SymbiUp:
    """`symbi --config symbi.toml up [PATHS] --no-api` as a background process whose output
    goes to files (so a full pipe never blocks it)."""

    def __init__(self, cwd: Path, paths: list[str], env: Mapping[str, str], tag: str) -> None:
        self.cwd, self.paths, self.env = cwd, paths, dict(env)
        self.out, self.err = cwd / f"up-{tag}.out", cwd / f"up-{tag}.err"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> SymbiUp:
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = await asyncio.create_subprocess_exec(
                str(SYMBI), "--config", "symbi.toml", "up", *self.paths, "--no-api",
                cwd=self.cwd, env=self.env, stdout=out, stderr=err)
        return self

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self) -> int:
        """SIGTERM (a graceful stop) and the exit code."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), 20)

    async def kill(self) -> int:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.kill()
        return await asyncio.wait_for(self.proc.wait(), 10)


async def until(what: str, predicate: Callable[[], bool], *, timeout: float = 15,
                up: SymbiUp | None = None) -> None:
    """Poll (every 20 ms) until ``predicate()``; fails with ``what`` and the process output."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if up is not None and not up.alive():
            raise AssertionError(f"symbi up exited before {what}:\n{up.output()}")
        if loop.time() > end:
            detail = f":\n{up.output()}" if up is not None else ""
            raise AssertionError(f"timed out waiting for {what}{detail}")
        await asyncio.sleep(0.02)


def deliveries(db: Path) -> dict[str, tuple[str, int]]:
    """channel → (status, attempts) of every delivery in the state database (read-only, as
    another process writes it)."""
    if not db.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute("SELECT channel, status, attempts FROM deliveries").fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created yet
        return {}
    return {ch: (st, n) for ch, st, n in rows}


def write_config(root: Path, smtp_port: int, *, extra_delivery: str = "",
                 extra: str = "") -> None:
    (root / "symbi.toml").write_text(f'''\
data_dir = "{root / 'data'}"

[scheduler.delivery]
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
smtp_starttls = false
smtp_timeout_seconds = 5
email_from = "symbi@example.com"
webhook_timeout_seconds = 5
webhook_retry_attempts = 3
{extra_delivery}
{extra}''')


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def readme_verify() -> Callable[[bytes, str | None, str], bool]:
    """The signature check printed in the README's "Delivery channels" section (executed, so
    the documentation cannot drift from what the webhook channel sends)."""
    text = README.read_text()
    section = text[text.index("## Delivery channels"):]
    section = section[:section.index("\n## ", 1)]
    (code,) = [m for m in re.findall(r"```python\n(.*?)```", section, re.S) if "def verify" in m]
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own documentation
    fn: Callable[[bytes, str | None, str], bool] = scope["verify"]
    return fn


PAYLOAD_KEYS = {"job", "run", "output", "summary"}
PAYLOAD_JOB_KEYS = {"id", "name", "agent"}
PAYLOAD_RUN_KEYS = {"id", "status", "trigger", "scheduled_for", "started_at", "finished_at",
                    "duration_ms", "attempt", "error"}


def assert_payload_shape(doc: dict[str, Any]) -> None:
    """SPEC §5.8's webhook payload (plus ``run.error``)."""
    assert set(doc) == PAYLOAD_KEYS
    assert set(doc["job"]) == PAYLOAD_JOB_KEYS
    assert set(doc["run"]) == PAYLOAD_RUN_KEYS
    for key in ("scheduled_for", "started_at", "finished_at"):
        assert datetime.fromisoformat(doc["run"][key]).tzinfo is not None


# ------------------------------------------------------------------------------ 1: symbi up

THREE_CHANNELS = '''\
schedule {{
  name: "nightly-numbers"
  agent: "echo"
  cron: "* * * * * *"  // six fields: fires at the next second
  one_shot: true
  input: "revenue up 3%"
  delivery: ["log_file", "webhook", "email"]
  webhook_url: "{url}"
  webhook_secret: "${{HOOK_SECRET}}"
  email_recipients: ["finance@example.com"]
  email_subject: "Numbers: {{{{ run.status }}}} for {{{{ job.name }}}}"
}}
'''


async def test_symbi_up_delivers_to_log_file_webhook_and_email(tmp_path: Path,
                                                               peer: HttpPeer) -> None:
    peer.script("/hook", Answer(503, "busy"), Answer(503, "still busy"))  # then 200
    (tmp_path / "jobs.symbi").write_text(THREE_CHANNELS.format(url=peer.url("/hook")))
    env = symbi_env(HOOK_SECRET=HOOK_SECRET)
    db = tmp_path / "data" / "state.db"
    with SmtpPeer() as smtp:
        write_config(tmp_path, smtp.port, extra_delivery="retry_backoff_seconds = 0.3")
        up = await SymbiUp(tmp_path, ["jobs.symbi"], env, "1").start()
        try:
            await until("three delivered receipts", lambda: deliveries(db) == {
                "log_file": ("delivered", 1), "webhook": ("delivered", 3),
                "email": ("delivered", 1)}, up=up)
        finally:
            code = await up.stop()
        assert code == 0, up.output()

        # the webhook: exactly one accepted request after two 503s, correctly signed
        requests = peer.at("/hook")
        assert [r.status for r in requests] == [503, 503, 200]
        (accepted,) = [r for r in requests if r.status == 200]
        assert accepted.headers["X-Symbi-Signature"] == signature(HOOK_SECRET, accepted.body)
        assert readme_verify()(accepted.body, accepted.headers["X-Symbi-Signature"],
                               HOOK_SECRET)
        assert not readme_verify()(accepted.body + b" ", accepted.headers["X-Symbi-Signature"],
                                   HOOK_SECRET)
        doc = accepted.json()
        assert_payload_shape(doc)
        assert (doc["job"]["name"], doc["job"]["agent"], doc["output"]) == (
            "nightly-numbers", "echo", "revenue up 3%")
        assert (doc["run"]["status"], doc["run"]["trigger"]) == ("succeeded", "schedule")
        run_id = doc["run"]["id"]
        assert {r.headers["Idempotency-Key"] for r in requests} == {
            delivery_id(run_id, "webhook")}
        assert {r.body for r in requests} == {accepted.body}  # every retry sends the same bytes

        # the e-mail, with the rendered subject
        (mail,) = smtp.inbox.mails
        assert (mail.mail_from, mail.rcpt_tos) == ("symbi@example.com", ["finance@example.com"])
        assert mail.message["Subject"] == "Numbers: succeeded for nightly-numbers"
        assert mail.message["X-Symbi-Run"] == run_id
        assert "revenue up 3%" in mail.message.get_content()

    # the log file
    log = (tmp_path / "data" / "logs" / "nightly-numbers.log").read_text()
    assert log.count(" job=nightly-numbers ") == 1
    assert f"run={run_id} status=succeeded trigger=schedule" in log
    assert "\n  revenue up 3%\n" in log

    # `symbi cron status` shows the three receipts
    code, out, err = await symbi(tmp_path, "cron", "status", "nightly-numbers", "--history",
                                 "1", env=env)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-3].split()[-1] == "DELIVERIES"  # header, rule, the run
    assert lines[-1].endswith("email ok, log_file ok, webhook ok(3)")
    code, out, err = await symbi(tmp_path, "cron", "status", "nightly-numbers", "--history",
                                 "1", "--format", "json", env=env)
    assert code == 0, err
    (run,) = json.loads(out)["history"]
    assert run["id"] == run_id
    got = {d["channel"]: d for d in run["deliveries"]}
    assert {ch: d["status"] for ch, d in got.items()} == {
        "email": "delivered", "log_file": "delivered", "webhook": "delivered"}
    hook = got["webhook"]["history"]
    assert [(a["ok"], a["status_code"]) for a in hook] == [(False, 503), (False, 503),
                                                           (True, 200)]
    assert got["email"]["history"][0]["status_code"] == 250
    # the retries waited the configured backoff (0.3 s, then 0.6 s), not the default 2 s
    at = [datetime.fromisoformat(a["at"]) for a in hook]
    first, second = ((b - a).total_seconds() for a, b in zip(at, at[1:], strict=False))
    assert 0.3 <= first < BACKOFF_BASE_SECONDS and second >= 0.6


# ------------------------------------------------------------------------------ 2: kill -9

RETRIED = '''\
schedule {{
  name: "pushed"
  agent: "echo"
  cron: "* * * * * *"
  one_shot: true
  input: "push me"
  delivery: ["webhook"]
  webhook_url: "{url}"
  webhook_secret: "${{HOOK_SECRET}}"
}}
'''


async def test_webhook_retry_pending_at_sigkill_completes_once_after_restart(
        tmp_path: Path, peer: HttpPeer) -> None:
    peer.default("/flaky", Answer(503, "down for maintenance"))
    (tmp_path / "jobs.symbi").write_text(RETRIED.format(url=peer.url("/flaky")))
    env = symbi_env(HOOK_SECRET=HOOK_SECRET)
    db = tmp_path / "data" / "state.db"
    with SmtpPeer() as smtp:  # unused here; the config is the same as in the test above
        # the default backoff (2 s) leaves ample time to kill the process between attempts
        write_config(tmp_path, smtp.port)
    first = await SymbiUp(tmp_path, ["jobs.symbi"], env, "first").start()
    try:
        await until("the first attempt to fail", lambda: deliveries(db).get("webhook") == (
            "retrying", 1), up=first)
    finally:
        assert await first.kill() == -signal.SIGKILL
    assert deliveries(db) == {"webhook": ("retrying", 1)}  # the retry is pending, persisted
    assert [r.status for r in peer.at("/flaky")] == [503]

    peer.default("/flaky", Answer(200, "accepted"))  # the receiver is back
    second = await SymbiUp(tmp_path, [], env, "second").start()  # the jobs in the store
    try:
        await until("the retry to be delivered",
                    lambda: deliveries(db).get("webhook") == ("delivered", 2), up=second)
    finally:
        code = await second.stop()
    assert code == 0, second.output()

    requests = peer.at("/flaky")
    assert [r.status for r in requests] == [503, 200]
    (accepted,) = [r for r in requests if r.status == 200]
    run_id = accepted.json()["run"]["id"]
    assert {r.headers["Idempotency-Key"] for r in requests} == {delivery_id(run_id, "webhook")}
    assert accepted.headers["X-Symbi-Signature"] == signature(HOOK_SECRET, accepted.body)

    code, out, err = await symbi(tmp_path, "cron", "status", "pushed", "--history", "1",
                                 "--format", "json", env=env)
    assert code == 0, err
    (run,) = json.loads(out)["history"]
    assert (run["id"], run["status"]) == (run_id, "succeeded")
    (receipt,) = run["deliveries"]
    assert (receipt["status"], receipt["attempts"], receipt["last_error"]) == (
        "delivered", 2, None)
    assert [(a["ok"], a["status_code"], a["error"]) for a in receipt["history"]] == [
        (False, 503, "HTTP 503: down for maintenance"), (True, 200, None)]
    code, out, _ = await symbi(tmp_path, "cron", "status", "pushed", "--history", "1", env=env)
    assert out.splitlines()[-1].endswith("webhook ok(2)")


def test_retry_backoff_base_is_configurable() -> None:
    assert [backoff_seconds(n, base=0.3) for n in (1, 2, 3)] == pytest.approx([0.3, 0.6, 1.2])
    assert backoff_seconds(1, retry_after=7.0, base=0.3) == 7.0  # the peer's Retry-After wins
    assert backoff_seconds(40, base=0.3) == 600.0  # capped


# ------------------------------------------------------------------------------ 3: examples


def rewritten_example(name: str, dest: Path, replacements: Mapping[str, str]) -> Path:
    """A copy of ``examples/NAME`` with each ``old`` text replaced by ``new`` (each must occur
    exactly once, so a changed example fails here instead of silently testing nothing)."""
    text = (EXAMPLES / name).read_text()
    for old, new in replacements.items():
        assert text.count(old) == 1, (name, old)
        text = text.replace(old, new)
    out = dest / name
    out.write_text(text)
    return out


def chat_completion(content: str) -> Answer:
    return Answer(200, json.dumps({
        "id": "chatcmpl-standin", "object": "chat.completion", "model": "claude-sonnet-4.5",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 20, "total_tokens": 140}}),
        JSON)


async def test_seed_delivery_examples_run_against_local_peers(tmp_path: Path,
                                                              peer: HttpPeer) -> None:
    # Rewritten copies, and why:
    # - backup.symbi tars /var/lib/app into /var/backups/app.tar.gz: a test must not read or
    #   write system directories, so the copy points the agent's env at tmp_path.
    # - metrics_report.symbi posts to https://metrics.example.com/ingest, which is not
    #   reachable (and not ours); the copy posts to the local receiver. `webhook_url` is a job
    #   setting with no configuration override, so the text is the only place to change it.
    # security_scan.symbi and heartbeat_monitor.symbi run as written: Slack's API base URL,
    # the SMTP server and the model provider come from symbi.toml.
    copies = tmp_path / "examples"
    copies.mkdir()
    source, target = tmp_path / "app-data", tmp_path / "backups" / "app.tar.gz"
    source.mkdir()
    (source / "orders.csv").write_text("id,total\n1,9.50\n")
    target.parent.mkdir()
    files = [
        rewritten_example("backup.symbi", copies, {'"/var/lib/app"': f'"{source}"',
                                                   '"/var/backups/app.tar.gz"': f'"{target}"'}),
        EXAMPLES / "security_scan.symbi",
        rewritten_example("metrics_report.symbi", copies, {
            "https://metrics.example.com/ingest": peer.url("/ingest")}),
        EXAMPLES / "heartbeat_monitor.symbi",
    ]
    peer.default("/api/chat.postMessage",
                 Answer(200, '{"ok": true, "channel": "C024BE91L", "ts": "1.000"}', JSON))
    peer.script("/v1/chat/completions",
                chat_completion("CPU 12%, memory 41%, disk 63%. No errors in the last 10 "
                                "minutes; nothing to restart."),
                chat_completion("All services healthy.\nsleep"))
    env = symbi_env(SYMBI_SLACK_TOKEN="xoxb-issue5", METRICS_API_KEY="mk-issue5",
                    METRICS_WEBHOOK_SECRET="whsec-metrics", STANDIN_KEY="sk-standin")
    with SmtpPeer() as smtp:
        write_config(tmp_path, smtp.port, extra_delivery=f'''\
slack_api_url = "{peer.url('/api')}"
''', extra=f'''
[providers.standin]
kind = "openai"
base_url = "{peer.url('/v1')}"
api_key = "${{STANDIN_KEY}}"
models = ["claude-*"]
max_retries = 0
''')
        code, out, err = await symbi(tmp_path, "deploy", *map(str, files), env=env)
        assert code == 0, out + err
        outputs: dict[str, str] = {}
        for job in ("backup", "security-scan", "metrics-report", "heartbeat-monitor"):
            code, out, err = await symbi(tmp_path, "cron", "run", job, env=env)
            assert code == 0, (job, out, err)
            assert "delivery to" not in err, (job, err)  # no delivery failed or waits
            outputs[job] = out
        mails = list(smtp.inbox.mails)
    code, out, err = await symbi(tmp_path, "cron", "history", "--format", "json", env=env)
    assert code == 0, err
    runs = {r["job_name"]: r for r in json.loads(out)}
    assert set(runs) == set(outputs)
    for name, run in runs.items():
        assert run["status"] == "succeeded", run
        assert run["output"].rstrip("\n") == outputs[name].rstrip("\n")
        assert all(d["status"] == "delivered" for d in run["deliveries"]), run
    channels = {n: sorted(d["channel"] for d in r["deliveries"]) for n, r in runs.items()}
    assert channels == {"backup": ["log_file"],
                        "security-scan": ["email", "log_file", "slack"],
                        "metrics-report": ["webhook"],
                        "heartbeat-monitor": ["log_file", "slack"]}
    logs = tmp_path / "data" / "logs"

    # backup (single channel: log_file): the archive is written, the log has the entry
    with tarfile.open(target) as tar:
        assert "./orders.csv" in tar.getnames()
    backup_log = (logs / "backup.log").read_text()
    assert f"job=backup run={runs['backup']['id']} status=succeeded trigger=manual" in backup_log
    assert "\n  backup written\n" in backup_log

    # security-scan (log_file, Slack Web API, e-mail to two recipients)
    scan = runs["security-scan"]
    assert scan["output"].startswith("open ports:\n")
    assert re.fullmatch(r"open ports:\n\d+\n?", scan["output"])
    assert f"job=security-scan run={scan['id']}" in (logs / "security-scan.log").read_text()
    posts = peer.at("/api/chat.postMessage")
    assert len(posts) == 2  # security-scan and heartbeat-monitor
    by_channel = {p.json()["channel"]: p for p in posts}
    assert set(by_channel) == {"#security", "#ops-alerts"}
    for p in posts:
        assert p.headers["Authorization"] == "Bearer xoxb-issue5"
        assert p.headers["Content-Type"].startswith("application/json")
    text = by_channel["#security"].json()["text"]
    assert text.startswith(":white_check_mark: *security-scan* succeeded in ")
    assert f"(run `{scan['id'][:8]}`, manual)" in text
    assert "```\nopen ports:\n" in text
    (mail,) = mails
    msg = mail.message
    assert (mail.mail_from, mail.rcpt_tos) == (
        "symbi@example.com", ["ops@example.com", "security@example.com"])
    assert msg["Subject"] == "Security scan succeeded"
    assert (msg["From"], msg["To"]) == ("symbi@example.com",
                                        "ops@example.com, security@example.com")
    assert (msg["X-Symbi-Job"], msg["X-Symbi-Run"]) == ("security-scan", scan["id"])
    body = msg.get_content().replace("\r\n", "\n")
    assert "Job:        security-scan (agent scanner)" in body
    assert "\nStatus:     succeeded\n" in body
    assert f"\n\nOutput:\n{scan['output'].rstrip()}\n\n-- \n" in body

    # metrics-report (webhook): ${VAR} headers expanded at send time, payload, signature
    (hook,) = peer.at("/ingest")
    metrics = runs["metrics-report"]
    assert hook.method == "POST"
    assert hook.headers["Authorization"] == "Bearer mk-issue5"
    assert hook.headers["Content-Type"] == "application/json"
    assert hook.headers["Idempotency-Key"] == delivery_id(metrics["id"], "webhook")
    assert hook.headers["X-Symbi-Signature"] == signature("whsec-metrics", hook.body)
    assert readme_verify()(hook.body, hook.headers["X-Symbi-Signature"], "whsec-metrics")
    assert abs(int(hook.headers["X-Symbi-Timestamp"])
               - datetime.fromisoformat(metrics["finished_at"]).timestamp()) < 30
    doc = hook.json()
    assert_payload_shape(doc)
    assert doc["job"] == {"id": metrics["job_id"], "name": "metrics-report",
                          "agent": "metrics-agent"}
    assert {k: doc["run"][k] for k in ("id", "status", "trigger", "attempt", "duration_ms")} == {
        "id": metrics["id"], "status": "succeeded", "trigger": "manual", "attempt": 1,
        "duration_ms": metrics["duration_ms"]}
    assert doc["output"] == metrics["output"] and "load average" in doc["output"]
    assert doc["summary"] == metrics["summary"]
    # the secrets are used, never stored: not in the state database nor the job definition
    stored = (tmp_path / "data" / "state.db").read_bytes()
    assert b"mk-issue5" not in stored and b"whsec-metrics" not in stored

    # heartbeat-monitor: the LLM agent (a stand-in model server) answers twice, the second
    # time "sleep"; the joined output goes to the log file and Slack
    chats = peer.at("/v1/chat/completions")
    assert len(chats) == 2
    for c in chats:
        req = c.json()
        assert req["model"] == "claude-sonnet-4.5"
        assert c.headers["Authorization"] == "Bearer sk-standin"
        assert "You are a system monitoring agent" in req["messages"][0]["content"]
    beat = runs["heartbeat-monitor"]
    assert beat["output"].startswith("[iteration 1]\nCPU 12%")
    assert beat["output"].endswith("[iteration 2]\nAll services healthy.\nsleep")
    beat_log = (logs / "heartbeat-monitor.log").read_text()
    assert f"run={beat['id']} status=succeeded" in beat_log
    assert "\n  [iteration 2]\n  All services healthy.\n  sleep\n" in beat_log
    ops = by_channel["#ops-alerts"].json()["text"]
    assert ops.startswith(":white_check_mark: *heartbeat-monitor* succeeded")
    assert "All services healthy.\nsleep\n```" in ops
