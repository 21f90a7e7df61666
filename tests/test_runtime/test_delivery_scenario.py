"""End-to-end delivery scenarios (issue 5): a compiled job, the real scheduler and the outbox
worker loop on a FakeClock, real local peers (aiohttp webhook server, aiosmtpd), and restarts
of the worker with a new store on the same file."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_delivery_peers import (
    Answer,
    HttpPeer,
    SmtpPeer,
    make_config,
    settle,
    store_finished_run,
)

from compiler.compile import compile_sources
from compiler.source import SourceFile
from runtime.clock import FakeClock
from runtime.config import Config, SchedulerConfig
from runtime.delivery import (
    BACKOFF_BASE_SECONDS,
    CLAIM_GRACE_SECONDS,
    DeliveryWorker,
    chain_callbacks,
    delivery_id,
    list_deliveries,
    receipts_for_runs,
)
from runtime.scheduler import Scheduler
from runtime.store import SqliteStore

T0 = datetime(2026, 3, 8, 6, 59, 30, tzinfo=UTC)
SECRET = "whsec-scenario"


@pytest.fixture
async def peer() -> AsyncIterator[HttpPeer]:
    p = await HttpPeer().start()
    yield p
    await p.close()


def compiled_jobs(peer: HttpPeer) -> tuple[list, list]:  # type: ignore[type-arg]
    src = f'''
schedule {{
  name: "nightly-numbers"
  agent: "echo"
  cron: "0 7 * * *"
  input: "revenue up 3%"
  delivery: ["log_file", "webhook", "email"]
  webhook_url: "{peer.url("/hook")}"
  webhook_secret: "${{HOOK_SECRET}}"
  email_recipients: ["finance@example.com"]
  email_subject: "Numbers: {{{{ run.status }}}} for {{{{ job.name }}}}"
}}
'''
    result = compile_sources([SourceFile("scenario.symbi", src)], mode="compile")
    assert not [d for d in result.diagnostics if d.sev.name == "ERROR"], result.diagnostics
    return list(result.jobs), list(result.agents)


def scenario_config(tmp_path: Path, smtp: SmtpPeer) -> Config:
    return make_config(tmp_path, smtp_host="127.0.0.1", smtp_port=smtp.port,
                       email_from="symbi@example.com", webhook_retry_attempts=3)


async def test_log_file_webhook_and_email_with_two_webhook_retries(
        tmp_path: Path, peer: HttpPeer) -> None:
    clock = FakeClock(T0)
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)
    peer.script("/hook", Answer(503, "busy"), Answer(503, "still busy"))
    with SmtpPeer() as smtp:
        config = scenario_config(tmp_path, smtp)
        jobs, agents = compiled_jobs(peer)
        store.deploy(jobs, agents)
        worker = DeliveryWorker(store, config, clock, env={"HOOK_SECRET": SECRET},
                                shutdown_timeout_seconds=1)
        sched = Scheduler(store, SchedulerConfig(), clock, owner_id="scenario",
                          on_event=chain_callbacks(worker.on_event))
        stop = asyncio.Event()
        loop_task = asyncio.create_task(worker.run(stop))
        try:
            clock.set(datetime(2026, 3, 8, 7, 0, tzinfo=UTC))
            await sched.run_until_idle()
            (run,) = store.list_runs("nightly-numbers")
            assert (run.status, run.output) == ("succeeded", "revenue up 3%")
            await settle(lambda: len(smtp.inbox.mails) == 1 and len(peer.at("/hook")) == 1)
            hook = delivery_id(run.id, "webhook")
            await settle(lambda: _status(store, hook) == "retrying" and clock.sleeper_count > 0)
            clock.advance(BACKOFF_BASE_SECONDS)  # first retry: 503 again
            await settle(lambda: len(peer.at("/hook")) == 2)
            await settle(lambda: _attempts(store, hook) == 2 and clock.sleeper_count > 0)
            clock.advance(BACKOFF_BASE_SECONDS * 2)  # second retry: accepted
            await settle(lambda: _status(store, hook) == "delivered")
        finally:
            stop.set()
            await asyncio.wait_for(loop_task, 5)

        # the log file has the entry
        log = (config.log_dir / "nightly-numbers.log").read_text()
        assert f"job=nightly-numbers run={run.id} status=succeeded" in log
        assert "  revenue up 3%" in log
        # the webhook got exactly one accepted request, correctly signed, after two retries
        requests = peer.at("/hook")
        assert [r.status for r in requests] == [503, 503, 200]
        accepted = [r for r in requests if r.status == 200]
        assert len(accepted) == 1
        body = accepted[0].body
        good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert accepted[0].headers["X-Symbi-Signature"] == good
        assert accepted[0].json()["output"] == "revenue up 3%"
        assert {r.headers["Idempotency-Key"] for r in requests} == {hook}
        # the e-mail arrived with the rendered subject
        (mail,) = smtp.inbox.mails
        assert mail.rcpt_tos == ["finance@example.com"]
        assert mail.message["Subject"] == "Numbers: succeeded for nightly-numbers"
        assert "revenue up 3%" in mail.message.get_content()
    # all three receipts are recorded
    receipts = {r.channel: r for r in receipts_for_runs(store, [run.id])[run.id]}
    assert set(receipts) == {"log_file", "webhook", "email"}
    assert all(r.status == "delivered" for r in receipts.values())
    assert (receipts["log_file"].attempts, receipts["email"].attempts) == (1, 1)
    assert [a.status_code for a in receipts["webhook"].history] == [503, 503, 200]
    assert receipts["email"].history[0].status_code == 250
    assert store.get_run(run.id).status == "succeeded"  # type: ignore[union-attr]
    assert store.audit_query(type="DeliveryFailed", limit=5) == []
    store.close()


def _status(store: SqliteStore, did: str) -> str | None:
    rows = store.query("SELECT status FROM deliveries WHERE id = ?", (did,))
    return rows[0][0] if rows else None


def _attempts(store: SqliteStore, did: str) -> int:
    rows = store.query("SELECT attempts FROM deliveries WHERE id = ?", (did,))
    return int(rows[0][0]) if rows else 0


async def test_pending_retry_survives_a_restart_and_completes_once(
        tmp_path: Path, peer: HttpPeer) -> None:
    clock = FakeClock(T0)
    config = make_config(tmp_path)
    peer.script("/hook", Answer(503, "busy"))
    first = SqliteStore.open(tmp_path / "state.db", clock=clock)
    from compiler.ir import JobDef

    first.add_job(JobDef(name="report", agent="echo", cron="0 7 * * *", delivery=("webhook",),
                         webhook_url=peer.url("/hook"), webhook_secret=SECRET), actor="test")
    run = store_finished_run(first, "report", output="payload")
    did = delivery_id(run.id, "webhook")
    w1 = DeliveryWorker(first, config, clock, shutdown_timeout_seconds=1)
    stop1 = asyncio.Event()
    t1 = asyncio.create_task(w1.run(stop1))
    w1.notify(run.id)
    await settle(lambda: _status(first, did) == "retrying")
    stop1.set()  # the worker stops while the retry is pending
    await asyncio.wait_for(t1, 5)
    first.close()
    assert len(peer.at("/hook")) == 1

    clock.advance(BACKOFF_BASE_SECONDS)
    second = SqliteStore.open(tmp_path / "state.db", clock=clock)
    w2 = DeliveryWorker(second, config, clock, shutdown_timeout_seconds=1)
    stop2 = asyncio.Event()
    t2 = asyncio.create_task(w2.run(stop2))
    try:
        await settle(lambda: _status(second, did) == "delivered")
        for _ in range(3):  # later wake-ups send nothing more
            clock.advance(3600)
            await asyncio.sleep(0.02)
    finally:
        stop2.set()
        await asyncio.wait_for(t2, 5)
    assert [r.status for r in peer.at("/hook")] == [503, 200]
    (receipt,) = list_deliveries(second, run_id=run.id)
    assert (receipt.status, receipt.attempts) == ("delivered", 2)
    assert [a.ok for a in receipt.history] == [False, True]
    second.close()


async def test_attempt_interrupted_by_a_crash_is_made_again_after_its_claim_expires(
        tmp_path: Path, peer: HttpPeer) -> None:
    clock = FakeClock(T0)
    config = make_config(tmp_path, webhook_timeout_seconds=5)
    first = SqliteStore.open(tmp_path / "state.db", clock=clock)
    from compiler.ir import JobDef

    first.add_job(JobDef(name="report", agent="echo", cron="0 7 * * *", delivery=("webhook",),
                         webhook_url=peer.url("/hook")), actor="test")
    run = store_finished_run(first, "report")
    w1 = DeliveryWorker(first, config, clock)
    w1.notify(run.id)
    w1._resolve_candidates()
    claims = w1._claim_due(clock.now(), 10)  # claimed, then the process "dies"
    assert [c.channel for c in claims] == ["webhook"]
    first.close()

    second = SqliteStore.open(tmp_path / "state.db", clock=clock)
    w2 = DeliveryWorker(second, config, clock)
    assert await w2.run_once() == 0  # the claim still holds
    assert w2.claim_seconds("webhook") == 5 + 1 + CLAIM_GRACE_SECONDS  # timeout + grace
    clock.advance(timedelta(seconds=w2.claim_seconds("webhook") - 1))
    assert await w2.run_once() == 0
    clock.advance(1)
    assert await w2.run_once() == 1
    assert len(peer.at("/hook")) == 1
    (receipt,) = list_deliveries(second, run_id=run.id)
    assert (receipt.status, receipt.attempts) == ("delivered", 1)
    second.close()
