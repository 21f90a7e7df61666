"""Delivery of run output to channels (SPEC §5.8): the channel interface and registry, the
outbox worker and the receipts.

How a run's output travels:

1. The scheduler reports ``run_finished`` through its ``on_event`` callback.
   :meth:`DeliveryWorker.on_event` only remembers the run id and wakes the worker — no store
   I/O inside the scheduler's callback. The worker reads the run once the scheduler has
   written its final state, and :func:`enqueue_deliveries` inserts one ``deliveries`` row per
   channel of the job (status ``pending``): the *outbox*.
2. The worker *claims* due rows in one write transaction (it moves ``next_attempt_at`` past the
   attempt's timeout, so a second worker on the same database — or this one after a crash —
   does not send the same attempt twice) and sends them concurrently, each under a timeout.
3. Every attempt is recorded in ``delivery_attempts`` (number, time, ok, HTTP status or SMTP
   reply code, response excerpt, error). A retryable failure (network error, timeout, 429,
   5xx, SMTP 4xx) sets ``retrying`` with a persisted ``next_attempt_at`` (exponential backoff,
   or the peer's ``Retry-After``); success sets ``delivered``; a permanent failure or the last
   attempt sets ``failed`` and writes the audit event ``DeliveryFailed``. The run's own status
   never changes.
4. Pending rows survive a restart. On start the worker also enqueues deliveries for runs that
   finished recently but have no rows (the process died between the run's end and the
   enqueue); see :meth:`DeliveryWorker.recover` for which runs count.

Guarantee: at-least-once per (run, channel). A crash during an attempt repeats it after the
claim expires; the webhook's ``Idempotency-Key`` (the delivery id, stable per run and channel)
lets the receiver drop the duplicate.

Channels: :class:`Channel` (``name`` and ``async route(channel, job, run, output) ->
DeliveryOutcome``). The built-ins live in ``stdlib.channels`` and are imported by dotted path
when first used (the runtime does not import the stdlib); third-party channels are entry points
in the group ``symbi.channels`` (a class, a factory, or a ready instance).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import importlib
import importlib.metadata
import inspect
import logging
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, TextIO, runtime_checkable

from compiler.ir import JobDef
from runtime import audit
from runtime.audit import NewAuditEvent
from runtime.clock import Clock, SystemClock
from runtime.config import Config, DeliveryConfig
from runtime.envexpand import MissingEnvVar, expand
from runtime.executor import derive_summary, describe_exception
from runtime.retryafter import retry_after_seconds
from runtime.store import JobRow, RunRow, SqliteStore, StoreError, format_ts, parse_ts

log = logging.getLogger(__name__)

#: Entry-point group of third-party channels (the compiler checks names against it too).
ENTRY_POINT_GROUP = "symbi.channels"
#: Built-in channel name → ``module:attribute`` of its implementation (imported on first use).
BUILTIN_CHANNEL_FACTORIES: Mapping[str, str] = MappingProxyType({
    "stdout": "stdlib.channels.stdout:StdoutChannel",
    "log_file": "stdlib.channels.log_file:LogFileChannel",
    "webhook": "stdlib.channels.webhook:WebhookChannel",
    "slack": "stdlib.channels.slack:SlackChannel",
    "email": "stdlib.channels.smtp:EmailChannel",
})

#: Run statuses whose output is delivered: the agent ran (a skipped, missed, denied,
#: cancelled or interrupted run has no output; an interrupted one is retried anyway).
DELIVER_STATUSES = frozenset({"succeeded", "failed", "timed_out"})
DELIVERY_STATUSES = ("pending", "retrying", "delivered", "failed")
OPEN_STATUSES = ("pending", "retrying")

#: How much of a peer's response is kept with an attempt.
RESPONSE_EXCERPT_CHARS = 500
#: Retry backoff: BASE · 2^(attempt-1), capped; a peer's Retry-After replaces it (capped too).
#: BASE is ``[scheduler.delivery] retry_backoff_seconds``; this is its default.
BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 600.0
RETRY_AFTER_MAX_SECONDS = 3600.0
#: A claimed attempt belongs to its worker for timeout + this long; after that (the worker
#: died mid-attempt) any worker may try it again.
CLAIM_GRACE_SECONDS = 60.0
#: Start-up recovery looks at runs that finished this recently.
RECOVERY_WINDOW = timedelta(hours=24)
#: Without a wake-up, the worker looks for due rows (e.g. written by another process) this often.
IDLE_POLL_SECONDS = 30.0
#: A finished run whose final state the scheduler has not written yet is looked at again after
#: these real delays (doubling); it is given up after CANDIDATE_GIVE_UP_SECONDS (start-up
#: recovery still catches it).
CANDIDATE_POLL_MIN_SECONDS = 0.01
CANDIDATE_POLL_MAX_SECONDS = 1.0
CANDIDATE_GIVE_UP_SECONDS = 600.0

DeliveryCallback = Callable[[str, str], None]
EventCallback = Callable[[str, dict[str, Any]], None]


# ------------------------------------------------------------------------------ interface


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """The result of one delivery attempt, as a channel reports it.

    ``status_code``: HTTP status or SMTP reply code when there was one. ``response``: what the
    peer said (trimmed to :data:`RESPONSE_EXCERPT_CHARS` when stored). ``retryable``: whether
    trying again later may help (network error, timeout, 429, 5xx, SMTP 4xx).
    ``retry_after``: seconds the peer asked us to wait (``Retry-After``), if any.
    """

    ok: bool
    status_code: int | None = None
    response: str | None = None
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None

    @classmethod
    def success(cls, status_code: int | None = None, response: str | None = None
                ) -> DeliveryOutcome:
        """A delivered message."""
        return cls(True, status_code, response)

    @classmethod
    def failure(cls, error: str, *, retryable: bool = False, status_code: int | None = None,
                response: str | None = None, retry_after: float | None = None
                ) -> DeliveryOutcome:
        """A failed attempt (``retryable``: a later attempt may succeed)."""
        return cls(False, status_code, response, error, retryable, retry_after)


@dataclass(frozen=True)
class ChannelContext:
    """What a channel may use besides its arguments: configuration, the log directory, the
    clock (timestamps), the environment for ``${VAR}`` expansion at send time, and the stream
    the ``stdout`` channel writes to (``None``: ``sys.stdout`` at write time)."""

    config: DeliveryConfig
    log_dir: Path
    clock: Clock
    env: Mapping[str, str]
    stdout: TextIO | None = None

    @classmethod
    def from_config(cls, config: Config, *, clock: Clock | None = None,
                    env: Mapping[str, str] | None = None, stdout: TextIO | None = None
                    ) -> ChannelContext:
        """The context for a loaded runtime configuration."""
        return cls(config.delivery, config.log_dir, clock or SystemClock(),
                   os.environ if env is None else env, stdout)


@runtime_checkable
class Channel(Protocol):
    """A delivery channel. ``route`` makes one attempt and reports it; it should not retry by
    itself (the worker retries, persistently) and should not raise for expected failures.

    Optional attributes the worker reads: ``timeout_seconds`` (the attempt's time limit;
    default ``webhook_timeout_seconds``) and ``max_attempts`` (default
    ``1 + webhook_retry_attempts``).
    """

    name: str

    async def route(self, channel: str, job: JobDef, run: RunRow, output: str
                    ) -> DeliveryOutcome:
        """Deliver ``output`` of ``run`` (a run of ``job``) through channel ``channel``."""
        ...


class ChannelError(Exception):
    """A channel cannot be used: not installed, a name clash, or an entry point that does not
    load. The message is meant for the user."""


def _ep_origin(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    where = f" in distribution `{dist.name}`" if dist is not None and dist.name else ""
    return f"entry point `{ep.name} = {ep.value}`{where}"


class ChannelRegistry:
    """Channel name → implementation. Built-ins come from :data:`BUILTIN_CHANNEL_FACTORIES`,
    third-party channels from ``symbi.channels`` entry points; both are imported and built on
    first use (a broken plugin fails its own deliveries, not the scheduler)."""

    def __init__(self, context: ChannelContext,
                 custom: Mapping[str, importlib.metadata.EntryPoint | object] | None = None
                 ) -> None:
        self.context = context
        self._custom: dict[str, importlib.metadata.EntryPoint | object] = {}
        self._instances: dict[str, Channel] = {}
        for name, source in (custom or {}).items():
            self.register(name, source)

    @classmethod
    def discover(cls, context: ChannelContext, *, group: str = ENTRY_POINT_GROUP
                 ) -> ChannelRegistry:
        """The built-ins plus every installed ``symbi.channels`` entry point.

        Raises :class:`ChannelError` (one line per problem) when an entry point has the name of
        a built-in channel, or two different entry points share a name.
        """
        problems: list[str] = []
        found: dict[str, importlib.metadata.EntryPoint] = {}
        eps = importlib.metadata.entry_points(group=group)
        for ep in sorted(eps, key=lambda e: (e.name, e.value)):
            if ep.name in BUILTIN_CHANNEL_FACTORIES:
                problems.append(
                    f"custom delivery channel `{ep.name}` ({_ep_origin(ep)}) has the name of a "
                    "built-in channel; rename the entry point")
            elif ep.name in found and found[ep.name].value != ep.value:
                problems.append(
                    f"custom delivery channel `{ep.name}` is installed twice "
                    f"({_ep_origin(found[ep.name])} and {_ep_origin(ep)}); uninstall one")
            else:
                found[ep.name] = ep
        if problems:
            raise ChannelError("\n".join(problems))
        return cls(context, found)

    def register(self, name: str, source: importlib.metadata.EntryPoint | object) -> None:
        """Add a custom channel: an entry point, a class/factory, or an instance. A built-in
        name is refused (:class:`ChannelError`)."""
        if name in BUILTIN_CHANNEL_FACTORIES:
            raise ChannelError(f"custom delivery channel `{name}` has the name of a built-in "
                               "channel; choose another name")
        self._custom[name] = source
        self._instances.pop(name, None)

    def names(self) -> tuple[str, ...]:
        """Every channel name known (built-ins first, then custom ones sorted)."""
        return (*BUILTIN_CHANNEL_FACTORIES, *sorted(self._custom))

    def __contains__(self, name: object) -> bool:
        return name in BUILTIN_CHANNEL_FACTORIES or name in self._custom

    def get(self, name: str) -> Channel:
        """The channel called ``name``, built on first use; :class:`ChannelError` if it is not
        installed or does not load."""
        inst = self._instances.get(name)
        if inst is not None:
            return inst
        if name in BUILTIN_CHANNEL_FACTORIES:
            module, _, attr = BUILTIN_CHANNEL_FACTORIES[name].partition(":")
            factory = getattr(importlib.import_module(module), attr)
            inst = factory(self.context)
        elif name in self._custom:
            inst = self._build_custom(name, self._custom[name])
        else:
            installed = ", ".join(f"`{n}`" for n in sorted(self._custom)) or "none"
            raise ChannelError(
                f"delivery channel `{name}` is not installed: no `{ENTRY_POINT_GROUP}` entry "
                f"point named `{name}` (custom channels installed: {installed})")
        self._instances[name] = inst
        return inst

    def _build_custom(self, name: str, source: object) -> Channel:
        what = f"custom delivery channel `{name}`"
        if isinstance(source, importlib.metadata.EntryPoint):
            what = f"custom delivery channel `{name}` ({_ep_origin(source)})"
            try:
                source = source.load()
            except Exception as e:  # noqa: BLE001 - any import error is the plugin's problem
                raise ChannelError(f"{what} does not load: {describe_exception(e)}") from None
        obj: Any = source
        if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "route")):
            try:
                obj = obj(self.context) if _takes_argument(obj) else obj()
            except Exception as e:  # noqa: BLE001
                raise ChannelError(f"{what} could not be created: {describe_exception(e)}"
                                   ) from None
        route = getattr(obj, "route", None)
        if route is None or not inspect.iscoroutinefunction(route):
            raise ChannelError(f"{what} is not a channel: it needs an `async def route(self, "
                               "channel, job, run, output)` method")
        if not getattr(obj, "name", None):
            try:
                obj.name = name
            except (AttributeError, TypeError):
                pass
        channel: Channel = obj
        return channel


def _takes_argument(factory: Any) -> bool:
    """Whether a channel class/factory accepts the :class:`ChannelContext` argument."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return False
    for p in sig.parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL):
            return True
    return False


# ------------------------------------------------------------------------------ helpers


def delivery_id(run_id: str, channel: str) -> str:
    """The id of the delivery of ``run_id`` to ``channel`` — stable, so it doubles as the
    webhook's ``Idempotency-Key``."""
    return "dlv_" + hashlib.sha256(f"{run_id}\x00{channel}".encode()).hexdigest()[:24]


def _deliver_target(uri: str) -> tuple[str, str | None, Any]:
    """``deliver`` URI → (channel, setting, value), as the compiler reads it."""
    scheme, _, rest = uri.partition("://")
    if scheme == "slack":
        return "slack", ("slack_channel" if rest else None), rest or None
    if scheme == "email":
        addrs = tuple(a.strip() for a in rest.split(",") if a.strip())
        return "email", ("email_recipients" if addrs else None), addrs
    if scheme in ("webhook+http", "webhook+https"):
        return "webhook", "webhook_url", f"{scheme.split('+', 1)[1]}://{rest}"
    if scheme == "log_file":
        return "log_file", ("log_file" if rest else None), rest or None
    return scheme, None, None


def resolve_deliver(job: JobDef) -> JobDef:
    """``job`` with its ``deliver`` URI folded into ``delivery`` and the setting it implies
    (compiled jobs already have it; hand-made ``JobDef``\\ s may not)."""
    if not job.deliver or "://" not in job.deliver:
        return job
    channel, setting, value = _deliver_target(job.deliver)
    changes: dict[str, Any] = {}
    if channel and channel not in job.delivery:
        changes["delivery"] = (*job.delivery, channel)
    if setting is not None and value and not getattr(job, setting):
        changes[setting] = value
    return dataclasses.replace(job, **changes) if changes else job


def job_channels(job: JobDef) -> tuple[str, ...]:
    """The channels a run of ``job`` is delivered to (no duplicates, in order)."""
    return tuple(dict.fromkeys(resolve_deliver(job).delivery))


def expand_setting(text: str, env: Mapping[str, str], what: str) -> str:
    """Expand ``${VAR}`` in a channel setting at send time; raises :class:`ValueError` with
    a message naming the setting when a variable is missing."""
    try:
        return expand(text, env)
    except MissingEnvVar as e:
        raise ValueError(f"`{what}`: {e}") from None


def excerpt(text: str | None, limit: int = RESPONSE_EXCERPT_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters (with an ellipsis when cut)."""
    if text is None:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    return retry_after_seconds(value, now)


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


def run_payload(job: JobDef, run: RunRow, output: str) -> dict[str, Any]:
    """The JSON document of a delivery (the webhook body; JSON-lines log entries):
    ``{job: {id, name, agent}, run: {id, status, trigger, scheduled_for, started_at,
    finished_at, duration_ms, attempt, error}, output, summary}``."""
    return {
        "job": {"id": run.job_id, "name": job.name, "agent": job.agent},
        "run": {
            "id": run.id,
            "status": run.status,
            "trigger": run.trigger,
            "scheduled_for": _iso(run.scheduled_for),
            "started_at": _iso(run.started_at),
            "finished_at": _iso(run.finished_at),
            "duration_ms": run.duration_ms,
            "attempt": run.attempt,
            "error": run.error,
        },
        "output": output,
        "summary": run.summary if run.summary is not None else derive_summary(output, None),
    }


def format_duration(ms: int | None) -> str:
    """``1234`` → ``"1.23s"``; ``None`` → ``"-"``."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.2f}s"
    m, s = divmod(int(round(s)), 60)
    return f"{m}m{s:02d}s" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def backoff_seconds(attempt: int, retry_after: float | None = None,
                    base: float = BACKOFF_BASE_SECONDS) -> float:
    """Delay before the attempt after ``attempt`` (1-based): the peer's ``Retry-After`` when
    given, else ``base · 2^(attempt-1)`` (``base``: ``retry_backoff_seconds``); both capped."""
    if retry_after is not None:
        return min(max(0.0, retry_after), RETRY_AFTER_MAX_SECONDS)
    return min(base * 2.0 ** max(0, attempt - 1), BACKOFF_MAX_SECONDS)


def chain_callbacks(*callbacks: EventCallback | None) -> EventCallback:
    """One ``on_event`` callback calling each given one in order (``None``\\ s skipped); an
    exception in one does not stop the others (``symbi up`` chains the console printer and
    :meth:`DeliveryWorker.on_event`)."""
    cbs = [cb for cb in callbacks if cb is not None]

    def call(kind: str, payload: dict[str, Any]) -> None:
        for cb in cbs:
            try:
                cb(kind, payload)
            except Exception:
                log.exception("on_event callback %r failed for %s", cb, kind)

    return call


# ------------------------------------------------------------------------------ receipts


@dataclass(frozen=True)
class DeliveryAttempt:
    """One recorded attempt of a delivery."""

    attempt: int
    at: datetime
    ok: bool
    status_code: int | None
    response: str | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON shape."""
        return {"attempt": self.attempt, "at": _iso(self.at), "ok": self.ok,
                "status_code": self.status_code, "response": self.response,
                "error": self.error}


@dataclass(frozen=True)
class DeliveryReceipt:
    """A delivery of one run to one channel, with its attempts."""

    id: str
    run_id: str
    job_id: str
    channel: str
    status: str  # pending | retrying | delivered | failed
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_error: str | None
    history: tuple[DeliveryAttempt, ...] = ()

    @property
    def last_status_code(self) -> int | None:
        """The HTTP status / SMTP code of the latest attempt."""
        return self.history[-1].status_code if self.history else None

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON shape (``--format json``, the API)."""
        return {
            "id": self.id,
            "run_id": self.run_id,
            "job_id": self.job_id,
            "channel": self.channel,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": _iso(self.next_attempt_at),
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "last_error": self.last_error,
            "status_code": self.last_status_code,
            "history": [a.to_dict() for a in self.history],
        }


_RECEIPT_COLS = ("id, run_id, job_id, channel, status, attempts, next_attempt_at, created_at,"
                 " updated_at, last_error")


def _receipts(store: SqliteStore, rows: Sequence[Sequence[Any]]) -> list[DeliveryReceipt]:
    ids = [r[0] for r in rows]
    attempts: dict[str, list[DeliveryAttempt]] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for did, n, at, ok, code, resp, err in store.query(
                "SELECT delivery_id, attempt, at, ok, status_code, response, error FROM"
                f" delivery_attempts WHERE delivery_id IN ({','.join('?' * len(chunk))})"
                " ORDER BY delivery_id, attempt", chunk):
            attempts.setdefault(did, []).append(
                DeliveryAttempt(n, parse_ts(at), bool(ok), code, resp, err))  # type: ignore[arg-type]
    out = []
    for (did, run_id, job_id, channel, status, n, nxt, created, updated, err) in rows:
        out.append(DeliveryReceipt(
            did, run_id, job_id, channel, status, n,
            parse_ts(nxt) if status in OPEN_STATUSES else None,
            parse_ts(created), parse_ts(updated), err,  # type: ignore[arg-type]
            tuple(attempts.get(did, ()))))
    return out


def list_deliveries(store: SqliteStore, *, run_id: str | None = None,
                    job_id: str | None = None, status: str | None = None,
                    limit: int | None = None) -> list[DeliveryReceipt]:
    """Delivery receipts, newest first (then by channel), filtered by run, job (id) and
    status."""
    where, params = [], []
    for col, val in (("run_id", run_id), ("job_id", job_id), ("status", status)):
        if val is not None:
            where.append(f"{col} = ?")
            params.append(val)
    sql = f"SELECT {_RECEIPT_COLS} FROM deliveries"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at DESC, channel"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return _receipts(store, store.query(sql, params))


def receipts_for_runs(store: SqliteStore, run_ids: Iterable[str]
                      ) -> dict[str, list[DeliveryReceipt]]:
    """Receipts of each run (every requested run id is a key; ``[]`` when none)."""
    ids = list(dict.fromkeys(run_ids))
    out: dict[str, list[DeliveryReceipt]] = {rid: [] for rid in ids}
    rows: list[Any] = []
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        rows.extend(store.query(
            f"SELECT {_RECEIPT_COLS} FROM deliveries WHERE run_id IN"
            f" ({','.join('?' * len(chunk))}) ORDER BY created_at, channel", chunk))
    for r in _receipts(store, rows):
        out[r.run_id].append(r)
    return out


def format_receipts(receipts: Sequence[DeliveryReceipt]) -> str:
    """A short cell for tables: ``log_file ok, webhook ok(3), email failed`` — ``(n)``: the
    attempts made, when more than one."""
    if not receipts:
        return "-"
    parts = []
    for r in receipts:
        state = {"delivered": "ok"}.get(r.status, r.status)
        if r.attempts > 1:
            state += f"({r.attempts})"
        parts.append(f"{r.channel} {state}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------ outbox


def enqueue_deliveries(store: SqliteStore, job: JobDef | JobRow, run: RunRow | str, *,
                       now: datetime | None = None) -> list[str]:
    """Insert a ``pending`` delivery for each channel of ``job`` for ``run`` (a row or its
    id), due now. Idempotent (one row per run and channel); returns the ids inserted."""
    definition = job.definition if isinstance(job, JobRow) else job
    run_id = run if isinstance(run, str) else run.id
    job_id = job.id if isinstance(job, JobRow) else (
        run.job_id if isinstance(run, RunRow) else None)
    if job_id is None:
        row = store.get_run(run_id)
        if row is None:
            return []
        job_id = row.job_id
    channels = job_channels(definition)
    if not channels:
        return []
    ts = format_ts(now or store.clock.now())
    inserted = []
    with store.transaction() as conn:
        for ch in channels:
            did = delivery_id(run_id, ch)
            cur = conn.execute(
                "INSERT INTO deliveries (id, run_id, job_id, channel, status, attempts,"
                " next_attempt_at, created_at, updated_at) SELECT ?, ?, ?, ?, 'pending', 0,"
                " ?, ?, ? WHERE EXISTS (SELECT 1 FROM runs WHERE id = ?)"
                " ON CONFLICT DO NOTHING",
                (did, run_id, job_id, ch, ts, ts, ts, run_id))
            if cur.rowcount == 1:
                inserted.append(did)
    return inserted


@dataclass(frozen=True, slots=True)
class _Claim:
    id: str
    run_id: str
    job_id: str
    channel: str


class DeliveryWorker:
    """The outbox worker: enqueues deliveries of finished runs and sends them (see the module
    docstring). ``run(stop)`` is the whole life cycle; tests drive :meth:`run_once`.

    ``on_delivery(channel, status)`` is called after every attempt with the delivery's new
    status (``delivered``, ``retrying`` or ``failed``) — the metrics hook.
    """

    def __init__(self, store: SqliteStore, config: Config, clock: Clock | None = None,
                 registry: ChannelRegistry | None = None, *,
                 on_delivery: DeliveryCallback | None = None,
                 env: Mapping[str, str] | None = None, stdout: TextIO | None = None,
                 max_in_flight: int = 16, recovery_window: timedelta = RECOVERY_WINDOW,
                 shutdown_timeout_seconds: float | None = None) -> None:
        self.store = store
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.registry = registry or ChannelRegistry.discover(
            ChannelContext.from_config(config, clock=self.clock, env=env, stdout=stdout))
        self.on_delivery = on_delivery
        self.max_in_flight = max(1, max_in_flight)
        self.recovery_window = recovery_window
        self.shutdown_timeout_seconds = (config.scheduler.shutdown_timeout_seconds
                                         if shutdown_timeout_seconds is None
                                         else shutdown_timeout_seconds)
        self._wake = asyncio.Event()
        # run id → real monotonic time first seen (run_finished reported, result maybe unwritten)
        self._candidates: dict[str, float] = {}
        self._candidate_poll = CANDIDATE_POLL_MIN_SECONDS
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self.attempts_made = 0

    # ------------------------------------------------------------------ events

    def on_event(self, kind: str, payload: Mapping[str, Any]) -> None:
        """The scheduler's ``on_event`` hook: remember finished runs that produce output."""
        if kind != "run_finished" or payload.get("status") not in DELIVER_STATUSES:
            return
        run_id = payload.get("run_id") or payload.get("id")
        if run_id:
            self._candidates.setdefault(str(run_id), time.monotonic())
            self._wake.set()

    def notify(self, run_id: str) -> None:
        """Deliver ``run_id`` once its final state is in the store (for callers that run jobs
        outside the scheduler loop, e.g. ``symbi cron run``)."""
        self._candidates.setdefault(run_id, time.monotonic())
        self._wake.set()

    def _resolve_candidates(self) -> bool:
        """Enqueue deliveries of remembered runs whose final state is stored; True if any
        candidate is still waiting for the scheduler to write it. One query per 500 runs
        decides, so runs of jobs without channels cost next to nothing."""
        if not self._candidates:
            return False
        now_mono = time.monotonic()
        progress = False
        ids = list(self._candidates)
        try:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows = {r[0]: r for r in self.store.query(
                    "SELECT r.id, r.finished_at, r.status, r.job_id,"
                    " json_array_length(j.definition, '$.delivery'),"
                    " json_extract(j.definition, '$.deliver')"
                    " FROM runs r LEFT JOIN jobs j ON j.id = r.job_id"
                    f" WHERE r.id IN ({','.join('?' * len(chunk))})", chunk)}
                for run_id in chunk:
                    row = rows.get(run_id)
                    if row is not None and row[1] is None:  # not written as finished yet
                        if now_mono - self._candidates[run_id] > CANDIDATE_GIVE_UP_SECONDS:
                            log.warning("run %s was reported finished but never stored as "
                                        "such; its deliveries are left to start-up recovery",
                                        run_id)
                            del self._candidates[run_id]
                        continue
                    del self._candidates[run_id]
                    progress = True
                    if row is None or row[2] not in DELIVER_STATUSES or not (row[4] or row[5]):
                        continue
                    job = self.store.get_job(row[3])
                    if job is not None:
                        enqueue_deliveries(self.store, job, run_id, now=self.clock.now())
        except (StoreError, sqlite3.Error) as e:
            log.error("could not enqueue deliveries of finished runs (will retry): %s", e)
            return True
        if progress:
            self._candidate_poll = CANDIDATE_POLL_MIN_SECONDS
        return bool(self._candidates)

    # ------------------------------------------------------------------ recovery

    def recover(self, now: datetime | None = None) -> int:
        """Enqueue deliveries for runs that finished within :attr:`recovery_window` without
        any delivery row — runs whose enqueue a crash prevented. Only runs newer than the
        newest run of the same job that *has* deliveries count, so adding a channel to a job
        does not send its old runs' output. Returns how many deliveries were enqueued."""
        now = now or self.clock.now()
        since = format_ts(now - self.recovery_window)
        statuses = ",".join(f"'{s}'" for s in sorted(DELIVER_STATUSES))
        rows = self.store.query(
            "WITH last AS (SELECT r.job_id AS job_id, MAX(r.finished_at) AS t FROM deliveries d"
            " JOIN runs r ON r.id = d.run_id GROUP BY r.job_id)"
            " SELECT r.id, r.job_id FROM runs r JOIN last ON last.job_id = r.job_id"
            f" WHERE r.finished_at > last.t AND r.finished_at >= ? AND r.status IN ({statuses})"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.run_id = r.id)"
            " ORDER BY r.finished_at", (since,))
        count = 0
        jobs: dict[str, JobRow | None] = {}
        for run_id, job_id in rows:
            if job_id not in jobs:
                jobs[job_id] = self.store.get_job(job_id)
            job = jobs[job_id]
            if job is not None:
                count += len(enqueue_deliveries(self.store, job, run_id, now=now))
        if count:
            log.info("enqueued %d deliveries of runs that finished before a restart", count)
        return count

    # ------------------------------------------------------------------ sending

    def next_due(self) -> datetime | None:
        """When the earliest open delivery is due (None: nothing open)."""
        row = self.store.query(
            "SELECT MIN(next_attempt_at) FROM deliveries WHERE status IN ('pending', 'retrying')")
        return parse_ts(row[0][0]) if row and row[0][0] else None

    def _claim_due(self, now: datetime, limit: int, run_id: str | None = None
                   ) -> list[_Claim]:
        if limit <= 0:
            return []
        ts = format_ts(now)
        claims: list[_Claim] = []
        only = "" if run_id is None else " AND run_id = ?"
        params: tuple[Any, ...] = (ts,) if run_id is None else (ts, run_id)
        with self.store.transaction() as conn:
            rows = conn.execute(
                "SELECT id, run_id, job_id, channel FROM deliveries WHERE status IN"
                f" ('pending', 'retrying') AND next_attempt_at <= ?{only}"
                " ORDER BY next_attempt_at LIMIT ?",
                (*params, limit + len(self._inflight))).fetchall()
            for did, rid, job_id, channel in rows:
                if did in self._inflight or len(claims) >= limit:
                    continue
                until = now + timedelta(seconds=self.claim_seconds(channel))
                conn.execute("UPDATE deliveries SET next_attempt_at = ? WHERE id = ?",
                             (format_ts(until), did))
                claims.append(_Claim(did, rid, job_id, channel))
        return claims

    def claim_seconds(self, channel: str) -> float:
        """How long a claimed attempt on ``channel`` stays this worker's: its timeout plus
        :data:`CLAIM_GRACE_SECONDS` (then another worker may make it again)."""
        try:
            ch: Channel | None = self.registry.get(channel)
        except Exception:  # noqa: BLE001 - the attempt itself reports the problem
            ch = None
        return self._limits(ch)[0] + CLAIM_GRACE_SECONDS

    def _start_due(self, run_id: str | None = None) -> list[asyncio.Task[None]]:
        try:
            claims = self._claim_due(self.clock.now(), self.max_in_flight - len(self._inflight),
                                     run_id)
        except StoreError as e:
            log.error("could not claim due deliveries (will retry): %s", e)
            return []
        tasks = []
        for c in claims:
            task = asyncio.create_task(self._attempt(c), name=f"delivery:{c.channel}:{c.id}")
            self._inflight[c.id] = task
            task.add_done_callback(functools.partial(self._done, c.id))
            tasks.append(task)
        return tasks

    def _done(self, did: str, _task: asyncio.Task[None] | None = None) -> None:
        self._inflight.pop(did, None)
        self._wake.set()

    def _limits(self, channel: Channel | None) -> tuple[float, int]:
        d = self.config.delivery
        timeout = getattr(channel, "timeout_seconds", None) or d.webhook_timeout_seconds
        attempts = getattr(channel, "max_attempts", None) or (1 + d.webhook_retry_attempts)
        return float(timeout), max(1, int(attempts))

    async def _attempt(self, c: _Claim) -> None:
        try:
            run = self.store.get_run(c.run_id)
            job = self.store.get_job(c.job_id)
        except StoreError as e:
            log.error("delivery %s: cannot read its run (will retry): %s", c.id, e)
            return  # the claim expires and the attempt is made again
        channel: Channel | None = None
        if run is None or job is None:
            outcome = DeliveryOutcome.failure("the run or its job no longer exists")
        else:
            try:
                channel = self.registry.get(c.channel)
            except ChannelError as e:
                outcome = DeliveryOutcome.failure(str(e))
            except Exception as e:  # noqa: BLE001 - a broken built-in import, say
                outcome = DeliveryOutcome.failure(
                    f"channel `{c.channel}` could not be created: {describe_exception(e)}")
            else:
                outcome = await self._route(channel, c, resolve_deliver(job.definition), run)
        self.attempts_made += 1
        try:
            status = self._record(c, outcome, job, run, self._limits(channel)[1])
        except StoreError as e:
            log.error("delivery %s: could not record the attempt: %s", c.id, e)
            return
        if status is not None and self.on_delivery is not None:
            try:
                self.on_delivery(c.channel, status)
            except Exception:
                log.exception("on_delivery callback failed")

    async def _route(self, channel: Channel, c: _Claim, job: JobDef, run: RunRow
                     ) -> DeliveryOutcome:
        timeout, _ = self._limits(channel)
        try:
            async with asyncio.timeout(timeout):
                outcome = await channel.route(c.channel, job, run, run.output or "")
        except TimeoutError:
            return DeliveryOutcome.failure(f"timed out after {timeout:g}s", retryable=True)
        except Exception as e:  # noqa: BLE001 - a channel bug must not stop the worker
            return DeliveryOutcome.failure(
                f"channel `{c.channel}` raised {describe_exception(e)}", retryable=True)
        if not isinstance(outcome, DeliveryOutcome):
            return DeliveryOutcome.failure(
                f"channel `{c.channel}` returned {type(outcome).__name__}, not a DeliveryOutcome")
        return outcome

    def _record(self, c: _Claim, o: DeliveryOutcome, job: JobRow | None, run: RunRow | None,
                max_attempts: int) -> str | None:
        """Store one attempt and the delivery's new state; returns that state (None: the
        delivery vanished or was already settled)."""
        now = self.clock.now()
        ts = format_ts(now)
        error = o.error or (None if o.ok else
                            f"HTTP {o.status_code}" if o.status_code else "failed")
        with self.store.transaction() as conn:
            row = conn.execute("SELECT attempts, status FROM deliveries WHERE id = ?",
                               (c.id,)).fetchone()
            if row is None or row[1] not in OPEN_STATUSES:
                return None
            attempt = int(row[0]) + 1
            conn.execute(
                "INSERT OR REPLACE INTO delivery_attempts (delivery_id, attempt, at, ok,"
                " status_code, response, error) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (c.id, attempt, ts, 1 if o.ok else 0, o.status_code, excerpt(o.response),
                 None if o.ok else excerpt(error, 2000)))
            nxt: str | None = None
            if o.ok:
                status = "delivered"
            elif o.retryable and attempt < max_attempts:
                status = "retrying"
                delay = backoff_seconds(attempt, o.retry_after,
                                        self.config.delivery.retry_backoff_seconds)
                nxt = format_ts(now + timedelta(seconds=delay))
            else:
                status = "failed"
            conn.execute(
                "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
                " updated_at = ?, last_error = ? WHERE id = ?",
                (status, attempt, nxt, ts, None if o.ok else excerpt(error, 2000), c.id))
            level = job.definition.audit if job is not None else "all_operations"
            if status == "failed" and level != "none":
                audit.append_events(conn, [NewAuditEvent(
                    audit.DELIVERY_FAILED, now, "delivery", c.job_id,
                    job.name if job is not None else (run.job_name if run else None), c.run_id,
                    details={"channel": c.channel, "delivery_id": c.id, "attempts": attempt,
                             "status_code": o.status_code, "error": excerpt(error, 500)})],
                    format_ts)
        if status == "failed":
            log.warning("delivery of run %s to %s failed after %d attempt(s): %s", c.run_id,
                        c.channel, attempt, error)
        return status

    # ------------------------------------------------------------------ life cycle

    async def run_once(self, run_id: str | None = None) -> int:
        """Enqueue what finished, then send every delivery due at the clock's current time
        (only those of ``run_id`` if given) and wait for those attempts; returns the number
        of attempts made."""
        self._resolve_candidates()
        before = self.attempts_made
        tasks = self._start_due(run_id)
        while tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            tasks = self._start_due(run_id)  # more than max_in_flight were due
        return self.attempts_made - before

    async def run(self, stop: asyncio.Event) -> None:
        """Recover, then send due deliveries until ``stop`` is set; then enqueue what the
        scheduler finished last, attempt what is due, and wait up to the shutdown timeout for
        attempts in flight (unfinished ones are made again after the next start, once their
        claim expires). Set ``stop`` after the scheduler has stopped, so that runs finishing
        during its shutdown are delivered too."""
        waiter = asyncio.create_task(stop.wait())
        waiter.add_done_callback(lambda _t: self._wake.set())
        try:
            try:
                self.recover()
            except StoreError as e:
                log.error("delivery recovery failed: %s", e)
            while not stop.is_set():
                self._wake.clear()
                waiting = self._resolve_candidates()
                self._start_due()
                if stop.is_set():
                    break
                if waiting:  # the scheduler writes results within milliseconds
                    delay = self._candidate_poll
                    self._candidate_poll = min(delay * 2, CANDIDATE_POLL_MAX_SECONDS)
                    try:
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    continue
                now = self.clock.now()
                deadline = now + timedelta(seconds=IDLE_POLL_SECONDS)
                try:
                    nd = self.next_due()
                except StoreError:
                    nd = None
                if nd is not None and nd < deadline:
                    deadline = nd
                await self.clock.sleep_until(deadline, self._wake)
        finally:
            waiter.cancel()
            # a last pass, like the scheduler's graceful shutdown: what finished just before
            # the stop is enqueued and gets one attempt within the shutdown timeout
            self._resolve_candidates()
            self._start_due()
            await self._drain()

    async def _drain(self) -> None:
        tasks = list(self._inflight.values())
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout_seconds)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    @property
    def in_flight(self) -> int:
        """Attempts currently being made."""
        return len(self._inflight)


async def deliver_run_now(store: SqliteStore, config: Config, run_id: str, *,
                          clock: Clock | None = None,
                          registry: ChannelRegistry | None = None) -> list[DeliveryReceipt]:
    """Enqueue the deliveries of one finished run and make the attempts that are due now
    (for runs executed outside ``symbi up``, e.g. ``symbi cron run`` without a scheduler);
    retries stay in the outbox for the next worker. Returns the run's receipts. Safe if a
    running worker handles the same run: rows are unique and attempts are claimed."""
    run = store.get_run(run_id)
    if run is None or run.status not in DELIVER_STATUSES:
        return []
    job = store.get_job(run.job_id)
    if job is None:
        return []
    worker = DeliveryWorker(store, config, clock or store.clock, registry)
    enqueue_deliveries(store, job, run)
    await worker.run_once(run_id)
    return receipts_for_runs(store, [run_id])[run_id]


def stdout_stream(ctx: ChannelContext) -> TextIO:
    """The stream the ``stdout`` channel writes to."""
    return ctx.stdout if ctx.stdout is not None else sys.stdout


__all__ = [
    "BUILTIN_CHANNEL_FACTORIES",
    "DELIVER_STATUSES",
    "ENTRY_POINT_GROUP",
    "Channel",
    "ChannelContext",
    "ChannelError",
    "ChannelRegistry",
    "DeliveryAttempt",
    "DeliveryOutcome",
    "DeliveryReceipt",
    "DeliveryWorker",
    "backoff_seconds",
    "chain_callbacks",
    "deliver_run_now",
    "delivery_id",
    "enqueue_deliveries",
    "excerpt",
    "expand_setting",
    "format_duration",
    "format_receipts",
    "job_channels",
    "list_deliveries",
    "parse_retry_after",
    "receipts_for_runs",
    "resolve_deliver",
    "run_payload",
]
