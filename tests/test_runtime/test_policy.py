"""The policy gate's rules (SPEC §5.6) as tables, the rule order, and AgentPin wiring (§5.7)
with the stored, genuinely issued AgentPin fixtures (tests/fixtures/agentpin)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

from compiler.ir import AgentDef, AllowedHours, JobDef, SchedulePolicy
from runtime.agentpin import AgentPinSettings, InMemoryPinStore, jwk_fingerprint
from runtime.clock import FakeClock
from runtime.config import AgentPinConfig, Config
from runtime.policy import (
    ALLOW,
    Deny,
    PolicyGate,
    RequireApproval,
    StorePinStore,
    agent_id_candidates,
    check_capabilities,
    check_environment,
    check_hours,
    in_window,
    parse_hhmm,
)
from runtime.store import SqliteStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "agentpin"
ISSUER = "agents.example.com"
AGENT_URN = "urn:agentpin:agents.example.com:nightly-report"
NOW = datetime.fromtimestamp(1_800_000_000, UTC)  # the fixture credential is valid then
TOKEN = (FIXTURES / "credential.jwt").read_text().strip()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if "+" not in text \
        else datetime.fromisoformat(text)


# ------------------------------------------------------------------ allowed_hours


@pytest.mark.parametrize(("start", "end", "tz", "now", "allowed"), [
    # a plain day window: start inclusive, end exclusive
    ("09:00", "17:00", "UTC", "2026-01-05T08:59:59", False),
    ("09:00", "17:00", "UTC", "2026-01-05T09:00:00", True),
    ("09:00", "17:00", "UTC", "2026-01-05T16:59:59", True),
    ("09:00", "17:00", "UTC", "2026-01-05T17:00:00", False),
    # crossing midnight
    ("22:00", "06:00", "UTC", "2026-01-05T21:59:00", False),
    ("22:00", "06:00", "UTC", "2026-01-05T22:00:00", True),
    ("22:00", "06:00", "UTC", "2026-01-05T23:59:59", True),
    ("22:00", "06:00", "UTC", "2026-01-06T00:00:00", True),
    ("22:00", "06:00", "UTC", "2026-01-06T05:59:00", True),
    ("22:00", "06:00", "UTC", "2026-01-06T06:00:00", False),
    ("22:00", "06:00", "UTC", "2026-01-06T12:00:00", False),
    # the window's own time zone, with its DST offset of the day
    ("09:00", "17:00", "America/New_York", "2026-01-05T13:59:00", False),  # 08:59 EST
    ("09:00", "17:00", "America/New_York", "2026-01-05T14:00:00", True),  # 09:00 EST
    ("09:00", "17:00", "America/New_York", "2026-07-06T13:00:00", True),  # 09:00 EDT
    ("09:00", "17:00", "America/New_York", "2026-07-06T21:00:00", False),  # 17:00 EDT
    ("09:00", "10:00", "Asia/Kolkata", "2026-01-05T03:30:00", True),  # 09:00 IST (+05:30)
    ("09:00", "10:00", "Asia/Kolkata", "2026-01-05T03:29:00", False),
    ("23:00", "01:00", "Europe/Berlin", "2026-01-05T22:30:00", True),  # 23:30 CET
    ("23:00", "01:00", "Europe/Berlin", "2026-01-05T23:59:00", True),  # 00:59 CET
    ("23:00", "01:00", "Europe/Berlin", "2026-01-06T00:00:00", False),  # 01:00 CET
    ("23:00", "01:00", "Europe/Berlin", "2026-07-06T21:30:00", True),  # 23:30 CEST
    ("23:00", "01:00", "Europe/Berlin", "2026-07-06T20:59:00", False),  # 22:59 CEST
    # degenerate windows: the whole day
    ("00:00", "24:00", "UTC", "2026-01-05T23:59:59", True),
    ("08:00", "08:00", "UTC", "2026-01-05T03:00:00", True),
])
def test_allowed_hours(start: str, end: str, tz: str, now: str, allowed: bool) -> None:
    reason = check_hours(AllowedHours(start, end, tz), at(now))
    assert (reason is None) == allowed, reason
    if not allowed:
        assert reason is not None and f"{start}–{end}" in reason and tz in reason


def test_allowed_hours_reason_names_the_local_time() -> None:
    reason = check_hours(AllowedHours("09:00", "17:00", "Europe/Berlin"), at("2026-01-05T07:15:00"))
    assert reason == "outside allowed hours 09:00–17:00 Europe/Berlin (it is 08:15 there)"


@pytest.mark.parametrize(("hours", "problem"), [
    (AllowedHours("9am", "17:00"), "not a time of day"),
    (AllowedHours("09:00", "25:00"), "not a time of day"),
    (AllowedHours("09:00", "17:00", "Mars/Olympus"), "unknown time zone"),
])
def test_a_broken_window_denies(hours: AllowedHours, problem: str) -> None:
    reason = check_hours(hours, at("2026-01-05T10:00:00"))
    assert reason is not None and problem in reason


@pytest.mark.parametrize(("text", "minutes"), [("00:00", 0), ("9:05", 545), ("23:59", 1439),
                                               ("24:00", 1440)])
def test_parse_hhmm(text: str, minutes: int) -> None:
    assert parse_hhmm(text) == minutes


def test_in_window_counts_seconds() -> None:
    assert in_window(time(16, 59, 59, 999_999), 9 * 60, 17 * 60)
    assert not in_window(time(17, 0, 0), 9 * 60, 17 * 60)


# ------------------------------------------------------------------ environments, capabilities


@pytest.mark.parametrize(("allowed", "env", "ok"), [
    ((), None, True),
    ((), "anything", True),
    (("production",), "production", True),
    (("staging", "production"), "Production", True),
    (("production",), "dev", False),
    (("production",), None, False),
    (("production",), "", False),
])
def test_allowed_environments(allowed: tuple[str, ...], env: str | None, ok: bool) -> None:
    reason = check_environment(allowed, env)
    assert (reason is None) == ok
    if not ok:
        assert reason is not None and "production" in reason
        assert ("no environment name" in reason) == (not env)


@pytest.mark.parametrize(("required", "caps", "missing"), [
    ((), (), None),
    (("deploy",), ("deploy", "read"), None),
    (("deploy", "production_write"), ("deploy",), "production_write"),
    (("a", "b"), (), "a, b"),
])
def test_require_capabilities(required: tuple[str, ...], caps: tuple[str, ...],
                              missing: str | None) -> None:
    reason = check_capabilities(required, AgentDef(name="x", capabilities=caps), "x")
    if missing is None:
        assert reason is None
    else:
        assert reason is not None and reason.endswith(missing)


def test_capabilities_of_an_undefined_agent() -> None:
    reason = check_capabilities(("a",), None, "ghost")
    assert reason is not None and "`ghost` is not defined" in reason


# ------------------------------------------------------------------ the gate


def job(policy: SchedulePolicy | None = None, **kw: object) -> JobDef:
    return JobDef(name="j", agent="nightly-report", cron="* * * * *", policy=policy,
                  **kw)  # type: ignore[arg-type]


AGENT = AgentDef(name="nightly-report", executor="command", command="true",
                 capabilities=("reports",))


async def test_rules_are_checked_in_order() -> None:
    gate = PolicyGate(environment="dev")
    strict = SchedulePolicy(allowed_environments=("prod",),
                            allowed_hours=AllowedHours("00:00", "01:00"),
                            require_capabilities=("nope",), require_approval=True)
    now = at("2026-01-05T12:00:00")
    d = await gate.evaluate(job(strict), AGENT, now=now)
    assert isinstance(d, Deny) and d.rule == "allowed_environments"
    assert d.stop_reason == "policy:allowed_environments"
    d = await PolicyGate(environment="prod").evaluate(job(strict), AGENT, now=now)
    assert isinstance(d, Deny) and d.rule == "allowed_hours"
    d = await PolicyGate(environment="prod").evaluate(job(strict), AGENT,
                                                      now=at("2026-01-05T00:30:00"))
    assert isinstance(d, Deny) and d.rule == "require_capabilities"
    ok_caps = SchedulePolicy(require_capabilities=("reports",), require_approval=True,
                             approvers=("alice", "bob"), approval_timeout_seconds=60)
    d = await gate.evaluate(job(ok_caps), AGENT, now=now)
    assert d == RequireApproval(("alice", "bob"), 60)
    assert await gate.evaluate(job(ok_caps), AGENT, now=now, approved=True) is ALLOW
    assert await gate.evaluate(job(SchedulePolicy()), AGENT, now=now) is ALLOW


def test_applies_is_the_fast_path() -> None:
    assert not PolicyGate().applies(job())
    assert PolicyGate().applies(job(SchedulePolicy()))
    assert PolicyGate(agentpin_required=True).applies(job())


def test_from_env_and_from_config() -> None:
    g = PolicyGate.from_env({"SYMBI_ENV": "staging", "SYMBI_AGENTPIN_REQUIRED": "true",
                             "SYMBI_AGENTPIN_DOMAIN": "A.example.com, b.example.com"})
    assert g.environment == "staging" and g.agentpin_required
    assert g.agentpin_settings is not None
    assert g.agentpin_settings.expected_issuers == ("a.example.com", "b.example.com")
    g = PolicyGate.from_env({})
    assert g.environment is None and not g.agentpin_required
    g = PolicyGate.from_config(Config(environment="prod"))
    assert g.environment == "prod" and not g.agentpin_required


# ------------------------------------------------------------------ AgentPin


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.open(tmp_path / "state.db", clock=FakeClock(NOW))
    yield s
    s.close()


def pin_gate(store: SqliteStore | None = None, *, env: dict[str, str] | None = None,
             issuers: tuple[str, ...] = (ISSUER,), required: bool = False) -> PolicyGate:
    return PolicyGate(agentpin_required=required,
                      agentpin_settings=AgentPinSettings(issuers, FIXTURES / "bundle.json"),
                      pins=StorePinStore(store) if store is not None else InMemoryPinStore(),
                      env={"AGENT_PIN_JWT": TOKEN} if env is None else env)


PIN_JOB = job(SchedulePolicy(require_agent_pin=True), agent_pin_jwt="${AGENT_PIN_JWT}")


async def test_a_valid_credential_passes_and_pins_the_key_in_the_store(store: SqliteStore) -> None:
    gate = pin_gate(store)
    assert await gate.evaluate(PIN_JOB, AGENT, now=NOW) is ALLOW
    discovery = json.loads((FIXTURES / f"{ISSUER}.json").read_text())
    ((domain, kid, fp, _),) = StorePinStore(store).list_pins()
    assert (domain, fp) == (ISSUER, jwk_fingerprint(discovery["public_keys"][0]))
    assert kid == discovery["public_keys"][0]["kid"]
    assert await gate.evaluate(PIN_JOB, AGENT, now=NOW) is ALLOW  # pin matches next time


async def test_a_pinned_different_key_is_refused(store: SqliteStore) -> None:
    StorePinStore(store).set_pin(ISSUER, "old", "0" * 64)
    d = await pin_gate(store).evaluate(PIN_JOB, AGENT, now=NOW)
    assert isinstance(d, Deny) and d.details["reason"] == "pin_mismatch"
    StorePinStore(store).set_pin(ISSUER, "other", "1" * 64)  # first writer wins
    assert StorePinStore(store).get_pin(ISSUER) == "0" * 64


@pytest.mark.parametrize(("case", "reason"), [
    ("no token in the environment", "missing_credential"),
    ("job has no agent_pin_jwt", "missing_credential"),
    ("empty token", "missing_credential"),
    ("issuer not expected", "issuer_not_allowed"),
    ("expired", "expired"),
    ("other agent", "subject_mismatch"),
    ("garbage", "malformed_token"),
    ("not configured", "settings_invalid"),
])
async def test_agentpin_failures_deny_with_a_named_reason(case: str, reason: str) -> None:
    gate = pin_gate()
    j, agent, now = PIN_JOB, AGENT, NOW
    if case == "no token in the environment":
        gate = pin_gate(env={})
    elif case == "job has no agent_pin_jwt":
        j = job(SchedulePolicy(require_agent_pin=True))
    elif case == "empty token":
        gate = pin_gate(env={"AGENT_PIN_JWT": "  "})
    elif case == "issuer not expected":
        gate = pin_gate(issuers=("other.example.org",))
    elif case == "expired":
        now = NOW + timedelta(days=2)
    elif case == "other agent":
        agent = AgentDef(name="someone-else", executor="command", command="true")
        j = JobDef(name="j", agent="someone-else", cron="* * * * *", agent_pin_jwt="${AGENT_PIN_JWT}",
                   policy=SchedulePolicy(require_agent_pin=True))
    elif case == "garbage":
        gate = pin_gate(env={"AGENT_PIN_JWT": "not.a.jwt"})
    elif case == "not configured":
        gate = PolicyGate(env={"AGENT_PIN_JWT": TOKEN})
    d = await gate.evaluate(j, agent, now=now)
    assert isinstance(d, Deny), case
    assert d.rule == "require_agent_pin" and d.audit_type == "AgentPinVerificationFailed"
    assert d.details["reason"] == reason and d.reason.startswith(f"AgentPin verification failed ({reason})")
    assert TOKEN not in json.dumps(dict(d.details)) and TOKEN not in d.reason  # never leaked


async def test_required_globally_applies_to_jobs_without_a_policy() -> None:
    plain = job(agent_pin_jwt="${AGENT_PIN_JWT}")
    assert await pin_gate(required=True).evaluate(plain, AGENT, now=NOW) is ALLOW
    d = await pin_gate(required=True, env={}).evaluate(plain, AGENT, now=NOW)
    assert isinstance(d, Deny) and d.details["reason"] == "missing_credential"
    assert await pin_gate(required=False, env={}).evaluate(plain, AGENT, now=NOW) is ALLOW


async def test_the_bare_agent_name_is_also_an_agent_id() -> None:
    assert agent_id_candidates("n", ("a.com", "b.com")) == ("n", "urn:agentpin:a.com:n",
                                                             "urn:agentpin:b.com:n")


async def test_symbi_run_gate_checks_agentpin_only_when_required() -> None:
    assert await pin_gate().evaluate_agent_run(AGENT, token=None, now=NOW) is ALLOW
    gate = pin_gate(required=True)
    assert await gate.evaluate_agent_run(AGENT, token="${AGENT_PIN_JWT}", now=NOW) is ALLOW
    assert await gate.evaluate_agent_run(AGENT, token=TOKEN, now=NOW) is ALLOW
    d = await gate.evaluate_agent_run(AGENT, token=None, now=NOW)
    assert isinstance(d, Deny) and d.details["reason"] == "missing_credential"
    other = AgentDef(name="other", executor="command", command="true")
    d = await gate.evaluate_agent_run(other, token=TOKEN, now=NOW)
    assert isinstance(d, Deny) and d.details["reason"] == "subject_mismatch"


async def test_gate_from_config_uses_agentpin_section(store: SqliteStore) -> None:
    cfg = Config(agentpin=AgentPinConfig(required=True, domain=ISSUER,
                                         trust_bundle=FIXTURES / "bundle.json"))
    gate = PolicyGate.from_config(cfg, store=store, env={"AGENT_PIN_JWT": TOKEN})
    assert await gate.evaluate(job(agent_pin_jwt="${AGENT_PIN_JWT}"), AGENT, now=NOW) is ALLOW
    assert StorePinStore(store).get_pin(ISSUER) is not None
