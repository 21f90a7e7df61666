"""The delivery outbox (SPEC §5.8): channel registry, enqueue, the worker's attempts, retries
with persisted backoff, receipts, audit, start-up recovery — against a real SQLite file, a
FakeClock, a real local HTTP server and a real entry-point lookup for custom channels."""

from __future__ import annotations

import asyncio
import importlib.metadata
import io
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_delivery_peers import (
    CLASH_SITE,
    CUSTOM_SITE,
    Answer,
    HttpPeer,
    make_config,
    make_context,
    settle,
    store_finished_run,
)

from compiler.ir import AgentDef, JobDef
from runtime.clock import FakeClock
from runtime.config import SchedulerConfig
from runtime.delivery import (
    BACKOFF_BASE_SECONDS,
    BUILTIN_CHANNEL_FACTORIES,
    ChannelError,
    ChannelRegistry,
    DeliveryOutcome,
    DeliveryWorker,
    backoff_seconds,
    chain_callbacks,
    delivery_id,
    enqueue_deliveries,
    format_receipts,
    job_channels,
    list_deliveries,
    parse_retry_after,
    receipts_for_runs,
    resolve_deliver,
    run_payload,
)
from runtime.scheduler import Scheduler
from runtime.store import SqliteStore

T0 = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def peer() -> AsyncIterator[HttpPeer]:
    p = await HttpPeer().start()
    yield p
    await p.close()


@pytest.fixture
def custom_site(monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sample third-party channel distribution on sys.path (found through its
    dist-info's entry_points.txt)."""
    monkeypatch.syspath_prepend(str(CUSTOM_SITE))
    return CUSTOM_SITE


def add_job(store: SqliteStore, name: str = "report", **kw: Any) -> JobDef:
    kw.setdefault("cron", "0 7 * * *")
    job = JobDef(name=name, agent="echo", **kw)
    store.add_job(job, actor="test")
    return job


def worker_for(store: SqliteStore, clock: FakeClock, tmp_path: Path, *,
               env: dict[str, str] | None = None, registry: ChannelRegistry | None = None,
               **delivery: Any) -> DeliveryWorker:
    config = make_config(tmp_path, **delivery)
    registry = registry or ChannelRegistry(make_context(config, clock, env=env,
                                                        stdout=io.StringIO()))
    return DeliveryWorker(store, config, clock, registry, shutdown_timeout_seconds=1.0)


def row_status(store: SqliteStore, run_id: str, channel: str) -> tuple[str, int, str | None]:
    rows = store.query("SELECT status, attempts, next_attempt_at FROM deliveries WHERE id = ?",
                       (delivery_id(run_id, channel),))
    assert rows, f"no delivery row for {channel}"
    return rows[0][0], rows[0][1], rows[0][2]


# ------------------------------------------------------------------------------ registry


def test_builtins_are_the_compilers_channel_names() -> None:
    from compiler.ir import BUILTIN_CHANNELS

    assert tuple(BUILTIN_CHANNEL_FACTORIES) == BUILTIN_CHANNELS


def test_registry_builds_every_builtin(tmp_path: Path, clock: FakeClock) -> None:
    reg = ChannelRegistry(make_context(make_config(tmp_path), clock))
    for name in BUILTIN_CHANNEL_FACTORIES:
        ch = reg.get(name)
        assert ch.name == name
        assert reg.get(name) is ch  # built once


def test_discover_finds_custom_channel_through_entry_points(
        tmp_path: Path, clock: FakeClock, custom_site: Path) -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group="symbi.channels")}
    assert {"memo", "memo_factory", "broken"} <= names
    reg = ChannelRegistry.discover(make_context(make_config(tmp_path), clock))
    assert reg.names()[:5] == tuple(BUILTIN_CHANNEL_FACTORIES)
    assert {"memo", "memo_factory", "broken"} <= set(reg.names())
    memo = reg.get("memo")
    assert type(memo).__module__ == "symbi_test_channel"
    assert memo.context.log_dir == tmp_path / "data" / "logs"  # built with the context
    factory_made = reg.get("memo_factory")  # a zero-argument factory function
    assert type(factory_made).__name__ == "_Standalone"


def test_discover_without_plugins_knows_only_builtins(tmp_path: Path, clock: FakeClock) -> None:
    reg = ChannelRegistry.discover(make_context(make_config(tmp_path), clock))
    assert "memo" not in reg
    with pytest.raises(ChannelError, match=r"delivery channel `memo` is not installed: no "
                       r"`symbi.channels` entry point named `memo`"):
        reg.get("memo")


def test_custom_channel_with_a_builtin_name_is_an_error(
        tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(CLASH_SITE))
    with pytest.raises(ChannelError) as e:
        ChannelRegistry.discover(make_context(make_config(tmp_path), clock))
    msg = str(e.value)
    assert "custom delivery channel `slack`" in msg
    assert "symbi-clash-channel" in msg  # names the distribution to blame
    assert "has the name of a built-in channel" in msg
    reg = ChannelRegistry(make_context(make_config(tmp_path), clock))
    with pytest.raises(ChannelError, match="name of a built-in"):
        reg.register("webhook", object())


def test_broken_entry_point_fails_on_use_with_clear_message(
        tmp_path: Path, clock: FakeClock, custom_site: Path) -> None:
    reg = ChannelRegistry.discover(make_context(make_config(tmp_path), clock))
    with pytest.raises(ChannelError, match=r"`broken` \(entry point `broken = "
                       r"symbi_test_channel_missing:Channel` in distribution "
                       r"`symbi-test-channel`\) does not load: ModuleNotFoundError"):
        reg.get("broken")


def test_registered_object_without_async_route_is_refused(tmp_path: Path,
                                                          clock: FakeClock) -> None:
    class NotAChannel:
        def route(self) -> None: ...

    reg = ChannelRegistry(make_context(make_config(tmp_path), clock),
                          custom={"odd": NotAChannel})
    with pytest.raises(ChannelError, match=r"`odd` is not a channel: it needs an `async def "
                       r"route"):
        reg.get("odd")


# ------------------------------------------------------------------------------ helpers


def test_deliver_uri_is_folded_for_hand_made_jobs() -> None:
    j = resolve_deliver(JobDef(name="a", agent="x", deliver="webhook+https://h.example/x"))
    assert (j.delivery, j.webhook_url) == (("webhook",), "https://h.example/x")
    j = resolve_deliver(JobDef(name="a", agent="x", delivery=("stdout",),
                               deliver="email://a@b.example,c@d.example"))
    assert j.delivery == ("stdout", "email")
    assert j.email_recipients == ("a@b.example", "c@d.example")
    j = resolve_deliver(JobDef(name="a", agent="x", deliver="slack://#ops",
                               slack_channel="#set"))
    assert j.slack_channel == "#set"  # an explicit setting wins
    assert job_channels(JobDef(name="a", agent="x", delivery=("stdout", "stdout"),
                               deliver="stdout://")) == ("stdout",)


def test_retry_after_and_backoff() -> None:
    assert parse_retry_after("7", T0) == 7.0
    assert parse_retry_after("Sun, 08 Mar 2026 07:00:30 GMT", T0) == 30.0
    assert parse_retry_after("garbage", T0) is None
    assert parse_retry_after(None, T0) is None
    assert [backoff_seconds(n) for n in (1, 2, 3)] == [BACKOFF_BASE_SECONDS,
                                                        BACKOFF_BASE_SECONDS * 2,
                                                        BACKOFF_BASE_SECONDS * 4]
    assert backoff_seconds(50) == 600.0
    assert backoff_seconds(1, retry_after=42.0) == 42.0
    assert backoff_seconds(1, retry_after=1e9) == 3600.0


def test_chain_callbacks_calls_all_even_if_one_fails() -> None:
    seen: list[str] = []

    def bad(kind: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    chain_callbacks(lambda k, p: seen.append("a" + k), None, bad,
                    lambda k, p: seen.append("b" + k))("x", {})
    assert seen == ["ax", "bx"]


def test_payload_shape(store: SqliteStore) -> None:
    job = add_job(store, delivery=("webhook",), webhook_url="https://h.example/x")
    run = store_finished_run(store, "report", output="out")
    p = run_payload(job, run, "out")
    assert set(p) == {"job", "run", "output", "summary"}
    assert p["job"] == {"id": run.job_id, "name": "report", "agent": "echo"}
    assert set(p["run"]) == {"id", "status", "trigger", "scheduled_for", "started_at",
                             "finished_at", "duration_ms", "attempt", "error"}
    assert p["run"]["finished_at"] == run.finished_at.isoformat()  # type: ignore[union-attr]
    assert (p["output"], p["summary"]) == ("out", "out")


# ------------------------------------------------------------------------------ outbox


def test_enqueue_one_row_per_channel_idempotent(store: SqliteStore) -> None:
    add_job(store, delivery=("stdout", "log_file"))
    run = store_finished_run(store, "report")
    job = store.get_job("report")
    assert job is not None
    ids = enqueue_deliveries(store, job, run)
    assert ids == [delivery_id(run.id, "stdout"), delivery_id(run.id, "log_file")]
    assert enqueue_deliveries(store, job, run) == []  # a second enqueue adds nothing
    receipts = list_deliveries(store, run_id=run.id)
    assert sorted(r.channel for r in receipts) == ["log_file", "stdout"]
    assert all(r.status == "pending" and r.attempts == 0 for r in receipts)
    assert all(r.next_attempt_at == T0 for r in receipts)


async def test_worker_delivers_and_records_attempt(store: SqliteStore, clock: FakeClock,
                                                   tmp_path: Path, peer: HttpPeer) -> None:
    add_job(store, delivery=("webhook", "log_file"), webhook_url=peer.url("/hook"))
    run = store_finished_run(store, "report", output="the output")
    seen: list[tuple[str, str]] = []
    w = worker_for(store, clock, tmp_path)
    w.on_delivery = lambda ch, st: seen.append((ch, st))
    w.notify(run.id)
    assert await w.run_once() == 2
    assert len(peer.at("/hook")) == 1
    assert peer.at("/hook")[0].json()["output"] == "the output"
    receipts = receipts_for_runs(store, [run.id, "no-such-run"])
    assert receipts["no-such-run"] == []
    by_channel = {r.channel: r for r in receipts[run.id]}
    assert by_channel["webhook"].status == "delivered"
    assert by_channel["webhook"].history[0].status_code == 200
    assert by_channel["webhook"].history[0].ok is True
    assert by_channel["webhook"].history[0].at == T0
    assert by_channel["log_file"].status == "delivered"
    assert by_channel["log_file"].next_attempt_at is None
    assert sorted(seen) == [("log_file", "delivered"), ("webhook", "delivered")]
    assert format_receipts(receipts[run.id]) in ("log_file ok, webhook ok",
                                                 "webhook ok, log_file ok")
    assert await w.run_once() == 0  # nothing left
    got = store.get_run(run.id)
    assert got is not None and got.status == "succeeded"


async def test_retries_persist_backoff_and_honour_retry_after(
        store: SqliteStore, clock: FakeClock, tmp_path: Path, peer: HttpPeer) -> None:
    add_job(store, delivery=("webhook",), webhook_url=peer.url("/hook"))
    run = store_finished_run(store, "report")
    peer.script("/hook", Answer(500, "oops"), Answer(429, "slow down", {"Retry-After": "40"}))
    w = worker_for(store, clock, tmp_path, webhook_retry_attempts=3)
    w.notify(run.id)
    assert await w.run_once() == 1
    status, attempts, nxt = row_status(store, run.id, "webhook")
    assert (status, attempts) == ("retrying", 1)
    assert nxt == (T0 + timedelta(seconds=BACKOFF_BASE_SECONDS)).isoformat(
        timespec="microseconds")
    assert await w.run_once() == 0  # not due yet
    clock.advance(BACKOFF_BASE_SECONDS)
    assert await w.run_once() == 1  # 429 with Retry-After: 40
    status, attempts, nxt = row_status(store, run.id, "webhook")
    assert (status, attempts) == ("retrying", 2)
    assert nxt == (clock.now() + timedelta(seconds=40)).isoformat(timespec="microseconds")
    clock.advance(39)
    assert await w.run_once() == 0
    clock.advance(1)
    assert await w.run_once() == 1
    (r,) = list_deliveries(store, run_id=run.id)
    assert (r.status, r.attempts) == ("delivered", 3)
    assert [(a.attempt, a.ok, a.status_code) for a in r.history] == [
        (1, False, 500), (2, False, 429), (3, True, 200)]
    assert r.history[0].error == "HTTP 500: oops"
    assert len(peer.at("/hook")) == 3
    assert len({q.headers["Idempotency-Key"] for q in peer.at("/hook")}) == 1


async def test_permanent_failure_fails_at_once_and_is_audited(
        store: SqliteStore, clock: FakeClock, tmp_path: Path, peer: HttpPeer) -> None:
    add_job(store, delivery=("webhook",), webhook_url=peer.url("/hook"))
    run = store_finished_run(store, "report")
    peer.script("/hook", Answer(404, "no such hook"))
    seen: list[tuple[str, str]] = []
    w = worker_for(store, clock, tmp_path)
    w.on_delivery = lambda ch, st: seen.append((ch, st))
    w.notify(run.id)
    await w.run_once()
    (r,) = list_deliveries(store, run_id=run.id)
    assert (r.status, r.attempts, r.last_error) == ("failed", 1, "HTTP 404: no such hook")
    assert seen == [("webhook", "failed")]
    (ev,) = store.audit_query(type="DeliveryFailed", limit=10)
    assert (ev.job_name, ev.run_id, ev.actor) == ("report", run.id, "delivery")
    assert ev.details["channel"] == "webhook"
    assert ev.details["status_code"] == 404
    assert store.audit_verify().ok
    got = store.get_run(run.id)
    assert got is not None and got.status == "succeeded"  # the run is not touched


async def test_attempts_are_bounded_by_webhook_retry_attempts(
        store: SqliteStore, clock: FakeClock, tmp_path: Path, peer: HttpPeer) -> None:
    add_job(store, delivery=("webhook",), webhook_url=peer.url("/hook"), audit="none")
    run = store_finished_run(store, "report")
    peer.default("/hook", Answer(503, "down"))
    w = worker_for(store, clock, tmp_path, webhook_retry_attempts=2)
    w.notify(run.id)
    for _ in range(6):
        await w.run_once()
        clock.advance(3600)
    (r,) = list_deliveries(store, run_id=run.id)
    assert (r.status, r.attempts) == ("failed", 3)
    assert len(peer.at("/hook")) == 3
    assert store.audit_query(type="DeliveryFailed", limit=10) == []  # audit: none


async def test_channel_not_installed_is_a_failed_delivery(
        store: SqliteStore, clock: FakeClock, tmp_path: Path) -> None:
    add_job(store, delivery=("pager",))
    run = store_finished_run(store, "report")
    w = worker_for(store, clock, tmp_path)
    w.notify(run.id)
    await w.run_once()
    (r,) = list_deliveries(store, run_id=run.id)
    assert r.status == "failed"
    assert r.last_error is not None
    assert "delivery channel `pager` is not installed" in r.last_error
    assert store.audit_query(type="DeliveryFailed", limit=5)[0].details["channel"] == "pager"


async def test_custom_channel_end_to_end_through_entry_point(
        store: SqliteStore, clock: FakeClock, tmp_path: Path, custom_site: Path) -> None:
    add_job(store, delivery=("memo",))
    run = store_finished_run(store, "report", output="to the memo")
    config = make_config(tmp_path)
    w = DeliveryWorker(store, config, clock)  # registry discovered from entry points
    w.notify(run.id)
    await w.run_once()
    (r,) = list_deliveries(store, run_id=run.id)
    assert r.status == "delivered"
    lines = (config.log_dir / "memo-channel.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"channel": "memo", "job": "report", "run": run.id, "output": "to the memo"}]


async def test_channel_exceptions_and_bad_returns_are_contained(
        store: SqliteStore, clock: FakeClock, tmp_path: Path) -> None:
    class Raises:
        name = "raises"
        max_attempts = 1

        async def route(self, channel: str, job: JobDef, run: Any, output: str) -> Any:
            raise KeyError("surprise")

    class Returns:
        name = "returns"

        async def route(self, channel: str, job: JobDef, run: Any, output: str) -> Any:
            return True

    config = make_config(tmp_path)
    reg = ChannelRegistry(make_context(config, clock), custom={"raises": Raises(),
                                                               "returns": Returns})
    add_job(store, delivery=("raises", "returns"))
    run = store_finished_run(store, "report")
    w = DeliveryWorker(store, config, clock, reg)
    w.notify(run.id)
    await w.run_once()
    got = {r.channel: r for r in list_deliveries(store, run_id=run.id)}
    assert got["raises"].status == "failed"
    assert "channel `raises` raised KeyError: 'surprise'" in (got["raises"].last_error or "")
    assert got["returns"].status == "failed"
    assert got["returns"].last_error == "channel `returns` returned bool, not a DeliveryOutcome"


async def test_each_attempt_has_a_timeout_and_channels_run_concurrently(
        store: SqliteStore, clock: FakeClock, tmp_path: Path) -> None:
    class Slow:
        name = "slow"
        timeout_seconds = 0.2
        max_attempts = 2
        active = 0
        peak = 0

        async def route(self, channel: str, job: JobDef, run: Any, output: str) -> Any:
            Slow.active += 1
            Slow.peak = max(Slow.peak, Slow.active)
            try:
                await asyncio.sleep(10)
            finally:
                Slow.active -= 1
            return DeliveryOutcome.success()

    config = make_config(tmp_path)
    reg = ChannelRegistry(make_context(config, clock), custom={"slow": Slow(),
                                                               "slow2": Slow()})
    add_job(store, delivery=("slow", "slow2"))
    run = store_finished_run(store, "report")
    w = DeliveryWorker(store, config, clock, reg)
    w.notify(run.id)
    started = time.monotonic()
    assert await w.run_once() == 2
    assert time.monotonic() - started < 1.0  # both timed out together, not one after another
    assert Slow.peak == 2
    for r in list_deliveries(store, run_id=run.id):
        assert (r.status, r.attempts) == ("retrying", 1)
        assert r.last_error == "timed out after 0.2s"


async def test_two_workers_on_one_database_do_not_send_twice(
        tmp_path: Path, clock: FakeClock, peer: HttpPeer) -> None:
    a = SqliteStore.open(tmp_path / "state.db", clock=clock)
    b = SqliteStore.open(tmp_path / "state.db", clock=clock)
    try:
        add_job(a, delivery=("webhook",), webhook_url=peer.url("/hook"))
        runs = [store_finished_run(a, "report", output=f"o{i}") for i in range(5)]
        peer.default("/hook", Answer(200, "ok", delay=0.05))
        wa, wb = worker_for(a, clock, tmp_path), worker_for(b, clock, tmp_path)
        for r in runs:
            wa.notify(r.id)
        wa._resolve_candidates()
        await asyncio.gather(wa.run_once(), wb.run_once())
        assert sorted(q.json()["output"] for q in peer.at("/hook")) == [
            f"o{i}" for i in range(5)]
        assert all(r.status == "delivered" for r in list_deliveries(a))
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------------------------ recovery


async def test_recover_enqueues_runs_lost_between_finish_and_enqueue(
        store: SqliteStore, clock: FakeClock, tmp_path: Path) -> None:
    add_job(store, delivery=("log_file",))
    delivered = store_finished_run(store, "report", output="first")
    w = worker_for(store, clock, tmp_path)
    w.notify(delivered.id)
    await w.run_once()
    clock.advance(60)
    lost = store_finished_run(store, "report", output="second")  # nobody told the worker
    failed = store_finished_run(store, "report", status="failed", output="")
    skipped_like = store_finished_run(store, "report", status="cancelled", output="")
    w2 = worker_for(store, clock, tmp_path)
    assert w2.recover() == 2
    assert receipts_for_runs(store, [skipped_like.id])[skipped_like.id] == []
    await w2.run_once()
    log = (tmp_path / "data" / "logs" / "report.log").read_text()
    assert log.count("job=report") == 3
    assert f"run={lost.id}" in log and f"run={failed.id}" in log
    assert w2.recover() == 0


def test_recover_does_not_send_old_runs_when_a_channel_is_added(
        store: SqliteStore, clock: FakeClock, tmp_path: Path) -> None:
    add_job(store)  # no channels
    for _ in range(3):
        store_finished_run(store, "report")
        clock.advance(60)
    store.update_job("report", JobDef(name="report", agent="echo", cron="0 7 * * *",
                                      delivery=("log_file",)), actor="test")
    w = worker_for(store, clock, tmp_path)
    assert w.recover() == 0
    assert list_deliveries(store) == []


async def test_recover_ignores_runs_older_than_the_window(
        store: SqliteStore, clock: FakeClock, tmp_path: Path) -> None:
    add_job(store, delivery=("log_file",))
    first = store_finished_run(store, "report")
    w = worker_for(store, clock, tmp_path)
    w.notify(first.id)
    await w.run_once()
    clock.advance(60)
    store_finished_run(store, "report")
    clock.advance(timedelta(hours=25))
    assert worker_for(store, clock, tmp_path).recover() == 0


# ------------------------------------------------------------------------------ the loop


def _deploy_echo(store: SqliteStore, job: JobDef) -> None:
    store.deploy([job], [AgentDef(name="echo", executor="python",
                                  handler="stdlib.agents.echo:run")])


async def test_scheduler_events_feed_the_worker(store: SqliteStore, clock: FakeClock,
                                                tmp_path: Path, peer: HttpPeer) -> None:
    _deploy_echo(store, JobDef(name="tick", agent="echo", cron="* * * * *", input="hi there",
                               delivery=("webhook",), webhook_url=peer.url("/hook")))
    w = worker_for(store, clock, tmp_path)
    events: list[str] = []
    sched = Scheduler(store, SchedulerConfig(), clock, owner_id="t",
                      on_event=chain_callbacks(lambda k, p: events.append(k), w.on_event))
    clock.advance(60)
    await sched.run_until_idle()
    assert "run_finished" in events
    assert await w.run_once() == 1
    (req,) = peer.at("/hook")
    body = req.json()
    assert (body["job"]["name"], body["run"]["status"], body["output"]) == (
        "tick", "succeeded", "hi there")
    (run,) = store.list_runs("tick")
    assert [r.status for r in receipts_for_runs(store, [run.id])[run.id]] == ["delivered"]


async def test_run_loop_sends_retries_when_the_clock_reaches_them(
        store: SqliteStore, clock: FakeClock, tmp_path: Path, peer: HttpPeer) -> None:
    add_job(store, delivery=("webhook",), webhook_url=peer.url("/hook"))
    peer.script("/hook", Answer(502, "bad gateway"))
    w = worker_for(store, clock, tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        run = store_finished_run(store, "report")
        w.on_event("run_finished", {"run_id": run.id, "job_id": run.job_id,
                                    "status": "succeeded"})
        await settle(lambda: len(peer.at("/hook")) == 1)
        await settle(lambda: row_status(store, run.id, "webhook")[0] == "retrying")
        await settle(lambda: clock.sleeper_count > 0)
        clock.advance(BACKOFF_BASE_SECONDS)
        await settle(lambda: row_status(store, run.id, "webhook")[0] == "delivered")
        assert len(peer.at("/hook")) == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_on_event_ignores_runs_without_output(store: SqliteStore, clock: FakeClock,
                                                    tmp_path: Path) -> None:
    add_job(store, delivery=("log_file",))
    run = store_finished_run(store, "report", status="cancelled")
    w = worker_for(store, clock, tmp_path)
    w.on_event("run_finished", {"run_id": run.id, "status": "cancelled"})
    w.on_event("run_started", {"run_id": run.id, "status": "running"})
    assert await w.run_once() == 0
    assert list_deliveries(store) == []


async def test_candidate_waits_until_the_scheduler_wrote_the_result(
        store: SqliteStore, clock: FakeClock, tmp_path: Path) -> None:
    add_job(store, delivery=("log_file",))
    pending = store.request_manual_run("report", input="", actor="test")
    w = worker_for(store, clock, tmp_path)
    w.on_event("run_finished", {"run_id": pending.id, "status": "succeeded"})
    assert await w.run_once() == 0  # the run is not final in the store yet
    assert list_deliveries(store) == []
    from runtime.store import RunRecord, WriteBatch

    rec = RunRecord.from_row(pending)
    rec.status, rec.finished_at, rec.output = "succeeded", clock.now(), "late"
    store.write_batch(WriteBatch(run_updates=[rec]))
    assert await w.run_once() == 1
    assert [r.status for r in list_deliveries(store)] == ["delivered"]


async def test_stop_makes_a_last_pass_for_runs_finished_just_before(
        store: SqliteStore, clock: FakeClock, tmp_path: Path, peer: HttpPeer) -> None:
    add_job(store, delivery=("webhook",), webhook_url=peer.url("/hook"))
    w = worker_for(store, clock, tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await settle(lambda: clock.sleeper_count > 0)  # idle
    run = store_finished_run(store, "report", output="last words")
    w.on_event("run_finished", {"run_id": run.id, "status": "succeeded"})
    stop.set()  # before the worker got to it
    await asyncio.wait_for(task, 5)
    assert [q.json()["output"] for q in peer.at("/hook")] == ["last words"]
    assert [r.status for r in list_deliveries(store, run_id=run.id)] == ["delivered"]


async def test_deliver_run_now_sends_only_that_run(store: SqliteStore, clock: FakeClock,
                                                   tmp_path: Path, peer: HttpPeer) -> None:
    from runtime.delivery import deliver_run_now

    add_job(store, delivery=("webhook",), webhook_url=peer.url("/hook"))
    other = store_finished_run(store, "report", output="other")
    enqueue_deliveries(store, store.get_job("report"), other)  # type: ignore[arg-type]
    mine = store_finished_run(store, "report", output="mine")
    receipts = await deliver_run_now(store, make_config(tmp_path), mine.id, clock=clock)
    assert [(r.channel, r.status) for r in receipts] == [("webhook", "delivered")]
    assert [q.json()["output"] for q in peer.at("/hook")] == ["mine"]
    assert [r.status for r in list_deliveries(store, run_id=other.id)] == ["pending"]
    assert await deliver_run_now(store, make_config(tmp_path), mine.id, clock=clock) == receipts
    assert len(peer.at("/hook")) == 1  # already delivered: nothing sent again
