"""The policy gate inside the scheduler (SPEC §5.6) on a FakeClock with a real SQLite file and
real executors: denials recorded in history and audit, the gate on retries and manual runs,
AgentPin through the scheduler, max_runtime killing a real process."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from runtime_support import T0, H, M, make_scheduler

from compiler.ir import AgentDef, AllowedHours, JobDef, SchedulePolicy
from runtime.agentpin import AgentPinSettings
from runtime.clock import FakeClock
from runtime.config import AgentPinConfig, Config, SchedulerConfig
from runtime.policy import ALLOW, Decision, PolicyGate, StorePinStore
from runtime.scheduler import Scheduler, run_manual_now
from runtime.store import RunRow, SqliteStore

HERE = Path(__file__).parent
FIXTURES = HERE.parent / "fixtures" / "agentpin"
PIN_NOW = datetime.fromtimestamp(1_800_000_000, UTC)


pytestmark = pytest.mark.usefixtures("handlers_importable")


OK = AgentDef(name="ok", executor="python", handler="test_scheduler_handlers:ok",
              capabilities=("reports",))
BAD = AgentDef(name="bad", executor="python", handler="test_scheduler_handlers:fail")


def job(name: str, policy: SchedulePolicy | None, **kw: Any) -> JobDef:
    kw.setdefault("cron", "0 * * * *")
    kw.setdefault("agent", "ok")
    return JobDef(name=name, policy=policy, input=kw.pop("input", name), **kw)


def runs(store: SqliteStore, name: str) -> list[RunRow]:
    return sorted(store.list_runs(name, limit=1000), key=lambda r: (r.scheduled_for, r.attempt))


async def test_denied_outside_allowed_hours_with_reason_in_history_and_audit(
        store: SqliteStore, clock: FakeClock) -> None:
    night = SchedulePolicy(allowed_hours=AllowedHours("22:00", "02:00", "Europe/Berlin"))
    store.deploy([job("nightly", night)], [OK])
    s = make_scheduler(store, clock)
    clock.set(T0 + H)  # 13:00 UTC = 14:00 in Berlin
    await s.run_until_idle()
    (r,) = runs(store, "nightly")
    assert (r.status, r.stop_reason, r.output) == ("denied", "policy:allowed_hours", None)
    assert r.error == "outside allowed hours 22:00–02:00 Europe/Berlin (it is 14:00 there)"
    (ev,) = store.audit_query(type="PolicyDenied")
    assert ev.run_id == r.id and ev.details["rule"] == "allowed_hours"
    assert ev.details["reason"] == r.error and ev.details["timezone"] == "Europe/Berlin"
    j = store.get_job("nightly")
    assert j is not None and j.status == "active" and j.failure_count == 0
    assert [x.trigger for x in runs(store, "nightly")] == ["schedule"]  # no retry of a denial
    clock.set(T0 + 10 * H)  # 22:00 UTC = 23:00 in Berlin: inside the window
    await s.run_until_idle()
    last = runs(store, "nightly")[-1]
    assert (last.status, last.output) == ("succeeded", "ok:nightly")
    # earlier hours were missed while the clock jumped; only the on-time one ran
    assert last.scheduled_for == T0 + 10 * H


async def test_allowed_environments_against_the_runtime_environment(
        store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([job("prod-only", SchedulePolicy(allowed_environments=("production",))),
                  job("staging-ok", SchedulePolicy(allowed_environments=("staging", "prod")))],
                 [OK])
    s = make_scheduler(store, clock, app_config=Config(environment="staging"))
    clock.set(T0 + H)
    await s.run_until_idle()
    (denied,) = runs(store, "prod-only")
    assert denied.status == "denied" and denied.error is not None
    assert "environment `staging` is not allowed" in denied.error
    assert runs(store, "staging-ok")[0].status == "succeeded"
    # SYMBI_ENV, when the scheduler has no configuration
    s2 = make_scheduler(store, clock, env={"SYMBI_ENV": "production"})
    clock.set(T0 + 2 * H)
    await s2.run_until_idle()
    assert runs(store, "prod-only")[-1].status == "succeeded"


async def test_required_capabilities(store: SqliteStore, clock: FakeClock) -> None:
    store.deploy([job("has", SchedulePolicy(require_capabilities=("reports",))),
                  job("lacks", SchedulePolicy(require_capabilities=("reports", "deploy")))],
                 [OK])
    s = make_scheduler(store, clock)
    clock.set(T0 + H)
    await s.run_until_idle()
    assert runs(store, "has")[0].status == "succeeded"
    lacks = runs(store, "lacks")[0]
    assert lacks.status == "denied" and lacks.error == "agent `ok` lacks required capability deploy"


async def test_the_gate_runs_before_retries_and_manual_runs(store: SqliteStore,
                                                            clock: FakeClock) -> None:
    """A failure at 12:59 is retried at 13:00:30 — outside its 12:00–13:00 window: denied."""
    window = SchedulePolicy(allowed_hours=AllowedHours("12:00", "13:00"))
    store.deploy([job("w", window, cron="59 12 * * *", agent="bad", retry_backoff_seconds=90,
                      max_retries=3)], [BAD, OK])
    s = make_scheduler(store, clock)
    clock.set(T0 + 59 * M)
    await s.run_until_idle()
    clock.advance(90)
    await s.run_until_idle()
    first, retry = runs(store, "w")
    assert (first.status, retry.trigger, retry.status) == ("failed", "retry", "denied")
    assert retry.stop_reason == "policy:allowed_hours"
    m = store.request_manual_run("w", input="", actor="ops")
    final = await run_manual_now(store, SchedulerConfig(), m.id, timeout=10, clock=clock, env={})
    assert final is not None and final.status == "denied" and final.trigger == "manual"
    assert len(store.audit_query(type="PolicyDenied")) == 2


async def test_max_runtime_kills_the_process(store: SqliteStore, clock: FakeClock,
                                             tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    store.deploy([job("long", SchedulePolicy(max_runtime_seconds=0.3), agent="sleeper",
                      max_retries=0)],
                 [AgentDef(name="sleeper", executor="command",
                           command=f"echo $$ > {pidfile}; exec sleep 30")])
    s = make_scheduler(store, clock)
    clock.set(T0 + H)
    t = time.monotonic()
    await s.run_until_idle()
    assert time.monotonic() - t < 10
    (r,) = runs(store, "long")
    assert (r.status, r.stop_reason) == ("timed_out", "timeout")
    assert "timed out after 0.3s" in (r.error or "")
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the `sleep 30` is really gone


async def test_a_failing_gate_fails_closed(store: SqliteStore, clock: FakeClock) -> None:
    class Broken(PolicyGate):
        async def evaluate(self, *a: Any, **kw: Any) -> Decision:
            raise RuntimeError("bug")

    store.deploy([job("p", SchedulePolicy()), job("free", None)], [OK])
    s = make_scheduler(store, clock, gate=Broken())
    clock.set(T0 + H)
    await s.run_until_idle()
    r = runs(store, "p")[0]
    assert r.status == "denied"
    assert (r.error or "").startswith("internal error in the policy gate: RuntimeError: bug")
    assert runs(store, "free")[0].status == "succeeded"  # no policy: the gate is not consulted


async def test_the_gate_is_not_consulted_without_a_policy(store: SqliteStore,
                                                          clock: FakeClock) -> None:
    calls: list[str] = []

    class Counting(PolicyGate):
        async def evaluate(self, job: JobDef, *a: Any, **kw: Any) -> Decision:
            calls.append(job.name)
            return ALLOW

    store.deploy([job(f"j{i}", None) for i in range(5)] + [job("p", SchedulePolicy())], [OK])
    s = make_scheduler(store, clock, gate=Counting())
    clock.set(T0 + H)
    await s.run_until_idle()
    assert calls == ["p"]


# ------------------------------------------------------------------ AgentPin in the scheduler


async def test_agentpin_through_the_scheduler(tmp_path: Path) -> None:
    clock = FakeClock(PIN_NOW)
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)
    try:
        agent = AgentDef(name="nightly-report", executor="python",
                         handler="test_scheduler_handlers:ok")
        pin = SchedulePolicy(require_agent_pin=True)
        store.deploy([JobDef(name="signed", agent="nightly-report", cron="*/5 * * * *",
                             policy=pin, agent_pin_jwt="${AGENT_PIN_JWT}"),
                      JobDef(name="unsigned", agent="nightly-report", cron="*/5 * * * *",
                             policy=pin, agent_pin_jwt="${NO_SUCH_VAR}")], [agent])
        token = (FIXTURES / "credential.jwt").read_text().strip()
        cfg = Config(agentpin=AgentPinConfig(domain="agents.example.com",
                                             trust_bundle=FIXTURES / "bundle.json"))
        s = Scheduler(store, SchedulerConfig(), clock, owner_id="t", app_config=cfg,
                      env={"AGENT_PIN_JWT": token})
        clock.set(PIN_NOW + 5 * M)  # the credential expires at PIN_NOW + 55 min
        await s.run_until_idle()
        (ok,) = store.list_runs("signed")
        (bad,) = store.list_runs("unsigned")
        assert ok.status == "succeeded"
        assert bad.status == "denied" and bad.stop_reason == "policy:require_agent_pin"
        assert "missing_credential" in (bad.error or "") and "NO_SUCH_VAR" in (bad.error or "")
        (ev,) = store.audit_query(type="AgentPinVerificationFailed")
        assert ev.run_id == bad.id and ev.details["reason"] == "missing_credential"
        (pd,) = store.audit_query(type="PolicyDenied")
        assert pd.run_id == bad.id and pd.details["rule"] == "require_agent_pin"
        assert StorePinStore(store).get_pin("agents.example.com") is not None
        # the token is expanded per run, never stored expanded
        with open(tmp_path / "state.db", "rb") as f:
            assert token.encode() not in f.read()
        # an hour later the credential has expired: refused with that reason
        clock.set(PIN_NOW + H)
        await s.run_until_idle()
        latest = store.list_runs("signed", limit=1)[0]
        assert latest.status == "denied" and "(expired)" in (latest.error or "")
    finally:
        store.close()


async def test_agentpin_required_globally(tmp_path: Path) -> None:
    clock = FakeClock(PIN_NOW)
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)
    try:
        store.deploy([JobDef(name="plain", agent="ok", cron="0 * * * *")], [OK])
        gate = PolicyGate(agentpin_required=True,
                          agentpin_settings=AgentPinSettings(("agents.example.com",),
                                                             FIXTURES / "bundle.json"),
                          env={})
        s = Scheduler(store, SchedulerConfig(), clock, owner_id="t", gate=gate)
        clock.set(PIN_NOW.replace(minute=0, second=0) + H)
        await s.run_until_idle()
        (r,) = store.list_runs("plain")
        assert r.status == "denied" and "no agent_pin_jwt" in (r.error or "")
    finally:
        store.close()
