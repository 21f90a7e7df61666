"""Approvals (SPEC §5.6 ``require_approval``): runs that wait for a human decision.

When the policy gate answers ``RequireApproval``, the scheduler records the run as
``awaiting_approval`` and writes an ``approvals`` row (approvers, requested_at, expires_at =
requested_at + ``approval_timeout``) and an ``ApprovalRequested`` audit event in the same
transaction (:func:`request_writer`). Then, whichever comes first:

- :func:`approve_run` (``symbi cron approve RUN_ID``, the API): the approval is recorded
  (``ApprovalGranted``) and the run goes back to ``pending`` with no owner and ``due_at`` =
  now, so a running scheduler picks it up within a tick — or ``runtime.scheduler.
  run_manual_now`` executes it in-process when no scheduler runs. The policy gate is evaluated
  again then (hours, environment, AgentPin …), minus the approval step;
- :func:`reject_run` (``symbi cron reject RUN_ID --reason …``): ``ApprovalRejected``, the run
  ends ``denied`` (``stop_reason`` ``policy:approval_rejected``);
- the timeout: :func:`expire_due` (called by the scheduler at the earliest ``expires_at``, and
  by approve/reject for the run they name) ends the run ``denied`` (``policy:approval_timeout``,
  ``PolicyDenied`` audit event).

Everything lives in the state database, so a pending approval survives restarts. Each run needs
its own approval (a retry of an approved run asks again). ``approvers`` is recorded and shown;
symbi has no user directory, so it does not check who approves (the audit log records it).
Run ids may be given as a unique prefix (history shows the first 8 characters).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from runtime import audit
from runtime.audit import NewAuditEvent
from runtime.store import RunRow, SqliteStore, StoreError, format_ts, parse_ts

__all__ = [
    "ApprovalError",
    "ApprovalRow",
    "approve_run",
    "expire_due",
    "get_approval",
    "is_approved",
    "list_approvals",
    "next_expiry",
    "reject_run",
    "request_writer",
    "resolve_run_id",
]

STOP_REJECTED = "policy:approval_rejected"
STOP_TIMEOUT = "policy:approval_timeout"
_MIN_PREFIX = 4


class ApprovalError(StoreError):
    """An approval decision could not be made (unknown run, not awaiting approval, timed
    out, already decided); the message is meant for the user."""


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    """One approval request and its decision (None while pending)."""

    run_id: str
    job_id: str
    job_name: str | None
    approvers: tuple[str, ...]
    requested_at: datetime
    expires_at: datetime
    decision: str | None  # None | 'approved' | 'rejected' | 'expired'
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON shape."""
        return {"run_id": self.run_id, "job_id": self.job_id, "job_name": self.job_name,
                "approvers": list(self.approvers),
                "requested_at": self.requested_at.isoformat(),
                "expires_at": self.expires_at.isoformat(), "decision": self.decision,
                "decided_by": self.decided_by,
                "decided_at": self.decided_at.isoformat() if self.decided_at else None,
                "reason": self.reason}


_SELECT = ("SELECT a.run_id, a.job_id, r.job_name, a.approvers, a.requested_at, a.expires_at,"
           " a.decision, a.decided_by, a.decided_at, a.reason FROM approvals a"
           " LEFT JOIN runs r ON r.id = a.run_id")


def _row(r: Any) -> ApprovalRow:
    return ApprovalRow(r[0], r[1], r[2], tuple(json.loads(r[3] or "[]")),
                       parse_ts(r[4]), parse_ts(r[5]), r[6], r[7],  # type: ignore[arg-type]
                       parse_ts(r[8]), r[9])


# ------------------------------------------------------------------------------ reads


def resolve_run_id(store: SqliteStore, ref: str) -> str:
    """The full id of the run named by ``ref`` (a full id or a unique prefix of at least 4
    characters). :class:`ApprovalError` when there is no such run or the prefix is
    ambiguous."""
    ref = ref.strip()
    if store.get_run(ref) is not None:
        return ref
    if len(ref) >= _MIN_PREFIX and all(c in "0123456789abcdef-" for c in ref.lower()):
        rows = store.query("SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                           (ref.lower(), ref.lower() + "\uffff"))
        if len(rows) == 1:
            return str(rows[0][0])
        if len(rows) > 1:
            raise ApprovalError(f"run id prefix `{ref}` is ambiguous; give more characters")
    raise ApprovalError(f"no run with id `{ref}`")


def get_approval(store: SqliteStore, run_id: str) -> ApprovalRow | None:
    """The approval row of ``run_id``, or None."""
    rows = store.query(_SELECT + " WHERE a.run_id = ?", (run_id,))
    return _row(rows[0]) if rows else None


def list_approvals(store: SqliteStore, *, pending_only: bool = True,
                   job_id: str | None = None, limit: int = 100) -> list[ApprovalRow]:
    """Approvals, oldest request first; by default only those still waiting."""
    where, args = [], []
    if pending_only:
        where.append("a.decision IS NULL")
    if job_id is not None:
        where.append("a.job_id = ?")
        args.append(job_id)
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
    sql += " ORDER BY a.requested_at LIMIT ?"
    args.append(int(limit))  # type: ignore[arg-type]
    return [_row(r) for r in store.query(sql, args)]


def is_approved(store: SqliteStore, run_id: str) -> bool:
    """Whether ``run_id`` was approved (the gate then skips the approval step)."""
    rows = store.query("SELECT 1 FROM approvals WHERE run_id = ? AND decision = 'approved'",
                       (run_id,))
    return bool(rows)


def next_expiry(store: SqliteStore) -> datetime | None:
    """The earliest ``expires_at`` of a pending approval (the scheduler wakes then)."""
    rows = store.query("SELECT MIN(expires_at) FROM approvals WHERE decision IS NULL")
    return parse_ts(rows[0][0]) if rows and rows[0][0] is not None else None


# ------------------------------------------------------------------------------ writes


def request_writer(run_id: str, job_id: str, approvers: tuple[str, ...],
                   requested_at: datetime, timeout_seconds: float
                   ) -> Callable[[sqlite3.Connection], None]:
    """The write that records an approval request (for ``WriteBatch.extra_writes``, so it
    commits with the run's ``awaiting_approval`` status)."""
    expires = requested_at + timedelta(seconds=max(0.0, timeout_seconds))
    values = (run_id, job_id, json.dumps(list(approvers)), format_ts(requested_at),
              format_ts(expires))

    def write(conn: sqlite3.Connection) -> None:
        # the run may be gone (its job was removed meanwhile): then there is nothing to ask
        conn.execute("INSERT OR IGNORE INTO approvals (run_id, job_id, approvers, requested_at,"
                     " expires_at) SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM runs"
                     " WHERE id = ?)", (*values, run_id))
    return write


def _deny_run(conn: sqlite3.Connection, run_id: str, now: datetime, stop_reason: str,
              error: str) -> None:
    nowt = format_ts(now)
    conn.execute(
        "UPDATE runs SET status = 'denied', owner = NULL, finished_at = ?, stop_reason = ?,"
        " error = ?, duration_ms = NULL WHERE id = ? AND status = 'awaiting_approval'",
        (nowt, stop_reason, error, run_id))


def _expire_locked(conn: sqlite3.Connection, now: datetime, actor: str,
                   run_id: str | None = None) -> list[str]:
    """Expire pending approvals whose time is up (all, or only ``run_id``'s)."""
    nowt = format_ts(now)
    sql = ("SELECT a.run_id, a.job_id, r.job_name, a.requested_at, a.expires_at FROM approvals a"
           " LEFT JOIN runs r ON r.id = a.run_id WHERE a.decision IS NULL AND a.expires_at <= ?")
    args: list[Any] = [nowt]
    if run_id is not None:
        sql += " AND a.run_id = ?"
        args.append(run_id)
    rows = conn.execute(sql, args).fetchall()
    events = []
    for rid, jid, jname, requested, expires in rows:
        conn.execute("UPDATE approvals SET decision = 'expired', decided_by = ?, decided_at = ?,"
                     " reason = 'approval timed out' WHERE run_id = ?", (actor, nowt, rid))
        reason = f"approval timed out (requested {requested}, expired {expires})"
        _deny_run(conn, rid, now, STOP_TIMEOUT, reason)
        events.append(NewAuditEvent(audit.POLICY_DENIED, now, actor, jid, jname, rid, details={
            "reason": "approval timed out", "rule": "approval_timeout",
            "requested_at": requested, "expires_at": expires}))
    if events:
        audit.append_events(conn, events, format_ts)
    return [r[0] for r in rows]


def expire_due(store: SqliteStore, now: datetime | None = None, *,
               actor: str = "scheduler") -> list[str]:
    """End every pending approval whose ``approval_timeout`` has passed: the run becomes
    ``denied``. Returns the run ids."""
    now = now or store.clock.now()
    with store.transaction() as conn:
        return _expire_locked(conn, now, actor)


def _decide(store: SqliteStore, ref: str, *, actor: str, now: datetime | None,
            approve: bool, reason: str | None) -> RunRow:
    now = now or store.clock.now()
    run_id = resolve_run_id(store, ref)
    problem: str | None = None
    with store.transaction() as conn:
        if _expire_locked(conn, now, actor, run_id):
            problem = (f"the approval of run {run_id} timed out; the run was denied")
        else:
            row = conn.execute("SELECT a.decision, a.job_id, r.job_name, r.status, a.approvers"
                               " FROM approvals a JOIN runs r ON r.id = a.run_id"
                               " WHERE a.run_id = ?", (run_id,)).fetchone()
            if row is None:
                problem = f"run {run_id} is not waiting for an approval"
            elif row[0] is not None:
                problem = f"run {run_id} was already {row[0]}"
            elif row[3] != "awaiting_approval":
                problem = f"run {run_id} is {row[3]}, not awaiting approval"
            else:
                nowt = format_ts(now)
                conn.execute("UPDATE approvals SET decision = ?, decided_by = ?, decided_at = ?,"
                             " reason = ? WHERE run_id = ?",
                             ("approved" if approve else "rejected", actor, nowt, reason,
                              run_id))
                details: dict[str, Any] = {"approvers": json.loads(row[4] or "[]")}
                if approve:
                    # back in the queue: a scheduler picks it up (pending, unowned, due now)
                    conn.execute("UPDATE runs SET status = 'pending', owner = NULL, due_at = ?,"
                                 " stop_reason = NULL, error = NULL WHERE id = ?",
                                 (nowt, run_id))
                    kind = audit.APPROVAL_GRANTED
                else:
                    text = f"rejected by {actor}" + (f": {reason}" if reason else "")
                    _deny_run(conn, run_id, now, STOP_REJECTED, text)
                    kind = audit.APPROVAL_REJECTED
                    details["reason"] = reason
                audit.append_events(conn, [NewAuditEvent(kind, now, actor, row[1], row[2],
                                                         run_id, details=details)], format_ts)
    if problem is not None:
        raise ApprovalError(problem)
    store.notify_changed()
    run = store.get_run(run_id)
    assert run is not None
    return run


def approve_run(store: SqliteStore, ref: str, *, actor: str,
                now: datetime | None = None) -> RunRow:
    """Approve the waiting run ``ref`` (id or unique prefix): it becomes ``pending`` again
    and runs within a tick of a running scheduler (or via ``run_manual_now``). Raises
    :class:`ApprovalError` if it is not waiting or its approval timed out."""
    return _decide(store, ref, actor=actor, now=now, approve=True, reason=None)


def reject_run(store: SqliteStore, ref: str, *, actor: str, reason: str | None = None,
               now: datetime | None = None) -> RunRow:
    """Reject the waiting run ``ref``: it ends ``denied`` with the reason."""
    return _decide(store, ref, actor=actor, now=now, approve=False, reason=reason)
