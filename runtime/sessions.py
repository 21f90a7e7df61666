"""Session modes (SPEC §5.4): what an agent's context carries from one run of a job to the next.

- ``ephemeral_with_summary`` (default): a new :class:`AgentContext` per run whose
  ``summary_in`` is the summary of the job's latest run that has one. The scheduler keeps the
  latest summary per job in memory (:class:`SessionManager`), so a run costs no database read;
  a job this process has not seen yet is looked up in the run history once, in bulk, when its
  runs are claimed (and not at all for a job that never ran).
- ``shared_persistent``: one context per job in the table ``session_contexts`` (messages,
  memory, last summary), surviving restarts. After each run its input and output are appended
  as a ``user`` and an ``assistant`` message and the context is saved in the transaction that
  records the run. The stored size (JSON of messages + memory) is capped at
  ``[scheduler] session_max_bytes`` (default 256 KiB): the oldest messages are dropped first;
  a single message larger than the cap keeps its last part.
- ``fully_ephemeral``: a new, empty context; nothing is read or written.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from compiler.ir import JobDef
from runtime.executor import AgentContext
from runtime.store import SqliteStore, format_ts, parse_ts

__all__ = [
    "DEFAULT_SESSION_MAX_BYTES",
    "EPHEMERAL_WITH_SUMMARY",
    "FULLY_EPHEMERAL",
    "SHARED_PERSISTENT",
    "SessionManager",
    "StoredSession",
    "context_size",
    "latest_summaries",
    "load_session",
    "record_exchange",
    "session_writer",
    "truncate_context",
]

EPHEMERAL_WITH_SUMMARY = "ephemeral_with_summary"
SHARED_PERSISTENT = "shared_persistent"
FULLY_EPHEMERAL = "fully_ephemeral"
DEFAULT_SESSION_MAX_BYTES = 256 * 1024
#: Jobs whose latest summary is kept in memory (oldest entries are dropped past it).
SUMMARY_CACHE_SIZE = 100_000
#: Marker appended to a message cut to fit the cap.
TRUNCATED_MARK = "[symbi: earlier part truncated]\n"
#: Memory keys the runtime sets for one run only (heartbeat markers); never persisted.
TRANSIENT_MEMORY_PREFIX = "symbi."

_ENC = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class StoredSession:
    """A ``shared_persistent`` context as stored."""

    job_id: str
    mode: str
    messages: list[dict[str, str]]
    memory: dict[str, str]
    summary: str | None
    size_bytes: int
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON shape."""
        return {"job_id": self.job_id, "mode": self.mode, "messages": self.messages,
                "memory": self.memory, "summary": self.summary, "size_bytes": self.size_bytes,
                "updated_at": self.updated_at.isoformat()}


# ------------------------------------------------------------------------------ size cap


def _message_bytes(m: dict[str, str]) -> int:
    return len(_ENC.encode(m).encode("utf-8")) + 1  # + the separating comma


def context_size(messages: list[dict[str, str]], memory: dict[str, str]) -> int:
    """Bytes of the stored form (UTF-8 JSON of the messages and the memory)."""
    return (len(_ENC.encode(messages).encode("utf-8"))
            + len(_ENC.encode(memory).encode("utf-8")))


def truncate_context(messages: list[dict[str, str]], memory: dict[str, str],
                     max_bytes: int) -> tuple[list[dict[str, str]], int]:
    """Drop the oldest messages until the stored size fits ``max_bytes``; a last message still
    too large keeps its end. Returns the kept messages and the size."""
    size = context_size(messages, memory)
    if size <= max_bytes:
        return messages, size
    kept = list(messages)
    drop = 0
    while size > max_bytes and len(kept) - drop > 1:
        size -= _message_bytes(kept[drop])
        drop += 1
    kept = kept[drop:]
    size = context_size(kept, memory)
    if size > max_bytes and kept:
        last = dict(kept[-1])
        raw = last.get("content", "").encode("utf-8")
        keep = len(raw)
        mark = len(TRUNCATED_MARK.encode("utf-8"))
        # each pass removes at least the overshoot, so this ends; JSON escapes can make the
        # stored form longer than the raw bytes, hence the loop
        while size > max_bytes and keep > 0:
            keep = max(0, keep - (size - max_bytes) - mark)
            # cut by bytes, decode leniently: a split character is dropped, never mangled
            last["content"] = TRUNCATED_MARK + raw[len(raw) - keep:].decode("utf-8",
                                                                            errors="ignore")
            kept[-1] = last
            size = context_size(kept, memory)
    return kept, size


def record_exchange(ctx: AgentContext, input: str, output: str) -> None:
    """Append one run's input and output to a shared context (``user``/``assistant``)."""
    ctx.messages.append({"role": "user", "content": input})
    ctx.messages.append({"role": "assistant", "content": output})


# ------------------------------------------------------------------------------ store access


def load_session(store: SqliteStore, job_id: str) -> StoredSession | None:
    """The stored ``shared_persistent`` context of a job, or None."""
    rows = store.query("SELECT job_id, mode, messages, memory, summary, size_bytes, updated_at"
                       " FROM session_contexts WHERE job_id = ?", (job_id,))
    if not rows:
        return None
    r = rows[0]
    return StoredSession(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4], r[5],
                         parse_ts(r[6]))  # type: ignore[arg-type]


def session_writer(job_id: str, mode: str, ctx: AgentContext, summary: str | None,
                   now: datetime, max_bytes: int) -> Callable[[sqlite3.Connection], None]:
    """The write saving ``ctx`` for ``job_id`` (size-capped), for ``WriteBatch.extra_writes``.
    Transient memory keys (``symbi.*``) are not saved."""
    memory = {k: v for k, v in ctx.memory.items() if not k.startswith(TRANSIENT_MEMORY_PREFIX)}
    messages, size = truncate_context(ctx.messages, memory, max_bytes)
    values = (job_id, mode, _ENC.encode(messages), _ENC.encode(memory), summary, size,
              format_ts(now))

    def write(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO session_contexts (job_id, mode, messages, memory, summary, size_bytes,"
            " updated_at) SELECT ?, ?, ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM jobs WHERE"
            " id = ?) ON CONFLICT (job_id) DO UPDATE SET mode = excluded.mode,"
            " messages = excluded.messages, memory = excluded.memory,"
            " summary = coalesce(excluded.summary, summary), size_bytes = excluded.size_bytes,"
            " updated_at = excluded.updated_at", (*values, job_id))
    return write


def latest_summaries(store: SqliteStore, job_ids: Iterable[str]) -> dict[str, str | None]:
    """The summary of each job's latest run that has one (None when none has)."""
    ids = list(dict.fromkeys(job_ids))
    out: dict[str, str | None] = dict.fromkeys(ids)
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        rows = store.query(
            "SELECT j.value, (SELECT summary FROM runs WHERE job_id = j.value AND summary IS NOT"
            " NULL ORDER BY created_at DESC, rowid DESC LIMIT 1) FROM json_each(?) AS j",
            (json.dumps(chunk),))
        for jid, summary in rows:
            out[jid] = summary
    return out


# ------------------------------------------------------------------------------ the manager


class SessionManager:
    """Builds each run's context and remembers what the next run of the job needs.

    Used by the scheduler from its event loop (one instance per scheduler)."""

    def __init__(self, store: SqliteStore, *, max_bytes: int = DEFAULT_SESSION_MAX_BYTES,
                 cache_size: int = SUMMARY_CACHE_SIZE) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.cache_size = cache_size
        self._summaries: dict[str, str | None] = {}

    # summaries (ephemeral_with_summary)

    def _remember(self, job_id: str, summary: str | None) -> None:
        cache = self._summaries
        if job_id in cache:
            del cache[job_id]  # re-insert at the end: the dict's order is the eviction order
        elif len(cache) >= self.cache_size:
            del cache[next(iter(cache))]
        cache[job_id] = summary

    def knows(self, job_id: str) -> bool:
        """Whether the latest summary of ``job_id`` is in memory."""
        return job_id in self._summaries

    def preload(self, job_ids: Iterable[str], never_ran: Iterable[str] = ()) -> None:
        """Look up, in bulk, the latest summaries of jobs not in memory yet; ``never_ran``
        are known to have no history (no query)."""
        for jid in never_ran:
            if jid not in self._summaries:
                self._remember(jid, None)
        missing = [j for j in job_ids if j not in self._summaries]
        if missing:
            for jid, summary in latest_summaries(self.store, missing).items():
                self._remember(jid, summary)

    def summary_for(self, job_id: str) -> str | None:
        """The summary a new run of ``job_id`` starts with."""
        try:
            return self._summaries[job_id]
        except KeyError:
            self.preload([job_id])
            return self._summaries.get(job_id)

    def note_summary(self, job_id: str, summary: str | None) -> None:
        """A run of ``job_id`` finished with ``summary`` (None: keep the previous one)."""
        if summary is not None:
            self._remember(job_id, summary)

    def forget(self, job_id: str | None = None) -> None:
        """Drop cached summaries (one job's, or all)."""
        if job_id is None:
            self._summaries.clear()
        else:
            self._summaries.pop(job_id, None)

    # contexts

    def context_for(self, job_id: str, job: JobDef) -> AgentContext:
        """A run's context according to the job's ``session_mode``."""
        mode = job.session_mode
        if mode == FULLY_EPHEMERAL:
            return AgentContext()
        if mode == SHARED_PERSISTENT:
            stored = load_session(self.store, job_id)
            if stored is None:
                return AgentContext()
            return AgentContext(messages=stored.messages, memory=stored.memory,
                                summary_in=stored.summary)
        return AgentContext(summary_in=self.summary_for(job_id))

    def writer_after(self, job_id: str, job: JobDef, ctx: AgentContext, input: str,
                     output: str, summary: str | None, now: datetime, *,
                     recorded: bool = False) -> Callable[[sqlite3.Connection], None] | None:
        """What to save after a run: for ``shared_persistent`` the context with the exchange
        appended (unless ``recorded``: the messages are in ``ctx`` already); otherwise
        nothing (the summary is noted in memory)."""
        if job.session_mode == SHARED_PERSISTENT:
            if not recorded:
                record_exchange(ctx, input, output)
            return session_writer(job_id, SHARED_PERSISTENT, ctx, summary, now, self.max_bytes)
        if job.session_mode == EPHEMERAL_WITH_SUMMARY:
            self.note_summary(job_id, summary)
        return None
