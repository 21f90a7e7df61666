"""The audit log: append-only, hash-chained events stored in the state database.

Each event's ``hash`` is ``sha256(prev_hash + body)`` where the body is the compact JSON array
of the event's id, time, type, job id, job name, run id, actor and canonical details text
(details: sorted keys, no spaces).
Editing, deleting or reordering a row breaks the chain at that row, which
:func:`verify_chain` reports. The ``audit_events`` table additionally refuses UPDATE and DELETE
through triggers, so a tamperer has to go around the schema first.

Appends happen inside the caller's transaction (:func:`append_events`), so an audit event and
the change it records commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64

# Event types (SPEC §5.9). Security events are logged whatever a job's `audit` level says.
CRON_JOB_CREATED = "CronJobCreated"
CRON_JOB_UPDATED = "CronJobUpdated"
CRON_JOB_DELETED = "CronJobDeleted"
CRON_JOB_PAUSED = "CronJobPaused"
CRON_JOB_RESUMED = "CronJobResumed"
CRON_JOB_RESET = "CronJobReset"
CRON_JOB_TRIGGERED = "CronJobTriggered"  # our addition: who asked for a manual/api run
CRON_JOB_EXECUTED = "CronJobExecuted"
CRON_JOB_FAILED = "CronJobFailed"
CRON_JOB_DEAD_LETTERED = "CronJobDeadLettered"
AGENT_PIN_VERIFICATION_FAILED = "AgentPinVerificationFailed"
POLICY_DENIED = "PolicyDenied"
APPROVAL_REQUESTED = "ApprovalRequested"
APPROVAL_GRANTED = "ApprovalGranted"
APPROVAL_REJECTED = "ApprovalRejected"
DELIVERY_FAILED = "DeliveryFailed"

EVENT_TYPES = frozenset(
    {
        CRON_JOB_CREATED,
        CRON_JOB_UPDATED,
        CRON_JOB_DELETED,
        CRON_JOB_PAUSED,
        CRON_JOB_RESUMED,
        CRON_JOB_RESET,
        CRON_JOB_TRIGGERED,
        CRON_JOB_EXECUTED,
        CRON_JOB_FAILED,
        CRON_JOB_DEAD_LETTERED,
        AGENT_PIN_VERIFICATION_FAILED,
        POLICY_DENIED,
        APPROVAL_REQUESTED,
        APPROVAL_GRANTED,
        APPROVAL_REJECTED,
        DELIVERY_FAILED,
    }
)
#: Logged even for jobs with ``audit: none``.
SECURITY_EVENT_TYPES = frozenset(
    {AGENT_PIN_VERIFICATION_FAILED, POLICY_DENIED, APPROVAL_REQUESTED, APPROVAL_GRANTED,
     APPROVAL_REJECTED}
)

#: DDL of the audit table (used by the store's migration 1). The triggers make the table
#: append-only at the schema level.
AUDIT_DDL: tuple[str, ...] = (
    """CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        type TEXT NOT NULL,
        job_id TEXT,
        job_name TEXT,
        run_id TEXT,
        actor TEXT NOT NULL,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX ix_audit_type_time ON audit_events(type, time)",
    "CREATE INDEX ix_audit_time ON audit_events(time)",
    "CREATE INDEX ix_audit_job ON audit_events(job_id)",
    """CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END""",
    """CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
       BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END""",
)


@dataclass(frozen=True, slots=True)
class NewAuditEvent:
    """An event to append (id, hashes and ordering are assigned by :func:`append_events`)."""

    type: str
    time: datetime
    actor: str
    job_id: str | None = None
    job_name: str | None = None
    run_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """A stored audit event."""

    id: int
    time: datetime
    type: str
    job_id: str | None
    job_name: str | None
    run_id: str | None
    actor: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON shape (used by ``symbi audit query --format json``)."""
        return {
            "id": self.id,
            "time": self.time.isoformat(),
            "type": self.type,
            "job_id": self.job_id,
            "job_name": self.job_name,
            "run_id": self.run_id,
            "actor": self.actor,
            "details": self.details,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True)
class AuditVerifyResult:
    """Outcome of :func:`verify_chain`: ``first_bad_id`` is the first row that does not verify."""

    ok: bool
    count: int
    first_bad_id: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON shape."""
        return {"ok": self.ok, "count": self.count, "first_bad_id": self.first_bad_id,
                "reason": self.reason}


# Encoders are immutable once built; building one per call costs more than the encoding.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=str)
_FLAT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: object) -> str:
    """Deterministic JSON: sorted keys, no whitespace, UTF-8 kept as is."""
    return _CANONICAL.encode(value)


def event_hash(prev_hash: str, *, id: int, time: str, type: str, job_id: str | None,
               job_name: str | None, run_id: str | None, actor: str, details_json: str) -> str:
    """The chain hash of one event: ``sha256(prev_hash + body)`` where body is the JSON array
    ``[id, time, type, job_id, job_name, run_id, actor, details]`` (``details`` is the stored
    canonical details text)."""
    body = _FLAT.encode([id, time, type, job_id, job_name, run_id, actor, details_json])
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def chain_head(conn: sqlite3.Connection) -> tuple[int, str]:
    """``(last id, last hash)`` of the chain, ``(0, GENESIS_HASH)`` when empty."""
    row = conn.execute("SELECT id, hash FROM audit_events ORDER BY id DESC LIMIT 1").fetchone()
    return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))


def append_events(conn: sqlite3.Connection, events: Iterable[NewAuditEvent],
                  format_time: Any) -> int:
    """Append ``events`` in order inside the caller's open write transaction.

    The head is read inside the same transaction, so two writers (processes) can never fork the
    chain: SQLite serialises write transactions. Returns the number of events written.
    """
    last_id, prev = chain_head(conn)
    rows = []
    for ev in events:
        last_id += 1
        t = format_time(ev.time)
        details_json = canonical_json(dict(ev.details))
        h = event_hash(prev, id=last_id, time=t, type=ev.type, job_id=ev.job_id,
                       job_name=ev.job_name, run_id=ev.run_id, actor=ev.actor,
                       details_json=details_json)
        rows.append((last_id, t, ev.type, ev.job_id, ev.job_name, ev.run_id, ev.actor,
                     details_json, prev, h))
        prev = h
    if rows:
        conn.executemany(
            "INSERT INTO audit_events (id, time, type, job_id, job_name, run_id, actor, details,"
            " prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
    return len(rows)


def verify_chain(conn: sqlite3.Connection) -> AuditVerifyResult:
    """Recompute the whole chain; report the first row whose link or hash is wrong.

    Detects edited fields (hash mismatch), deleted or inserted rows (id gap or ``prev_hash``
    mismatch) and reordering. Deleting the newest rows is not detectable from the chain alone.
    """
    prev = GENESIS_HASH
    expected_id = 1
    count = 0
    cur = conn.execute(
        "SELECT id, time, type, job_id, job_name, run_id, actor, details, prev_hash, hash"
        " FROM audit_events ORDER BY id"
    )
    for id_, t, typ, job_id, job_name, run_id, actor, details, prev_hash, h in cur:
        count += 1
        if id_ != expected_id:
            return AuditVerifyResult(False, count, id_, f"expected event id {expected_id}, "
                                     f"found {id_} (rows deleted or inserted)")
        if prev_hash != prev:
            return AuditVerifyResult(False, count, id_, "prev_hash does not match the hash of "
                                     "the previous event")
        recomputed = event_hash(prev, id=id_, time=t, type=typ, job_id=job_id,
                                job_name=job_name, run_id=run_id, actor=actor,
                                details_json=details)
        if recomputed != h:
            return AuditVerifyResult(False, count, id_, "event content does not match its hash "
                                     "(row was modified)")
        prev = h
        expected_id += 1
    return AuditVerifyResult(True, count)


def row_to_event(row: sqlite3.Row | tuple[Any, ...], parse_time: Any) -> AuditEvent:
    """Build an :class:`AuditEvent` from a row in column order of ``audit_events``."""
    id_, t, typ, job_id, job_name, run_id, actor, details, prev_hash, h = tuple(row)
    return AuditEvent(id=id_, time=parse_time(t), type=typ, job_id=job_id, job_name=job_name,
                      run_id=run_id, actor=actor, details=json.loads(details),
                      prev_hash=prev_hash, hash=h)
