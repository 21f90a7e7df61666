"""The job lists: pagination, and their caches (whole bodies, per-job JSON, health numbers)
never serve anything stale, whoever changes the database and however."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from conftest import AUTH, Api, _serve, config, seed_job

from compiler.ir import JobDef
from runtime.api import _dumps, job_view, sdk_summary
from runtime.clock import FakeClock
from runtime.metrics import IN_FLIGHT_SQL, CronMetrics
from runtime.store import SqliteStore, format_ts

P = "/api/v1"


async def _raw(api: Api, path: str) -> tuple[int, bytes, str]:
    async with api.session.get(api.url(path), headers=AUTH) as r:
        return r.status, await r.read(), r.headers["Content-Type"]


def _expected(store: SqliteStore, route: str, **kw: object) -> bytes:
    """What the route must answer: the views of ``store.list_jobs(...)``, freshly built."""
    view = job_view if route == "schedule" else sdk_summary
    return _dumps([view(r) for r in store.list_jobs(**kw)]).encode()  # type: ignore[arg-type]


async def _assert_lists_fresh(api: Api) -> None:
    for route in ("schedule", "schedules"):
        status, body, ctype = await _raw(api, f"{P}/{route}")
        assert status == 200 and ctype == "application/json; charset=utf-8"
        assert body == _expected(api.store, route)


async def test_pages_in_name_order_on_both_routes(api: Api) -> None:
    for name in ("delta", "alpha", "echo", "charlie", "bravo"):
        seed_job(api.store, name)
    api.store.pause_job("charlie", actor="t")
    for route, key in (("schedule", "name"), ("schedules", "name")):
        async def names(query: str, route: str = route, key: str = key) -> list[str]:
            status, body = await api.call("GET", f"{P}/{route}{query}")
            assert status == 200, body
            return [j[key] for j in body]

        assert await names("") == ["alpha", "bravo", "charlie", "delta", "echo"]
        assert await names("?limit=2") == ["alpha", "bravo"]
        assert await names("?limit=2&offset=2") == ["charlie", "delta"]
        assert await names("?limit=2&offset=4") == ["echo"]  # shorter: the last page
        assert await names("?offset=3") == ["delta", "echo"]
        assert await names("?offset=5") == []
        assert await names("?limit=1000000") == ["alpha", "bravo", "charlie", "delta", "echo"]
        assert await names("") == ["alpha", "bravo", "charlie", "delta", "echo"]  # not a page
    # filters apply before the page
    status, body = await api.call("GET", f"{P}/schedule?status=active&limit=2&offset=1")
    assert status == 200 and [j["name"] for j in body] == ["bravo", "delta"]


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", "limit=x", "limit=", "limit=1.5",
                                   "offset=-1", "offset=y", "limit=1000001",
                                   "offset=1000000001"])
async def test_bad_page_parameters_are_422(api: Api, query: str) -> None:
    for route in ("schedule", "schedules"):
        status, body = await api.call("GET", f"{P}/{route}?{query}")
        assert status == 422 and body["code"] == "VALIDATION_FAILED"
        assert query.split("=")[0] in body["error"]


async def test_list_bodies_are_exactly_the_views(api: Api) -> None:
    seed_job(api.store, "nächtlich-é", input="grüße ✓", tags=("a", "ü"),
             timezone="Europe/Berlin", delivery=("stdout",))
    seed_job(api.store, "at-once", cron=None, at="2031-01-01T00:00:00Z")
    seed_job(api.store, "quoted \"name\"", input="line\nbreak\\")
    await _assert_lists_fresh(api)
    await _assert_lists_fresh(api)  # the second answer comes from the cache: the same bytes
    status, body, _ = await _raw(api, f"{P}/schedule?agent_id=echo&limit=2")
    assert body == _expected(api.store, "schedule", agent="echo", limit=2)
    assert [j["name"] for j in json.loads(body)] == ["at-once", "nächtlich-é"]


async def test_lists_follow_every_kind_of_change(api: Api, tmp_path: Path) -> None:
    for i in range(30):
        seed_job(api.store, f"job-{i:02d}", input=f"input {i}")
    await _assert_lists_fresh(api)
    # through the API (a management change on the shared store)
    status, _ = await api.call("POST", f"{P}/schedules/job-03/pause")
    assert status == 200
    await _assert_lists_fresh(api)
    # a scheduler-style write on the same connection, with no change notification
    with api.store.transaction() as conn:
        conn.execute("UPDATE jobs SET run_count = 41, last_run = ? WHERE name = 'job-07'",
                     (format_ts(datetime(2030, 1, 1, tzinfo=UTC)),))
    await _assert_lists_fresh(api)
    _, body = await api.call("GET", f"{P}/schedules")
    assert [j["run_count"] for j in body if j["name"] == "job-07"] == [41]
    # another process: a state change, a new definition, a deletion, a new job
    with SqliteStore.open(tmp_path / "state.db") as other:
        other.pause_job("job-11", actor="other")
        await _assert_lists_fresh(api)
        other.update_job("job-12", JobDef(name="job-12", agent="echo", cron="*/5 * * * *",
                                          input="changed"), actor="other")
        await _assert_lists_fresh(api)
        _, body = await api.call("GET", f"{P}/schedule")
        changed = next(j for j in body if j["name"] == "job-12")
        assert changed["cron"] == "*/5 * * * *" and changed["definition"]["input"] == "changed"
        other.remove_job("job-13", actor="other")
        seed_job(other, "job-99")
        await _assert_lists_fresh(api)
        _, body = await api.call("GET", f"{P}/schedules?offset=12&limit=2")
        assert [j["name"] for j in body] == ["job-12", "job-14"]  # job-13 is gone


async def test_health_follows_changes_and_the_lease_expiry(tmp_path: Path) -> None:
    t0 = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)
    clock = FakeClock(t0)
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)
    runner, base = await _serve(store, config())
    try:
        async with aiohttp.ClientSession(base, headers=AUTH) as s:
            async def health() -> dict[str, object]:
                async with s.get(f"{P}/health/scheduler") as r:
                    assert r.status == 200
                    out: dict[str, object] = await r.json()
                    return out

            first = await health()
            assert first["jobs_total"] == 0 and first["is_running"] is False
            with SqliteStore.open(tmp_path / "state.db", clock=clock) as other:
                seed_job(other, "one")
                assert (await health())["jobs_total"] == 1
                assert other.try_acquire_lease("elsewhere", 15, t0)
                assert (await health())["is_running"] is True
                clock.advance(timedelta(seconds=10))
                assert (await health())["is_running"] is True
                clock.advance(timedelta(seconds=6))  # expired, and nothing was written
                assert (await health())["is_running"] is False
                other.pause_job("one", actor="other")
                h = await health()
                assert h["jobs_active"] == 0 and h["jobs_paused"] == 1
    finally:
        await runner.cleanup()
        store.close()


def test_in_flight_counts_running_runs_through_the_index(store: SqliteStore) -> None:
    job = seed_job(store, "job")
    for i in range(3):
        store.request_manual_run(job.id, input=str(i), actor="t")
    metrics = CronMetrics(store)
    assert metrics.in_flight() == 0  # pending is not running
    with store.transaction() as conn:
        conn.execute("UPDATE runs SET status = 'running', owner = 'x' WHERE rowid IN "
                     "(SELECT rowid FROM runs LIMIT 2)")
    assert metrics.in_flight() == 2
    plan = " ".join(str(r) for r in store.query("EXPLAIN QUERY PLAN " + IN_FLIGHT_SQL))
    assert "ix_runs_inflight" in plan  # not a scan of the whole run history


def test_the_list_cache_stays_bounded_and_exact(store: SqliteStore,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime import api as api_module

    monkeypatch.setattr(api_module, "LIST_CACHE_ROWS", 4)
    monkeypatch.setattr(api_module, "LIST_CACHE_BODIES", 3)
    for i in range(7):
        seed_job(store, f"job-{i}")
    cache = api_module.ListCache()
    view = api_module._SDK_VIEW
    for _ in range(2):  # the second round answers from what the first one kept
        for offset in range(6):
            body = cache.body(store, view, limit=2, offset=offset)
            assert body == _expected(store, "schedules", limit=2, offset=offset)
            assert len(cache._bodies) <= 3
        assert cache.body(store, view) == _expected(store, "schedules")  # 7 > 4: not kept
        assert all(len(rows) <= 8 for rows in cache._rows.values())
    monkeypatch.setattr(api_module, "LIST_CACHE_BYTES", 200)  # a page of 2 is ~360 bytes
    big = cache.body(store, view, limit=2, offset=1)
    assert big == _expected(store, "schedules", limit=2, offset=1)
    assert (view[0], None, None, 2, 1) not in cache._bodies
