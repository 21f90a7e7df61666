"""Approval-gated runs (SPEC §5.6 ``require_approval``) on a FakeClock: the run waits, is
approved through the same functions the CLI calls (``runtime.approvals``) and runs; or is
rejected; or times out; and a pending approval survives a restart."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from runtime_support import OK, T0, H, until

from compiler.ir import JobDef, SchedulePolicy
from runtime.approvals import (
    ApprovalError,
    approve_run,
    expire_due,
    get_approval,
    list_approvals,
    next_expiry,
    reject_run,
    resolve_run_id,
)
from runtime.clock import FakeClock
from runtime.config import SchedulerConfig
from runtime.scheduler import Scheduler, run_manual_now
from runtime.store import RunRow, SqliteStore

HERE = Path(__file__).parent


pytestmark = pytest.mark.usefixtures("handlers_importable")


GATED = SchedulePolicy(require_approval=True, approvers=("alice", "bob"),
                       approval_timeout_seconds=600)


def deploy(store: SqliteStore, policy: SchedulePolicy = GATED) -> None:
    store.deploy([JobDef(name="deploy-prod", agent="ok", cron="0 * * * *", input="go",
                         policy=policy)], [OK])


def make(store: SqliteStore, clock: FakeClock, tick: float = 86400, **kw: Any) -> Scheduler:
    # a long tick interval by default: the loop's deadline shows what it waits for
    return Scheduler(store, SchedulerConfig(tick_interval_seconds=tick), clock, owner_id="t",
                     env={}, **kw)


def only_run(store: SqliteStore) -> RunRow:
    (r,) = store.list_runs("deploy-prod", limit=10)
    return r


async def waiting_run(store: SqliteStore, clock: FakeClock, s: Scheduler) -> RunRow:
    clock.set(T0 + H)
    await s.run_until_idle()
    return only_run(store)


async def test_the_run_waits_then_runs_once_approved(store: SqliteStore,
                                                     clock: FakeClock) -> None:
    deploy(store)
    s = make(store, clock)
    r = await waiting_run(store, clock, s)
    assert (r.status, r.owner, r.started_at, r.stop_reason) == (
        "awaiting_approval", None, None, "policy:require_approval")
    assert r.error is not None and "alice, bob" in r.error and r.id[:8] in r.error
    a = get_approval(store, r.id)
    assert a is not None and a.decision is None and a.approvers == ("alice", "bob")
    assert (a.requested_at, a.expires_at) == (T0 + H, T0 + H + timedelta(seconds=600))
    assert [x.run_id for x in list_approvals(store)] == [r.id]
    (ev,) = store.audit_query(type="ApprovalRequested")
    assert ev.run_id == r.id and ev.details["approvers"] == ["alice", "bob"]
    assert store.get_job("deploy-prod").run_count == 0  # type: ignore[union-attr]
    # the scheduler sleeps until the approval would expire (or something else happens)
    assert await s.tick() == T0 + H + timedelta(seconds=600)

    clock.advance(120)
    approved = approve_run(store, r.id[:8], actor="cli:alice")  # what `symbi cron approve` calls
    assert (approved.status, approved.owner) == ("pending", None)
    await s.run_until_idle()
    done = only_run(store)
    assert (done.status, done.output, done.stop_reason, done.error) == (
        "succeeded", "ok:go", None, None)
    assert done.started_at == T0 + H + timedelta(seconds=120)
    assert done.lateness_ms == 120_000  # waiting for the approval is lateness
    (granted,) = store.audit_query(type="ApprovalGranted")
    assert granted.actor == "cli:alice" and granted.run_id == r.id
    decided = get_approval(store, r.id)
    assert decided is not None and (decided.decision, decided.decided_by) == ("approved",
                                                                             "cli:alice")
    assert list_approvals(store) == []
    j = store.get_job("deploy-prod")
    assert j is not None and j.run_count == 1 and j.last_run == T0 + H + timedelta(seconds=120)
    with pytest.raises(ApprovalError, match="already approved"):
        approve_run(store, r.id, actor="cli:bob")


async def test_a_running_loop_picks_up_an_approval_from_another_process(
        store: SqliteStore, clock: FakeClock, db: Path) -> None:
    deploy(store)
    events: list[str] = []
    s = make(store, clock, tick=1, on_event=lambda k, p: events.append(k))
    r = await waiting_run(store, clock, s)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    await until(lambda: "lease_acquired" in events and clock.sleeper_count > 0)
    other = SqliteStore.open(db, clock=clock)  # `symbi cron approve` in a shell
    try:
        approve_run(other, r.id, actor="cli:bob")
        clock.advance(1)  # one tick interval: the loop notices the change
        await until(lambda: other.get_run(r.id).status == "succeeded")  # type: ignore[union-attr]
    finally:
        other.close()
    stop.set()
    assert await task == 0


async def test_rejected(store: SqliteStore, clock: FakeClock) -> None:
    deploy(store)
    s = make(store, clock)
    r = await waiting_run(store, clock, s)
    rejected = reject_run(store, r.id, actor="cli:bob", reason="change freeze")
    assert (rejected.status, rejected.stop_reason) == ("denied", "policy:approval_rejected")
    assert rejected.error == "rejected by cli:bob: change freeze"
    assert rejected.finished_at == T0 + H
    (ev,) = store.audit_query(type="ApprovalRejected")
    assert ev.details["reason"] == "change freeze" and ev.run_id == r.id
    await s.run_until_idle()
    assert only_run(store).status == "denied"  # and nothing ran
    with pytest.raises(ApprovalError, match="already rejected"):
        approve_run(store, r.id, actor="cli:alice")
    j = store.get_job("deploy-prod")
    assert j is not None and j.failure_count == 0 and j.status == "active"


async def test_timed_out(store: SqliteStore, clock: FakeClock) -> None:
    deploy(store)
    events: list[tuple[str, dict[str, Any]]] = []
    s = make(store, clock, on_event=lambda k, p: events.append((k, p)))
    r = await waiting_run(store, clock, s)
    assert [p["status"] for k, p in events if k == "run_finished"] == ["awaiting_approval"]
    clock.advance(599)
    await s.run_until_idle()
    assert only_run(store).status == "awaiting_approval"
    clock.advance(1)
    await s.run_until_idle()
    timed_out = only_run(store)
    assert (timed_out.status, timed_out.stop_reason) == ("denied", "policy:approval_timeout")
    assert "approval timed out" in (timed_out.error or "")
    finished = [p for k, p in events if k == "run_finished"]
    assert [(p["run_id"], p["status"]) for p in finished] == [(r.id, "awaiting_approval"),
                                                              (r.id, "denied")]
    (ev,) = store.audit_query(type="PolicyDenied")
    assert ev.run_id == r.id and ev.details["rule"] == "approval_timeout"
    a = get_approval(store, r.id)
    assert a is not None and a.decision == "expired"
    assert next_expiry(store) is None
    with pytest.raises(ApprovalError, match="already expired"):
        approve_run(store, r.id, actor="cli:alice")


async def test_approving_after_the_timeout_denies_even_without_a_scheduler(
        store: SqliteStore, clock: FakeClock) -> None:
    deploy(store)
    r = await waiting_run(store, clock, make(store, clock))
    clock.advance(601)  # no scheduler is running to expire it
    with pytest.raises(ApprovalError, match="timed out"):
        approve_run(store, r.id, actor="cli:alice")
    assert only_run(store).status == "denied"
    assert expire_due(store) == []


async def test_a_pending_approval_survives_a_restart(store: SqliteStore, clock: FakeClock,
                                                     db: Path) -> None:
    deploy(store)
    s = make(store, clock)
    r = await waiting_run(store, clock, s)
    await s.shutdown()
    store.close()
    reopened = SqliteStore.open(db, clock=clock)
    try:
        heir = Scheduler(reopened, SchedulerConfig(tick_interval_seconds=86400), clock,
                         owner_id="heir", env={})
        await heir.start()  # crash recovery leaves the waiting run alone
        assert reopened.get_run(r.id).status == "awaiting_approval"  # type: ignore[union-attr]
        assert await heir.tick() == T0 + H + timedelta(seconds=600)  # it knows the expiry
        approve_run(reopened, r.id, actor="cli:alice")
        await heir.run_until_idle()
        done = reopened.get_run(r.id)
        assert done is not None and (done.status, done.owner) == ("succeeded", "heir")
    finally:
        reopened.close()


async def test_a_restarted_scheduler_expires_a_stale_approval(store: SqliteStore,
                                                              clock: FakeClock,
                                                              db: Path) -> None:
    deploy(store)
    r = await waiting_run(store, clock, make(store, clock))
    clock.advance(3600)  # down for an hour
    heir = make(store, clock)
    await heir.start()
    await heir.run_until_idle()
    assert store.get_run(r.id).stop_reason == "policy:approval_timeout"  # type: ignore[union-attr]


async def test_cli_path_without_a_scheduler(store: SqliteStore, clock: FakeClock) -> None:
    """`symbi cron run` → waits for approval; `symbi cron approve` → executed in-process."""
    deploy(store)
    m = store.request_manual_run("deploy-prod", input="by hand", actor="cli:ops")
    waiting = await run_manual_now(store, SchedulerConfig(), m.id, timeout=10, clock=clock,
                                   env={})
    assert waiting is not None and waiting.status == "awaiting_approval"
    approve_run(store, m.id, actor="cli:alice")
    final = await run_manual_now(store, SchedulerConfig(), m.id, timeout=10, clock=clock,
                                 env={})
    assert final is not None and (final.status, final.output) == ("succeeded", "ok:by hand")
    assert store.get_job("deploy-prod").run_count == 1  # type: ignore[union-attr]


async def test_approval_then_the_other_rules_still_apply(store: SqliteStore,
                                                         clock: FakeClock) -> None:
    """Approval is the last rule; the others are checked again when the approved run runs."""
    from compiler.ir import AllowedHours

    deploy(store, SchedulePolicy(require_approval=True, approval_timeout_seconds=4 * 3600,
                                 allowed_hours=AllowedHours("13:00", "14:00")))
    s = make(store, clock)
    r = await waiting_run(store, clock, s)
    clock.advance(2 * H)  # approved too late: 15:00 is outside the window
    approve_run(store, r.id, actor="cli:alice")
    await s.run_until_idle()
    done = store.get_run(r.id)
    assert done is not None and (done.status, done.stop_reason) == ("denied",
                                                                    "policy:allowed_hours")


def test_run_id_prefixes(store: SqliteStore) -> None:
    deploy(store, SchedulePolicy())
    a = store.request_manual_run("deploy-prod", input="", actor="t")
    assert resolve_run_id(store, a.id) == a.id
    assert resolve_run_id(store, a.id[:8]) == a.id
    with pytest.raises(ApprovalError, match="no run"):
        resolve_run_id(store, "zzzz")
    with pytest.raises(ApprovalError, match="no run"):
        resolve_run_id(store, a.id[:2])  # too short to be a prefix
    with pytest.raises(ApprovalError, match="not waiting for an approval"):
        approve_run(store, a.id, actor="t")
