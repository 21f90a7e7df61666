"""Bad input gets a clear JSON error with the right status and changes nothing; garbage never
yields a 500."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import AUTH, Api, LiveServer, config, seed_job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.api import MAX_BODY_BYTES
from runtime.store import SqliteStore

P = "/api/v1"
ERROR_KEYS = {"error", "code", "details"}


async def test_malformed_json_is_400(api: Api) -> None:
    for raw in (b"{bad", b"", b"   ", b"\xff\xfe{}", b'{"a": NaN}', b'{"a": 1e999}',
                b"[" * 5000 + b"]" * 5000, b'{"name": "\\ud800"}', b'{"a":1}{"b":2}'):
        status, err = await api.call("POST", f"{P}/schedule", raw=raw)
        assert status == 400, raw[:20]
        assert set(err) == ERROR_KEYS and err["code"] == "INVALID_JSON"
    assert api.store.list_jobs() == []


@pytest.mark.parametrize("body,needle", [
    ([1, 2], "expected a JSON object"),
    ("just a string", "expected a JSON object"),
    ({"name": 5, "agent": "echo", "cron": "* * * * *"}, "`name`: expected a string"),
    ({"name": "x", "agent": "echo", "cron": "* * * * *", "max_retries": "3"}, "max_retries"),
    ({"name": "x", "agent": "echo", "cron": "* * * * *", "enabled": "yes"}, "`enabled`"),
    ({"name": "x", "agent": "echo", "cron": "* * * * *", "tags": "a"}, "`tags`"),
    ({"name": "x", "agent": "echo"}, "one of `cron`"),
    ({"agent": "echo", "cron": "* * * * *"}, "`name` is required"),
    ({"name": "x", "cron": "* * * * *"}, "`agent` is required"),
    ({"name": "bad name!", "agent": "echo", "cron": "* * * * *"}, "`name`"),
    ({"name": "x", "agent": "echo", "cron": "* * * * *", "timezone": "Mars/Olympus"},
     "IANA"),
    ({"name": "x", "agent": "echo", "cron": "* * * * *", "timezone": "Europe"}, "IANA"),
    ({"name": "x", "agent": "echo", "cron": "* * * * *", "jitter": 1e300}, "`jitter`"),
    ({"name": "x", "agent": "echo", "cron": "* * * * *", "colour": "red"},
     "unknown field `colour`"),
    ({"name": "x", "agent_id": "a", "agent_name": "b", "cron": "* * * * *"}, "both given"),
    ({"name": "x", "agent": "echo", "at": "2001-01-01T00:00:00Z"}, "in the past"),
    ({"name": "x", "agent": "echo", "cron": "* * * * *", "policy_ids": ["p1"]}, "policy_ids"),
    ({"name": "x", "agent": "echo", "cron": "* * * * *", "policy": {"max_runtime": "forever"}},
     "policy.max_runtime"),
])
async def test_invalid_values_are_422(api: Api, body: Any, needle: str) -> None:
    for path in (f"{P}/schedule", f"{P}/schedules"):
        status, err = await api.call("POST", path, body)
        assert status == 422, (path, err)
        assert set(err) == ERROR_KEYS and err["code"] == "VALIDATION_FAILED"
        assert needle in err["error"] or any(needle in p for p in err["details"]["problems"])
    assert api.store.list_jobs() == []


async def test_bad_cron_is_422_with_a_pointed_message(api: Api) -> None:
    status, err = await api.call("POST", f"{P}/schedule", {
        "name": "x", "agent_id": "echo", "cron_expr": "0 25 * * *"})
    assert status == 422
    assert "hour 25 is out of range 0-23" in err["error"]
    problem = err["details"]["problems"][0]
    assert "0 25 * * *" in problem and "^^" in problem  # the caret under the field
    status, err = await api.call("POST", f"{P}/schedules", {
        "name": "x", "agent_name": "echo", "cron_expression": "every day"})
    assert status == 422 and "cron" in err["error"]


async def test_update_with_bad_values_changes_nothing(api: Api) -> None:
    row = seed_job(api.store, "keep", cron="0 1 * * *")
    for body in ({"cron_expr": "61 * * * *"}, {"timezone": "Nowhere/City"}, [1],
                 {"max_concurrent": 0}):
        status, _ = await api.call("PUT", f"{P}/schedule/keep", body)
        assert status == 422
    status, _ = await api.call("PUT", f"{P}/schedules/keep", raw=b"{")
    assert status == 400
    after = api.store.get_job("keep")
    assert after == row


async def test_duplicate_name_is_409(api: Api) -> None:
    seed_job(api.store, "taken")
    seed_job(api.store, "other")
    status, err = await api.call("POST", f"{P}/schedule", {
        "name": "taken", "agent_id": "echo", "cron_expr": "* * * * *"})
    assert status == 409 and err["code"] == "DUPLICATE_NAME" and "taken" in err["error"]
    status, err = await api.call("POST", f"{P}/schedules", {
        "name": "taken", "agent_name": "echo", "cron_expression": "* * * * *"})
    assert status == 409
    status, err = await api.call("PUT", f"{P}/schedule/other", {"name": "taken"})
    assert status == 409 and err["code"] == "DUPLICATE_NAME"
    assert sorted(j.name for j in api.store.list_jobs()) == ["other", "taken"]


async def test_wrong_state_is_409(api: Api) -> None:
    seed_job(api.store, "once", cron=None, at="2099-01-01T00:00:00+00:00")
    with api.store.transaction() as conn:
        conn.execute("UPDATE jobs SET status = 'completed' WHERE name = 'once'")
    for path in (f"{P}/schedule/once/pause", f"{P}/schedules/once/pause",
                 f"{P}/schedule/once/resume", f"{P}/schedules/once/resume"):
        status, err = await api.call("POST", path)
        assert status == 409 and err["code"] == "INVALID_STATE", path


async def test_too_large_body_is_413(api: Api) -> None:
    big = json.dumps({"name": "big", "agent": "echo", "cron": "* * * * *",
                      "input": "x" * MAX_BODY_BYTES}).encode()
    status, err = await api.call("POST", f"{P}/schedule", raw=big)
    assert status == 413 and err["code"] == "PAYLOAD_TOO_LARGE"
    assert api.store.list_jobs() == []
    # just under the limit is fine
    ok = json.dumps({"name": "big", "agent": "echo", "cron": "* * * * *",
                     "input": "x" * (MAX_BODY_BYTES - 200)}).encode()
    status, _ = await api.call("POST", f"{P}/schedule", raw=ok)
    assert status == 201


async def test_unknown_routes_and_methods_are_json(api: Api) -> None:
    status, err = await api.call("GET", f"{P}/nothing-here")
    assert status == 404 and set(err) == ERROR_KEYS and err["code"] == "NOT_FOUND"
    status, err = await api.call("PATCH", f"{P}/schedule")
    assert status == 405 and err["code"] == "METHOD_NOT_ALLOWED"
    status, err = await api.call("GET", f"{P}/schedule/%ED%A0%80")  # an encoded surrogate
    assert status == 404
    status, err = await api.call("GET", f"{P}/health/scheduler?format=xml")
    assert status == 422


async def test_bad_small_bodies(api: Api) -> None:
    seed_job(api.store, "r")
    for body in ([1], {"input": 5}, {"inptu": "x"}, "text"):
        status, err = await api.call("POST", f"{P}/schedule/r/run", body)
        assert status == 422, body
    status, _ = await api.call("POST", f"{P}/schedule/r/run", raw=b"{nope")
    assert status == 400
    assert api.store.list_runs("r") == []


# ---------------------------------------------------------------- property: never a 500


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    store = SqliteStore.open(tmp_path_factory.mktemp("garbage") / "state.db")
    with LiveServer(store, config()) as server:
        server.call(seed_job, store, "fixed")
        yield server
    store.close()


def _request(base: str, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[int, bytes, str]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.getheader("Content-Type", "")
    finally:
        conn.close()


ROUTE_TEMPLATES = ["/api/v1/schedule", "/api/v1/schedule/{}", "/api/v1/schedule/{}/pause",
                   "/api/v1/schedule/{}/resume", "/api/v1/schedule/{}/reset",
                   "/api/v1/schedule/{}/run", "/api/v1/schedule/{}/history",
                   "/api/v1/schedule/{}/next_run", "/api/v1/schedules",
                   "/api/v1/schedules/{}", "/api/v1/schedules/{}/trigger",
                   "/api/v1/schedules/{}/history", "/api/v1/schedules/{}/next-runs",
                   "/api/v1/runs/{}", "/api/v1/runs/{}/approve", "/api/v1/runs/{}/reject",
                   "/api/v1/health/scheduler"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["name", "agent", "agent_id", "cron", "cron_expr", "cron_expression",
                         "timezone", "input", "max_retries", "policy", "heartbeat", "at",
                         "delivery", "jitter", "reason", "one_shot", "x"]) | st.text(max_size=8),
        inner, max_size=6),
    max_leaves=12)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
       template=st.sampled_from(ROUTE_TEMPLATES),
       ref=st.sampled_from(["fixed", "missing"]) | st.text(
           alphabet=st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=12),
       query=st.sampled_from(["", "?limit=0", "?limit=abc", "?status=x", "?count=-1",
                              "?format=seed", "?limit=999999999999999999999", "?agent_id=%FF"]),
       body=st.one_of(st.none(), st.binary(max_size=64),
                      json_values.map(lambda v: json.dumps(v).encode())))
def test_garbage_never_yields_500(live: LiveServer, method: str, template: str, ref: str,
                                  query: str, body: bytes | None) -> None:
    from urllib.parse import quote

    path = template.format(quote(ref, safe="")) + query
    status, raw, ctype = _request(live.base, method, path, body, {
        **AUTH, "Content-Type": "application/json"})
    assert status < 500, (method, path, body, raw[:300])
    if status >= 400:
        assert ctype.startswith("application/json")
        assert set(json.loads(raw)) == ERROR_KEYS


async def test_an_unusable_store_is_503_and_health_says_so(api: Api) -> None:
    seed_job(api.store, "j")
    api.store.close()  # the database goes away under the server
    status, health = await api.call("GET", f"{P}/health/scheduler")
    assert status == 200 and health["store_accessible"] is False and health["jobs_total"] == 0
    status, seed = await api.call("GET", f"{P}/health/scheduler?format=seed")
    assert status == 200 and seed["status"] == "unhealthy"
    for method, path in (("GET", f"{P}/schedules"), ("POST", f"{P}/schedule/j/run"),
                         ("GET", "/metrics")):
        status, err = await api.call(method, path)
        assert status == 503, path
        assert err["code"] == "STORE_UNAVAILABLE"
