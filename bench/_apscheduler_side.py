"""APScheduler 3.11 side of the scheduler benchmark; one variant per process.

    python -m bench._apscheduler_side burst --store memory|sqlite --n 10000 [--mode asyncio]
    python -m bench._apscheduler_side load  --store memory|sqlite --n 100000 [--db PATH] [--idle-seconds 20]
    python -m bench._apscheduler_side idle  --store sqlite --db PATH --idle-seconds 20

Jobs use ``CronTrigger`` (UTC). ``misfire_grace_time=None`` so late jobs still run (the
default of 1 s would silently drop most of a burst and hide the lateness); ``coalesce=True``.
The process prints one ``BENCH-RESULT {json}`` line (see ``_sched_common``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import BaseJobStore
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.cron import CronTrigger

from bench import _noop
from bench._sched_common import (
    ProcessMeter,
    calibrate_per_item,
    emit_result,
    fire_instant,
    idle_crons,
    lateness_stats,
)

JOB_DEFAULTS = {"misfire_grace_time": None, "coalesce": True, "max_instances": 1}


def make_store(kind: str, db: str | None) -> BaseJobStore:
    """A fresh job store: in-memory, or SQLAlchemy on a SQLite file."""
    if kind == "memory":
        return MemoryJobStore()
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    assert db is not None
    return SQLAlchemyJobStore(url=f"sqlite:///{db}")


def make_scheduler(kind: str, db: str | None, mode: str, workers: int) -> BaseScheduler:
    """An APScheduler with one job store, UTC, and the benchmark's job defaults."""
    stores = {"default": make_store(kind, db)}
    if mode == "asyncio":
        return AsyncIOScheduler(jobstores=stores, job_defaults=JOB_DEFAULTS, timezone=UTC)
    return BackgroundScheduler(
        jobstores=stores,
        executors={"default": ThreadPoolExecutor(workers)},
        job_defaults=JOB_DEFAULTS,
        timezone=UTC,
    )


def job_func(mode: str) -> Any:
    """The no-op job: a coroutine on the loop (asyncio) or a plain function in a thread."""
    return _noop.aps_async_job if mode == "asyncio" else _noop.aps_sync_job


def add_cron_jobs(sched: BaseScheduler, mode: str, crons: list[tuple[str, ...]], prefix: str) -> None:
    """Add one job per cron field tuple (second, minute, hour, day, month)."""
    func = job_func(mode)
    for i, (second, minute, hour, day, month) in enumerate(crons):
        trig = CronTrigger(
            second=second, minute=minute, hour=hour, day=day, month=month, timezone=UTC
        )
        sched.add_job(func, trig, id=f"{prefix}{i}", name=f"{prefix}{i}")


class BurstRecorder:
    """Collects (scheduled, started, finished) per executed job; sets ``done`` at ``expected``."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.scheduled: list[float] = []
        self.started: list[float] = []
        self.finished: list[float] = []
        self.errors = 0
        self.missed = 0
        self.done = threading.Event()
        self.lock = threading.Lock()

    def on_event(self, ev: JobEvent) -> None:
        """APScheduler listener (may run in a worker thread in background mode)."""
        now = time.time()
        with self.lock:
            if ev.code == EVENT_JOB_EXECUTED:
                self.scheduled.append(ev.scheduled_run_time.timestamp())
                self.started.append(float(ev.retval))
                self.finished.append(now)
            elif ev.code == EVENT_JOB_MISSED:
                self.missed += 1
            else:
                self.errors += 1
            if len(self.finished) + self.missed + self.errors >= self.expected:
                self.done.set()


def burst(args: argparse.Namespace) -> dict[str, Any]:
    """N jobs due at one instant; time to start/finish all of them and their lateness."""
    with tempfile.TemporaryDirectory(prefix="bench-aps-", dir=args.tmp_dir) as tmp:
        return _burst(args, tmp)


def _burst(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    meter = ProcessMeter.current()
    # Pick the fire instant after the load: time adding a sample of jobs to a scratch scheduler
    # of the same kind (SQLite adds are ~2 ms each, so 10k take ~20 s).
    sample = max(20, min(300, args.n // 5)) if args.store == "sqlite" else min(args.n, 1000)

    def scratch(k: int) -> None:
        db = os.path.join(tmp, f"scratch-{time.monotonic_ns()}.db")
        s = make_scheduler(args.store, db, "background", 1)
        s.start(paused=True)
        add_cron_jobs(s, "background", [("0", "0", "0", "1", "1")] * k, "c")
        s.shutdown(wait=False)

    # the better of two samples: one slow fsync spike would otherwise add minutes of waiting
    per_job = min(calibrate_per_item(scratch, sample) for _ in range(2))
    lead = max(args.lead, per_job * args.n * 1.2 + 2.0)
    instant = fire_instant(lead)
    fields = (str(instant.second), str(instant.minute), str(instant.hour), "*", "*")
    rec = BurstRecorder(args.n)
    db = os.path.join(tmp, "jobs.db")

    if args.mode == "asyncio":
        return asyncio.run(_burst_asyncio(args, db, fields, instant, rec, meter, per_job))
    return _burst_background(args, db, fields, instant, rec, meter, per_job)


def _finish_burst(
    args: argparse.Namespace,
    instant: datetime,
    rec: BurstRecorder,
    load_s: float,
    per_job: float,
    cpu0: float,
    meter: ProcessMeter,
    resumed_at: float,
) -> dict[str, Any]:
    t0 = instant.timestamp()
    late = [s - sch for s, sch in zip(rec.started, rec.scheduled, strict=True)]
    completed = len(rec.finished)
    all_started = (max(rec.started) - t0) if rec.started else None
    all_finished = (max(rec.finished) - t0) if rec.finished else None
    return {
        "side": "apscheduler",
        "variant": f"APScheduler 3.11 {args.store} store ({args.mode})",
        "workload": "burst",
        "n": args.n,
        "timeout_s": args.timeout,
        "completed": completed,
        "missed": rec.missed,
        "errors": rec.errors,
        "timed_out": not rec.done.is_set(),
        "load_s": load_s,
        "calibrated_add_ms": per_job * 1000,
        "slack_before_fire_s": t0 - resumed_at,
        "first_started_s": (min(rec.started) - t0) if rec.started else None,
        "all_started_s": all_started,
        "all_finished_s": all_finished,
        "runs_per_s": (completed / all_finished) if all_finished and all_finished > 0 else None,
        "drain_runs_per_s": (
            completed / (max(rec.finished) - min(rec.started))
            if completed > 1 and max(rec.finished) > min(rec.started)
            else None
        ),
        "lateness": lateness_stats(late, rec.started),
        "cpu_s": meter.cpu_s() - cpu0,
        "rss_mb": meter.rss_mb(),
        "peak_rss_mb": meter.peak_rss_mb(),
        "persisted": (
            "job state (next_run_time) in SQLite; no run history"
            if args.store == "sqlite"
            else "nothing (memory)"
        ),
    }


async def _burst_asyncio(
    args: argparse.Namespace,
    db: str,
    fields: tuple[str, ...],
    instant: datetime,
    rec: BurstRecorder,
    meter: ProcessMeter,
    per_job: float,
) -> dict[str, Any]:
    sched = make_scheduler(args.store, db, "asyncio", args.workers)
    sched.add_listener(rec.on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    sched.start(paused=True)
    t_load = time.perf_counter()
    add_cron_jobs(sched, "asyncio", [fields] * args.n, "b")
    load_s = time.perf_counter() - t_load
    resumed_at = time.time()
    cpu0 = meter.cpu_s()
    sched.resume()
    deadline = instant.timestamp() + args.timeout
    while not rec.done.is_set() and time.time() < deadline:
        await asyncio.sleep(0.02)
    out = _finish_burst(args, instant, rec, load_s, per_job, cpu0, meter, resumed_at)
    sched.shutdown(wait=False)
    return out


def _burst_background(
    args: argparse.Namespace,
    db: str,
    fields: tuple[str, ...],
    instant: datetime,
    rec: BurstRecorder,
    meter: ProcessMeter,
    per_job: float,
) -> dict[str, Any]:
    sched = make_scheduler(args.store, db, "background", args.workers)
    sched.add_listener(rec.on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    sched.start(paused=True)
    t_load = time.perf_counter()
    add_cron_jobs(sched, "background", [fields] * args.n, "b")
    load_s = time.perf_counter() - t_load
    resumed_at = time.time()
    cpu0 = meter.cpu_s()
    sched.resume()
    rec.done.wait(timeout=max(0.0, instant.timestamp() + args.timeout - time.time()))
    out = _finish_burst(args, instant, rec, load_s, per_job, cpu0, meter, resumed_at)
    out["workers"] = args.workers
    sched.shutdown(wait=False)
    return out


def _idle_fields(n: int) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for c in idle_crons(n):
        minute, hour, dom, month, _dow = c.split()
        out.append(("0", minute, hour, dom, month))
    return out


def load(args: argparse.Namespace) -> dict[str, Any]:
    """Add N idle cron jobs (timed); for the memory store also measure the idle window here."""
    if args.store == "sqlite" and args.db is None:
        raise SystemExit("load --store sqlite needs --db (the idle step reopens it)")
    meter = ProcessMeter.current()
    db = args.db
    fields = _idle_fields(args.n)
    result: dict[str, Any] = {
        "side": "apscheduler",
        "variant": f"APScheduler 3.11 {args.store} store",
        "workload": "load",
        "n": args.n,
    }

    async def main() -> None:
        sched = make_scheduler(args.store, db, "asyncio", args.workers)
        t0, cpu0 = time.perf_counter(), meter.cpu_s()
        # Added before start(): APScheduler keeps them pending and computes the first fire
        # times and stores them in start(); both parts count as the load.
        add_cron_jobs(sched, "asyncio", fields, "i")
        sched.start()
        result["load_s"] = time.perf_counter() - t0
        result["load_cpu_s"] = meter.cpu_s() - cpu0
        result["rss_after_load_mb"] = meter.rss_mb()
        if args.idle_seconds > 0:
            await asyncio.sleep(args.settle_seconds)
            c0, w0 = meter.cpu_s(), meter.wakeups()
            await asyncio.sleep(args.idle_seconds)
            result["idle_cpu_s"] = meter.cpu_s() - c0
            result["wakeups"] = meter.wakeups() - w0
            result["idle_seconds"] = args.idle_seconds
            result["rss_mb"] = meter.rss_mb()
            result["jobs_in_store"] = len(sched.get_jobs())
        sched.shutdown(wait=False)

    asyncio.run(main())
    result["peak_rss_mb"] = meter.peak_rss_mb()
    return result


def idle(args: argparse.Namespace) -> dict[str, Any]:
    """Start a scheduler on an already loaded SQLite job store and measure an idle window."""
    meter = ProcessMeter.current()
    result: dict[str, Any] = {
        "side": "apscheduler",
        "variant": f"APScheduler 3.11 {args.store} store",
        "workload": "idle",
        "idle_seconds": args.idle_seconds,
    }

    async def main() -> None:
        sched = make_scheduler(args.store, args.db, "asyncio", args.workers)
        t0 = time.perf_counter()
        sched.start()
        result["start_s"] = time.perf_counter() - t0
        await asyncio.sleep(args.settle_seconds)
        c0, w0 = meter.cpu_s(), meter.wakeups()
        await asyncio.sleep(args.idle_seconds)
        result["idle_cpu_s"] = meter.cpu_s() - c0
        result["wakeups"] = meter.wakeups() - w0
        result["rss_mb"] = meter.rss_mb()
        result["peak_rss_mb"] = meter.peak_rss_mb()
        result["n"] = len(sched.get_jobs())  # after the figures: this loads every job
        sched.shutdown(wait=False)

    asyncio.run(main())
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse the sub-command, run it, print the result line."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("workload", choices=("burst", "load", "idle"))
    p.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    p.add_argument("--mode", choices=("asyncio", "background"), default="asyncio")
    p.add_argument("--workers", type=int, default=10, help="thread pool size (background mode)")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--db", default=None, help="SQLite job store file (load, idle)")
    p.add_argument("--tmp-dir", default=None, help="where the burst's temporary files go")
    p.add_argument("--lead", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--idle-seconds", type=float, default=0.0)
    p.add_argument("--settle-seconds", type=float, default=1.0)
    args = p.parse_args(argv)
    fn = {"burst": burst, "load": load, "idle": idle}[args.workload]
    emit_result(fn(args))


if __name__ == "__main__":
    main()
