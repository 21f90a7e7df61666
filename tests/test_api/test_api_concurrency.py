"""Many concurrent clients against two servers sharing one state database (two connections,
two threads — like two processes): nothing is lost and no name is taken twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
from conftest import AUTH, LiveServer, _serve, config

from runtime import audit
from runtime.store import SqliteStore

P = "/api/v1"


async def test_concurrent_creates_and_triggers(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store_a = SqliteStore.open(db)
    store_b = SqliteStore.open(db)
    runner, base_a = await _serve(store_a, config())
    try:
        with LiveServer(store_b, config()) as b:
            bases = [base_a, b.base]
            conn = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=conn, headers=AUTH) as s:

                async def post(i: int, path: str, body: object) -> tuple[int, dict]:
                    async with s.post(bases[i % 2] + path, json=body) as resp:
                        return resp.status, await resp.json()

                # 60 distinct jobs, half with each naming style, through both servers
                unique = [post(i, f"{P}/schedule" if i % 3 else f"{P}/schedules",
                               {"name": f"job-{i}", "agent_id": "echo",
                                "cron_expr": "0 * * * *"} if i % 2 else
                               {"name": f"job-{i}", "agent_name": "echo",
                                "cron_expression": "0 0 * * * *"})
                          for i in range(60)]
                # 40 clients racing for the same name
                racing = [post(i, f"{P}/schedule", {"name": "contested", "agent": "echo",
                                                    "cron": "*/5 * * * *", "input": str(i)})
                          for i in range(40)]
                results = await asyncio.gather(*unique, *racing)
                assert [st for st, _ in results[:60]] == [201] * 60
                race = Counter(st for st, _ in results[60:])
                assert race == {201: 1, 409: 39}, race

                # 10 triggers per job for 20 jobs, through both servers and both APIs
                trig = []
                for j in range(20):
                    for k in range(10):
                        path = (f"{P}/schedule/job-{j}/run" if k % 2
                                else f"{P}/schedules/job-{j}/trigger")
                        trig.append(post(k, path, {"input": f"{j}-{k}"}))
                statuses = Counter(st for st, _ in await asyncio.gather(*trig))
                assert statuses == {202: 100, 200: 100}, statuses
    finally:
        await runner.cleanup()
    names = [j.name for j in store_a.list_jobs()]
    assert len(names) == len(set(names)) == 61
    assert sorted(names) == sorted([f"job-{i}" for i in range(60)] + ["contested"])
    for j in range(20):
        runs = store_a.list_runs(f"job-{j}", limit=100)
        assert len(runs) == 10 and {r.trigger for r in runs} == {"api"}
        assert sorted(r.input for r in runs) == sorted(f"{j}-{k}" for k in range(10))
    created = store_a.audit_query(type=audit.CRON_JOB_CREATED, limit=1000)
    assert len(created) == 61
    assert store_a.audit_verify().ok
    store_a.close()
    store_b.close()
