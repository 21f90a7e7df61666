"""Bearer API keys: required everywhere but health/metrics/openapi, hashed, constant-time;
no key → loopback only; the audit actor names the key."""

from __future__ import annotations

import hashlib
from pathlib import Path

import aiohttp
import pytest
from conftest import KEY, OTHER_KEY, Api, _serve, config, seed_job
from pydantic import SecretStr

from runtime import audit
from runtime.api import ApiKeyring, ApiStartError, check_bind, create_app, is_loopback, start_api
from runtime.config import load_config
from runtime.store import SqliteStore

P = "/api/v1"
PROTECTED = [("GET", f"{P}/schedule"), ("POST", f"{P}/schedule"),
             ("GET", f"{P}/schedule/x"), ("PUT", f"{P}/schedule/x"),
             ("DELETE", f"{P}/schedule/x"), ("POST", f"{P}/schedule/x/pause"),
             ("POST", f"{P}/schedule/x/resume"), ("POST", f"{P}/schedule/x/reset"),
             ("POST", f"{P}/schedule/x/run"), ("GET", f"{P}/schedule/x/history"),
             ("GET", f"{P}/schedule/x/next_run"), ("GET", f"{P}/schedules"),
             ("POST", f"{P}/schedules"), ("GET", f"{P}/schedules/x"),
             ("PUT", f"{P}/schedules/x"), ("DELETE", f"{P}/schedules/x"),
             ("POST", f"{P}/schedules/x/pause"), ("POST", f"{P}/schedules/x/resume"),
             ("POST", f"{P}/schedules/x/trigger"), ("GET", f"{P}/schedules/x/history"),
             ("GET", f"{P}/schedules/x/next-runs"), ("GET", f"{P}/runs/r"),
             ("POST", f"{P}/runs/r/approve"), ("POST", f"{P}/runs/r/reject")]
PUBLIC = [f"{P}/health/scheduler", f"{P}/metrics", "/metrics", f"{P}/openapi.json"]


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer", f"Basic {KEY}",
                                    f"bearer{KEY}", f"Bearer {KEY}x", "Bearer \u00e9\u00e9"])
async def test_protected_routes_need_a_valid_key(api: Api, header: str | None) -> None:
    seed_job(api.store, "x")
    before = api.store.audit_query(limit=1000)
    for method, path in PROTECTED:
        headers = {"Authorization": header} if header is not None else {}
        async with api.session.request(method, api.url(path), headers=headers,
                                       json={"name": "y", "agent": "echo", "cron": "* * * * *"}
                                       ) as resp:
            body = await resp.json()
            assert resp.status == 401, (method, path)
            assert body["code"] == "UNAUTHORIZED" and set(body) == {"error", "code", "details"}
            assert resp.headers.get("WWW-Authenticate") == "Bearer"
    # nothing changed
    assert api.store.audit_query(limit=1000) == before
    assert [j.name for j in api.store.list_jobs()] == ["x"]


async def test_public_routes_and_the_scheme_is_case_insensitive(api: Api) -> None:
    for path in PUBLIC:
        async with api.session.get(api.url(path)) as resp:
            assert resp.status == 200, path
    async with api.session.get(api.url(f"{P}/schedules"),
                               headers={"Authorization": f"bearer {KEY}"}) as resp:
        assert resp.status == 200


async def test_health_can_require_a_key(store: SqliteStore) -> None:
    runner, base = await _serve(store, config(public_health=False))
    try:
        async with aiohttp.ClientSession() as s:
            for path in PUBLIC[:3]:
                async with s.get(base + path) as resp:
                    assert resp.status == 401, path
                async with s.get(base + path, headers={"Authorization": f"Bearer {KEY}"}
                                 ) as resp:
                    assert resp.status == 200, path
    finally:
        await runner.cleanup()


async def test_audit_actor_is_the_key_id_and_both_keys_work(store: SqliteStore) -> None:
    runner, base = await _serve(store, config(keys=(KEY, OTHER_KEY)))
    try:
        async with aiohttp.ClientSession() as s:
            for i, key in enumerate((KEY, OTHER_KEY)):
                async with s.post(base + f"{P}/schedule",
                                  headers={"Authorization": f"Bearer {key}"},
                                  json={"name": f"j{i}", "agent_id": "echo",
                                        "cron_expr": "0 * * * *"}) as resp:
                    assert resp.status == 201
    finally:
        await runner.cleanup()
    created = store.audit_query(type=audit.CRON_JOB_CREATED, limit=10)
    actors = {e.job_name: e.actor for e in created}
    assert actors == {"j0": "api:" + hashlib.sha256(KEY.encode()).hexdigest()[:8],
                      "j1": "api:" + hashlib.sha256(OTHER_KEY.encode()).hexdigest()[:8]}


def test_keyring_keeps_digests_only() -> None:
    ring = ApiKeyring.from_keys([SecretStr(KEY), "", OTHER_KEY])
    assert len(ring.digests) == 2
    assert KEY not in repr(ring) and KEY.encode() not in b"".join(d for d, _ in ring.digests)
    assert ring.identify(KEY) == hashlib.sha256(KEY.encode()).hexdigest()[:8]
    assert ring.identify(KEY[:-1]) is None and ring.identify("") is None
    assert ring.identify("\ud800") is None  # not encodable: no crash
    assert not ApiKeyring.from_keys([])


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_loopback_needs_no_key(host: str) -> None:
    assert is_loopback(host)
    check_bind(host, ApiKeyring())


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "192.168.1.10", "example.com"])
def test_non_loopback_without_key_is_refused(host: str) -> None:
    with pytest.raises(ApiStartError, match="without an API key"):
        check_bind(host, ApiKeyring())
    check_bind(host, ApiKeyring.from_keys([KEY]))  # with a key: allowed


async def test_start_api_refuses_before_binding(store: SqliteStore) -> None:
    with pytest.raises(ApiStartError, match="SYMBI_API_KEY"):
        await start_api(store, config(keys=(), host="0.0.0.0"))


async def test_no_key_on_loopback_is_open_with_a_local_actor(store: SqliteStore) -> None:
    runner, base = await _serve(store, config(keys=()))
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(base + f"{P}/schedules", json={
                    "name": "open", "agent_name": "echo", "cron_expression": "0 * * * *"}
                    ) as resp:
                assert resp.status == 201
    finally:
        await runner.cleanup()
    ev = store.audit_query(type=audit.CRON_JOB_CREATED, limit=1)
    assert ev[0].actor == "api:local"


async def test_busy_port_is_a_clear_error(store: SqliteStore) -> None:
    runner, base = await _serve(store, config())
    try:
        port = int(base.rsplit(":", 1)[1])
        with pytest.raises(ApiStartError, match=f"127.0.0.1:{port}"):
            await start_api(store, config(port=port))
    finally:
        await runner.cleanup()


def test_symbi_api_key_from_the_environment_is_accepted(tmp_path: Path) -> None:
    cfg = load_config(env={"SYMBI_API_KEY": "from-env"})
    with SqliteStore.open(tmp_path / "s.db") as store:
        app = create_app(store, cfg)
        from runtime.api import STATE

        ring = app[STATE].keyring
        assert ring.identify("from-env") is not None and ring.identify("other") is None
