"""`symbi serve` (the API without a scheduler loop) and `symbi up` with its API, as real
processes; and the API beside a standby scheduler whose address is taken."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from conftest import KEY, _serve, config

from runtime.api import ApiService, ApiStartError
from runtime.clock import SystemClock
from runtime.config import SchedulerConfig
from runtime.scheduler import Scheduler
from runtime.store import SqliteStore

SYMBI = Path(sys.executable).parent / "symbi"
URL = re.compile(r"(http://127\.0\.0\.1:\d+/api/v1)")
JOB = """agent "greeter" {
  command: "printf 'hi %s' \\"$SYMBI_INPUT\\""
}

schedule {
  name: "hourly"
  agent: "greeter"
  cron: "0 * * * *"
}
"""


async def _start(tmp_path: Path, *args: str, key: str | None = "cli-key"
                 ) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYMBI_")}
    if key:
        env["SYMBI_API_KEY"] = key
    (tmp_path / "symbi.toml").write_text("[api]\nport = 0\n")
    return await asyncio.create_subprocess_exec(
        str(SYMBI), "--store", str(tmp_path / "state.db"), *args, cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _url(proc: asyncio.subprocess.Process) -> tuple[str, str]:
    assert proc.stderr is not None
    seen = ""
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
        assert line, f"no API address in {seen!r}"
        seen += line
        m = URL.search(line)
        if m:
            return m.group(1), line


async def test_symbi_serve_serves_until_sigterm(tmp_path: Path) -> None:
    proc = await _start(tmp_path, "serve")
    try:
        base, line = await _url(proc)
        assert "Bearer API key required" in line and "no scheduler" in line
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer cli-key"}) as s:
            async with s.post(f"{base}/schedule", json={
                    "name": "from-serve", "agent_id": "echo", "cron_expr": "0 * * * *"}) as r:
                assert r.status == 201
            async with s.post(f"{base}/schedule/from-serve/run", json={"input": "x"}) as r:
                assert r.status == 202 and (await r.json())["status"] == "pending"
            async with s.get(f"{base}/health/scheduler") as r:
                health = await r.json()
            assert health["is_running"] is False and health["jobs_total"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    with SqliteStore.open(tmp_path / "state.db") as store:
        job = store.get_job("from-serve")
        assert job is not None and job.origin == "api"
        assert [r.status for r in store.list_runs("from-serve")] == ["pending"]


async def test_symbi_serve_refuses_a_public_address_without_a_key(tmp_path: Path) -> None:
    proc = await _start(tmp_path, "serve", "--host", "0.0.0.0", key=None)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1
    text = err.decode()
    assert text.startswith("error: refusing to serve the HTTP API on 0.0.0.0 without an API key")
    assert "Traceback" not in text


async def test_symbi_up_serves_the_api_and_runs_what_it_triggers(tmp_path: Path) -> None:
    (tmp_path / "jobs.symbi").write_text(JOB)
    proc = await _start(tmp_path, "up", "jobs.symbi", "--for", "20s")
    try:
        base, _ = await _url(proc)
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer cli-key"}) as s:
            async with s.post(f"{base}/schedules/hourly/trigger") as r:
                assert r.status == 200
            status = None
            for _ in range(400):  # the scheduler in the process picks it up at once
                async with s.get(f"{base}/schedules/hourly/history") as r:
                    history = (await r.json())["history"]
                status = history[0]["status"] if history else None
                if status == "succeeded":
                    break
                await asyncio.sleep(0.01)
            assert status == "succeeded"
            async with s.get(f"{base}/health/scheduler") as r:
                assert (await r.json())["is_running"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    assert "hourly" in out.decode()  # the run's line


async def test_up_without_api_serves_nothing(tmp_path: Path) -> None:
    (tmp_path / "jobs.symbi").write_text(JOB)
    proc = await _start(tmp_path, "up", "jobs.symbi", "--for", "1s", "--no-api")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert "HTTP API" not in err.decode()


async def test_a_busy_address_lets_the_scheduler_run_and_is_retried_on_takeover(
        tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    other, base = await _serve(store, config())  # another `symbi up` holds the address
    port = int(base.rsplit(":", 1)[1])
    sched = Scheduler(store, SchedulerConfig(), SystemClock(), owner_id="standby")
    lines: list[str] = []
    service = ApiService(store, config(port=port), sched, lines.append)
    await service.start()
    assert service.runner is None
    assert lines[0].startswith(f"warning: cannot serve the HTTP API on 127.0.0.1:{port}")
    await other.cleanup()  # the other one stops; this scheduler takes the lease over
    assert sched.on_event is not None
    sched.on_event("lease_acquired", {"owner": "standby"})
    for _ in range(200):
        if service.runner is not None:
            break
        await asyncio.sleep(0.005)
    assert service.runner is not None and lines[-1] == f"HTTP API on {base}/api/v1"
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/api/v1/schedules",
                         headers={"Authorization": f"Bearer {KEY}"}) as r:
            assert r.status == 200
    await service.close()
    assert service.runner is None
    store.close()


async def test_a_refused_configuration_stops_up(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    sched = Scheduler(store, SchedulerConfig(), SystemClock(), owner_id="x")
    service = ApiService(store, config(keys=(), host="0.0.0.0"), sched, print)
    with pytest.raises(ApiStartError, match="without an API key"):
        await service.start()
    store.close()


METRICS_JOBS = JOB.replace('  cron: "0 * * * *"\n', '  cron: "0 * * * *"\n  delivery: ["stdout"]\n') + """
agent "broken" {
  command: "echo boom >&2; exit 3"
}

agent "slow" {
  command: "sleep 1.2"
}

schedule {
  name: "flaky"
  agent: "broken"
  cron: "* * * * * *"
  max_retries: 0
}

schedule {
  name: "busy"
  agent: "slow"
  cron: "* * * * * *"
}
"""


async def test_symbi_up_exposes_every_documented_metric(tmp_path: Path) -> None:
    """A real `symbi up`: after a failure that dead-letters, a concurrency skip, a triggered
    success and its stdout delivery, GET /metrics (public, no key) is Prometheus text with
    every documented family and the right values."""
    from prometheus_client.parser import text_string_to_metric_families

    from runtime.metrics import metric_names

    (tmp_path / "jobs.symbi").write_text(METRICS_JOBS)
    proc = await _start(tmp_path, "up", "jobs.symbi", "--for", "30s")
    try:
        base, _ = await _url(proc)
        root = base.removesuffix("/api/v1")
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/schedules/hourly/trigger",
                              headers={"Authorization": "Bearer cli-key"}) as r:
                assert r.status == 200
            smp: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
            types: dict[str, str] = {}
            awaited = [("symbiont_cron_skipped_total",  # a busy occurrence (about 2 s)
                        (("job_name", "busy"), ("reason", "concurrency"))),
                       ("symbiont_cron_deliveries_total",
                        (("channel", "stdout"), ("status", "delivered"))),
                       ("symbiont_cron_dead_letter_total", (("job_name", "flaky"),))]
            for _ in range(500):  # until each of those has happened
                async with s.get(f"{root}/metrics") as r:
                    assert r.status == 200 and r.content_type == "text/plain"
                    text = await r.text()
                families = list(text_string_to_metric_families(text))
                types = {f.name: f.type for f in families}
                smp = {(x.name, tuple(sorted(x.labels.items()))): x.value
                       for f in families for x in f.samples}
                if all(smp.get(k) for k in awaited):
                    break
                await asyncio.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    # every documented name (the parser names a counter family without `_total`)
    exposed = {f"{n}_total" if t == "counter" else n for n, t in types.items()}
    assert exposed == set(metric_names())
    assert types["symbiont_cron_execution_duration_seconds"] == "histogram"
    assert types["symbiont_cron_in_flight_jobs"] == types["symbiont_cron_jobs"] == "gauge"

    def v(name: str, **labels: str) -> float:
        return smp.get((name, tuple(sorted(labels.items()))), 0.0)

    assert v("symbiont_cron_runs_total", job_name="flaky", status="failed") == 1
    assert v("symbiont_cron_dead_letter_total", job_name="flaky") == 1
    assert v("symbiont_cron_runs_total", job_name="hourly", status="succeeded") == 1
    assert v("symbiont_cron_deliveries_total", channel="stdout", status="delivered") == 1
    skipped = v("symbiont_cron_skipped_total", job_name="busy", reason="concurrency")
    assert skipped >= 1
    assert v("symbiont_cron_runs_total", job_name="busy", status="skipped") == skipped
    assert v("symbiont_cron_jobs", status="dead_letter") == 1
    assert v("symbiont_cron_jobs", status="active") == 2
    assert v("symbiont_cron_in_flight_jobs") in (0, 1)  # busy's run, if it is executing
    assert v("symbiont_cron_execution_duration_seconds_count", job_name="hourly") == 1
    assert v("symbiont_cron_execution_duration_seconds_bucket", job_name="hourly",
             le="+Inf") == 1
    assert v("symbiont_cron_fire_lateness_seconds_count") >= 2  # flaky's and busy's starts
