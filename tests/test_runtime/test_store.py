"""The SQLite state store: schema and migrations, deploy semantics, job management, runs,
leases and the exactly-once occurrence key."""

from __future__ import annotations

import dataclasses
import hashlib
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from runtime_support import T0

from compiler.ir import AgentDef, AllowedHours, HeartbeatDef, JobDef, SchedulePolicy
from runtime.clock import FakeClock
from runtime.store import (
    MIGRATIONS,
    DueJob,
    DuplicateJob,
    JobNotFound,
    LeaseLost,
    Migration,
    RunRecord,
    RunRow,
    SqliteStore,
    StoreError,
    StoreSchemaTooNew,
    WriteBatch,
    canonical_definition,
    new_run_id,
    plain,
)


def job(name: str, **kw: object) -> JobDef:
    kw.setdefault("cron", "*/5 * * * *")
    return JobDef(name=name, agent=str(kw.pop("agent", "echo")), **kw)  # type: ignore[arg-type]


ECHO = AgentDef(name="echo", executor="python", handler="stdlib.agents.echo:run")


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table (rowid order): a byte-level-enough picture of the state."""
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    out = {t: conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    conn.close()
    return out


# ------------------------------------------------------------------ schema / migrations


def test_new_database_is_migrated_with_wal_and_foreign_keys(store: SqliteStore) -> None:
    assert store.schema_version == MIGRATIONS[-1].version
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"schema_version", "agents", "jobs", "runs", "audit_events", "lease"} <= tables


def test_newer_schema_is_refused_and_file_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (99, 'from the future', '2030-01-01')")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(StoreSchemaTooNew) as e:
        SqliteStore.open(path)
    msg = str(e.value)
    assert "99" in msg and "newer" in msg and "upgrade symbi" in msg and str(path) in msg
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    with pytest.raises(StoreSchemaTooNew):
        SqliteStore.open(path, readonly=True)


def test_appending_a_migration_upgrades_and_older_code_refuses(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = SqliteStore.open(path)
    s.deploy([job("a")], [ECHO])
    s.close()
    v2 = Migration(MIGRATIONS[-1].version + 1, "test table",
                   ("CREATE TABLE test_extra (run_id TEXT PRIMARY KEY, approver TEXT)",))
    s = SqliteStore.open(path, migrations=(*MIGRATIONS, v2))
    assert s.schema_version == v2.version
    s._conn.execute("INSERT INTO test_extra VALUES ('r', 'alice')")
    assert s.get_job("a") is not None  # data kept
    s.close()
    with pytest.raises(StoreSchemaTooNew):
        SqliteStore.open(path)  # this code only knows MIGRATIONS


def test_non_symbi_database_and_garbage_file_are_clear_errors(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="not a symbi state database"):
        SqliteStore.open(other)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite"):
        SqliteStore.open(garbage)


def test_readonly_open_reads_but_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    s = SqliteStore.open(path)
    s.deploy([job("a")], [ECHO])
    s.close()
    ro = SqliteStore.open(path, readonly=True)
    assert ro.get_job("a") is not None
    with pytest.raises(StoreError, match="read-only"):
        ro.pause_job("a", actor="x")
    ro.close()
    with pytest.raises(StoreError, match="no such state database"):
        SqliteStore.open(tmp_path / "missing.db", readonly=True)


# ------------------------------------------------------------------ deploy


def test_plain_matches_to_dict() -> None:
    j = JobDef(name="a", agent="b", cron="* * * * *", tags=("x", "y"),
               heartbeat=HeartbeatDef(enabled=True, max_iterations=3),
               policy=SchedulePolicy(approvers=("ops",), allowed_hours=AllowedHours("22:00", "06:00")),
               webhook_headers=(("X-A", "1"),), delivery=("stdout",))
    assert plain(j) == j.to_dict()
    a = AgentDef(name="c", executor="command", command=("echo", "hi"), env=(("K", "V"),))
    assert plain(a) == a.to_dict()
    assert JobDef.from_dict(plain(j)) == j


def test_deploy_creates_jobs_with_next_run_and_audit(store: SqliteStore) -> None:
    rep = store.deploy([job("a"), job("b", enabled=False), job("c", cron=None,
                                                               at="2026-01-06T09:00:00+00:00")],
                       [ECHO])
    assert rep.created == ("a", "b", "c") and rep.agents_created == ("echo",)
    a, b, c = (store.get_job(n) for n in "abc")
    assert a and b and c
    assert a.status == "active" and a.next_run == T0 + timedelta(minutes=5)
    assert a.origin == "bundle" and a.id.startswith("job_") and len(a.id) == 16
    assert b.status == "paused"
    assert c.next_run == datetime(2026, 1, 6, 9, tzinfo=UTC)
    assert store.get_agent("echo") == ECHO
    assert [e.type for e in store.audit_query()] == ["CronJobCreated"] * 3
    assert store.audit_verify().ok


def test_redeploying_the_same_bundle_changes_nothing(store: SqliteStore,
                                                     clock: FakeClock) -> None:
    jobs = [job("a"), job("b", cron="0 9 * * 1-5", timezone="Europe/Berlin")]
    store.deploy(jobs, [ECHO])
    before = dump(store.path)
    clock.advance(3600)
    rep = store.deploy(list(reversed(jobs)), [ECHO])
    assert rep.created == () and rep.updated == () and rep.pruned == ()
    assert rep.unchanged == ("a", "b") and rep.agents_unchanged == ("echo",)
    assert not rep.changed
    assert dump(store.path) == before  # no audit events, no updated_at change, nothing


def test_changed_job_keeps_id_history_and_counters(store: SqliteStore,
                                                   clock: FakeClock) -> None:
    store.deploy([job("a", description="one")], [ECHO])
    a = store.get_job("a")
    assert a is not None
    store._conn.execute("UPDATE jobs SET run_count = 7, failure_count = 2 WHERE id = ?", (a.id,))
    store._conn.execute("INSERT INTO runs (id, job_id, job_name, scheduled_for, trigger, status,"
                        " created_at) VALUES ('r1', ?, 'a', ?, 'schedule', 'succeeded', ?)",
                        (a.id, T0.isoformat(), T0.isoformat()))
    clock.advance(60)
    rep = store.deploy([job("a", description="two")], [ECHO])
    assert rep.updated == ("a",)
    b = store.get_job("a")
    assert b is not None
    assert b.id == a.id and b.run_count == 7 and b.failure_count == 2
    assert b.definition.description == "two"
    assert b.next_run == a.next_run  # schedule unchanged: next_run kept
    assert b.created_at == a.created_at and b.updated_at == T0 + timedelta(seconds=60)
    assert [r.id for r in store.list_runs("a")] == ["r1"]
    ev = store.audit_query(type="CronJobUpdated")[0]
    assert ev.details["changed"] == ["description"]


def test_schedule_change_recomputes_next_run_from_now(store: SqliteStore,
                                                      clock: FakeClock) -> None:
    store.deploy([job("a")], [ECHO])
    clock.set(T0 + timedelta(minutes=7))
    store.deploy([job("a", cron="0 * * * *")], [ECHO])
    a = store.get_job("a")
    assert a is not None and a.next_run == T0 + timedelta(hours=1)
    clock.advance(60)
    store.deploy([job("a", cron="0 * * * *", timezone="Asia/Kathmandu")], [ECHO])  # +05:45
    a = store.get_job("a")
    assert a is not None and a.next_run == datetime(2026, 1, 5, 12, 15, tzinfo=UTC)


def test_enabled_flag_change_pauses_and_resumes(store: SqliteStore) -> None:
    store.deploy([job("a")], [ECHO])
    store.deploy([job("a", enabled=False)], [ECHO])
    a = store.get_job("a")
    assert a is not None and a.status == "paused"
    store.deploy([job("a")], [ECHO])
    a = store.get_job("a")
    assert a is not None and a.status == "active"
    types = [e.type for e in reversed(store.audit_query())]
    assert types == ["CronJobCreated", "CronJobUpdated", "CronJobPaused", "CronJobUpdated",
                     "CronJobResumed"]


def test_operator_pause_survives_redeploy_of_same_bundle(store: SqliteStore) -> None:
    store.deploy([job("a")], [ECHO])
    store.pause_job("a", actor="ops")
    store.deploy([job("a")], [ECHO])
    a = store.get_job("a")
    assert a is not None and a.status == "paused"


@pytest.mark.parametrize("mode", ["delete", "pause"])
def test_prune_only_touches_bundle_jobs(store: SqliteStore, mode: str) -> None:
    store.deploy([job("a"), job("b")], [ECHO])
    store.add_job(job("manual"), origin="cli", actor="alice")
    store.add_job(job("viaapi"), origin="api", actor="api")
    rep = store.deploy([job("a")], [ECHO])  # no prune: b kept
    assert rep.pruned == () and store.get_job("b") is not None
    rep = store.deploy([job("a")], [ECHO], prune=mode)
    assert rep.pruned == ("b",)
    b = store.get_job("b")
    if mode == "delete":
        assert b is None
        assert store.audit_query(type="CronJobDeleted")[0].details == {"reason": "pruned"}
    else:
        assert b is not None and b.status == "paused"
    for name in ("manual", "viaapi"):
        kept = store.get_job(name)
        assert kept is not None and kept.status == "active"
    before = dump(store.path)
    rep = store.deploy([job("a")], [ECHO], prune=mode)  # idempotent
    assert rep.pruned == () and dump(store.path) == before
    rep = store.deploy([job("a")], [ECHO], prune="delete", prune_origins=("bundle", "cli"))
    assert store.get_job("manual") is None and store.get_job("viaapi") is not None


def test_deploy_adopts_a_cli_job_of_the_same_name(store: SqliteStore) -> None:
    row = store.add_job(job("a"), origin="cli", actor="alice")
    rep = store.deploy([job("a")], [ECHO])
    assert rep.updated == ("a",)
    a = store.get_job("a")
    assert a is not None and a.origin == "bundle" and a.id == row.id
    assert store.deploy([job("a")], [ECHO]).unchanged == ("a",)


def test_deploy_rejects_duplicate_names_and_bad_prune(store: SqliteStore) -> None:
    with pytest.raises(StoreError, match="duplicate job names.*a"):
        store.deploy([job("a"), job("a")], [])
    with pytest.raises(StoreError, match="prune"):
        store.deploy([], [], prune="everything")
    assert store.list_jobs() == []


def test_changed_agent_is_updated(store: SqliteStore) -> None:
    store.deploy([], [ECHO])
    new = dataclasses.replace(ECHO, timeout_seconds=5.0)
    rep = store.deploy([], [new])
    assert rep.agents_updated == ("echo",)
    assert store.get_agent("echo") == new
    assert store.load_agents() == {"echo": new}


# ------------------------------------------------------------------ management


def test_add_update_remove_with_audit(store: SqliteStore) -> None:
    row = store.add_job(job("a"), origin="api", actor="alice", agents=[ECHO])
    assert row.origin == "api" and store.get_agent("echo") == ECHO
    with pytest.raises(DuplicateJob, match="already exists"):
        store.add_job(job("a"), actor="bob")
    upd = store.update_job(row.id, job("a", cron="0 * * * *"), actor="bob")
    assert upd.id == row.id and upd.next_run == T0 + timedelta(hours=1)
    same = store.update_job("a", job("a", cron="0 * * * *"), actor="bob")
    assert same.updated_at == upd.updated_at  # no change: no write
    store.add_job(job("b"), actor="x")
    with pytest.raises(DuplicateJob):
        store.update_job("a", job("b"), actor="x")
    removed = store.remove_job("a", actor="carol")
    assert removed.id == row.id and store.get_job("a") is None
    with pytest.raises(JobNotFound):
        store.remove_job("a", actor="carol")
    types = [(e.type, e.actor) for e in reversed(store.audit_query(job=row.id))]
    assert types == [("CronJobCreated", "alice"), ("CronJobUpdated", "bob"),
                     ("CronJobDeleted", "carol")]


def test_pause_resume_reset_transitions(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([job("a")], [ECHO])
    assert store.pause_job("a", actor="x").status == "paused"
    n = len(store.audit_query())
    assert store.pause_job("a", actor="x").status == "paused"  # idempotent, no event
    assert len(store.audit_query()) == n
    clock.set(T0 + timedelta(minutes=33))
    r = store.resume_job("a", actor="x")
    assert r.status == "active" and r.next_run == T0 + timedelta(minutes=35)  # from now
    store._conn.execute("UPDATE jobs SET status = 'dead_letter', failure_count = 4,"
                        " consecutive_failures = 4, next_run = NULL")
    with pytest.raises(StoreError, match="reset"):
        store.resume_job("a", actor="x")
    clock.set(T0 + timedelta(minutes=41))
    r = store.reset_job("a", actor="x")
    assert r.status == "active" and r.failure_count == 0 and r.consecutive_failures == 0
    assert r.next_run == T0 + timedelta(minutes=45)
    ev = store.audit_query(type="CronJobReset")[0]
    assert ev.details["status"] == ["dead_letter", "active"]
    store._conn.execute("UPDATE jobs SET status = 'completed'")
    with pytest.raises(StoreError, match="completed"):
        store.pause_job("a", actor="x")
    with pytest.raises(JobNotFound):
        store.pause_job("nope", actor="x")


def test_list_jobs_filters(store: SqliteStore) -> None:
    store.deploy([job("b", agent="other"), job("a"), job("c", enabled=False)], [ECHO])
    assert [j.name for j in store.list_jobs()] == ["a", "b", "c"]
    assert [j.name for j in store.list_jobs(status="paused")] == ["c"]
    assert [j.name for j in store.list_jobs(agent="other")] == ["b"]
    assert store.count_jobs() == {"active": 2, "paused": 1, "completed": 0, "dead_letter": 0}
    d = store.list_jobs()[0].to_dict()
    assert d["name"] == "a" and d["next_run"] == "2026-01-05T12:05:00+00:00"
    assert d["definition"]["cron"] == "*/5 * * * *"


def test_manual_run_request_is_pending_and_unowned(store: SqliteStore) -> None:
    store.deploy([job("a", input="default")], [ECHO])
    r = store.request_manual_run("a", input=None, actor="alice")
    assert (r.status, r.trigger, r.owner, r.input) == ("pending", "manual", None, "default")
    assert r.due_at == T0 and r.scheduled_for == T0
    r2 = store.request_manual_run("a", input="x", trigger="api", actor="api")
    assert r2.input == "x" and r2.trigger == "api"
    with pytest.raises(StoreError):
        store.request_manual_run("a", input="x", trigger="schedule", actor="api")
    assert store.next_due_time() == T0
    ev = store.audit_query(type="CronJobTriggered")
    assert {e.actor for e in ev} == {"alice", "api"}
    assert store.get_run(r.id) == r
    assert RunRow(**r.__dict__).to_dict()["scheduled_for"] == T0.isoformat()


def test_list_runs_newest_first_with_filters(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([job("a"), job("b")], [ECHO])
    ids = []
    for i in range(3):
        clock.advance(1)
        ids.append(store.request_manual_run("a", input=str(i), actor="x").id)
    clock.advance(1)
    other = store.request_manual_run("b", input="", actor="x").id
    assert [r.id for r in store.list_runs("a")] == list(reversed(ids))
    assert [r.id for r in store.list_runs("a", limit=2)] == list(reversed(ids))[:2]
    assert [r.id for r in store.list_runs()][0] == other
    assert store.list_runs("a", status="succeeded") == []
    assert store.list_runs("nope") == []


# ------------------------------------------------------------------ leases


def test_lease_acquire_renew_expire_release(store: SqliteStore, clock: FakeClock) -> None:
    assert store.try_acquire_lease("A", 15)
    assert not store.try_acquire_lease("B", 15)
    clock.advance(10)
    assert store.try_acquire_lease("A", 15)  # renew: now valid until T0+25
    clock.advance(10)
    assert not store.try_acquire_lease("B", 15)
    info = store.lease_info()
    assert info is not None and info.owner == "A"
    assert info.expires_at == T0 + timedelta(seconds=25) and info.acquired_at == T0
    clock.advance(5)
    assert store.try_acquire_lease("B", 15)  # expired: taken over
    store.release_lease("A")  # not the holder: no effect
    assert store.lease_info().owner == "B"  # type: ignore[union-attr]
    store.release_lease("B")
    assert store.lease_info() is None


# ------------------------------------------------------------------ claims


def _claim_all(store: SqliteStore, now: datetime, owner: str) -> tuple[list[str], frozenset[str]]:
    """Claim every due job's next_run occurrence as a run owned by ``owner``."""
    made: list[str] = []

    def planner(jobs: list[DueJob], pickups: list[RunRow]) -> WriteBatch:
        b = WriteBatch()
        for j in jobs:
            rid = new_run_id()
            b.run_inserts.append(RunRecord(id=rid, job_id=j.id, job_name=j.name,
                                           scheduled_for=j.next_run, trigger="schedule",
                                           status="pending", owner=owner, due_at=j.next_run,
                                           created_at=now))
            b.job_advances.append((j.id, j.next_run, j.next_run + timedelta(minutes=5),
                                   "active", 1, j.next_run))
            made.append(rid)
        return b

    _, res = store.claim(now, planner)
    return made, res.rejected_inserts


def test_an_occurrence_cannot_be_claimed_twice(store: SqliteStore) -> None:
    store.deploy([job("a")], [ECHO])
    due = T0 + timedelta(minutes=5)
    made, rejected = _claim_all(store, due, "A")
    assert len(made) == 1 and not rejected
    # split brain / a reset moving next_run back: the same occurrence comes up again
    store._conn.execute("UPDATE jobs SET next_run = ?", (due.isoformat(timespec="microseconds"),))
    made2, rejected2 = _claim_all(store, due, "B")
    assert rejected2 == frozenset(made2)
    rows = store._conn.execute("SELECT owner FROM runs").fetchall()
    assert rows == [("A",)]
    assert store.get_job("a").run_count == 1  # type: ignore[union-attr]


def test_two_connections_claim_disjointly_under_threads(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    setup = SqliteStore.open(path, clock=FakeClock(T0))
    setup.deploy([job(f"j{i:02d}") for i in range(40)], [ECHO])
    setup.close()
    times = [T0 + timedelta(minutes=5 * k) for k in range(1, 11)]
    claimed: dict[str, list[str]] = {"A": [], "B": []}
    barrier = threading.Barrier(2)

    def worker(owner: str) -> None:
        s = SqliteStore.open(path, clock=FakeClock(T0))
        for t in times:
            barrier.wait()
            made, rejected = _claim_all(s, t, owner)
            claimed[owner] += [m for m in made if m not in rejected]
        s.close()

    threads = [threading.Thread(target=worker, args=(o,)) for o in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = SqliteStore.open(path)
    rows = s._conn.execute("SELECT job_id, scheduled_for, owner, id FROM runs").fetchall()
    s.close()
    assert len(rows) == 400  # every job, every occurrence
    assert len({(r[0], r[1]) for r in rows}) == 400  # none twice
    assert {r[3] for r in rows if r[2] == "A"} == set(claimed["A"])
    assert {r[3] for r in rows if r[2] == "B"} == set(claimed["B"])


def test_claim_is_fenced_by_the_lease(store: SqliteStore) -> None:
    store.deploy([job("a")], [ECHO])
    store.try_acquire_lease("other", 15)
    with pytest.raises(LeaseLost, match="other"):
        store.claim(T0 + timedelta(minutes=5), lambda j, p: WriteBatch(), lease_owner="me")
    with pytest.raises(LeaseLost):
        store.write_batch(WriteBatch(job_results={"x": [1, False, 1]}), lease_owner="me")


def test_retry_insert_for_a_deleted_job_is_dropped(store: SqliteStore) -> None:
    store.deploy([job("a")], [ECHO])
    a = store.get_job("a")
    assert a is not None
    store.remove_job("a", actor="x")
    rec = RunRecord(id=new_run_id(), job_id=a.id, job_name="a", scheduled_for=T0,
                    trigger="retry", status="pending", created_at=T0, due_at=T0)
    store.write_batch(WriteBatch(guarded_inserts=[rec]))
    assert store.get_run(rec.id) is None


def test_canonical_definition_is_stable() -> None:
    a = canonical_definition(job("a", tags=("x",)))
    b = canonical_definition(job("a", tags=("x",)))
    assert a == b and '"tags":["x"]' in a and ": " not in a


@pytest.mark.parametrize("definition", [
    JobDef(name="plain", agent="echo", cron="0 9 * * *"),
    JobDef(name="rich", agent="a", cron="*/5 * * * *", timezone="Europe/Berlin",
           tags=("x", "ü"), delivery=("webhook", "email"), webhook_url="https://h/${K}",
           webhook_headers=(("Authorization", "Bearer ${TOKEN}"),), email_recipients=("a@b.c",),
           heartbeat=HeartbeatDef(enabled=True, max_iterations=3, iteration_timeout_seconds=1.5),
           policy=SchedulePolicy(name="p", require_approval=True, approvers=("ops",),
                                 allowed_hours=AllowedHours("22:00", "04:00", "UTC"),
                                 max_runtime_seconds=60.0),
           jitter_seconds=None, max_retries=0, input="line1\nline2 \"q\""),
    AgentDef(name="cmd", executor="command", command=("sh", "-c", "echo hi"),
             env=(("A", "${B}"),), capabilities=("x",), timeout_seconds=30.0),
])
def test_canonical_definition_equals_the_plain_canonical_json(definition: JobDef | AgentDef) -> None:
    """The stored text must stay byte-identical to canonical JSON of the plain dict: if it
    drifted, every redeploy after an upgrade would count every job as updated."""
    from runtime.audit import canonical_json
    from runtime.store import canonical_definition

    assert canonical_definition(definition) == canonical_json(definition.to_dict())
