"""The HTTP API (SPEC §8): aiohttp, default ``127.0.0.1:8080``.

Two families of routes over the same store, both under ``/api/v1``:

- the seed's (``/schedule…``, singular): rich JSON views (a job is ``JobRow.to_dict()`` plus the
  seed's names ``job_id``/``agent_id``/``cron_expr``; a run is ``RunRow.to_dict()`` plus
  ``run_id``), list filters, ``/run`` with ``{"input": …}``, ``/next_run``;
- the upstream Python SDK's (``/schedules…``, plural): responses with **exactly** the key sets
  of ``symbiont-sdk``'s dataclasses (8 per summary, 13 per detail, 3 for create and actions, 2
  for delete and next-runs, 6 per history entry, 13 for health) — the SDK builds them with
  ``Dataclass(**json)``, so one key more or less breaks it. Statuses are our lowercase names
  (``active``, ``succeeded``; the SDK treats them as opaque strings), times RFC 3339 UTC.

``GET /api/v1/health/scheduler`` is called by both with no parameter but with different
shapes. It answers with the SDK's 13 flat fields (the shape the upstream server returns and
the only one the SDK can read); ``?format=seed`` gives the seed's shape (``status``,
``active_jobs``, ``paused_jobs``, ``in_flight_jobs``, ``metrics{…}``). A human with curl can add
a parameter; the SDK cannot.

Create and update bodies accept our property names, the seed's (``agent_id``, ``cron_expr``)
and the SDK's (``agent_name``, ``cron_expression``, ``policy_ids``) via
:func:`runtime.jobspec.job_from_json`. Jobs are addressed by id or by name.

Security: ``Authorization: Bearer <key>`` with the keys of ``[api] api_keys`` /
``$SYMBI_API_KEY``, kept only as SHA-256 digests and compared with ``hmac.compare_digest``
against every digest (no early exit). Health, metrics and the OpenAPI document are public
unless ``[api] public_health = false``. With no key configured the API is open but
:func:`start_api` refuses any address but loopback. Every mutation is audited by the store with
actor ``api:<key id>`` (the first 8 hex digits of the key's digest; ``api:local`` without
keys). Errors are ``{"error", "code", "details"}`` JSON: 400 malformed JSON, 401, 404, 405, 409
(duplicate name, wrong state), 413 (body over :data:`MAX_BODY_BYTES`), 422 (invalid values),
503 (store unavailable); an unexpected exception becomes a 500 with no traceback.

Store calls are short SQLite transactions made on the event loop, like the scheduler's own: a
scheduler in the same process shares the store object, and its change listener (which wakes
the loop at once after a change) must be called on the loop thread.

Both job lists take ``limit`` and ``offset`` (a page of the name order; default: every job,
which is what the SDK expects). They are answered through :class:`ListCache` and the health
numbers through a cache of the same kind, both keyed by the store's write token: exact, never
stale, and a list of 1,000 jobs costs one query (or none while nothing changes). Responses are
compact JSON.

Processes: ``symbi up`` serves the API beside its scheduler (:class:`ApiService`; ``--no-api``
to not); ``symbi serve`` serves it alone (:func:`serve_command`) — triggered runs then wait,
``pending``, for a ``symbi up`` on the same database.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import signal
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click
from aiohttp import web
from pydantic import SecretStr

from compiler.ir import AgentDef, JobDef
from runtime.config import ApiConfig, Config
from runtime.jobspec import JobSpecError, job_from_json
from runtime.metrics import CronMetrics, chain_on_event
from runtime.store import (
    RUN_STATUSES,
    DuplicateJob,
    JobNotFound,
    JobRow,
    RunRow,
    SqliteStore,
    StoreError,
    plain,
)

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
#: Largest accepted request body (aiohttp ``client_max_size``).
MAX_BODY_BYTES = 1 << 20
#: Upper bounds of the list parameters.
MAX_HISTORY = 1000
MAX_NEXT_RUNS = 1000
#: Upper bounds of the job lists' pagination (``limit``, ``offset``; default: every job).
MAX_PAGE = 1_000_000
MAX_OFFSET = 1_000_000_000
#: Jobs whose rendered JSON a list cache keeps per view (it is emptied when it would hold
#: twice that; a longer list is rendered without keeping its jobs).
LIST_CACHE_ROWS = 20_000
#: Whole list bodies kept: at most this many, of at most this many bytes in all.
LIST_CACHE_BODIES = 16
LIST_CACHE_BYTES = 16 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ------------------------------------------------------------------------------ errors


class ApiError(Exception):
    """An error answered as ``{"error", "code", "details"}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, details: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers

    def response(self) -> web.Response:
        """The JSON response of this error."""
        return error_response(self.status, self.code, self.message, self.details, self.headers)


class ApiStartError(Exception):
    """The API cannot be started; the message says why. ``busy``: the address is in use (as
    opposed to a refused configuration)."""

    def __init__(self, message: str, *, busy: bool = False):
        super().__init__(message)
        self.busy = busy


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """``{"error": message, "code": code, "details": details}`` with ``status``."""
    return web.json_response({"error": message, "code": code, "details": details},
                             status=status, headers=headers, dumps=_dumps)


_STATUS_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
                 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE",
                 415: "UNSUPPORTED_MEDIA_TYPE", 422: "VALIDATION_FAILED"}


def _dumps(obj: Any) -> str:
    # compact: a list of 1,000 jobs is 15% smaller and quicker to write and to read
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _not_found(ref: str) -> ApiError:
    return ApiError(404, "SCHEDULE_NOT_FOUND", f"no job with id or name `{ref}`")


# ------------------------------------------------------------------------------ keys


def key_digest(key: str) -> bytes:
    """SHA-256 of an API key (what is kept in memory)."""
    return hashlib.sha256(key.encode("utf-8")).digest()


def key_id(key: str) -> str:
    """The public id of a key: the first 8 hex digits of its digest (audit actor, logs)."""
    return key_digest(key).hex()[:8]


@dataclass(frozen=True)
class ApiKeyring:
    """The accepted API keys, as digests only."""

    digests: tuple[tuple[bytes, str], ...] = ()  # (sha256 digest, key id)

    @classmethod
    def from_keys(cls, keys: Iterable[SecretStr | str]) -> ApiKeyring:
        """Digest the configured keys (empty ones are ignored)."""
        out: list[tuple[bytes, str]] = []
        for k in keys:
            text = k.get_secret_value() if isinstance(k, SecretStr) else str(k)
            if text:
                d = key_digest(text)
                out.append((d, d.hex()[:8]))
        return cls(tuple(out))

    def __bool__(self) -> bool:
        return bool(self.digests)

    def identify(self, token: str) -> str | None:
        """The key id of ``token``, or None. Compares with every key in constant time."""
        try:
            presented = key_digest(token)
        except UnicodeEncodeError:
            return None
        found: str | None = None
        for digest, kid in self.digests:
            if hmac.compare_digest(presented, digest):
                found = kid
        return found


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keyring: ApiKeyring) -> None:
    """Refuse to serve a non-loopback address without an API key (:class:`ApiStartError`)."""
    if not keyring and not is_loopback(host):
        raise ApiStartError(
            f"refusing to serve the HTTP API on {host or '0.0.0.0'} without an API key: anyone "
            "who can reach it could change jobs. Set [api] api_keys in symbi.toml or "
            "SYMBI_API_KEY, or bind to 127.0.0.1 ([api] host)")


# ------------------------------------------------------------------------------ state


@dataclass
class ApiState:
    """What the handlers share (one per application)."""

    store: SqliteStore
    config: Config
    keyring: ApiKeyring
    metrics: CronMetrics
    scheduler: Any = None
    public_health: bool = True
    lists: ListCache = field(default_factory=lambda: ListCache(), repr=False)
    _stdlib: dict[str, AgentDef] | None = field(default=None, repr=False)
    #: (store write token, job counts, lease, in-flight runs in the store) of the last health
    _health: tuple[Any, ...] | None = field(default=None, repr=False)

    def stdlib_agent(self, name: str) -> AgentDef | None:
        """The standard-library agent ``name`` (loaded once)."""
        if self._stdlib is None:
            from compiler.compile import stdlib_agents

            self._stdlib = {n: v[0] for n, v in stdlib_agents().items()}
        return self._stdlib.get(name)

    def now(self) -> datetime:
        """The store clock's now (tests inject a fake clock)."""
        return self.store.clock.now()


STATE: web.AppKey[ApiState] = web.AppKey("symbi_api_state", ApiState)
#: Where the auth middleware leaves the audit actor (``web.RequestKey`` from aiohttp 3.13).
ACTOR: Any = (web.RequestKey("symbi_actor", str) if hasattr(web, "RequestKey")
              else "symbi_actor")


def _state(request: web.Request) -> ApiState:
    return request.app[STATE]


def _actor(request: web.Request) -> str:
    return str(request.get(ACTOR, "api:local"))


# ------------------------------------------------------------------------------ middleware


def _public_paths(public_health: bool) -> frozenset[str]:
    paths = {f"{API_PREFIX}/openapi.json"}
    if public_health:
        paths |= {f"{API_PREFIX}/health/scheduler", "/metrics", f"{API_PREFIX}/metrics"}
    return frozenset(paths)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON; bad input never becomes a 500, and a 500 carries no traceback."""
    try:
        return await handler(request)
    except ApiError as e:
        return e.response()
    except web.HTTPException as e:
        if e.status < 400:
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() in ("allow",)}
        message = e.reason or "error"
        if e.status == 413:
            message = f"request body too large (the limit is {MAX_BODY_BYTES} bytes)"
        elif e.status == 404:
            message = f"no route {request.method} {request.path}"
        elif e.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        return error_response(e.status, _STATUS_CODES.get(e.status, "HTTP_ERROR"), message,
                              None, headers or None)
    except JobNotFound as e:
        return error_response(404, "SCHEDULE_NOT_FOUND", str(e))
    except DuplicateJob as e:
        return error_response(409, "DUPLICATE_NAME", str(e))
    except (StoreError, sqlite3.Error) as e:
        log.warning("store error in %s %s: %s", request.method, request.path, e)
        # the details (file path, SQLite message) stay in the server log
        return error_response(503, "STORE_UNAVAILABLE", "the state database is unavailable "
                              "(busy or unreadable); try again — details are in the server log")
    except Exception:
        log.exception("internal error in %s %s", request.method, request.path)
        return error_response(500, "INTERNAL_ERROR", "internal server error")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``Authorization: Bearer <key>`` on every route but the public ones."""
    st = _state(request)
    if not st.keyring:
        request[ACTOR] = "api:local"
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    kid = st.keyring.identify(token.strip()) if scheme.lower() == "bearer" and token else None
    if kid is None:
        if request.path in _public_paths(st.public_health):
            return await handler(request)
        why = "missing Authorization header" if not header else "invalid API key"
        raise ApiError(401, "UNAUTHORIZED", f"{why}: send `Authorization: Bearer <api key>`",
                       headers={"WWW-Authenticate": "Bearer"})
    request[ACTOR] = f"api:{kid}"
    return await handler(request)


# ------------------------------------------------------------------------------ input


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text} is out of range")
    return v


def _check_text(data: Any) -> None:
    """Raise ValueError if a string in ``data`` cannot be stored (a lone UTF-16 surrogate
    from a ``\\ud800`` escape)."""
    stack = [data]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            v.encode("utf-8")
        elif isinstance(v, dict):
            for k, x in v.items():
                k.encode("utf-8")
                stack.append(x)
        elif isinstance(v, list):
            stack.extend(v)


#: What :func:`read_json` returns for an empty optional body (``null`` is a JSON value).
ABSENT: Any = object()


async def read_json(request: web.Request, *, required: bool = True) -> Any:
    """The request body as JSON (:data:`ABSENT` for an empty body when not ``required``). Any
    content type is read as JSON: curl's ``-d`` without a header must work too."""
    raw = await request.read()
    if not raw.strip():
        if not required:
            return ABSENT
        raise ApiError(400, "INVALID_JSON", "the request body is empty; expected a JSON object")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ApiError(400, "INVALID_JSON", f"the request body is not UTF-8 ({e.reason} at "
                       f"byte {e.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        _check_text(data)
    except json.JSONDecodeError as e:
        raise ApiError(400, "INVALID_JSON", f"invalid JSON at line {e.lineno} column {e.colno}: "
                       f"{e.msg}") from None
    except RecursionError:
        raise ApiError(400, "INVALID_JSON", "invalid JSON: nested too deeply") from None
    except (ValueError, UnicodeEncodeError) as e:
        raise ApiError(400, "INVALID_JSON", f"invalid JSON: {e}") from None
    return data


def _object_body(data: Any, allowed: Sequence[str]) -> dict[str, Any]:
    """An optional small body such as ``{"input": …}``: an object with only ``allowed`` keys."""
    if data is ABSENT:
        return {}
    example = f'{{"{allowed[0]}": "…"}}' if allowed else "{}"
    if not isinstance(data, dict):
        raise ApiError(422, "VALIDATION_FAILED", "expected a JSON object",
                       {"problems": [f"expected a JSON object such as {example}"]})
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        expected = ", ".join(f"`{a}`" for a in allowed) or "no fields"
        raise ApiError(422, "VALIDATION_FAILED", f"unknown field `{unknown[0]}`",
                       {"problems": [f"unknown field `{k}` (expected {expected})"
                                     for k in unknown]})
    for k in allowed:
        if data.get(k) is not None and not isinstance(data[k], str):
            raise ApiError(422, "VALIDATION_FAILED", f"`{k}` must be a string",
                           {"problems": [f"`{k}`: expected a string or null"]})
    return data


def _job_spec(data: Any, partial_of: JobDef | None = None) -> JobDef:
    try:
        return job_from_json(data, partial_of=partial_of)
    except JobSpecError as e:
        raise ApiError(422, "VALIDATION_FAILED", "invalid job definition: " + "; ".join(
            p.splitlines()[0] for p in e.problems), {"problems": e.problems}) from None


def _text_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _job(request: web.Request, ref: str | None = None) -> JobRow:
    ref = request.match_info["id"] if ref is None else ref
    if not _text_ok(ref):
        raise _not_found(ref.encode("utf-8", "replace").decode())
    row = _state(request).store.get_job(ref)
    if row is None:
        raise _not_found(ref)
    return row


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        v = int(text.strip())
    except ValueError:
        v = None
    if v is None or not lo <= v <= hi:
        raise ApiError(422, "VALIDATION_FAILED",
                       f"`{name}` must be an integer from {lo} to {hi}, got {text!r}")
    return v


def _enum_param(request: web.Request, name: str, allowed: Sequence[str]) -> str | None:
    text = request.query.get(name)
    if text is None:
        return None
    if text not in allowed:
        raise ApiError(422, "VALIDATION_FAILED",
                       f"`{name}` must be one of {', '.join(allowed)}, got {text!r}")
    return text


# ------------------------------------------------------------------------------ views


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


def job_view(row: JobRow) -> dict[str, Any]:
    """The seed routes' job: ``JobRow.to_dict()`` plus ``job_id``, ``agent_id``, ``cron_expr``.

    Built here with the store's fast ``plain()`` (a list of 1,000 jobs is 5x quicker than
    through ``JobDef.to_dict()``); a test keeps it equal to ``JobRow.to_dict()``."""
    view = _job_head(row)
    view["definition"] = plain(row.definition)
    return view


def _job_head(row: JobRow) -> dict[str, Any]:
    """:func:`job_view` but the last key, ``definition``."""
    d = row.definition
    return {"id": row.id, "job_id": row.id, "name": row.name, "agent": d.agent,
            "agent_id": d.agent, "cron": d.cron, "cron_expr": d.cron, "at": d.at,
            "timezone": d.timezone, "status": row.status, "origin": row.origin,
            "next_run": _iso(row.next_run), "last_run": _iso(row.last_run),
            "run_count": row.run_count, "failure_count": row.failure_count,
            "consecutive_failures": row.consecutive_failures,
            "created_at": _iso(row.created_at), "updated_at": _iso(row.updated_at)}


def run_view(run: RunRow) -> dict[str, Any]:
    """The seed routes' run: ``RunRow.to_dict()`` plus ``run_id``."""
    d = run.to_dict(with_usage=True)
    d["run_id"] = run.id
    return d


def sdk_summary(row: JobRow) -> dict[str, Any]:
    """``ScheduleSummary`` (8 keys)."""
    d = row.definition
    return {"job_id": row.id, "name": row.name, "cron_expression": d.cron,
            "timezone": d.timezone, "status": row.status, "enabled": row.status == "active",
            "next_run": _iso(row.next_run), "run_count": row.run_count}


def sdk_detail(row: JobRow) -> dict[str, Any]:
    """``ScheduleDetail`` (13 keys)."""
    d = row.definition
    return {"job_id": row.id, "name": row.name, "cron_expression": d.cron,
            "timezone": d.timezone, "status": row.status, "enabled": row.status == "active",
            "one_shot": d.one_shot, "next_run": _iso(row.next_run),
            "last_run": _iso(row.last_run), "run_count": row.run_count,
            "failure_count": row.failure_count, "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at)}


def sdk_run_entry(run: RunRow) -> dict[str, Any]:
    """``ScheduleRunEntry`` (6 keys)."""
    return {"run_id": run.id, "started_at": _iso(run.started_at),
            "completed_at": _iso(run.finished_at), "status": run.status, "error": run.error,
            "execution_time_ms": run.duration_ms}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _json_bytes(body: bytes) -> web.Response:
    """A 200 response with an already encoded JSON body (the headers of :func:`_json`)."""
    return web.Response(body=body, content_type="application/json", charset="utf-8")


# ------------------------------------------------------------------------------ list cache


#: A list view: (name, render(row, def_hash) -> JSON text of one job).
ListView = tuple[str, Callable[[JobRow, str], str]]


class ListCache:
    """The bodies of the job lists, so that listing 1,000 jobs costs about one query.

    Two levels, both exact (nothing stale is served):

    - a whole body is reused while the database is unchanged — the store's
      :meth:`~runtime.store.SqliteStore.write_token`, read before the query, changes with any
      commit by any connection;
    - otherwise one query reads every listed job's state without its definition
      (:meth:`~runtime.store.SqliteStore.job_states`). A job whose state tuple (which includes
      its definition's hash) is unchanged reuses its JSON; the others are fetched together
      (:meth:`~runtime.store.SqliteStore.get_jobs`) and rendered. A running scheduler changes
      the state of the jobs that fire, rarely their definitions, so the seed view also keeps
      each definition's JSON by hash.

    Sizes are bounded (:data:`LIST_CACHE_ROWS`, :data:`LIST_CACHE_BODIES`,
    :data:`LIST_CACHE_BYTES`). Used on the event loop only.
    """

    def __init__(self) -> None:
        self._rows: dict[str, dict[str, tuple[tuple[Any, ...], str]]] = {}  # view → id → …
        self._bodies: dict[tuple[Any, ...], tuple[tuple[int, int], bytes]] = {}
        self._definitions: dict[str, str] = {}  # def_hash → JSON of plain(definition)

    def definition_json(self, def_hash: str, job: JobDef) -> str:
        """The JSON of ``plain(job)``, kept by definition hash."""
        text = self._definitions.get(def_hash)
        if text is None:
            if len(self._definitions) >= LIST_CACHE_ROWS:
                self._definitions.clear()
            text = self._definitions[def_hash] = _dumps(plain(job))
        return text

    def body(self, store: SqliteStore, view: ListView, *, status: str | None = None,
             agent: str | None = None, limit: int | None = None, offset: int = 0) -> bytes:
        """The JSON array of ``view`` over the jobs ``store.list_jobs(...)`` would return."""
        name, render = view
        key = (name, status, agent, limit, offset)
        token = store.write_token()  # before the query: a later write makes it stale
        hit = self._bodies.get(key)
        if hit is not None and hit[0] == token:
            return hit[1]
        states = store.job_states(status=status, agent=agent, limit=limit, offset=offset)
        keep = len(states) <= LIST_CACHE_ROWS
        rows = self._rows.setdefault(name, {})
        if keep and len(rows) + len(states) > 2 * LIST_CACHE_ROWS:
            rows.clear()
        parts: list[str | None] = []
        missing: list[int] = []
        for state in states:
            got = rows.get(state[0])
            if got is not None and got[0] == state:
                parts.append(got[1])
            else:
                missing.append(len(parts))
                parts.append(None)
        if missing:
            fresh = store.get_jobs([states[i][0] for i in missing])
            for i in missing:
                state = states[i]
                row = fresh.get(state[0])
                if row is None:  # deleted by another process between the two queries
                    continue
                text = parts[i] = render(row, state[2])
                if keep:
                    rows[state[0]] = (state, text)
        body = ("[" + ",".join(p for p in parts if p is not None) + "]").encode("utf-8")
        self._bodies.pop(key, None)
        if len(body) <= LIST_CACHE_BYTES:
            held = len(body) + sum(len(b) for _, b in self._bodies.values())
            while self._bodies and (held > LIST_CACHE_BYTES
                                    or len(self._bodies) >= LIST_CACHE_BODIES):
                _, old = self._bodies.pop(next(iter(self._bodies)))  # the oldest
                held -= len(old)
            self._bodies[key] = (token, body)
        return body


# ------------------------------------------------------------------------------ operations


def _warnings(st: ApiState, job: JobDef) -> list[str]:
    if st.store.get_agent(job.agent) is None:
        return [f"agent `{job.agent}` is not defined; its runs fail until a bundle defining it "
                "is deployed"]
    return []


async def _create(request: web.Request) -> JobRow:
    st = _state(request)
    job = _job_spec(await read_json(request))
    agents: list[AgentDef] = []
    if st.store.get_agent(job.agent) is None:
        std = st.stdlib_agent(job.agent)
        if std is not None:
            agents = [std]  # runs need the definition in the store
    return st.store.add_job(job, origin="api", actor=_actor(request), agents=agents)


async def _update(request: web.Request) -> JobRow:
    st = _state(request)
    row = _job(request)
    data = await read_json(request)
    job = _job_spec(data, partial_of=row.definition)
    return st.store.update_job(row.id, job, actor=_actor(request))


def _pause(request: web.Request) -> JobRow:
    row = _job(request)
    if row.status == "completed":
        raise ApiError(409, "INVALID_STATE",
                       f"job `{row.name}` has completed; there is nothing to pause")
    return _state(request).store.pause_job(row.id, actor=_actor(request))


def _resume(request: web.Request) -> JobRow:
    row = _job(request)
    if row.status == "dead_letter":
        raise ApiError(409, "INVALID_STATE",
                       f"job `{row.name}` is dead-lettered; reset it (POST "
                       f"{API_PREFIX}/schedule/{row.id}/reset) to clear its failures and "
                       "reactivate it")
    if row.status == "completed":
        raise ApiError(409, "INVALID_STATE", f"job `{row.name}` has completed (it runs once)")
    return _state(request).store.resume_job(row.id, actor=_actor(request))


async def _trigger(request: web.Request) -> RunRow:
    row = _job(request)
    body = _object_body(await read_json(request, required=False), ("input",))
    return _state(request).store.request_manual_run(
        row.id, input=body.get("input"), trigger="api", actor=_actor(request))


def _history(request: web.Request, default_limit: int) -> tuple[JobRow, list[RunRow]]:
    row = _job(request)
    limit = _int_param(request, "limit", default_limit, 1, MAX_HISTORY)
    status = _enum_param(request, "status", RUN_STATUSES)
    return row, _state(request).store.list_runs(row.id, limit=limit, status=status)


# ------------------------------------------------------------------------------ seed routes


async def create_job(request: web.Request) -> web.Response:
    """POST /schedule"""
    row = await _create(request)
    out = job_view(row)
    out["warnings"] = _warnings(_state(request), row.definition)
    return _json(out, 201)


async def list_jobs(request: web.Request) -> web.Response:
    """GET /schedule?status=&agent_id=&limit=&offset="""
    from runtime.store import JOB_STATUSES

    status = _enum_param(request, "status", JOB_STATUSES)
    agent = None
    for name in ("agent_id", "agent_name", "agent"):
        if request.query.get(name):
            agent = request.query[name]
    if agent is not None and not _text_ok(agent):
        return _json([])
    st = _state(request)
    limit, offset = _page(request)
    return _json_bytes(st.lists.body(st.store, _seed_view(st.lists), status=status,
                                     agent=agent, limit=limit, offset=offset))


def _page(request: web.Request) -> tuple[int | None, int]:
    """The ``limit`` (None: all) and ``offset`` of a job list."""
    limit = (_int_param(request, "limit", 0, 1, MAX_PAGE)
             if request.query.get("limit") is not None else None)
    return limit, _int_param(request, "offset", 0, 0, MAX_OFFSET)


def _seed_view(cache: ListCache) -> ListView:
    def render(row: JobRow, def_hash: str) -> str:
        # job_view's JSON with the definition's text reused: the head without its "}"
        head = _dumps(_job_head(row))
        return f'{head[:-1]},"definition":{cache.definition_json(def_hash, row.definition)}}}'

    return ("seed", render)


def _sdk_render(row: JobRow, def_hash: str) -> str:
    return _dumps(sdk_summary(row))


_SDK_VIEW: ListView = ("sdk", _sdk_render)


async def get_job(request: web.Request) -> web.Response:
    """GET /schedule/{id}"""
    return _json(job_view(_job(request)))


async def update_job(request: web.Request) -> web.Response:
    """PUT /schedule/{id}"""
    row = await _update(request)
    out = job_view(row)
    out["warnings"] = _warnings(_state(request), row.definition)
    return _json(out)


async def delete_job(request: web.Request) -> web.Response:
    """DELETE /schedule/{id}"""
    row = _job(request)
    _state(request).store.remove_job(row.id, actor=_actor(request))
    return _json({"job_id": row.id, "name": row.name, "deleted": True})


async def pause_job(request: web.Request) -> web.Response:
    """POST /schedule/{id}/pause"""
    return _json(job_view(_pause(request)))


async def resume_job(request: web.Request) -> web.Response:
    """POST /schedule/{id}/resume"""
    return _json(job_view(_resume(request)))


async def reset_job(request: web.Request) -> web.Response:
    """POST /schedule/{id}/reset"""
    row = _job(request)
    return _json(job_view(_state(request).store.reset_job(row.id, actor=_actor(request))))


async def run_job(request: web.Request) -> web.Response:
    """POST /schedule/{id}/run {"input": …}"""
    return _json(run_view(await _trigger(request)), 202)


async def job_history(request: web.Request) -> web.Response:
    """GET /schedule/{id}/history?limit=&status="""
    _, runs = _history(request, 20)
    return _json([run_view(r) for r in runs])


async def job_next_run(request: web.Request) -> web.Response:
    """GET /schedule/{id}/next_run"""
    row = _job(request)
    nxt = row.upcoming(1)
    return _json({"job_id": row.id, "name": row.name, "status": row.status,
                  "next_run": _iso(nxt[0]) if nxt else None})


# ------------------------------------------------------------------------------ SDK routes


async def sdk_list(request: web.Request) -> web.Response:
    """GET /schedules?limit=&offset="""
    st = _state(request)
    limit, offset = _page(request)
    return _json_bytes(st.lists.body(st.store, _SDK_VIEW, limit=limit, offset=offset))


async def sdk_create(request: web.Request) -> web.Response:
    """POST /schedules"""
    row = await _create(request)
    return _json({"job_id": row.id, "next_run": _iso(row.next_run), "status": "created"}, 201)


async def sdk_get(request: web.Request) -> web.Response:
    """GET /schedules/{id}"""
    return _json(sdk_detail(_job(request)))


async def sdk_update(request: web.Request) -> web.Response:
    """PUT /schedules/{id}"""
    return _json(sdk_detail(await _update(request)))


async def sdk_delete(request: web.Request) -> web.Response:
    """DELETE /schedules/{id}"""
    row = _job(request)
    _state(request).store.remove_job(row.id, actor=_actor(request))
    return _json({"job_id": row.id, "deleted": True})


async def sdk_pause(request: web.Request) -> web.Response:
    """POST /schedules/{id}/pause"""
    row = _pause(request)
    return _json({"job_id": row.id, "action": "pause", "status": row.status})


async def sdk_resume(request: web.Request) -> web.Response:
    """POST /schedules/{id}/resume"""
    row = _resume(request)
    return _json({"job_id": row.id, "action": "resume", "status": row.status})


async def sdk_trigger(request: web.Request) -> web.Response:
    """POST /schedules/{id}/trigger"""
    run = await _trigger(request)
    return _json({"job_id": run.job_id, "action": "trigger", "status": "triggered"})


async def sdk_history(request: web.Request) -> web.Response:
    """GET /schedules/{id}/history?limit="""
    row, runs = _history(request, 50)
    return _json({"job_id": row.id, "history": [sdk_run_entry(r) for r in runs]})


async def sdk_next_runs(request: web.Request) -> web.Response:
    """GET /schedules/{id}/next-runs?count="""
    row = _job(request)
    count = _int_param(request, "count", 10, 1, MAX_NEXT_RUNS)
    return _json({"job_id": row.id, "next_runs": [t.isoformat() for t in row.upcoming(count)]})


# ------------------------------------------------------------------------------ health, metrics


def _health_numbers(st: ApiState) -> dict[str, Any]:
    store_ok = True
    counts: dict[str, int] = {}
    running = False
    try:
        # the store's numbers are reused while the database is unchanged (a health probe
        # every few ms costs no query); the lease's expiry is compared with now each time
        token = st.store.write_token()
        cached = st._health
        if cached is None or cached[0] != token:
            cached = st._health = (token, st.store.count_jobs(), st.store.lease_info(),
                                   st.metrics.store_in_flight())
        _, counts, lease, stored_in_flight = cached
        running = lease is not None and lease.expires_at > st.now()
        totals = st.metrics.totals()
        in_flight = st.metrics.in_flight(stored=stored_in_flight)
    except (StoreError, sqlite3.Error) as e:
        log.warning("health: the state database is not accessible: %s", e)
        store_ok = False
        totals = None
        in_flight = 0
    return {"store_ok": store_ok, "counts": counts, "running": running, "totals": totals,
            "in_flight": in_flight}


async def health(request: web.Request) -> web.Response:
    """GET /health/scheduler (SDK shape; ``?format=seed`` for the seed's)."""
    st = _state(request)
    fmt = request.query.get("format", "sdk")
    if fmt not in ("sdk", "seed"):
        raise ApiError(422, "VALIDATION_FAILED", f"`format` must be sdk or seed, got {fmt!r}")
    h = _health_numbers(st)
    counts, totals = h["counts"], h["totals"]
    if fmt == "seed":
        status = ("unhealthy" if not h["store_ok"] else
                  "healthy" if h["running"] else "degraded")
        return _json({
            "status": status,
            "active_jobs": counts.get("active", 0),
            "paused_jobs": counts.get("paused", 0),
            "in_flight_jobs": h["in_flight"],
            "metrics": {
                "runs_total": totals.runs_total if totals else 0,
                "runs_succeeded": totals.runs_succeeded if totals else 0,
                "runs_failed": totals.runs_failed if totals else 0,
                "avg_execution_time_ms": totals.average_execution_time_ms if totals else 0.0,
            },
        })
    return _json({
        "is_running": h["running"],
        "store_accessible": h["store_ok"],
        "jobs_total": sum(counts.values()),
        "jobs_active": counts.get("active", 0),
        "jobs_paused": counts.get("paused", 0),
        "jobs_dead_letter": counts.get("dead_letter", 0),
        "global_active_runs": h["in_flight"],
        "max_concurrent": int(st.config.scheduler.max_concurrent_jobs),
        "runs_total": totals.runs_total if totals else 0,
        "runs_succeeded": totals.runs_succeeded if totals else 0,
        "runs_failed": totals.runs_failed if totals else 0,
        "average_execution_time_ms": totals.average_execution_time_ms if totals else 0.0,
        "longest_run_ms": totals.longest_run_ms if totals else 0.0,
    })


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics (Prometheus text format); 404 when ``[scheduler] enable_metrics = false``."""
    st = _state(request)
    if not st.config.scheduler.enable_metrics:
        return error_response(404, "METRICS_DISABLED",
                              "metrics are disabled ([scheduler] enable_metrics = false)")
    body, content_type = st.metrics.render()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json"""
    from runtime.openapi import openapi_json

    return web.Response(text=openapi_json(), content_type="application/json")


# ------------------------------------------------------------------------------ runs, approvals


def _run(request: web.Request) -> RunRow:
    run_id = request.match_info["run_id"]
    run = _state(request).store.get_run(run_id) if _text_ok(run_id) else None
    if run is None:
        raise ApiError(404, "RUN_NOT_FOUND", f"no run with id {run_id!a}")
    return run


async def get_run(request: web.Request) -> web.Response:
    """GET /runs/{run_id}"""
    from runtime.approvals import get_approval
    from runtime.delivery import receipts_for_runs

    st = _state(request)
    run = _run(request)
    out = run_view(run)
    out["deliveries"] = [r.to_dict() for r in receipts_for_runs(st.store, [run.id])[run.id]]
    approval = get_approval(st.store, run.id)
    out["approval"] = approval.to_dict() if approval is not None else None
    return _json(out)


async def _decide(request: web.Request, approve: bool) -> web.Response:
    from runtime.approvals import ApprovalError, approve_run, reject_run

    st = _state(request)
    run = _run(request)
    # a rejection may say why; an approval takes no fields (approvals record no reason)
    body = _object_body(await read_json(request, required=False),
                        () if approve else ("reason",))
    try:
        if approve:
            decided = approve_run(st.store, run.id, actor=_actor(request))
        else:
            decided = reject_run(st.store, run.id, actor=_actor(request),
                                 reason=body.get("reason"))
    except ApprovalError as e:
        raise ApiError(409, "INVALID_STATE", str(e)) from None
    return _json(run_view(decided))


async def approve_run(request: web.Request) -> web.Response:
    """POST /runs/{run_id}/approve"""
    return await _decide(request, True)


async def reject_run(request: web.Request) -> web.Response:
    """POST /runs/{run_id}/reject"""
    return await _decide(request, False)


# ------------------------------------------------------------------------------ app


#: (method, path, handler): the whole API. ``runtime.openapi`` documents each one and a test
#: keeps the two equal.
ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", f"{API_PREFIX}/schedule", create_job),
    ("GET", f"{API_PREFIX}/schedule", list_jobs),
    ("GET", f"{API_PREFIX}/schedule/{{id}}", get_job),
    ("PUT", f"{API_PREFIX}/schedule/{{id}}", update_job),
    ("DELETE", f"{API_PREFIX}/schedule/{{id}}", delete_job),
    ("POST", f"{API_PREFIX}/schedule/{{id}}/pause", pause_job),
    ("POST", f"{API_PREFIX}/schedule/{{id}}/resume", resume_job),
    ("POST", f"{API_PREFIX}/schedule/{{id}}/reset", reset_job),
    ("POST", f"{API_PREFIX}/schedule/{{id}}/run", run_job),
    ("GET", f"{API_PREFIX}/schedule/{{id}}/history", job_history),
    ("GET", f"{API_PREFIX}/schedule/{{id}}/next_run", job_next_run),
    ("GET", f"{API_PREFIX}/schedules", sdk_list),
    ("POST", f"{API_PREFIX}/schedules", sdk_create),
    ("GET", f"{API_PREFIX}/schedules/{{id}}", sdk_get),
    ("PUT", f"{API_PREFIX}/schedules/{{id}}", sdk_update),
    ("DELETE", f"{API_PREFIX}/schedules/{{id}}", sdk_delete),
    ("POST", f"{API_PREFIX}/schedules/{{id}}/pause", sdk_pause),
    ("POST", f"{API_PREFIX}/schedules/{{id}}/resume", sdk_resume),
    ("POST", f"{API_PREFIX}/schedules/{{id}}/trigger", sdk_trigger),
    ("GET", f"{API_PREFIX}/schedules/{{id}}/history", sdk_history),
    ("GET", f"{API_PREFIX}/schedules/{{id}}/next-runs", sdk_next_runs),
    ("GET", f"{API_PREFIX}/runs/{{run_id}}", get_run),
    ("POST", f"{API_PREFIX}/runs/{{run_id}}/approve", approve_run),
    ("POST", f"{API_PREFIX}/runs/{{run_id}}/reject", reject_run),
    ("GET", f"{API_PREFIX}/health/scheduler", health),
    ("GET", f"{API_PREFIX}/metrics", metrics),
    ("GET", "/metrics", metrics),
    ("GET", f"{API_PREFIX}/openapi.json", openapi),
)


def create_app(store: SqliteStore, config: Config | None = None, *, scheduler: Any = None,
               metrics: CronMetrics | None = None, chain_events: bool = True
               ) -> web.Application:
    """The aiohttp application over ``store``.

    ``scheduler``: a scheduler running in this process (its ``on_event`` is chained to the
    metrics unless ``chain_events`` is false, and its in-flight count is reported). Keys come
    from ``config.api``.
    """
    config = config or Config()
    api: ApiConfig = config.api
    if metrics is None:
        metrics = CronMetrics(store, scheduler=scheduler)
        if scheduler is not None and chain_events:
            chain_on_event(scheduler, metrics.on_event)
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[error_middleware, auth_middleware])
    app[STATE] = ApiState(store=store, config=config,
                          keyring=ApiKeyring.from_keys(api.api_keys), metrics=metrics,
                          scheduler=scheduler,
                          public_health=api.public_health)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app


async def start_api(store: SqliteStore, config: Config, scheduler: Any = None, *,
                    host: str | None = None, port: int | None = None) -> web.AppRunner:
    """Serve the API on ``[api] host``/``port`` (or the overrides) until
    ``await runner.cleanup()``. Raises :class:`ApiStartError` for a non-loopback address
    without an API key, or an address that cannot be bound."""
    host = config.api.host if host is None else host
    port = config.api.port if port is None else port
    check_bind(host, ApiKeyring.from_keys(config.api.api_keys))
    app = create_app(store, config, scheduler=scheduler, chain_events=False)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host or None, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise ApiStartError(f"cannot serve the HTTP API on {host}:{port}: {e.strerror or e}",
                            busy=e.errno == errno.EADDRINUSE) from None
    if scheduler is not None:  # only a serving app's metrics follow the scheduler
        chain_on_event(scheduler, app[STATE].metrics.on_event)
    return runner


def bound_address(runner: web.AppRunner) -> tuple[str, int]:
    """(host, port) the runner listens on (the real port when 0 was asked for)."""
    addr = runner.addresses[0]
    return str(addr[0]), int(addr[1])


@functools.lru_cache(maxsize=1)
def route_table() -> tuple[tuple[str, str], ...]:
    """(method, path) of every route (documentation and tests)."""
    return tuple((m, p) for m, p, _ in ROUTES)


# ------------------------------------------------------------------------------ CLI


def api_url(runner: web.AppRunner) -> str:
    """``http://HOST:PORT/api/v1`` of a started runner (for the start-up line)."""
    host, port = bound_address(runner)
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}{API_PREFIX}"


class ApiService:
    """The API beside the scheduler of ``symbi up``.

    :meth:`start` serves it at once. When the address is in use — typically by another
    ``symbi up`` on the same machine, whose standby this one is — it says so and the scheduler
    goes on without it; binding is tried again each time this scheduler acquires the lease
    (after a takeover the address is usually free). A refused configuration (a public address
    without a key) is an :class:`ApiStartError`.
    """

    def __init__(self, store: SqliteStore, config: Config, scheduler: Any,
                 echo: Callable[[str], None]):
        self.store = store
        self.config = config
        self.scheduler = scheduler
        self.echo = echo
        self.runner: web.AppRunner | None = None
        self._retry: Any = None
        self._closed = False
        self._warned: str | None = None

    async def start(self) -> None:
        """Serve now, or (address busy) arrange to retry when the lease is acquired."""
        try:
            self.runner = await start_api(self.store, self.config, self.scheduler)
        except ApiStartError as e:
            if not e.busy:
                raise
            self._warned = str(e)
            self.echo(f"warning: {e}; the scheduler runs without it and tries again if it "
                      "takes over from another scheduler (use --no-api or another [api] port)")
            chain_on_event(self.scheduler, self._on_event)
            return
        self.echo(f"HTTP API on {api_url(self.runner)}")

    def _on_event(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "lease_acquired" and self.runner is None and not self._closed:
            if self._retry is None or self._retry.done():
                self._retry = asyncio.ensure_future(self._try_again())

    async def _try_again(self) -> None:
        try:
            self.runner = await start_api(self.store, self.config, self.scheduler)
        except ApiStartError as e:
            if str(e) != self._warned:  # the same failure as at start: said once is enough
                self._warned = str(e)
                self.echo(f"warning: {e}")
            return
        if self._closed:
            await self.runner.cleanup()
            self.runner = None
            return
        self.echo(f"HTTP API on {api_url(self.runner)}")

    async def close(self) -> None:
        """Stop serving (idempotent)."""
        self._closed = True
        if self._retry is not None and not self._retry.done():
            self._retry.cancel()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def serve_api(store: SqliteStore, config: Config, *, host: str | None = None,
                    port: int | None = None, stop: Any = None,
                    announce: Callable[[str], None] | None = None) -> None:
    """``symbi serve``: the API alone (no scheduler loop in this process; a ``symbi up``
    elsewhere runs the jobs and picks up triggered runs) until ``stop`` is set or SIGINT /
    SIGTERM arrives. Raises :class:`ApiStartError` if it cannot start."""
    stop = stop or asyncio.Event()
    runner = await start_api(store, config, host=host, port=port)
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread: stop is enough
            pass
    try:
        if announce is not None:
            announce(api_url(runner))
        await stop.wait()
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await runner.cleanup()


def serve_command(c: Any, host: str | None, port: int | None) -> None:
    """The body of ``symbi serve`` (``c``: the CLI's ``Ctx``): serve until Ctrl-C/SIGTERM; an
    unsafe or busy address is a ``CliError``."""
    from runtime.cli import CliError

    config = c.config
    store = c.store(create=True)

    def announce(url: str) -> None:
        auth = ("Bearer API key required" if config.api.api_keys else
                "no API key configured: open to local clients only")
        click.echo(f"symbi: serving the HTTP API on {url} ({auth}); no scheduler in this "
                   "process. Ctrl-C to stop", err=True)

    try:
        asyncio.run(serve_api(store, config, host=host, port=port, announce=announce))
    except ApiStartError as e:
        raise CliError(str(e)) from None
