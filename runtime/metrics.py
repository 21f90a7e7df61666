"""Prometheus metrics (SPEC §5.9) for ``GET /metrics``.

Metric names are the seed's, plus ours:

=============================================  ==============================  =================
name                                           labels                          kind
=============================================  ==============================  =================
``symbiont_cron_runs_total``                   ``job_name``, ``status``        counter
``symbiont_cron_execution_duration_seconds``   ``job_name``                    histogram
``symbiont_cron_in_flight_jobs``               —                               gauge
``symbiont_cron_dead_letter_total``            ``job_name``                    counter
``symbiont_cron_fire_lateness_seconds``        —                               histogram
``symbiont_cron_skipped_total``                ``job_name``, ``reason``        counter
``symbiont_cron_deliveries_total``             ``channel``, ``status``         counter
``symbiont_cron_jobs``                         ``status``                      gauge
=============================================  ==============================  =================

Where the numbers come from. The store is the source of truth, so the values agree with it
after a restart:

- Run counters and both histograms are *rebuilt from the runs table* when the collector is
  created (one ``GROUP BY`` for counts, one per histogram with the buckets summed in SQL), and
  the dead-letter counter from the audit log (``CronJobDeadLettered`` events, which survive the
  deletion of a job). While a scheduler in the same process (``symbi up``) holds the lease
  they advance from its ``on_event`` callback (:meth:`CronMetrics.on_event`; rebuilt once more
  when it acquires the lease) — scrapes cost no query. Otherwise (``symbi serve``, or a
  standby scheduler: the jobs run in another process) every scrape rebuilds them from the
  store (at most once per ``refresh_seconds``).
- ``runs_total`` counts finished runs by final status (``succeeded``, ``failed``,
  ``timed_out``, ``denied``, ``skipped``, ``missed``, ``interrupted``, ``cancelled``); a run
  that is retried counts once per attempt. ``skipped_total`` counts the ``skipped`` and
  ``missed`` rows by reason (``concurrency``, ``missed_superseded``, ``missed_skip``,
  ``missed_outside_window``, ``missed_summary`` …). The histograms observe every finished run
  that started (``duration_ms``/``lateness_ms`` recorded).
- ``deliveries_total`` (delivered/failed deliveries by channel), ``jobs`` (jobs by status) and
  ``in_flight_jobs`` (the in-process scheduler's running runs, else the store's ``running``
  runs) are read from the store at each scrape.

Deleting a job deletes its runs; the counters keep them until the next restart rebuilds them
lower, which Prometheus treats as a counter reset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from runtime import audit
from runtime.store import FAILURE_STATUSES, FINAL_RUN_STATUSES, JOB_STATUSES, SqliteStore

#: Execution time buckets (seconds): agent runs range from milliseconds to an hour.
DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                        10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
#: Fire lateness buckets (seconds): the scheduler aims at milliseconds.
LATENESS_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                                        2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Deliveries counted (final delivery statuses).
DELIVERY_FINAL = ("delivered", "failed")

log = logging.getLogger(__name__)

_FINAL_SQL = ",".join(f"'{s}'" for s in sorted(FINAL_RUN_STATUSES))
#: The store's running runs. The IN term lets SQLite use the partial index of unfinished runs
#: (``ix_runs_inflight``) instead of scanning the whole run history at every health probe.
IN_FLIGHT_SQL = ("SELECT COUNT(*) FROM runs WHERE status IN ('pending', 'running')"
                 " AND status = 'running'")


class InFlightSource(Protocol):
    """What the metrics need from an in-process scheduler."""

    @property
    def in_flight(self) -> int: ...

    @property
    def holds_lease(self) -> bool: ...


@dataclass
class _Histogram:
    """Bucket counts (not cumulative; the last slot is +Inf) and the sum, in milliseconds."""

    bounds_ms: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum_ms: float = 0.0
    max_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds_ms) + 1)

    def observe_ms(self, value: float) -> None:
        """Count one observation (milliseconds)."""
        for i, bound in enumerate(self.bounds_ms):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum_ms += value
        self.max_ms = max(self.max_ms, value)

    @property
    def count(self) -> int:
        """Number of observations."""
        return sum(self.counts)

    def cumulative(self, bounds_s: tuple[float, ...]) -> list[tuple[str, float]]:
        """Prometheus buckets: (le, cumulative count) including ``+Inf``."""
        out: list[tuple[str, float]] = []
        acc = 0
        for bound, n in zip(bounds_s, self.counts, strict=False):
            acc += n
            out.append((_le(bound), float(acc)))
        out.append(("+Inf", float(acc + self.counts[-1])))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))


def _ms_bounds(bounds_s: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(b * 1000, 6) for b in bounds_s)


@dataclass
class RunTotals:
    """Aggregates for the health endpoints."""

    runs_total: int  # succeeded + failed
    runs_succeeded: int
    runs_failed: int  # failed, timed_out, interrupted
    average_execution_time_ms: float
    longest_run_ms: float


class CronMetrics:
    """The ``symbiont_cron_*`` collector over one store (register it in a per-app registry).

    ``scheduler``: the scheduler running in this process, if any; its events must reach
    :meth:`on_event` (see :func:`chain_on_event`). Without one, scrapes rebuild the counters
    from the store (at most every ``refresh_seconds``).
    """

    def __init__(self, store: SqliteStore, *, scheduler: InFlightSource | None = None,
                 refresh_seconds: float = 1.0) -> None:
        self.store = store
        self.scheduler = scheduler
        self.refresh_seconds = refresh_seconds
        self.registry = CollectorRegistry(auto_describe=False)
        self._dur_ms = _ms_bounds(DURATION_BUCKETS)
        self._late_ms = _ms_bounds(LATENESS_BUCKETS)
        self._runs: dict[tuple[str, str], int] = {}
        self._skipped: dict[tuple[str, str], int] = {}
        self._dead: dict[str, int] = {}
        self._duration: dict[str, _Histogram] = {}
        self._lateness = _Histogram(self._late_ms)
        self._loaded_at: float | None = None
        self.load_from_store()
        self.registry.register(self)  # a custom collector (collect() is the protocol)

    # ------------------------------------------------------------------ rebuilding

    def load_from_store(self) -> None:
        """Rebuild the run counters, histograms and dead-letter counts from the store."""
        runs: dict[tuple[str, str], int] = {}
        skipped: dict[tuple[str, str], int] = {}
        for job_name, status, reason, n in self.store.query(
                "SELECT job_name, status, stop_reason, COUNT(*) FROM runs"
                f" WHERE status IN ({_FINAL_SQL}) GROUP BY 1, 2, 3"):
            runs[(job_name, status)] = runs.get((job_name, status), 0) + n
            if status in ("skipped", "missed"):
                key = (job_name, reason or status)
                skipped[key] = skipped.get(key, 0) + n
        duration: dict[str, _Histogram] = {}
        for row in self.store.query(self._bucket_sql("duration_ms", self._dur_ms, by_job=True)):
            duration[row[0]] = self._histogram_from(row[1:], self._dur_ms)
        late_rows = self.store.query(self._bucket_sql("lateness_ms", self._late_ms,
                                                      by_job=False))
        lateness = (self._histogram_from(late_rows[0], self._late_ms) if late_rows
                    else _Histogram(self._late_ms))
        dead = {name or "": n for name, n in self.store.query(
            "SELECT job_name, COUNT(*) FROM audit_events WHERE type = ? GROUP BY 1",
            (audit.CRON_JOB_DEAD_LETTERED,))}
        self._runs, self._skipped, self._duration = runs, skipped, duration
        self._lateness, self._dead = lateness, dead
        self._loaded_at = time.monotonic()

    @staticmethod
    def _bucket_sql(column: str, bounds_ms: tuple[float, ...], *, by_job: bool) -> str:
        # cumulative bucket counts summed in SQL: one pass over the runs, no rows to Python
        cols = ", ".join(f"SUM({column} <= {b!r})" for b in bounds_ms)
        head = "job_name, " if by_job else ""
        sql = (f"SELECT {head}COUNT(*), COALESCE(SUM({column}), 0), COALESCE(MAX({column}), 0),"
               f" {cols} FROM runs WHERE {column} IS NOT NULL AND status IN ({_FINAL_SQL})")
        return sql + (" GROUP BY job_name" if by_job else " HAVING COUNT(*) > 0")

    @staticmethod
    def _histogram_from(row: Any, bounds_ms: tuple[float, ...]) -> _Histogram:
        total, sum_ms, max_ms, *cum = row
        counts: list[int] = []
        prev = 0
        for c in cum:
            c = int(c or 0)
            counts.append(c - prev)
            prev = c
        counts.append(int(total) - prev)
        return _Histogram(bounds_ms, counts, float(sum_ms), float(max_ms))

    def _live(self) -> bool:
        """True while an in-process scheduler holds the lease: its events are complete."""
        return self.scheduler is not None and bool(self.scheduler.holds_lease)

    def _maybe_refresh(self) -> None:
        if self._live():
            return  # the scheduler's events keep the counters current
        if (self._loaded_at is None
                or time.monotonic() - self._loaded_at >= self.refresh_seconds):
            self.load_from_store()

    # ------------------------------------------------------------------ events

    def on_event(self, kind: str, payload: dict[str, Any]) -> None:
        """The scheduler's ``on_event`` callback (kinds ``run_finished``, ``run_skipped``,
        ``run_missed``, ``dead_letter``; others are ignored)."""
        if kind == "lease_acquired":
            # this process now runs the jobs: start from everything the previous holder
            # recorded (runs it left unfinished come back as events from the recovery)
            self.load_from_store()
        elif kind in ("run_finished", "run_skipped", "run_missed"):
            self._count_run(payload)
        elif kind == "dead_letter":
            name = str(payload.get("job_name") or "")
            self._dead[name] = self._dead.get(name, 0) + 1

    def _count_run(self, p: dict[str, Any]) -> None:
        status = str(p.get("status") or "")
        if status not in FINAL_RUN_STATUSES:
            return
        name = str(p.get("job_name") or "")
        self._runs[(name, status)] = self._runs.get((name, status), 0) + 1
        if status in ("skipped", "missed"):
            key = (name, str(p.get("stop_reason") or status))
            self._skipped[key] = self._skipped.get(key, 0) + 1
        duration = p.get("duration_ms")
        if duration is not None:
            hist = self._duration.get(name)
            if hist is None:
                hist = self._duration[name] = _Histogram(self._dur_ms)
            hist.observe_ms(float(duration))
        lateness = p.get("lateness_ms")
        if lateness is not None:
            self._lateness.observe_ms(float(lateness))

    # ------------------------------------------------------------------ reading

    def totals(self) -> RunTotals:
        """Run aggregates over all jobs (the health endpoints)."""
        self._maybe_refresh()
        ok = sum(n for (_, s), n in self._runs.items() if s == "succeeded")
        bad = sum(n for (_, s), n in self._runs.items() if s in FAILURE_STATUSES)
        count = sum(h.count for h in self._duration.values())
        total_ms = sum(h.sum_ms for h in self._duration.values())
        longest = max((h.max_ms for h in self._duration.values()), default=0.0)
        return RunTotals(runs_total=ok + bad, runs_succeeded=ok, runs_failed=bad,
                         average_execution_time_ms=round(total_ms / count, 3) if count else 0.0,
                         longest_run_ms=float(longest))

    def in_flight(self, *, stored: int | None = None) -> int:
        """Runs executing now: the in-process scheduler's while it holds the lease, else the
        store's (``stored``: :meth:`store_in_flight` already read by the caller)."""
        if self.scheduler is not None and self._live():
            return int(self.scheduler.in_flight)
        return self.store_in_flight() if stored is None else stored

    def store_in_flight(self) -> int:
        """The store's ``running`` runs."""
        return int(self.store.query(IN_FLIGHT_SQL)[0][0])

    def collect(self) -> Iterator[Metric]:
        """The collector protocol of prometheus-client (called at each scrape)."""
        self._maybe_refresh()
        runs = CounterMetricFamily("symbiont_cron_runs", "Finished cron runs by final status.",
                                   labels=["job_name", "status"])
        for (name, status), n in sorted(self._runs.items()):
            runs.add_metric([name, status], n)
        yield runs
        dur = HistogramMetricFamily("symbiont_cron_execution_duration_seconds",
                                    "Execution time of finished cron runs.",
                                    labels=["job_name"])
        for name, hist in sorted(self._duration.items()):
            dur.add_metric([name], hist.cumulative(DURATION_BUCKETS), hist.sum_ms / 1000)
        yield dur
        yield GaugeMetricFamily("symbiont_cron_in_flight_jobs", "Cron runs executing now.",
                                value=self.in_flight())
        dead = CounterMetricFamily("symbiont_cron_dead_letter",
                                   "Jobs moved to the dead letter state.", labels=["job_name"])
        for name, n in sorted(self._dead.items()):
            dead.add_metric([name], n)
        yield dead
        late = HistogramMetricFamily("symbiont_cron_fire_lateness_seconds",
                                     "Start time minus scheduled time of started runs.")
        late.add_metric([], self._lateness.cumulative(LATENESS_BUCKETS),
                        self._lateness.sum_ms / 1000)
        yield late
        skipped = CounterMetricFamily("symbiont_cron_skipped",
                                      "Occurrences not run (skipped or missed) by reason.",
                                      labels=["job_name", "reason"])
        for (name, reason), n in sorted(self._skipped.items()):
            skipped.add_metric([name, reason], n)
        yield skipped
        deliveries = CounterMetricFamily("symbiont_cron_deliveries",
                                         "Finished deliveries by channel and status.",
                                         labels=["channel", "status"])
        for channel, status, n in self.store.query(
                "SELECT channel, status, COUNT(*) FROM deliveries WHERE status IN"
                f" ({','.join(repr(s) for s in DELIVERY_FINAL)}) GROUP BY 1, 2 ORDER BY 1, 2"):
            deliveries.add_metric([channel, status], n)
        yield deliveries
        jobs = GaugeMetricFamily("symbiont_cron_jobs", "Jobs by status.", labels=["status"])
        counts = self.store.count_jobs()
        for status in JOB_STATUSES:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def chain_on_event(scheduler: Any, *callbacks: Any) -> None:
    """Make ``scheduler.on_event`` also call ``callbacks`` (after the one it already has)."""
    first = scheduler.on_event
    chain: list[Any] = [cb for cb in (first, *callbacks) if cb is not None]

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        for cb in chain:
            try:
                cb(kind, payload)
            except Exception:  # one broken consumer must not starve the others
                log.exception("on_event callback %r failed for %s", cb, kind)

    scheduler.on_event = on_event


def metric_names() -> Iterable[str]:
    """Every metric family this module exposes (documentation and tests)."""
    return ("symbiont_cron_runs_total", "symbiont_cron_execution_duration_seconds",
            "symbiont_cron_in_flight_jobs", "symbiont_cron_dead_letter_total",
            "symbiont_cron_fire_lateness_seconds", "symbiont_cron_skipped_total",
            "symbiont_cron_deliveries_total", "symbiont_cron_jobs")
