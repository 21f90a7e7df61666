"""Scheduler scenarios (SPEC §5.1–5.3) with a FakeClock, a real SQLite file and real executors
(python handlers from ``test_scheduler_handlers``, ``/bin/sh`` commands)."""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from runtime_support import T0, Events, M, S, until

from compiler.ir import AgentDef, JobDef, SchedulePolicy
from runtime.clock import FakeClock
from runtime.config import SchedulerConfig
from runtime.policy import Decision, Deny
from runtime.scheduler import MISSED_ROW_CAP, Scheduler, run_manual_now
from runtime.store import RunRecord, RunRow, SqliteStore, WriteBatch, new_run_id

HERE = Path(__file__).parent
REPO = HERE.parents[1]


pytestmark = pytest.mark.usefixtures("handlers_importable")


def py(name: str = "py", handler: str = "ok", **kw: Any) -> AgentDef:
    return AgentDef(name=name, executor="python", handler=f"test_scheduler_handlers:{handler}",
                    **kw)


def sh(name: str, command: str, **kw: Any) -> AgentDef:
    return AgentDef(name=name, executor="command", command=command, **kw)


def job(name: str, **kw: Any) -> JobDef:
    kw.setdefault("cron", "* * * * *")
    kw.setdefault("agent", "py")
    return JobDef(name=name, **kw)


def make(store: SqliteStore, clock: FakeClock, *, owner: str = "test",
         events: Events | None = None, rng: random.Random | None = None,
         standby: bool = True, **config: Any) -> Scheduler:
    config.setdefault("tick_interval_seconds", 1.0)
    return Scheduler(store, SchedulerConfig(**config), clock, owner_id=owner,
                     on_event=events, rng=rng, standby=standby)


def runs(store: SqliteStore, ref: str | None = None) -> list[RunRow]:
    """Runs oldest first (by scheduled time, then attempt)."""
    return sorted(store.list_runs(ref, limit=100_000),
                  key=lambda r: (r.scheduled_for, r.attempt, r.created_at))


async def settle() -> None:
    """Let tasks the scheduler just created start (they stamp their start time then)."""
    for _ in range(5):
        await asyncio.sleep(0)


# ------------------------------------------------------------------ basics


async def test_due_job_runs_on_time_and_records_the_run(store: SqliteStore,
                                                        clock: FakeClock) -> None:
    store.deploy([job("a", cron="*/5 * * * *", input="hello")], [py()])
    s = make(store, clock)
    await s.run_until_idle()
    assert runs(store) == []  # nothing due at T0
    clock.set(T0 + 5 * M)
    await s.run_until_idle()
    (r,) = runs(store, "a")
    assert (r.status, r.trigger, r.attempt, r.owner) == ("succeeded", "schedule", 1, "test")
    assert r.output == "ok:hello" and r.summary == "ok:hello" and r.error is None
    assert r.scheduled_for == r.started_at == r.finished_at == T0 + 5 * M
    assert (r.lateness_ms, r.jitter_ms, r.start_delay_ms, r.duration_ms) == (0, 0, 0, 0)
    j = store.get_job("a")
    assert j is not None
    assert j.next_run == T0 + 10 * M and j.run_count == 1 and j.last_run == T0 + 5 * M
    (ev,) = store.audit_query(type="CronJobExecuted")
    assert ev.run_id == r.id and ev.details["status"] == "succeeded"
    assert store.audit_verify().ok


async def test_next_run_comes_from_the_scheduled_time(store: SqliteStore,
                                                      clock: FakeClock) -> None:
    store.deploy([job("a", cron="*/5 * * * *")], [py()])
    s = make(store, clock)
    clock.set(T0 + 5 * M + timedelta(milliseconds=800))  # the loop woke a bit late
    await s.run_until_idle()
    (r,) = runs(store, "a")
    assert r.scheduled_for == T0 + 5 * M and r.lateness_ms == 800
    assert store.get_job("a").next_run == T0 + 10 * M  # type: ignore[union-attr]


async def test_no_occurrence_is_lost_when_the_loop_is_slow(store: SqliteStore,
                                                           clock: FakeClock) -> None:
    """Every second of a per-second job is accounted for exactly once, however irregularly
    the loop wakes (occurrences are enumerated from the stored next_run, never from now)."""
    store.deploy([job("a", cron="* * * * * *", catchup="all", max_concurrent=50)], [py()])
    s = make(store, clock)
    for step in (0.4, 2.5, 0.3, 3.7, 1.0, 0.1, 5.0):
        clock.advance(step)
        await s.run_until_idle()
    got = [r.scheduled_for for r in runs(store, "a")]
    assert got == [T0 + k * S for k in range(1, 14)]  # 12:00:01 … 12:00:13, no gap, no dup
    assert all(r.status == "succeeded" for r in runs(store, "a"))


async def test_loop_sleeps_until_the_next_deadline(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([job("a", cron="*/5 * * * *")], [py()])
    s = make(store, clock, tick_interval_seconds=600)
    assert await s.tick() == T0 + 5 * M  # next_run, not the tick interval
    s2 = make(store, clock, tick_interval_seconds=1)
    assert await s2.tick() == T0 + S  # bounded by the tick interval (to notice other writers)


# ------------------------------------------------------------------ executors


async def test_command_agents_output_exit_code_and_errors(store: SqliteStore,
                                                          clock: FakeClock) -> None:
    store.deploy([job("hi", agent="hi"), job("bad", agent="bad"), job("ghost", agent="ghost")],
                 [sh("hi", "printf 'hello world'"), sh("bad", "echo oops >&2; exit 3")])
    s = make(store, clock)
    clock.set(T0 + M)
    await s.run_until_idle()
    (hi,) = runs(store, "hi")
    assert hi.status == "succeeded" and hi.output == "hello world" and hi.exit_code == 0
    assert hi.summary == "hello world"
    bad, bad_retry = runs(store, "bad")
    assert bad_retry.trigger == "retry" and bad_retry.status == "pending"
    assert bad.status == "failed" and bad.exit_code == 3
    assert bad.error is not None and "exit status 3" in bad.error and "oops" in bad.error
    ghost = runs(store, "ghost")[0]
    assert ghost.status == "failed" and ghost.error == "agent `ghost` is not defined"


async def test_summaries(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([job("own", agent="own"), job("long", agent="long")],
                 [py("own", "with_summary"), py("long", "long_output")])
    s = make(store, clock)
    clock.set(T0 + M)
    await s.run_until_idle()
    assert runs(store, "own")[0].summary == "short summary"
    long = runs(store, "long")[0]
    assert long.output == "y" * 1200 and long.summary == "y" * 500


async def test_timeouts_from_agent_and_policy(store: SqliteStore, clock: FakeClock,
                                              tmp_path: Path) -> None:
    store.deploy([job("slowcmd", agent="slowcmd"),
                  job("slowpy", agent="slowpy", input="5",
                      policy=SchedulePolicy(max_runtime_seconds=0.2))],
                 [sh("slowcmd", "sleep 5", timeout_seconds=0.2), py("slowpy", "sleep")])
    s = make(store, clock)
    clock.set(T0 + M)
    t = time.monotonic()
    await s.run_until_idle()
    assert time.monotonic() - t < 4
    for name in ("slowcmd", "slowpy"):
        r = runs(store, name)[0]
        assert r.status == "timed_out" and r.stop_reason == "timeout"
        assert r.error is not None and "timed out after 0.2s" in r.error


# ------------------------------------------------------------------ jitter / concurrency


async def test_jitter_delays_the_start_and_is_recorded(store: SqliteStore,
                                                       clock: FakeClock) -> None:
    store.deploy([job("a", cron="*/5 * * * *", jitter_seconds=30)], [py()])
    expected_ms = int(round(random.Random(7).uniform(0, 30) * 1000))
    s = make(store, clock, rng=random.Random(7), tick_interval_seconds=60)
    clock.set(T0 + 5 * M)
    deadline = await s.tick()
    (r,) = runs(store, "a")
    assert r.status == "pending" and r.jitter_ms == expected_ms and expected_ms > 0
    start = T0 + 5 * M + timedelta(milliseconds=expected_ms)
    assert r.due_at == start and deadline == start  # the loop wakes exactly then
    clock.set(start - timedelta(milliseconds=1))
    await s.run_until_idle()
    assert runs(store, "a")[0].status == "pending"
    clock.set(start)
    await s.run_until_idle()
    (r,) = runs(store, "a")
    assert r.status == "succeeded" and r.started_at == start
    assert r.lateness_ms == expected_ms and r.start_delay_ms == 0


async def test_config_max_jitter_applies_when_the_job_sets_none(store: SqliteStore,
                                                                clock: FakeClock) -> None:
    store.deploy([job("a"), job("b", jitter_seconds=0)], [py()])
    s = make(store, clock, rng=random.Random(1), max_jitter_seconds=10)
    clock.set(T0 + M)
    await s.tick()
    a, b = runs(store, "a")[0], runs(store, "b")[0]
    assert 0 < (a.jitter_ms or 0) <= 10_000 and a.status == "pending"
    assert b.jitter_ms == 0 and b.status in ("running", "pending")


async def test_per_job_limit_skips_and_records_the_occurrence(store: SqliteStore,
                                                              clock: FakeClock,
                                                              tmp_path: Path) -> None:
    go = tmp_path / "go"
    store.deploy([job("a", agent="wait", input=str(go))], [py("wait", "wait_file")])
    events = Events()
    s = make(store, clock, events=events)
    clock.set(T0 + M)
    await s.tick()
    assert s.in_flight == 1
    clock.set(T0 + 2 * M)
    await s.tick()  # the 12:01 run is still in flight
    skipped = [r for r in runs(store, "a") if r.scheduled_for == T0 + 2 * M]
    assert [(r.status, r.stop_reason) for r in skipped] == [("skipped", "concurrency")]
    assert ("run_skipped", "concurrency") in [(k, p.get("reason")) for k, p in events]
    go.touch()
    await s.run_until_idle()
    clock.set(T0 + 3 * M)
    await s.run_until_idle()
    assert [(r.scheduled_for, r.status) for r in runs(store, "a")] == [
        (T0 + M, "succeeded"), (T0 + 2 * M, "skipped"), (T0 + 3 * M, "succeeded")]
    assert store.get_job("a").run_count == 2  # type: ignore[union-attr]


async def test_max_concurrent_two_allows_overlap(store: SqliteStore, clock: FakeClock,
                                                 tmp_path: Path) -> None:
    go = tmp_path / "go"
    store.deploy([job("a", agent="wait", input=str(go), max_concurrent=2)],
                 [py("wait", "wait_file")])
    s = make(store, clock)
    for k in (1, 2, 3):
        clock.set(T0 + k * M)
        await s.tick()
    assert s.in_flight == 2
    assert [r.status for r in runs(store, "a")][2] == "skipped"
    go.touch()
    await s.run_until_idle()
    assert [r.status for r in runs(store, "a")] == ["succeeded", "succeeded", "skipped"]


async def test_global_limit_queues_in_order_and_records_start_delay(store: SqliteStore,
                                                                    clock: FakeClock,
                                                                    tmp_path: Path) -> None:
    # names run against the schedule order, so FIFO must follow scheduled time
    names = ["z", "y", "x", "w"]
    store.deploy([job(n, cron=f"{i} 1 12 * * *", agent="wait", input=str(tmp_path / n))
                  for i, n in enumerate(names)], [py("wait", "wait_file")])
    s = make(store, clock, max_concurrent_jobs=2, tick_interval_seconds=10)
    clock.set(T0 + M + 5 * S)  # 12:01:05: all four due (12:01:00 … 12:01:03)
    await s.tick()
    await settle()
    assert s.in_flight == 2 and s.queued == 2
    assert {n: runs(store, n)[0].status for n in names} == dict.fromkeys(names, "pending")
    clock.set(T0 + M + 8 * S)
    (tmp_path / "y").touch()
    await until(lambda: s.in_flight == 1)
    await s.tick()  # a slot is free: the oldest waiting (x, 12:01:02) starts
    await settle()
    clock.set(T0 + M + 9 * S)
    (tmp_path / "z").touch()
    await until(lambda: s.in_flight == 1)
    await s.tick()
    await settle()
    for n in names:
        (tmp_path / n).touch()
    await s.run_until_idle()
    got = {n: runs(store, n)[0] for n in names}
    assert all(r.status == "succeeded" for r in got.values())
    assert [got[n].started_at for n in names] == [
        T0 + M + 5 * S, T0 + M + 5 * S, T0 + M + 8 * S, T0 + M + 9 * S]
    assert [got[n].start_delay_ms for n in names] == [0, 0, 3000, 4000]
    assert [got[n].lateness_ms for n in names] == [5000, 4000, 6000, 6000]


# ------------------------------------------------------------------ one-off jobs


async def test_at_and_one_shot_jobs_run_once_then_complete(store: SqliteStore,
                                                           clock: FakeClock) -> None:
    store.deploy([job("once", cron=None, at=(T0 + timedelta(hours=1)).isoformat()),
                  job("first", cron="*/10 * * * *", one_shot=True)], [py()])
    s = make(store, clock)
    clock.set(T0 + 10 * M)
    await s.run_until_idle()
    first = store.get_job("first")
    assert first is not None and first.status == "completed" and first.next_run is None
    clock.set(T0 + timedelta(hours=1))
    await s.run_until_idle()
    once = store.get_job("once")
    assert once is not None and once.status == "completed" and once.next_run is None
    clock.set(T0 + timedelta(hours=3))
    await s.run_until_idle()
    assert [r.scheduled_for for r in runs(store, "first")] == [T0 + 10 * M]
    assert [r.scheduled_for for r in runs(store, "once")] == [T0 + timedelta(hours=1)]
    assert all(r.status == "succeeded" for r in runs(store))


# ------------------------------------------------------------------ retries / dead letter


async def test_retries_double_then_dead_letter_then_reset(store: SqliteStore, clock: FakeClock,
                                                          tmp_path: Path) -> None:
    store.deploy([job("a", cron="0 * * * *", agent="bad", max_retries=2,
                      retry_backoff_seconds=10)], [py("bad", "fail")])
    events = Events()
    s = make(store, clock, events=events)
    h1 = T0 + timedelta(hours=1)
    clock.set(h1)
    await s.run_until_idle()
    r1, retry = runs(store, "a")
    assert r1.status == "failed" and "boom" in (r1.error or "")
    assert (retry.status, retry.trigger, retry.attempt, retry.retry_of) == (
        "pending", "retry", 2, r1.id)
    assert retry.scheduled_for == h1 and retry.due_at == h1 + 10 * S and retry.owner is None
    j = store.get_job("a")
    assert j is not None and (j.failure_count, j.consecutive_failures) == (1, 1)
    assert store.next_due_time() == h1 + 10 * S
    clock.set(h1 + 10 * S)
    await s.run_until_idle()
    third = runs(store, "a")[2]
    assert third.attempt == 3 and third.due_at == h1 + 30 * S  # 10 s, then 20 s
    clock.set(h1 + 30 * S)
    await s.run_until_idle()
    assert [r.status for r in runs(store, "a")] == ["failed", "failed", "failed"]
    j = store.get_job("a")
    assert j is not None and j.status == "dead_letter" and j.next_run is None
    assert (j.failure_count, j.consecutive_failures) == (3, 3)
    (dl,) = store.audit_query(type="CronJobDeadLettered")
    assert dl.details["attempts"] == 3
    assert len(store.audit_query(type="CronJobFailed")) == 3
    assert "dead_letter" in events.kinds()
    clock.set(T0 + timedelta(hours=5))
    await s.run_until_idle()
    assert len(runs(store, "a")) == 3  # a dead-lettered job does not fire
    store.reset_job("a", actor="ops")
    assert store.get_job("a").next_run == T0 + timedelta(hours=6)  # type: ignore[union-attr]
    clock.set(T0 + timedelta(hours=6))
    await s.run_until_idle()
    assert runs(store, "a")[3].scheduled_for == T0 + timedelta(hours=6)


async def test_success_resets_consecutive_failures(store: SqliteStore, clock: FakeClock,
                                                   tmp_path: Path) -> None:
    flag = tmp_path / "fixed"
    store.deploy([job("a", cron="0 * * * *", agent="flaky", input=str(flag), max_retries=3,
                      retry_backoff_seconds=5)], [py("flaky", "fail_unless_file")])
    s = make(store, clock)
    h1 = T0 + timedelta(hours=1)
    clock.set(h1)
    await s.run_until_idle()
    clock.set(h1 + 5 * S)
    await s.run_until_idle()
    assert store.get_job("a").consecutive_failures == 2  # type: ignore[union-attr]
    flag.touch()
    clock.set(h1 + 15 * S)
    await s.run_until_idle()
    assert [(r.attempt, r.status) for r in runs(store, "a")] == [
        (1, "failed"), (2, "failed"), (3, "succeeded")]
    j = store.get_job("a")
    assert j is not None and j.status == "active"
    assert (j.consecutive_failures, j.failure_count, j.run_count) == (0, 2, 3)


async def test_default_max_retries_and_backoff_cap(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([job("none", agent="bad"),
                  job("slow", agent="bad", max_retries=5, retry_backoff_seconds=3000)],
                 [py("bad", "fail")])
    s = make(store, clock, default_max_retries=0)
    clock.set(T0 + M)
    await s.run_until_idle()
    assert store.get_job("none").status == "dead_letter"  # type: ignore[union-attr]
    r1, r2 = runs(store, "slow")
    assert r2.due_at == T0 + M + timedelta(seconds=3000)
    clock.set(r2.due_at)  # type: ignore[arg-type]
    await s.run_until_idle()
    r3 = runs(store, "slow")[2]
    assert r3.due_at == r2.due_at + timedelta(hours=1)  # 6000 s capped at 1 h


# ------------------------------------------------------------------ catch-up


@pytest.mark.parametrize(
    ("policy", "ran", "missed"),
    [
        ("skip", [], {13: "missed_outside_window", 14: "missed_outside_window",
                      15: "missed_skip", 16: "missed_skip", 17: "missed_skip"}),
        ("latest", [17], {13: "missed_outside_window", 14: "missed_outside_window",
                          15: "missed_superseded", 16: "missed_superseded"}),
        ("all", [15, 16, 17], {13: "missed_outside_window", 14: "missed_outside_window"}),
    ],
)
async def test_catchup_policies_after_downtime(store: SqliteStore, clock: FakeClock,
                                               tmp_path: Path, policy: str, ran: list[int],
                                               missed: dict[int, str]) -> None:
    log = tmp_path / "order.log"
    store.deploy([job("h", cron="0 * * * *", agent="rec", input=f"{log}|x", catchup=policy,
                      catchup_window_seconds=3 * 3600)], [py("rec", "record")])
    # the scheduler was down from 12:00 until 17:30
    clock.set(T0 + timedelta(hours=5, minutes=30))
    events = Events()
    s = make(store, clock, events=events)
    await s.start()
    await s.run_until_idle()
    rows = runs(store, "h")
    hour = {r.scheduled_for.hour: r for r in rows}
    assert sorted(hour) == [13, 14, 15, 16, 17]  # every occurrence is in the history
    assert [h for h, r in hour.items() if r.status == "succeeded"] == ran
    assert all(hour[h].trigger == "catchup" for h in ran)
    assert {h: r.stop_reason for h, r in hour.items() if r.status == "missed"} == missed
    assert log.read_text().count("x") == len(ran) if ran else not log.exists()
    assert events.kinds().count("run_missed") == len(missed)
    j = store.get_job("h")
    assert j is not None and j.next_run == T0 + timedelta(hours=6) and j.run_count == len(ran)


async def test_catchup_latest_outside_window_runs_nothing(store: SqliteStore,
                                                          clock: FakeClock) -> None:
    store.deploy([job("h", cron="0 * * * *", catchup_window_seconds=600)], [py()])
    clock.set(T0 + timedelta(hours=2, minutes=30))
    s = make(store, clock)
    await s.run_until_idle()
    assert [r.status for r in runs(store, "h")] == ["missed", "missed"]


async def test_long_downtime_is_capped_and_summarised(store: SqliteStore,
                                                      clock: FakeClock) -> None:
    store.deploy([job("m", cron="* * * * *", catchup="latest")], [py()])
    clock.set(T0 + timedelta(days=2))  # 2880 occurrences missed
    s = make(store, clock)
    t = time.monotonic()
    await s.run_until_idle()
    assert time.monotonic() - t < 10
    rows = runs(store, "m")
    ran = [r for r in rows if r.status == "succeeded"]
    assert [r.scheduled_for for r in ran] == [T0 + timedelta(days=2)]  # no burst
    missed = [r for r in rows if r.status == "missed"]
    summaries = [r for r in missed if r.stop_reason == "missed_summary"]
    assert len(missed) - len(summaries) == MISSED_ROW_CAP
    assert summaries and all("not listed" in (r.error or "") or "missed" in (r.error or "")
                             for r in summaries)
    assert len({r.scheduled_for for r in rows}) == len(rows)
    assert store.get_job("m").next_run == T0 + timedelta(days=2, minutes=1)  # type: ignore


# ------------------------------------------------------------------ crash recovery


def _stale_run(job_id: str, name: str, status: str, when: datetime) -> RunRecord:
    return RunRecord(id=new_run_id(), job_id=job_id, job_name=name, scheduled_for=when,
                     trigger="schedule", status=status, owner="dead-host:123", due_at=when,
                     created_at=when, started_at=when if status == "running" else None,
                     input="")


async def test_runs_left_by_a_dead_scheduler_become_interrupted(store: SqliteStore,
                                                                clock: FakeClock) -> None:
    store.deploy([job("a", cron="0 * * * *", max_retries=1, retry_backoff_seconds=60),
                  job("b", cron="0 * * * *", max_retries=0)], [py()])
    a, b = store.get_job("a"), store.get_job("b")
    assert a and b
    store.write_batch(WriteBatch(run_inserts=[
        _stale_run(a.id, "a", "running", T0 - 2 * M), _stale_run(a.id, "a", "pending", T0 - M),
        _stale_run(b.id, "b", "running", T0 - M)]))
    unowned = store.request_manual_run("a", input="", actor="x")  # not a scheduler's
    events = Events()
    s = make(store, clock, events=events)
    await s.start()
    rows = [r for r in runs(store, "a") if r.trigger == "schedule"]
    assert [(r.status, r.stop_reason) for r in rows] == [("interrupted", "crash")] * 2
    assert all("dead-host:123" in (r.error or "") for r in rows)
    assert rows[0].duration_ms == 120_000 and rows[1].started_at is None
    retries = [r for r in runs(store, "a") if r.trigger == "retry"]
    assert [(r.attempt, r.due_at) for r in retries] == [(2, T0 + M)] * 2
    assert store.get_run(unowned.id).status == "pending"  # type: ignore[union-attr]
    ja, jb = store.get_job("a"), store.get_job("b")
    assert ja and jb and ja.failure_count == 2 and jb.status == "dead_letter"
    assert events.kinds().count("run_finished") == 3
    await s.start()  # only once
    assert len(store.audit_query(type="CronJobFailed")) == 3


CRASH_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from runtime.clock import SystemClock
    from runtime.config import SchedulerConfig
    from runtime.scheduler import Scheduler
    from runtime.store import SqliteStore
    store = SqliteStore.open(sys.argv[1])
    cfg = SchedulerConfig(tick_interval_seconds=0.05, lease_ttl_seconds=60)
    asyncio.run(Scheduler(store, cfg, SystemClock(), owner_id="victim").run(asyncio.Event()))
""")


async def test_kill_9_during_a_run_then_restart(tmp_path: Path) -> None:
    """A real scheduler process is killed mid-run; the next one marks the run interrupted,
    schedules its retry, and the occurrence is never claimed again."""
    db = tmp_path / "state.db"
    pidfile = tmp_path / "pid"
    s0 = SqliteStore.open(db)
    s0.deploy([job("a", cron="* * * * * *", agent="long", retry_backoff_seconds=300)],
              [sh("long", f"echo $$ > {pidfile}; exec sleep 30")])
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(db)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        await until(lambda: pidfile.exists() and pidfile.read_text().strip() != ""
                    and any(r.status == "running" for r in s0.list_runs("a")), timeout=20)
        proc.kill()
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
        if pidfile.exists() and pidfile.read_text().strip():
            try:
                os.kill(int(pidfile.read_text()), 9)  # the orphaned `sleep`
            except ProcessLookupError:
                pass
    s0.pause_job("a", actor="test")  # only recovery is under test here
    heir = Scheduler(s0, SchedulerConfig(), owner_id="heir")
    await heir.start()
    rows = runs(s0, "a")
    (victim_run,) = [r for r in rows if r.trigger == "schedule" and r.owner == "victim"
                     and r.status == "interrupted"]
    assert "victim" in (victim_run.error or "")
    assert not any(r.status in ("running", "pending") and r.owner for r in rows)
    (retry,) = [r for r in rows if r.trigger == "retry"]
    assert retry.retry_of == victim_run.id and retry.scheduled_for == victim_run.scheduled_for
    occ = [(r.scheduled_for) for r in rows if r.trigger == "schedule"]
    assert len(occ) == len(set(occ))
    assert s0.get_job("a").failure_count >= 1  # type: ignore[union-attr]
    s0.close()


# ------------------------------------------------------------------ manual runs


async def test_manual_run_is_picked_up_by_a_running_loop(store: SqliteStore, clock: FakeClock,
                                                         tmp_path: Path) -> None:
    store.deploy([job("a", cron="0 0 1 1 *")], [py()])
    events = Events()
    s = make(store, clock, events=events)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    await until(lambda: "lease_acquired" in events.kinds() and clock.sleeper_count > 0)
    r = store.request_manual_run("a", input="now", actor="alice")  # same process: wakes at once
    await until(lambda: store.get_run(r.id).status == "succeeded")  # type: ignore[union-attr]
    assert clock.now() == T0  # no clock movement was needed
    done = store.get_run(r.id)
    assert done is not None and done.output == "ok:now" and done.owner == "test"
    other = SqliteStore.open(store.path, clock=clock)  # e.g. `symbi cron run` in a shell
    r2 = other.request_manual_run("a", input="later", actor="bob")
    await asyncio.sleep(0.05)
    assert other.get_run(r2.id).status == "pending"  # type: ignore[union-attr]
    clock.advance(1)  # one tick interval
    await until(lambda: other.get_run(r2.id).status == "succeeded")  # type: ignore[union-attr]
    other.close()
    stop.set()
    assert await task == 0
    assert store.lease_info() is None


async def test_run_manual_now_without_a_scheduler(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([job("a", cron="0 0 1 1 *")], [py()])
    r = store.request_manual_run("a", input="cli", actor="alice")
    final = await run_manual_now(store, SchedulerConfig(), r.id, timeout=10, clock=clock)
    assert final is not None and final.status == "succeeded" and final.output == "ok:cli"
    assert (final.owner or "").startswith("cli:")
    assert store.get_job("a").run_count == 1  # type: ignore[union-attr]


async def test_run_manual_now_waits_for_the_lease_holder(store: SqliteStore,
                                                         clock: FakeClock) -> None:
    store.deploy([job("a", cron="0 0 1 1 *")], [py()])
    store.try_acquire_lease("somebody-else", 60)
    r = store.request_manual_run("a", input="", actor="alice")
    assert await run_manual_now(store, SchedulerConfig(), r.id, timeout=0.1, clock=clock,
                                poll_seconds=0.01) is None
    assert store.get_run(r.id).status == "pending"  # type: ignore[union-attr]


async def test_paused_job_retry_is_cancelled_but_manual_run_happens(store: SqliteStore,
                                                                    clock: FakeClock) -> None:
    store.deploy([job("a", cron="0 * * * *", agent="bad", retry_backoff_seconds=10)],
                 [py("bad", "fail"), py()])
    s = make(store, clock)
    clock.set(T0 + timedelta(hours=1))
    await s.run_until_idle()
    store.pause_job("a", actor="ops")
    clock.advance(10)
    await s.run_until_idle()
    retry = [r for r in runs(store, "a") if r.trigger == "retry"][0]
    assert retry.status == "cancelled" and retry.stop_reason == "job paused"
    m = store.request_manual_run("a", input="", actor="ops")
    await s.run_until_idle()
    assert store.get_run(m.id).status == "failed"  # type: ignore[union-attr]  # ran anyway


# ------------------------------------------------------------------ shutdown


async def test_graceful_shutdown_cancels_after_the_timeout(store: SqliteStore, clock: FakeClock,
                                                           tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    go = tmp_path / "go"
    store.deploy([job("long", agent="long"), job("quick", agent="wait", input=str(go))],
                 [sh("long", f"echo $$ > {pidfile}; exec sleep 30"), py("wait", "wait_file")])
    events = Events()
    s = make(store, clock, events=events, shutdown_timeout_seconds=20)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    await until(lambda: clock.sleeper_count > 0)
    clock.set(T0 + M)
    await until(lambda: s.in_flight == 2 and pidfile.exists() and pidfile.read_text() != "")
    pid = int(pidfile.read_text())
    stop.set()
    await until(lambda: clock.sleeper_count > 0)  # waiting for in-flight runs
    go.touch()  # one run finishes within the grace period
    await until(lambda: s.in_flight == 1)
    assert not task.done()
    clock.advance(20)  # shutdown_timeout_seconds
    assert await asyncio.wait_for(task, 10) == 0
    long, quick = runs(store, "long")[0], runs(store, "quick")[0]
    assert quick.status == "succeeded"
    assert long.status == "interrupted" and long.stop_reason == "shutdown"
    assert "shut down" in (long.error or "")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the run's process was ended, not leaked
    assert store.lease_info() is None
    assert [r.trigger for r in runs(store, "long")] == ["schedule", "retry"]  # per policy


async def test_shutdown_interrupts_runs_that_never_started(store: SqliteStore,
                                                           clock: FakeClock) -> None:
    store.deploy([job("a", jitter_seconds=50)], [py()])
    s = make(store, clock, rng=random.Random(3))
    clock.set(T0 + M)
    await s.tick()
    assert runs(store, "a")[0].status == "pending"
    await s.shutdown()
    first = runs(store, "a")[0]
    assert first.status == "interrupted" and first.started_at is None
    assert first.error == "the scheduler shut down before the run started"


# ------------------------------------------------------------------ lease


async def test_standby_takes_over_when_the_lease_expires(store: SqliteStore,
                                                         clock: FakeClock) -> None:
    store.deploy([job("a", cron="* * * * *")], [py()])
    store.try_acquire_lease("crashed-host:1", 15)  # its owner is gone; expires at T0+15s
    events = Events()
    s = make(store, clock, owner="standby", events=events, lease_ttl_seconds=15)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    await until(lambda: "standby" in events.kinds() and clock.sleeper_count > 0)
    payload = dict(events)["standby"]
    assert payload["holder"] == "crashed-host:1"
    clock.set(T0 + 10 * S)  # still valid: keeps waiting (checks every ttl/3)
    await until(lambda: clock.sleeper_count > 0)
    assert "lease_acquired" not in events.kinds() and not s.holds_lease
    clock.set(T0 + 15 * S)
    await until(lambda: "lease_acquired" in events.kinds())
    assert store.lease_info().owner == "standby"  # type: ignore[union-attr]
    clock.set(T0 + M)
    await until(lambda: len(store.list_runs("a")) == 1
                and store.list_runs("a")[0].status == "succeeded")
    # the lease is renewed while running
    clock.set(T0 + M + 20 * S)
    await until(lambda: store.lease_info() is not None
                and store.lease_info().expires_at > T0 + M + 20 * S)  # type: ignore
    stop.set()
    await task
    assert store.lease_info() is None


async def test_no_standby_exits_when_the_lease_is_held(store: SqliteStore,
                                                       clock: FakeClock) -> None:
    store.try_acquire_lease("other", 15)
    events = Events()
    s = make(store, clock, events=events, standby=False)
    assert await asyncio.wait_for(s.run(asyncio.Event()), 5) == 1
    assert events.kinds() == ["lease_busy"]
    assert store.lease_info().owner == "other"  # type: ignore[union-attr]


async def test_a_scheduler_that_loses_its_lease_stops_claiming(store: SqliteStore,
                                                               clock: FakeClock) -> None:
    store.deploy([job("a", cron="*/5 * * * *")], [py()])
    events = Events()
    s = make(store, clock, events=events, lease_ttl_seconds=15)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    await until(lambda: "lease_acquired" in events.kinds() and clock.sleeper_count > 0)
    # another scheduler took the lease (e.g. this one was frozen past its ttl)
    raw = sqlite3.connect(store.path, isolation_level=None)
    raw.execute("UPDATE lease SET owner = 'usurper', expires_at = ?",
                ((T0 + timedelta(hours=1)).isoformat(timespec="microseconds"),))
    raw.close()
    clock.set(T0 + 5 * M)
    await until(lambda: "lease_lost" in events.kinds())
    await until(lambda: events.kinds()[-1] == "standby")
    assert runs(store, "a") == []  # the due occurrence was not claimed by the loser
    stop.set()
    await task
    assert store.lease_info().owner == "usurper"  # type: ignore[union-attr]


# ------------------------------------------------------------------ exactly once


async def test_two_schedulers_on_one_file_claim_disjointly(tmp_path: Path,
                                                           clock: FakeClock) -> None:
    path = tmp_path / "state.db"
    a_store = SqliteStore.open(path, clock=clock)
    b_store = SqliteStore.open(path, clock=clock)
    a_store.deploy([job(f"j{i:02d}", agent="inl") for i in range(20)], [py("inl", "ok_inline")])
    a = make(a_store, clock, owner="A", max_concurrent_jobs=100)
    b = make(b_store, clock, owner="B", max_concurrent_jobs=100)
    for k in range(1, 6):
        clock.set(T0 + k * M)
        first, second = (a, b) if k % 2 else (b, a)
        await first.tick()
        await second.tick()
        await a.run_until_idle()
        await b.run_until_idle()
    rows = a_store._conn.execute("SELECT job_id, scheduled_for, owner, status FROM runs").fetchall()
    assert len(rows) == 100
    assert len({(r[0], r[1]) for r in rows}) == 100
    assert {r[2] for r in rows} == {"A", "B"} and {r[3] for r in rows} == {"succeeded"}
    a_store.close()
    b_store.close()


SWEEP_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    from datetime import datetime, timedelta, timezone
    sys.path.insert(0, sys.argv[3])
    from runtime.clock import FakeClock
    from runtime.config import SchedulerConfig
    from runtime.scheduler import Scheduler
    from runtime.store import SqliteStore
    t0 = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    clock = FakeClock(t0)
    store = SqliteStore.open(sys.argv[1], clock=clock)
    cfg = SchedulerConfig(tick_interval_seconds=600, max_concurrent_jobs=1000)
    s = Scheduler(store, cfg, clock, owner_id=sys.argv[2])
    async def main():
        for k in range(1, 31):
            clock.set(t0 + timedelta(minutes=k))
            await s.run_until_idle()
    asyncio.run(main())
""")


async def test_two_processes_never_run_an_occurrence_twice(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    s = SqliteStore.open(db, clock=FakeClock(T0))
    s.deploy([job(f"j{i:02d}", agent="inl") for i in range(30)], [py("inl", "ok_inline")])
    procs = [subprocess.Popen([sys.executable, "-c", SWEEP_SCRIPT, str(db), owner, str(HERE)],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
             for owner in ("P1", "P2")]
    for p in procs:
        assert await asyncio.to_thread(p.wait, 60) == 0
    rows = s._conn.execute("SELECT job_id, scheduled_for, owner, status FROM runs").fetchall()
    s.close()
    assert len(rows) == 30 * 30  # every occurrence of every job …
    assert len({(r[0], r[1]) for r in rows}) == 900  # … exactly once
    assert {r[3] for r in rows} == {"succeeded"} and {r[2] for r in rows} <= {"P1", "P2"}


# ------------------------------------------------------------------ audit / events / reload


@pytest.mark.parametrize(("level", "expected"), [
    ("none", []), ("errors_only", ["CronJobFailed"]),
    ("all_operations", ["CronJobExecuted", "CronJobFailed"])])
async def test_audit_level_controls_run_events(store: SqliteStore, clock: FakeClock,
                                               level: str, expected: list[str]) -> None:
    store.deploy([job("good", audit=level, max_retries=0),
                  job("bad", agent="bad", audit=level, max_retries=0)],
                 [py(), py("bad", "fail")])
    s = make(store, clock)
    clock.set(T0 + M)
    await s.run_until_idle()
    run_events = sorted(e.type for e in store.audit_query()
                        if e.type in ("CronJobExecuted", "CronJobFailed"))
    assert run_events == expected
    assert store.audit_query(type="CronJobDeadLettered")  # state changes are always logged
    assert store.audit_verify().ok


async def test_events_for_the_cli(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([job("a", input="x")], [py()])
    events = Events()
    s = make(store, clock, events=events)
    clock.set(T0 + M)
    await s.run_until_idle()
    assert events.kinds() == ["run_started", "run_finished"]
    started, finished = events[0][1], events[1][1]
    assert started["job_name"] == "a" and started["trigger"] == "schedule"
    assert started["attempt"] == 1 and started["lateness_ms"] == 0
    assert finished["status"] == "succeeded" and finished["summary"] == "ok:x"
    assert finished["duration_ms"] == 0 and finished["finished_at"] == T0 + M


async def test_agent_changes_from_another_process_are_picked_up(store: SqliteStore,
                                                                clock: FakeClock) -> None:
    store.deploy([job("a")], [py("py", "ok")])
    s = make(store, clock)
    clock.set(T0 + M)
    await s.run_until_idle()
    other = SqliteStore.open(store.path, clock=clock)
    other.deploy([job("a")], [py("py", "fail")])
    other.close()
    clock.set(T0 + 2 * M)
    await s.run_until_idle()
    assert [r.status for r in runs(store, "a")][:2] == ["succeeded", "failed"]


# ------------------------------------------------------------------ DST


async def test_spring_forward_day_runs_a_0230_job_exactly_once(tmp_path: Path) -> None:
    ny = ZoneInfo("America/New_York")
    clock = FakeClock(datetime(2026, 3, 6, 12, tzinfo=UTC))
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)
    store.deploy([job("nightly", cron="30 2 * * *", timezone="America/New_York")], [py()])
    s = make(store, clock)
    end = datetime(2026, 3, 10, 12, tzinfo=UTC)
    while True:
        nxt = store.next_due_time()
        assert nxt is not None
        if nxt > end:
            break
        clock.set(nxt)
        await s.run_until_idle()
    local = [r.scheduled_for.astimezone(ny) for r in runs(store, "nightly")]
    by_day: dict[str, list[str]] = {}
    for t in local:
        by_day.setdefault(t.date().isoformat(), []).append(t.strftime("%H:%M %Z"))
    assert by_day == {"2026-03-07": ["02:30 EST"], "2026-03-08": ["03:00 EDT"],
                      "2026-03-09": ["02:30 EDT"], "2026-03-10": ["02:30 EDT"]}
    assert all(r.status == "succeeded" and r.lateness_ms == 0 for r in runs(store))
    store.close()


class _DenyAll(Scheduler):
    async def _gate(self, job: JobDef, run: Any) -> Decision:
        return Deny(f"not allowed: {job.name}", "test")


async def test_a_gate_denial_is_recorded_not_retried(store: SqliteStore,
                                                     clock: FakeClock) -> None:
    """The gate hook decides the run's fate (the rules themselves: test_policy*)."""
    store.deploy([job("a", audit="none")], [py()])
    s = _DenyAll(store, SchedulerConfig(), clock, owner_id="t")
    clock.set(T0 + M)
    await s.run_until_idle()
    (r,) = runs(store, "a")
    assert (r.status, r.stop_reason, r.error) == ("denied", "policy:test", "not allowed: a")
    assert r.output is None
    (ev,) = store.audit_query(type="PolicyDenied")  # security event despite audit = none
    assert ev.run_id == r.id
    j = store.get_job("a")
    assert j is not None and j.failure_count == 0 and j.status == "active"


# ------------------------------------------------------------------ bursts


async def test_a_burst_is_claimed_in_growing_chunks_first_ones_start_at_once(
        store: SqliteStore, clock: FakeClock) -> None:
    """The first CLAIM_CHUNK runs start after one small claim, not after the whole burst's;
    every occurrence still runs exactly once."""
    from runtime.scheduler import CLAIM_CHUNK

    n = CLAIM_CHUNK * 3 + 7
    store.deploy([job(f"b{i:05d}", cron="*/5 * * * *", agent="inline") for i in range(n)],
                 [py("inline", "ok_inline")])
    s = make(store, clock, max_concurrent_jobs=n)
    clock.set(T0 + 5 * M)
    deadline = await s.tick()
    assert deadline == clock.now()  # more is due: the loop comes straight back
    assert s.in_flight == CLAIM_CHUNK  # the first chunk is dispatched already
    assert len(store.list_runs(limit=n)) == CLAIM_CHUNK
    first = {r.job_name for r in store.list_runs(limit=n)}
    assert first == {f"b{i:05d}" for i in range(CLAIM_CHUNK)}  # deploy order
    await settle()
    await s.tick()
    assert len(store.list_runs(limit=n)) == 3 * CLAIM_CHUNK  # the next chunk is twice as big
    await s.run_until_idle()
    rows = store.list_runs(limit=2 * n)
    assert len(rows) == n and all(r.status == "succeeded" for r in rows)
    assert len({r.job_id for r in rows}) == n
    assert all(j.next_run == T0 + 10 * M for j in store.list_jobs())


async def test_a_burst_of_exactly_one_chunk_still_commits_its_results(
        store: SqliteStore, clock: FakeClock) -> None:
    """Regression: when the last claim of a burst was exactly full, the loop must not stay in
    "mid-burst" mode (which defers flushing) once nothing more is due."""
    from runtime.scheduler import CLAIM_CHUNK

    n = CLAIM_CHUNK
    store.deploy([job(f"e{i:05d}", cron="*/5 * * * *", agent="inline") for i in range(n)],
                 [py("inline", "ok_inline")])
    s = make(store, clock, max_concurrent_jobs=n)
    clock.set(T0 + 5 * M)
    await s.tick()  # claims one full chunk: it cannot know yet that nothing else is due
    await settle()

    def committed() -> bool:
        rows = store.list_runs(limit=2 * n)
        return len(rows) == n and all(r.status == "succeeded" for r in rows)

    # loop iterations, no shutdown: the results must reach the store while it keeps running
    # (before the fix they stayed buffered until 20,000 results or shutdown)
    end = time.monotonic() + 10.0
    while not committed() and time.monotonic() < end:
        await s.tick()
        await asyncio.sleep(0.005)
    assert committed()
