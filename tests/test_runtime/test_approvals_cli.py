"""``symbi cron approve`` / ``reject`` (runtime.cli_policy) through click's runner, on a real
state file, the real clock and the real in-process execution path; plus the history and
status helpers and the ``symbi run`` gate."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from compiler.ir import AgentDef, HeartbeatDef, JobDef, SchedulePolicy
from runtime.cli import Ctx
from runtime.cli_policy import check_agent_run, heartbeat_lines, register, run_detail
from runtime.config import AgentPinConfig, Config, SchedulerConfig
from runtime.policy import ALLOW, Deny
from runtime.scheduler import run_manual_now
from runtime.store import SqliteStore

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _handlers_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.delenv("SYMBI_CONFIG", raising=False)
    monkeypatch.delenv("SYMBI_ENV", raising=False)
    monkeypatch.delenv("SYMBI_AGENTPIN_REQUIRED", raising=False)


@pytest.fixture
def group() -> click.Group:
    g = click.Group("cron")
    register(g)
    return g


def waiting_run(db: Path) -> str:
    """A manual run of an approval-gated job, left waiting (gate evaluated in-process)."""
    store = SqliteStore.open(db)
    try:
        store.deploy([JobDef(name="gated", agent="ok", cron="0 0 1 1 *", input="x",
                             policy=SchedulePolicy(require_approval=True))],
                     [AgentDef(name="ok", executor="python", handler="test_scheduler_handlers:ok")])
        m = store.request_manual_run("gated", input="by hand", actor="t")
        row = asyncio.run(run_manual_now(store, SchedulerConfig(), m.id, timeout=10, env={}))
        assert row is not None and row.status == "awaiting_approval"
        return m.id
    finally:
        store.close()


def test_approve_runs_it_here(tmp_path: Path, group: click.Group) -> None:
    db = tmp_path / "state.db"
    run_id = waiting_run(db)
    res = CliRunner().invoke(group, ["approve", run_id[:8]], obj=Ctx(None, str(db)))
    assert res.exit_code == 0, res.output
    assert "ok:by hand" in res.output and f"run {run_id} of gated approved" in res.output
    store = SqliteStore.open(db)
    try:
        run = store.get_run(run_id)
        assert run is not None and run.status == "succeeded"
        (ev,) = store.audit_query(type="ApprovalGranted")
        assert ev.actor.startswith("cli:")
    finally:
        store.close()
    again = CliRunner().invoke(group, ["approve", run_id], obj=Ctx(None, str(db)))
    assert again.exit_code == 1 and "already approved" in again.output


def test_reject(tmp_path: Path, group: click.Group) -> None:
    db = tmp_path / "state.db"
    run_id = waiting_run(db)
    res = CliRunner().invoke(group, ["reject", run_id, "--reason", "freeze", "--format", "json"],
                             obj=Ctx(None, str(db)))
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["status"] == "denied" and data["error"].endswith(": freeze")
    bad = CliRunner().invoke(group, ["reject", "nonexistent-run"], obj=Ctx(None, str(db)))
    assert bad.exit_code == 1 and "no run with id" in bad.output


def test_approve_no_wait_only_records(tmp_path: Path, group: click.Group) -> None:
    db = tmp_path / "state.db"
    run_id = waiting_run(db)
    res = CliRunner().invoke(group, ["approve", run_id, "--no-wait"], obj=Ctx(None, str(db)))
    assert res.exit_code == 0, res.output
    store = SqliteStore.open(db)
    try:
        assert store.get_run(run_id).status == "pending"  # type: ignore[union-attr]
    finally:
        store.close()


def test_history_detail_and_heartbeat_lines(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state.db")
    try:
        store.deploy([JobDef(name="hb", agent="never_sleeps", cron="0 0 1 1 *",
                             heartbeat=HeartbeatDef(enabled=True, max_iterations=2))],
                     [AgentDef(name="never_sleeps", executor="python",
                               handler="context_handlers:never_sleeps")])
        m = store.request_manual_run("hb", input="", actor="t")
        run = asyncio.run(run_manual_now(store, SchedulerConfig(), m.id, timeout=10, env={}))
        assert run is not None and run.status == "succeeded"
        assert run_detail(run).startswith("warning: heartbeat stopped after max_iterations (2)")
        lines = heartbeat_lines(store, run)
        assert lines[0] == f"Heartbeat run {run.id[:8]}: 2 iterations, stopped by max_iterations"
        assert [ln.split()[0] for ln in lines[1:]] == ["#1", "#2"]
        assert all("act: keep going" in ln and "succeeded" in ln for ln in lines[1:])
    finally:
        store.close()


async def test_symbi_run_gate() -> None:
    agent = AgentDef(name="a", executor="command", command="true")
    assert await check_agent_run(Config(), agent, env={}) is ALLOW
    required = Config(agentpin=AgentPinConfig(required=True, domain="agents.example.com"))
    d = await check_agent_run(required, agent, env={})
    assert isinstance(d, Deny) and "AGENT_PIN_JWT" in d.reason


def test_wired_into_symbi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real `symbi` group: approve/reject exist, history shows a heartbeat's warning,
    status lists its iterations, `symbi run` applies the AgentPin gate unless --no-policy."""
    from runtime.cli import cli

    db = tmp_path / "state.db"
    run_id = waiting_run(db)
    runner = CliRunner()
    res = runner.invoke(cli, ["--store", str(db), "cron", "approve", run_id[:8]])
    assert res.exit_code == 0, res.output
    assert "ok:by hand" in res.output

    store = SqliteStore.open(db)
    try:
        store.deploy([JobDef(name="hb", agent="never_sleeps", cron="0 0 1 1 *",
                             heartbeat=HeartbeatDef(enabled=True, max_iterations=3))],
                     [AgentDef(name="never_sleeps", executor="python",
                               handler="context_handlers:never_sleeps")])
        m = store.request_manual_run("hb", input="", actor="t")
        asyncio.run(run_manual_now(store, SchedulerConfig(), m.id, timeout=10, env={}))
    finally:
        store.close()
    hist = runner.invoke(cli, ["--store", str(db), "cron", "history", "hb"])
    assert hist.exit_code == 0 and "warning: heartbeat stopped" in hist.output
    status = runner.invoke(cli, ["--store", str(db), "cron", "status", "hb", "--history", "3"])
    assert status.exit_code == 0, status.output
    assert "3 iterations, stopped by max_iterations" in status.output
    assert status.output.count("act: keep going") == 3

    monkeypatch.setenv("SYMBI_AGENTPIN_REQUIRED", "true")
    monkeypatch.delenv("AGENT_PIN_JWT", raising=False)
    denied = runner.invoke(cli, ["--store", str(db), "run", "echo", "--input", "hi"])
    assert denied.exit_code == 1 and "denied by policy" in denied.output
    assert "missing_credential" in denied.output
    forced = runner.invoke(cli, ["--store", str(db), "run", "echo", "--input", "hi",
                                 "--no-policy"])
    assert forced.exit_code == 0 and forced.output == "hi\n"
