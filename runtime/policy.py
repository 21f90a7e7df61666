"""The policy gate (SPEC §5.6): may this run execute now?

:meth:`PolicyGate.evaluate` is called before every execution — scheduled, catch-up, retry,
manual, API, and again when an approved run finally executes. The rules are checked in this
order, the first failing one decides:

1. ``allowed_environments`` — the runtime's environment name (``SYMBI_ENV`` / ``environment``
   in ``symbi.toml``) must be one of them (compared case-insensitively). A runtime without an
   environment name is refused by a job that restricts environments.
2. ``allowed_hours`` — ``start`` ≤ local time-of-day < ``end`` in the window's ``timezone``
   (default UTC); ``end`` before ``start`` crosses midnight; ``start == end`` is the whole day.
3. ``require_capabilities`` — the agent's ``capabilities`` must include each one.
4. ``require_agent_pin`` (per job, or ``SYMBI_AGENTPIN_REQUIRED`` / ``[agentpin] required``
   for every job) — the job's ``agent_pin_jwt`` is expanded from the environment *now* (never
   stored expanded) and verified by :func:`runtime.agentpin.verify_credential`. The job's agent
   id (the credential's ``sub``) is the agent's name or its AgentPin URN
   ``urn:agentpin:<issuer>:<agent name>`` for one of the expected issuers.
5. ``require_approval`` — unless this run was approved already, the decision is
   :class:`RequireApproval` (the run waits as ``awaiting_approval``; see ``runtime.approvals``).

Decisions are :class:`Allow`, :class:`Deny` (with a human-readable reason, the rule that
failed, and the audit details) and :class:`RequireApproval`. A job without a policy, when
AgentPin is not required globally, is allowed without any work (:meth:`PolicyGate.applies`).

``max_runtime`` is not a gate rule: the scheduler passes it to the executor as the run's time
limit (the run ends ``timed_out``, its processes killed).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from compiler.ir import AgentDef, AllowedHours, JobDef, SchedulePolicy
from runtime import audit
from runtime.agentpin import (
    AgentPinSettings,
    InMemoryPinStore,
    PinStore,
    VerificationResult,
    verify_credential,
)
from runtime.envexpand import MissingEnvVar, expand

if TYPE_CHECKING:
    from runtime.config import Config
    from runtime.store import SqliteStore

__all__ = [
    "ALLOW",
    "Allow",
    "Decision",
    "Deny",
    "PolicyGate",
    "RequireApproval",
    "StorePinStore",
    "agent_id_candidates",
    "check_capabilities",
    "check_environment",
    "check_hours",
    "in_window",
    "parse_hhmm",
]

#: Rule names (``Deny.rule``; the run's ``stop_reason`` is ``policy:<rule>``).
RULE_ENVIRONMENTS = "allowed_environments"
RULE_HOURS = "allowed_hours"
RULE_CAPABILITIES = "require_capabilities"
RULE_AGENT_PIN = "require_agent_pin"
RULE_APPROVAL_REJECTED = "approval_rejected"
RULE_APPROVAL_TIMEOUT = "approval_timeout"

_URN_PREFIX = "urn:agentpin:"
_TRUE = frozenset({"1", "true", "yes", "on"})


# ------------------------------------------------------------------------------ decisions


@dataclass(frozen=True, slots=True)
class Allow:
    """The run may execute."""


ALLOW = Allow()


@dataclass(frozen=True, slots=True)
class Deny:
    """The run must not execute: it ends ``denied`` with ``reason``.

    ``audit_type`` is the security event written besides ``PolicyDenied`` (for AgentPin
    failures ``AgentPinVerificationFailed``), with ``details``.
    """

    reason: str
    rule: str
    audit_type: str | None = None
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def stop_reason(self) -> str:
        """The run's ``stop_reason``: ``policy:<rule>``."""
        return f"policy:{self.rule}"


@dataclass(frozen=True, slots=True)
class RequireApproval:
    """The run waits (``awaiting_approval``) until approved, rejected or timed out."""

    approvers: tuple[str, ...]
    timeout_seconds: float


Decision = Allow | Deny | RequireApproval


# ------------------------------------------------------------------------------ rules


def parse_hhmm(text: str) -> int:
    """Minutes after midnight of ``"HH:MM"`` (``"24:00"`` is 1440). ValueError otherwise."""
    hh, sep, mm = text.strip().partition(":")
    if not sep or not hh.isdigit() or not mm.isdigit() or len(mm) != 2 or len(hh) > 2:
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    h, m = int(hh), int(mm)
    if m > 59 or h > 24 or (h == 24 and m != 0):
        raise ValueError(f"{text!r} is not a time of day HH:MM")
    return h * 60 + m


def in_window(local: time, start: int, end: int) -> bool:
    """Whether the local time of day ``local`` lies in ``[start, end)`` (minutes after
    midnight); ``end < start`` crosses midnight, ``start == end`` is the whole day."""
    t = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
    if start == end:
        return True
    if start < end:
        return start <= t < end
    return t >= start or t < end


def check_hours(hours: AllowedHours, now: datetime) -> str | None:
    """None when ``now`` falls inside the window, else the reason for refusing."""
    try:
        zone = ZoneInfo(hours.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return f"allowed_hours has an unknown time zone `{hours.timezone}`"
    try:
        start, end = parse_hhmm(hours.start), parse_hhmm(hours.end)
    except ValueError as e:
        return f"allowed_hours is invalid: {e}"
    local = now.astimezone(zone)
    if in_window(local.timetz(), start, end):
        return None
    return (f"outside allowed hours {hours.start}–{hours.end} {zone.key} "
            f"(it is {local.strftime('%H:%M')} there)")


def check_environment(allowed: tuple[str, ...], environment: str | None) -> str | None:
    """None when ``environment`` is one of ``allowed`` (or nothing is restricted)."""
    if not allowed:
        return None
    names = ", ".join(allowed)
    if not environment:
        return (f"this job may run only in environment {names}, but the runtime has no "
                "environment name (set SYMBI_ENV or `environment` in symbi.toml)")
    if environment.casefold() in {a.casefold() for a in allowed}:
        return None
    return f"environment `{environment}` is not allowed (allowed: {names})"


def check_capabilities(required: tuple[str, ...], agent: AgentDef | None,
                       agent_name: str) -> str | None:
    """None when the agent declares every required capability."""
    if not required:
        return None
    if agent is None:
        return f"agent `{agent_name}` is not defined, so it has none of the required " \
               f"capabilities ({', '.join(required)})"
    have = set(agent.capabilities)
    missing = [c for c in required if c not in have]
    if not missing:
        return None
    return (f"agent `{agent.name}` lacks required capabilit{'y' if len(missing) == 1 else 'ies'}"
            f" {', '.join(missing)}")


def agent_id_candidates(agent_name: str, issuers: tuple[str, ...]) -> tuple[str, ...]:
    """The ids a credential's ``sub`` may carry for agent ``agent_name``: the bare name, and
    ``urn:agentpin:<issuer>:<name>`` for each expected issuer."""
    return (agent_name, *(f"{_URN_PREFIX}{d}:{agent_name}" for d in issuers))


def _unverified_sub(token: str) -> str | None:
    """The ``sub`` claim of a token, read WITHOUT verification — only to choose which of the
    agent's own ids the verifier compares it with (the verifier then checks it fully)."""
    try:
        seg = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    except (IndexError, ValueError, TypeError):
        return None
    sub = data.get("sub") if isinstance(data, dict) else None
    return sub if isinstance(sub, str) else None


# ------------------------------------------------------------------------------ pins


class StorePinStore:
    """AgentPin key pins kept in the state database (table ``agentpin_pins``): a pin survives
    restarts and is shared by the scheduler, the CLI and the API of one database."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    def get_pin(self, domain: str) -> str | None:
        """The pinned fingerprint for ``domain``, or None."""
        rows = self.store.query("SELECT fingerprint FROM agentpin_pins WHERE domain = ?",
                                (domain,))
        return str(rows[0][0]) if rows else None

    def set_pin(self, domain: str, key_id: str, fingerprint: str) -> None:
        """Pin the key for ``domain`` unless a pin exists (first writer wins)."""
        from runtime.store import format_ts

        now = format_ts(self.store.clock.now())
        with self.store.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO agentpin_pins (domain, key_id, fingerprint,"
                         " pinned_at) VALUES (?, ?, ?, ?)", (domain, key_id, fingerprint, now))

    def list_pins(self) -> list[tuple[str, str, str, str]]:
        """Every pin: (domain, key_id, fingerprint, pinned_at)."""
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in self.store.query(
            "SELECT domain, key_id, fingerprint, pinned_at FROM agentpin_pins ORDER BY domain")]


# ------------------------------------------------------------------------------ the gate


def _truthy(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


class PolicyGate:
    """Evaluates a job's policy for one run (see the module docstring).

    ``environment`` is the runtime's environment name; ``agentpin_required`` forces AgentPin
    verification for every job; ``agentpin_settings`` (None: nothing can verify, every
    required verification is refused with ``settings_invalid``) and ``pins`` configure it;
    ``env`` is where ``${VAR}`` in ``agent_pin_jwt`` is expanded from (default
    ``os.environ``, read at each evaluation).
    """

    def __init__(self, *, environment: str | None = None, agentpin_required: bool = False,
                 agentpin_settings: AgentPinSettings | None = None,
                 pins: PinStore | None = None, env: Mapping[str, str] | None = None) -> None:
        self.environment = environment
        self.agentpin_required = agentpin_required
        self.agentpin_settings = agentpin_settings
        self.pins: PinStore = pins if pins is not None else InMemoryPinStore()
        self.env = env

    @classmethod
    def from_config(cls, config: Config, *, store: SqliteStore | None = None,
                    env: Mapping[str, str] | None = None) -> PolicyGate:
        """The gate of a runtime configured by ``config`` (environment name, ``[agentpin]``);
        key pins in ``store`` when given, else in memory."""
        return cls(environment=config.environment, agentpin_required=config.agentpin.required,
                   agentpin_settings=AgentPinSettings.from_config(config),
                   pins=StorePinStore(store) if store is not None else None, env=env)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *,
                 store: SqliteStore | None = None) -> PolicyGate:
        """A gate from environment variables alone (``SYMBI_ENV``, ``SYMBI_AGENTPIN_REQUIRED``,
        ``SYMBI_AGENTPIN_DOMAIN``), for a scheduler built without a configuration."""
        from runtime.config import AgentPinConfig, Config

        e = os.environ if env is None else env
        config = Config(environment=e.get("SYMBI_ENV") or None,
                        agentpin=AgentPinConfig(
                            required=_truthy(e.get("SYMBI_AGENTPIN_REQUIRED")),
                            domain=e.get("SYMBI_AGENTPIN_DOMAIN") or None))
        return cls.from_config(config, store=store, env=env)

    def applies(self, job: JobDef) -> bool:
        """Whether evaluating ``job`` can do anything but allow (the scheduler's fast path)."""
        return job.policy is not None or self.agentpin_required

    async def evaluate(self, job: JobDef, agent: AgentDef | None, *, now: datetime,
                       approved: bool = False) -> Decision:
        """The decision for one run of ``job`` at ``now``. ``approved``: this run was
        approved already (the approval step is skipped; every other rule is checked
        again)."""
        policy = job.policy or SchedulePolicy()
        reason = check_environment(policy.allowed_environments, self.environment)
        if reason is not None:
            return Deny(reason, RULE_ENVIRONMENTS, details={
                "environment": self.environment, "allowed": list(policy.allowed_environments)})
        if policy.allowed_hours is not None:
            reason = check_hours(policy.allowed_hours, now)
            if reason is not None:
                h = policy.allowed_hours
                return Deny(reason, RULE_HOURS, details={
                    "start": h.start, "end": h.end, "timezone": h.timezone,
                    "at": now.isoformat()})
        reason = check_capabilities(policy.require_capabilities, agent, job.agent)
        if reason is not None:
            return Deny(reason, RULE_CAPABILITIES, details={
                "required": list(policy.require_capabilities),
                "agent_capabilities": list(agent.capabilities) if agent else []})
        if policy.require_agent_pin or self.agentpin_required:
            denied = await self.verify_agent_pin(job.agent_pin_jwt, job.agent, now=now)
            if denied is not None:
                return denied
        if policy.require_approval and not approved:
            return RequireApproval(policy.approvers, policy.approval_timeout_seconds)
        return ALLOW

    async def verify_agent_pin(self, token_template: str | None, agent_name: str, *,
                               now: datetime) -> Deny | None:
        """Verify the AgentPin credential ``token_template`` (``${VAR}`` expanded now) for
        agent ``agent_name``; None when valid, else the :class:`Deny` (audit type
        ``AgentPinVerificationFailed``)."""
        def fail(reason: str, detail: str, extra: Mapping[str, Any] | None = None) -> Deny:
            details = {"reason": reason, "detail": detail, "agent": agent_name,
                       **(extra or {})}
            return Deny(f"AgentPin verification failed ({reason}): {detail}", RULE_AGENT_PIN,
                        audit.AGENT_PIN_VERIFICATION_FAILED, details)

        if not token_template:
            return fail("missing_credential",
                        "the job has no agent_pin_jwt (normally \"${AGENT_PIN_JWT}\")")
        env = os.environ if self.env is None else self.env
        try:
            token = expand(token_template, env).strip()
        except MissingEnvVar as e:
            return fail("missing_credential", f"agent_pin_jwt: {e}")
        if not token:
            return fail("missing_credential", "agent_pin_jwt expands to an empty string")
        settings = self.agentpin_settings
        if settings is None:
            return fail("settings_invalid", "AgentPin is not configured ([agentpin] domain)")
        ids = agent_id_candidates(agent_name, settings.expected_issuers)
        sub = _unverified_sub(token)
        # the verifier compares `sub` with one id exactly; offer the one the token claims if
        # it is one of this agent's ids, else the agent's canonical id (→ subject_mismatch)
        agent_id = sub if sub in ids else (ids[1] if len(ids) > 1 else ids[0])
        result: VerificationResult = await verify_credential(
            token, agent_id=agent_id, settings=settings, pins=self.pins, now=now)
        if result.ok:
            return None
        return fail(str(result.reason), result.detail, result.audit_details())

    async def evaluate_agent_run(self, agent: AgentDef, *, token: str | None,
                                 now: datetime) -> Decision:
        """The gate for ``symbi run AGENT`` (no job, so no schedule policy): only AgentPin,
        and only when it is required globally; ``token`` is the credential as written (a
        ``${VAR}`` reference is expanded). Everything else is allowed."""
        if not self.agentpin_required:
            return ALLOW
        denied = await self.verify_agent_pin(token, agent.name, now=now)
        return ALLOW if denied is None else denied
