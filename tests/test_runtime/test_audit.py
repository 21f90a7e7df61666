"""The hash-chained audit log: appends, verification, tamper detection, append-only table."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from compiler.ir import JobDef
from runtime import audit
from runtime.audit import GENESIS_HASH, NewAuditEvent, event_hash
from runtime.clock import FakeClock
from runtime.store import SqliteStore, format_ts

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore.open(tmp_path / "state.db", clock=FakeClock(T0))
    yield s
    s.close()


def _events(n: int, start: int = 0) -> list[NewAuditEvent]:
    return [NewAuditEvent(audit.CRON_JOB_EXECUTED, T0 + timedelta(seconds=i), "tester",
                          f"job_{i}", f"name-{i}", f"run-{i}", {"i": i, "text": "ü ✓"})
            for i in range(start, start + n)]


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_chain_links_each_event_to_the_previous(store: SqliteStore) -> None:
    store.append_audit(_events(5))
    rows = store._conn.execute(
        "SELECT id, time, type, job_id, job_name, run_id, actor, details, prev_hash, hash"
        " FROM audit_events ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5]
    prev = GENESIS_HASH
    for r in rows:
        assert r[8] == prev
        assert r[9] == event_hash(prev, id=r[0], time=r[1], type=r[2], job_id=r[3],
                                  job_name=r[4], run_id=r[5], actor=r[6], details_json=r[7])
        prev = r[9]
    res = store.audit_verify()
    assert res.ok and res.count == 5 and res.first_bad_id is None


def test_empty_log_verifies(store: SqliteStore) -> None:
    res = store.audit_verify()
    assert res.ok and res.count == 0


def test_details_are_canonical_json(store: SqliteStore) -> None:
    store.append_audit([NewAuditEvent("CronJobCreated", T0, "a", details={"b": 1, "a": [2]})])
    (details,) = store._conn.execute("SELECT details FROM audit_events").fetchone()
    assert details == '{"a":[2],"b":1}'
    ev = store.audit_query(limit=1)[0]
    assert ev.details == {"a": [2], "b": 1}
    assert ev.to_dict()["time"] == T0.isoformat()


@pytest.mark.parametrize(
    ("column", "value"),
    [("details", '{"i":2,"text":"changed"}'), ("actor", "mallory"), ("time", format_ts(T0)),
     ("type", "CronJobFailed"), ("job_name", "other")],
)
def test_verify_reports_the_first_edited_row(store: SqliteStore, column: str,
                                             value: str) -> None:
    store.append_audit(_events(6))
    conn = _raw(store.path)
    # a tamperer with sqlite3 first has to get around the append-only triggers
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute(f"UPDATE audit_events SET {column} = ? WHERE id = 3", (value,))
    conn.close()
    res = store.audit_verify()
    assert not res.ok
    assert res.first_bad_id == 3
    assert "modified" in (res.reason or "")


def test_verify_detects_a_deleted_row(store: SqliteStore) -> None:
    store.append_audit(_events(5))
    conn = _raw(store.path)
    conn.execute("DROP TRIGGER audit_events_no_delete")
    conn.execute("DELETE FROM audit_events WHERE id = 2")
    conn.close()
    res = store.audit_verify()
    assert not res.ok and res.first_bad_id == 3


def test_verify_detects_a_recomputed_hash_with_a_broken_link(store: SqliteStore) -> None:
    """Rewriting a row *and* its own hash still breaks the next row's link."""
    store.append_audit(_events(4))
    conn = _raw(store.path)
    conn.execute("DROP TRIGGER audit_events_no_update")
    row = conn.execute("SELECT id, time, type, job_id, job_name, run_id, actor, prev_hash"
                       " FROM audit_events WHERE id = 2").fetchone()
    new_details = '{"forged":true}'
    new_hash = event_hash(row[7], id=row[0], time=row[1], type=row[2], job_id=row[3],
                          job_name=row[4], run_id=row[5], actor=row[6],
                          details_json=new_details)
    conn.execute("UPDATE audit_events SET details = ?, hash = ? WHERE id = 2",
                 (new_details, new_hash))
    conn.close()
    res = store.audit_verify()
    assert not res.ok and res.first_bad_id == 3
    assert "prev_hash" in (res.reason or "")


def test_table_refuses_update_and_delete(store: SqliteStore) -> None:
    store.append_audit(_events(2))
    conn = _raw(store.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE audit_events SET actor = 'x' WHERE id = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM audit_events")
    conn.close()
    assert store.audit_verify().ok


def test_two_writers_never_fork_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore.open(path).close()
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            s = SqliteStore.open(path, clock=FakeClock(T0))
            for i in range(25):
                s.append_audit(_events(2, start=k * 1000 + i * 2))
            s.close()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s = SqliteStore.open(path)
    res = s.audit_verify()
    assert res.ok and res.count == 100
    s.close()


def test_query_filters_newest_first(store: SqliteStore) -> None:
    store.deploy([JobDef(name="a", agent="x", cron="* * * * *"),
                  JobDef(name="b", agent="x", cron="* * * * *")], [])
    a = store.get_job("a")
    assert a is not None
    store.pause_job("a", actor="alice", now=T0 + timedelta(minutes=1))
    store.resume_job("a", actor="bob", now=T0 + timedelta(minutes=2))
    evs = store.audit_query()
    assert [e.type for e in evs] == ["CronJobResumed", "CronJobPaused", "CronJobCreated",
                                     "CronJobCreated"]
    assert [e.id for e in evs] == sorted((e.id for e in evs), reverse=True)
    assert [e.actor for e in store.audit_query(job="a")][:2] == ["bob", "alice"]
    assert [e.type for e in store.audit_query(job=a.id)] == [
        "CronJobResumed", "CronJobPaused", "CronJobCreated"]
    assert [e.type for e in store.audit_query(type="CronJobPaused")] == ["CronJobPaused"]
    since = store.audit_query(since=T0 + timedelta(minutes=1))
    assert [e.type for e in since] == ["CronJobResumed", "CronJobPaused"]
    until = store.audit_query(until=T0 + timedelta(minutes=1))
    assert {e.type for e in until} == {"CronJobCreated"}
    assert len(store.audit_query(limit=1)) == 1
