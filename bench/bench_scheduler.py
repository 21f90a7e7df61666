"""Scheduler benchmark: symbi's scheduler and APScheduler 3.11 on the same workloads, one run.

    .venv/bin/python bench/bench_scheduler.py            # full run (a few minutes)
    .venv/bin/python bench/bench_scheduler.py --quick    # smoke run, < 60 s
    .venv/bin/python bench/bench_scheduler.py --json     # machine-readable figures on stdout

Workloads (SPEC §9):
  burst  N jobs (default 10,000) whose cron fires at one instant a few seconds ahead, no-op
         agent: time until all started / all finished (from the scheduled instant), runs/s,
         start lateness p50/p99/max and p99 of the first 1,000 runs to start.
  idle   M jobs (default 100,000) with crons that do not fire during the window: time to
         deploy/load, RSS, CPU seconds used over the idle window (default 20 s).

Every variant runs in its own child process (``python -m bench._symbi_side …`` /
``python -m bench._apscheduler_side …``), one after another, so RSS and CPU are clean.
Needs the bench extra: ``pip install -e '.[bench]'`` (APScheduler 3.11, SQLAlchemy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `bench._sched_common` importable
    sys.path.insert(0, str(ROOT))

from bench._sched_common import parse_result  # noqa: E402

GOAL_RUNS_PER_S = 10_000
GOAL_P99_S = 1.0
GOAL_FIRST_P99_S = 0.100
GOAL_DEPLOY_100K_S = 10.0
GOAL_RSS_MB = 150.0
GOAL_IDLE_CPU_FRACTION = 0.01  # "near zero": under 1 % of one core over the idle window


@dataclass(frozen=True)
class Child:
    """One measurement: a label, the module to run and its arguments."""

    key: str
    label: str
    module: str
    argv: tuple[str, ...]
    timeout: float


def run_child(child: Child, console: Console) -> dict[str, Any]:
    """Run one variant in a fresh interpreter; its result line, or an error record."""
    cmd = [sys.executable, "-m", child.module, *child.argv]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    console.print(f"[dim]→ {child.label}: {' '.join(cmd[2:])}[/dim]")
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=child.timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {child.timeout:.0f} s", "label": child.label}
    wall = time.perf_counter() - t0
    result = parse_result(proc.stdout)
    if proc.returncode != 0 or result is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        return {
            "error": f"exit status {proc.returncode}",
            "stderr_tail": tail,
            "label": child.label,
        }
    result["label"] = child.label
    result["process_wall_s"] = wall
    console.print(f"[dim]  done in {wall:.1f} s[/dim]")
    return result


def plan(args: argparse.Namespace, tmp: Path) -> list[Child]:
    """The child processes to run, in order."""
    out: list[Child] = []
    bursts = args.workload in ("all", "burst")
    idles = args.workload in ("all", "idle")
    n = str(args.burst_jobs)
    common = ("--lead", str(args.lead), "--timeout", str(args.burst_timeout))
    child_timeout = args.burst_timeout + 600  # load + drain; the child enforces its own bound
    idle = ("--idle-seconds", str(args.idle_seconds), "--settle-seconds", str(args.settle_seconds))
    idle_timeout = args.idle_seconds + args.settle_seconds + 900
    if args.ours and bursts:
        for handler, label in (
            ("bench._noop:run", "symbi (python agent)"),
            ("bench._noop:run_inline", "symbi (python agent, inline)"),
        ):
            if handler.endswith("_inline") and not args.inline:
                continue
            out.append(
                Child(
                    f"burst:symbi:{handler.rsplit(':', 1)[1]}",
                    label,
                    "bench._symbi_side",
                    ("burst", "--n", n, "--handler", handler, "--tmp-dir", str(tmp),
                     "--max-concurrent", str(args.max_concurrent), *common),
                    child_timeout,
                )
            )
    if args.apscheduler and bursts:
        aps_burst = [("memory", "asyncio"), ("memory", "background")]
        if args.apscheduler_sqlite:
            aps_burst.append(("sqlite", "asyncio"))
        for store, mode in aps_burst:
            if mode == "background" and not args.apscheduler_threads:
                continue
            bn = n if store == "memory" else str(min(args.burst_jobs, args.apscheduler_sqlite_burst_jobs))
            out.append(
                Child(
                    f"burst:aps:{store}:{mode}",
                    f"APScheduler {store} ({'thread pool' if mode == 'background' else 'asyncio'})",
                    "bench._apscheduler_side",
                    ("burst", "--store", store, "--mode", mode, "--n", bn, "--tmp-dir", str(tmp),
                     *common),
                    child_timeout,
                )
            )
    if args.ours and idles:
        db = str(tmp / "idle-symbi.db")
        out.append(
            Child("load:symbi", "symbi deploy", "bench._symbi_side",
                  ("deploy", "--n", str(args.idle_jobs), "--db", db), idle_timeout)
        )
        out.append(
            Child("idle:symbi", "symbi idle", "bench._symbi_side", ("idle", "--db", db, *idle),
                  idle_timeout)
        )
    if args.apscheduler and idles:
        out.append(
            Child("idle:aps:memory", "APScheduler memory idle", "bench._apscheduler_side",
                  ("load", "--store", "memory", "--n", str(args.idle_jobs), *idle), idle_timeout)
        )
        if args.apscheduler_sqlite and args.apscheduler_sqlite_idle_jobs > 0:
            db = str(tmp / "idle-aps.db")
            sn = str(min(args.idle_jobs, args.apscheduler_sqlite_idle_jobs))
            out.append(
                Child("load:aps:sqlite", "APScheduler SQLite load", "bench._apscheduler_side",
                      ("load", "--store", "sqlite", "--n", sn, "--db", db), idle_timeout)
            )
            out.append(
                Child("idle:aps:sqlite", "APScheduler SQLite idle", "bench._apscheduler_side",
                      ("idle", "--store", "sqlite", "--db", db, *idle), idle_timeout)
            )
    return out


def pick_median(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The trial with the median runs/s (all trials' key figures kept under ``trials``)."""
    if len(trials) == 1:
        return trials[0]
    ok = [t for t in trials if "error" not in t]
    if not ok:
        return trials[0]
    ok.sort(key=lambda t: t.get("runs_per_s") or 0.0)
    chosen = dict(ok[(len(ok) - 1) // 2])
    chosen["trials"] = [
        {"runs_per_s": t.get("runs_per_s"), "p99_s": (t.get("lateness") or {}).get("p99_s"),
         "error": t.get("error")}
        for t in trials
    ]
    return chosen


# ----------------------------------------------------------------------------- formatting


def _ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v * 1000:,.0f} ms" if v < 10 else f"{v:,.1f} s"


def _s(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:,.{digits}f} s"


def _num(v: float | None, digits: int = 0, unit: str = "") -> str:
    return "—" if v is None else f"{v:,.{digits}f}{unit}"


def _ok(flag: bool | None) -> str:
    if flag is None:
        return "[yellow]n/a[/yellow]"
    return "[green]met[/green]" if flag else "[red]missed[/red]"


def burst_table(results: dict[str, dict[str, Any]]) -> Table:
    """Side-by-side burst figures, one column per variant."""
    cols = [(k, r) for k, r in results.items() if k.startswith("burst:")]
    t = Table(title="Burst: N jobs due at the same instant, no-op agent "
                    "(times from the scheduled instant)")
    t.add_column("figure", style="bold")
    for _k, r in cols:
        t.add_column(r.get("label", _k), justify="right")

    def row(name: str, fn: Any) -> None:
        t.add_row(name, *[("[red]" + r["error"] + "[/red]") if "error" in r else fn(r) for _k, r in cols])

    row("jobs due at once", lambda r: _num(r.get("n")))
    row("completed / missed / errors", lambda r: f"{r.get('completed')} / {r.get('missed', 0)} / {r.get('errors', 0)}")
    row("deploy/load before the instant", lambda r: _s(r.get("load_s")))
    row("  slack left before the instant",  # negative = load overran: figures not valid
        lambda r: _s(r.get("slack_before_fire_s")) if (r.get("slack_before_fire_s") or 0) >= 0
        else "[red]" + _s(r.get("slack_before_fire_s")) + " (invalid)[/red]")
    row("loop woke and began claiming", lambda r: _ms(r.get("claim_began_s")))
    row("first run started", lambda r: _ms(r.get("first_started_s")))
    row("all started", lambda r: _s(r.get("all_started_s")))
    row("all finished (symbi: committed)",
        lambda r: _s(r.get("all_finished_s")) if not r.get("timed_out")
        else f"[red]not within {r.get('timeout_s', 0):.0f} s "
             f"({r.get('drain_final_seen', r.get('completed'))} seen)[/red]")
    row("runs/s (N ÷ all finished)", lambda r: _num(r.get("runs_per_s")))
    row("lateness p50", lambda r: _ms(r["lateness"]["p50_s"]) if r.get("lateness") else "—")
    row("lateness p99", lambda r: _ms(r["lateness"]["p99_s"]) if r.get("lateness") else "—")
    row("lateness max", lambda r: _ms(r["lateness"]["max_s"]) if r.get("lateness") else "—")
    row("lateness p99, first 1,000 started",
        lambda r: _ms(r["lateness"]["first_p99_s"]) if r.get("lateness") else "—")
    row("CPU during the burst", lambda r: _s(r.get("cpu_s")))
    # CPU per run hardly depends on what else the machine does, unlike wall-clock figures
    row("  = CPU µs per run", lambda r: _num(1e6 * r["cpu_s"] / r["n"]) if r.get("cpu_s") else "—")
    row("RSS after the burst", lambda r: _num(r.get("rss_mb"), 0, " MB"))
    row("what is persisted", lambda r: str(r.get("persisted", "—")))
    return t


def idle_table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> Table:
    """Side-by-side idle figures: our deploy+idle, APScheduler memory, APScheduler SQLite."""
    t = Table(title=f"Idle: many jobs deployed, none due, {args.idle_seconds:g} s window")
    t.add_column("figure", style="bold")
    cols: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    if "idle:symbi" in results or "load:symbi" in results:
        cols.append(("symbi (SQLite)", results.get("load:symbi", {}), results.get("idle:symbi", {})))
    if "idle:aps:memory" in results:
        m = results["idle:aps:memory"]
        cols.append(("APScheduler memory", m, m))
    if "idle:aps:sqlite" in results or "load:aps:sqlite" in results:
        cols.append(("APScheduler SQLite", results.get("load:aps:sqlite", {}),
                     results.get("idle:aps:sqlite", {})))
    for name, _l, _i in cols:
        t.add_column(name, justify="right")

    def cell(d: dict[str, Any], fn: Any) -> str:
        return "[red]" + str(d["error"]) + "[/red]" if "error" in d else fn(d)

    t.add_row("jobs", *[cell(lo, lambda d: _num(d.get("n"))) for _n, lo, _i in cols])
    t.add_row("deploy / load time", *[cell(lo, lambda d: _s(d.get("load_s"))) for _n, lo, _i in cols])
    t.add_row("  CPU used by it", *[cell(lo, lambda d: _s(d.get("load_cpu_s"))) for _n, lo, _i in cols])

    def scaled(d: dict[str, Any]) -> str:
        n, s = d.get("n"), d.get("load_s")
        if not n or s is None:
            return "—"
        if n == args.idle_jobs:
            return _s(s) + " (measured)"
        return _s(s * args.idle_jobs / n) + f" (linear from {n:,})"

    t.add_row(f"load time for {args.idle_jobs:,} jobs", *[cell(lo, scaled) for _n, lo, _i in cols])
    t.add_row("scheduler start (separate process)",
              *[cell(i, lambda d: _s(d.get("start_s"), 3)) for _n, _l, i in cols])
    t.add_row("RSS after deploy/load", *[cell(lo, lambda d: _num(d.get("rss_after_load_mb"), 0, " MB"))
                                         for _n, lo, _i in cols])
    t.add_row("RSS of the running scheduler", *[cell(i, lambda d: _num(d.get("rss_mb"), 0, " MB"))
                                                for _n, _l, i in cols])
    t.add_row("CPU used in the idle window", *[cell(i, lambda d: _s(d.get("idle_cpu_s"))) for _n, _l, i in cols])
    t.add_row("  = % of one core", *[cell(i, lambda d: _num(_cpu_pct(d), 2, " %")) for _n, _l, i in cols])
    t.add_row("voluntary context switches in window", *[cell(i, lambda d: _num(d.get("wakeups"))) for _n, _l, i in cols])
    return t


def _cpu_pct(d: dict[str, Any]) -> float | None:
    if d.get("idle_cpu_s") is None or not d.get("idle_seconds"):
        return None
    return 100.0 * float(d["idle_cpu_s"]) / float(d["idle_seconds"])


def goals(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Our figures against the issue's goals (best symbi burst variant; deploy/idle of ours)."""
    bursts = [r for k, r in results.items() if k.startswith("burst:symbi") and "error" not in r]
    best = max(bursts, key=lambda r: r.get("runs_per_s") or 0, default=None)
    lat = (best or {}).get("lateness") or {}
    dep = results.get("load:symbi", {})
    idl = results.get("idle:symbi", {})
    full_scale = args.burst_jobs >= 10_000 and args.idle_jobs >= 100_000
    out = []

    def add(goal: str, measured: str, ok: bool | None) -> None:
        out.append({"goal": goal, "measured": measured, "met": ok})

    def both(fn: Any) -> str:
        # the best variant decides; every variant's figure is shown
        parts = [f"{fn(r)} ({r['label'].removeprefix('symbi (').rstrip(')')})" for r in bursts]
        return "; ".join(parts) if parts else "—"

    stuck = [r["label"] for r in bursts if r.get("timed_out")]
    if stuck:
        add("every run of the burst committed to the DB within the timeout",
            "timed out: " + ", ".join(stuck), False)
    rps = (best or {}).get("runs_per_s")
    add(f"≥ {GOAL_RUNS_PER_S:,} runs/s, every run persisted",
        both(lambda r: _num(r.get("runs_per_s"))), None if rps is None else rps >= GOAL_RUNS_PER_S)
    p99 = lat.get("p99_s")
    add("lateness p99 < 1 s", both(lambda r: _ms((r.get("lateness") or {}).get("p99_s"))),
        None if p99 is None else p99 < GOAL_P99_S)
    f99 = lat.get("first_p99_s")
    add("lateness p99 of the first 1,000 < 100 ms",
        both(lambda r: _ms((r.get("lateness") or {}).get("first_p99_s"))),
        None if f99 is None else f99 < GOAL_FIRST_P99_S)
    ds = dep.get("load_s")
    dn = dep.get("n") or args.idle_jobs
    scaled = None if ds is None else ds * 100_000 / dn
    if dn == 100_000:
        add("100,000 jobs deployed < 10 s", _s(ds), None if ds is None else ds < GOAL_DEPLOY_100K_S)
    else:
        add(f"100,000 jobs deployed < 10 s (measured at {dn:,})",
            f"{_s(ds)} → {_s(scaled)} linear", None if scaled is None else scaled < GOAL_DEPLOY_100K_S)
    rss = idl.get("rss_mb")
    add(f"RSS < {GOAL_RSS_MB:.0f} MB, scheduler on a store with {args.idle_jobs:,} jobs",
        _num(rss, 0, " MB"), None if rss is None else rss < GOAL_RSS_MB)
    drss = dep.get("rss_after_load_mb")
    add(f"RSS < {GOAL_RSS_MB:.0f} MB, process that deployed them (like `symbi up BUNDLE`)",
        _num(drss, 0, " MB") + f" (peak {_num(dep.get('peak_rss_mb'), 0, ' MB')})",
        None if drss is None else drss < GOAL_RSS_MB)
    pct = _cpu_pct(idl)
    add("idle CPU near zero (< 1 % of a core)", _num(pct, 2, " %"),
        None if pct is None else pct / 100 < GOAL_IDLE_CPU_FRACTION)
    if not full_scale:
        for g in out:
            g["note"] = "reduced scale (--quick or flags): indicative only"
    return out


def goals_table(rows: list[dict[str, Any]]) -> Table:
    """The goals with our measured value and whether each is met."""
    t = Table(title="Goals (symbi)")
    t.add_column("goal")
    t.add_column("measured", justify="right")
    t.add_column("", justify="center")
    for g in rows:
        t.add_row(g["goal"], g["measured"], _ok(g["met"]) + (" *" if g.get("note") else ""))
    return t


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags; --quick replaces the defaults by a smoke-sized run (explicit flags still win)."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small numbers, finishes in < 60 s")
    p.add_argument("--json", action="store_true", help="print all figures as JSON on stdout")
    p.add_argument("--json-out", type=Path, default=None,
                   help="also write all figures as JSON to this file (tables still printed)")
    p.add_argument("--burst-jobs", type=int, default=None, help="jobs due at once (10,000; quick 1,000)")
    p.add_argument("--idle-jobs", type=int, default=None, help="jobs deployed for idle (100,000; quick 5,000)")
    p.add_argument("--idle-seconds", type=float, default=None, help="idle window (20; quick 2)")
    p.add_argument("--settle-seconds", type=float, default=None,
                   help="wait after the scheduler starts before the idle window (2; quick 0.5)")
    p.add_argument("--apscheduler-sqlite-idle-jobs", type=int, default=None,
                   help="cap for APScheduler's SQLite idle load (10,000; quick 1,000; 0 = skip); "
                        "its 100k load time is then scaled linearly and labelled so")
    p.add_argument("--apscheduler-sqlite-burst-jobs", type=int, default=None,
                   help="cap for APScheduler's SQLite burst (10,000; quick 300): its load costs "
                        "1-7 ms per job, one fsync'd transaction each")
    p.add_argument("--lead", type=float, default=None,
                   help="minimum seconds between the end of the load and the burst instant (3; quick 2)")
    p.add_argument("--burst-timeout", type=float, default=None,
                   help="give up a burst this long after its instant (300; quick 10)")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="our max_concurrent_jobs during the burst (default: burst jobs)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each burst variant this many times; report the median by runs/s")
    p.add_argument("--only", choices=("all", "symbi", "apscheduler"), default="all")
    p.add_argument("--workload", choices=("all", "burst", "idle"), default="all")
    p.add_argument("--no-apscheduler-sqlite", dest="apscheduler_sqlite", action="store_false")
    p.add_argument("--no-apscheduler-threads", dest="apscheduler_threads", action="store_false",
                   help="skip APScheduler's BackgroundScheduler (thread pool) burst variant")
    p.add_argument("--no-inline", dest="inline", action="store_false",
                   help="skip our inline-handler burst variant")
    args = p.parse_args(argv)
    quick = args.quick

    def dflt(name: str, full: Any, small: Any) -> None:
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)

    dflt("burst_jobs", 10_000, 1_000)
    dflt("idle_jobs", 100_000, 5_000)
    dflt("idle_seconds", 20.0, 2.0)
    dflt("settle_seconds", 2.0, 0.5)
    dflt("apscheduler_sqlite_burst_jobs", 10_000, 300)
    dflt("apscheduler_sqlite_idle_jobs", 10_000, 1_000)
    dflt("lead", 3.0, 2.0)
    dflt("burst_timeout", 300.0, 10.0)
    if args.max_concurrent is None:
        args.max_concurrent = max(args.burst_jobs, 10)
    args.ours = args.only in ("all", "symbi")
    args.apscheduler = args.only in ("all", "apscheduler")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every variant, print the tables (or JSON); exit 1 if a variant failed to run."""
    args = parse_args(argv)
    out_stream = sys.stderr if args.json else sys.stdout
    # wide enough for five columns when piped to a file (rich defaults to 80 there)
    console = Console(stderr=args.json, width=None if out_stream.isatty() else 150)
    started = time.perf_counter()
    load_before = os.getloadavg()  # other work on the machine moves the wall-clock figures
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-sched-") as tmp:
        for child in plan(args, Path(tmp)):
            times = max(1, args.repeat) if child.key.startswith("burst:") else 1
            trials = []
            for _ in range(times):
                trials.append(run_child(child, console))
                if "error" in trials[-1]:
                    console.print(f"[red]  {child.label} failed: {trials[-1]['error']}[/red]")
                    for line in trials[-1].get("stderr_tail", []):
                        console.print(f"    {line}", markup=False, style="red")
            results[child.key] = pick_median(trials)
    goal_rows = goals(results, args)
    meta = {
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "quick": args.quick,
        "burst_jobs": args.burst_jobs,
        "idle_jobs": args.idle_jobs,
        "idle_seconds": args.idle_seconds,
        "repeat": args.repeat,
        "apscheduler_sqlite_idle_jobs": args.apscheduler_sqlite_idle_jobs,
        "total_wall_s": time.perf_counter() - started,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    doc = {"meta": meta, "results": results, "goals": goal_rows}
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
    if args.json:
        json.dump(doc, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        if any(k.startswith("burst:") for k in results):
            console.print(burst_table(results))
        if any(k.startswith(("idle:", "load:")) for k in results):
            console.print(idle_table(results, args))
        console.print(goals_table(goal_rows))
        console.print(
            f"[dim]{meta['machine']}, Python {meta['python']}; total {meta['total_wall_s']:.0f} s; "
            f"load average {load_before[0]:.2f} before, {meta['loadavg_after'][0]:.2f} after. "
            "Times are from the scheduled instant; lateness = start − scheduled. "
            "* = reduced scale.[/dim]"
        )
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
