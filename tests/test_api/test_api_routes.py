"""The seed's routes (``/api/v1/schedule…``), runs and approvals against a real server."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from conftest import Api, seed_job

from compiler.ir import HeartbeatDef, SchedulePolicy
from runtime import audit
from runtime.api import job_view
from runtime.store import format_ts

P = "/api/v1"


async def test_create_with_seed_names_then_read_back(api: Api) -> None:
    status, job = await api.call("POST", f"{P}/schedule", {
        "name": "hourly-report", "agent_id": "echo", "cron_expr": "0 * * * *",
        "session_mode": "ephemeral_with_summary", "delivery": ["stdout"]})
    assert status == 201
    assert job["name"] == "hourly-report" and job["agent"] == job["agent_id"] == "echo"
    assert job["cron"] == job["cron_expr"] == "0 * * * *"
    assert job["id"] == job["job_id"] and job["id"].startswith("job_")
    assert job["status"] == "active" and job["origin"] == "api"
    assert job["definition"]["delivery"] == ["stdout"]
    assert job["warnings"] == []  # echo is a stdlib agent: defined along with the job
    nxt = datetime.fromisoformat(job["next_run"])
    assert nxt.minute == 0 and nxt.second == 0
    # stored: readable by id and by name, and the stdlib agent came with it
    row = api.store.get_job("hourly-report")
    assert row is not None and row.id == job["id"] and row.origin == "api"
    assert api.store.get_agent("echo") is not None
    for ref in (job["id"], "hourly-report"):
        status, got = await api.call("GET", f"{P}/schedule/{ref}")
        assert status == 200 and got["id"] == job["id"]
        assert "warnings" not in got


async def test_create_with_sdk_names_and_our_names(api: Api) -> None:
    status, a = await api.call("POST", f"{P}/schedule", {
        "name": "sdk-style", "agent_name": "echo", "cron_expression": "0 0 9 * * *",
        "timezone": "Europe/Berlin", "policy_ids": [], "one_shot": False})
    assert status == 201 and a["cron"] == "0 0 9 * * *" and a["timezone"] == "Europe/Berlin"
    nxt = datetime.fromisoformat(a["next_run"])
    assert nxt.utcoffset() == timedelta(0)  # times are UTC
    assert nxt.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin")).hour == 9
    status, b = await api.call("POST", f"{P}/schedule", {
        "name": "ours", "agent": "custom-agent", "cron": "*/5 * * * *", "max_retries": 2,
        "retry_backoff": "10s", "policy": {"max_runtime": "5m"}})
    assert status == 201
    assert b["definition"]["max_retries"] == 2
    assert b["definition"]["retry_backoff_seconds"] == 10.0
    assert b["definition"]["policy"]["max_runtime_seconds"] == 300.0
    assert b["warnings"] and "custom-agent" in b["warnings"][0]


async def test_list_filters_by_status_and_agent(api: Api) -> None:
    seed_job(api.store, "a1", agent="echo")
    seed_job(api.store, "a2", agent="reporter")
    seed_job(api.store, "a3", agent="reporter")
    api.store.pause_job("a3", actor="test")
    status, rows = await api.call("GET", f"{P}/schedule")
    assert status == 200 and [r["name"] for r in rows] == ["a1", "a2", "a3"]
    _, rows = await api.call("GET", f"{P}/schedule?status=active&agent_id=reporter")
    assert [r["name"] for r in rows] == ["a2"]
    _, rows = await api.call("GET", f"{P}/schedule?agent_name=reporter")
    assert [r["name"] for r in rows] == ["a2", "a3"]
    _, rows = await api.call("GET", f"{P}/schedule?status=paused")
    assert [r["name"] for r in rows] == ["a3"]
    status, err = await api.call("GET", f"{P}/schedule?status=sleeping")
    assert status == 422 and err["code"] == "VALIDATION_FAILED" and "sleeping" in err["error"]


async def test_update_changes_fields_and_recomputes_next_run(api: Api) -> None:
    row = seed_job(api.store, "report", cron="0 3 * * *")
    assert row.next_run is not None and row.next_run.hour == 3
    status, job = await api.call("PUT", f"{P}/schedule/report", {"cron_expr": "15 */2 * * *"})
    assert status == 200 and job["cron"] == "15 */2 * * *"
    nxt = datetime.fromisoformat(job["next_run"])
    assert nxt.minute == 15 and nxt.hour % 2 == 0
    stored = api.store.get_job(row.id)
    assert stored is not None and stored.next_run == nxt
    # other fields are kept; the SDK spelling works too; the name can change
    status, job = await api.call("PUT", f"{P}/schedule/{row.id}",
                                 {"cron_expression": "0 4 * * *", "input": "hi",
                                  "name": "report-v2"})
    assert status == 200 and job["name"] == "report-v2" and job["definition"]["input"] == "hi"
    assert datetime.fromisoformat(job["next_run"]).hour == 4
    assert job["agent"] == "echo" and job["id"] == row.id
    ev = api.store.audit_query(type=audit.CRON_JOB_UPDATED, limit=5)
    assert ev and ev[0].actor.startswith("api:") and ev[0].job_id == row.id


async def test_delete_pause_resume_reset(api: Api) -> None:
    row = seed_job(api.store, "j")
    status, job = await api.call("POST", f"{P}/schedule/j/pause")
    assert status == 200 and job["status"] == "paused"
    assert api.store.get_job("j").status == "paused"  # type: ignore[union-attr]
    status, job = await api.call("POST", f"{P}/schedule/j/resume")
    assert status == 200 and job["status"] == "active" and job["next_run"] is not None
    # a dead-lettered job cannot be resumed (409) but can be reset
    with api.store.transaction() as conn:
        conn.execute("UPDATE jobs SET status = 'dead_letter', next_run = NULL,"
                     " failure_count = 4 WHERE id = ?", (row.id,))
    status, err = await api.call("POST", f"{P}/schedule/j/resume")
    assert status == 409 and err["code"] == "INVALID_STATE" and "reset" in err["error"]
    status, job = await api.call("POST", f"{P}/schedule/j/reset")
    assert status == 200 and job["status"] == "active" and job["failure_count"] == 0
    status, out = await api.call("DELETE", f"{P}/schedule/j")
    assert status == 200 and out == {"job_id": row.id, "name": "j", "deleted": True}
    assert api.store.get_job(row.id) is None
    status, err = await api.call("GET", f"{P}/schedule/j")
    assert status == 404 and err["code"] == "SCHEDULE_NOT_FOUND"
    types = [e.type for e in api.store.audit_query(job=row.id, limit=20)]
    for t in (audit.CRON_JOB_PAUSED, audit.CRON_JOB_RESUMED, audit.CRON_JOB_RESET,
              audit.CRON_JOB_DELETED):
        assert t in types


async def test_run_with_input_queues_a_pending_api_run(api: Api) -> None:
    row = seed_job(api.store, "manual")
    status, run = await api.call("POST", f"{P}/schedule/manual/run",
                                 {"input": "Run with custom input"})
    assert status == 202
    assert run["status"] == "pending" and run["trigger"] == "api"
    assert run["input"] == "Run with custom input" and run["id"] == run["run_id"]
    stored = api.store.get_run(run["id"])
    assert stored is not None and stored.owner is None and stored.job_id == row.id
    # no body: the job's own input; an empty object too
    status, run2 = await api.call("POST", f"{P}/schedule/manual/run")
    assert status == 202 and run2["input"] == ""
    status, run3 = await api.call("POST", f"{P}/schedule/manual/run", {"input": None})
    assert status == 202
    ev = api.store.audit_query(type=audit.CRON_JOB_TRIGGERED, limit=5)
    assert len(ev) == 3 and all(e.actor.startswith("api:") for e in ev)


async def test_history_limit_and_status(api: Api) -> None:
    seed_job(api.store, "h")
    ids = []
    for i in range(5):
        run = api.store.request_manual_run("h", input=str(i), actor="test")
        ids.append(run.id)
    with api.store.transaction() as conn:
        conn.execute("UPDATE runs SET status = 'failed', error = 'boom' WHERE id = ?",
                     (ids[1],))
    status, runs = await api.call("GET", f"{P}/schedule/h/history?limit=3")
    assert status == 200 and [r["id"] for r in runs] == ids[::-1][:3]
    _, runs = await api.call("GET", f"{P}/schedule/h/history?limit=20&status=failed")
    assert [r["id"] for r in runs] == [ids[1]] and runs[0]["error"] == "boom"
    for bad in ("limit=0", "limit=x", "limit=100000", "status=exploded"):
        status, err = await api.call("GET", f"{P}/schedule/h/history?{bad}")
        assert status == 422, bad
    status, _ = await api.call("GET", f"{P}/schedule/nope/history")
    assert status == 404


async def test_next_run(api: Api) -> None:
    row = seed_job(api.store, "n", cron="0 12 * * *")
    status, out = await api.call("GET", f"{P}/schedule/n/next_run")
    assert status == 200 and out["job_id"] == row.id and out["status"] == "active"
    assert out["next_run"] == row.next_run.isoformat()  # type: ignore[union-attr]
    api.store.pause_job("n", actor="test")
    _, out = await api.call("GET", f"{P}/schedule/n/next_run")
    assert out["next_run"] is None and out["status"] == "paused"


async def test_get_run_with_deliveries(api: Api) -> None:
    seed_job(api.store, "d")
    run = api.store.request_manual_run("d", input="x", actor="test")
    now = format_ts(api.store.clock.now())
    with api.store.transaction() as conn:
        conn.execute("INSERT INTO deliveries (id, run_id, job_id, channel, status, attempts,"
                     " created_at, updated_at, last_error) VALUES (?,?,?,?,?,?,?,?,?)",
                     ("dl1", run.id, run.job_id, "webhook", "failed", 3, now, now, "HTTP 500"))
        conn.execute("INSERT INTO delivery_attempts (delivery_id, attempt, at, ok, status_code,"
                     " response, error) VALUES (?,?,?,?,?,?,?)",
                     ("dl1", 3, now, 0, 502, "bad gateway", "HTTP 502"))
    status, out = await api.call("GET", f"{P}/runs/{run.id}")
    assert status == 200 and out["id"] == run.id and out["approval"] is None
    assert out["deliveries"] == [{"id": "dl1", "run_id": run.id, "job_id": run.job_id,
                                  "channel": "webhook", "status": "failed", "attempts": 3,
                                  "next_attempt_at": None, "created_at": now,
                                  "updated_at": now, "last_error": "HTTP 500",
                                  "status_code": 502, "history": [
                                      {"attempt": 3, "at": now, "ok": False, "status_code": 502,
                                       "response": "bad gateway", "error": "HTTP 502"}]}]
    status, err = await api.call("GET", f"{P}/runs/no-such-run")
    assert status == 404 and err["code"] == "RUN_NOT_FOUND"


async def test_run_views_carry_llm_token_usage(api: Api) -> None:
    seed_job(api.store, "u")
    run = api.store.request_manual_run("u", input="x", actor="test")
    usage = {"provider": "openai", "model": "m", "prompt_tokens": 12, "completion_tokens": 5,
             "total_tokens": 17}
    with api.store.transaction() as conn:
        conn.execute("UPDATE runs SET usage = ? WHERE id = ?", (json.dumps(usage), run.id))
    status, out = await api.call("GET", f"{P}/runs/{run.id}")
    assert status == 200 and out["usage"] == usage
    status, hist = await api.call("GET", f"{P}/schedule/u/history")
    assert status == 200 and [r["usage"] for r in hist] == [usage]


def _awaiting(api: Api, job: str) -> str:
    run = api.store.request_manual_run(job, input="x", actor="test")
    now = api.store.clock.now()
    with api.store.transaction() as conn:
        conn.execute("UPDATE runs SET status = 'awaiting_approval', owner = 'sched' WHERE id = ?",
                     (run.id,))
        conn.execute("INSERT INTO approvals (run_id, job_id, approvers, requested_at,"
                     " expires_at) VALUES (?,?,?,?,?)",
                     (run.id, run.job_id, '["ops"]', format_ts(now),
                      format_ts(now + timedelta(hours=1))))
    return run.id


async def test_approve_and_reject(api: Api) -> None:
    seed_job(api.store, "gated")
    a = _awaiting(api, "gated")
    r = _awaiting(api, "gated")
    status, run = await api.call("POST", f"{P}/runs/{a}/approve")
    assert status == 200 and run["status"] == "pending" and run["owner"] is None
    status, run = await api.call("POST", f"{P}/runs/{r}/reject", {"reason": "not today"})
    assert status == 200 and run["status"] == "denied" and "not today" in run["error"]
    assert run["stop_reason"] == "policy:approval_rejected"
    _, detail = await api.call("GET", f"{P}/runs/{r}")
    assert detail["approval"]["decision"] == "rejected"
    assert detail["approval"]["reason"] == "not today"
    assert detail["approval"]["decided_by"].startswith("api:")
    _, detail = await api.call("GET", f"{P}/runs/{a}")
    assert detail["approval"]["decision"] == "approved"
    # deciding twice is a conflict; so is approving a run nobody asked about
    status, err = await api.call("POST", f"{P}/runs/{a}/approve")
    assert status == 409 and err["code"] == "INVALID_STATE" and "already approved" in err["error"]
    plain = api.store.request_manual_run("gated", input=None, actor="test")
    status, _ = await api.call("POST", f"{P}/runs/{plain.id}/reject")
    assert status == 409
    third = _awaiting(api, "gated")
    for body in ({"reason": "approvals take no reason"}, {"reason": 5}, [1]):
        status, err = await api.call("POST", f"{P}/runs/{third}/approve", body)
        assert status == 422, body
    status, err = await api.call("POST", f"{P}/runs/{third}/reject", {"reason": 5})
    assert status == 422
    assert api.store.get_run(third).status == "awaiting_approval"  # type: ignore[union-attr]
    types = [e.type for e in api.store.audit_query(limit=50)]
    assert audit.APPROVAL_GRANTED in types and audit.APPROVAL_REJECTED in types


def test_job_view_is_the_store_json_plus_the_seed_names(api: Api) -> None:
    row = seed_job(api.store, "full", tags=("a", "b"), delivery=("stdout",),
                   webhook_headers=(("X-A", "1"),), policy=SchedulePolicy(max_runtime_seconds=5),
                   heartbeat=HeartbeatDef(enabled=True))
    api.store.request_manual_run("full", input=None, actor="t")
    row = api.store.get_job(row.id)
    assert row is not None
    view = job_view(row)
    base = row.to_dict()
    assert {k: view[k] for k in base} == base
    assert set(view) - set(base) == {"job_id", "agent_id", "cron_expr"}
