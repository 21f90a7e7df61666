"""Compatibility with the upstream Python SDK (``symbiont-sdk`` from PyPI), unmodified.

Its ``ScheduleClient`` builds dataclasses with ``Dataclass(**json)``: a key more or less in any
response raises TypeError, so driving every method is the strongest check of the key sets
(upstream.md §5). The SDK is synchronous (requests); it runs in a worker thread while the
server runs on the test's loop. The key sets are also asserted directly against the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from typing import Any

import pytest
from conftest import KEY, Api, seed_job
from symbiont import Client
from symbiont.config import AuthConfig, ClientConfig
from symbiont.exceptions import AuthenticationError, NotFoundError
from symbiont.schedules import (
    CreateScheduleRequest,
    CreateScheduleResponse,
    DeleteScheduleResponse,
    NextRunsResponse,
    ScheduleActionResponse,
    ScheduleDetail,
    SchedulerHealthResponse,
    ScheduleRunEntry,
    ScheduleSummary,
    UpdateScheduleRequest,
)

P = "/api/v1"


def sdk(api: Api, key: str = KEY) -> Client:
    # the SDK insists on a JWT secret for its own (unused here) token handling
    return Client(config=ClientConfig(api_key=key, base_url=f"{api.base}/api/v1", timeout=10,
                                      max_retries=0, auth=AuthConfig(jwt_secret_key="x" * 32)))


def keys(cls: Any) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


async def test_sdk_schedule_client_end_to_end(api: Api) -> None:
    client = sdk(api)
    sc = client.schedules

    def run(fn: Any, *args: Any) -> Any:
        return asyncio.to_thread(fn, *args)

    created = await run(sc.create_schedule, CreateScheduleRequest(
        name="sdk-job", cron_expression="0 0 9 * * *", agent_name="echo",
        timezone="America/New_York"))
    assert isinstance(created, CreateScheduleResponse) and created.status == "created"
    assert created.job_id.startswith("job_") and created.next_run is not None
    row = api.store.get_job(created.job_id)
    assert row is not None and row.definition.cron == "0 0 9 * * *"
    assert row.definition.timezone == "America/New_York"

    listed = await run(sc.list_schedules)
    assert [type(s) for s in listed] == [ScheduleSummary]
    assert listed[0].job_id == created.job_id and listed[0].enabled is True

    detail = await run(sc.get_schedule, created.job_id)
    assert isinstance(detail, ScheduleDetail) and detail.name == "sdk-job"
    assert detail.next_run == created.next_run and detail.one_shot is False

    updated = await run(sc.update_schedule, created.job_id,
                        UpdateScheduleRequest(cron_expression="0 30 6 * * *"))
    assert updated.cron_expression == "0 30 6 * * *"
    assert updated.next_run != detail.next_run  # recomputed for the new expression
    assert datetime.fromisoformat(updated.next_run).minute == 30

    paused = await run(sc.pause_schedule, created.job_id)
    assert paused == ScheduleActionResponse(created.job_id, "pause", "paused")
    assert (await run(sc.get_schedule, created.job_id)).enabled is False
    resumed = await run(sc.resume_schedule, created.job_id)
    assert resumed == ScheduleActionResponse(created.job_id, "resume", "active")

    triggered = await run(sc.trigger_schedule, created.job_id)
    assert triggered == ScheduleActionResponse(created.job_id, "trigger", "triggered")
    runs = api.store.list_runs(created.job_id)
    assert len(runs) == 1 and runs[0].trigger == "api" and runs[0].status == "pending"

    history = await run(sc.get_schedule_history, created.job_id)
    assert history.job_id == created.job_id
    assert [type(h) for h in history.history] == [ScheduleRunEntry]
    assert history.history[0].run_id == runs[0].id

    nxt = await run(sc.get_schedule_next_runs, created.job_id, 4)
    assert isinstance(nxt, NextRunsResponse) and len(nxt.next_runs) == 4
    times = [datetime.fromisoformat(t) for t in nxt.next_runs]
    assert times == sorted(times) and len(set(times)) == 4

    health = await run(sc.get_scheduler_health)
    assert isinstance(health, SchedulerHealthResponse)
    assert health.jobs_total == 1 and health.jobs_active == 1 and health.store_accessible
    assert health.max_concurrent == 7

    deleted = await run(sc.delete_schedule, created.job_id)
    assert deleted == DeleteScheduleResponse(created.job_id, True)
    assert api.store.get_job(created.job_id) is None
    with pytest.raises(NotFoundError):
        await run(sc.get_schedule, created.job_id)


async def test_sdk_sees_401_as_authentication_error(api: Api) -> None:
    client = sdk(api, key="wrong-key")
    with pytest.raises(AuthenticationError):
        await asyncio.to_thread(client.schedules.list_schedules)


async def test_key_sets_are_exactly_the_sdk_dataclasses(api: Api) -> None:
    row = seed_job(api.store, "k")
    api.store.request_manual_run("k", input=None, actor="test")
    checks = [
        ("GET", f"{P}/schedules", None, lambda b: b[0], ScheduleSummary, 8),
        ("GET", f"{P}/schedules/k", None, lambda b: b, ScheduleDetail, 13),
        ("GET", f"{P}/schedules/k/history", None, lambda b: b["history"][0],
         ScheduleRunEntry, 6),
        ("GET", f"{P}/schedules/k/next-runs", None, lambda b: b, NextRunsResponse, 2),
        ("GET", f"{P}/health/scheduler", None, lambda b: b, SchedulerHealthResponse, 13),
        ("POST", f"{P}/schedules/k/pause", None, lambda b: b, ScheduleActionResponse, 3),
        ("POST", f"{P}/schedules/k/trigger", None, lambda b: b, ScheduleActionResponse, 3),
        ("POST", f"{P}/schedules", {"name": "k2", "cron_expression": "0 * * * *",
                                    "agent_name": "echo", "timezone": "UTC",
                                    "policy_ids": [], "one_shot": False},
         lambda b: b, CreateScheduleResponse, 3),
        ("DELETE", f"{P}/schedules/k2", None, lambda b: b, DeleteScheduleResponse, 2),
    ]
    for method, path, body, pick, cls, n in checks:
        status, out = await api.call(method, path, body)
        assert 200 <= status < 300, (path, out)
        got = set(pick(out))
        assert got == keys(cls) and len(got) == n, (path, got ^ keys(cls))
        cls(**pick(out))  # what the SDK does
    _, hist = await api.call("GET", f"{P}/schedules/k/history")
    assert set(hist) == {"job_id", "history"} and hist["job_id"] == row.id
