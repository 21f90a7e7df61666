"""Issue 4 acceptance, end to end: heartbeats, session modes, the policy gate, AgentPin and
``symbi run`` — through the real Scheduler (FakeClock), the real executors, real SQLite files,
the ``symbi`` CLI (click's runner) and servers on 127.0.0.1.

Covered elsewhere through the same real paths (not repeated here):
- (b) session modes: ``test_sessions.py::test_shared_persistent_keeps_one_context_across_runs_
  and_restarts`` (three consecutive runs, the context growing, a restart with a new store and
  scheduler) and ``::test_fully_ephemeral_carries_nothing`` (three runs, nothing carried);
- (c) allowed hours in history and audit via the store API:
  ``test_policy_scenarios.py::test_denied_outside_allowed_hours_with_reason_in_history_and_
  audit`` (here: the same through the CLI's history and audit views);
- (d) a valid credential and an expired one through the scheduler:
  ``test_policy_scenarios.py::test_agentpin_through_the_scheduler``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import agentpin
import pytest
from aiohttp import web
from click.testing import CliRunner, Result
from runtime_support import OK, T0, M

from compiler.compile import compile_paths
from compiler.ir import AgentDef, AllowedHours, JobDef, SchedulePolicy
from runtime.cli import cli
from runtime.clock import FakeClock
from runtime.config import AgentPinConfig, Config, SchedulerConfig, load_config
from runtime.heartbeat import list_iterations
from runtime.llm import SUMMARY_NOTE
from runtime.scheduler import Scheduler
from runtime.store import SqliteStore

HERE = Path(__file__).parent
REPO = HERE.parents[1]
EXAMPLE = REPO / "examples" / "heartbeat_monitor.symbi"


@pytest.fixture(autouse=True)
def _env(cli_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # cli_env: handlers importable, cwd = tmp_path, no SYMBI_CONFIG; and none of these either
    for var in ("SYMBI_ENV", "SYMBI_AGENTPIN_REQUIRED", "SYMBI_AGENTPIN_DOMAIN", "AGENT_PIN_JWT"):
        monkeypatch.delenv(var, raising=False)


def symbi(*args: str) -> Result:
    res = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in res.output, res.output
    return res


def deploy_example(store: SqliteStore) -> None:
    result = compile_paths([str(EXAMPLE)], mode="compile")
    assert result.errors == 0
    store.deploy(list(result.jobs), list(result.agents))


# ------------------------------------------------------------------ (a) heartbeats


async def test_heartbeat_monitor_example_against_a_local_llm(store: SqliteStore,
                                                             clock: FakeClock,
                                                             tmp_path: Path) -> None:
    """The seed's heartbeat-monitor example, its provider pointed at a local Anthropic-format
    server by symbi.toml: an action on iteration 1, `sleep` on iteration 2."""
    from llm_server import LlmServer, Reply

    deploy_example(store)
    store.pause_job("system-monitor", actor="t")  # its own test below
    with LlmServer([Reply("CPU at 97% on web-1, nginx workers stuck.\nrestart nginx on web-1",
                          410, 25),
                    Reply("All metrics are normal again.\nsleep", 455, 9)],
                   key="sk-ant-local") as srv:
        path = tmp_path / "symbi.toml"
        path.write_text(f'[providers.anthropic]\nbase_url = "{srv.url}"\n'
                        'api_key = "sk-ant-local"\n')
        cfg = load_config(path, env={})
        s = Scheduler(store, cfg.scheduler, clock, owner_id="t", app_config=cfg, env={})
        clock.advance(10 * M)  # 12:10, a */10 occurrence
        await s.run_until_idle()
    (run,) = store.list_runs("heartbeat-monitor")
    assert (run.status, run.stop_reason, run.error) == ("succeeded", "sleep", None)
    assert run.scheduled_for == T0 + 10 * M and run.trigger == "schedule"
    its = list_iterations(store, run.id)
    assert [(i.iteration, i.status, i.action) for i in its] == [
        (1, "succeeded", "restart nginx on web-1"), (2, "succeeded", "sleep")]
    assert run.output == ("[iteration 1]\nCPU at 97% on web-1, nginx workers stuck.\n"
                          "restart nginx on web-1\n\n[iteration 2]\n"
                          "All metrics are normal again.\nsleep")
    assert run.usage is not None and (run.usage["prompt_tokens"],
                                      run.usage["completion_tokens"]) == (865, 34)
    # what the model was sent: the example's model and system prompt, over the Messages API;
    # iteration 2 carries iteration 1's summary (context_mode ephemeral_with_summary)
    first, second = srv.requests
    assert {r["_path"] for r in srv.requests} == {"/v1/messages"}
    assert first["model"] == second["model"] == "claude-sonnet-4.5"
    assert first["system"].startswith("You are a system monitoring agent.")
    assert SUMMARY_NOTE not in first["system"]
    assert (SUMMARY_NOTE + "CPU at 97% on web-1, nginx workers stuck.") in second["system"]
    job = store.get_job("heartbeat-monitor")
    assert job is not None and job.next_run == T0 + 20 * M  # sleeps until the next occurrence


async def test_system_monitor_example_sleeps_when_all_is_clear(store: SqliteStore,
                                                               clock: FakeClock) -> None:
    """Offline: the example's `system-monitor` job (stdlib system_health, this machine's real
    readings) with thresholds no machine crosses answers sleep on the first iteration."""
    deploy_example(store)
    store.pause_job("heartbeat-monitor", actor="t")
    m = store.request_manual_run("system-monitor", input="memory=100 disk=100 load_per_cpu=1e6",
                                 actor="t")
    s = Scheduler(store, SchedulerConfig(), clock, owner_id="t", env={})
    await s.run_until_idle()
    run = store.get_run(m.id)
    assert run is not None
    assert (run.status, run.stop_reason, run.trigger) == ("succeeded", "sleep", "manual")
    (it,) = list_iterations(store, run.id)
    assert it.action == "sleep" and "status        OK" in (it.output or "")
    assert run.summary is not None and run.summary.endswith(": OK")
    # thresholds every machine crosses: an alert each iteration up to the example's limit (3)
    m2 = store.request_manual_run("system-monitor", input="memory=0 disk=0", actor="t")
    await s.run_until_idle()
    run2 = store.get_run(m2.id)
    assert run2 is not None and (run2.status, run2.stop_reason) == ("succeeded",
                                                                     "max_iterations")
    actions = [i.action or "" for i in list_iterations(store, run2.id)]
    assert len(actions) == 3 and all(a.startswith("alert: memory ") for a in actions)


# ------------------------------------------------------------------ (c) policy gate via the CLI


async def test_outside_allowed_hours_is_denied_in_history_and_audit(store: SqliteStore,
                                                                     clock: FakeClock,
                                                                     db: Path) -> None:
    night = SchedulePolicy(allowed_hours=AllowedHours("22:00", "02:00", "Europe/Berlin"))
    store.deploy([JobDef(name="nightly", agent="ok", cron="0 * * * *", policy=night)], [OK])
    clock.advance(60 * M)  # 13:00 UTC, 14:00 in Berlin
    await Scheduler(store, SchedulerConfig(), clock, owner_id="t", env={}).run_until_idle()
    reason = "outside allowed hours 22:00–02:00 Europe/Berlin (it is 14:00 there)"
    (hist,) = json.loads(symbi("--store", str(db), "cron", "history", "nightly",
                               "--format", "json").stdout)
    assert (hist["status"], hist["stop_reason"], hist["error"]) == (
        "denied", "policy:allowed_hours", reason)
    table = symbi("--store", str(db), "cron", "history", "nightly").stdout
    assert "denied" in table and "outside allowed hours 22:00–02:00" in table
    events = json.loads(symbi("--store", str(db), "audit", "query", "--type", "PolicyDenied",
                              "--format", "json").stdout)
    assert len(events) == 1 and events[0]["run_id"] == hist["id"]
    assert events[0]["details"]["reason"] == reason
    assert events[0]["details"]["rule"] == "allowed_hours"


def test_approval_gated_job_waits_is_approved_by_the_cli_and_runs(tmp_path: Path) -> None:
    """(Synchronous: `symbi cron approve` runs its own event loop.)"""
    # near the real time: `symbi cron approve` checks the deadline on the real clock
    clock = FakeClock(datetime.now(UTC).replace(second=0, microsecond=0))
    db = tmp_path / "state.db"
    store = SqliteStore.open(db, clock=clock)
    try:
        gated = SchedulePolicy(require_approval=True, approvers=("ops",))
        store.deploy([JobDef(name="deploy-prod", agent="ok", cron="* * * * *", policy=gated,
                             input="release 42")], [OK])
        clock.advance(M)

        async def schedule() -> None:
            await Scheduler(store, SchedulerConfig(), clock, owner_id="t",
                            env={}).run_until_idle()
        asyncio.run(schedule())
        (waiting,) = store.list_runs("deploy-prod")
        assert (waiting.status, waiting.started_at, waiting.output) == (
            "awaiting_approval", None, None)
        res = symbi("--store", str(db), "cron", "approve", waiting.id[:8])
        assert res.exit_code == 0, res.output
        assert "ok:release 42" in res.stdout  # it ran, here, and printed its output
        (done,) = json.loads(symbi("--store", str(db), "cron", "history", "deploy-prod",
                                   "--format", "json").stdout)
        assert (done["id"], done["status"], done["output"]) == (waiting.id, "succeeded",
                                                                "ok:release 42")
        kinds = [e.type for e in store.audit_query(job="deploy-prod", limit=50)]
        assert "ApprovalRequested" in kinds and "ApprovalGranted" in kinds
        assert "PolicyDenied" not in kinds
    finally:
        store.close()


# ------------------------------------------------------------------ (d) AgentPin, scheduler


def _case_tokens() -> dict[str, tuple[Callable[[Any], str], str]]:
    from test_agentpin_support import KID, parts, with_signature

    def tampered(w: Any) -> str:
        token = w.issue()
        sig = parts(token)[2]
        return with_signature(token, sig[:-1] + bytes([sig[-1] ^ 1]))

    def alg_none(w: Any) -> str:
        h, p, _ = w.issue().split(".")
        from test_agentpin_support import b64url, compact

        return f"{b64url(compact({'alg': 'none', 'typ': 'agentpin-credential+jwt', 'kid': KID}))}.{p}."

    def revoked_key(w: Any) -> str:
        agentpin.add_revoked_key(w.revocation, KID, "key_compromise")
        return w.issue()

    return {
        "wrong_sub": (lambda w: w.issue(sub="urn:agentpin:agents.example.com:someone-else"),
                      "subject_mismatch"),
        "wrong_issuer": (lambda w: w.issue(iss="evil.example.org"), "issuer_not_allowed"),
        "tampered_signature": (tampered, "bad_signature"),
        "alg_none": (alg_none, "alg_not_allowed"),
        "revoked_key": (revoked_key, "key_revoked"),
    }


@pytest.mark.parametrize("case", ["wrong_sub", "wrong_issuer", "tampered_signature",
                                  "alg_none", "revoked_key"])
async def test_agentpin_failures_through_the_scheduler(case: str, tmp_path: Path) -> None:
    from test_agentpin_support import ISSUER, NOW_DT, World

    world = World(tmp_path)
    build, reason = _case_tokens()[case]
    bad = build(world)
    good = world.issue()
    clock = FakeClock(NOW_DT)
    store = SqliteStore.open(tmp_path / "state.db", clock=clock)
    try:
        pin = SchedulePolicy(require_agent_pin=True)
        agent = AgentDef(name="nightly-report", executor="python",
                         handler="test_scheduler_handlers:ok")
        store.deploy([JobDef(name="bad", agent="nightly-report", cron="*/5 * * * *",
                             policy=pin, agent_pin_jwt="${BAD_JWT}"),
                      JobDef(name="good", agent="nightly-report", cron="*/5 * * * *",
                             policy=pin, agent_pin_jwt="${GOOD_JWT}")], [agent])
        cfg = Config(agentpin=AgentPinConfig(domain=ISSUER,
                                             trust_bundle=world.write_documents()))
        s = Scheduler(store, SchedulerConfig(), clock, owner_id="t", app_config=cfg,
                      env={"BAD_JWT": bad, "GOOD_JWT": good})
        clock.set(NOW_DT.replace(minute=5, second=0))
        await s.run_until_idle()
        (r,) = store.list_runs("bad")
        assert (r.status, r.stop_reason, r.output) == ("denied", "policy:require_agent_pin",
                                                       None)
        assert (r.error or "").startswith(f"AgentPin verification failed ({reason}): ")
        (ev,) = store.audit_query(type="AgentPinVerificationFailed", job="bad")
        assert ev.run_id == r.id and ev.details["reason"] == reason
        (pd,) = store.audit_query(type="PolicyDenied", job="bad")
        assert pd.run_id == r.id and pd.details["rule"] == "require_agent_pin"
        (g,) = store.list_runs("good")
        if case == "revoked_key":  # the good token is signed with the revoked key too
            assert g.status == "denied" and "(key_revoked)" in (g.error or "")
        else:
            assert (g.status, g.output) == ("succeeded", "ok:")
        assert bad.encode() not in (tmp_path / "state.db").read_bytes()  # never stored
    finally:
        store.close()


# ------------------------------------------------------------------ (e) symbi run, every executor


AGENTS = """\
agent "shout" {
  command: "tr a-z A-Z"
}
agent "poster" {
  url: "{url}/hook"
}
agent "writer" {
  model: "local-model"
  system_prompt: "You answer in one line."
}
"""


@pytest.fixture
def http_peer() -> Iterator[Any]:
    from llm_server import ThreadedServer

    seen: list[Any] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        return web.Response(text=f"posted {body['input']}")

    app = web.Application()
    app.router.add_post("/hook", hook)
    with ThreadedServer(app) as srv:
        srv.seen = seen  # type: ignore[attr-defined]
        yield srv


def test_symbi_run_every_executor(tmp_path: Path, http_peer: Any) -> None:
    from llm_server import LlmServer, Reply

    src = tmp_path / "agents.symbi"
    src.write_text(AGENTS.replace("{url}", http_peer.url))
    with LlmServer([Reply("Hello from the local model.", 9, 6)]) as llm:
        cfg = tmp_path / "symbi.toml"
        cfg.write_text(f'[providers.local]\nbase_url = "{llm.url}/v1"\nmodels = ["local-*"]\n')
        base = ["--config", str(cfg), "--store", str(tmp_path / "none.db"), "run"]
        command = symbi(*base, "shout", "--file", str(src), "--input", "quiet please")
        python = symbi(*base, "echo", "--input", "as is")
        http = symbi(*base, "poster", "--file", str(src), "--input", "payload")
        llm_run = symbi(*base, "writer", "--file", str(src), "--input", "greet me",
                        "--format", "json")
    assert (command.exit_code, command.stdout) == (0, "QUIET PLEASE\n")
    assert (python.exit_code, python.stdout) == (0, "as is\n")
    assert (http.exit_code, http.stdout) == (0, "posted payload\n")
    assert http_peer.seen[0]["input"] == "payload"
    assert llm_run.exit_code == 0, llm_run.output
    out = json.loads(llm_run.stdout)
    assert (out["agent"], out["status"], out["output"]) == ("writer", "succeeded",
                                                            "Hello from the local model.")
    assert (out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"]) == (9, 6)
    (req,) = llm.requests
    assert req["model"] == "local-model" and req["messages"][-1] == {"role": "user",
                                                                      "content": "greet me"}
    assert not (tmp_path / "none.db").exists()  # `symbi run` records nothing


def test_symbi_run_applies_the_agentpin_gate_unless_no_policy(tmp_path: Path) -> None:
    from test_agentpin_support import ISSUER, World

    world = World(tmp_path)
    bundle = world.write_documents()
    token = world.issue(iat=int(time.time()) - 10)  # `symbi run` checks on the real clock
    src = tmp_path / "agents.symbi"
    src.write_text('agent "nightly-report" {\n  command: "echo report for $SYMBI_INPUT"\n}\n')
    cfg = tmp_path / "symbi.toml"
    cfg.write_text(f'[agentpin]\nrequired = true\ndomain = "{ISSUER}"\n'
                   f'trust_bundle = "{bundle}"\n')
    base = ["--config", str(cfg), "run", "nightly-report", "--file", str(src), "--input", "q1"]
    denied = symbi(*base)
    assert denied.exit_code == 1 and denied.stdout == ""
    assert ("agent `nightly-report` denied by policy: AgentPin verification failed "
            "(missing_credential)") in denied.stderr
    forged = symbi(*base, "--agent-pin-jwt", world.issue(iat=int(time.time()) - 10,
                                                         sub="urn:agentpin:"
                                                             "agents.example.com:other"))
    assert forged.exit_code == 1 and "(subject_mismatch)" in forged.stderr
    ok = symbi(*base, "--agent-pin-jwt", token)
    assert (ok.exit_code, ok.stdout) == (0, "report for q1\n"), ok.output
    skipped = symbi(*base, "--no-policy")
    assert (skipped.exit_code, skipped.stdout) == (0, "report for q1\n")
