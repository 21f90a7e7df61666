"""Lowered definitions: plain data with no spans, shared by the bundle, the store and the API.

``JobDef`` carries every property of SPEC §1.3 with its default applied (durations in
seconds). ``None`` for ``max_retries``/``jitter_seconds`` means "use the runtime config
default". ``${VAR}`` references in strings are kept as written.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SESSION_MODES = ("ephemeral_with_summary", "shared_persistent", "fully_ephemeral")
CATCHUP_POLICIES = ("skip", "latest", "all")
AUDIT_LEVELS = ("none", "errors_only", "all_operations")
EXECUTORS = ("llm", "command", "python", "http")
BUILTIN_CHANNELS = ("stdout", "log_file", "webhook", "slack", "email")


@dataclass(frozen=True, slots=True)
class HeartbeatDef:
    enabled: bool = False
    context_mode: str = "ephemeral_with_summary"
    max_iterations: int = 10
    iteration_timeout_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class AllowedHours:
    start: str  # "HH:MM"
    end: str  # "HH:MM"; a window may cross midnight
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    name: str | None = None  # set when it came from a top-level `policy NAME {}` block
    require_approval: bool = False
    approvers: tuple[str, ...] = ()
    approval_timeout_seconds: float = 3600.0
    max_runtime_seconds: float | None = None
    require_capabilities: tuple[str, ...] = ()
    allowed_hours: AllowedHours | None = None
    allowed_environments: tuple[str, ...] = ()
    require_agent_pin: bool = False


@dataclass(frozen=True, slots=True)
class JobDef:
    name: str
    agent: str
    cron: str | None = None
    at: str | None = None  # ISO-8601 UTC instant, e.g. "2026-02-15T14:30:00+00:00"
    timezone: str = "UTC"
    description: str = ""
    tags: tuple[str, ...] = ()
    enabled: bool = True
    one_shot: bool = False
    input: str = ""
    session_mode: str = "ephemeral_with_summary"
    heartbeat: HeartbeatDef | None = None
    delivery: tuple[str, ...] = ()
    deliver: str | None = None
    webhook_url: str | None = None
    webhook_headers: tuple[tuple[str, str], ...] = ()
    webhook_method: str = "POST"
    webhook_secret: str | None = None
    slack_channel: str | None = None
    slack_webhook_url: str | None = None
    email_recipients: tuple[str, ...] = ()
    email_subject: str | None = None
    log_file: str | None = None
    policy: SchedulePolicy | None = None
    max_concurrent: int = 1
    max_retries: int | None = None
    retry_backoff_seconds: float = 30.0
    jitter_seconds: float | None = None
    catchup: str = "latest"
    catchup_window_seconds: float = 3600.0
    agent_pin_jwt: str | None = None
    audit: str = "all_operations"
    source: str = ""  # "path:line" of the definition; "" for jobs made by CLI/API

    def to_dict(self) -> dict[str, Any]:
        out = _to_plain(self)
        assert isinstance(out, dict)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobDef:
        d = dict(data)
        if d.get("heartbeat") is not None:
            d["heartbeat"] = HeartbeatDef(**d["heartbeat"])
        if d.get("policy") is not None:
            p = dict(d["policy"])
            if p.get("allowed_hours") is not None:
                p["allowed_hours"] = AllowedHours(**p["allowed_hours"])
            for k in ("approvers", "require_capabilities", "allowed_environments"):
                p[k] = tuple(p.get(k) or ())
            d["policy"] = SchedulePolicy(**p)
        for k in ("tags", "delivery", "email_recipients"):
            d[k] = tuple(d.get(k) or ())
        d["webhook_headers"] = tuple(tuple(x) for x in (d.get("webhook_headers") or ()))
        return cls(**d)


@dataclass(frozen=True, slots=True)
class AgentDef:
    name: str
    executor: str | None = None  # None: nothing executable (agent-not-executable)
    model: str | None = None
    system_prompt: str | None = None
    command: str | tuple[str, ...] | None = None
    handler: str | None = None
    url: str | None = None
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    provider: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    capabilities: tuple[str, ...] = ()
    timeout_seconds: float | None = None
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str | None = None
    description: str = ""
    version: str | None = None
    tags: tuple[str, ...] = ()
    source: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())  # metadata we keep but do not use

    def to_dict(self) -> dict[str, Any]:
        out = _to_plain(self)
        assert isinstance(out, dict)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentDef:
        d = dict(data)
        for k in ("headers", "env", "extra"):
            d[k] = tuple(tuple(x) for x in (d.get(k) or ()))
        for k in ("capabilities", "tags"):
            d[k] = tuple(d.get(k) or ())
        if isinstance(d.get("command"), list):
            d["command"] = tuple(d["command"])
        return cls(**d)


def _to_plain(obj: object) -> object:
    """Dataclasses → dicts, tuples → lists (JSON-ready, deterministic field order)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_to_plain(x) for x in obj]
    return obj
