"""Fixtures for the HTTP API tests: a real server on 127.0.0.1 (port 0) over a real SQLite file.

``api`` runs the server on the test's event loop (clients: aiohttp, or sync clients through
``asyncio.to_thread``); ``live_server`` runs it on a loop in a background thread for
synchronous tools (schemathesis).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from compiler.ir import JobDef
from runtime.api import bound_address, start_api
from runtime.config import ApiConfig, Config, SchedulerConfig
from runtime.store import SqliteStore

KEY = "test-key-0123456789"
OTHER_KEY = "second-key-abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


def config(*, keys: tuple[str, ...] = (KEY,), **api: Any) -> Config:
    """A config serving on 127.0.0.1, any free port."""
    api.setdefault("host", "127.0.0.1")
    api.setdefault("port", 0)
    return Config(api=ApiConfig(api_keys=list(keys), **api),
                  scheduler=SchedulerConfig(max_concurrent_jobs=7))


@dataclass
class Api:
    """A running server and an authenticated client session."""

    base: str  # http://127.0.0.1:PORT
    session: aiohttp.ClientSession
    store: SqliteStore

    def url(self, path: str) -> str:
        return self.base + path

    async def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                   headers: dict[str, str] | None = None, auth: bool = True
                   ) -> tuple[int, Any]:
        """(status, parsed JSON body or text)."""
        h = dict(AUTH) if auth else {}
        h.update(headers or {})
        kw: dict[str, Any] = {"headers": h}
        if raw is not None:
            kw["data"] = raw
        elif body is not None:
            kw["json"] = body
        async with self.session.request(method, self.url(path), **kw) as resp:
            text = await resp.text()
            if resp.content_type == "application/json":
                import json

                return resp.status, json.loads(text)
            return resp.status, text


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.open(tmp_path / "state.db")
    yield s
    s.close()


async def _serve(store: SqliteStore, cfg: Config, scheduler: Any = None
                 ) -> tuple[aiohttp.web.AppRunner, str]:
    runner = await start_api(store, cfg, scheduler)
    host, port = bound_address(runner)
    return runner, f"http://{host}:{port}"


@pytest.fixture
async def api(store: SqliteStore) -> AsyncIterator[Api]:
    runner, base = await _serve(store, config())
    async with aiohttp.ClientSession() as session:
        yield Api(base, session, store)
    await runner.cleanup()


def seed_job(store: SqliteStore, name: str = "nightly", *, agent: str = "echo",
             cron: str = "30 2 * * *", **kw: Any) -> Any:
    """A job added straight to the store (with the stdlib echo agent defined)."""
    from compiler.compile import stdlib_agents

    agents = [stdlib_agents()["echo"][0]]
    return store.add_job(JobDef(name=name, agent=agent, cron=cron, **kw), origin="cli",
                         actor="test", agents=agents)


class LiveServer:
    """The API on its own event loop in a background thread (for synchronous clients)."""

    def __init__(self, store: SqliteStore, cfg: Config):
        self.store = store
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.base = ""
        self._runner: Any = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(_serve(self.store, self.cfg), self.loop)
        self._runner, self.base = fut.result(timeout=10)
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop thread (store access from the test)."""
        async def run() -> Any:
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout=10)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


# ---------------------------------------------------------------- metrics text


def samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition text."""
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def pick(smp: dict[Any, float], name: str, **labels: str) -> float:
    return smp.get((name, tuple(sorted(labels.items()))), 0.0)


def family(smp: dict[Any, float], prefix: str) -> dict[Any, float]:
    return {k: v for k, v in smp.items() if k[0].startswith(prefix)}
