"""The seed's curl examples (the Scheduling Guide's "HTTP-API-Endpunkte"), as written — only
the host is the test server's and the API key header is added — run with the real curl."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from conftest import KEY, Api, seed_job

# verbatim from the seed (seed/000_f3c01f7e5830e786.txt), in its order
SEED_EXAMPLES = [
    """curl -X POST http://localhost:8080/api/v1/schedule \\
  -H "Content-Type: application/json" \\
  -d '{
    "name": "hourly-report",
    "agent_id": "reporter",
    "cron_expr": "0 * * * *",
    "session_mode": "ephemeral_with_summary",
    "delivery": ["stdout"]
  }'""",
    """curl "http://localhost:8080/api/v1/schedule?status=active&agent_id=reporter\"""",
    """curl http://localhost:8080/api/v1/schedule/job-123""",
    """curl -X PUT http://localhost:8080/api/v1/schedule/job-123 \\
  -H "Content-Type: application/json" \\
  -d '{"cron_expr": "0 */2 * * *"}'""",
    """curl -X DELETE http://localhost:8080/api/v1/schedule/job-123""",
    """curl -X POST http://localhost:8080/api/v1/schedule/job-123/pause""",
    """curl -X POST http://localhost:8080/api/v1/schedule/job-123/resume""",
    """curl -X POST http://localhost:8080/api/v1/schedule/job-123/run \\
  -H "Content-Type: application/json" \\
  -d '{"input": "Run with custom input"}'""",
    """curl "http://localhost:8080/api/v1/schedule/job-123/history?limit=20&status=failed\"""",
    """curl http://localhost:8080/api/v1/schedule/job-123/next_run""",
    """curl http://localhost:8080/api/v1/health/scheduler""",
]


async def curl(api: Api, example: str) -> tuple[int, Any]:
    """Run an example against the test server with the key header; (status, JSON body)."""
    host = api.base.removeprefix("http://")
    cmd = (example.replace("localhost:8080", host)
           + f' -H "Authorization: Bearer {KEY}" -s -w "\\n%{{http_code}}"')
    proc = await asyncio.create_subprocess_shell(
        cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    body, _, code = out.decode().rpartition("\n")
    return int(code), json.loads(body)


async def test_seed_curl_examples_as_written(api: Api) -> None:
    seed_job(api.store, "job-123", agent="reporter", cron="0 * * * *")
    results = []
    for example in SEED_EXAMPLES:
        if "DELETE" not in example and api.store.get_job("job-123") is None:
            seed_job(api.store, "job-123", agent="reporter", cron="0 * * * *")  # after DELETE
        results.append(await curl(api, example))
    (create, listed, got, put, deleted, paused, resumed, run, history, nxt, health) = results
    assert create[0] == 201 and create[1]["name"] == "hourly-report"
    assert create[1]["definition"]["session_mode"] == "ephemeral_with_summary"
    assert create[1]["definition"]["delivery"] == ["stdout"]
    assert "reporter" in create[1]["warnings"][0]  # no such agent deployed yet: said so
    assert listed[0] == 200
    assert sorted(j["name"] for j in listed[1]) == ["hourly-report", "job-123"]
    assert got[0] == 200 and got[1]["name"] == "job-123"
    assert put[0] == 200 and put[1]["cron_expr"] == "0 */2 * * *"
    assert deleted[0] == 200 and deleted[1]["deleted"] is True
    assert paused[0] == 200 and paused[1]["status"] == "paused"
    assert resumed[0] == 200 and resumed[1]["status"] == "active"
    assert run[0] == 202 and run[1]["input"] == "Run with custom input"
    assert history == (200, [])  # no failed runs
    assert nxt[0] == 200 and nxt[1]["next_run"] is not None
    assert health[0] == 200 and health[1]["jobs_total"] == 2  # the SDK shape (see api.py)
    # the seed's documented health shape, with the parameter
    code, seed_health = await curl(
        api, "curl http://localhost:8080/api/v1/health/scheduler?format=seed")
    assert code == 200
    assert set(seed_health) == {"status", "active_jobs", "paused_jobs", "in_flight_jobs",
                                "metrics"}
    assert set(seed_health["metrics"]) == {"runs_total", "runs_succeeded", "runs_failed",
                                           "avg_execution_time_ms"}
    assert seed_health["active_jobs"] == 2


async def test_seed_examples_without_the_key_are_refused(api: Api) -> None:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
        api.url("/api/v1/schedule/job-123"), stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    assert out.decode() == "401"
