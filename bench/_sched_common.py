"""Shared pieces of the scheduler benchmark: statistics, workload shapes, process measurements.

Used by the orchestrator (``bench/bench_scheduler.py``) and by the child processes that run one
variant each (``bench/_apscheduler_side.py``, ``bench/_symbi_side.py``). Every child prints one
JSON object on its last stdout line; nothing here keeps state between calls.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil

RESULT_PREFIX = "BENCH-RESULT "


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100) with linear interpolation between ranks (numpy's default).

    ``None`` for an empty sequence, so a missing figure never masquerades as zero.
    """
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * (q / 100.0)
    lo = math.floor(pos)
    hi = math.ceil(pos)
    if lo == hi:
        return float(xs[lo])
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def lateness_stats(
    lateness_s: Sequence[float], start_times: Sequence[float] | None = None, first: int = 1000
) -> dict[str, float | int | None]:
    """p50/p99/max of start lateness (seconds) and p99 over the ``first`` runs to start.

    ``start_times`` (same order as ``lateness_s``) picks which runs started first; without it the
    lateness itself orders them (for one shared scheduled instant the two orders coincide).
    """
    if start_times is not None:
        order = sorted(range(len(lateness_s)), key=lambda i: start_times[i])
        first_vals = [lateness_s[i] for i in order[:first]]
    else:
        first_vals = sorted(lateness_s)[:first]
    return {
        "count": len(lateness_s),
        "p50_s": percentile(lateness_s, 50),
        "p99_s": percentile(lateness_s, 99),
        "max_s": max(lateness_s) if lateness_s else None,
        "first_n": min(first, len(lateness_s)),
        "first_p99_s": percentile(first_vals, 99),
    }


def fire_instant(lead_seconds: float, now: datetime | None = None) -> datetime:
    """A whole-second UTC instant at least ``lead_seconds`` from now (cron has 1 s resolution)."""
    now = now or datetime.now(UTC)
    t = now + timedelta(seconds=lead_seconds)
    return (t + timedelta(seconds=1)).replace(microsecond=0)


def burst_cron(instant: datetime) -> str:
    """A 6-field ``S M H * * *`` cron that fires (daily) at ``instant`` (UTC)."""
    return f"{instant.second} {instant.minute} {instant.hour} * * *"


def idle_crons(count: int, now: datetime | None = None) -> list[str]:
    """``count`` distinct-looking 5-field crons, none of which fires in the next weeks.

    Minute/hour/day vary with the index; the month is one that is neither the current month
    nor the next, so an idle window never contains an occurrence, whatever the date.
    """
    now = now or datetime.now(UTC)
    banned = {now.month, now.month % 12 + 1}
    months = [m for m in range(1, 13) if m not in banned]
    out = []
    for i in range(count):
        minute = i % 60
        hour = (i // 60) % 24
        dom = 1 + (i // 1440) % 28
        month = months[(i // 40320) % len(months)]
        out.append(f"{minute} {hour} {dom} {month} *")
    return out


@dataclass
class ProcessMeter:
    """RSS and CPU of the current process (psutil), plus peak RSS (getrusage)."""

    proc: psutil.Process

    @classmethod
    def current(cls) -> ProcessMeter:
        """A meter for this process."""
        return cls(psutil.Process())

    def rss_mb(self) -> float:
        """Resident set size now, MiB."""
        return float(self.proc.memory_info().rss) / (1024 * 1024)

    def peak_rss_mb(self) -> float:
        """High-water mark of the resident set, MiB (Linux reports ru_maxrss in KiB)."""
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return kib / 1024 if sys.platform != "darwin" else kib / (1024 * 1024)

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far by this process (threads included)."""
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def wakeups(self) -> int:
        """Voluntary context switches so far, all threads (each is a sleep that ended)."""
        return int(self.proc.num_ctx_switches().voluntary)


def emit_result(result: dict[str, Any]) -> None:
    """Print the child's result as the marked JSON line the orchestrator looks for."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The last marked JSON line of a child's stdout, or ``None`` if it printed none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            value: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            return value
    return None


def calibrate_per_item(fn: Callable[[int], None], sample: int) -> float:
    """Seconds per item of ``fn(sample)`` (used to pick a burst instant after the load ends)."""
    t0 = time.perf_counter()
    fn(sample)
    return (time.perf_counter() - t0) / max(sample, 1)


def repo_root() -> str:
    """The checkout root (the parent of ``bench/``)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
