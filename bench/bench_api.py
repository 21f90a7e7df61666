"""Benchmark of the HTTP API; prints figures (not a pass/fail test).

A state database with 1,000 jobs is served by the API in its own process (``symbi serve``'s
code path: ``runtime.api.serve_api`` on 127.0.0.1, a Bearer key). A client with a fixed number
of concurrent connections then measures requests/second for:

- ``GET /api/v1/schedules``  (the SDK's list: 1,000 summaries per response)
- ``GET /api/v1/schedule``   (the seed's list: 1,000 full job views per response)
- ``POST /api/v1/schedules/{id}/trigger``  (a write transaction + audit event per request)
- ``POST /api/v1/schedule/{id}/run``       (the same with an input body)
- ``GET /api/v1/schedules/{id}``  and  ``GET /api/v1/health/scheduler``
- both lists again while another process (the role of a ``symbi up`` elsewhere) pauses or
  resumes a job every 5 ms: most responses cannot reuse the previous body, and are rebuilt
  from one query with the unchanged jobs' JSON reused (``runtime.api.ListCache``)

Run: .venv/bin/python bench/bench_api.py [--jobs 1000] [--seconds 3] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

KEY = "bench-key"
SERVER = """
import asyncio, sys
from runtime.api import serve_api
from runtime.config import ApiConfig, Config
from runtime.store import SqliteStore

store = SqliteStore.open(sys.argv[1])
config = Config(api=ApiConfig(host="127.0.0.1", port=0, api_keys=[sys.argv[2]]))
asyncio.run(serve_api(store, config, announce=lambda url: print(url, flush=True)))
"""
#: Changes one job every ``argv[2]`` seconds through its own connection until killed.
WRITER = """
import sys, time
from runtime.store import SqliteStore

store = SqliteStore.open(sys.argv[1])
ids = [j.id for j in store.list_jobs()]
i = 0
while True:
    ref = ids[(i // 2) % len(ids)]
    (store.pause_job if i % 2 == 0 else store.resume_job)(ref, actor="bench")
    i += 1
    time.sleep(float(sys.argv[2]))
"""


def make_store(path: Path, jobs: int) -> list[str]:
    """A state database with ``jobs`` jobs (deployed in one transaction); their ids."""
    from compiler.compile import stdlib_agents
    from compiler.ir import JobDef
    from runtime.store import SqliteStore

    with SqliteStore.open(path) as store:
        store.deploy([JobDef(name=f"job-{i:05d}", agent="echo", cron=f"{i % 60} * * * *",
                             timezone="Europe/Berlin", input=f"input {i}")
                      for i in range(jobs)], [stdlib_agents()["echo"][0]])
        return [j.id for j in store.list_jobs()]


async def measure(base: str, name: str, method: str, paths: list[str], body: object,
                  seconds: float, concurrency: int, db: Path | None = None
                  ) -> tuple[float, float, int]:
    """(requests/s, median latency ms, requests) over ``seconds`` with ``concurrency``
    clients, cycling through ``paths`` (``db``: with :data:`WRITER` changing it meanwhile)."""
    if db is not None:
        writer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(db), "0.005", cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            return await measure(base, name, method, paths, body, seconds, concurrency)
        finally:
            writer.kill()
            await writer.wait()
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, connector=connector,
                                     headers={"Authorization": f"Bearer {KEY}"}) as s:

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                path = paths[next(counter) % len(paths)]
                t0 = time.perf_counter()
                async with s.request(method, path, json=body) as resp:
                    await resp.read()
                    if resp.status >= 300:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{name}: {errors} requests failed")
    return len(latencies) / elapsed, statistics.median(latencies) * 1000, len(latencies)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "state.db"
        ids = make_store(db, args.jobs)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVER, str(db), KEY, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE)
        try:
            assert proc.stdout is not None
            url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
            m = re.match(r"(http://[^/]+)(/api/v1)$", url)
            if not m:
                raise SystemExit(f"server did not start: {url!r}")
            base, prefix = m.groups()
            cases = [
                ("list (SDK /schedules)", "GET", [f"{prefix}/schedules"], None),
                ("list (seed /schedule)", "GET", [f"{prefix}/schedule"], None),
                ("list SDK, writes 200/s", "GET", [f"{prefix}/schedules"], None),
                ("list seed, writes 200/s", "GET", [f"{prefix}/schedule"], None),
                ("get one (SDK)", "GET", [f"{prefix}/schedules/{i}" for i in ids], None),
                ("trigger (SDK)", "POST", [f"{prefix}/schedules/{i}/trigger" for i in ids],
                 None),
                ("run with input (seed)", "POST", [f"{prefix}/schedule/{i}/run" for i in ids],
                 {"input": "bench"}),
                ("health", "GET", [f"{prefix}/health/scheduler"], None),
            ]
            print(f"HTTP API, {args.jobs} jobs, {args.concurrency} concurrent clients, "
                  f"{args.seconds:g} s per case (server in its own process)")
            print(f"{'case':<24} {'req/s':>9} {'median ms':>10} {'requests':>9}")
            for name, method, paths, body in cases:
                rps, med, n = await measure(base, name, method, paths, body, args.seconds,
                                            args.concurrency,
                                            db if "writes" in name else None)
                print(f"{name:<24} {rps:>9.0f} {med:>10.2f} {n:>9}")
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


if __name__ == "__main__":
    asyncio.run(main())
