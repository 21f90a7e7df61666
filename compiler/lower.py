"""Lowering: validated specs → ``compiler.ir`` job and agent definitions (plain data, no spans).

Pure: defaults are applied here (from the ``ir`` dataclass defaults), durations are already
seconds, ``at`` is already a UTC ISO string, and a policy name is resolved into a
``SchedulePolicy`` carrying that name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from compiler.ir import AgentDef, AllowedHours, HeartbeatDef, JobDef, SchedulePolicy
from compiler.validate import AgentSpec, PolicySpec, ScheduleSpec, Validated

# Schedule keys copied as they are (same name in JobDef, value already converted).
_SAME = (
    "agent", "cron", "at", "timezone", "description", "enabled", "one_shot", "input",
    "session_mode", "webhook_url", "webhook_method", "webhook_secret", "slack_channel",
    "slack_webhook_url", "email_subject", "log_file", "max_concurrent", "max_retries",
    "catchup", "agent_pin_jwt", "audit",
)  # fmt: skip
# Schedule duration keys → JobDef field (seconds).
_SECONDS = {
    "retry_backoff": "retry_backoff_seconds",
    "jitter": "jitter_seconds",
    "catchup_window": "catchup_window_seconds",
}


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    """The converted values only (validate also stores ``@key`` → source property)."""
    return {k: v for k, v in values.items() if not k.startswith("@")}


def lower_policy(spec: PolicySpec) -> SchedulePolicy:
    """A validated policy block → ``SchedulePolicy`` (defaults applied)."""
    v = _given(spec.values)
    kw: dict[str, Any] = {"name": spec.name}
    for key in ("require_approval", "require_agent_pin"):
        if key in v:
            kw[key] = v[key]
    for key in ("approvers", "require_capabilities", "allowed_environments"):
        if key in v:
            kw[key] = tuple(v[key])
    if "approval_timeout" in v:
        kw["approval_timeout_seconds"] = v["approval_timeout"]
    if "max_runtime" in v:
        kw["max_runtime_seconds"] = v["max_runtime"]
    hours = v.get("allowed_hours")
    if hours is not None and "start" in hours and "end" in hours:
        kw["allowed_hours"] = AllowedHours(hours["start"], hours["end"], hours.get("timezone", "UTC"))
    return SchedulePolicy(**kw)


def lower_schedule(spec: ScheduleSpec, policies: Mapping[str, PolicySpec]) -> JobDef:
    """A validated schedule → ``JobDef``; ``source`` is ``"path:line"``."""
    v = _given(spec.values)
    kw: dict[str, Any] = {k: v[k] for k in _SAME if k in v}
    kw["name"] = spec.name
    for key, field_name in _SECONDS.items():
        if key in v:
            kw[field_name] = v[key]
    if "tags" in v:
        kw["tags"] = tuple(v["tags"])
    if "delivery" in v:
        kw["delivery"] = tuple(name for name, _span in v["delivery"])
    if "deliver" in spec.values:
        # Keep the URI as written; its channel and target are already folded in above.
        kw["deliver"] = spec.values["@deliver"].value.value
    if "webhook_headers" in v:
        kw["webhook_headers"] = tuple(v["webhook_headers"])
    if "email_recipients" in v:
        kw["email_recipients"] = tuple(v["email_recipients"])
    hb = v.get("heartbeat")
    if hb is not None:
        hbv, dflt = _given(hb), HeartbeatDef()
        kw["heartbeat"] = HeartbeatDef(
            # Writing a heartbeat block asks for a heartbeat: `enabled` defaults to true there.
            enabled=hbv.get("enabled", True),
            context_mode=hbv.get("context_mode", dflt.context_mode),
            max_iterations=hbv.get("max_iterations", dflt.max_iterations),
            iteration_timeout_seconds=hbv.get("iteration_timeout"),
        )
    pol = v.get("policy")
    if isinstance(pol, PolicySpec):
        kw["policy"] = lower_policy(pol)
    elif isinstance(pol, str):
        kw["policy"] = lower_policy(policies[pol])
    kw["source"] = f"{spec.source.name}:{spec.line}"
    return JobDef(**kw)


def lower_agent(spec: AgentSpec) -> AgentDef:
    """A validated agent → ``AgentDef``."""
    v = _given(spec.values)
    kw: dict[str, Any] = {"name": spec.name, "executor": spec.executor}
    for key in ("model", "system_prompt", "handler", "url", "method", "provider", "temperature",
                "max_tokens", "working_dir", "description", "version"):
        if key in v:
            kw[key] = v[key]
    if "command" in v:
        kw["command"] = v["command"] if isinstance(v["command"], str) else tuple(v["command"])
    for key in ("headers", "env"):
        if key in v:
            kw[key] = tuple(v[key])
    if "tags" in v:
        kw["tags"] = tuple(v["tags"])
    kw["capabilities"] = spec.capabilities
    kw["timeout_seconds"] = spec.timeout_seconds
    kw["extra"] = tuple((k, str(v[k])) for k in ("author", "license") if k in v)
    kw["source"] = f"{spec.source.name}:{spec.line}"
    return AgentDef(**kw)


def lower(validated: Validated) -> tuple[list[JobDef], list[AgentDef]]:
    """Every schedule and agent of a compilation, sorted by name (deterministic output)."""
    jobs = [lower_schedule(s, validated.policies) for s in validated.schedules]
    agents = [lower_agent(a) for a in validated.agents]
    return sorted(jobs, key=lambda j: j.name), sorted(agents, key=lambda a: a.name)


def dump_definitions(jobs: Iterable[JobDef], agents: Iterable[AgentDef]) -> str:
    """A stable, readable text form of lowered definitions (golden files, debugging)."""
    doc = {
        "agents": [a.to_dict() for a in sorted(agents, key=lambda a: a.name)],
        "jobs": [j.to_dict() for j in sorted(jobs, key=lambda j: j.name)],
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
