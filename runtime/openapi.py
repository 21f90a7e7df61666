"""The OpenAPI 3 document of the HTTP API (served at ``/api/v1/openapi.json``).

Written by hand next to ``runtime.api.ROUTES``; ``tests/test_api/test_openapi.py`` checks that
every route is documented and every documented operation exists, and runs schemathesis
against a live server to check that responses match these schemas (the SDK shapes are closed:
``additionalProperties: false`` with every key required, as the SDK's dataclasses demand).
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from compiler.ir import AUDIT_LEVELS, BUILTIN_CHANNELS, CATCHUP_POLICIES, SESSION_MODES
from runtime.api import MAX_OFFSET, MAX_PAGE
from runtime.store import JOB_STATUSES, RUN_COLUMNS, RUN_STATUSES

P = "/api/v1"


def _s(type_: str, **kw: Any) -> dict[str, Any]:
    return {"type": type_, **kw}


def _n(type_: str, **kw: Any) -> dict[str, Any]:
    """A nullable scalar."""
    return {"type": type_, "nullable": True, **kw}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _closed(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props,
            "required": list(props) if required is None else required,
            "additionalProperties": False}


_TIME = _n("string", format="date-time")
_DURATION = {"oneOf": [_s("string"), _s("number", minimum=0)], "nullable": True,
             "description": "a duration such as \"30s\", \"5m\", \"1h30m\", or seconds; "
                            "null restores the default"}
_STRINGS = _s("array", items=_s("string"))

_JOB_FIELDS: dict[str, Any] = {
    "name": _s("string", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"),
    "agent": _s("string", description="agent name (also `agent_id`, `agent_name`)"),
    "agent_id": _s("string", description="the seed's name for `agent`"),
    "agent_name": _s("string", description="the upstream SDK's name for `agent`"),
    "cron": _n("string", description="cron expression: 5 fields, or 6/7 with seconds first"),
    "cron_expr": _n("string", description="the seed's name for `cron`"),
    "cron_expression": _n("string", description="the upstream SDK's name for `cron`"),
    "schedule": _n("string", description="another name for `cron`"),
    "at": _n("string", description="one-shot ISO-8601 time instead of a cron expression"),
    "timezone": _n("string", description="IANA zone name; default UTC"),
    "description": _n("string"),
    "tags": _STRINGS,
    "enabled": _s("boolean"),
    "one_shot": _s("boolean"),
    "input": _n("string"),
    "session_mode": _s("string", enum=list(SESSION_MODES)),
    "heartbeat": {"type": "object", "nullable": True, "additionalProperties": False,
                  "properties": {"enabled": _s("boolean"),
                                 "context_mode": _s("string", enum=list(SESSION_MODES)),
                                 "max_iterations": _s("integer", minimum=1),
                                 "iteration_timeout": _DURATION}},
    "delivery": _s("array", items=_s("string", enum=list(BUILTIN_CHANNELS))),
    "deliver": _n("string", description="delivery URI, e.g. slack://#ops"),
    "webhook_url": _n("string"),
    "webhook_headers": _s("object", additionalProperties=_s("string")),
    "webhook_method": _s("string", enum=["POST", "PUT", "PATCH"]),
    "webhook_secret": _n("string"),
    "slack_channel": _n("string"),
    "slack_webhook_url": _n("string"),
    "email_recipients": _STRINGS,
    "email_subject": _n("string"),
    "log_file": _n("string"),
    "policy": {"type": "object", "nullable": True, "additionalProperties": False,
               "properties": {
                   "require_approval": _s("boolean"), "approvers": _STRINGS,
                   "approval_timeout": _DURATION, "max_runtime": _DURATION,
                   "require_capabilities": _STRINGS,
                   "allowed_hours": _closed({"start": _s("string"), "end": _s("string"),
                                             "timezone": _s("string")}, ["start", "end"]),
                   "allowed_environments": _STRINGS, "require_agent_pin": _s("boolean")}},
    "policy_ids": {**_STRINGS, "nullable": True,
                   "description": "the SDK's field; only an empty list is accepted"},
    "max_concurrent": _s("integer", minimum=1),
    "max_retries": _n("integer", minimum=0),
    "retry_backoff": _DURATION,
    "retry_backoff_seconds": _s("number", minimum=0),
    "jitter": _DURATION,
    "jitter_seconds": _n("number", minimum=0),
    "catchup": _s("string", enum=list(CATCHUP_POLICIES)),
    "catchup_window": _DURATION,
    "catchup_window_seconds": _s("number", minimum=0),
    "agent_pin_jwt": _n("string"),
    "audit": _s("string", enum=list(AUDIT_LEVELS)),
}

_RUN_TYPES: dict[str, Any] = {
    "id": _s("string"), "job_id": _s("string"), "job_name": _s("string"),
    "scheduled_for": _s("string", format="date-time"),
    "trigger": _s("string", enum=["schedule", "catchup", "manual", "retry", "api"]),
    "status": _s("string", enum=list(RUN_STATUSES)), "attempt": _s("integer"),
    "retry_of": _n("string"), "owner": _n("string"), "due_at": _TIME,
    "created_at": _s("string", format="date-time"), "started_at": _TIME, "finished_at": _TIME,
    "duration_ms": _n("integer"), "lateness_ms": _n("integer"), "jitter_ms": _n("integer"),
    "start_delay_ms": _n("integer"), "input": _n("string"), "output": _n("string"),
    "summary": _n("string"), "error": _n("string"), "stop_reason": _n("string"),
    "exit_code": _n("integer"),
}
assert set(_RUN_TYPES) == set(RUN_COLUMNS)
# token usage of llm runs (null for other executors): prompt/completion/total tokens, model …
_RUN_TYPES["usage"] = {"type": "object", "nullable": True,
                       "description": "token usage of an llm run (null otherwise)"}

SCHEMAS: dict[str, Any] = {
    "Error": _closed({"error": _s("string"), "code": _s("string"),
                      "details": {"nullable": True, "description": "e.g. {problems: [...]}"}}),
    "JobSpec": {"type": "object", "properties": _JOB_FIELDS, "required": ["name"],
                "additionalProperties": False,
                "description": "A job definition. Give the agent (`agent`, `agent_id` or "
                               "`agent_name`) and a schedule (`cron`, `cron_expr`, "
                               "`cron_expression` or `at`)."},
    "JobUpdate": {"type": "object", "properties": _JOB_FIELDS, "additionalProperties": False,
                  "description": "The fields to change; the others keep their values."},
    "Job": {
        "type": "object",
        "properties": {
            "id": _s("string"), "job_id": _s("string"), "name": _s("string"),
            "agent": _s("string"), "agent_id": _s("string"), "cron": _n("string"),
            "cron_expr": _n("string"), "at": _n("string"), "timezone": _s("string"),
            "status": _s("string", enum=list(JOB_STATUSES)),
            "origin": _s("string", enum=["bundle", "cli", "api"]), "next_run": _TIME,
            "last_run": _TIME, "run_count": _s("integer"), "failure_count": _s("integer"),
            "consecutive_failures": _s("integer"),
            "created_at": _s("string", format="date-time"),
            "updated_at": _s("string", format="date-time"),
            "definition": _s("object", description="the full job definition"),
            "warnings": {**_STRINGS, "description": "create/update only"},
        },
        "required": ["id", "job_id", "name", "agent", "agent_id", "cron", "cron_expr", "at",
                     "timezone", "status", "origin", "next_run", "last_run", "run_count",
                     "failure_count", "consecutive_failures", "created_at", "updated_at",
                     "definition"],
        "additionalProperties": False,
    },
    "Run": _closed({**_RUN_TYPES, "run_id": _s("string")}),
    "RunDetail": _closed({
        **_RUN_TYPES, "run_id": _s("string"),
        "deliveries": _s("array", items=_closed({
            "id": _s("string"), "run_id": _s("string"), "job_id": _s("string"),
            "channel": _s("string"),
            "status": _s("string", enum=["pending", "retrying", "delivered", "failed"]),
            "attempts": _s("integer"), "next_attempt_at": _TIME,
            "created_at": _s("string", format="date-time"),
            "updated_at": _s("string", format="date-time"), "last_error": _n("string"),
            "status_code": _n("integer"),
            "history": _s("array", items=_closed({
                "attempt": _s("integer"), "at": _s("string", format="date-time"),
                "ok": _s("boolean"), "status_code": _n("integer"), "response": _n("string"),
                "error": _n("string")}))})),
        "approval": {**_closed({
            "run_id": _s("string"), "job_id": _s("string"), "job_name": _n("string"),
            "approvers": _STRINGS, "requested_at": _s("string", format="date-time"),
            "expires_at": _s("string", format="date-time"),
            "decision": _n("string", enum=["approved", "rejected", "expired"]),
            "decided_by": _n("string"), "decided_at": _TIME, "reason": _n("string")}),
            "nullable": True}}),
    "RunInput": {"type": "object", "properties": {"input": _n("string")},
                 "additionalProperties": False},
    "Rejection": {"type": "object", "properties": {"reason": _n("string")},
                  "additionalProperties": False},
    "Approval": {"type": "object", "properties": {}, "additionalProperties": False,
                 "description": "no fields (an approval records no reason)"},
    "Deleted": _closed({"job_id": _s("string"), "name": _s("string"),
                        "deleted": _s("boolean")}),
    "NextRun": _closed({"job_id": _s("string"), "name": _s("string"),
                        "status": _s("string", enum=list(JOB_STATUSES)), "next_run": _TIME}),
    "SeedHealth": _closed({
        "status": _s("string", enum=["healthy", "degraded", "unhealthy"]),
        "active_jobs": _s("integer"), "paused_jobs": _s("integer"),
        "in_flight_jobs": _s("integer"),
        "metrics": _closed({"runs_total": _s("integer"), "runs_succeeded": _s("integer"),
                            "runs_failed": _s("integer"),
                            "avg_execution_time_ms": _s("number")})}),
    # the upstream SDK's shapes: exactly these keys
    "ScheduleSummary": _closed({
        "job_id": _s("string"), "name": _s("string"), "cron_expression": _n("string"),
        "timezone": _s("string"), "status": _s("string", enum=list(JOB_STATUSES)),
        "enabled": _s("boolean"), "next_run": _TIME, "run_count": _s("integer")}),
    "ScheduleDetail": _closed({
        "job_id": _s("string"), "name": _s("string"), "cron_expression": _n("string"),
        "timezone": _s("string"), "status": _s("string", enum=list(JOB_STATUSES)),
        "enabled": _s("boolean"), "one_shot": _s("boolean"), "next_run": _TIME,
        "last_run": _TIME, "run_count": _s("integer"), "failure_count": _s("integer"),
        "created_at": _s("string", format="date-time"),
        "updated_at": _s("string", format="date-time")}),
    "CreateScheduleResponse": _closed({"job_id": _s("string"), "next_run": _TIME,
                                       "status": _s("string", enum=["created"])}),
    "ScheduleActionResponse": _closed({
        "job_id": _s("string"), "action": _s("string", enum=["pause", "resume", "trigger"]),
        "status": _s("string")}),
    "DeleteScheduleResponse": _closed({"job_id": _s("string"), "deleted": _s("boolean")}),
    "ScheduleRunEntry": _closed({
        "run_id": _s("string"), "started_at": _TIME, "completed_at": _TIME,
        "status": _s("string", enum=list(RUN_STATUSES)), "error": _n("string"),
        "execution_time_ms": _n("integer")}),
    "ScheduleHistoryResponse": _closed({"job_id": _s("string"),
                                        "history": _s("array", items=_ref("ScheduleRunEntry"))}),
    "NextRunsResponse": _closed({"job_id": _s("string"),
                                 "next_runs": _s("array", items=_s("string",
                                                                   format="date-time"))}),
    "SchedulerHealthResponse": _closed({
        "is_running": _s("boolean"), "store_accessible": _s("boolean"),
        "jobs_total": _s("integer"), "jobs_active": _s("integer"), "jobs_paused": _s("integer"),
        "jobs_dead_letter": _s("integer"), "global_active_runs": _s("integer"),
        "max_concurrent": _s("integer"), "runs_total": _s("integer"),
        "runs_succeeded": _s("integer"), "runs_failed": _s("integer"),
        "average_execution_time_ms": _s("number"), "longest_run_ms": _s("number")}),
}

_ERRORS = {
    400: "Malformed JSON body",
    401: "Missing or invalid API key",
    404: "No such job or run",
    409: "Conflict (duplicate name, or the job/run is in the wrong state)",
    413: "Request body too large",
    422: "Invalid field values",
    503: "The state database is unavailable",
}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _op(op_id: str, summary: str, ok: int, ok_schema: dict[str, Any] | None, *,
        errors: tuple[int, ...] = (), body: str | None = None, body_required: bool = True,
        params: list[dict[str, Any]] | None = None, tags: tuple[str, ...] = (),
        public: bool = False, ok_content: dict[str, Any] | None = None,
        description: str | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(ok): {"description": "OK", "content": ok_content or _json_content(ok_schema or {})}}
    codes = set(errors) | {503}
    if not public:
        codes.add(401)
    if body is not None:
        codes |= {400, 413, 422}
    for code in sorted(codes):
        responses[str(code)] = {"description": _ERRORS[code],
                                "content": _json_content(_ref("Error"))}
    op: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": list(tags),
                          "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": _json_content(_ref(body))}
    if public:
        op["security"] = [{}, {"bearer": []}]
    return op


def _links(prefix: str, body_field: str, targets: dict[str, str]) -> dict[str, Any]:
    """OpenAPI links from a create response to the operations on the created object (they
    document the flow, and schemathesis's stateful phase follows them)."""
    return {f"{op[0].upper()}{op[1:]}": {"operationId": op,
                                         "parameters": {param: f"$response.body#/{body_field}"}}
            for op, param in targets.items()}


_JOB_OPS = ("getJob", "updateJob", "deleteJob", "pauseJob", "resumeJob", "resetJob", "runJob",
            "jobHistory", "jobNextRun", "getSchedule", "updateSchedule", "deleteSchedule",
            "pauseSchedule", "resumeSchedule", "triggerSchedule", "scheduleHistory",
            "scheduleNextRuns")
_RUN_OPS = ("getRun", "approveRun", "rejectRun")


def _q(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}


_ID = {"name": "id", "in": "path", "required": True, "schema": _s("string"),
       "description": "job id or name"}
_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": _s("string")}
_LIMIT = _q("limit", _s("integer", minimum=1, maximum=1000), "most recent runs to return")
#: Pagination of the job lists (by name); without them a list has every job.
_PAGE = [_q("limit", _s("integer", minimum=1, maximum=MAX_PAGE),
            "at most this many jobs (default: all); a shorter page is the last"),
         _q("offset", _s("integer", minimum=0, maximum=MAX_OFFSET),
            "skip this many jobs of the name order first (default 0)")]
_RUN_STATUS = _q("status", _s("string", enum=list(RUN_STATUSES)), "only runs in this status")
_METRICS_TEXT = {"text/plain": {"schema": _s("string")}}


def _paths() -> dict[str, Any]:
    seed, sdk, runs, ops = ("seed",), ("sdk",), ("runs",), ("operations",)
    paths: dict[str, Any] = {
        f"{P}/schedule": {
            "post": _op("createJob", "Create a job (seed or SDK field names)", 201, _ref("Job"),
                        errors=(409,), body="JobSpec", tags=seed),
            "get": _op("listJobs", "List jobs", 200, _s("array", items=_ref("Job")),
                       errors=(422,), tags=seed, params=[
                           _q("status", _s("string", enum=list(JOB_STATUSES)), "job status"),
                           _q("agent_id", _s("string"), "agent name"),
                           _q("agent_name", _s("string"), "agent name (SDK spelling)"),
                           _q("agent", _s("string"), "agent name"), *_PAGE]),
        },
        f"{P}/schedule/{{id}}": {
            "parameters": [_ID],
            "get": _op("getJob", "Get a job", 200, _ref("Job"), errors=(404,), tags=seed),
            "put": _op("updateJob", "Change fields of a job (a new schedule recomputes next_run)",
                       200, _ref("Job"), errors=(404, 409), body="JobUpdate", tags=seed),
            "delete": _op("deleteJob", "Delete a job and its history", 200, _ref("Deleted"),
                          errors=(404,), tags=seed),
        },
        f"{P}/schedule/{{id}}/pause": {"parameters": [_ID], "post": _op(
            "pauseJob", "Pause a job", 200, _ref("Job"), errors=(404, 409), tags=seed)},
        f"{P}/schedule/{{id}}/resume": {"parameters": [_ID], "post": _op(
            "resumeJob", "Resume a paused job", 200, _ref("Job"), errors=(404, 409), tags=seed)},
        f"{P}/schedule/{{id}}/reset": {"parameters": [_ID], "post": _op(
            "resetJob", "Clear failures; a dead-lettered job becomes active", 200, _ref("Job"),
            errors=(404,), tags=seed)},
        f"{P}/schedule/{{id}}/run": {"parameters": [_ID], "post": _op(
            "runJob", "Queue a run now (a running scheduler picks it up)", 202, _ref("Run"),
            errors=(404,), body="RunInput", body_required=False, tags=seed)},
        f"{P}/schedule/{{id}}/history": {"parameters": [_ID], "get": _op(
            "jobHistory", "Runs of a job, newest first", 200, _s("array", items=_ref("Run")),
            errors=(404, 422), params=[_LIMIT, _RUN_STATUS], tags=seed)},
        f"{P}/schedule/{{id}}/next_run": {"parameters": [_ID], "get": _op(
            "jobNextRun", "The job's next fire time (null unless active)", 200,
            _ref("NextRun"), errors=(404,), tags=seed)},
        f"{P}/schedules": {
            "get": _op("listSchedules", "List jobs (SDK shape)", 200,
                       _s("array", items=_ref("ScheduleSummary")), errors=(422,), tags=sdk,
                       params=_PAGE),
            "post": _op("createSchedule", "Create a job (SDK shape)", 201,
                        _ref("CreateScheduleResponse"), errors=(409,), body="JobSpec",
                        tags=sdk),
        },
        f"{P}/schedules/{{id}}": {
            "parameters": [_ID],
            "get": _op("getSchedule", "Get a job (SDK shape)", 200, _ref("ScheduleDetail"),
                       errors=(404,), tags=sdk),
            "put": _op("updateSchedule", "Change fields of a job (SDK shape)", 200,
                       _ref("ScheduleDetail"), errors=(404, 409), body="JobUpdate", tags=sdk),
            "delete": _op("deleteSchedule", "Delete a job (SDK shape)", 200,
                          _ref("DeleteScheduleResponse"), errors=(404,), tags=sdk),
        },
        f"{P}/schedules/{{id}}/pause": {"parameters": [_ID], "post": _op(
            "pauseSchedule", "Pause a job (SDK shape)", 200, _ref("ScheduleActionResponse"),
            errors=(404, 409), tags=sdk)},
        f"{P}/schedules/{{id}}/resume": {"parameters": [_ID], "post": _op(
            "resumeSchedule", "Resume a job (SDK shape)", 200, _ref("ScheduleActionResponse"),
            errors=(404, 409), tags=sdk)},
        f"{P}/schedules/{{id}}/trigger": {"parameters": [_ID], "post": _op(
            "triggerSchedule", "Queue a run now (SDK shape)", 200,
            _ref("ScheduleActionResponse"), errors=(404,), body="RunInput",
            body_required=False, tags=sdk)},
        f"{P}/schedules/{{id}}/history": {"parameters": [_ID], "get": _op(
            "scheduleHistory", "Runs of a job (SDK shape)", 200,
            _ref("ScheduleHistoryResponse"), errors=(404, 422), params=[_LIMIT, _RUN_STATUS],
            tags=sdk)},
        f"{P}/schedules/{{id}}/next-runs": {"parameters": [_ID], "get": _op(
            "scheduleNextRuns", "The next fire times (SDK shape)", 200,
            _ref("NextRunsResponse"), errors=(404, 422), tags=sdk, params=[
                _q("count", _s("integer", minimum=1, maximum=1000), "how many")])},
        f"{P}/runs/{{run_id}}": {"parameters": [_RUN_ID], "get": _op(
            "getRun", "A run with its deliveries and approval", 200, _ref("RunDetail"),
            errors=(404,), tags=runs)},
        f"{P}/runs/{{run_id}}/approve": {"parameters": [_RUN_ID], "post": _op(
            "approveRun", "Approve a run awaiting approval (it runs again through the gate)",
            200, _ref("Run"), errors=(404, 409), body="Approval", body_required=False,
            tags=runs)},
        f"{P}/runs/{{run_id}}/reject": {"parameters": [_RUN_ID], "post": _op(
            "rejectRun", "Reject a run awaiting approval (it becomes denied)", 200, _ref("Run"),
            errors=(404, 409), body="Rejection", body_required=False, tags=runs)},
        f"{P}/health/scheduler": {"get": _op(
            "schedulerHealth", "Scheduler health", 200,
            {"oneOf": [_ref("SchedulerHealthResponse"), _ref("SeedHealth")]}, errors=(422,),
            public=True, tags=ops,
            params=[_q("format", _s("string", enum=["sdk", "seed"]),
                       "sdk (default): the upstream SDK's 13 flat fields; seed: the seed's "
                       "shape")],
            description="Public unless `[api] public_health = false`. Without `format` it "
                        "answers with the upstream SDK's shape (the SDK cannot pass a "
                        "parameter); `?format=seed` gives the seed's documented shape.")},
        f"{P}/metrics": {"get": _op("metricsApi", "Prometheus metrics", 200, None,
                                    ok_content=_METRICS_TEXT, public=True, tags=ops,
                                    errors=(404,))},
        "/metrics": {"get": _op("metrics", "Prometheus metrics", 200, None,
                                ok_content=_METRICS_TEXT, public=True, tags=ops,
                                errors=(404,))},
        f"{P}/openapi.json": {"get": _op("openapi", "This document", 200, _s("object"),
                                         public=True, tags=ops)},
    }
    job_links = _links("job", "job_id", dict.fromkeys(_JOB_OPS, "id"))
    paths[f"{P}/schedule"]["post"]["responses"]["201"]["links"] = job_links
    paths[f"{P}/schedules"]["post"]["responses"]["201"]["links"] = job_links
    paths[f"{P}/schedule/{{id}}/run"]["post"]["responses"]["202"]["links"] = _links(
        "run", "run_id", dict.fromkeys(_RUN_OPS, "run_id"))
    return paths


@functools.lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "symbi scheduler API",
            "version": "1",
            "description": "Jobs, runs and health of a symbi scheduler. The `/schedule` "
                           "routes follow the Symbiont scheduling guide; the `/schedules` "
                           "routes return exactly the shapes of the upstream `symbiont-sdk` "
                           "Python client. Jobs are addressed by id or name.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [{"name": "seed"}, {"name": "sdk"}, {"name": "runs"}, {"name": "operations"}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "an API key from [api] api_keys or "
                                                          "SYMBI_API_KEY"}},
            "schemas": SCHEMAS,
        },
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document())


@functools.lru_cache(maxsize=1)
def openapi_json() -> str:
    """The OpenAPI document as JSON text (what the server sends)."""
    return json.dumps(_document(), indent=2, sort_keys=True)
