"""The scheduler loop (SPEC §5.1–5.3): claim due occurrences, run agents, record results.

One asyncio loop per process. Each iteration (:meth:`Scheduler.tick`):

1. **flush** buffered results in one transaction — run rows, job counters, retries,
   dead-letter transitions and audit events — when nothing is in flight or queued, when
   :data:`FLUSH_MAX_BATCH` results are waiting, or after :data:`FLUSH_MAX_DELAY_SECONDS`;
2. **claim** what is due in a ``BEGIN IMMEDIATE`` transaction: for each active job with
   ``next_run <= now`` the occurrences up to now are enumerated from the stored ``next_run``
   (the *scheduled* time, never "now"), decided on (run / skipped / missed, see below), inserted
   as run rows — the unique key ``(job_id, scheduled_for)`` makes a second claim of the same
   occurrence impossible, also from another process — and the job's ``next_run`` advances in
   the same transaction. Unowned ``pending`` runs that are due (manual/API runs, retries,
   approved runs) are taken over in the same transaction. A burst is claimed in chunks
   (:data:`CLAIM_CHUNK` jobs, doubling per claim): each chunk is dispatched as soon as it is
   committed and the loop comes straight back for the next, so the first runs start after one
   small claim; results are flushed once the burst is claimed;
3. **dispatch** claimed runs, oldest first, up to ``max_concurrent_jobs``; runs beyond it stay
   ``pending`` in FIFO order and their ``start_delay_ms`` is recorded;
4. **sleep** until the earliest of: the next ``next_run``/retry ``due_at`` in the store, the
   next jittered start, the lease renewal, ``tick_interval_seconds`` (to notice other
   processes' changes through ``PRAGMA data_version``) — or until woken by a finished run, a
   change made through the same store object, or stop. There is no fixed polling: a job fires
   at its deadline, not up to a tick later.

Occurrence decisions. An occurrence older than the *misfire grace* (``max(1 s,
tick_interval)``) is *late*: the scheduler was down, suspended or blocked. Late occurrences
follow the job's ``catchup`` policy within ``catchup_window`` (``latest``: only the most recent
runs, unless an on-time one exists; ``all``: every one, oldest first, each waiting for a
per-job slot; ``skip``: none); every late occurrence not run is recorded as a ``missed`` run.
At most :data:`MISSED_ROW_CAP` missed rows are written per job and pass (the most recent ones)
plus one summary row (``stop_reason = 'missed_summary'``, the count in ``error``); a window
holding more than :data:`WINDOW_CAP` occurrences is cut the same way. On-time occurrences run
unless the job already has ``max_concurrent`` runs in flight, in which case a ``skipped`` row
with ``stop_reason = 'concurrency'`` is written.

Execution runs the policy gate (``runtime.policy``, SPEC §5.6; free for a job without a
policy): a denied run ends ``denied`` (``PolicyDenied`` and, for AgentPin, an
``AgentPinVerificationFailed`` audit event); a run that needs an approval leaves the scheduler
as ``awaiting_approval`` with its request (``runtime.approvals``) and comes back as a pending
run once approved; pending approvals expire at their deadline (the loop wakes for it). Then
the agent runs through ``runtime.executor`` with the context its job's session mode gives it
(``runtime.sessions``), or, for a heartbeat job, the assess → act → sleep cycle of
``runtime.heartbeat``; ``max_runtime`` bounds the run. Retries (SPEC §5.3) are stored as
unowned ``pending`` runs with a future ``due_at`` so they survive restarts; retries and
catch-up runs wait for a free per-job slot instead of being skipped; manual/API runs ignore the
per-job limit (an operator asked for them) but respect the global one.

Guarantees. An occurrence is *claimed* exactly once (the unique key, the claim committed before
the run starts). Execution is at-least-once across a crash: a run whose result was still
buffered, or that was running, when the process died is marked ``interrupted`` by the next
scheduler's :meth:`Scheduler.start` and retried per the job's policy. A scheduler that loses
its lease (see ``run``) stops claiming and writing at once; its runs are the new holder's to
recover.

Python handlers: the executor calls async handlers and sync handlers marked ``symbi_inline``
on the loop (no thread hop); other sync handlers go to a worker thread so a slow one cannot
block the loop. The benchmark's no-op agent is inline.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from compiler.cron import parse_cron
from compiler.ir import AgentDef, JobDef
from runtime import approvals, audit
from runtime.audit import NewAuditEvent
from runtime.clock import Clock, SystemClock
from runtime.config import SchedulerConfig
from runtime.executor import (
    AgentContext,
    ExecRequest,
    ExecResult,
    derive_summary,
    describe_exception,
    executor_for,
)
from runtime.heartbeat import record_iteration, run_heartbeat
from runtime.policy import ALLOW, Allow, Decision, Deny, PolicyGate, RequireApproval
from runtime.sessions import EPHEMERAL_WITH_SUMMARY, SessionManager
from runtime.store import (
    FAILURE_STATUSES,
    FINAL_RUN_STATUSES,
    RUN_COLUMNS,
    DueJob,
    LeaseLost,
    RunRecord,
    RunRow,
    SqliteStore,
    StoreError,
    WriteBatch,
    new_run_id,
)

if TYPE_CHECKING:
    from runtime.config import Config

log = logging.getLogger(__name__)

#: Individually recorded missed occurrences per job and pass (the rest: one summary row).
MISSED_ROW_CAP = 1000
#: Occurrences considered inside one job's catch-up window per pass.
WINDOW_CAP = 10_000
#: Retry backoff cap (SPEC §1.3: doubling, capped at 1 h).
MAX_BACKOFF_SECONDS = 3600.0
#: Extra time the scheduler gives an executor past the run's timeout before cancelling it.
TIMEOUT_GRACE_SECONDS = 5.0
#: Result batching: while runs are in flight, results are written when this many are buffered
#: or the oldest has waited this long (real time; it is a throughput knob, not scheduling
#: semantics). With nothing in flight they are written at once.
FLUSH_MAX_BATCH = 2000
FLUSH_MAX_DELAY_SECONDS = 0.02
#: Due jobs (and pickups) claimed by the first transaction of a burst; each following claim
#: takes twice as many (up to CLAIM_CHUNK_MAX). Each chunk is dispatched as soon as it is
#: committed, so the first runs of a burst start after one small chunk's work, not the whole
#: burst's; the doubling keeps the number of transactions (each rewrites the index pages it
#: touches) low, so throughput stays that of one big claim.
CLAIM_CHUNK = 1000
CLAIM_CHUNK_MAX = 100_000
_ONE_US = timedelta(microseconds=1)

EventCallback = Callable[[str, dict[str, Any]], None]


def local_owner_id() -> str:
    """This process's scheduler id, ``host:pid`` (what :func:`lease_holder_is_dead` reads)."""
    return f"{os.uname().nodename}:{os.getpid()}"


def lease_holder_is_dead(holder: object) -> bool:
    """True if ``holder`` is a ``host:pid`` id of THIS host whose process no longer exists (a
    scheduler killed with SIGKILL, or a crashed machine's process after a reboot): its lease
    may be taken over at once. Anything else — another host, a process that exists (even one
    owned by another user), an id of another form — counts as alive: its lease runs out."""
    if not isinstance(holder, str) or ":" not in holder:
        return False
    host, _, pid = holder.rpartition(":")
    if host != os.uname().nodename or not pid.isdigit() or int(pid) <= 0:
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # exists but not ours (EPERM), or not a valid pid
        return False
    return False


def _ms(delta: timedelta) -> int:
    return max(0, int(delta.total_seconds() * 1000))


def _cron(text: str) -> Any:
    return parse_cron(text)[0]


@dataclass(slots=True, eq=False)
class _Run(RunRecord):
    """A run held in memory: the stored columns plus what the loop needs."""

    job: JobDef | None = None
    wait_slot: bool = False  # wait for a per-job slot instead of being skipped
    task: asyncio.Task[None] | None = None
    decision: Decision | None = None  # the policy gate's, when it did not allow the run
    decided_at: datetime | None = None  # when the gate asked for an approval
    session_write: Callable[[sqlite3.Connection], None] | None = None  # saved with the run

    @classmethod
    def from_stored(cls, row: RunRow, job: JobDef) -> _Run:
        """A mutable in-memory copy of a stored run."""
        run = cls(**{name: getattr(row, name) for name in RUN_COLUMNS}, usage=row.usage)
        run.job = job
        return run


@dataclass
class SchedulerStats:
    """Counters since start (for health/metrics)."""

    runs_total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    missed: int = 0
    total_duration_ms: int = 0

    def count(self, run: RunRecord) -> None:
        """Count one finished run."""
        self.runs_total += 1
        self.by_status[run.status] = self.by_status.get(run.status, 0) + 1
        self.total_duration_ms += run.duration_ms or 0


class Scheduler:
    """The scheduler for one state database.

    ``run(stop)`` is the whole life cycle (lease, recovery, loop, shutdown). Tests and tools can
    drive the pieces instead: :meth:`start` (crash recovery), :meth:`tick` (one iteration),
    :meth:`run_until_idle` (everything due at the clock's current time, to completion).
    """

    def __init__(self, store: SqliteStore, config: SchedulerConfig,
                 clock: Clock | None = None, *, owner_id: str, on_event: EventCallback | None = None, standby: bool = True,
                 rng: random.Random | None = None, env: Mapping[str, str] | None = None,
                 app_config: Config | None = None, gate: PolicyGate | None = None,
                 session_max_bytes: int | None = None) -> None:
        """``app_config`` (the whole runtime configuration) gives the policy gate its
        environment name and ``[agentpin]`` settings and the ``llm`` executor its providers;
        without it the gate reads ``SYMBI_ENV``/``SYMBI_AGENTPIN_*`` from ``env``. ``gate``
        replaces the gate altogether (tests). ``session_max_bytes`` caps a shared session
        (default ``[scheduler] session_max_bytes``, 256 KiB)."""
        self.store = store
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.owner_id = owner_id
        self.on_event = on_event
        self.standby = standby
        self.rng = rng or random.Random()
        self.env = env
        self.app_config = app_config
        if gate is None:
            gate = (PolicyGate.from_config(app_config, store=store, env=env)
                    if app_config is not None else PolicyGate.from_env(env, store=store))
        self.gate = gate
        if session_max_bytes is None:
            session_max_bytes = int(config.session_max_bytes)
        self.sessions = SessionManager(store, max_bytes=session_max_bytes)
        self._approval_due: datetime | None = None  # earliest expiry of a pending approval
        self._claim_more = False  # the last claim was cut at its chunk size: more is due
        self._chunk = CLAIM_CHUNK  # the next claim's size (doubles during a burst)
        self.stats = SchedulerStats()
        self._wake = asyncio.Event()
        self._seq = itertools.count()
        # pending runs this instance owns: not yet ready (jitter) and ready (waiting capacity)
        self._waiting: list[tuple[datetime, datetime, int, _Run]] = []
        self._ready: list[tuple[datetime, datetime, int, _Run]] = []
        self._running: dict[str, _Run] = {}
        self._inflight_by_job: dict[str, int] = {}  # pending + running, for the skip decision
        self._running_by_job: dict[str, int] = {}  # running, for runs waiting for a slot
        self._done: list[_Run] = []  # finished, not yet flushed
        self._dirty: dict[str, _Run] = {}  # state changes not yet flushed
        self._agents: dict[str, AgentDef] = {}
        self._token: tuple[int, int] | None = None
        self._claiming = True
        self._started = False
        self._holding_lease = False
        self._lease_renew_at: datetime | None = None
        self._cancel_reason = "scheduler shut down"
        self._next_memo: dict[tuple[str, str, datetime], datetime | None] = {}
        self._buffered_since: float | None = None  # time.monotonic() of the oldest unflushed

    # ------------------------------------------------------------------ properties

    @property
    def in_flight(self) -> int:
        """Runs currently executing."""
        return len(self._running)

    @property
    def queued(self) -> int:
        """Claimed runs waiting for jitter or capacity."""
        return len(self._waiting) + len(self._ready)

    @property
    def holds_lease(self) -> bool:
        """Whether this instance currently holds the scheduler lease."""
        return self._holding_lease

    @property
    def _grace(self) -> timedelta:
        return timedelta(seconds=max(1.0, float(self.config.tick_interval_seconds)))

    @property
    def _lease_owner(self) -> str | None:
        return self.owner_id if self._holding_lease else None

    # ------------------------------------------------------------------ events

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, payload)
        except Exception:  # a broken printer must not stop the scheduler
            log.exception("on_event callback failed for %s", kind)

    def _emit_run(self, kind: str, run: _Run, **extra: Any) -> None:
        if self.on_event is None:
            return
        payload = {name: getattr(run, name) for name in RUN_COLUMNS if name != "output"}
        payload["run_id"] = run.id
        payload["usage"] = run.usage
        payload["at"] = self.clock.now()
        payload.update(extra)
        self._emit(kind, payload)

    # ------------------------------------------------------------------ life cycle

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set: take the lease (or wait as standby), recover, loop, shut
        down gracefully. Returns 0, or 1 when ``standby=False`` and another scheduler holds
        the lease."""
        self.store.add_change_listener(self._wake.set)
        watcher = asyncio.ensure_future(self._watch_stop(stop))
        try:
            while not stop.is_set():
                if not await self._acquire_lease(stop):
                    if not self.standby and not stop.is_set():
                        return 1
                    break
                await self.start()
                lost = await self._loop(stop)
                if not lost:
                    break
                await self._abandon()
            return 0
        finally:
            try:
                await self.shutdown()
            finally:
                watcher.cancel()
                self.store.remove_change_listener(self._wake.set)

    async def _watch_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _acquire_lease(self, stop: asyncio.Event) -> bool:
        ttl = float(self.config.lease_ttl_seconds)
        announced = False
        while not stop.is_set():
            now = self.clock.now()
            taken_from: str | None = None
            try:
                got = self.store.try_acquire_lease(self.owner_id, ttl, now)
                if not got:
                    # a holder on this host whose process is gone renews nothing: do not wait
                    # for its lease to run out (the update checks the row still names it)
                    info = self.store.lease_info()
                    if (info is not None and info.owner != self.owner_id
                            and lease_holder_is_dead(info.owner)):
                        got = self.store.take_over_lease(self.owner_id, info.owner, ttl, now)
                        taken_from = info.owner if got else None
            except StoreError as e:
                log.warning("lease: %s", e)
                got = False
            if got:
                self._holding_lease = True
                self._lease_renew_at = now + timedelta(seconds=ttl / 3)
                self._claiming = True
                if taken_from is not None:
                    log.info("took over the lease of %s (no such process)", taken_from)
                self._emit("lease_acquired", {"owner": self.owner_id, "at": now,
                                              "taken_over_from": taken_from})
                return True
            info = self.store.lease_info()
            payload = {"owner": self.owner_id, "at": now,
                       "holder": info.owner if info else None,
                       "expires_at": info.expires_at if info else None}
            if not self.standby:
                self._emit("lease_busy", payload)
                return False
            if not announced:
                self._emit("standby", payload)
                announced = True
            self._wake.clear()
            await self.clock.sleep_until(now + timedelta(seconds=ttl / 3), self._wake)
        return False

    def _renew_lease(self, now: datetime) -> bool:
        """Renew when due; False if the lease was lost."""
        if not self._holding_lease or self._lease_renew_at is None or now < self._lease_renew_at:
            return True
        ttl = float(self.config.lease_ttl_seconds)
        try:
            ok = self.store.try_acquire_lease(self.owner_id, ttl, now)
        except StoreError as e:  # busy database: try again next iteration
            log.warning("lease renewal failed: %s", e)
            return True
        if ok:
            self._lease_renew_at = now + timedelta(seconds=ttl / 3)
        return ok

    async def _loop(self, stop: asyncio.Event) -> bool:
        """The main loop; returns True if the lease was lost (False: stop was requested)."""
        while not stop.is_set():
            if not self._renew_lease(self.clock.now()):
                return True
            try:
                deadline = self._tick()
            except LeaseLost:
                return True
            except Exception:  # a bug must not silently end scheduling; retry next tick
                log.exception("scheduler iteration failed")
                deadline = self.clock.now() + timedelta(
                    seconds=float(self.config.tick_interval_seconds))
            if self._lease_renew_at is not None:
                deadline = min(deadline, self._lease_renew_at)
            if stop.is_set():
                break
            await self.clock.sleep_until(deadline, self._wake)
        return False

    async def _abandon(self) -> None:
        """After losing the lease: stop everything this instance was doing, write nothing
        (the new holder marks those runs interrupted and retries them)."""
        self._holding_lease = False
        self._emit("lease_lost", {"owner": self.owner_id, "at": self.clock.now()})
        self._cancel_reason = "lost the scheduler lease"
        tasks = [r.task for r in self._running.values() if r.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._waiting.clear()
        self._ready.clear()
        self._running.clear()
        self._inflight_by_job.clear()
        self._running_by_job.clear()
        self._done.clear()
        self._dirty.clear()
        self._buffered_since = None
        self._started = False
        self._cancel_reason = "scheduler shut down"

    async def start(self) -> None:
        """Crash recovery (once): runs some scheduler left ``pending``/``running`` become
        ``interrupted`` — counted as failures and retried per policy. Call it only while this
        instance is the only scheduler of the database (``run()`` does, after taking the
        lease)."""
        if self._started:
            return
        self._started = True
        self._refresh()
        now = self.clock.now()
        for row in self.store.runs_in_flight():
            if row.id in self._running or row.id in self._dirty:
                continue
            job = self.store.get_job(row.job_id)
            if job is None:
                continue
            run = _Run.from_stored(row, job.definition)
            was = run.status
            run.status = "interrupted"
            run.finished_at = now
            run.stop_reason = "crash"
            run.error = (f"the scheduler `{row.owner}` stopped while the run was {was}"
                         " (crash or kill)")
            if run.started_at is not None:
                run.duration_ms = _ms(now - run.started_at)
            self._done.append(run)
            self._dirty[run.id] = run
            self._emit_run("run_finished", run)
        self._flush()
        self._approval_due = approvals.next_expiry(self.store)

    async def shutdown(self) -> None:
        """Graceful stop: claim nothing more, wait up to ``shutdown_timeout_seconds`` for
        running runs, cancel the rest (``interrupted``), flush, release the lease."""
        self._claiming = False
        now = self.clock.now()
        for _, _, _, run in self._waiting + self._ready:
            run.status = "interrupted"
            run.finished_at = now
            run.stop_reason = "shutdown"
            run.error = "the scheduler shut down before the run started"
            self._dec_inflight(run.job_id)
            self._done.append(run)
            self._dirty[run.id] = run
            self._emit_run("run_finished", run)
        self._waiting.clear()
        self._ready.clear()
        deadline = now + timedelta(seconds=float(self.config.shutdown_timeout_seconds))
        while self._running and self.clock.now() < deadline:
            self._safe_flush()
            self._wake.clear()
            if not self._running:
                break
            await self.clock.sleep_until(deadline, self._wake)
        tasks = [r.task for r in self._running.values() if r.task is not None]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._safe_flush()
        if self._holding_lease:
            try:
                self.store.release_lease(self.owner_id)
            except StoreError as e:
                log.warning("could not release the lease: %s", e)
            self._holding_lease = False

    def interrupt_running(self, reason: str = "stopped at once by the operator") -> int:
        """Cancel every running run now: each ends ``interrupted`` (and is retried per
        policy), so a :meth:`shutdown` waiting for them finishes at once — results flushed,
        lease released. For a second Ctrl-C (added for ``symbi up``). Returns how many."""
        tasks = [r.task for r in self._running.values()
                 if r.task is not None and not r.task.done()]
        self._cancel_reason = reason
        for t in tasks:
            t.cancel()
        return len(tasks)

    # ------------------------------------------------------------------ one iteration

    async def tick(self) -> datetime:
        """One loop iteration without sleeping; returns when the loop would wake next."""
        return self._tick()

    async def run_until_idle(self, *, max_iterations: int = 1_000_000) -> None:
        """Process everything due at the clock's current time and wait (really) for the runs
        it starts, until nothing is running or startable; then flush. For tests and tools."""
        for _ in range(max_iterations):
            self._tick()
            if not self._running and not self._ready and not self._claim_more:
                break
            if self._running:
                await self._wake.wait()
            else:
                await asyncio.sleep(0)
        self._flush()

    def _tick(self) -> datetime:
        self._wake.clear()
        now = self.clock.now()
        try:
            self._refresh()
            if self._should_flush():
                self._flush()
            if self._approval_due is not None and self._approval_due <= now:
                self._expire_approvals(now)
            nd = self.store.next_due_time()
            if self._claiming and nd is not None and nd <= now:
                self._claim(now)
                nd = self.store.next_due_time()
            else:
                # nothing left to claim: a burst whose last chunk was exactly full is over, so
                # results must flush normally again
                self._claim_more = False
        except LeaseLost:
            raise
        except (StoreError, sqlite3.Error) as e:
            # e.g. the database stayed locked past busy_timeout: keep running what we have,
            # try again on the next iteration
            log.error("scheduler iteration failed (will retry): %s", e)
            self._dispatch(now)
            return now + timedelta(seconds=float(self.config.tick_interval_seconds))
        self._dispatch(now)
        return self._next_deadline(now, nd)

    def _refresh(self) -> None:
        """Reload agents when the store changed (another process or a management call)."""
        tok = self.store.change_token()
        if tok != self._token:
            self._token = tok
            self._agents = self.store.load_agents()
            # an approval may have been decided (or requested) elsewhere
            self._approval_due = approvals.next_expiry(self.store)

    def _should_flush(self) -> bool:
        if self._buffered_since is None:
            return False
        if self._claim_more:  # mid-burst: starting the rest comes first, results can wait
            return len(self._done) >= 10 * FLUSH_MAX_BATCH  # (bounded: memory)
        if len(self._done) >= FLUSH_MAX_BATCH:
            return True
        idle = not self._running and not self._ready
        return idle or time.monotonic() - self._buffered_since >= FLUSH_MAX_DELAY_SECONDS

    def _buffered(self) -> None:
        if self._buffered_since is None:
            self._buffered_since = time.monotonic()

    def _next_deadline(self, now: datetime, nd: datetime | None) -> datetime:
        cands = [now + timedelta(seconds=float(self.config.tick_interval_seconds))]
        if self._buffered_since is not None:
            cands.append(now + timedelta(seconds=FLUSH_MAX_DELAY_SECONDS))
        if nd is not None and self._claiming:
            cands.append(nd)
        if self._waiting:
            cands.append(self._waiting[0][0])
        if self._approval_due is not None:
            cands.append(self._approval_due)
        return min(cands)

    def _expire_approvals(self, now: datetime) -> None:
        """Deny the runs whose approval timed out (SPEC §5.6 ``approval_timeout``)."""
        for run_id in approvals.expire_due(self.store, now):
            row = self.store.get_run(run_id) if self.on_event is not None else None
            if row is not None:  # reported like any run that ended (printer, metrics)
                payload = {name: getattr(row, name) for name in RUN_COLUMNS if name != "output"}
                payload.update(run_id=run_id, at=now)
                self._emit("run_finished", payload)
        self._approval_due = approvals.next_expiry(self.store)

    # ------------------------------------------------------------------ claiming

    def _claim(self, now: datetime) -> None:
        """Claim one chunk of due work (jobs and pickups, see :data:`CLAIM_CHUNK`) and queue
        it; ``_claim_more`` says whether the chunk was full (the loop comes back at once)."""
        planned: list[_Run] = []
        notes: list[tuple[str, _Run]] = []
        full = [False]

        def planner(jobs: list[DueJob], pickups: list[RunRow]) -> WriteBatch:
            planned.clear()
            notes.clear()
            full[0] = len(jobs) >= chunk or len(pickups) >= chunk
            self._next_memo = {}
            try:
                batch = self._plan(now, jobs, pickups, planned, notes)
            finally:
                self._next_memo = {}
            self._preload_summaries(jobs, pickups)
            return batch

        chunk = self._chunk
        self._claim_more = False
        batch, result = self.store.claim(now, planner, lease_owner=self._lease_owner,
                                         due_limit=chunk, pickup_limit=chunk)
        self._claim_more = full[0]
        self._chunk = min(chunk * 2, CLAIM_CHUNK_MAX) if full[0] else CLAIM_CHUNK
        rejected = result.rejected_inserts
        for run in planned:
            if run.id in rejected:
                continue
            self._inflight_by_job[run.job_id] = self._inflight_by_job.get(run.job_id, 0) + 1
            item = (run.due_at or now, run.scheduled_for, next(self._seq), run)
            heapq.heappush(self._ready if item[0] <= now else self._waiting, item)
        for kind, run in notes:
            if run.id in rejected:
                continue
            if kind == "run_skipped":
                self.stats.skipped += 1
            elif kind == "run_missed":
                self.stats.missed += 1
            self._emit_run(kind, run, reason=run.stop_reason)

    def _preload_summaries(self, jobs: list[DueJob], pickups: list[RunRow]) -> None:
        """Make the latest summary of every claimed ``ephemeral_with_summary`` job available
        in memory: one bulk read for jobs not seen yet, none for jobs that never ran."""
        sessions = self.sessions
        unseen = [j for j in jobs if j.definition.session_mode == EPHEMERAL_WITH_SUMMARY
                  and not sessions.knows(j.id)]
        unseen_ids = [p.job_id for p in pickups if not sessions.knows(p.job_id)]
        if unseen or unseen_ids:
            sessions.preload([j.id for j in unseen if j.has_run] + unseen_ids,
                             never_ran=[j.id for j in unseen if not j.has_run])

    def _plan(self, now: datetime, jobs: list[DueJob], pickups: list[RunRow],
              planned: list[_Run], notes: list[tuple[str, _Run]]) -> WriteBatch:
        """Decide what happens to each due occurrence and pickup (inside the claim
        transaction; pure except for the random jitter)."""
        batch = WriteBatch()
        grace_start = now - self._grace
        for row in jobs:
            self._plan_job(now, grace_start, row, batch, planned, notes)
        for p in pickups:
            jr = self.store.get_job(p.job_id)
            if jr is None:
                continue
            run = _Run.from_stored(p, jr.definition)
            if jr.status != "active" and p.trigger not in ("manual", "api"):
                run.status = "cancelled"
                run.finished_at = now
                run.stop_reason = f"job {jr.status}"
                run.error = f"not run: the job is {jr.status}"
                batch.run_updates.append(run)
                continue
            run.owner = self.owner_id
            run.wait_slot = p.trigger == "retry"
            batch.run_updates.append(run)
            batch.count_started(run.job_id, now)
            planned.append(run)
        return batch

    def _new_run(self, row: DueJob, t: datetime, trigger: str, status: str,
                 now: datetime) -> _Run:
        d = row.definition
        return _Run(id=new_run_id(), job_id=row.id, job_name=row.name, scheduled_for=t,
                    trigger=trigger, status=status, created_at=now, input=d.input, job=d)

    def _plan_job(self, now: datetime, grace_start: datetime, row: DueJob, batch: WriteBatch,
                  planned: list[_Run], notes: list[tuple[str, _Run]]) -> None:
        d = row.definition
        first = row.next_run
        window_start = now - timedelta(seconds=max(0.0, d.catchup_window_seconds))
        occs, summaries, nxt = self._enumerate(d, first, now, window_start, grace_start)
        once = bool(d.at) or d.one_shot or not d.cron
        if once:
            nxt = None
        status = "completed" if nxt is None else "active"

        ontime = [t for t in occs if t >= grace_start]
        late = [t for t in occs if t < grace_start]
        missed = [(t, "missed_outside_window") for t in late if t < window_start]
        late_in = [t for t in late if t >= window_start]
        run_late: list[datetime] = []
        if d.catchup == "skip":
            missed += [(t, "missed_skip") for t in late_in]
        elif d.catchup == "all":
            run_late = late_in
        elif ontime:  # latest: an on-time occurrence is the latest
            missed += [(t, "missed_superseded") for t in late_in]
        elif late_in:
            run_late = [late_in[-1]]
            missed += [(t, "missed_superseded") for t in late_in[:-1]]
        missed.sort()
        if len(missed) > MISSED_ROW_CAP:
            omitted = missed[:-MISSED_ROW_CAP]
            missed = missed[-MISSED_ROW_CAP:]
            summaries.append((omitted[0][0],
                              f"{len(omitted)} earlier missed occurrences from "
                              f"{omitted[0][0].isoformat()} to {omitted[-1][0].isoformat()} "
                              "are not listed individually"))
        for t, reason in missed:
            run = self._new_run(row, t, "schedule", "missed", now)
            run.finished_at = now
            run.stop_reason = reason
            batch.run_inserts.append(run)
            notes.append(("run_missed", run))
        for t, text in summaries:
            run = self._new_run(row, t, "schedule", "missed", now)
            run.finished_at = now
            run.stop_reason = "missed_summary"
            run.error = text
            batch.run_inserts.append(run)
            notes.append(("run_missed", run))

        wait_slot = bool(run_late)
        inflight = self._inflight_by_job.get(row.id, 0)
        started = 0
        last: datetime | None = None
        for t in run_late:
            run = self._new_run(row, t, "catchup", "pending", now)
            run.owner = self.owner_id
            run.due_at = t
            run.wait_slot = True
            batch.run_inserts.append(run)
            planned.append(run)
            inflight += 1
            started += 1
            last = t
        jitter_max = d.jitter_seconds
        if jitter_max is None:
            jitter_max = float(self.config.max_jitter_seconds)
        for t in ontime:
            if not wait_slot and inflight >= d.max_concurrent:
                run = self._new_run(row, t, "schedule", "skipped", now)
                run.finished_at = now
                run.stop_reason = "concurrency"
                run.error = (f"{inflight} run(s) of this job still in flight "
                             f"(max_concurrent = {d.max_concurrent})")
                batch.run_inserts.append(run)
                notes.append(("run_skipped", run))
                continue
            run = self._new_run(row, t, "schedule", "pending", now)
            run.owner = self.owner_id
            run.wait_slot = wait_slot
            if jitter_max and jitter_max > 0:
                j = self.rng.uniform(0.0, jitter_max)
                run.jitter_ms = int(round(j * 1000))
                run.due_at = t + timedelta(milliseconds=run.jitter_ms)
            else:
                run.jitter_ms = 0
                run.due_at = t
            batch.run_inserts.append(run)
            planned.append(run)
            inflight += 1
            started += 1
            last = t
        # run_count and last_run (the latest fired occurrence) change with the claim
        batch.job_advances.append((row.id, first, nxt, status, started, last))

    def _enumerate(self, d: JobDef, first: datetime, now: datetime, window_start: datetime,
                   grace_start: datetime
                   ) -> tuple[list[datetime], list[tuple[datetime, str]], datetime | None]:
        """Occurrences from ``first`` up to ``now`` (bounded), summaries for the parts that
        were cut, and the first occurrence after ``now``."""
        if d.at or d.one_shot or not d.cron:
            return ([first] if first <= now else []), [], None
        expr = _cron(d.cron)
        if expr is None:  # cannot happen for validated definitions; never loop on it
            return [first], [], None
        tz = d.timezone
        memo = self._next_memo
        cron_text = d.cron

        def next_after(after: datetime) -> datetime | None:
            # many jobs share an expression and an instant (a burst): compute once per pass
            key = (cron_text, tz, after)
            if key in memo:
                return memo[key]
            r: datetime | None = expr.next_after(after, tz)
            memo[key] = r
            return r
        occs: list[datetime] = []
        summaries: list[tuple[datetime, str]] = []
        t: datetime | None = first
        n = 0
        while t is not None and t <= now and t < window_start:
            if n >= MISSED_ROW_CAP:
                summaries.append((t, f"more occurrences from {t.isoformat()} to before "
                                     f"{window_start.isoformat()} (outside the catch-up window) "
                                     "were missed; not listed individually"))
                t = next_after(window_start - _ONE_US)
                break
            occs.append(t)
            n += 1
            t = next_after(t)
        m = 0
        while t is not None and t <= now:
            if m >= WINDOW_CAP and t < grace_start:
                summaries.append((t, f"more than {WINDOW_CAP} occurrences fell in the catch-up "
                                     f"window; those from {t.isoformat()} to before "
                                     f"{grace_start.isoformat()} were missed"))
                t = next_after(grace_start - _ONE_US)
                continue
            occs.append(t)
            m += 1
            t = next_after(t)
        return occs, summaries, t

    # ------------------------------------------------------------------ dispatching

    def _dispatch(self, now: datetime) -> None:
        waiting, ready = self._waiting, self._ready
        while waiting and waiting[0][0] <= now:
            heapq.heappush(ready, heapq.heappop(waiting))
        free = int(self.config.max_concurrent_jobs) - len(self._running)
        if free <= 0 or not ready:
            return
        blocked = []
        while ready and free > 0:
            item = heapq.heappop(ready)
            run = item[3]
            if run.wait_slot:
                assert run.job is not None
                if self._running_by_job.get(run.job_id, 0) >= run.job.max_concurrent:
                    blocked.append(item)
                    continue
            self._start(run, now)
            free -= 1
        for item in blocked:
            heapq.heappush(ready, item)

    def _start(self, run: _Run, now: datetime) -> None:
        run.status = "running"
        self._mark_started(run, now)  # provisional; the task stamps its real start
        self._dirty[run.id] = run
        self._buffered()
        self._running[run.id] = run
        self._running_by_job[run.job_id] = self._running_by_job.get(run.job_id, 0) + 1
        run.task = asyncio.get_running_loop().create_task(self._execute(run))
        self._emit_run("run_started", run)

    async def _gate(self, job: JobDef, run: _Run) -> Decision:
        """The policy gate (SPEC §5.6) for one run: :data:`ALLOW` at once for a job without a
        policy (unless AgentPin is required globally); a bug in it denies the run (fails
        closed)."""
        gate = self.gate
        if not gate.applies(job):
            return ALLOW
        try:
            approved = False
            if job.policy is not None and job.policy.require_approval:
                approved = approvals.is_approved(self.store, run.id)
            return await gate.evaluate(job, self._agent(job.agent), now=self.clock.now(),
                                       approved=approved)
        except Exception as exc:
            log.exception("policy gate failed for run %s", run.id)
            return Deny(f"internal error in the policy gate: {describe_exception(exc)}",
                        "internal")

    @staticmethod
    def _mark_started(run: _Run, now: datetime) -> None:
        # lateness: start - scheduled (everything: jitter, a late wake-up, waiting);
        # start delay: how long the run waited for capacity once it could have started
        run.started_at = now
        run.lateness_ms = _ms(now - run.scheduled_for)
        startable = max(run.due_at or now, run.created_at or now)
        run.start_delay_ms = _ms(now - startable)

    async def _execute(self, run: _Run) -> None:
        # the honest start: when this task gets the loop, not when it was created
        self._mark_started(run, self.clock.now())
        try:
            assert run.job is not None
            decision = await self._gate(run.job, run)
            if isinstance(decision, Allow):
                run.stop_reason = None
                res = await self._perform(run, run.job)
                run.status = res.status
                run.output = res.output
                run.error = res.error
                run.exit_code = res.exit_code
                run.usage = res.usage  # token usage of an `llm` run, stored with the run
                if res.output or res.summary:
                    run.summary = derive_summary(res.output, res.summary)
                if res.status == "timed_out" and run.stop_reason is None:
                    run.stop_reason = "timeout"
                self._after_run(run, run.job)
            elif isinstance(decision, RequireApproval):
                self._await_approval(run, decision)
            else:
                assert isinstance(decision, Deny)
                run.status = "denied"
                run.error = decision.reason
                run.stop_reason = decision.stop_reason
                run.decision = decision
        except asyncio.CancelledError:
            run.status = "interrupted"
            run.stop_reason = "shutdown"
            run.error = f"cancelled: {self._cancel_reason}"
        except Exception as exc:  # a bug in our code must not kill the loop
            log.exception("run %s failed internally", run.id)
            run.status = "failed"
            run.error = f"internal error: {describe_exception(exc)}"
        if run.status != "awaiting_approval":
            run.finished_at = self.clock.now()
            if run.started_at is not None:
                run.duration_ms = _ms(run.finished_at - run.started_at)
        self._finished(run)

    def _await_approval(self, run: _Run, decision: RequireApproval) -> None:
        """The run waits for a decision (``runtime.approvals``): it leaves this scheduler
        (no owner, not started) and is recorded with its approval request at the flush."""
        run.status = "awaiting_approval"
        run.owner = None
        run.started_at = None
        run.lateness_ms = None
        run.start_delay_ms = None
        run.decision = decision
        run.decided_at = self.clock.now()
        run.stop_reason = "policy:require_approval"
        who = f" by {', '.join(decision.approvers)}" if decision.approvers else ""
        run.error = (f"awaiting approval{who} within {decision.timeout_seconds:g}s: "
                     f"`symbi cron approve {run.id[:8]}` or `symbi cron reject {run.id[:8]}`")

    def _agent(self, name: str) -> AgentDef | None:
        agent = self._agents.get(name)
        if agent is None:
            self._refresh()
            agent = self._agents.get(name)
        return agent

    def _after_run(self, run: _Run, job: JobDef) -> None:
        """The next run of an ``ephemeral_with_summary`` job starts with this run's summary
        (kept in memory; a shared session is saved with the run, see ``_perform``)."""
        if run.summary is not None and job.session_mode == EPHEMERAL_WITH_SUMMARY:
            self.sessions.note_summary(run.job_id, run.summary)

    async def _perform(self, run: _Run, job: JobDef) -> ExecResult:
        agent = self._agent(job.agent)
        if agent is None:
            return ExecResult(status="failed", error=f"agent `{job.agent}` is not defined")
        ctx = self.sessions.context_for(run.job_id, job)
        max_runtime = job.policy.max_runtime_seconds if job.policy is not None else None
        hb = job.heartbeat
        if hb is not None and hb.enabled:
            return await self._perform_heartbeat(run, job, agent, ctx, max_runtime)
        res = await self._call_agent(run, job, agent, run.input or "", ctx, max_runtime)
        if job.session_mode != EPHEMERAL_WITH_SUMMARY:
            summary = derive_summary(res.output, res.summary) if (
                res.output or res.summary) else None
            run.session_write = self.sessions.writer_after(
                run.job_id, job, ctx, run.input or "", res.output, summary, self.clock.now())
        return res

    async def _call_agent(self, run: _Run, job: JobDef, agent: AgentDef, input: str,
                          ctx: AgentContext | None, timeout: float | None) -> ExecResult:
        """One execution of the agent, its time limit the smaller of ``timeout`` and the
        agent's own."""
        req = ExecRequest(agent=agent, input=input, job_name=job.name, run_id=run.id,
                          timeout_seconds=timeout, context=ctx, env=self.env)
        executor = executor_for(agent, self.app_config)
        limits = [t for t in (timeout, agent.timeout_seconds) if t is not None]
        if not limits:
            return await executor.execute(req)
        limit = min(limits)
        try:
            # the executor enforces the timeout itself; this only guards against one that
            # does not stop (e.g. a blocking handler on the loop)
            return await asyncio.wait_for(executor.execute(req), limit + TIMEOUT_GRACE_SECONDS)
        except TimeoutError:
            return ExecResult(status="timed_out",
                              error=f"timed out after {limit:g}s (the executor did not stop)")

    async def _perform_heartbeat(self, run: _Run, job: JobDef, agent: AgentDef,
                                 ctx: AgentContext, max_runtime: float | None) -> ExecResult:
        """A heartbeat run (``runtime.heartbeat``): iterations until the agent answers sleep;
        ``max_runtime`` bounds the whole run, ``iteration_timeout`` each iteration."""
        hb = job.heartbeat
        assert hb is not None

        async def call(input: str, c: AgentContext, timeout: float | None) -> ExecResult:
            return await self._call_agent(run, job, agent, input, c, timeout)

        def on_iteration(rec: Any) -> None:
            try:
                record_iteration(self.store, rec)
            except StoreError as e:  # the run goes on; its result is recorded anyway
                log.warning("could not record heartbeat iteration %s of run %s: %s",
                            rec.iteration, run.id, e)
            self._emit("heartbeat_iteration", {**rec.to_dict(), "job_id": run.job_id,
                                               "job_name": run.job_name,
                                               "at": rec.finished_at})

        coro = run_heartbeat(call, hb, run_id=run.id, input=run.input or "", context=ctx,
                             clock=self.clock, on_iteration=on_iteration)
        if max_runtime is None:
            outcome = await coro
        else:
            try:
                outcome = await asyncio.wait_for(coro, max_runtime)
            except TimeoutError:
                run.stop_reason = "timeout"
                return ExecResult(status="timed_out",
                                  error=f"timed out after {max_runtime:g}s (max_runtime)")
        run.stop_reason = outcome.stop_reason
        res = outcome.result
        if job.session_mode != EPHEMERAL_WITH_SUMMARY:
            summary = derive_summary(res.output, res.summary) if (
                res.output or res.summary) else None
            run.session_write = self.sessions.writer_after(
                run.job_id, job, outcome.context or ctx, run.input or "", res.output, summary,
                self.clock.now(), recorded=outcome.messages_recorded)
        return res

    def _dec_inflight(self, job_id: str) -> None:
        n = self._inflight_by_job.get(job_id, 0) - 1
        if n > 0:
            self._inflight_by_job[job_id] = n
        else:
            self._inflight_by_job.pop(job_id, None)

    def _finished(self, run: _Run) -> None:
        if self._running.pop(run.id, None) is not None:
            n = self._running_by_job.get(run.job_id, 0) - 1
            if n > 0:
                self._running_by_job[run.job_id] = n
            else:
                self._running_by_job.pop(run.job_id, None)
            self._dec_inflight(run.job_id)
        self._done.append(run)
        self._dirty[run.id] = run
        self._buffered()
        self._wake.set()
        if run.status != "awaiting_approval":  # not a result yet
            self.stats.count(run)
        self._emit_run("run_finished", run)

    # ------------------------------------------------------------------ flushing

    def _safe_flush(self) -> None:
        try:
            self._flush()
        except LeaseLost as e:
            log.warning("%s; results of this instance are dropped", e)
            self._done.clear()
            self._dirty.clear()
            self._buffered_since = None

    def _flush(self) -> None:
        """Write finished runs and what follows from them (retries, dead letter, counters,
        audit) in one transaction. On a store error everything stays buffered for the next
        iteration; :class:`LeaseLost` propagates."""
        if not self._done and not self._dirty:
            return
        batch = WriteBatch()
        notes: list[tuple[str, dict[str, Any]]] = []
        max_retries_default = int(self.config.default_max_retries)
        approval_due: datetime | None = None
        for run in self._done:
            d = run.job
            assert d is not None
            status = run.status
            if run.session_write is not None:
                batch.extra_writes.append(run.session_write)
            if status == "awaiting_approval":
                approval_due = self._request_approval(run, batch, approval_due)
                continue
            failed = status in FAILURE_STATUSES
            if status not in ("denied", "cancelled"):
                batch.count_result(run.job_id, failed)
            if status == "denied":  # security events: logged whatever the audit level
                self._record_denial(run, batch)
            level = d.audit
            if (failed and level != "none") or (status == "succeeded"
                                                and level == "all_operations"):
                batch.audit_events.append(NewAuditEvent(
                    audit.CRON_JOB_FAILED if failed else audit.CRON_JOB_EXECUTED,
                    run.finished_at or self.clock.now(), "scheduler", run.job_id, run.job_name,
                    run.id,
                    details={"status": status, "trigger": run.trigger, "attempt": run.attempt,
                             "scheduled_for": run.scheduled_for.isoformat(),
                             "duration_ms": run.duration_ms, "error": run.error,
                             "exit_code": run.exit_code}))
            if not failed:
                continue
            max_retries = d.max_retries if d.max_retries is not None else max_retries_default
            if run.attempt <= max_retries:
                delay = min(d.retry_backoff_seconds * (2 ** (run.attempt - 1)),
                            MAX_BACKOFF_SECONDS)
                base = run.finished_at or self.clock.now()
                retry = _Run(id=new_run_id(), job_id=run.job_id, job_name=run.job_name,
                             scheduled_for=run.scheduled_for, trigger="retry", status="pending",
                             attempt=run.attempt + 1, retry_of=run.id,
                             due_at=base + timedelta(seconds=delay), created_at=base,
                             input=run.input, job=d)
                batch.guarded_inserts.append(retry)
                notes.append(("retry_scheduled", {
                    "job_id": run.job_id, "job_name": run.job_name, "run_id": retry.id,
                    "retry_of": run.id, "attempt": retry.attempt, "due_at": retry.due_at,
                    "at": base}))
            else:
                batch.dead_letters.append((run.job_id, run.job_name, {
                    "run_id": run.id, "attempts": run.attempt, "status": status,
                    "error": run.error}))
                notes.append(("dead_letter", {
                    "job_id": run.job_id, "job_name": run.job_name, "run_id": run.id,
                    "failures": run.attempt, "error": run.error, "at": run.finished_at}))
        batch.run_updates = list(self._dirty.values())
        try:
            result = self.store.write_batch(batch, lease_owner=self._lease_owner)
        except LeaseLost:
            raise
        except StoreError as e:
            log.error("could not record run results (will retry): %s", e)
            return
        self._done = []
        self._dirty = {}
        self._buffered_since = None
        if approval_due is not None and (self._approval_due is None
                                         or approval_due < self._approval_due):
            self._approval_due = approval_due
        dead = set(result.dead_lettered)
        for kind, payload in notes:
            if kind == "dead_letter" and payload["job_id"] not in dead:
                continue
            self._emit(kind, payload)

    def _request_approval(self, run: _Run, batch: WriteBatch,
                          due: datetime | None) -> datetime | None:
        """Record an approval request with the ``awaiting_approval`` run; returns the
        earliest expiry seen in this flush."""
        decision = run.decision
        assert isinstance(decision, RequireApproval)
        at = run.decided_at or self.clock.now()
        batch.extra_writes.append(approvals.request_writer(
            run.id, run.job_id, decision.approvers, at, decision.timeout_seconds))
        # the claim counted the run as started; it did not start (it will when approved)
        job_id = run.job_id

        def uncount(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE jobs SET run_count = max(0, run_count - 1) WHERE id = ?",
                         (job_id,))
        batch.extra_writes.append(uncount)
        batch.audit_events.append(NewAuditEvent(
            audit.APPROVAL_REQUESTED, at, "scheduler", run.job_id, run.job_name, run.id,
            details={"approvers": list(decision.approvers), "trigger": run.trigger,
                     "timeout_seconds": decision.timeout_seconds,
                     "scheduled_for": run.scheduled_for.isoformat()}))
        expires = at + timedelta(seconds=max(0.0, decision.timeout_seconds))
        return expires if due is None or expires < due else due

    def _record_denial(self, run: _Run, batch: WriteBatch) -> None:
        """``PolicyDenied`` (and the rule's own event, e.g. ``AgentPinVerificationFailed``)."""
        at = run.finished_at or self.clock.now()
        decision = run.decision
        details: dict[str, Any] = {"reason": run.error, "trigger": run.trigger}
        if isinstance(decision, Deny):
            details["rule"] = decision.rule
            if decision.audit_type is not None:
                batch.audit_events.append(NewAuditEvent(
                    decision.audit_type, at, "scheduler", run.job_id, run.job_name, run.id,
                    details=dict(decision.details)))
            else:
                details.update(decision.details)
        batch.audit_events.append(NewAuditEvent(
            audit.POLICY_DENIED, at, "scheduler", run.job_id, run.job_name, run.id,
            details=details))

    # ------------------------------------------------------------------ single runs

    async def execute_claimed(self, row: RunRow) -> RunRow | None:
        """Run one pending run this instance owns (``store.claim_run``) to completion and
        record it, outside the loop (``symbi cron run`` without a running scheduler)."""
        job = self.store.get_job(row.job_id)
        if job is None:
            return None
        self._refresh()
        run = _Run.from_stored(row, job.definition)
        self._inflight_by_job[run.job_id] = self._inflight_by_job.get(run.job_id, 0) + 1
        self._start(run, self.clock.now())
        assert run.task is not None
        try:
            await asyncio.shield(run.task)
        except asyncio.CancelledError:
            run.task.cancel()
            await asyncio.gather(run.task, return_exceptions=True)
            self._flush()
            raise
        self._flush()
        return self.store.get_run(row.id)


async def run_manual_now(store: SqliteStore, config: SchedulerConfig, run_id: str, *,
                         timeout: float | None = None, clock: Clock | None = None,
                         owner_id: str | None = None,
                         poll_seconds: float = 0.1, app_config: Config | None = None,
                         env: Mapping[str, str] | None = None) -> RunRow | None:
    """Make sure a requested manual run (or an approved one) happens and return it when final
    — or when it waits for an approval (status ``awaiting_approval``).

    If a scheduler holds a valid lease on the database, it picks the run up within a tick and
    this waits (polling the store) for the result. Otherwise the run is executed here, through
    the scheduler's own run path — policy gate included (``app_config`` gives it the
    environment name and ``[agentpin]`` settings, as for :class:`Scheduler`); retries it
    schedules stay in the store for the next scheduler. Returns None if the run is not final
    within ``timeout`` seconds.
    """
    clock = clock or SystemClock()
    loop = asyncio.get_running_loop()
    give_up = None if timeout is None else loop.time() + timeout
    while True:
        row = store.get_run(run_id)
        if row is None:
            return None
        if row.status in FINAL_RUN_STATUSES or row.status == "awaiting_approval":
            return row
        lease = store.lease_info()
        if row.status == "pending" and row.owner is None and (
                lease is None or lease.expires_at <= clock.now()):
            owner = owner_id or f"cli:{os.getpid()}"
            claimed = store.claim_run(run_id, owner)
            if claimed is not None:
                sched = Scheduler(store, config, clock, owner_id=owner, app_config=app_config,
                                  env=env)
                remaining = None if give_up is None else max(0.0, give_up - loop.time())
                try:
                    return await asyncio.wait_for(sched.execute_claimed(claimed), remaining)
                except TimeoutError:
                    return None
        if give_up is not None and loop.time() >= give_up:
            return None
        await asyncio.sleep(poll_seconds)
