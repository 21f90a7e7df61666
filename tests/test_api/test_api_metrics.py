"""Prometheus metrics: every family exposed; counters follow the scheduler's events and agree
with the store after a restart; without a scheduler they are read from the store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from conftest import _serve, config, family, pick, samples

from compiler.compile import stdlib_agents
from compiler.ir import AgentDef, JobDef
from runtime.clock import FakeClock
from runtime.config import SchedulerConfig
from runtime.metrics import CronMetrics, chain_on_event, metric_names
from runtime.scheduler import Scheduler
from runtime.store import SqliteStore, format_ts

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
ECHO = stdlib_agents()["echo"][0]
BAD = AgentDef(name="bad", executor="command", command="echo boom >&2; exit 3")


async def _history(store: SqliteStore, clock: FakeClock) -> Scheduler:
    """Runs of every kind through a real scheduler: successes, a failure that dead-letters,
    missed occurrences (catchup skip after a gap)."""
    store.deploy([JobDef(name="ok", agent="echo", cron="* * * * *", catchup="skip"),
                  JobDef(name="bad", agent="bad", cron="0 * * * *", max_retries=0)],
                 [ECHO, BAD])
    sched = Scheduler(store, SchedulerConfig(), clock, owner_id="metrics-test")
    for minutes in (1, 2, 3):
        clock.set(T0 + timedelta(minutes=minutes))
        await sched.run_until_idle()
    clock.set(T0 + timedelta(minutes=30))  # a gap: 26 occurrences missed (catchup skip)
    await sched.run_until_idle()
    clock.set(T0 + timedelta(hours=1))  # `bad` fails and is dead-lettered; `ok` catches up
    await sched.run_until_idle()
    return sched


async def test_counters_from_events_equal_a_rebuild_from_the_store(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)
    store.deploy([], [ECHO, BAD])
    probe = Scheduler(store, SchedulerConfig(), clock, owner_id="metrics-test")

    class LeaseHolder:  # what CronMetrics reads of a scheduler that holds the lease
        in_flight = 0
        holds_lease = True

    live = CronMetrics(store, scheduler=LeaseHolder())  # nothing in the store yet
    seen: list[str] = []
    probe.on_event = lambda kind, p: seen.append(kind)
    chain_on_event(probe, live.on_event)
    # run the history through the scheduler whose events the live collector gets
    store.deploy([JobDef(name="ok", agent="echo", cron="* * * * *", catchup="skip"),
                  JobDef(name="bad", agent="bad", cron="0 * * * *", max_retries=0)],
                 [ECHO, BAD])
    for minutes in (1, 2, 3, 30, 60):
        clock.set(T0 + timedelta(minutes=minutes))
        await probe.run_until_idle()
    assert "run_finished" in seen and "dead_letter" in seen and "run_missed" in seen
    live_s = samples(live.render()[0])
    restarted = samples(CronMetrics(store).render()[0])  # what a restart rebuilds
    for prefix in ("symbiont_cron_runs_total", "symbiont_cron_dead_letter_total",
                   "symbiont_cron_skipped_total", "symbiont_cron_execution_duration_seconds",
                   "symbiont_cron_fire_lateness_seconds"):
        assert family(live_s, prefix) == family(restarted, prefix), prefix
    # and both agree with the runs table
    for (name, status), n in {(r[0], r[1]): r[2] for r in store.query(
            "SELECT job_name, status, COUNT(*) FROM runs GROUP BY 1, 2")}.items():
        assert pick(live_s, "symbiont_cron_runs_total", job_name=name, status=status) == n
    assert pick(live_s, "symbiont_cron_runs_total", job_name="ok", status="succeeded") == 5
    assert pick(live_s, "symbiont_cron_runs_total", job_name="bad", status="failed") == 1
    assert pick(live_s, "symbiont_cron_dead_letter_total", job_name="bad") == 1
    missed = pick(live_s, "symbiont_cron_skipped_total", job_name="ok", reason="missed_skip")
    assert missed == store.query("SELECT COUNT(*) FROM runs WHERE status = 'missed'")[0][0] > 20
    executed = store.query("SELECT COUNT(*) FROM runs WHERE duration_ms IS NOT NULL")[0][0]
    assert sum(v for (n, _), v in live_s.items()
               if n == "symbiont_cron_execution_duration_seconds_count") == executed == 6
    # the live numbers came from the events, not from the table: change the table behind its
    # back and only a rebuild sees it
    with store.transaction() as conn:
        conn.execute("DELETE FROM runs WHERE job_name = 'ok'")
    assert samples(live.render()[0]) == live_s
    assert pick(samples(CronMetrics(store).render()[0]), "symbiont_cron_runs_total",
                job_name="ok", status="succeeded") == 0
    store.close()


async def test_every_family_is_exposed_with_store_gauges(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)
    await _history(store, clock)
    run_ids = [r.id for r in store.list_runs("ok", limit=4, status="succeeded")]
    now = format_ts(clock.now())
    with store.transaction() as conn:
        for i, (channel, status) in enumerate([("webhook", "delivered"), ("webhook", "failed"),
                                               ("slack", "delivered"), ("email", "pending")]):
            conn.execute("INSERT INTO deliveries (id, run_id, job_id, channel, status,"
                         " created_at, updated_at) SELECT ?, id, job_id, ?, ?, ?, ? FROM runs"
                         " WHERE id = ?", (f"d{i}", channel, status, now, now, run_ids[i]))
    text = CronMetrics(store).render()[0].decode()
    for name in metric_names():
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    smp = samples(text)
    assert pick(smp, "symbiont_cron_deliveries_total", channel="webhook", status="delivered") == 1
    assert pick(smp, "symbiont_cron_deliveries_total", channel="webhook", status="failed") == 1
    assert pick(smp, "symbiont_cron_deliveries_total", channel="slack", status="delivered") == 1
    assert ("symbiont_cron_deliveries_total", (("channel", "email"), ("status", "pending"))) \
        not in smp
    counts = store.count_jobs()
    assert counts["dead_letter"] == 1 and counts["active"] == 1
    for status, n in counts.items():
        assert pick(smp, "symbiont_cron_jobs", status=status) == n
    assert pick(smp, "symbiont_cron_in_flight_jobs") == 0
    store.close()


async def test_without_a_scheduler_scrapes_read_the_store(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)
    metrics = CronMetrics(store, refresh_seconds=0)
    assert pick(samples(metrics.render()[0]), "symbiont_cron_runs_total",
                job_name="ok", status="succeeded") == 0
    await _history(store, clock)  # another "process" ran jobs meanwhile
    smp = samples(metrics.render()[0])
    assert pick(smp, "symbiont_cron_runs_total", job_name="ok", status="succeeded") == 5
    assert pick(smp, "symbiont_cron_dead_letter_total", job_name="bad") == 1
    with store.transaction() as conn:
        conn.execute("UPDATE runs SET status = 'running', finished_at = NULL WHERE id = ?",
                     (store.list_runs("ok", limit=1)[0].id,))
    assert pick(samples(metrics.render()[0]), "symbiont_cron_in_flight_jobs") == 1
    totals = metrics.totals()
    assert (totals.runs_succeeded, totals.runs_failed) == (4, 1)
    assert totals.runs_total == 5 and totals.longest_run_ms >= totals.average_execution_time_ms
    store.close()


async def test_metrics_and_health_over_http(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)
    await _history(store, clock)
    runner, base = await _serve(store, config())
    try:
        async with aiohttp.ClientSession() as s:
            for path in ("/metrics", "/api/v1/metrics"):
                async with s.get(base + path) as resp:
                    assert resp.status == 200 and resp.content_type == "text/plain"
                    smp = samples(await resp.text())
                    assert pick(smp, "symbiont_cron_runs_total", job_name="ok",
                                status="succeeded") == 5
            async with s.get(base + "/api/v1/health/scheduler") as resp:
                sdk = await resp.json()
            async with s.get(base + "/api/v1/health/scheduler?format=seed") as resp:
                seed = await resp.json()
    finally:
        await runner.cleanup()
    assert sdk["runs_total"] == 6 and sdk["runs_succeeded"] == 5 and sdk["runs_failed"] == 1
    assert sdk["jobs_total"] == 2 and sdk["jobs_dead_letter"] == 1 and sdk["jobs_active"] == 1
    assert sdk["is_running"] is False  # no scheduler holds the lease
    assert sdk["store_accessible"] is True and sdk["max_concurrent"] == 7
    assert seed == {"status": "degraded", "active_jobs": 1, "paused_jobs": 0,
                    "in_flight_jobs": 0,
                    "metrics": {"runs_total": 6, "runs_succeeded": 5, "runs_failed": 1,
                                "avg_execution_time_ms": sdk["average_execution_time_ms"]}}
    durations = [r[0] for r in store.query(
        "SELECT duration_ms FROM runs WHERE status IN ('succeeded', 'failed')")]
    assert sdk["longest_run_ms"] == max(durations)
    assert abs(sdk["average_execution_time_ms"] - sum(durations) / len(durations)) < 0.01
    store.close()


async def test_a_standby_scheduler_reads_the_store_until_it_takes_over(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)

    class Standby:
        in_flight = 3
        holds_lease = False

    sched = Standby()
    metrics = CronMetrics(store, scheduler=sched, refresh_seconds=0)
    await _history(store, clock)  # the lease holder (another process) ran these
    smp = samples(metrics.render()[0])
    assert pick(smp, "symbiont_cron_runs_total", job_name="ok", status="succeeded") == 5
    assert pick(smp, "symbiont_cron_in_flight_jobs") == 0  # the store's, not the standby's
    sched.holds_lease = True
    metrics.on_event("lease_acquired", {"owner": "me"})
    metrics.on_event("run_finished", {"job_name": "ok", "status": "succeeded",
                                      "duration_ms": 5, "lateness_ms": 1})
    smp = samples(metrics.render()[0])
    assert pick(smp, "symbiont_cron_runs_total", job_name="ok", status="succeeded") == 6
    assert pick(smp, "symbiont_cron_in_flight_jobs") == 3
    store.close()


async def test_metrics_can_be_disabled_by_config(tmp_path: Path) -> None:
    """`[scheduler] enable_metrics = false` turns the endpoint off (404 with a reason)."""
    from runtime.config import Config

    store = SqliteStore.open(tmp_path / "state.db")
    cfg = config()
    cfg = Config(api=cfg.api, scheduler=SchedulerConfig(enable_metrics=False))
    runner, base = await _serve(store, cfg)
    try:
        async with aiohttp.ClientSession() as s:
            for path in ("/metrics", "/api/v1/metrics"):
                async with s.get(base + path) as resp:
                    body = await resp.json()
                    assert resp.status == 404 and body["code"] == "METRICS_DISABLED"
            async with s.get(base + "/api/v1/health/scheduler") as resp:
                assert resp.status == 200  # health stays available
    finally:
        await runner.cleanup()
        store.close()
