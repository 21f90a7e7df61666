"""Job definitions from JSON (CLI ``cron add --json`` and the HTTP API) → ``JobDef``.

Accepts our property names (SPEC §1.3), the seed's (``agent_id``, ``cron_expr``) and the upstream
SDK's (``agent_name``, ``cron_expression``, ``policy_ids``). Every problem is reported with the
field, the value and what was expected; nothing is half-applied.
"""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from compiler.cron import parse_cron
from compiler.diagnostics import did_you_mean
from compiler.durations import parse_duration
from compiler.ir import (
    AUDIT_LEVELS,
    BUILTIN_CHANNELS,
    CATCHUP_POLICIES,
    SESSION_MODES,
    AllowedHours,
    HeartbeatDef,
    JobDef,
    SchedulePolicy,
)
from compiler.schema import CHANNEL_REQUIRED, NAME_PATTERN
from compiler.validate import is_email, url_problem

ALIASES = {
    "agent_id": "agent",
    "agent_name": "agent",
    "cron_expr": "cron",
    "cron_expression": "cron",
    "schedule": "cron",
}
NAME_RE = re.compile(rf"^{NAME_PATTERN}$")
WEBHOOK_METHODS = ("POST", "PUT", "PATCH")
#: Longest accepted duration (100 years).
MAX_DURATION_SECONDS = 100 * 365 * 86400
_DURATION_FIELDS = {
    "retry_backoff": "retry_backoff_seconds",
    "jitter": "jitter_seconds",
    "catchup_window": "catchup_window_seconds",
}


class JobSpecError(ValueError):
    """Invalid job JSON; ``problems`` is a list of human-readable lines."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _dur(v: Any, field: str, problems: list[str]) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool):
        problems.append(f"`{field}`: expected a duration such as \"30s\" or seconds, got {v!r}")
        return None
    d: float | None
    if isinstance(v, (int, float)):
        if v < 0:
            problems.append(f"`{field}`: must not be negative, got {v}")
            return None
        d = float(v) if v <= MAX_DURATION_SECONDS else math.inf  # float(10**400) overflows
    elif isinstance(v, str):
        d = parse_duration(v)
        if d is None:
            problems.append(f"`{field}`: expected a duration such as \"30s\", \"5m\", \"1h30m\", got {v!r}")
            return None
    else:
        problems.append(f"`{field}`: expected a duration, got {type(v).__name__}")
        return None
    # beyond this, date arithmetic in the scheduler overflows; nothing sensible is that long
    if d is None or not math.isfinite(d) or d > MAX_DURATION_SECONDS:
        problems.append(f"`{field}`: at most {MAX_DURATION_SECONDS // 86400} days, got {v!r}")
        return None
    return d


def job_from_json(data: Any, *, now: datetime | None = None, partial_of: JobDef | None = None) -> JobDef:
    """Validate a JSON object into a JobDef. With ``partial_of``, only given fields change."""
    if not isinstance(data, dict):
        raise JobSpecError([f"expected a JSON object, got {type(data).__name__}"])
    problems: list[str] = []
    d: dict[str, Any] = {}
    for raw_key, value in data.items():
        key = str(raw_key)
        canon = ALIASES.get(key, key)
        if canon in d:
            problems.append(f"`{key}` and another name for `{canon}` are both given")
        d[canon] = value
    fields = set(JobDef.__dataclass_fields__) - {"source", "policy", "heartbeat"}
    known = fields | set(_DURATION_FIELDS) | {"policy", "heartbeat", "policy_ids"}
    for key in list(d):
        if key not in known:
            hint = did_you_mean(key, sorted(known | set(ALIASES)))
            problems.append(f"unknown field `{key}`" + (f" (did you mean `{hint}`?)" if hint else ""))
    base: dict[str, Any] = partial_of.to_dict() if partial_of else {}
    out: dict[str, Any] = dict(base)

    def take_str(key: str, required: bool = False) -> None:
        if key in d:
            v = d[key]
            if v is None and not required:
                # null means "the default": "" for text fields, unset for optional ones
                out[key] = "" if key in ("description", "input") else None
            elif not isinstance(v, str):
                problems.append(f"`{key}`: expected a string, got {json_type(v)}")
            else:
                out[key] = v
        elif required and key not in out:
            problems.append(f"`{key}` is required")

    take_str("name", required=True)
    take_str("agent", required=True)
    for key in ("cron", "at", "description", "input", "deliver", "webhook_url", "webhook_secret",
                "slack_channel", "slack_webhook_url", "email_subject", "log_file", "agent_pin_jwt"):
        take_str(key)
    take_str("timezone")
    if "webhook_method" in d:
        m = d["webhook_method"]
        if m not in WEBHOOK_METHODS:
            problems.append(f"`webhook_method`: expected one of {', '.join(WEBHOOK_METHODS)}, got {m!r}")
        else:
            out["webhook_method"] = m
    for key in ("enabled", "one_shot"):
        if key in d:
            if not isinstance(d[key], bool):
                problems.append(f"`{key}`: expected true or false, got {json_type(d[key])}")
            else:
                out[key] = d[key]
    for key, lo in (("max_concurrent", 1), ("max_retries", 0)):
        if key in d:
            v = d[key]
            if v is None and key == "max_retries":
                out[key] = None
            elif not isinstance(v, int) or isinstance(v, bool) or v < lo:
                problems.append(f"`{key}`: expected an integer ≥ {lo}, got {v!r}")
            else:
                out[key] = v
    for key in ("tags", "delivery", "email_recipients"):
        if key in d:
            v = d[key]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                problems.append(f"`{key}`: expected a list of strings, got {v!r}")
            else:
                out[key] = list(v)
    if "webhook_headers" in d:
        v = d["webhook_headers"]
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            problems.append("`webhook_headers`: expected an object of string values")
        else:
            out["webhook_headers"] = [[k, v[k]] for k in v]
    for key, enum in (("session_mode", SESSION_MODES), ("catchup", CATCHUP_POLICIES),
                      ("audit", AUDIT_LEVELS)):
        if key in d:
            if d[key] not in enum:
                problems.append(f"`{key}`: expected one of {', '.join(enum)}, got {d[key]!r}")
            else:
                out[key] = d[key]
    for key, target in _DURATION_FIELDS.items():
        if key in d or target in d:
            raw = d.get(key, d.get(target))
            v = _dur(raw, key, problems)
            if v is not None or key == "jitter":
                out[target] = v
            elif raw is None:  # null: back to the default
                out[target] = JobDef.__dataclass_fields__[target].default
    if "heartbeat" in d:
        hb = d["heartbeat"]
        if hb is None:
            out["heartbeat"] = None
        elif not isinstance(hb, dict):
            problems.append("`heartbeat`: expected an object")
        else:
            out["heartbeat"] = _heartbeat(hb, problems)
    if "policy" in d or "policy_ids" in d:
        pol = d.get("policy")
        if isinstance(pol, dict):
            out["policy"] = _policy(pol, problems)
        elif pol is None and "policy_ids" in d:
            ids = d["policy_ids"]
            if ids not in (None, []):
                problems.append("`policy_ids`: named policies can only be given in .symbi files; "
                                "pass a `policy` object instead")
        elif pol is not None:
            problems.append("`policy`: expected an object such as {\"max_runtime\": \"5m\"}")

    # cross-field checks
    _check_channels(d, out, problems)
    name = out.get("name")
    if isinstance(name, str) and not NAME_RE.match(name):
        problems.append(f"`name`: {name!r} must match [A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}")
    tz = out.get("timezone") or "UTC"
    out["timezone"] = tz
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory: OSError
        problems.append(f"`timezone`: {tz!r} is not an IANA time zone name (e.g. \"Europe/Berlin\")")
        zone = None
    cron, at = out.get("cron"), out.get("at")
    if partial_of is not None:
        if "cron" in d and d["cron"] is not None:
            out["at"] = at = None if "at" not in d else at
        if "at" in d and d["at"] is not None and "cron" not in d:
            out["cron"] = cron = None
    if cron and at:
        problems.append("give exactly one of `cron` and `at`, not both")
    elif not cron and not at:
        problems.append("one of `cron` (or `cron_expr`) and `at` is required")
    elif cron:
        expr, cprobs = parse_cron(cron)
        for p in cprobs:
            if p.code != "cron-never-fires":
                caret = " " * p.start + "^" * max(1, p.end - p.start)
                problems.append(f"`cron`: {p.message}\n    {cron}\n    {caret}")
            else:
                problems.append(f"`cron`: {p.message}")
    elif at:
        parsed = _parse_at(at, zone)
        if parsed is None:
            problems.append(f"`at`: expected an ISO-8601 time such as \"2026-02-15T14:30:00Z\", got {at!r}")
        elif "at" in d and parsed <= (now or datetime.now(UTC)):
            problems.append(f"`at`: {parsed.isoformat()} is in the past; a job whose time has "
                            "passed never runs")
        else:
            out["at"] = parsed.isoformat()
    if problems:
        raise JobSpecError(problems)
    out.setdefault("source", "")
    final = {k: out[k] for k in out if k in JobDef.__dataclass_fields__}
    for key in ("policy", "heartbeat"):  # JobDef.from_dict takes them as plain dicts
        if dataclasses.is_dataclass(final.get(key)):
            final[key] = dataclasses.asdict(final[key])
    return JobDef.from_dict(final)


def _check_channels(given: dict[str, Any], out: dict[str, Any], problems: list[str]) -> None:
    """``delivery`` names built-in channels; ``deliver`` (a URI such as ``slack://#ops``) adds
    its channel and fills the setting it implies, as in a .symbi file; channels have the
    settings they need."""
    channels = list(out.get("delivery") or ())
    for ch in channels:
        if ch not in BUILTIN_CHANNELS:
            hint = did_you_mean(ch, BUILTIN_CHANNELS)
            problems.append(f"`delivery`: unknown channel {ch!r}"
                            + (f" (did you mean {hint!r}?)" if hint else
                               f" (the built-in channels are {', '.join(BUILTIN_CHANNELS)})"))
    target = given.get("deliver")
    if isinstance(target, str):
        channel, setting, value = _parse_deliver(target, problems)
        if channel is not None:
            if channel not in channels:
                channels.append(channel)
            if setting is not None:
                if setting in given and given[setting] != value and not (
                        isinstance(value, tuple) and given[setting] == list(value)):
                    problems.append(f"`deliver` and `{setting}` disagree")
                else:
                    out[setting] = list(value) if isinstance(value, tuple) else value
    if "delivery" in out or channels:
        out["delivery"] = channels
    for ch in channels:
        for key in CHANNEL_REQUIRED.get(ch, ()):
            if not out.get(key):
                problems.append(f"`delivery`: channel `{ch}` needs `{key}`")
    url = out.get("webhook_url")
    if isinstance(url, str) and "${" not in url:
        why = url_problem(url)
        if why is not None:
            problems.append(f"`webhook_url`: {url!r} is not an http(s) URL ({why})")
    for addr in out.get("email_recipients") or ():
        if "${" not in addr and not is_email(addr):
            problems.append(f"`email_recipients`: {addr!r} is not an e-mail address")


def _parse_deliver(text: str, problems: list[str]) -> tuple[str | None, str | None, Any]:
    """``deliver`` URI → (channel, setting it fills, value); the same forms as in .symbi."""
    if "://" not in text:
        problems.append(f"`deliver`: {text!r} is not a delivery URI (write e.g. \"slack://#ops\", "
                        "\"email://ops@example.com\", \"webhook+https://example.com/hook\", "
                        "\"log_file://job.log\" or \"stdout://\")")
        return None, None, None
    scheme, rest = text.split("://", 1)
    if scheme == "stdout":
        return "stdout", None, None
    if scheme == "log_file":
        return "log_file", ("log_file" if rest else None), rest or None
    if scheme == "slack":
        return "slack", ("slack_channel" if rest else None), rest or None
    if scheme == "email":
        addrs = tuple(a.strip() for a in rest.split(",") if a.strip())
        if not addrs:
            problems.append("`deliver`: `email://` needs an address")
            return None, None, None
        return "email", "email_recipients", addrs
    if scheme in ("webhook+http", "webhook+https"):
        return "webhook", "webhook_url", f"{scheme.split('+', 1)[1]}://{rest}"
    hint = did_you_mean(scheme, [*BUILTIN_CHANNELS, "webhook+https"])
    problems.append(f"`deliver`: unknown channel `{scheme}://`"
                    + (f" (did you mean `{hint}://`?)" if hint else ""))
    return None, None, None


def _parse_at(text: str, zone: ZoneInfo | None) -> datetime | None:
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=zone or UTC)
    return dt.astimezone(UTC)


def _heartbeat(hb: dict[str, Any], problems: list[str]) -> HeartbeatDef:
    known = {"enabled", "context_mode", "max_iterations", "iteration_timeout"}
    for k in hb:
        if k not in known:
            problems.append(f"`heartbeat.{k}`: unknown field (expected one of {', '.join(sorted(known))})")
    mi = hb.get("max_iterations", 10)
    if not isinstance(mi, int) or isinstance(mi, bool) or mi < 1:
        problems.append(f"`heartbeat.max_iterations`: expected an integer ≥ 1, got {mi!r}")
        mi = 10
    mode = hb.get("context_mode", "ephemeral_with_summary")
    if mode not in SESSION_MODES:
        problems.append(f"`heartbeat.context_mode`: expected one of {', '.join(SESSION_MODES)}")
        mode = "ephemeral_with_summary"
    return HeartbeatDef(
        enabled=_bool(hb, "enabled", True, "heartbeat.", problems),
        context_mode=mode,
        max_iterations=mi,
        iteration_timeout_seconds=_dur(hb.get("iteration_timeout"), "heartbeat.iteration_timeout", problems),
    )


def _policy(p: dict[str, Any], problems: list[str]) -> SchedulePolicy:
    known = {"require_approval", "approvers", "approval_timeout", "max_runtime",
             "require_capabilities", "allowed_hours", "allowed_environments", "require_agent_pin"}
    for k in p:
        if k not in known:
            problems.append(f"`policy.{k}`: unknown field (expected one of {', '.join(sorted(known))})")
    hours = None
    ah = p.get("allowed_hours")
    if ah is not None:
        ok = isinstance(ah, dict) and all(
            isinstance(ah.get(k), str) and re.match(r"^([01]\d|2[0-3]):[0-5]\d$", ah.get(k, ""))
            for k in ("start", "end"))
        if not ok:
            problems.append("`policy.allowed_hours`: expected {\"start\": \"HH:MM\", \"end\": \"HH:MM\"}")
        elif not _is_zone(ah.get("timezone", "UTC")):
            problems.append(f"`policy.allowed_hours.timezone`: {ah.get('timezone')!r} is not an "
                            "IANA time zone name")
        else:
            hours = AllowedHours(ah["start"], ah["end"], ah.get("timezone", "UTC"))
    return SchedulePolicy(
        require_approval=_bool(p, "require_approval", False, "policy.", problems),
        approvers=_str_list(p, "approvers", "policy.", problems),
        approval_timeout_seconds=_dur(p.get("approval_timeout", 3600), "policy.approval_timeout", problems) or 3600.0,
        max_runtime_seconds=_dur(p.get("max_runtime"), "policy.max_runtime", problems),
        require_capabilities=_str_list(p, "require_capabilities", "policy.", problems),
        allowed_hours=hours,
        allowed_environments=_str_list(p, "allowed_environments", "policy.", problems),
        require_agent_pin=_bool(p, "require_agent_pin", False, "policy.", problems),
    )


def _is_zone(name: Any) -> bool:
    if not isinstance(name, str):
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Europe" is a directory: OSError
        return False
    return True


def _bool(obj: dict[str, Any], key: str, default: bool, prefix: str, problems: list[str]) -> bool:
    v = obj.get(key, default)
    if not isinstance(v, bool):
        problems.append(f"`{prefix}{key}`: expected true or false, got {json_type(v)}")
        return default
    return v


def _str_list(obj: dict[str, Any], key: str, prefix: str, problems: list[str]) -> tuple[str, ...]:
    v = obj.get(key)
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        problems.append(f"`{prefix}{key}`: expected a list of strings, got {v!r}")
        return ()
    return tuple(v)


def json_type(v: Any) -> str:
    """How a JSON value's type is named in messages (``a string``, ``a list`` …)."""
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object", type(None): "null"}.get(type(v), type(v).__name__)
