"""The state store: one SQLite file holding agents, jobs, runs, the audit log and the lease.

Design notes (SPEC §4):

- WAL journal, ``synchronous=NORMAL`` (a commit is durable against process crashes; a power
  cut may lose the last few commits but never corrupts the file), ``busy_timeout``, foreign
  keys on. Every write is one ``BEGIN IMMEDIATE`` transaction, so writers from several
  processes are serialised and a read-then-write inside a transaction cannot race.
- The schema is versioned by numbered forward migrations (:data:`MIGRATIONS`); adding a table
  later means appending one :class:`Migration`. A file written by a newer version is refused
  with :class:`StoreSchemaTooNew` before anything is written to it.
- Times are stored as fixed-width UTC ISO-8601 text with microseconds
  (``2026-03-08T07:00:00.000000+00:00``): sortable as text and readable in ``sqlite3``.
- ``runs`` has a partial unique index on ``(job_id, scheduled_for)`` for the occurrence
  triggers ``schedule`` and ``catchup`` (also used for their ``skipped``/``missed`` rows): an
  occurrence can be claimed once only, by any process. ``retry``, ``manual`` and ``api`` runs are
  further attempts or extra runs and are not part of that key; a retry keeps the
  ``scheduled_for`` of the occurrence it retries (and ``retry_of`` names the attempt before).
- Every job mutation writes its audit event in the same transaction (see ``runtime.audit``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import operator
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from compiler.cron import parse_cron
from compiler.ir import AgentDef, JobDef
from runtime import audit
from runtime.audit import AuditEvent, AuditVerifyResult, NewAuditEvent
from runtime.clock import Clock, SystemClock, ensure_utc

JOB_STATUSES = ("active", "paused", "completed", "dead_letter")
ORIGINS = ("bundle", "cli", "api")
RUN_STATUSES = ("pending", "awaiting_approval", "running", "succeeded", "failed", "timed_out",
                "denied", "skipped", "missed", "interrupted", "cancelled")
TRIGGERS = ("schedule", "catchup", "manual", "retry", "api")
#: Triggers whose runs are occurrences of the schedule: unique per (job, scheduled_for).
OCCURRENCE_TRIGGERS = ("schedule", "catchup")
#: Run statuses that end a run.
FINAL_RUN_STATUSES = frozenset({"succeeded", "failed", "timed_out", "denied", "skipped",
                                "missed", "interrupted", "cancelled"})
#: Final statuses that count as a failure (and are retried, SPEC §5.3).
FAILURE_STATUSES = frozenset({"failed", "timed_out", "interrupted"})
#: Fields whose change means the job's next_run must be recomputed.
SCHEDULE_FIELDS = ("cron", "at", "timezone", "one_shot")

BUSY_TIMEOUT_MS = 10_000


# ------------------------------------------------------------------------------ errors


class StoreError(Exception):
    """A store operation failed; the message is meant for the user."""


class StoreSchemaTooNew(StoreError):
    """The database was written by a newer version of symbi (its schema is unknown here)."""


class JobNotFound(StoreError):
    """No job with the given id or name (the API maps it to 404)."""


class DuplicateJob(StoreError):
    """A job with that name already exists (the API maps it to 409)."""


class LeaseLost(StoreError):
    """A scheduler write was refused because another scheduler now holds the lease."""


# ------------------------------------------------------------------------------ schema


@dataclass(frozen=True, slots=True)
class Migration:
    """One forward step of the schema: ``statements`` run in one transaction."""

    version: int
    description: str
    statements: tuple[str, ...]


_RUN_STATUS_SQL = ",".join(f"'{s}'" for s in RUN_STATUSES)
_TRIGGER_SQL = ",".join(f"'{s}'" for s in TRIGGERS)
_OCC_SQL = ",".join(f"'{s}'" for s in OCCURRENCE_TRIGGERS)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "agents, jobs, runs, audit events, lease",
        (
            """CREATE TABLE agents (
                name TEXT PRIMARY KEY,
                definition TEXT NOT NULL,
                origin TEXT NOT NULL DEFAULT 'bundle',
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            f"""CREATE TABLE jobs (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                agent TEXT NOT NULL,
                definition TEXT NOT NULL,
                def_hash TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ({",".join(f"'{s}'" for s in JOB_STATUSES)})),
                origin TEXT NOT NULL CHECK (origin IN ({",".join(f"'{s}'" for s in ORIGINS)})),
                next_run TEXT,
                last_run TEXT,
                run_count INTEGER NOT NULL DEFAULT 0,
                failure_count INTEGER NOT NULL DEFAULT 0,
                consecutive_failures INTEGER NOT NULL DEFAULT 0,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            "CREATE INDEX ix_jobs_due ON jobs(next_run) WHERE status = 'active'",
            "CREATE INDEX ix_jobs_agent ON jobs(agent)",
            f"""CREATE TABLE runs (
                id TEXT PRIMARY KEY,
                job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
                job_name TEXT NOT NULL,
                scheduled_for TEXT NOT NULL,
                trigger TEXT NOT NULL CHECK (trigger IN ({_TRIGGER_SQL})),
                status TEXT NOT NULL CHECK (status IN ({_RUN_STATUS_SQL})),
                attempt INTEGER NOT NULL DEFAULT 1,
                retry_of TEXT,
                owner TEXT,
                due_at TEXT,
                created_at TEXT NOT NULL,
                started_at TEXT,
                finished_at TEXT,
                duration_ms INTEGER,
                lateness_ms INTEGER,
                jitter_ms INTEGER,
                start_delay_ms INTEGER,
                input TEXT,
                output TEXT,
                summary TEXT,
                error TEXT,
                stop_reason TEXT,
                exit_code INTEGER
            )""",
            f"CREATE UNIQUE INDEX ux_runs_occurrence ON runs(job_id, scheduled_for)"
            f" WHERE trigger IN ({_OCC_SQL})",
            "CREATE INDEX ix_runs_job_created ON runs(job_id, created_at)",
            "CREATE INDEX ix_runs_created ON runs(created_at)",
            "CREATE INDEX ix_runs_pickup ON runs(due_at) WHERE status = 'pending' AND owner IS NULL",
            "CREATE INDEX ix_runs_inflight ON runs(owner) WHERE status IN ('pending', 'running')",
            *audit.AUDIT_DDL,
            """CREATE TABLE lease (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                owner TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                acquired_at TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "session contexts, approvals, heartbeat iterations, AgentPin key pins, run usage",
        (
            """CREATE TABLE session_contexts (
                job_id TEXT PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
                mode TEXT NOT NULL,
                messages TEXT NOT NULL DEFAULT '[]',
                memory TEXT NOT NULL DEFAULT '{}',
                summary TEXT,
                size_bytes INTEGER NOT NULL DEFAULT 0,
                updated_at TEXT NOT NULL
            )""",
            """CREATE TABLE approvals (
                run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
                job_id TEXT NOT NULL,
                approvers TEXT NOT NULL DEFAULT '[]',
                requested_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                decision TEXT CHECK (decision IN ('approved', 'rejected', 'expired')),
                decided_by TEXT,
                decided_at TEXT,
                reason TEXT
            )""",
            "CREATE INDEX ix_approvals_open ON approvals(expires_at) WHERE decision IS NULL",
            """CREATE TABLE heartbeat_iterations (
                run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                iteration INTEGER NOT NULL,
                started_at TEXT NOT NULL,
                finished_at TEXT,
                status TEXT NOT NULL,
                action TEXT,
                output TEXT,
                summary TEXT,
                error TEXT,
                PRIMARY KEY (run_id, iteration)
            )""",
            """CREATE TABLE agentpin_pins (
                domain TEXT PRIMARY KEY,
                key_id TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                pinned_at TEXT NOT NULL
            )""",
            "ALTER TABLE runs ADD COLUMN usage TEXT",
        ),
    ),
    Migration(
        3,
        "delivery outbox and receipts",
        (
            """CREATE TABLE deliveries (
                id TEXT PRIMARY KEY,
                run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
                job_id TEXT NOT NULL,
                channel TEXT NOT NULL,
                status TEXT NOT NULL
                    CHECK (status IN ('pending', 'retrying', 'delivered', 'failed')),
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                last_error TEXT,
                UNIQUE (run_id, channel)
            )""",
            "CREATE INDEX ix_deliveries_due ON deliveries(next_attempt_at)"
            " WHERE status IN ('pending', 'retrying')",
            "CREATE INDEX ix_deliveries_job ON deliveries(job_id, created_at)",
            """CREATE TABLE delivery_attempts (
                delivery_id TEXT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
                attempt INTEGER NOT NULL,
                at TEXT NOT NULL,
                ok INTEGER NOT NULL,
                status_code INTEGER,
                response TEXT,
                error TEXT,
                PRIMARY KEY (delivery_id, attempt)
            )""",
        ),
    ),
)


# ------------------------------------------------------------------------------ time


def format_ts(dt: datetime) -> str:
    """Fixed-width UTC text of an aware datetime (the storage format)."""
    if dt.tzinfo is not UTC:
        dt = ensure_utc(dt)
    return dt.isoformat(timespec="microseconds")


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else format_ts(dt)


class _TsMemo(dict[datetime, str]):
    """Formats datetimes, remembering results: a batch of runs shares a handful of instants
    (the claim time, the scheduled time), so most lookups are hits."""

    def __call__(self, dt: datetime | None) -> str | None:
        if dt is None:
            return None
        s = self.get(dt)
        if s is None:
            s = self[dt] = format_ts(dt)
        return s


def parse_ts(text: str | None) -> datetime | None:
    """Inverse of :func:`format_ts` (None stays None)."""
    return None if text is None else datetime.fromisoformat(text)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


# ------------------------------------------------------------------------------ schedules


def parse_at(job: JobDef) -> datetime | None:
    """The instant of an ``at`` job (a naive value is read in the job's time zone)."""
    if not job.at:
        return None
    try:
        dt = datetime.fromisoformat(job.at.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        try:
            dt = dt.replace(tzinfo=ZoneInfo(job.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            return None
    return dt.astimezone(UTC)


def _cron_expr(text: str) -> Any:
    expr, _problems = parse_cron(text)
    return expr


def first_run(job: JobDef, now: datetime) -> datetime | None:
    """The first occurrence of ``job`` after ``now`` (an ``at`` job: its instant, even if past,
    so that start-up catch-up decides what happens to it)."""
    if job.at:
        return parse_at(job)
    if not job.cron:
        return None
    expr = _cron_expr(job.cron)
    if expr is None:
        return None
    result: datetime | None = expr.next_after(now, job.timezone)
    return result


def next_after_occurrence(job: JobDef, occurrence: datetime) -> datetime | None:
    """The occurrence after ``occurrence`` (None for ``at`` and ``one_shot`` jobs: they run
    once)."""
    if job.at or job.one_shot or not job.cron:
        return None
    expr = _cron_expr(job.cron)
    if expr is None:
        return None
    result: datetime | None = expr.next_after(occurrence, job.timezone)
    return result


# ------------------------------------------------------------------------------ rows


@functools.lru_cache(maxsize=64)
def _field_names(cls: Any) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def plain(obj: Any) -> Any:
    """Same result as ``JobDef.to_dict()``/``AgentDef.to_dict()`` (dataclasses → dicts, tuples →
    lists), about five times faster: deploying 100,000 jobs serialises each one."""
    t = type(obj)
    if t is str or t is int or t is float or t is bool or obj is None:
        return obj
    if t is tuple or t is list:
        return [plain(x) for x in obj]
    if dataclasses.is_dataclass(obj):
        names = _field_names(t)  # type: ignore[arg-type]  # classes are hashable
        return {name: plain(getattr(obj, name)) for name in names}
    return obj


@functools.lru_cache(maxsize=64)
def _field_getter(cls: Any) -> Callable[[Any], tuple[Any, ...]]:
    """All field values of a dataclass instance in one C-level call."""
    names = _field_names(cls)
    if len(names) > 1:
        return operator.attrgetter(*names)
    return lambda obj: tuple(getattr(obj, n) for n in names)


def _json_default(obj: Any) -> Any:
    # The encoder meets dataclasses nested in a definition here (tuples it encodes as lists
    # itself); anything else becomes its str(), as in audit.canonical_json.
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        t = type(obj)
        return dict(zip(_field_names(t), _field_getter(t)(obj), strict=True))
    return str(obj)


# Same output as audit.canonical_json(plain(obj)) (sorted keys, compact, UTF-8 kept) without
# building the intermediate dicts and lists: deploying 100,000 jobs serialises each one.
_DEFINITION_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                    default=_json_default)


def canonical_definition(obj: JobDef | AgentDef) -> str:
    """The stored JSON of a definition (sorted keys, compact): equal definitions, equal text."""
    return _DEFINITION_JSON.encode(_json_default(obj))


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class JobRow:
    """A job: its definition and its scheduling state."""

    id: str
    name: str
    definition: JobDef
    status: str
    origin: str
    next_run: datetime | None
    last_run: datetime | None
    run_count: int
    failure_count: int
    consecutive_failures: int
    created_at: datetime
    updated_at: datetime

    def upcoming(self, n: int) -> list[datetime]:
        """The next ``n`` fire times, starting with the stored ``next_run`` (none unless the
        job is active; one for ``at`` and one-shot jobs)."""
        if self.status != "active" or self.next_run is None or n <= 0:
            return []
        out = [self.next_run]
        d = self.definition
        if d.cron and not d.one_shot and n > 1:
            expr, _ = parse_cron(d.cron)
            if expr is not None:
                out += expr.next_n(self.next_run, d.timezone, n - 1)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON shape (``--format json``)."""
        d = self.definition
        return {
            "id": self.id,
            "name": self.name,
            "agent": d.agent,
            "cron": d.cron,
            "at": d.at,
            "timezone": d.timezone,
            "status": self.status,
            "origin": self.origin,
            "next_run": _iso(self.next_run),
            "last_run": _iso(self.last_run),
            "run_count": self.run_count,
            "failure_count": self.failure_count,
            "consecutive_failures": self.consecutive_failures,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "definition": d.to_dict(),
        }


#: Column order of ``runs`` (inserts and selects use it).
RUN_COLUMNS = ("id", "job_id", "job_name", "scheduled_for", "trigger", "status", "attempt",
               "retry_of", "owner", "due_at", "created_at", "started_at", "finished_at",
               "duration_ms", "lateness_ms", "jitter_ms", "start_delay_ms", "input", "output",
               "summary", "error", "stop_reason", "exit_code")
#: ``usage`` (migration 2) is selected and written after those columns: it is not one of them
#: because :data:`RUN_COLUMNS` is also the shape of a run in the HTTP API (a closed schema).
_RUN_SELECT = "SELECT " + ", ".join(RUN_COLUMNS) + ", usage FROM runs"
_RUN_TIME_FIELDS = frozenset({"scheduled_for", "due_at", "created_at", "started_at",
                              "finished_at"})


@dataclass(frozen=True)
class RunRow:
    """One run (an occurrence, a retry attempt, or a manual run)."""

    id: str
    job_id: str
    job_name: str
    scheduled_for: datetime
    trigger: str
    status: str
    attempt: int
    retry_of: str | None
    owner: str | None
    due_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    lateness_ms: int | None
    jitter_ms: int | None
    start_delay_ms: int | None
    input: str | None
    output: str | None
    summary: str | None
    error: str | None
    stop_reason: str | None
    exit_code: int | None
    # token usage of an `llm` run (ExecResult.usage: provider, model, prompt_tokens,
    # completion_tokens, total_tokens, finish_reason, attempts); None for other runs
    usage: dict[str, Any] | None = None

    def to_dict(self, *, with_usage: bool = False) -> dict[str, Any]:
        """Stable JSON shape (every column of :data:`RUN_COLUMNS`; times as ISO-8601), plus
        ``usage`` with ``with_usage`` (the CLI's records; the API's run schema lacks it)."""
        out: dict[str, Any] = {}
        for name in RUN_COLUMNS:
            v = getattr(self, name)
            out[name] = _iso(v) if name in _RUN_TIME_FIELDS else v
        if with_usage:
            out["usage"] = self.usage
        return out


def _usage_json(usage: dict[str, Any] | None) -> str | None:
    return None if usage is None else json.dumps(usage, sort_keys=True, separators=(",", ":"))


def _usage_from(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:  # written by hand or by a broken tool: shown as missing
        return None
    return value if isinstance(value, dict) else None


def _run_from_row(row: Sequence[Any]) -> RunRow:
    vals = list(row)
    for i, name in enumerate(RUN_COLUMNS):
        if name in _RUN_TIME_FIELDS:
            vals[i] = parse_ts(vals[i])
    vals[-1] = _usage_from(vals[-1])
    return RunRow(*vals)


@dataclass(slots=True)
class RunRecord:
    """A run as the scheduler holds it in memory and writes it (mutable, all columns)."""

    id: str
    job_id: str
    job_name: str
    scheduled_for: datetime
    trigger: str
    status: str
    attempt: int = 1
    retry_of: str | None = None
    owner: str | None = None
    due_at: datetime | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    lateness_ms: int | None = None
    jitter_ms: int | None = None
    start_delay_ms: int | None = None
    input: str | None = None
    output: str | None = None
    summary: str | None = None
    error: str | None = None
    stop_reason: str | None = None
    exit_code: int | None = None
    usage: dict[str, Any] | None = None

    def insert_values(self, ts: Callable[[datetime | None], str | None] = _ts
                      ) -> tuple[Any, ...]:
        """Values in :data:`RUN_COLUMNS` order, then ``usage``."""
        return (self.id, self.job_id, self.job_name, ts(self.scheduled_for), self.trigger,
                self.status, self.attempt, self.retry_of, self.owner, ts(self.due_at),
                ts(self.created_at), ts(self.started_at), ts(self.finished_at),
                self.duration_ms, self.lateness_ms, self.jitter_ms, self.start_delay_ms,
                self.input, self.output, self.summary, self.error, self.stop_reason,
                self.exit_code, None if self.usage is None else _usage_json(self.usage))

    def update_values(self, ts: Callable[[datetime | None], str | None] = _ts
                      ) -> tuple[Any, ...]:
        """Values for :data:`_RUN_UPDATE_SQL` (the mutable columns, then the id)."""
        return (self.status, self.owner, ts(self.due_at), ts(self.started_at),
                ts(self.finished_at), self.duration_ms, self.lateness_ms, self.jitter_ms,
                self.start_delay_ms, self.output, self.summary, self.error, self.stop_reason,
                self.exit_code, None if self.usage is None else _usage_json(self.usage),
                self.id)

    @classmethod
    def from_row(cls, row: RunRow) -> RunRecord:
        """A mutable copy of a stored run."""
        return cls(**{name: getattr(row, name) for name in RUN_COLUMNS}, usage=row.usage)


#: Claims: the job row was read in the same transaction, so it exists; a taken occurrence is
#: skipped (ON CONFLICT DO NOTHING) and reported back.
_RUN_CLAIM_SQL = (
    "INSERT INTO runs (" + ", ".join(RUN_COLUMNS) + ", usage) VALUES ("
    + ", ".join("?" * (len(RUN_COLUMNS) + 1)) + ") ON CONFLICT DO NOTHING"
)
#: Retries and manual runs: the job may have been deleted meanwhile; then nothing is inserted.
_RUN_INSERT_SQL = (
    "INSERT INTO runs (" + ", ".join(RUN_COLUMNS) + ", usage) SELECT "
    + ", ".join("?" * (len(RUN_COLUMNS) + 1))
    + " WHERE EXISTS (SELECT 1 FROM jobs WHERE id = ?) ON CONFLICT DO NOTHING"
)
_RUN_UPDATE_SQL = (
    "UPDATE runs SET status = ?, owner = ?, due_at = ?, started_at = ?, finished_at = ?,"
    " duration_ms = ?, lateness_ms = ?, jitter_ms = ?, start_delay_ms = ?, output = ?,"
    " summary = ?, error = ?, stop_reason = ?, exit_code = ?, usage = ? WHERE id = ?"
)


@dataclass(frozen=True)
class DeployReport:
    """What a deploy did, by job/agent name (sorted)."""

    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    pruned: tuple[str, ...] = ()
    prune: str | None = None
    agents_created: tuple[str, ...] = ()
    agents_updated: tuple[str, ...] = ()
    agents_unchanged: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        """True if the deploy wrote anything."""
        return bool(self.created or self.updated or self.pruned or self.agents_created
                    or self.agents_updated)

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON shape."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class LeaseInfo:
    """The scheduler lease row."""

    owner: str
    expires_at: datetime
    acquired_at: datetime


class DueJob(NamedTuple):
    """An active job whose ``next_run`` has come (what the claim planner needs)."""

    id: str
    name: str
    definition: JobDef
    next_run: datetime
    has_run: bool = True  # False: last_run is NULL, the job never ran (no history to read)


@dataclass
class WriteBatch:
    """Writes the scheduler makes in one transaction (claims, results, retries)."""

    run_inserts: list[RunRecord] = field(default_factory=list)  # claims (job row read in tx)
    guarded_inserts: list[RunRecord] = field(default_factory=list)  # retries: job may be gone
    run_updates: list[RunRecord] = field(default_factory=list)
    # (job_id, expected_next_run, new_next_run, new_status, runs_started, last_run): a claim
    job_advances: list[tuple[str, datetime | None, datetime | None, str, int, datetime | None]] = (
        field(default_factory=list))
    # job_id -> [runs_started, last_run]: runs taken over outside a claim of the job (pickups)
    job_started: dict[str, list[Any]] = field(default_factory=dict)
    # job_id -> [failures, reset_consecutive_first, consecutive_add]: finished runs
    job_results: dict[str, list[Any]] = field(default_factory=dict)
    # (job_id, job_name, details): move to dead_letter (from active/completed) + audit event
    dead_letters: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    audit_events: list[NewAuditEvent] = field(default_factory=list)
    # companion-module writes (sessions, approvals …) run in the same transaction, after the
    # run rows and before the audit events
    extra_writes: list[Callable[[sqlite3.Connection], None]] = field(default_factory=list)

    def count_started(self, job_id: str, when: datetime) -> None:
        """A run of the job was taken over for execution (run_count, last_run)."""
        c = self.job_started.get(job_id)
        if c is None:
            self.job_started[job_id] = [1, when]
        else:
            c[0] += 1
            if when > c[1]:
                c[1] = when

    def count_result(self, job_id: str, failed: bool) -> None:
        """Fold one finished run into the job's failure counters (in order: a success resets
        the consecutive count)."""
        c = self.job_results.get(job_id)
        if c is None:
            c = self.job_results[job_id] = [0, False, 0]
        if failed:
            c[0] += 1
            c[2] += 1
        else:
            c[1] = True
            c[2] = 0

    def __bool__(self) -> bool:
        return bool(self.run_inserts or self.guarded_inserts or self.run_updates
                    or self.job_advances or self.job_started or self.job_results
                    or self.dead_letters or self.audit_events or self.extra_writes)


@dataclass(frozen=True)
class BatchResult:
    """What :meth:`SqliteStore.write_batch` could not apply."""

    rejected_inserts: frozenset[str] = frozenset()  # claimed run ids whose occurrence was taken
    dead_lettered: tuple[str, ...] = ()  # job ids actually moved to dead_letter


# ------------------------------------------------------------------------------ store

_JOB_COLS = ("id, name, definition, def_hash, status, origin, next_run, last_run, run_count,"
             " failure_count, consecutive_failures, created_at, updated_at")
_JOB_STATE_COLS = ("id, name, def_hash, status, origin, next_run, last_run, run_count,"
                   " failure_count, consecutive_failures, created_at, updated_at")
_JOB_INSERT_SQL = ("INSERT INTO jobs (id, name, agent, definition, def_hash, status, origin,"
                   " next_run, last_run, run_count, failure_count, consecutive_failures,"
                   " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
# deploy(): jobs prepared and written per step, and how many of the deployed definitions are
# kept in the definition cache (enough for a large burst right after deploying; a
# definition not kept is read back by the claim that first needs it).
_DEPLOY_CHUNK = 2_000
_DEPLOY_DEF_CACHE = 16_384
# A deployment of at least _DEPLOY_LARGE jobs is written with a page cache of
# _DEPLOY_CACHE_KIB KiB (see SqliteStore._deploy_page_cache).
_DEPLOY_LARGE = 10_000
_DEPLOY_CACHE_KIB = 8_192


def _jobs_sql(cols: str, status: str | None, agent: str | None, limit: int | None,
              offset: int) -> tuple[str, list[Any]]:
    """The jobs query of :meth:`SqliteStore.list_jobs` (ordered by name, filtered, paged)."""
    sql = f"SELECT {cols} FROM jobs"
    where: list[str] = []
    args: list[Any] = []
    if status is not None:
        where.append("status = ?")
        args.append(status)
    if agent is not None:
        where.append("agent = ?")
        args.append(agent)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY name"
    if limit is not None or offset:
        sql += " LIMIT ? OFFSET ?"
        args += [-1 if limit is None else limit, offset]
    return sql, args


class SqliteStore:
    """The SQLite state store. One instance = one connection; use it from one thread at a time
    (an internal lock makes accidental sharing safe, not concurrent)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, clock: Clock, readonly: bool):
        self._conn = conn
        self.path = path
        self.clock = clock
        self.readonly = readonly
        self._lock = threading.RLock()
        self._def_cache: dict[str, JobDef] = {}
        self._mgmt_version = 0
        self._listeners: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ open / close

    @classmethod
    def open(cls, path: Path | str, *, clock: Clock | None = None, readonly: bool = False,
             migrations: Sequence[Migration] = MIGRATIONS) -> SqliteStore:
        """Open (creating and migrating if needed) the state database at ``path``.

        Raises :class:`StoreSchemaTooNew` for a database from a newer symbi, and
        :class:`StoreError` for a file that is not a symbi state database.
        """
        p = Path(path)
        if readonly and not p.exists():
            raise StoreError(f"{p}: no such state database")
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, isolation_level=None,
                                       check_same_thread=False)
            else:
                conn = sqlite3.connect(str(p), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"{p}: cannot open the state database: {e}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            latest = max((m.version for m in migrations), default=0)
            current = _schema_version(conn, p)
            if current > latest:
                raise StoreSchemaTooNew(
                    f"{p}: the state database has schema version {current}, but this version "
                    f"of symbi only knows versions up to {latest}; it was written by a newer "
                    "symbi — upgrade symbi (the file was not changed)"
                )
            if not readonly:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: 100k jobs stay in memory
            conn.execute("PRAGMA foreign_keys = ON")
            if current < latest:
                if readonly:
                    raise StoreError(f"{p}: the state database needs a schema migration "
                                     f"({current} → {latest}); open it writable once")
                _migrate(conn, migrations, current)
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreError(f"{p}: not a usable SQLite state database: {e}") from None
        except BaseException:
            conn.close()
            raise
        return cls(conn, p, clock or SystemClock(), readonly)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; sqlite errors become :class:`StoreError`."""
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only")
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise StoreError(f"{self.path}: cannot write to the state database: {e}") from None
            try:
                yield self._conn
            except sqlite3.Error as e:
                self._conn.execute("ROLLBACK")
                raise StoreError(f"{self.path}: state database error: {e}") from e
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as e:
                self._conn.execute("ROLLBACK")
                raise StoreError(f"{self.path}: commit failed: {e}") from None

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A write transaction for companion modules (sessions, approvals, delivery outbox)
        that keep their own tables in this database."""
        return self._write()

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        """Run a read-only query on the store's connection and return all rows."""
        with self._lock:
            return list(self._conn.execute(sql, params).fetchall())

    def _now(self, now: datetime | None = None) -> datetime:
        return ensure_utc(now) if now is not None else self.clock.now()

    # ------------------------------------------------------------------ change detection

    def data_version(self) -> int:
        """``PRAGMA data_version``: changes when another connection commits."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def change_token(self) -> tuple[int, int]:
        """Changes whenever jobs/agents/manual runs change — by another connection or by a
        management call on this one (the scheduler's own batch writes do not count)."""
        return (self.data_version(), self._mgmt_version)

    def add_change_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after each management change made through this instance (the
        scheduler uses it to wake up at once when the API shares its store)."""
        self._listeners.append(callback)

    def remove_change_listener(self, callback: Callable[[], None]) -> None:
        """Undo :meth:`add_change_listener`."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    def notify_changed(self) -> None:
        """Companion modules call this after changing what a scheduler acts on (an approval
        decision …) through this store: a scheduler sharing it wakes at once."""
        self._changed()

    def _changed(self) -> None:
        self._mgmt_version += 1
        for cb in list(self._listeners):
            cb()

    # ------------------------------------------------------------------ rows

    def _job_def(self, def_hash: str, text: str) -> JobDef:
        d = self._def_cache.get(def_hash)
        if d is None:
            if len(self._def_cache) > 500_000:
                self._def_cache.clear()
            d = self._def_cache[def_hash] = JobDef.from_dict(json.loads(text))
        return d

    def _job_row(self, row: Sequence[Any]) -> JobRow:
        (id_, name, definition, def_hash, status, origin, next_run, last_run, run_count,
         failure_count, consec, created_at, updated_at) = row
        return JobRow(
            id=id_, name=name, definition=self._job_def(def_hash, definition), status=status,
            origin=origin, next_run=parse_ts(next_run), last_run=parse_ts(last_run),
            run_count=run_count, failure_count=failure_count, consecutive_failures=consec,
            created_at=datetime.fromisoformat(created_at),
            updated_at=datetime.fromisoformat(updated_at),
        )

    def _find_job(self, ref: str) -> JobRow | None:
        row = self._conn.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?", (ref,)).fetchone()
        if row is None:
            row = self._conn.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE name = ?",
                                     (ref,)).fetchone()
        return None if row is None else self._job_row(row)

    def _require_job(self, ref: str) -> JobRow:
        job = self._find_job(ref)
        if job is None:
            raise JobNotFound(f"no job with id or name `{ref}`")
        return job

    # ------------------------------------------------------------------ reads

    def get_job(self, ref: str) -> JobRow | None:
        """The job with id or name ``ref``."""
        with self._lock:
            return self._find_job(ref)

    def list_jobs(self, *, status: str | None = None, agent: str | None = None,
                  limit: int | None = None, offset: int = 0) -> list[JobRow]:
        """Jobs ordered by name, optionally filtered by status and agent name; ``limit`` and
        ``offset`` select a page of that order (default: all)."""
        sql, args = _jobs_sql(_JOB_COLS, status, agent, limit, offset)
        with self._lock:
            return [self._job_row(r) for r in self._conn.execute(sql, args)]

    def job_states(self, *, status: str | None = None, agent: str | None = None,
                   limit: int | None = None, offset: int = 0) -> list[tuple[Any, ...]]:
        """What :meth:`list_jobs` selects, as raw rows without the definition text, in one
        query: ``(id, name, def_hash, status, origin, next_run, last_run, run_count,
        failure_count, consecutive_failures, created_at, updated_at)``, times as stored.

        Every column a job's row depends on is here (the definition through its hash), so a
        list endpoint can reuse what it built from an equal tuple and fetch full rows
        (:meth:`get_jobs`) only for the tuples it has not seen."""
        sql, args = _jobs_sql(_JOB_STATE_COLS, status, agent, limit, offset)
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def get_jobs(self, ids: Sequence[str]) -> dict[str, JobRow]:
        """The jobs with these ids, by id (unknown ids are absent); one query per 500 ids."""
        out: dict[str, JobRow] = {}
        with self._lock:
            for i in range(0, len(ids), 500):
                chunk = list(ids[i:i + 500])
                marks = ",".join("?" * len(chunk))
                for r in self._conn.execute(
                        f"SELECT {_JOB_COLS} FROM jobs WHERE id IN ({marks})", chunk):
                    out[r[0]] = self._job_row(r)
        return out

    def write_token(self) -> tuple[int, int]:
        """Changes after every write to the database: a commit by another connection
        (``PRAGMA data_version``) or any row changed through this one (``total_changes``: the
        scheduler's batch writes included, unlike :meth:`change_token`). Equal tokens mean
        an unchanged database, so a reader may reuse what it computed from it."""
        with self._lock:
            return (int(self._conn.execute("PRAGMA data_version").fetchone()[0]),
                    self._conn.total_changes)

    def count_jobs(self) -> dict[str, int]:
        """Number of jobs per status (every status present, zeros included)."""
        out = dict.fromkeys(JOB_STATUSES, 0)
        with self._lock:
            for status, n in self._conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY 1"):
                out[status] = n
        return out

    def get_agent(self, name: str) -> AgentDef | None:
        """The agent definition named ``name``."""
        with self._lock:
            row = self._conn.execute("SELECT definition FROM agents WHERE name = ?",
                                     (name,)).fetchone()
        return None if row is None else AgentDef.from_dict(json.loads(row[0]))

    def load_agents(self) -> dict[str, AgentDef]:
        """Every agent by name."""
        with self._lock:
            rows = self._conn.execute("SELECT name, definition FROM agents").fetchall()
        return {n: AgentDef.from_dict(json.loads(d)) for n, d in rows}

    def get_run(self, run_id: str) -> RunRow | None:
        """The run with id ``run_id``."""
        with self._lock:
            row = self._conn.execute(_RUN_SELECT + " WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else _run_from_row(row)

    def list_runs(self, ref: str | None = None, *, limit: int = 20,
                  status: str | None = None) -> list[RunRow]:
        """Runs newest first (by creation, then scheduled time), of one job (id or name) or of
        all jobs."""
        where: list[str] = []
        args: list[Any] = []
        with self._lock:
            if ref is not None:
                job = self._find_job(ref)
                if job is None:
                    return []
                where.append("job_id = ?")
                args.append(job.id)
            if status is not None:
                where.append("status = ?")
                args.append(status)
            sql = _RUN_SELECT + (" WHERE " + " AND ".join(where) if where else "")
            sql += " ORDER BY created_at DESC, scheduled_for DESC, rowid DESC LIMIT ?"
            args.append(int(limit))
            return [_run_from_row(r) for r in self._conn.execute(sql, args)]

    def runs_in_flight(self) -> list[RunRow]:
        """Runs a scheduler owns that have not finished (``pending``/``running`` with an owner)."""
        with self._lock:
            rows = self._conn.execute(
                _RUN_SELECT + " WHERE status IN ('pending', 'running') AND owner IS NOT NULL"
                " ORDER BY scheduled_for").fetchall()
        return [_run_from_row(r) for r in rows]

    def next_due_time(self) -> datetime | None:
        """The earliest ``next_run`` of an active job or ``due_at`` of an unowned pending run."""
        with self._lock:
            a = self._conn.execute(
                "SELECT MIN(next_run) FROM jobs WHERE status = 'active'").fetchone()[0]
            b = self._conn.execute(
                "SELECT MIN(due_at) FROM runs WHERE status = 'pending' AND owner IS NULL"
            ).fetchone()[0]
        vals = [v for v in (a, b) if v is not None]
        return parse_ts(min(vals)) if vals else None

    # ------------------------------------------------------------------ deploy

    @contextmanager
    def _deploy_page_cache(self, n_jobs: int) -> Iterator[None]:
        """A small SQLite page cache while a large deployment is written. Writing 100,000 jobs
        touches ~160 MB of pages: with the scheduler's 64 MiB cache the deploying process
        (``symbi up BUNDLE``) would keep 64 MiB of them; 8 MiB is as fast for this
        append-mostly write. The scheduler's size is restored afterwards."""
        if n_jobs < _DEPLOY_LARGE or self.readonly:
            yield
            return
        with self._lock:
            saved = int(self._conn.execute("PRAGMA cache_size").fetchone()[0])
            self._conn.execute(f"PRAGMA cache_size = {-_DEPLOY_CACHE_KIB}")
            try:
                yield
            finally:
                self._conn.execute(f"PRAGMA cache_size = {saved}")

    def deploy(self, jobs: Sequence[JobDef], agents: Sequence[AgentDef], *,
               prune: str | None = None, actor: str = "deploy", now: datetime | None = None,
               prune_origins: Sequence[str] = ("bundle",)) -> DeployReport:
        """Upsert ``jobs`` and ``agents`` by name (SPEC §4).

        Same definitions → nothing is written (no audit events, timestamps untouched). A
        changed job keeps its id, history and counters; its ``next_run`` is recomputed only if
        the schedule changed. ``prune='delete'|'pause'`` removes/pauses jobs of an origin in
        ``prune_origins`` (default only ``bundle``: CLI/API jobs are never pruned implicitly)
        that are not in ``jobs``. Everything happens in one transaction.
        """
        if prune not in (None, "delete", "pause"):
            raise StoreError(f"prune must be 'delete' or 'pause', not {prune!r}")
        names = [j.name for j in jobs]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise StoreError(f"duplicate job names in the deployment: {', '.join(dup)}")
        now = self._now(now)
        nowt = format_ts(now)
        created: list[str] = []
        updated: list[str] = []
        unchanged: list[str] = []
        pruned: list[str] = []
        a_created: list[str] = []
        a_updated: list[str] = []
        a_unchanged: list[str] = []
        events: list[NewAuditEvent] = []
        first_cache: dict[tuple[str | None, str | None, str], datetime | None] = {}

        def first(job: JobDef) -> datetime | None:
            key = (job.cron, job.at, job.timezone)
            if key not in first_cache:
                if len(first_cache) >= 4096:  # many distinct schedules: keep it small
                    first_cache.clear()
                first_cache[key] = first_run(job, now)
            return first_cache[key]

        def_cache = self._def_cache
        fmt = _TsMemo()  # every event of a deployment has the same time
        with self._deploy_page_cache(len(jobs)), self._write() as conn:
            self._upsert_agents_locked(conn, agents, nowt, a_created, a_updated, a_unchanged)
            # Only what the comparison needs: the definitions of a large deployment would
            # otherwise all be in memory at once (the full row is read for changed jobs).
            existing = {r[1]: r for r in conn.execute(
                "SELECT id, name, def_hash, status, origin FROM jobs")}
            # In chunks, each written (jobs and their audit events) before the next is built:
            # the rows, texts and events of 100,000 jobs need not all exist at once.
            for i in range(0, len(jobs), _DEPLOY_CHUNK):
                inserts = []
                for job in jobs[i:i + _DEPLOY_CHUNK]:
                    text = canonical_definition(job)
                    h = _hash(text)
                    old = existing.get(job.name)
                    if old is None:
                        status = "active" if job.enabled else "paused"
                        nr = first(job)
                        jid = new_job_id()
                        inserts.append((jid, job.name, job.agent, text, h, status, "bundle",
                                        _ts(nr), None, 0, 0, 0, nowt, nowt))
                        created.append(job.name)
                        events.append(NewAuditEvent(
                            audit.CRON_JOB_CREATED, now, actor, jid, job.name,
                            details={"origin": "bundle", "agent": job.agent,
                                     "schedule": job.cron or f"at {job.at}", "status": status,
                                     "next_run": _iso(nr)}))
                        # Kept for the scheduler's first claims, up to a bound: a large
                        # deployment must not pin every definition (claims load the rest).
                        if len(def_cache) < _DEPLOY_DEF_CACHE:
                            def_cache.setdefault(h, job)
                        continue
                    if old[2] == h and old[4] == "bundle":
                        unchanged.append(job.name)
                        continue
                    row = conn.execute(f"SELECT {_JOB_COLS} FROM jobs WHERE id = ?",
                                       (old[0],)).fetchone()
                    self._update_job_locked(conn, self._job_row(row), job, text, h, now, actor,
                                            events, origin="bundle", first=first)
                    updated.append(job.name)
                if inserts:
                    conn.executemany(_JOB_INSERT_SQL, inserts)
                if events:
                    audit.append_events(conn, events, fmt)
                    events = []
            if prune is not None:
                wanted = set(names)
                for name, old in existing.items():
                    if name in wanted or old[4] not in prune_origins:
                        continue
                    if len(events) >= _DEPLOY_CHUNK:
                        audit.append_events(conn, events, fmt)
                        events = []
                    if prune == "delete":
                        conn.execute("DELETE FROM jobs WHERE id = ?", (old[0],))
                        events.append(NewAuditEvent(audit.CRON_JOB_DELETED, now, actor, old[0],
                                                    name, details={"reason": "pruned"}))
                        pruned.append(name)
                    elif old[3] in ("active", "dead_letter"):
                        conn.execute("UPDATE jobs SET status = 'paused', updated_at = ?"
                                     " WHERE id = ?", (nowt, old[0]))
                        events.append(NewAuditEvent(audit.CRON_JOB_PAUSED, now, actor, old[0],
                                                    name, details={"reason": "pruned"}))
                        pruned.append(name)
            audit.append_events(conn, events, fmt)
        report = DeployReport(
            created=tuple(sorted(created)), updated=tuple(sorted(updated)),
            unchanged=tuple(sorted(unchanged)), pruned=tuple(sorted(pruned)), prune=prune,
            agents_created=tuple(sorted(a_created)), agents_updated=tuple(sorted(a_updated)),
            agents_unchanged=tuple(sorted(a_unchanged)))
        if report.changed:
            self._changed()
        return report

    def _upsert_agents_locked(self, conn: sqlite3.Connection, agents: Iterable[AgentDef],
                              nowt: str, created: list[str], updated: list[str],
                              unchanged: list[str]) -> None:
        existing = dict(conn.execute("SELECT name, definition FROM agents"))
        for agent in agents:
            text = canonical_definition(agent)
            old = existing.get(agent.name)
            if old is None:
                conn.execute("INSERT INTO agents (name, definition, origin, created_at,"
                             " updated_at) VALUES (?,?,?,?,?)",
                             (agent.name, text, "bundle", nowt, nowt))
                created.append(agent.name)
            elif old != text:
                conn.execute("UPDATE agents SET definition = ?, updated_at = ? WHERE name = ?",
                             (text, nowt, agent.name))
                updated.append(agent.name)
            else:
                unchanged.append(agent.name)
            existing[agent.name] = text

    def _update_job_locked(self, conn: sqlite3.Connection, old: JobRow, job: JobDef, text: str,
                           h: str, now: datetime, actor: str, events: list[NewAuditEvent], *,
                           origin: str | None = None,
                           first: Callable[[JobDef], datetime | None] | None = None) -> None:
        """Replace ``old``'s definition with ``job`` keeping id, history and counters."""
        before = plain(old.definition)
        after = plain(job)
        changed = sorted(k for k in after if before.get(k) != after.get(k))
        schedule_changed = any(k in changed for k in SCHEDULE_FIELDS)
        status = old.status
        next_run = old.next_run
        state_events: list[str] = []
        if "enabled" in changed:
            if not job.enabled and status == "active":
                status = "paused"
                state_events.append(audit.CRON_JOB_PAUSED)
            elif job.enabled and status == "paused":
                status = "active"
                state_events.append(audit.CRON_JOB_RESUMED)
        if schedule_changed and status == "completed":
            status = "active"
        if schedule_changed or (status == "active" and old.status != "active"):
            next_run = (first or (lambda j: first_run(j, now)))(job)
        new_origin = origin or old.origin
        conn.execute(
            "UPDATE jobs SET name = ?, agent = ?, definition = ?, def_hash = ?, status = ?,"
            " origin = ?, next_run = ?, updated_at = ? WHERE id = ?",
            (job.name, job.agent, text, h, status, new_origin, _ts(next_run), format_ts(now),
             old.id))
        self._def_cache.setdefault(h, job)
        details: dict[str, Any] = {"changed": changed}
        if new_origin != old.origin:
            details["origin"] = [old.origin, new_origin]
        if schedule_changed:
            details["next_run"] = _iso(next_run)
        if status != old.status:
            details["status"] = [old.status, status]
        events.append(NewAuditEvent(audit.CRON_JOB_UPDATED, now, actor, old.id, job.name,
                                    details=details))
        for ev in state_events:
            events.append(NewAuditEvent(ev, now, actor, old.id, job.name,
                                        details={"reason": "enabled changed"}))

    # ------------------------------------------------------------------ job management

    def add_job(self, job: JobDef, *, origin: str = "cli", actor: str = "cli",
                agents: Sequence[AgentDef] = (), now: datetime | None = None) -> JobRow:
        """Create a job (and upsert ``agents`` with it). :class:`DuplicateJob` if the name is
        taken."""
        if origin not in ORIGINS:
            raise StoreError(f"origin must be one of {', '.join(ORIGINS)}, not {origin!r}")
        now = self._now(now)
        nowt = format_ts(now)
        text = canonical_definition(job)
        h = _hash(text)
        with self._write() as conn:
            taken = conn.execute("SELECT id FROM jobs WHERE name = ?", (job.name,)).fetchone()
            if taken is not None:
                raise DuplicateJob(f"a job named `{job.name}` already exists (id {taken[0]})")
            self._upsert_agents_locked(conn, agents, nowt, [], [], [])
            status = "active" if job.enabled else "paused"
            nr = first_run(job, now)
            jid = new_job_id()
            conn.execute(_JOB_INSERT_SQL,
                         (jid, job.name, job.agent, text, h, status, origin, _ts(nr), None, 0,
                          0, 0, nowt, nowt))
            audit.append_events(conn, [NewAuditEvent(
                audit.CRON_JOB_CREATED, now, actor, jid, job.name,
                details={"origin": origin, "agent": job.agent,
                         "schedule": job.cron or f"at {job.at}", "status": status,
                         "next_run": _iso(nr)})], format_ts)
            row = self._require_job(jid)
        self._changed()
        return row

    def update_job(self, ref: str, job: JobDef, *, actor: str,
                   now: datetime | None = None) -> JobRow:
        """Replace a job's definition (history and counters kept; next_run recomputed if the
        schedule changed). No change → nothing written."""
        now = self._now(now)
        text = canonical_definition(job)
        h = _hash(text)
        with self._write() as conn:
            old = self._require_job(ref)
            if job.name != old.name:
                taken = conn.execute("SELECT id FROM jobs WHERE name = ?", (job.name,)).fetchone()
                if taken is not None:
                    raise DuplicateJob(f"a job named `{job.name}` already exists (id {taken[0]})")
            if canonical_definition(old.definition) == text:
                return old
            events: list[NewAuditEvent] = []
            self._update_job_locked(conn, old, job, text, h, now, actor, events)
            audit.append_events(conn, events, format_ts)
            row = self._require_job(old.id)
        self._changed()
        return row

    def remove_job(self, ref: str, *, actor: str, now: datetime | None = None) -> JobRow:
        """Delete a job and its run history (the audit log keeps its events)."""
        now = self._now(now)
        with self._write() as conn:
            old = self._require_job(ref)
            n_runs = conn.execute("SELECT COUNT(*) FROM runs WHERE job_id = ?",
                                  (old.id,)).fetchone()[0]
            conn.execute("DELETE FROM jobs WHERE id = ?", (old.id,))
            audit.append_events(conn, [NewAuditEvent(
                audit.CRON_JOB_DELETED, now, actor, old.id, old.name,
                details={"runs_deleted": n_runs, "status": old.status})], format_ts)
        self._changed()
        return old

    def pause_job(self, ref: str, *, actor: str, now: datetime | None = None) -> JobRow:
        """active/dead_letter → paused (already paused: no change, no event)."""
        now = self._now(now)
        with self._write() as conn:
            old = self._require_job(ref)
            if old.status == "paused":
                return old
            if old.status == "completed":
                raise StoreError(f"job `{old.name}` has completed; there is nothing to pause")
            conn.execute("UPDATE jobs SET status = 'paused', updated_at = ? WHERE id = ?",
                         (format_ts(now), old.id))
            audit.append_events(conn, [NewAuditEvent(
                audit.CRON_JOB_PAUSED, now, actor, old.id, old.name,
                details={"from": old.status})], format_ts)
            row = self._require_job(old.id)
        self._changed()
        return row

    def resume_job(self, ref: str, *, actor: str, now: datetime | None = None) -> JobRow:
        """paused → active with next_run computed from now (runs missed while paused are not
        replayed). Active: no change. dead_letter needs :meth:`reset_job`."""
        now = self._now(now)
        with self._write() as conn:
            old = self._require_job(ref)
            if old.status == "active":
                return old
            if old.status == "dead_letter":
                raise StoreError(f"job `{old.name}` is dead-lettered; use `symbi cron reset` "
                                 "to clear its failures and reactivate it")
            if old.status == "completed":
                raise StoreError(f"job `{old.name}` has completed (it runs only once)")
            nr = first_run(old.definition, now)
            conn.execute("UPDATE jobs SET status = 'active', next_run = ?, updated_at = ?"
                         " WHERE id = ?", (_ts(nr), format_ts(now), old.id))
            audit.append_events(conn, [NewAuditEvent(
                audit.CRON_JOB_RESUMED, now, actor, old.id, old.name,
                details={"next_run": _iso(nr)})], format_ts)
            row = self._require_job(old.id)
        self._changed()
        return row

    def reset_job(self, ref: str, *, actor: str, now: datetime | None = None) -> JobRow:
        """Clear failure counters; a dead-lettered job becomes active again with next_run
        computed from now. Other statuses keep their status."""
        now = self._now(now)
        with self._write() as conn:
            old = self._require_job(ref)
            status, nr = old.status, old.next_run
            if old.status == "dead_letter":
                status = "active"
                nr = first_run(old.definition, now)
            conn.execute("UPDATE jobs SET status = ?, next_run = ?, failure_count = 0,"
                         " consecutive_failures = 0, updated_at = ? WHERE id = ?",
                         (status, _ts(nr), format_ts(now), old.id))
            audit.append_events(conn, [NewAuditEvent(
                audit.CRON_JOB_RESET, now, actor, old.id, old.name,
                details={"status": [old.status, status], "failure_count": old.failure_count,
                         "next_run": _iso(nr)})], format_ts)
            row = self._require_job(old.id)
        self._changed()
        return row

    def request_manual_run(self, ref: str, *, input: str | None, trigger: str = "manual",
                           actor: str, now: datetime | None = None) -> RunRow:
        """Queue a run of the job now (a ``pending`` run no scheduler owns yet). A running
        scheduler picks it up within a tick; see ``runtime.scheduler.run_manual_now``."""
        if trigger not in ("manual", "api"):
            raise StoreError(f"trigger must be 'manual' or 'api', not {trigger!r}")
        now = self._now(now)
        with self._write() as conn:
            job = self._require_job(ref)
            rec = RunRecord(id=new_run_id(), job_id=job.id, job_name=job.name,
                            scheduled_for=now, trigger=trigger, status="pending", due_at=now,
                            created_at=now,
                            input=input if input is not None else job.definition.input)
            conn.execute(_RUN_INSERT_SQL, (*rec.insert_values(), job.id))
            audit.append_events(conn, [NewAuditEvent(
                audit.CRON_JOB_TRIGGERED, now, actor, job.id, job.name, rec.id,
                details={"trigger": trigger})], format_ts)
            row = conn.execute(_RUN_SELECT + " WHERE id = ?", (rec.id,)).fetchone()
        self._changed()
        return _run_from_row(row)

    # ------------------------------------------------------------------ scheduler batches

    def claim(self, now: datetime, planner: Callable[[list[DueJob], list[RunRow]], WriteBatch],
              *, lease_owner: str | None = None, pickup_limit: int = 10_000,
              due_limit: int = 100_000) -> tuple[WriteBatch, BatchResult]:
        """Claim due work in one write transaction.

        Reads, inside the transaction, the active jobs with ``next_run <= now`` and the unowned
        pending runs with ``due_at <= now``, hands them to ``planner`` (which decides what to
        run, skip or record, and returns the writes), applies the writes and commits. With
        ``lease_owner`` set, nothing is claimed unless that owner holds the lease — a
        scheduler that lost its lease can never claim (fencing); it gets :class:`LeaseLost`.
        """
        nowt = format_ts(now)
        with self._write() as conn:
            self._check_lease_locked(conn, lease_owner)
            rows = conn.execute(
                "SELECT id, name, def_hash, next_run, last_run FROM jobs WHERE status = 'active'"
                # rowid breaks ties in index order (deploy order): no sort of all due rows
                " AND next_run <= ? ORDER BY next_run, rowid LIMIT ?", (nowt, due_limit)
            ).fetchall()
            cache = self._def_cache
            missing = [r[0] for r in rows if r[2] not in cache]
            for i in range(0, len(missing), 500):
                chunk = missing[i:i + 500]
                for h, text in conn.execute(
                        "SELECT def_hash, definition FROM jobs WHERE id IN"
                        f" ({','.join('?' * len(chunk))})", chunk):
                    self._job_def(h, text)
            parse = datetime.fromisoformat
            jobs = [DueJob(r[0], r[1], cache[r[2]], parse(r[3]), r[4] is not None)
                    for r in rows]
            pickups = [_run_from_row(r) for r in conn.execute(
                _RUN_SELECT + " WHERE status = 'pending' AND owner IS NULL AND due_at <= ?"
                " ORDER BY due_at, created_at LIMIT ?", (nowt, pickup_limit))]
            if not jobs and not pickups:
                return WriteBatch(), BatchResult()
            batch = planner(jobs, pickups)
            result = self._apply_locked(conn, batch)
        return batch, result

    def claim_run(self, run_id: str, owner: str) -> RunRow | None:
        """Take ownership of one unowned pending run (for running it outside the loop)."""
        with self._write() as conn:
            cur = conn.execute("UPDATE runs SET owner = ? WHERE id = ? AND status = 'pending'"
                               " AND owner IS NULL", (owner, run_id))
            if cur.rowcount != 1:
                return None
            row = conn.execute(_RUN_SELECT + " WHERE id = ?", (run_id,)).fetchone()
            b = WriteBatch()
            b.count_started(row[1], self.clock.now())
            self._apply_locked(conn, b)
        return _run_from_row(row)

    def write_batch(self, batch: WriteBatch, *, lease_owner: str | None = None) -> BatchResult:
        """Apply a scheduler batch (results, retries, counters, audit) in one transaction.

        With ``lease_owner`` set the batch is refused (:class:`LeaseLost`) unless the lease row
        names that owner: once another scheduler has taken over (and marked this one's runs
        interrupted), this one must not write results over them.
        """
        if not batch:
            return BatchResult()
        with self._write() as conn:
            self._check_lease_locked(conn, lease_owner)
            return self._apply_locked(conn, batch)

    def _check_lease_locked(self, conn: sqlite3.Connection, lease_owner: str | None) -> None:
        if lease_owner is None:
            return
        row = conn.execute("SELECT owner FROM lease WHERE id = 1").fetchone()
        if row is None or row[0] != lease_owner:
            holder = "nobody" if row is None else f"`{row[0]}`"
            raise LeaseLost(f"scheduler `{lease_owner}` no longer holds the lease "
                            f"(held by {holder})")

    def _apply_locked(self, conn: sqlite3.Connection, b: WriteBatch) -> BatchResult:
        rejected: frozenset[str] = frozenset()
        ts = _TsMemo()
        if b.job_advances:
            conn.executemany(
                "UPDATE jobs SET next_run = ?, status = ?, run_count = run_count + ?,"
                " last_run = coalesce(?, last_run) WHERE id = ? AND next_run IS ?",
                [(ts(nr), st, n, ts(last), jid, ts(exp))
                 for jid, exp, nr, st, n, last in b.job_advances])
        if b.job_started:
            conn.executemany(
                "UPDATE jobs SET run_count = run_count + ?, last_run = CASE WHEN last_run IS NULL"
                " OR last_run < ? THEN ? ELSE last_run END WHERE id = ?",
                [(n, ts(w), ts(w), jid) for jid, (n, w) in b.job_started.items()])
        if b.guarded_inserts:
            conn.executemany(_RUN_INSERT_SQL,
                             [(*r.insert_values(ts), r.job_id) for r in b.guarded_inserts])
        if b.run_inserts:
            cur = conn.executemany(_RUN_CLAIM_SQL, [r.insert_values(ts) for r in b.run_inserts])
            if cur.rowcount != len(b.run_inserts):
                ids = [r.id for r in b.run_inserts]
                found: set[str] = set()
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    found.update(x for (x,) in conn.execute(
                        f"SELECT id FROM runs WHERE id IN ({','.join('?' * len(chunk))})",
                        chunk))
                rejected = frozenset(set(ids) - found)
                # an occurrence someone else had claimed was counted as started: undo that
                conn.executemany(
                    "UPDATE jobs SET run_count = run_count - 1 WHERE id = ?",
                    [(r.job_id,) for r in b.run_inserts
                     if r.id in rejected and r.status == "pending"])
        if b.run_updates:
            conn.executemany(_RUN_UPDATE_SQL, [r.update_values(ts) for r in b.run_updates])
        if b.job_results:
            failing = [(c[0], 1 if c[1] else 0, c[2], c[2], jid)
                       for jid, c in b.job_results.items() if c[0]]
            if failing:
                conn.executemany(
                    "UPDATE jobs SET failure_count = failure_count + ?, consecutive_failures ="
                    " CASE WHEN ? THEN ? ELSE consecutive_failures + ? END WHERE id = ?",
                    failing)
            fine = [(jid,) for jid, c in b.job_results.items() if not c[0]]
            if fine:  # successes only: cheap when there is nothing to reset
                conn.executemany("UPDATE jobs SET consecutive_failures = 0 WHERE id = ?"
                                 " AND consecutive_failures != 0", fine)
        for write in b.extra_writes:
            write(conn)
        dead: list[str] = []
        events = list(b.audit_events)
        for jid, name, details in b.dead_letters:
            now = self.clock.now()
            cur = conn.execute("UPDATE jobs SET status = 'dead_letter', next_run = NULL,"
                               " updated_at = ? WHERE id = ? AND status IN ('active',"
                               " 'completed')", (format_ts(now), jid))
            if cur.rowcount == 1:
                dead.append(jid)
                events.append(NewAuditEvent(audit.CRON_JOB_DEAD_LETTERED, now, "scheduler",
                                            jid, name, details=details))
        if events:
            audit.append_events(conn, events, ts)
        return BatchResult(rejected, tuple(dead))

    # ------------------------------------------------------------------ lease

    def try_acquire_lease(self, owner: str, ttl_seconds: float,
                          now: datetime | None = None) -> bool:
        """Take or renew the scheduler lease; False while another owner's lease is valid."""
        now = self._now(now)
        nowt = format_ts(now)
        expires = format_ts(now + timedelta(seconds=ttl_seconds))
        with self._write() as conn:
            row = conn.execute("SELECT owner, expires_at FROM lease WHERE id = 1").fetchone()
            if row is not None and row[0] != owner and row[1] > nowt:
                return False
            if row is not None and row[0] == owner:
                conn.execute("UPDATE lease SET expires_at = ? WHERE id = 1", (expires,))
            else:
                conn.execute("INSERT OR REPLACE INTO lease (id, owner, expires_at, acquired_at)"
                             " VALUES (1, ?, ?, ?)", (owner, expires, nowt))
        return True

    def take_over_lease(self, owner: str, dead_holder: str, ttl_seconds: float,
                        now: datetime | None = None) -> bool:
        """Take the lease from ``dead_holder`` — a scheduler known to be gone (see
        ``runtime.scheduler.lease_holder_is_dead``) — without waiting for it to expire. One
        ``BEGIN IMMEDIATE`` transaction replaces the row only if it still names
        ``dead_holder``: if another standby took over first, or the row changed, nothing is
        written and the result is False (the caller goes on waiting)."""
        now = self._now(now)
        nowt = format_ts(now)
        with self._write() as conn:
            cur = conn.execute("UPDATE lease SET owner = ?, expires_at = ?, acquired_at = ?"
                               " WHERE id = 1 AND owner = ?",
                               (owner, format_ts(now + timedelta(seconds=ttl_seconds)), nowt,
                                dead_holder))
            return cur.rowcount == 1

    def release_lease(self, owner: str) -> None:
        """Give the lease up (only if ``owner`` holds it)."""
        if self.readonly:
            return
        with self._write() as conn:
            conn.execute("DELETE FROM lease WHERE id = 1 AND owner = ?", (owner,))

    def lease_info(self) -> LeaseInfo | None:
        """The lease row (it may have expired), or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT owner, expires_at, acquired_at FROM lease WHERE id = 1").fetchone()
        if row is None:
            return None
        return LeaseInfo(row[0], datetime.fromisoformat(row[1]), datetime.fromisoformat(row[2]))

    # ------------------------------------------------------------------ audit

    def audit_query(self, *, type: str | None = None, since: datetime | None = None,
                    until: datetime | None = None, job: str | None = None,
                    limit: int = 100) -> list[AuditEvent]:
        """Audit events, newest first. ``job`` matches a job id or name; ``since`` is
        inclusive, ``until`` exclusive."""
        where: list[str] = []
        args: list[Any] = []
        if type is not None:
            where.append("type = ?")
            args.append(type)
        if since is not None:
            where.append("time >= ?")
            args.append(format_ts(since))
        if until is not None:
            where.append("time < ?")
            args.append(format_ts(until))
        if job is not None:
            where.append("(job_id = ? OR job_name = ?)")
            args += [job, job]
        sql = ("SELECT id, time, type, job_id, job_name, run_id, actor, details, prev_hash, hash"
               " FROM audit_events")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [audit.row_to_event(r, datetime.fromisoformat) for r in rows]

    def audit_verify(self) -> AuditVerifyResult:
        """Check the audit hash chain (see :func:`runtime.audit.verify_chain`)."""
        with self._lock:
            return audit.verify_chain(self._conn)

    def append_audit(self, events: Iterable[NewAuditEvent]) -> None:
        """Append audit events in their own transaction (for components outside the store)."""
        evs = list(events)
        if evs:
            with self._write() as conn:
                audit.append_events(conn, evs, format_ts)


# ------------------------------------------------------------------------------ helpers


def new_job_id() -> str:
    """``job_`` + 12 random hex characters."""
    return "job_" + secrets.token_hex(6)


def new_run_id() -> str:
    """A random (version 4) UUID string; formatted by hand because ``str(uuid.uuid4())``
    costs twice as much and the scheduler makes one per run."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _schema_version(conn: sqlite3.Connection, path: Path) -> int:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "schema_version" not in tables:
        if tables:
            raise StoreError(f"{path}: not a symbi state database (it has tables "
                             f"{', '.join(sorted(tables)[:5])} but no schema_version)")
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def _migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], current: int) -> None:
    """Apply the migrations newer than ``current``, each in its own transaction."""
    versions = [m.version for m in migrations]
    if versions != sorted(versions) or len(set(versions)) != len(versions):
        raise StoreError("internal error: migrations must have increasing, unique versions")
    for m in migrations:
        if m.version <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # another process may have migrated while we waited for the lock
            have = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND"
                                " name = 'schema_version'").fetchone()
            if have is not None:
                done = conn.execute("SELECT 1 FROM schema_version WHERE version = ?",
                                    (m.version,)).fetchone()
                if done is not None:
                    conn.execute("COMMIT")
                    continue
            else:
                conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY,"
                             " description TEXT NOT NULL, applied_at TEXT NOT NULL)")
            for stmt in m.statements:
                conn.execute(stmt)
            conn.execute("INSERT INTO schema_version (version, description, applied_at)"
                         " VALUES (?, ?, ?)",
                         (m.version, m.description, format_ts(datetime.now(UTC))))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
