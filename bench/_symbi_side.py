"""symbi side of the scheduler benchmark; one variant per process.

    python -m bench._symbi_side burst  --n 10000 --handler bench._noop:run_inline --db PATH
    python -m bench._symbi_side deploy --n 100000 --db PATH
    python -m bench._symbi_side idle   --db PATH --idle-seconds 20

The store is the real one (``runtime.store.SqliteStore``, WAL) and the scheduler the real one
(``runtime.scheduler.Scheduler.run``) on the system clock, with the default configuration
except ``max_concurrent_jobs`` (raised for the burst so the global cap does not throttle).
Burst figures come from the ``runs`` table after the drain (``started_at − scheduled_for``);
"all finished" is when a separate read connection first sees every run in a final state, i.e.
when the history is committed. Prints one ``BENCH-RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._sched_common import (
    ProcessMeter,
    burst_cron,
    calibrate_per_item,
    emit_result,
    fire_instant,
    idle_crons,
    lateness_stats,
)
from compiler.ir import AgentDef, JobDef
from runtime.clock import SystemClock
from runtime.config import SchedulerConfig
from runtime.scheduler import Scheduler
from runtime.store import SqliteStore

AGENT = "bench-noop"


def _agent(handler: str) -> AgentDef:
    return AgentDef(name=AGENT, executor="python", handler=handler)


def _burst_jobs(n: int, cron: str) -> list[JobDef]:
    return [JobDef(name=f"burst-{i:06d}", agent=AGENT, cron=cron) for i in range(n)]


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class DrainWatcher(threading.Thread):
    """Polls the runs table from its own connection until ``expected`` runs are final.

    A thread rather than a task: the queries then cost the scheduler's event loop nothing
    (sqlite3 releases the GIL while it works)."""

    def __init__(self, db: str, expected: int, interval: float, on_done: Callable[[], None]):
        super().__init__(daemon=True)
        self.db = db
        self.expected = expected
        self.interval = interval
        self.on_done = on_done
        self.done_at: float | None = None
        self.final_seen = 0
        self.cpu_s = 0.0
        self.halt = threading.Event()

    def run(self) -> None:
        """Poll until done or halted; keeps the CPU it used in ``cpu_s`` (not the scheduler's)."""
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            while not self.halt.is_set():
                # both counts are index-only (the in-flight one via the partial index on
                # pending/running runs): a full scan every poll would steal CPU from the loop
                # fetchall(): a statement left un-stepped would pin an old WAL snapshot
                ((total, inflight),) = conn.execute(
                    "SELECT (SELECT count(*) FROM runs),"
                    " (SELECT count(*) FROM runs WHERE status IN ('pending', 'running'))"
                ).fetchall()
                self.final_seen = total - inflight
                if self.final_seen >= self.expected:
                    self.done_at = time.time()
                    self.on_done()
                    return
                self.halt.wait(self.interval)
        finally:
            conn.close()
            self.cpu_s = time.thread_time()


def burst(args: argparse.Namespace) -> dict[str, Any]:
    """N jobs due at one instant on a fresh store (in a temporary directory)."""
    with tempfile.TemporaryDirectory(prefix="bench-symbi-", dir=args.tmp_dir) as tmp:
        return _burst(args, tmp)


def _burst(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """Deploy, start the scheduler, drain, read the history."""
    meter = ProcessMeter.current()
    db = os.path.join(tmp, "state.db")
    agent = _agent(args.handler)

    # The instant must fall after the deploy and the scheduler start: time a sample deploy.
    def scratch(k: int) -> None:
        st = SqliteStore.open(os.path.join(tmp, "scratch.db"))
        st.deploy(_burst_jobs(k, "0 0 0 1 1 *"), [agent])
        st.close()

    sample = min(args.n, 1000)
    per_job = calibrate_per_item(scratch, sample)
    instant = fire_instant(max(args.lead, per_job * args.n * 1.5 + 2.0))
    cron = burst_cron(instant)
    store = SqliteStore.open(db, clock=SystemClock())
    t0 = time.perf_counter()
    report = store.deploy(_burst_jobs(args.n, cron), [agent])
    load_s = time.perf_counter() - t0
    assert len(report.created) == args.n, report

    config = SchedulerConfig(max_concurrent_jobs=args.max_concurrent)
    result: dict[str, Any] = {
        "side": "symbi",
        "variant": f"symbi {args.handler}",
        "workload": "burst",
        "n": args.n,
        "timeout_s": args.timeout,
        "handler": args.handler,
        "cron": cron,
        "load_s": load_s,
        "calibrated_deploy_ms": per_job * 1000,
        "max_concurrent_jobs": args.max_concurrent,
        "persisted": "every run row (SQLite WAL) + job state + audit",
    }

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        sched = Scheduler(store, config, SystemClock(), owner_id="bench", standby=False)
        def done() -> None:
            loop.call_soon_threadsafe(stop.set)

        watcher = DrainWatcher(db, args.n, args.poll, done)
        task = asyncio.create_task(sched.run(stop))
        result["slack_before_fire_s"] = instant.timestamp() - time.time()
        await asyncio.sleep(max(0.0, instant.timestamp() - time.time() - 0.5))
        cpu0 = meter.cpu_s()
        watcher.start()
        try:
            await asyncio.wait_for(stop.wait(), timeout=instant.timestamp() + args.timeout - time.time())
        except TimeoutError:
            result["timed_out"] = True
            stop.set()
        watcher.halt.set()
        watcher.join()
        result["cpu_s"] = meter.cpu_s() - cpu0 - watcher.cpu_s
        result["watcher_cpu_s"] = watcher.cpu_s
        result["rss_mb"] = meter.rss_mb()
        rc = await task
        result["scheduler_exit"] = rc
        result["drain_seen_at"] = watcher.done_at
        result["drain_final_seen"] = watcher.final_seen

    asyncio.run(main())
    store.close()
    result["peak_rss_mb"] = meter.peak_rss_mb()
    result.setdefault("timed_out", False)
    _burst_figures(db, instant, result)
    return result


def _burst_figures(db: str, instant: datetime, result: dict[str, Any]) -> None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute(
        "SELECT scheduled_for, started_at, finished_at, status, created_at FROM runs WHERE trigger IN"
        " ('schedule', 'catchup')"
    ).fetchall()
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r[3]] = statuses.get(r[3], 0) + 1
    conn.close()
    t0 = instant.timestamp()
    ok = [r for r in rows if r[1] is not None]
    sched = [_ts(r[0]) for r in ok]
    started = [_ts(r[1]) for r in ok]
    finished = [_ts(r[2]) for r in ok if r[2] is not None]
    late = [s - c for s, c in zip(started, sched, strict=True)]
    created = [_ts(r[4]) for r in rows]
    completed = statuses.get("succeeded", 0)
    done_at = result.get("drain_seen_at")
    result.update({
        "statuses": statuses,
        "completed": completed,
        "missed": statuses.get("missed", 0) + statuses.get("skipped", 0),
        "errors": sum(v for k, v in statuses.items() if k not in ("succeeded", "missed", "skipped")),
        # timeline from the instant: claim began (the tick's "now"), first run started (the
        # claim transaction committed), last started, last finished in memory, all committed
        "claim_began_s": (min(created) - t0) if created else None,
        "first_started_s": (min(started) - t0) if started else None,
        "all_started_s": (max(started) - t0) if started else None,
        "last_finished_at_s": (max(finished) - t0) if finished else None,
        "all_finished_s": (done_at - t0) if done_at else None,
        "lateness": lateness_stats(late, started),
    })
    af = result["all_finished_s"]
    result["runs_per_s"] = completed / af if af and af > 0 else None
    if started and finished:
        span = max(finished) - min(started)
        result["drain_runs_per_s"] = completed / span if span > 0 else None


def deploy(args: argparse.Namespace) -> dict[str, Any]:
    """Deploy N idle jobs (varied crons, none due for weeks) in one call; time and RSS."""
    meter = ProcessMeter.current()
    jobs = [JobDef(name=f"idle-{i:06d}", agent=AGENT, cron=c)
            for i, c in enumerate(idle_crons(args.n))]
    store = SqliteStore.open(args.db)
    t0, c0 = time.perf_counter(), meter.cpu_s()
    report = store.deploy(jobs, [_agent("bench._noop:run_inline")])
    load_s = time.perf_counter() - t0
    load_cpu_s = meter.cpu_s() - c0
    store.close()
    return {
        "side": "symbi",
        "variant": "symbi deploy",
        "workload": "load",
        "n": len(report.created),
        "load_s": load_s,
        "load_cpu_s": load_cpu_s,
        "distinct_crons": len({j.cron for j in jobs}),
        "rss_after_load_mb": meter.rss_mb(),
        "peak_rss_mb": meter.peak_rss_mb(),
        "db_mb": sum(p.stat().st_size for p in Path(args.db).parent.glob(Path(args.db).name + "*"))
        / (1024 * 1024),
    }


def idle(args: argparse.Namespace) -> dict[str, Any]:
    """Start the scheduler on a deployed store; CPU and RSS over an idle window."""
    meter = ProcessMeter.current()
    result: dict[str, Any] = {
        "side": "symbi",
        "variant": "symbi idle",
        "workload": "idle",
        "idle_seconds": args.idle_seconds,
    }

    async def main() -> None:
        stop = asyncio.Event()
        acquired = asyncio.Event()
        t0 = time.perf_counter()
        c_start = meter.cpu_s()
        store = SqliteStore.open(args.db)

        def on_event(kind: str, payload: dict[str, Any]) -> None:
            if kind == "lease_acquired":
                acquired.set()

        sched = Scheduler(store, SchedulerConfig(), SystemClock(), owner_id="bench-idle",
                          standby=False, on_event=on_event)
        task = asyncio.create_task(sched.run(stop))
        await asyncio.wait_for(acquired.wait(), timeout=60)
        # lease taken; recovery and the first iteration follow without yielding
        await asyncio.sleep(0)
        result["start_s"] = time.perf_counter() - t0
        await asyncio.sleep(args.settle_seconds)
        result["start_cpu_s"] = meter.cpu_s() - c_start
        c0, w0 = meter.cpu_s(), meter.wakeups()
        await asyncio.sleep(args.idle_seconds)
        result["idle_cpu_s"] = meter.cpu_s() - c0
        result["wakeups"] = meter.wakeups() - w0
        result["rss_mb"] = meter.rss_mb()
        result["peak_rss_mb"] = meter.peak_rss_mb()
        with sqlite3.connect(f"file:{args.db}?mode=ro", uri=True) as ro:
            result["runs_during_idle"] = ro.execute("SELECT count(*) FROM runs").fetchone()[0]
        result["n"] = store.count_jobs().get("active", 0)
        stop.set()
        await task
        store.close()

    asyncio.run(main())
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse the sub-command, run it, print the result line."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("workload", choices=("burst", "deploy", "idle"))
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--db", default=None, help="state database (deploy, idle)")
    p.add_argument("--tmp-dir", default=None, help="where the burst's temporary store goes")
    p.add_argument("--handler", default="bench._noop:run_inline")
    p.add_argument("--max-concurrent", type=int, default=10_000)
    p.add_argument("--lead", type=float, default=3.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--poll", type=float, default=0.02, help="drain watcher poll interval")
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--settle-seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    if args.workload == "burst":
        emit_result(burst(args))
    elif args.workload == "deploy":
        emit_result(deploy(args))
    else:
        emit_result(idle(args))


if __name__ == "__main__":
    main()
