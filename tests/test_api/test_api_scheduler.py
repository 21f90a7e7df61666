"""The API and a scheduler in one process sharing the store (what `symbi up` runs): a
triggered run is picked up at once (the store's change listener wakes the loop), health
reports the running scheduler, metrics count the run from the scheduler's events."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from conftest import AUTH, _serve, config, pick, samples, seed_job

from runtime.clock import SystemClock
from runtime.config import SchedulerConfig
from runtime.scheduler import Scheduler
from runtime.store import SqliteStore

P = "/api/v1"


async def test_trigger_is_picked_up_by_the_scheduler_in_the_same_process(
        tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    seed_job(store, "now", cron="0 0 1 1 *")  # never due during the test
    # a long tick: only the change listener can make the scheduler notice the trigger quickly
    sched = Scheduler(store, SchedulerConfig(tick_interval_seconds=30), SystemClock(),
                      owner_id="api-test")
    runner, base = await _serve(store, config(), sched)
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run(stop))
    try:
        async with aiohttp.ClientSession(headers=AUTH) as s:
            for _ in range(200):  # wait for the lease (milliseconds)
                if sched.holds_lease:
                    break
                await asyncio.sleep(0.005)
            async with s.get(base + f"{P}/health/scheduler") as resp:
                assert (await resp.json())["is_running"] is True
            t0 = time.monotonic()
            async with s.post(base + f"{P}/schedule/now/run", json={"input": "ping"}) as resp:
                assert resp.status == 202
                run_id = (await resp.json())["id"]
            status = None
            while time.monotonic() - t0 < 5:
                async with s.get(base + f"{P}/runs/{run_id}") as resp:
                    run = await resp.json()
                status = run["status"]
                if status == "succeeded":
                    break
                await asyncio.sleep(0.005)
            elapsed = time.monotonic() - t0
            assert status == "succeeded" and run["output"] == "ping"
            assert elapsed < 2  # far below the 30 s tick
            async with s.get(base + "/metrics") as resp:
                smp = samples(await resp.text())
            assert pick(smp, "symbiont_cron_runs_total", job_name="now",
                        status="succeeded") == 1
            async with s.get(base + f"{P}/health/scheduler?format=seed") as resp:
                seed = await resp.json()
            assert seed["status"] == "healthy" and seed["metrics"]["runs_succeeded"] == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await runner.cleanup()
        store.close()
