"""Real processes: `symbi up` killed with SIGKILL mid-run and restarted; two schedulers on one
state file. Asserts SPEC §9 "no loss, no duplicates": no occurrence is claimed or executed
twice, interrupted runs are visible, the downtime shows up as rows, catch-up is bounded.

The side-effect file is the ground truth for "executed": every run of the `marker` agent
appends its $SYMBI_RUN_ID before sleeping, so a run id in the file means the process ran.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

SYMBI = Path(sys.executable).parent / "symbi"
OCCURRENCE_TRIGGERS = ("schedule", "catchup")
FAILURE_STATUSES = ("failed", "timed_out", "interrupted")
N_JOBS = 15


def write_project(tmp: Path, n_jobs: int = N_JOBS, ttl: float = 2.0) -> tuple[Path, Path, Path]:
    """A .symbi file with `n_jobs` every-second jobs of a side-effecting command agent, and a
    symbi.toml; returns (source, config, side-effect file)."""
    side = tmp / "side.txt"
    parts = ['agent "marker" {\n'
             f'  command: "echo \\"$SYMBI_RUN_ID\\" >> {side}; sleep 0.4"\n'
             '}\n']
    for i in range(n_jobs):
        parts.append(
            "schedule {\n"
            f'  name: "tick-{i:02d}"\n'
            '  agent: "marker"\n'
            '  cron: "* * * * * *"\n'
            '  catchup: "latest"\n'
            '  retry_backoff: "1s"\n'
            "  max_retries: 3\n"
            "}\n")
    src = tmp / "crash.symbi"
    src.write_text("\n".join(parts))
    cfg = tmp / "symbi.toml"
    cfg.write_text("[scheduler]\nmax_concurrent_jobs = 100\n"
                   f"lease_ttl_seconds = {ttl}\nshutdown_timeout_seconds = 5\n")
    return src, cfg, side


def ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)


def run_counts(db: Path) -> Counter[str]:
    if not db.exists():
        return Counter()
    try:
        with ro(db) as conn:
            return Counter(dict(conn.execute("SELECT status, COUNT(*) FROM runs GROUP BY 1")))
    except sqlite3.Error:  # not created / not migrated yet
        return Counter()


def all_runs(db: Path) -> list[dict[str, object]]:
    conn = ro(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY scheduled_for")]
    finally:
        conn.close()


def check_no_double_claim_or_execution(runs: list[dict[str, object]], side: Path) -> None:
    """No occurrence has two rows; no occurrence was executed twice except by `retry` runs of
    an attempt that failed or was interrupted; every executed id is a run of the store."""
    occ = Counter((r["job_id"], r["scheduled_for"]) for r in runs
                  if r["trigger"] in OCCURRENCE_TRIGGERS)
    assert [k for k, n in occ.items() if n > 1] == []

    by_id = {r["id"]: r for r in runs}
    executed = side.read_text().split()
    assert len(executed) == len(set(executed)), "a run id was executed twice"
    assert set(executed) <= set(by_id), "a process ran for a run that has no row"
    per_occurrence: dict[tuple[object, object], list[dict[str, object]]] = defaultdict(list)
    for rid in executed:
        r = by_id[rid]
        assert r["status"] not in ("missed", "skipped", "cancelled"), r
        per_occurrence[(r["job_id"], r["scheduled_for"])].append(r)
    for key, rs in per_occurrence.items():
        firsts = [r for r in rs if r["trigger"] in OCCURRENCE_TRIGGERS]
        assert len(firsts) <= 1, key
        for r in rs:
            if r["trigger"] == "retry":
                prev = by_id[r["retry_of"]]
                assert prev["status"] in FAILURE_STATUSES, (r, prev)
                assert prev["scheduled_for"] == r["scheduled_for"]


def test_kill_minus_9_and_restart(tmp_path: Path) -> None:
    started = time.monotonic()
    # a lease far longer than the test: the restart must not wait for it to run out
    src, cfg, side = write_project(tmp_path, ttl=60.0)
    db = tmp_path / "state.db"
    base = [str(SYMBI), "--store", str(db), "--config", str(cfg), "up", str(src)]
    first = subprocess.Popen([*base, "--quiet"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 12
        while True:
            counts = run_counts(db)
            if counts["succeeded"] >= N_JOBS and counts["running"] + counts["pending"] >= 3:
                break
            assert first.poll() is None, first.stderr.read().decode() if first.stderr else ""
            assert time.monotonic() < deadline, f"no runs in flight seen: {counts}"
            time.sleep(0.02)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(5)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == -signal.SIGKILL
    with ro(db) as conn:
        in_flight = {rid: status for rid, status in conn.execute(
            "SELECT id, status FROM runs WHERE status IN ('running', 'pending')"
            " AND owner IS NOT NULL")}
        owner_a = {o for (o,) in conn.execute("SELECT DISTINCT owner FROM runs WHERE owner"
                                              " IS NOT NULL")}
        killed_at = datetime.fromisoformat(conn.execute(
            "SELECT MAX(scheduled_for) FROM runs").fetchone()[0])
    assert in_flight and len(owner_a) == 1

    time.sleep(2.0)  # the occurrences of these two seconds are missed
    second = subprocess.run([*base, "--for", "3s"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=30)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr + second.stdout
    # the dead scheduler's lease was still valid for ~58 s: taken over at once (its pid is
    # gone), no standby
    assert "standby" not in second.stderr
    assert f"took over the scheduler lease from {os.uname().nodename}:{first.pid}" in \
        second.stderr

    runs = all_runs(db)
    by_id = {r["id"]: r for r in runs}
    check_no_double_claim_or_execution(runs, side)

    # every run in flight at the kill is interrupted now (and retried per policy), visibly
    for rid in in_flight:
        r = by_id[rid]
        assert r["status"] == "interrupted" and r["stop_reason"] == "crash", r
        assert r["owner"] in owner_a
        retries = [x for x in runs if x["retry_of"] == rid]
        assert len(retries) == 1 and retries[0]["trigger"] == "retry"
        assert retries[0]["attempt"] == r["attempt"] + 1
    assert second.stdout.count(" interrupted ") == len(in_flight)
    assert "(crash or kill)" in second.stdout

    # the gap is visible: every second of each job's history has a row
    restart_rows = [r for r in runs if r["owner"] not in owner_a and r["owner"] is not None]
    assert restart_rows, "the restarted scheduler ran nothing"
    by_job: dict[object, list[datetime]] = defaultdict(list)
    catchups: Counter[object] = Counter()
    for r in runs:
        if r["trigger"] in OCCURRENCE_TRIGGERS:
            by_job[r["job_id"]].append(datetime.fromisoformat(str(r["scheduled_for"])))
        if r["trigger"] == "catchup":
            catchups[r["job_id"]] += 1
    assert len(by_job) == N_JOBS
    for job_id, times in by_job.items():
        times.sort()
        expected = [times[0] + timedelta(seconds=i)
                    for i in range(int((times[-1] - times[0]).total_seconds()) + 1)]
        assert times == expected, f"job {job_id}: a second without a row"
        assert times[-1] > killed_at + timedelta(seconds=2)  # rows on both sides of the gap
        assert catchups[job_id] <= 1  # catchup "latest": at most one catch-up run
    missed = [r for r in runs if r["status"] == "missed"]
    # catch-up "latest" within the window: the older missed occurrences are superseded
    assert missed and all(r["stop_reason"] == "missed_superseded" for r in missed)
    assert all(r["started_at"] is None for r in missed)
    assert time.monotonic() - started < 20


def test_two_schedulers_on_one_state_file(tmp_path: Path) -> None:
    src, cfg, side = write_project(tmp_path, n_jobs=5, ttl=15.0)
    db = tmp_path / "state.db"
    base = [str(SYMBI), "--store", str(db), "--config", str(cfg), "up", str(src), "--for", "4s"]
    procs = [subprocess.Popen(base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path) for _ in range(2)]
    outs = [p.communicate(timeout=30) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in out + err
    standby = [i for i, (_, err) in enumerate(outs) if "standby: another scheduler" in err]
    assert len(standby) == 1, [err for _, err in outs]
    active = 1 - standby[0]
    assert "✓ tick-" in outs[active][0]
    assert "✓ tick-" not in outs[standby[0]][0]

    runs = all_runs(db)
    assert runs
    owners = {r["owner"] for r in runs if r["owner"] is not None}
    assert len(owners) == 1
    check_no_double_claim_or_execution(runs, side)
    assert len(side.read_text().split()) == sum(1 for r in runs if r["status"] == "succeeded")
